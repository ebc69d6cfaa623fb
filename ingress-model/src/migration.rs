//! What switching an Ingress from ingress-nginx to xdp-ingress changes,
//! annotation by annotation (`xdp-ingress migrate`): applied as
//! ingress-nginx applies it, applied with a difference (and which), not
//! supported (ignored), failing closed (503) or refused (a snippet), and
//! the values that cannot be read. Every Ingress is looked at, whatever its
//! class: the report is read before the class is switched.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    annotations::{self, Treatment},
    object::{ObjectKey, ObjectKind, ObjectRef},
    problem::ProblemReason,
    snapshot::ClusterObjects,
    tls::ANNOTATION_PREFIXES,
};

/// What happens to one annotation after the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Applied as ingress-nginx applies it.
    Applied,
    /// Applied, with a difference (see the note).
    Differs,
    /// Its value cannot be read: ignored (or failing closed, see the note).
    Invalid,
    /// Not implemented: ignored.
    Unsupported,
    /// Protects something and is not applied: the Ingress answers 503.
    FailsClosed,
    /// A snippet: never executed, the Ingress answers 503.
    Refused,
}

impl Outcome {
    /// The outcome as the table prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Differs => "differs",
            Outcome::Invalid => "invalid",
            Outcome::Unsupported => "unsupported",
            Outcome::FailsClosed => "fails-closed",
            Outcome::Refused => "refused",
        }
    }
}

/// One annotation of one Ingress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnnotationOutcome {
    /// The Ingress, `namespace/name`.
    pub ingress: String,
    /// The annotation, with its prefix.
    pub annotation: String,
    /// Its value.
    pub value: String,
    /// What happens to it.
    pub outcome: Outcome,
    /// How it differs, why it cannot be read, or what to do instead.
    pub note: String,
}

/// Every annotation of ingress-nginx's user guide (v1.15), and the two
/// aliases its parsers also read (`allowlist-source-range`,
/// `limit-allowlist`), without the prefix: what the README's table
/// accounts for, one by one.
pub const INGRESS_NGINX_ANNOTATIONS: &[&str] = &[
    "allowlist-source-range",
    "limit-allowlist",
    "affinity",
    "affinity-canary-behavior",
    "affinity-mode",
    "app-root",
    "auth-always-set-cookie",
    "auth-cache-duration",
    "auth-cache-key",
    "auth-keepalive",
    "auth-keepalive-requests",
    "auth-keepalive-share-vars",
    "auth-keepalive-timeout",
    "auth-method",
    "auth-proxy-set-headers",
    "auth-realm",
    "auth-request-redirect",
    "auth-response-headers",
    "auth-secret",
    "auth-secret-type",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-snippet",
    "auth-tls-error-page",
    "auth-tls-match-cn",
    "auth-tls-pass-certificate-to-upstream",
    "auth-tls-secret",
    "auth-tls-verify-client",
    "auth-tls-verify-depth",
    "auth-type",
    "auth-url",
    "backend-protocol",
    "canary",
    "canary-by-cookie",
    "canary-by-header",
    "canary-by-header-pattern",
    "canary-by-header-value",
    "canary-weight",
    "canary-weight-total",
    "client-body-buffer-size",
    "configuration-snippet",
    "connection-proxy-header",
    "cors-allow-credentials",
    "cors-allow-headers",
    "cors-allow-methods",
    "cors-allow-origin",
    "cors-expose-headers",
    "cors-max-age",
    "custom-headers",
    "custom-http-errors",
    "default-backend",
    "denylist-source-range",
    "enable-access-log",
    "enable-cors",
    "enable-global-auth",
    "enable-modsecurity",
    "enable-opentelemetry",
    "enable-owasp-core-rules",
    "enable-rewrite-log",
    "force-ssl-redirect",
    "from-to-www-redirect",
    "http2-push-preload",
    "limit-burst-multiplier",
    "limit-connections",
    "limit-rate",
    "limit-rate-after",
    "limit-rpm",
    "limit-rps",
    "limit-whitelist",
    "load-balance",
    "mirror-host",
    "mirror-request-body",
    "mirror-target",
    "modsecurity-snippet",
    "modsecurity-transaction-id",
    "opentelemetry-trust-incoming-span",
    "permanent-redirect",
    "permanent-redirect-code",
    "preserve-trailing-slash",
    "proxy-body-size",
    "proxy-buffer-size",
    "proxy-buffering",
    "proxy-buffers-number",
    "proxy-busy-buffers-size",
    "proxy-connect-timeout",
    "proxy-cookie-domain",
    "proxy-cookie-path",
    "proxy-http-version",
    "proxy-max-temp-file-size",
    "proxy-next-upstream",
    "proxy-next-upstream-timeout",
    "proxy-next-upstream-tries",
    "proxy-read-timeout",
    "proxy-redirect-from",
    "proxy-redirect-to",
    "proxy-request-buffering",
    "proxy-send-timeout",
    "proxy-ssl-ciphers",
    "proxy-ssl-name",
    "proxy-ssl-protocols",
    "proxy-ssl-secret",
    "proxy-ssl-server-name",
    "proxy-ssl-verify",
    "proxy-ssl-verify-depth",
    "rewrite-target",
    "satisfy",
    "server-alias",
    "server-snippet",
    "service-upstream",
    "session-cookie-change-on-failure",
    "session-cookie-conditional-samesite-none",
    "session-cookie-domain",
    "session-cookie-expires",
    "session-cookie-max-age",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-samesite",
    "session-cookie-secure",
    "ssl-ciphers",
    "ssl-passthrough",
    "ssl-prefer-server-ciphers",
    "ssl-redirect",
    "stream-snippet",
    "temporal-redirect",
    "temporal-redirect-code",
    "upstream-hash-by",
    "upstream-hash-by-subset",
    "upstream-hash-by-subset-size",
    "upstream-vhost",
    "use-regex",
    "whitelist-source-range",
    "x-forwarded-prefix",
];

