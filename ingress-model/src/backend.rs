//! Backends: what a route sends requests to, and how an Ingress backend
//! (Service and port) becomes a set of endpoints through the Service's
//! ports and its EndpointSlices.

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, SocketAddr},
    ops::Deref,
    sync::Arc,
};

use k8s_openapi::{
    api::{
        core::v1::{Service, ServicePort},
        discovery::v1::{Endpoint, EndpointSlice},
        networking::v1::IngressBackend,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};

use crate::{FastHashMap, object::ObjectKey, problem::ProblemReason, snapshot::ClusterObjects};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service port as a backend names it: by number or by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServicePortRef {
    /// `port.number`.
    Number(i32),
    /// `port.name`.
    Name(String),
}

impl fmt::Display for ServicePortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServicePortRef::Number(number) => write!(f, "{number}"),
            ServicePortRef::Name(name) => f.write_str(name),
        }
    }
}

/// The stable identity of a resolved backend: the Service and the number of
/// the Service port. Two routes to the same Service port share it, so the
/// proxy can key per-backend state (a round-robin cursor, a hash ring,
/// connection pools, counters) by it across table rebuilds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendId {
    /// The Service's namespace and name.
    pub service: ObjectKey,
    /// The Service port's number.
    pub port: u16,
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.service, self.port)
    }
}

/// The endpoints of a backend: (address, port) pairs, deduplicated and
/// sorted, behind an `Arc` so cloning is cheap and the proxy can hold them
/// past a table swap.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointSet {
    endpoints: Arc<[SocketAddr]>,
    terminating_fallback: bool,
}

impl EndpointSet {
    /// A set from any endpoints: sorted and deduplicated here.
    pub fn new(endpoints: impl IntoIterator<Item = SocketAddr>) -> Self {
        let unique: BTreeSet<SocketAddr> = endpoints.into_iter().collect();
        Self {
            endpoints: unique.into_iter().collect(),
            terminating_fallback: false,
        }
    }

    /// The empty set.
    pub fn empty() -> Self {
        Self::new([])
    }

    /// The endpoints, sorted.
    pub fn as_slice(&self) -> &[SocketAddr] {
        &self.endpoints
    }

    /// The shared list itself, to keep past a table swap.
    pub fn shared(&self) -> Arc<[SocketAddr]> {
        Arc::clone(&self.endpoints)
    }

    /// Whether the endpoints are serving-but-terminating ones, used because
    /// no endpoint was ready.
    pub fn is_terminating_fallback(&self) -> bool {
        self.terminating_fallback
    }
}

impl Deref for EndpointSet {
    type Target = [SocketAddr];

    fn deref(&self) -> &[SocketAddr] {
        &self.endpoints
    }
}

impl fmt::Display for EndpointSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.endpoints.is_empty() {
            return f.write_str("-");
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{endpoint}")?;
        }
        if self.terminating_fallback {
            f.write_str(" (terminating)")?;
        }
        Ok(())
    }
}

/// A resolved Service backend: its identity and its endpoints (possibly
/// none: the proxy answers 503 until some are ready).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceBackend {
    /// The Service and port.
    pub id: BackendId,
    /// The Service port's name, if it has one.
    pub port_name: Option<String>,
    /// The ready endpoints (or the serving-terminating ones when none is
    /// ready).
    pub endpoints: EndpointSet,
}

/// A backend that cannot be served: the route exists, so requests for it do
/// not fall through to a shorter path or the default backend, and the proxy
/// answers 503.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnavailableBackend {
    /// What the backend names, as written (`ns/service:port`, or the
    /// resource).
    pub target: String,
    /// Why it cannot be served (the same reason as the reported problem).
    pub reason: ProblemReason,
    /// What is wrong, for a person.
    pub message: String,
}

/// What a route sends requests to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A Service port's endpoints; an empty set means 503.
    Service(ServiceBackend),
    /// A backend that names a missing Service or port, or something we do
    /// not serve: 503.
    Unavailable(UnavailableBackend),
    /// The built-in default backend: 404.
    NotFound,
}

