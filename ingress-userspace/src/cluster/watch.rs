//! The API-server provider: one watch per kind the model reads, folded
//! into one [`ClusterObjects`] snapshot that goes through the same
//! [`ConfigApplier`] as the manifests provider.
//!
//! Each watch lists, then watches, and after a disconnect relists (with
//! backoff) and replaces its kind whole, so objects deleted while it was
//! away disappear. Nothing is applied until every kind has been listed
//! once; after that, the changes of a burst are applied together. While the
//! API server is unreachable the last applied configuration keeps serving.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Debug,
    hash::{Hash, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};
use ingress_model::{ClusterObjects, KubeObject, ObjectKey, ObjectKind, ObjectRef, Problem};
use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Namespace, Secret, Service},
        discovery::v1::EndpointSlice,
        networking::v1::{Ingress, IngressClass},
    },
    serde::de::DeserializeOwned,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{WatchStreamExt, utils::Backoff, watcher},
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use crate::config::ConfigApplier;

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct WatchScope {
    /// Only this namespace (`--watch-namespace`); IngressClasses are
    /// cluster-scoped and always watched.
    pub namespace: Option<String>,
    /// The ConfigMaps named on the command line (TCP/UDP services), each
    /// watched by name.
    pub config_maps: Vec<ObjectKey>,
    /// The Service of `--publish-service`, handed to the status writer.
    pub publish_service: Option<ObjectKey>,
}

/// One change seen by a watch.
#[derive(Debug)]
enum Change {
    /// Added or modified.
    Apply(KubeObject),
    /// Deleted.
    Delete(ObjectRef),
    /// A (re)list of the watch `source` starts.
    ListStart(usize),
    /// An object of a (re)list.
    Listed(usize, KubeObject),
    /// The (re)list of `source` is complete.
    ListDone(usize),
}

/// What one watch reads: a whole kind, or one object by name (a
/// ConfigMap named on the command line).
#[derive(Debug, Clone, PartialEq)]
struct Watched {
    kind: ObjectKind,
    name: Option<ObjectKey>,
}

/// A running watch.
struct WatchSource {
    watched: Watched,
    task: JoinHandle<()>,
}

/// An Ingress as the status writer and the event publisher need it.
#[derive(Debug, Clone, PartialEq)]
pub struct IngressView {
    /// namespace/name.
    pub key: ObjectKey,
    /// metadata.uid (events point at it).
    pub uid: Option<String>,
    /// Changes when what the Ingress asks for changes (its generation,
    /// which follows the spec, and its annotations), not with its status.
    pub revision: u64,
    /// Whether our class takes it.
    pub ours: bool,
    /// Whether it routes anything: false for one of ours that lost every
    /// path and default backend it has to other Ingresses.
    pub serves: bool,
    /// Its `status.loadBalancer.ingress` as it is now (ip or hostname).
    pub status_addresses: Vec<String>,
}

/// The result of one apply, for the status writer and the event publisher.
#[derive(Debug, Clone)]
pub struct AppliedConfig {
    /// Every Ingress in the snapshot, ours or not.
    pub ingresses: Vec<IngressView>,
    /// The Service of `--publish-service` (its load balancer addresses),
    /// when configured and present.
    pub publish_service: Option<Service>,
    /// Problems that appeared with this apply.
    pub new_problems: Vec<Problem>,
    /// uids of the namespaced objects problems may point at, besides
    /// Ingresses (Secrets, ConfigMaps), for event references.
    pub uids: BTreeMap<ObjectRef, String>,
    /// Namespaces being deleted: the API server takes no new object there,
    /// events included.
    pub terminating_namespaces: BTreeSet<String>,
}

impl AppliedConfig {
    /// Whether events can be recorded in `namespace`: not while it is
    /// being deleted.
    pub fn takes_events_in(&self, namespace: &str) -> bool {
        !self.terminating_namespaces.contains(namespace)
    }
}

/// The running provider.
pub struct ClusterWatch {
    /// The latest apply; `None` until every kind has been listed once.
    pub applied: watch::Receiver<Option<Arc<AppliedConfig>>>,
    sources: Vec<JoinHandle<()>>,
    folder: JoinHandle<()>,
}

