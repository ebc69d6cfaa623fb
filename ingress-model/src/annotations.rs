//! What xdp-ingress does with each annotation of an Ingress under
//! ingress-nginx's prefix and ours. Nothing a user writes is ignored in
//! silence:
//!
//! - the annotations we implement are read where they take effect (the
//!   redirect annotations in [`crate::tls`]);
//! - `backend-protocol` and `proxy-ssl-*` compile into the policy's
//!   [`crate::upstream`] types; a `proxy-ssl-secret` that is missing or
//!   unusable, or verification without a CA, fails closed
//!   (`InvalidAnnotation`), as ingress-nginx denies the location;
//! - source ranges (`allowlist-source-range`, its alias
//!   `whitelist-source-range`, `denylist-source-range`) are enforced by the
//!   proxy ([`crate::access`]); a value that cannot be read fails closed, as
//!   ingress-nginx's "location denied" does (`InvalidAnnotation`);
//! - `xdp-ingress.io/xdp-drop-source-range` (ours only) is dropped in XDP
//!   for every listener of the proxy, whatever the host: the kernel cannot
//!   see the Host, so it protects every Ingress on the node, not only its
//!   own; unreadable, the Ingress fails closed (`InvalidAnnotation`); under
//!   ingress-nginx's prefix it is not ours to read, and fails closed too;
//! - basic, external and client certificate authentication (`auth-type`,
//!   `auth-secret`, `auth-url`, `auth-tls-*`, ...) are read by [`auth`]
//!   and enforced by the proxy; what
//!   cannot be applied as written fails closed (`InvalidAnnotation`);
//! - access control we do not enforce (`auth-proxy-set-headers`,
//!   `enable-global-auth`) fails
//!   closed: every path and default backend of the Ingress answers 503
//!   rather than serve what the user protected, with an
//!   `UnsupportedAnnotation` problem naming it;
//! - snippets (`*-snippet`) are free-form nginx configuration, which we
//!   never execute, by design (CVE-2021-25742, CVE-2025-1974): the Ingress
//!   is refused the same way, with a `SnippetRefused` problem;
//! - every other annotation under the two prefixes is reported as
//!   `UnsupportedAnnotation` and otherwise ignored.

pub(crate) mod auth;

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    access::{IpRange, SourceRanges, parse_ranges},
    affinity::{AFFINITY_ANNOTATIONS, read_affinity},
    canary::{CANARY_ANNOTATIONS, CanaryRule, read_canary},
    object::{ObjectKey, ObjectRef},
    policy::{
        Cors, OriginPattern, PrefixRewrite, RateLimit, Redirect, ResponseRate, RoutePolicy,
        is_token_list, parse_from_to, parse_host_list, parse_load_balance, parse_next_upstream,
        parse_plain_path, parse_redirect_part, parse_seconds, parse_service_name, parse_size,
        parse_status_list, parse_vhost,
    },
    problem::{Problem, ProblemReason},
    rewrite::RewriteTarget,
    snapshot::ClusterObjects,
    tls::ANNOTATION_PREFIXES,
    upstream::{ClientCert, UpstreamProtocol, UpstreamTls, parse_ciphers, parse_protocols},
};

/// The annotations (without prefix) that take effect today, besides the
/// source ranges.
pub const IMPLEMENTED: &[&str] = &[
    "ssl-redirect",
    "force-ssl-redirect",
    "proxy-body-size",
    "proxy-connect-timeout",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "permanent-redirect",
    "permanent-redirect-code",
    "temporal-redirect",
    "temporal-redirect-code",
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
    "use-regex",
    "rewrite-target",
    "app-root",
    "x-forwarded-prefix",
    "upstream-vhost",
    "service-upstream",
    "limit-rps",
    "limit-rpm",
    "limit-connections",
    "limit-burst-multiplier",
    "limit-allowlist",
    "limit-whitelist",
    "limit-rate",
    "limit-rate-after",
    "custom-http-errors",
    "default-backend",
    "proxy-redirect-from",
    "proxy-redirect-to",
    "proxy-cookie-domain",
    "proxy-cookie-path",
    "preserve-trailing-slash",
    "server-alias",
    "from-to-www-redirect",
    "enable-access-log",
    "upstream-hash-by",
    "load-balance",
    "proxy-next-upstream",
    "proxy-next-upstream-tries",
    "proxy-next-upstream-timeout",
    "mirror-target",
    "mirror-host",
    "mirror-request-body",
    // The proxy streams both ways whatever these say (see the migration
    // notes): nothing to apply, nothing lost.
    "proxy-buffering",
    "proxy-request-buffering",
    "proxy-buffer-size",
    "proxy-buffers-number",
    "proxy-busy-buffers-size",
    "proxy-max-temp-file-size",
    "client-body-buffer-size",
    "proxy-http-version",
    "connection-proxy-header",
    "backend-protocol",
    "proxy-ssl-secret",
    "proxy-ssl-verify",
    "proxy-ssl-verify-depth",
    "proxy-ssl-name",
    "proxy-ssl-server-name",
    "proxy-ssl-protocols",
    "proxy-ssl-ciphers",
    XDP_DROP_SOURCE_RANGE,
];

/// Our listener-wide source ranges dropped in XDP (under `xdp-ingress.io/` only).
pub const XDP_DROP_SOURCE_RANGE: &str = "xdp-drop-source-range";

/// What the annotations of one Ingress come to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnotationVerdict {
    /// Set when the Ingress must not be served as written: why its paths
    /// answer 503.
    pub refusal: Option<Refusal>,
    /// One problem per annotation we do not implement, refuse, or that
    /// fails closed, in the annotations' order.
    pub problems: Vec<Problem>,
    /// What the annotations ask of every route of the Ingress.
    pub policy: RoutePolicy,
    /// `canary: "true"`: the Ingress is the canary of the main Ingresses'
    /// routes for its hosts and paths, taking these requests.
    pub canary: Option<std::sync::Arc<CanaryRule>>,
    /// The Secrets the annotations name (`auth-secret`, `proxy-ssl-secret`,
    /// ...), found or not: a change to one reads the Ingress again.
    pub secrets: Vec<ObjectKey>,
    /// `xdp-ingress.io/xdp-drop-source-range`: sources dropped in XDP on
    /// every listener of the proxy (every host, not only this Ingress's).
    pub xdp_drop: Vec<IpRange>,
}

/// Why an Ingress's routes answer 503 instead of serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The reason, as reported for the Ingress.
    pub reason: ProblemReason,
    /// What is refused, for a person (names the annotations).
    pub message: String,
}

/// How one annotation under our prefixes is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// It takes effect.
    Implemented,
    /// Access control we do not enforce: the Ingress fails closed.
    FailClosed,
    /// A source range: enforced by the proxy, or the Ingress fails closed
    /// when it cannot be read.
    SourceRange,
    /// Free-form configuration: the Ingress is refused.
    Snippet,
    /// Not implemented: reported, otherwise ignored.
    Ignored,
}

/// The source-range annotations, in the order they are looked for: the
/// allow list under its name, then under its alias; the deny list.
const SOURCE_RANGES: [&str; 3] = [
    "allowlist-source-range",
    "whitelist-source-range",
    "denylist-source-range",
];

