//! End-to-end tests of the L7 edge: `xdp-ingress run --manifests PATH` in
//! the edge namespace of an [`EdgeLab`], real `lab-backend` processes as the
//! endpoints of the Services, and real clients (curl, and hand-written
//! HTTP/1.1 over TCP) in the client namespace:
//!
//! ```text
//!  client 198.18.0.2 <-> 198.18.0.1 edge (XDP native on this veth, proxy :80)
//!                        198.18.3.1 <-> 198.18.3.2 backends, endpoints 198.19.x.y:8080
//! ```
//!
//! The backends answer with a JSON report of which Service (`--name`) and
//! endpoint served the request and what arrived (host, path, method,
//! headers, body size); the tests check what the proxy did on that report.
//! Each test builds one lab and one daemon and checks a whole area with it;
//! the tests run in parallel (every name is unique). Every wait is bounded.
//!
//! Needs root, the daemon and `lab-backend`
//! (`cargo build -p ingress-userspace -p xdp-ingress-lab`) and curl.

use std::{
    collections::BTreeMap,
    io::Write,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use ingress_model::fixtures::{backend, ingress, ingress_class, manifest, path, prefix};
use xdp_ingress_lab::{
    self as lab, CLIENT_ADDR, CurlReply, Daemon, EDGE_ADDR, EDGE_BACKEND_LINK_ADDR, EdgeLab,
    HttpConnection, ManifestDir, RawResponse, SliceEndpoint, XDP_INGRESS_CLASS, documents,
    poll_until, service_yaml, xdp_mode,
};

/// The port every lab backend listens on (the Services' `targetPort`).
const BACKEND_PORT: u16 = 8080;

/// An endpoint address of the lab: `198.19.<subnet>.<host>:8080`.
fn endpoint(subnet: u8, host: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(198, 19, subnet, host), BACKEND_PORT))
}

/// Service `default/NAME` (port 80 -> 8080) whose endpoints are `endpoints`,
/// all ready.
fn service(name: &str, endpoints: &[SocketAddr]) -> String {
    let ready: Vec<SliceEndpoint> = endpoints
        .iter()
        .map(|e| SliceEndpoint::ready(e.ip()))
        .collect();
    service_yaml("default", name, 80, BACKEND_PORT, &ready)
}

/// The daemon serving `manifests` (a directory or a file), with XDP in
/// native mode on the edge's client-facing veth unless `proxy_only`.
fn start_daemon(
    lab: &EdgeLab,
    manifests: &Path,
    proxy_only: bool,
    extra: &[&str],
) -> Result<Daemon> {
    let path = manifests.display().to_string();
    let mut builder = Daemon::in_netns(&lab.edge).args(&["--manifests", &path]);
    if !proxy_only {
        builder = builder
            .interface(lab.edge_interface())
            .args(&["--xdp-mode", "native"]);
    }
    builder.args(extra).start()
}

/// GET `path` from the proxy with curl in the client namespace, `Host: host`.
fn curl_get(lab: &EdgeLab, host: &str, path: &str, more: &[&str]) -> Result<CurlReply> {
    let host_header = format!("Host: {host}");
    let url = format!("http://{EDGE_ADDR}{path}");
    let mut args = vec!["-H", host_header.as_str()];
    args.extend_from_slice(more);
    args.push(&url);
    lab.client.curl(&args)
}

/// The proxy's own error page for `status` (not a backend's answer).
fn is_proxy_error_page(body: &str, status: u16) -> bool {
    body.contains(&format!("<title>{status} ")) && body.contains("xdp-ingress")
}

/// What a request should get: a backend (by Service name), or a status
/// from the proxy itself.
#[derive(Clone, Copy, Debug)]
enum Expected {
    Backend(&'static str),
    ProxyStatus(u16),
}

/// Checks one answer; a description of what is wrong, if anything.
fn mismatch(reply: &CurlReply, host: &str, path: &str, expected: Expected) -> Option<String> {
    let what = format!("{host}{path} (HTTP/{})", reply.http_version);
    match expected {
        Expected::Backend(name) => match reply.report() {
            Ok(report) if reply.status == 200 && report.backend == name => {
                // The backend got the request as the client sent it.
                (report.host != host || report.path != path).then(|| {
                    format!(
                        "{what}: {name} received Host {:?} path {:?}",
                        report.host, report.path
                    )
                })
            }
            Ok(report) => Some(format!(
                "{what}: expected {name}, got {} from {}",
                reply.status, report.backend
            )),
            Err(_) => Some(format!(
                "{what}: expected {name}, got {} {:?}",
                reply.status,
                reply.text()
            )),
        },
        Expected::ProxyStatus(status) => {
            (reply.status != status || !is_proxy_error_page(&reply.text(), status)).then(|| {
                format!(
                    "{what}: expected the proxy's {status}, got {} {:?}",
                    reply.status,
                    reply.text()
                )
            })
        }
    }
}

/// Host and path routing, several Ingresses merged, classes, default
/// backends and the built-in 404, over HTTP/1.1 and HTTP/2 (h2c), with XDP
/// on the edge counting what reached the proxy.
#[test]
fn routes_by_host_and_path_like_ingress_nginx() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let mut lab = EdgeLab::create()?;
    let services = [
        ("root", endpoint(1, 1)),
        ("api", endpoint(1, 2)),
        ("login", endpoint(1, 3)),
        ("foo", endpoint(1, 4)),
        ("wild", endpoint(1, 5)),
        ("docs", endpoint(1, 6)),
        ("docs-default", endpoint(1, 7)),
        ("foreign", endpoint(1, 8)),
    ];
    let mut docs = vec![
        XDP_INGRESS_CLASS.to_owned(),
        // Another controller's class: its Ingresses are not ours.
        manifest(&ingress_class("nginx", "k8s.io/ingress-nginx", false)),
    ];
    for (name, addr) in services {
        lab.start_backend(name, &[addr])?;
        docs.push(service(name, &[addr]));
    }
    let shop = Some("shop.example.com");
    let ingresses = [
        ingress("default", "shop-a").ours().rule(
            shop,
            vec![
                prefix("/", "root"),
                path("/api", "Prefix", backend("api", "http")),
            ],
        ),
        ingress("default", "shop-b").ours().rule(
            shop,
            vec![
                path("/api/login", "Exact", backend("login", 80)),
                prefix("/foo", "foo"),
            ],
        ),
        ingress("default", "wild")
            .ours()
            .rule(Some("*.example.com"), vec![prefix("/", "wild")]),
        ingress("default", "docs")
            .ours()
            .default_backend(backend("docs-default", 80))
            .rule(
                Some("docs.example.com"),
                vec![path("/guide", "Exact", backend("docs", 80))],
            ),
        ingress("default", "foreign")
            .class_name("nginx")
            .rule(Some("foreign.example.org"), vec![prefix("/", "foreign")])
            .rule(shop, vec![prefix("/stolen", "foreign")]),
    ];
    docs.extend(ingresses.map(|each| manifest(&each.build())));
    let doc_refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let manifests = ManifestDir::new()?;
    manifests.write("routes.yaml", &documents(&doc_refs))?;
    let daemon = start_daemon(&lab, manifests.path(), false, &[])?;
    let xdp = lab
        .edge
        .xdp(lab.edge_interface())?
        .context("no XDP program on the edge's client-facing veth")?;
    assert_eq!(xdp.mode, xdp_mode::NATIVE);

