//! Ingresses written for ingress-nginx that protect an app, as a real
//! client (curl in the lab's client namespace, 198.18.0.2) meets them:
//! source ranges are enforced (403 outside an allow list or inside a deny
//! list, served otherwise); annotations xdp-ingress does not enforce yet
//! (global auth), authentication it
//! cannot apply as written, a snippet or an unreadable range fail
//! closed, their paths answering 503 even with credentials, while the rest
//! of the configuration serves; `xdp-ingress routes` names every such
//! annotation with its reason.
//!
//! Needs root, the daemon and `lab-backend` (`cargo build -p
//! ingress-userspace -p xdp-ingress-lab`) and curl.

use std::{net::SocketAddr, process::Command};

use anyhow::{Context, Result, ensure};
use ingress_model::fixtures::{ingress, manifest, prefix};
use xdp_ingress_lab::{
    self as lab, CLIENT_ADDR, Daemon, EDGE_ADDR, EdgeLab, ManifestDir, SliceEndpoint,
    XDP_INGRESS_CLASS, daemon_binary, documents, service_yaml,
};

/// An Ingress of one host sending `/` to Service `web`, with `annotations`.
fn protected(name: &str, annotations: &[(&str, &str)]) -> String {
    let mut builder = ingress("default", name).ours();
    for (key, value) in annotations {
        builder = builder.annotation(key, value);
    }
    manifest(
        &builder
            .rule(Some(&host(name)), vec![prefix("/", "web")])
            .build(),
    )
}

fn host(name: &str) -> String {
    format!("{name}.example.com")
}

/// What a client gets from an Ingress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The backend's 200.
    Served,
    /// The proxy's 403: the client is outside the source ranges.
    Forbidden,
    /// The proxy's 503, with a problem of this reason for each annotation:
    /// access control not enforced yet, a snippet, an unreadable range.
    FailsClosed(&'static str),
    /// The backend's 200, with an `UnsupportedAnnotation` problem that says
    /// the annotation is ignored.
    ServedIgnoring,
}

/// An annotation case: Ingress name, annotations (without prefix) and what
/// the client in the lab gets.
type Case = (&'static str, Vec<(&'static str, String)>, Outcome);

/// The annotation cases.
fn cases() -> Vec<Case> {
    use Outcome::*;
    let client_range = format!("{CLIENT_ADDR}/32");
    let unsupported = FailsClosed("UnsupportedAnnotation");
    vec![
        // Authentication that cannot be applied as written (see
        // auth_annotations.rs for what can).
        (
            "digest",
            vec![("auth-type", "digest".to_owned())],
            FailsClosed("InvalidAnnotation"),
        ),
        (
            "external",
            vec![("auth-url", "http://$host/auth".to_owned())],
            FailsClosed("InvalidAnnotation"),
        ),
        (
            "mtls",
            vec![("auth-tls-secret", "default/ca".to_owned())],
            FailsClosed("InvalidAnnotation"),
        ),
        // satisfy: any with source ranges but no authentication: the
        // ranges decide (the client is outside).
        (
            "satisfy",
            vec![
                ("satisfy", "any".to_owned()),
                ("whitelist-source-range", "198.18.5.0/24".to_owned()),
            ],
            Forbidden,
        ),
        // limit-rate-after is whole kilobytes: "10m" cannot be read.
        (
            "limited",
            vec![
                ("limit-rate", "1024".to_owned()),
                ("limit-rate-after", "10m".to_owned()),
            ],
            FailsClosed("InvalidAnnotation"),
        ),
        (
            "globalauth",
            vec![("enable-global-auth", "true".to_owned())],
            Served,
        ),
        // A web application firewall asked for and not there.
        (
            "waf",
            vec![("enable-modsecurity", "true".to_owned())],
            unsupported,
        ),
        (
            "snippet",
            vec![("configuration-snippet", "return 200;".to_owned())],
            FailsClosed("SnippetRefused"),
        ),
        // Source ranges, enforced: the client is 198.18.0.2.
        (
            "whitelist",
            vec![("whitelist-source-range", client_range.clone())],
            Served,
        ),
        (
            "allowlist",
            vec![(
                "allowlist-source-range",
                "198.18.5.0/24,2001:db8::/32".to_owned(),
            )],
            Forbidden,
        ),
        (
            "denylist",
            vec![("denylist-source-range", "198.18.0.0/24".to_owned())],
            Forbidden,
        ),
        (
            "otherdeny",
            vec![("denylist-source-range", "198.19.250.0/24".to_owned())],
            Served,
        ),
        (
            "badrange",
            vec![("whitelist-source-range", "10.0.0.0/33,nope".to_owned())],
            FailsClosed("InvalidAnnotation"),
        ),
        (
            "noglobal",
            vec![("enable-global-auth", "false".to_owned())],
            Served,
        ),
        (
            "unsupported",
            vec![("ssl-passthrough", "true".to_owned())],
            ServedIgnoring,
        ),
    ]
}

