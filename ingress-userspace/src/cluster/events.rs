//! Kubernetes Events on the objects we read, published by the leader (so a
//! change gets one event, not one per node): `Normal Sync` when an Ingress
//! of ours is taken into the configuration (created or changed), and a
//! `Warning` with the problem's reason (ServiceNotFound, SecretNotFound,
//! PathConflict, InvalidCertificate, ...) when a problem appears.
//! `kubectl describe ingress` shows them.

use std::{collections::BTreeMap, sync::Arc};

use ingress_model::{ObjectKey, ObjectKind, ObjectRef, Problem};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::watch::AppliedConfig;

/// The `reportingController` of our events.
pub const REPORTING_CONTROLLER: &str = "xdp-ingress";

/// What to publish for one applied configuration (pure).
#[derive(Debug, Default, PartialEq)]
pub struct EventPlan {
    /// Our Ingresses created or changed since the previous apply.
    pub synced: Vec<ObjectKey>,
    /// New problems, each with the object to attach it to.
    pub warnings: Vec<(ObjectRef, Problem)>,
}

/// Decides the events of `config`; `seen` holds the revision (generation
/// and annotations) of each of our Ingresses at the previous apply and is
/// updated, so status writes make no event. At the first
/// apply (`seen` empty, `first`) nothing is "synced": a restarted
/// controller does not re-announce every Ingress.
pub fn plan(config: &AppliedConfig, seen: &mut BTreeMap<ObjectKey, u64>, first: bool) -> EventPlan {
    let mut plan = EventPlan::default();
    let mut now = BTreeMap::new();
    for ingress in config.ingresses.iter().filter(|i| i.ours) {
        let changed = seen.get(&ingress.key) != Some(&ingress.revision);
        if changed && !first && config.takes_events_in(&ingress.key.namespace) {
            plan.synced.push(ingress.key.clone());
        }
        now.insert(ingress.key.clone(), ingress.revision);
    }
    *seen = now;
    for problem in &config.new_problems {
        // Events live in a namespace: cluster-scoped objects (an
        // IngressClass) get none, nor objects of a namespace being deleted
        // (the API server refuses them); the log has them.
        if problem.object.kind.is_namespaced() && config.takes_events_in(problem.object.namespace())
        {
            plan.warnings
                .push((problem.object.clone(), problem.clone()));
        }
    }
    plan
}

/// The reference an event points at.
fn reference(config: &AppliedConfig, object: &ObjectRef) -> ObjectReference {
    let uid = match object.kind {
        ObjectKind::Ingress => config
            .ingresses
            .iter()
            .find(|i| i.key == object.key)
            .and_then(|i| i.uid.clone()),
        _ => config.uids.get(object).cloned(),
    };
    ObjectReference {
        api_version: Some(object.kind.api_version().to_owned()),
        kind: Some(object.kind.as_str().to_owned()),
        name: Some(object.key.name.clone()),
        namespace: Some(object.key.namespace.clone()),
        uid,
        ..ObjectReference::default()
    }
}

/// Publishes the events of every applied configuration while this replica
/// leads, until `shutdown`.
pub async fn run(
    client: Client,
    instance: String,
    mut applied: watch::Receiver<Option<Arc<AppliedConfig>>>,
    is_leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: REPORTING_CONTROLLER.into(),
            instance: Some(instance),
        },
    );
    let mut seen = BTreeMap::new();
    let mut first = true;
    loop {
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            () = crate::shutdown::stopped(&mut shutdown) => return,
        }
        let Some(config) = applied.borrow_and_update().clone() else {
            continue;
        };
        // Every replica tracks what it has seen, so a new leader does not
        // announce what its predecessor already did.
        let plan = plan(&config, &mut seen, first);
        first = false;
        if !*is_leader.borrow() {
            continue;
        }
        for key in &plan.synced {
            let object = ObjectRef::new(ObjectKind::Ingress, key.clone());
            let event = Event {
                type_: EventType::Normal,
                reason: "Sync".into(),
                note: Some("Scheduled for sync: taken into the configuration".into()),
                action: "Sync".into(),
                secondary: None,
            };
            publish(&recorder, &event, &reference(&config, &object)).await;
        }
        for (object, problem) in &plan.warnings {
            let event = Event {
                type_: EventType::Warning,
                reason: problem.reason.as_str().into(),
                note: Some(truncate_note(&problem.message)),
                action: "Sync".into(),
                secondary: None,
            };
            publish(&recorder, &event, &reference(&config, object)).await;
        }
    }
}

