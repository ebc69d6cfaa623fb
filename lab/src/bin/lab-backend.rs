//! `lab-backend`: the backend process of the lab. Every request gets a JSON
//! [`BackendReport`]: which backend and endpoint served it and what arrived.
//!
//! Special paths, for the tests:
//! - `/delay/<ms>`: answer after that many milliseconds;
//! - `/status/<code>`: answer with that status;
//! - `/stream/<chunks>/<delay ms>`: a chunked body, one line per chunk;
//! - `/bytes/<n>`: a body of `n` bytes (at most 64 MiB) instead of the report;
//! - `/server/<name>`: the report, with `Server: <name>`;
//! - `/dated`: the report, with `Date: Sun, 06 Nov 1994 08:49:37 GMT`;
//! - `/basic-auth/<user>/<password>`: an authentication service as
//!   httpbin.org's (ingress-nginx's external-auth example asks it): 200,
//!   `X-Auth-User: <user>` and `Set-Cookie: auth-session=<user>` for
//!   `Authorization: Basic` with that user and password, else 401 with
//!   `WWW-Authenticate: Basic realm="Fake Realm"` and `Set-Cookie:
//!   auth-failed=1`;
//! - `/seen`: a JSON list of the reports of the last requests (at most
//!   [`SEEN`]) it answered, `/seen` excepted, oldest first: what an
//!   authentication service was asked;
//! - `/respond?NAME=VALUE&...`: the report, with each `NAME: VALUE`
//!   (percent-decoded) added to the response's headers;
//! - an `Upgrade: websocket` request: `101`, then every byte is echoed; other
//!   upgrades (`h2c`) are declined, as by servers that do not speak them:
//!   the request is answered as usual.
//!
//! With `--udp-echo ADDR:PORT` (repeatable) it also answers every UDP
//! datagram there with a report (method `UDP`, `body_bytes` the datagram's
//! length), sent back from that address to the sender. With `--no-date`
//! its responses carry no `Date` but `/dated`'s (hyper adds one by
//! default).
//!
//! With `--tls-cert FILE --tls-key FILE` (PEM) every listener speaks TLS
//! (ALPN `h2` and `http/1.1`): an HTTPS upstream; with `--tls-client-ca
//! FILE` too, it requires a client certificate signed by that CA.
//!
//! Usage: `lab-backend --name NAME --listen ADDR:PORT [--listen ...]
//! [--udp-echo ADDR:PORT ...] [--no-date] [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]`

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{body::Frame, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::{TcpListener, UdpSocket};
use tokio_rustls::TlsAcceptor;
use xdp_ingress_lab::BackendReport;

type Body = BoxBody<Bytes, Infallible>;

/// How many reports `/seen` keeps.
const SEEN: usize = 64;

/// The reports of the last requests answered, for `/seen`.
static SEEN_REPORTS: Mutex<VecDeque<BackendReport>> = Mutex::new(VecDeque::new());

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn usage() -> ! {
    eprintln!(
        "usage: lab-backend --name NAME --listen ADDR:PORT [--listen ADDR:PORT ...] \
         [--udp-echo ADDR:PORT ...] [--no-date] [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]"
    );
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let mut name = String::from("backend");
    let mut listens: Vec<SocketAddr> = Vec::new();
    let mut udp_echoes: Vec<SocketAddr> = Vec::new();
    let mut dated = true;
    let (mut tls_cert, mut tls_key, mut client_ca) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--name" => name = args.next().unwrap_or_else(|| usage()),
            "--listen" => listens.push(
                args.next()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| usage()),
            ),
            "--udp-echo" => udp_echoes.push(
                args.next()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| usage()),
            ),
            "--no-date" => dated = false,
            "--tls-cert" => tls_cert = Some(args.next().unwrap_or_else(|| usage())),
            "--tls-key" => tls_key = Some(args.next().unwrap_or_else(|| usage())),
            "--tls-client-ca" => client_ca = Some(args.next().unwrap_or_else(|| usage())),
            _ => usage(),
        }
    }
    if listens.is_empty() {
        usage();
    }
    let tls = match (tls_cert, tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => match tls_acceptor(&cert, &key, client_ca.as_deref()) {
            Ok(acceptor) => Some(acceptor),
            Err(error) => {
                eprintln!("lab-backend: TLS from {cert} and {key}: {error}");
                std::process::exit(1);
            }
        },
        _ => usage(),
    };
    let mut tasks = Vec::new();
    for addr in listens {
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("lab-backend: bind {addr}: {error}");
                std::process::exit(1);
            }
        };
        tasks.push(tokio::spawn(accept_loop(
            listener,
            name.clone(),
            dated,
            tls.clone(),
        )));
    }
    for addr in udp_echoes {
        let socket = match UdpSocket::bind(addr).await {
            Ok(socket) => socket,
            Err(error) => {
                eprintln!("lab-backend: bind UDP {addr}: {error}");
                std::process::exit(1);
            }
        };
        tasks.push(tokio::spawn(udp_echo_loop(socket, name.clone())));
    }
    eprintln!("lab-backend {name} ready");
    for task in tasks {
        let _ = task.await;
    }
}

