//! ingress-nginx's canary and cookie-affinity annotations as a real client
//! (curl in the lab's client namespace) meets them.
//!
//! Canary, with the user guide's example shapes: a
//! main Ingress and a canary Ingress (`canary: "true"`) for the same host
//! and path. `canary-by-header` decides first (`always`, `never`; another
//! value goes on), then `canary-by-cookie`, then `canary-weight` (checked
//! over 400 requests against a binomial bound); `canary-by-header-value`
//! selects by an exact value; a canary without a main Ingress serves
//! nothing (404); `xdp-ingress routes` shows the canary beside its route.
//!
//! Affinity (`affinity: cookie`): the first response sets the session
//! cookie, requests that send it stay on its endpoint (both modes) while
//! requests without it spread; a canary's session sticks to the canary.
//! `upstream-hash-by` keeps a key on one endpoint.
//!
//! Needs root, the daemon and `lab-backend` (`cargo build -p
//! ingress-userspace -p xdp-ingress-lab`) and curl.

use std::{net::SocketAddr, process::Command};

use anyhow::{Context, Result, ensure};
use xdp_ingress_lab::{
    self as lab, Daemon, EDGE_ADDR, EdgeLab, ManifestDir, SliceEndpoint, XDP_INGRESS_CLASS,
    daemon_binary, documents, service_yaml,
};
use xdp_ingress_tests::sites::{curl_host, header_values, site_for};

