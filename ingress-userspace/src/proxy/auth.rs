//! Authentication of a request, in nginx's access phase (after the source
//! ranges; both must pass, nginx's `satisfy all`), as ingress-nginx's
//! `auth-*` annotations ask it ([`ingress_model::auth`]):
//!
//! - basic: `Authorization: Basic` checked against the route's htpasswd
//!   users, else 401 with `WWW-Authenticate: Basic realm="..."`; the
//!   `Authorization` header does not go upstream. A password that passed
//!   is remembered (a salted SHA-256 of it, per user and hash) so bcrypt
//!   is not recomputed per request; slow hashes are checked off the
//!   request threads, a few at a time.
//! - external: a sub-request without body to the auth service, with the
//!   client's headers and the ones ingress-nginx adds; 2xx lets the
//!   request through (with `auth-response-headers` copied into it), 401
//!   is answered 401 (or 302 to `auth-signin`), 403 is 403, anything else
//!   or no answer within the route's timeouts is 500, as nginx's
//!   `auth_request` answers.

use std::{
    borrow::Cow,
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use ingress_model::{
    auth::{AuthUrl, BasicAuth, ExternalAuth, PasswordHash, Variable, VerifyClient, escape_uri},
    policy::RoutePolicy,
};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::tls::client_auth::CertVerdict;

use super::{
    headers::{ClientContext, TlsSide, X_REQUEST_ID, new_request_id, request_cookie},
    server::error_response,
    upstream::ProxyBody,
};

/// Passwords remembered as accepted, at most (then forgotten at once).
const MAX_VERIFIED: usize = 4096;
/// External answers cached (`auth-cache-key`), at most.
const MAX_ANSWERS: usize = 4096;
/// The most of an auth service's answer body read (then discarded).
const MAX_ANSWER_BODY: usize = 64 * 1024;
/// Statuses a client response gets the auth service's `Set-Cookie` with,
/// unless `auth-always-set-cookie` (nginx's `add_header` without `always`).
const COOKIE_STATUSES: [u16; 10] = [200, 201, 204, 206, 301, 302, 303, 304, 307, 308];

/// Checks requests against their route's authentication; shared by every
/// request handler.
pub struct Authenticator {
    /// Accepted passwords: (user, hash) to a salted digest of the password.
    verified: Mutex<HashMap<(String, PasswordHash), [u8; 32]>>,
    /// The salt of those digests, random per process.
    salt: [u8; 16],
    /// Bounds the bcrypt and SHA-crypt checks running at once.
    slow_hashes: Semaphore,
    /// Cached answers of auth services (`auth-cache-key`).
    answers: Mutex<HashMap<String, (Instant, Arc<Answer>)>>,
    /// The TLS client for `https://` auth services, with the system's
    /// roots, made on first use (`None`: no roots found).
    tls: OnceLock<Option<tokio_rustls::TlsConnector>>,
}

impl Default for Authenticator {
    fn default() -> Self {
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            verified: Mutex::default(),
            salt: fastrand::u128(..).to_ne_bytes(),
            slow_hashes: Semaphore::new(parallel),
            answers: Mutex::default(),
            tls: OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

/// The auth service's `Set-Cookie` lines for the client's response, and
/// whether they go with every status.
#[derive(Debug, Default)]
pub struct AuthCookies {
    cookies: Vec<HeaderValue>,
    always: bool,
}

impl AuthCookies {
    /// Adds the cookies to `response` when its status takes them.
    pub fn apply(self, response: &mut Response<ProxyBody>) {
        if self.cookies.is_empty()
            || !(self.always || COOKIE_STATUSES.contains(&response.status().as_u16()))
        {
            return;
        }
        for cookie in self.cookies {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
}

/// What an auth service answered, as far as it matters.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The `auth-response-headers` named, in their order (`None`: absent).
    copied: Vec<Option<HeaderValue>>,
    set_cookie: Vec<HeaderValue>,
    www_authenticate: Vec<HeaderValue>,
}

/// The request values the annotations' templates name (the auth
/// annotations', `upstream-hash-by`).
pub(crate) struct RequestValues<'a, B> {
    pub(crate) request: &'a Request<B>,
    /// The `Host` as sent (or the HTTP/2 authority).
    pub(crate) http_host: &'a str,
    pub(crate) client: &'a ClientContext,
}

impl<B> RequestValues<'_, B> {
    fn request_uri(&self) -> &str {
        self.request
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
    }

    pub(crate) fn value(&self, variable: &Variable) -> Cow<'_, str> {
        let headers = self.request.headers();
        match variable {
            Variable::Host => {
                Cow::Owned(ingress_model::host::request_host(self.http_host).to_ascii_lowercase())
            }
            Variable::HttpHost => Cow::Borrowed(self.http_host),
            Variable::Scheme => Cow::Borrowed(self.client.scheme),
            Variable::RequestUri => Cow::Borrowed(self.request_uri()),
            Variable::EscapedRequestUri => Cow::Owned(escape_uri(self.request_uri())),
            Variable::RequestMethod => Cow::Borrowed(self.request.method().as_str()),
            Variable::RemoteAddr => Cow::Owned(self.client.client_ip.to_canonical().to_string()),
            Variable::Header(name) => headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .map_or(Cow::Borrowed(""), Cow::Borrowed),
            Variable::Cookie(name) => Cow::Borrowed(request_cookie(headers, name).unwrap_or("")),
            Variable::RemoteUser => Cow::Owned(
                basic_credentials(headers)
                    .map(|(user, _)| user)
                    .unwrap_or_default(),
            ),
            Variable::Uri => Cow::Borrowed(self.request.uri().path()),
            Variable::Arg(name) => Cow::Borrowed(
                self.request
                    .uri()
                    .query()
                    .unwrap_or("")
                    .split('&')
                    .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                    .find(|(key, _)| key == name)
                    .map_or("", |(_, value)| value),
            ),
        }
    }
}

/// The user and password of `Authorization: Basic`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = BASE64.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

impl Authenticator {
    /// Runs the route's authentication on `request` (basic, then
    /// external): `Err` is the answer to send instead of proxying. On
    /// success the request is changed as nginx changes it (no
    /// `Authorization` after basic auth; the service's headers after
    /// external auth) and `cookies` holds what the client gets.
    pub async fn authenticate<B>(
        &self,
        policy: &RoutePolicy,
        request: &mut Request<B>,
        http_host: &str,
        client: &ClientContext,
        timeouts: (Duration, Duration),
        cookies: &mut AuthCookies,
    ) -> Result<(), Response<ProxyBody>> {
        if let Some(basic) = &policy.basic_auth {
            self.basic(basic, request).await?;
        }
        if let Some(external) = &policy.external_auth {
            self.external(external, request, http_host, client, timeouts, cookies)
                .await?;
        }
        if policy.basic_auth.is_some() {
            // nginx's `proxy_set_header Authorization ""`: the password
            // stays here (the auth service's sub-request still had it).
            request.headers_mut().remove(header::AUTHORIZATION);
        }
        Ok(())
    }

    async fn basic<B>(
        &self,
        basic: &BasicAuth,
        request: &Request<B>,
    ) -> Result<(), Response<ProxyBody>> {
        let accepted = match basic_credentials(request.headers()) {
            Some((user, password)) => self.verify(basic, user, password).await,
            None => false,
        };
        if !accepted {
            let mut response = error_response(StatusCode::UNAUTHORIZED);
            // The realm was checked to be quotable header text at apply.
            if let Ok(value) = HeaderValue::from_str(&format!("Basic realm=\"{}\"", basic.realm)) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            return Err(response);
        }
        Ok(())
    }

    /// Whether `user` signs in with `password`, remembered when it does.
    async fn verify(&self, basic: &BasicAuth, user: String, password: Vec<u8>) -> bool {
        let Some(hash) = basic.credentials.hash_of(&user) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::new()
            .chain_update(self.salt)
            .chain_update(&password)
            .finalize()
            .into();
        let key = (user, hash.clone());
        let remembered = self
            .verified
            .lock()
            .expect("not poisoned")
            .get(&key)
            .copied();
        if remembered.is_some_and(|known| constant_time_eq(&known, &digest)) {
            return true;
        }
        let accepted = match hash {
            PasswordHash::Bcrypt(_) | PasswordHash::ShaCrypt(_) => {
                let Ok(_permit) = self.slow_hashes.acquire().await else {
                    return false;
                };
                let hash = hash.clone();
                tokio::task::spawn_blocking(move || hash.verify(&password))
                    .await
                    .unwrap_or(false)
            }
            _ => hash.verify(&password),
        };
        if accepted {
            let mut verified = self.verified.lock().expect("not poisoned");
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
            verified.insert(key, digest);
        }
        accepted
    }

    async fn external<B>(
        &self,
        external: &ExternalAuth,
        request: &mut Request<B>,
        http_host: &str,
        client: &ClientContext,
        (connect_timeout, read_timeout): (Duration, Duration),
        cookies: &mut AuthCookies,
    ) -> Result<(), Response<ProxyBody>> {
        // One request id for the sub-request and the upstream.
        if request
            .headers()
            .get(&X_REQUEST_ID)
            .is_none_or(HeaderValue::is_empty)
        {
            request.headers_mut().insert(X_REQUEST_ID, new_request_id());
        }
        let values = RequestValues {
            request,
            http_host,
            client,
        };
        let cache_key = external.cache.as_ref().map(|cache| {
            let key = cache.key.render(|v| values.value(v));
            format!("{http_host}\n{}\n{key}", fingerprint(external))
        });
        let cached = cache_key.as_ref().and_then(|key| {
            let answers = self.answers.lock().expect("not poisoned");
            let (expires, answer) = answers.get(key)?;
            (*expires > Instant::now()).then(|| answer.clone())
        });
        let answer = match cached {
            Some(answer) => answer,
            None => {
                let sub_request = sub_request(external, &values).map_err(|error| {
                    debug!(%error, "auth sub-request not made");
                    error_response(StatusCode::INTERNAL_SERVER_ERROR)
                })?;
                let answer = match tokio::time::timeout(
                    connect_timeout + read_timeout,
                    self.ask(&external.url, sub_request, connect_timeout, external),
                )
                .await
                {
                    Ok(Ok(answer)) => Arc::new(answer),
                    Ok(Err(error)) => {
                        warn!(host = external.url.host, %error, "auth service failed");
                        return Err(error_response(StatusCode::INTERNAL_SERVER_ERROR));
                    }
                    Err(_) => {
                        warn!(host = external.url.host, "auth service timed out");
                        return Err(error_response(StatusCode::INTERNAL_SERVER_ERROR));
                    }
                };
                if let (Some(key), Some(ttl)) = (
                    &cache_key,
                    external
                        .cache
                        .as_ref()
                        .and_then(|c| c.duration_for(answer.status)),
                ) {
                    let mut answers = self.answers.lock().expect("not poisoned");
                    if answers.len() >= MAX_ANSWERS {
                        let now = Instant::now();
                        answers.retain(|_, (expires, _)| *expires > now);
                        if answers.len() >= MAX_ANSWERS {
                            answers.clear();
                        }
                    }
                    answers.insert(key.clone(), (Instant::now() + ttl, answer.clone()));
                }
                answer
            }
        };
        cookies.cookies = answer.set_cookie.clone();
        cookies.always = external.always_set_cookie;
        match answer.status {
            200..=299 => {
                // Set from the answer or removed: a client cannot send its own.
                for (name, value) in external.response_headers.iter().zip(&answer.copied) {
                    let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                        continue;
                    };
                    match value {
                        Some(value) => request.headers_mut().insert(name, value.clone()),
                        None => request.headers_mut().remove(name),
                    };
                }
                Ok(())
            }
            401 => {
                if let Some(signin) = &external.signin {
                    let values = RequestValues {
                        request,
                        http_host,
                        client,
                    };
                    let location = signin.render(|v| values.value(v));
                    let mut response = error_response(StatusCode::FOUND);
                    let Ok(location) = HeaderValue::from_str(&location) else {
                        return Err(error_response(StatusCode::INTERNAL_SERVER_ERROR));
                    };
                    response.headers_mut().insert(header::LOCATION, location);
                    return Err(response);
                }
                let mut response = error_response(StatusCode::UNAUTHORIZED);
                for value in &answer.www_authenticate {
                    response
                        .headers_mut()
                        .append(header::WWW_AUTHENTICATE, value.clone());
                }
                Err(response)
            }
            403 => Err(error_response(StatusCode::FORBIDDEN)),
            status => {
                warn!(
                    host = external.url.host,
                    status, "auth service answered neither 2xx, 401 nor 403"
                );
                Err(error_response(StatusCode::INTERNAL_SERVER_ERROR))
            }
        }
    }

    /// Sends `sub_request` to the auth service on a new connection (one
    /// per sub-request) and reads its answer.
    async fn ask(
        &self,
        url: &AuthUrl,
        sub_request: Request<Empty<Bytes>>,
        connect_timeout: Duration,
        external: &ExternalAuth,
    ) -> Result<Answer, String> {
        let stream = tokio::time::timeout(connect_timeout, connect(url))
            .await
            .map_err(|_| "connect timed out".to_owned())??;
        if url.tls {
            let connector = self
                .tls
                .get_or_init(tls_connector)
                .clone()
                .ok_or("no trusted root certificates for an https auth-url")?;
            let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                .map_err(|e| e.to_string())?;
            let stream = tokio::time::timeout(connect_timeout, connector.connect(name, stream))
                .await
                .map_err(|_| "TLS handshake timed out".to_owned())?
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(TokioIo::new(stream), sub_request, external).await
        } else {
            exchange(TokioIo::new(stream), sub_request, external).await
        }
    }
}

