//! Ingresses written for ingress-nginx that protect an app with an
//! annotation xdp-ingress does not enforce yet (auth, source ranges,
//! `satisfy`, global auth) or that carry a snippet: each fails closed, its
//! paths answer 503 to a real client (curl in the lab's client namespace)
//! even with the credentials or from the allowed address, while the rest of
//! the configuration serves; `xdp-ingress routes` names every such
//! annotation with its reason.
//!
//! Needs root, the daemon and `lab-backend` (`cargo build -p
//! ingress-userspace -p xdp-ingress-lab`) and curl.

use std::{net::SocketAddr, process::Command};

use anyhow::{Context, Result, ensure};
use ingress_model::fixtures::{ingress, manifest, prefix};
use xdp_ingress_lab::{
    self as lab, CLIENT_ADDR, Daemon, EDGE_ADDR, EdgeLab, ManifestDir, SliceEndpoint,
    XDP_INGRESS_CLASS, daemon_binary, service_yaml,
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

/// An annotation case: Ingress name, annotations (without prefix), and
/// whether the Ingress must fail closed.
type Case = (&'static str, Vec<(&'static str, String)>, bool);

/// The annotation cases.
fn cases() -> Vec<Case> {
    let client_range = format!("{CLIENT_ADDR}/32");
    vec![
        (
            "basic",
            vec![
                ("auth-type", "basic".to_owned()),
                ("auth-secret", "htpasswd".to_owned()),
                ("auth-realm", "Authentication Required".to_owned()),
            ],
            true,
        ),
        (
            "external",
            vec![("auth-url", "http://198.18.3.2:9/auth".to_owned())],
            true,
        ),
        (
            "mtls",
            vec![
                ("auth-tls-secret", "default/ca".to_owned()),
                ("auth-tls-verify-client", "on".to_owned()),
            ],
            true,
        ),
        (
            "whitelist",
            vec![("whitelist-source-range", client_range.clone())],
            true,
        ),
        (
            "badrange",
            vec![("whitelist-source-range", "10.0.0.0/33,nope".to_owned())],
            true,
        ),
        (
            "allowlist",
            vec![("allowlist-source-range", client_range.clone())],
            true,
        ),
        (
            "denylist",
            vec![("denylist-source-range", "198.51.100.0/24".to_owned())],
            true,
        ),
        ("satisfy", vec![("satisfy", "any".to_owned())], true),
        (
            "globalauth",
            vec![("enable-global-auth", "true".to_owned())],
            true,
        ),
        (
            "snippet",
            vec![("configuration-snippet", "return 200;".to_owned())],
            true,
        ),
        (
            "noglobal",
            vec![("enable-global-auth", "false".to_owned())],
            false,
        ),
        (
            "unsupported",
            vec![("proxy-body-size", "50m".to_owned())],
            false,
        ),
    ]
}

#[test]
fn unenforced_access_control_fails_closed_for_a_real_client() -> Result<()> {
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
        // Both prefixes are read: ours for one case.
        let prefix = if *name == "allowlist" {
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
    let text: String = docs
        .iter()
        .map(|d| format!("---\n{}\n", d.trim_end()))
        .collect();
    manifests.write("routes.yaml", &text)?;
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
    for (name, _, fails_closed) in &cases {
        if !fails_closed {
            served(name)?;
            continue;
        }
        // With credentials and from the allowed address alike: never served.
        for more in [&[][..], &["-u", "user:secret"][..]] {
            let reply = get(name, more)?;
            let body = reply.text();
            assert!(
                reply.status == 503
                    && body.contains("xdp-ingress")
                    && !body.contains("\"backend\""),
                "{name} {more:?}: expected the proxy's 503, got {} {body:?}",
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
    for (name, annotations, fails_closed) in &cases {
        for (key, _) in annotations {
            let line = printed.lines().find(|line| {
                line.starts_with(&format!("Ingress default/{name} ")) && line.contains(key)
            });
            match (line, *fails_closed, *key) {
                (Some(line), true, "configuration-snippet") => {
                    assert!(line.contains("SnippetRefused"), "{line}")
                }
                (Some(line), true, _) => assert!(
                    line.contains("UnsupportedAnnotation") && line.contains("503"),
                    "{line}"
                ),
                (Some(line), false, "proxy-body-size") => assert!(
                    line.contains("UnsupportedAnnotation") && line.contains("ignored"),
                    "{line}"
                ),
                (None, false, "enable-global-auth") => {}
                (line, _, _) => panic!("{name} {key}: {line:?} in\n{printed}"),
            }
        }
    }
    Ok(())
}