/// `enable-cors` and the `cors-*` annotations, with ingress-nginx's defaults
/// for what is missing; `invalid(full name, why, effect)` hears of each
/// value that cannot be read (the default is used instead).
fn read_cors(
    annotations: Option<&BTreeMap<String, String>>,
    invalid: &mut Report<'_>,
) -> Option<Cors> {
    let enabled = lookup(annotations, "enable-cors")
        .is_some_and(|(_, value)| value.trim().eq_ignore_ascii_case("true"));
    if !enabled {
        for name in IMPLEMENTED.iter().filter(|name| name.starts_with("cors-")) {
            if let Some((full, _)) = lookup(annotations, name) {
                invalid(&full, "enable-cors is not \"true\"".to_owned(), "ignored");
            }
        }
        return None;
    }
    let mut cors = Cors::default();
    if let Some((full, value)) = lookup(annotations, "cors-allow-origin") {
        let entries: Vec<&str> = value.split(',').map(str::trim).collect();
        if !entries.contains(&"*") {
            let mut origins = Vec::new();
            for entry in entries.into_iter().filter(|e| !e.is_empty()) {
                match OriginPattern::parse(entry) {
                    Ok(origin) => origins.push(origin),
                    Err(why) => invalid(&full, why, "that origin is left out"),
                }
            }
            cors.origins = Some(origins);
        }
    }
    let header_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let mut list = |name: &str, slot: &mut String, allowed: &dyn Fn(u8) -> bool| {
        if let Some((full, value)) = lookup(annotations, name) {
            if is_token_list(value, allowed) {
                *slot = value.trim().to_owned();
            } else {
                invalid(
                    &full,
                    format!("{value:?} is not a list of names"),
                    "the default is used",
                );
            }
        }
    };
    list("cors-allow-methods", &mut cors.allow_methods, &|b: u8| {
        b.is_ascii_alphabetic()
    });
    list("cors-allow-headers", &mut cors.allow_headers, &header_byte);
    if let Some((full, value)) = lookup(annotations, "cors-expose-headers") {
        if is_token_list(value, |b| header_byte(b) || b == b'*') {
            cors.expose_headers = Some(value.trim().to_owned());
        } else {
            invalid(
                &full,
                format!("{value:?} is not a list of names"),
                "none are exposed",
            );
        }
    }
    if let Some((full, value)) = lookup(annotations, "cors-allow-credentials") {
        match value.trim().to_ascii_lowercase().as_str() {
            "true" => cors.allow_credentials = true,
            "false" => cors.allow_credentials = false,
            _ => invalid(
                &full,
                format!("{value:?} is neither true nor false"),
                "true is used",
            ),
        }
    }
    if let Some((full, value)) = lookup(annotations, "cors-max-age") {
        match value.trim().parse::<u64>() {
            Ok(seconds) => cors.max_age = seconds,
            Err(_) => invalid(
                &full,
                format!("{value:?} is not a number of seconds"),
                "the default is used",
            ),
        }
    }
    Some(cors)
}

/// Hears of an annotation value that cannot be read: its full name, why,
/// and what happens instead.
type Report<'a> = dyn FnMut(&str, String, &str) + 'a;

/// The value of annotation `name` as `parse` reads it; one that cannot be
/// read is reported and ignored.
fn parsed<T>(
    annotations: Option<&BTreeMap<String, String>>,
    name: &str,
    parse: impl Fn(&str) -> Result<T, String>,
    report: &mut Report<'_>,
) -> Option<T> {
    let (full, value) = lookup(annotations, name)?;
    parse(value)
        .inspect_err(|why| report(&full, why.clone(), "ignored"))
        .ok()
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{value:?} is neither true nor false")),
    }
}

/// What the annotations ask of every route of the Ingress. What protects
/// something and cannot be read (a source range, a limit) is added to
/// `unreadable`: the Ingress then fails closed.
fn read_policy(
    annotations: Option<&BTreeMap<String, String>>,
    report: &mut Report<'_>,
    unreadable: &mut Vec<String>,
) -> RoutePolicy {
    let mut policy = RoutePolicy::default();
    let mut ranges = SourceRanges::default();
    for (names, list) in [
        (&SOURCE_RANGES[..2], &mut ranges.allow),
        (&SOURCE_RANGES[2..], &mut ranges.deny),
    ] {
        let Some((full, value)) = names.iter().find_map(|name| lookup(annotations, name)) else {
            continue;
        };
        match parse_ranges(value) {
            Ok(parsed) => *list = parsed,
            Err(why) => {
                let effect = "the Ingress's paths answer 503 rather than serve unprotected";
                report(&full, why, effect);
                unreadable.push(full);
            }
        }
    }
    if ranges != SourceRanges::default() {
        policy.access = Some(ranges);
    }
    policy.max_body_size = parsed(annotations, "proxy-body-size", parse_size, report);
    policy.connect_timeout = parsed(annotations, "proxy-connect-timeout", parse_seconds, report);
    policy.read_timeout = parsed(annotations, "proxy-read-timeout", parse_seconds, report);
    policy.send_timeout = parsed(annotations, "proxy-send-timeout", parse_seconds, report);
    policy.cors = read_cors(annotations, report);
    policy.use_regex = parsed(annotations, "use-regex", parse_bool, report).unwrap_or(false);
    policy.rewrite = parsed(annotations, "rewrite-target", RewriteTarget::parse, report);
    policy.app_root = parsed(annotations, "app-root", parse_plain_path, report);
    policy.forwarded_prefix = parsed(annotations, "x-forwarded-prefix", parse_plain_path, report);
    policy.upstream_vhost = parsed(annotations, "upstream-vhost", parse_vhost, report);
    policy.service_upstream =
        parsed(annotations, "service-upstream", parse_bool, report).unwrap_or(false);
    read_rate_limits(annotations, &mut policy, report, unreadable);
    policy.cookie_domain =
        parsed(annotations, "proxy-cookie-domain", parse_from_to, report).flatten();
    policy.cookie_path = parsed(annotations, "proxy-cookie-path", parse_from_to, report).flatten();
    policy.preserve_trailing_slash =
        parsed(annotations, "preserve-trailing-slash", parse_bool, report).unwrap_or(false);
    policy.no_access_log =
        !parsed(annotations, "enable-access-log", parse_bool, report).unwrap_or(true);
    // `proxy-redirect-from: off` (or default) keeps Location as it is.
    let from = parsed(
        annotations,
        "proxy-redirect-from",
        parse_redirect_part,
        report,
    );
    let to = parsed(
        annotations,
        "proxy-redirect-to",
        parse_redirect_part,
        report,
    );
    policy.redirect_rewrite = match (from, to) {
        (Some(from), _) if from == "off" || from == "default" => None,
        (Some(from), Some(to)) => Some(PrefixRewrite { from, to }),
        (Some(_), None) | (None, Some(_)) => {
            let full = lookup(annotations, "proxy-redirect-from")
                .or_else(|| lookup(annotations, "proxy-redirect-to"))
                .map(|(full, _)| full)
                .unwrap_or_default();
            report(
                &full,
                "proxy-redirect-from and proxy-redirect-to go together".to_owned(),
                "ignored",
            );
            None
        }
        (None, None) => None,
    };
    policy.load_balance = parsed(annotations, "load-balance", parse_load_balance, report);
    let next = parsed(
        annotations,
        "proxy-next-upstream",
        parse_next_upstream,
        report,
    );
    let tries = parsed(
        annotations,
        "proxy-next-upstream-tries",
        |v| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("{v:?} is not a whole number"))
        },
        report,
    );
    let timeout = parsed(
        annotations,
        "proxy-next-upstream-timeout",
        parse_seconds,
        report,
    );
    if next.is_some() || tries.is_some() || timeout.is_some() {
        let mut next = next.unwrap_or_default();
        next.tries = tries.unwrap_or(next.tries);
        next.timeout = timeout.filter(|t| !t.is_zero());
        policy.next_upstream = Some(next);
    }
    policy.mirror = parsed(
        annotations,
        "mirror-target",
        crate::auth::AuthUrl::parse,
        report,
    )
    .map(|target| crate::policy::Mirror {
        target,
        host: parsed(annotations, "mirror-host", parse_vhost, report),
        request_body: parsed(annotations, "mirror-request-body", parse_on_off, report)
            .unwrap_or(true),
    });
    policy.hash_by = parsed(
        annotations,
        "upstream-hash-by",
        |value| crate::auth::UrlTemplate::parse(value.trim(), false),
        report,
    );
    // `enable-global-auth: "false"` opts out of the ConfigMap's external
    // auth; anything else keeps it (an unreadable value is reported).
    policy.skip_global_auth =
        parsed(annotations, "enable-global-auth", parse_bool, report) == Some(false);
    policy.server_alias =
        parsed(annotations, "server-alias", parse_host_list, report).unwrap_or_default();
    policy.from_to_www_redirect =
        parsed(annotations, "from-to-www-redirect", parse_bool, report).unwrap_or(false);
    policy.custom_http_errors =
        parsed(annotations, "custom-http-errors", parse_status_list, report).unwrap_or_default();
    policy.default_backend = parsed(annotations, "default-backend", parse_service_name, report);
    policy.affinity = read_affinity(
        |name| lookup(annotations, name).map(|(_, value)| value.as_str()),
        &mut |name, why, effect| {
            let full = lookup(annotations, name).map_or_else(|| name.to_owned(), |(full, _)| full);
            report(&full, why, effect)
        },
    );
    policy.upstream_protocol = parsed(
        annotations,
        "backend-protocol",
        UpstreamProtocol::parse,
        report,
    )
    .unwrap_or_default();
    // The temporal redirect wins over the permanent one, as in ingress-nginx.
    for (name, default_status) in [("temporal-redirect", 302), ("permanent-redirect", 301)] {
        let Some((full, location)) = lookup(annotations, name) else {
            continue;
        };
        let code_name = format!("{name}-code");
        let status = match lookup(annotations, &code_name) {
            None => None,
            Some((code_full, code)) => match code.trim().parse::<u16>() {
                Ok(code) => Some(code),
                Err(_) => {
                    let why = format!("{code:?} is not a status code");
                    report(&code_full, why, "the default code is used");
                    None
                }
            },
        };
        match Redirect::new(location, status, default_status) {
            Ok(redirect) => {
                policy.redirect = Some(redirect);
                break;
            }
            Err(why) => report(&full, why, "ignored"),
        }
    }
    policy
}

