//! Names of Kubernetes objects and the closed set of kinds the model reads.

use std::fmt;

use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Namespace, Secret, Service},
        discovery::v1::EndpointSlice,
        networking::v1::{Ingress, IngressClass},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

/// The namespace an object without `metadata.namespace` belongs to, as
/// `kubectl apply` does with the default context.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The namespace and name of an object; the namespace is empty for
/// cluster-scoped kinds (IngressClass, Namespace). Ordered by namespace,
/// then name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectKey {
    /// The namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// A key from a namespace and a name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a cluster-scoped object.
    pub fn cluster(name: impl Into<String>) -> Self {
        Self::new("", name)
    }

    /// The key of a namespaced object from its metadata: a missing namespace
    /// means [`DEFAULT_NAMESPACE`], a missing name the empty string.
    pub fn of_namespaced(meta: &ObjectMeta) -> Self {
        Self::new(
            meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    /// The key of a cluster-scoped object from its metadata.
    pub fn of_cluster_scoped(meta: &ObjectMeta) -> Self {
        Self::cluster(meta.name.as_deref().unwrap_or_default())
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// The kinds of object the model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// `networking.k8s.io/v1` Ingress.
    Ingress,
    /// `networking.k8s.io/v1` IngressClass (cluster-scoped).
    IngressClass,
    /// `v1` Service.
    Service,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// `v1` Secret.
    Secret,
    /// `v1` ConfigMap.
    ConfigMap,
    /// `v1` Namespace (cluster-scoped): whether it is being deleted.
    Namespace,
}

impl ObjectKind {
    /// Every kind, in the order above.
    pub const ALL: [ObjectKind; 7] = [
        ObjectKind::Ingress,
        ObjectKind::IngressClass,
        ObjectKind::Service,
        ObjectKind::EndpointSlice,
        ObjectKind::Secret,
        ObjectKind::ConfigMap,
        ObjectKind::Namespace,
    ];

    /// The `kind` field of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Ingress => "Ingress",
            ObjectKind::IngressClass => "IngressClass",
            ObjectKind::Service => "Service",
            ObjectKind::EndpointSlice => "EndpointSlice",
            ObjectKind::Secret => "Secret",
            ObjectKind::ConfigMap => "ConfigMap",
            ObjectKind::Namespace => "Namespace",
        }
    }

    /// The only `apiVersion` the model accepts for this kind.
    pub fn api_version(self) -> &'static str {
        match self {
            ObjectKind::Ingress | ObjectKind::IngressClass => "networking.k8s.io/v1",
            ObjectKind::EndpointSlice => "discovery.k8s.io/v1",
            ObjectKind::Service
            | ObjectKind::Secret
            | ObjectKind::ConfigMap
            | ObjectKind::Namespace => "v1",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        !matches!(self, ObjectKind::IngressClass | ObjectKind::Namespace)
    }

    /// The kind whose `kind` field is `kind`, if the model reads it.
    pub fn from_kind(kind: &str) -> Option<ObjectKind> {
        ObjectKind::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference to one object: its kind and key. Problems point at objects
/// this way.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// The kind.
    pub kind: ObjectKind,
    /// The namespace (empty for cluster-scoped kinds) and name.
    pub key: ObjectKey,
}

impl ObjectRef {
    /// A reference from a kind and a key.
    pub fn new(kind: ObjectKind, key: ObjectKey) -> Self {
        Self { kind, key }
    }

    /// The namespace, empty for cluster-scoped kinds.
    pub fn namespace(&self) -> &str {
        &self.key.namespace
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.key.name
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.key)
    }
}

/// One object read from a manifest or the API server.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "objects are moved once, into the snapshot's maps; boxing would only add allocations"
)]
pub enum KubeObject {
    /// An Ingress.
    Ingress(Ingress),
    /// An IngressClass.
    IngressClass(IngressClass),
    /// A Service.
    Service(Service),
    /// An EndpointSlice.
    EndpointSlice(EndpointSlice),
    /// A Secret (kept in the snapshot for TLS; not used for routing).
    Secret(Secret),
    /// A ConfigMap (kept in the snapshot for settings; not used for routing).
    ConfigMap(ConfigMap),
    /// A Namespace (routing reads whether it is being deleted).
    Namespace(Namespace),
    /// An object of a kind the model does not read: a note for the caller
    /// to log, never part of a snapshot.
    Skipped(SkippedObject),
}

impl KubeObject {
    /// The kind and key of the object, `None` for [`KubeObject::Skipped`].
    pub fn object_ref(&self) -> Option<ObjectRef> {
        let (kind, meta) = match self {
            KubeObject::Ingress(o) => (ObjectKind::Ingress, &o.metadata),
            KubeObject::IngressClass(o) => (ObjectKind::IngressClass, &o.metadata),
            KubeObject::Service(o) => (ObjectKind::Service, &o.metadata),
            KubeObject::EndpointSlice(o) => (ObjectKind::EndpointSlice, &o.metadata),
            KubeObject::Secret(o) => (ObjectKind::Secret, &o.metadata),
            KubeObject::ConfigMap(o) => (ObjectKind::ConfigMap, &o.metadata),
            KubeObject::Namespace(o) => (ObjectKind::Namespace, &o.metadata),
            KubeObject::Skipped(_) => return None,
        };
        let key = if kind.is_namespaced() {
            ObjectKey::of_namespaced(meta)
        } else {
            ObjectKey::of_cluster_scoped(meta)
        };
        Some(ObjectRef::new(kind, key))
    }
}

/// A manifest document of a kind the model does not read, kept so the
/// caller can say what it skipped and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedObject {
    /// The name of the source it came from (a file name, say).
    pub source_name: String,
    /// The line its document starts on, 1-based.
    pub line: usize,
    /// Its `apiVersion`.
    pub api_version: String,
    /// Its `kind`.
    pub kind: String,
    /// Its `metadata.name`, if any.
    pub name: Option<String>,
}

impl fmt::Display for SkippedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: skipped {} {}",
            self.source_name, self.line, self.api_version, self.kind
        )?;
        if let Some(name) = &self.name {
            write!(f, " {name}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_display_with_and_without_namespace() {
        assert_eq!(ObjectKey::new("ns", "a").to_string(), "ns/a");
        assert_eq!(ObjectKey::cluster("xdp").to_string(), "xdp");
        assert_eq!(
            ObjectRef::new(ObjectKind::Service, ObjectKey::new("ns", "s")).to_string(),
            "Service ns/s"
        );
    }

    #[test]
    fn a_missing_namespace_is_the_default_one() {
        let meta = ObjectMeta {
            name: Some("a".into()),
            ..ObjectMeta::default()
        };
        assert_eq!(
            ObjectKey::of_namespaced(&meta),
            ObjectKey::new("default", "a")
        );
        assert_eq!(ObjectKey::of_cluster_scoped(&meta), ObjectKey::cluster("a"));
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in ObjectKind::ALL {
            assert_eq!(ObjectKind::from_kind(kind.as_str()), Some(kind));
        }
        assert_eq!(ObjectKind::from_kind("Deployment"), None);
        assert!(!ObjectKind::IngressClass.is_namespaced());
        assert!(!ObjectKind::Namespace.is_namespaced());
        assert_eq!(
            ObjectKind::EndpointSlice.api_version(),
            "discovery.k8s.io/v1"
        );
    }
}
