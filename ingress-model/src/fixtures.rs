//! Test fixtures: short builders for the Kubernetes objects the tests need.
//!
//! Built for this crate's tests and, with the `fixtures` feature (enabled
//! only from dev-dependencies), for the tests of the crates that use the
//! model, so every test builds its objects the same way.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        core::v1::{
            Namespace, NamespaceStatus, Secret, Service, ServicePort, ServiceSpec,
            TypedLocalObjectReference,
        },
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
        networking::v1::{
            HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressClass,
            IngressClassSpec, IngressRule, IngressServiceBackend, IngressSpec, IngressTLS,
            ServiceBackendPort,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{ObjectMeta, Time},
        util::intstr::IntOrString,
    },
    jiff::Timestamp,
};

use crate::{
    backend::SERVICE_NAME_LABEL,
    class::DEFAULT_CLASS_ANNOTATION,
    object::KubeObject,
    options::{CONTROLLER_NAME, DEFAULT_INGRESS_CLASS},
    snapshot::ClusterObjects,
};

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

/// A port as a test writes it: a number or a name.
pub trait IntoPort {
    /// The port of a Service backend.
    fn into_port(self) -> ServiceBackendPort;
}

impl IntoPort for i32 {
    fn into_port(self) -> ServiceBackendPort {
        ServiceBackendPort {
            number: Some(self),
            name: None,
        }
    }
}

impl IntoPort for &str {
    fn into_port(self) -> ServiceBackendPort {
        ServiceBackendPort {
            number: None,
            name: Some(self.to_owned()),
        }
    }
}

/// A Service backend.
pub fn backend(service: &str, port: impl IntoPort) -> IngressBackend {
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: service.to_owned(),
            port: Some(port.into_port()),
        }),
        resource: None,
    }
}

/// A resource backend.
pub fn resource_backend(kind: &str, name: &str) -> IngressBackend {
    IngressBackend {
        service: None,
        resource: Some(TypedLocalObjectReference {
            api_group: Some("example.com".to_owned()),
            kind: kind.to_owned(),
            name: name.to_owned(),
        }),
    }
}

/// One path of a rule.
pub fn path(path: &str, path_type: &str, backend: IngressBackend) -> HTTPIngressPath {
    HTTPIngressPath {
        path: Some(path.to_owned()).filter(|p| !p.is_empty()),
        path_type: path_type.to_owned(),
        backend,
    }
}

/// A `Prefix` path to port 80 of Service `service`, the most common rule.
pub fn prefix(prefix: &str, service: &str) -> HTTPIngressPath {
    path(prefix, "Prefix", backend(service, 80))
}

/// Builds an Ingress.
pub struct IngressBuilder(Ingress);

/// An Ingress with no class, rules or default backend yet.
pub fn ingress(namespace: &str, name: &str) -> IngressBuilder {
    IngressBuilder(Ingress {
        metadata: meta(namespace, name),
        spec: Some(IngressSpec::default()),
        status: None,
    })
}

impl IngressBuilder {
    fn spec(&mut self) -> &mut IngressSpec {
        self.0.spec.get_or_insert_with(IngressSpec::default)
    }

    /// `spec.ingressClassName`.
    pub fn class_name(mut self, class: &str) -> Self {
        self.spec().ingress_class_name = Some(class.to_owned());
        self
    }

    /// Our default class name, `xdp`.
    pub fn ours(self) -> Self {
        self.class_name(DEFAULT_INGRESS_CLASS)
    }

    /// Adds an annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// The creation time, in seconds since the epoch.
    pub fn created(mut self, seconds: i64) -> Self {
        self.0.metadata.creation_timestamp = Some(Time(Timestamp::from_second(seconds).unwrap()));
        self
    }

    /// Being deleted (a deletion timestamp, held by a finalizer).
    pub fn deleting(mut self) -> Self {
        self.0.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
        self.0.metadata.finalizers = Some(vec!["example.com/hold".to_owned()]);
        self
    }

    /// A rule for `host` (`None`: every host) with `paths`.
    pub fn rule(mut self, host: Option<&str>, paths: Vec<HTTPIngressPath>) -> Self {
        self.spec()
            .rules
            .get_or_insert_with(Vec::new)
            .push(IngressRule {
                host: host.map(str::to_owned),
                http: Some(HTTPIngressRuleValue { paths }),
            });
        self
    }

    /// A rule with a host and no `http` section.
    pub fn host_only(mut self, host: &str) -> Self {
        self.spec()
            .rules
            .get_or_insert_with(Vec::new)
            .push(IngressRule {
                host: Some(host.to_owned()),
                http: None,
            });
        self
    }

    /// `spec.defaultBackend`.
    pub fn default_backend(mut self, backend: IngressBackend) -> Self {
        self.spec().default_backend = Some(backend);
        self
    }

