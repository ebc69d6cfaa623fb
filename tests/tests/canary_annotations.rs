//! ingress-nginx's canary annotations as a real client (curl in the lab's
//! client namespace) meets them, with the user guide's example shapes: a
//! main Ingress and a canary Ingress (`canary: "true"`) for the same host
//! and path. `canary-by-header` decides first (`always`, `never`; another
//! value goes on), then `canary-by-cookie`, then `canary-weight` (checked
//! over 400 requests against a binomial bound); `canary-by-header-value`
//! selects by an exact value; a canary without a main Ingress serves
//! nothing (404); `xdp-ingress routes` shows the canary beside its route.
//!
//! Needs root, the daemon and `lab-backend` (`cargo build -p
//! ingress-userspace -p xdp-ingress-lab`) and curl.

use std::{net::SocketAddr, process::Command};

use anyhow::{Context, Result, ensure};
use ingress_model::fixtures::{ingress, manifest, prefix};
use xdp_ingress_lab::{
    self as lab, Daemon, EDGE_ADDR, EdgeLab, ManifestDir, SliceEndpoint, XDP_INGRESS_CLASS,
    daemon_binary, documents, service_yaml,
};

/// Ingress `NAME` for `HOST`, `/` to Service `service`, with ingress-nginx
/// annotations.
fn site(name: &str, host: &str, service: &str, annotations: &[(&str, &str)]) -> String {
    let mut builder = ingress("default", name).ours();
    for (key, value) in annotations {
        builder = builder.annotation(&format!("nginx.ingress.kubernetes.io/{key}"), value);
    }
    manifest(&builder.rule(Some(host), vec![prefix("/", service)]).build())
}

#[test]
fn canary_by_header_cookie_and_weight_in_ingress_nginx_order() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let mut lab = EdgeLab::create()?;
    let web = SocketAddr::from(([198, 19, 7, 1], 8080));
    let canary = SocketAddr::from(([198, 19, 7, 2], 8080));
    lab.start_backend("web", &[web])?;
    lab.start_backend("web-canary", &[canary])?;
    let docs = [
        XDP_INGRESS_CLASS.to_owned(),
        service_yaml(
            "default",
            "web",
            80,
            8080,
            &[SliceEndpoint::ready(web.ip())],
        ),
        service_yaml(
            "default",
            "web-canary",
            80,
            8080,
            &[SliceEndpoint::ready(canary.ip())],
        ),
        site("main", "shop.example.com", "web", &[]),
        site(
            "main-canary",
            "shop.example.com",
            "web-canary",
            &[
                ("canary", "true"),
                ("canary-by-header", "X-Canary"),
                ("canary-by-cookie", "use_canary"),
                ("canary-weight", "30"),
            ],
        ),
        site("region", "region.example.com", "web", &[]),
        site(
            "region-canary",
            "region.example.com",
            "web-canary",
            &[
                ("canary", "true"),
                ("canary-by-header", "Region"),
                ("canary-by-header-value", "us-east"),
            ],
        ),
        site(
            "alone",
            "alone.example.com",
            "web-canary",
            &[("canary", "true"), ("canary-weight", "100")],
        ),
    ];
    let manifests = ManifestDir::new()?;
    manifests.write("routes.yaml", &documents(&docs))?;
    let mut daemon = Daemon::in_netns(&lab.edge)
        .interface(lab.edge_interface())
        .args(&["--xdp-mode", "native", "--manifests"])
        .args(&[&manifests.path().display().to_string()])
        .start()?;
    let curl = |host: &str, path: &str, more: &[&str]| {
        let host = format!("Host: {host}");
        let url = format!("http://{EDGE_ADDR}{path}");
        let mut args = vec!["-H", host.as_str()];
        args.extend_from_slice(more);
        args.push(&url);
        lab.client.curl(&args)
    };
    // Which backend answers, ten times over (a weight of 30 would mix
    // them, so ten alike show the header or cookie decided).
    let answers = |host: &str, more: &[&str]| -> Result<Vec<String>> {
        (0..10)
            .map(|_| {
                let reply = curl(host, "/", more)?;
                ensure!(reply.status == 200, "{host} {more:?}: {}", reply.status);
                Ok(reply.report()?.backend)
            })
            .collect()
    };
    let all = |backend: &str| vec![backend.to_owned(); 10];

    for (more, expected) in [
        (&["-H", "X-Canary: always"][..], "web-canary"),
        // The header decides before the cookie.
        (
            &["-H", "X-Canary: never", "--cookie", "use_canary=always"][..],
            "web",
        ),
        // Another header value goes on to the cookie.
        (
            &["-H", "X-Canary: maybe", "--cookie", "use_canary=always"][..],
            "web-canary",
        ),
        (&["--cookie", "use_canary=never"][..], "web"),
        (
            &["--cookie", "other=1; use_canary=always"][..],
            "web-canary",
        ),
    ] {
        let got = answers("shop.example.com", more)?;
        ensure!(got == all(expected), "{more:?}: {got:?}");
    }

    // canary-weight 30 of 100: 400 requests on one connection (curl's URL
    // globbing). Binomial: mean 120, standard deviation 9.2; six of them
    // either side is [65, 175].
    let reply = curl("shop.example.com", "/weight/[1-400]", &[])?;
    ensure!(reply.status == 200, "weighted: {}", reply.status);
    let text = reply.text();
    let to_canary = text.matches(r#""backend":"web-canary""#).count();
    let to_main = text.matches(r#""backend":"web""#).count();
    ensure!(
        to_canary + to_main == 400,
        "400 answers expected: {to_canary} + {to_main}"
    );
    ensure!(
        (65..=175).contains(&to_canary),
        "canary-weight 30: {to_canary} of 400 went to the canary"
    );

    // canary-by-header-value: that exact value only; no weight.
    ensure!(answers("region.example.com", &["-H", "Region: us-east"])? == all("web-canary"));
    for value in ["us-west", "always", "US-EAST"] {
        let header = format!("Region: {value}");
        let got = answers("region.example.com", &["-H", &header])?;
        ensure!(got == all("web"), "Region: {value}: {got:?}");
    }

    // A canary without a main Ingress serves nothing.
    let reply = curl("alone.example.com", "/", &[])?;
    ensure!(reply.status == 404, "alone: {}", reply.status);
    assert!(daemon.running(), "the daemon died:\n{}", daemon.log());

    // `xdp-ingress routes`: the canary's row beside its route, and the
    // lone canary's problem.
    let out = Command::new(daemon_binary()?)
        .arg("routes")
        .arg("--manifests")
        .arg(manifests.path())
        .output()
        .context("running xdp-ingress routes")?;
    let printed = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "xdp-ingress routes failed: {printed}");
    ensure!(
        printed.lines().any(|line| line.contains("default/main-canary")
            && line.contains("canary: header x-canary: always|never, cookie use_canary: always|never, weight 30/100")),
        "no canary row:\n{printed}"
    );
    ensure!(
        printed
            .lines()
            .any(|line| line.contains("default/alone") && line.contains("CanaryWithoutMain")),
        "no CanaryWithoutMain for the lone canary:\n{printed}"
    );
    Ok(())
}
