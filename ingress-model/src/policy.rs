//! What an Ingress's annotations ask of each of its routes, compiled once
//! when the configuration is applied and shared by the routes
//! (`Arc<RoutePolicy>`): who may use them, a redirect instead of the
//! backend, the body size and the upstream timeouts. The proxy only reads
//! it; nothing here is text interpreted at request time.

use std::{sync::Arc, time::Duration};

use crate::{
    access::{IpRange, SourceRanges},
    affinity::SessionAffinity,
    auth::{BasicAuth, ClientCertAuth, ExternalAuth},
    rewrite::RewriteTarget,
    upstream::{UpstreamProtocol, UpstreamTls},
};

/// A route's policy; the default asks for nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RoutePolicy {
    /// Only these clients (else 403).
    pub access: Option<SourceRanges>,
    /// Answer with this redirect instead of proxying.
    pub redirect: Option<Redirect>,
    /// Largest request body in bytes (`proxy-body-size`; 0: no limit),
    /// instead of `--proxy-body-size`.
    pub max_body_size: Option<u64>,
    /// `proxy-connect-timeout`, instead of `--proxy-connect-timeout`.
    pub connect_timeout: Option<Duration>,
    /// `proxy-read-timeout`, instead of `--proxy-read-timeout`.
    pub read_timeout: Option<Duration>,
    /// `proxy-send-timeout`, instead of `--proxy-send-timeout`.
    pub send_timeout: Option<Duration>,
    /// `enable-cors` and the `cors-*` annotations.
    pub cors: Option<Cors>,
    /// `use-regex: "true"`: the paths of the Ingress's hosts are regexes.
    pub use_regex: bool,
    /// `rewrite-target` (implies regex paths for its hosts).
    pub rewrite: Option<RewriteTarget>,
    /// `app-root`: a request for `/` gets a 302 to this path.
    pub app_root: Option<String>,
    /// `x-forwarded-prefix`: sent upstream as `X-Forwarded-Prefix`.
    pub forwarded_prefix: Option<String>,
    /// `upstream-vhost`: the `Host` sent upstream (`X-Forwarded-Host`
    /// keeps the client's).
    pub upstream_vhost: Option<String>,
    /// `service-upstream`: send to the Service's cluster IP and port
    /// rather than to its endpoints.
    pub service_upstream: bool,
    /// `limit-rps`, `limit-rpm` (each client address on its own).
    pub rate_limits: Vec<RateLimit>,
    /// `limit-connections`: requests in progress at once per client.
    pub max_connections: Option<u32>,
    /// `limit-allowlist` (alias `limit-whitelist`): clients the rate and
    /// connection limits do not apply to.
    pub rate_limit_exempt: Vec<IpRange>,
    /// `limit-rate` and `limit-rate-after`: each response no faster than
    /// this after its first bytes.
    pub response_rate: Option<ResponseRate>,
    /// `auth-type: basic` with its Secret's users (after the source
    /// ranges: both must pass, nginx's `satisfy all`).
    pub basic_auth: Option<BasicAuth>,
    /// `auth-url` and its companions: the auth service asked first.
    pub external_auth: Option<ExternalAuth>,
    /// `auth-tls-secret` and the `auth-tls-*` annotations (per host: the
    /// handshakes of the host ask for a certificate).
    pub client_cert: Option<ClientCertAuth>,
    /// `satisfy: any`: the source ranges or the authentication (basic,
    /// external) suffices, rather than both.
    pub satisfy_any: bool,
    /// `proxy-next-upstream`, `-tries`, `-timeout`: when a request is
    /// tried again on another endpoint (`None`: ingress-nginx's default,
    /// `error timeout`, 3 tries).
    pub next_upstream: Option<NextUpstream>,
    /// `mirror-target`, `mirror-host`, `mirror-request-body`: a copy of
    /// each request sent there, its answer ignored.
    pub mirror: Option<Mirror>,
    /// `load-balance`: how requests spread over the endpoints (`None`:
    /// the ConfigMap's, else round robin).
    pub load_balance: Option<LoadBalance>,
    /// `upstream-hash-by`: requests with the same key go to the same
    /// endpoint (consistent hashing), unless cookie affinity decides.
    pub hash_by: Option<crate::auth::UrlTemplate>,
    /// `affinity: cookie` and the `session-cookie-*` annotations.
    pub affinity: Option<SessionAffinity>,
    /// `custom-http-errors`: upstream answers with these statuses are
    /// replaced by the errors backend's answer.
    pub custom_http_errors: Vec<u16>,
    /// `default-backend`: the Service (of the Ingress's namespace, its
    /// first port) that answers the custom errors, and the requests of a
    /// route whose Service has no endpoints.
    pub default_backend: Option<String>,
    /// `proxy-redirect-from` and `-to`: the prefix of an upstream's
    /// `Location` and `Refresh` replaced (nginx's `proxy_redirect`).
    pub redirect_rewrite: Option<PrefixRewrite>,
    /// `proxy-cookie-domain`: a `Set-Cookie` domain replaced.
    pub cookie_domain: Option<PrefixRewrite>,
    /// `proxy-cookie-path`: the prefix of a `Set-Cookie` path replaced.
    pub cookie_path: Option<PrefixRewrite>,
    /// `preserve-trailing-slash`: the redirect to HTTPS keeps a trailing
    /// `/` (ingress-nginx removes it otherwise).
    pub preserve_trailing_slash: bool,
    /// `enable-access-log: "false"`: no access log line for its requests.
    pub no_access_log: bool,
    /// `enable-global-auth: "false"`: the ConfigMap's `global-auth-url`
    /// does not apply.
    pub skip_global_auth: bool,
    /// `server-alias`: more names served exactly as the Ingress's hosts
    /// (a name some Ingress has as a host is not taken).
    pub server_alias: Vec<String>,
    /// `from-to-www-redirect`: `www.<host>` redirects to `<host>`, or
    /// `<host>` to `www.<host>` for a `www.` host.
    pub from_to_www_redirect: bool,
    /// Set on the routes made for `from-to-www-redirect` alone: every
    /// request is redirected to this host.
    pub www_redirect_to: Option<String>,
    /// `backend-protocol`: how the endpoints are spoken to.
    pub upstream_protocol: UpstreamProtocol,
    /// `proxy-ssl-*`: TLS to the endpoints when the protocol is over TLS
    /// (`None`: not verified, no client certificate, the defaults).
    pub upstream_tls: Option<Arc<UpstreamTls>>,
}