/// Where xdp-ingress applies an annotation differently from ingress-nginx:
/// (annotation without prefix, the difference).
pub const DIFFERENCES: &[(&str, &str)] = &[
    (
        "whitelist-source-range",
        "a list with any unreadable entry fails closed (503); ingress-nginx denies only when no entry is readable",
    ),
    (
        "allowlist-source-range",
        "a list with any unreadable entry fails closed (503); ingress-nginx denies only when no entry is readable",
    ),
    (
        "denylist-source-range",
        "a list with any unreadable entry fails closed (503); ingress-nginx denies only when no entry is readable",
    ),
    (
        "cors-allow-origin",
        "an Origin must match a listed origin whole; ingress-nginx's pattern is not anchored at the start",
    ),
    (
        "limit-rps",
        "counted per replica and per Ingress; a change of the Ingress starts the counts over",
    ),
    (
        "limit-rpm",
        "counted per replica and per Ingress; a change of the Ingress starts the counts over",
    ),
    (
        "limit-connections",
        "counts the client's requests in progress, per replica and per Ingress",
    ),
    (
        "canary",
        "joins the main route of the same host, path and path type only; ingress-nginx attaches it to the main Service's upstream, so to every path using that Service",
    ),
    (
        "affinity",
        "the session key is hashed onto the endpoints by rendezvous hashing: a cookie set by ingress-nginx may land on another endpoint once",
    ),
    (
        "auth-secret",
        "a Secret of the Ingress's namespace only; a line whose hash is DES crypt(3), another crypt scheme or clear text never lets its user in (reported)",
    ),
    (
        "auth-url",
        "variables only in the path and query, of a known set; an https service is verified against the system's roots; one connection per sub-request",
    ),
    ("auth-cache-key", "answers cached in memory per replica"),
    (
        "auth-tls-secret",
        "verified by rustls's webpki; a request on a connection made for a host with other settings gets 421",
    ),
    (
        "auth-tls-error-page",
        "a path is redirected to (302), where nginx serves it internally",
    ),
    (
        "auth-tls-verify-client",
        "on: a plain-HTTP request that does not redirect to HTTPS gets 400 (nginx does not check plain HTTP)",
    ),
    (
        "proxy-buffering",
        "no effect: the edge streams responses (nginx buffers them with \"on\")",
    ),
    (
        "proxy-request-buffering",
        "no effect: the edge streams request bodies (nginx reads them whole with \"on\", the default)",
    ),
    (
        "proxy-buffer-size",
        "no effect: the edge streams; no nginx buffers to size",
    ),
    (
        "proxy-buffers-number",
        "no effect: the edge streams; no nginx buffers to size",
    ),
    (
        "proxy-busy-buffers-size",
        "no effect: the edge streams; no nginx buffers to size",
    ),
    (
        "proxy-max-temp-file-size",
        "no effect: nothing is written to disk",
    ),
    (
        "client-body-buffer-size",
        "no effect: request bodies are streamed, never buffered",
    ),
    (
        "proxy-http-version",
        "no effect: HTTP/1.1 upstream (or HTTP/2 by backend-protocol); \"1.0\" is not spoken",
    ),
    (
        "connection-proxy-header",
        "no effect: the edge pools keep-alive connections to the endpoints itself; the header is not sent",
    ),
    (
        "mirror-target",
        "variables only in the target's path and query, never its host; at most 256 copies in flight, past that a copy is skipped",
    ),
    (
        "proxy-next-upstream",
        "a request with a body is streamed, so never sent twice (nginx buffers it and may); to HTTP/2 and TLS upstreams only a failed connect is tried again",
    ),
    (
        "upstream-hash-by",
        "the key's variables are of a known set ($request_uri, $uri, $host, $remote_addr, $binary_remote_addr, $http_*, $cookie_*, $arg_*, ...); keys are placed by rendezvous hashing, so a key may land on another endpoint than under ingress-nginx",
    ),
    (
        "custom-http-errors",
        "without any default backend, the edge's own page with the status (ingress-nginx: its default backend's 404); the errors backend gets the Host, method and X-* headers, not the client's other headers",
    ),
];

