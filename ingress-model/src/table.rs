//! The route table: built once from a snapshot, then queried by (host,
//! path) in time independent of the number of Ingresses.
//!
//! Layout: a hash map of exact hosts, a hash map of wildcard suffixes and
//! one entry for rules without a host. Each host entry holds a hash map of
//! Exact paths and one of prefix keys; a lookup tries the Exact path, then
//! the request path's `/`-prefixes from longest to shortest, so it costs
//! O(path segments) hash lookups.
//!
//! Host precedence is exact host, then wildcard, then no host; the most
//! specific host entry that exists answers alone. A request whose path
//! matches nothing there does not fall through to a less specific host: it
//! gets that host's default backend (the `defaultBackend` of an Ingress with
//! rules for it), else the table's fallback.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::Arc,
};

use crate::{
    FastHashMap,
    access::IngressSourceRanges,
    backend::{Backend, BackendId, ServiceBackend},
    builder::RouteTableBuilder,
    canary::CanaryRoute,
    host::{HostPattern, request_host, wildcard_suffix},
    object::ObjectKey,
    options::ModelOptions,
    path::{PathRule, request_path},
    policy::RoutePolicy,
    problem::Problem,
    rewrite::PathRegex,
    snapshot::ClusterObjects,
    tls::TlsPlan,
};

/// One routed path of an Ingress rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRoute {
    /// The Ingress the rule belongs to.
    pub ingress: ObjectKey,
    /// The rule's host.
    pub host: HostPattern,
    /// The path, its type and lookup key.
    pub path: PathRule,
    /// Where matching requests go.
    pub backend: Backend,
    /// Plain-HTTP requests get a 308 to HTTPS: the host has TLS and the
    /// Ingress does not set `ssl-redirect: "false"`, or the Ingress sets
    /// `force-ssl-redirect: "true"`.
    pub https_redirect: bool,
    /// What the Ingress's annotations ask of it (`None`: nothing).
    pub policy: Option<Arc<RoutePolicy>>,
    /// On a host with regex paths: the path as a regex, which matches
    /// (Prefix paths) and feeds `rewrite-target` its captures.
    pub regex: Option<Arc<PathRegex>>,
    /// The canary Ingress for the same host, path and type, if any: the
    /// requests its rule selects go to its backend instead.
    pub canary: Option<Arc<CanaryRoute>>,
    /// Its Ingress's `default-backend`: answers the custom errors and the
    /// requests while `backend` has no endpoint.
    pub error_backend: Option<Backend>,
}

/// Where a default backend comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultOrigin {
    /// The `defaultBackend` of this Ingress.
    Ingress(ObjectKey),
    /// The configured `--default-backend-service`.
    ConfiguredService,
    /// Nothing configured: the built-in 404.
    BuiltIn,
}

/// Which requests a default route serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultScope {
    /// Requests for this host that match none of its paths.
    Host(HostPattern),
    /// Requests nothing else matches.
    Fallback,
}

/// A default backend and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    /// Which requests it serves.
    pub scope: DefaultScope,
    /// Who set it.
    pub origin: DefaultOrigin,
    /// Where the requests go.
    pub backend: Backend,
    /// Plain-HTTP requests get a 308 to HTTPS (as for [`PathRoute`]).
    pub https_redirect: bool,
    /// What the Ingress's annotations ask of it (as for [`PathRoute`]).
    pub policy: Option<Arc<RoutePolicy>>,
    /// Its Ingress's `default-backend` (as for [`PathRoute`]).
    pub error_backend: Option<Backend>,
}

/// The answer to a lookup, borrowed from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMatch<'a> {
    /// A path of a rule matched.
    Path(&'a PathRoute),
    /// No path matched: a default backend answers (the host's, else the
    /// fallback).
    Default(&'a DefaultRoute),
}

impl<'a> RouteMatch<'a> {
    /// Whether a plain-HTTP request must be redirected to HTTPS instead.
    pub fn https_redirect(&self) -> bool {
        match self {
            RouteMatch::Path(route) => route.https_redirect,
            RouteMatch::Default(default) => default.https_redirect,
        }
    }

    /// The request target a `rewrite-target` makes of `target` (the
    /// request's path and query), if the route's Ingress sets one.
    pub fn rewrite(&self, target: &str) -> Option<String> {
        let RouteMatch::Path(route) = self else {
            return None;
        };
        let rewrite = route.policy.as_ref()?.rewrite.as_ref()?;
        let regex = route.regex.as_ref()?;
        let query = target.split_once('?').map(|(_, query)| query);
        rewrite.apply(regex, &request_path(target), query)
    }

    /// What the route's Ingress asks of it, if anything.
    pub fn policy(&self) -> Option<&'a Arc<RoutePolicy>> {
        match self {
            RouteMatch::Path(route) => route.policy.as_ref(),
            RouteMatch::Default(default) => default.policy.as_ref(),
        }
    }

    /// Where the request goes.
    pub fn backend(&self) -> &'a Backend {
        match self {
            RouteMatch::Path(route) => &route.backend,
            RouteMatch::Default(route) => &route.backend,
        }
    }

    /// The canary of the route, if a canary Ingress joined it.
    pub fn canary(&self) -> Option<&'a CanaryRoute> {
        match self {
            RouteMatch::Path(route) => route.canary.as_deref(),
            RouteMatch::Default(_) => None,
        }
    }

    /// The Ingress's `default-backend` of the route, if any.
    pub fn error_backend(&self) -> Option<&'a Backend> {
        match self {
            RouteMatch::Path(route) => route.error_backend.as_ref(),
            RouteMatch::Default(route) => route.error_backend.as_ref(),
        }
    }

    /// The route's backend, its canary's and its errors backend, if any.
    pub fn backends(self) -> impl Iterator<Item = &'a Backend> {
        std::iter::once(self.backend())
            .chain(self.canary().map(|canary| &canary.backend))
            .chain(self.error_backend())
    }

    /// The Ingress whose rule or `defaultBackend` matched, if any.
    pub fn ingress(&self) -> Option<&'a ObjectKey> {
        match self {
            RouteMatch::Path(route) => Some(&route.ingress),
            RouteMatch::Default(DefaultRoute {
                origin: DefaultOrigin::Ingress(ingress),
                ..
            }) => Some(ingress),
            RouteMatch::Default(_) => None,
        }
    }

    /// The host pattern of the rule that matched (`None` for the
    /// fallback).
    pub fn host(&self) -> Option<&'a HostPattern> {
        match self {
            RouteMatch::Path(route) => Some(&route.host),
            RouteMatch::Default(DefaultRoute {
                scope: DefaultScope::Host(host),
                ..
            }) => Some(host),
            RouteMatch::Default(_) => None,
        }
    }

    /// The route's address inside its table: equal for the same route of
    /// the same table, for keeping per-route state beside a table.
    pub fn identity(&self) -> usize {
        match self {
            RouteMatch::Path(route) => std::ptr::from_ref(*route) as usize,
            RouteMatch::Default(route) => std::ptr::from_ref(*route) as usize,
        }
    }

    /// The matched path and type, when a path matched.
    pub fn path(&self) -> Option<&'a PathRule> {
        match self {
            RouteMatch::Path(route) => Some(&route.path),
            RouteMatch::Default(_) => None,
        }
    }
}

/// The routes of one host pattern.
#[derive(Debug, Clone)]
pub(crate) struct HostRoutes {
    /// Exact paths by path.
    pub exact: FastHashMap<String, PathRoute>,
    /// Prefix paths by key (the path without a trailing `/`).
    pub prefix: FastHashMap<String, PathRoute>,
    /// The host's default backend, from an Ingress with rules for it.
    pub default: Option<DefaultRoute>,
    /// On a host with regex paths (an Ingress of it sets `use-regex` or
    /// `rewrite-target`): the keys of `prefix` in the order their regexes
    /// are tried, longest path first, as ingress-nginx orders locations.
    pub regex_order: Option<Vec<String>>,
}

impl HostRoutes {
    /// No routes.
    pub fn new() -> Self {
        Self {
            exact: FastHashMap::default(),
            prefix: FastHashMap::default(),
            default: None,
            regex_order: None,
        }
    }

    /// The most specific path route matching `path`. An Exact match is the
    /// whole path, which no prefix key can be longer than, and wins a tie.
    fn match_path(&self, path: &str) -> Option<&PathRoute> {
        if let Some(route) = self.exact.get(path) {
            return Some(route);
        }
        if let Some(order) = &self.regex_order {
            return order.iter().find_map(|key| {
                let route = self.prefix.get(key)?;
                route
                    .regex
                    .as_ref()
                    .is_some_and(|regex| regex.is_match(path))
                    .then_some(route)
            });
        }
        if self.prefix.is_empty() {
            return None;
        }
        if let Some(route) = self.prefix.get(path) {
            return Some(route);
        }
        path.rmatch_indices('/')
            .find_map(|(end, _)| self.prefix.get(&path[..end]))
    }
}