/// A replacement nginx's `proxy_redirect`, `proxy_cookie_domain` and
/// `proxy_cookie_path` make: text starting with `from` (compared without
/// case for domains) has that part replaced by `to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrefixRewrite {
    /// What is replaced.
    pub from: String,
    /// What replaces it.
    pub to: String,
}

impl PrefixRewrite {
    /// `value` with `from` at its start replaced (`exact`: the whole value
    /// must be `from`, as a cookie's domain), if it matches.
    pub fn apply(&self, value: &str, exact: bool) -> Option<String> {
        if exact {
            return value
                .eq_ignore_ascii_case(&self.from)
                .then(|| self.to.clone());
        }
        let rest = value.strip_prefix(self.from.as_str())?;
        Some(format!("{}{rest}", self.to))
    }
}

/// Parses `proxy-cookie-domain` or `proxy-cookie-path`: `FROM TO` (or
/// `off`, nothing to do).
pub fn parse_from_to(text: &str) -> Result<Option<PrefixRewrite>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let mut parts = text.split_ascii_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(from), Some(to), None) if visible(from) && visible(to) => Ok(Some(PrefixRewrite {
            from: from.to_owned(),
            to: to.to_owned(),
        })),
        _ => Err(format!("{text:?} is not \"FROM TO\" (or off)")),
    }
}

/// Whether `text` is visible ASCII without `;` (it lands in a header).
fn visible(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic() && b != b';')
}

/// Parses one of `proxy-redirect-from` or `-to`.
pub fn parse_redirect_part(text: &str) -> Result<String, String> {
    let text = text.trim();
    if visible(text) {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a URL or path prefix"))
    }
}

/// Parses `server-alias`: comma-separated host names (lower-cased; no
/// wildcards).
pub fn parse_host_list(text: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = text
        .split(',')
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    for name in &names {
        let labels = name.as_str();
        let valid = !labels.is_empty()
            && labels.len() <= 253
            && labels.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid {
            return Err(format!("{name:?} is not a host name"));
        }
    }
    if names.is_empty() {
        return Err("no host name".to_owned());
    }
    Ok(names)
}

/// Parses `custom-http-errors`: comma-separated statuses from 400 to 599.
pub fn parse_status_list(text: &str) -> Result<Vec<u16>, String> {
    let codes = text
        .split(',')
        .map(str::trim)
        .filter(|code| !code.is_empty())
        .map(|code| {
            code.parse::<u16>()
                .ok()
                .filter(|code| (400..=599).contains(code))
                .ok_or_else(|| format!("{code:?} is not an error status (400 to 599)"))
        })
        .collect::<Result<Vec<u16>, String>>()?;
    if codes.is_empty() {
        return Err("no status".to_owned());
    }
    Ok(codes)
}

