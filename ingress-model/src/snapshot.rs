//! The input of the model: one snapshot of the objects it reads, filled
//! from manifest files or from the API server alike.
//!
//! Each object is held behind an `Arc`, and a version of an object keeps
//! its `Arc` for as long as it is in the snapshot: a snapshot is cheap to
//! clone, and [`crate::table::RouteTableBuilder`] tells what changed since
//! its last build by pointer identity, without comparing objects.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::{
    core::v1::{ConfigMap, Namespace, Secret, Service},
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, IngressClass},
};

use crate::{
    object::{KubeObject, ObjectKey, ObjectKind, ObjectRef},
    problem::{Problem, ProblemReason},
};

/// A snapshot of the cluster objects routing depends on, each kind keyed by
/// namespace/name (IngressClasses and Namespaces by name, with an empty
/// namespace). Keys
/// are sorted so building from a snapshot is deterministic. Replacing an
/// object means a new `Arc` (never a change through a shared one), which
/// is what [`ClusterObjects::insert`] does; and an object is stored only
/// under its own key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterObjects {
    /// Ingresses, of every class (the build picks ours).
    pub ingresses: BTreeMap<ObjectKey, Arc<Ingress>>,
    /// IngressClasses.
    pub ingress_classes: BTreeMap<ObjectKey, Arc<IngressClass>>,
    /// Services.
    pub services: BTreeMap<ObjectKey, Arc<Service>>,
    /// EndpointSlices; each belongs to the Service named by its
    /// `kubernetes.io/service-name` label.
    pub endpoint_slices: BTreeMap<ObjectKey, Arc<EndpointSlice>>,
    /// Secrets (for TLS; routing does not read them).
    pub secrets: BTreeMap<ObjectKey, Arc<Secret>>,
    /// ConfigMaps (for settings; routing does not read them).
    pub config_maps: BTreeMap<ObjectKey, Arc<ConfigMap>>,
    /// Namespaces: the Ingresses of one being deleted rank after every
    /// other (see [`ClusterObjects::namespace_going_away`]). A namespace
    /// not in the snapshot (manifests usually have none) is live.
    pub namespaces: BTreeMap<ObjectKey, Arc<Namespace>>,
}

/// Whether `namespace` is being deleted: `status.phase: Terminating`, or a
/// deletion timestamp (the API server sets both at once). Its objects are
/// deleted while it is so, in an order of the namespace controller's.
pub fn namespace_terminating(namespace: &Namespace) -> bool {
    namespace.metadata.deletion_timestamp.is_some()
        || namespace
            .status
            .as_ref()
            .and_then(|status| status.phase.as_deref())
            == Some("Terminating")
}

/// Puts `object` under `key`, keeping the version already there when it is
/// equal (a relist or a resync repeats objects unchanged, and what depends
/// on an unchanged object need not be rebuilt). True when an object was
/// there before.
fn put<T: PartialEq>(map: &mut BTreeMap<ObjectKey, Arc<T>>, key: ObjectKey, object: T) -> bool {
    match map.entry(key) {
        std::collections::btree_map::Entry::Occupied(mut entry) => {
            if **entry.get() != object {
                entry.insert(Arc::new(object));
            }
            true
        }
        std::collections::btree_map::Entry::Vacant(entry) => {
            entry.insert(Arc::new(object));
            false
        }
    }
}

impl ClusterObjects {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Assembles a snapshot from objects in order: when the same object
    /// appears twice the later one wins and a
    /// [`ProblemReason::DuplicateObject`] problem names it.
    /// [`KubeObject::Skipped`] notes are dropped.
    pub fn from_objects(objects: impl IntoIterator<Item = KubeObject>) -> (Self, Vec<Problem>) {
        let mut snapshot = Self::new();
        let mut problems = Vec::new();
        for object in objects {
            if let Some(object_ref) = object.object_ref()
                && snapshot.insert(object)
            {
                problems.push(Problem::new(
                    object_ref,
                    ProblemReason::DuplicateObject,
                    "defined more than once; the later definition is used",
                ));
            }
        }
        (snapshot, problems)
    }

    /// Adds or replaces an object (a watch's apply event); an object equal
    /// to the one there keeps the version there. True when an object with
    /// its kind and key was there before. A [`KubeObject::Skipped`] note is
    /// not stored.
    pub fn insert(&mut self, object: KubeObject) -> bool {
        let Some(object_ref) = object.object_ref() else {
            return false;
        };
        let key = object_ref.key;
        match object {
            KubeObject::Ingress(o) => put(&mut self.ingresses, key, o),
            KubeObject::IngressClass(o) => put(&mut self.ingress_classes, key, o),
            KubeObject::Service(o) => put(&mut self.services, key, o),
            KubeObject::EndpointSlice(o) => put(&mut self.endpoint_slices, key, o),
            KubeObject::Secret(o) => put(&mut self.secrets, key, o),
            KubeObject::ConfigMap(o) => put(&mut self.config_maps, key, o),
            KubeObject::Namespace(o) => put(&mut self.namespaces, key, o),
            KubeObject::Skipped(_) => false,
        }
    }

