//! The L4 services: ingress-nginx's TCP and UDP services ConfigMaps
//! (`--tcp-services-configmap`, `--udp-services-configmap`), each entry
//! `"<listen port>": "<namespace>/<service>:<port>"`, resolved against the
//! same snapshot as the routes: the Service port (of that protocol) and its
//! ready endpoints, as for an Ingress backend.
//!
//! ingress-nginx's optional `:PROXY` fields (PROXY protocol to decode from
//! clients, to send to backends) are not supported: such an entry is
//! reported and not served, since its backends would get what they do not
//! expect.

use std::fmt;

use crate::{
    backend::{Backend, BackendId, EndpointSet, ServiceEndpoints, ServicePortRef},
    object::{ObjectKey, ObjectKind, ObjectRef},
    problem::{Problem, ProblemReason},
    snapshot::ClusterObjects,
};

/// The transport protocol of an L4 service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4Protocol {
    /// TCP (`--tcp-services-configmap`).
    Tcp,
    /// UDP (`--udp-services-configmap`).
    Udp,
}

impl L4Protocol {
    /// `TCP` or `UDP`, as Service and EndpointSlice ports spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            L4Protocol::Tcp => "TCP",
            L4Protocol::Udp => "UDP",
        }
    }
}

impl fmt::Display for L4Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One L4 service: a listen port of the edge and the endpoints it balances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L4ServiceSpec {
    /// TCP or UDP.
    pub protocol: L4Protocol,
    /// The port clients connect to on the edge.
    pub port: u16,
    /// The Service and Service port.
    pub backend: BackendId,
    /// The ready endpoints (empty: packets go to the stack, which refuses them).
    pub endpoints: EndpointSet,
    /// The ConfigMap the entry comes from.
    pub source: ObjectRef,
}

/// Where the TCP and UDP services ConfigMaps are (`None`: not configured).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct L4ConfigMaps {
    /// `--tcp-services-configmap`.
    pub tcp: Option<ObjectKey>,
    /// `--udp-services-configmap`.
    pub udp: Option<ObjectKey>,
}

impl L4ConfigMaps {
    /// True when neither ConfigMap is configured.
    pub fn is_empty(&self) -> bool {
        self.tcp.is_none() && self.udp.is_none()
    }

    /// The ConfigMaps named, once each.
    pub fn keys(&self) -> Vec<ObjectKey> {
        let mut keys: Vec<ObjectKey> = self.tcp.iter().chain(&self.udp).cloned().collect();
        keys.dedup();
        keys
    }
}

/// The L4 services of `objects`, sorted by (protocol, port), and the problems
/// found. An entry that cannot be served is left out and reported; a
/// Service without ready endpoints is kept (with none) and reported.
pub fn build_l4_services(
    objects: &ClusterObjects,
    config_maps: &L4ConfigMaps,
) -> (Vec<L4ServiceSpec>, Vec<Problem>) {
    let mut endpoints = ServiceEndpoints::of(objects);
    let mut resolver = endpoints.resolver(objects);
    let mut services = Vec::new();
    let mut problems = Vec::new();
    for (protocol, key) in [
        (L4Protocol::Tcp, &config_maps.tcp),
        (L4Protocol::Udp, &config_maps.udp),
    ] {
        let Some(key) = key else { continue };
        let source = ObjectRef::new(ObjectKind::ConfigMap, key.clone());
        let Some(config_map) = objects.config_maps.get(key) else {
            problems.push(Problem::new(
                source,
                ProblemReason::ConfigMapNotFound,
                format!(
                    "{protocol} services ConfigMap {key} not found: no {protocol} service is served"
                ),
            ));
            continue;
        };
        for (port, value) in config_map.data.iter().flatten() {
            let problem = |reason, message: String| {
                Problem::new(
                    source.clone(),
                    reason,
                    format!("{protocol} port {port:?}: {message}"),
                )
            };
            let entry = match parse_entry(port, value) {
                Ok(entry) => entry,
                Err((reason, message)) => {
                    problems.push(problem(reason, message));
                    continue;
                }
            };
            let resolution = resolver.resolve_service_port_with_protocol(
                &entry.service,
                &entry.port,
                protocol.as_str(),
            );
            if let Some((reason, message)) = resolution.problem {
                problems.push(problem(reason, message));
            }
            let Backend::Service(backend) = resolution.backend else {
                continue;
            };
            services.push(L4ServiceSpec {
                protocol,
                port: entry.listen_port,
                backend: backend.id,
                endpoints: backend.endpoints,
                source: source.clone(),
            });
        }
    }
    services.sort_by_key(|service| (service.protocol, service.port));
    (services, problems)
}

