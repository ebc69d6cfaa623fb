//! The routing model of xdp-ingress: a pure core, no I/O.
//!
//! Providers (manifest files, the API server) fill a [`ClusterObjects`]
//! snapshot; [`RouteTable::build`] turns it into an immutable route table
//! plus the [`Problem`]s found; the proxy asks [`RouteTable::route`] where a
//! request goes. Nothing here touches a socket, a file or a clock.
//!
//! ```
//! use ingress_model::{ClusterObjects, ModelOptions, RouteTable, parse_manifests};
//!
//! let text = r#"
//! apiVersion: networking.k8s.io/v1
//! kind: Ingress
//! metadata: {name: web, annotations: {kubernetes.io/ingress.class: xdp}}
//! spec:
//!   rules:
//!     - host: example.com
//!       http:
//!         paths:
//!           - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
//! ---
//! apiVersion: v1
//! kind: Service
//! metadata: {name: web}
//! spec: {ports: [{port: 80, targetPort: 8080}]}
//! ---
//! apiVersion: discovery.k8s.io/v1
//! kind: EndpointSlice
//! metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
//! addressType: IPv4
//! ports: [{port: 8080}]
//! endpoints: [{addresses: [10.1.0.7]}]
//! "#;
//! let (objects, _duplicates) =
//!     ClusterObjects::from_objects(parse_manifests("web.yaml", text).unwrap());
//! let (table, problems) = RouteTable::build(&objects, &ModelOptions::default());
//! assert!(problems.is_empty());
//! let found = table.route("Example.com:443", "/cart?id=1");
//! assert_eq!(found.backend().endpoints(), ["10.1.0.7:8080".parse().unwrap()]);
//! ```
//!
//! Errors and missing services route on: a rule whose Service or port is
//! missing (or whose backend we do not serve) still owns its path, with a
//! [`Backend::Unavailable`] the proxy answers 503, so its requests never
//! reach a shorter path or the default backend by accident; a rule whose
//! Service has no ready endpoint has a [`Backend::Service`] with an empty
//! [`EndpointSet`], also 503 until endpoints appear. Invalid hosts and paths
//! and the losers of conflicts are not routed. Each case is reported as a
//! [`Problem`].

#![warn(missing_docs)]

/// The hash maps of the table and its build: foldhash (randomly seeded per
/// process, several times faster than SipHash on short keys like hosts and
/// paths), as a route lookup and a 10,000-Ingress build are mostly hashing.
pub(crate) type FastHashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub mod access;
pub mod affinity;
pub mod annotations;
pub mod auth;
pub mod backend;
pub mod builder;
pub mod canary;
pub mod class;
mod contribution;
pub mod controller_config;
pub mod host;
pub mod l4;
pub mod log_format;
pub mod maglev;
pub mod manifest;
pub mod migration;
pub mod object;
pub mod options;
pub mod path;
pub mod policy;
pub mod problem;
pub mod rewrite;
pub mod snapshot;
pub mod table;
pub mod tls;
pub mod upstream;

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;

pub use backend::{
    Backend, BackendId, EndpointSet, ServiceBackend, ServicePortRef, UnavailableBackend,
};
pub use builder::RouteTableBuilder;
pub use class::{ClassMatch, ClassMismatch, IgnoredIngress, IngressSelection, select_ingresses};
pub use host::HostPattern;
pub use l4::{L4ConfigMaps, L4Protocol, L4ServiceSpec, build_l4_services};
pub use maglev::{MaglevError, MaglevTable};
pub use manifest::{ManifestError, ManifestErrorReason, parse_manifests};
pub use object::{KubeObject, ObjectKey, ObjectKind, ObjectRef, SkippedObject};
pub use options::{CONTROLLER_NAME, DEFAULT_INGRESS_CLASS, DefaultBackendService, ModelOptions};
pub use path::{PathRule, PathType};
pub use problem::{Problem, ProblemReason};
pub use snapshot::{ClusterObjects, namespace_terminating};
pub use table::{
    DefaultOrigin, DefaultRoute, DefaultScope, PathRoute, RouteMatch, RouteRow, RouteRowsTable,
    RouteTable,
};
pub use tls::{TLS_SECRET_TYPE, TlsBinding, TlsPlan};