impl Backend {
    /// The endpoints to send to: empty for unavailable and not-found
    /// backends.
    pub fn endpoints(&self) -> &[SocketAddr] {
        match self {
            Backend::Service(service) => service.endpoints.as_slice(),
            Backend::Unavailable(_) | Backend::NotFound => &[],
        }
    }

    /// The stable identity, for a resolved Service backend.
    pub fn id(&self) -> Option<&BackendId> {
        match self {
            Backend::Service(service) => Some(&service.id),
            Backend::Unavailable(_) | Backend::NotFound => None,
        }
    }

    /// The status the proxy answers with when it cannot forward: 404 for
    /// the built-in default backend, 503 otherwise.
    pub fn failure_status(&self) -> u16 {
        match self {
            Backend::NotFound => 404,
            Backend::Service(_) | Backend::Unavailable(_) => 503,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Service(service) => match &service.port_name {
                Some(name) => write!(f, "{} ({name})", service.id),
                None => write!(f, "{}", service.id),
            },
            Backend::Unavailable(unavailable) => {
                write!(f, "{} [{}]", unavailable.target, unavailable.reason)
            }
            Backend::NotFound => f.write_str("(built-in 404)"),
        }
    }
}

/// A backend together with the problem found resolving it, if any. The
/// problem is reported once per object that references the backend.
#[derive(Debug, Clone)]
pub(crate) struct Resolution {
    pub backend: Backend,
    pub problem: Option<(ProblemReason, String)>,
}

/// The Service an EndpointSlice belongs to (by its
/// `kubernetes.io/service-name` label), if any.
pub(crate) fn service_of_slice(key: &ObjectKey, slice: &EndpointSlice) -> Option<ObjectKey> {
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_NAME_LABEL))?;
    Some(ObjectKey::new(key.namespace.clone(), service.clone()))
}

/// What one Service's ports resolved to, kept until the Service or one of
/// its EndpointSlices changes.
#[derive(Debug, Default)]
struct ServiceResolutions {
    /// By the port as backends name it.
    ports: Vec<(ServicePortRef, Resolution)>,
    /// Endpoints by Service port number, so a port named by number in one
    /// rule and by name in another still shares one list.
    endpoints: Vec<(u16, (EndpointSet, Option<String>))>,
}

/// The EndpointSlices of each Service and the resolutions made from them:
/// built once from a snapshot, or kept up to date across snapshots (see
/// [`ServiceEndpoints::slice_changed`] and [`ServiceEndpoints::forget`]),
/// so that routes to the same Service port share one endpoint list and a
/// build resolves only what changed.
#[derive(Debug, Default)]
pub(crate) struct ServiceEndpoints {
    /// Per Service, its slices by key (a sorted `Vec`: most Services have
    /// one slice).
    slices: FastHashMap<ObjectKey, Vec<(ObjectKey, Arc<EndpointSlice>)>>,
    resolved: FastHashMap<ObjectKey, ServiceResolutions>,
}

impl ServiceEndpoints {
    /// The EndpointSlices of `objects`, grouped by Service.
    pub fn of(objects: &ClusterObjects) -> Self {
        let mut endpoints = Self::default();
        for (key, slice) in &objects.endpoint_slices {
            endpoints.slice_changed(key, None, Some(slice));
        }
        endpoints
    }

    /// Follows one EndpointSlice from `old` to `new` (either absent),
    /// forgetting what was resolved for the Services it left or joined.
    /// Returns those Services.
    pub fn slice_changed(
        &mut self,
        key: &ObjectKey,
        old: Option<&Arc<EndpointSlice>>,
        new: Option<&Arc<EndpointSlice>>,
    ) -> Vec<ObjectKey> {
        let mut touched = Vec::new();
        if let Some(service) = old.and_then(|old| service_of_slice(key, old)) {
            if let Some(slices) = self.slices.get_mut(&service) {
                if let Ok(at) = slices.binary_search_by(|(k, _)| k.cmp(key)) {
                    slices.remove(at);
                }
                if slices.is_empty() {
                    self.slices.remove(&service);
                }
            }
            touched.push(service);
        }
        if let Some(new) = new
            && let Some(service) = service_of_slice(key, new)
        {
            let slices = self.slices.entry(service.clone()).or_default();
            match slices.binary_search_by(|(k, _)| k.cmp(key)) {
                Ok(at) => slices[at].1 = Arc::clone(new),
                Err(at) => slices.insert(at, (key.clone(), Arc::clone(new))),
            }
            if !touched.contains(&service) {
                touched.push(service);
            }
        }
        for service in &touched {
            self.forget(service);
        }
        touched
    }