/// Parses `default-backend`: a Service name (of the Ingress's namespace).
pub fn parse_service_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if label(name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?} is not a Service name of the Ingress's namespace"
        ))
    }
}

/// A request rate per client address, as nginx's `limit_req ... burst=B
/// nodelay` applies it: B + 1 requests at once, then one every
/// `1 / per_second` seconds; the others answer 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Requests per minute (`limit-rps` times 60, or `limit-rpm`).
    pub per_minute: u32,
    /// Requests allowed beyond the rate at once (the rate's requests per
    /// its unit times `limit-burst-multiplier`, default 5).
    pub burst: u32,
}

/// nginx's `proxy_next_upstream`, `_tries` and `_timeout`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NextUpstream {
    /// `error`: the connection failed or broke.
    pub on_error: bool,
    /// `timeout`.
    pub on_timeout: bool,
    /// `http_500`, `http_502`, ...: answers with these statuses.
    pub on_status: Vec<u16>,
    /// `non_idempotent`: POST, LOCK and PATCH too (else only before they
    /// were sent).
    pub non_idempotent: bool,
    /// `proxy-next-upstream-tries` (0: as many as there are endpoints).
    pub tries: u32,
    /// `proxy-next-upstream-timeout` (`None`: no limit).
    pub timeout: Option<Duration>,
}

impl Default for NextUpstream {
    /// ingress-nginx's: `error timeout`, 3 tries, no time limit.
    fn default() -> Self {
        Self {
            on_error: true,
            on_timeout: true,
            on_status: Vec::new(),
            non_idempotent: false,
            tries: 3,
            timeout: None,
        }
    }
}

/// Parses `proxy-next-upstream`: nginx's space-separated conditions
/// (`off` alone: never).
pub fn parse_next_upstream(text: &str) -> Result<NextUpstream, String> {
    let mut next = NextUpstream {
        on_error: false,
        on_timeout: false,
        ..NextUpstream::default()
    };
    for condition in text.split_ascii_whitespace() {
        match condition {
            "off" => {}
            "error" => next.on_error = true,
            "timeout" => next.on_timeout = true,
            // An answer the codec cannot read is an error to us.
            "invalid_header" => next.on_error = true,
            "non_idempotent" => next.non_idempotent = true,
            other => {
                let status = other
                    .strip_prefix("http_")
                    .and_then(|code| code.parse::<u16>().ok())
                    .filter(|code| [500, 502, 503, 504, 403, 404, 429].contains(code))
                    .ok_or_else(|| format!("{other:?} is not a proxy_next_upstream condition"))?;
                next.on_status.push(status);
            }
        }
    }
    Ok(next)
}

/// Request mirroring as nginx's `mirror` does it for ingress-nginx.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mirror {
    /// Where the copies go: an http(s) URL, variables (`$request_uri`,
    /// ...) only in its path and query, never in its host
    /// (CVE-2025-1098).
    pub target: crate::auth::AuthUrl,
    /// `mirror-host`: the copies' `Host` (else the target's host).
    pub host: Option<String>,
    /// `mirror-request-body` (`on`, the default): the copies carry the
    /// request's body.
    pub request_body: bool,
}

/// ingress-nginx's `load-balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LoadBalance {
    /// `round_robin`, the default.
    #[default]
    RoundRobin,
    /// `ewma`: the better of two endpoints by their response times.
    Ewma,
}

/// Parses `load-balance`.
pub fn parse_load_balance(text: &str) -> Result<LoadBalance, String> {
    match text.trim() {
        "round_robin" => Ok(LoadBalance::RoundRobin),
        "ewma" => Ok(LoadBalance::Ewma),
        other => Err(format!("{other:?} is neither round_robin nor ewma")),
    }
}

/// nginx's `limit_rate` and `limit_rate_after`, per response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseRate {
    /// Bytes a second (`limit-rate` kilobytes times 1024).
    pub bytes_per_second: u64,
    /// Bytes sent at full speed first (`limit-rate-after` kilobytes).
    pub after: u64,
}

/// ingress-nginx's defaults for CORS.
pub const CORS_DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
/// The default `cors-allow-headers`.
pub const CORS_DEFAULT_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
/// The default `cors-max-age`, in seconds.
pub const CORS_DEFAULT_MAX_AGE: u64 = 1_728_000;

