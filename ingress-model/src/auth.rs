//! Authentication of a route's requests, as data the proxy executes: HTTP
//! basic authentication against htpasswd credentials ([`BasicAuth`]) and
//! an external authentication service asked with a sub-request
//! ([`ExternalAuth`]). ingress-nginx's `auth-*` annotations compile into
//! these types (see [`crate::annotations`]); Gateway API's basic-auth and
//! external-auth filters are meant to compile into the same ones.
//!
//! Everything is parsed when the configuration is applied: htpasswd lines
//! into [`PasswordHash`]es, URLs into [`UrlTemplate`]s of known variables.
//! Nothing a user wrote is spliced into a request as free text.

use std::{borrow::Cow, collections::BTreeMap, fmt, sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use md5::{Digest as _, Md5};
use sha1::Sha1;
use subtle::ConstantTimeEq as _;

/// HTTP basic authentication (`auth-type: basic`): a request needs
/// `Authorization: Basic` with a user and password of `credentials`, else
/// 401 with `WWW-Authenticate: Basic realm="<realm>"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BasicAuth {
    /// `auth-realm` (checked: no quotes, backslashes or control
    /// characters); empty when not given, as nginx's `auth_basic ""`.
    pub realm: String,
    /// The users and their password hashes.
    pub credentials: Arc<Htpasswd>,
}

/// Users and password hashes, as an htpasswd file lists them (the first
/// line of a user counts, as nginx reads the file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Htpasswd {
    /// Each user's hash; `None`: the user's line has a hash we cannot
    /// check, and the user never gets in.
    users: BTreeMap<String, Option<PasswordHash>>,
}

/// A password hash of an htpasswd line, in one of the forms nginx's
/// `auth_basic_user_file` accepts that we verify.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PasswordHash {
    /// bcrypt (`$2y$`, `$2b$`, `$2a$`; `htpasswd -B`).
    Bcrypt(String),
    /// MD5-crypt: Apache's `$apr1$` (`htpasswd -m`, `openssl passwd
    /// -apr1`) or glibc's `$1$` (`openssl passwd -1`).
    Md5Crypt {
        /// `$apr1$` rather than `$1$`.
        apr1: bool,
        /// Up to 8 characters.
        salt: String,
        /// 22 characters of crypt's base 64.
        checksum: String,
    },
    /// SHA-crypt: `$5$` (SHA-256) or `$6$` (SHA-512), `openssl passwd -5/-6`.
    ShaCrypt(String),
    /// `{SHA}` and base 64 of SHA-1 (`htpasswd -s`).
    Sha1([u8; 20]),
    /// `{SSHA}` and base 64 of SHA-1 over password and salt, then the salt.
    SaltedSha1 {
        /// The digest.
        digest: [u8; 20],
        /// The salt.
        salt: Vec<u8>,
    },
    /// `{PLAIN}` and the password itself.
    Plain(String),
}