    use Expected::{Backend, ProxyStatus};
    let cases: &[(&str, &str, Expected)] = &[
        ("shop.example.com", "/", Backend("root")),
        ("shop.example.com", "/anything/else", Backend("root")),
        // Case-insensitive, with the port: the Host header as browsers send it.
        ("SHOP.Example.COM:80", "/api", Backend("api")),
        ("shop.example.com", "/api/", Backend("api")),
        ("shop.example.com", "/api/v1/users?page=2", Backend("api")),
        // Paths of two Ingresses for one host are merged; longest match
        // wins, Exact before Prefix.
        ("shop.example.com", "/api/login", Backend("login")),
        ("shop.example.com", "/api/login/more", Backend("api")),
        ("shop.example.com", "/apix", Backend("root")),
        ("shop.example.com", "/foo", Backend("foo")),
        ("shop.example.com", "/foo/bar", Backend("foo")),
        ("shop.example.com", "/foobar", Backend("root")),
        // Another class's Ingress changes nothing, not even a path of our host.
        ("shop.example.com", "/stolen", Backend("root")),
        ("foreign.example.org", "/", ProxyStatus(404)),
        // A wildcard matches exactly one more label; an exact host beats it.
        ("a.example.com", "/", Backend("wild")),
        ("B.EXAMPLE.com:80", "/x", Backend("wild")),
        ("a.b.example.com", "/", ProxyStatus(404)),
        ("example.com", "/", ProxyStatus(404)),
        // An Ingress's defaultBackend answers its host's unmatched paths.
        ("docs.example.com", "/guide", Backend("docs")),
        (
            "docs.example.com",
            "/guide/chapter-2",
            Backend("docs-default"),
        ),
        ("docs.example.com", "/other", Backend("docs-default")),
        // Unknown host: the built-in default backend.
        ("nowhere.example.org", "/", ProxyStatus(404)),
    ];
    let mut wrong = Vec::new();
    for &(host, path, expected) in cases {
        let reply = curl_get(&lab, host, path, &[])?;
        ensure!(
            reply.http_version == "1.1",
            "curl spoke {}",
            reply.http_version
        );
        wrong.extend(mismatch(&reply, host, path, expected));
    }
    // HTTP/2 with prior knowledge (h2c) is routed the same way.
    let h2_cases: &[(&str, &str, Expected)] = &[
        ("shop.example.com", "/api/v1", Backend("api")),
        ("shop.example.com", "/api/login", Backend("login")),
        ("shop.example.com", "/foobar", Backend("root")),
        ("a.example.com", "/", Backend("wild")),
        ("docs.example.com", "/other", Backend("docs-default")),
        ("nowhere.example.org", "/", ProxyStatus(404)),
    ];
    for &(host, path, expected) in h2_cases {
        let reply = curl_get(&lab, host, path, &["--http2-prior-knowledge"])?;
        ensure!(
            reply.http_version == "2",
            "curl spoke {}",
            reply.http_version
        );
        wrong.extend(mismatch(&reply, host, path, expected));
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));

    // The requests crossed the XDP program on their way to the proxy.
    let maps = daemon.maps()?;
    let http = maps
        .listeners
        .iter()
        .find(|l| l.protocol == "tcp" && l.port == 80)
        .with_context(|| format!("no :80 listener in {:#}", maps.raw))?;
    let requests = (cases.len() + h2_cases.len()) as u64;
    assert!(
        http.counts.packets >= 3 * requests,
        "{requests} connections, {:?} counted on :80",
        http.counts
    );
    Ok(())
}

