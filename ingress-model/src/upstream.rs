//! How a route's requests reach its endpoints: the protocol (HTTP/1.1 or
//! HTTP/2, cleartext or over TLS) and, over TLS, how the endpoint is
//! verified and what the edge presents to it.
//!
//! ingress-nginx's `backend-protocol` and `proxy-ssl-*` annotations compile
//! into these types, and so can Gateway API's (a backend's `appProtocol`,
//! BackendTLSPolicy). Certificates are kept as the PEM bytes of their
//! Secret, shared (`Arc<[u8]>`); the proxy parses them once per distinct
//! configuration.

use std::sync::Arc;

/// The protocol spoken to a route's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 in clear text (`HTTP`, the default).
    #[default]
    Http1,
    /// HTTP/1.1 over TLS (`HTTPS`).
    Http1OverTls,
    /// HTTP/2 in clear text with prior knowledge (`GRPC`, `H2C`).
    H2c,
    /// HTTP/2 over TLS, ALPN `h2` (`GRPCS`).
    Http2OverTls,
    /// The client's scheme: HTTP/1.1 over TLS for a client over HTTPS,
    /// else in clear text (`AUTO_HTTP`).
    SameAsClient,
}

impl UpstreamProtocol {
    /// Reads a `backend-protocol` value, case-insensitively.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_uppercase().as_str() {
            "HTTP" => Ok(Self::Http1),
            "HTTPS" => Ok(Self::Http1OverTls),
            "GRPC" | "H2C" => Ok(Self::H2c),
            "GRPCS" => Ok(Self::Http2OverTls),
            "AUTO_HTTP" => Ok(Self::SameAsClient),
            "FCGI" => Err("FastCGI backends are not supported by xdp-ingress".to_owned()),
            _ => Err(format!(
                "{text:?} is not one of HTTP, HTTPS, GRPC, GRPCS, H2C, AUTO_HTTP"
            )),
        }
    }

    /// What is spoken for a client over HTTPS (`client_tls`) or not.
    pub fn for_client(self, client_tls: bool) -> Self {
        match self {
            Self::SameAsClient if client_tls => Self::Http1OverTls,
            Self::SameAsClient => Self::Http1,
            other => other,
        }
    }

    /// Whether the connection to the endpoint is TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Http1OverTls | Self::Http2OverTls)
    }

    /// Whether the endpoint is spoken to in HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Self::H2c | Self::Http2OverTls)
    }
}

/// TLS to a route's endpoints (`proxy-ssl-*`; used when its protocol is
/// over TLS). The default verifies nothing, as ingress-nginx's
/// `proxy-ssl-verify: "off"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// Verify the endpoint's certificate against these CA certificates
    /// (PEM, the Secret's `ca.crt`); `None`: not verified.
    pub verify: Option<Arc<[u8]>>,
    /// At most this many intermediate certificates between the endpoint's
    /// certificate and a CA (`proxy-ssl-verify-depth`, default 1).
    pub verify_depth: u32,
    /// The name the certificate is verified for and, with `send_sni`,
    /// sent as SNI (`proxy-ssl-name`); `None`: the `Host` sent upstream.
    pub server_name: Option<String>,
    /// Send the server name in SNI (`proxy-ssl-server-name: "on"`).
    pub send_sni: bool,
    /// The client certificate presented to the endpoint.
    pub client_cert: Option<ClientCert>,
    /// TLS 1.2 allowed (`proxy-ssl-protocols`).
    pub tls12: bool,
    /// TLS 1.3 allowed.
    pub tls13: bool,
    /// The TLS 1.2 cipher suites allowed, by their IANA names
    /// (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`); `None`: the TLS
    /// library's safe defaults. TLS 1.3's suites are always its defaults,
    /// as OpenSSL's cipher lists leave them alone.
    pub cipher_suites: Option<Vec<String>>,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        Self {
            verify: None,
            verify_depth: 1,
            server_name: None,
            send_sni: false,
            client_cert: None,
            tls12: true,
            tls13: true,
            cipher_suites: None,
        }
    }
}

