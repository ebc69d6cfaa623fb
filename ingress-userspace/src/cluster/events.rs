//! Kubernetes Events on the objects we read, published by the leader (so a
//! change gets one event, not one per node): `Normal Sync` when an Ingress
//! of ours is taken into the configuration (created or changed), and a
//! `Warning` with the problem's reason (ServiceNotFound, SecretNotFound,
//! PathConflict, InvalidCertificate, ...) when a problem appears.
//! `kubectl describe ingress` shows them.
//!
//! A replica that takes the lead also announces, once, every Ingress of
//! ours that has no `Sync` event of ours left (one created before the
//! controller ran, or whose event expired): it lists our `Sync` events
//! (one LIST, by field selector) rather than asking per Ingress, and
//! publishes a `Sync` for each Ingress the list does not name, so
//! `describe` always says who serves it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use ingress_model::{ObjectKey, ObjectKind, ObjectRef, Problem};
use k8s_openapi::api::{core::v1::ObjectReference, events::v1::Event as K8sEvent};
use kube::{
    Api, Client,
    api::ListParams,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::watch::AppliedConfig;
use crate::neighbours::ReportedProblem;

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
/// apply (`seen` empty, `first`) nothing is "synced" here: what was there
/// before is announced on taking the lead, when no event of ours says it
/// is served ([`unannounced`]).
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

/// The reason of the events that say an Ingress is served.
const SYNC_REASON: &str = "Sync";
/// How long to wait before listing our events again when the list failed.
const LIST_RETRY: Duration = Duration::from_secs(5);
/// Events per page of that list.
const LIST_PAGE: u32 = 500;

/// The field selector of our `Sync` events on Ingresses.
fn sync_events_selector() -> String {
    format!(
        "reason={SYNC_REASON},reportingController={REPORTING_CONTROLLER},regarding.kind={}",
        ObjectKind::Ingress.as_str()
    )
}

/// What our `Sync` events are about, from the list of them: each
/// Ingress's key with the uid the event names (when it names one).
fn announced_by(events: &[K8sEvent]) -> HashMap<ObjectKey, Vec<Option<String>>> {
    let mut announced: HashMap<ObjectKey, Vec<Option<String>>> = HashMap::new();
    for event in events {
        let Some(regarding) = &event.regarding else {
            continue;
        };
        if regarding.kind.as_deref() != Some(ObjectKind::Ingress.as_str()) {
            continue;
        }
        let (Some(namespace), Some(name)) = (&regarding.namespace, &regarding.name) else {
            continue;
        };
        announced
            .entry(ObjectKey::new(namespace.clone(), name.clone()))
            .or_default()
            .push(regarding.uid.clone());
    }
    announced
}

/// Our Ingresses in `config` that no event of `events` announces, but those
/// in `skip` (announced just now). An Ingress deleted and created again
/// under its name has a new uid: its predecessor's event does not count.
pub fn unannounced(
    config: &AppliedConfig,
    events: &[K8sEvent],
    skip: &[ObjectKey],
) -> Vec<ObjectKey> {
    let announced = announced_by(events);
    config
        .ingresses
        .iter()
        .filter(|ingress| {
            ingress.ours
                && config.takes_events_in(&ingress.key.namespace)
                && !skip.contains(&ingress.key)
        })
        .filter(|ingress| {
            let uids = announced
                .get(&ingress.key)
                .map(Vec::as_slice)
                .unwrap_or_default();
            !uids
                .iter()
                .any(|uid| uid.is_none() || ingress.uid.is_none() || *uid == ingress.uid)
        })
        .map(|ingress| ingress.key.clone())
        .collect()
}

/// Our `Sync` events on Ingresses (in `namespace`, else everywhere), all
/// pages.
async fn sync_events(
    client: &Client,
    namespace: Option<&str>,
) -> Result<Vec<K8sEvent>, kube::Error> {
    let api: Api<K8sEvent> = match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let selector = sync_events_selector();
    let mut events = Vec::new();
    let mut params = ListParams::default().fields(&selector).limit(LIST_PAGE);
    loop {
        let page = api.list(&params).await?;
        events.extend(page.items);
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(events),
        }
    }
}

fn sync_event() -> Event {
    Event {
        type_: EventType::Normal,
        reason: SYNC_REASON.into(),
        note: Some("Scheduled for sync: taken into the configuration".into()),
        action: "Sync".into(),
        secondary: None,
    }
}

