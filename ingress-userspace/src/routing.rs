//! The live routing state the proxy reads: the routing model's current
//! [`RouteTable`], swapped atomically when the configuration changes, with
//! the per-backend load-balancing state kept across swaps.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

/// Maps read on every request: foldhash, not SipHash (a lookup is a few
/// nanoseconds instead of tens).
type FastHashMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use arc_swap::ArcSwap;
use ingress_model::{Backend, BackendId, DefaultOrigin, HostPattern, RouteMatch, RouteTable};
use prometheus_client::metrics::histogram::Histogram;

use crate::{
    metrics::{Metrics, RouteMetrics},
    proxy::{
        balance::RoundRobin,
        canary::CanaryUpstream,
        errors::{self, ErrorPages},
        server::{Resolution, Resolve, Upstream},
    },
};

/// Per-backend state that outlives a configuration: its display name,
/// round-robin cursor and latency histogram.
#[derive(Debug, Clone)]
struct BackendState {
    name: Arc<str>,
    round_robin: Arc<RoundRobin>,
    latency: Option<Histogram>,
}

/// The state of each backend of a table, shared by the snapshots of
/// tables with the same backends.
type BackendStates = Arc<FastHashMap<BackendId, BackendState>>;

/// One configuration: the table, the state of each of its backends and
/// the metrics of each route (by [`ingress_model::RouteMatch::identity`] in this table).
#[derive(Debug, Default)]
pub struct RoutingSnapshot {
    table: RouteTable,
    backends: BackendStates,
    route_metrics: FastHashMap<usize, Arc<RouteMetrics>>,
}

impl RoutingSnapshot {
    /// The route table of this snapshot.
    pub fn table(&self) -> &RouteTable {
        &self.table
    }
}

/// The routes the proxy serves; readers never wait for a writer.
#[derive(Debug, Default)]
pub struct LiveRoutes {
    current: ArcSwap<RoutingSnapshot>,
    metrics: Option<Arc<Metrics>>,
    /// How many routes of the current table use each backend: the
    /// writer's own bookkeeping, to follow a table host by host.
    backend_uses: Mutex<FastHashMap<BackendId, usize>>,
    /// The ConfigMap sets `custom-http-errors`: every route may have
    /// custom error pages.
    intercept_all: AtomicBool,
}

impl LiveRoutes {
    /// Empty routes: every request gets the built-in 404.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Empty routes whose requests are measured in `metrics`.
    pub fn with_metrics(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::default(),
            metrics: Some(metrics),
            backend_uses: Mutex::default(),
            intercept_all: AtomicBool::new(false),
        })
    }

    /// Whether every route may have custom error pages (the ConfigMap's
    /// `custom-http-errors`).
    pub fn set_custom_errors_everywhere(&self, on: bool) {
        self.intercept_all.store(on, Ordering::Relaxed);
    }

    /// Installs `table`; backends and routes that stay keep their state
    /// (round-robin cursor, metrics). Returns how many distinct Service
    /// backends the table has. When `table` was built right after the
    /// current one by the same builder (the daemon's case), only the routes
    /// of the hosts that changed are looked at.
    pub fn install(&self, table: RouteTable) -> usize {
        let previous = self.current.load();
        let mut uses = self.backend_uses.lock().expect("backend uses lock");
        let changed: Option<Vec<HostPattern>> = table
            .changed_hosts_since(&previous.table)
            .map(<[_]>::to_vec);
        let metrics = self.metrics.as_deref();
        let backends = match &changed {
            Some(hosts) => {
                let old = changed_routes(&previous.table, hosts);
                let new = changed_routes(&table, hosts);
                if follow_uses(&mut uses, old, new) {
                    backend_states(&uses, &previous.backends, metrics)
                } else {
                    Arc::clone(&previous.backends)
                }
            }
            None => {
                *uses = count_uses(&table);
                let same = uses.len() == previous.backends.len()
                    && uses.keys().all(|id| previous.backends.contains_key(id));
                if same {
                    Arc::clone(&previous.backends)
                } else {
                    backend_states(&uses, &previous.backends, metrics)
                }
            }
        };
        let count = backends.len();
        // Routes are keyed by their address, so the table goes to its final
        // place (the heap) first: the fallback route lives inline in it.
        let mut snapshot = Arc::new(RoutingSnapshot {
            table,
            backends,
            route_metrics: FastHashMap::default(),
        });
        if let Some(metrics) = metrics
            && let Some(placed) = Arc::get_mut(&mut snapshot)
        {
            placed.route_metrics = match &changed {
                Some(hosts) => route_metrics_since(placed, hosts, &previous, metrics),
                None => route_metrics(&placed.table, &placed.backends, &previous, metrics),
            };
        }
        self.current.store(snapshot);
        count
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<RoutingSnapshot> {
        self.current.load_full()
    }
}

