//! ingress-nginx's authentication annotations as a real client (curl in the
//! lab's client namespace, 198.18.0.2) meets them:
//!
//! - the user guide's basic-auth example (its Secret and Ingress as the
//!   guide prints them, under an IngressClass `nginx` of our controller):
//!   401 with the realm without credentials or with a wrong password, the
//!   backend's 200 for `foo:bar`, without the `Authorization` header;
//! - htpasswd lines made now by `openssl passwd` (`-apr1`, `-1`, `-5`,
//!   `-6`), a `{SHA}` line of `openssl dgst`, a bcrypt line (the bcrypt
//!   crate: Python's bcrypt is not installed), an `auth-map` Secret; a
//!   clear-text line never lets its user in; a missing Secret fails closed;
//! - the guide's external-auth example with its `auth-url` pointed at the
//!   lab's stand-in for httpbin.org (a `lab-backend` answering
//!   `/basic-auth/user/passwd` as httpbin does): 401 with the service's
//!   `WWW-Authenticate`, the backend's 200 for `user:passwd`; the service
//!   is asked with a GET without body and the headers ingress-nginx adds;
//! - `auth-signin` (302 with `rd=`), `auth-response-headers` (copied, and a
//!   client's own removed), `Set-Cookie` (`auth-always-set-cookie`), a 403
//!   and a 5xx of the service, an unreachable service (500),
//!   `auth-method`, `auth-cache-key`.
//!
//! Needs root, the daemon and `lab-backend` (`cargo build -p
//! ingress-userspace -p xdp-ingress-lab`), curl and openssl.

use std::{net::SocketAddr, process::Command};

use anyhow::{Context, Result, ensure};
use ingress_model::fixtures::{ingress, manifest, prefix};
use xdp_ingress_lab::{
    self as lab, BackendReport, CLIENT_ADDR, CurlReply, Daemon, EDGE_ADDR, EdgeLab, ManifestDir,
    SliceEndpoint, XDP_INGRESS_CLASS, documents, service_yaml,
};
use xdp_ingress_tests::sites::site;

/// The web backend (Services `web` and `http-svc`).
const WEB: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 19, 7, 1)),
    8080,
);
/// The authentication service.
const AUTH: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 19, 7, 2)),
    9000,
);

/// An IngressClass `nginx` of our controller: the guide's Ingresses name it.
const NGINX_CLASS: &str = "\
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: xdp-ingress.io/controller}
";

/// docs/examples/auth/basic/README.md: the Secret as `kubectl get secret
/// basic-auth -o yaml` prints it, and the Ingress, unchanged.
const GUIDE_BASIC: &str = "\
apiVersion: v1
data:
  auth: Zm9vOiRhcHIxJE9GRzNYeWJwJGNrTDBGSERBa29YWUlsSDkuY3lzVDAK
kind: Secret
metadata:
  name: basic-auth
  namespace: default
type: Opaque
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ingress-with-auth
  annotations:
    # type of authentication
    nginx.ingress.kubernetes.io/auth-type: basic
    # name of the secret that contains the user/password definitions
    nginx.ingress.kubernetes.io/auth-secret: basic-auth
    # message to display with an appropriate context why the authentication is required
    nginx.ingress.kubernetes.io/auth-realm: 'Authentication Required - foo'
spec:
  ingressClassName: nginx
  rules:
  - host: foo.bar.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: 
            name: http-svc
            port: 
              number: 80
";

/// docs/examples/auth/external-auth/ingress.yaml, its `auth-url`
/// (`https://httpbin.org/basic-auth/user/passwd`) pointed at the lab's
/// stand-in: the lab has no way out.
fn guide_external() -> String {
    format!(
        "\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  annotations:
    nginx.ingress.kubernetes.io/auth-url: \"http://{AUTH}/basic-auth/user/passwd\"
  name: external-auth
spec:
  ingressClassName: nginx
  rules:
  - host: external-auth-01.sample.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: http-svc
            port:
              number: 80
"
    )
}