    /// A `spec.tls` entry (no hosts: the hosts of the rules).
    pub fn tls(mut self, hosts: &[&str], secret: Option<&str>) -> Self {
        self.spec()
            .tls
            .get_or_insert_with(Vec::new)
            .push(IngressTLS {
                hosts: (!hosts.is_empty()).then(|| hosts.iter().map(|h| (*h).to_owned()).collect()),
                secret_name: secret.map(str::to_owned),
            });
        self
    }

    /// The Ingress.
    pub fn build(self) -> Ingress {
        self.0
    }

    /// The Ingress as an object of a snapshot.
    pub fn object(self) -> KubeObject {
        KubeObject::Ingress(self.0)
    }
}

/// An IngressClass.
pub fn ingress_class(name: &str, controller: &str, default: bool) -> IngressClass {
    let mut metadata = ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    };
    if default {
        metadata.annotations = Some(BTreeMap::from([(
            DEFAULT_CLASS_ANNOTATION.to_owned(),
            "true".to_owned(),
        )]));
    }
    IngressClass {
        metadata,
        spec: Some(IngressClassSpec {
            controller: Some(controller.to_owned()),
            parameters: None,
        }),
    }
}

/// A Namespace, `Active` or `Terminating` (then with a deletion timestamp,
/// as the API server sets both).
pub fn namespace(name: &str, terminating: bool) -> KubeObject {
    let mut metadata = ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    };
    if terminating {
        metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
    }
    let phase = if terminating { "Terminating" } else { "Active" };
    KubeObject::Namespace(Namespace {
        metadata,
        spec: None,
        status: Some(NamespaceStatus {
            phase: Some(phase.to_owned()),
            ..NamespaceStatus::default()
        }),
    })
}

/// Builds a Service.
pub struct ServiceBuilder(Service);

/// A ClusterIP Service with no ports yet.
pub fn service(namespace: &str, name: &str) -> ServiceBuilder {
    ServiceBuilder(Service {
        metadata: meta(namespace, name),
        spec: Some(ServiceSpec::default()),
        status: None,
    })
}

/// A target port as a test writes it.
pub enum Target {
    /// No `targetPort`: the port itself.
    Unset,
    /// A port number.
    Number(i32),
    /// A port name of the pods.
    Name(&'static str),
}

impl ServiceBuilder {
    fn spec(&mut self) -> &mut ServiceSpec {
        self.0.spec.get_or_insert_with(ServiceSpec::default)
    }

    /// A TCP port, named or not, and its target.
    pub fn port(mut self, name: Option<&str>, port: i32, target: Target) -> Self {
        let target_port = match target {
            Target::Unset => None,
            Target::Number(n) => Some(IntOrString::Int(n)),
            Target::Name(n) => Some(IntOrString::String(n.to_owned())),
        };
        self.spec()
            .ports
            .get_or_insert_with(Vec::new)
            .push(ServicePort {
                name: name.map(str::to_owned),
                port,
                target_port,
                ..ServicePort::default()
            });
        self
    }

    /// Gives it a cluster IP.
    pub fn cluster_ip(mut self, ip: &str) -> Self {
        self.spec().cluster_ip = Some(ip.to_owned());
        self
    }

    /// Makes it an ExternalName Service for `host`.
    pub fn external_name(mut self, host: &str) -> Self {
        let spec = self.spec();
        spec.type_ = Some("ExternalName".to_owned());
        spec.external_name = Some(host.to_owned());
        self
    }

    /// The Service.
    pub fn build(self) -> Service {
        self.0
    }

    /// The Service as an object of a snapshot.
    pub fn object(self) -> KubeObject {
        KubeObject::Service(self.0)
    }
}

/// Builds an EndpointSlice.
pub struct SliceBuilder(EndpointSlice);

/// An IPv4 EndpointSlice of a Service, with `ports: null` and no endpoints.
pub fn slice(namespace: &str, name: &str, service: &str) -> SliceBuilder {
    let mut metadata = meta(namespace, name);
    metadata.labels = Some(BTreeMap::from([(
        SERVICE_NAME_LABEL.to_owned(),
        service.to_owned(),
    )]));
    SliceBuilder(EndpointSlice {
        metadata,
        address_type: "IPv4".to_owned(),
        endpoints: None,
        ports: None,
    })
}

impl SliceBuilder {
    /// `addressType` (`IPv4` unless set).
    pub fn address_type(mut self, address_type: &str) -> Self {
        self.0.address_type = address_type.to_owned();
        self
    }

    /// A TCP port, named or not (`port: None`: all ports).
    pub fn port(mut self, name: Option<&str>, port: Option<i32>) -> Self {
        self.0
            .ports
            .get_or_insert_with(Vec::new)
            .push(EndpointPort {
                name: name.map(str::to_owned),
                port,
                protocol: Some("TCP".to_owned()),
                app_protocol: None,
            });
        self
    }