/// The resolved routes of our Ingresses, immutable once built. The daemon
/// builds a new table on every change and swaps it in whole; the routes of
/// each host are shared (by `Arc`) with the tables built before and after
/// it as long as they do not change (see [`RouteTableBuilder`]).
#[derive(Debug, Clone)]
pub struct RouteTable {
    pub(crate) exact_hosts: FastHashMap<Arc<str>, Arc<HostRoutes>>,
    /// `server-alias` names and `from-to-www-redirect` counterparts: tried
    /// after the exact hosts, before the wildcards (nginx's exact
    /// `server_name`s).
    pub(crate) alias_hosts: FastHashMap<Arc<str>, Arc<HostRoutes>>,
    pub(crate) wildcard_hosts: FastHashMap<Arc<str>, Arc<HostRoutes>>,
    pub(crate) any_host: Option<Arc<HostRoutes>>,
    pub(crate) fallback: DefaultRoute,
    pub(crate) tls: Arc<TlsPlan>,
    /// Our Ingresses that route nothing, having lost every conflict.
    pub(crate) unserved: Arc<BTreeSet<ObjectKey>>,
    /// What our Ingresses say about source ranges beyond their routes.
    pub(crate) source_ranges: Arc<IngressSourceRanges>,
    /// Paths routed, all hosts together.
    pub(crate) paths: usize,
    /// Tells this table apart from every other one in the process (0 for
    /// an empty table).
    pub(crate) id: u64,
    /// The table the same builder built just before this one, and the
    /// hosts whose routes differ from it.
    pub(crate) parent: Option<(u64, Arc<[HostPattern]>)>,
}

impl Default for RouteTable {
    /// A table without routes: everything gets the built-in 404.
    fn default() -> Self {
        Self {
            exact_hosts: FastHashMap::default(),
            wildcard_hosts: FastHashMap::default(),
            any_host: None,
            alias_hosts: FastHashMap::default(),
            fallback: DefaultRoute {
                scope: DefaultScope::Fallback,
                origin: DefaultOrigin::BuiltIn,
                backend: Backend::NotFound,
                https_redirect: false,
                policy: None,
                error_backend: None,
            },
            tls: Arc::default(),
            unserved: Arc::default(),
            source_ranges: Arc::default(),
            paths: 0,
            id: 0,
            parent: None,
        }
    }
}

impl RouteTable {
    /// Builds the table from a snapshot: picks our Ingresses (see
    /// [`crate::class`]), resolves every backend and returns the problems
    /// found. Each problem affects only its rule. Ingresses are taken live
    /// ones first (not being deleted, nor their namespace), then oldest
    /// first (`creationTimestamp`, a missing one counting as newest), then by
    /// namespace/name, so of two rules for the same host, path and type the
    /// first one taken wins.
    ///
    /// To build again after a change, keep a [`RouteTableBuilder`]: it
    /// gives the same table, redoing only what changed.
    pub fn build(objects: &ClusterObjects, options: &ModelOptions) -> (RouteTable, Vec<Problem>) {
        RouteTableBuilder::new(options.clone()).build(objects)
    }

    /// The TLS view of our Ingresses: which hosts want which Secret.
    pub fn tls(&self) -> &TlsPlan {
        &self.tls
    }

    /// Our Ingresses that route nothing: each had paths or default backends
    /// and lost every one to other Ingresses (a
    /// [`ProblemReason::NotServed`](crate::ProblemReason::NotServed)
    /// problem says so). Their status should claim no address.
    pub fn unserved_ingresses(&self) -> &Arc<BTreeSet<ObjectKey>> {
        &self.unserved
    }

    /// The listener-wide `xdp-drop-source-range` ranges of our Ingresses,
    /// and which of them set their own allow or deny list: what decides
    /// which source ranges the kernel drops
    /// ([`ControllerConfig::kernel_source_ranges`](crate::controller_config::ControllerConfig::kernel_source_ranges)).
    pub fn ingress_source_ranges(&self) -> &Arc<IngressSourceRanges> {
        &self.source_ranges
    }

    /// Routes a request: `host` is the `Host` header or `:authority` (a port
    /// and a trailing dot are ignored, case does not matter), `path` the
    /// request target (the query string is ignored; matching is
    /// case-sensitive and on the raw, undecoded path).
    pub fn route(&self, host: &str, path: &str) -> RouteMatch<'_> {
        let host = request_host(host);
        let path = request_path(path);
        let path: &str = &path;
        let entry = self
            .exact_hosts
            .get(host.as_ref())
            .or_else(|| self.alias_hosts.get(host.as_ref()))
            .or_else(|| wildcard_suffix(&host).and_then(|suffix| self.wildcard_hosts.get(suffix)))
            .or(self.any_host.as_ref());
        let Some(entry) = entry else {
            return RouteMatch::Default(&self.fallback);
        };
        match entry.match_path(path) {
            Some(route) => RouteMatch::Path(route),
            None => RouteMatch::Default(entry.default.as_ref().unwrap_or(&self.fallback)),
        }
    }

    /// The default route for requests nothing else matches.
    pub fn fallback(&self) -> &DefaultRoute {
        &self.fallback
    }

    /// How many paths are routed, all hosts together.
    pub fn path_count(&self) -> usize {
        self.paths
    }

    /// The hosts whose routes differ between `earlier` and this table, when
    /// this table was built right after `earlier` by the same
    /// [`RouteTableBuilder`]; `None` otherwise. The routes of every other
    /// host are the very same ones (shared, at the same addresses) in both
    /// tables; the fallback may differ. For keeping per-route state beside
    /// a table at the cost of what changed.
    pub fn changed_hosts_since(&self, earlier: &RouteTable) -> Option<&[HostPattern]> {
        match &self.parent {
            Some((parent, hosts)) if *parent == earlier.id && earlier.id != 0 => Some(hosts),
            _ => None,
        }
    }

    /// Every route of one host pattern (its paths and its default, if
    /// any), unordered; none when the table has no rule for it.
    pub fn host_route_matches(&self, host: &HostPattern) -> impl Iterator<Item = RouteMatch<'_>> {
        let routes = match host {
            HostPattern::Exact(name) => self.exact_hosts.get(name.as_str()),
            HostPattern::Wildcard(suffix) => self.wildcard_hosts.get(suffix.as_str()),
            HostPattern::Any => self.any_host.as_ref(),
        };
        routes.into_iter().flat_map(|routes| {
            routes
                .exact
                .values()
                .chain(routes.prefix.values())
                .map(RouteMatch::Path)
                .chain(routes.default.iter().map(RouteMatch::Default))
        })
    }

    /// Every route a lookup can return (each path, each host's default,
    /// the fallback), unordered: for state the proxy keeps per route.
    pub fn routes(&self) -> impl Iterator<Item = RouteMatch<'_>> {
        self.host_routes()
            .flat_map(|routes| {
                routes
                    .exact
                    .values()
                    .chain(routes.prefix.values())
                    .map(RouteMatch::Path)
                    .chain(routes.default.iter().map(RouteMatch::Default))
            })
            .chain(std::iter::once(RouteMatch::Default(&self.fallback)))
    }

    /// Every distinct resolved Service backend, by identity: what the proxy
    /// keeps per-backend state for.
    pub fn backends(&self) -> BTreeMap<&BackendId, &ServiceBackend> {
        self.host_routes()
            .flat_map(|routes| {
                let paths = routes.exact.values().chain(routes.prefix.values());
                paths
                    .flat_map(|route| RouteMatch::Path(route).backends())
                    .chain(
                        routes
                            .default
                            .iter()
                            .flat_map(|d| RouteMatch::Default(d).backends()),
                    )
            })
            .chain(std::iter::once(&self.fallback.backend))
            .filter_map(|backend| match backend {
                Backend::Service(service) => Some((&service.id, service)),
                Backend::Unavailable(_) | Backend::NotFound => None,
            })
            .collect()
    }

    /// The resolved table as rows, sorted: by host (exact hosts, then
    /// wildcards, then no host), within a host by path and type with the
    /// host's default last, and the fallback last of all.
    pub fn rows(&self) -> Vec<RouteRow> {
        let mut rows = Vec::new();
        let mut hosts: Vec<(HostPattern, &HostRoutes)> = self.host_entries().collect();
        hosts.sort_by(|a, b| a.0.cmp(&b.0));
        for (host, routes) in hosts {
            let mut paths: Vec<&PathRoute> = routes
                .exact
                .values()
                .chain(routes.prefix.values())
                .collect();
            paths.sort_by(|a, b| {
                (&a.path.path, a.path.path_type).cmp(&(&b.path.path, b.path.path_type))
            });
            for route in paths {
                rows.push(RouteRow {
                    host: Some(host.clone()),
                    path: Some(route.path.clone()),
                    ingress: Some(route.ingress.clone()),
                    backend: route.backend.clone(),
                    canary: None,
                });
                if let Some(canary) = &route.canary {
                    rows.push(RouteRow {
                        host: Some(host.clone()),
                        path: Some(route.path.clone()),
                        ingress: Some(canary.ingress.clone()),
                        backend: canary.backend.clone(),
                        canary: Some(canary.rule.describe()),
                    });
                }
            }
            if let Some(default) = &routes.default {
                rows.push(RouteRow::of_default(Some(host.clone()), default));
            }
        }
        rows.push(RouteRow::of_default(None, &self.fallback));
        rows
    }

    /// The routes of every host, without naming the hosts (which would
    /// allocate a pattern per host: 10,000 at each configuration change).
    fn host_routes(&self) -> impl Iterator<Item = &HostRoutes> {
        self.exact_hosts
            .values()
            .chain(self.wildcard_hosts.values())
            .chain(self.any_host.iter())
            .map(|routes| &**routes)
    }

    fn host_entries(&self) -> impl Iterator<Item = (HostPattern, &HostRoutes)> {
        let exact = self
            .exact_hosts
            .iter()
            .map(|(host, routes)| (HostPattern::Exact(host.to_string()), &**routes));
        let wildcard = self
            .wildcard_hosts
            .iter()
            .map(|(suffix, routes)| (HostPattern::Wildcard(suffix.to_string()), &**routes));
        let any = self
            .any_host
            .iter()
            .map(|routes| (HostPattern::Any, &**routes));
        exact.chain(wildcard).chain(any)
    }
}

