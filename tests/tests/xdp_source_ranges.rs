//! Source ranges dropped in the kernel, end to end: the controller
//! ConfigMap's `block-cidrs` naming the lab client (198.18.0.2) makes the
//! XDP program drop its packets to the proxy's listeners: curl gets no
//! answer (its connect times out), `xdp-ingress maps` and /metrics count the
//! drops on the listener and under `drop-source-range`, and the proxy never
//! sees a request. A live ConfigMap change removes the range and the client
//! is served; the Ingress annotation `xdp-ingress.io/xdp-drop-source-range`
//! drops the client for every host; the global `denylist-source-range`
//! with an Ingress that sets its own stays in the proxy (403).
//!
//! Needs root, the daemon and `lab-backend` (`cargo build -p
//! ingress-userspace -p xdp-ingress-lab`) and curl.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use xdp_ingress_lab::{
    self as lab, CLIENT_ADDR, Daemon, EDGE_ADDR, EdgeLab, ManifestDir, MapsJson, Netns,
    SliceEndpoint, XDP_INGRESS_CLASS, documents, service_yaml,
};
use xdp_ingress_tests::sites::site;

/// The controller ConfigMap `ingress/xdp-ingress` with `data`.
fn config_map(data: &[(&str, &str)]) -> String {
    let data: Vec<String> = data
        .iter()
        .map(|(key, value)| format!("  {key}: {value:?}"))
        .collect();
    let data = if data.is_empty() {
        " {}".to_owned()
    } else {
        format!("\n{}", data.join("\n"))
    };
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: xdp-ingress, namespace: ingress}}\ndata:{data}"
    )
}

/// The IPv4 TCP listener of port 80 in `maps --json`.
fn http_listener(maps: &MapsJson) -> Result<&Value> {
    maps.raw["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["family"] == "ipv4" && l["port"] == 80 && l["action"] == "pass-to-proxy")
        .with_context(|| format!("no IPv4 listener of port 80 in {}", maps.raw))
}

/// The kernel source ranges of that listener, as `RANGE RULE` strings.
fn http_ranges(maps: &MapsJson) -> Result<Vec<String>> {
    Ok(http_listener(maps)?["source_ranges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{} {}",
                r["range"].as_str().unwrap_or("?"),
                r["rule"].as_str().unwrap_or("?")
            )
        })
        .collect())
}

