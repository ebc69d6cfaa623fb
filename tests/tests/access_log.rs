//! The access log (`--access-log stdout`) as a real client (curl in the
//! lab's client namespace) makes it: ingress-nginx's `upstreaminfo` lines
//! with the status, the upstream's address and the client's request id;
//! `enable-access-log: "false"` and `skip-access-log-urls` leave requests
//! out; a JSON `log-format-upstream` from the ConfigMap makes JSON lines,
//! applied live; `disable-access-log` turns it off; an unknown variable is
//! reported by `xdp-ingress routes`.
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

/// The daemon's log line that ends with (or holds, for JSON) `id`, waited
/// for up to 10 s.
fn line_of(daemon: &Daemon, id: &str) -> Result<String> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Some(line) = daemon.log().lines().find(|line| line.contains(id)) {
            return Ok(line.to_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("no access log line with {id}:\n{}", daemon.log())
}

#[test]
fn access_log_lines_as_ingress_nginx_writes_them() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let mut lab = EdgeLab::create()?;
    let web = SocketAddr::from(([198, 19, 9, 1], 8080));
    lab.start_backend("web", &[web])?;
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
            site("quiet", &[("enable-access-log", "false")]),
            config,
        ])
    };
    let manifests = ManifestDir::new()?;
    manifests.write(
        "routes.yaml",
        &routes(controller_config_map(&[(
            "skip-access-log-urls",
            "/healthz, /ready",
        )])),
    )?;
    let mut daemon = Daemon::in_netns(&lab.edge)
        .interface(lab.edge_interface())
        .args(&[
            "--xdp-mode",
            "native",
            "--access-log",
            "stdout",
            "--configmap",
            "ingress/xdp-ingress",
            "--manifests",
        ])
        .args(&[&manifests.path().display().to_string()])
        .start()?;
    let curl = |name: &str, path: &str, id: &str, more: &[&str]| {
        let host = format!("Host: {name}.example.com");
        let id = format!("X-Request-ID: {id}");
        let url = format!("http://{EDGE_ADDR}{path}");
        let mut args = vec!["-H", host.as_str(), "-H", id.as_str()];
        args.extend_from_slice(more);
        args.push(&url);
        lab.client.curl(&args).map(|reply| reply.status)
    };

    // Not logged: an Ingress with enable-access-log "false", a URI of
    // skip-access-log-urls. Then a logged request of each kind.
    ensure!(curl("quiet", "/a", "quiet-0001", &[])? == 200);
    ensure!(curl("plain", "/healthz", "skipped-0001", &[])? == 200);
    ensure!(curl("nowhere", "/", "unrouted-0001", &[])? == 404);
    let agent = ["-A", "lab \"curl\""];
    ensure!(curl("plain", "/hello?x=1", "plain-0001", &agent)? == 200);
    let line = line_of(&daemon, "plain-0001")?;
    let client = CLIENT_ADDR.to_string();
    ensure!(
        line.starts_with(&format!("{client} - - ["))
            && line.contains(" +0000] \"GET /hello?x=1 HTTP/1.1\" 200 ")
            && line.contains(" \"-\" \"lab \\x22curl\\x22\" ")
            && line.contains(" [default-web-80] [] 198.19.9.1:8080 ")
            && line.ends_with(" 200 plain-0001"),
        "{line}"
    );
    let unrouted = line_of(&daemon, "unrouted-0001")?;
    ensure!(
        unrouted.contains("\"GET / HTTP/1.1\" 404 ")
            && unrouted.ends_with(" [upstream-default-backend] [] - - - - unrouted-0001"),
        "{unrouted}"
    );
    let log = daemon.log();
    ensure!(
        !log.contains("quiet-0001") && !log.contains("skipped-0001"),
        "{log}"
    );

    // A JSON format from the ConfigMap, applied live; $geoip_city is not
    // known: written as "-" and reported.
    let json = r#"{"time": "$time_iso8601", "status": $status, "id": "$req_id", "upstream": "$upstream_addr", "upstream_status": "$upstream_status", "bytes": $body_bytes_sent, "uri": "$request_uri", "host": "$host", "namespace": "$namespace", "ingress": "$ingress_name", "service": "$service_name", "port": "$service_port", "agent": "$http_user_agent", "city": "$geoip_city"}"#;
    manifests.write(
        "routes.yaml",
        &routes(controller_config_map(&[
            ("log-format-upstream", json),
            ("log-format-escape-json", "true"),
        ])),
    )?;
    let started = Instant::now();
    let value = loop {
        let id = format!("json-{}", started.elapsed().as_millis());
        ensure!(curl("plain", "/j?q=%22x%22", &id, &agent)? == 200);
        let line = line_of(&daemon, &id)?;
        if line.starts_with('{') {
            break serde_json::from_str::<serde_json::Value>(&line).context(line)?;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "the JSON format did not apply: {line}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(
        value["status"] == 200
            && value["upstream"] == "198.19.9.1:8080"
            && value["upstream_status"] == "200"
            && value["bytes"].as_u64().is_some_and(|bytes| bytes > 0)
            && value["uri"] == "/j?q=%22x%22"
            && value["host"] == "plain.example.com"
            && value["namespace"] == "default"
            && value["ingress"] == "plain"
            && value["service"] == "web"
            && value["port"] == "80"
            && value["agent"] == "lab \"curl\""
            && value["city"] == "-",
        "{value}"
    );
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
                && line.contains("InvalidAnnotation")
                && line.contains("$geoip_city")),
        "{printed}"
    );

    // disable-access-log: none at all (block-user-agents tells the
    // ConfigMap is applied).
    manifests.write(
        "routes.yaml",
        &routes(controller_config_map(&[
            ("disable-access-log", "true"),
            ("block-user-agents", "~*probe"),
        ])),
    )?;
    let started = Instant::now();
    while curl("plain", "/", "probe-0001", &["-A", "probe"])? != 403 {
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "the ConfigMap did not apply"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(curl("plain", "/", "disabled-0001", &[])? == 200);
    std::thread::sleep(Duration::from_millis(300));
    let log = daemon.log();
    ensure!(!log.contains("disabled-0001"), "{log}");
    assert!(daemon.running(), "the daemon died:\n{}", daemon.log());
    Ok(())
}