impl fmt::Debug for PasswordHash {
    // A hash is a secret's derivative: logs name its kind only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// crypt(3)'s base 64 alphabet.
const CRYPT_ALPHABET: &[u8; 64] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl PasswordHash {
    /// Reads the password field of an htpasswd line.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with("$2y$") || text.starts_with("$2b$") || text.starts_with("$2a$") {
            return text
                .parse::<bcrypt::HashParts>()
                .map(|_| Self::Bcrypt(text.to_owned()))
                .map_err(|_| "a malformed bcrypt hash".to_owned());
        }
        for (magic, apr1) in [("$apr1$", true), ("$1$", false)] {
            if let Some(rest) = text.strip_prefix(magic) {
                let (salt, checksum) = rest
                    .split_once('$')
                    .ok_or_else(|| "a malformed MD5-crypt hash".to_owned())?;
                let crypt_text = |s: &str| s.bytes().all(|b| CRYPT_ALPHABET.contains(&b));
                if salt.len() > 8
                    || checksum.len() != 22
                    || !crypt_text(salt)
                    || !crypt_text(checksum)
                {
                    return Err("a malformed MD5-crypt hash".to_owned());
                }
                return Ok(Self::Md5Crypt {
                    apr1,
                    salt: salt.to_owned(),
                    checksum: checksum.to_owned(),
                });
            }
        }
        if text.starts_with("$5$") || text.starts_with("$6$") {
            return sha_crypt::PasswordHashRef::new(text)
                .map(|_| Self::ShaCrypt(text.to_owned()))
                .map_err(|_| "a malformed SHA-crypt hash".to_owned());
        }
        if let Some(encoded) = text.strip_prefix("{SHA}") {
            let digest = BASE64
                .decode(encoded)
                .ok()
                .and_then(|bytes| <[u8; 20]>::try_from(bytes).ok())
                .ok_or_else(|| "a malformed {SHA} hash".to_owned())?;
            return Ok(Self::Sha1(digest));
        }
        if let Some(encoded) = text.strip_prefix("{SSHA}") {
            let bytes = BASE64
                .decode(encoded)
                .ok()
                .filter(|bytes| bytes.len() > 20)
                .ok_or_else(|| "a malformed {SSHA} hash".to_owned())?;
            let (digest, salt) = bytes.split_at(20);
            return Ok(Self::SaltedSha1 {
                digest: digest.try_into().expect("20 bytes"),
                salt: salt.to_vec(),
            });
        }
        if let Some(plain) = text.strip_prefix("{PLAIN}") {
            return Ok(Self::Plain(plain.to_owned()));
        }
        if text.len() == 13 && text.bytes().all(|b| CRYPT_ALPHABET.contains(&b)) {
            return Err(
                "a DES crypt(3) hash, which xdp-ingress does not verify (weak: 8 \
                        characters of the password count)"
                    .to_owned(),
            );
        }
        if text.starts_with('$') {
            let scheme = text.split('$').nth(1).unwrap_or_default();
            return Err(format!(
                "a crypt(3) hash of scheme ${scheme}$, which xdp-ingress does not verify"
            ));
        }
        Err(
            "not a password hash xdp-ingress verifies (bcrypt, $apr1$, $1$, $5$, $6$, {SHA}, \
             {SSHA}, {PLAIN}); a clear-text password is not accepted"
                .to_owned(),
        )
    }

    /// What kind of hash it is, for a person.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Bcrypt(_) => "bcrypt",
            Self::Md5Crypt { apr1: true, .. } => "apr1",
            Self::Md5Crypt { apr1: false, .. } => "md5-crypt",
            Self::ShaCrypt(text) if text.starts_with("$5$") => "sha256-crypt",
            Self::ShaCrypt(_) => "sha512-crypt",
            Self::Sha1(_) => "{SHA}",
            Self::SaltedSha1 { .. } => "{SSHA}",
            Self::Plain(_) => "{PLAIN}",
        }
    }

    /// Whether `password` is the one hashed; the comparison of the digests
    /// takes the same time whatever they hold. bcrypt and SHA-crypt are
    /// slow by design: the proxy runs this off its request threads and
    /// caches the answers.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Self::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Self::Md5Crypt {
                apr1,
                salt,
                checksum,
            } => {
                let magic = if *apr1 { "$apr1$" } else { "$1$" };
                let computed = md5_crypt(password, magic, salt.as_bytes());
                computed.as_bytes().ct_eq(checksum.as_bytes()).into()
            }
            Self::ShaCrypt(hash) => {
                use sha_crypt::PasswordVerifier as _;
                sha_crypt::ShaCrypt::default()
                    .verify_password(password, hash.as_str())
                    .is_ok()
            }
            Self::Sha1(digest) => Sha1::digest(password).as_slice().ct_eq(digest).into(),
            Self::SaltedSha1 { digest, salt } => {
                let mut hasher = Sha1::new();
                hasher.update(password);
                hasher.update(salt);
                hasher.finalize().as_slice().ct_eq(digest).into()
            }
            Self::Plain(plain) => {
                // Lengths differ in no time at all: that much leaks, as
                // with any comparison of unhashed secrets.
                plain.as_bytes().ct_eq(password).into()
            }
        }
    }
}

/// MD5-crypt's checksum (22 characters) of `password` with `salt`, under
/// `magic` (`$1$` or `$apr1$`: the algorithm is one, the magic text goes
/// into the digest).
fn md5_crypt(password: &[u8], magic: &str, salt: &[u8]) -> String {
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut digest = Md5::new();
    digest.update(password);
    digest.update(magic.as_bytes());
    digest.update(salt);
    for chunk in (0..password.len()).step_by(16) {
        digest.update(&alternate[..(password.len() - chunk).min(16)]);
    }
    let mut length = password.len();
    while length != 0 {
        if length & 1 == 1 {
            digest.update([0u8]);
        } else {
            digest.update(&password[..1]);
        }
        length >>= 1;
    }
    let mut last = digest.finalize();
    for round in 0..1000 {
        let mut digest = Md5::new();
        if round & 1 == 1 {
            digest.update(password);
        } else {
            digest.update(last);
        }
        if round % 3 != 0 {
            digest.update(salt);
        }
        if round % 7 != 0 {
            digest.update(password);
        }
        if round & 1 == 1 {
            digest.update(last);
        } else {
            digest.update(password);
        }
        last = digest.finalize();
    }
    let mut out = String::with_capacity(22);
    let mut put = |mut value: u32, count: usize| {
        for _ in 0..count {
            out.push(CRYPT_ALPHABET[(value & 0x3f) as usize] as char);
            value >>= 6;
        }
    };
    for [a, b, c] in [[0, 6, 12], [1, 7, 13], [2, 8, 14], [3, 9, 15], [4, 10, 5]] {
        put(
            (u32::from(last[a]) << 16) | (u32::from(last[b]) << 8) | u32::from(last[c]),
            4,
        );
    }
    put(u32::from(last[11]), 2);
    out
}

