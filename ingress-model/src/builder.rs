//! Building route tables from successive snapshots, redoing only what
//! changed.
//!
//! A change to one Ingress among 10,000 used to rebuild everything: every
//! Ingress read again, every backend resolved again, every host's path maps
//! allocated again (100-170 ms). The builder keeps, per Ingress, its
//! [`Contribution`] (paths with resolved backends, default backend, TLS
//! entries, own problems), keyed by the `Arc` of the Ingress version it was
//! read from, and an index of which Ingresses name which Service and
//! Secret. A new snapshot is compared with the versions seen last time
//! (pointer comparisons, no object is compared or copied); only the
//! contributions of changed Ingresses, and of Ingresses naming a changed
//! Service (or one whose EndpointSlices changed) or Secret, are read again.
//! Only the hosts those contributions touch are merged again, with the same
//! rules as a full build (Ingresses in [`Precedence`] order, first rule for
//! a host, path and type wins); every other host's routes are shared, by
//! `Arc`, with the previous table.
//!
//! [`RouteTable::build`] is a builder's first build, so both providers and
//! the `routes` command go through this one path.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering as AtomicOrdering},
    },
};

use k8s_openapi::api::{
    core::v1::{Namespace, Secret, Service},
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, IngressClass},
};

use crate::{
    FastHashMap,
    access::IngressSourceRanges,
    backend::{Backend, Resolution, ServiceEndpoints, UnavailableBackend},
    canary::CanaryRoute,
    class::classify_ingress,
    contribution::{Contribution, Outcome, Precedence, Step, path_context},
    host::HostPattern,
    object::{ObjectKey, ObjectKind, ObjectRef},
    options::ModelOptions,
    policy::RoutePolicy,
    problem::{Problem, ProblemReason},
    rewrite::PathRegex,
    snapshot::{ClusterObjects, namespace_terminating},
    table::{
        DefaultOrigin, DefaultRoute, DefaultScope, HostRoutes, PathRoute, RouteTable,
        describe_origin,
    },
    tls::TlsPlan,
};

type FastHashSet<T> = HashSet<T, foldhash::fast::RandomState>;

/// One Ingress of the last snapshot.
#[derive(Debug)]
struct IngressEntry {
    /// The version read (its pointer tells a new version apart).
    ingress: Arc<Ingress>,
    /// What it contributes, when it is ours.
    ours: Option<Ours>,
}

/// One of our Ingresses: where it stands, what it brings, its problems.
#[derive(Debug)]
struct Ours {
    precedence: Precedence,
    contribution: Contribution,
    problems: Vec<Problem>,
    /// It had paths or default backends to route, and lost every one of
    /// them to other Ingresses (as of the last merges).
    unserved: bool,
}

/// Builds route tables from successive snapshots of the same cluster (or
/// set of files), reusing what did not change since the previous build;
/// each table equals what a build from scratch gives.
#[derive(Debug)]
pub struct RouteTableBuilder {
    options: ModelOptions,
    ingresses: BTreeMap<ObjectKey, IngressEntry>,
    classes: BTreeMap<ObjectKey, Arc<IngressClass>>,
    services: BTreeMap<ObjectKey, Arc<Service>>,
    slices: BTreeMap<ObjectKey, Arc<EndpointSlice>>,
    secrets: BTreeMap<ObjectKey, Arc<Secret>>,
    namespaces: BTreeMap<ObjectKey, Arc<Namespace>>,
    endpoints: ServiceEndpoints,
    /// Our Ingresses in precedence order.
    order: BTreeSet<Precedence>,
    /// Per host, the Ingresses with rules for it and the index of the host
    /// in their contribution, in precedence order (a sorted `Vec`: most
    /// hosts have one Ingress, and a B-tree node per host was a kilobyte).
    host_members: FastHashMap<HostPattern, Vec<(Precedence, usize)>>,
    /// How many TLS bindings name each host.
    tls_hosts: FastHashMap<HostPattern, usize>,
    /// Ingresses without rules but with a `defaultBackend`.
    fallback_candidates: BTreeSet<Precedence>,
    /// Which Ingresses name each Service, and each Secret.
    service_users: FastHashMap<ObjectKey, FastHashSet<ObjectKey>>,
    secret_users: FastHashMap<ObjectKey, FastHashSet<ObjectKey>>,
    /// The merged routes, shared with the tables handed out.
    exact_hosts: FastHashMap<Arc<str>, Arc<HostRoutes>>,
    wildcard_hosts: FastHashMap<Arc<str>, Arc<HostRoutes>>,
    any_host: Option<Arc<HostRoutes>>,
    /// `server-alias` names and `from-to-www-redirect` counterparts, and
    /// which host set each.
    alias_hosts: FastHashMap<Arc<str>, Arc<HostRoutes>>,
    aliases_of: FastHashMap<HostPattern, Vec<Arc<str>>>,
    ingress_fallback: Option<DefaultRoute>,
    tls: Arc<TlsPlan>,
    /// The problems of our Ingresses (TLS ones first), in precedence order.
    problems: Arc<Vec<Problem>>,
    /// Our Ingresses that route nothing: they lost every path and default
    /// backend they have to other Ingresses.
    unserved: Arc<BTreeSet<ObjectKey>>,
    /// Paths routed, all hosts together.
    paths: usize,
    /// What our Ingresses say about source ranges beyond their routes.
    source_ranges: Arc<IngressSourceRanges>,
    /// The id of the last table built (0: none yet).
    last_table: u64,
}

/// Ids of tables, unique in the process (so a table built by one builder
/// is never taken for the parent of another builder's).
static NEXT_TABLE_ID: AtomicU64 = AtomicU64::new(1);

/// What changed in one kind between the versions seen and a snapshot.
struct Changed<'a, T> {
    key: ObjectKey,
    new: Option<&'a Arc<T>>,
}

/// The keys whose object differs (by pointer) between `seen` and
/// `current`, both sorted: one pass over both.
fn changed<'a, T, V>(
    current: &'a BTreeMap<ObjectKey, Arc<T>>,
    seen: &BTreeMap<ObjectKey, V>,
    version: impl Fn(&V) -> &Arc<T>,
) -> Vec<Changed<'a, T>> {
    let mut changes = Vec::new();
    let mut current = current.iter().peekable();
    let mut seen = seen.iter().peekable();
    loop {
        match (current.peek(), seen.peek()) {
            (None, None) => break,
            (Some((key, new)), None) => {
                changes.push(Changed {
                    key: (*key).clone(),
                    new: Some(*new),
                });
                current.next();
            }
            (None, Some((key, _))) => {
                changes.push(Changed {
                    key: (*key).clone(),
                    new: None,
                });
                seen.next();
            }
            // The same version is the same object under the same key (a
            // snapshot stores an object under its own key): no need to
            // compare the keys' strings, which is most of this pass.
            (Some((_, new)), Some((_, old))) if Arc::ptr_eq(new, version(old)) => {
                current.next();
                seen.next();
            }
            (Some((key, new)), Some((seen_key, _))) => match key.cmp(seen_key) {
                std::cmp::Ordering::Equal => {
                    changes.push(Changed {
                        key: (*key).clone(),
                        new: Some(*new),
                    });
                    current.next();
                    seen.next();
                }
                std::cmp::Ordering::Less => {
                    changes.push(Changed {
                        key: (*key).clone(),
                        new: Some(*new),
                    });
                    current.next();
                }
                std::cmp::Ordering::Greater => {
                    changes.push(Changed {
                        key: (*seen_key).clone(),
                        new: None,
                    });
                    seen.next();
                }
            },
        }
    }
    changes
}