/// The routes of `hosts` in `table`, and its fallback.
fn changed_routes<'t>(
    table: &'t RouteTable,
    hosts: &'t [HostPattern],
) -> impl Iterator<Item = RouteMatch<'t>> {
    hosts
        .iter()
        .flat_map(|host| table.host_route_matches(host))
        .chain(std::iter::once(RouteMatch::Default(table.fallback())))
}

/// How many routes of `table` use each backend.
fn count_uses(table: &RouteTable) -> FastHashMap<BackendId, usize> {
    let mut uses = FastHashMap::default();
    for backend in table.routes().flat_map(RouteMatch::backends) {
        if let Some(id) = backend.id() {
            match uses.get_mut(id) {
                Some(count) => *count += 1,
                None => {
                    uses.insert(id.clone(), 1);
                }
            }
        }
    }
    uses
}

/// Takes the `old` routes out of `uses` and counts the `new` ones in;
/// true when a backend appeared or went away.
fn follow_uses<'t>(
    uses: &mut FastHashMap<BackendId, usize>,
    old: impl Iterator<Item = RouteMatch<'t>>,
    new: impl Iterator<Item = RouteMatch<'t>>,
) -> bool {
    let mut changed = false;
    // New ones first, so a backend a changed host keeps never drops to 0.
    for backend in new.flat_map(RouteMatch::backends) {
        if let Some(id) = backend.id() {
            match uses.get_mut(id) {
                Some(count) => *count += 1,
                None => {
                    uses.insert(id.clone(), 1);
                    changed = true;
                }
            }
        }
    }
    for backend in old.flat_map(RouteMatch::backends) {
        if let Some(id) = backend.id()
            && let Some(count) = uses.get_mut(id)
        {
            *count -= 1;
            if *count == 0 {
                uses.remove(id);
                changed = true;
            }
        }
    }
    changed
}

/// The state of every backend in `uses`, keeping the state of those in
/// `previous`.
fn backend_states(
    uses: &FastHashMap<BackendId, usize>,
    previous: &BackendStates,
    metrics: Option<&Metrics>,
) -> BackendStates {
    let states = uses
        .keys()
        .map(|id| {
            let state = previous.get(id).cloned().unwrap_or_else(|| {
                let name: Arc<str> = Arc::from(id.to_string());
                BackendState {
                    latency: metrics.map(|m| m.upstream(&name)),
                    name,
                    round_robin: Arc::new(RoundRobin::default()),
                }
            });
            (id.clone(), state)
        })
        .collect();
    Arc::new(states)
}

/// A route's metric labels: its Ingress, its host and its backend's name
/// (empty where none applies), written into `ingress` and `host`.
fn route_labels<'b>(
    found: &RouteMatch<'_>,
    backends: &'b BackendStates,
    ingress: &mut String,
    host: &mut String,
) -> &'b str {
    ingress.clear();
    host.clear();
    if let Some(key) = found.ingress() {
        let _ = write!(ingress, "{key}");
    }
    if let Some(pattern) = found.host() {
        let _ = write!(host, "{pattern}");
    }
    match found.backend() {
        Backend::Service(service) => backends.get(&service.id).map_or("", |s| &*s.name),
        Backend::Unavailable(_) | Backend::NotFound => "",
    }
}