/// One row of the resolved table, for the `routes` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRow {
    /// The host, `None` for the fallback row.
    pub host: Option<HostPattern>,
    /// The path and type, `None` for a default-backend row.
    pub path: Option<PathRule>,
    /// The Ingress the row comes from, if any.
    pub ingress: Option<ObjectKey>,
    /// Where requests go (its endpoints included).
    pub backend: Backend,
    /// For a canary's row: which of the route's requests it takes.
    pub canary: Option<String>,
}

impl RouteRow {
    fn of_default(host: Option<HostPattern>, default: &DefaultRoute) -> Self {
        let ingress = match &default.origin {
            DefaultOrigin::Ingress(ingress) => Some(ingress.clone()),
            DefaultOrigin::ConfiguredService | DefaultOrigin::BuiltIn => None,
        };
        Self {
            host,
            path: None,
            ingress,
            backend: default.backend.clone(),
            canary: None,
        }
    }

    /// The row's cells: host, path, type, Ingress, backend, endpoints.
    pub fn cells(&self) -> [String; 6] {
        let host = self
            .host
            .as_ref()
            .map_or_else(|| "(fallback)".to_owned(), ToString::to_string);
        let (path, path_type) = match &self.path {
            Some(rule) => (rule.path.clone(), rule.path_type.to_string()),
            None if self.host.is_some() => ("(default)".to_owned(), "-".to_owned()),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let ingress = self
            .ingress
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string);
        let endpoints = match &self.backend {
            Backend::Service(service) => service.endpoints.to_string(),
            Backend::Unavailable(_) => "(503)".to_owned(),
            Backend::NotFound => "(404)".to_owned(),
        };
        let backend = match &self.canary {
            Some(rule) => format!("{} (canary: {rule})", self.backend),
            None => self.backend.to_string(),
        };
        [host, path, path_type, ingress, backend, endpoints]
    }
}

/// Rows laid out as an aligned text table with a header, for a terminal.
#[derive(Debug, Clone, Copy)]
pub struct RouteRowsTable<'a>(pub &'a [RouteRow]);

impl fmt::Display for RouteRowsTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEADER: [&str; 6] = ["HOST", "PATH", "TYPE", "INGRESS", "BACKEND", "ENDPOINTS"];
        let cells: Vec<[String; 6]> = self.0.iter().map(RouteRow::cells).collect();
        let mut widths = HEADER.map(str::len);
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let header = HEADER.map(str::to_owned);
        for row in std::iter::once(&header).chain(&cells) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  "));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// How a conflict names the default backend that wins.