impl ClusterWatch {
    /// Starts a watch per kind in `scope` and the task that folds their
    /// changes into snapshots and applies them through `applier`.
    pub fn start(client: Client, scope: &WatchScope, applier: Arc<ConfigApplier>) -> Self {
        let (changes_tx, changes_rx) = mpsc::channel(4096);
        let mut sources = Vec::new();
        let ns = scope.namespace.as_deref();
        sources.push(spawn_watch(
            api::<Ingress>(&client, ns),
            watcher::Config::default(),
            KubeObject::Ingress,
            Watched::kind(ObjectKind::Ingress),
            sources.len(),
            changes_tx.clone(),
        ));
        sources.push(spawn_watch(
            Api::<IngressClass>::all(client.clone()),
            watcher::Config::default(),
            KubeObject::IngressClass,
            Watched::kind(ObjectKind::IngressClass),
            sources.len(),
            changes_tx.clone(),
        ));
        sources.push(spawn_watch(
            api::<Service>(&client, ns),
            watcher::Config::default(),
            KubeObject::Service,
            Watched::kind(ObjectKind::Service),
            sources.len(),
            changes_tx.clone(),
        ));
        sources.push(spawn_watch(
            api::<EndpointSlice>(&client, ns),
            watcher::Config::default(),
            KubeObject::EndpointSlice,
            Watched::kind(ObjectKind::EndpointSlice),
            sources.len(),
            changes_tx.clone(),
        ));
        // TLS Secrets and the Opaque ones annotations name (auth-secret,
        // proxy-ssl-secret, auth-tls-secret hold a CA alone). Helm's
        // releases and service-account tokens are many, large and never
        // ours: the API server leaves them out.
        sources.push(spawn_watch(
            api::<Secret>(&client, ns),
            watcher::Config::default().fields(IGNORED_SECRET_TYPES),
            KubeObject::Secret,
            Watched::kind(ObjectKind::Secret),
            sources.len(),
            changes_tx.clone(),
        ));
        // Whether a namespace is being deleted decides which Ingress wins
        // a conflict: an Ingress going away never shadows a live one.
        let (namespaces, watched_namespace) = match ns {
            Some(namespace) => (
                watcher::Config::default().fields(&format!("metadata.name={namespace}")),
                Watched {
                    kind: ObjectKind::Namespace,
                    name: Some(ObjectKey::cluster(namespace)),
                },
            ),
            None => (
                watcher::Config::default(),
                Watched::kind(ObjectKind::Namespace),
            ),
        };
        sources.push(spawn_watch(
            Api::<Namespace>::all(client.clone()),
            namespaces,
            KubeObject::Namespace,
            watched_namespace,
            sources.len(),
            changes_tx.clone(),
        ));
        for config_map in &scope.config_maps {
            sources.push(spawn_watch(
                Api::<ConfigMap>::namespaced(client.clone(), &config_map.namespace),
                watcher::Config::default().fields(&format!("metadata.name={}", config_map.name)),
                KubeObject::ConfigMap,
                Watched {
                    kind: ObjectKind::ConfigMap,
                    name: Some(config_map.clone()),
                },
                sources.len(),
                changes_tx.clone(),
            ));
        }
        drop(changes_tx);
        let watched: Vec<Watched> = sources.iter().map(|s| s.watched.clone()).collect();
        let (applied_tx, applied) = watch::channel(None);
        let folder = tokio::spawn(fold_changes(
            changes_rx,
            watched,
            scope.publish_service.clone(),
            applier,
            applied_tx,
        ));
        Self {
            applied,
            sources: sources.into_iter().map(|s| s.task).collect(),
            folder,
        }
    }

    /// Stops every watch.
    pub fn abort(&self) {
        for task in &self.sources {
            task.abort();
        }
        self.folder.abort();
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Runs one watch (list, watch, relist after errors with backoff) and sends
/// its changes, without managed fields (they are large and unused).
fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    wrap: fn(K) -> KubeObject,
    watched: Watched,
    source: usize,
    changes: mpsc::Sender<Change>,
) -> WatchSource
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    <K as Resource>::DynamicType: Default,
{
    let stream = watcher(api, config)
        .modify(|object: &mut K| object.managed_fields_mut().clear())
        .backoff(WatchBackoff::default());
    let task = tokio::spawn(forward(stream, wrap, watched.kind, source, changes));
    WatchSource { watched, task }
}

/// The first wait before a failed watch is tried again.
/// The field selector of the Secret watch: every type but those that are
/// never an ingress's (Helm release records, service-account tokens).
pub(crate) const IGNORED_SECRET_TYPES: &str =
    "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";

const WATCH_RETRY_MIN: Duration = Duration::from_millis(500);
/// The longest wait between two tries.
const WATCH_RETRY_MAX: Duration = Duration::from_secs(5);

/// When a failed watch is tried again: 0.5 s, doubling up to 5 s, each
/// wait with up to a quarter more at random (so kinds and replicas do not
/// retry in step), back to 0.5 s once the watch delivers again. kube-runtime's
/// default doubles up to 30 s with as much again at random: after a
/// 30-second API server outage a watch stayed down for a minute or more
/// after the server was back (its RBAC answers 403 for a while after a
/// restart, which pushed the waits further).
#[derive(Debug)]
struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            next: WATCH_RETRY_MIN,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (delay * 2).min(WATCH_RETRY_MAX);
        Some(delay + delay.mul_f64(fastrand::f64() / 4.0))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_RETRY_MIN;
    }
}