    /// Forgets what was resolved for `service` (it changed).
    pub fn forget(&mut self, service: &ObjectKey) {
        self.resolved.remove(service);
    }

    /// A resolver over `objects`' Services and these slices.
    pub fn resolver<'a>(&'a mut self, objects: &'a ClusterObjects) -> BackendResolver<'a> {
        BackendResolver {
            objects,
            endpoints: self,
        }
    }
}

/// Resolves Ingress backends against one snapshot, remembering each
/// Service port it resolved so routes to it share one endpoint list.
pub(crate) struct BackendResolver<'a> {
    objects: &'a ClusterObjects,
    endpoints: &'a mut ServiceEndpoints,
}

impl BackendResolver<'_> {
    /// Resolves an Ingress backend of an Ingress in `namespace`.
    pub fn resolve_ingress_backend(
        &mut self,
        namespace: &str,
        backend: &IngressBackend,
    ) -> Resolution {
        if let Some(resource) = &backend.resource {
            let target = format!(
                "{}/{} {}",
                resource.api_group.as_deref().unwrap_or("core"),
                resource.kind,
                resource.name
            );
            let message = format!("resource backend {target} is not supported");
            return unavailable(target, ProblemReason::UnsupportedBackend, message);
        }
        let Some(service) = &backend.service else {
            return unavailable(
                "-".to_owned(),
                ProblemReason::InvalidBackend,
                "backend names neither a service nor a resource".to_owned(),
            );
        };
        let key = ObjectKey::new(namespace, service.name.clone());
        let port = service.port.as_ref();
        let port = match (
            port.and_then(|p| p.number),
            port.and_then(|p| p.name.as_ref()).filter(|n| !n.is_empty()),
        ) {
            (Some(number), None) => ServicePortRef::Number(number),
            (None, Some(name)) => ServicePortRef::Name(name.clone()),
            (number, name) => {
                let what = if number.is_some() && name.is_some() {
                    "both a port number and a port name"
                } else {
                    "no port"
                };
                return unavailable(
                    key.to_string(),
                    ProblemReason::InvalidBackend,
                    format!("backend for Service {key} has {what}"),
                );
            }
        };
        self.resolve_service_port(key, port)
    }

    /// Resolves a Service port; `None` takes the Service's first port (the
    /// configured default backend may name no port).
    pub fn resolve_service(
        &mut self,
        key: &ObjectKey,
        port: Option<&ServicePortRef>,
    ) -> Resolution {
        if let Some(port) = port {
            return self.resolve_service_port(key.clone(), port.clone());
        }
        let Some(service) = self.objects.services.get(key) else {
            let message = format!("Service {key} not found");
            return unavailable(key.to_string(), ProblemReason::ServiceNotFound, message);
        };
        let first = service
            .spec
            .as_ref()
            .and_then(|spec| spec.ports.as_ref())
            .and_then(|ports| ports.first());
        match first {
            Some(first) => {
                self.resolve_service_port(key.clone(), ServicePortRef::Number(first.port))
            }
            None => {
                let message = format!("Service {key} has no ports");
                unavailable(key.to_string(), ProblemReason::PortNotFound, message)
            }
        }
    }

    fn resolve_service_port(&mut self, key: ObjectKey, port: ServicePortRef) -> Resolution {
        let known = self.endpoints.resolved.get(&key).and_then(|service| {
            service
                .ports
                .iter()
                .find(|(known, _)| *known == port)
                .map(|(_, resolution)| resolution.clone())
        });
        if let Some(resolution) = known {
            return resolution;
        }
        let resolution = self.resolve_uncached(&key, &port, None);
        self.endpoints
            .resolved
            .entry(key)
            .or_default()
            .ports
            .push((port, resolution.clone()));
        resolution
    }

    /// Resolves a Service port that must carry `protocol` (`TCP`, `UDP`),
    /// for the L4 tier: a Service may have port 53 twice, once per protocol.
    /// Not cached (the caches are keyed without the protocol).
    pub fn resolve_service_port_with_protocol(
        &mut self,
        key: &ObjectKey,
        port: &ServicePortRef,
        protocol: &str,
    ) -> Resolution {
        self.resolve_uncached(key, port, Some(protocol))
    }

    fn resolve_uncached(
        &mut self,
        key: &ObjectKey,
        port: &ServicePortRef,
        protocol: Option<&str>,
    ) -> Resolution {
        let target = format!("{key}:{port}");
        let Some(service) = self.objects.services.get(key) else {
            let message = format!("Service {key} not found");
            return unavailable(target, ProblemReason::ServiceNotFound, message);
        };
        let spec = service.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            let message = format!("Service {key} is of type ExternalName, which is not supported");
            return unavailable(target, ProblemReason::UnsupportedBackend, message);
        }
        let Some(service_port) = find_service_port(service, port, protocol) else {
            let message = match protocol {
                Some(protocol) => format!("Service {key} has no {protocol} port {port}"),
                None => format!("Service {key} has no port {port}"),
            };
            return unavailable(target, ProblemReason::PortNotFound, message);
        };
        let Ok(port_number) = u16::try_from(service_port.port) else {
            let message = format!("Service {key} port {port} is out of range");
            return unavailable(target, ProblemReason::PortNotFound, message);
        };
        let id = BackendId {
            service: key.clone(),
            port: port_number,
        };
        let slices: Vec<&EndpointSlice> = self
            .endpoints
            .slices
            .get(key)
            .map(|slices| slices.iter().map(|(_, slice)| &**slice).collect())
            .unwrap_or_default();
        let (endpoints, why_empty) = if protocol.is_some() {
            endpoints_of(service_port, &slices)
        } else {
            let resolved = self.endpoints.resolved.entry(key.clone()).or_default();
            match resolved
                .endpoints
                .iter()
                .find(|(port, _)| *port == port_number)
            {
                Some((_, found)) => found.clone(),
                None => {
                    let found = endpoints_of(service_port, &slices);
                    resolved.endpoints.push((port_number, found.clone()));
                    found
                }
            }
        };
        let problem = why_empty.map(|why| {
            (
                ProblemReason::NoEndpoints,
                format!("Service {key} port {port} has no endpoints: {why}"),
            )
        });
        Resolution {
            backend: Backend::Service(ServiceBackend {
                id,
                port_name: service_port.name.clone().filter(|n| !n.is_empty()),
                endpoints,
            }),
            problem,
        }
    }
}