#[test]
fn access_control_annotations_as_a_real_client_meets_them() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let mut lab = EdgeLab::create()?;
    let web = SocketAddr::from(([198, 19, 4, 1], 8080));
    lab.start_backend("web", &[web])?;
    let mut docs = vec![
        XDP_INGRESS_CLASS.to_owned(),
        service_yaml(
            "default",
            "web",
            80,
            8080,
            &[SliceEndpoint::ready(web.ip())],
        ),
        // An Ingress without annotations: it must keep serving.
        protected("open", &[]),
    ];
    let cases = cases();
    for (name, annotations, _) in &cases {
        // Both prefixes are read: ours for two cases.
        let prefix = if ["allowlist", "otherdeny"].contains(name) {
            "xdp-ingress.io/"
        } else {
            "nginx.ingress.kubernetes.io/"
        };
        let full: Vec<(String, &str)> = annotations
            .iter()
            .map(|(key, value)| (format!("{prefix}{key}"), value.as_str()))
            .collect();
        let borrowed: Vec<(&str, &str)> = full.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        docs.push(protected(name, &borrowed));
    }
    let manifests = ManifestDir::new()?;
    manifests.write("routes.yaml", &documents(&docs))?;
    let mut daemon = Daemon::in_netns(&lab.edge)
        .interface(lab.edge_interface())
        .args(&["--xdp-mode", "native", "--manifests"])
        .args(&[&manifests.path().display().to_string()])
        .start()?;

    let get = |name: &str, more: &[&str]| {
        let host_header = format!("Host: {}", host(name));
        let url = format!("http://{EDGE_ADDR}/");
        let mut args = vec!["-H", host_header.as_str()];
        args.extend_from_slice(more);
        args.push(&url);
        lab.client.curl(&args)
    };
    let served = |name: &str| -> Result<()> {
        let reply = get(name, &[])?;
        ensure!(
            reply.status == 200 && reply.report()?.backend == "web",
            "{name}: expected web's 200, got {} {:?}",
            reply.status,
            reply.text()
        );
        Ok(())
    };
    served("open")?;
    for (name, _, outcome) in &cases {
        // With credentials and without alike.
        for more in [&[][..], &["-u", "user:secret"][..]] {
            let reply = get(name, more)?;
            let body = reply.text();
            let proxy_page = |status| {
                reply.status == status
                    && body.contains("xdp-ingress")
                    && !body.contains("\"backend\"")
            };
            let ok = match outcome {
                Outcome::Served | Outcome::ServedIgnoring => {
                    reply.status == 200 && reply.report()?.backend == "web"
                }
                Outcome::Forbidden => proxy_page(403),
                Outcome::FailsClosed(_) => proxy_page(503),
            };
            assert!(
                ok,
                "{name} {more:?}: expected {outcome:?}, got {} {body:?}",
                reply.status
            );
        }
        served("open")?;
    }
    assert!(daemon.running(), "the daemon died:\n{}", daemon.log());

    // `xdp-ingress routes` names each annotation with its reason.
    let out = Command::new(daemon_binary()?)
        .arg("routes")
        .arg("--manifests")
        .arg(manifests.path())
        .output()
        .context("running xdp-ingress routes")?;
    let printed = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "xdp-ingress routes failed: {printed}");
    for (name, annotations, outcome) in &cases {
        for (key, _) in annotations {
            let line = printed.lines().find(|line| {
                line.starts_with(&format!("Ingress default/{name} ")) && line.contains(key)
            });
            match (outcome, line) {
                (Outcome::FailsClosed(reason), Some(line)) => {
                    assert!(line.contains(reason) && line.contains("503"), "{line}")
                }
                (Outcome::ServedIgnoring, Some(line)) => assert!(
                    line.contains("UnsupportedAnnotation") && line.contains("ignored"),
                    "{line}"
                ),
                (Outcome::Served | Outcome::Forbidden, None) => {}
                (outcome, line) => panic!("{name} {key} ({outcome:?}): {line:?} in\n{printed}"),
            }
        }
    }
    Ok(())
}