/// An Opaque Secret in `default` with `data` (values base64-encoded here).
fn secret(name: &str, data: &[(&str, &str)]) -> String {
    let fields: Vec<String> = data
        .iter()
        .map(|(key, value)| format!("  {key}: {}", base64(value.as_bytes())))
        .collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: Opaque\ndata:\n{}\n",
        fields.join("\n")
    )
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `openssl passwd <flag> <password>`: one htpasswd hash.
fn openssl_passwd(flag: &str, password: &str) -> Result<String> {
    let out = Command::new("openssl")
        .args(["passwd", flag, password])
        .output()
        .context("running openssl passwd")?;
    ensure!(out.status.success(), "openssl passwd {flag}: {out:?}");
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// `{SHA}` and base64 of SHA-1, as `htpasswd -s` writes it.
fn openssl_sha(password: &str) -> Result<String> {
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("printf %s '{password}' | openssl dgst -sha1 -binary | openssl base64"),
        ])
        .output()
        .context("running openssl dgst")?;
    ensure!(out.status.success(), "openssl dgst: {out:?}");
    Ok(format!("{{SHA}}{}", String::from_utf8(out.stdout)?.trim()))
}

/// The head of a reply made with `-D -`: its lines, lower-case names.
fn head_has(reply: &CurlReply, line: &str) -> bool {
    let text = reply.text();
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .any(|l| l.trim_end().eq_ignore_ascii_case(line))
}

fn head_has_name(reply: &CurlReply, name: &str) -> bool {
    let text = reply.text();
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
    })
}

/// The body after the head of a reply made with `-D -`, as a report.
fn body_report(reply: &CurlReply) -> Result<BackendReport> {
    let text = reply.text();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    BackendReport::parse(body.as_bytes())
}