/// `on` or `off`, as nginx's flags.
fn parse_on_off(value: &str) -> Result<bool, String> {
    match value.trim() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{value:?} is neither on nor off")),
    }
}

/// One field of a Secret, from `data` or `stringData`.
fn secret_field(secret: &k8s_openapi::api::core::v1::Secret, name: &str) -> Option<Arc<[u8]>> {
    if let Some(value) = secret.data.as_ref().and_then(|data| data.get(name)) {
        return Some(Arc::from(&value.0[..]));
    }
    let value = secret.string_data.as_ref()?.get(name)?;
    Some(Arc::from(value.as_bytes()))
}

/// `proxy-ssl-*`: how the endpoints are verified over TLS and what the
/// edge presents to them; `None` when none is set. This is security: a
/// Secret that is named but missing or unusable, a verification asked
/// for without a CA, fail closed (`unreadable`), as ingress-nginx denies
/// the location; the Secret named goes to `secrets`.
fn read_upstream_tls(
    object: &ObjectRef,
    annotations: Option<&BTreeMap<String, String>>,
    objects: &ClusterObjects,
    report: &mut Report<'_>,
    unreadable: &mut Vec<String>,
    secrets: &mut Vec<ObjectKey>,
) -> Option<UpstreamTls> {
    const NAMES: [&str; 7] = [
        "proxy-ssl-secret",
        "proxy-ssl-verify",
        "proxy-ssl-verify-depth",
        "proxy-ssl-name",
        "proxy-ssl-server-name",
        "proxy-ssl-protocols",
        "proxy-ssl-ciphers",
    ];
    if !NAMES.iter().any(|name| lookup(annotations, name).is_some()) {
        return None;
    }
    let closed = "the Ingress's paths answer 503 rather than connect unverified";
    let mut tls = UpstreamTls::default();
    let verify = match lookup(annotations, "proxy-ssl-verify") {
        None => false,
        Some((full, value)) => match parse_on_off(value) {
            Ok(verify) => verify,
            Err(why) => {
                // Whoever wrote it meant to verify something.
                report(&full, why, closed);
                unreadable.push(full);
                false
            }
        },
    };
    let mut ca = None;
    if let Some((full, value)) = lookup(annotations, "proxy-ssl-secret") {
        let value = value.trim();
        let key = match value.split_once('/') {
            Some((namespace, name)) => ObjectKey::new(namespace, name),
            None => ObjectKey::new(object.key.namespace.clone(), value),
        };
        let problem = if key.name.is_empty() || key.namespace.is_empty() {
            Some(format!("{value:?} is not namespace/name"))
        } else if key.namespace != object.key.namespace {
            Some(format!(
                "the Secret {key} is in another namespace than the Ingress, which ingress-nginx \
                 does not allow either"
            ))
        } else {
            secrets.push(key.clone());
            match objects.secrets.get(&key) {
                None => Some(format!("the Secret {key} does not exist")),
                Some(secret) => {
                    ca = secret_field(secret, "ca.crt");
                    let cert = secret_field(secret, "tls.crt");
                    let private_key = secret_field(secret, "tls.key");
                    let is_pem = |bytes: &Arc<[u8]>| {
                        String::from_utf8_lossy(bytes).contains("-----BEGIN CERTIFICATE-----")
                    };
                    match (&ca, cert, private_key) {
                        (Some(ca), _, _) if !is_pem(ca) => Some(format!(
                            "ca.crt of the Secret {key} holds no PEM certificate"
                        )),
                        (_, Some(cert), _) if !is_pem(&cert) => Some(format!(
                            "tls.crt of the Secret {key} holds no PEM certificate"
                        )),
                        (_, Some(cert_pem), Some(key_pem)) => {
                            tls.client_cert = Some(ClientCert { cert_pem, key_pem });
                            None
                        }
                        (_, Some(_), None) | (_, None, Some(_)) => Some(format!(
                            "the Secret {key} has only one of tls.crt and tls.key"
                        )),
                        (None, None, None) => Some(format!(
                            "the Secret {key} has neither ca.crt nor tls.crt and tls.key"
                        )),
                        (Some(_), None, None) => None,
                    }
                }
            }
        };
        if let Some(why) = problem {
            report(&full, why, closed);
            unreadable.push(full);
        }
    }
    if verify {
        match ca {
            Some(ca) => tls.verify = Some(ca),
            None if lookup(annotations, "proxy-ssl-secret").is_some() => {
                // The Secret's own problem is reported above, unless it
                // merely lacks a CA.
                if !unreadable.iter().any(|u| u.ends_with("proxy-ssl-secret")) {
                    let (full, _) = lookup(annotations, "proxy-ssl-secret")?;
                    report(
                        &full,
                        "the Secret has no ca.crt to verify with".to_owned(),
                        closed,
                    );
                    unreadable.push(full);
                }
            }
            None => {
                let (full, _) = lookup(annotations, "proxy-ssl-verify")?;
                let why = "no proxy-ssl-secret with a ca.crt to verify with".to_owned();
                report(&full, why, closed);
                unreadable.push(full);
            }
        }
    }
    if let Some(depth) = parsed(
        annotations,
        "proxy-ssl-verify-depth",
        |value| match value.trim().parse::<u32>() {
            Ok(depth) => Ok(depth),
            Err(_) => Err(format!("{value:?} is not a whole number")),
        },
        report,
    ) {
        // 0 is the default, as ingress-nginx reads it.
        tls.verify_depth = depth.max(1);
    }
    tls.server_name = parsed(annotations, "proxy-ssl-name", parse_server_name, report);
    tls.send_sni =
        parsed(annotations, "proxy-ssl-server-name", parse_on_off, report).unwrap_or(false);
    if let Some((full, value)) = lookup(annotations, "proxy-ssl-protocols") {
        match parse_protocols(value) {
            Ok((tls12, tls13, not_possible)) => {
                if !not_possible.is_empty() {
                    let why = format!(
                        "{} cannot be spoken (rustls has TLS 1.2 and 1.3 only)",
                        not_possible.join(", ")
                    );
                    report(&full, why, "left out");
                }
                if tls12 || tls13 {
                    (tls.tls12, tls.tls13) = (tls12, tls13);
                } else {
                    report(
                        &full,
                        "no protocol left".to_owned(),
                        "TLS 1.2 and 1.3 are used",
                    );
                }
            }
            Err(why) => report(&full, why, "TLS 1.2 and 1.3 are used"),
        }
    }
    if let Some((full, value)) = lookup(annotations, "proxy-ssl-ciphers") {
        let (suites, not_possible) = parse_ciphers(value);
        if !not_possible.is_empty() {
            let why = format!(
                "rustls does not implement {} (it has the ECDHE AES-GCM and ChaCha20-Poly1305 \
                 suites)",
                not_possible.join(", ")
            );
            report(&full, why, "left out");
        }
        match suites {
            Some(suites) if suites.is_empty() => report(
                &full,
                "no TLS 1.2 cipher suite left".to_owned(),
                "the defaults are used",
            ),
            suites => tls.cipher_suites = suites,
        }
    }
    Some(tls)
}

