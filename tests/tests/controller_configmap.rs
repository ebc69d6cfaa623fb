//! The controller ConfigMap (`--configmap`, ingress-nginx's keys) as a real
//! client (curl in the lab's client namespace) meets it: a global allow
//! list (403 outside it, replaced by an Ingress's own list), `block-cidrs`
//! and `block-user-agents` (403 everywhere), `proxy-body-size` (413; an
//! Ingress's own wins), `limit-req-status-code` (429 for a rate limit),
//! `use-forwarded-headers` with `proxy-real-ip-cidr` (the client a
//! trusted proxy names), each change applied live, a key that protects
//! something and is not applied (`block-referers`) failing closed,
//! `global-auth-url` asking an auth service for every route but those
//! that opt out, and
//! the unknown keys reported by `xdp-ingress routes`.
//!
//! Needs root, the daemon and `lab-backend` (`cargo build -p
//! ingress-userspace -p xdp-ingress-lab`) and curl.

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use xdp_ingress_lab::{
    self as lab, CLIENT_ADDR, Daemon, EDGE_ADDR, EdgeLab, ManifestDir, SliceEndpoint,
    XDP_INGRESS_CLASS, daemon_binary, documents, service_yaml,
};
use xdp_ingress_tests::sites::{controller_config_map, site};