fn unavailable(target: String, reason: ProblemReason, message: String) -> Resolution {
    Resolution {
        backend: Backend::Unavailable(UnavailableBackend {
            target,
            reason,
            message: message.clone(),
        }),
        problem: Some((reason, message)),
    }
}

fn find_service_port<'s>(
    service: &'s Service,
    port: &ServicePortRef,
    protocol: Option<&str>,
) -> Option<&'s ServicePort> {
    let ports = service.spec.as_ref()?.ports.as_ref()?;
    ports.iter().find(|p| {
        let named = match port {
            ServicePortRef::Number(number) => p.port == *number,
            ServicePortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
        };
        named && protocol.is_none_or(|wanted| p.protocol.as_deref().unwrap_or("TCP") == wanted)
    })
}

/// The endpoints of one Service port over the Service's slices: ready ones,
/// or, when none is ready anywhere, the serving-and-terminating ones. When
/// the result is empty, says why.
fn endpoints_of(
    service_port: &ServicePort,
    slices: &[&EndpointSlice],
) -> (EndpointSet, Option<String>) {
    if slices.is_empty() {
        return (EndpointSet::empty(), Some("no EndpointSlice".to_owned()));
    }
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    let mut slices_with_port = 0;
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let Some(port) = slice_port(service_port, slice) else {
            continue;
        };
        slices_with_port += 1;
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(address) = endpoint_address(endpoint) else {
                continue;
            };
            match endpoint_state(endpoint) {
                EndpointState::Ready => ready.push(SocketAddr::new(address, port)),
                EndpointState::ServingTerminating => {
                    terminating.push(SocketAddr::new(address, port));
                }
                EndpointState::NotServing => {}
            }
        }
    }
    if !ready.is_empty() {
        return (EndpointSet::new(ready), None);
    }
    if !terminating.is_empty() {
        let mut set = EndpointSet::new(terminating);
        set.terminating_fallback = true;
        return (set, None);
    }
    let why = if slices_with_port == 0 {
        "no EndpointSlice has a matching IP port"
    } else {
        "no endpoint is ready or serving"
    };
    (EndpointSet::empty(), Some(why.to_owned()))
}