/// The report for every Ingress of `objects`, by Ingress and annotation.
pub fn migration_report(objects: &ClusterObjects, prefix: &str) -> Vec<AnnotationOutcome> {
    let differences: BTreeMap<&str, &str> = DIFFERENCES.iter().copied().collect();
    let mut report = Vec::new();
    for (key, ingress) in &objects.ingresses {
        let (annotations, _unread) =
            annotations::under_prefix(ingress.metadata.annotations.as_ref(), prefix);
        let annotations = annotations.as_deref();
        let object = ObjectRef::new(ObjectKind::Ingress, key.clone());
        let verdict = annotations::read(&object, annotations, objects);
        for (full, value) in annotations.into_iter().flatten() {
            let Some(name) = ANNOTATION_PREFIXES
                .iter()
                .find_map(|prefix| full.strip_prefix(prefix))
            else {
                continue;
            };
            // A problem naming this annotation says it cannot be read (or
            // is not applied).
            let problem = verdict.problems.iter().find(|p| {
                p.message.starts_with(&format!("annotation {full}:"))
                    || p.message.starts_with(&format!("annotation {full} "))
            });
            let (outcome, note) = match (annotations::treatment(name, value), problem) {
                (Treatment::Snippet, _) => (
                    Outcome::Refused,
                    "free-form nginx configuration is never executed; use the supported annotations"
                        .to_owned(),
                ),
                (Treatment::FailClosed, _) => (
                    Outcome::FailsClosed,
                    "not enforced by xdp-ingress yet: the Ingress answers 503 rather than serve unprotected"
                        .to_owned(),
                ),
                (Treatment::Ignored, _) => (
                    Outcome::Unsupported,
                    "not implemented: ignored".to_owned(),
                ),
                (_, Some(problem)) if problem.reason == ProblemReason::InvalidAnnotation => {
                    (Outcome::Invalid, problem.message.clone())
                }
                (_, Some(problem)) => (Outcome::Unsupported, problem.message.clone()),
                (Treatment::Implemented | Treatment::SourceRange, None) => {
                    match differences.get(name) {
                        Some(difference) => (Outcome::Differs, (*difference).to_owned()),
                        None => (Outcome::Applied, String::new()),
                    }
                }
            };
            report.push(AnnotationOutcome {
                ingress: key.to_string(),
                annotation: full.clone(),
                value: value.clone(),
                outcome,
                note,
            });
        }
    }
    report
}

