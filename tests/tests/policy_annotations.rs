//! ingress-nginx's per-Ingress proxy annotations as a real client (curl in
//! the lab's client namespace) meets them: `proxy-body-size` raises or
//! lifts the body limit of one Ingress only, `proxy-read-timeout` shortens
//! the wait for one Ingress's backend, `permanent-redirect` and
//! `temporal-redirect` (with their codes) answer instead of the backend,
//! `enable-cors` adds the CORS headers for allowed origins and answers
//! preflights, `rewrite-target` with a regex path sends the backend the
//! rewritten path (the query kept), and makes the host's other paths
//! regexes too, `limit-rpm` refuses a client past its burst (503) unless
//! `limit-allowlist` exempts it, and `limit-connections` refuses requests
//! past those in progress; `proxy-redirect-from/-to` and
//! `proxy-cookie-domain/-path` rewrite the backend's `Location` and
//! `Set-Cookie`; `server-alias` names a host anew and
//! `from-to-www-redirect` redirects its `www.` name; `mirror-target`
//! copies requests to a mirror; `proxy-next-upstream` tries a timed-out
//! request on the next endpoint.
//!
//! Needs root, the daemon and `lab-backend` (`cargo build -p
//! ingress-userspace -p xdp-ingress-lab`) and curl.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use ingress_model::fixtures::{backend, ingress, manifest, path, prefix};
use xdp_ingress_lab::{
    self as lab, Daemon, EdgeLab, ManifestDir, SliceEndpoint, XDP_INGRESS_CLASS, documents,
    service_yaml,
};
use xdp_ingress_tests::sites::{curl_host, header_value, site};

