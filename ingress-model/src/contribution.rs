//! What one Ingress brings to the route table on its own: its parsed hosts
//! and paths with their resolved backends, its default backend, its TLS
//! entries and the problems found in it. A contribution depends only on
//! the Ingress and on the Services, EndpointSlices and Secrets it names, so
//! [`crate::table::RouteTableBuilder`] keeps it across builds until one of
//! those changes. Which of its paths win against other Ingresses is
//! settled per host when the host is merged; the outcomes are written back
//! here, and its problems are assembled from both.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use k8s_openapi::{
    api::networking::v1::{HTTPIngressPath, Ingress},
    apimachinery::pkg::apis::meta::v1::Time,
};

use crate::{
    access::IpRange,
    annotations::{self, Refusal},
    backend::{Backend, BackendResolver, EndpointSet, Resolution, UnavailableBackend},
    canary::CanaryRule,
    host::HostPattern,
    object::{ObjectKey, ObjectKind, ObjectRef},
    options::ModelOptions,
    path::PathRule,
    policy::RoutePolicy,
    problem::{Problem, ProblemReason},
    snapshot::ClusterObjects,
    tls::{TlsBinding, bool_annotation, ingress_tls},
};

/// Where an Ingress stands among ours: live ones first (an Ingress being
/// deleted, or whose namespace is, never shadows a live one), then oldest
/// first (`creationTimestamp`, a missing one counting as newest), then by
/// namespace/name. Of two rules for the same host, path and type, the first
/// one in this order wins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Precedence {
    going_away: bool,
    undated: bool,
    created: Option<Time>,
    /// The Ingress.
    pub key: ObjectKey,
}

impl Precedence {
    /// The precedence of `ingress` under `key`, in a namespace being deleted
    /// or not.
    pub fn of(key: &ObjectKey, ingress: &Ingress, namespace_going_away: bool) -> Self {
        let created = ingress.metadata.creation_timestamp.clone();
        Self {
            going_away: namespace_going_away || ingress.metadata.deletion_timestamp.is_some(),
            undated: created.is_none(),
            created,
            key: key.clone(),
        }
    }
}

/// Whether a path or a default backend won its place against the other
/// Ingresses (as settled by the last merge of its host), and if not, the
/// problem that says who won.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Routed.
    Won,
    /// Not routed: another rule has the place.
    Lost(Problem),
}

/// One step of an Ingress, in the order the Ingress is read.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// A problem found in the Ingress alone (an annotation, a host, a path).
    Problem(Problem),
    /// A valid path of a rule.
    Path(PathStep),
}

/// A valid path of a rule and where it sends requests.
#[derive(Debug, Clone)]
pub(crate) struct PathStep {
    /// Index of the rule's host in [`Contribution::hosts`].
    pub host: usize,
    /// The path and type.
    pub rule: PathRule,
    /// Its backend, resolved.
    pub backend: Resolution,
    /// Whether it got its place.
    pub outcome: Outcome,
}

/// One distinct valid host of an Ingress's rules.
#[derive(Debug, Clone)]
pub(crate) struct HostSlot {
    /// The host.
    pub host: HostPattern,
    /// Indices in [`Contribution::steps`] of its paths, in order.
    pub paths: Vec<usize>,
    /// Whether the Ingress's `defaultBackend` became this host's default.
    pub default_outcome: Outcome,
}

/// What one of our Ingresses contributes, before it meets the others.
#[derive(Debug, Clone)]
pub(crate) struct Contribution {
    /// The Ingress.
    pub object: ObjectRef,
    /// Its `ssl-redirect` annotation.
    pub ssl_redirect: Option<bool>,
    /// Its `force-ssl-redirect` annotation.
    pub force_ssl_redirect: Option<bool>,
    /// Why its paths and default backend answer 503 whatever they name
    /// (access control we do not enforce, a snippet), if they do.
    pub refusal: Option<Refusal>,
    /// What its annotations ask of each of its routes (`None`: nothing).
    pub policy: Option<Arc<RoutePolicy>>,
    /// `canary: "true"`: its paths are the canaries of the main Ingresses'
    /// routes with the same host, path and type, taking these requests.
    pub canary: Option<Arc<CanaryRule>>,
    /// Its problems and paths in the order they are read.
    pub steps: Vec<Step>,
    /// Its distinct valid rule hosts, in order of first appearance.
    pub hosts: Vec<HostSlot>,
    /// Whether it has rules at all (without rules, its `defaultBackend`
    /// serves everything unmatched).
    pub has_rules: bool,
    /// Its `defaultBackend`, resolved.
    pub default_backend: Option<Resolution>,
    /// Its `default-backend` annotation's Service, resolved, when it has
    /// endpoints: it answers the custom errors and the requests of its
    /// routes whose Service has none.
    pub error_backend: Option<Backend>,
    /// Whether its `defaultBackend` became the fallback (for an Ingress
    /// without rules).
    pub fallback_outcome: Outcome,
    /// Its `spec.tls` entries.
    pub tls: Vec<TlsBinding>,
    /// The problems of its `spec.tls` entries.
    pub tls_problems: Vec<Problem>,
    /// The Services its backends name (a change to one of them, or to
    /// their EndpointSlices, calls for a new contribution).
    pub services: Vec<ObjectKey>,
    /// The Secrets its TLS entries name.
    pub secrets: Vec<ObjectKey>,
    /// Its `xdp-ingress.io/xdp-drop-source-range`: dropped in XDP on every
    /// listener.
    pub xdp_drop: Vec<IpRange>,
}

