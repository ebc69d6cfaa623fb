//! What xdp-ingress does with each annotation of an Ingress under
//! ingress-nginx's prefix and ours. Nothing a user writes is ignored in
//! silence:
//!
//! - the annotations we implement are read where they take effect (the
//!   redirect annotations in [`crate::tls`]);
//! - source ranges (`allowlist-source-range`, its alias
//!   `whitelist-source-range`, `denylist-source-range`) are enforced by the
//!   proxy ([`crate::access`]); a value that cannot be read fails closed, as
//!   ingress-nginx's "location denied" does (`InvalidAnnotation`);
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

mod auth;

use std::collections::BTreeMap;

use crate::{
    access::{SourceRanges, parse_ranges},
    object::{ObjectKey, ObjectRef},
    policy::{
        Cors, OriginPattern, RateLimit, Redirect, RoutePolicy, is_token_list, parse_plain_path,
        parse_seconds, parse_size, parse_vhost,
    },
    problem::{Problem, ProblemReason},
    rewrite::RewriteTarget,
    snapshot::ClusterObjects,
    tls::ANNOTATION_PREFIXES,
};

/// The annotations (without prefix) that take effect today, besides the
/// source ranges.
pub const IMPLEMENTED: [&str; 29] = [
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
];

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
    /// The Secrets the annotations name (`auth-secret`, `proxy-ssl-secret`,
    /// ...), found or not: a change to one reads the Ingress again.
    pub secrets: Vec<ObjectKey>,
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
    if IMPLEMENTED.contains(&name) || auth::IMPLEMENTED.contains(&name) {
        return Treatment::Implemented;
    }
    // Reported by the auth reader, ignored: they tune connections only.
    if auth::CONNECTION_TUNING.contains(&name) {
        return Treatment::Implemented;
    }
    if name.ends_with("-snippet") {
        return Treatment::Snippet;
    }
    // `enable-global-auth: "false"` opts out of a global auth that we do
    // not have: it asks for exactly what happens. Any other value asks for
    // a global auth we cannot apply.
    if name == "enable-global-auth" {
        return if value.trim().eq_ignore_ascii_case("false") {
            Treatment::Implemented
        } else {
            Treatment::FailClosed
        };
    }
    if SOURCE_RANGES.contains(&name) {
        return Treatment::SourceRange;
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
            ("nginx.ingress.kubernetes.io/limit-rate-after", "10m"),
            ("xdp-ingress.io/limit-rate", "100"),
            ("nginx.ingress.kubernetes.io/enable-global-auth", "true"),
            ("nginx.ingress.kubernetes.io/enable-global-auth", "maybe"),
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

    #[test]
    fn opting_out_of_global_auth_is_what_happens() {
        let verdict = verdict(&[("nginx.ingress.kubernetes.io/enable-global-auth", "false")]);
        assert_eq!(verdict, AnnotationVerdict::default());
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
            (
                "nginx.ingress.kubernetes.io/server-alias",
                "www.example.com",
            ),
            ("nginx.ingress.kubernetes.io/proxy-buffering", "on"),
            ("xdp-ingress.io/enable-access-log", "true"),
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
                "nginx.ingress.kubernetes.io/proxy-buffering",
                "nginx.ingress.kubernetes.io/server-alias",
                "xdp-ingress.io/enable-access-log",
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
