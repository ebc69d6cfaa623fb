//! The live routing state the proxy reads: the routing model's current
//! [`RouteTable`], swapped atomically when the configuration changes, with
//! the per-backend load-balancing state kept across swaps.

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;
use ingress_model::{Backend, BackendId, DefaultRoute, DefaultScope, RouteMatch, RouteTable};

use crate::proxy::{
    balance::RoundRobin,
    server::{Resolution, Resolve, RouteLabels, Upstream},
};

/// Per-backend state that outlives a configuration: its display name and
/// round-robin cursor.
#[derive(Debug, Clone)]
struct BackendState {
    name: Arc<str>,
    round_robin: Arc<RoundRobin>,
}

/// One configuration: the table and the state of each of its backends.
#[derive(Debug, Default)]
pub struct RoutingSnapshot {
    table: RouteTable,
    backends: HashMap<BackendId, BackendState>,
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
}

impl LiveRoutes {
    /// Empty routes: every request gets the built-in 404.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Installs `table`; backends that stay keep their round-robin cursor.
    pub fn install(&self, table: RouteTable) {
        let previous = self.current.load();
        let backends = table
            .backends()
            .into_keys()
            .map(|id| {
                let state = previous
                    .backends
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| BackendState {
                        name: Arc::from(id.to_string()),
                        round_robin: Arc::new(RoundRobin::default()),
                    });
                (id.clone(), state)
            })
            .collect();
        self.current
            .store(Arc::new(RoutingSnapshot { table, backends }));
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<RoutingSnapshot> {
        self.current.load_full()
    }
}

impl Resolve for LiveRoutes {
    fn resolve(&self, host: &str, path: &str) -> Resolution {
        self.resolve_labeled(host, path).0
    }

    fn resolve_labeled(&self, host: &str, path: &str) -> (Resolution, RouteLabels) {
        let snapshot = self.current.load();
        let found = snapshot.table.route(host, path);
        let mut labels = RouteLabels {
            ingress: found.ingress().map(ToString::to_string).unwrap_or_default(),
            host: match found {
                RouteMatch::Path(route) => route.host.to_string(),
                RouteMatch::Default(DefaultRoute {
                    scope: DefaultScope::Host(host),
                    ..
                }) => host.to_string(),
                RouteMatch::Default(_) => String::new(),
            },
            service: String::new(),
        };
        let https_redirect = found.https_redirect();
        match found.backend() {
            Backend::Service(service) => {
                let state = snapshot
                    .backends
                    .get(&service.id)
                    .cloned()
                    .unwrap_or_else(|| BackendState {
                        name: Arc::from(service.id.to_string()),
                        round_robin: Arc::new(RoundRobin::default()),
                    });
                labels.service = state.name.to_string();
                let upstream = Upstream {
                    name: state.name,
                    endpoints: service.endpoints.shared(),
                    round_robin: state.round_robin,
                    https_redirect,
                };
                (Resolution::Upstream(upstream), labels)
            }
            Backend::Unavailable(_) => (Resolution::Unavailable { https_redirect }, labels),
            Backend::NotFound => (Resolution::NoRoute, labels),
        }
    }
}

#[cfg(test)]
mod tests {
    use ingress_model::{ClusterObjects, ModelOptions, parse_manifests};

    use super::*;

    const MANIFESTS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: xdp}
spec: {controller: xdp-ingress.io/controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  ingressClassName: xdp
  rules:
  - host: web.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /broken, pathType: Prefix, backend: {service: {name: missing, port: {number: 80}}}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [198.18.1.1]}, {addresses: [198.18.1.2]}]
"#;

    fn table() -> RouteTable {
        let (objects, _) =
            ClusterObjects::from_objects(parse_manifests("t.yaml", MANIFESTS).unwrap());
        RouteTable::build(&objects, &ModelOptions::default()).0
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
                https_redirect: false
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
}