/// 503 for a Service without ready endpoints and for a missing one, 502 for
/// a refusing endpoint, the retry on a live endpoint, 504 past the read
/// timeout, 413 over the body size (declared and chunked), 400 and 431 for
/// malformed requests; the other routes keep working throughout.
#[test]
fn errors_are_answered_and_contained() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    const HOST: &str = "errors.example.com";
    let mut lab = EdgeLab::create()?;
    let live = endpoint(2, 1);
    let half_live = endpoint(2, 2);
    let not_ready = endpoint(2, 3);
    // An address of the backends with nothing listening: refuses connections.
    let dead = endpoint(2, 9);
    lab.start_backend("live", &[live])?;
    lab.start_backend("halfdead", &[half_live])?;
    // Running, but its endpoint is not ready: it must get nothing.
    lab.start_backend("notready", &[not_ready])?;
    lab.add_endpoint_addr(dead.ip())?;
    let routes = manifest(
        &ingress("default", "errors")
            .ours()
            .rule(
                Some(HOST),
                vec![
                    prefix("/", "live"),
                    prefix("/notready", "notready"),
                    prefix("/missing", "missing"),
                    prefix("/refused", "refused"),
                    prefix("/retry", "halfdead"),
                ],
            )
            .build(),
    );
    let manifests = ManifestDir::new()?;
    manifests.write(
        "routes.yaml",
        &documents(&[
            XDP_INGRESS_CLASS,
            &service("live", &[live]),
            &service_yaml(
                "default",
                "notready",
                80,
                BACKEND_PORT,
                &[SliceEndpoint::not_ready(not_ready.ip())],
            ),
            &service("refused", &[dead]),
            &service("halfdead", &[dead, half_live]),
            &routes,
        ]),
    )?;
    let mut daemon = start_daemon(
        &lab,
        manifests.path(),
        false,
        &["--proxy-read-timeout", "1"],
    )?;
    let serving = |lab: &EdgeLab| -> Result<()> {
        let reply = curl_get(lab, HOST, "/still-there", &[])?;
        ensure!(
            reply.status == 200 && reply.report()?.backend == "live",
            "the live route stopped working: {} {}",
            reply.status,
            reply.text()
        );
        Ok(())
    };
    serving(&lab)?;

    thread::scope(|scope| -> Result<()> {
        // 504: the backend answers after 3 s, the read timeout is 1 s. The
        // other checks run meanwhile, on the same proxy.
        let slow = scope.spawn(|| {
            let started = Instant::now();
            curl_get(&lab, HOST, "/delay/3000", &[]).map(|reply| (reply, started.elapsed()))
        });

        for (path, status) in [("/notready", 503), ("/missing/x", 503), ("/refused", 502)] {
            let reply = curl_get(&lab, HOST, path, &[])?;
            assert!(
                reply.status == status && is_proxy_error_page(&reply.text(), status),
                "{path}: expected the proxy's {status}, got {} {:?}",
                reply.status,
                reply.text()
            );
            serving(&lab)?;
        }
        // One dead and one live endpoint: a refused connect is retried on
        // the other endpoint, so every request succeeds.
        for i in 0..8 {
            let reply = curl_get(&lab, HOST, &format!("/retry/{i}"), &[])?;
            let report = reply.report()?;
            assert_eq!(
                (reply.status, report.backend.as_str(), report.endpoint),
                (200, "halfdead", half_live.to_string()),
                "/retry/{i}"
            );
        }

        let (reply, took) = slow.join().expect("the slow request's thread")?;
        assert!(
            reply.status == 504 && is_proxy_error_page(&reply.text(), 504),
            "/delay/3000 with a 1 s read timeout: {} {:?}",
            reply.status,
            reply.text()
        );
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(2900),
            "the 504 came after {took:?}, not after the 1 s read timeout"
        );
        Ok(())
    })?;

    // 413: a declared body over --proxy-body-size (1 MiB) is refused before
    // it is sent; a chunked one when it grows past the limit.
    let mut conn = HttpConnection::open(&lab.client, lab.proxy_addr())?;
    conn.send(
        format!("POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 2097152\r\n\r\n")
            .as_bytes(),
    )?;
    let reply = conn.read_response()?;
    assert!(
        reply.status == 413 && is_proxy_error_page(&reply.text(), 413),
        "declared 2 MiB: {} {:?}",
        reply.status,
        reply.text()
    );
    let reply = send_while_reading(
        &lab,
        format!("POST /upload HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"),
        chunked_body(1280 * 1024),
    )?;
    assert_eq!(reply.status, 413, "chunked 1.25 MiB: {:?}", reply.text());
    serving(&lab)?;

    // Malformed requests get 400 and 431 from the proxy, which serves on.
    let reply = send_while_reading(&lab, "THIS IS NOT HTTP\r\n\r\n".to_owned(), Vec::new())?;
    assert_eq!(reply.status, 400, "a bad request line: {:?}", reply.text());
    serving(&lab)?;
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Huge: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let reply = send_while_reading(&lab, huge, Vec::new())?;
    assert_eq!(reply.status, 431, "a 512 KiB header: {:?}", reply.text());
    let many: String = (0..200).map(|i| format!("X-Many-{i}: {i}\r\n")).collect();
    let reply = send_while_reading(
        &lab,
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n{many}\r\n"),
        Vec::new(),
    )?;
    assert_eq!(reply.status, 431, "200 headers: {:?}", reply.text());
    serving(&lab)?;
    assert!(daemon.running(), "the daemon died:\n{}", daemon.log());
    Ok(())
}

/// The header lines of a reply of `curl -i` (names in lower case).
fn head_lines(reply: &CurlReply) -> Vec<(String, String)> {
    let text = reply.text();
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect()
}