    /// A UDP port, named or not.
    pub fn udp_port(mut self, name: Option<&str>, port: i32) -> Self {
        self.0
            .ports
            .get_or_insert_with(Vec::new)
            .push(EndpointPort {
                name: name.map(str::to_owned),
                port: Some(port),
                protocol: Some("UDP".to_owned()),
                app_protocol: None,
            });
        self
    }

    /// An endpoint with the given conditions (`None` = unset).
    pub fn endpoint(
        mut self,
        address: &str,
        ready: Option<bool>,
        serving: Option<bool>,
        terminating: Option<bool>,
    ) -> Self {
        self.0
            .endpoints
            .get_or_insert_with(Vec::new)
            .push(Endpoint {
                addresses: vec![address.to_owned()],
                conditions: Some(EndpointConditions {
                    ready,
                    serving,
                    terminating,
                }),
                ..Endpoint::default()
            });
        self
    }

    /// A ready endpoint.
    pub fn ready(self, address: &str) -> Self {
        self.endpoint(address, Some(true), Some(true), Some(false))
    }

    /// The EndpointSlice.
    pub fn build(self) -> EndpointSlice {
        self.0
    }

    /// The EndpointSlice as an object of a snapshot.
    pub fn object(self) -> KubeObject {
        KubeObject::EndpointSlice(self.0)
    }
}

/// A Service with one unnamed port `port` -> `target` and a slice with the
/// given ready addresses.
pub fn ready_service(
    namespace: &str,
    name: &str,
    port: i32,
    target: i32,
    addresses: &[&str],
) -> [KubeObject; 2] {
    let mut slice_builder = slice(namespace, &format!("{name}-abc"), name).port(None, Some(target));
    for address in addresses {
        slice_builder = slice_builder.ready(address);
    }
    [
        service(namespace, name)
            .port(None, port, Target::Number(target))
            .object(),
        slice_builder.object(),
    ]
}

/// A TLS Secret with a certificate and a key (the model checks only that
/// both are there), or with `tls.key` missing.
pub fn tls_secret(namespace: &str, name: &str, complete: bool) -> Secret {
    let mut secret = tls_secret_pem(namespace, name, "crt", "key");
    if !complete && let Some(data) = secret.data.as_mut() {
        data.remove("tls.key");
    }
    secret
}

/// A TLS Secret holding the PEM certificate chain `cert` and key `key`.
pub fn tls_secret_pem(namespace: &str, name: &str, cert: &str, key: &str) -> Secret {
    Secret {
        metadata: meta(namespace, name),
        type_: Some(crate::tls::TLS_SECRET_TYPE.to_owned()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), ByteString(cert.as_bytes().to_vec())),
            ("tls.key".to_owned(), ByteString(key.as_bytes().to_vec())),
        ])),
        ..Secret::default()
    }
}

/// An Opaque Secret with these fields (`ca.crt`, `tls.crt`, ...), as
/// `proxy-ssl-secret` names one.
pub fn opaque_secret(namespace: &str, name: &str, fields: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: meta(namespace, name),
        type_: Some("Opaque".to_owned()),
        data: Some(
            fields
                .iter()
                .map(|(field, value)| (field.to_string(), ByteString(value.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// A snapshot with our IngressClass `xdp` and the given objects.
pub fn world(objects: impl IntoIterator<Item = KubeObject>) -> ClusterObjects {
    let mut snapshot = ClusterObjects::new();
    snapshot.insert(KubeObject::IngressClass(ingress_class(
        DEFAULT_INGRESS_CLASS,
        CONTROLLER_NAME,
        false,
    )));
    for object in objects {
        snapshot.insert(object);
    }
    snapshot
}

/// The YAML document of `object` (an Ingress, an IngressClass...) as a
/// manifest file holds it, `apiVersion` and `kind` included, for tests that
/// hand the daemon manifest files.
pub fn manifest(object: &impl serde::Serialize) -> String {
    serde_yaml_ng::to_string(object).expect("a Kubernetes object serializes to YAML")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifests;

    #[test]
    fn a_manifest_reads_back_as_the_object() {
        let built = ingress("default", "web")
            .ours()
            .rule(
                Some("web.example.com"),
                vec![path("/api", "Exact", backend("api", "http"))],
            )
            .default_backend(backend("web", 80))
            .build();
        let class = ingress_class("nginx", "k8s.io/ingress-nginx", false);
        let text = format!("{}---\n{}", manifest(&built), manifest(&class));
        let objects = parse_manifests("t.yaml", &text).unwrap();
        assert!(
            matches!(&objects[..], [KubeObject::Ingress(read), KubeObject::IngressClass(read_class)]
                if *read == built && *read_class == class),
            "{text}"
        );
    }
}