async fn forward<K>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    wrap: fn(K) -> KubeObject,
    kind: ObjectKind,
    source: usize,
    changes: mpsc::Sender<Change>,
) where
    K: Resource + Clone + Debug,
{
    let mut stream = std::pin::pin!(stream);
    let mut failing = false;
    while let Some(event) = stream.next().await {
        let change = match event {
            Ok(watcher::Event::Apply(object)) => Change::Apply(wrap(object)),
            Ok(watcher::Event::Delete(object)) => {
                let object = wrap(object);
                match object.object_ref() {
                    Some(object_ref) => Change::Delete(object_ref),
                    None => continue,
                }
            }
            Ok(watcher::Event::Init) => Change::ListStart(source),
            Ok(watcher::Event::InitApply(object)) => Change::Listed(source, wrap(object)),
            Ok(watcher::Event::InitDone) => {
                if failing {
                    info!(%kind, "watch resumed");
                    failing = false;
                }
                Change::ListDone(source)
            }
            Err(error) => {
                // The stream retries by itself (with backoff); until then
                // the last configuration keeps serving.
                if !failing {
                    warn!(%kind, "watch failed, retrying with backoff (the last configuration keeps serving): {error}");
                    failing = true;
                } else {
                    debug!(%kind, "watch still failing: {error}");
                }
                continue;
            }
        };
        if changes.send(change).await.is_err() {
            return;
        }
    }
}

/// How long a burst of changes may keep growing before it is applied, and
/// the quiet gap that ends it early.
const BURST_LIMIT: Duration = Duration::from_millis(200);
const BURST_QUIET: Duration = Duration::from_millis(10);

async fn fold_changes(
    mut changes: mpsc::Receiver<Change>,
    watched: Vec<Watched>,
    publish_service: Option<ObjectKey>,
    applier: Arc<ConfigApplier>,
    applied: watch::Sender<Option<Arc<AppliedConfig>>>,
) {
    let mut store = ObjectStore::new(watched);
    let mut listed_before = false;
    while let Some(first) = changes.recv().await {
        store.take(first);
        let started = Instant::now();
        // Gather the rest of the burst.
        while started.elapsed() < BURST_LIMIT {
            match tokio::time::timeout(BURST_QUIET, changes.recv()).await {
                Ok(Some(change)) => store.take(change),
                Ok(None) | Err(_) => break,
            }
        }
        if !store.all_listed() || !(store.dirty || store.view_dirty) {
            continue;
        }
        let rebuild = store.dirty;
        store.dirty = false;
        store.view_dirty = false;
        if !listed_before {
            info!(
                objects = store.objects.len(),
                "first full list from the API server"
            );
        }
        listed_before = true;
        // Building a table of 10,000 Ingresses takes a while: off the
        // async workers, so the proxy and the writers keep running. The
        // snapshot is shared with the task and unique again after it, so
        // the next changes update it in place.
        let objects = store.objects.clone();
        let applier_task = applier.clone();
        let publish = publish_service.clone();
        let view = tokio::task::spawn_blocking(move || {
            // A change of an Ingress's status alone (our own writes coming
            // back) changes no route: only the view is refreshed.
            let new_problems = if rebuild {
                applier_task.apply(&objects).new_problems
            } else {
                Vec::new()
            };
            view_of(&objects, &applier_task, publish.as_ref(), new_problems)
        })
        .await;
        match view {
            Ok(view) => {
                let _ = applied.send(Some(Arc::new(view)));
            }
            Err(error) => warn!("applying the configuration failed: {error}"),
        }
    }
}

/// The snapshot, and the relists in progress.
struct ObjectStore {
    /// Shared with an apply in progress, else unique (updated in place).
    objects: Arc<ClusterObjects>,
    /// What each watch source reads.
    watched: Vec<Watched>,
    /// Objects of a relist in progress, per source.
    relisting: BTreeMap<usize, Vec<KubeObject>>,
    /// Sources listed at least once.
    listed: BTreeSet<usize>,
    /// Whether the snapshot changed since the last apply.
    dirty: bool,
    /// Whether only what the view shows (an Ingress's status) changed.
    view_dirty: bool,
}