/// The port number endpoints of `slice` listen on for `service_port`.
///
/// Slice ports carry the Service port's name (empty for an unnamed port) and
/// the target port already resolved per pod, so a named `targetPort` needs
/// no lookup here. A slice without ports (`ports: null` or empty), or a
/// slice port without a number ("all ports"), falls back to a numeric
/// `targetPort` (or the port itself when `targetPort` is unset); with a
/// named `targetPort` such a slice gives no endpoints.
fn slice_port(service_port: &ServicePort, slice: &EndpointSlice) -> Option<u16> {
    let name = service_port.name.as_deref().unwrap_or_default();
    let protocol = service_port.protocol.as_deref().unwrap_or("TCP");
    let number = match slice.ports.as_deref() {
        None | Some([]) => None,
        Some(ports) => {
            let found = ports.iter().find(|p| {
                p.name.as_deref().unwrap_or_default() == name
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol
            })?;
            found.port
        }
    };
    let number = match number {
        Some(number) => number,
        None => match &service_port.target_port {
            None => service_port.port,
            Some(IntOrString::Int(number)) => *number,
            Some(IntOrString::String(_)) => return None,
        },
    };
    u16::try_from(number).ok().filter(|n| *n != 0)
}

fn endpoint_address(endpoint: &Endpoint) -> Option<IpAddr> {
    // All addresses of an endpoint are the same backend; consumers may
    // use only the first (as kube-proxy does).
    endpoint.addresses.first()?.parse().ok()
}

enum EndpointState {
    Ready,
    ServingTerminating,
    NotServing,
}