/// Ingress `NAME` for `HOST`, `/` to `service`, with ingress-nginx
/// annotations.
fn site(name: &str, host: &str, service: &str, annotations: &[(&str, &str)]) -> String {
    site_for(name, host, service, annotations)
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
    let curl = |host: &str, path: &str, more: &[&str]| curl_host(&lab.client, host, path, more);
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

/// The `Set-Cookie` lines of a `curl -D -` output.
fn set_cookies(text: &str) -> Vec<String> {
    header_values(text, "set-cookie")
}

#[test]
fn cookie_affinity_keeps_a_session_on_its_endpoint() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let mut lab = EdgeLab::create()?;
    let web: Vec<SocketAddr> = (1..=3)
        .map(|i| SocketAddr::from(([198, 19, 8, i], 8080)))
        .collect();
    let canary = SocketAddr::from(([198, 19, 8, 10], 8080));
    lab.start_backend("web", &web)?;
    lab.start_backend("web-canary", &[canary])?;
    let ready: Vec<SliceEndpoint> = web.iter().map(|a| SliceEndpoint::ready(a.ip())).collect();
    let docs = [
        XDP_INGRESS_CLASS.to_owned(),
        service_yaml("default", "web", 80, 8080, &ready),
        service_yaml(
            "default",
            "web-canary",
            80,
            8080,
            &[SliceEndpoint::ready(canary.ip())],
        ),
        site(
            "sticky",
            "sticky.example.com",
            "web",
            &[
                ("affinity", "cookie"),
                ("session-cookie-name", "route"),
                ("session-cookie-max-age", "172800"),
            ],
        ),
        site(
            "persistent",
            "persistent.example.com",
            "web",
            &[("affinity", "cookie"), ("affinity-mode", "persistent")],
        ),
        site("plain", "plain.example.com", "web", &[]),
        site(
            "ewma",
            "ewma.example.com",
            "web",
            &[("load-balance", "ewma")],
        ),
        site(
            "hashed",
            "hashed.example.com",
            "web",
            &[("upstream-hash-by", "$arg_user")],
        ),
        site("half", "half.example.com", "web", &[("affinity", "cookie")]),
        site(
            "half-canary",
            "half.example.com",
            "web-canary",
            &[("canary", "true"), ("canary-weight", "50")],
        ),
    ];
    let manifests = ManifestDir::new()?;
    manifests.write("routes.yaml", &documents(&docs))?;
    let mut daemon = Daemon::in_netns(&lab.edge)
        .interface(lab.edge_interface())
        .args(&["--xdp-mode", "native", "--manifests"])
        .args(&[&manifests.path().display().to_string()])
        .start()?;
    let curl = |host: &str, more: &[&str]| {
        let host = format!("Host: {host}");
        let url = format!("http://{EDGE_ADDR}/");
        let mut args = vec!["-H", host.as_str()];
        args.extend_from_slice(more);
        args.push(&url);
        lab.client.curl(&args)
    };

    for (host, cookie_name) in [
        ("sticky.example.com", "route"),
        ("persistent.example.com", "INGRESSCOOKIE"),
    ] {
        // The first response sets the cookie, as ingress-nginx does.
        let jar = manifests.path().join(format!("{host}.jar"));
        let jar = jar.display().to_string();
        let first = curl(host, &["-c", &jar, "-D", "-"])?;
        let text = first.text();
        let cookies = set_cookies(&text);
        ensure!(
            cookies.len() == 1
                && cookies[0].starts_with(&format!("{cookie_name}="))
                && cookies[0].contains("; Path=/; HttpOnly"),
            "{host}: {cookies:?}"
        );
        if cookie_name == "route" {
            ensure!(cookies[0].contains("; Max-Age=172800"), "{cookies:?}");
        }
        let body = text.split("\r\n\r\n").last().unwrap_or_default();
        let endpoint = lab::BackendReport::parse(body.as_bytes())?.endpoint;
        // Twenty more with the cookie: the same endpoint, no new cookie.
        for _ in 0..20 {
            let reply = curl(host, &["-b", &jar, "-D", "-"])?;
            let text = reply.text();
            let body = text.split("\r\n\r\n").last().unwrap_or_default();
            let again = lab::BackendReport::parse(body.as_bytes())?.endpoint;
            ensure!(again == endpoint, "{host}: {again} after {endpoint}");
            ensure!(set_cookies(&text).is_empty(), "{host}: cookie set again");
        }
        // Without it, new sessions land on every endpoint: 30 requests
        // miss one of three with probability 3 * (2/3)^30 < 1e-5.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..30 {
            seen.insert(curl(host, &[])?.report()?.endpoint);
        }
        ensure!(seen.len() == 3, "{host}: new sessions went to {seen:?}");
    }
    // upstream-hash-by: the same key, the same endpoint; 20 fixed keys
    // spread over all three (rendezvous hashing is deterministic).
    let hashed = |user: &str| -> Result<String> {
        let url = format!("http://{EDGE_ADDR}/?user={user}");
        Ok(lab
            .client
            .curl(&["-H", "Host: hashed.example.com", &url])?
            .report()?
            .endpoint)
    };
    let first = hashed("alice")?;
    for _ in 0..10 {
        ensure!(hashed("alice")? == first, "alice moved");
    }
    let mut seen = std::collections::BTreeSet::new();
    for user in 0..20 {
        seen.insert(hashed(&format!("user{user}"))?);
    }
    ensure!(seen.len() == 3, "20 keys went to {seen:?}");

    // load-balance: ewma serves from the endpoints it measures (which one
    // wins is the unit tests' business: here every endpoint is as fast).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let reply = lab.client.curl(&[
            "-H",
            "Host: ewma.example.com",
            &format!("http://{EDGE_ADDR}/"),
        ])?;
        ensure!(reply.status == 200, "ewma: {}", reply.status);
        seen.insert(reply.report()?.endpoint);
    }
    ensure!(
        !seen.is_empty() && seen.iter().all(|e| web.iter().any(|w| w.to_string() == *e)),
        "{seen:?}"
    );

    // No affinity: no cookie.
    let reply = curl("plain.example.com", &["-D", "-"])?;
    ensure!(
        set_cookies(&reply.text()).is_empty(),
        "plain: {:?}",
        reply.text()
    );

    // A canary's session sticks to the canary (affinity-canary-behavior
    // sticky, the default): find a session the weight sent there, then
    // 20 requests with its cookie all go to the canary. Each try lands on
    // the canary with probability 1/2: 40 tries all miss with 1e-12.
    let jar = manifests.path().join("half.jar").display().to_string();
    let mut on_canary = false;
    for _ in 0..40 {
        let reply = curl("half.example.com", &["-c", &jar])?;
        if reply.report()?.backend == "web-canary" {
            on_canary = true;
            break;
        }
    }
    ensure!(on_canary, "the weight of 50 never chose the canary");
    for _ in 0..20 {
        let backend = curl("half.example.com", &["-b", &jar])?.report()?.backend;
        ensure!(
            backend == "web-canary",
            "a canary session went to {backend}"
        );
    }
    assert!(daemon.running(), "the daemon died:\n{}", daemon.log());
    Ok(())
}