/// One ConfigMap entry, read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    listen_port: u16,
    service: ObjectKey,
    port: ServicePortRef,
}

/// Reads `"<port>": "<namespace>/<service>:<port>[:PROXY[:PROXY]]"`.
fn parse_entry(key: &str, value: &str) -> Result<Entry, (ProblemReason, String)> {
    let invalid = |message: String| (ProblemReason::InvalidL4Service, message);
    let listen_port = key
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| invalid(format!("{key:?} is not a port number (1-65535)")))?;
    let fields: Vec<&str> = value.trim().split(':').collect();
    if fields.len() < 2 || fields.len() > 4 {
        return Err(invalid(format!(
            "{value:?} is not <namespace>/<service>:<port>"
        )));
    }
    for (field, what) in fields[2..].iter().zip(["decoding", "encoding"]) {
        match *field {
            "" => {}
            "PROXY" => {
                return Err((
                    ProblemReason::UnsupportedBackend,
                    format!("{value:?} asks for PROXY protocol {what}, which is not supported"),
                ));
            }
            other => {
                return Err(invalid(format!(
                    "{value:?}: {other:?} is neither PROXY nor empty"
                )));
            }
        }
    }
    let (namespace, name) = fields[0]
        .split_once('/')
        .filter(|(namespace, name)| {
            !namespace.is_empty() && !name.is_empty() && !name.contains('/')
        })
        .ok_or_else(|| {
            invalid(format!(
                "{value:?} does not name a Service as <namespace>/<service>"
            ))
        })?;
    let port = match fields[1] {
        "" => return Err(invalid(format!("{value:?} has no Service port"))),
        text => match text.parse::<i32>() {
            Ok(number) if (1..=65535).contains(&number) => ServicePortRef::Number(number),
            Ok(_) => return Err(invalid(format!("{value:?}: port {text} is out of range"))),
            Err(_) => ServicePortRef::Name(text.to_owned()),
        },
    };
    Ok(Entry {
        listen_port,
        service: ObjectKey::new(namespace, name),
        port,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{
        api::core::v1::{ConfigMap, ServicePort},
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    use super::*;
    use crate::{
        fixtures::{Target, ready_service, service, slice, world},
        object::KubeObject,
    };

    fn config_map(namespace: &str, name: &str, data: &[(&str, &str)]) -> KubeObject {
        KubeObject::ConfigMap(ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ConfigMap::default()
        })
    }

    fn tcp_only(namespace: &str, name: &str) -> L4ConfigMaps {
        L4ConfigMaps {
            tcp: Some(ObjectKey::new(namespace, name)),
            udp: None,
        }
    }

    #[test]
    fn entries_parse_as_ingress_nginx_writes_them() {
        let entry = parse_entry("9000", "default/echo:8080").unwrap();
        assert_eq!(entry.listen_port, 9000);
        assert_eq!(entry.service, ObjectKey::new("default", "echo"));
        assert_eq!(entry.port, ServicePortRef::Number(8080));
        let named = parse_entry(" 53 ", "kube-system/dns:dns-udp::").unwrap();
        assert_eq!(named.port, ServicePortRef::Name("dns-udp".into()));
        for (key, value, reason) in [
            ("0", "a/b:1", ProblemReason::InvalidL4Service),
            ("http", "a/b:1", ProblemReason::InvalidL4Service),
            ("70000", "a/b:1", ProblemReason::InvalidL4Service),
            ("80", "b:1", ProblemReason::InvalidL4Service),
            ("80", "a/b", ProblemReason::InvalidL4Service),
            ("80", "a/b:", ProblemReason::InvalidL4Service),
            ("80", "a/b:0", ProblemReason::InvalidL4Service),
            ("80", "a/b:1:x", ProblemReason::InvalidL4Service),
            ("80", "a/b:1:PROXY", ProblemReason::UnsupportedBackend),
            ("80", "a/b:1::PROXY", ProblemReason::UnsupportedBackend),
            ("80", "a/b:1:::", ProblemReason::InvalidL4Service),
        ] {
            assert_eq!(
                parse_entry(key, value).map_err(|(reason, _)| reason),
                Err(reason),
                "{key}: {value}"
            );
        }
    }

    #[test]
    fn services_resolve_to_their_ready_endpoints() {
        let [svc, eps] = ready_service("default", "echo", 8080, 9090, &["10.0.0.2", "10.0.0.1"]);
        let objects = world([
            svc,
            eps,
            config_map(
                "ingress",
                "tcp",
                &[
                    ("9000", "default/echo:8080"),
                    ("9001", "default/missing:80"),
                    ("9002", "default/echo:8080:PROXY"),
                ],
            ),
        ]);
        let (services, problems) = build_l4_services(&objects, &tcp_only("ingress", "tcp"));
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].protocol, L4Protocol::Tcp);
        assert_eq!(services[0].port, 9000);
        assert_eq!(services[0].backend.to_string(), "default/echo:8080");
        assert_eq!(
            services[0].endpoints.to_string(),
            "10.0.0.1:9090,10.0.0.2:9090"
        );
        assert_eq!(services[0].source.to_string(), "ConfigMap ingress/tcp");
        let reasons: Vec<_> = problems.iter().map(|p| p.reason).collect();
        assert_eq!(
            reasons,
            vec![
                ProblemReason::ServiceNotFound,
                ProblemReason::UnsupportedBackend
            ]
        );
        assert!(problems[0].message.contains("9001"), "{}", problems[0]);
    }

    #[test]
    fn udp_services_take_the_udp_port_of_a_service_with_both() {
        let mut dns = service("kube-system", "dns")
            .port(Some("dns-tcp"), 53, Target::Number(5353))
            .port(Some("dns-udp"), 53, Target::Number(5353))
            .build();
        let ports: &mut Vec<ServicePort> = dns.spec.as_mut().unwrap().ports.as_mut().unwrap();
        ports[1].protocol = Some("UDP".into());
        let objects = world([
            KubeObject::Service(dns),
            slice("kube-system", "dns-1", "dns")
                .port(Some("dns-tcp"), Some(5353))
                .udp_port(Some("dns-udp"), 5354)
                .ready("10.0.0.5")
                .object(),
            config_map("ingress", "udp", &[("53", "kube-system/dns:53")]),
            config_map("ingress", "tcp", &[("53", "kube-system/dns:53")]),
        ]);
        let maps = L4ConfigMaps {
            tcp: Some(ObjectKey::new("ingress", "tcp")),
            udp: Some(ObjectKey::new("ingress", "udp")),
        };
        let (services, problems) = build_l4_services(&objects, &maps);
        assert!(problems.is_empty(), "{problems:?}");
        let described: Vec<_> = services
            .iter()
            .map(|s| format!("{} {} {}", s.protocol, s.port, s.endpoints))
            .collect();
        assert_eq!(
            described,
            vec!["TCP 53 10.0.0.5:5353", "UDP 53 10.0.0.5:5354"]
        );
    }

    #[test]
    fn a_missing_config_map_and_empty_endpoints_are_reported() {
        let objects = world([
            service("default", "idle")
                .port(None, 80, Target::Unset)
                .object(),
            config_map("ingress", "tcp", &[("8000", "default/idle:80")]),
        ]);
        let maps = L4ConfigMaps {
            tcp: Some(ObjectKey::new("ingress", "tcp")),
            udp: Some(ObjectKey::new("ingress", "nope")),
        };
        let (services, problems) = build_l4_services(&objects, &maps);
        assert_eq!(services.len(), 1);
        assert!(services[0].endpoints.is_empty());
        let reasons: Vec<_> = problems.iter().map(|p| p.reason).collect();
        assert_eq!(
            reasons,
            vec![ProblemReason::NoEndpoints, ProblemReason::ConfigMapNotFound]
        );
        assert!(L4ConfigMaps::default().is_empty());
    }
}