impl Contribution {
    /// Reads one of our Ingresses, resolving its backends with `resolver`.
    pub fn of(
        key: &ObjectKey,
        ingress: &Ingress,
        objects: &ClusterObjects,
        resolver: &mut BackendResolver<'_>,
    ) -> Self {
        let object = ObjectRef::new(ObjectKind::Ingress, key.clone());
        let mut contribution = Self {
            object,
            ssl_redirect: None,
            force_ssl_redirect: None,
            refusal: None,
            policy: None,
            canary: None,
            steps: Vec::new(),
            hosts: Vec::new(),
            has_rules: false,
            default_backend: None,
            error_backend: None,
            fallback_outcome: Outcome::Won,
            tls: Vec::new(),
            tls_problems: Vec::new(),
            services: Vec::new(),
            secrets: Vec::new(),
            xdp_drop: Vec::new(),
        };
        let Some(spec) = &ingress.spec else {
            return contribution;
        };
        let mut annotation_problems = Vec::new();
        contribution.ssl_redirect =
            bool_annotation(ingress, key, "ssl-redirect", &mut annotation_problems);
        contribution.force_ssl_redirect =
            bool_annotation(ingress, key, "force-ssl-redirect", &mut annotation_problems);
        let verdict = annotations::read(
            &contribution.object,
            ingress.metadata.annotations.as_ref(),
            objects,
        );
        contribution.refusal = verdict.refusal;
        contribution.xdp_drop = verdict.xdp_drop;
        contribution.canary = verdict.canary;
        contribution.policy = (!verdict.policy.is_default()).then(|| Arc::new(verdict.policy));
        contribution.steps.extend(
            annotation_problems
                .into_iter()
                .chain(verdict.problems)
                .map(Step::Problem),
        );
        let rules = spec.rules.as_deref().unwrap_or_default();
        contribution.has_rules = !rules.is_empty();
        for rule in rules {
            let host = match HostPattern::parse(rule.host.as_deref()) {
                Ok(host) => host,
                Err(why) => {
                    contribution.problem(ProblemReason::InvalidHost, why);
                    continue;
                }
            };
            let slot = match contribution.hosts.iter().position(|s| s.host == host) {
                Some(slot) => slot,
                None => {
                    contribution.hosts.push(HostSlot {
                        host,
                        paths: Vec::new(),
                        default_outcome: Outcome::Won,
                    });
                    contribution.hosts.len() - 1
                }
            };
            let paths = rule.http.as_ref().map(|http| http.paths.as_slice());
            for path in paths.unwrap_or_default() {
                contribution.add_path(slot, path, resolver, objects);
            }
        }
        if let Some(name) = contribution
            .policy
            .as_ref()
            .and_then(|p| p.default_backend.clone())
        {
            let service = ObjectKey::new(&key.namespace, name);
            contribution.services.push(service.clone());
            let resolution = resolver.resolve_service(&service, None);
            // As ingress-nginx: used only with an endpoint; else the
            // configured default backend stays.
            contribution.error_backend = match (resolution.backend, resolution.problem) {
                (backend, _) if !backend.endpoints().is_empty() => Some(backend),
                (_, problem) => {
                    let (reason, why) = problem.unwrap_or((
                        ProblemReason::NoEndpoints,
                        format!("Service {service} has no ready endpoint"),
                    ));
                    contribution.problem(
                        reason,
                        format!("default-backend: {why}: not used until it has endpoints"),
                    );
                    None
                }
            };
        }
        if let Some(default_backend) = &spec.default_backend {
            contribution.note_service(&key.namespace, default_backend);
            let resolution = resolver.resolve_ingress_backend(&key.namespace, default_backend);
            contribution.default_backend = Some(contribution.refused_or(resolution, objects));
        }
        let (tls, tls_problems) = ingress_tls(objects, key, ingress);
        contribution.secrets = tls.iter().filter_map(|b| b.secret.clone()).collect();
        // The Secrets annotations name: a change to one reads the Ingress again.
        contribution.secrets.extend(verdict.secrets);
        contribution.tls = tls;
        contribution.tls_problems = tls_problems;
        contribution.services.sort();
        contribution.services.dedup();
        contribution
    }

    fn problem(&mut self, reason: ProblemReason, message: String) {
        let problem = Problem::new(self.object.clone(), reason, message);
        self.steps.push(Step::Problem(problem));
    }

