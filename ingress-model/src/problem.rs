//! Problems found while building a route table: each names the object it
//! came from, a machine reason and a human message. A problem affects only
//! the rule it names; every other rule keeps routing.

use std::fmt;

use crate::object::ObjectRef;

/// Why something in an object could not be routed as written. The names
/// are the `reason` of the Kubernetes events the controller publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemReason {
    /// The backend names a Service that does not exist. The rule still
    /// routes, to an unavailable backend (503).
    ServiceNotFound,
    /// The Service exists but has no port with the number or name the
    /// backend asks for. The rule routes to an unavailable backend (503).
    PortNotFound,
    /// The Service and port exist but no endpoint is ready or serving. The
    /// rule routes to an empty endpoint set (503 until endpoints appear).
    NoEndpoints,
    /// A path is not valid for its pathType (or the pathType is missing or
    /// unknown). The path is not routed.
    InvalidPath,
    /// A rule's host is not a valid DNS name or wildcard. The rule is not
    /// routed.
    InvalidHost,
    /// A backend names neither a Service nor a resource, or a Service
    /// without a port. The rule routes to an unavailable backend (503).
    InvalidBackend,
    /// Another Ingress (older, or first by namespace/name) already routes
    /// the same host, path and path type. This path is not routed.
    PathConflict,
    /// Another Ingress already provides the default backend for the same
    /// host (or the catch-all). This default backend is not used.
    DefaultBackendConflict,
    /// Every path and default backend of the Ingress lost a conflict: it
    /// routes nothing, and its status gets no address until it does.
    NotServed,
    /// The backend is a `resource` backend or an ExternalName Service,
    /// which the proxy does not serve. The rule routes to an unavailable
    /// backend (503).
    UnsupportedBackend,
    /// The same object appears twice in the input; the later one wins.
    DuplicateObject,
    /// A `spec.tls` entry names a Secret that does not exist. Its hosts
    /// are served with the default certificate.
    SecretNotFound,
    /// A `spec.tls` entry names a Secret that is not a `kubernetes.io/tls`
    /// Secret with `tls.crt` and `tls.key`.
    InvalidSecret,
    /// A TLS Secret's certificate or key cannot be used (unparsable, key not
    /// matching the certificate, expired). Reported by the daemon, which
    /// keeps the host's last good certificate or the default one.
    InvalidCertificate,
    /// An annotation has a value we cannot read; it is ignored.
    InvalidAnnotation,
    /// A path (or default backend) of a canary Ingress has no main
    /// Ingress route with the same host, path and type to join: it serves
    /// nothing.
    CanaryWithoutMain,
    /// The next hop of a Service's endpoints (an L4 backend) cannot be
    /// resolved by the node (no answer to ARP or ND): its packets are
    /// dropped until it answers. Reported by the daemon.
    NextHopUnresolved,
    /// An annotation we do not implement. Access control (`auth-*`,
    /// `*-source-range`, `satisfy`, `enable-global-auth`) fails closed: the
    /// Ingress's paths answer 503. Any other is ignored.
    UnsupportedAnnotation,
    /// A snippet annotation (free-form nginx configuration), never
    /// executed: the Ingress's paths answer 503.
    SnippetRefused,
    /// A ConfigMap named on the command line (`--tcp-services-configmap`,
    /// `--udp-services-configmap`) does not exist: none of its services is served.
    ConfigMapNotFound,
    /// An entry of a TCP or UDP services ConfigMap cannot be read (not
    /// `"<port>": "<namespace>/<service>:<port>"`): it is not served.
    InvalidL4Service,
}

impl ProblemReason {
    /// The reason as one CamelCase word.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemReason::ServiceNotFound => "ServiceNotFound",
            ProblemReason::PortNotFound => "PortNotFound",
            ProblemReason::NoEndpoints => "NoEndpoints",
            ProblemReason::InvalidPath => "InvalidPath",
            ProblemReason::InvalidHost => "InvalidHost",
            ProblemReason::InvalidBackend => "InvalidBackend",
            ProblemReason::PathConflict => "PathConflict",
            ProblemReason::DefaultBackendConflict => "DefaultBackendConflict",
            ProblemReason::NotServed => "NotServed",
            ProblemReason::UnsupportedBackend => "UnsupportedBackend",
            ProblemReason::DuplicateObject => "DuplicateObject",
            ProblemReason::SecretNotFound => "SecretNotFound",
            ProblemReason::InvalidSecret => "InvalidSecret",
            ProblemReason::InvalidCertificate => "InvalidCertificate",
            ProblemReason::InvalidAnnotation => "InvalidAnnotation",
            ProblemReason::CanaryWithoutMain => "CanaryWithoutMain",
            ProblemReason::NextHopUnresolved => "NextHopUnresolved",
            ProblemReason::UnsupportedAnnotation => "UnsupportedAnnotation",
            ProblemReason::SnippetRefused => "SnippetRefused",
            ProblemReason::ConfigMapNotFound => "ConfigMapNotFound",
            ProblemReason::InvalidL4Service => "InvalidL4Service",
        }
    }
}

impl fmt::Display for ProblemReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem with one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Problem {
    /// The object the problem was found in.
    pub object: ObjectRef,
    /// The machine reason.
    pub reason: ProblemReason,
    /// What is wrong, for a person: names the rule (host and path) and the
    /// missing or conflicting thing.
    pub message: String,
}

impl Problem {
    /// A problem from its parts.
    pub fn new(object: ObjectRef, reason: ProblemReason, message: impl Into<String>) -> Self {
        Self {
            object,
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.object, self.reason, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{ObjectKey, ObjectKind};

    #[test]
    fn problems_display_object_reason_and_message() {
        let problem = Problem::new(
            ObjectRef::new(ObjectKind::Ingress, ObjectKey::new("ns", "web")),
            ProblemReason::ServiceNotFound,
            "Service ns/api not found",
        );
        assert_eq!(
            problem.to_string(),
            "Ingress ns/web ServiceNotFound: Service ns/api not found"
        );
    }
}