impl Htpasswd {
    /// Reads an htpasswd file (`auth-file`: the Secret's key `auth`), as
    /// nginx does: `user:hash[:comment]` lines, `#` comments and empty lines
    /// skipped, the first line of a user counts. Returns what a person
    /// should hear of: each line whose hash cannot be checked (that user
    /// never gets in) or that is not `user:hash`.
    pub fn parse(text: &str) -> (Self, Vec<String>) {
        let mut credentials = Self::default();
        let mut problems = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, rest)) = line.split_once(':') else {
                problems.push(format!("line {}: not user:hash", number + 1));
                continue;
            };
            let hash = rest.split(':').next().unwrap_or_default();
            credentials.add(user, hash, &format!("line {}", number + 1), &mut problems);
        }
        (credentials, problems)
    }

    /// Reads an `auth-map` Secret: each key a user, its value the hash.
    pub fn from_map<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (Self, Vec<String>) {
        let mut credentials = Self::default();
        let mut problems = Vec::new();
        for (user, value) in entries {
            let hash = value.trim_end_matches(['\r', '\n']);
            credentials.add(user, hash, &format!("key {user:?}"), &mut problems);
        }
        (credentials, problems)
    }

    fn add(&mut self, user: &str, hash: &str, place: &str, problems: &mut Vec<String>) {
        if self.users.contains_key(user) {
            return;
        }
        let hash = match PasswordHash::parse(hash) {
            Ok(hash) => Some(hash),
            Err(why) => {
                problems.push(format!(
                    "{place} (user {user:?}): {why}: that user cannot sign in"
                ));
                None
            }
        };
        self.users.insert(user.to_owned(), hash);
    }

    /// Whether no user can sign in.
    pub fn is_unusable(&self) -> bool {
        self.users.values().all(Option::is_none)
    }

    /// The hash `user` signs in with; `None` when the user is unknown or
    /// their hash cannot be checked.
    pub fn hash_of(&self, user: &str) -> Option<&PasswordHash> {
        self.users.get(user)?.as_ref()
    }

    /// Whether `user` signs in with `password`.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        self.hash_of(user).is_some_and(|hash| hash.verify(password))
    }
}

/// Reads `auth-realm`: visible text and spaces, no `"` or `\` (it is
/// written between quotes in `WWW-Authenticate`).
pub fn parse_realm(text: &str) -> Result<String, String> {
    if text
        .chars()
        .all(|c| !c.is_control() && c != '"' && c != '\\' && (c.is_ascii() || c.is_alphanumeric()))
    {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} has quotes, backslashes, control or non-ASCII symbols"
        ))
    }
}

/// A request value a URL or cache key may name, as nginx's variables.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Variable {
    /// `$host`: the request's host name, lower case, without the port.
    Host,
    /// `$http_host`: the `Host` header as sent.
    HttpHost,
    /// `$scheme`, `$pass_access_scheme`: `http` or `https`.
    Scheme,
    /// `$request_uri`: the request target as sent, with the query.
    RequestUri,
    /// `$escaped_request_uri`: `$request_uri` with everything but
    /// unreserved characters percent-encoded.
    EscapedRequestUri,
    /// `$request_method`.
    RequestMethod,
    /// `$remote_addr`: the client's address.
    RemoteAddr,
    /// `$http_<name>`: a request header (only in a cache key).
    Header(String),
    /// `$cookie_<name>`: a request cookie (only in a cache key).
    Cookie(String),
    /// `$remote_user`: the user of a basic `Authorization` (only in a
    /// cache key).
    RemoteUser,
    /// `$uri`: the request's path, without the query (only in a key).
    Uri,
    /// `$arg_<name>`: a query parameter, as sent (only in a key).
    Arg(String),
}

impl Variable {
    fn parse(name: &str, in_url: bool) -> Result<Self, String> {
        let variable = match name {
            "host" => Self::Host,
            "http_host" => Self::HttpHost,
            "scheme" | "pass_access_scheme" => Self::Scheme,
            "request_uri" => Self::RequestUri,
            "escaped_request_uri" => Self::EscapedRequestUri,
            "request_method" => Self::RequestMethod,
            "remote_addr" => Self::RemoteAddr,
            "remote_user" if !in_url => Self::RemoteUser,
            // nginx's binary form hashes the same as the text.
            "binary_remote_addr" if !in_url => Self::RemoteAddr,
            "uri" if !in_url => Self::Uri,
            _ if !in_url && name.starts_with("arg_") && name.len() > 4 => {
                Self::Arg(name["arg_".len()..].to_owned())
            }
            _ => match (name.strip_prefix("http_"), name.strip_prefix("cookie_")) {
                (Some(header), _) if !in_url && !header.is_empty() => {
                    Self::Header(header.replace('_', "-"))
                }
                (_, Some(cookie)) if !in_url && !cookie.is_empty() => {
                    Self::Cookie(cookie.to_owned())
                }
                _ => {
                    return Err(format!(
                        "${name} is not a variable xdp-ingress fills in here (URLs: $host, \
                         $http_host, $scheme, $pass_access_scheme, $request_uri, \
                         $escaped_request_uri, $request_method, $remote_addr; keys also \
                         $http_<header>, $cookie_<name>, $arg_<name>, $uri, $remote_user, \
                         $binary_remote_addr)"
                    ));
                }
            },
        };
        Ok(variable)
    }
}