    /// `resolution`, or a 503 when the Ingress is refused. The refusal is
    /// reported once, by its annotations' problems, not per path. With
    /// `service-upstream`, a Service backend goes to the Service's cluster
    /// IP and port instead of its endpoints (a headless Service keeps its
    /// endpoints, and says so).
    fn refused_or(&self, mut resolution: Resolution, objects: &ClusterObjects) -> Resolution {
        if self.policy.as_ref().is_some_and(|p| p.service_upstream)
            && let Backend::Service(service) = &mut resolution.backend
        {
            let cluster_ip = objects.services.get(&service.id.service).and_then(|s| {
                s.spec
                    .as_ref()?
                    .cluster_ip
                    .as_deref()?
                    .parse::<IpAddr>()
                    .ok()
            });
            match cluster_ip {
                Some(ip) => {
                    service.endpoints = EndpointSet::new([SocketAddr::new(ip, service.id.port)]);
                    resolution.problem = None;
                }
                None => {
                    resolution.problem.get_or_insert((
                        ProblemReason::InvalidAnnotation,
                        format!(
                            "service-upstream: Service {} has no cluster IP; its endpoints are used",
                            service.id.service
                        ),
                    ));
                }
            }
        }
        let Some(refusal) = &self.refusal else {
            return resolution;
        };
        let target = match &resolution.backend {
            Backend::Service(service) => service.id.to_string(),
            Backend::Unavailable(unavailable) => unavailable.target.clone(),
            Backend::NotFound => String::new(),
        };
        Resolution {
            backend: Backend::Unavailable(UnavailableBackend {
                target,
                reason: refusal.reason,
                message: refusal.message.clone(),
            }),
            problem: None,
        }
    }

    fn note_service(
        &mut self,
        namespace: &str,
        backend: &k8s_openapi::api::networking::v1::IngressBackend,
    ) {
        if let Some(service) = &backend.service {
            self.services
                .push(ObjectKey::new(namespace, service.name.clone()));
        }
    }

    fn add_path(
        &mut self,
        slot: usize,
        path: &HTTPIngressPath,
        resolver: &mut BackendResolver<'_>,
        objects: &ClusterObjects,
    ) {
        let host = &self.hosts[slot].host;
        let regex = self.policy.as_ref().is_some_and(|p| p.regex_paths());
        let rule = match PathRule::parse_as(path.path.as_deref(), &path.path_type, regex) {
            Ok(rule) => rule,
            Err(why) => {
                let message = format!("host {host}: {why}");
                self.problem(ProblemReason::InvalidPath, message);
                return;
            }
        };
        let namespace = self.object.key.namespace.clone();
        self.note_service(&namespace, &path.backend);
        let resolution = resolver.resolve_ingress_backend(&namespace, &path.backend);
        let backend = self.refused_or(resolution, objects);
        self.hosts[slot].paths.push(self.steps.len());
        self.steps.push(Step::Path(PathStep {
            host: slot,
            rule,
            backend,
            outcome: Outcome::Won,
        }));
    }

    /// Whether plain HTTP for a host of this Ingress redirects to HTTPS,
    /// given whether some Ingress serves the host over TLS.
    pub fn https_redirect(&self, host_has_tls: bool, options: &ModelOptions) -> bool {
        self.force_ssl_redirect
            .unwrap_or(options.force_ssl_redirect)
            || (self.ssl_redirect.unwrap_or(options.ssl_redirect) && host_has_tls)
    }

    /// The Ingress's problems in the order they are found reading it (each
    /// once), given the outcomes of the last merges: for a path or default
    /// backend that won, the problem of its backend; for one that lost,
    /// the conflict.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut seen: HashSet<Problem> = HashSet::new();
        let mut push = |problem: Problem| {
            if seen.insert(problem.clone()) {
                problems.push(problem);
            }
        };
        for step in &self.steps {
            match step {
                Step::Problem(problem) => push(problem.clone()),
                Step::Path(path) => match &path.outcome {
                    Outcome::Lost(conflict) => push(conflict.clone()),
                    Outcome::Won => {
                        if let Some((reason, message)) = &path.backend.problem {
                            let host = &self.hosts[path.host].host;
                            let context = path_context(host, &path.rule);
                            push(Problem::new(
                                self.object.clone(),
                                *reason,
                                format!("{context}: {message}"),
                            ));
                        }
                    }
                },
            }
        }
        let Some(default_backend) = &self.default_backend else {
            return problems;
        };
        let backend_problem = || {
            default_backend.problem.as_ref().map(|(reason, message)| {
                Problem::new(
                    self.object.clone(),
                    *reason,
                    format!("defaultBackend: {message}"),
                )
            })
        };
        if !self.has_rules {
            match &self.fallback_outcome {
                Outcome::Lost(conflict) => push(conflict.clone()),
                Outcome::Won => backend_problem().into_iter().for_each(&mut push),
            }
            return problems;
        }
        for slot in &self.hosts {
            match &slot.default_outcome {
                Outcome::Lost(conflict) => push(conflict.clone()),
                Outcome::Won => backend_problem().into_iter().for_each(&mut push),
            }
        }
        problems
    }
}

/// How a problem names a path rule.
pub(crate) fn path_context(host: &HostPattern, rule: &PathRule) -> String {
    format!("host {host} path {} ({})", rule.path, rule.path_type)
}
