//! `xdp-ingress migrate` as a user runs it before switching the class: a
//! typical production Ingress of ingress-nginx (the issue's: rewrite-target,
//! proxy-body-size, backend-protocol GRPC, enable-cors, a source range, a
//! snippet, a mirror, ssl-passthrough) from manifest files, as a table and as JSON, and the
//! same Ingress read from a real API server with `--kubeconfig`.
//!
//! The manifests case needs nothing; the cluster case needs the binaries of
//! `cargo xtask setup --k8s` (or KUBEBUILDER_ASSETS), not root.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use xdp_ingress_lab::{ManifestDir, daemon_binary, k8s::TestCluster};

/// An Ingress as ingress-nginx's users write them.
const PRODUCTION: &str = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: api
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/rewrite-target: /$2
    nginx.ingress.kubernetes.io/use-regex: "true"
    nginx.ingress.kubernetes.io/proxy-body-size: 50m
    nginx.ingress.kubernetes.io/backend-protocol: GRPC
    nginx.ingress.kubernetes.io/enable-cors: "true"
    nginx.ingress.kubernetes.io/whitelist-source-range: 198.18.0.0/15
    nginx.ingress.kubernetes.io/configuration-snippet: |
      more_set_headers "X-Frame-Options: DENY";
    nginx.ingress.kubernetes.io/mirror-target: https://mirror.example.com$request_uri
    nginx.ingress.kubernetes.io/limit-rps: lots
    nginx.ingress.kubernetes.io/ssl-passthrough: "true"
spec:
  ingressClassName: nginx
  rules:
  - host: api.example.com
    http:
      paths:
      - path: /api(/|$)(.*)
        pathType: ImplementationSpecific
        backend: {service: {name: api, port: {number: 50051}}}
"#;

/// (annotation without prefix, outcome) the report must give.
const EXPECTED: [(&str, &str); 10] = [
    ("backend-protocol", "applied"),
    ("configuration-snippet", "refused"),
    ("enable-cors", "applied"),
    ("limit-rps", "invalid"),
    ("mirror-target", "differs"),
    ("proxy-body-size", "applied"),
    ("rewrite-target", "applied"),
    ("ssl-passthrough", "unsupported"),
    ("use-regex", "applied"),
    ("whitelist-source-range", "differs"),
];

/// Checks the JSON report of `migrate` with `args`.
fn check_json(args: &[&str]) -> Result<()> {
    let out = Command::new(daemon_binary()?)
        .arg("migrate")
        .args(args)
        .arg("--json")
        .output()
        .context("running xdp-ingress migrate --json")?;
    ensure!(
        out.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    let got: Vec<(String, String)> = rows
        .iter()
        .filter(|row| row["ingress"] == "shop/api")
        .map(|row| {
            let name = row["annotation"].as_str().unwrap_or_default();
            let name = name.trim_start_matches("nginx.ingress.kubernetes.io/");
            (
                name.to_owned(),
                row["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = EXPECTED
        .iter()
        .map(|(a, o)| (a.to_string(), o.to_string()))
        .collect();
    ensure!(got == expected, "{got:#?}");
    let invalid = rows
        .iter()
        .find(|row| row["outcome"] == "invalid")
        .context("an invalid row")?;
    ensure!(
        invalid["note"]
            .as_str()
            .is_some_and(|n| n.contains("\"lots\"")),
        "{invalid}"
    );
    Ok(())
}

#[test]
fn the_report_of_a_production_ingress_from_manifests() -> Result<()> {
    let manifests = ManifestDir::new()?;
    manifests.write("api.yaml", PRODUCTION)?;
    let path = manifests.path().display().to_string();
    check_json(&["--manifests", &path])?;
    // The table, for a person: one line per annotation and a summary.
    let out = Command::new(daemon_binary()?)
        .args(["migrate", "--manifests", &path])
        .output()?;
    let table = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "{table}");
    ensure!(
        table
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("INGRESS")),
        "{table}"
    );
    ensure!(
        table.lines().any(|l| l.contains("shop/api")
            && l.contains("configuration-snippet")
            && l.contains("refused")),
        "{table}"
    );
    ensure!(
        table.contains(
            "1 Ingresses with annotations: 5 applied, 2 differ, 1 invalid, 1 unsupported, 0 fail closed, 1 refused"
        ),
        "{table}"
    );
    Ok(())
}

#[test]
fn the_report_from_a_cluster() -> Result<()> {
    let cluster = TestCluster::start()?;
    cluster.kubectl(&["create", "namespace", "shop"])?;
    cluster.apply(PRODUCTION)?;
    let kubeconfig = cluster.kubeconfig().display().to_string();
    check_json(&["--kubeconfig", &kubeconfig])
}
