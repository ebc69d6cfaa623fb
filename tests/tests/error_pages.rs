//! ingress-nginx's custom error pages as a real client (curl in the lab's
//! client namespace) meets them: `custom-http-errors` with
//! `default-backend` replaces an upstream answer with one of the statuses
//! by the errors backend's answer to `/`, told what happened (`X-Code`,
//! `X-Format`, `X-Original-URI`, `X-Namespace`, `X-Ingress-Name`,
//! `X-Service-Name`, `X-Service-Port`, `X-Request-ID`); other statuses go
//! through; `default-backend` serves a route whose Service has no endpoint
//! (`X-Code: 503`); the ConfigMap's `custom-http-errors` goes to
//! `--default-backend-service`.
//!
//! Needs root, the daemon and `lab-backend` (`cargo build -p
//! ingress-userspace -p xdp-ingress-lab`) and curl.

use std::net::SocketAddr;

use anyhow::{Result, ensure};
use xdp_ingress_lab::{
    self as lab, Daemon, EdgeLab, ManifestDir, SliceEndpoint, XDP_INGRESS_CLASS, documents,
    service_yaml,
};
use xdp_ingress_tests::sites::{curl_host, site_for};

/// Ingress `NAME` for `NAME.example.com`, `/` to `service`.
fn site(name: &str, service: &str, annotations: &[(&str, &str)]) -> String {
    site_for(name, &format!("{name}.example.com"), service, annotations)
}

#[test]
fn custom_errors_and_default_backend_as_ingress_nginx() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let mut lab = EdgeLab::create()?;
    let web = SocketAddr::from(([198, 19, 10, 1], 8080));
    let errors = SocketAddr::from(([198, 19, 10, 2], 8080));
    lab.start_backend("web", &[web])?;
    lab.start_backend("errors", &[errors])?;
    let docs = [
        XDP_INGRESS_CLASS.to_owned(),
        service_yaml("default", "web", 80, 8080, &[SliceEndpoint::ready(web.ip())]),
        service_yaml("default", "errors", 80, 8080, &[SliceEndpoint::ready(errors.ip())]),
        service_yaml("default", "empty", 80, 8080, &[]),
        site(
            "custom",
            "web",
            &[("custom-http-errors", "404,503"), ("default-backend", "errors")],
        ),
        site("down", "empty", &[("default-backend", "errors")]),
        site("plain", "web", &[]),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: xdp-ingress, namespace: default}\ndata: {custom-http-errors: \"418\"}".to_owned(),
    ];
    let manifests = ManifestDir::new()?;
    manifests.write("routes.yaml", &documents(&docs))?;
    let mut daemon = Daemon::in_netns(&lab.edge)
        .interface(lab.edge_interface())
        .args(&[
            "--xdp-mode",
            "native",
            "--configmap",
            "default/xdp-ingress",
            "--default-backend-service",
            "default/errors",
            "--manifests",
        ])
        .args(&[&manifests.path().display().to_string()])
        .start()?;
    let curl = |name: &str, path: &str, more: &[&str]| {
        curl_host(&lab.client, &format!("{name}.example.com"), path, more)
    };

    // A 404 of the backend: the errors backend answers, told everything.
    let reply = curl(
        "custom",
        "/status/404?x=1",
        &[
            "-H",
            "Accept: application/json",
            "-H",
            "X-Request-ID: req-7",
        ],
    )?;
    let report = reply.report()?;
    ensure!(
        report.backend == "errors" && report.path == "/",
        "{report:?}"
    );
    for (name, value) in [
        ("x-code", "404"),
        ("x-format", "application/json"),
        ("x-original-uri", "/status/404?x=1"),
        ("x-namespace", "default"),
        ("x-ingress-name", "custom"),
        ("x-service-name", "web"),
        ("x-service-port", "80"),
        ("x-request-id", "req-7"),
    ] {
        ensure!(
            report.header(name) == Some(value),
            "{name}: {:?}",
            report.headers
        );
    }
    ensure!(report.host == "custom.example.com", "{}", report.host);
    // A status not in the list goes through.
    let reply = curl("custom", "/status/500", &[])?;
    ensure!(
        reply.status == 500 && reply.report()?.backend == "web",
        "{}",
        reply.status
    );
    // No endpoints: the Ingress's default-backend serves, X-Code 503, the
    // path kept.
    let report = curl("down", "/page", &[])?.report()?;
    ensure!(
        report.backend == "errors"
            && report.path == "/page"
            && report.header("x-code") == Some("503")
            && report.header("x-service-name") == Some("empty"),
        "{report:?}"
    );
    // The ConfigMap's 418 for every route, from --default-backend-service;
    // the Ingress's own list replaces it.
    let report = curl("plain", "/status/418", &[])?.report()?;
    ensure!(
        report.backend == "errors" && report.header("x-code") == Some("418"),
        "{report:?}"
    );
    let reply = curl("custom", "/status/418", &[])?;
    ensure!(
        reply.status == 418 && reply.report()?.backend == "web",
        "custom's own list: {}",
        reply.status
    );
    assert!(daemon.running(), "the daemon died:\n{}", daemon.log());
    Ok(())
}