    /// Removes an object (a watch's delete event); true when it was there.
    pub fn remove(&mut self, object: &ObjectRef) -> bool {
        let key = &object.key;
        match object.kind {
            ObjectKind::Ingress => self.ingresses.remove(key).is_some(),
            ObjectKind::IngressClass => self.ingress_classes.remove(key).is_some(),
            ObjectKind::Service => self.services.remove(key).is_some(),
            ObjectKind::EndpointSlice => self.endpoint_slices.remove(key).is_some(),
            ObjectKind::Secret => self.secrets.remove(key).is_some(),
            ObjectKind::ConfigMap => self.config_maps.remove(key).is_some(),
            ObjectKind::Namespace => self.namespaces.remove(key).is_some(),
        }
    }

    /// Replaces every object of `kind` with `objects` (a watch's complete
    /// relist after a disconnect: objects missing from it were deleted
    /// meanwhile). Objects of other kinds in `objects` are ignored; objects
    /// equal to the ones there keep their versions.
    pub fn replace_kind(
        &mut self,
        kind: ObjectKind,
        objects: impl IntoIterator<Item = KubeObject>,
    ) {
        let mut listed = std::collections::BTreeSet::new();
        for object in objects {
            if let Some(object_ref) = object.object_ref().filter(|r| r.kind == kind) {
                self.insert(object);
                listed.insert(object_ref.key);
            }
        }
        let keep = |key: &ObjectKey| listed.contains(key);
        match kind {
            ObjectKind::Ingress => self.ingresses.retain(|k, _| keep(k)),
            ObjectKind::IngressClass => self.ingress_classes.retain(|k, _| keep(k)),
            ObjectKind::Service => self.services.retain(|k, _| keep(k)),
            ObjectKind::EndpointSlice => self.endpoint_slices.retain(|k, _| keep(k)),
            ObjectKind::Secret => self.secrets.retain(|k, _| keep(k)),
            ObjectKind::ConfigMap => self.config_maps.retain(|k, _| keep(k)),
            ObjectKind::Namespace => self.namespaces.retain(|k, _| keep(k)),
        }
    }

    /// How many objects the snapshot holds, all kinds together.
    pub fn len(&self) -> usize {
        self.ingresses.len()
            + self.ingress_classes.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.secrets.len()
            + self.config_maps.len()
            + self.namespaces.len()
    }

    /// Whether the namespace named `name` is being deleted
    /// ([`namespace_terminating`]); one not in the snapshot is not.
    pub fn namespace_going_away(&self, name: &str) -> bool {
        self.namespaces
            .get(&ObjectKey::cluster(name))
            .is_some_and(|namespace| namespace_terminating(namespace))
    }

    /// Whether the snapshot holds no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        fixtures::{ingress, service},
        object::SkippedObject,
    };

    #[test]
    fn later_objects_win_and_duplicates_are_reported() {
        let first = ingress("ns", "web").build();
        let second = ingress("ns", "web").class_name("xdp").build();
        let (snapshot, problems) = ClusterObjects::from_objects([
            KubeObject::Ingress(first),
            KubeObject::Service(service("ns", "api").build()),
            KubeObject::Ingress(second.clone()),
        ]);
        assert_eq!(snapshot.len(), 2);
        assert_eq!(*snapshot.ingresses[&ObjectKey::new("ns", "web")], second);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].reason, ProblemReason::DuplicateObject);
        assert_eq!(problems[0].object.to_string(), "Ingress ns/web");
    }

    #[test]
    fn skipped_notes_are_not_stored_and_removal_works() {
        let mut snapshot = ClusterObjects::new();
        let note = KubeObject::Skipped(SkippedObject {
            source_name: "a.yaml".into(),
            line: 1,
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: None,
        });
        assert!(!snapshot.insert(note));
        assert!(snapshot.is_empty());
        snapshot.insert(KubeObject::Service(service("ns", "api").build()));
        let service_ref = ObjectRef::new(ObjectKind::Service, ObjectKey::new("ns", "api"));
        assert!(snapshot.remove(&service_ref));
        assert!(!snapshot.remove(&service_ref));
        assert!(snapshot.is_empty());
    }

    #[test]
    fn replace_kind_drops_what_a_relist_no_longer_has() {
        let (mut snapshot, _) = ClusterObjects::from_objects([
            ingress("default", "a").object(),
            ingress("default", "b").object(),
            KubeObject::Service(service("default", "web").build()),
        ]);
        snapshot.replace_kind(
            ObjectKind::Ingress,
            [
                ingress("default", "b").object(),
                ingress("default", "c").object(),
                // Another kind in a relist of Ingresses is not taken.
                KubeObject::Service(service("default", "other").build()),
            ],
        );
        let names: Vec<_> = snapshot.ingresses.keys().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
        assert_eq!(snapshot.services.len(), 1, "other kinds are untouched");
    }
}