impl Watched {
    fn kind(kind: ObjectKind) -> Self {
        Self { kind, name: None }
    }
}

impl ObjectStore {
    fn new(watched: Vec<Watched>) -> Self {
        Self {
            objects: Arc::new(ClusterObjects::new()),
            watched,
            relisting: BTreeMap::new(),
            listed: BTreeSet::new(),
            dirty: false,
            view_dirty: false,
        }
    }

    fn all_listed(&self) -> bool {
        self.listed.len() == self.watched.len()
    }

    fn take(&mut self, change: Change) {
        match change {
            Change::Apply(object) => {
                let status_only = match &object {
                    KubeObject::Ingress(new) => self
                        .objects
                        .ingresses
                        .get(&ObjectKey::of_namespaced(&new.metadata))
                        .is_some_and(|old| same_but_status(old, new)),
                    _ => false,
                };
                Arc::make_mut(&mut self.objects).insert(object);
                if status_only {
                    self.view_dirty = true;
                } else {
                    self.dirty = true;
                }
            }
            Change::Delete(object_ref) => {
                self.dirty |= Arc::make_mut(&mut self.objects).remove(&object_ref);
            }
            Change::ListStart(source) => {
                self.relisting.insert(source, Vec::new());
            }
            Change::Listed(source, object) => {
                self.relisting.entry(source).or_default().push(object);
            }
            Change::ListDone(source) => {
                let listed = self.relisting.remove(&source).unwrap_or_default();
                let Watched { kind, name } = &self.watched[source];
                let objects = Arc::make_mut(&mut self.objects);
                match name {
                    // A watch of one object: its relist holds it or not.
                    Some(name) => {
                        objects.remove(&ObjectRef::new(*kind, name.clone()));
                        for object in listed {
                            objects.insert(object);
                        }
                    }
                    None => objects.replace_kind(*kind, listed),
                }
                self.listed.insert(source);
                self.dirty = true;
            }
        }
    }
}

/// What the status writer and the event publisher read of an apply.
fn view_of(
    objects: &ClusterObjects,
    applier: &ConfigApplier,
    publish_service: Option<&ObjectKey>,
    new_problems: Vec<Problem>,
) -> AppliedConfig {
    let ours: BTreeSet<&ObjectKey> = ingress_model::select_ingresses(objects, applier.options())
        .ours
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    let unserved = applier.unserved();
    let ingresses = objects
        .ingresses
        .iter()
        .map(|(key, ingress)| IngressView {
            key: key.clone(),
            uid: ingress.metadata.uid.clone(),
            revision: revision(ingress),
            ours: ours.contains(key),
            serves: !unserved.contains(key),
            status_addresses: status_addresses(ingress),
        })
        .collect();
    let mut uids = BTreeMap::new();
    for (key, secret) in &objects.secrets {
        if let Some(uid) = &secret.metadata.uid {
            uids.insert(ObjectRef::new(ObjectKind::Secret, key.clone()), uid.clone());
        }
    }
    for (key, config_map) in &objects.config_maps {
        if let Some(uid) = &config_map.metadata.uid {
            uids.insert(
                ObjectRef::new(ObjectKind::ConfigMap, key.clone()),
                uid.clone(),
            );
        }
    }
    AppliedConfig {
        ingresses,
        publish_service: publish_service
            .and_then(|key| objects.services.get(key))
            .map(|service| Service::clone(service)),
        new_problems,
        uids,
        terminating_namespaces: objects
            .namespaces
            .iter()
            .filter(|(_, namespace)| ingress_model::namespace_terminating(namespace))
            .map(|(key, _)| key.name.clone())
            .collect(),
    }
}

/// A hash of what an Ingress asks for: its generation and annotations.
fn revision(ingress: &Ingress) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    ingress.metadata.generation.hash(&mut hasher);
    ingress.metadata.annotations.hash(&mut hasher);
    hasher.finish()
}

/// Whether two versions of an Ingress differ only in their status (and
/// bookkeeping: resourceVersion, managedFields): such a change is our own
/// status write coming back, and changes no route.
fn same_but_status(old: &Ingress, new: &Ingress) -> bool {
    old.spec == new.spec
        && old.metadata.annotations == new.metadata.annotations
        && old.metadata.labels == new.metadata.labels
        && old.metadata.creation_timestamp == new.metadata.creation_timestamp
        && old.metadata.deletion_timestamp == new.metadata.deletion_timestamp
}