async fn publish(recorder: &Recorder, event: &Event, reference: &ObjectReference) {
    match recorder.publish(event, reference).await {
        Ok(()) => debug!(
            object = ?reference.name,
            reason = %event.reason,
            "event published"
        ),
        Err(error) => warn!(
            object = ?reference.name,
            reason = %event.reason,
            "publishing an event: {error}"
        ),
    }
}

/// The API server refuses notes over 1 kB.
fn truncate_note(message: &str) -> String {
    const LIMIT: usize = 1000;
    if message.len() <= LIMIT {
        return message.to_owned();
    }
    let mut end = LIMIT - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

#[cfg(test)]
mod tests {
    use ingress_model::ProblemReason;

    use super::*;
    use crate::cluster::watch::IngressView;

    fn view(name: &str, ours: bool, version: &str) -> IngressView {
        IngressView {
            key: ObjectKey::new("default", name),
            uid: Some(format!("uid-{name}")),
            revision: version.parse().unwrap(),
            ours,
            serves: true,
            status_addresses: Vec::new(),
        }
    }

    fn config(ingresses: Vec<IngressView>, problems: Vec<Problem>) -> AppliedConfig {
        AppliedConfig {
            ingresses,
            publish_service: None,
            new_problems: problems,
            uids: BTreeMap::new(),
            terminating_namespaces: Default::default(),
        }
    }

    #[test]
    fn sync_events_for_created_and_changed_ingresses_of_ours_only() {
        let mut seen = BTreeMap::new();
        let first = plan(
            &config(vec![view("old", true, "1")], Vec::new()),
            &mut seen,
            true,
        );
        assert!(first.synced.is_empty(), "a restart announces nothing");
        let next = plan(
            &config(
                vec![
                    view("old", true, "1"),
                    view("new", true, "5"),
                    view("theirs", false, "6"),
                ],
                Vec::new(),
            ),
            &mut seen,
            false,
        );
        let names: Vec<_> = next.synced.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["new"]);
        let changed = plan(
            &config(
                vec![view("old", true, "7"), view("new", true, "5")],
                Vec::new(),
            ),
            &mut seen,
            false,
        );
        let names: Vec<_> = changed.synced.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["old"]);
    }

    #[test]
    fn warnings_point_at_namespaced_objects_with_their_uid() {
        let missing = Problem::new(
            ObjectRef::new(ObjectKind::Ingress, ObjectKey::new("default", "web")),
            ProblemReason::ServiceNotFound,
            "Service default/nope not found",
        );
        let class = Problem::new(
            ObjectRef::new(ObjectKind::IngressClass, ObjectKey::cluster("xdp")),
            ProblemReason::InvalidAnnotation,
            "whatever",
        );
        let mut leaving = missing.clone();
        leaving.object.key.namespace = "leaving".into();
        let mut config = config(
            vec![view("web", true, "1")],
            vec![missing.clone(), class, leaving],
        );
        config.terminating_namespaces.insert("leaving".into());
        let plan = plan(&config, &mut BTreeMap::new(), false);
        assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
        let reference = reference(&config, &plan.warnings[0].0);
        assert_eq!(reference.uid.as_deref(), Some("uid-web"));
        assert_eq!(reference.kind.as_deref(), Some("Ingress"));
        assert_eq!(
            reference.api_version.as_deref(),
            Some("networking.k8s.io/v1")
        );
        assert_eq!(reference.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let long = "é".repeat(800);
        let note = truncate_note(&long);
        assert!(note.len() <= 1000 && note.ends_with("..."));
    }
}