/// A DNS name or an IP address, as `proxy-ssl-name` takes it.
fn parse_server_name(value: &str) -> Result<String, String> {
    let value = value.trim();
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if value.parse::<std::net::IpAddr>().is_ok()
        || (value.len() <= 253 && value.split('.').all(label_ok))
    {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(format!("{value:?} is not a server name"))
    }
}

/// `limit-rps`, `limit-rpm`, `limit-burst-multiplier`, `limit-connections`
/// and the allow list.
/// A rate that cannot be read fails closed (`unreadable`): it protects a
/// backend; an allow list that cannot be read exempts nobody.
fn read_rate_limits(
    annotations: Option<&BTreeMap<String, String>>,
    policy: &mut RoutePolicy,
    invalid: &mut Report<'_>,
    unreadable: &mut Vec<String>,
) {
    let mut multiplier = 5u32;
    if let Some((full, value)) = lookup(annotations, "limit-burst-multiplier") {
        match value.trim().parse::<u32>() {
            Ok(m) if m > 0 => multiplier = m,
            _ => invalid(
                &full,
                format!("{value:?} is not a positive number"),
                "5 is used",
            ),
        }
    }
    // A limit of 0 is none; one that cannot be read fails closed.
    let mut limit = |name: &str| {
        let (full, value) = lookup(annotations, name)?;
        match value.trim().parse::<u32>() {
            Ok(limit) => (limit > 0).then_some(limit),
            Err(_) => {
                let why = format!("{value:?} is not a whole number");
                invalid(
                    &full,
                    why,
                    "the Ingress's paths answer 503 rather than serve unlimited",
                );
                unreadable.push(full);
                None
            }
        }
    };
    for (name, per_minute) in [("limit-rps", 60u32), ("limit-rpm", 1)] {
        if let Some(rate) = limit(name) {
            policy.rate_limits.push(RateLimit {
                per_minute: rate.saturating_mul(per_minute),
                burst: rate.saturating_mul(multiplier),
            });
        }
    }
    policy.max_connections = limit("limit-connections");
    // `limit-rate` and `limit-rate-after` are kilobytes (ingress-nginx
    // writes `limit_rate Nk`).
    if let Some(rate) = limit("limit-rate") {
        let after = limit("limit-rate-after").unwrap_or(0);
        policy.response_rate = Some(ResponseRate {
            bytes_per_second: u64::from(rate) * 1024,
            after: u64::from(after) * 1024,
        });
    }
    if let Some((full, value)) = ["limit-allowlist", "limit-whitelist"]
        .iter()
        .find_map(|name| lookup(annotations, name))
    {
        match parse_ranges(value) {
            Ok(ranges) => policy.rate_limit_exempt = ranges,
            Err(why) => invalid(&full, why, "nobody is exempt"),
        }
    }
}

/// The Ingress's annotations as the model reads them under
/// `--annotations-prefix prefix`: those under `prefix/` renamed to
/// ingress-nginx's prefix, and the ones under ingress-nginx's own prefix
/// (when `prefix` is another) set apart, unread, to be reported. Borrowed
/// as they are with the default prefix.
pub fn under_prefix<'a>(
    annotations: Option<&'a BTreeMap<String, String>>,
    prefix: &str,
) -> (
    Option<std::borrow::Cow<'a, BTreeMap<String, String>>>,
    Vec<String>,
) {
    let prefix = prefix.trim_end_matches('/');
    let Some(annotations) = annotations else {
        return (None, Vec::new());
    };
    if prefix == crate::options::DEFAULT_ANNOTATIONS_PREFIX {
        return (Some(std::borrow::Cow::Borrowed(annotations)), Vec::new());
    }
    let nginx = ANNOTATION_PREFIXES[0];
    let custom = format!("{prefix}/");
    let mut unread = Vec::new();
    let mut renamed = BTreeMap::new();
    for (key, value) in annotations {
        if let Some(name) = key.strip_prefix(&custom) {
            renamed.insert(format!("{nginx}{name}"), value.clone());
        } else if key.starts_with(nginx) {
            unread.push(key.clone());
        } else {
            renamed.insert(key.clone(), value.clone());
        }
    }
    (Some(std::borrow::Cow::Owned(renamed)), unread)
}

/// The annotation `name` under our prefix, else under ingress-nginx's: its
/// full name and value.
fn lookup<'a>(
    annotations: Option<&'a BTreeMap<String, String>>,
    name: &str,
) -> Option<(String, &'a String)> {
    ANNOTATION_PREFIXES.iter().rev().find_map(|prefix| {
        let full = format!("{prefix}{name}");
        let value = annotations?.get(&full)?;
        Some((full, value))
    })
}

/// How the annotation `name` (without its prefix) with `value` is treated.
pub fn treatment(name: &str, value: &str) -> Treatment {
    if IMPLEMENTED.contains(&name)
        || CANARY_ANNOTATIONS.contains(&name)
        || AFFINITY_ANNOTATIONS.contains(&name)
        || auth::IMPLEMENTED.contains(&name)
    {
        return Treatment::Implemented;
    }
    // Reported by the auth reader, ignored: they tune connections only.
    if auth::CONNECTION_TUNING.contains(&name) {
        return Treatment::Implemented;
    }
    if name.ends_with("-snippet") {
        return Treatment::Snippet;
    }
    // `enable-global-auth`: whether the ConfigMap's `global-auth-url`
    // applies (read with the policy).
    if name == "enable-global-auth" {
        return Treatment::Implemented;
    }
    if SOURCE_RANGES.contains(&name) {
        return Treatment::SourceRange;
    }
    // A web application firewall protects: asked for and not there, the
    // Ingress fails closed; turned off, nothing to do.
    if name == "enable-modsecurity" || name == "enable-owasp-core-rules" {
        return if value.trim().eq_ignore_ascii_case("false") {
            Treatment::Implemented
        } else {
            Treatment::FailClosed
        };
    }
    // Limits protect a backend as access control protects an app.
    if name.starts_with("auth-") || name.starts_with("limit-") || name.ends_with("-source-range") {
        return Treatment::FailClosed;
    }
    Treatment::Ignored
}