/// A key for the cached answers of one auth configuration.
fn fingerprint(external: &ExternalAuth) -> u64 {
    use std::hash::{BuildHasher as _, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(external)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The sub-request as ingress-nginx's auth location sends it: the client's
/// headers (not its body, nor hop-by-hop ones) and X-Original-URL,
/// X-Original-Method, X-Sent-From, X-Real-IP, X-Forwarded-For (the client
/// address), X-Auth-Request-Redirect, X-Request-ID; with `auth-method`,
/// also X-Original-URI and X-Scheme.
fn sub_request<B>(
    external: &ExternalAuth,
    values: &RequestValues<'_, B>,
) -> Result<Request<Empty<Bytes>>, String> {
    let target = external.url.target.render(|v| values.value(v));
    let method = match &external.method {
        Some(method) => Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?,
        None => Method::GET,
    };
    let mut sub = Request::builder()
        .method(method)
        .uri(target.as_str())
        .body(Empty::new())
        .map_err(|error| format!("auth-url target {target:?}: {error}"))?;
    let headers = sub.headers_mut();
    for (name, value) in values.request.headers() {
        if !skipped_for_auth(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let request_uri = values.request_uri();
    let mut set = |name: &'static str, value: &str| -> Result<(), String> {
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("{name}: {value:?} is not a header value"))?;
        headers.insert(HeaderName::from_static(name), value);
        Ok(())
    };
    let host = if external.url.host.contains(':') {
        format!("[{}]", external.url.host)
    } else {
        external.url.host.clone()
    };
    set("host", &host)?;
    set(
        "x-original-url",
        &format!(
            "{}://{}{request_uri}",
            values.client.scheme, values.http_host
        ),
    )?;
    set("x-original-method", values.request.method().as_str())?;
    set("x-sent-from", "nginx-ingress-controller")?;
    let client_ip = values.client.client_ip.to_canonical().to_string();
    set("x-real-ip", &client_ip)?;
    set("x-forwarded-for", &client_ip)?;
    set(
        "x-auth-request-redirect",
        external.request_redirect.as_deref().unwrap_or(request_uri),
    )?;
    if external.method.is_some() {
        set("x-original-uri", request_uri)?;
        set("x-scheme", values.client.scheme)?;
    }
    if let Some(id) = values.request.headers().get(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID, id.clone());
    }
    Ok(sub)
}

/// Request headers that do not go to the auth service: hop-by-hop ones,
/// those of the body, and `X-Forwarded-Proto` (nginx sets it empty).
fn skipped_for_auth(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "expect"
            | "x-forwarded-proto"
    )
}