/// A TLS acceptor with the chain and key of these PEM files.
/// Requiring a client certificate signed by the CA of `client_ca` (a PEM
/// file), when given.
fn tls_acceptor(
    cert: &str,
    key: &str,
    client_ca: Option<&str>,
) -> Result<TlsAcceptor, Box<dyn std::error::Error>> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)? {
                roots.add(cert?)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(listener: TcpListener, name: String, dated: bool, tls: Option<TlsAcceptor>) {
    let local = listener.local_addr().expect("bound");
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let name = name.clone();
                async move { Ok::<_, Infallible>(respond(request, &name, local, peer).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().auto_date_header(dated);
            builder.http2().auto_date_header(dated);
            match tls {
                None => {
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                }
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}

/// Answers every datagram with a report of who received it.
async fn udp_echo_loop(socket: UdpSocket, name: String) {
    let local = socket.local_addr().expect("bound");
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let report = BackendReport {
            backend: name.clone(),
            endpoint: local.to_string(),
            peer: peer.to_string(),
            method: "UDP".to_owned(),
            path: String::new(),
            host: String::new(),
            headers: Vec::new(),
            body_bytes: len as u64,
        };
        let json = serde_json::to_vec(&report).expect("serializable");
        let _ = socket.send_to(&json, peer).await;
    }
}

/// True for an `Upgrade` request that names `websocket`.
fn wants_websocket<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|protocol| protocol.trim().eq_ignore_ascii_case("websocket"))
}

async fn respond(
    mut request: Request<hyper::body::Incoming>,
    name: &str,
    local: SocketAddr,
    peer: SocketAddr,
) -> Response<Body> {
    if wants_websocket(&request) {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            }
        });
        let mut response = Response::new(full(""));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let protocol = request.headers()[header::UPGRADE].clone();
        response.headers_mut().insert(header::UPGRADE, protocol);
        response
            .headers_mut()
            .insert(header::CONNECTION, "upgrade".parse().expect("valid"));
        return response;
    }

    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let mut report = BackendReport {
        backend: name.to_owned(),
        endpoint: local.to_string(),
        peer: peer.to_string(),
        method: request.method().to_string(),
        path: path.clone(),
        host: request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        headers: request
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body_bytes: 0,
    };
    // Count the body as it streams in, without keeping it.
    let mut body = request.into_body();
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            report.body_bytes += data.len() as u64;
        }
    }

    let segments: Vec<&str> = path.split('?').next().unwrap_or("").split('/').collect();
    if segments.as_slice() == ["", "seen"] {
        let seen = SEEN_REPORTS.lock().expect("not poisoned");
        let json = serde_json::to_vec(&*seen).expect("serializable");
        return Response::new(full(json));
    }
    {
        let mut seen = SEEN_REPORTS.lock().expect("not poisoned");
        if seen.len() == SEEN {
            seen.pop_front();
        }
        seen.push_back(report.clone());
    }
    let mut status = StatusCode::OK;
    match segments.as_slice() {
        ["", "delay", ms] => {
            let ms: u64 = ms.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms.min(600_000))).await;
        }
        ["", "status", code] => {
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_REQUEST);
        }
        ["", "bytes", count] => {
            let count: usize = count.parse().unwrap_or(0).min(64 << 20);
            return Response::new(full(vec![b'x'; count]));
        }
        ["", "stream", chunks, delay] => {
            let chunks: u32 = chunks.parse().unwrap_or(1).min(100_000);
            let delay = Duration::from_millis(delay.parse().unwrap_or(0));
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                for i in 0..chunks {
                    if i > 0 {
                        tokio::time::sleep(delay).await;
                    }
                    let line = Bytes::from(format!("chunk {i}\n"));
                    if tx.send(Ok(Frame::data(line))).await.is_err() {
                        break;
                    }
                }
            });
            let mut rx = rx;
            let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
            let mut response = Response::new(StreamBody::new(stream).boxed());
            response.headers_mut().insert(
                "x-backend",
                name.parse()
                    .unwrap_or_else(|_| "backend".parse().expect("valid")),
            );
            return response;
        }
        _ => {}
    }
    let json = serde_json::to_vec(&report).expect("serializable");
    let mut response = Response::new(full(json));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("valid"),
    );
    match segments.as_slice() {
        ["", "server", server] => {
            if let Ok(value) = server.parse() {
                headers.insert(header::SERVER, value);
            }
        }
        ["", "dated"] => {
            headers.insert(
                header::DATE,
                "Sun, 06 Nov 1994 08:49:37 GMT".parse().expect("valid"),
            );
        }
        ["", "basic-auth", user, password] => {
            let expected = format!("Basic {}", BASE64.encode(format!("{user}:{password}")));
            if report.header("authorization") == Some(expected.as_str()) {
                if let Ok(value) = user.parse() {
                    headers.insert("x-auth-user", value);
                }
                if let Ok(value) = format!("auth-session={user}").parse() {
                    headers.insert(header::SET_COOKIE, value);
                }
            } else {
                *response.status_mut() = StatusCode::UNAUTHORIZED;
                let headers = response.headers_mut();
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    "Basic realm=\"Fake Realm\"".parse().expect("valid"),
                );
                headers.insert(header::SET_COOKIE, "auth-failed=1".parse().expect("valid"));
            }
        }
        ["", "respond"] => {
            let query = path.split_once('?').map_or("", |(_, query)| query);
            for pair in query.split('&') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                if let (Ok(name), Ok(value)) = (
                    http::HeaderName::from_bytes(percent_decode(name).as_bytes()),
                    http::HeaderValue::from_str(&percent_decode(value)),
                ) {
                    headers.append(name, value);
                }
            }
        }
        _ => {}
    }
    response
}

/// `text` with its `%XX` escapes decoded (and `+` as a space).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