#[test]
fn body_size_timeouts_redirects_and_cors_per_ingress() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let mut lab = EdgeLab::create()?;
    let web = SocketAddr::from(([198, 19, 6, 1], 8080));
    lab.start_backend("web", &[web])?;
    // What a node's kube-proxy would put behind Service `vip`'s cluster IP.
    let vip = SocketAddr::from(([198, 19, 6, 100], 80));
    lab.start_backend("vip", &[vip])?;
    // A second endpoint for `pair`.
    let twin = SocketAddr::from(([198, 19, 6, 2], 8080));
    lab.start_backend("twin", &[twin])?;
    // The mirror's copies land here.
    let mirror = SocketAddr::from(([198, 19, 6, 50], 8080));
    lab.start_backend("mirror", &[mirror])?;
    let docs = [
        XDP_INGRESS_CLASS.to_owned(),
        service_yaml(
            "default",
            "web",
            80,
            8080,
            &[SliceEndpoint::ready(web.ip())],
        ),
        site("plain", &[]),
        site("big", &[("proxy-body-size", "4m")]),
        site("unlimited", &[("proxy-body-size", "0")]),
        site("impatient", &[("proxy-read-timeout", "1")]),
        site(
            "moved",
            &[
                ("permanent-redirect", "https://new.example.com/home"),
                ("permanent-redirect-code", "308"),
            ],
        ),
        site(
            "cors",
            &[
                ("enable-cors", "true"),
                (
                    "cors-allow-origin",
                    "https://app.example.com, https://*.example.org",
                ),
            ],
        ),
        site("anycors", &[("enable-cors", "true")]),
        format!(
            "apiVersion: v1
kind: Service
metadata: {{name: vip, namespace: default}}
spec: {{clusterIP: {vip_ip}, ports: [{{port: 80, targetPort: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: vip-1, namespace: default, labels: {{kubernetes.io/service-name: vip}}}}
addressType: IPv4
ports: [{{port: 8080}}]
endpoints: [{{addresses: [{web_ip}]}}]",
            vip_ip = vip.ip(),
            web_ip = web.ip(),
        ),
        manifest(
            &ingress("default", "clusterip")
                .ours()
                .annotation("nginx.ingress.kubernetes.io/service-upstream", "true")
                .rule(Some("clusterip.example.com"), vec![prefix("/", "vip")])
                .build(),
        ),
        site("approot", &[("app-root", "/app/home")]),
        site(
            "prefixed",
            &[
                ("x-forwarded-prefix", "/svc"),
                ("upstream-vhost", "internal.svc.local:8080"),
            ],
        ),
        site(
            "limited",
            &[("limit-rpm", "6"), ("limit-burst-multiplier", "1")],
        ),
        site("single", &[("limit-connections", "1")]),
        site(
            "exempt",
            &[
                ("limit-rpm", "1"),
                ("limit-burst-multiplier", "1"),
                ("limit-allowlist", "198.18.0.0/24"),
            ],
        ),
        manifest(
            &ingress("default", "rewrite")
                .ours()
                .annotation("nginx.ingress.kubernetes.io/rewrite-target", "/$2")
                .rule(
                    Some("rewrite.example.com"),
                    vec![path(
                        "/something(/|$)(.*)",
                        "ImplementationSpecific",
                        backend("web", 80),
                    )],
                )
                .build(),
        ),
        // Another Ingress of the same host, without annotations.
        manifest(
            &ingress("default", "rewrite-neighbour")
                .ours()
                .rule(Some("rewrite.example.com"), vec![prefix("/api", "web")])
                .build(),
        ),
        site(
            "away",
            &[
                ("permanent-redirect", "https://new.example.com/"),
                ("temporal-redirect", "https://away.example.com/later"),
            ],
        ),
        site("paced", &[("limit-rate", "64"), ("limit-rate-after", "64")]),
        service_yaml(
            "default",
            "pair",
            80,
            8080,
            &[
                SliceEndpoint::ready(web.ip()),
                SliceEndpoint::ready(twin.ip()),
            ],
        ),
        manifest(
            &ingress("default", "retried")
                .ours()
                .annotation("nginx.ingress.kubernetes.io/proxy-read-timeout", "1")
                .rule(Some("retried.example.com"), vec![prefix("/", "pair")])
                .build(),
        ),
        manifest(
            &ingress("default", "once")
                .ours()
                .annotation("nginx.ingress.kubernetes.io/proxy-read-timeout", "1")
                .annotation("nginx.ingress.kubernetes.io/proxy-next-upstream", "off")
                .rule(Some("once.example.com"), vec![prefix("/", "pair")])
                .build(),
        ),
        site(
            "mirrored",
            &[
                ("mirror-target", "http://198.19.6.50:8080$request_uri"),
                ("mirror-host", "mirror.internal"),
            ],
        ),
        site(
            "bodiless",
            &[
                ("mirror-target", "http://198.19.6.50:8080/copy$request_uri"),
                ("mirror-request-body", "off"),
            ],
        ),
        service_yaml(
            "default",
            "mirror",
            80,
            8080,
            &[SliceEndpoint::ready(mirror.ip())],
        ),
        manifest(
            &ingress("default", "mirror-admin")
                .ours()
                .rule(
                    Some("mirror-admin.example.com"),
                    vec![prefix("/", "mirror")],
                )
                .build(),
        ),
        site(
            "aliased",
            &[
                ("server-alias", "alias.example.org"),
                ("from-to-www-redirect", "true"),
            ],
        ),
        site(
            "rewritten",
            &[
                ("proxy-redirect-from", "http://internal.svc/"),
                ("proxy-redirect-to", "https://rewritten.example.com/"),
                ("proxy-cookie-domain", "internal.svc rewritten.example.com"),
                ("proxy-cookie-path", "/app/ /"),
            ],
        ),
    ];
    let manifests = ManifestDir::new()?;
    manifests.write("routes.yaml", &documents(&docs))?;
    let upload = manifests.path().join("upload.bin");
    std::fs::write(&upload, vec![b'x'; 2 * 1024 * 1024])?;
    let upload = format!("@{}", upload.display());
    let _daemon = Daemon::in_netns(&lab.edge)
        .interface(lab.edge_interface())
        .args(&["--xdp-mode", "native", "--manifests"])
        .args(&[&manifests.path().display().to_string()])
        .start()?;
    let curl = |name: &str, path: &str, more: &[&str]| {
        curl_host(&lab.client, &format!("{name}.example.com"), path, more)
    };

    // A 2 MiB upload: over the default 1 MiB, under `big`'s 4 MiB, and no
    // limit at all for `unlimited`.
    let post = ["--data-binary", upload.as_str()];
    let reply = curl("plain", "/upload", &post)?;
    ensure!(
        reply.status == 413,
        "plain: {} {:?}",
        reply.status,
        reply.text()
    );
    for name in ["big", "unlimited"] {
        let reply = curl(name, "/upload", &post)?;
        ensure!(
            reply.status == 200 && reply.report()?.body_bytes == 2 * 1024 * 1024,
            "{name}: {} {:?}",
            reply.status,
            reply.text()
        );
    }

    // A backend that answers after 2 s: `impatient` gives up after 1 s.
    let started = Instant::now();
    let reply = curl("impatient", "/delay/2000", &[])?;
    let took = started.elapsed();
    ensure!(
        reply.status == 504,
        "impatient: {} {:?}",
        reply.status,
        reply.text()
    );
    ensure!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1900),
        "the 504 came after {took:?}, not after the Ingress's 1 s"
    );
    let reply = curl("plain", "/delay/2000", &[])?;
    ensure!(
        reply.status == 200,
        "plain: {} {:?}",
        reply.status,
        reply.text()
    );

    // Redirects, whatever the path; the temporal one wins.
    for (name, status, location) in [
        ("moved", 308, "https://new.example.com/home"),
        ("away", 302, "https://away.example.com/later"),
    ] {
        let reply = curl(name, "/any/path?q=1", &["-D", "-"])?;
        let head = reply.text();
        ensure!(
            reply.status == status
                && head
                    .lines()
                    .any(|line| line.eq_ignore_ascii_case(&format!("location: {location}"))),
            "{name}: {} {head:?}",
            reply.status
        );
    }

    // app-root: `/` only, to the same scheme and host.
    let reply = curl("approot", "/", &["-D", "-"])?;
    ensure!(
        reply.status == 302
            && reply
                .text()
                .lines()
                .any(|l| l.eq_ignore_ascii_case("location: http://approot.example.com/app/home")),
        "approot /: {} {:?}",
        reply.status,
        reply.text()
    );
    let reply = curl("approot", "/other", &[])?;
    ensure!(reply.status == 200, "approot /other: {}", reply.status);
    // x-forwarded-prefix: the backend is told; upstream-vhost: its Host,
    // the client's in X-Forwarded-Host.
    let report = curl("prefixed", "/x", &[])?.report()?;
    let sent = |name: &str, value: &str| {
        report
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case(name) && v == value)
    };
    ensure!(
        sent("x-forwarded-prefix", "/svc")
            && report.host == "internal.svc.local:8080"
            && sent("x-forwarded-host", "prefixed.example.com"),
        "prefixed: {} {:?}",
        report.host,
        report.headers
    );

    // limit-rpm 6 with a burst of 6: 7 at once, then one every 10 s (503
    // meanwhile); a client in limit-allowlist is not limited.
    let statuses: Vec<u16> = (0..10)
        .map(|_| curl("limited", "/", &[]).map(|reply| reply.status))
        .collect::<Result<_>>()?;
    ensure!(
        statuses == [200, 200, 200, 200, 200, 200, 200, 503, 503, 503],
        "limited: {statuses:?}"
    );
    for _ in 0..5 {
        let reply = curl("exempt", "/", &[])?;
        ensure!(reply.status == 200, "exempt: {}", reply.status);
    }
    // limit-connections 1: a second request while one is in progress gets
    // 503, one after it 200.
    std::thread::scope(|scope| -> Result<()> {
        let slow = scope.spawn(|| curl("single", "/delay/1500", &[]));
        std::thread::sleep(Duration::from_millis(500));
        let reply = curl("single", "/", &[])?;
        ensure!(reply.status == 503, "single, during: {}", reply.status);
        let slow = slow.join().expect("the slow request's thread")?;
        ensure!(slow.status == 200, "single, the slow one: {}", slow.status);
        Ok(())
    })?;
    let reply = curl("single", "/", &[])?;
    ensure!(reply.status == 200, "single, after: {}", reply.status);

    // service-upstream: to the Service's cluster IP and port, not to its
    // endpoint (web).
    let report = curl("clusterip", "/", &[])?.report()?;
    ensure!(
        report.backend == "vip" && report.endpoint == vip.to_string(),
        "clusterip: {report:?}"
    );

    // rewrite-target: the backend sees the rewritten path and the query.
    for (target, expected) in [
        ("/something/new/page?x=1&y=2", Some("/new/page?x=1&y=2")),
        ("/something", Some("/")),
        ("/SOMETHING/Case", Some("/Case")),
        // The neighbour's Prefix path is a regex now: not element-wise.
        ("/apix/y", Some("/apix/y")),
        ("/other", None),
    ] {
        let reply = curl("rewrite", target, &[])?;
        match expected {
            Some(path) => ensure!(
                reply.status == 200 && reply.report()?.path == path,
                "rewrite {target}: {} {:?}",
                reply.status,
                reply.text()
            ),
            None => ensure!(reply.status == 404, "rewrite {target}: {}", reply.status),
        }
    }

    // CORS: headers for allowed origins only; a preflight answered by the
    // edge (204, nothing from the backend).
    let header = header_value;
    for (origin, allowed) in [
        ("https://app.example.com", true),
        ("https://one.example.org", true),
        ("https://evil.example.com", false),
    ] {
        let origin_header = format!("Origin: {origin}");
        let reply = curl("cors", "/", &["-D", "-", "-H", &origin_header])?;
        let head = reply.text();
        ensure!(
            reply.status == 200,
            "cors {origin}: {} {head:?}",
            reply.status
        );
        let expected = allowed.then(|| origin.to_owned());
        ensure!(
            header(&head, "access-control-allow-origin") == expected,
            "cors {origin}: {head:?}"
        );
        if allowed {
            ensure!(
                header(&head, "access-control-allow-credentials").as_deref() == Some("true")
                    && header(&head, "access-control-allow-methods").as_deref()
                        == Some("GET, PUT, POST, DELETE, PATCH, OPTIONS")
                    && header(&head, "access-control-max-age").as_deref() == Some("1728000"),
                "cors {origin}: {head:?}"
            );
            let reply = curl(
                "cors",
                "/",
                &["-D", "-", "-X", "OPTIONS", "-H", &origin_header],
            )?;
            let head = reply.text();
            ensure!(
                reply.status == 204
                    && header(&head, "access-control-allow-origin").as_deref() == Some(origin)
                    && !head.contains("\"backend\""),
                "preflight {origin}: {} {head:?}",
                reply.status
            );
        }
    }
    let reply = curl("anycors", "/", &["-D", "-"])?;
    ensure!(
        reply.status == 200
            && header(&reply.text(), "access-control-allow-origin").as_deref() == Some("*"),
        "anycors: {:?}",
        reply.text()
    );

    // limit-rate 64 KiB/s after 64 KiB: 256 KiB take 3 s; without, a
    // blink.
    for (name, at_least, at_most) in [("paced", 2800, 4500), ("plain", 0, 1000)] {
        let started = Instant::now();
        let reply = curl(name, "/bytes/262144", &[])?;
        let took = started.elapsed().as_millis();
        ensure!(
            reply.status == 200 && reply.body.len() == 262_144,
            "{name}: {} {}",
            reply.status,
            reply.body.len()
        );
        ensure!(
            (at_least..=at_most).contains(&took),
            "{name}: {} bytes in {took} ms",
            reply.body.len()
        );
    }

    // proxy-next-upstream: by default (error timeout) a GET that times out
    // on one endpoint is tried on the other (two 1 s waits, then 504);
    // `off`: one wait.
    for (name, at_least, at_most) in [("retried", 1900, 2900), ("once", 900, 1800)] {
        let started = Instant::now();
        let reply = curl(name, "/delay/1500", &[])?;
        let took = started.elapsed().as_millis();
        ensure!(
            reply.status == 504 && (at_least..=at_most).contains(&took),
            "{name}: {} after {took} ms",
            reply.status
        );
    }

    // mirror-target: a copy of each request (method, path, body) goes to
    // the mirror with mirror-host's Host; the client gets the backend's
    // answer. mirror-request-body off: copies without the body.
    let body = "y".repeat(100);
    for (name, path) in [("mirrored", "/m/path?x=1"), ("bodiless", "/n")] {
        let reply = curl(name, path, &["--data-binary", &body])?;
        ensure!(
            reply.status == 200 && reply.report()?.backend == "web",
            "{name}: {}",
            reply.status
        );
    }
    let expected = [
        ("/m/path?x=1", "mirror.internal", 100),
        ("/copy/n", "198.19.6.50:8080", 0),
    ];
    let mut copies = Vec::new();
    for _ in 0..40 {
        let seen = curl("mirror-admin", "/seen", &[])?;
        let reports: Vec<lab::BackendReport> = serde_json::from_slice(&seen.body)?;
        copies = reports
            .into_iter()
            .filter(|r| r.method == "POST")
            .map(|r| (r.path, r.host, r.body_bytes))
            .collect();
        if copies.len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let expected: Vec<(String, String, u64)> = expected
        .iter()
        .map(|(p, h, b)| (p.to_string(), h.to_string(), *b))
        .collect();
    ensure!(copies == expected, "the mirror got {copies:?}");

    // server-alias: another name for the host; from-to-www-redirect: the
    // www name redirects to the host (scheme, port, no trailing slash).
    let by_host = |host: &str, path: &str, more: &[&str]| curl_host(&lab.client, host, path, more);
    let reply = by_host("alias.example.org", "/x", &[])?;
    ensure!(
        reply.status == 200 && reply.report()?.host == "alias.example.org",
        "alias: {}",
        reply.status
    );
    let reply = by_host("www.aliased.example.com", "/page/?q=1", &["-D", "-"])?;
    ensure!(
        reply.status == 308
            && header(&reply.text(), "location").as_deref()
                == Some("http://aliased.example.com:80/page/?q=1"),
        "www: {} {:?}",
        reply.status,
        reply.text()
    );

    // proxy-redirect-from/-to and proxy-cookie-domain/-path rewrite what
    // the backend answers (nginx's proxy_redirect, proxy_cookie_*).
    let answered = "/respond?Location=http%3A%2F%2Finternal.svc%2Fapp%2Fx\
        &Set-Cookie=id%3D1%3B%20Domain%3Dinternal.svc%3B%20Path%3D%2Fapp%2Fx%3B%20HttpOnly\
        &Set-Cookie=other%3D2%3B%20Domain%3Delsewhere.example%3B%20Path%3D%2Fkept";
    for (name, location, cookies) in [
        (
            "rewritten",
            "https://rewritten.example.com/app/x",
            [
                "id=1; Domain=rewritten.example.com; Path=/x; HttpOnly",
                "other=2; Domain=elsewhere.example; Path=/kept",
            ],
        ),
        (
            "plain",
            "http://internal.svc/app/x",
            [
                "id=1; Domain=internal.svc; Path=/app/x; HttpOnly",
                "other=2; Domain=elsewhere.example; Path=/kept",
            ],
        ),
    ] {
        let reply = curl(name, answered, &["-D", "-"])?;
        let head = reply.text();
        ensure!(
            header(&head, "location").as_deref() == Some(location),
            "{name}: {head:?}"
        );
        let set: Vec<String> = head
            .lines()
            .filter_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case("set-cookie")
                    .then(|| value.trim().to_owned())
            })
            .collect();
        ensure!(set == cookies, "{name}: {set:?}");
    }
    Ok(())
}