#[test]
fn basic_and_external_auth_as_ingress_nginx_documents_them() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let mut lab = EdgeLab::create()?;
    lab.start_backend("web", &[WEB])?;
    lab.start_backend("auth", &[AUTH])?;

    let passwords = [
        ("apr1", "-apr1", "pw-apr1"),
        ("md5", "-1", "pw-md5"),
        ("sha256", "-5", "pw-sha256"),
        ("sha512", "-6", "pw-sha512"),
    ];
    let mut htpasswd = String::from("# made by openssl passwd\n");
    for (user, flag, password) in passwords {
        htpasswd.push_str(&format!("{user}:{}\n", openssl_passwd(flag, password)?));
    }
    htpasswd.push_str(&format!("sha:{}\n", openssl_sha("pw-sha")?));
    let bcrypt_line = bcrypt::hash("pw-bcrypt", 5)?;
    htpasswd.push_str(&format!("bcrypt:{bcrypt_line}\n"));
    htpasswd.push_str("clear:pw-clear\n");
    let auth_map_hash = openssl_passwd("-apr1", "pw-map")?;

    let unreachable = format!("http://{}:9/auth", AUTH.ip());
    let docs = [
        XDP_INGRESS_CLASS.to_owned(),
        NGINX_CLASS.to_owned(),
        service_yaml(
            "default",
            "web",
            80,
            8080,
            &[SliceEndpoint::ready(WEB.ip())],
        ),
        service_yaml(
            "default",
            "http-svc",
            80,
            8080,
            &[SliceEndpoint::ready(WEB.ip())],
        ),
        GUIDE_BASIC.to_owned(),
        guide_external(),
        secret("htpasswd", &[("auth", &htpasswd)]),
        secret("users", &[("mapped", &auth_map_hash)]),
        site(
            "file",
            &[("auth-type", "basic"), ("auth-secret", "default/htpasswd")],
        ),
        site(
            "map",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "users"),
                ("auth-secret-type", "auth-map"),
            ],
        ),
        site(
            "nosecret",
            &[("auth-type", "basic"), ("auth-secret", "absent")],
        ),
        // satisfy: the client (198.18.0.2) inside or outside the range.
        site(
            "anyin",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "basic-auth"),
                ("whitelist-source-range", "198.18.0.0/24"),
                ("satisfy", "any"),
            ],
        ),
        site(
            "anyout",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "basic-auth"),
                ("whitelist-source-range", "198.18.5.0/24"),
                ("satisfy", "any"),
            ],
        ),
        site(
            "allout",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "basic-auth"),
                ("whitelist-source-range", "198.18.5.0/24"),
            ],
        ),
        // Basic and external auth together: both must pass.
        site(
            "both",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "basic-auth"),
                (
                    "auth-url",
                    &format!("http://{AUTH}/basic-auth/foo/bar?both"),
                ),
            ],
        ),
        site(
            "signin",
            &[
                ("auth-url", &format!("http://{AUTH}/basic-auth/user/passwd")),
                ("auth-signin", "https://login.example.com/start"),
                ("auth-response-headers", "X-Auth-User"),
            ],
        ),
        site(
            "always",
            &[
                ("auth-url", &format!("http://{AUTH}/basic-auth/user/passwd")),
                ("auth-always-set-cookie", "true"),
            ],
        ),
        site(
            "plain200",
            &[
                ("auth-url", &format!("http://{AUTH}/status/200")),
                ("auth-response-headers", "X-Auth-User"),
            ],
        ),
        site(
            "forbidden",
            &[("auth-url", &format!("http://{AUTH}/status/403"))],
        ),
        site(
            "broken",
            &[("auth-url", &format!("http://{AUTH}/status/502"))],
        ),
        site("unreachable", &[("auth-url", &unreachable)]),
        site(
            "posted",
            &[
                ("auth-url", &format!("http://{AUTH}/basic-auth/user/passwd")),
                ("auth-method", "POST"),
                ("auth-request-redirect", "https://app.example.com/home"),
            ],
        ),
        site(
            "cached",
            &[
                (
                    "auth-url",
                    &format!("http://{AUTH}/basic-auth/user/passwd?cached"),
                ),
                ("auth-cache-key", "$http_authorization"),
                ("auth-cache-duration", "200 1m"),
            ],
        ),
    ];
    let manifests = ManifestDir::new()?;
    manifests.write("routes.yaml", &documents(&docs))?;
    let mut daemon = Daemon::in_netns(&lab.edge)
        .interface(lab.edge_interface())
        .args(&["--xdp-mode", "native", "--manifests"])
        .args(&[&manifests.path().display().to_string()])
        .start()?;
    let curl = |host: &str, path: &str, more: &[&str]| {
        let host = format!("Host: {host}");
        let url = format!("http://{EDGE_ADDR}{path}");
        let mut args = vec!["-D", "-", "-H", host.as_str()];
        args.extend_from_slice(more);
        args.push(&url);
        lab.client.curl(&args)
    };
    let seen = || -> Result<Vec<BackendReport>> {
        let reply = lab.backend_ns.curl(&[&format!("http://{AUTH}/seen")])?;
        Ok(serde_json::from_slice(&reply.body)?)
    };

    // The guide's basic auth: 401 with its realm, then in with foo:bar.
    for more in [&[][..], &["-u", "foo:baz"][..], &["-u", "bar:bar"][..]] {
        let reply = curl("foo.bar.com", "/", more)?;
        ensure!(
            reply.status == 401
                && head_has(
                    &reply,
                    "www-authenticate: Basic realm=\"Authentication Required - foo\""
                ),
            "foo.bar.com {more:?}: {} {:?}",
            reply.status,
            reply.text()
        );
    }
    let reply = curl("foo.bar.com", "/", &["-u", "foo:bar"])?;
    let report = body_report(&reply)?;
    ensure!(
        reply.status == 200 && report.backend == "web" && report.header("authorization").is_none(),
        "foo.bar.com foo:bar: {} {:?}",
        reply.status,
        reply.text()
    );

    // Lines of every supported hash; a clear-text line is not a hash.
    for (user, _, password) in passwords
        .iter()
        .copied()
        .chain([("sha", "", "pw-sha"), ("bcrypt", "", "pw-bcrypt")])
    {
        for _ in 0..2 {
            let reply = curl(
                "file.example.com",
                "/",
                &["-u", &format!("{user}:{password}")],
            )?;
            ensure!(
                reply.status == 200,
                "{user}: {} {:?}",
                reply.status,
                reply.text()
            );
        }
        let reply = curl("file.example.com", "/", &["-u", &format!("{user}:wrong")])?;
        ensure!(
            reply.status == 401 && head_has(&reply, "www-authenticate: Basic realm=\"\""),
            "{user} wrong: {} {:?}",
            reply.status,
            reply.text()
        );
    }
    let reply = curl("file.example.com", "/", &["-u", "clear:pw-clear"])?;
    ensure!(reply.status == 401, "clear: {}", reply.status);
    let reply = curl("map.example.com", "/", &["-u", "mapped:pw-map"])?;
    ensure!(reply.status == 200, "auth-map: {}", reply.status);
    let reply = curl("map.example.com", "/", &["-u", "mapped:pw-other"])?;
    ensure!(reply.status == 401, "auth-map wrong: {}", reply.status);
    let reply = curl("nosecret.example.com", "/", &["-u", "foo:bar"])?;
    ensure!(reply.status == 503, "missing Secret: {}", reply.status);
    // satisfy any: the address or the password; all: both.
    for (name, user, expected) in [
        ("anyin", None, 200),
        ("anyin", Some("foo:baz"), 200),
        ("anyout", None, 401),
        ("anyout", Some("foo:bar"), 200),
        ("allout", Some("foo:bar"), 403),
    ] {
        let mut more = Vec::new();
        if let Some(user) = user {
            more.extend_from_slice(&["-u", user]);
        }
        let reply = curl(&format!("{name}.example.com"), "/", &more)?;
        ensure!(
            reply.status == expected,
            "{name} {user:?}: {} {:?}",
            reply.status,
            reply.text()
        );
        if expected == 200 {
            let report = body_report(&reply)?;
            ensure!(
                report.header("authorization").is_none(),
                "{name}: {report:?}"
            );
        }
    }
    // Both: the service is asked with the credentials, the backend gets none.
    let reply = curl("both.example.com", "/", &["-u", "foo:bar"])?;
    ensure!(
        reply.status == 200 && body_report(&reply)?.header("authorization").is_none(),
        "both: {} {:?}",
        reply.status,
        reply.text()
    );
    let asked = seen()?;
    ensure!(
        asked.last().is_some_and(|r| r.path.ends_with("?both")
            && r.header("authorization") == Some("Basic Zm9vOmJhcg==")),
        "both: the service saw {:?}",
        asked.last()
    );
    let reply = curl("both.example.com", "/", &["-u", "foo:baz"])?;
    ensure!(
        reply.status == 401,
        "both, wrong password: {}",
        reply.status
    );

    // The guide's external auth: the service's 401, then in; a POST's body
    // stays out of the sub-request.
    for more in [&[][..], &["-u", "user:user"][..]] {
        let reply = curl("external-auth-01.sample.com", "/", more)?;
        ensure!(
            reply.status == 401 && head_has(&reply, "www-authenticate: Basic realm=\"Fake Realm\""),
            "external {more:?}: {} {:?}",
            reply.status,
            reply.text()
        );
    }
    let reply = curl(
        "external-auth-01.sample.com",
        "/some/path?q=1",
        &[
            "-u",
            "user:passwd",
            "-d",
            "hello",
            "-H",
            "X-Request-ID: req-42",
        ],
    )?;
    let report = body_report(&reply)?;
    ensure!(
        reply.status == 200
            && report.body_bytes == 5
            && report.header("authorization") == Some("Basic dXNlcjpwYXNzd2Q=")
            && report.header("x-request-id") == Some("req-42"),
        "external user:passwd: {} {:?}",
        reply.status,
        reply.text()
    );
    let asked = seen()?;
    let sub = asked.last().context("the auth service was not asked")?;
    let client = CLIENT_ADDR.to_string();
    let expected = [
        (
            "x-original-url",
            "http://external-auth-01.sample.com/some/path?q=1",
        ),
        ("x-original-method", "POST"),
        ("x-real-ip", client.as_str()),
        ("x-forwarded-for", client.as_str()),
        ("x-auth-request-redirect", "/some/path?q=1"),
        ("x-request-id", "req-42"),
        ("x-sent-from", "nginx-ingress-controller"),
        ("authorization", "Basic dXNlcjpwYXNzd2Q="),
    ];
    ensure!(
        sub.method == "GET"
            && sub.path == "/basic-auth/user/passwd"
            && sub.body_bytes == 0
            && sub.host == AUTH.ip().to_string()
            && sub.header("content-length").is_none()
            && expected
                .iter()
                .all(|(name, value)| sub.header(name) == Some(value)),
        "the sub-request: {sub:?}"
    );

    // auth-signin: the service's 401 becomes a 302 with rd=.
    let reply = curl("signin.example.com", "/app?x=1", &[])?;
    ensure!(
        reply.status == 302
            && head_has(
                &reply,
                "location: https://login.example.com/start?rd=http://signin.example.com%2Fapp%3Fx%3D1"
            ),
        "signin: {} {:?}",
        reply.status,
        reply.text()
    );
    // auth-response-headers: the service's value replaces the client's; the
    // service's cookie goes with the 200, not with a 401.
    let reply = curl(
        "signin.example.com",
        "/",
        &["-u", "user:passwd", "-H", "X-Auth-User: admin"],
    )?;
    let report = body_report(&reply)?;
    ensure!(
        reply.status == 200
            && report.header("x-auth-user") == Some("user")
            && head_has(&reply, "set-cookie: auth-session=user"),
        "signin user:passwd: {} {:?}",
        reply.status,
        reply.text()
    );
    let reply = curl("plain200.example.com", "/", &["-H", "X-Auth-User: admin"])?;
    let report = body_report(&reply)?;
    ensure!(
        reply.status == 200 && report.header("x-auth-user").is_none(),
        "a client's own X-Auth-User went upstream: {:?}",
        reply.text()
    );
    let reply = curl("external-auth-01.sample.com", "/", &[])?;
    ensure!(
        !head_has_name(&reply, "set-cookie"),
        "cookie with a 401: {:?}",
        reply.text()
    );
    let reply = curl("always.example.com", "/", &[])?;
    ensure!(
        reply.status == 401 && head_has(&reply, "set-cookie: auth-failed=1"),
        "always: {} {:?}",
        reply.status,
        reply.text()
    );

    // The service's 403 is answered; anything else, or no service, is 500.
    for (name, status) in [("forbidden", 403), ("broken", 500), ("unreachable", 500)] {
        let reply = curl(&format!("{name}.example.com"), "/", &["-u", "user:passwd"])?;
        ensure!(
            reply.status == status && !reply.text().contains("\"backend\""),
            "{name}: {} {:?}",
            reply.status,
            reply.text()
        );
    }

    // auth-method: the sub-request's method, with X-Original-URI and X-Scheme.
    let reply = curl("posted.example.com", "/p?y=2", &["-u", "user:passwd"])?;
    ensure!(reply.status == 200, "posted: {}", reply.status);
    let asked = seen()?;
    let sub = asked.last().context("the auth service was not asked")?;
    ensure!(
        sub.method == "POST"
            && sub.header("x-original-uri") == Some("/p?y=2")
            && sub.header("x-scheme") == Some("http")
            && sub.header("x-original-method") == Some("GET")
            && sub.header("x-auth-request-redirect") == Some("https://app.example.com/home"),
        "posted sub-request: {sub:?}"
    );

    // auth-cache-key: one sub-request for two requests with the same key.
    let cached_asks = || -> Result<usize> {
        Ok(seen()?
            .iter()
            .filter(|r| r.path.ends_with("?cached"))
            .count())
    };
    for _ in 0..3 {
        let reply = curl("cached.example.com", "/", &["-u", "user:passwd"])?;
        ensure!(reply.status == 200, "cached: {}", reply.status);
    }
    ensure!(
        cached_asks()? == 1,
        "cached: asked {} times",
        cached_asks()?
    );
    // A 401 is not cached ("200 1m"): each is asked.
    for _ in 0..2 {
        let reply = curl("cached.example.com", "/", &["-u", "user:nope"])?;
        ensure!(reply.status == 401, "cached wrong: {}", reply.status);
    }
    ensure!(
        cached_asks()? == 3,
        "cached 401s: asked {} times",
        cached_asks()?
    );

    ensure!(daemon.running(), "the daemon died:\n{}", daemon.log());
    Ok(())
}

