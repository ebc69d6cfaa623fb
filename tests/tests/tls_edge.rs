//! End-to-end tests of HTTPS: `xdp-ingress run --manifests DIR` in the edge
//! namespace of an [`EdgeLab`], with certificates signed by a test CA made
//! here (rcgen; openssl for the PKCS#1 and SEC1 key formats), checked by
//! real clients in the client namespace: curl with `--cacert`, openssl
//! `s_client -servername`, and a rustls client that keeps its connection
//! open across a certificate rotation.
//!
//! Needs root, the daemon and `lab-backend`
//! (`cargo build -p ingress-userspace -p xdp-ingress-lab`), curl and openssl.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned,
    pki_types::{ServerName, pem::PemObject},
};
use xdp_ingress_lab::{
    self as lab, Daemon, EDGE_ADDR, EdgeLab, ManifestDir, SliceEndpoint, XDP_INGRESS_CLASS,
    poll_until, service_yaml,
};
use xdp_ingress_tests::certs::{Leaf, TestCa, base64};

const BACKEND_PORT: u16 = 8080;

/// A `kubernetes.io/tls` Secret (or another type) as YAML.
fn secret_yaml(name: &str, type_: &str, cert: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: {type_}\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        base64(cert.as_bytes()),
        base64(key.as_bytes())
    )
}