/// Text with `$variable`s (or `${variable}`) of a known set, parsed when
/// the configuration is applied and filled in per request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UrlTemplate {
    parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TemplatePart {
    Text(String),
    Variable(Variable),
}

impl UrlTemplate {
    /// Parses `text`; `in_url` allows only the variables that fit in a URL.
    pub fn parse(text: &str, in_url: bool) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            if at > 0 {
                parts.push(TemplatePart::Text(rest[..at].to_owned()));
            }
            let after = &rest[at + 1..];
            let (name, next) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("{text:?} has an unclosed ${{"))?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            if name.is_empty() {
                return Err(format!("{text:?} has a $ without a variable name"));
            }
            parts.push(TemplatePart::Variable(Variable::parse(name, in_url)?));
            rest = next;
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Whether it names no variable.
    pub fn is_constant(&self) -> bool {
        self.parts
            .iter()
            .all(|part| matches!(part, TemplatePart::Text(_)))
    }

    /// The text with each variable's value from `value`.
    pub fn render<'a>(&self, value: impl Fn(&Variable) -> Cow<'a, str>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(text) => out.push_str(text),
                TemplatePart::Variable(variable) => out.push_str(&value(variable)),
            }
        }
        out
    }
}

/// `text` with every byte but the unreserved ones (RFC 3986: letters,
/// digits, `-._~`) percent-encoded, as `$escaped_request_uri`.
pub fn escape_uri(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// An external authentication service (`auth-url`): each request is first
/// asked of it with a sub-request without body; 2xx lets the request
/// through, 401 and 403 are answered to the client, anything else (or no
/// answer) is a 500.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExternalAuth {
    /// Where the sub-request goes.
    pub url: AuthUrl,
    /// `auth-method`: the sub-request's method (else GET, as nginx's
    /// sub-requests); it then also carries `X-Original-URI` and `X-Scheme`.
    pub method: Option<String>,
    /// `auth-signin` with its redirect parameter: a 401 of the service
    /// becomes a 302 there.
    pub signin: Option<UrlTemplate>,
    /// `auth-response-headers`: copied from the service's 2xx answer into
    /// the request sent upstream (lower case; absent ones are removed from
    /// the request, so a client cannot send its own).
    pub response_headers: Vec<String>,
    /// `auth-request-redirect`: the sub-request's `X-Auth-Request-Redirect`
    /// (else the request target).
    pub request_redirect: Option<String>,
    /// `auth-always-set-cookie`: the service's `Set-Cookie` goes to the
    /// client with every status, not only with success and redirects.
    pub always_set_cookie: bool,
    /// `auth-cache-key` and `auth-cache-duration`.
    pub cache: Option<AuthCache>,
}

/// The service's URL: a fixed scheme, host and port; the path and query
/// may name variables.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthUrl {
    /// `https` rather than `http`.
    pub tls: bool,
    /// The host name or address (IPv6 without brackets); the sub-request's
    /// `Host` (without the port, as ingress-nginx sends it).
    pub host: String,
    /// The port (default 80 or 443).
    pub port: u16,
    /// Path and query, `/` at least.
    pub target: UrlTemplate,
}

impl AuthUrl {
    /// Parses `auth-url`: `http(s)://host[:port][/path][?query]`, visible
    /// ASCII; `$variables` only in the path and query: the service a
    /// request is sent to does not depend on the request.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{text:?} has spaces, control or non-ASCII characters"
            ));
        }
        let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{text:?} is not an http:// or https:// URL"));
        };
        // `http://host:8080$request_uri`: the variable, which starts with
        // `/`, begins the path (no other variable may touch the host).
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let split = ["$request_uri", "${request_uri}"]
            .iter()
            .filter_map(|variable| rest.find(variable))
            .filter(|at| *at < split)
            .min()
            .unwrap_or(split);
        let (authority, target) = rest.split_at(split);
        if authority.contains(['$', '@', '#']) {
            return Err(format!(
                "{text:?}: the host and port cannot name variables or user information"
            ));
        }
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| format!("{text:?} has no valid host[:port]"))?;
        let port = port.unwrap_or(if tls { 443 } else { 80 });
        if target.contains('#') {
            return Err(format!("{text:?} has a fragment"));
        }
        let target = match target {
            "" => "/".to_owned(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_owned(),
        };
        Ok(Self {
            tls,
            host,
            port,
            target: UrlTemplate::parse(&target, true)?,
        })
    }
}