/// Route metrics by their labels (ingress, host, service).
type RoutesByLabels<'a> = FastHashMap<(&'a str, &'a str, &'a str), &'a Arc<RouteMetrics>>;

/// The metrics of every route of `table`, reusing those of `previous`:
/// by address for the routes the two tables share, else by labels
/// (without allocating for them).
fn route_metrics(
    table: &RouteTable,
    backends: &BackendStates,
    previous: &RoutingSnapshot,
    metrics: &Metrics,
) -> FastHashMap<usize, Arc<RouteMetrics>> {
    // `previous` is alive here, so an address it holds a route at is not
    // reused by a new route of `table`: the same address is the same route.
    let mut known: Option<RoutesByLabels<'_>> = None;
    let (mut ingress, mut host) = (String::new(), String::new());
    let mut routes = FastHashMap::with_capacity_and_hasher(
        previous.route_metrics.len().max(16),
        Default::default(),
    );
    for found in table.routes() {
        if let Some(route) = previous.route_metrics.get(&found.identity()) {
            routes.insert(found.identity(), Arc::clone(route));
            continue;
        }
        let service = route_labels(&found, backends, &mut ingress, &mut host);
        let known = known.get_or_insert_with(|| {
            previous
                .route_metrics
                .values()
                .map(|route| (route.labels(), route))
                .collect()
        });
        let route = match known.get(&(ingress.as_str(), host.as_str(), service)) {
            Some(route) => Arc::clone(route),
            None => Arc::new(metrics.route(&ingress, &host, service)),
        };
        routes.insert(found.identity(), route);
    }
    routes
}

/// The metrics of every route of `placed`'s table, which differs from
/// `previous`'s only in `hosts` and the fallback: the others' are
/// `previous`'s (a copy of the map, no lookup per route); those of the
/// changed routes come from the routes they replace when the labels are
/// the same.
fn route_metrics_since(
    placed: &RoutingSnapshot,
    hosts: &[HostPattern],
    previous: &RoutingSnapshot,
    metrics: &Metrics,
) -> FastHashMap<usize, Arc<RouteMetrics>> {
    let mut routes = previous.route_metrics.clone();
    let replaced: Vec<Arc<RouteMetrics>> = changed_routes(&previous.table, hosts)
        .filter_map(|found| routes.remove(&found.identity()))
        .collect();
    let (mut ingress, mut host) = (String::new(), String::new());
    for found in changed_routes(&placed.table, hosts) {
        let service = route_labels(&found, &placed.backends, &mut ingress, &mut host);
        let labels = (ingress.as_str(), host.as_str(), service);
        let route = match replaced.iter().find(|route| route.labels() == labels) {
            Some(route) => Arc::clone(route),
            None => Arc::new(metrics.route(&ingress, &host, service)),
        };
        routes.insert(found.identity(), route);
    }
    routes
}

impl Resolve for LiveRoutes {
    fn resolve(&self, host: &str, path: &str) -> Resolution {
        self.resolve_observed(host, path).0
    }