/// An Ingress for `host` to Service `web`, with TLS from `secret`.
fn tls_ingress_yaml(name: &str, host: &str, secret: Option<&str>, annotations: &str) -> String {
    let secret = secret.map_or(String::new(), |s| format!(", secretName: {s}"));
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  annotations: {{{annotations}}}\nspec:\n  ingressClassName: xdp\n  tls: [{{hosts: [\"{host}\"]{secret}}}]\n  rules:\n  - host: \"{host}\"\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}\n"
    )
}

fn plain_ingress_yaml(name: &str, host: &str, annotations: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  annotations: {{{annotations}}}\nspec:\n  ingressClassName: xdp\n  rules:\n  - host: \"{host}\"\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}\n"
    )
}

/// A lab with one backend Service `web` and the daemon serving `manifests`.
struct TlsLab {
    daemon: Daemon,
    manifests: ManifestDir,
    lab: EdgeLab,
}

impl TlsLab {
    /// The endpoint of Service `web`.
    const WEB: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 19, 7, 10)),
        BACKEND_PORT,
    );

    fn start(documents: &[String]) -> Result<Self> {
        let mut lab = EdgeLab::create()?;
        lab.start_backend("web", &[Self::WEB])?;
        let manifests = ManifestDir::new()?;
        manifests.write("routes.yaml", &Self::manifest(documents))?;
        let daemon = Daemon::in_netns(&lab.edge)
            .interface(lab.edge_interface())
            .args(&["--manifests", &manifests.arg(), "--xdp-mode", "native"])
            .start()?;
        Ok(Self {
            daemon,
            manifests,
            lab,
        })
    }

    /// The IngressClass, Service `web` with its endpoint, and `documents`.
    fn manifest(documents: &[String]) -> String {
        let mut all = vec![
            XDP_INGRESS_CLASS.to_owned(),
            service_yaml(
                "default",
                "web",
                80,
                BACKEND_PORT,
                &[SliceEndpoint::ready(Self::WEB.ip())],
            ),
        ];
        all.extend_from_slice(documents);
        all.join("\n---\n")
    }

    fn rewrite(&self, documents: &[String]) -> Result<()> {
        self.manifests
            .write("routes.yaml", &Self::manifest(documents))?;
        Ok(())
    }

    /// curl over HTTPS to `host` at the edge, verified against `ca`.
    fn curl_https(&self, host: &str, ca: &Path, extra: &[&str]) -> Result<lab::CurlReply> {
        let resolve = format!("{host}:443:{EDGE_ADDR}");
        let url = format!("https://{host}/");
        let ca = ca.display().to_string();
        let mut args = vec!["--cacert", &ca, "--resolve", &resolve];
        args.extend_from_slice(extra);
        args.push(&url);
        self.lab.client.curl(&args)
    }

    /// The subject and verification result openssl sees for `server_name`
    /// (`None`: no SNI).
    fn s_client(&self, server_name: Option<&str>, ca: &Path) -> Result<String> {
        let connect = format!("{EDGE_ADDR}:443");
        let ca = ca.display().to_string();
        let mut args = vec![
            "openssl", "s_client", "-connect", &connect, "-CAfile", &ca, "-brief",
        ];
        if let Some(name) = server_name {
            args.extend_from_slice(&["-servername", name, "-verify_hostname", name]);
        } else {
            args.push("-noservername");
        }
        let out = self.lab.client.exec_timeout(
            &["bash", "-c", &format!("echo | {} 2>&1", shell_join(&args))],
            Duration::from_secs(15),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn shell_join(args: &[&str]) -> String {
    args.iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A kept-open HTTPS/1.1 connection from the client namespace (rustls,
/// verifying against the test CA).
struct KeptConnection {
    stream: StreamOwned<ClientConnection, TcpStream>,
    host: String,
}

impl KeptConnection {
    fn open(lab: &EdgeLab, ca_pem: &str, host: &str) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(host.to_owned())?;
        let connection = ClientConnection::new(Arc::new(config), server_name)?;
        let tcp = lab.client.enter(|| {
            TcpStream::connect_timeout(&SocketAddr::from((EDGE_ADDR, 443)), Duration::from_secs(5))
        })??;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut kept = Self {
            stream: StreamOwned::new(connection, tcp),
            host: host.to_owned(),
        };
        // Complete the handshake now, so the certificate is known.
        while kept.stream.conn.is_handshaking() {
            kept.stream.conn.complete_io(&mut kept.stream.sock)?;
        }
        Ok(kept)
    }

    /// The leaf certificate the server presented.
    fn leaf(&self) -> Vec<u8> {
        self.stream
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default()
    }

    /// Sends a keep-alive GET and reads the response; returns the status.
    fn get(&mut self, path: &str) -> Result<u16> {
        write!(
            self.stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive\r\n\r\n",
            self.host
        )?;
        self.stream.flush()?;
        let mut reader = BufReader::new(&mut self.stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line)?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .context("no status")?
            .parse()?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                bail!("connection closed in the response head");
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        Ok(status)
    }
}

#[test]
fn certificates_by_sni_http2_redirects_and_hsts() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let ca = TestCa::new()?;
    let web = ca.leaf(&["web.example.com"])?;
    let apps = ca.leaf(&["*.apps.example.com"])?;
    let rsa = ca.leaf_with_openssl_key("rsa.example.com", "rsa")?;
    let ec = ca.leaf_with_openssl_key("ec.example.com", "ec")?;
    assert!(
        rsa.key_pem.contains("BEGIN RSA PRIVATE KEY"),
        "PKCS#1 expected"
    );
    assert!(ec.key_pem.contains("BEGIN EC PRIVATE KEY"), "SEC1 expected");
    let tls = TlsLab::start(&[
        secret_yaml("web-tls", "kubernetes.io/tls", &web.cert_pem, &web.key_pem),
        secret_yaml(
            "apps-tls",
            "kubernetes.io/tls",
            &apps.cert_pem,
            &apps.key_pem,
        ),
        secret_yaml("rsa-tls", "kubernetes.io/tls", &rsa.cert_pem, &rsa.key_pem),
        secret_yaml("ec-tls", "kubernetes.io/tls", &ec.cert_pem, &ec.key_pem),
        tls_ingress_yaml("web", "web.example.com", Some("web-tls"), ""),
        tls_ingress_yaml("apps", "*.apps.example.com", Some("apps-tls"), ""),
        tls_ingress_yaml("rsa", "rsa.example.com", Some("rsa-tls"), ""),
        tls_ingress_yaml("ec", "ec.example.com", Some("ec-tls"), ""),
        tls_ingress_yaml(
            "optout",
            "optout.example.com",
            None,
            "nginx.ingress.kubernetes.io/ssl-redirect: \"false\"",
        ),
        plain_ingress_yaml(
            "forced",
            "forced.example.com",
            "nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"",
        ),
        plain_ingress_yaml("plain", "plain.example.com", ""),
    ])?;
    let ca_file = ca.ca_file();

    // curl verifies chain and name for each host; HTTP/2 by ALPN, HSTS set.
    for host in [
        "web.example.com",
        "a.apps.example.com",
        "rsa.example.com",
        "ec.example.com",
    ] {
        let reply = tls.curl_https(host, &ca_file, &["--http2", "-D", "/dev/stderr"])?;
        ensure!(reply.status == 200, "{host}: {}", reply.text());
        ensure!(
            reply.http_version == "2",
            "{host}: HTTP/{}",
            reply.http_version
        );
        let report = reply.report()?;
        ensure!(
            report.header("x-forwarded-proto") == Some("https"),
            "{report:?}"
        );
        ensure!(report.host == host, "{report:?}");
    }
    let reply = tls.curl_https("web.example.com", &ca_file, &["--http1.1"])?;
    ensure!(reply.http_version == "1.1", "HTTP/{}", reply.http_version);

    // openssl s_client: the right certificate per SNI, verified.
    for (name, cn) in [
        ("web.example.com", "web.example.com"),
        ("x.apps.example.com", "*.apps.example.com"),
        ("rsa.example.com", "rsa.example.com"),
        ("ec.example.com", "ec.example.com"),
    ] {
        let out = tls.s_client(Some(name), &ca_file)?;
        ensure!(
            out.contains(&format!("CN = {cn}")) || out.contains(&format!("CN={cn}")),
            "{name}: {out}"
        );
        ensure!(out.contains("Verification: OK"), "{name}: {out}");
    }
    // No SNI, or an unknown or too-deep name: the default certificate.
    for name in [
        None,
        Some("unknown.example.com"),
        Some("a.b.apps.example.com"),
    ] {
        let out = tls.s_client(name, &ca_file)?;
        ensure!(
            out.contains("xdp-ingress default certificate"),
            "{name:?}: {out}"
        );
    }

    // Redirects: TLS hosts redirect plain HTTP with 308, unless opted out;
    // forced hosts redirect without TLS; plain hosts do not.
    let http = |host: &str| -> Result<lab::CurlReply> {
        let url = format!("http://{EDGE_ADDR}/some/path?q=1");
        tls.lab
            .client
            .curl(&["-H", &format!("Host: {host}"), "-D", "-", &url])
    };
    for (host, redirected) in [
        ("web.example.com", true),
        ("a.apps.example.com", true),
        ("forced.example.com", true),
        ("optout.example.com", false),
        ("plain.example.com", false),
    ] {
        let reply = http(host)?;
        if redirected {
            ensure!(reply.status == 308, "{host}: {}", reply.status);
            let text = reply.text().to_ascii_lowercase();
            ensure!(
                text.contains(&format!("location: https://{host}/some/path?q=1")),
                "{host}: {text}"
            );
        } else {
            ensure!(reply.status == 200, "{host}: {}", reply.status);
        }
    }
    // HSTS on HTTPS responses.
    let out = tls.lab.client.exec_ok(&[
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-D",
        "-",
        "--cacert",
        &ca_file.display().to_string(),
        "--resolve",
        &format!("web.example.com:443:{EDGE_ADDR}"),
        "https://web.example.com/",
    ])?;
    ensure!(
        out.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000; includesubdomains"),
        "{out}"
    );
    ensure!(!tls.daemon.log().contains("PRIVATE KEY"));
    Ok(())
}

#[test]
fn rotation_is_served_to_new_handshakes_and_kept_connections_go_on() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let ca = TestCa::new()?;
    let first = ca.leaf(&["web.example.com"])?;
    let second = ca.leaf(&["web.example.com"])?;
    let documents = |leaf: &Leaf| {
        vec![
            secret_yaml(
                "web-tls",
                "kubernetes.io/tls",
                &leaf.cert_pem,
                &leaf.key_pem,
            ),
            tls_ingress_yaml("web", "web.example.com", Some("web-tls"), ""),
        ]
    };
    let tls = TlsLab::start(&documents(&first))?;
    let mut kept = KeptConnection::open(&tls.lab, &ca.cert_pem, "web.example.com")?;
    let old_leaf = kept.leaf();
    ensure!(kept.get("/before")? == 200);

    tls.rewrite(&documents(&second))?;
    let new_leaf = poll_until("the rotated certificate", Duration::from_secs(5), || {
        let fresh = KeptConnection::open(&tls.lab, &ca.cert_pem, "web.example.com")?;
        let leaf = fresh.leaf();
        Ok((leaf != old_leaf).then_some(leaf))
    })
    .context("new handshakes never got the rotated certificate")?;
    ensure!(!new_leaf.is_empty());
    // The connection opened before the rotation is still served.
    ensure!(kept.get("/after")? == 200);
    ensure!(kept.leaf() == old_leaf);
    Ok(())
}

#[test]
fn bad_secrets_fall_back_and_affect_nothing_else() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let ca = TestCa::new()?;
    let good = ca.leaf(&["good.example.com"])?;
    let foreign = ca.leaf(&["mismatch.example.com"])?;
    let other = ca.leaf(&["mismatch.example.com"])?;
    let expired = ca.leaf_valid(&["expired.example.com"], -10, -1)?;
    let tls = TlsLab::start(&[
        secret_yaml("good", "kubernetes.io/tls", &good.cert_pem, &good.key_pem),
        secret_yaml(
            "malformed",
            "kubernetes.io/tls",
            "not a certificate",
            "not a key",
        ),
        secret_yaml(
            "mismatch",
            "kubernetes.io/tls",
            &foreign.cert_pem,
            &other.key_pem,
        ),
        secret_yaml(
            "expired",
            "kubernetes.io/tls",
            &expired.cert_pem,
            &expired.key_pem,
        ),
        secret_yaml("opaque", "Opaque", &good.cert_pem, &good.key_pem),
        tls_ingress_yaml("good", "good.example.com", Some("good"), ""),
        tls_ingress_yaml("missing", "missing.example.com", Some("nonexistent"), ""),
        tls_ingress_yaml("malformed", "malformed.example.com", Some("malformed"), ""),
        tls_ingress_yaml("mismatch", "mismatch.example.com", Some("mismatch"), ""),
        tls_ingress_yaml("expired", "expired.example.com", Some("expired"), ""),
        tls_ingress_yaml("opaque", "opaque.example.com", Some("opaque"), ""),
    ])?;
    let ca_file = ca.ca_file();
    let out = tls.s_client(Some("good.example.com"), &ca_file)?;
    ensure!(
        out.contains("good.example.com") && out.contains("Verification: OK"),
        "{out}"
    );
    for host in [
        "missing.example.com",
        "malformed.example.com",
        "mismatch.example.com",
        "expired.example.com",
        "opaque.example.com",
    ] {
        let out = tls.s_client(Some(host), &ca_file)?;
        ensure!(
            out.contains("xdp-ingress default certificate"),
            "{host}: {out}"
        );
        // The host is still routed (with the default certificate).
        let reply = tls.curl_https(host, &ca_file, &["-k"])?;
        ensure!(reply.status == 200, "{host}: {}", reply.status);
    }
    let log = tls.daemon.log();
    for expected in [
        "SecretNotFound",
        "does not match the certificate",
        "expired",
        "tls.crt holds no PEM certificate",
        "Opaque",
    ] {
        ensure!(
            log.contains(expected),
            "the log does not mention {expected:?}:\n{log}"
        );
    }
    ensure!(!log.contains("PRIVATE KEY"), "key material in the log");
    Ok(())
}