/// `host[:port]` or `[v6][:port]`: the host (lower case, no brackets) and
/// the port.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let name_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    if !name_ok {
        return None;
    }
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok().filter(|p| *p > 0)?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Reads `auth-signin` with `auth-signin-redirect-param` (default `rd`)
/// as ingress-nginx builds the redirect: without a query, `?rd=` and the
/// original URL (`$scheme://$http_host$escaped_request_uri`) are appended;
/// with a query that has no `rd`, `&rd=...`; one with `rd` is kept.
pub fn parse_signin(text: &str, redirect_param: Option<&str>) -> Result<UrlTemplate, String> {
    let text = text.trim();
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{text:?} has spaces, control or non-ASCII characters"
        ));
    }
    if !(text.starts_with("http://") || text.starts_with("https://") || text.starts_with('/')) {
        return Err(format!(
            "{text:?} is not an http(s) URL or an absolute path"
        ));
    }
    let param = redirect_param.unwrap_or("rd");
    let query = text
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or_default());
    let original = "$scheme://$http_host$escaped_request_uri";
    let full = match query {
        None | Some("") => format!("{}?{param}={original}", text.trim_end_matches('?')),
        Some(query)
            if query.split('&').any(|pair| {
                pair.split('=').next() == Some(param) && pair.len() > param.len() + 1
            }) =>
        {
            text.to_owned()
        }
        Some(_) => format!("{text}&{param}={original}"),
    };
    UrlTemplate::parse(&full, true)
}

/// Reads `auth-signin-redirect-param`: a query parameter name.
pub fn parse_redirect_param(text: &str) -> Result<String, String> {
    let text = text.trim();
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a query parameter name"))
    }
}

/// Reads `auth-response-headers`: a comma-separated list of header names
/// (letters, digits, `-`, `_`), lower-cased.
pub fn parse_header_names(text: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let valid = |name: &String| {
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if names.iter().all(valid) {
        Ok(names)
    } else {
        Err(format!("{text:?} is not a list of header names"))
    }
}

/// Reads `auth-method`: one of the methods ingress-nginx accepts.
pub fn parse_method(text: &str) -> Result<String, String> {
    const METHODS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
    ];
    let text = text.trim();
    METHODS
        .contains(&text)
        .then(|| text.to_owned())
        .ok_or_else(|| format!("{text:?} is not one of {}", METHODS.join(", ")))
}

/// Reads `auth-request-redirect`: a URL or path of URL characters (it
/// becomes a header value).
pub fn parse_request_redirect(text: &str) -> Result<String, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a URL of visible ASCII characters"))
    }
}

/// Caching of the service's answers (`auth-cache-key`): answers with a
/// listed status are kept for their duration, per route and key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthCache {
    /// What tells requests apart (e.g. `$http_authorization`); the key also
    /// holds the route.
    pub key: UrlTemplate,
    /// For how long an answer with each status is kept.
    pub durations: Vec<(u16, Duration)>,
}

impl AuthCache {
    /// How long an answer with `status` is kept; `None`: not cached.
    pub fn duration_for(&self, status: u16) -> Option<Duration> {
        self.durations
            .iter()
            .find(|(code, _)| *code == status)
            .map(|(_, duration)| *duration)
    }
}

/// ingress-nginx's default `auth-cache-duration`.
pub const DEFAULT_CACHE_DURATION: &str = "200 202 401 5m";

/// Reads `auth-cache-duration` as nginx's `proxy_cache_valid`: comma-
/// separated `[code ...] duration` entries (no code: 200, 301 and 302);
/// the first entry naming a status counts.
pub fn parse_cache_durations(text: &str) -> Result<Vec<(u16, Duration)>, String> {
    let mut durations: Vec<(u16, Duration)> = Vec::new();
    let bad = || format!("{text:?} is not a list of `[status ...] duration` entries");
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let words: Vec<&str> = entry.split_whitespace().collect();
        let (last, codes) = words.split_last().ok_or_else(bad)?;
        let duration = parse_nginx_duration(last).ok_or_else(bad)?;
        let mut statuses = Vec::new();
        for code in codes {
            let code: u16 = code
                .parse()
                .ok()
                .filter(|c| (100..=599).contains(c) && code.len() == 3)
                .ok_or_else(bad)?;
            statuses.push(code);
        }
        if statuses.is_empty() {
            statuses = vec![200, 301, 302];
        }
        for status in statuses {
            if !durations.iter().any(|(code, _)| *code == status) {
                durations.push((status, duration));
            }
        }
    }
    if durations.is_empty() {
        return Err(bad());
    }
    Ok(durations)
}

