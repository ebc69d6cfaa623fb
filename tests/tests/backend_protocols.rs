//! `backend-protocol` and `proxy-ssl-*` as real clients and backends meet
//! them through the edge: grpc-go's interop client and server (unary, large
//! messages, client and server streaming, full duplex, status codes and
//! messages in trailers, custom metadata) over h2c to the edge and to the
//! backend (`GRPC`), over TLS to the edge (ALPN h2) and to the backend
//! (`GRPCS`, verified against the Secret's CA); curl to an HTTPS backend
//! (`HTTPS`: unverified by default, verified with the right CA, 502 with
//! the wrong one, 503 when the Secret to verify with is missing; the
//! Secret's client certificate presented to a backend that requires one)
//! and `AUTO_HTTP`.
//!
//! Needs root, the daemon and `lab-backend` (`cargo build -p
//! ingress-userspace -p xdp-ingress-lab`), curl, and Go (the interop
//! programs are built on first use; the gRPC test skips without Go).

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, Result, ensure};
use ingress_model::fixtures::{ingress, manifest, opaque_secret, prefix, tls_secret_pem};
use xdp_ingress_lab::{
    self as lab, Background, Daemon, EDGE_ADDR, EdgeLab, ManifestDir, SliceEndpoint,
    XDP_INGRESS_CLASS, documents, grpc_interop, service_yaml,
};
use xdp_ingress_tests::certs::TestCa;

/// How long one interop client run may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a gRPC server may take to accept connections.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// An Ingress `NAME` of host `HOST` (none: every host) sending `/` to
/// Service `service`, with annotations under ingress-nginx's prefix, and
/// TLS at the edge from Secret `edge-tls` when `host` is given.
fn route(name: &str, host: Option<&str>, service: &str, annotations: &[(&str, &str)]) -> String {
    let mut builder = ingress("default", name).ours();
    for (key, value) in annotations {
        builder = builder.annotation(&format!("nginx.ingress.kubernetes.io/{key}"), value);
    }
    if let Some(host) = host {
        builder = builder.tls(&[host], Some("edge-tls"));
    }
    manifest(&builder.rule(host, vec![prefix("/", service)]).build())
}

/// Starts the daemon in the lab's edge namespace on `docs`.
fn start_daemon(lab: &EdgeLab, manifests: &ManifestDir, docs: &[String]) -> Result<Daemon> {
    manifests.write("routes.yaml", &documents(docs))?;
    Daemon::in_netns(&lab.edge)
        .interface(lab.edge_interface())
        .args(&["--xdp-mode", "native", "--manifests", &manifests.arg()])
        .start()
}

