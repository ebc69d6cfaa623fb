//! TLS as our Ingresses ask for it: which hosts are served over HTTPS with
//! which Secret (`spec.tls`), and the redirect annotations of ingress-nginx.
//! Reading the certificates themselves is the daemon's job (crypto is not
//! part of the pure model); this module only says which Secret a host wants.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::Ingress;

use crate::{
    host::HostPattern,
    object::{ObjectKey, ObjectKind, ObjectRef},
    problem::{Problem, ProblemReason},
    snapshot::ClusterObjects,
};

/// The Secret type that holds a certificate and its key.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Annotation prefixes we read: ingress-nginx's, so that Ingresses move
/// over unchanged, and our own.
pub const ANNOTATION_PREFIXES: [&str; 2] = ["nginx.ingress.kubernetes.io/", "xdp-ingress.io/"];

/// A boolean annotation of an Ingress under either prefix, `None` when
/// absent; a value other than `true` or `false` is a problem.
pub fn bool_annotation(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    key: &ObjectKey,
    name: &str,
    problems: &mut Vec<Problem>,
) -> Option<bool> {
    let annotations = annotations?;
    for prefix in ANNOTATION_PREFIXES {
        let full = format!("{prefix}{name}");
        if let Some(value) = annotations.get(&full) {
            match value.trim().to_ascii_lowercase().as_str() {
                "true" => return Some(true),
                "false" => return Some(false),
                _ => problems.push(Problem::new(
                    ObjectRef::new(ObjectKind::Ingress, key.clone()),
                    ProblemReason::InvalidAnnotation,
                    format!(
                        "annotation {full}: {value:?} is neither \"true\" nor \"false\"; ignored"
                    ),
                )),
            }
        }
    }
    None
}

/// One `spec.tls` entry: these hosts are served with this Secret's
/// certificate (or the default certificate when `secret` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsBinding {
    /// The Ingress that asks.
    pub ingress: ObjectKey,
    /// The hosts (the entry's `hosts`, else the hosts of the Ingress's rules).
    pub hosts: Vec<HostPattern>,
    /// The Secret, in the Ingress's namespace; `None` for SNI routing with
    /// the default certificate.
    pub secret: Option<ObjectKey>,
}

/// The TLS view of our Ingresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsPlan {
    /// Bindings in precedence order (oldest Ingress first): for a host
    /// listed twice, the first binding wins.
    pub bindings: Vec<TlsBinding>,
    /// Every host some Ingress serves over TLS.
    pub tls_hosts: BTreeSet<HostPattern>,
}

impl TlsPlan {
    /// The Secret to use per host (first binding wins), for the daemon's
    /// certificate store. Hosts bound without a Secret map to `None`.
    pub fn secret_per_host(&self) -> BTreeMap<HostPattern, Option<ObjectKey>> {
        let mut hosts = BTreeMap::new();
        for binding in &self.bindings {
            for host in &binding.hosts {
                hosts
                    .entry(host.clone())
                    .or_insert_with(|| binding.secret.clone());
            }
        }
        hosts
    }

    /// Whether requests for `host` (a rule host) are served over TLS.
    pub fn has_tls(&self, host: &HostPattern) -> bool {
        self.tls_hosts.contains(host)
    }
}

/// Builds the TLS plan of `ours` (our Ingresses, in precedence order) and
/// checks that each named Secret exists and is a TLS Secret.
pub fn plan_tls<'a>(
    objects: &ClusterObjects,
    ours: impl IntoIterator<Item = (&'a ObjectKey, &'a Ingress)>,
) -> (TlsPlan, Vec<Problem>) {
    let mut plan = TlsPlan::default();
    let mut problems = Vec::new();
    for (key, ingress) in ours {
        let (bindings, found) = ingress_tls(objects, key, ingress);
        plan.add(&bindings);
        problems.extend(found);
    }
    (plan, problems)
}