/// The version of an object the builder holds is the object's `Arc` itself.
fn same<T>(version: &Arc<T>) -> &Arc<T> {
    version
}

/// Brings `seen` to `changes`, returning the previous versions.
fn follow<T>(
    seen: &mut BTreeMap<ObjectKey, Arc<T>>,
    changes: &[Changed<'_, T>],
) -> Vec<Option<Arc<T>>> {
    changes
        .iter()
        .map(|change| match change.new {
            Some(new) => seen.insert(change.key.clone(), Arc::clone(new)),
            None => seen.remove(&change.key),
        })
        .collect()
}

impl RouteTableBuilder {
    /// A builder that has built nothing yet.
    pub fn new(options: ModelOptions) -> Self {
        Self {
            options,
            ingresses: BTreeMap::new(),
            classes: BTreeMap::new(),
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            secrets: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            endpoints: ServiceEndpoints::default(),
            order: BTreeSet::new(),
            host_members: FastHashMap::default(),
            tls_hosts: FastHashMap::default(),
            fallback_candidates: BTreeSet::new(),
            service_users: FastHashMap::default(),
            secret_users: FastHashMap::default(),
            exact_hosts: FastHashMap::default(),
            wildcard_hosts: FastHashMap::default(),
            any_host: None,
            alias_hosts: FastHashMap::default(),
            aliases_of: FastHashMap::default(),
            ingress_fallback: None,
            tls: Arc::new(TlsPlan::default()),
            problems: Arc::new(Vec::new()),
            unserved: Arc::default(),
            source_ranges: Arc::default(),
            paths: 0,
            last_table: 0,
        }
    }

    /// The options the tables are built with.
    pub fn options(&self) -> &ModelOptions {
        &self.options
    }

    /// The table for `objects` and the problems found, as
    /// [`RouteTable::build`] gives them; the work is proportional to what
    /// changed since the previous build, plus a pass of pointer
    /// comparisons over the snapshot.
    pub fn build(&mut self, objects: &ClusterObjects) -> (RouteTable, Vec<Problem>) {
        let mut stale: FastHashSet<ObjectKey> = FastHashSet::default();
        self.follow_services(objects, &mut stale);
        self.follow_secrets(objects, &mut stale);
        self.follow_namespaces(objects, &mut stale);
        let classes_changed = self.follow_classes(objects);
        for change in changed(&objects.ingresses, &self.ingresses, |e| &e.ingress) {
            stale.insert(change.key);
        }
        if classes_changed {
            // Which Ingresses are ours may have changed for any of them.
            for (key, entry) in &self.ingresses {
                let ours = classify_ingress(&entry.ingress, objects, &self.options).is_ok();
                if ours != entry.ours.is_some() {
                    stale.insert(key.clone());
                }
            }
        }
        let mut dirty = Dirty::default();
        let ingresses_changed = !stale.is_empty();
        let mut stale: Vec<ObjectKey> = stale.into_iter().collect();
        stale.sort();
        for key in &stale {
            self.retire(key, &mut dirty);
        }
        for key in &stale {
            self.read(key, objects, &mut dirty);
        }
        let changed_hosts: Arc<[HostPattern]> =
            std::mem::take(&mut dirty.hosts).into_iter().collect();
        for host in changed_hosts.iter() {
            self.merge_host(host, &mut dirty);
        }
        if dirty.fallback {
            self.settle_fallback(&mut dirty);
        }
        for key in &dirty.problems {
            if let Some(ours) = self.ingresses.get_mut(key).and_then(|e| e.ours.as_mut()) {
                let mut problems = ours.contribution.problems();
                let unserved = serves(&ours.contribution) == Some(false);
                if unserved {
                    problems.push(not_served(&ours.contribution));
                }
                if unserved != ours.unserved {
                    ours.unserved = unserved;
                    let set = Arc::make_mut(&mut self.unserved);
                    if unserved {
                        set.insert(key.clone());
                    } else {
                        set.remove(key);
                    }
                }
                if problems != ours.problems {
                    ours.problems = problems;
                    dirty.problem_list = true;
                }
            }
        }
        if dirty.tls {
            let mut plan = TlsPlan::default();
            for precedence in &self.order {
                if let Some(ours) = self.ours(&precedence.key) {
                    plan.add(&ours.contribution.tls);
                }
            }
            self.tls = Arc::new(plan);
        }
        if dirty.problem_list {
            let mut problems = Vec::new();
            for precedence in &self.order {
                if let Some(ours) = self.ours(&precedence.key) {
                    problems.extend(ours.contribution.tls_problems.iter().cloned());
                }
            }
            for precedence in &self.order {
                if let Some(ours) = self.ours(&precedence.key) {
                    problems.extend(ours.problems.iter().cloned());
                }
            }
            self.problems = Arc::new(problems);
        }
        if ingresses_changed {
            self.source_ranges = Arc::new(self.ingress_source_ranges());
        }
        let mut problems = Vec::clone(&self.problems);
        let fallback = self.fallback(objects, &mut problems);
        let id = NEXT_TABLE_ID.fetch_add(1, AtomicOrdering::Relaxed);
        let parent = (self.last_table != 0).then_some((self.last_table, changed_hosts));
        self.last_table = id;
        let table = RouteTable {
            exact_hosts: self.exact_hosts.clone(),
            wildcard_hosts: self.wildcard_hosts.clone(),
            any_host: self.any_host.clone(),
            alias_hosts: self.alias_hosts.clone(),
            fallback,
            tls: Arc::clone(&self.tls),
            unserved: Arc::clone(&self.unserved),
            source_ranges: Arc::clone(&self.source_ranges),
            paths: self.paths,
            id,
            parent,
        };
        (table, problems)
    }

    /// The listener-wide drops of our Ingresses and which of them set
    /// their own source lists (a canary's lists are the main Ingress's).
    fn ingress_source_ranges(&self) -> IngressSourceRanges {
        let mut ranges = IngressSourceRanges::default();
        for precedence in &self.order {
            let Some(ours) = self.ours(&precedence.key) else {
                continue;
            };
            let contribution = &ours.contribution;
            ranges.xdp_drop.extend(&contribution.xdp_drop);
            if contribution.policy.as_ref().is_some_and(|p| {
                p.satisfy_any && (p.basic_auth.is_some() || p.external_auth.is_some())
            }) {
                ranges.satisfy_any.push(precedence.key.clone());
            }
            if let Some(access) = contribution.policy.as_ref().and_then(|p| p.access.as_ref()) {
                if !access.allow.is_empty() {
                    ranges.own_allow.push(precedence.key.clone());
                }
                if !access.deny.is_empty() {
                    ranges.own_deny.push(precedence.key.clone());
                }
            }
        }
        ranges.xdp_drop.sort();
        ranges.xdp_drop.dedup();
        ranges.own_allow.sort();
        ranges.own_deny.sort();
        ranges.satisfy_any.sort();
        ranges
    }

    fn ours(&self, key: &ObjectKey) -> Option<&Ours> {
        self.ingresses
            .get(key)
            .and_then(|entry| entry.ours.as_ref())
    }

    /// Follows Services and EndpointSlices; the Ingresses naming one that
    /// changed (or whose slices changed) go to `stale`.
    fn follow_services(&mut self, objects: &ClusterObjects, stale: &mut FastHashSet<ObjectKey>) {
        let mut touched: Vec<ObjectKey> = Vec::new();
        let services = changed(&objects.services, &self.services, same);
        follow(&mut self.services, &services);
        for change in services {
            self.endpoints.forget(&change.key);
            touched.push(change.key);
        }
        let slices = changed(&objects.endpoint_slices, &self.slices, same);
        let old = follow(&mut self.slices, &slices);
        for (change, old) in slices.iter().zip(old) {
            touched.extend(
                self.endpoints
                    .slice_changed(&change.key, old.as_ref(), change.new),
            );
        }
        for service in touched {
            if let Some(users) = self.service_users.get(&service) {
                stale.extend(users.iter().cloned());
            }
        }
    }

    /// Follows Secrets; the Ingresses naming a changed one go to `stale`.
    fn follow_secrets(&mut self, objects: &ClusterObjects, stale: &mut FastHashSet<ObjectKey>) {
        let secrets = changed(&objects.secrets, &self.secrets, same);
        follow(&mut self.secrets, &secrets);
        for change in secrets {
            if let Some(users) = self.secret_users.get(&change.key) {
                stale.extend(users.iter().cloned());
            }
        }
    }

    /// Follows Namespaces; the Ingresses of one that starts or stops going
    /// away go to `stale` (their precedence changes).
    fn follow_namespaces(&mut self, objects: &ClusterObjects, stale: &mut FastHashSet<ObjectKey>) {
        let namespaces = changed(&objects.namespaces, &self.namespaces, same);
        if namespaces.is_empty() {
            return;
        }
        let old = follow(&mut self.namespaces, &namespaces);
        for (change, old) in namespaces.iter().zip(old) {
            let going = |namespace: Option<&Arc<Namespace>>| {
                namespace.is_some_and(|namespace| namespace_terminating(namespace))
            };
            if going(change.new) == going(old.as_ref()) {
                continue;
            }
            let name = &change.key.name;
            let members = self
                .ingresses
                .range(ObjectKey::new(name.clone(), "")..)
                .take_while(|(key, _)| key.namespace == *name);
            stale.extend(members.map(|(key, _)| key.clone()));
        }
    }

    /// Follows IngressClasses; true when any changed.
    fn follow_classes(&mut self, objects: &ClusterObjects) -> bool {
        let classes = changed(&objects.ingress_classes, &self.classes, same);
        follow(&mut self.classes, &classes);
        !classes.is_empty()
    }

    /// Takes the contribution of `key` (if any) out of the merged state.
    fn retire(&mut self, key: &ObjectKey, dirty: &mut Dirty) {
        let Some(ours) = self.ingresses.get_mut(key).and_then(|e| e.ours.take()) else {
            return;
        };
        let Ours {
            precedence,
            contribution,
            problems,
            unserved,
        } = ours;
        if unserved {
            Arc::make_mut(&mut self.unserved).remove(key);
        }
        self.order.remove(&precedence);
        for slot in &contribution.hosts {
            if let Some(members) = self.host_members.get_mut(&slot.host) {
                if let Ok(at) = members.binary_search_by(|(p, _)| p.cmp(&precedence)) {
                    members.remove(at);
                }
                if members.is_empty() {
                    self.host_members.remove(&slot.host);
                }
            }
            dirty.hosts.insert(slot.host.clone());
        }
        self.tls_bindings_changed(&contribution, false, dirty);
        if self.fallback_candidates.remove(&precedence) {
            dirty.fallback = true;
        }
        for service in &contribution.services {
            unlink(&mut self.service_users, service, key);
        }
        for secret in &contribution.secrets {
            unlink(&mut self.secret_users, secret, key);
        }
        if !problems.is_empty() || !contribution.tls_problems.is_empty() {
            dirty.problem_list = true;
        }
    }

    /// Reads `key` from `objects` again (or forgets it) and puts its
    /// contribution, if it is ours, into the merged state.
    fn read(&mut self, key: &ObjectKey, objects: &ClusterObjects, dirty: &mut Dirty) {
        let Some(ingress) = objects.ingresses.get(key) else {
            self.ingresses.remove(key);
            return;
        };
        let ours = classify_ingress(ingress, objects, &self.options).is_ok();
        if !ours {
            self.ingresses.insert(
                key.clone(),
                IngressEntry {
                    ingress: Arc::clone(ingress),
                    ours: None,
                },
            );
            return;
        }
        let precedence = Precedence::of(key, ingress, objects.namespace_going_away(&key.namespace));
        let mut contribution = {
            let mut resolver = self.endpoints.resolver(objects);
            Contribution::of(key, ingress, objects, &mut resolver)
        };
        self.order.insert(precedence.clone());
        for (index, slot) in contribution.hosts.iter().enumerate() {
            let members = self.host_members.entry(slot.host.clone()).or_default();
            let at = members
                .binary_search_by(|(p, _)| p.cmp(&precedence))
                .unwrap_or_else(|at| at);
            members.insert(at, (precedence.clone(), index));
            dirty.hosts.insert(slot.host.clone());
        }
        self.tls_bindings_changed(&contribution, true, dirty);
        if !contribution.has_rules && contribution.default_backend.is_some() {
            if contribution.canary.is_some() {
                contribution.fallback_outcome = Outcome::Lost(Problem::new(
                    contribution.object.clone(),
                    ProblemReason::CanaryWithoutMain,
                    "the defaultBackend of a canary Ingress is not used",
                ));
            } else {
                self.fallback_candidates.insert(precedence.clone());
                dirty.fallback = true;
            }
        }
        for service in &contribution.services {
            link(&mut self.service_users, service, key);
        }
        for secret in &contribution.secrets {
            link(&mut self.secret_users, secret, key);
        }
        if !contribution.tls_problems.is_empty() {
            dirty.problem_list = true;
        }
        dirty.problems.insert(key.clone());
        // Its problems are assembled after the merges; until then it has
        // none, so a contribution that finds none changes no list.
        self.ingresses.insert(
            key.clone(),
            IngressEntry {
                ingress: Arc::clone(ingress),
                ours: Some(Ours {
                    precedence,
                    contribution,
                    problems: Vec::new(),
                    unserved: false,
                }),
            },
        );
    }

    /// Counts the TLS hosts of `contribution` in (`added`) or out; a host
    /// that gains or loses its last binding is merged again (its routes'
    /// HTTPS redirects depend on it), and the plan is rebuilt.
    fn tls_bindings_changed(
        &mut self,
        contribution: &Contribution,
        added: bool,
        dirty: &mut Dirty,
    ) {
        if contribution.tls.is_empty() {
            return;
        }
        dirty.tls = true;
        for host in contribution.tls.iter().flat_map(|b| &b.hosts) {
            let count = self.tls_hosts.entry(host.clone()).or_default();
            if added {
                *count += 1;
                if *count == 1 {
                    dirty.hosts.insert(host.clone());
                }
            } else {
                *count -= 1;
                if *count == 0 {
                    self.tls_hosts.remove(host);
                    dirty.hosts.insert(host.clone());
                }
            }
        }
    }

    /// Merges the contributions for `host` (first rule in precedence order
    /// wins each path and the default), records each rule's outcome, and
    /// puts the host's routes in place (or removes them: no rule left).
    fn merge_host(&mut self, host: &HostPattern, dirty: &mut Dirty) {
        let Some(members) = self.host_members.get(host) else {
            self.put_host(host, None);
            self.put_aliases(host, Vec::new());
            return;
        };
        let has_tls = self.tls_hosts.contains_key(host);
        let mut routes = HostRoutes::new();
        // One Ingress with regex paths makes every path of the host one.
        let regex_host = members.iter().any(|(precedence, _)| {
            self.ingresses
                .get(&precedence.key)
                .and_then(|e| e.ours.as_ref())
                .filter(|ours| ours.contribution.canary.is_none())
                .and_then(|ours| ours.contribution.policy.as_ref())
                .is_some_and(|policy| policy.regex_paths())
        });
        // The main Ingresses first, then the canaries join their routes.
        let is_canary = |key: &ObjectKey| {
            self.ingresses
                .get(key)
                .and_then(|e| e.ours.as_ref())
                .is_some_and(|ours| ours.contribution.canary.is_some())
        };
        let (canaries, mains): (Vec<_>, Vec<_>) = members
            .iter()
            .partition(|(precedence, _)| is_canary(&precedence.key));
        for (precedence, slot) in mains.into_iter().chain(canaries) {
            let Some(ours) = self
                .ingresses
                .get_mut(&precedence.key)
                .and_then(|e| e.ours.as_mut())
            else {
                continue;
            };
            dirty.problems.insert(precedence.key.clone());
            let contribution = &mut ours.contribution;
            if contribution.canary.is_some() {
                join_canary(contribution, *slot, host, &mut routes);
                continue;
            }
            let https_redirect = contribution.https_redirect(has_tls, &self.options);
            let policy = contribution.policy.clone();
            let object = contribution.object.clone();
            for index in contribution.hosts[*slot].paths.clone() {
                let Step::Path(step) = &mut contribution.steps[index] else {
                    continue;
                };
                let map = if step.rule.path_type.is_prefix() {
                    &mut routes.prefix
                } else {
                    &mut routes.exact
                };
                if let Some(existing) = map.get(&step.rule.key) {
                    let owner = if existing.ingress == object.key {
                        "an earlier path of this Ingress".to_owned()
                    } else {
                        format!("Ingress {}", existing.ingress)
                    };
                    let message = format!(
                        "{}: already routed by {owner} ({} {}), which wins",
                        path_context(host, &step.rule),
                        existing.path.path,
                        existing.path.path_type
                    );
                    step.outcome = Outcome::Lost(Problem::new(
                        object.clone(),
                        ProblemReason::PathConflict,
                        message,
                    ));
                    continue;
                }
                let regex = if regex_host {
                    match PathRegex::compile(&step.rule.path) {
                        Ok(regex) => Some(Arc::new(regex)),
                        Err(why) => {
                            step.outcome = Outcome::Lost(Problem::new(
                                object.clone(),
                                ProblemReason::InvalidPath,
                                format!("host {host}: {why}"),
                            ));
                            continue;
                        }
                    }
                } else {
                    None
                };
                step.outcome = Outcome::Won;
                map.insert(
                    step.rule.key.clone(),
                    PathRoute {
                        ingress: object.key.clone(),
                        host: host.clone(),
                        path: step.rule.clone(),
                        backend: step.backend.backend.clone(),
                        https_redirect,
                        policy: policy.clone(),
                        regex,
                        canary: None,
                        error_backend: contribution.error_backend.clone(),
                    },
                );
            }
            let Some(default_backend) = &contribution.default_backend else {
                continue;
            };
            let outcome = match &routes.default {
                Some(existing) => Outcome::Lost(Problem::new(
                    object.clone(),
                    ProblemReason::DefaultBackendConflict,
                    format!(
                        "defaultBackend for host {host} is already set by {}",
                        describe_origin(&existing.origin)
                    ),
                )),
                None => {
                    routes.default = Some(DefaultRoute {
                        scope: DefaultScope::Host(host.clone()),
                        origin: DefaultOrigin::Ingress(object.key.clone()),
                        backend: default_backend.backend.clone(),
                        https_redirect,
                        policy: policy.clone(),
                        error_backend: contribution.error_backend.clone(),
                    });
                    Outcome::Won
                }
            };
            contribution.hosts[*slot].default_outcome = outcome;
        }
        if regex_host {
            let mut order: Vec<(&String, &PathRoute)> = routes.prefix.iter().collect();
            order.sort_by(|a, b| {
                let (a, b) = (&a.1.path.path, &b.1.path.path);
                b.len().cmp(&a.len()).then_with(|| b.cmp(a))
            });
            routes.regex_order = Some(order.into_iter().map(|(key, _)| key.clone()).collect());
        }
        let routes = Arc::new(routes);
        let extras = self.host_extras(host, &routes);
        self.put_host(host, Some(routes));
        self.put_aliases(host, extras);
    }

    /// The other names `host` answers to (`server-alias` of the first of
    /// its Ingresses that sets one, as ingress-nginx; never the host
    /// itself), and the `from-to-www-redirect` counterpart of an exact host
    /// if one of its Ingresses asks, each with its routes.
    fn host_extras(
        &self,
        host: &HostPattern,
        routes: &Arc<HostRoutes>,
    ) -> Vec<(Arc<str>, Arc<HostRoutes>)> {
        let Some(members) = self.host_members.get(host) else {
            return Vec::new();
        };
        let policies: Vec<&RoutePolicy> = members
            .iter()
            .filter_map(|(precedence, _)| {
                let ours = self.ingresses.get(&precedence.key)?.ours.as_ref()?;
                ours.contribution
                    .canary
                    .is_none()
                    .then_some(ours.contribution.policy.as_deref())
                    .flatten()
            })
            .collect();
        let name = host.to_string();
        let mut extras: Vec<(Arc<str>, Arc<HostRoutes>)> = policies
            .iter()
            .find(|p| !p.server_alias.is_empty())
            .map(|p| {
                p.server_alias
                    .iter()
                    .filter(|alias| **alias != name)
                    .map(|alias| (Arc::from(alias.as_str()), Arc::clone(routes)))
                    .collect()
            })
            .unwrap_or_default();
        if let HostPattern::Exact(exact) = host
            && policies.iter().any(|p| p.from_to_www_redirect)
        {
            let counterpart = match exact.strip_prefix("www.") {
                Some(bare) => bare.to_owned(),
                None => format!("www.{exact}"),
            };
            let policy = RoutePolicy {
                www_redirect_to: Some(exact.clone()),
                ..RoutePolicy::default()
            };
            let mut redirect = HostRoutes::new();
            redirect.default = Some(DefaultRoute {
                scope: DefaultScope::Host(host.clone()),
                origin: DefaultOrigin::BuiltIn,
                backend: Backend::Unavailable(UnavailableBackend {
                    target: counterpart.clone(),
                    reason: ProblemReason::InvalidBackend,
                    message: format!("from-to-www-redirect: redirected to {exact}"),
                }),
                https_redirect: false,
                policy: Some(Arc::new(policy)),
                error_backend: None,
            });
            extras.push((Arc::from(counterpart.as_str()), Arc::new(redirect)));
        }
        extras
    }

    /// Replaces the other names of `host` by `extras` (none when `host`
    /// goes). A name that is some Ingress's own host is answered by that
    /// host first (the lookup tries exact hosts before these).
    fn put_aliases(&mut self, host: &HostPattern, extras: Vec<(Arc<str>, Arc<HostRoutes>)>) {
        for old in self.aliases_of.remove(host).unwrap_or_default() {
            self.alias_hosts.remove(&old);
        }
        if extras.is_empty() {
            return;
        }
        let mut names = Vec::with_capacity(extras.len());
        for (name, routes) in extras {
            // The first host to claim a name keeps it.
            if self.alias_hosts.contains_key(&name) {
                continue;
            }
            self.alias_hosts.insert(Arc::clone(&name), routes);
            names.push(name);
        }
        self.aliases_of.insert(host.clone(), names);
    }

    fn put_host(&mut self, host: &HostPattern, routes: Option<Arc<HostRoutes>>) {
        let count = |routes: &HostRoutes| routes.exact.len() + routes.prefix.len();
        self.paths += routes.as_deref().map_or(0, count);
        let old = match (host, routes) {
            (HostPattern::Exact(name), Some(routes)) => {
                self.exact_hosts.insert(Arc::from(name.as_str()), routes)
            }
            (HostPattern::Exact(name), None) => self.exact_hosts.remove(name.as_str()),
            (HostPattern::Wildcard(suffix), Some(routes)) => self
                .wildcard_hosts
                .insert(Arc::from(suffix.as_str()), routes),
            (HostPattern::Wildcard(suffix), None) => self.wildcard_hosts.remove(suffix.as_str()),
            (HostPattern::Any, routes) => std::mem::replace(&mut self.any_host, routes),
        };
        self.paths -= old.as_deref().map_or(0, count);
    }

    /// The first Ingress without rules (in precedence order) sets the
    /// fallback; the others are told so.
    fn settle_fallback(&mut self, dirty: &mut Dirty) {
        self.ingress_fallback = None;
        for precedence in &self.fallback_candidates {
            let Some(ours) = self
                .ingresses
                .get_mut(&precedence.key)
                .and_then(|e| e.ours.as_mut())
            else {
                continue;
            };
            dirty.problems.insert(precedence.key.clone());
            let contribution = &mut ours.contribution;
            let Some(default_backend) = &contribution.default_backend else {
                continue;
            };
            contribution.fallback_outcome = match &self.ingress_fallback {
                Some(existing) => Outcome::Lost(Problem::new(
                    contribution.object.clone(),
                    ProblemReason::DefaultBackendConflict,
                    format!(
                        "defaultBackend for unmatched requests is already set by {}",
                        describe_origin(&existing.origin)
                    ),
                )),
                None => {
                    self.ingress_fallback = Some(DefaultRoute {
                        scope: DefaultScope::Fallback,
                        origin: DefaultOrigin::Ingress(precedence.key.clone()),
                        backend: default_backend.backend.clone(),
                        https_redirect: contribution
                            .force_ssl_redirect
                            .unwrap_or(self.options.force_ssl_redirect),
                        policy: contribution.policy.clone(),
                        error_backend: contribution.error_backend.clone(),
                    });
                    Outcome::Won
                }
            };
        }
    }

    /// The route for requests nothing else matches: an Ingress's, else the
    /// configured Service's (its problem, if any, goes to `problems`),
    /// else the built-in 404.
    fn fallback(&mut self, objects: &ClusterObjects, problems: &mut Vec<Problem>) -> DefaultRoute {
        if let Some(fallback) = &self.ingress_fallback {
            return fallback.clone();
        }
        let Some(configured) = &self.options.default_backend_service else {
            return RouteTable::default().fallback;
        };
        let Resolution { backend, problem } = self
            .endpoints
            .resolver(objects)
            .resolve_service(&configured.service, configured.port.as_ref());
        if let Some((reason, message)) = problem {
            let object = ObjectRef::new(ObjectKind::Service, configured.service.clone());
            problems.push(Problem::new(
                object,
                reason,
                format!("default backend service: {message}"),
            ));
        }
        DefaultRoute {
            scope: DefaultScope::Fallback,
            origin: DefaultOrigin::ConfiguredService,
            backend,
            https_redirect: false,
            policy: None,
            error_backend: None,
        }
    }
}

/// Joins the paths of the canary Ingress `contribution` for `host` (its
/// slot `slot`) to the main routes with the same path and type in
/// `routes`, as ingress-nginx merges alternative backends: one canary per
/// route, the first in precedence order; a path no main Ingress routes
/// serves nothing. A refused canary (a snippet, access control) joins
/// nothing: its requests stay with the main route and its policy.
fn join_canary(
    contribution: &mut Contribution,
    slot: usize,
    host: &HostPattern,
    routes: &mut HostRoutes,
) {
    let Some(rule) = contribution.canary.clone() else {
        return;
    };
    let object = contribution.object.clone();
    let refusal = contribution.refusal.as_ref().map(|r| r.message.clone());
    for index in contribution.hosts[slot].paths.clone() {
        let Step::Path(step) = &mut contribution.steps[index] else {
            continue;
        };
        let map = if step.rule.path_type.is_prefix() {
            &mut routes.prefix
        } else {
            &mut routes.exact
        };
        let context = path_context(host, &step.rule);
        let lost =
            |reason, message: String| Outcome::Lost(Problem::new(object.clone(), reason, message));
        step.outcome = match (map.get_mut(&step.rule.key), &refusal) {
            (_, Some(refusal)) => lost(
                ProblemReason::InvalidAnnotation,
                format!(
                    "{context}: this canary is not used ({refusal}); the main route serves its requests"
                ),
            ),
            (Some(main), None)
                if main.path.path_type == step.rule.path_type && main.ingress != object.key =>
            {
                match &main.canary {
                    Some(existing) => lost(
                        ProblemReason::PathConflict,
                        format!(
                            "{context}: Ingress {} is already the canary of Ingress {}, which takes one",
                            existing.ingress, main.ingress
                        ),
                    ),
                    None => {
                        main.canary = Some(Arc::new(CanaryRoute {
                            ingress: object.key.clone(),
                            rule: Arc::clone(&rule),
                            backend: step.backend.backend.clone(),
                        }));
                        Outcome::Won
                    }
                }
            }
            _ => lost(
                ProblemReason::CanaryWithoutMain,
                format!(
                    "{context}: no main Ingress routes this path with this type: the canary serves nothing"
                ),
            ),
        };
    }
    if contribution.default_backend.is_some() {
        contribution.hosts[slot].default_outcome = Outcome::Lost(Problem::new(
            object,
            ProblemReason::CanaryWithoutMain,
            format!("host {host}: the defaultBackend of a canary Ingress is not used"),
        ));
    }
}

/// Whether `contribution` routes anything after the merges: `Some(true)`
/// when a path or default backend of it won its place, `Some(false)` when
/// it had some and every one lost, `None` when it has none (no valid path,
/// no default backend).
fn serves(contribution: &Contribution) -> Option<bool> {
    let mut outcomes = contribution
        .steps
        .iter()
        .filter_map(|step| match step {
            Step::Path(path) => Some(&path.outcome),
            Step::Problem(_) => None,
        })
        .peekable();
    let mut any = outcomes.peek().is_some();
    if outcomes.any(|outcome| *outcome == Outcome::Won) {
        return Some(true);
    }
    if contribution.default_backend.is_some() {
        let defaults: Vec<&Outcome> = if contribution.has_rules {
            contribution
                .hosts
                .iter()
                .map(|slot| &slot.default_outcome)
                .collect()
        } else {
            vec![&contribution.fallback_outcome]
        };
        any |= !defaults.is_empty();
        if defaults.contains(&&Outcome::Won) {
            return Some(true);
        }
    }
    any.then_some(false)
}

/// The problem of an Ingress that lost every path and default backend it
/// has: it serves nothing, and its status gets no address.
fn not_served(contribution: &Contribution) -> Problem {
    Problem::new(
        contribution.object.clone(),
        ProblemReason::NotServed,
        "serves nothing: other Ingresses take every path and default backend it has (see its conflicts); its status gets no address until it serves",
    )
}

/// What one build must redo.
#[derive(Debug, Default)]
struct Dirty {
    hosts: FastHashSet<HostPattern>,
    fallback: bool,
    tls: bool,
    /// Ingresses whose problems are assembled again.
    problems: FastHashSet<ObjectKey>,
    /// Whether the list of all problems is assembled again.
    problem_list: bool,
}

fn link(
    index: &mut FastHashMap<ObjectKey, FastHashSet<ObjectKey>>,
    used: &ObjectKey,
    user: &ObjectKey,
) {
    index.entry(used.clone()).or_default().insert(user.clone());
}

fn unlink(
    index: &mut FastHashMap<ObjectKey, FastHashSet<ObjectKey>>,
    used: &ObjectKey,
    user: &ObjectKey,
) {
    if let Some(users) = index.get_mut(used) {
        users.remove(user);
        if users.is_empty() {
            index.remove(used);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{
        class::DEFAULT_CLASS_ANNOTATION,
        fixtures::{
            IngressBuilder, Target, backend, ingress, ingress_class, namespace, path, prefix,
            resource_backend, service, slice, tls_secret, world,
        },
        object::KubeObject,
        options::{CONTROLLER_NAME, DEFAULT_INGRESS_CLASS, DefaultBackendService},
    };

    const HOSTS: [Option<&str>; 5] = [
        Some("a.com"),
        Some("*.a.com"),
        None,
        Some("b.com"),
        Some("bad_host"),
    ];
    const PATHS: [&str; 4] = ["/", "/x", "/x/y", "/bad["];
    const TYPES: [&str; 3] = ["Exact", "Prefix", "ImplementationSpecific"];
    const SERVICES: [&str; 3] = ["a", "b", "c"];
    const SECRETS: [&str; 2] = ["s1", "s2"];

    /// An Ingress as generated: (created, class, rules of (host, paths of
    /// (path, type, backend))), default backend, TLS entries of (host
    /// indices, secret), ssl-redirect annotation).
    type GeneratedIngress = (
        Option<i64>,
        usize,
        Vec<(usize, Vec<(usize, usize, usize)>)>,
        Option<usize>,
        Vec<(Vec<usize>, Option<usize>)>,
        usize,
    );

    /// One change to the snapshot.
    #[derive(Debug, Clone)]
    enum Change {
        /// Ingress `i<slot>` written (or deleted).
        Ingress(usize, Option<GeneratedIngress>),
        /// Service (port named `http` or not), or deleted.
        Service(usize, Option<bool>),
        /// The Service's slice with `ready` flags per endpoint, or deleted.
        Slice(usize, Option<Vec<bool>>),
        /// A Secret, complete or not, or deleted.
        Secret(usize, Option<bool>),
        /// Our IngressClass, as default class or not.
        Class(bool),
        /// The Ingresses' namespace, terminating or not, or gone.
        Namespace(Option<bool>),
        /// Ingress `i<slot>`, if there, being deleted.
        Deleting(usize),
    }

    fn ingress_backend(choice: usize) -> k8s_openapi::api::networking::v1::IngressBackend {
        match choice {
            0..=2 => backend(SERVICES[choice], 80),
            3 => backend("a", "http"),
            4 => backend("gone", 80),
            _ => resource_backend("Bucket", "b"),
        }
    }

    fn generated_ingress(slot: usize, generated: &GeneratedIngress) -> KubeObject {
        let (created, class, rules, default_backend, tls, ssl_redirect) = generated;
        let mut builder = ingress("ns", &format!("i{slot}"));
        builder = match class {
            0 => builder.ours(),
            1 => builder,
            _ => builder.class_name("other"),
        };
        if let Some(seconds) = created {
            builder = builder.created(*seconds);
        }
        for (host, paths) in rules {
            let paths = paths
                .iter()
                .map(|(p, t, b)| path(PATHS[*p], TYPES[*t], ingress_backend(*b)))
                .collect();
            builder = builder.rule(HOSTS[*host], paths);
        }
        if let Some(choice) = default_backend {
            builder = builder.default_backend(ingress_backend(*choice));
        }
        for (hosts, secret) in tls {
            let hosts: Vec<&str> = hosts.iter().filter_map(|h| HOSTS[*h]).collect();
            builder = builder.tls(&hosts, secret.map(|s| SECRETS[s]));
        }
        builder = match ssl_redirect {
            0 => builder,
            1 => builder.annotation("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
            2 => builder.annotation("nginx.ingress.kubernetes.io/force-ssl-redirect", "true"),
            _ => builder.annotation("xdp-ingress.io/ssl-redirect", "maybe"),
        };
        IngressBuilder::object(builder)
    }

    fn apply(objects: &mut ClusterObjects, change: &Change) {
        match change {
            Change::Ingress(slot, Some(generated)) => {
                objects.insert(generated_ingress(*slot, generated));
            }
            Change::Ingress(slot, None) => {
                let key = ObjectKey::new("ns", format!("i{slot}"));
                objects.remove(&ObjectRef::new(ObjectKind::Ingress, key));
            }
            Change::Service(slot, Some(named)) => {
                let name = named.then_some("http");
                let object = service("ns", SERVICES[*slot])
                    .port(name, 80, Target::Number(8080))
                    .object();
                objects.insert(object);
            }
            Change::Service(slot, None) => {
                let key = ObjectKey::new("ns", SERVICES[*slot]);
                objects.remove(&ObjectRef::new(ObjectKind::Service, key));
            }
            Change::Slice(slot, Some(ready)) => {
                let name = SERVICES[*slot];
                let mut builder = slice("ns", &format!("{name}-1"), name).port(None, Some(8080));
                for (i, ready) in ready.iter().enumerate() {
                    let address = format!("10.0.{slot}.{i}");
                    builder = builder.endpoint(&address, Some(*ready), Some(true), Some(!ready));
                }
                objects.insert(builder.object());
            }
            Change::Slice(slot, None) => {
                let key = ObjectKey::new("ns", format!("{}-1", SERVICES[*slot]));
                objects.remove(&ObjectRef::new(ObjectKind::EndpointSlice, key));
            }
            Change::Secret(slot, Some(complete)) => {
                objects.insert(KubeObject::Secret(tls_secret(
                    "ns",
                    SECRETS[*slot],
                    *complete,
                )));
            }
            Change::Secret(slot, None) => {
                let key = ObjectKey::new("ns", SECRETS[*slot]);
                objects.remove(&ObjectRef::new(ObjectKind::Secret, key));
            }
            Change::Class(default) => {
                let class = ingress_class(DEFAULT_INGRESS_CLASS, CONTROLLER_NAME, *default);
                objects.insert(KubeObject::IngressClass(class));
            }
            Change::Namespace(Some(terminating)) => {
                objects.insert(namespace("ns", *terminating));
            }
            Change::Namespace(None) => {
                let key = ObjectKey::cluster("ns");
                objects.remove(&ObjectRef::new(ObjectKind::Namespace, key));
            }
            Change::Deleting(slot) => {
                let key = ObjectKey::new("ns", format!("i{slot}"));
                if let Some(ingress) = objects.ingresses.get(&key) {
                    let mut ingress = Ingress::clone(ingress);
                    ingress.metadata.deletion_timestamp =
                        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                            k8s_openapi::jiff::Timestamp::from_second(1).unwrap(),
                        ));
                    objects.insert(KubeObject::Ingress(ingress));
                }
            }
        }
    }

    fn ingress_strategy() -> impl Strategy<Value = GeneratedIngress> {
        let paths = proptest::collection::vec((0..PATHS.len(), 0..TYPES.len(), 0..6usize), 0..3);
        (
            proptest::option::of(0..3i64),
            prop_oneof![4 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize)],
            proptest::collection::vec((0..HOSTS.len(), paths), 0..3),
            proptest::option::of(0..6usize),
            proptest::collection::vec(
                (
                    proptest::collection::vec(0..HOSTS.len(), 0..2),
                    proptest::option::of(0..SECRETS.len()),
                ),
                0..2,
            ),
            0..4usize,
        )
    }

    fn change_strategy() -> impl Strategy<Value = Change> {
        prop_oneof![
            6 => (0..5usize, proptest::option::weighted(0.8, ingress_strategy()))
                .prop_map(|(slot, generated)| Change::Ingress(slot, generated)),
            2 => (0..3usize, proptest::option::of(any::<bool>()))
                .prop_map(|(slot, named)| Change::Service(slot, named)),
            2 => (0..3usize, proptest::option::of(proptest::collection::vec(any::<bool>(), 0..3)))
                .prop_map(|(slot, ready)| Change::Slice(slot, ready)),
            1 => (0..2usize, proptest::option::of(any::<bool>()))
                .prop_map(|(slot, complete)| Change::Secret(slot, complete)),
            1 => any::<bool>().prop_map(Change::Class),
            1 => proptest::option::of(any::<bool>()).prop_map(Change::Namespace),
            1 => (0..5usize).prop_map(Change::Deleting),
        ]
    }

    /// Everything a table says, comparable: its rows, every route in full
    /// (redirects included), the fallback, the TLS plan and the Ingresses
    /// that serve nothing.
    fn described(
        table: &RouteTable,
    ) -> (
        Vec<crate::table::RouteRow>,
        Vec<String>,
        TlsPlan,
        BTreeSet<ObjectKey>,
    ) {
        let mut routes: Vec<String> = table.routes().map(|r| format!("{r:?}")).collect();
        routes.sort();
        (
            table.rows(),
            routes,
            table.tls().clone(),
            BTreeSet::clone(table.unserved_ingresses()),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn building_change_by_change_equals_building_from_scratch(
            changes in proptest::collection::vec(change_strategy(), 1..40),
            configured_default in any::<bool>(),
        ) {
            let options = ModelOptions {
                default_backend_service: configured_default.then(|| DefaultBackendService {
                    service: ObjectKey::new("ns", "b"),
                    port: None,
                }),
                ..ModelOptions::default()
            };
            let mut objects = world([]);
            let mut builder = RouteTableBuilder::new(options.clone());
            for change in &changes {
                apply(&mut objects, change);
                let (table, problems) = builder.build(&objects);
                let (fresh, fresh_problems) = RouteTable::build(&objects, &options);
                prop_assert_eq!(&problems, &fresh_problems, "after {:?}", change);
                prop_assert_eq!(described(&table), described(&fresh), "after {:?}", change);
                prop_assert_eq!(table.path_count(), fresh.path_count());
            }
        }
    }

    fn bench_like(count: usize) -> ClusterObjects {
        let mut objects = Vec::new();
        for i in 0..count {
            let name = format!("svc-{i}");
            objects.push(
                service("ns", &name)
                    .port(None, 80, Target::Number(8080))
                    .object(),
            );
            objects.push(
                slice("ns", &format!("{name}-1"), &name)
                    .port(None, Some(8080))
                    .ready("10.0.0.1")
                    .object(),
            );
            objects.push(
                ingress("ns", &format!("ing-{i}"))
                    .ours()
                    .rule(
                        Some(&format!("h{i}.example.com")),
                        vec![path("/", "Prefix", backend(&name, 80))],
                    )
                    .object(),
            );
        }
        world(objects)
    }

    fn host_routes<'t>(table: &'t RouteTable, host: &str) -> &'t Arc<HostRoutes> {
        table.exact_hosts.get(host).expect("host routed")
    }

    #[test]
    fn a_change_rebuilds_only_the_hosts_it_touches() {
        let mut objects = bench_like(50);
        let mut builder = RouteTableBuilder::new(ModelOptions::default());
        let (before, _) = builder.build(&objects);
        // A new endpoint for svc-7: only h7's routes are new.
        objects.insert(
            slice("ns", "svc-7-1", "svc-7")
                .port(None, Some(8080))
                .ready("10.0.0.1")
                .ready("10.0.0.2")
                .object(),
        );
        let (after, problems) = builder.build(&objects);
        assert_eq!(problems, []);
        assert!(!Arc::ptr_eq(
            host_routes(&before, "h7.example.com"),
            host_routes(&after, "h7.example.com")
        ));
        assert_eq!(
            after
                .route("h7.example.com", "/")
                .backend()
                .endpoints()
                .len(),
            2
        );
        for other in ["h0.example.com", "h8.example.com", "h49.example.com"] {
            assert!(Arc::ptr_eq(
                host_routes(&before, other),
                host_routes(&after, other)
            ));
        }
        // A new Ingress for a new host and one for an existing host: those
        // two hosts only.
        objects.insert(
            ingress("ns", "new")
                .ours()
                .rule(Some("new.example.com"), vec![prefix("/", "svc-1")])
                .rule(
                    Some("h3.example.com"),
                    vec![path("/x", "Exact", backend("svc-1", 80))],
                )
                .object(),
        );
        let (third, _) = builder.build(&objects);
        assert!(third.exact_hosts.contains_key("new.example.com"));
        assert_eq!(host_routes(&third, "h3.example.com").exact.len(), 1);
        assert!(!Arc::ptr_eq(
            host_routes(&after, "h3.example.com"),
            host_routes(&third, "h3.example.com")
        ));
        assert!(Arc::ptr_eq(
            host_routes(&after, "h4.example.com"),
            host_routes(&third, "h4.example.com")
        ));
    }

    #[test]
    fn a_table_names_the_hosts_changed_since_its_parent() {
        let mut objects = bench_like(5);
        let mut builder = RouteTableBuilder::new(ModelOptions::default());
        let (first, _) = builder.build(&objects);
        assert_eq!(first.path_count(), 5);
        assert_eq!(first.changed_hosts_since(&RouteTable::default()), None);
        objects.remove(&ObjectRef::new(
            ObjectKind::Ingress,
            ObjectKey::new("ns", "ing-2"),
        ));
        let (second, _) = builder.build(&objects);
        assert_eq!(second.path_count(), 4);
        assert_eq!(
            second.changed_hosts_since(&first),
            Some(&[HostPattern::Exact("h2.example.com".to_owned())][..])
        );
        assert_eq!(
            second
                .host_route_matches(&HostPattern::Exact("h2.example.com".to_owned()))
                .count(),
            0
        );
        assert_eq!(
            first
                .host_route_matches(&HostPattern::Exact("h2.example.com".to_owned()))
                .count(),
            1
        );
        let (fresh, _) = RouteTable::build(&objects, &ModelOptions::default());
        assert_eq!(fresh.changed_hosts_since(&first), None);
        assert_eq!(second.changed_hosts_since(&second), None);
    }

    #[test]
    fn a_class_that_stops_being_ours_takes_its_ingresses_away() {
        let mut objects = world([ingress("ns", "web")
            .rule(Some("a.com"), vec![prefix("/", "gone")])
            .object()]);
        let mut builder = RouteTableBuilder::new(ModelOptions::default());
        assert_eq!(builder.build(&objects).0.path_count(), 0);
        let mut class = ingress_class(DEFAULT_INGRESS_CLASS, CONTROLLER_NAME, true);
        objects.insert(KubeObject::IngressClass(class.clone()));
        let (table, problems) = builder.build(&objects);
        assert_eq!(table.path_count(), 1);
        assert_eq!(problems.len(), 1, "{problems:?}");
        class.metadata.annotations =
            Some([(DEFAULT_CLASS_ANNOTATION.to_owned(), "false".to_owned())].into());
        objects.insert(KubeObject::IngressClass(class));
        let (table, problems) = builder.build(&objects);
        assert_eq!(table.path_count(), 0);
        assert_eq!(problems, []);
    }

    fn unserved(table: &RouteTable) -> Vec<String> {
        table
            .unserved_ingresses()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn reasons_of(problems: &[Problem], ingress: &str) -> Vec<ProblemReason> {
        problems
            .iter()
            .filter(|p| p.object.key.to_string() == ingress)
            .map(|p| p.reason)
            .collect()
    }

    #[test]
    fn an_ingress_going_away_never_shadows_a_live_one() {
        // Two catch-all default backends and one path claimed twice, in two
        // namespaces; `old` is the older.
        let old = || {
            ingress("old", "fallback")
                .ours()
                .created(1)
                .default_backend(backend("web", 80))
        };
        let old_path = || {
            ingress("old", "shop")
                .ours()
                .created(1)
                .rule(Some("shop.example.com"), vec![prefix("/", "web")])
        };
        let mut objects = world([
            old().object(),
            old_path().object(),
            ingress("new", "fallback")
                .ours()
                .created(2)
                .default_backend(backend("web", 80))
                .object(),
            ingress("new", "shop")
                .ours()
                .created(2)
                .rule(Some("shop.example.com"), vec![prefix("/", "web")])
                .object(),
            namespace("old", false),
        ]);
        let fallback_of = |table: &RouteTable| match &table.fallback.origin {
            DefaultOrigin::Ingress(key) => key.to_string(),
            other => format!("{other:?}"),
        };
        let path_owner = |table: &RouteTable| match table.route("shop.example.com", "/") {
            crate::RouteMatch::Path(route) => route.ingress.to_string(),
            other => format!("{other:?}"),
        };
        let mut builder = RouteTableBuilder::new(ModelOptions::default());
        let (table, problems) = builder.build(&objects);
        assert_eq!(fallback_of(&table), "old/fallback");
        assert_eq!(path_owner(&table), "old/shop");
        assert_eq!(unserved(&table), ["new/fallback", "new/shop"]);
        assert!(
            reasons_of(&problems, "new/fallback").ends_with(&[
                ProblemReason::DefaultBackendConflict,
                ProblemReason::NotServed
            ]),
            "{problems:?}"
        );

        // Its namespace is being deleted: the new ones win at once.
        objects.insert(namespace("old", true));
        let (table, problems) = builder.build(&objects);
        assert_eq!(fallback_of(&table), "new/fallback");
        assert_eq!(path_owner(&table), "new/shop");
        assert_eq!(unserved(&table), ["old/fallback", "old/shop"]);
        assert_eq!(
            reasons_of(&problems, "old/shop"),
            [ProblemReason::PathConflict, ProblemReason::NotServed]
        );
        assert_eq!(
            reasons_of(&problems, "new/shop"),
            [ProblemReason::ServiceNotFound]
        );
        assert_eq!(
            (table.rows(), problems.clone()),
            {
                let (fresh, fresh_problems) = RouteTable::build(&objects, &ModelOptions::default());
                (fresh.rows(), fresh_problems)
            },
            "the same as a build from scratch"
        );

        // Back to live (a deletion cannot be undone, but a namespace gone
        // from the snapshot is live): the oldest wins again.
        objects.insert(namespace("old", false));
        let (table, _) = builder.build(&objects);
        assert_eq!(fallback_of(&table), "old/fallback");
        assert_eq!(unserved(&table), ["new/fallback", "new/shop"]);

        // One Ingress being deleted, its namespace live: it ranks last too.
        objects.insert(old().deleting().object());
        let (table, _) = builder.build(&objects);
        assert_eq!(fallback_of(&table), "new/fallback");
        assert_eq!(path_owner(&table), "old/shop");
        assert_eq!(unserved(&table), ["new/shop", "old/fallback"]);
    }

    #[test]
    fn an_ingress_serves_while_anything_of_it_wins() {
        let objects = world([
            ingress("ns", "first")
                .ours()
                .created(1)
                .rule(Some("a.com"), vec![prefix("/", "web")])
                .object(),
            // Loses / but wins /x: served, with its conflict reported.
            ingress("ns", "second")
                .ours()
                .created(2)
                .rule(Some("a.com"), vec![prefix("/", "web"), prefix("/x", "web")])
                .object(),
            // Loses its only path, but its default backend is a.com's: served.
            ingress("ns", "third")
                .ours()
                .created(3)
                .default_backend(backend("web", 80))
                .rule(Some("a.com"), vec![prefix("/", "web")])
                .object(),
            // Nothing valid to route: not "lost", so not reported as such.
            ingress("ns", "invalid")
                .ours()
                .created(4)
                .rule(
                    Some("a.com"),
                    vec![path("/bad[", "Exact", backend("web", 80))],
                )
                .object(),
            // Its default backend is the one of a.com.
            ingress("ns", "fourth")
                .ours()
                .created(5)
                .default_backend(backend("web", 80))
                .rule(Some("a.com"), vec![prefix("/", "web")])
                .object(),
        ]);
        let (table, problems) = RouteTable::build(&objects, &ModelOptions::default());
        assert_eq!(unserved(&table), ["ns/fourth"]);
        let reasons = reasons_of(&problems, "ns/third");
        assert!(!reasons.contains(&ProblemReason::NotServed), "{reasons:?}");
        assert!(!reasons_of(&problems, "ns/second").contains(&ProblemReason::NotServed));
        assert_eq!(
            reasons_of(&problems, "ns/invalid"),
            [ProblemReason::InvalidPath]
        );
        assert_eq!(
            reasons_of(&problems, "ns/fourth"),
            [
                ProblemReason::PathConflict,
                ProblemReason::DefaultBackendConflict,
                ProblemReason::NotServed
            ]
        );
    }
}