/// Sorts the annotations of the Ingress `object` (its
/// `metadata.annotations`) by [`treatment`].
pub fn read(
    object: &ObjectRef,
    annotations: Option<&BTreeMap<String, String>>,
    objects: &ClusterObjects,
) -> AnnotationVerdict {
    let mut verdict = AnnotationVerdict::default();
    let mut fail_closed = Vec::new();
    let mut snippets = Vec::new();
    let mut unreadable = Vec::new();
    for (full, value) in annotations.into_iter().flatten() {
        let Some(name) = ANNOTATION_PREFIXES
            .iter()
            .find_map(|prefix| full.strip_prefix(prefix))
        else {
            continue;
        };
        if name == XDP_DROP_SOURCE_RANGE && !full.starts_with("xdp-ingress.io/") {
            // A protection asked of the wrong controller: not ours to read,
            // and not to be served without.
            fail_closed.push(full.as_str());
            verdict.problems.push(Problem::new(
                object.clone(),
                ProblemReason::UnsupportedAnnotation,
                format!(
                    "annotation {full}: {XDP_DROP_SOURCE_RANGE} is xdp-ingress's own, read under \
                     xdp-ingress.io/ only: the Ingress's paths answer 503 rather than serve \
                     unprotected"
                ),
            ));
            continue;
        }
        let (reason, message) = match treatment(name, value) {
            Treatment::Implemented | Treatment::SourceRange => continue,
            Treatment::FailClosed => {
                fail_closed.push(full.as_str());
                (
                    ProblemReason::UnsupportedAnnotation,
                    format!(
                        "annotation {full} is access control or a limit that xdp-ingress does not enforce \
                         yet: the Ingress's paths answer 503 rather than serve unprotected"
                    ),
                )
            }
            Treatment::Snippet => {
                snippets.push(full.as_str());
                (
                    ProblemReason::SnippetRefused,
                    format!(
                        "annotation {full} is free-form nginx configuration, which xdp-ingress \
                         never executes (CVE-2021-25742, CVE-2025-1974): the Ingress's paths \
                         answer 503; express it with the supported annotations instead"
                    ),
                )
            }
            Treatment::Ignored => (
                ProblemReason::UnsupportedAnnotation,
                format!("annotation {full} is not implemented by xdp-ingress: ignored"),
            ),
        };
        verdict
            .problems
            .push(Problem::new(object.clone(), reason, message));
    }
    let mut report = |full: &str, why: String, effect: &str| {
        verdict.problems.push(Problem::new(
            object.clone(),
            ProblemReason::InvalidAnnotation,
            format!("annotation {full}: {why}: {effect}"),
        ));
    };
    verdict.policy = read_policy(annotations, &mut report, &mut unreadable);
    let xdp_drop_name = format!("xdp-ingress.io/{XDP_DROP_SOURCE_RANGE}");
    if let Some(value) = annotations.and_then(|a| a.get(&xdp_drop_name)) {
        match parse_ranges(value) {
            Ok(ranges) => verdict.xdp_drop = ranges,
            Err(why) => {
                let effect = "the Ingress's paths answer 503 rather than serve unprotected";
                report(&xdp_drop_name, why, effect);
                unreadable.push(xdp_drop_name);
            }
        }
    }
    verdict.policy.upstream_tls = read_upstream_tls(
        object,
        annotations,
        objects,
        &mut report,
        &mut unreadable,
        &mut verdict.secrets,
    )
    .map(Arc::new);
    if verdict.policy.upstream_tls.is_some()
        && matches!(
            verdict.policy.upstream_protocol,
            UpstreamProtocol::Http1 | UpstreamProtocol::H2c
        )
        && let Some((full, _)) = ["proxy-ssl-secret", "proxy-ssl-verify"]
            .iter()
            .find_map(|name| lookup(annotations, name))
    {
        // As in nginx: proxy_ssl_* do nothing for a backend in clear text.
        report(
            &full,
            "backend-protocol is not over TLS (HTTPS, GRPCS or AUTO_HTTP)".to_owned(),
            "no effect",
        );
    }
    let auth = auth::read(
        annotations,
        object,
        objects,
        &mut report,
        &mut unreadable,
        &mut verdict.secrets,
    );
    verdict.policy.basic_auth = auth.basic;
    verdict.policy.external_auth = auth.external;
    verdict.policy.client_cert = auth.client_cert;
    verdict.policy.satisfy_any = auth.satisfy_any;
    verdict.canary = read_canary(
        |name| lookup(annotations, name).map(|(_, value)| value.as_str()),
        &mut |name, why, effect| {
            let full = lookup(annotations, name).map_or_else(|| name.to_owned(), |(full, _)| full);
            report(&full, why, effect)
        },
    )
    .map(std::sync::Arc::new);
    if verdict.canary.is_some() {
        // As in ingress-nginx, a canary's requests get the main route's
        // policy: its own annotations are not applied, and said so.
        verdict.policy = RoutePolicy::default();
        for (full, value) in annotations.into_iter().flatten() {
            let Some(name) = ANNOTATION_PREFIXES
                .iter()
                .find_map(|prefix| full.strip_prefix(prefix))
            else {
                continue;
            };
            if matches!(
                treatment(name, value),
                Treatment::Implemented | Treatment::SourceRange
            ) && !CANARY_ANNOTATIONS.contains(&name)
                && name != "enable-global-auth"
            {
                verdict.problems.push(Problem::new(
                    object.clone(),
                    ProblemReason::UnsupportedAnnotation,
                    format!(
                        "annotation {full} is not applied on a canary Ingress: the main \
                         Ingress's annotations apply to its requests (as in ingress-nginx)"
                    ),
                ));
            }
        }
    }
    verdict.refusal = if !snippets.is_empty() {
        Some(Refusal {
            reason: ProblemReason::SnippetRefused,
            message: format!("refused: {}", snippets.join(", ")),
        })
    } else if !fail_closed.is_empty() {
        Some(Refusal {
            reason: ProblemReason::UnsupportedAnnotation,
            message: format!(
                "access control or limits not enforced: {}",
                fail_closed.join(", ")
            ),
        })
    } else if !unreadable.is_empty() {
        Some(Refusal {
            reason: ProblemReason::InvalidAnnotation,
            message: format!("not readable: {}", unreadable.join(", ")),
        })
    } else {
        None
    };
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{ObjectKey, ObjectKind};

    fn verdict(annotations: &[(&str, &str)]) -> AnnotationVerdict {
        let object = ObjectRef::new(ObjectKind::Ingress, ObjectKey::new("ns", "web"));
        let annotations = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        read(&object, Some(&annotations), &ClusterObjects::default())
    }

    fn reasons(verdict: &AnnotationVerdict) -> Vec<ProblemReason> {
        verdict.problems.iter().map(|p| p.reason).collect()
    }

    #[test]
    fn access_control_fails_closed_under_both_prefixes() {
        let cases: &[(&str, &str)] = &[
            (
                "nginx.ingress.kubernetes.io/auth-proxy-set-headers",
                "headers",
            ),
            // A source range of another name: not one we enforce.
            (
                "nginx.ingress.kubernetes.io/other-source-range",
                "198.18.0.0/15",
            ),
        ];
        for &(name, value) in cases {
            let verdict = verdict(&[(name, value)]);
            let refusal = verdict.refusal.as_ref().unwrap_or_else(|| panic!("{name}"));
            assert_eq!(
                refusal.reason,
                ProblemReason::UnsupportedAnnotation,
                "{name}"
            );
            assert!(
                refusal.message.contains(name),
                "{name}: {}",
                refusal.message
            );
            assert_eq!(reasons(&verdict), [ProblemReason::UnsupportedAnnotation]);
            assert!(verdict.problems[0].message.contains("503"), "{name}");
        }
    }

    #[test]
    fn xdp_drop_source_range_is_ours_listener_wide_and_fails_closed() {
        let read = verdict(&[(
            "xdp-ingress.io/xdp-drop-source-range",
            "198.18.0.0/24,2001:db8::1",
        )]);
        assert_eq!(read.refusal, None);
        assert_eq!(reasons(&read), []);
        let texts: Vec<String> = read.xdp_drop.iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["198.18.0.0/24", "2001:db8::1/128"]);
        assert_eq!(
            read.policy,
            RoutePolicy::default(),
            "no route policy of its own"
        );
        let read = verdict(&[("xdp-ingress.io/xdp-drop-source-range", "198.18.0.0/24,nope")]);
        let refusal = read.refusal.clone().expect("unreadable: fails closed");
        assert_eq!(refusal.reason, ProblemReason::InvalidAnnotation);
        assert_eq!(reasons(&read), [ProblemReason::InvalidAnnotation]);
        assert!(read.xdp_drop.is_empty());
        // Under ingress-nginx's prefix it is not read, and fails closed.
        let read = verdict(&[(
            "nginx.ingress.kubernetes.io/xdp-drop-source-range",
            "198.18.0.0/24",
        )]);
        assert!(read.refusal.is_some());
        assert_eq!(reasons(&read), [ProblemReason::UnsupportedAnnotation]);
        assert!(read.xdp_drop.is_empty());
    }

    #[test]
    fn proxy_next_upstream_as_nginx_reads_it() {
        let read = verdict(&[
            (
                "nginx.ingress.kubernetes.io/proxy-next-upstream",
                "error http_502 http_503 non_idempotent",
            ),
            ("nginx.ingress.kubernetes.io/proxy-next-upstream-tries", "5"),
            (
                "nginx.ingress.kubernetes.io/proxy-next-upstream-timeout",
                "10",
            ),
        ]);
        let next = read.policy.next_upstream.expect("set");
        assert!(next.on_error && !next.on_timeout && next.non_idempotent);
        assert_eq!(next.on_status, [502, 503]);
        assert_eq!(
            (next.tries, next.timeout),
            (5, Some(std::time::Duration::from_secs(10)))
        );
        let off = verdict(&[("nginx.ingress.kubernetes.io/proxy-next-upstream", "off")]);
        let off = off.policy.next_upstream.expect("set");
        assert!(!off.on_error && !off.on_timeout && off.on_status.is_empty());
        // Only the tries: the default conditions with them.
        let tries = verdict(&[("nginx.ingress.kubernetes.io/proxy-next-upstream-tries", "1")]);
        let tries = tries.policy.next_upstream.expect("set");
        assert!(tries.on_error && tries.on_timeout && tries.tries == 1);
        let bad = verdict(&[(
            "nginx.ingress.kubernetes.io/proxy-next-upstream",
            "error http_418",
        )]);
        assert_eq!(reasons(&bad), [ProblemReason::InvalidAnnotation]);
    }

    #[test]
    fn upstream_hash_by_takes_nginx_variables_of_a_known_set() {
        for key in [
            "$request_uri",
            "$binary_remote_addr",
            "$host$uri",
            "${arg_user}",
            "$http_x_user",
        ] {
            let read = verdict(&[("nginx.ingress.kubernetes.io/upstream-hash-by", key)]);
            assert!(
                read.policy.hash_by.is_some() && read.problems.is_empty(),
                "{key}"
            );
        }
        let unknown = verdict(&[("nginx.ingress.kubernetes.io/upstream-hash-by", "$nope")]);
        assert_eq!(unknown.policy.hash_by, None);
        assert_eq!(reasons(&unknown), [ProblemReason::InvalidAnnotation]);
    }

    #[test]
    fn limit_rate_is_kilobytes_a_second_after_kilobytes_and_unreadable_fails_closed() {
        let read = verdict(&[
            ("xdp-ingress.io/limit-rate", "100"),
            ("nginx.ingress.kubernetes.io/limit-rate-after", "8"),
        ]);
        assert_eq!(read.refusal, None);
        assert_eq!(
            read.policy.response_rate,
            Some(ResponseRate {
                bytes_per_second: 102_400,
                after: 8192
            })
        );
        let bad = verdict(&[
            ("nginx.ingress.kubernetes.io/limit-rate", "100"),
            ("nginx.ingress.kubernetes.io/limit-rate-after", "10m"),
        ]);
        assert_eq!(
            bad.refusal.map(|r| r.reason),
            Some(ProblemReason::InvalidAnnotation)
        );
    }

    #[test]
    fn source_ranges_are_read_and_unreadable_ones_fail_closed() {
        let read = verdict(&[
            (
                "nginx.ingress.kubernetes.io/whitelist-source-range",
                "10.0.0.0/8",
            ),
            (
                "nginx.ingress.kubernetes.io/denylist-source-range",
                "10.1.0.0/16, 10.2.0.1",
            ),
        ]);
        assert_eq!(read.refusal, None);
        assert_eq!(read.problems, []);
        let ranges = read.policy.access.unwrap();
        assert_eq!(ranges.allow.len(), 1);
        assert_eq!(ranges.deny.len(), 2);
        // The name wins over its alias, our prefix over ingress-nginx's.
        let read = verdict(&[
            (
                "nginx.ingress.kubernetes.io/whitelist-source-range",
                "10.0.0.0/8",
            ),
            (
                "nginx.ingress.kubernetes.io/allowlist-source-range",
                "10.9.0.0/16",
            ),
            ("xdp-ingress.io/allowlist-source-range", "198.18.0.0/15"),
        ]);
        let allow = &read.policy.access.unwrap().allow;
        assert_eq!(allow[0].to_string(), "198.18.0.0/15");
        for bad in ["not a range", "10.0.0.0/33", "", "10.0.0.0/8,,nope"] {
            let read = verdict(&[("nginx.ingress.kubernetes.io/whitelist-source-range", bad)]);
            let refusal = read.refusal.clone().unwrap_or_else(|| panic!("{bad:?}"));
            assert_eq!(refusal.reason, ProblemReason::InvalidAnnotation, "{bad:?}");
            assert_eq!(
                reasons(&read),
                [ProblemReason::InvalidAnnotation],
                "{bad:?}"
            );
            assert!(read.problems[0].message.contains("503"));
        }
    }

    #[test]
    fn body_size_timeouts_and_redirects_compile_into_the_policy() {
        let read = verdict(&[
            ("nginx.ingress.kubernetes.io/proxy-body-size", "50m"),
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "3600"),
            ("xdp-ingress.io/proxy-connect-timeout", "2"),
            ("nginx.ingress.kubernetes.io/proxy-connect-timeout", "9"),
            (
                "nginx.ingress.kubernetes.io/permanent-redirect",
                "https://new.example/",
            ),
            ("nginx.ingress.kubernetes.io/permanent-redirect-code", "308"),
        ]);
        assert_eq!(read.problems, []);
        let policy = read.policy;
        assert_eq!(policy.max_body_size, Some(50 << 20));
        assert_eq!(
            policy.read_timeout,
            Some(std::time::Duration::from_secs(3600))
        );
        assert_eq!(
            policy.connect_timeout,
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(policy.send_timeout, None);
        let redirect = policy.redirect.unwrap();
        assert_eq!(
            (redirect.location.as_str(), redirect.status),
            ("https://new.example/", 308)
        );
        // Temporal wins; its code defaults to 302.
        let read = verdict(&[
            (
                "nginx.ingress.kubernetes.io/permanent-redirect",
                "https://new.example/",
            ),
            (
                "nginx.ingress.kubernetes.io/temporal-redirect",
                "http://tmp.example/x",
            ),
        ]);
        let redirect = read.policy.redirect.unwrap();
        assert_eq!(
            (redirect.location.as_str(), redirect.status),
            ("http://tmp.example/x", 302)
        );
        // Unreadable values are reported and ignored: nothing is protected by them.
        let read = verdict(&[
            ("nginx.ingress.kubernetes.io/proxy-body-size", "lots"),
            ("nginx.ingress.kubernetes.io/proxy-send-timeout", "10s"),
            (
                "nginx.ingress.kubernetes.io/permanent-redirect",
                "/relative",
            ),
        ]);
        assert_eq!(read.refusal, None);
        assert!(read.policy.is_default());
        assert_eq!(reasons(&read), [ProblemReason::InvalidAnnotation; 3]);
    }

    #[test]
    fn cors_takes_ingress_nginx_defaults_and_reports_what_it_cannot_read() {
        let read = verdict(&[("nginx.ingress.kubernetes.io/enable-cors", "true")]);
        assert_eq!(read.policy.cors, Some(Cors::default()));
        assert_eq!(read.problems, []);
        let read = verdict(&[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            (
                "nginx.ingress.kubernetes.io/cors-allow-origin",
                "https://app.example.com, https://*.example.org, not-an-origin",
            ),
            (
                "nginx.ingress.kubernetes.io/cors-allow-methods",
                "GET, POST",
            ),
            (
                "nginx.ingress.kubernetes.io/cors-allow-headers",
                "X-Custom; rm -rf",
            ),
            (
                "nginx.ingress.kubernetes.io/cors-expose-headers",
                "X-Total, *",
            ),
            (
                "nginx.ingress.kubernetes.io/cors-allow-credentials",
                "false",
            ),
            ("nginx.ingress.kubernetes.io/cors-max-age", "600"),
        ]);
        let cors = read.policy.cors.clone().unwrap();
        assert_eq!(cors.origins.as_ref().map(Vec::len), Some(2));
        assert_eq!(cors.allow_methods, "GET, POST");
        assert_eq!(cors.allow_headers, crate::policy::CORS_DEFAULT_HEADERS);
        assert_eq!(cors.expose_headers.as_deref(), Some("X-Total, *"));
        assert!(!cors.allow_credentials);
        assert_eq!(cors.max_age, 600);
        assert_eq!(reasons(&read), [ProblemReason::InvalidAnnotation; 2]);
        // `*` anywhere in the list: any origin.
        let read = verdict(&[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            (
                "nginx.ingress.kubernetes.io/cors-allow-origin",
                "https://a.example, *",
            ),
        ]);
        assert_eq!(read.policy.cors.unwrap().origins, None);
        // Without enable-cors the others do nothing, and say so.
        let read = verdict(&[("nginx.ingress.kubernetes.io/cors-max-age", "600")]);
        assert_eq!(read.policy.cors, None);
        assert_eq!(reasons(&read), [ProblemReason::InvalidAnnotation]);
    }

    #[test]
    fn rate_limits_as_ingress_nginx_sizes_them() {
        let read = verdict(&[
            ("nginx.ingress.kubernetes.io/limit-rps", "10"),
            ("nginx.ingress.kubernetes.io/limit-rpm", "300"),
            ("nginx.ingress.kubernetes.io/limit-burst-multiplier", "2"),
            (
                "nginx.ingress.kubernetes.io/limit-whitelist",
                "198.18.0.0/24",
            ),
        ]);
        assert_eq!(
            (read.refusal.clone(), read.problems.clone()),
            (None, vec![])
        );
        assert_eq!(
            read.policy.rate_limits,
            [
                RateLimit {
                    per_minute: 600,
                    burst: 20
                },
                RateLimit {
                    per_minute: 300,
                    burst: 600
                },
            ]
        );
        assert_eq!(read.policy.rate_limit_exempt.len(), 1);
        let read = verdict(&[("nginx.ingress.kubernetes.io/limit-connections", "4")]);
        assert_eq!(read.policy.max_connections, Some(4));
        // The default multiplier is 5; 0 is no limit.
        let read = verdict(&[
            ("nginx.ingress.kubernetes.io/limit-rps", "3"),
            ("nginx.ingress.kubernetes.io/limit-rpm", "0"),
        ]);
        assert_eq!(
            read.policy.rate_limits,
            [RateLimit {
                per_minute: 180,
                burst: 15
            }]
        );
        // An unreadable rate fails closed; an unreadable allow list exempts nobody.
        let read = verdict(&[
            ("nginx.ingress.kubernetes.io/limit-rps", "ten"),
            ("nginx.ingress.kubernetes.io/limit-allowlist", "nope"),
        ]);
        assert_eq!(
            read.refusal.as_ref().map(|r| r.reason),
            Some(ProblemReason::InvalidAnnotation)
        );
        assert!(read.policy.rate_limit_exempt.is_empty());
        assert_eq!(reasons(&read), [ProblemReason::InvalidAnnotation; 2]);
    }

    /// A snapshot with Secret `ns/NAME` holding `fields` (PEM-looking
    /// values).
    fn with_secret(name: &str, fields: &[&str]) -> ClusterObjects {
        use k8s_openapi::{ByteString, api::core::v1::Secret};
        let mut secret = Secret::default();
        secret.metadata.namespace = Some("ns".to_owned());
        secret.metadata.name = Some(name.to_owned());
        secret.data = Some(
            fields
                .iter()
                .map(|field| {
                    let pem = format!(
                        "-----BEGIN CERTIFICATE-----\n{field}\n-----END CERTIFICATE-----\n"
                    );
                    (field.to_string(), ByteString(pem.into_bytes()))
                })
                .collect(),
        );
        let mut objects = ClusterObjects::default();
        objects.insert(crate::object::KubeObject::Secret(secret));
        objects
    }

    fn verdict_in(objects: &ClusterObjects, annotations: &[(&str, &str)]) -> AnnotationVerdict {
        let object = ObjectRef::new(ObjectKind::Ingress, ObjectKey::new("ns", "web"));
        let annotations = annotations
            .iter()
            .map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), v.to_string()))
            .collect();
        read(&object, Some(&annotations), objects)
    }

    #[test]
    fn backend_protocol_is_read_and_what_is_not_supported_keeps_http() {
        use crate::upstream::UpstreamProtocol as P;
        let cases = [
            ("GRPC", P::H2c, None),
            ("grpcs", P::Http2OverTls, None),
            ("HTTPS", P::Http1OverTls, None),
            ("H2C", P::H2c, None),
            ("AUTO_HTTP", P::SameAsClient, None),
            ("HTTP", P::Http1, None),
            ("FCGI", P::Http1, Some("FastCGI")),
            ("SPDY", P::Http1, Some("not one of")),
        ];
        for (value, protocol, problem) in cases {
            let read = verdict_in(&ClusterObjects::default(), &[("backend-protocol", value)]);
            assert_eq!(read.policy.upstream_protocol, protocol, "{value}");
            assert_eq!(read.refusal, None, "{value}");
            match problem {
                None => assert_eq!(read.problems, [], "{value}"),
                Some(part) => {
                    assert_eq!(
                        reasons(&read),
                        [ProblemReason::InvalidAnnotation],
                        "{value}"
                    );
                    assert!(read.problems[0].message.contains(part), "{value}");
                }
            }
        }
    }

    #[test]
    fn proxy_ssl_reads_the_secret_and_fails_closed_without_what_verifies() {
        let full = with_secret("upstream", &["ca.crt", "tls.crt", "tls.key"]);
        let read = verdict_in(
            &full,
            &[
                ("backend-protocol", "HTTPS"),
                ("proxy-ssl-secret", "ns/upstream"),
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-verify-depth", "2"),
                ("proxy-ssl-name", "Backend.Internal"),
                ("proxy-ssl-server-name", "on"),
                ("proxy-ssl-protocols", "TLSv1.3"),
                ("proxy-ssl-ciphers", "ECDHE-RSA-AES128-GCM-SHA256"),
            ],
        );
        assert_eq!(
            (read.refusal.clone(), read.problems.clone()),
            (None, vec![])
        );
        assert_eq!(read.secrets, [ObjectKey::new("ns", "upstream")]);
        let tls = read.policy.upstream_tls.unwrap();
        assert!(tls.verify.is_some() && tls.client_cert.is_some());
        assert_eq!(tls.verify_depth, 2);
        assert_eq!(tls.server_name.as_deref(), Some("backend.internal"));
        assert!(tls.send_sni);
        assert_eq!((tls.tls12, tls.tls13), (false, true));
        assert_eq!(
            tls.cipher_suites.as_deref(),
            Some(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_owned()][..])
        );
        // Verification off by default, as in ingress-nginx; a CA alone is fine.
        let ca_only = with_secret("upstream", &["ca.crt"]);
        let read = verdict_in(
            &ca_only,
            &[
                ("proxy-ssl-secret", "upstream"),
                ("backend-protocol", "GRPCS"),
            ],
        );
        assert_eq!(
            (read.refusal.clone(), read.problems.clone()),
            (None, vec![])
        );
        let tls = read.policy.upstream_tls.unwrap();
        assert_eq!((tls.verify.clone(), tls.client_cert.clone()), (None, None));
        assert_eq!(tls.verify_depth, 1);

        // proxy-ssl-* for a backend in clear text: reported, no effect.
        let read = verdict_in(&ca_only, &[("proxy-ssl-secret", "upstream")]);
        assert_eq!(read.refusal, None);
        assert_eq!(reasons(&read), [ProblemReason::InvalidAnnotation]);
        assert!(read.problems[0].message.contains("no effect"));

        // What fails closed (503), and what is only reported.
        let no_ca = with_secret("upstream", &["tls.crt", "tls.key"]);
        let half = with_secret("upstream", &["tls.crt"]);
        let none = ClusterObjects::default();
        type Case<'a> = (&'a ClusterObjects, &'a [(&'a str, &'a str)], bool, &'a str);
        let cases: &[Case<'_>] = &[
            (
                &none,
                &[
                    ("proxy-ssl-secret", "ns/upstream"),
                    ("proxy-ssl-verify", "on"),
                ],
                true,
                "does not exist",
            ),
            (
                &none,
                &[("proxy-ssl-secret", "ns/upstream")],
                true,
                "does not exist",
            ),
            (
                &no_ca,
                &[
                    ("proxy-ssl-secret", "ns/upstream"),
                    ("proxy-ssl-verify", "on"),
                ],
                true,
                "no ca.crt",
            ),
            (
                &none,
                &[("proxy-ssl-verify", "on")],
                true,
                "no proxy-ssl-secret",
            ),
            (
                &full,
                &[("proxy-ssl-secret", "other/upstream")],
                true,
                "another namespace",
            ),
            (
                &half,
                &[("proxy-ssl-secret", "ns/upstream")],
                true,
                "only one of",
            ),
            (
                &full,
                &[
                    ("proxy-ssl-secret", "ns/upstream"),
                    ("proxy-ssl-verify", "yes"),
                ],
                true,
                "neither on nor off",
            ),
            (
                &full,
                &[
                    ("proxy-ssl-secret", "ns/upstream"),
                    ("proxy-ssl-protocols", "TLSv1 TLSv1.2"),
                ],
                false,
                "TLSv1 cannot",
            ),
            (
                &full,
                &[
                    ("proxy-ssl-secret", "ns/upstream"),
                    ("proxy-ssl-ciphers", "AES128-SHA:HIGH"),
                ],
                false,
                "AES128-SHA",
            ),
            (
                &full,
                &[
                    ("proxy-ssl-secret", "ns/upstream"),
                    ("proxy-ssl-name", "bad name!"),
                ],
                false,
                "not a server name",
            ),
        ];
        for (objects, annotations, fails_closed, part) in cases {
            let mut annotations = annotations.to_vec();
            annotations.push(("backend-protocol", "HTTPS"));
            let read = verdict_in(objects, &annotations);
            assert_eq!(read.refusal.is_some(), *fails_closed, "{annotations:?}");
            if *fails_closed {
                assert_eq!(
                    read.refusal.as_ref().unwrap().reason,
                    ProblemReason::InvalidAnnotation
                );
            }
            assert_eq!(
                reasons(&read),
                [ProblemReason::InvalidAnnotation],
                "{annotations:?}"
            );
            assert!(
                read.problems[0].message.contains(part),
                "{annotations:?}: {}",
                read.problems[0].message
            );
        }
    }

    #[test]
    fn enable_global_auth_false_opts_out_of_the_configmaps() {
        let out = verdict(&[("nginx.ingress.kubernetes.io/enable-global-auth", "false")]);
        assert!(out.refusal.is_none() && out.problems.is_empty() && out.policy.skip_global_auth);
        let kept = verdict(&[("nginx.ingress.kubernetes.io/enable-global-auth", "true")]);
        assert!(kept.problems.is_empty() && !kept.policy.skip_global_auth);
        // Unreadable: reported, and the global auth still applies.
        let unread = verdict(&[("nginx.ingress.kubernetes.io/enable-global-auth", "maybe")]);
        assert_eq!(reasons(&unread), [ProblemReason::InvalidAnnotation]);
        assert!(!unread.policy.skip_global_auth && unread.refusal.is_none());
    }

    #[test]
    fn snippets_are_refused_before_anything_else() {
        let verdict = verdict(&[
            ("nginx.ingress.kubernetes.io/auth-url", "http://auth/"),
            (
                "nginx.ingress.kubernetes.io/configuration-snippet",
                "more_set_headers x;",
            ),
            (
                "nginx.ingress.kubernetes.io/server-snippet",
                "location / {}",
            ),
        ]);
        let refusal = verdict.refusal.as_ref().unwrap();
        assert_eq!(refusal.reason, ProblemReason::SnippetRefused);
        assert!(refusal.message.contains("configuration-snippet"));
        assert!(refusal.message.contains("server-snippet"));
        assert_eq!(
            reasons(&verdict),
            [ProblemReason::SnippetRefused, ProblemReason::SnippetRefused]
        );
    }

    #[test]
    fn other_annotations_are_reported_and_ignored() {
        let verdict = verdict(&[
            ("nginx.ingress.kubernetes.io/custom-headers", "ns/headers"),
            ("nginx.ingress.kubernetes.io/ssl-passthrough", "true"),
            ("xdp-ingress.io/enable-rewrite-log", "true"),
            ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
            ("kubernetes.io/ingress.class", "xdp"),
            ("example.com/owner", "team-a"),
        ]);
        assert_eq!(verdict.refusal, None);
        let named: Vec<&str> = verdict
            .problems
            .iter()
            .map(|p| p.message.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(
            named,
            [
                "nginx.ingress.kubernetes.io/custom-headers",
                "nginx.ingress.kubernetes.io/ssl-passthrough",
                "xdp-ingress.io/enable-rewrite-log",
            ]
        );
        assert_eq!(reasons(&verdict), [ProblemReason::UnsupportedAnnotation; 3]);
        assert!(verdict.problems[0].message.ends_with("ignored"));
    }

    #[test]
    fn no_annotations_no_verdict() {
        let object = ObjectRef::new(ObjectKind::Ingress, ObjectKey::new("ns", "web"));
        assert_eq!(
            read(&object, None, &ClusterObjects::default()),
            AnnotationVerdict::default()
        );
        assert_eq!(verdict(&[]), AnnotationVerdict::default());
    }
}
