//! The examples of ingress-nginx's user guide for rewrite, app-root,
//! canary and cookie affinity (tests/fixtures/ingress-nginx-guide/, copied
//! unchanged from kubernetes/ingress-nginx docs/examples/), applied as they
//! are under an IngressClass `nginx` of ours, behave as the guide says:
//! `rewrite.bar.com/something/new` reaches the backend as `/new`,
//! `approot.bar.com/` is a 302 to `/app1`, the canary takes about half of
//! the requests, and the sticky Ingress sets its `route` cookie with the
//! guide's attributes. (The auth examples are in auth_annotations.rs.)
//!
//! Needs root, the daemon and `lab-backend` (`cargo build -p
//! ingress-userspace -p xdp-ingress-lab`) and curl.

use std::net::SocketAddr;

use anyhow::{Result, ensure};
use xdp_ingress_lab::{
    self as lab, Daemon, EdgeLab, ManifestDir, SliceEndpoint, documents, service_yaml,
};
use xdp_ingress_tests::sites::{curl_host, header_value};

/// An IngressClass `nginx` of our controller: the guide's Ingresses name it.
const NGINX_CLASS: &str = "\
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: xdp-ingress.io/controller}
";

/// The guide's Ingresses, as they are.
const GUIDE: [&str; 5] = [
    include_str!("../fixtures/ingress-nginx-guide/rewrite.yaml"),
    include_str!("../fixtures/ingress-nginx-guide/app-root.yaml"),
    include_str!("../fixtures/ingress-nginx-guide/canary-production.yaml"),
    include_str!("../fixtures/ingress-nginx-guide/canary.yaml"),
    include_str!("../fixtures/ingress-nginx-guide/affinity-cookie.yaml"),
];

#[test]
fn the_user_guide_examples_behave_as_the_guide_says() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let mut lab = EdgeLab::create()?;
    let http_svc: Vec<SocketAddr> = (1..=2)
        .map(|i| SocketAddr::from(([198, 19, 11, i], 8080)))
        .collect();
    let production = SocketAddr::from(([198, 19, 11, 10], 8080));
    let canary = SocketAddr::from(([198, 19, 11, 20], 8080));
    lab.start_backend("http-svc", &http_svc)?;
    lab.start_backend("production", &[production])?;
    lab.start_backend("canary", &[canary])?;
    let ready = |addrs: &[SocketAddr]| -> Vec<SliceEndpoint> {
        addrs.iter().map(|a| SliceEndpoint::ready(a.ip())).collect()
    };
    let mut docs = vec![
        NGINX_CLASS.to_owned(),
        service_yaml("default", "http-svc", 80, 8080, &ready(&http_svc)),
        service_yaml("default", "production", 80, 8080, &ready(&[production])),
        service_yaml("default", "canary", 80, 8080, &ready(&[canary])),
    ];
    docs.extend(GUIDE.iter().map(|doc| doc.to_string()));
    let manifests = ManifestDir::new()?;
    manifests.write("guide.yaml", &documents(&docs))?;
    let mut daemon = Daemon::in_netns(&lab.edge)
        .interface(lab.edge_interface())
        .args(&["--xdp-mode", "native", "--manifests"])
        .args(&[&manifests.path().display().to_string()])
        .start()?;
    let curl = |host: &str, path: &str, more: &[&str]| curl_host(&lab.client, host, path, more);
    let header = header_value;

    // "rewrite.bar.com/something rewrites to rewrite.bar.com/", and so on.
    for (asked, rewritten) in [
        ("/something", "/"),
        ("/something/", "/"),
        ("/something/new", "/new"),
    ] {
        let report = curl("rewrite.bar.com", asked, &[])?.report()?;
        ensure!(
            report.backend == "http-svc" && report.path == rewritten,
            "{asked}: {report:?}"
        );
    }
    // "Location: http://approot.bar.com/app1".
    let reply = curl("approot.bar.com", "/", &["-I"])?;
    ensure!(
        reply.status == 302
            && header(&reply.text(), "location").as_deref() == Some("http://approot.bar.com/app1"),
        "approot: {} {:?}",
        reply.status,
        reply.text()
    );
    // canary-weight 50: 200 requests, binomial (sd 7.1), six of them
    // either side of 100.
    let reply = curl("echo.prod.mydomain.com", "/[1-200]", &[])?;
    let text = reply.text();
    let to_canary = text.matches(r#""backend":"canary""#).count();
    let to_production = text.matches(r#""backend":"production""#).count();
    ensure!(
        to_canary + to_production == 200,
        "{to_canary} + {to_production}"
    );
    ensure!(
        (57..=143).contains(&to_canary),
        "canary took {to_canary} of 200"
    );
    // The sticky Ingress: "route" with Expires and Max-Age 172800; the
    // cookie keeps the endpoint.
    let jar = manifests.path().join("sticky.jar").display().to_string();
    let reply = curl(
        "stickyingress.example.com",
        "/",
        &["-D", "-", "-o", "/dev/null", "-c", &jar],
    )?;
    let cookie = header(&reply.text(), "set-cookie").unwrap_or_default();
    ensure!(
        cookie.starts_with("route=")
            && cookie.contains("; Expires=")
            && cookie.contains("; Max-Age=172800")
            && cookie.contains("; Path=/; HttpOnly"),
        "{cookie:?}"
    );
    let endpoint = curl("stickyingress.example.com", "/", &["-b", &jar])?
        .report()?
        .endpoint;
    for _ in 0..10 {
        let again = curl("stickyingress.example.com", "/", &["-b", &jar])?
            .report()?
            .endpoint;
        ensure!(
            again == endpoint,
            "the session moved: {again} after {endpoint}"
        );
    }
    assert!(daemon.running(), "the daemon died:\n{}", daemon.log());
    Ok(())
}