impl TlsPlan {
    /// Appends the bindings of the next Ingress in precedence order.
    pub(crate) fn add(&mut self, bindings: &[TlsBinding]) {
        for binding in bindings {
            self.tls_hosts.extend(binding.hosts.iter().cloned());
            self.bindings.push(binding.clone());
        }
    }
}

/// The `spec.tls` entries of one of our Ingresses, and their problems.
pub(crate) fn ingress_tls(
    objects: &ClusterObjects,
    key: &ObjectKey,
    ingress: &Ingress,
) -> (Vec<TlsBinding>, Vec<Problem>) {
    let mut bindings = Vec::new();
    let mut problems = Vec::new();
    let Some(spec) = &ingress.spec else {
        return (bindings, problems);
    };
    let Some(entries) = spec.tls.as_ref().filter(|tls| !tls.is_empty()) else {
        return (bindings, problems);
    };
    let object = ObjectRef::new(ObjectKind::Ingress, key.clone());
    let rule_hosts: Vec<HostPattern> = spec
        .rules
        .iter()
        .flatten()
        .filter_map(|rule| HostPattern::parse(rule.host.as_deref()).ok())
        .filter(|host| *host != HostPattern::Any)
        .collect();
    for tls in entries {
        let hosts: Vec<HostPattern> = match &tls.hosts {
            Some(hosts) if !hosts.is_empty() => hosts
                .iter()
                .filter_map(|host| match HostPattern::parse(Some(host)) {
                    Ok(HostPattern::Any) | Err(_) => {
                        problems.push(Problem::new(
                            object.clone(),
                            ProblemReason::InvalidHost,
                            format!("tls host {host:?} is not a valid DNS name or wildcard"),
                        ));
                        None
                    }
                    Ok(pattern) => Some(pattern),
                })
                .collect(),
            _ => rule_hosts.clone(),
        };
        let secret = tls
            .secret_name
            .as_ref()
            .filter(|name| !name.is_empty())
            .map(|name| ObjectKey::new(key.namespace.clone(), name.clone()));
        if let Some(secret_key) = &secret {
            check_secret(objects, &object, secret_key, &mut problems);
        }
        bindings.push(TlsBinding {
            ingress: key.clone(),
            hosts,
            secret,
        });
    }
    (bindings, problems)
}