/// The Ingresses the report names, for a summary line.
pub fn ingresses_named(report: &[AnnotationOutcome]) -> Vec<ObjectKey> {
    let mut keys: Vec<ObjectKey> = report
        .iter()
        .filter_map(|row| {
            let (namespace, name) = row.ingress.split_once('/')?;
            Some(ObjectKey::new(namespace, name))
        })
        .collect();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ingress, prefix, world};

    #[test]
    fn every_annotation_read_is_one_of_ingress_nginx_or_ours() {
        // Ours alone (under `xdp-ingress.io/`).
        const OURS: &[&str] = &["xdp-drop-source-range"];
        let read = annotations::IMPLEMENTED
            .iter()
            .chain(&crate::canary::CANARY_ANNOTATIONS)
            .chain(&crate::affinity::AFFINITY_ANNOTATIONS);
        for name in read {
            assert!(
                INGRESS_NGINX_ANNOTATIONS.contains(name) || OURS.contains(name),
                "{name} is no annotation of ingress-nginx's"
            );
        }
        for name in DIFFERENCES.iter().map(|(name, _)| name) {
            assert!(INGRESS_NGINX_ANNOTATIONS.contains(name), "{name}");
        }
    }

    #[test]
    fn every_kind_of_outcome() {
        let objects = world([ingress("shop", "web")
            .class_name("nginx")
            .annotation("nginx.ingress.kubernetes.io/rewrite-target", "/$2")
            .annotation(
                "nginx.ingress.kubernetes.io/whitelist-source-range",
                "198.18.0.0/15",
            )
            .annotation("nginx.ingress.kubernetes.io/proxy-body-size", "huge")
            .annotation(
                "nginx.ingress.kubernetes.io/configuration-snippet",
                "more_set_headers x;",
            )
            .annotation("nginx.ingress.kubernetes.io/ssl-passthrough", "true")
            .annotation("nginx.ingress.kubernetes.io/enable-modsecurity", "true")
            .annotation("kubernetes.io/ingress.class", "nginx")
            .rule(Some("shop.example.com"), vec![prefix("/", "web")])
            .object()]);
        let report = migration_report(&objects, crate::options::DEFAULT_ANNOTATIONS_PREFIX);
        let outcomes: Vec<(&str, Outcome)> = report
            .iter()
            .map(|row| (row.annotation.as_str(), row.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [
                (
                    "nginx.ingress.kubernetes.io/configuration-snippet",
                    Outcome::Refused
                ),
                (
                    "nginx.ingress.kubernetes.io/enable-modsecurity",
                    Outcome::FailsClosed
                ),
                (
                    "nginx.ingress.kubernetes.io/proxy-body-size",
                    Outcome::Invalid
                ),
                (
                    "nginx.ingress.kubernetes.io/rewrite-target",
                    Outcome::Applied
                ),
                (
                    "nginx.ingress.kubernetes.io/ssl-passthrough",
                    Outcome::Unsupported
                ),
                (
                    "nginx.ingress.kubernetes.io/whitelist-source-range",
                    Outcome::Differs
                ),
            ],
            "{report:#?}"
        );
        assert!(report[2].note.contains("\"huge\""), "{}", report[2].note);
        assert_eq!(ingresses_named(&report), [ObjectKey::new("shop", "web")]);
    }
}