/// A certificate authority of the test (rcgen) and the files it writes.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert_pem: String,
}

impl TestCa {
    fn new(name: &str) -> Result<Self> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// A leaf with CN `name` (and that DNS name): certificate and key PEM.
    fn leaf(&self, name: &str) -> Result<(String, String)> {
        self.leaf_numbered(name, 1)
    }

    /// [`TestCa::leaf`] with serial number `serial`.
    fn leaf_numbered(&self, name: &str, serial: u64) -> Result<(String, String)> {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
        params.serial_number = Some(serial.into());
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// An Ingress of host `NAME.example.com` with TLS (Secret `tls`) and
/// `annotations`.
fn tls_site(name: &str, annotations: &[(&str, &str)]) -> String {
    let mut builder = ingress("default", name).ours();
    for (key, value) in annotations {
        builder = builder.annotation(&format!("nginx.ingress.kubernetes.io/{key}"), value);
    }
    let host = format!("{name}.example.com");
    manifest(
        &builder
            .tls(&[host.as_str()], Some("tls"))
            .rule(Some(&host), vec![prefix("/", "web")])
            .build(),
    )
}

#[test]
fn client_certificates_as_ingress_nginx_checks_them() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let mut lab = EdgeLab::create()?;
    lab.start_backend("web", &[WEB])?;
    let clients = TestCa::new("client CA")?;
    let strangers = TestCa::new("stranger CA")?;
    let servers = TestCa::new("server CA")?;
    let (server_cert, server_key) = servers.leaf("*.example.com")?;
    let files = lab::ScratchDir::new("auth-tls")?;
    for (name, ca, cn, serial) in [
        ("alice", &clients, "alice", 1),
        ("mallory", &strangers, "alice", 1),
        ("revoked", &clients, "revoked", 666),
    ] {
        let (cert, key) = ca.leaf_numbered(cn, serial)?;
        files.write(format!("{name}.crt"), cert)?;
        files.write(format!("{name}.key"), key)?;
    }
    // The client CA revokes serial 666 (ca.crl, as ingress-nginx reads it).
    let now = time::OffsetDateTime::now_utc();
    let crl = rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(1),
        crl_number: 1u64.into(),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: 666u64.into(),
            revocation_time: now - time::Duration::hours(1),
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&clients.issuer)?
    .pem()?;
    let path = |name: &str| files.join(name).display().to_string();