/// Cross-origin resource sharing as ingress-nginx's `enable-cors` does it:
/// the headers below on every proxied response to an allowed origin, and
/// an `OPTIONS` request (a preflight) answered 204 by the edge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cors {
    /// Allowed origins; `None`: any (`*`). An empty list allows none.
    pub origins: Option<Vec<OriginPattern>>,
    /// `Access-Control-Allow-Methods`.
    pub allow_methods: String,
    /// `Access-Control-Allow-Headers`.
    pub allow_headers: String,
    /// `Access-Control-Expose-Headers`, if any.
    pub expose_headers: Option<String>,
    /// `Access-Control-Allow-Credentials: true`.
    pub allow_credentials: bool,
    /// `Access-Control-Max-Age`.
    pub max_age: u64,
}

impl Default for Cors {
    fn default() -> Self {
        Self {
            origins: None,
            allow_methods: CORS_DEFAULT_METHODS.to_owned(),
            allow_headers: CORS_DEFAULT_HEADERS.to_owned(),
            expose_headers: None,
            allow_credentials: true,
            max_age: CORS_DEFAULT_MAX_AGE,
        }
    }
}

impl Cors {
    /// The `Access-Control-Allow-Origin` for a request with `origin`
    /// (its `Origin` header): `*` when any origin is allowed, the origin
    /// itself when it is one of the allowed, else none (no CORS headers).
    pub fn allow_origin<'a>(&self, origin: Option<&'a str>) -> Option<&'a str> {
        let Some(origins) = &self.origins else {
            return Some("*");
        };
        let origin = origin?;
        origins
            .iter()
            .any(|pattern| pattern.matches(origin))
            .then_some(origin)
    }
}

/// An allowed origin: `https://app.example.com`, with an optional port,
/// and `*.` standing for exactly one label (`https://*.example.com`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OriginPattern {
    scheme: String,
    /// The host after a `*.` wildcard label, or the whole host.
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl OriginPattern {
    /// Parses an origin as `cors-allow-origin` lists them.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad =
            || format!("{text:?} is not an origin (http(s)://host[:port], host may start with *.)");
        let (scheme, rest) = text.split_once("://").ok_or_else(bad)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(bad());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse::<u16>().map_err(|_| bad())?)),
            None => (rest, None),
        };
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(host) => (true, host),
            None => (false, host),
        };
        let label_ok = |label: &str| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad());
        }
        Ok(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            wildcard,
            port,
        })
    }

    /// Whether the request's `Origin` is this one (case-insensitively).
    pub fn matches(&self, origin: &str) -> bool {
        let Ok(other) = Self::parse(origin) else {
            return false;
        };
        if other.wildcard || other.scheme != self.scheme || other.port != self.port {
            return false;
        }
        if !self.wildcard {
            return other.host == self.host;
        }
        other
            .host
            .split_once('.')
            .is_some_and(|(_, parent)| parent == self.host)
    }
}

impl RoutePolicy {
    /// Whether it asks for nothing (routes then carry none).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the hosts of its Ingress get regex paths.
    pub fn regex_paths(&self) -> bool {
        self.use_regex || self.rewrite.is_some()
    }
}

/// A redirect a route answers with (`permanent-redirect`,
/// `temporal-redirect`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Redirect {
    /// The `Location`, an absolute http(s) URL, as written.
    pub location: String,
    /// 300 to 308.
    pub status: u16,
}

impl Redirect {
    /// A redirect to `location`, which must be an absolute `http://` or
    /// `https://` URL with a host and only visible ASCII (it becomes a
    /// header as it is); `status` outside 300-308 becomes `default_status`,
    /// as ingress-nginx does.
    pub fn new(location: &str, status: Option<u16>, default_status: u16) -> Result<Self, String> {
        let location = location.trim();
        let rest = location
            .strip_prefix("https://")
            .or_else(|| location.strip_prefix("http://"))
            .ok_or_else(|| format!("{location:?} is not an http:// or https:// URL"))?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() {
            return Err(format!("{location:?} has no host"));
        }
        if !location.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{location:?} has spaces, control or non-ASCII characters"
            ));
        }
        let status = status
            .filter(|code| (300..=308).contains(code))
            .unwrap_or(default_status);
        Ok(Self {
            location: location.to_owned(),
            status,
        })
    }
}

/// A path as `app-root` and `x-forwarded-prefix` take it: absolute, and
/// only visible ASCII (it becomes a header value).
pub fn parse_plain_path(text: &str) -> Result<String, String> {
    let text = text.trim();
    if !text.starts_with('/') || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{text:?} is not an absolute path of visible ASCII characters"
        ));
    }
    Ok(text.to_owned())
}