pub(crate) fn describe_origin(origin: &DefaultOrigin) -> String {
    match origin {
        DefaultOrigin::Ingress(ingress) => format!("Ingress {ingress}, which wins"),
        DefaultOrigin::ConfiguredService => "the configured default backend service".to_owned(),
        DefaultOrigin::BuiltIn => "the built-in default backend".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::{
        class::INGRESS_CLASS_ANNOTATION,
        fixtures::{
            IngressBuilder, Target, backend, ingress, ingress_class, path, prefix, ready_service,
            resource_backend, service, slice, world,
        },
        object::KubeObject,
        options::DefaultBackendService,
        path::PathType,
        problem::ProblemReason,
    };

    /// Services `a` to `f` in namespace `ns`, each with one ready endpoint
    /// 10.0.0.N:8080 behind port 80.
    fn services() -> Vec<KubeObject> {
        ["a", "b", "c", "d", "e", "f"]
            .iter()
            .enumerate()
            .flat_map(|(i, name)| {
                ready_service("ns", name, 80, 8080, &[&format!("10.0.0.{}", i + 1)])
            })
            .collect()
    }

    fn build(ingresses: impl IntoIterator<Item = IngressBuilder>) -> (RouteTable, Vec<Problem>) {
        build_with(ingresses, &ModelOptions::default())
    }

    fn build_with(
        ingresses: impl IntoIterator<Item = IngressBuilder>,
        options: &ModelOptions,
    ) -> (RouteTable, Vec<Problem>) {
        let mut objects = services();
        objects.extend(ingresses.into_iter().map(IngressBuilder::object));
        RouteTable::build(&world(objects), options)
    }

    fn short(backend: &Backend) -> String {
        match backend {
            Backend::Service(service) => service.id.service.name.clone(),
            Backend::Unavailable(unavailable) => format!("503:{}", unavailable.reason),
            Backend::NotFound => "404".to_owned(),
        }
    }

    /// A lookup's answer, compactly: `service path type` for a path match,
    /// `default service` for a default backend.
    fn answer(table: &RouteTable, host: &str, request: &str) -> String {
        match table.route(host, request) {
            RouteMatch::Path(route) => format!(
                "{} {} {}",
                short(&route.backend),
                route.path.path,
                route.path.path_type
            ),
            RouteMatch::Default(default) => format!("default {}", short(&default.backend)),
        }
    }

    fn reasons(problems: &[Problem]) -> Vec<(String, ProblemReason)> {
        problems
            .iter()
            .map(|p| (p.object.key.to_string(), p.reason))
            .collect()
    }

    #[test]
    fn unenforced_access_control_and_snippets_fail_closed_alone() {
        let (table, problems) = build([
            ingress("ns", "basic")
                .ours()
                .created(1)
                .annotation("nginx.ingress.kubernetes.io/auth-proxy-set-headers", "h")
                .annotation(
                    "nginx.ingress.kubernetes.io/enable-owasp-core-rules",
                    "true",
                )
                .rule(
                    Some("basic.com"),
                    vec![prefix("/", "a"), prefix("/api", "b")],
                ),
            ingress("ns", "allow")
                .ours()
                .annotation("nginx.ingress.kubernetes.io/whitelist-source-range", "x")
                .default_backend(backend("c", 80)),
            ingress("ns", "snippet")
                .ours()
                .annotation("xdp-ingress.io/configuration-snippet", "return 200;")
                .rule(Some("snippet.com"), vec![prefix("/", "d")]),
            ingress("ns", "open")
                .ours()
                .annotation("nginx.ingress.kubernetes.io/ssl-passthrough", "true")
                .rule(Some("open.com"), vec![prefix("/", "e")]),
            // Newer than the refused Ingress: it does not route around it.
            ingress("ns", "later")
                .ours()
                .created(10)
                .rule(Some("basic.com"), vec![prefix("/", "f")]),
        ]);
        assert_eq!(
            answer(&table, "basic.com", "/"),
            "503:UnsupportedAnnotation / Prefix"
        );
        assert_eq!(
            answer(&table, "basic.com", "/api/x"),
            "503:UnsupportedAnnotation /api Prefix"
        );
        assert_eq!(
            answer(&table, "other.com", "/"),
            "default 503:InvalidAnnotation"
        );
        assert_eq!(
            answer(&table, "snippet.com", "/"),
            "503:SnippetRefused / Prefix"
        );
        assert_eq!(answer(&table, "open.com", "/"), "e / Prefix");
        assert_eq!(
            reasons(&problems),
            [
                ("ns/basic".into(), ProblemReason::UnsupportedAnnotation),
                ("ns/basic".into(), ProblemReason::UnsupportedAnnotation),
                ("ns/later".into(), ProblemReason::PathConflict),
                ("ns/later".into(), ProblemReason::NotServed),
                ("ns/allow".into(), ProblemReason::InvalidAnnotation),
                ("ns/open".into(), ProblemReason::UnsupportedAnnotation),
                ("ns/snippet".into(), ProblemReason::SnippetRefused),
            ]
        );
    }

    #[test]
    fn source_ranges_ride_on_the_ingress_routes() {
        let (table, problems) = build([
            ingress("ns", "guarded")
                .ours()
                .annotation(
                    "nginx.ingress.kubernetes.io/whitelist-source-range",
                    "198.18.0.0/24",
                )
                .annotation("xdp-ingress.io/denylist-source-range", "198.18.0.66")
                .rule(Some("guarded.com"), vec![prefix("/", "a")])
                .default_backend(backend("b", 80)),
            ingress("ns", "open")
                .ours()
                .rule(Some("open.com"), vec![prefix("/", "c")]),
        ]);
        assert_eq!(problems, []);
        let client = |ip: &str| ip.parse().unwrap();
        let found = table.route("guarded.com", "/x");
        assert_eq!(answer(&table, "guarded.com", "/x"), "a / Prefix");
        let policy = found.policy().expect("the path has a policy");
        let access = policy.access.as_ref().expect("the path is restricted");
        assert!(access.admits(client("198.18.0.2")));
        assert!(!access.admits(client("198.18.0.66")));
        assert!(!access.admits(client("198.18.1.2")));
        // Its default backend for the host and as the fallback too.
        assert!(table.route("guarded.com:443", "/").policy().is_some());
        assert_eq!(answer(&table, "elsewhere.com", "/"), "default 404");
        assert!(table.route("open.com", "/").policy().is_none());
    }

    #[test]
    fn listener_wide_drops_and_own_source_lists_are_gathered() {
        let (table, problems) = build([
            ingress("ns", "dropper")
                .ours()
                .annotation(
                    "xdp-ingress.io/xdp-drop-source-range",
                    "198.18.9.0/24, 2001:db8:9::/48",
                )
                .rule(Some("a.com"), vec![prefix("/", "a")]),
            ingress("ns", "also")
                .ours()
                .annotation("xdp-ingress.io/xdp-drop-source-range", "198.18.9.0/24")
                .annotation(
                    "nginx.ingress.kubernetes.io/denylist-source-range",
                    "198.18.0.66",
                )
                .rule(Some("b.com"), vec![prefix("/", "b")]),
            ingress("ns", "allows")
                .ours()
                .annotation(
                    "nginx.ingress.kubernetes.io/whitelist-source-range",
                    "198.18.0.0/24",
                )
                .rule(Some("c.com"), vec![prefix("/", "c")]),
            ingress("ns", "authed")
                .ours()
                .annotation(
                    "nginx.ingress.kubernetes.io/auth-url",
                    "http://auth.example.com/check",
                )
                .annotation("nginx.ingress.kubernetes.io/satisfy", "any")
                .rule(Some("e.com"), vec![prefix("/", "e")]),
            ingress("ns", "theirs")
                .annotation("xdp-ingress.io/xdp-drop-source-range", "198.18.10.0/24")
                .annotation(
                    "nginx.ingress.kubernetes.io/denylist-source-range",
                    "198.18.0.67",
                )
                .rule(Some("d.com"), vec![prefix("/", "d")]),
        ]);
        assert_eq!(problems, []);
        let ranges = table.ingress_source_ranges();
        let texts: Vec<String> = ranges.xdp_drop.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            ["198.18.9.0/24", "2001:db8:9::/48"],
            "once each, ours only"
        );
        assert_eq!(ranges.own_deny, [ObjectKey::new("ns", "also")]);
        assert_eq!(ranges.own_allow, [ObjectKey::new("ns", "allows")]);
        assert_eq!(ranges.satisfy_any, [ObjectKey::new("ns", "authed")]);
        // The annotation is listener-wide: it adds no route policy.
        assert!(table.route("a.com", "/").policy().is_none());
    }

    #[test]
    fn canary_ingresses_join_the_main_route_of_the_same_path_and_type() {
        let canary = |name: &str| {
            ingress("ns", name)
                .ours()
                .annotation("nginx.ingress.kubernetes.io/canary", "true")
                .annotation("nginx.ingress.kubernetes.io/canary-by-header", "X-Canary")
                .annotation("nginx.ingress.kubernetes.io/canary-weight", "10")
        };
        let (table, problems) = build([
            ingress("ns", "main").ours().created(1).rule(
                Some("app.com"),
                vec![prefix("/", "a"), path("/exact", "Exact", backend("a", 80))],
            ),
            canary("canary")
                .created(2)
                // Its other annotations are not applied (reported).
                .annotation("nginx.ingress.kubernetes.io/proxy-body-size", "1k")
                .rule(
                    Some("app.com"),
                    vec![
                        prefix("/", "b"),
                        // Another type than the main's: joins nothing.
                        path("/exact", "Prefix", backend("b", 80)),
                        // No main route: serves nothing.
                        prefix("/only-canary", "b"),
                    ],
                ),
            // A second canary for the same route loses.
            canary("late")
                .created(3)
                .rule(Some("app.com"), vec![prefix("/", "c")]),
            // A host no main Ingress has.
            canary("alone")
                .created(4)
                .rule(Some("alone.com"), vec![prefix("/", "d")]),
        ]);
        let mut found = reasons(&problems);
        found.sort();
        assert_eq!(
            found,
            [
                ("ns/alone".into(), ProblemReason::NotServed),
                ("ns/alone".into(), ProblemReason::CanaryWithoutMain),
                ("ns/canary".into(), ProblemReason::CanaryWithoutMain),
                ("ns/canary".into(), ProblemReason::CanaryWithoutMain),
                ("ns/canary".into(), ProblemReason::UnsupportedAnnotation),
                ("ns/late".into(), ProblemReason::PathConflict),
                ("ns/late".into(), ProblemReason::NotServed),
            ],
            "{problems:#?}"
        );
        let root = table.route("app.com", "/x");
        assert_eq!(answer(&table, "app.com", "/x"), "a / Prefix");
        let joined = root.canary().expect("the canary joined the main route");
        assert_eq!(joined.ingress.to_string(), "ns/canary");
        assert_eq!(short(&joined.backend), "b");
        assert_eq!(joined.rule.weight, 10);
        assert!(
            root.policy().is_none(),
            "the canary's annotations are not applied"
        );
        assert_eq!(root.backends().map(short).collect::<Vec<_>>(), ["a", "b"]);
        assert!(table.route("app.com", "/exact").canary().is_none());
        // The canary's own path is no route: the main's prefix answers.
        assert_eq!(answer(&table, "app.com", "/only-canary"), "a / Prefix");
        assert_eq!(answer(&table, "alone.com", "/"), "default 404");
        // Its backend has state like any other; the table lists its row.
        assert!(table.backends().keys().any(|id| id.service.name == "b"));
        let rows = table.rows();
        let row = rows
            .iter()
            .find(|row| row.canary.is_some())
            .expect("a canary row");
        assert_eq!(
            row.cells()[4],
            "ns/b:80 (canary: header x-canary: always|never, weight 10/100)"
        );
    }

    #[test]
    fn annotations_prefix_reads_ingress_nginx_annotations_elsewhere() {
        let options = ModelOptions {
            annotations_prefix: "acme.example.com".to_owned(),
            ..ModelOptions::default()
        };
        let (table, problems) = build_with(
            [ingress("ns", "moved")
                .ours()
                .annotation(
                    "acme.example.com/permanent-redirect",
                    "https://new.example.com/",
                )
                .annotation("nginx.ingress.kubernetes.io/app-root", "/app")
                .rule(Some("moved.com"), vec![prefix("/", "a")])],
            &options,
        );
        assert_eq!(
            reasons(&problems),
            [("ns/moved".into(), ProblemReason::UnsupportedAnnotation)]
        );
        assert!(
            problems[0]
                .message
                .contains("--annotations-prefix is acme.example.com")
        );
        let policy = table
            .route("moved.com", "/")
            .policy()
            .cloned()
            .expect("a policy");
        assert!(policy.redirect.is_some() && policy.app_root.is_none());
    }

    #[test]
    fn server_alias_and_from_to_www_redirect_like_ingress_nginx() {
        let (table, problems) = build([
            ingress("ns", "shop")
                .ours()
                .created(1)
                .annotation(
                    "nginx.ingress.kubernetes.io/server-alias",
                    "Shop.Example.Org, taken.com",
                )
                .annotation("nginx.ingress.kubernetes.io/from-to-www-redirect", "true")
                .rule(
                    Some("shop.com"),
                    vec![prefix("/", "a"), prefix("/api", "b")],
                ),
            // A real host wins over an alias of the same name.
            ingress("ns", "taken")
                .ours()
                .created(2)
                .rule(Some("taken.com"), vec![prefix("/", "c")]),
            ingress("ns", "www")
                .ours()
                .created(3)
                .annotation("nginx.ingress.kubernetes.io/from-to-www-redirect", "true")
                .rule(Some("www.blog.com"), vec![prefix("/", "d")]),
            ingress("ns", "bad")
                .ours()
                .annotation("nginx.ingress.kubernetes.io/server-alias", "*.wild.com")
                .rule(Some("bad.com"), vec![prefix("/", "e")]),
        ]);
        assert_eq!(
            reasons(&problems),
            [("ns/bad".into(), ProblemReason::InvalidAnnotation)]
        );
        assert_eq!(
            answer(&table, "shop.example.org", "/api/x"),
            "b /api Prefix"
        );
        assert_eq!(answer(&table, "taken.com", "/"), "c / Prefix");
        // The www counterparts: a redirect route to the Ingress's host.
        for (asked, target) in [("www.shop.com", "shop.com"), ("blog.com", "www.blog.com")] {
            let found = table.route(asked, "/x");
            let policy = found.policy().expect("the redirect's policy");
            assert_eq!(policy.www_redirect_to.as_deref(), Some(target), "{asked}");
        }
        assert!(table.route("shop.com", "/").policy().is_some());
        assert_eq!(answer(&table, "www.taken.com", "/"), "default 404");
    }

    #[test]
    fn regex_paths_and_rewrite_target_like_ingress_nginx() {
        let (table, problems) = build([
            ingress("ns", "rw")
                .ours()
                .created(1)
                .annotation("nginx.ingress.kubernetes.io/rewrite-target", "/$2")
                .rule(
                    Some("rw.com"),
                    vec![
                        path(
                            "/something(/|$)(.*)",
                            "ImplementationSpecific",
                            backend("a", 80),
                        ),
                        path("/exact", "Exact", backend("c", 80)),
                    ],
                ),
            // No annotation of its own: its paths are regexes all the same.
            ingress("ns", "other").ours().created(2).rule(
                Some("rw.com"),
                vec![prefix("/api", "b"), prefix("/api/v2", "d")],
            ),
            ingress("ns", "plain")
                .ours()
                .rule(Some("plain.com"), vec![prefix("/api", "e")]),
            // A regex path without an annotation that allows it is refused.
            ingress("ns", "stray")
                .ours()
                .rule(Some("stray.com"), vec![prefix("/x(.*)", "f")]),
        ]);
        assert_eq!(
            reasons(&problems),
            [("ns/stray".into(), ProblemReason::InvalidPath)]
        );
        let cases = [
            (
                "rw.com",
                "/something/new?q=1",
                "a /something(/|$)(.*) ImplementationSpecific",
                Some("/new?q=1"),
            ),
            (
                "rw.com",
                "/SOMETHING",
                "a /something(/|$)(.*) ImplementationSpecific",
                Some("/"),
            ),
            ("rw.com", "/api/v1", "b /api Prefix", None),
            // Regex prefixes are not element-wise: /apix matches ^/api.
            ("rw.com", "/apix", "b /api Prefix", None),
            // The longest path is tried first.
            ("rw.com", "/api/v2/x", "d /api/v2 Prefix", None),
            ("rw.com", "/exact", "c /exact Exact", Some("/")),
            ("rw.com", "/nothing", "default 404", None),
            ("plain.com", "/apix", "default 404", None),
            ("plain.com", "/api/x", "e /api Prefix", None),
        ];
        for (host, target, expected, rewritten) in cases {
            assert_eq!(answer(&table, host, target), expected, "{host}{target}");
            assert_eq!(
                table.route(host, target).rewrite(target).as_deref(),
                rewritten,
                "{host}{target}"
            );
        }
    }

    #[test]
    fn service_upstream_sends_to_the_cluster_ip() {
        let mut objects = vec![
            service("ns", "vip")
                .port(None, 80, Target::Number(8080))
                .cluster_ip("198.19.8.1")
                .object(),
            slice("ns", "vip-1", "vip")
                .port(None, Some(8080))
                .ready("198.19.8.9")
                .object(),
            service("ns", "headless")
                .port(None, 80, Target::Number(8080))
                .cluster_ip("None")
                .object(),
            slice("ns", "headless-1", "headless")
                .port(None, Some(8080))
                .ready("198.19.8.10")
                .object(),
        ];
        for (name, service) in [
            ("direct", "vip"),
            ("headless", "headless"),
            ("plain", "vip"),
        ] {
            let mut builder = ingress("ns", name).ours();
            if name != "plain" {
                builder =
                    builder.annotation("nginx.ingress.kubernetes.io/service-upstream", "true");
            }
            let host = format!("{name}.com");
            objects.push(
                builder
                    .rule(Some(&host), vec![prefix("/", service)])
                    .object(),
            );
        }
        let (table, problems) = RouteTable::build(&world(objects), &ModelOptions::default());
        let endpoints = |host: &str| table.route(host, "/").backend().endpoints().to_vec();
        let addr = |text: &str| text.parse::<SocketAddr>().unwrap();
        assert_eq!(endpoints("direct.com"), [addr("198.19.8.1:80")]);
        assert_eq!(endpoints("plain.com"), [addr("198.19.8.9:8080")]);
        assert_eq!(endpoints("headless.com"), [addr("198.19.8.10:8080")]);
        assert_eq!(
            reasons(&problems),
            [("ns/headless".into(), ProblemReason::InvalidAnnotation)]
        );
    }

    #[test]
    fn hosts_exact_then_wildcard_then_any() {
        let (table, problems) = build([
            ingress("ns", "exact")
                .ours()
                .rule(Some("foo.com"), vec![prefix("/", "a")]),
            ingress("ns", "wild")
                .ours()
                .rule(Some("*.foo.com"), vec![prefix("/", "b")]),
            ingress("ns", "any")
                .ours()
                .rule(None, vec![prefix("/", "c")]),
            ingress("ns", "upper")
                .ours()
                .rule(Some("Upper.Example.COM"), vec![prefix("/", "d")]),
        ]);
        assert_eq!(problems, []);
        let cases = [
            ("foo.com", "a / Prefix"),
            ("FOO.com", "a / Prefix"),
            ("foo.com:8080", "a / Prefix"),
            ("foo.com.", "a / Prefix"),
            ("bar.foo.com", "b / Prefix"),
            ("BAR.foo.com:443", "b / Prefix"),
            ("baz.bar.foo.com", "c / Prefix"),
            ("other.com", "c / Prefix"),
            ("xfoo.com", "c / Prefix"),
            ("[::1]:80", "c / Prefix"),
            ("10.0.0.1", "c / Prefix"),
            ("", "c / Prefix"),
            ("upper.example.com", "d / Prefix"),
        ];
        for (host, expected) in cases {
            assert_eq!(answer(&table, host, "/x"), expected, "{host}");
        }
    }

    #[test]
    fn an_exact_wildcard_host_pair_is_precise() {
        let (table, _) = build([
            ingress("ns", "exact")
                .ours()
                .rule(Some("bar.foo.com"), vec![prefix("/", "a")]),
            ingress("ns", "wild")
                .ours()
                .rule(Some("*.foo.com"), vec![prefix("/", "b")]),
        ]);
        assert_eq!(answer(&table, "bar.foo.com", "/"), "a / Prefix");
        assert_eq!(answer(&table, "baz.foo.com", "/"), "b / Prefix");
        assert_eq!(answer(&table, "foo.com", "/"), "default 404");
        assert_eq!(answer(&table, "x.bar.foo.com", "/"), "default 404");
    }

    #[test]
    fn a_matched_host_does_not_fall_through_to_less_specific_hosts() {
        let (table, _) = build([
            ingress("ns", "api")
                .ours()
                .rule(Some("foo.com"), vec![prefix("/api", "a")]),
            ingress("ns", "wild")
                .ours()
                .rule(Some("*.foo.com"), vec![prefix("/api", "b")]),
            ingress("ns", "any")
                .ours()
                .rule(None, vec![prefix("/", "c")]),
        ]);
        assert_eq!(answer(&table, "foo.com", "/api/v1"), "a /api Prefix");
        assert_eq!(answer(&table, "foo.com", "/other"), "default 404");
        assert_eq!(answer(&table, "x.foo.com", "/other"), "default 404");
        assert_eq!(answer(&table, "elsewhere.com", "/other"), "c / Prefix");
    }

    #[test]
    fn path_types_and_precedence() {
        let (table, problems) = build([ingress("ns", "web").ours().rule(
            Some("h.com"),
            vec![
                prefix("/", "a"),
                prefix("/aaa", "b"),
                prefix("/aaa/bbb", "c"),
                path("/foo", "Exact", backend("d", 80)),
                prefix("/foo", "e"),
                path("/exact/", "Exact", backend("f", 80)),
                path("/impl", "ImplementationSpecific", backend("a", 80)),
                prefix("/trail/", "b"),
            ],
        )]);
        assert_eq!(problems, []);
        let cases = [
            ("/", "a / Prefix"),
            ("/x", "a / Prefix"),
            ("/aaa", "b /aaa Prefix"),
            ("/aaa/", "b /aaa Prefix"),
            ("/aaa/ccc", "b /aaa Prefix"),
            ("/aaaa", "a / Prefix"),
            ("/aaa/bbb", "c /aaa/bbb Prefix"),
            ("/aaa/bbb/ccc", "c /aaa/bbb Prefix"),
            ("/aaa/bbbxyz", "b /aaa Prefix"),
            ("/foo", "d /foo Exact"),
            ("/foo/", "e /foo Prefix"),
            ("/foo/bar", "e /foo Prefix"),
            ("/foobar", "a / Prefix"),
            ("/FOO", "a / Prefix"),
            ("/foo?x=1", "d /foo Exact"),
            ("/foo#frag", "d /foo Exact"),
            ("/exact/", "f /exact/ Exact"),
            ("/exact", "a / Prefix"),
            ("/exact/x", "a / Prefix"),
            ("/impl/x", "a /impl ImplementationSpecific"),
            ("/trail", "b /trail/ Prefix"),
            ("/trail/x", "b /trail/ Prefix"),
            ("", "a / Prefix"),
            ("?q", "a / Prefix"),
            ("*", "default 404"),
        ];
        for (request, expected) in cases {
            assert_eq!(answer(&table, "h.com", request), expected, "{request}");
        }
    }

    #[test]
    fn paths_for_a_host_merge_across_ingresses() {
        let (table, problems) = build([
            ingress("ns", "shop")
                .ours()
                .rule(Some("h.com"), vec![prefix("/shop", "a")]),
            ingress("ns", "api")
                .ours()
                .rule(Some("h.com"), vec![prefix("/api", "b")]),
            ingress("other", "root")
                .ours()
                .rule(Some("H.com"), vec![prefix("/", "c")]),
        ]);
        // `other/root` names Service c in its own namespace, where there is none.
        assert_eq!(
            reasons(&problems),
            [("other/root".to_owned(), ProblemReason::ServiceNotFound)]
        );
        assert_eq!(answer(&table, "h.com", "/shop/cart"), "a /shop Prefix");
        assert_eq!(answer(&table, "h.com", "/api"), "b /api Prefix");
        assert_eq!(answer(&table, "h.com", "/"), "503:ServiceNotFound / Prefix");
        let RouteMatch::Path(route) = table.route("h.com", "/api") else {
            panic!("no path match");
        };
        assert_eq!(route.ingress, ObjectKey::new("ns", "api"));
        assert_eq!(table.route("h.com", "/api").ingress(), Some(&route.ingress));
    }

    #[test]
    fn conflicts_have_a_deterministic_winner() {
        struct Case {
            name: &'static str,
            ingresses: Vec<IngressBuilder>,
            winner: &'static str,
            loser: &'static str,
            /// Whether the loser still routes something else.
            loser_serves: bool,
        }
        let rule = |b: IngressBuilder, p: &str, t: &str, svc: &str| {
            b.ours()
                .rule(Some("h.com"), vec![path(p, t, backend(svc, 80))])
        };
        let cases = [
            Case {
                name: "the older Ingress wins whatever its name",
                ingresses: vec![
                    rule(ingress("ns", "zz-old").created(100), "/x", "Prefix", "a"),
                    rule(ingress("ns", "aa-new").created(200), "/x", "Prefix", "b"),
                ],
                winner: "a /x Prefix",
                loser: "ns/aa-new",
                loser_serves: false,
            },
            Case {
                name: "same age: namespace then name",
                ingresses: vec![
                    rule(ingress("ns", "b").created(100), "/x", "Prefix", "b"),
                    rule(ingress("ns", "a").created(100), "/x", "Prefix", "a"),
                ],
                winner: "a /x Prefix",
                loser: "ns/b",
                loser_serves: false,
            },
            Case {
                name: "no timestamps: namespace then name",
                ingresses: vec![
                    rule(ingress("zz", "a"), "/x", "Exact", "b"),
                    rule(ingress("ns", "z"), "/x", "Exact", "a"),
                ],
                winner: "a /x Exact",
                loser: "zz/a",
                loser_serves: false,
            },
            Case {
                name: "a missing timestamp counts as newest",
                ingresses: vec![
                    rule(ingress("ns", "a"), "/x", "Prefix", "a"),
                    rule(ingress("ns", "b").created(100), "/x", "Prefix", "b"),
                ],
                winner: "b /x Prefix",
                loser: "ns/a",
                loser_serves: false,
            },
            Case {
                name: "a trailing slash makes the same Prefix",
                ingresses: vec![
                    rule(ingress("ns", "a"), "/x", "Prefix", "a"),
                    rule(ingress("ns", "b"), "/x/", "Prefix", "b"),
                ],
                winner: "a /x Prefix",
                loser: "ns/b",
                loser_serves: false,
            },
            Case {
                name: "ImplementationSpecific is Prefix here",
                ingresses: vec![
                    rule(ingress("ns", "a"), "/x", "ImplementationSpecific", "a"),
                    rule(ingress("ns", "b"), "/x", "Prefix", "b"),
                ],
                winner: "a /x ImplementationSpecific",
                loser: "ns/b",
                loser_serves: false,
            },
            Case {
                name: "twice in one Ingress: the first path wins",
                ingresses: vec![
                    ingress("ns", "a")
                        .ours()
                        .rule(Some("h.com"), vec![prefix("/x", "a"), prefix("/x", "b")]),
                ],
                winner: "a /x Prefix",
                loser: "ns/a",
                loser_serves: true,
            },
        ];
        for case in cases {
            let (table, problems) = build(case.ingresses);
            assert_eq!(answer(&table, "h.com", "/x"), case.winner, "{}", case.name);
            let mut expected = vec![(case.loser.to_owned(), ProblemReason::PathConflict)];
            if !case.loser_serves {
                // Its only path lost: it serves nothing.
                expected.push((case.loser.to_owned(), ProblemReason::NotServed));
            }
            assert_eq!(reasons(&problems), expected, "{}", case.name);
            assert!(
                problems[0].message.contains("already routed by"),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn exact_and_prefix_on_the_same_path_do_not_conflict() {
        let (table, problems) = build([
            ingress("ns", "a")
                .ours()
                .rule(Some("h.com"), vec![path("/x", "Exact", backend("a", 80))]),
            ingress("ns", "b")
                .ours()
                .rule(Some("h.com"), vec![prefix("/x", "b")]),
        ]);
        assert_eq!(problems, []);
        assert_eq!(answer(&table, "h.com", "/x"), "a /x Exact");
        assert_eq!(answer(&table, "h.com", "/x/y"), "b /x Prefix");
    }

    #[test]
    fn default_backends() {
        let rules_less =
            |name: &str, svc: &str| ingress("ns", name).ours().default_backend(backend(svc, 80));
        let configured = ModelOptions {
            default_backend_service: Some("ns/f".parse::<DefaultBackendService>().unwrap()),
            ..ModelOptions::default()
        };
        struct Case {
            name: &'static str,
            ingresses: Vec<IngressBuilder>,
            options: ModelOptions,
            /// (host, path, answer)
            lookups: Vec<(&'static str, &'static str, &'static str)>,
            problems: Vec<(&'static str, ProblemReason)>,
        }
        let cases = [
            Case {
                name: "nothing configured: the built-in 404",
                ingresses: vec![
                    ingress("ns", "web")
                        .ours()
                        .rule(Some("h.com"), vec![prefix("/a", "a")]),
                ],
                options: ModelOptions::default(),
                lookups: vec![
                    ("h.com", "/b", "default 404"),
                    ("x.com", "/", "default 404"),
                ],
                problems: vec![],
            },
            Case {
                name: "the configured service answers what nothing matches",
                ingresses: vec![],
                options: configured.clone(),
                lookups: vec![("x.com", "/", "default f")],
                problems: vec![],
            },
            Case {
                name: "an Ingress without rules beats the configured service",
                ingresses: vec![rules_less("catch", "e")],
                options: configured.clone(),
                lookups: vec![("x.com", "/", "default e")],
                problems: vec![],
            },
            Case {
                name: "an Ingress's defaultBackend serves its hosts' unmatched requests",
                ingresses: vec![
                    ingress("ns", "web")
                        .ours()
                        .rule(Some("h.com"), vec![prefix("/a", "a")])
                        .rule(Some("*.w.com"), vec![prefix("/a", "a")])
                        .default_backend(backend("b", 80)),
                ],
                options: configured.clone(),
                lookups: vec![
                    ("h.com", "/a", "a /a Prefix"),
                    ("h.com", "/b", "default b"),
                    ("x.w.com", "/b", "default b"),
                    ("other.com", "/b", "default f"),
                ],
                problems: vec![],
            },
            Case {
                name: "a rule with a host and no paths claims the host for the defaultBackend",
                ingresses: vec![
                    ingress("ns", "web")
                        .ours()
                        .host_only("h.com")
                        .default_backend(backend("c", 80)),
                ],
                options: ModelOptions::default(),
                lookups: vec![
                    ("h.com", "/anything", "default c"),
                    ("x.com", "/", "default 404"),
                ],
                problems: vec![],
            },
            Case {
                name: "two Ingresses without rules: the first wins",
                ingresses: vec![rules_less("b-catch", "b"), rules_less("a-catch", "a")],
                options: ModelOptions::default(),
                lookups: vec![("x.com", "/", "default a")],
                // Its only default backend lost: it serves nothing.
                problems: vec![
                    ("ns/b-catch", ProblemReason::DefaultBackendConflict),
                    ("ns/b-catch", ProblemReason::NotServed),
                ],
            },
            Case {
                name: "two defaultBackends for one host: the first wins",
                ingresses: vec![
                    ingress("ns", "one")
                        .ours()
                        .created(1)
                        .rule(Some("h.com"), vec![prefix("/a", "a")])
                        .default_backend(backend("c", 80)),
                    ingress("ns", "two")
                        .ours()
                        .created(2)
                        .rule(Some("h.com"), vec![prefix("/b", "b")])
                        .default_backend(backend("d", 80)),
                ],
                options: ModelOptions::default(),
                lookups: vec![("h.com", "/b", "b /b Prefix"), ("h.com", "/z", "default c")],
                problems: vec![("ns/two", ProblemReason::DefaultBackendConflict)],
            },
            Case {
                name: "a missing default backend service answers 503",
                ingresses: vec![],
                options: ModelOptions {
                    default_backend_service: Some("ns/gone".parse().unwrap()),
                    ..ModelOptions::default()
                },
                lookups: vec![("x.com", "/", "default 503:ServiceNotFound")],
                problems: vec![("ns/gone", ProblemReason::ServiceNotFound)],
            },
            Case {
                name: "a missing defaultBackend service of an Ingress answers 503",
                ingresses: vec![rules_less("catch", "gone")],
                options: ModelOptions::default(),
                lookups: vec![("x.com", "/", "default 503:ServiceNotFound")],
                problems: vec![("ns/catch", ProblemReason::ServiceNotFound)],
            },
        ];
        for case in cases {
            let (table, problems) = build_with(case.ingresses, &case.options);
            for (host, request, expected) in &case.lookups {
                assert_eq!(
                    answer(&table, host, request),
                    *expected,
                    "{}: {host}{request}",
                    case.name
                );
            }
            let expected: Vec<(String, ProblemReason)> = case
                .problems
                .iter()
                .map(|(object, reason)| ((*object).to_owned(), *reason))
                .collect();
            assert_eq!(reasons(&problems), expected, "{}", case.name);
        }
    }

    #[test]
    fn the_default_route_says_where_it_comes_from() {
        let (table, _) = build([ingress("ns", "catch")
            .ours()
            .default_backend(backend("a", 80))]);
        let found = table.route("x.com", "/");
        assert_eq!(found.ingress(), Some(&ObjectKey::new("ns", "catch")));
        assert_eq!(found.path(), None);
        assert_eq!(table.fallback().scope, DefaultScope::Fallback);
        let empty = RouteTable::default();
        assert_eq!(empty.route("x", "/").backend(), &Backend::NotFound);
        assert_eq!(empty.route("x", "/").ingress(), None);
    }

    #[test]
    fn every_problem_kind_affects_only_its_rule() {
        let mut objects = services();
        objects.push(
            service("ns", "noeps")
                .port(None, 80, Target::Number(8080))
                .object(),
        );
        objects.push(
            slice("ns", "noeps-1", "noeps")
                .port(None, Some(8080))
                .endpoint("10.9.9.9", Some(false), Some(false), Some(false))
                .object(),
        );
        objects.push(
            service("ns", "ext")
                .external_name("example.com")
                .port(None, 80, Target::Unset)
                .object(),
        );
        objects.push(
            ingress("ns", "web")
                .ours()
                .rule(
                    Some("h.com"),
                    vec![
                        prefix("/", "a"),
                        prefix("/ok", "b"),
                        prefix("/missing", "gone"),
                        path("/noport", "Prefix", backend("a", 81)),
                        path("/noname", "Prefix", backend("a", "grpc")),
                        prefix("/empty", "noeps"),
                        path("/bucket", "Prefix", resource_backend("Bucket", "static")),
                        prefix("/ext", "ext"),
                        prefix("/bad[0-9]", "a"),
                        path("relative", "Exact", backend("a", 80)),
                        path("/typeless", "", backend("a", 80)),
                    ],
                )
                .rule(Some("bad_host.com"), vec![prefix("/", "a")])
                .object(),
        );
        let (table, problems) = RouteTable::build(&world(objects), &ModelOptions::default());
        let found: Vec<ProblemReason> = problems.iter().map(|p| p.reason).collect();
        assert_eq!(
            found,
            [
                ProblemReason::ServiceNotFound,
                ProblemReason::PortNotFound,
                ProblemReason::PortNotFound,
                ProblemReason::NoEndpoints,
                ProblemReason::UnsupportedBackend,
                ProblemReason::UnsupportedBackend,
                ProblemReason::InvalidPath,
                ProblemReason::InvalidPath,
                ProblemReason::InvalidPath,
                ProblemReason::InvalidHost,
            ]
        );
        assert!(
            problems
                .iter()
                .all(|p| p.object.to_string() == "Ingress ns/web")
        );
        assert_eq!(
            problems[0].message,
            "host h.com path /missing (Prefix): Service ns/gone not found"
        );
        assert!(
            problems[3].message.contains("no endpoint is ready"),
            "{}",
            problems[3]
        );
        let cases = [
            ("/ok/x", "b /ok Prefix"),
            ("/x", "a / Prefix"),
            ("/missing/x", "503:ServiceNotFound /missing Prefix"),
            ("/noport", "503:PortNotFound /noport Prefix"),
            ("/noname", "503:PortNotFound /noname Prefix"),
            ("/empty", "noeps /empty Prefix"),
            ("/bucket", "503:UnsupportedBackend /bucket Prefix"),
            ("/ext", "503:UnsupportedBackend /ext Prefix"),
            ("/bad[0-9]", "a / Prefix"),
            ("/typeless", "a / Prefix"),
        ];
        for (request, expected) in cases {
            assert_eq!(answer(&table, "h.com", request), expected, "{request}");
        }
        let empty = table.route("h.com", "/empty").backend();
        assert!(matches!(empty, Backend::Service(s) if s.endpoints.is_empty()));
        assert_eq!(empty.failure_status(), 503);
        assert_eq!(answer(&table, "bad_host.com", "/"), "default 404");
    }

    #[test]
    fn other_controllers_ingresses_route_nothing_and_report_nothing() {
        let mut objects = services();
        objects.push(KubeObject::IngressClass(ingress_class(
            "nginx",
            "k8s.io/ingress-nginx",
            true,
        )));
        objects.push(
            ingress("ns", "theirs")
                .class_name("nginx")
                .rule(Some("h.com"), vec![prefix("/", "gone")])
                .object(),
        );
        objects.push(
            ingress("ns", "legacy")
                .annotation(INGRESS_CLASS_ANNOTATION, "nginx")
                .rule(Some("h.com"), vec![prefix("/bad[", "a")])
                .object(),
        );
        objects.push(
            ingress("ns", "classless")
                .rule(Some("h.com"), vec![prefix("/", "a")])
                .object(),
        );
        let (table, problems) =
            RouteTable::build(&world(objects.clone()), &ModelOptions::default());
        assert_eq!(problems, []);
        assert_eq!(table.path_count(), 0);
        assert_eq!(answer(&table, "h.com", "/"), "default 404");
        let watching = ModelOptions {
            watch_ingress_without_class: true,
            ..ModelOptions::default()
        };
        let (table, _) = RouteTable::build(&world(objects), &watching);
        assert_eq!(answer(&table, "h.com", "/"), "a / Prefix");
    }

    #[test]
    fn rows_are_sorted_and_render_as_a_table() {
        let (table, _) = build([
            ingress("ns", "web")
                .ours()
                .rule(
                    Some("b.com"),
                    vec![prefix("/z", "a"), path("/a", "Exact", backend("b", 80))],
                )
                .rule(Some("*.a.com"), vec![prefix("/", "c")])
                .rule(Some("a.com"), vec![prefix("/", "gone")])
                .default_backend(backend("d", 80)),
            ingress("ns", "any").ours().rule(
                None,
                vec![path("/", "ImplementationSpecific", backend("e", 80))],
            ),
        ]);
        let rows = table.rows();
        let text = RouteRowsTable(&rows).to_string();
        let expected = "\
HOST        PATH       TYPE                    INGRESS  BACKEND                       ENDPOINTS
a.com       /          Prefix                  ns/web   ns/gone:80 [ServiceNotFound]  (503)
a.com       (default)  -                       ns/web   ns/d:80                       10.0.0.4:8080
b.com       /a         Exact                   ns/web   ns/b:80                       10.0.0.2:8080
b.com       /z         Prefix                  ns/web   ns/a:80                       10.0.0.1:8080
b.com       (default)  -                       ns/web   ns/d:80                       10.0.0.4:8080
*.a.com     /          Prefix                  ns/web   ns/c:80                       10.0.0.3:8080
*.a.com     (default)  -                       ns/web   ns/d:80                       10.0.0.4:8080
*           /          ImplementationSpecific  ns/any   ns/e:80                       10.0.0.5:8080
(fallback)  -          -                       -        (built-in 404)                (404)
";
        assert_eq!(text, expected);
        let ids: Vec<String> = table.backends().keys().map(|id| id.to_string()).collect();
        assert_eq!(ids, ["ns/a:80", "ns/b:80", "ns/c:80", "ns/d:80", "ns/e:80"]);
        assert_eq!(table.path_count(), 5);
    }

    #[test]
    fn ten_thousand_ingresses_still_route() {
        const COUNT: usize = 10_000;
        let mut objects: Vec<KubeObject> = (0..10)
            .flat_map(|n| {
                ready_service(
                    &format!("ns-{n}"),
                    "svc",
                    80,
                    8080,
                    &[&format!("10.1.0.{n}")],
                )
            })
            .collect();
        for i in 0..COUNT {
            let namespace = format!("ns-{}", i % 10);
            let mut builder = ingress(&namespace, &format!("ing-{i}"))
                .ours()
                .rule(
                    Some(&format!("h{i}.example.com")),
                    vec![path(&format!("/p{i}"), "Prefix", backend("svc", 80))],
                )
                .rule(
                    None,
                    vec![path(&format!("/shared/{i}"), "Exact", backend("svc", 80))],
                );
            if i % 100 == 0 {
                builder = builder.rule(
                    Some(&format!("*.w{i}.example.com")),
                    vec![prefix("/", "svc")],
                );
            }
            objects.push(builder.object());
        }
        let (table, problems) = RouteTable::build(&world(objects), &ModelOptions::default());
        assert_eq!(problems, []);
        assert_eq!(table.path_count(), 2 * COUNT + COUNT / 100);
        for i in [0, 1, 4_999, 9_999] {
            let found = table.route(
                &format!("H{i}.example.com:80"),
                &format!("/p{i}/deep/path?q=1"),
            );
            let RouteMatch::Path(route) = found else {
                panic!("h{i} did not match");
            };
            assert_eq!(route.ingress.name, format!("ing-{i}"));
            let expected: SocketAddr = format!("10.1.0.{}:8080", i % 10).parse().unwrap();
            assert_eq!(found.backend().endpoints(), [expected]);
            assert_eq!(
                answer(&table, &format!("h{i}.example.com"), &format!("/p{i}x")),
                "default 404"
            );
            assert_eq!(
                answer(&table, "x.com", &format!("/shared/{i}")),
                format!("svc /shared/{i} Exact")
            );
        }
        assert_eq!(answer(&table, "a.w9900.example.com", "/x"), "svc / Prefix");
        assert_eq!(answer(&table, "a.w9901.example.com", "/x"), "default 404");
        assert_eq!(table.backends().len(), 10);
    }

    /// One generated rule: (ingress index, host choice, path segments,
    /// trailing slash, type choice).
    type GeneratedPath = (usize, usize, Vec<usize>, bool, usize);

    const HOSTS: [Option<&str>; 3] = [Some("a.com"), Some("*.a.com"), None];
    const SEGMENTS: [&str; 3] = ["x", "y", "xy"];
    const TYPES: [&str; 3] = ["Exact", "Prefix", "ImplementationSpecific"];
    const REQUEST_HOSTS: [&str; 6] = [
        "a.com",
        "A.COM:80",
        "b.a.com",
        "c.b.a.com",
        "other.com",
        "[::1]:8080",
    ];

    fn rule_path(segments: &[usize], trailing: bool) -> String {
        let joined: Vec<&str> = segments.iter().map(|s| SEGMENTS[*s]).collect();
        let mut path = format!("/{}", joined.join("/"));
        if trailing && path.len() > 1 {
            path.push('/');
        }
        path
    }

    fn generated_ingresses(rules: &[GeneratedPath], created: &[Option<i64>]) -> Vec<KubeObject> {
        let mut builders: Vec<IngressBuilder> = created
            .iter()
            .enumerate()
            .map(|(i, created)| {
                let builder = ingress("ns", &format!("i{i}")).ours();
                match created {
                    Some(seconds) => builder.created(*seconds),
                    None => builder,
                }
            })
            .collect();
        for (index, host, segments, trailing, path_type) in rules {
            let slot = index % builders.len();
            let builder = std::mem::replace(&mut builders[slot], ingress("", ""));
            builders[slot] = builder.rule(
                HOSTS[*host],
                vec![path(
                    &rule_path(segments, *trailing),
                    TYPES[*path_type],
                    backend("a", 80),
                )],
            );
        }
        builders.into_iter().map(IngressBuilder::object).collect()
    }

    /// The answer by brute force: the most specific host kind that has any
    /// rule, then the most specific matching path, ties to the earliest
    /// Ingress (oldest, missing timestamps last, then name) and rule.
    fn reference_answer(
        rules: &[GeneratedPath],
        created: &[Option<i64>],
        host: &str,
        request: &str,
    ) -> Option<(String, String, PathType)> {
        let host = request_host(host);
        let request = request_path(request);
        let order = |i: usize| (created[i].is_none(), created[i], format!("i{i}"));
        let mut candidates: Vec<(usize, usize, HostPattern, PathRule)> = rules
            .iter()
            .enumerate()
            .map(|(position, (index, h, segments, trailing, t))| {
                let slot = index % created.len();
                let pattern = HostPattern::parse(HOSTS[*h]).unwrap();
                let rule =
                    PathRule::parse(Some(&rule_path(segments, *trailing)), TYPES[*t]).unwrap();
                (slot, position, pattern, rule)
            })
            .collect();
        candidates.sort_by_key(|(slot, position, _, _)| (order(*slot), *position));
        let kinds = [0, 1, 2];
        let kind_of = |p: &HostPattern| match p {
            HostPattern::Exact(_) => 0,
            HostPattern::Wildcard(_) => 1,
            HostPattern::Any => 2,
        };
        let kind = kinds.into_iter().find(|k| {
            candidates
                .iter()
                .any(|(_, _, pattern, _)| kind_of(pattern) == *k && pattern.matches(&host))
        })?;
        candidates
            .iter()
            .filter(|(_, _, pattern, rule)| {
                kind_of(pattern) == kind && pattern.matches(&host) && rule.matches(&request)
            })
            .fold(
                None,
                |best: Option<&(usize, usize, HostPattern, PathRule)>, candidate| match best {
                    Some(best) if best.3.specificity() >= candidate.3.specificity() => Some(best),
                    _ => Some(candidate),
                },
            )
            .map(|(slot, _, _, rule)| (format!("i{slot}"), rule.path.clone(), rule.path_type))
    }

    fn rules_strategy() -> impl Strategy<Value = (Vec<GeneratedPath>, Vec<Option<i64>>)> {
        let rule = (
            0..6usize,
            0..3usize,
            proptest::collection::vec(0..3usize, 0..3),
            any::<bool>(),
            0..3usize,
        );
        (
            proptest::collection::vec(rule, 1..24),
            proptest::collection::vec(proptest::option::of(0..4i64), 1..6),
        )
    }

    fn request_strategy() -> impl Strategy<Value = (usize, String)> {
        (
            0..REQUEST_HOSTS.len(),
            proptest::collection::vec(
                proptest::sample::select(&["x", "y", "xy", "/", "?q"][..]),
                0..6,
            ),
        )
            .prop_map(|(host, parts)| (host, format!("/{}", parts.concat())))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn lookup_agrees_with_a_brute_force_reference(
            (rules, created) in rules_strategy(),
            requests in proptest::collection::vec(request_strategy(), 1..16),
        ) {
            let (table, _) = RouteTable::build(&world(generated_ingresses(&rules, &created)), &ModelOptions::default());
            for (host, request) in &requests {
                let host = REQUEST_HOSTS[*host];
                let got = match table.route(host, request) {
                    RouteMatch::Path(route) => Some((route.ingress.name.clone(), route.path.path.clone(), route.path.path_type)),
                    RouteMatch::Default(_) => None,
                };
                prop_assert_eq!(got, reference_answer(&rules, &created, host, request), "{} {}", host, request);
            }
        }

        #[test]
        fn the_result_does_not_depend_on_the_order_ingresses_are_given(
            (rules, created) in rules_strategy(),
            seed in any::<u64>(),
            requests in proptest::collection::vec(request_strategy(), 1..16),
        ) {
            let objects = generated_ingresses(&rules, &created);
            let mut shuffled = objects.clone();
            // A Fisher-Yates shuffle driven by the seed (xorshift).
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let (first, first_problems) = RouteTable::build(&world(objects), &ModelOptions::default());
            let (second, second_problems) = RouteTable::build(&world(shuffled), &ModelOptions::default());
            prop_assert_eq!(first.rows(), second.rows());
            prop_assert_eq!(first_problems, second_problems);
            for (host, request) in &requests {
                let host = REQUEST_HOSTS[*host];
                prop_assert_eq!(first.route(host, request), second.route(host, request));
            }
        }

        #[test]
        fn lookup_never_panics(host in any::<String>(), request in any::<String>(), tricky in "[\\[\\]:./?#A-Za-z0-9%*-]{0,40}") {
            let (table, _) = build([
                ingress("ns", "web")
                    .ours()
                    .rule(Some("a.com"), vec![prefix("/x", "a"), path("/x/y", "Exact", backend("b", 80))])
                    .rule(Some("*.a.com"), vec![prefix("/", "c")])
                    .rule(None, vec![prefix("/z", "d")]),
            ]);
            let _ = table.route(&host, &request);
            let _ = table.route(&tricky, &tricky);
            let _ = table.route(&request, &host);
            let _ = table.route(&format!("{tricky}.a.com"), &format!("/x{tricky}"));
        }
    }
}