/// Every answer names the edge (`Server: xdp-ingress`, an upstream's own
/// replaced, as nginx does) and carries a `Date` (an upstream's kept, else
/// the edge's): proxied, and the edge's own 404, 503, 502 and 308, over
/// HTTP/1.1 and HTTP/2, plain and with TLS, as curl sees them.
#[test]
fn every_answer_names_the_edge_and_carries_a_date() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    const HOST: &str = "server.example.com";
    const REDIRECTED: &str = "secure.example.com";
    const UPSTREAM_DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    let mut lab = EdgeLab::create()?;
    let plain = endpoint(5, 1);
    // An address of the backends with nothing listening: refuses connections.
    let dead = endpoint(5, 9);
    // Like Go's net/http without a Server, and without a Date but on /dated.
    lab.start_backend_with("plain", &[plain], |backend| backend.no_date())?;
    lab.add_endpoint_addr(dead.ip())?;
    let server = manifest(
        &ingress("default", "server")
            .ours()
            .rule(
                Some(HOST),
                vec![
                    prefix("/", "plain"),
                    prefix("/missing", "missing"),
                    prefix("/refused", "refused"),
                ],
            )
            .build(),
    );
    let secure = manifest(
        &ingress("default", "secure")
            .ours()
            .annotation("nginx.ingress.kubernetes.io/force-ssl-redirect", "true")
            .rule(Some(REDIRECTED), vec![prefix("/", "plain")])
            .build(),
    );
    let manifests = ManifestDir::new()?;
    manifests.write(
        "routes.yaml",
        &documents(&[
            XDP_INGRESS_CLASS,
            &service("plain", &[plain]),
            &service("refused", &[dead]),
            &server,
            &secure,
        ]),
    )?;
    let daemon = start_daemon(&lab, manifests.path(), false, &[])?;
    // The backend itself sends neither (asked directly, from the edge).
    let direct = lab.edge.curl(&["-i", &format!("http://{plain}/")])?;
    let direct_lines = head_lines(&direct);
    ensure!(
        direct.status == 200
            && !direct_lines
                .iter()
                .any(|(name, _)| name == "server" || name == "date"),
        "the backend answered {direct_lines:?}"
    );

    /// How an answer's Date must look.
    #[derive(Clone, Copy, PartialEq)]
    enum DateFrom {
        Upstream,
        Edge,
    }
    // (host, path, status over plain HTTP, status over HTTPS, whose Date).
    let cases: &[(&str, &str, u16, u16, DateFrom)] = &[
        (HOST, "/", 200, 200, DateFrom::Edge),
        (HOST, "/server/gunicorn", 200, 200, DateFrom::Edge),
        (HOST, "/dated", 200, 200, DateFrom::Upstream),
        (HOST, "/missing", 503, 503, DateFrom::Edge),
        (HOST, "/refused", 502, 502, DateFrom::Edge),
        ("nowhere.example.org", "/", 404, 404, DateFrom::Edge),
        (REDIRECTED, "/", 308, 200, DateFrom::Edge),
    ];
    let mut wrong = Vec::new();
    for (tls, version) in [(false, "1.1"), (false, "2"), (true, "1.1"), (true, "2")] {
        for &(host, path, plain_status, tls_status, date_from) in cases {
            let (url, resolve, host_header) = if tls {
                (
                    format!("https://{host}{path}"),
                    format!("{host}:443:{EDGE_ADDR}"),
                    String::new(),
                )
            } else {
                (
                    format!("http://{EDGE_ADDR}{path}"),
                    String::new(),
                    format!("Host: {host}"),
                )
            };
            let mut args = vec!["-i"];
            match (tls, version) {
                (false, "2") => args.push("--http2-prior-knowledge"),
                (true, "2") => args.extend(["-k", "--http2"]),
                (true, _) => args.extend(["-k", "--http1.1"]),
                _ => {}
            }
            if tls {
                args.extend(["--resolve", &resolve]);
            } else {
                args.extend(["-H", &host_header]);
            }
            args.push(&url);
            let reply = lab.client.curl(&args)?;
            let what = format!(
                "{} {host}{path} over HTTP/{}",
                if tls { "https" } else { "http" },
                reply.http_version
            );
            let expected = if tls { tls_status } else { plain_status };
            let lines = head_lines(&reply);
            let values = |name: &str| -> Vec<&str> {
                lines
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
                    .collect()
            };
            let servers = values("server");
            let dates = values("date");
            let date_ok = match (date_from, dates.as_slice()) {
                (DateFrom::Upstream, [date]) => *date == UPSTREAM_DATE,
                (DateFrom::Edge, [date]) => {
                    *date != UPSTREAM_DATE && date.len() == 29 && date.ends_with(" GMT")
                }
                _ => false,
            };
            if reply.status != expected
                || reply.http_version != version
                || servers != ["xdp-ingress"]
                || !date_ok
            {
                wrong.push(format!(
                    "{what}: {} (expected {expected}), Server {servers:?}, Date {dates:?}",
                    reply.status
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong answers:\n{}\n{}",
        wrong.join("\n"),
        daemon.log()
    );
    Ok(())
}

/// `size` bytes as a chunked body of 64 KiB chunks, with the last chunk.
fn chunked_body(size: usize) -> Vec<u8> {
    const CHUNK: usize = 64 * 1024;
    let mut body = Vec::with_capacity(size + size / CHUNK * 16 + 16);
    let mut left = size;
    while left > 0 {
        let len = left.min(CHUNK);
        body.extend_from_slice(format!("{len:x}\r\n").as_bytes());
        body.resize(body.len() + len, b'x');
        body.extend_from_slice(b"\r\n");
        left -= len;
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

/// Sends `head` and `body` on a new connection from another thread while
/// reading the response: the proxy may answer (and close) before it has
/// read everything, as it does for errors; write errors are then expected.
fn send_while_reading(lab: &EdgeLab, head: String, body: Vec<u8>) -> Result<RawResponse> {
    let mut conn = HttpConnection::open(&lab.client, lab.proxy_addr())?;
    let mut writer = conn.stream().try_clone()?;
    thread::scope(|scope| {
        scope.spawn(move || {
            let _ = writer
                .write_all(head.as_bytes())
                .and_then(|()| writer.write_all(&body));
        });
        conn.read_response()
    })
}

/// What the backend receives: the forwarded headers as ingress-nginx sets
/// them, Host as sent, no hop-by-hop headers; bodies and responses stream
/// (chunk by chunk, a large upload whole); a WebSocket upgrade passes and
/// echoes, a declined upgrade keeps its body; round-robin spreads evenly
/// over three endpoints.
#[test]
fn proxies_headers_streams_upgrades_and_spreads() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    const HOST: &str = "proxy.example.com";
    const SPREAD_HOST: &str = "spread.example.com";
    let mut lab = EdgeLab::create()?;
    let echo = endpoint(3, 1);
    let spread = [endpoint(3, 11), endpoint(3, 12), endpoint(3, 13)];
    lab.start_backend("echo", &[echo])?;
    lab.start_backend("spread", &spread)?;
    let routes = manifest(
        &ingress("default", "proxy")
            .ours()
            .rule(Some(HOST), vec![prefix("/", "echo")])
            .rule(Some(SPREAD_HOST), vec![prefix("/", "spread")])
            .build(),
    );
    let manifests = ManifestDir::new()?;
    manifests.write(
        "routes.yaml",
        &documents(&[
            XDP_INGRESS_CLASS,
            &service("echo", &[echo]),
            &service("spread", &spread),
            &routes,
        ]),
    )?;
    let _daemon = start_daemon(&lab, manifests.path(), false, &[])?;

    check_forwarded_headers(&lab, HOST, echo)?;
    check_streaming(&lab, HOST)?;
    check_uploads(&lab, HOST, &manifests)?;
    check_websocket(&lab, HOST)?;
    check_declined_upgrade(&lab, HOST)?;
    check_spread(&lab, SPREAD_HOST, &spread)?;
    Ok(())
}

/// Hop-by-hop headers a client sends (with one named by `Connection`).
const HOP_BY_HOP: [(&str, &str); 5] = [
    ("Connection", "keep-alive, X-Hop"),
    ("X-Hop", "secret"),
    ("Keep-Alive", "timeout=5"),
    ("TE", "trailers"),
    ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
];

fn check_forwarded_headers(lab: &EdgeLab, host: &str, backend: SocketAddr) -> Result<()> {
    // Control: sent straight to the backend (from the edge), they arrive.
    let mut direct = HttpConnection::open(&lab.edge, backend)?;
    let report = direct
        .request("GET", "/direct", host, &HOP_BY_HOP, b"")?
        .report()?;
    for (name, _) in HOP_BY_HOP {
        assert!(
            report.header(name).is_some(),
            "the backend reports {name} when it gets it: {:?}",
            report.headers
        );
    }

    let client_ip = CLIENT_ADDR.to_string();
    let mut conn = HttpConnection::open(&lab.client, lab.proxy_addr())?;
    let mut headers = vec![("X-Forwarded-For", "203.0.113.7"), ("X-Kept", "yes")];
    headers.extend(HOP_BY_HOP);
    let reply = conn.request("GET", "/headers?x=1", host, &headers, b"")?;
    let report = reply.report()?;
    assert_eq!(reply.status, 200);
    assert_eq!(
        (report.backend.as_str(), report.method.as_str()),
        ("echo", "GET")
    );
    assert_eq!(report.path, "/headers?x=1");
    assert_eq!(report.host, host, "Host is preserved");
    assert!(
        report
            .peer
            .starts_with(&format!("{EDGE_BACKEND_LINK_ADDR}:")),
        "the backend is reached by the proxy, not the client: {}",
        report.peer
    );
    let expected = [
        // ingress-nginx's default: the client's address; what the client
        // sent goes on as X-Original-Forwarded-For.
        ("x-forwarded-for", client_ip.clone()),
        ("x-original-forwarded-for", "203.0.113.7".to_owned()),
        ("x-real-ip", client_ip.clone()),
        ("x-forwarded-proto", "http".to_owned()),
        ("x-forwarded-scheme", "http".to_owned()),
        ("x-forwarded-port", "80".to_owned()),
        ("x-forwarded-host", host.to_owned()),
        ("x-kept", "yes".to_owned()),
    ];
    for (name, value) in &expected {
        assert_eq!(
            report.header(name),
            Some(value.as_str()),
            "{name} in {:?}",
            report.headers
        );
    }
    for hop in ["x-hop", "keep-alive", "te", "proxy-authorization"] {
        assert!(
            report.header(hop).is_none(),
            "hop-by-hop {hop} was forwarded: {:?}",
            report.headers
        );
    }
    assert!(
        report
            .header("connection")
            .is_none_or(|c| !c.to_ascii_lowercase().contains("x-hop")),
        "{:?}",
        report.headers
    );
    let generated = report
        .header("x-request-id")
        .context("no X-Request-ID generated")?
        .to_owned();
    assert!(
        generated.len() == 32 && generated.bytes().all(|b| b.is_ascii_hexdigit()),
        "a generated X-Request-ID is 32 hex digits: {generated:?}"
    );

    // The same connection again: the client's request id is kept; without
    // a client X-Forwarded-For the client's address alone.
    let reply = conn.request(
        "GET",
        "/again",
        host,
        &[("X-Request-ID", "client-id-42")],
        b"",
    )?;
    let report = reply.report()?;
    assert_eq!(report.header("x-request-id"), Some("client-id-42"));
    assert_eq!(report.header("x-forwarded-for"), Some(client_ip.as_str()));
    // X-Forwarded-For over two header lines is one list: all of it goes on
    // as X-Original-Forwarded-For.
    let reply = conn.request(
        "GET",
        "/chain",
        host,
        &[
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-For", "192.0.2.1, 192.0.2.2"),
        ],
        b"",
    )?;
    let report = reply.report()?;
    let chains: Vec<&str> = report
        .headers
        .iter()
        .filter(|(name, _)| name == "x-original-forwarded-for")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(chains, ["203.0.113.7, 192.0.2.1, 192.0.2.2"]);
    assert_eq!(report.header("x-forwarded-for"), Some(client_ip.as_str()));
    let reply = conn.request("GET", "/third", host, &[], b"")?;
    let third = reply.report()?;
    let third_id = third.header("x-request-id").unwrap_or_default();
    assert!(
        third_id.len() == 32 && third_id != generated,
        "request ids are new per request: {generated} then {third_id}"
    );
    Ok(())
}

/// `/stream/5/300`: five lines 300 ms apart. Each must reach the client as
/// the backend sends it, not all at the end.
fn check_streaming(lab: &EdgeLab, host: &str) -> Result<()> {
    const LINES: usize = 5;
    const GAP: Duration = Duration::from_millis(300);
    let mut conn = HttpConnection::open(&lab.client, lab.proxy_addr())?;
    let sent = Instant::now();
    conn.send(
        format!(
            "GET /stream/{LINES}/{} HTTP/1.1\r\nHost: {host}\r\n\r\n",
            GAP.as_millis()
        )
        .as_bytes(),
    )?;
    let head = conn.read_head()?;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-backend"), Some("echo"));
    let mut arrivals: Vec<Duration> = Vec::new();
    let mut pending = Vec::new();
    let body = conn.read_body(&head, |data| {
        pending.extend_from_slice(data);
        while let Some(at) = pending.iter().position(|&b| b == b'\n') {
            pending.drain(..=at);
            arrivals.push(sent.elapsed());
        }
    })?;
    let expected: String = (0..LINES).map(|i| format!("chunk {i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&body), expected);
    assert_eq!(arrivals.len(), LINES);
    let (first, last) = (arrivals[0], arrivals[LINES - 1]);
    // The backend sends the last line 1.2 s after the first: a proxy that
    // buffered would deliver them all together at the end.
    assert!(
        last >= GAP * (LINES as u32 - 1) - Duration::from_millis(50),
        "the last line arrived after {last:?}"
    );
    assert!(
        first + GAP * 2 < last,
        "the lines were not streamed: they arrived at {arrivals:?}"
    );
    Ok(())
}

/// A large upload under the 1 MiB limit arrives whole, with a declared
/// length (curl) and chunked (by hand).
fn check_uploads(lab: &EdgeLab, host: &str, scratch: &ManifestDir) -> Result<()> {
    const SIZE: usize = 800 * 1024;
    // Not a manifest (.bin): the daemon's watch ignores it.
    let file = scratch.path().join("upload.bin");
    std::fs::write(&file, vec![b'u'; SIZE])?;
    let data = format!("@{}", file.display());
    let reply = curl_get(
        lab,
        host,
        "/upload",
        &["-X", "POST", "--data-binary", &data],
    )?;
    let report = reply.report()?;
    assert_eq!(
        (reply.status, report.method.as_str(), report.body_bytes),
        (200, "POST", SIZE as u64),
        "curl upload"
    );
    assert_eq!(report.header("content-length"), Some("819200"));

    let mut conn = HttpConnection::open(&lab.client, lab.proxy_addr())?;
    let mut request =
        format!("PUT /upload HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    request.extend_from_slice(&chunked_body(SIZE));
    conn.send(&request)?;
    let reply = conn.read_response()?;
    let report = reply.report()?;
    assert_eq!(
        (reply.status, report.method.as_str(), report.body_bytes),
        (200, "PUT", SIZE as u64),
        "chunked upload"
    );
    Ok(())
}

/// curl's attempt to upgrade to h2c with a body (`curl --http2 -d` on
/// http://): the backend declines the upgrade, and must get the whole body.
fn check_declined_upgrade(lab: &EdgeLab, host: &str) -> Result<()> {
    let reply = curl_get(lab, host, "/h2c", &["--http2", "-d", "hello=world"])?;
    let report = reply.report()?;
    assert_eq!(
        (reply.status, reply.http_version.as_str()),
        (200, "1.1"),
        "not upgraded"
    );
    assert_eq!(
        report.header("upgrade"),
        Some("h2c"),
        "{:?}",
        report.headers
    );
    assert_eq!(
        (report.method.as_str(), report.body_bytes),
        ("POST", 11),
        "the body of the upgrade request"
    );
    Ok(())
}

/// `Upgrade: websocket` gets `101` through the proxy, then bytes both ways.
fn check_websocket(lab: &EdgeLab, host: &str) -> Result<()> {
    let mut conn = HttpConnection::open(&lab.client, lab.proxy_addr())?;
    conn.send(
        format!(
            "GET /chat HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let head = conn.read_head()?;
    assert_eq!(head.status, 101, "{head:?}");
    assert_eq!(head.header("upgrade"), Some("websocket"), "{head:?}");
    assert!(
        head.header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("upgrade")),
        "{head:?}"
    );
    for message in [b"hello over the upgrade\n".to_vec(), vec![0x81; 48 * 1024]] {
        conn.send(&message)?;
        let echoed = conn.read_exact_bytes(message.len())?;
        assert!(
            echoed == message,
            "the echo differs ({} bytes)",
            message.len()
        );
    }
    Ok(())
}

/// 300 requests over three endpoints: round-robin gives each about 100.
fn check_spread(lab: &EdgeLab, host: &str, endpoints: &[SocketAddr]) -> Result<()> {
    const CONNECTIONS: usize = 3;
    const PER_CONNECTION: usize = 100;
    let served: Vec<Vec<String>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|c| {
                scope.spawn(move || -> Result<Vec<String>> {
                    let mut conn = HttpConnection::open(&lab.client, lab.proxy_addr())?;
                    (0..PER_CONNECTION)
                        .map(|i| {
                            let reply =
                                conn.request("GET", &format!("/{c}/{i}"), host, &[], b"")?;
                            let report = reply.report()?;
                            ensure!(reply.status == 200 && report.backend == "spread");
                            Ok(report.endpoint)
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a spread client's thread"))
            .collect::<Result<_>>()
    })?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for endpoint in served.into_iter().flatten() {
        *counts.entry(endpoint).or_default() += 1;
    }
    let expected: Vec<String> = endpoints.iter().map(SocketAddr::to_string).collect();
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        expected,
        "{counts:?}"
    );
    let share = CONNECTIONS * PER_CONNECTION / endpoints.len();
    for (endpoint, count) in &counts {
        assert!(
            count.abs_diff(share) <= share / 10,
            "{endpoint} served {count} of {}: {counts:?}",
            CONNECTIONS * PER_CONNECTION
        );
    }
    Ok(())
}

/// The manifests of the live-change test: `host` routed to `service`.
fn live_routes(service_name: &str, a: SocketAddr, b: SocketAddr) -> String {
    let routes = manifest(
        &ingress("default", "live")
            .ours()
            .rule(Some("live.example.com"), vec![prefix("/", service_name)])
            .build(),
    );
    documents(&[
        XDP_INGRESS_CLASS,
        &service("svc-a", &[a]),
        &service("svc-b", &[b]),
        &routes,
    ])
}

/// Which Service a new connection reaches for `live.example.com`.
fn served_by(lab: &EdgeLab) -> Result<String> {
    let mut conn = HttpConnection::open(&lab.client, lab.proxy_addr())?;
    Ok(conn
        .request("GET", "/probe", "live.example.com", &[], b"")?
        .report()?
        .backend)
}

/// A manifest changed while a client holds a keep-alive connection: the
/// change applies live, and the next request on that same connection is
/// answered, by the new Service. A broken file keeps the last good
/// configuration. This daemon runs without `--interface` (proxy only),
/// from `--manifests <file>`.
#[test]
fn manifest_changes_apply_live_without_dropping_connections() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    const HOST: &str = "live.example.com";
    const SWITCH_TIMEOUT: Duration = Duration::from_secs(2);
    let mut lab = EdgeLab::create()?;
    let (a, b) = (endpoint(4, 1), endpoint(4, 2));
    lab.start_backend("svc-a", &[a])?;
    lab.start_backend("svc-b", &[b])?;
    let manifests = ManifestDir::new()?;
    let file = manifests.write("routes.yaml", &live_routes("svc-a", a, b))?;
    // The file itself this time (the other tests give the directory).
    let mut daemon = start_daemon(&lab, &file, true, &[])?;
    assert_eq!(
        lab.edge.xdp(lab.edge_interface())?,
        None,
        "proxy only: no XDP"
    );
    assert!(!daemon.bpffs().exists(), "proxy only: nothing pinned");

    let mut kept = HttpConnection::open(&lab.client, lab.proxy_addr())?;
    let first = kept.request("GET", "/first", HOST, &[], b"")?;
    assert_eq!(first.report()?.backend, "svc-a");

    // Switch to B while the connection stays open.
    let changed = Instant::now();
    manifests.write("routes.yaml", &live_routes("svc-b", a, b))?;
    poll_until("new connections to reach svc-b", SWITCH_TIMEOUT, || {
        Ok((served_by(&lab)? == "svc-b").then_some(()))
    })?;
    eprintln!("svc-b serves {:?} after the change", changed.elapsed());
    let second = kept
        .request("GET", "/second", HOST, &[], b"")
        .context("the kept connection was dropped by the reload")?;
    let report = second.report()?;
    assert_eq!((second.status, report.backend.as_str()), (200, "svc-b"));
    assert_eq!(report.path, "/second");

    // A broken file: reported, and B keeps serving, old and new connections.
    let applied_before = daemon.log().matches("configuration applied").count();
    manifests.write("routes.yaml", "kind: Ingress\nmetadata: {name: [unclosed\n")?;
    let log = poll_until(
        "the daemon to report the broken manifest",
        SWITCH_TIMEOUT,
        || {
            let log = daemon.log();
            Ok(log.contains("manifests not applied").then_some(log))
        },
    )?;
    let file_name = file.display().to_string();
    assert!(
        log.lines()
            .any(|l| l.contains("manifests not applied") && l.contains(&file_name)),
        "the error names the file:\n{log}"
    );
    assert_eq!(
        log.matches("configuration applied").count(),
        applied_before,
        "nothing was applied from the broken file"
    );
    let third = kept.request("GET", "/third", HOST, &[], b"")?;
    assert_eq!(third.report()?.backend, "svc-b");
    assert_eq!(served_by(&lab)?, "svc-b");

    // Fixed again (back to A): applies, still on the same connection.
    manifests.write("routes.yaml", &live_routes("svc-a", a, b))?;
    poll_until(
        "new connections to reach svc-a again",
        SWITCH_TIMEOUT,
        || Ok((served_by(&lab)? == "svc-a").then_some(())),
    )?;
    let fourth = kept.request("GET", "/fourth", HOST, &[], b"")?;
    assert_eq!(fourth.report()?.backend, "svc-a");
    assert!(daemon.running(), "{}", daemon.log());
    Ok(())
}

/// The Ingresses that `xdp-ingress routes --json` reports NotServed.
fn not_served(lab: &EdgeLab, manifests: &ManifestDir) -> Result<Vec<String>> {
    let dir = manifests.path().display().to_string();
    let out = lab::run_daemon_once(
        &lab.edge,
        &["routes", "--manifests", &dir, "--json"],
        Duration::from_secs(20),
    )?;
    ensure!(
        out.status.success(),
        "routes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let problems = report["problems"].as_array().context("problems")?;
    Ok(problems
        .iter()
        .filter(|p| p["reason"] == "NotServed")
        .filter_map(|p| p["object"].as_str().map(str::to_owned))
        .collect())
}

/// The issue's sequence, through the manifests provider: the namespace of
/// the oldest catch-all `defaultBackend` Ingress is deleted (Terminating,
/// its endpoints gone) while a new namespace brings its own: the new one
/// serves at once rather than 503. The same for an Ingress being deleted
/// (a deletion timestamp) in a live namespace. The Ingress that lost is
/// reported NotServed. (The files describe states, not a history.)
#[test]
fn an_ingress_going_away_never_shadows_a_live_one() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    const SWITCH_TIMEOUT: Duration = Duration::from_secs(5);
    let mut lab = EdgeLab::create()?;
    let (old_web, new_web) = (endpoint(6, 1), endpoint(6, 2));
    lab.start_backend("old-web", &[old_web])?;
    lab.start_backend("new-web", &[new_web])?;
    let namespace = |name: &str, terminating: bool| {
        let mut yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n");
        if terminating {
            yaml.push_str(
                "  deletionTimestamp: \"2026-01-02T03:04:05Z\"\nstatus: {phase: Terminating}\n",
            );
        }
        yaml
    };
    let fallback = |namespace: &str, created: i64, deleting: bool| {
        let mut builder = ingress(namespace, "fallback")
            .ours()
            .created(created)
            .default_backend(backend("web", 80));
        if deleting {
            builder = builder.deleting();
        }
        manifest(&builder.build())
    };
    let web = |namespace: &str, endpoints: &[SocketAddr]| {
        let endpoints: Vec<SliceEndpoint> = endpoints
            .iter()
            .map(|e| SliceEndpoint::ready(e.ip()))
            .collect();
        service_yaml(namespace, "web", 80, BACKEND_PORT, &endpoints)
    };
    // The old namespace, its Ingress and its endpoints as given; the new
    // namespace, younger, with its own.
    let world = |old_terminating: bool, old_deleting: bool, old_endpoints: &[SocketAddr]| {
        documents(&[
            XDP_INGRESS_CLASS,
            &namespace("old", old_terminating),
            &fallback("old", 1_000, old_deleting),
            &web("old", old_endpoints),
            &namespace("new", false),
            &fallback("new", 2_000, false),
            &web("new", &[new_web]),
        ])
    };
    let served_by = |lab: &EdgeLab| -> Result<String> {
        let reply = curl_get(lab, "any.example.com", "/", &[])?;
        Ok(match reply.report() {
            Ok(report) if reply.status == 200 => report.backend,
            _ => format!("status {}", reply.status),
        })
    };
    let manifests = ManifestDir::new()?;
    manifests.write("routes.yaml", &world(false, false, &[old_web]))?;
    let daemon = start_daemon(&lab, manifests.path(), true, &[])?;
    // Both live: the oldest serves, the other serves nothing and says so.
    assert_eq!(served_by(&lab)?, "old-web");
    assert_eq!(not_served(&lab, &manifests)?, ["Ingress new/fallback"]);

    // The old namespace is being deleted and its endpoints are gone.
    manifests.write("routes.yaml", &world(true, false, &[]))?;
    poll_until(
        "the new namespace's backend to serve",
        SWITCH_TIMEOUT,
        || Ok((served_by(&lab)? == "new-web").then_some(())),
    )
    .with_context(|| daemon.log())?;
    for _ in 0..5 {
        assert_eq!(served_by(&lab)?, "new-web", "no 503 from the old Ingress");
    }
    assert_eq!(not_served(&lab, &manifests)?, ["Ingress old/fallback"]);

    // Both live again: the oldest serves again. Then the old Ingress is
    // being deleted (held by a finalizer), its namespace live and its
    // endpoints there: the new one serves.
    manifests.write("routes.yaml", &world(false, false, &[old_web]))?;
    poll_until("the old Ingress to serve again", SWITCH_TIMEOUT, || {
        Ok((served_by(&lab)? == "old-web").then_some(()))
    })?;
    manifests.write("routes.yaml", &world(false, true, &[old_web]))?;
    poll_until(
        "the new Ingress to take over from one being deleted",
        SWITCH_TIMEOUT,
        || Ok((served_by(&lab)? == "new-web").then_some(())),
    )
    .with_context(|| daemon.log())?;
    assert_eq!(not_served(&lab, &manifests)?, ["Ingress old/fallback"]);
    Ok(())
}

/// SIGTERM while a slow request is in flight: new connections are refused,
/// the response still arrives whole, an idle keep-alive connection does not
/// hold up the exit, then the daemon exits 0, detaches XDP and removes its
/// pins.
#[test]
fn sigterm_drains_in_flight_requests_then_cleans_up() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    const HOST: &str = "slow.example.com";
    let mut lab = EdgeLab::create()?;
    let slow = endpoint(5, 1);
    lab.start_backend("slow", &[slow])?;
    let routes = manifest(
        &ingress("default", "slow")
            .ours()
            .rule(Some(HOST), vec![prefix("/", "slow")])
            .build(),
    );
    let manifests = ManifestDir::new()?;
    manifests.write(
        "routes.yaml",
        &documents(&[XDP_INGRESS_CLASS, &service("slow", &[slow]), &routes]),
    )?;
    let mut daemon = start_daemon(&lab, manifests.path(), false, &[])?;
    let bpffs = daemon.bpffs().to_path_buf();
    assert!(lab.edge.xdp(lab.edge_interface())?.is_some());

    // A client that is done but keeps its connection open must not hold
    // up the exit (the grace period is 30 s).
    let mut idle = HttpConnection::open(&lab.client, lab.proxy_addr())?;
    assert_eq!(idle.request("GET", "/idle", HOST, &[], b"")?.status, 200);

    let mut conn = HttpConnection::open(&lab.client, lab.proxy_addr())?;
    let sent = Instant::now();
    conn.send(format!("GET /delay/1500 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())?;
    let (reply, status) = thread::scope(|scope| -> Result<_> {
        let client = scope.spawn(move || {
            let reply = conn.read_response();
            (reply, Instant::now())
        });
        // Let the request reach the backend before the signal.
        thread::sleep(Duration::from_millis(300));
        daemon.sigterm()?;
        // While it drains, new clients are refused (they can go elsewhere),
        // not left hanging in the listen backlog until the exit.
        poll_until(
            "the draining daemon to refuse new connections",
            Duration::from_millis(600),
            || {
                let refused = HttpConnection::open(&lab.client, lab.proxy_addr()).is_err();
                Ok(refused.then_some(()))
            },
        )?;
        assert!(
            !client.is_finished(),
            "the slow request was still in flight when new connections were refused"
        );
        let status = daemon.stop()?;
        let exited = Instant::now();
        let (reply, answered) = client.join().expect("the client's thread");
        let reply = reply.context("the in-flight request was cut off by SIGTERM")?;
        assert!(
            answered <= exited,
            "the daemon exited before the response was complete"
        );
        assert!(
            exited - answered < Duration::from_secs(3),
            "the daemon took {:?} to exit after the last response",
            exited - answered
        );
        Ok((reply, status))
    })?;
    assert!(
        idle.closed_within(Duration::from_secs(1))?,
        "the idle connection is closed"
    );
    let report = reply.report()?;
    assert_eq!(
        (reply.status, report.backend.as_str(), report.path.as_str()),
        (200, "slow", "/delay/1500")
    );
    assert!(sent.elapsed() >= Duration::from_millis(1500));
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        daemon.log()
    );
    assert_eq!(lab.edge.xdp(lab.edge_interface())?, None, "XDP detached");
    assert!(!bpffs.exists(), "pins left in {}", bpffs.display());
    assert!(
        HttpConnection::open(&lab.client, lab.proxy_addr()).is_err(),
        "nothing listens after the exit"
    );
    Ok(())
}