/// A host as `upstream-vhost` takes it: `name` or `name:port`, letters,
/// digits, `-`, `.` and `_` (it becomes the upstream request's `Host`).
pub fn parse_vhost(text: &str) -> Result<String, String> {
    let text = text.trim();
    let (name, port) = match text.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (text, None),
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !name_ok || port.is_some_and(|port| port.parse::<u16>().is_err()) {
        return Err(format!("{text:?} is not a host name with an optional port"));
    }
    Ok(text.to_owned())
}

/// An nginx size (`proxy-body-size`): bytes, or with `k`, `m` or `g`
/// (either case) for KiB, MiB, GiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((at, last)) if last.is_ascii_alphabetic() => (&text[..at], Some(last)),
        _ => (text, None),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (bytes, or a number with k, m or g)"))?;
    let factor: u64 = match unit.map(|u| u.to_ascii_lowercase()) {
        None => 1,
        Some('k') => 1 << 10,
        Some('m') => 1 << 20,
        Some('g') => 1 << 30,
        Some(_) => return Err(format!("{text:?} has an unknown unit (k, m or g)")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Whether `text` is a comma-separated list of tokens made of `allowed`
/// bytes (spaces after the commas allowed), as ingress-nginx validates the
/// `cors-allow-*` lists.
pub fn is_token_list(text: &str, allowed: impl Fn(u8) -> bool) -> bool {
    !text.trim().is_empty()
        && text
            .split(',')
            .all(|token| !token.trim().is_empty() && token.trim().bytes().all(&allowed))
}

/// A timeout annotation: whole seconds, as ingress-nginx reads them.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{text:?} is not a whole number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_one_wildcard_label() {
        let cors = Cors {
            origins: Some(
                ["https://app.example.com", "http://*.example.org:8080"]
                    .into_iter()
                    .map(|o| OriginPattern::parse(o).unwrap())
                    .collect(),
            ),
            ..Cors::default()
        };
        let allowed = [
            "https://app.example.com",
            "HTTPS://App.Example.com",
            "http://a.example.org:8080",
            "http://b-2.example.org:8080",
        ];
        for origin in allowed {
            assert_eq!(cors.allow_origin(Some(origin)), Some(origin), "{origin}");
        }
        let refused = [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://evil.app.example.com",
            "http://example.org:8080",
            "http://a.b.example.org:8080",
            "http://a.example.org",
            "https://app.example.com.evil.net",
            "null",
            "",
        ];
        for origin in refused {
            assert_eq!(cors.allow_origin(Some(origin)), None, "{origin}");
        }
        assert_eq!(cors.allow_origin(None), None);
        assert_eq!(Cors::default().allow_origin(None), Some("*"));
        assert_eq!(
            Cors::default().allow_origin(Some("https://x.example")),
            Some("*")
        );
        for bad in [
            "app.example.com",
            "ftp://a.example",
            "https://",
            "https://a b.example",
            "https://a.example:x",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_as_nginx_reads_them() {
        let cases = [
            ("0", 0),
            ("1024", 1024),
            ("8k", 8 << 10),
            ("50m", 50 << 20),
            ("50M", 50 << 20),
            (" 1g ", 1 << 30),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in ["", "m", "-1", "1.5m", "10t", "10mb", "99999999999999g"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seconds_are_whole() {
        assert_eq!(parse_seconds("3600"), Ok(Duration::from_secs(3600)));
        for bad in ["", "1.5", "10s", "-3"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirects_need_an_http_url_and_a_3xx_code() {
        let redirect = Redirect::new("https://www.example.com/new?x=1", None, 301).unwrap();
        assert_eq!(
            (redirect.location.as_str(), redirect.status),
            ("https://www.example.com/new?x=1", 301)
        );
        assert_eq!(
            Redirect::new("http://a.example", Some(308), 301)
                .unwrap()
                .status,
            308
        );
        // Out of range: the default, as ingress-nginx does.
        assert_eq!(
            Redirect::new("http://a.example", Some(200), 301)
                .unwrap()
                .status,
            301
        );
        assert_eq!(
            Redirect::new("http://a.example", Some(309), 302)
                .unwrap()
                .status,
            302
        );
        for bad in [
            "ftp://a.example/",
            "/relative",
            "https://",
            "https:///path",
            "https://a.example/with space",
            "https://a.example/\r\nX-Injected: 1",
            "https://ä.example/",
        ] {
            assert!(Redirect::new(bad, None, 301).is_err(), "{bad:?}");
        }
    }
}
