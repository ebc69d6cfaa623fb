//! Request and response header rewriting, as ingress-nginx does it: the
//! forwarded headers for the upstream, hop-by-hop headers removed both ways,
//! and the edge's own `Server` on every response.

use std::{net::IpAddr, sync::Arc};

use http::{HeaderMap, HeaderName, HeaderValue, header};
use ingress_model::{controller_config::Forwarding, policy::Cors};

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Scheme` (ingress-nginx sets it next to -Proto).
pub const X_FORWARDED_SCHEME: HeaderName = HeaderName::from_static("x-forwarded-scheme");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Port`.
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `X-Real-IP`.
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Request-ID`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The `Server` of every response the edge sends or relays.
pub const SERVER_NAME: HeaderValue = HeaderValue::from_static("xdp-ingress");

/// The upstream response's headers as the route's Ingress asks them
/// rewritten: `proxy-redirect-from/-to` on `Location` and `Refresh`,
/// `proxy-cookie-domain` and `proxy-cookie-path` on each `Set-Cookie`.
pub fn rewrite_response_headers(
    headers: &mut HeaderMap,
    policy: &ingress_model::policy::RoutePolicy,
) {
    if let Some(rewrite) = &policy.redirect_rewrite {
        for name in [header::LOCATION, header::REFRESH] {
            let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            // Refresh: `5; url=...`.
            let (lead, url) = match value.find("url=").or_else(|| value.find("URL=")) {
                Some(at) if name == header::REFRESH => value.split_at(at + 4),
                _ => ("", value),
            };
            if let Some(url) = rewrite.apply(url, false)
                && let Ok(new) = HeaderValue::from_str(&format!("{lead}{url}"))
            {
                headers.insert(name, new);
            }
        }
    }
    if policy.cookie_domain.is_none() && policy.cookie_path.is_none() {
        return;
    }
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    if cookies.is_empty() {
        return;
    }
    headers.remove(header::SET_COOKIE);
    for cookie in cookies {
        let rewritten = cookie.to_str().ok().map(|text| {
            text.split(';')
                .map(|attribute| {
                    let trimmed = attribute.trim_start();
                    let lead = &attribute[..attribute.len() - trimmed.len()];
                    let (name, value) = trimmed.split_once('=').unwrap_or((trimmed, ""));
                    let new = if name.eq_ignore_ascii_case("domain") {
                        policy
                            .cookie_domain
                            .as_ref()
                            .and_then(|r| r.apply(value, true))
                    } else if name.eq_ignore_ascii_case("path") {
                        policy
                            .cookie_path
                            .as_ref()
                            .and_then(|r| r.apply(value, false))
                    } else {
                        None
                    };
                    match new {
                        Some(new) => format!("{lead}{name}={new}"),
                        None => attribute.to_owned(),
                    }
                })
                .collect::<Vec<_>>()
                .join(";")
        });
        let value = rewritten
            .and_then(|text| HeaderValue::from_str(&text).ok())
            .unwrap_or(cookie);
        headers.append(header::SET_COOKIE, value);
    }
}

/// The value of the request cookie `name` (the first one, over every
/// `Cookie` header), as nginx's `$cookie_NAME` reads it.
pub fn request_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// Marks a response as the edge's, as nginx does: its own `Server`, in
/// place of any the upstream sent. `Date` is left to the HTTP server
/// (hyper), which adds it to a response that has none from a value it
/// formats once a second; an upstream's own `Date` goes through, as
/// RFC 9110 6.6.1 has a proxy do.
pub fn mark_response(headers: &mut HeaderMap) {
    headers.insert(header::SERVER, SERVER_NAME);
}

/// Sets the CORS headers of a response to a request from `allow_origin`
/// (the request's `Origin`, or `*`), replacing any the upstream sent, as
/// ingress-nginx's `more_set_headers` do. The values were checked to be
/// header values when the configuration was applied.
pub fn set_cors(headers: &mut HeaderMap, cors: &Cors, allow_origin: &HeaderValue) {
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("access-control-allow-methods", &cors.allow_methods);
    set("access-control-allow-headers", &cors.allow_headers);
    set("access-control-max-age", &cors.max_age.to_string());
    if cors.allow_credentials {
        set("access-control-allow-credentials", "true");
    }
    if let Some(expose) = &cors.expose_headers {
        set("access-control-expose-headers", expose);
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin.clone());
}

/// Whether `name` is hop-by-hop in itself, describing one connection and
/// never forwarded (RFC 9110 7.6.1; not counting what `Connection` names).
/// A match on the name's text (length first): it runs for every header of
/// every message.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop headers, and the headers that `Connection` names.
/// With `keep_upgrade`, an `Upgrade` request keeps `Connection: upgrade` and
/// `Upgrade` so that a WebSocket handshake passes through.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass over the names (standard names
    // compare as integers) spares the hashed removals.
    if !keep_upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let mut gone: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    gone.extend(headers.keys().filter(|name| is_hop_by_hop(name)).cloned());
    for name in gone {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(&name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// What the proxy knows about the client side of a request, with the
/// header values that say it, made once per connection (and again for a
/// request whose client address comes from a trusted proxy's header).
#[derive(Debug, Clone)]
pub struct ClientContext {
    /// The client's address: the TCP peer, or the address a trusted peer
    /// forwarded (`use-forwarded-headers`, `enable-real-ip`).
    pub client_ip: IpAddr,
    /// The TCP peer.
    pub peer_ip: IpAddr,
    /// `http` or `https`: how the request reached us.
    pub scheme: &'static str,
    /// The port of the listener that took the request.
    pub listener_port: u16,
    /// The TCP peer's port (0: not known).
    pub peer_port: u16,
    /// The peer is a trusted proxy whose `X-Forwarded-Proto`, `-Host`
    /// and `-Port` are passed on (`use-forwarded-headers`).
    pub trust_forwarded: bool,
    /// The client's `X-Forwarded-For` is extended with the peer rather
    /// than replaced (`use-forwarded-headers` with
    /// `compute-full-forwarded-for`).
    pub full_forwarded_for: bool,
    /// `client_ip` as a header value (IPv4-mapped addresses shown as IPv4).
    client_ip_value: HeaderValue,
    /// `listener_port` as a header value.
    listener_port_value: HeaderValue,
    /// What the TLS handshake said (HTTPS only).
    pub tls: Option<Arc<TlsSide>>,
}

/// What the TLS handshake of a connection said.
#[derive(Debug)]
pub struct TlsSide {
    /// The client's SNI.
    pub server_name: Option<String>,
    /// The client certificate authentication of the SNI's host
    /// (`auth-tls-*`), which the handshake asked for.
    pub client_auth: Option<Arc<crate::tls::client_auth::HostClientAuth>>,
    /// The chain the client sent, leaf first; `None`: none.
    pub chain: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

impl ClientContext {
    /// The context of a connection from `client_ip` to the `scheme` listener
    /// on `listener_port`.
    pub fn new(client_ip: IpAddr, scheme: &'static str, listener_port: u16) -> Self {
        Self {
            client_ip,
            peer_ip: client_ip,
            scheme,
            listener_port,
            peer_port: 0,
            trust_forwarded: false,
            full_forwarded_for: false,
            client_ip_value: ip_value(client_ip),
            listener_port_value: HeaderValue::from(listener_port),
            tls: None,
        }
    }

    /// The context of a request with `headers` on this connection under
    /// the ConfigMap's `forwarding`, when it differs from the
    /// connection's: a trusted peer's forwarded client address (nginx's
    /// `real_ip_recursive on`), and which forwarded headers are believed.
    pub fn for_request(&self, forwarding: &Forwarding, headers: &HeaderMap) -> Option<Self> {
        if !forwarding.real_ip() {
            return None;
        }
        let forwarded: Vec<&str> = headers
            .get_all(forwarding.forwarded_for_header.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let client_ip = forwarding.client_address(self.peer_ip, &forwarded);
        let trusted = forwarding
            .trusted
            .iter()
            .any(|range| range.contains(self.peer_ip));
        let trust_forwarded = forwarding.use_forwarded_headers && trusted;
        Some(Self {
            client_ip,
            trust_forwarded,
            full_forwarded_for: forwarding.use_forwarded_headers
                && forwarding.compute_full_forwarded_for,
            client_ip_value: ip_value(client_ip),
            ..self.clone()
        })
    }
}

impl ClientContext {
    /// The client's address as a header value.
    pub fn client_ip_header(&self) -> HeaderValue {
        self.client_ip_value.clone()
    }
}

/// An address as a header value (IPv4-mapped addresses shown as IPv4).
fn ip_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_canonical().to_string()).expect("an IP address is ASCII")
}

/// The header lines that tell an upstream about the client, for one request
/// (ingress-nginx's `proxy_set_header` lines): `X-Forwarded-For` (the
/// client's address; with `compute-full-forwarded-for`, the client's list
/// extended with the peer), `X-Real-IP`, `X-Forwarded-Proto`, `-Scheme`,
/// `-Port`, `-Host` (a trusted proxy's own with `use-forwarded-headers`,
/// else ours), `X-Request-ID` (the client's, or a new one) and
/// `X-Original-Forwarded-For` (the client's list, when it sent one). They
/// go upstream instead of the request's own lines of the same names,
/// written next to the request's other headers rather than hashed into its
/// map. `Host` is left as the client sent it.
pub struct ForwardedHeaders {
    /// The value of each of [`FORWARDED_NAMES`], when it is set.
    values: [Option<HeaderValue>; 8],
}

/// `X-Original-Forwarded-For`.
pub const X_ORIGINAL_FORWARDED_FOR: HeaderName =
    HeaderName::from_static("x-original-forwarded-for");

/// The names of [`ForwardedHeaders`]' lines, in the order they are written.
static FORWARDED_NAMES: [HeaderName; 8] = [
    X_FORWARDED_FOR,
    X_REAL_IP,
    X_FORWARDED_PROTO,
    X_FORWARDED_SCHEME,
    X_FORWARDED_PORT,
    X_FORWARDED_HOST,
    X_REQUEST_ID,
    X_ORIGINAL_FORWARDED_FOR,
];

/// Where the request id lies among [`FORWARDED_NAMES`].
const REQUEST_ID_LINE: usize = 6;
/// Where `X-Forwarded-Host` lies among [`FORWARDED_NAMES`] (a line that
/// may be unset).
const FORWARDED_HOST_LINE: usize = 5;

impl ForwardedHeaders {
    /// The lines for a request with `headers` from `client`.
    pub fn new(headers: &HeaderMap, client: &ClientContext) -> Self {
        // Several header lines are one comma-separated list (RFC 9110 5.3).
        let mut previous = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .peekable();
        let original = previous.peek().is_some().then(|| {
            let previous: Vec<&str> = previous.collect();
            // Visible ASCII header text joined by ", ".
            HeaderValue::from_str(&previous.join(", ")).expect("ASCII header value")
        });
        let forwarded_for = match &original {
            Some(list) if client.full_forwarded_for => {
                let peer = ip_value(client.peer_ip);
                let list = list.to_str().expect("ASCII");
                HeaderValue::from_str(&format!("{list}, {}", peer.to_str().expect("ASCII")))
                    .expect("ASCII header value")
            }
            _ => client.client_ip_value.clone(),
        };
        let request_id = match headers.get(&X_REQUEST_ID) {
            Some(id) if !id.is_empty() => id.clone(),
            _ => new_request_id(),
        };
        // A trusted proxy's own forwarded lines, with
        // `use-forwarded-headers`; else what the edge saw.
        let believed = |name: &HeaderName| {
            client
                .trust_forwarded
                .then(|| headers.get(name))
                .flatten()
                .filter(|value| !value.is_empty())
                .cloned()
        };
        let scheme =
            believed(&X_FORWARDED_PROTO).unwrap_or_else(|| HeaderValue::from_static(client.scheme));
        let port =
            believed(&X_FORWARDED_PORT).unwrap_or_else(|| client.listener_port_value.clone());
        let host = believed(&X_FORWARDED_HOST).or_else(|| headers.get(header::HOST).cloned());
        Self {
            values: [
                Some(forwarded_for),
                Some(client.client_ip_value.clone()),
                Some(scheme.clone()),
                Some(scheme),
                Some(port),
                host,
                Some(request_id),
                original,
            ],
        }
    }

    /// The request id that goes upstream.
    pub fn request_id(&self) -> &HeaderValue {
        self.values[REQUEST_ID_LINE]
            .as_ref()
            .expect("the request id line is always set")
    }

    fn lines(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        FORWARDED_NAMES
            .iter()
            .zip(&self.values)
            .filter_map(|(name, value)| Some((name, value.as_ref()?)))
    }

    /// Whether a request's own line named `name` is replaced: a match on
    /// the name's text, as it runs for every header of every request
    /// ([`FORWARDED_NAMES`] in the same order).
    fn replaces(&self, name: &HeaderName) -> bool {
        match name.as_str() {
            "x-forwarded-for" | "x-real-ip" | "x-forwarded-proto" | "x-forwarded-scheme"
            | "x-forwarded-port" | "x-request-id" => true,
            "x-forwarded-host" => self.values[FORWARDED_HOST_LINE].is_some(),
            "x-original-forwarded-for" => true,
            _ => false,
        }
    }

    /// The header lines that go upstream: the request's own (`headers`)
    /// but those replaced, then the forwarded ones.
    pub fn outgoing<'a>(
        &'a self,
        headers: &'a HeaderMap,
    ) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> {
        headers
            .iter()
            .filter(|(name, _)| !self.replaces(name))
            .chain(self.lines())
    }
}

/// A new request id: 32 lower-case hex digits, like ingress-nginx's `$req_id`.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random = fastrand::u128(..);
    let mut id = [0u8; 32];
    for (index, digit) in id.iter_mut().enumerate() {
        *digit = HEX[((random >> (4 * (31 - index))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).expect("hex is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientContext {
        ClientContext::new("198.18.0.2".parse().unwrap(), "http", 80)
    }

    /// The header lines that would go upstream, as a map, and the request id.
    fn set_forwarded_headers(map: &mut HeaderMap, client: &ClientContext) -> HeaderValue {
        let forwarded = ForwardedHeaders::new(map, client);
        let mut outgoing = HeaderMap::new();
        for (name, value) in forwarded.outgoing(map) {
            outgoing.append(name.clone(), value.clone());
        }
        *map = outgoing;
        forwarded.request_id().clone()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn proxy_redirect_and_cookie_rewrites_as_nginx() {
        use ingress_model::policy::{PrefixRewrite, RoutePolicy};
        let rewrite = |from: &str, to: &str| {
            Some(PrefixRewrite {
                from: from.to_owned(),
                to: to.to_owned(),
            })
        };
        let policy = RoutePolicy {
            redirect_rewrite: rewrite("http://internal/", "https://shop.example.com/"),
            cookie_domain: rewrite("internal", "shop.example.com"),
            cookie_path: rewrite("/app", "/"),
            ..RoutePolicy::default()
        };
        let mut map = headers(&[
            ("location", "http://internal/app/cart"),
            ("refresh", "5; url=http://internal/later"),
            ("set-cookie", "a=1; Domain=INTERNAL; Path=/app/x"),
            ("set-cookie", "b=2; domain=other; path=/kept"),
        ]);
        rewrite_response_headers(&mut map, &policy);
        assert_eq!(map["location"], "https://shop.example.com/app/cart");
        assert_eq!(map["refresh"], "5; url=https://shop.example.com/later");
        assert_eq!(
            map.get_all("set-cookie").iter().collect::<Vec<_>>(),
            [
                "a=1; Domain=shop.example.com; Path=//x",
                "b=2; domain=other; path=/kept"
            ]
        );
    }

    #[test]
    fn forwarded_headers_are_set() {
        let mut map = headers(&[("host", "web.example.com")]);
        let id = set_forwarded_headers(&mut map, &client());
        assert_eq!(map["x-forwarded-for"], "198.18.0.2");
        assert_eq!(map["x-real-ip"], "198.18.0.2");
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-scheme"], "http");
        assert_eq!(map["x-forwarded-port"], "80");
        assert_eq!(map["x-forwarded-host"], "web.example.com");
        assert_eq!(map["host"], "web.example.com");
        assert_eq!(map["x-request-id"], id);
        assert_eq!(id.len(), 32);
        assert!(id.to_str().unwrap().bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn forwarded_for_is_the_client_and_the_original_list_is_kept_apart() {
        let mut map = headers(&[("x-forwarded-for", "198.19.0.7")]);
        set_forwarded_headers(&mut map, &client());
        assert_eq!(map["x-forwarded-for"], "198.18.0.2");
        assert_eq!(map["x-original-forwarded-for"], "198.19.0.7");
    }

    #[test]
    fn forwarded_for_lines_are_one_list() {
        let mut map = headers(&[
            ("x-forwarded-for", "198.19.0.7"),
            ("x-forwarded-for", "198.19.0.1, 198.19.0.2"),
        ]);
        set_forwarded_headers(&mut map, &client());
        assert_eq!(
            map.get_all("x-original-forwarded-for")
                .iter()
                .collect::<Vec<_>>(),
            ["198.19.0.7, 198.19.0.1, 198.19.0.2"]
        );
    }

    #[test]
    fn a_trusted_proxy_forwards_the_client_with_use_forwarded_headers() {
        let forwarding = Forwarding {
            use_forwarded_headers: true,
            compute_full_forwarded_for: true,
            trusted: ingress_model::access::parse_ranges("198.18.0.0/24").unwrap(),
            ..Forwarding::default()
        };
        let mut map = headers(&[
            ("x-forwarded-for", "198.19.0.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example.com"),
            ("x-forwarded-port", "443"),
            ("host", "internal"),
        ]);
        let request = client().for_request(&forwarding, &map).unwrap();
        assert_eq!(request.client_ip.to_string(), "198.19.0.7");
        set_forwarded_headers(&mut map, &request);
        assert_eq!(map["x-forwarded-for"], "198.19.0.7, 198.18.0.2");
        assert_eq!(map["x-real-ip"], "198.19.0.7");
        assert_eq!(map["x-forwarded-proto"], "https");
        assert_eq!(map["x-forwarded-host"], "shop.example.com");
        assert_eq!(map["x-forwarded-port"], "443");
        // An untrusted peer is believed in nothing.
        let stranger = ClientContext::new("198.19.5.5".parse().unwrap(), "http", 80);
        let request = stranger.for_request(&forwarding, &map).unwrap();
        assert_eq!(request.client_ip.to_string(), "198.19.5.5");
        let mut map = headers(&[("x-forwarded-proto", "https"), ("host", "a")]);
        set_forwarded_headers(&mut map, &request);
        assert_eq!(map["x-forwarded-proto"], "http");
        assert!(client().for_request(&Forwarding::default(), &map).is_none());
    }

    #[test]
    fn the_clients_own_forwarded_lines_are_replaced_and_others_kept() {
        let mut map = headers(&[
            ("x-real-ip", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("accept", "*/*"),
        ]);
        set_forwarded_headers(&mut map, &client());
        assert_eq!(
            map.get_all("x-real-ip").iter().collect::<Vec<_>>(),
            ["198.18.0.2"]
        );
        assert_eq!(
            map.get_all("x-forwarded-proto").iter().collect::<Vec<_>>(),
            ["http"]
        );
        assert_eq!(map["accept"], "*/*");
        // Without a Host there is no X-Forwarded-Host of ours: the client's stays.
        assert_eq!(map["x-forwarded-host"], "evil.example");
    }

    #[test]
    fn every_forwarded_line_replaces_the_requests_own_and_nothing_else() {
        let with_host = ForwardedHeaders::new(&headers(&[("host", "h")]), &client());
        let without_host = ForwardedHeaders::new(&HeaderMap::new(), &client());
        for (index, name) in FORWARDED_NAMES.iter().enumerate() {
            assert!(with_host.replaces(name), "{name}");
            assert_eq!(
                without_host.replaces(name),
                index != FORWARDED_HOST_LINE,
                "{name}"
            );
        }
        for name in ["host", "x-forwarded", "x-real-ips", "forwarded", "accept"] {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert!(!with_host.replaces(&name), "{name}");
        }
        for name in [
            header::CONNECTION,
            HeaderName::from_static("keep-alive"),
            HeaderName::from_static("proxy-connection"),
            header::PROXY_AUTHENTICATE,
            header::PROXY_AUTHORIZATION,
            header::TE,
            header::TRAILER,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
        ] {
            assert!(is_hop_by_hop(&name), "{name}");
        }
        assert!(!is_hop_by_hop(&header::HOST));
    }

    #[test]
    fn a_client_request_id_is_kept() {
        let mut map = headers(&[("x-request-id", "abc")]);
        assert_eq!(set_forwarded_headers(&mut map, &client()), "abc");
        assert_eq!(map["x-request-id"], "abc");
    }

    #[test]
    fn request_ids_differ() {
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn ipv4_mapped_clients_show_as_ipv4() {
        let mut map = HeaderMap::new();
        let ctx = ClientContext::new("::ffff:198.18.0.9".parse().unwrap(), "http", 80);
        set_forwarded_headers(&mut map, &ctx);
        assert_eq!(map["x-real-ip"], "198.18.0.9");
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut map, false);
        let names: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept"]);
    }

    #[test]
    fn the_edge_names_itself_in_place_of_the_upstream() {
        let mut map = headers(&[
            ("server", "gunicorn"),
            ("server", "second"),
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        mark_response(&mut map);
        assert_eq!(
            map.get_all("server").iter().collect::<Vec<_>>(),
            ["xdp-ingress"]
        );
        assert_eq!(map["date"], "Sun, 06 Nov 1994 08:49:37 GMT", "kept");
        let mut bare = HeaderMap::new();
        mark_response(&mut bare);
        assert_eq!(bare["server"], "xdp-ingress");
    }

    #[test]
    fn upgrade_survives_when_kept() {
        let mut map = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        remove_hop_by_hop(&mut map, true);
        assert_eq!(map["upgrade"], "websocket");
        assert_eq!(map["connection"], "upgrade");
    }
}