/// A certificate chain and its key (PEM), from a Secret's `tls.crt` and
/// `tls.key`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientCert {
    /// The chain, leaf first.
    pub cert_pem: Arc<[u8]>,
    /// The private key.
    pub key_pem: Arc<[u8]>,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material never reaches a log.
        f.debug_struct("ClientCert")
            .field("cert_pem_bytes", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

/// OpenSSL's names of the TLS 1.2 cipher suites rustls implements, with
/// their IANA names.
pub const TLS12_CIPHERS: [(&str, &str); 6] = [
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// OpenSSL cipher-list keywords that stand for a set: they ask for no
/// suite in particular, and leave the safe defaults.
const CIPHER_KEYWORDS: [&str; 8] = [
    "DEFAULT", "HIGH", "ALL", "ECDHE", "EECDH", "AESGCM", "CHACHA20", "SECURE",
];

/// Reads `proxy-ssl-ciphers` (an OpenSSL cipher list): the TLS 1.2 suites
/// it names that rustls has, and what it asks for that rustls cannot do
/// (each entry left out). Keywords (`DEFAULT`, `HIGH`) and exclusions
/// (`!aNULL`, `-MD5`) keep the defaults, less the suites excluded by name.
pub fn parse_ciphers(text: &str) -> (Option<Vec<String>>, Vec<String>) {
    let mut named = Vec::new();
    let mut excluded = Vec::new();
    let mut not_possible = Vec::new();
    for entry in text
        .split([':', ',', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let (exclude, name) = match entry.strip_prefix(['!', '-']) {
            Some(name) => (true, name),
            None => (false, entry.strip_prefix('+').unwrap_or(entry)),
        };
        let iana = TLS12_CIPHERS
            .iter()
            .find(|(openssl, iana)| {
                openssl.eq_ignore_ascii_case(name) || iana.eq_ignore_ascii_case(name)
            })
            .map(|(_, iana)| (*iana).to_owned());
        match (exclude, iana) {
            (true, Some(iana)) => excluded.push(iana),
            // Excluding what rustls does not have anyway.
            (true, None) => {}
            (false, Some(iana)) => named.push(iana),
            (false, None) if CIPHER_KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(name)) => {}
            (false, None) => not_possible.push(entry.to_owned()),
        }
    }
    let suites = if named.is_empty() && excluded.is_empty() {
        None
    } else {
        let base: Vec<String> = if named.is_empty() {
            TLS12_CIPHERS.iter().map(|(_, i)| (*i).to_owned()).collect()
        } else {
            named
        };
        let mut suites: Vec<String> = base.into_iter().filter(|s| !excluded.contains(s)).collect();
        suites.dedup();
        Some(suites)
    };
    (suites, not_possible)
}

/// Reads `proxy-ssl-protocols` (`TLSv1.2 TLSv1.3`): whether TLS 1.2 and
/// 1.3 are allowed, and the protocols named that rustls cannot speak.
pub fn parse_protocols(text: &str) -> Result<(bool, bool, Vec<String>), String> {
    let (mut tls12, mut tls13) = (false, false);
    let mut not_possible = Vec::new();
    for name in text.split_whitespace() {
        match name {
            "TLSv1.2" => tls12 = true,
            "TLSv1.3" => tls13 = true,
            "SSLv2" | "SSLv3" | "TLSv1" | "TLSv1.1" => not_possible.push(name.to_owned()),
            _ => return Err(format!("{name:?} is not a TLS protocol version")),
        }
    }
    Ok((tls12, tls13, not_possible))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_protocols_as_ingress_nginx_names_them() {
        let cases = [
            ("HTTP", Ok(UpstreamProtocol::Http1)),
            ("https", Ok(UpstreamProtocol::Http1OverTls)),
            ("GRPC", Ok(UpstreamProtocol::H2c)),
            ("h2c", Ok(UpstreamProtocol::H2c)),
            (" GrpcS ", Ok(UpstreamProtocol::Http2OverTls)),
            ("AUTO_HTTP", Ok(UpstreamProtocol::SameAsClient)),
            ("FCGI", Err("FastCGI")),
            ("AJP", Err("not one of")),
            ("", Err("not one of")),
        ];
        for (text, expected) in cases {
            match (UpstreamProtocol::parse(text), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text:?}"),
                (Err(why), Err(part)) => assert!(why.contains(part), "{text:?}: {why}"),
                (got, want) => panic!("{text:?}: {got:?}, expected {want:?}"),
            }
        }
        let auto = UpstreamProtocol::SameAsClient;
        assert_eq!(auto.for_client(true), UpstreamProtocol::Http1OverTls);
        assert_eq!(auto.for_client(false), UpstreamProtocol::Http1);
        assert!(UpstreamProtocol::Http2OverTls.uses_tls());
        assert!(UpstreamProtocol::H2c.is_http2() && !UpstreamProtocol::H2c.uses_tls());
    }

    #[test]
    fn cipher_lists_map_to_what_rustls_has() {
        let (suites, bad) = parse_ciphers("DEFAULT");
        assert_eq!((suites, bad), (None, vec![]));
        let (suites, bad) = parse_ciphers("HIGH:!aNULL:!MD5");
        assert_eq!((suites, bad), (None, vec![]));
        let (suites, bad) =
            parse_ciphers("ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA:ECDHE-ECDSA-AES256-GCM-SHA384");
        assert_eq!(
            suites.unwrap(),
            [
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
            ]
        );
        assert_eq!(bad, ["AES128-SHA"]);
        let (suites, bad) = parse_ciphers("HIGH:!ECDHE-RSA-CHACHA20-POLY1305");
        assert_eq!(suites.unwrap().len(), 5);
        assert!(bad.is_empty());
        let (suites, bad) = parse_ciphers("RC4-MD5");
        assert_eq!((suites, bad), (None, vec!["RC4-MD5".to_owned()]));
    }

    #[test]
    fn protocols_rustls_can_and_cannot_speak() {
        assert_eq!(parse_protocols("TLSv1.2 TLSv1.3"), Ok((true, true, vec![])));
        assert_eq!(
            parse_protocols("TLSv1 TLSv1.1 TLSv1.2"),
            Ok((true, false, vec!["TLSv1".to_owned(), "TLSv1.1".to_owned()]))
        );
        assert!(parse_protocols("TLSv1.4").is_err());
    }
}