/// A TCP connection to the service's host (resolved on each use).
pub(crate) async fn connect(url: &AuthUrl) -> Result<tokio::net::TcpStream, String> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("resolving {}: {e}", url.host))?
        .collect();
    let mut last = format!("{} resolves to no address", url.host);
    for address in addresses {
        match tokio::net::TcpStream::connect(address).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(error) => last = format!("connecting to {address}: {error}"),
        }
    }
    Err(last)
}

pub(crate) fn tls_connector() -> Option<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        warn!("no trusted root certificates found: https auth-urls answer 500");
        return None;
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// One HTTP/1.1 exchange on `io`: the answer's status and the headers
/// that matter; the body is read (bounded) and dropped.
async fn exchange<IO>(
    io: IO,
    sub_request: Request<Empty<Bytes>>,
    external: &ExternalAuth,
) -> Result<Answer, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let connection = tokio::spawn(connection);
    let response = sender
        .send_request(sub_request)
        .await
        .map_err(|e| e.to_string());
    let result = match response {
        Ok(response) => {
            let (parts, mut body) = response.into_parts();
            let mut read = 0usize;
            while read <= MAX_ANSWER_BODY {
                match body.frame().await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                    Some(Err(_)) | None => break,
                }
            }
            let all = |name: HeaderName| parts.headers.get_all(name).iter().cloned().collect();
            Ok(Answer {
                status: parts.status.as_u16(),
                copied: external
                    .response_headers
                    .iter()
                    .map(|name| parts.headers.get(name.as_str()).cloned())
                    .collect(),
                set_cookie: all(header::SET_COOKIE),
                www_authenticate: all(header::WWW_AUTHENTICATE),
            })
        }
        Err(error) => Err(error),
    };
    connection.abort();
    result
}