/// An nginx time: a number with `ms`, `s`, `m`, `h`, `d`, `w`, `M` (30
/// days) or `y` (365 days).
fn parse_nginx_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => return Some(Duration::from_millis(number)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "M" => 30 * 86_400,
        "y" => 365 * 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(number.checked_mul(seconds)?))
}

/// Client certificate authentication (`auth-tls-secret` and the
/// `auth-tls-*` annotations), per host as ingress-nginx applies it: the
/// TLS handshake asks for a certificate, the proxy checks it against the
/// Secret's CAs and answers as nginx's `ssl_verify_client`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientCertAuth {
    /// The Secret whose `ca.crt` holds the CAs.
    pub secret: crate::object::ObjectKey,
    /// The trusted CA certificates (DER), from `ca.crt`.
    pub ca_certificates: Arc<Vec<Vec<u8>>>,
    /// Revocation lists (DER), from `ca.crl` if the Secret has one.
    pub revocation_lists: Arc<Vec<Vec<u8>>>,
    /// `auth-tls-verify-client` (default `on`).
    pub verify: VerifyClient,
    /// `auth-tls-verify-depth` (default 1): CAs between the client's
    /// certificate and a trusted one, counting that one.
    pub depth: u32,
    /// `auth-tls-error-page`: a failed verification redirects there
    /// (302) instead of answering 400.
    pub error_page: Option<String>,
    /// `auth-tls-pass-certificate-to-upstream`: the certificate goes
    /// upstream in `ssl-client-cert` (URL-encoded PEM).
    pub pass_certificate: bool,
    /// `auth-tls-match-cn`: the subject DN must match (else 403).
    pub match_cn: Option<SubjectPattern>,
}

/// `auth-tls-verify-client`, as nginx's `ssl_verify_client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerifyClient {
    /// A certificate the CAs signed is required (else 400).
    On,
    /// None is asked for.
    Off,
    /// Asked for; none is fine, one the CAs did not sign is a 400.
    Optional,
    /// Asked for, not required, not checked against the CAs: the result
    /// goes upstream in `ssl-client-verify`.
    OptionalNoCa,
}

impl VerifyClient {
    /// Reads `auth-tls-verify-client`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            "optional" => Ok(Self::Optional),
            "optional_no_ca" => Ok(Self::OptionalNoCa),
            other => Err(format!(
                "{other:?} is not on, off, optional or optional_no_ca"
            )),
        }
    }
}

/// `auth-tls-match-cn`: a regex the client certificate's subject DN
/// (`CN=client,O=Org`, as nginx's `$ssl_client_s_dn`) must match
/// somewhere, compiled once.
#[derive(Debug, Clone)]
pub struct SubjectPattern(regex::Regex);

impl SubjectPattern {
    /// Reads `auth-tls-match-cn`: starts with `CN=`, a valid regex.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if !text.starts_with("CN=") {
            return Err(format!("{text:?} does not start with CN="));
        }
        regex::Regex::new(text)
            .map(Self)
            .map_err(|error| format!("{text:?} is not a regex: {error}"))
    }

    /// Whether the subject DN matches.
    pub fn matches(&self, subject: &str) -> bool {
        self.0.is_match(subject)
    }
}

impl PartialEq for SubjectPattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for SubjectPattern {}

impl std::hash::Hash for SubjectPattern {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

/// The certificates (DER) of a PEM text, `CERTIFICATE` blocks only; at
/// least one.
pub fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let certificates = pem_blocks(text, "CERTIFICATE")?;
    if certificates.is_empty() {
        return Err("no PEM certificate".to_owned());
    }
    Ok(certificates)
}

/// The DER contents of the PEM blocks of `text` labelled `label` (`X509
/// CRL`, `CERTIFICATE`), each checked to start as DER does.
pub fn pem_blocks(text: &str, label: &str) -> Result<Vec<Vec<u8>>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end_line = format!("-----END {label}-----");
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let body = &rest[start + begin.len()..];
        let end = body
            .find(&end_line)
            .ok_or_else(|| format!("a {label} without its END line"))?;
        let encoded: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        let der = BASE64
            .decode(encoded)
            .map_err(|_| format!("a {label} that is not base 64"))?;
        if der.first() != Some(&0x30) {
            return Err(format!("a {label} that is not DER"));
        }
        blocks.push(der);
        rest = &body[end + end_line.len()..];
    }
    Ok(blocks)
}