#[test]
fn global_settings_from_the_configmap_apply_live() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let mut lab = EdgeLab::create()?;
    let web = SocketAddr::from(([198, 19, 9, 1], 8080));
    lab.start_backend("web", &[web])?;
    // The global auth service (lab-backend's /basic-auth/USER/PASSWORD).
    let auth = SocketAddr::from(([198, 19, 9, 5], 8080));
    lab.start_backend("auth", &[auth])?;
    let client = CLIENT_ADDR.to_string();
    let routes = |config: String| {
        documents(&[
            XDP_INGRESS_CLASS.to_owned(),
            service_yaml(
                "default",
                "web",
                80,
                8080,
                &[SliceEndpoint::ready(web.ip())],
            ),
            site("plain", &[]),
            site(
                "own",
                &[("whitelist-source-range", &format!("{client}/32"))],
            ),
            site("big", &[("proxy-body-size", "8k")]),
            site("optout", &[("enable-global-auth", "false")]),
            site(
                "limited",
                &[("limit-rpm", "1"), ("limit-burst-multiplier", "1")],
            ),
            config,
        ])
    };
    let manifests = ManifestDir::new()?;
    // A global allow list the client is outside of; a small body limit; a
    // rate-limit status; blocked agents; the client trusted as a proxy.
    let first = controller_config_map(&[
        ("whitelist-source-range", "198.19.200.0/24"),
        ("proxy-body-size", "1k"),
        ("limit-req-status-code", "429"),
        ("block-user-agents", "~*scanner"),
        ("use-forwarded-headers", "true"),
        ("proxy-real-ip-cidr", &format!("{client}/32")),
        ("no-such-key", "1"),
    ]);
    manifests.write("routes.yaml", &routes(first))?;
    let mut daemon = Daemon::in_netns(&lab.edge)
        .interface(lab.edge_interface())
        .args(&[
            "--xdp-mode",
            "native",
            "--configmap",
            "ingress/xdp-ingress",
            "--manifests",
        ])
        .args(&[&manifests.path().display().to_string()])
        .start()?;
    let curl = |name: &str, more: &[&str]| {
        let host = format!("Host: {name}.example.com");
        let url = format!("http://{EDGE_ADDR}/");
        let mut args = vec!["-H", host.as_str()];
        args.extend_from_slice(more);
        args.push(&url);
        lab.client.curl(&args)
    };
    let status = |name: &str, more: &[&str]| curl(name, more).map(|reply| reply.status);

    // The global allow list: the client is outside it, unless the
    // Ingress has a list of its own; the client a trusted proxy names
    // (use-forwarded-headers) is checked instead of the proxy.
    ensure!(
        status("plain", &[])? == 403,
        "plain outside the global allow list"
    );
    ensure!(
        status("own", &[])? == 200,
        "the Ingress's own list replaces the global"
    );
    let forwarded = ["-H", "X-Forwarded-For: 198.19.200.7"];
    let reply = curl("plain", &forwarded)?;
    ensure!(
        reply.status == 200,
        "a trusted proxy's client: {}",
        reply.status
    );
    let report = reply.report()?;
    ensure!(
        report.header("x-real-ip") == Some("198.19.200.7")
            && report.header("x-forwarded-for") == Some("198.19.200.7"),
        "{:?}",
        report.headers
    );
    // block-user-agents, everywhere.
    ensure!(
        status("own", &["-A", "Mass-Scanner/2.0"])? == 403,
        "blocked agent"
    );
    // proxy-body-size 1k, and an Ingress's own 8k.
    let body = "x".repeat(2048);
    let post = ["--data-binary", body.as_str()];
    ensure!(status("own", &post)? == 413, "2k over the global 1k");
    let big = [
        "--data-binary",
        body.as_str(),
        "-H",
        "X-Forwarded-For: 198.19.200.7",
    ];
    ensure!(status("big", &big)? == 200, "2k under the Ingress's 8k");
    // limit-req-status-code for limit-rpm 1 (burst 1): the third is 429.
    let statuses: Vec<u16> = (0..3)
        .map(|_| status("limited", &forwarded))
        .collect::<Result<_>>()?;
    ensure!(statuses == [200, 200, 429], "limited: {statuses:?}");

    // `xdp-ingress routes` reports the unknown key.
    let out = Command::new(daemon_binary()?)
        .args([
            "routes",
            "--configmap",
            "ingress/xdp-ingress",
            "--manifests",
        ])
        .arg(manifests.path())
        .output()
        .context("running xdp-ingress routes")?;
    let printed = String::from_utf8_lossy(&out.stdout);
    ensure!(
        printed
            .lines()
            .any(|line| line.contains("ConfigMap ingress/xdp-ingress")
                && line.contains("UnsupportedAnnotation")
                && line.contains("no-such-key")),
        "{printed}"
    );

    // Live: the allow list now holds the client; block-cidrs refuses
    // another range. No restart.
    let second = controller_config_map(&[
        ("whitelist-source-range", &format!("{client}/32")),
        ("block-cidrs", "198.19.201.0/24"),
    ]);
    manifests.write("routes.yaml", &routes(second))?;
    wait_for(|| Ok(status("plain", &[])? == 200), "the new allow list")?;
    // The body limit is the flags' again (1 MiB).
    ensure!(
        status("own", &post)? == 200,
        "the global body limit is gone"
    );

    // global-auth-url: every route asks the auth service first, unless its
    // Ingress opts out (enable-global-auth: "false").
    let url = format!("http://{auth}/basic-auth/user/secret");
    let third = controller_config_map(&[("global-auth-url", &url)]);
    manifests.write("routes.yaml", &routes(third))?;
    wait_for(|| Ok(status("plain", &[])? == 401), "the global auth")?;
    ensure!(
        status("plain", &["-u", "user:secret"])? == 200,
        "with the password"
    );
    ensure!(status("optout", &[])? == 200, "enable-global-auth: false");

    // A key that protects everything and is not applied: every route 503.
    let fourth = controller_config_map(&[("block-referers", "~*spam")]);
    manifests.write("routes.yaml", &routes(fourth))?;
    wait_for(
        || Ok(status("own", &[])? == 503),
        "block-referers failing closed",
    )?;
    ensure!(status("plain", &[])? == 503);
    assert!(daemon.running(), "the daemon died:\n{}", daemon.log());
    Ok(())
}

/// Polls `done` every 100 ms for up to 10 s.
fn wait_for(mut done: impl FnMut() -> Result<bool>, what: &str) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if done()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} did not apply within 10 s")
}