/// Client certificate authentication (`auth-tls-*`) of a request, first
/// of all as nginx checks it when it reads the request: the connection's
/// host (by SNI) asks for certificates, or the route does. A missing or
/// failed certificate that the mode requires is a 400 (or a 302 to
/// `auth-tls-error-page`), a subject that `auth-tls-match-cn` refuses a
/// 403, a request for a host with other settings than the handshake's
/// host a 421: that answer is returned. Otherwise the request carries
/// `ssl-client-verify`,
/// `ssl-client-subject-dn`, `ssl-client-issuer-dn` and, when asked,
/// `ssl-client-cert` upstream (a client's own are removed).
pub fn check_client_cert<B>(
    policy: Option<&RoutePolicy>,
    host: &str,
    client: &ClientContext,
    request: &mut Request<B>,
) -> Option<Response<ProxyBody>> {
    let route = policy.and_then(|p| p.client_cert.as_ref());
    let tls = client.tls.as_deref();
    let (auth, verdict, leaf) = match (tls, route) {
        (
            Some(
                tls @ TlsSide {
                    client_auth: Some(asked),
                    ..
                },
            ),
            route,
        ) => {
            // Another host's settings than the handshake's: that host needs
            // its own connection (nginx's 421 for a mismatched SNI).
            if route.is_some_and(|route| *route != asked.auth) {
                return Some(error_response(StatusCode::MISDIRECTED_REQUEST));
            }
            let chain = tls.chain.as_deref();
            let verdict = match asked.auth.verify {
                VerifyClient::Off => CertVerdict::None,
                _ => asked.check(chain),
            };
            (&asked.auth, verdict, chain.and_then(|c| c.first()))
        }
        (Some(tls), Some(route))
            if route.verify != VerifyClient::Off
                && tls.server_name.as_deref().is_some_and(|name| {
                    !name.eq_ignore_ascii_case(&ingress_model::host::request_host(host))
                }) =>
        {
            // A connection made for another host (HTTP/2 reuse): not asked.
            return Some(error_response(StatusCode::MISDIRECTED_REQUEST));
        }
        // Not asked in the handshake: plain HTTP, or no SNI.
        (_, Some(route)) => (route, CertVerdict::None, None),
        (_, None) => return None,
    };
    let refused = match (&verdict, auth.verify) {
        (_, VerifyClient::Off | VerifyClient::OptionalNoCa) => false,
        (CertVerdict::None, VerifyClient::On) => true,
        (CertVerdict::None, _) => false,
        (CertVerdict::Success, _) => false,
        (CertVerdict::Failed(_), _) => true,
    };
    if refused {
        debug!(client = %client.client_ip, ?verdict, "client certificate refused");
        return Some(match &auth.error_page {
            Some(page) => match HeaderValue::from_str(page) {
                Ok(location) => {
                    let mut response = error_response(StatusCode::FOUND);
                    response.headers_mut().insert(header::LOCATION, location);
                    response
                }
                Err(_) => error_response(StatusCode::BAD_REQUEST),
            },
            None => error_response(StatusCode::BAD_REQUEST),
        });
    }
    let names = leaf.and_then(|der| {
        let (_, certificate) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        Some((
            distinguished_name(certificate.subject()),
            distinguished_name(certificate.issuer()),
        ))
    });
    if let Some(pattern) = &auth.match_cn {
        let subject = names.as_ref().map_or("", |(subject, _)| subject.as_str());
        if !pattern.matches(subject) {
            debug!(client = %client.client_ip, subject, "client certificate subject refused");
            return Some(error_response(StatusCode::FORBIDDEN));
        }
    }
    let headers = request.headers_mut();
    for name in [
        "ssl-client-verify",
        "ssl-client-subject-dn",
        "ssl-client-issuer-dn",
        "ssl-client-cert",
    ] {
        headers.remove(name);
    }
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("ssl-client-verify", &verdict.header_value());
    if let Some((subject, issuer)) = &names {
        set("ssl-client-subject-dn", subject);
        set("ssl-client-issuer-dn", issuer);
    }
    if auth.pass_certificate
        && let Some(leaf) = leaf
    {
        set("ssl-client-cert", &escape_uri(&pem(leaf.as_ref())));
    }
    None
}