/// The conditions as the EndpointSlice API documents them: `ready` nil
/// means ready, `serving` nil defers to `ready`, `terminating` nil means not
/// terminating.
fn endpoint_state(endpoint: &Endpoint) -> EndpointState {
    let conditions = endpoint.conditions.as_ref();
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    if ready {
        EndpointState::Ready
    } else if serving && terminating {
        EndpointState::ServingTerminating
    } else {
        EndpointState::NotServing
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::networking::v1::{IngressServiceBackend, ServiceBackendPort};

    use super::*;
    use crate::{
        fixtures::{Target, backend, resource_backend, service, slice, world},
        object::KubeObject,
    };

    /// What a resolution came to, compactly: the endpoints (with `~` in
    /// front for the terminating fallback), or the problem reason.
    fn outcome(resolution: &Resolution) -> String {
        let problem = resolution.problem.as_ref().map(|(reason, _)| *reason);
        match (&resolution.backend, problem) {
            (Backend::Service(service), None) => {
                let prefix = if service.endpoints.is_terminating_fallback() {
                    "~"
                } else {
                    ""
                };
                format!("{prefix}{}", service.endpoints)
            }
            (Backend::Service(service), Some(reason)) => {
                assert!(service.endpoints.is_empty());
                reason.to_string()
            }
            (Backend::Unavailable(unavailable), Some(reason)) => {
                assert_eq!(unavailable.reason, reason);
                format!("unavailable {reason}")
            }
            (other, problem) => panic!("unexpected {other:?} {problem:?}"),
        }
    }

    fn resolve(objects: Vec<KubeObject>, ingress_backend: IngressBackend) -> String {
        let snapshot = world(objects);
        let mut endpoints = ServiceEndpoints::of(&snapshot);
        let mut resolver = endpoints.resolver(&snapshot);
        outcome(&resolver.resolve_ingress_backend("ns", &ingress_backend))
    }

    #[test]
    fn service_ports_resolve_to_slice_ports() {
        let web = || {
            service("ns", "web")
                .port(Some("http"), 80, Target::Name("web"))
                .port(Some("admin"), 9000, Target::Number(9090))
                .object()
        };
        let web_slice = || {
            slice("ns", "web-1", "web")
                .port(Some("http"), Some(8081))
                .port(Some("admin"), Some(9090))
                .ready("10.0.0.1")
                .object()
        };
        let single = |target: Target| service("ns", "one").port(None, 80, target).object();
        let cases: Vec<(&str, Vec<KubeObject>, IngressBackend, &str)> = vec![
            (
                "number, numeric targetPort",
                vec![
                    single(Target::Number(8080)),
                    slice("ns", "one-1", "one")
                        .port(None, Some(8080))
                        .ready("10.0.0.1")
                        .object(),
                ],
                backend("one", 80),
                "10.0.0.1:8080",
            ),
            (
                "name, named targetPort resolved by the slice",
                vec![web(), web_slice()],
                backend("web", "http"),
                "10.0.0.1:8081",
            ),
            (
                "number of a named port",
                vec![web(), web_slice()],
                backend("web", 80),
                "10.0.0.1:8081",
            ),
            (
                "second port of a multi-port service by number",
                vec![web(), web_slice()],
                backend("web", 9000),
                "10.0.0.1:9090",
            ),
            (
                "second port by name",
                vec![web(), web_slice()],
                backend("web", "admin"),
                "10.0.0.1:9090",
            ),
            (
                "unknown number",
                vec![web(), web_slice()],
                backend("web", 81),
                "unavailable PortNotFound",
            ),
            (
                "unknown name",
                vec![web(), web_slice()],
                backend("web", "grpc"),
                "unavailable PortNotFound",
            ),
            (
                "the target port number is not a service port",
                vec![web(), web_slice()],
                backend("web", 9090),
                "unavailable PortNotFound",
            ),
            (
                "missing service",
                vec![web_slice()],
                backend("web", 80),
                "unavailable ServiceNotFound",
            ),
            (
                "ports: null uses a numeric targetPort",
                vec![
                    single(Target::Number(8080)),
                    slice("ns", "one-1", "one").ready("10.0.0.1").object(),
                ],
                backend("one", 80),
                "10.0.0.1:8080",
            ),
            (
                "ports: null without targetPort uses the port",
                vec![
                    single(Target::Unset),
                    slice("ns", "one-1", "one").ready("10.0.0.1").object(),
                ],
                backend("one", 80),
                "10.0.0.1:80",
            ),
            (
                "ports: null with a named targetPort gives nothing",
                vec![
                    single(Target::Name("web")),
                    slice("ns", "one-1", "one").ready("10.0.0.1").object(),
                ],
                backend("one", 80),
                "NoEndpoints",
            ),
            (
                "a slice port without a number means the target port",
                vec![
                    single(Target::Number(8080)),
                    slice("ns", "one-1", "one")
                        .port(None, None)
                        .ready("10.0.0.1")
                        .object(),
                ],
                backend("one", 80),
                "10.0.0.1:8080",
            ),
            (
                "slice port names must match",
                vec![
                    single(Target::Number(8080)),
                    slice("ns", "one-1", "one")
                        .port(Some("other"), Some(8080))
                        .ready("10.0.0.1")
                        .object(),
                ],
                backend("one", 80),
                "NoEndpoints",
            ),
            (
                "a UDP slice port is not the TCP service port",
                vec![
                    single(Target::Number(8080)),
                    slice("ns", "one-1", "one")
                        .udp_port(None, 8080)
                        .ready("10.0.0.1")
                        .object(),
                ],
                backend("one", 80),
                "NoEndpoints",
            ),
            (
                "no slices at all",
                vec![single(Target::Number(8080))],
                backend("one", 80),
                "NoEndpoints",
            ),
            (
                "slices of another service, another namespace or unlabelled do not count",
                vec![
                    single(Target::Number(8080)),
                    slice("ns", "two-1", "two")
                        .port(None, Some(8080))
                        .ready("10.0.0.1")
                        .object(),
                    slice("other", "one-1", "one")
                        .port(None, Some(8080))
                        .ready("10.0.0.2")
                        .object(),
                    {
                        let mut unlabelled = slice("ns", "one-x", "one")
                            .port(None, Some(8080))
                            .ready("10.0.0.3")
                            .build();
                        unlabelled.metadata.labels = None;
                        KubeObject::EndpointSlice(unlabelled)
                    },
                ],
                backend("one", 80),
                "NoEndpoints",
            ),
            (
                "ExternalName services are not served",
                vec![
                    service("ns", "ext")
                        .external_name("example.com")
                        .port(None, 80, Target::Unset)
                        .object(),
                ],
                backend("ext", 80),
                "unavailable UnsupportedBackend",
            ),
            (
                "resource backends are not served",
                vec![],
                resource_backend("StorageBucket", "static"),
                "unavailable UnsupportedBackend",
            ),
            (
                "a backend with neither service nor resource",
                vec![],
                IngressBackend::default(),
                "unavailable InvalidBackend",
            ),
            (
                "a service backend without a port",
                vec![single(Target::Unset)],
                IngressBackend {
                    service: Some(IngressServiceBackend {
                        name: "one".into(),
                        port: None,
                    }),
                    resource: None,
                },
                "unavailable InvalidBackend",
            ),
            (
                "a service backend with both a port number and name",
                vec![single(Target::Unset)],
                IngressBackend {
                    service: Some(IngressServiceBackend {
                        name: "one".into(),
                        port: Some(ServiceBackendPort {
                            name: Some("http".into()),
                            number: Some(80),
                        }),
                    }),
                    resource: None,
                },
                "unavailable InvalidBackend",
            ),
        ];
        for (name, objects, ingress_backend, expected) in cases {
            assert_eq!(resolve(objects, ingress_backend), expected, "{name}");
        }
    }

    #[test]
    fn endpoint_conditions_and_the_terminating_fallback() {
        let one = || {
            service("ns", "one")
                .port(None, 80, Target::Number(8080))
                .object()
        };
        let base = || slice("ns", "one-1", "one").port(None, Some(8080));
        let t = Some(true);
        let f = Some(false);
        let cases: Vec<(&str, Vec<KubeObject>, &str)> = vec![
            (
                "ready true and ready nil count",
                vec![
                    one(),
                    base()
                        .endpoint("10.0.0.2", t, t, f)
                        .endpoint("10.0.0.1", None, None, None)
                        .object(),
                ],
                "10.0.0.1:8080,10.0.0.2:8080",
            ),
            (
                "not ready and not serving is out",
                vec![
                    one(),
                    base()
                        .endpoint("10.0.0.1", f, f, f)
                        .ready("10.0.0.2")
                        .object(),
                ],
                "10.0.0.2:8080",
            ),
            (
                "serving-terminating only when none is ready",
                vec![
                    one(),
                    base()
                        .endpoint("10.0.0.1", f, t, t)
                        .ready("10.0.0.2")
                        .object(),
                ],
                "10.0.0.2:8080",
            ),
            (
                "serving-terminating as the fallback",
                vec![
                    one(),
                    base()
                        .endpoint("10.0.0.1", f, t, t)
                        .endpoint("10.0.0.3", f, f, t)
                        .object(),
                ],
                "~10.0.0.1:8080 (terminating)",
            ),
            (
                "the fallback spans slices",
                vec![
                    one(),
                    base().endpoint("10.0.0.1", f, t, t).object(),
                    slice("ns", "one-2", "one")
                        .port(None, Some(8080))
                        .ready("10.0.0.9")
                        .object(),
                ],
                "10.0.0.9:8080",
            ),
            (
                "serving nil defers to ready",
                vec![one(), base().endpoint("10.0.0.1", f, None, t).object()],
                "NoEndpoints",
            ),
            (
                "not ready, serving, not terminating is out",
                vec![one(), base().endpoint("10.0.0.1", f, t, f).object()],
                "NoEndpoints",
            ),
            (
                "duplicates across slices are merged and sorted",
                vec![
                    one(),
                    base().ready("10.0.0.3").ready("10.0.0.1").object(),
                    slice("ns", "one-2", "one")
                        .port(None, Some(8080))
                        .ready("10.0.0.1")
                        .ready("10.0.0.2")
                        .object(),
                ],
                "10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080",
            ),
            (
                "IPv6 slices",
                vec![
                    one(),
                    slice("ns", "one-6", "one")
                        .address_type("IPv6")
                        .port(None, Some(8080))
                        .ready("fd00::1")
                        .object(),
                ],
                "[fd00::1]:8080",
            ),
            (
                "FQDN slices and unparsable addresses are skipped",
                vec![
                    one(),
                    slice("ns", "one-f", "one")
                        .address_type("FQDN")
                        .port(None, Some(8080))
                        .ready("a.example.com")
                        .object(),
                    base().ready("not-an-ip").object(),
                ],
                "NoEndpoints",
            ),
        ];
        for (name, objects, expected) in cases {
            assert_eq!(resolve(objects, backend("one", 80)), expected, "{name}");
        }
    }

    #[test]
    fn routes_to_the_same_service_port_share_one_endpoint_list() {
        let snapshot = world([
            service("ns", "web")
                .port(Some("http"), 80, Target::Number(8080))
                .object(),
            slice("ns", "web-1", "web")
                .port(Some("http"), Some(8080))
                .ready("10.0.0.1")
                .object(),
        ]);
        let mut endpoints = ServiceEndpoints::of(&snapshot);
        let mut resolver = endpoints.resolver(&snapshot);
        let by_number = resolver
            .resolve_ingress_backend("ns", &backend("web", 80))
            .backend;
        let again = resolver
            .resolve_ingress_backend("ns", &backend("web", 80))
            .backend;
        let (Backend::Service(a), Backend::Service(b)) = (&by_number, &again) else {
            panic!("not resolved");
        };
        assert!(Arc::ptr_eq(&a.endpoints.shared(), &b.endpoints.shared()));
        let by_name = resolver
            .resolve_ingress_backend("ns", &backend("web", "http"))
            .backend;
        assert_eq!(by_name.id(), by_number.id());
        let Backend::Service(c) = &by_name else {
            panic!("not resolved");
        };
        assert!(Arc::ptr_eq(&a.endpoints.shared(), &c.endpoints.shared()));
        assert_eq!(by_number.id().unwrap().to_string(), "ns/web:80");
        assert_eq!(by_number.to_string(), "ns/web:80 (http)");
        assert_eq!(by_number.failure_status(), 503);
        assert_eq!(Backend::NotFound.failure_status(), 404);
    }

    #[test]
    fn a_configured_service_without_a_port_takes_its_first_port() {
        let snapshot = world([
            service("ns", "fallback")
                .port(Some("http"), 80, Target::Number(8080))
                .port(Some("https"), 443, Target::Number(8443))
                .object(),
            slice("ns", "fallback-1", "fallback")
                .port(Some("http"), Some(8080))
                .port(Some("https"), Some(8443))
                .ready("10.0.0.1")
                .object(),
            service("ns", "portless").object(),
        ]);
        let mut endpoints = ServiceEndpoints::of(&snapshot);
        let mut resolver = endpoints.resolver(&snapshot);
        let key = ObjectKey::new("ns", "fallback");
        assert_eq!(
            outcome(&resolver.resolve_service(&key, None)),
            "10.0.0.1:8080"
        );
        let https = ServicePortRef::Name("https".into());
        assert_eq!(
            outcome(&resolver.resolve_service(&key, Some(&https))),
            "10.0.0.1:8443"
        );
        let portless = ObjectKey::new("ns", "portless");
        assert_eq!(
            outcome(&resolver.resolve_service(&portless, None)),
            "unavailable PortNotFound"
        );
        let missing = ObjectKey::new("ns", "missing");
        assert_eq!(
            outcome(&resolver.resolve_service(&missing, None)),
            "unavailable ServiceNotFound"
        );
    }

    #[test]
    fn endpoint_sets_sort_deduplicate_and_clone_cheaply() {
        let a: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let c: SocketAddr = "[::1]:80".parse().unwrap();
        let set = EndpointSet::new([c, a, b, a]);
        assert_eq!(set.as_slice(), [b, a, c]);
        assert_eq!(set.len(), 3);
        let copy = set.clone();
        assert!(Arc::ptr_eq(&set.shared(), &copy.shared()));
        assert_eq!(EndpointSet::empty().to_string(), "-");
    }
}