/// Reads `auth-tls-error-page`: an absolute http(s) URL or path of
/// visible ASCII (it becomes a `Location`).
pub fn parse_error_page(text: &str) -> Result<String, String> {
    let text = text.trim();
    let shaped =
        text.starts_with("http://") || text.starts_with("https://") || text.starts_with('/');
    if shaped && text.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not an http(s) URL or an absolute path"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines for the password `bar`: ingress-nginx's docs/examples/auth/basic
    /// line (apr1), `openssl passwd -1/-5/-6` output (OpenSSL 3.0), `{SHA}`
    /// of `openssl dgst -sha1 -binary | base64`, and a bcrypt hash (the
    /// bcrypt crate, cost 5); the DES line is refused.
    const LINES: &str = "\
# made with openssl passwd
foo:$apr1$OFG3Xybp$ckL0FHDAkoXYIlH9.cysT0
md5:$1$8zmYLGwd$zNOEHYd6kVtnN5GlVr3os1
sha256:$5$Q1oUeJMmvCTbu/KI$z.LbsbaNjGVGI2/4y9Xn/vXpR6ifFGbCn1Sj6fbW6bA
sha512:$6$tb0WaEpUh4Dt5dHQ$neD985.pCE/GIWIuy5.eG5.5.VgI4wIj9Gk7Jou85O/06sHzA.W93ozuFwcMtt0UKPDowxYDE4ddvxkqKJ/I80
sha:{SHA}Ys23Ag/5IOWqZCw9QGaVDdHwH00=
ssha:{SSHA}aTajYe2SJsRWrbKsIV9ZttXLp9RzYWx0
plain:{PLAIN}bar
bcrypt:$2y$05$KBCwKxOzLha2MUDgW0PjXeWVAwXaXuD9sAFW.2Ym99rHP9dxW6/Pi
des:rqXexS6ZhobKA
";

    #[test]
    fn htpasswd_lines_in_every_supported_form_verify() {
        let (credentials, problems) = Htpasswd::parse(LINES);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("DES"), "{problems:?}");
        for user in [
            "foo", "md5", "sha256", "sha512", "sha", "ssha", "plain", "bcrypt",
        ] {
            assert!(credentials.verify(user, b"bar"), "{user}");
            assert!(!credentials.verify(user, b"baz"), "{user}");
            assert!(!credentials.verify(user, b""), "{user}");
            assert!(!credentials.verify(user, b"bar "), "{user}");
        }
        // Unknown users and the unusable line never get in.
        assert!(!credentials.verify("des", b"bar"));
        assert!(!credentials.verify("nobody", b"bar"));
        assert!(!credentials.verify("FOO", b"bar"));
        assert!(!credentials.is_unusable());
        // crypt_blowfish's test vector: a bcrypt hash not made by the crate.
        let (vector, _) =
            Htpasswd::parse("u:$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW");
        assert!(vector.verify("u", b"U*U"));
        assert!(!vector.verify("u", b"U*V"));
    }

    #[test]
    fn md5_crypt_matches_known_answers() {
        // From glibc's and Apache's test vectors.
        assert_eq!(
            md5_crypt(b"password", "$1$", b"5pZSV9va"),
            "azfrPr6af3Fc7dLblQXVa0"
        );
        assert_eq!(
            md5_crypt(b"bar", "$apr1$", b"OFG3Xybp"),
            "ckL0FHDAkoXYIlH9.cysT0"
        );
    }

    #[test]
    fn the_first_line_of_a_user_counts_and_bad_lines_are_reported() {
        let text =
            "a:{PLAIN}one\na:{PLAIN}two\nb:not-a-hash\nb:{PLAIN}x\nno-colon\nc:{SHA}short\r\n\n";
        let (credentials, problems) = Htpasswd::parse(text);
        assert!(credentials.verify("a", b"one"));
        assert!(!credentials.verify("a", b"two"));
        // b's first line is unusable: b never gets in, whatever comes later.
        assert!(!credentials.verify("b", b"x"));
        assert!(!credentials.verify("b", b"not-a-hash"));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("line 3") && problems[0].contains("clear-text"));
        assert!(problems[1].contains("line 5"));
        assert!(problems[2].contains("{SHA}"));
        let (only_bad, _) = Htpasswd::parse("x:plaintext\n# c\n");
        assert!(only_bad.is_unusable());
        assert!(Htpasswd::parse("").0.is_unusable());
    }

    #[test]
    fn auth_maps_hold_one_hash_per_user() {
        let (credentials, problems) = Htpasswd::from_map([
            ("foo", "$apr1$OFG3Xybp$ckL0FHDAkoXYIlH9.cysT0\n"),
            ("bob", "secret"),
        ]);
        assert!(credentials.verify("foo", b"bar"));
        assert!(!credentials.verify("bob", b"secret"));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("key \"bob\""));
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for bad in [
            "$2y$05$short",
            "$apr1$toolongsalt$ckL0FHDAkoXYIlH9.cysT0",
            "$apr1$OFG3Xybp$short",
            "$1$",
            "$5$",
            "{SHA}!!!",
            "{SSHA}AAAA",
            "$y$j9T$abc$def",
            "",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            format!("{:?}", PasswordHash::parse("{PLAIN}secret").unwrap()),
            "{PLAIN}"
        );
    }

    #[test]
    fn realms_go_between_quotes() {
        assert_eq!(
            parse_realm("Authentication Required - foo").as_deref(),
            Ok("Authentication Required - foo")
        );
        assert_eq!(parse_realm("").as_deref(), Ok(""));
        for bad in ["a\"b", "a\\b", "a\r\nb", "tab\there"] {
            assert!(parse_realm(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn auth_urls_fix_the_service_and_template_the_target() {
        let url = AuthUrl::parse("https://httpbin.org/basic-auth/user/passwd").unwrap();
        assert!(url.tls);
        assert_eq!((url.host.as_str(), url.port), ("httpbin.org", 443));
        assert!(url.target.is_constant());
        assert_eq!(url.target.render(|_| "".into()), "/basic-auth/user/passwd");
        let url = AuthUrl::parse("http://198.18.0.9:8080?x=$escaped_request_uri").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.tls),
            ("198.18.0.9", 8080, false)
        );
        let rendered = url.target.render(|variable| match variable {
            Variable::EscapedRequestUri => escape_uri("/a b?c=d").into(),
            _ => "".into(),
        });
        assert_eq!(rendered, "/?x=%2Fa%20b%3Fc%3Dd");
        // A `$request_uri` right after the port starts the path (as mirror
        // targets are written).
        let url = AuthUrl::parse("http://198.18.0.9:8080$request_uri").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("198.18.0.9", 8080));
        let url = AuthUrl::parse("http://[2001:db8::9]:81/auth").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("2001:db8::9", 81));
        for bad in [
            "ftp://a/",
            "http://",
            "http://$host/auth",
            "http://$request_uri",
            "http://a:$port/",
            "http://a$host/",
            "http://user@a/",
            "http://a:99999/",
            "http://a/path with space",
            "http://a/x#frag",
            "http://a/$unknown",
            "http://a/$http_authorization",
            "http://a/${host",
            "http://a/$",
            "/relative",
        ] {
            assert!(AuthUrl::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signin_urls_get_the_original_url_as_ingress_nginx_appends_it() {
        let render = |template: UrlTemplate| {
            template.render(|variable| match variable {
                Variable::Scheme => "https".into(),
                Variable::HttpHost => "app.example".into(),
                Variable::EscapedRequestUri => "%2Fx".into(),
                Variable::Host => "app.example".into(),
                _ => "?".into(),
            })
        };
        let cases = [
            (
                "https://auth.example/start",
                None,
                "https://auth.example/start?rd=https://app.example%2Fx",
            ),
            (
                "https://auth.example/start?a=1",
                Some("return"),
                "https://auth.example/start?a=1&return=https://app.example%2Fx",
            ),
            (
                "https://$host/oauth2/start?rd=$escaped_request_uri",
                None,
                "https://app.example/oauth2/start?rd=%2Fx",
            ),
        ];
        for (text, param, expected) in cases {
            assert_eq!(
                render(parse_signin(text, param).unwrap()),
                expected,
                "{text}"
            );
        }
        for bad in ["auth.example", "https://a/ b", "https://a/$nope"] {
            assert!(parse_signin(bad, None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn header_lists_methods_and_cache_durations() {
        assert_eq!(
            parse_header_names("X-Auth-Request-User, X-Auth-Request-Email,").unwrap(),
            ["x-auth-request-user", "x-auth-request-email"]
        );
        assert!(parse_header_names("X-Ok, Bad:Header").is_err());
        assert_eq!(parse_method("POST").unwrap(), "POST");
        assert!(parse_method("post").is_err());
        assert!(parse_method("GET\r\nX: 1").is_err());
        let five = Duration::from_secs(300);
        assert_eq!(
            parse_cache_durations(DEFAULT_CACHE_DURATION).unwrap(),
            [(200, five), (202, five), (401, five)]
        );
        assert_eq!(
            parse_cache_durations("200 202 10m, 401 5m").unwrap(),
            [
                (200, Duration::from_secs(600)),
                (202, Duration::from_secs(600)),
                (401, five)
            ]
        );
        assert_eq!(
            parse_cache_durations("30s").unwrap(),
            [
                (200, Duration::from_secs(30)),
                (301, Duration::from_secs(30)),
                (302, Duration::from_secs(30))
            ]
        );
        for bad in ["", "200", "5m 200", "2000 5m", "200 5x", "abc 5m"] {
            assert!(parse_cache_durations(bad).is_err(), "{bad:?}");
        }
        let key = UrlTemplate::parse("$remote_user$http_authorization", false).unwrap();
        assert!(!key.is_constant());
        assert!(UrlTemplate::parse("$cookie__oauth2_proxy", false).is_ok());
    }
}