/// `status.loadBalancer.ingress` of an Ingress, as ip or hostname strings.
pub fn status_addresses(ingress: &Ingress) -> Vec<String> {
    ingress
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|entries| {
            entries
                .iter()
                .filter_map(|entry| entry.ip.clone().or_else(|| entry.hostname.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_watches_retry_within_seconds_and_start_over_after_success() {
        let mut backoff = WatchBackoff::default();
        let waits: Vec<Duration> = backoff.by_ref().take(8).collect();
        let floors = [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0];
        for (wait, floor) in waits.iter().zip(floors) {
            let floor = Duration::from_secs_f64(floor);
            assert!(
                *wait >= floor && *wait <= floor.mul_f64(1.25),
                "{wait:?} not within a quarter above {floor:?}: {waits:?}"
            );
        }
        backoff.reset();
        let again = backoff.next().unwrap();
        assert!(again >= WATCH_RETRY_MIN && again <= WATCH_RETRY_MIN.mul_f64(1.25));
    }

    fn ingress_object(name: &str) -> KubeObject {
        let mut ingress = Ingress::default();
        ingress.metadata.name = Some(name.into());
        ingress.metadata.namespace = Some("default".into());
        KubeObject::Ingress(ingress)
    }

    fn ingress_ref(name: &str) -> ObjectRef {
        ObjectRef::new(ObjectKind::Ingress, ObjectKey::new("default", name))
    }

    #[test]
    fn nothing_counts_before_every_source_is_listed() {
        let mut store = ObjectStore::new(vec![
            Watched::kind(ObjectKind::Ingress),
            Watched::kind(ObjectKind::Service),
        ]);
        store.take(Change::ListStart(0));
        store.take(Change::Listed(0, ingress_object("a")));
        store.take(Change::ListDone(0));
        assert!(!store.all_listed());
        store.take(Change::ListStart(1));
        store.take(Change::ListDone(1));
        assert!(store.all_listed());
        assert_eq!(store.objects.ingresses.len(), 1);
    }

    #[test]
    fn a_relist_replaces_its_kind_and_drops_what_was_deleted_meanwhile() {
        let mut store = ObjectStore::new(vec![Watched::kind(ObjectKind::Ingress)]);
        store.take(Change::ListStart(0));
        store.take(Change::Listed(0, ingress_object("a")));
        store.take(Change::Listed(0, ingress_object("b")));
        store.take(Change::ListDone(0));
        store.take(Change::Apply(ingress_object("c")));
        store.take(Change::Delete(ingress_ref("a")));
        let names = |store: &ObjectStore| -> Vec<String> {
            store
                .objects
                .ingresses
                .keys()
                .map(|k| k.name.clone())
                .collect()
        };
        assert_eq!(names(&store), ["b", "c"]);
        // A disconnect: the relist no longer has b (deleted while away).
        store.dirty = false;
        store.take(Change::ListStart(0));
        store.take(Change::Listed(0, ingress_object("c")));
        assert_eq!(names(&store), ["b", "c"], "unchanged until the relist ends");
        store.take(Change::ListDone(0));
        assert_eq!(names(&store), ["c"]);
        assert!(store.dirty);
    }

    #[test]
    fn deleting_an_unknown_object_changes_nothing() {
        let mut store = ObjectStore::new(vec![Watched::kind(ObjectKind::Ingress)]);
        store.take(Change::Delete(ingress_ref("ghost")));
        assert!(!store.dirty);
    }

    #[test]
    fn a_relist_by_name_settles_only_its_object() {
        let config_map = |name: &str| {
            let mut object = ConfigMap::default();
            object.metadata.name = Some(name.into());
            object.metadata.namespace = Some("ingress".into());
            KubeObject::ConfigMap(object)
        };
        let named = |name: &str| Watched {
            kind: ObjectKind::ConfigMap,
            name: Some(ObjectKey::new("ingress", name)),
        };
        let mut store = ObjectStore::new(vec![named("tcp"), named("udp")]);
        for (source, name) in [(0, "tcp"), (1, "udp")] {
            store.take(Change::ListStart(source));
            store.take(Change::Listed(source, config_map(name)));
            store.take(Change::ListDone(source));
        }
        assert_eq!(store.objects.config_maps.len(), 2);
        // tcp was deleted while the watch was away: its relist is empty.
        store.take(Change::ListStart(0));
        store.take(Change::ListDone(0));
        let names: Vec<_> = store
            .objects
            .config_maps
            .keys()
            .map(|k| k.name.clone())
            .collect();
        assert_eq!(names, ["udp"], "the other named object stays");
    }
}