    fn resolve_observed(&self, host: &str, path: &str) -> (Resolution, Option<Arc<RouteMetrics>>) {
        let snapshot = self.current.load();
        let found = snapshot.table.route(host, path);
        let route = snapshot.route_metrics.get(&found.identity()).cloned();
        let https_redirect = found.https_redirect();
        let policy = found.policy().cloned();
        let rewrite = found.rewrite(path);
        // The session cookie's default `Path` (cookie affinity only).
        let route_path: Option<Arc<str>> = policy
            .as_ref()
            .and_then(|p| p.affinity.as_ref())
            .filter(|affinity| affinity.path.is_none())
            .and_then(|_| found.path())
            .map(|rule| Arc::from(rule.path.as_str()));
        let upstream = |backend: &Backend| {
            let Backend::Service(service) = backend else {
                return None;
            };
            let state = snapshot
                .backends
                .get(&service.id)
                .cloned()
                .unwrap_or_else(|| BackendState {
                    name: Arc::from(service.id.to_string()),
                    round_robin: Arc::new(RoundRobin::default()),
                    latency: None,
                });
            Some(Upstream {
                name: state.name,
                endpoints: service.endpoints.shared(),
                round_robin: state.round_robin,
                https_redirect,
                policy: policy.clone(),
                rewrite: rewrite.clone(),
                latency: state.latency,
                canary: None,
                route_path: route_path.clone(),
                errors: None,
            })
        };
        // Where the route's error pages come from, when it may have custom
        // ones: its Ingress's `default-backend`, else the configured
        // default backend.
        let custom_errors = found.error_backend().is_some()
            || policy
                .as_ref()
                .is_some_and(|p| !p.custom_http_errors.is_empty())
            || self.intercept_all.load(Ordering::Relaxed);
        let errors = custom_errors.then(|| {
            let own = found.error_backend().and_then(&upstream);
            let is_own = own.is_some();
            let configured = || match snapshot.table.fallback() {
                fallback if fallback.origin == DefaultOrigin::ConfiguredService => {
                    upstream(&fallback.backend)
                }
                _ => None,
            };
            let (namespace, ingress) = found
                .ingress()
                .map_or(("", ""), |key| (key.namespace.as_str(), key.name.as_str()));
            let (service, port) = match found.backend() {
                Backend::Service(service) => (service.id.service.name.as_str(), service.id.port),
                _ => ("", 0),
            };
            Box::new(ErrorPages {
                upstream: own.or_else(configured),
                own: is_own,
                labels: errors::labels(namespace, ingress, service, port),
            })
        });
        let resolution = match found.backend() {
            Backend::Service(_) => {
                let mut main = upstream(found.backend()).expect("a Service backend");
                main.errors = errors.clone();
                // A canary whose backend cannot be served takes its
                // requests all the same: they get 503, as the main
                // route's would.
                main.canary = found.canary().map(|canary| {
                    let upstream = upstream(&canary.backend).unwrap_or_else(|| Upstream {
                        name: Arc::from(canary.backend.to_string()),
                        endpoints: Arc::from([]),
                        canary: None,
                        ..main.clone()
                    });
                    let upstream = Upstream {
                        errors: errors.clone(),
                        ..upstream
                    };
                    Box::new(CanaryUpstream {
                        rule: Arc::clone(&canary.rule),
                        upstream,
                    })
                });
                Resolution::Upstream(main)
            }
            Backend::Unavailable(_) => Resolution::Unavailable {
                https_redirect,
                policy,
            },
            Backend::NotFound => Resolution::NoRoute,
        };
        (resolution, route)
    }
}

#[cfg(test)]
mod tests {
    use ingress_model::{
        KubeObject, ModelOptions,
        fixtures::{backend, ingress, path, prefix, ready_service, world},
    };

    use super::*;

    /// Ingress `default/NAME` for `NAME.example.com`: `/` to Service `NAME`
    /// (two ready endpoints), `/broken` to a Service that does not exist.
    fn site(name: &str) -> Vec<KubeObject> {
        let host = format!("{name}.example.com");
        let routes = ingress("default", name).ours().rule(
            Some(&host),
            vec![
                path("/", "Prefix", backend(name, 80)),
                prefix("/broken", "missing"),
            ],
        );
        let mut objects =
            ready_service("default", name, 80, 8080, &["198.18.1.1", "198.18.1.2"]).to_vec();
        objects.push(routes.object());
        objects
    }

    fn table() -> RouteTable {
        RouteTable::build(&world(site("web")), &ModelOptions::default()).0
    }

    #[test]
    fn resolves_to_upstreams_unavailable_and_no_route() {
        let routes = LiveRoutes::new();
        assert!(matches!(
            routes.resolve("web.example.com", "/"),
            Resolution::NoRoute
        ));
        routes.install(table());
        let Resolution::Upstream(upstream) = routes.resolve("WEB.example.com:80", "/x") else {
            panic!("expected an upstream");
        };
        assert_eq!(&*upstream.name, "default/web:80");
        assert_eq!(upstream.endpoints.len(), 2);
        assert!(matches!(
            routes.resolve("web.example.com", "/broken/x"),
            Resolution::Unavailable {
                https_redirect: false,
                policy: None,
            }
        ));
        assert!(matches!(
            routes.resolve("other.example.com", "/"),
            Resolution::NoRoute
        ));
    }