fn check_secret(
    objects: &ClusterObjects,
    ingress: &ObjectRef,
    secret_key: &ObjectKey,
    problems: &mut Vec<Problem>,
) {
    let problem = match objects.secrets.get(secret_key) {
        None => Some((
            ProblemReason::SecretNotFound,
            format!("TLS Secret {secret_key} not found: its hosts get the default certificate"),
        )),
        Some(secret)
            if secret
                .type_
                .as_deref()
                .is_some_and(|t| t != TLS_SECRET_TYPE) =>
        {
            Some((
                ProblemReason::InvalidSecret,
                format!(
                    "Secret {secret_key} has type {:?}, not {TLS_SECRET_TYPE}",
                    secret.type_.as_deref().unwrap_or("")
                ),
            ))
        }
        Some(secret) => {
            let data = secret.data.as_ref();
            let missing: Vec<&str> = ["tls.crt", "tls.key"]
                .into_iter()
                .filter(|field| !data.is_some_and(|d| d.contains_key(*field)))
                .collect();
            (!missing.is_empty()).then(|| {
                (
                    ProblemReason::InvalidSecret,
                    format!("Secret {secret_key} lacks {}", missing.join(" and ")),
                )
            })
        }
    };
    if let Some((reason, message)) = problem {
        problems.push(Problem::new(ingress.clone(), reason, message));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{
        ByteString,
        api::{
            core::v1::Secret,
            networking::v1::{IngressRule, IngressSpec, IngressTLS},
        },
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    use super::*;

    fn ingress(
        name: &str,
        rule_hosts: &[&str],
        tls: Vec<IngressTLS>,
        annotations: &[(&str, &str)],
    ) -> Ingress {
        Ingress {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(IngressSpec {
                rules: Some(
                    rule_hosts
                        .iter()
                        .map(|h| IngressRule {
                            host: Some(h.to_string()),
                            http: None,
                        })
                        .collect(),
                ),
                tls: Some(tls),
                ..IngressSpec::default()
            }),
            status: None,
        }
    }

    fn tls(hosts: &[&str], secret: Option<&str>) -> IngressTLS {
        IngressTLS {
            hosts: Some(hosts.iter().map(|h| h.to_string()).collect()),
            secret_name: secret.map(str::to_owned),
        }
    }

    fn secret(name: &str, type_: &str, fields: &[&str]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            type_: Some(type_.into()),
            data: Some(
                fields
                    .iter()
                    .map(|f| (f.to_string(), ByteString(b"x".to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    fn objects(secrets: Vec<Secret>) -> ClusterObjects {
        let mut objects = ClusterObjects::new();
        for s in secrets {
            objects
                .secrets
                .insert(ObjectKey::of_namespaced(&s.metadata), s.into());
        }
        objects
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("default", name)
    }

    #[test]
    fn bindings_name_secrets_in_the_ingress_namespace() {
        let objects = objects(vec![secret(
            "web-tls",
            TLS_SECRET_TYPE,
            &["tls.crt", "tls.key"],
        )]);
        let web = ingress(
            "web",
            &["web.example.com"],
            vec![tls(&["web.example.com", "*.example.com"], Some("web-tls"))],
            &[],
        );
        let (plan, problems) = plan_tls(&objects, [(&key("web"), &web)]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(plan.bindings.len(), 1);
        assert_eq!(plan.bindings[0].secret, Some(key("web-tls")));
        assert!(plan.has_tls(&HostPattern::Exact("web.example.com".into())));
        assert!(plan.has_tls(&HostPattern::Wildcard("example.com".into())));
        assert!(!plan.has_tls(&HostPattern::Exact("other.example.com".into())));
    }

    #[test]
    fn hosts_default_to_the_rule_hosts() {
        let objects = objects(vec![]);
        let web = ingress(
            "web",
            &["a.example.com", "b.example.com"],
            vec![tls(&[], None)],
            &[],
        );
        let (plan, problems) = plan_tls(&objects, [(&key("web"), &web)]);
        assert!(problems.is_empty());
        assert_eq!(plan.tls_hosts.len(), 2);
        assert_eq!(plan.bindings[0].secret, None);
    }

    #[test]
    fn the_first_binding_of_a_host_wins() {
        let objects = objects(vec![
            secret("old", TLS_SECRET_TYPE, &["tls.crt", "tls.key"]),
            secret("new", TLS_SECRET_TYPE, &["tls.crt", "tls.key"]),
        ]);
        let old = ingress(
            "old",
            &[],
            vec![tls(&["web.example.com"], Some("old"))],
            &[],
        );
        let new = ingress(
            "new",
            &[],
            vec![tls(&["web.example.com"], Some("new"))],
            &[],
        );
        let (plan, _) = plan_tls(&objects, [(&key("old"), &old), (&key("new"), &new)]);
        let per_host = plan.secret_per_host();
        assert_eq!(
            per_host[&HostPattern::Exact("web.example.com".into())],
            Some(key("old"))
        );
    }

    #[test]
    fn bad_secrets_are_problems() {
        let objects = objects(vec![
            secret("opaque", "Opaque", &["tls.crt", "tls.key"]),
            secret("half", TLS_SECRET_TYPE, &["tls.crt"]),
        ]);
        let web = ingress(
            "web",
            &[],
            vec![
                tls(&["a.example.com"], Some("missing")),
                tls(&["b.example.com"], Some("opaque")),
                tls(&["c.example.com"], Some("half")),
                tls(&["bad host!"], None),
            ],
            &[],
        );
        let (plan, problems) = plan_tls(&objects, [(&key("web"), &web)]);
        let reasons: Vec<ProblemReason> = problems.iter().map(|p| p.reason).collect();
        assert_eq!(
            reasons,
            vec![
                ProblemReason::SecretNotFound,
                ProblemReason::InvalidSecret,
                ProblemReason::InvalidSecret,
                ProblemReason::InvalidHost
            ]
        );
        assert!(
            problems[2].message.contains("tls.key"),
            "{}",
            problems[2].message
        );
        // The hosts keep TLS (with the default certificate).
        assert_eq!(plan.tls_hosts.len(), 3);
    }

    #[test]
    fn boolean_annotations_under_both_prefixes() {
        let mut problems = Vec::new();
        let nginx = ingress(
            "a",
            &[],
            vec![],
            &[("nginx.ingress.kubernetes.io/ssl-redirect", "false")],
        );
        assert_eq!(
            bool_annotation(
                nginx.metadata.annotations.as_ref(),
                &key("a"),
                "ssl-redirect",
                &mut problems
            ),
            Some(false)
        );
        let ours = ingress(
            "b",
            &[],
            vec![],
            &[("xdp-ingress.io/force-ssl-redirect", "True")],
        );
        assert_eq!(
            bool_annotation(
                ours.metadata.annotations.as_ref(),
                &key("b"),
                "force-ssl-redirect",
                &mut problems
            ),
            Some(true)
        );
        assert_eq!(
            bool_annotation(
                ours.metadata.annotations.as_ref(),
                &key("b"),
                "ssl-redirect",
                &mut problems
            ),
            None
        );
        assert!(problems.is_empty());
        let bad = ingress(
            "c",
            &[],
            vec![],
            &[("nginx.ingress.kubernetes.io/ssl-redirect", "yes")],
        );
        assert_eq!(
            bool_annotation(
                bad.metadata.annotations.as_ref(),
                &key("c"),
                "ssl-redirect",
                &mut problems
            ),
            None
        );
        assert_eq!(problems[0].reason, ProblemReason::InvalidAnnotation);
    }
}

#[cfg(test)]
mod redirect_tests {
    use crate::{
        ModelOptions, RouteTable,
        fixtures::{IngressBuilder, ingress, prefix, world},
    };

    /// An Ingress of ours in `default` routing `host` + `path` to `web:80`.
    fn web_ingress(name: &str, host: &str, path: &str) -> IngressBuilder {
        ingress("default", name)
            .ours()
            .rule(Some(host), vec![prefix(path, "web")])
    }

    #[test]
    fn redirects_follow_tls_and_the_annotations() {
        let objects = world([
            web_ingress("secure", "secure.example.com", "/")
                .tls(&["secure.example.com"], Some("secure-tls"))
                .object(),
            web_ingress("opted-out", "secure.example.com", "/plain")
                .annotation("nginx.ingress.kubernetes.io/ssl-redirect", "false")
                .object(),
            web_ingress("forced", "forced.example.com", "/")
                .annotation("nginx.ingress.kubernetes.io/force-ssl-redirect", "true")
                .object(),
            web_ingress("plain", "plain.example.com", "/").object(),
        ]);
        let (table, problems) = RouteTable::build(&objects, &ModelOptions::default());
        // The Secret is missing: reported, and the host still has TLS.
        assert!(
            problems
                .iter()
                .any(|p| p.reason == crate::ProblemReason::SecretNotFound),
            "{problems:?}"
        );
        assert!(table.route("secure.example.com", "/").https_redirect());
        assert!(
            !table
                .route("secure.example.com", "/plain/x")
                .https_redirect()
        );
        assert!(table.route("forced.example.com", "/").https_redirect());
        assert!(!table.route("plain.example.com", "/").https_redirect());
        assert!(!table.route("unknown.example.com", "/").https_redirect());
        assert_eq!(table.tls().bindings.len(), 1);
    }
}