/// Publishes the events of every applied configuration while this replica
/// leads, and on taking the lead a `Sync` for each Ingress of ours without
/// one, until `shutdown`. `namespace` is `--watch-namespace`.
pub async fn run(
    client: Client,
    instance: String,
    namespace: Option<String>,
    mut applied: watch::Receiver<Option<Arc<AppliedConfig>>>,
    mut is_leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: REPORTING_CONTROLLER.into(),
            instance: Some(instance),
        },
    );
    let mut seen = BTreeMap::new();
    let mut first = true;
    let mut planned: Option<Arc<AppliedConfig>> = None;
    let mut leading = false;
    // Took the lead and has not announced the Ingresses without a Sync yet.
    let mut announce = false;
    let mut retry: Option<tokio::time::Instant> = None;
    loop {
        let retry_wait = async {
            match retry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            changed = is_leader.changed() => if changed.is_err() { return },
            () = retry_wait => retry = None,
            () = crate::shutdown::stopped(&mut shutdown) => return,
        }
        let now_leading = *is_leader.borrow_and_update();
        announce = now_leading && (announce || !leading);
        leading = now_leading;
        let Some(config) = applied.borrow_and_update().clone() else {
            continue;
        };
        // Every replica tracks what it has seen, so a new leader does not
        // announce what its predecessor already did.
        let plan = if planned.as_ref().is_some_and(|p| Arc::ptr_eq(p, &config)) {
            EventPlan::default()
        } else {
            planned = Some(config.clone());
            let plan = plan(&config, &mut seen, first);
            first = false;
            plan
        };
        if !leading {
            continue;
        }
        for key in &plan.synced {
            let object = ObjectRef::new(ObjectKind::Ingress, key.clone());
            publish(&recorder, &sync_event(), &reference(&config, &object)).await;
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
        if announce {
            match sync_events(&client, namespace.as_deref()).await {
                Ok(events) => {
                    announce = false;
                    let missing = unannounced(&config, &events, &plan.synced);
                    info!(
                        announced = missing.len(),
                        "leading: a Sync event for each Ingress of ours that had none"
                    );
                    for key in missing {
                        let object = ObjectRef::new(ObjectKind::Ingress, key);
                        publish(&recorder, &sync_event(), &reference(&config, &object)).await;
                    }
                }
                Err(error) => {
                    warn!("listing our Sync events (retrying in {LIST_RETRY:?}): {error}");
                    retry = Some(tokio::time::Instant::now() + LIST_RETRY);
                }
            }
        }
    }
}

/// Publishes a Warning for each problem the daemon reports at run time
/// ([`ReportedProblem`]: an L4 backend's unresolvable next hop) when it
/// appears, while this replica leads, until `shutdown`. A problem that
/// goes away and comes back is published again.
pub async fn run_reported(
    client: Client,
    instance: String,
    mut reported: watch::Receiver<Vec<ReportedProblem>>,
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
    let mut published: Vec<ReportedProblem> = Vec::new();
    loop {
        tokio::select! {
            changed = reported.changed() => if changed.is_err() { return },
            () = crate::shutdown::stopped(&mut shutdown) => return,
        }
        let now = reported.borrow_and_update().clone();
        for new in now.iter().filter(|p| !published.contains(p)) {
            if !*is_leader.borrow() || !new.problem.object.kind.is_namespaced() {
                continue;
            }
            let object = &new.problem.object;
            let reference = ObjectReference {
                api_version: Some(object.kind.api_version().to_owned()),
                kind: Some(object.kind.as_str().to_owned()),
                name: Some(object.key.name.clone()),
                namespace: Some(object.key.namespace.clone()),
                uid: new.uid.clone(),
                ..ObjectReference::default()
            };
            let event = Event {
                type_: EventType::Warning,
                reason: new.problem.reason.as_str().into(),
                note: Some(truncate_note(&new.problem.message)),
                action: "Sync".into(),
                secondary: None,
            };
            publish(&recorder, &event, &reference).await;
        }
        published = now;
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

    fn sync_event_about(name: &str, uid: Option<&str>) -> K8sEvent {
        K8sEvent {
            reason: Some(SYNC_REASON.into()),
            regarding: Some(ObjectReference {
                kind: Some("Ingress".into()),
                namespace: Some("default".into()),
                name: Some(name.into()),
                uid: uid.map(Into::into),
                ..ObjectReference::default()
            }),
            ..K8sEvent::default()
        }
    }

    #[test]
    fn taking_the_lead_announces_the_ingresses_without_a_sync_event_of_ours() {
        let config = config(
            vec![
                view("announced", true, "1"),
                view("recreated", true, "1"),
                view("never", true, "1"),
                view("theirs", false, "1"),
                view("just-now", true, "1"),
            ],
            Vec::new(),
        );
        let events = [
            sync_event_about("announced", Some("uid-announced")),
            // The event of an Ingress deleted since, of the same name.
            sync_event_about("recreated", Some("uid-of-the-one-before")),
            sync_event_about("gone", Some("uid-gone")),
        ];
        let missing = unannounced(&config, &events, &[ObjectKey::new("default", "just-now")]);
        let names: Vec<_> = missing.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["recreated", "never"]);
        assert!(
            unannounced(&config, &events, &[])
                .iter()
                .any(|k| k.name == "just-now")
        );
        assert_eq!(
            sync_events_selector(),
            "reason=Sync,reportingController=xdp-ingress,regarding.kind=Ingress"
        );
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