/// Requests the proxy answered (every route, every status), from /metrics.
fn proxied_requests(edge: &Netns) -> Result<u64> {
    let reply = edge.curl(&["http://127.0.0.1:10254/metrics"])?;
    ensure!(reply.status == 200, "/metrics: {}", reply.status);
    Ok(reply
        .text()
        .lines()
        .filter(|line| line.starts_with("xdp_ingress_request_duration_seconds_count"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// The sample of /metrics whose line starts with `prefix`.
fn metric(edge: &Netns, prefix: &str) -> Result<u64> {
    let reply = edge.curl(&["http://127.0.0.1:10254/metrics"])?;
    let text = reply.text();
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .with_context(|| format!("no {prefix} in /metrics:\n{text}"))
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

#[test]
fn kernel_source_ranges_drop_before_the_proxy_and_follow_the_configmap() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let mut lab = EdgeLab::create()?;
    let web = SocketAddr::from(([198, 19, 9, 1], 8080));
    lab.start_backend("web", &[web])?;
    let client = format!("{CLIENT_ADDR}/32");
    let routes = |extra: &[String], config: String| {
        let mut docs = vec![
            XDP_INGRESS_CLASS.to_owned(),
            service_yaml(
                "default",
                "web",
                80,
                8080,
                &[SliceEndpoint::ready(web.ip())],
            ),
            site("plain", &[]),
            config,
        ];
        docs.extend_from_slice(extra);
        documents(&docs)
    };
    let manifests = ManifestDir::new()?;
    manifests.write(
        "routes.yaml",
        &routes(
            &[],
            config_map(&[("block-cidrs", &format!("198.18.200.0/24,{client}"))]),
        ),
    )?;
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
    let url = format!("http://{EDGE_ADDR}/");
    // Bounded: a dropped SYN is retried by the kernel, never answered.
    let curl = |name: &str, more: &[&str]| {
        let host = format!("Host: {name}.example.com");
        let mut args = vec!["--connect-timeout", "2", "-H", host.as_str()];
        args.extend_from_slice(more);
        args.push(&url);
        lab.client.curl(&args)
    };
    let expect_no_answer = |name: &str| -> Result<()> {
        match curl(name, &[]) {
            Ok(reply) => bail!(
                "{name}: the proxy answered {} to a dropped client",
                reply.status
            ),
            Err(error) => {
                let message = format!("{error:#}");
                ensure!(
                    message.contains("timed out") || message.contains("Timeout"),
                    "{name}: not a connect timeout: {message}"
                );
                Ok(())
            }
        }
    };

    // block-cidrs in the kernel: the ranges on the listener, then no answer.
    wait_for(
        || Ok(http_ranges(&daemon.maps()?)?.contains(&"198.18.0.2/32 deny".to_owned())),
        "block-cidrs in the XDP tries",
    )?;
    let ranges = http_ranges(&daemon.maps()?)?;
    ensure!(
        ranges == ["198.18.200.0/24 deny", "198.18.0.2/32 deny"],
        "{ranges:?}"
    );
    let requests_before = proxied_requests(&lab.edge)?;
    let before = daemon.maps()?;
    expect_no_answer("plain")?;
    let after = daemon.maps()?;
    let denied = |maps: &MapsJson| -> Result<u64> {
        Ok(http_listener(maps)?["denied_packets"].as_u64().unwrap_or(0))
    };
    let dropped = |maps: &MapsJson| {
        maps.verdicts
            .get("drop-source-range")
            .map_or(0, |c| c.packets)
    };
    ensure!(
        denied(&after)? > denied(&before)?,
        "the listener's denied counter: {} -> {}",
        denied(&before)?,
        denied(&after)?
    );
    ensure!(
        dropped(&after) >= dropped(&before) + (denied(&after)? - denied(&before)?),
        "drop-source-range verdicts: {} -> {}",
        dropped(&before),
        dropped(&after)
    );
    ensure!(
        proxied_requests(&lab.edge)? == requests_before,
        "the proxy saw a request of a dropped client"
    );
    let exported = metric(&lab.edge, "xdp_ingress_xdp_listener_denied_packets_total{")?;
    ensure!(exported >= denied(&after)?, "/metrics: {exported}");
    let reason = metric(
        &lab.edge,
        "xdp_ingress_xdp_verdict_packets_total{reason=\"drop-source-range\"}",
    )?;
    ensure!(
        reason >= dropped(&after),
        "/metrics drop-source-range: {reason}"
    );

    // Live: the ConfigMap without block-cidrs; the client is served.
    manifests.write("routes.yaml", &routes(&[], config_map(&[])))?;
    wait_for(
        || Ok(http_ranges(&daemon.maps()?)?.is_empty()),
        "the ranges removed from the XDP tries",
    )?;
    let reply = curl("plain", &[])?;
    ensure!(reply.status == 200, "served again: {}", reply.status);
    ensure!(proxied_requests(&lab.edge)? == requests_before + 1);

    // The annotation drops the client for every host, not only its own.
    let dropper = site(
        "dropper",
        &[("xdp-ingress.io/xdp-drop-source-range", client.as_str())],
    );
    manifests.write(
        "routes.yaml",
        &routes(std::slice::from_ref(&dropper), config_map(&[])),
    )?;
    wait_for(
        || Ok(http_ranges(&daemon.maps()?)? == ["198.18.0.2/32 deny"]),
        "the annotation's range in the XDP tries",
    )?;
    expect_no_answer("plain")?;

    // The global denylist with an Ingress of ours that sets its own: it
    // stays in the proxy, which answers 403.
    let own = site(
        "own",
        &[(
            "nginx.ingress.kubernetes.io/denylist-source-range",
            "198.18.201.0/24",
        )],
    );
    manifests.write(
        "routes.yaml",
        &routes(
            std::slice::from_ref(&own),
            config_map(&[("denylist-source-range", client.as_str())]),
        ),
    )?;
    wait_for(
        || Ok(http_ranges(&daemon.maps()?)?.is_empty()),
        "no range in the XDP tries",
    )?;
    let requests = proxied_requests(&lab.edge)?;
    let reply = curl("plain", &[])?;
    ensure!(reply.status == 403, "proxy-only denylist: {}", reply.status);
    ensure!(
        curl("own", &[])?.status == 200,
        "the Ingress's own list replaces the global one"
    );
    ensure!(proxied_requests(&lab.edge)? == requests + 2);
    ensure!(
        daemon
            .log()
            .contains("denylist-source-range stays in the proxy"),
        "the log says why:\n{}",
        daemon.log()
    );

    // Without that Ingress the same denylist is dropped in the kernel.
    manifests.write(
        "routes.yaml",
        &routes(
            &[],
            config_map(&[("denylist-source-range", client.as_str())]),
        ),
    )?;
    wait_for(
        || Ok(http_ranges(&daemon.maps()?)? == ["198.18.0.2/32 deny"]),
        "the global denylist in the XDP tries",
    )?;
    expect_no_answer("plain")?;
    assert!(daemon.running(), "the daemon died:\n{}", daemon.log());
    Ok(())
}
