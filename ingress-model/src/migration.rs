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
        "custom-http-errors",
        "without any default backend, the edge's own page with the status (ingress-nginx: its default backend's 404); the errors backend gets the Host, method and X-* headers, not the client's other headers",
    ),
];

/// The report for every Ingress of `objects`, by Ingress and annotation.
pub fn migration_report(objects: &ClusterObjects) -> Vec<AnnotationOutcome> {
    let differences: BTreeMap<&str, &str> = DIFFERENCES.iter().copied().collect();
    let mut report = Vec::new();
    for (key, ingress) in &objects.ingresses {
        let annotations = ingress.metadata.annotations.as_ref();
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
            .annotation("nginx.ingress.kubernetes.io/mirror-target", "http://m/")
            .annotation("nginx.ingress.kubernetes.io/enable-global-auth", "true")
            .annotation("kubernetes.io/ingress.class", "nginx")
            .rule(Some("shop.example.com"), vec![prefix("/", "web")])
            .object()]);
        let report = migration_report(&objects);
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
                    "nginx.ingress.kubernetes.io/enable-global-auth",
                    Outcome::FailsClosed
                ),
                (
                    "nginx.ingress.kubernetes.io/mirror-target",
                    Outcome::Unsupported
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
                    "nginx.ingress.kubernetes.io/whitelist-source-range",
                    Outcome::Differs
                ),
            ],
            "{report:#?}"
        );
        assert!(report[3].note.contains("\"huge\""), "{}", report[3].note);
        assert_eq!(ingresses_named(&report), [ObjectKey::new("shop", "web")]);
    }
}