/// A name as nginx's `$ssl_client_s_dn` writes it (RFC 2253: the last
/// RDN first, `,` between them).
fn distinguished_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut parts: Vec<String> = Vec::new();
    for rdn in name.iter_rdn() {
        let attributes: Vec<String> = rdn
            .iter()
            .map(|attribute| {
                let key = x509_parser::objects::oid2abbrev(attribute.attr_type(), registry)
                    .map_or_else(|_| attribute.attr_type().to_id_string(), str::to_owned);
                let value = attribute.as_str().unwrap_or("");
                format!("{key}={value}")
            })
            .collect();
        parts.push(attributes.join("+"));
    }
    parts.reverse();
    parts.join(",")
}

/// A certificate in PEM.
fn pem(der: &[u8]) -> String {
    let encoded = BASE64.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn basic_credentials_are_read_as_browsers_send_them() {
        let h = headers(&[("authorization", "Basic Zm9vOmJhcg==")]);
        assert_eq!(basic_credentials(&h), Some(("foo".into(), b"bar".to_vec())));
        // The password may hold colons; the scheme is case-insensitive.
        let h = headers(&[("authorization", "basic dTphOmI=")]);
        assert_eq!(basic_credentials(&h), Some(("u".into(), b"a:b".to_vec())));
        for bad in ["Bearer Zm9vOmJhcg==", "Basic !!!", "Basic Zm9v", "Basic"] {
            assert_eq!(
                basic_credentials(&headers(&[("authorization", bad)])),
                None,
                "{bad}"
            );
        }
        assert_eq!(basic_credentials(&HeaderMap::new()), None);
    }

    #[test]
    fn a_certificate_goes_upstream_as_url_encoded_pem() {
        let der = (0u8..100).collect::<Vec<u8>>();
        let text = pem(&der);
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(text.lines().all(|line| line.len() <= 64));
        let mut encoded = vec![0x30u8];
        encoded.extend_from_slice(&der[1..]);
        assert_eq!(
            ingress_model::auth::pem_certificates(&pem(&encoded)).unwrap(),
            [encoded]
        );
        assert!(escape_uri(&text).starts_with("-----BEGIN%20CERTIFICATE-----%0A"));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let h = headers(&[("cookie", "a=1; _oauth2_proxy=tok; b=2")]);
        assert_eq!(request_cookie(&h, "_oauth2_proxy"), Some("tok"));
        assert_eq!(request_cookie(&h, "c"), None);
    }

    #[tokio::test]
    async fn accepted_passwords_are_remembered_per_user_and_hash() {
        let (credentials, _) = ingress_model::auth::Htpasswd::parse(
            "foo:$2y$05$KBCwKxOzLha2MUDgW0PjXeWVAwXaXuD9sAFW.2Ym99rHP9dxW6/Pi\n",
        );
        let basic = BasicAuth {
            realm: String::new(),
            credentials: Arc::new(credentials),
        };
        let auth = Authenticator::default();
        assert!(!auth.verify(&basic, "foo".into(), b"baz".to_vec()).await);
        assert!(auth.verified.lock().unwrap().is_empty());
        assert!(auth.verify(&basic, "foo".into(), b"bar".to_vec()).await);
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
        assert!(auth.verify(&basic, "foo".into(), b"bar".to_vec()).await);
        // A remembered password does not let another one in.
        assert!(!auth.verify(&basic, "foo".into(), b"baz".to_vec()).await);
        assert!(!auth.verify(&basic, "bar".into(), b"bar".to_vec()).await);
    }

    #[test]
    fn cookies_go_with_success_and_redirects_unless_always() {
        let cookie = HeaderValue::from_static("session=1");
        for (status, always, expected) in [
            (200, false, true),
            (302, false, true),
            (401, false, false),
            (500, false, false),
            (401, true, true),
        ] {
            let mut response = error_response(StatusCode::from_u16(status).unwrap());
            AuthCookies {
                cookies: vec![cookie.clone()],
                always,
            }
            .apply(&mut response);
            assert_eq!(
                response.headers().contains_key(header::SET_COOKIE),
                expected,
                "{status} {always}"
            );
        }
    }
}