    let docs = [
        XDP_INGRESS_CLASS.to_owned(),
        service_yaml(
            "default",
            "web",
            80,
            8080,
            &[SliceEndpoint::ready(WEB.ip())],
        ),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: tls, namespace: default}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
            base64(server_cert.as_bytes()),
            base64(server_key.as_bytes())
        ),
        secret("ca", &[("ca.crt", &clients.cert_pem)]),
        secret(
            "ca-with-crl",
            &[("ca.crt", &clients.cert_pem), ("ca.crl", &crl)],
        ),
        tls_site("crl", &[("auth-tls-secret", "ca-with-crl")]),
        tls_site(
            "mtls",
            &[
                ("auth-tls-secret", "default/ca"),
                ("auth-tls-pass-certificate-to-upstream", "true"),
            ],
        ),
        tls_site(
            "optional",
            &[
                ("auth-tls-secret", "ca"),
                ("auth-tls-verify-client", "optional"),
            ],
        ),
        tls_site(
            "noca",
            &[
                ("auth-tls-secret", "ca"),
                ("auth-tls-verify-client", "optional_no_ca"),
            ],
        ),
        tls_site(
            "off",
            &[("auth-tls-secret", "ca"), ("auth-tls-verify-client", "off")],
        ),
        tls_site(
            "cn",
            &[
                ("auth-tls-secret", "ca"),
                ("auth-tls-match-cn", "CN=(bob|carol)"),
            ],
        ),
        tls_site(
            "errpage",
            &[
                ("auth-tls-secret", "ca"),
                ("auth-tls-error-page", "https://errors.example.com/cert"),
            ],
        ),
        tls_site("open", &[]),
    ];
    let manifests = ManifestDir::new()?;
    manifests.write("routes.yaml", &documents(&docs))?;
    let mut daemon = Daemon::in_netns(&lab.edge)
        .interface(lab.edge_interface())
        .args(&["--xdp-mode", "native", "--manifests"])
        .args(&[&manifests.path().display().to_string()])
        .start()?;
    let https = |name: &str, client: Option<&str>, more: &[&str]| {
        let host = format!("{name}.example.com");
        let resolve = format!("{host}:443:{EDGE_ADDR}");
        let url = format!("https://{host}/");
        let (cert, key) = client.map_or((String::new(), String::new()), |c| {
            (path(&format!("{c}.crt")), path(&format!("{c}.key")))
        });
        let mut args = vec!["-k", "-D", "-", "--resolve", resolve.as_str()];
        if client.is_some() {
            args.extend_from_slice(&["--cert", cert.as_str(), "--key", key.as_str()]);
        }
        args.extend_from_slice(more);
        args.push(&url);
        lab.client.curl(&args)
    };
    let served = |reply: &CurlReply, verify: &str| -> Result<BackendReport> {
        let report = body_report(reply)?;
        ensure!(
            reply.status == 200
                && report.backend == "web"
                && report
                    .header("ssl-client-verify")
                    .is_some_and(|v| v.starts_with(verify)),
            "expected the backend's 200 with ssl-client-verify {verify}: {} {:?}",
            reply.status,
            reply.text()
        );
        Ok(report)
    };
    let refused = |reply: &CurlReply, status: u16| -> Result<()> {
        ensure!(
            reply.status == status && !reply.text().contains("\"backend\""),
            "expected the proxy's {status}: {} {:?}",
            reply.status,
            reply.text()
        );
        Ok(())
    };

    // on (the default): a certificate of the CA, else 400; a client's own
    // ssl-client-* headers do not pass.
    refused(&https("mtls", None, &[])?, 400)?;
    refused(
        &https("mtls", None, &["-H", "ssl-client-verify: SUCCESS"])?,
        400,
    )?;
    refused(&https("mtls", Some("mallory"), &[])?, 400)?;
    let report = served(
        &https(
            "mtls",
            Some("alice"),
            &["-H", "ssl-client-subject-dn: CN=admin"],
        )?,
        "SUCCESS",
    )?;
    ensure!(
        report.header("ssl-client-subject-dn") == Some("CN=alice")
            && report.header("ssl-client-issuer-dn") == Some("CN=client CA")
            && report
                .header("ssl-client-cert")
                .is_some_and(|c| c.starts_with("-----BEGIN%20CERTIFICATE-----%0A")),
        "mtls alice: {:?}",
        report.headers
    );
    // ca.crl: a revoked certificate is refused, the others pass.
    served(&https("crl", Some("alice"), &[])?, "SUCCESS")?;
    served(&https("mtls", Some("revoked"), &[])?, "SUCCESS")?;
    refused(&https("crl", Some("revoked"), &[])?, 400)?;
    // optional: none is fine, a stranger's is not.
    served(&https("optional", None, &[])?, "NONE")?;
    served(&https("optional", Some("alice"), &[])?, "SUCCESS")?;
    refused(&https("optional", Some("mallory"), &[])?, 400)?;
    // optional_no_ca: the result goes upstream.
    served(&https("noca", None, &[])?, "NONE")?;
    served(&https("noca", Some("mallory"), &[])?, "FAILED:")?;
    // off: not asked.
    served(&https("off", Some("alice"), &[])?, "NONE")?;
    // match-cn: alice is not bob or carol.
    refused(&https("cn", Some("alice"), &[])?, 403)?;
    // error page: a redirect instead of the 400.
    let reply = https("errpage", None, &[])?;
    ensure!(
        reply.status == 302 && head_has(&reply, "location: https://errors.example.com/cert"),
        "errpage: {} {:?}",
        reply.status,
        reply.text()
    );
    // A host without the annotations is not asked.
    let reply = https("open", Some("alice"), &[])?;
    ensure!(
        reply.status == 200 && body_report(&reply)?.header("ssl-client-verify").is_none(),
        "open: {:?}",
        reply.text()
    );
    // A connection made for another host (its SNI) is not reused for a
    // host with other settings: 421, as nginx answers it.
    let raw = |sni: &str, host: &str| -> Result<String> {
        let script = format!(
            "printf 'GET / HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n' \
             | openssl s_client -quiet -connect {EDGE_ADDR}:443 -servername {sni} 2>/dev/null"
        );
        let out = lab
            .client
            .exec_timeout(&["sh", "-c", &script], std::time::Duration::from_secs(15))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let answer = raw("open.example.com", "mtls.example.com")?;
    ensure!(
        answer.starts_with("HTTP/1.1 421"),
        "SNI open, Host mtls: {answer:?}"
    );
    let answer = raw("mtls.example.com", "open.example.com")?;
    ensure!(
        answer.starts_with("HTTP/1.1 400"),
        "SNI mtls, Host open: {answer:?}"
    );
    // Plain HTTP to a host that requires a certificate: the redirect to
    // HTTPS first (ssl-redirect), never the backend.
    let reply = curl_plain(&lab, "mtls.example.com")?;
    ensure!(
        reply.status == 308,
        "plain mtls: {} {:?}",
        reply.status,
        reply.text()
    );

    ensure!(daemon.running(), "the daemon died:\n{}", daemon.log());
    Ok(())
}

fn curl_plain(lab: &EdgeLab, host: &str) -> Result<CurlReply> {
    let host = format!("Host: {host}");
    let url = format!("http://{EDGE_ADDR}/");
    lab.client
        .curl(&["-D", "-", "-H", host.as_str(), url.as_str()])
}
