//! The input of the model: one snapshot of the objects it reads, filled
//! from manifest files or from the API server alike.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    core::v1::{ConfigMap, Secret, Service},
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, IngressClass},
};

use crate::{
    object::{KubeObject, ObjectKey, ObjectKind, ObjectRef},
    problem::{Problem, ProblemReason},
};

/// A snapshot of the cluster objects routing depends on, each kind keyed by
/// namespace/name (IngressClasses by name, with an empty namespace). Keys
/// are sorted so building from a snapshot is deterministic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterObjects {
    /// Ingresses, of every class (the build picks ours).
    pub ingresses: BTreeMap<ObjectKey, Ingress>,
    /// IngressClasses.
    pub ingress_classes: BTreeMap<ObjectKey, IngressClass>,
    /// Services.
    pub services: BTreeMap<ObjectKey, Service>,
    /// EndpointSlices; each belongs to the Service named by its
    /// `kubernetes.io/service-name` label.
    pub endpoint_slices: BTreeMap<ObjectKey, EndpointSlice>,
    /// Secrets (for TLS; routing does not read them).
    pub secrets: BTreeMap<ObjectKey, Secret>,
    /// ConfigMaps (for settings; routing does not read them).
    pub config_maps: BTreeMap<ObjectKey, ConfigMap>,
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
            if let Some(replaced) = snapshot.insert(object)
                && let Some(object_ref) = replaced.object_ref()
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

    /// Adds or replaces an object (a watch's apply event), returning the
    /// object it replaced. A [`KubeObject::Skipped`] note is not stored.
    pub fn insert(&mut self, object: KubeObject) -> Option<KubeObject> {
        let object_ref = object.object_ref()?;
        let key = object_ref.key;
        match object {
            KubeObject::Ingress(o) => self.ingresses.insert(key, o).map(KubeObject::Ingress),
            KubeObject::IngressClass(o) => self
                .ingress_classes
                .insert(key, o)
                .map(KubeObject::IngressClass),
            KubeObject::Service(o) => self.services.insert(key, o).map(KubeObject::Service),
            KubeObject::EndpointSlice(o) => self
                .endpoint_slices
                .insert(key, o)
                .map(KubeObject::EndpointSlice),
            KubeObject::Secret(o) => self.secrets.insert(key, o).map(KubeObject::Secret),
            KubeObject::ConfigMap(o) => self.config_maps.insert(key, o).map(KubeObject::ConfigMap),
            KubeObject::Skipped(_) => None,
        }
    }

    /// Removes an object (a watch's delete event), returning it.
    pub fn remove(&mut self, object: &ObjectRef) -> Option<KubeObject> {
        let key = &object.key;
        match object.kind {
            ObjectKind::Ingress => self.ingresses.remove(key).map(KubeObject::Ingress),
            ObjectKind::IngressClass => self
                .ingress_classes
                .remove(key)
                .map(KubeObject::IngressClass),
            ObjectKind::Service => self.services.remove(key).map(KubeObject::Service),
            ObjectKind::EndpointSlice => self
                .endpoint_slices
                .remove(key)
                .map(KubeObject::EndpointSlice),
            ObjectKind::Secret => self.secrets.remove(key).map(KubeObject::Secret),
            ObjectKind::ConfigMap => self.config_maps.remove(key).map(KubeObject::ConfigMap),
        }
    }

    /// Replaces every object of `kind` with `objects` (a watch's complete
    /// relist after a disconnect: objects missing from it were deleted
    /// meanwhile). Objects of other kinds in `objects` are ignored.
    pub fn replace_kind(
        &mut self,
        kind: ObjectKind,
        objects: impl IntoIterator<Item = KubeObject>,
    ) {
        match kind {
            ObjectKind::Ingress => self.ingresses.clear(),
            ObjectKind::IngressClass => self.ingress_classes.clear(),
            ObjectKind::Service => self.services.clear(),
            ObjectKind::EndpointSlice => self.endpoint_slices.clear(),
            ObjectKind::Secret => self.secrets.clear(),
            ObjectKind::ConfigMap => self.config_maps.clear(),
        }
        for object in objects {
            if object.object_ref().is_some_and(|r| r.kind == kind) {
                self.insert(object);
            }
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
        assert_eq!(snapshot.ingresses[&ObjectKey::new("ns", "web")], second);
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
        assert_eq!(snapshot.insert(note), None);
        assert!(snapshot.is_empty());
        snapshot.insert(KubeObject::Service(service("ns", "api").build()));
        let service_ref = ObjectRef::new(ObjectKind::Service, ObjectKey::new("ns", "api"));
        assert!(matches!(
            snapshot.remove(&service_ref),
            Some(KubeObject::Service(_))
        ));
        assert_eq!(snapshot.remove(&service_ref), None);
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