/// Runs the interop client in the client namespace: `test_case` against
/// the edge, over h2c, or over TLS to `tls_host` (verified against `ca`,
/// and sent as `:authority`).
fn interop_case(
    lab: &EdgeLab,
    client: &Path,
    test_case: &str,
    tls: Option<(&str, &Path)>,
) -> Result<()> {
    let client = client.display().to_string();
    let host = format!("--server_host={EDGE_ADDR}");
    let case = format!("--test_case={test_case}");
    let mut args = vec![client.as_str(), host.as_str(), case.as_str()];
    let (port, override_host, ca_file);
    match tls {
        None => port = "--server_port=80".to_owned(),
        Some((tls_host, ca)) => {
            port = "--server_port=443".to_owned();
            override_host = format!("--server_host_override={tls_host}");
            ca_file = format!("--ca_file={}", ca.display());
            args.extend([
                "--use_tls=true",
                "--use_test_ca=true",
                &override_host,
                &ca_file,
            ]);
        }
    }
    args.push(&port);
    let out = lab.client.exec_timeout(&args, CLIENT_TIMEOUT)?;
    ensure!(
        out.status.success(),
        "{test_case} over {}: {}{}",
        tls.map_or("h2c", |(host, _)| host),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The interop cases run through the edge: what gRPC needs of HTTP/2.
const CASES: [&str; 9] = [
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "status_code_and_message",
    "special_status_message",
    "custom_metadata",
    "unimplemented_method",
];

#[test]
fn grpc_through_the_edge_over_h2c_and_tls() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let Some(interop) = grpc_interop()? else {
        return Ok(());
    };
    let mut lab = EdgeLab::create()?;
    let ca = TestCa::new()?;
    let edge_leaf = ca.leaf(&["grpc.example.com", "grpcs.example.com"])?;
    let backend_leaf = ca.leaf(&["grpc-backend.internal"])?;
    ca.dir.write("backend.pem", &backend_leaf.cert_pem)?;
    ca.dir.write("backend.key", &backend_leaf.key_pem)?;

    // One pod: the interop server in clear text on 10000, over TLS on 10001.
    let pod = SocketAddr::from(([198, 19, 8, 10], 10000));
    let pod_tls = SocketAddr::from(([198, 19, 8, 10], 10001));
    lab.add_endpoint_addr(pod.ip())?;
    let server = interop.server.display().to_string();
    let cert_arg = format!("--tls_cert_file={}", ca.dir.join("backend.pem").display());
    let key_arg = format!("--tls_key_file={}", ca.dir.join("backend.key").display());
    let _plain: Background = lab.backend_ns.spawn(&[&server, "--port=10000"])?;
    let _secure: Background = lab.backend_ns.spawn(&[
        &server,
        "--port=10001",
        "--use_tls=true",
        &cert_arg,
        &key_arg,
    ])?;
    for addr in [pod, pod_tls] {
        lab.edge
            .wait_tcp(addr, SERVER_READY_TIMEOUT)
            .with_context(|| format!("the interop server on {addr}"))?;
    }

    let docs = [
        XDP_INGRESS_CLASS.to_owned(),
        service_yaml(
            "default",
            "grpc",
            80,
            pod.port(),
            &[SliceEndpoint::ready(pod.ip())],
        ),
        service_yaml(
            "default",
            "grpcs",
            80,
            pod_tls.port(),
            &[SliceEndpoint::ready(pod_tls.ip())],
        ),
        manifest(&tls_secret_pem(
            "default",
            "edge-tls",
            &edge_leaf.cert_pem,
            &edge_leaf.key_pem,
        )),
        manifest(&opaque_secret(
            "default",
            "upstream-ca",
            &[("ca.crt", &ca.cert_pem)],
        )),
        // h2c clients name the edge's address: the Ingress of every host.
        route("h2c", None, "grpc", &[("backend-protocol", "GRPC")]),
        route(
            "grpc-tls-edge",
            Some("grpc.example.com"),
            "grpc",
            &[("backend-protocol", "grpc")],
        ),
        route(
            "grpcs",
            Some("grpcs.example.com"),
            "grpcs",
            &[
                ("backend-protocol", "GRPCS"),
                ("proxy-ssl-secret", "default/upstream-ca"),
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-name", "grpc-backend.internal"),
                ("proxy-ssl-server-name", "on"),
            ],
        ),
    ];
    let manifests = ManifestDir::new()?;
    let _daemon = start_daemon(&lab, &manifests, &docs)?;
    let ca_file = ca.ca_file();

    for case in CASES {
        // h2c to the edge and to the backend.
        interop_case(&lab, &interop.client, case, None)?;
        // TLS (ALPN h2) to the edge, h2c to the backend.
        interop_case(
            &lab,
            &interop.client,
            case,
            Some(("grpc.example.com", &ca_file)),
        )?;
        // TLS to the edge and to the backend, verified.
        interop_case(
            &lab,
            &interop.client,
            case,
            Some(("grpcs.example.com", &ca_file)),
        )?;
    }

    // A gRPC call from an HTTP/1.1 client still goes upstream over HTTP/2;
    // its trailers come chunked, announced.
    let frame = ca.dir.write("empty.bin", [0u8; 5])?;
    let data = format!("@{}", frame.display());
    let resolve = format!("grpc.example.com:443:{EDGE_ADDR}");
    let reply = lab.client.curl(&[
        "--http1.1",
        "--cacert",
        &ca_file.display().to_string(),
        "--resolve",
        &resolve,
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "--data-binary",
        &data,
        "https://grpc.example.com/grpc.testing.TestService/EmptyCall",
    ])?;
    ensure!(
        reply.status == 200,
        "gRPC over HTTP/1.1: {} {:?}",
        reply.status,
        reply.text()
    );
    Ok(())
}

#[test]
fn https_backends_verified_as_proxy_ssl_asks() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let mut lab = EdgeLab::create()?;
    let ca = TestCa::new()?;
    let other_ca = TestCa::new()?;
    let edge_leaf = ca.leaf(&[
        "https-off.example.com",
        "https-verified.example.com",
        "https-wrong-ca.example.com",
        "https-no-secret.example.com",
        "https-wrong-name.example.com",
        "auto.example.com",
        "mtls.example.com",
        "mtls-anonymous.example.com",
    ])?;
    let backend_leaf = ca.leaf(&["web-backend.internal"])?;
    let cert = ca.dir.write("backend.pem", &backend_leaf.cert_pem)?;
    let key = ca.dir.write("backend.key", &backend_leaf.key_pem)?;
    let pod = SocketAddr::from(([198, 19, 8, 20], 8443));
    lab.start_backend_with("secure-web", &[pod], |b| b.tls(&cert, &key))?;
    // The same, asking for a client certificate of the CA.
    let mtls_pod = SocketAddr::from(([198, 19, 8, 21], 8443));
    let client_ca = ca.ca_file();
    lab.start_backend_with("mtls-web", &[mtls_pod], |b| {
        b.tls(&cert, &key).tls_client_ca(&client_ca)
    })?;
    let edge_client = ca.leaf(&["edge.client.internal"])?;

    let verify = |secret: &'static str, name: &'static str| {
        [
            ("backend-protocol", "HTTPS"),
            ("proxy-ssl-secret", secret),
            ("proxy-ssl-verify", "on"),
            ("proxy-ssl-name", name),
        ]
    };
    let docs = [
        XDP_INGRESS_CLASS.to_owned(),
        service_yaml(
            "default",
            "secure-web",
            80,
            pod.port(),
            &[SliceEndpoint::ready(pod.ip())],
        ),
        manifest(&tls_secret_pem(
            "default",
            "edge-tls",
            &edge_leaf.cert_pem,
            &edge_leaf.key_pem,
        )),
        manifest(&opaque_secret(
            "default",
            "upstream-ca",
            &[("ca.crt", &ca.cert_pem)],
        )),
        manifest(&opaque_secret(
            "default",
            "other-ca",
            &[("ca.crt", &other_ca.cert_pem)],
        )),
        service_yaml(
            "default",
            "mtls-web",
            80,
            mtls_pod.port(),
            &[SliceEndpoint::ready(mtls_pod.ip())],
        ),
        manifest(&opaque_secret(
            "default",
            "edge-client",
            &[
                ("ca.crt", &ca.cert_pem),
                ("tls.crt", &edge_client.cert_pem),
                ("tls.key", &edge_client.key_pem),
            ],
        )),
        route(
            "mtls",
            Some("mtls.example.com"),
            "mtls-web",
            &verify("default/edge-client", "web-backend.internal"),
        ),
        route(
            "mtls-anonymous",
            Some("mtls-anonymous.example.com"),
            "mtls-web",
            &verify("default/upstream-ca", "web-backend.internal"),
        ),
        route(
            "off",
            Some("https-off.example.com"),
            "secure-web",
            &[("backend-protocol", "HTTPS")],
        ),
        route(
            "verified",
            Some("https-verified.example.com"),
            "secure-web",
            &verify("default/upstream-ca", "web-backend.internal"),
        ),
        route(
            "wrong-ca",
            Some("https-wrong-ca.example.com"),
            "secure-web",
            &verify("default/other-ca", "web-backend.internal"),
        ),
        route(
            "wrong-name",
            Some("https-wrong-name.example.com"),
            "secure-web",
            &verify("default/upstream-ca", "elsewhere.internal"),
        ),
        route(
            "no-secret",
            Some("https-no-secret.example.com"),
            "secure-web",
            &verify("default/missing", "web-backend.internal"),
        ),
        route(
            "auto",
            Some("auto.example.com"),
            "secure-web",
            &[("backend-protocol", "AUTO_HTTP")],
        ),
    ];
    let manifests = ManifestDir::new()?;
    let _daemon = start_daemon(&lab, &manifests, &docs)?;
    let ca_file = ca.ca_file().display().to_string();
    let curl = |scheme: &str, host: &str| {
        let port = if scheme == "https" { 443 } else { 80 };
        let resolve = format!("{host}:{port}:{EDGE_ADDR}");
        let url = format!("{scheme}://{host}/hello");
        lab.client
            .curl(&["--cacert", &ca_file, "--resolve", &resolve, &url])
    };

    for (scheme, host, expected) in [
        ("https", "https-off.example.com", 200),
        ("http", "https-off.example.com", 308),
        ("https", "https-verified.example.com", 200),
        ("https", "https-wrong-ca.example.com", 502),
        ("https", "https-wrong-name.example.com", 502),
        ("https", "https-no-secret.example.com", 503),
        ("https", "auto.example.com", 200),
        // proxy-ssl-secret's tls.crt and tls.key: the edge's client certificate.
        ("https", "mtls.example.com", 200),
        ("https", "mtls-anonymous.example.com", 502),
    ] {
        let reply = curl(scheme, host)?;
        ensure!(
            reply.status == expected,
            "{scheme}://{host}: {} (expected {expected}) {:?}",
            reply.status,
            reply.text()
        );
        if expected == 200 {
            let report = reply.report()?;
            ensure!(
                report.backend.ends_with("-web") && report.path == "/hello",
                "{host}: {report:?}"
            );
        }
    }
    Ok(())
}