    #[test]
    fn round_robin_cursors_survive_a_reload() {
        let routes = LiveRoutes::new();
        routes.install(table());
        let Resolution::Upstream(before) = routes.resolve("web.example.com", "/") else {
            panic!("expected an upstream");
        };
        routes.install(table());
        let Resolution::Upstream(after) = routes.resolve("web.example.com", "/") else {
            panic!("expected an upstream");
        };
        assert!(Arc::ptr_eq(&before.round_robin, &after.round_robin));
    }

    #[test]
    fn each_route_has_its_metrics_kept_across_reloads() {
        let routes = LiveRoutes::with_metrics(Metrics::new(None));
        routes.install(table());
        let (_, web) = routes.resolve_observed("web.example.com", "/x");
        let web = web.expect("metrics of the web route");
        assert_eq!(
            web.labels(),
            ("default/web", "web.example.com", "default/web:80")
        );
        let (_, broken) = routes.resolve_observed("web.example.com", "/broken");
        assert_eq!(
            broken.expect("metrics of the broken route").labels(),
            ("default/web", "web.example.com", "")
        );
        let (_, fallback) = routes.resolve_observed("other.example.com", "/");
        assert_eq!(fallback.expect("the fallback's").labels(), ("", "", ""));
        routes.install(table());
        let (_, again) = routes.resolve_observed("web.example.com", "/");
        assert!(Arc::ptr_eq(&web, &again.expect("metrics after a reload")));
        assert!(
            LiveRoutes::new()
                .resolve_observed("web.example.com", "/")
                .1
                .is_none()
        );
    }

    #[test]
    fn a_table_built_after_the_current_one_is_followed_host_by_host() {
        let mut objects = world(site("web"));
        let mut builder = ingress_model::RouteTableBuilder::new(ModelOptions::default());
        let routes = LiveRoutes::with_metrics(Metrics::new(None));
        assert_eq!(routes.install(builder.build(&objects).0), 1);
        let (_, web) = routes.resolve_observed("web.example.com", "/");
        let Resolution::Upstream(before) = routes.resolve("web.example.com", "/") else {
            panic!("expected an upstream");
        };
        // A second Ingress to a new Service: a new host, a new backend.
        for object in site("api") {
            objects.insert(object);
        }
        let (table, _) = builder.build(&objects);
        assert!(
            table
                .changed_hosts_since(&routes.snapshot().table)
                .is_some()
        );
        assert_eq!(routes.install(table), 2);
        let Resolution::Upstream(api) = routes.resolve("api.example.com", "/") else {
            panic!("expected an upstream");
        };
        assert_eq!(&*api.name, "default/api:80");
        let Resolution::Upstream(after) = routes.resolve("web.example.com", "/") else {
            panic!("expected an upstream");
        };
        assert!(Arc::ptr_eq(&before.round_robin, &after.round_robin));
        let (_, again) = routes.resolve_observed("web.example.com", "/");
        assert!(Arc::ptr_eq(
            web.as_ref().expect("web's metrics"),
            again.as_ref().expect("web's metrics after")
        ));
        let (_, api_metrics) = routes.resolve_observed("api.example.com", "/");
        assert_eq!(
            api_metrics.expect("api's metrics").labels(),
            ("default/api", "api.example.com", "default/api:80")
        );
        // The api Ingress goes: its backend goes with it.
        objects.remove(&ingress_model::ObjectRef::new(
            ingress_model::ObjectKind::Ingress,
            ingress_model::ObjectKey::new("default", "api"),
        ));
        assert_eq!(routes.install(builder.build(&objects).0), 1);
        assert!(matches!(
            routes.resolve("api.example.com", "/"),
            Resolution::NoRoute
        ));
        assert_eq!(routes.snapshot().backends.len(), 1);
    }
}
