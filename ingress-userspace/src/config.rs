//! The one path from Kubernetes objects to what serves traffic: every
//! provider (manifest files, later the API server) hands a
//! [`ClusterObjects`] snapshot to [`ConfigApplier::apply`], which builds the
//! route table (pure, in `ingress-model`), reports the problems, and swaps
//! the table into the live routes.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use ingress_model::{
    ClusterObjects, ModelOptions, ObjectKey, ObjectKind, ObjectRef, Problem, ProblemReason,
    RouteTableBuilder,
    access::IngressSourceRanges,
    controller_config::{ControllerConfig, Hsts, controller_config},
};
use k8s_openapi::api::core::v1::ConfigMap;
use tracing::{info, warn};

use crate::{
    bpf::{l4_sync::L4Sync, source_ranges::SourceRangeSync},
    health::Readiness,
    metrics::Metrics,
    proxy::global::Global,
    routing::LiveRoutes,
    tls::{certs::unix_now, store::CertStore},
};

/// What one apply did, for logs and tests.
#[derive(Debug, Clone)]
pub struct ApplyOutcome {
    /// Paths routed.
    pub paths: usize,
    /// Distinct Service backends.
    pub backends: usize,
    /// Problems found (each affects only its own rule).
    pub problems: Vec<Problem>,
    /// The problems that were not there at the previous apply (reported
    /// once: logged, and published as events in a cluster).
    pub new_problems: Vec<Problem>,
    /// L4 services (TCP/UDP ConfigMap entries) served by the XDP tier.
    pub l4_services: usize,
    /// Time to build and install the table.
    pub took: Duration,
}

/// Builds and installs route tables from object snapshots.
pub struct ConfigApplier {
    options: ModelOptions,
    /// Keeps what the previous apply resolved, so an apply redoes only
    /// what changed in the snapshot since.
    builder: Mutex<RouteTableBuilder>,
    routes: Arc<LiveRoutes>,
    certificates: Option<Arc<CertStore>>,
    l4: Option<Arc<L4Sync>>,
    source_ranges: Option<Arc<SourceRangeSync>>,
    /// Where the proxy reads the global settings (the listener-wide drops
    /// of the Ingresses go there too).
    global: Option<Arc<ArcSwap<Global>>>,
    /// Whether the listener-wide drops were last seen without an XDP edge
    /// to drop them (said once).
    drops_without_edge: Mutex<bool>,
    metrics: Option<Arc<Metrics>>,
    readiness: Option<Arc<Readiness>>,
    reported: Mutex<BTreeSet<Problem>>,
    /// The Ingresses of ours the last applied table does not serve.
    unserved: Mutex<Arc<BTreeSet<ObjectKey>>>,
    /// The controller ConfigMap (`--configmap`), when one is named.
    controller: Option<ControllerConfigSource>,
}

/// Where the controller ConfigMap's settings come from and go.
struct ControllerConfigSource {
    /// The ConfigMap.
    key: ObjectKey,
    /// Where the proxy reads them.
    global: Arc<ArcSwap<Global>>,
    /// The `--hsts*` flags, which its keys override.
    hsts: Hsts,
    /// The version read last and its problems.
    seen: Mutex<Option<SeenConfigMap>>,
}

/// A version of the controller ConfigMap (`None`: absent) and its problems.
type SeenConfigMap = (Option<Arc<ConfigMap>>, Vec<Problem>);

impl ConfigApplier {
    /// An applier that installs into `routes`, and into `certificates`
    /// when HTTPS is served.
    pub fn new(
        options: ModelOptions,
        routes: Arc<LiveRoutes>,
        certificates: Option<Arc<CertStore>>,
    ) -> Self {
        Self {
            builder: Mutex::new(RouteTableBuilder::new(options.clone())),
            options,
            routes,
            certificates,
            l4: None,
            source_ranges: None,
            global: None,
            drops_without_edge: Mutex::new(false),
            metrics: None,
            readiness: None,
            reported: Mutex::new(BTreeSet::new()),
            unserved: Mutex::default(),
            controller: None,
        }
    }

    /// Also reads the controller ConfigMap `key` at every apply: its
    /// settings go to `global` (over the `--hsts*` flags `hsts`) and, for
    /// `ssl-redirect` and `force-ssl-redirect`, into the routing model.
    pub fn with_controller_config(
        mut self,
        key: ObjectKey,
        global: Arc<ArcSwap<Global>>,
        hsts: Hsts,
    ) -> Self {
        self.controller = Some(ControllerConfigSource {
            key,
            global,
            hsts,
            seen: Mutex::new(None),
        });
        self
    }

    /// Also counts every apply in `metrics` and marks `readiness`
    /// configured at the first.
    pub fn with_observers(mut self, metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Self {
        self.metrics = Some(metrics);
        self.readiness = Some(readiness);
        self
    }

    /// The routing model's options (which Ingresses are ours).
    pub fn options(&self) -> &ModelOptions {
        &self.options
    }

    /// Also brings the kernel L4 tier's maps to every applied snapshot.
    pub fn with_l4(mut self, l4: Arc<L4Sync>) -> Self {
        self.l4 = Some(l4);
        self
    }

    /// Also puts the Ingresses' listener-wide drops
    /// (`xdp-ingress.io/xdp-drop-source-range`) into `global`, where the
    /// proxy refuses them too.
    pub fn with_proxy_global(mut self, global: Arc<ArcSwap<Global>>) -> Self {
        self.global = Some(global);
        self
    }

    /// Also keeps the XDP program's source ranges at what the ConfigMap and
    /// the Ingresses make exact for every host, at every apply.
    pub fn with_source_ranges(mut self, source_ranges: Arc<SourceRangeSync>) -> Self {
        self.source_ranges = Some(source_ranges);
        self
    }

    /// Builds the table for `objects` and installs it. Problems are logged
    /// once each (when they appear), and when they go away. Successive
    /// snapshots should be versions of one another (as the providers'
    /// snapshots are, updated in place): then only what changed is built
    /// again.
    pub fn apply(&self, objects: &ClusterObjects) -> ApplyOutcome {
        let started = Instant::now();
        let config_problems = self.follow_controller_config(objects);
        let (table, mut problems) = self
            .builder
            .lock()
            .expect("table builder lock")
            .build(objects);
        problems.extend(config_problems);
        let paths = table.path_count();
        *self.unserved.lock().expect("unserved lock") = Arc::clone(table.unserved_ingresses());
        if let Some(certificates) = &self.certificates {
            let update = certificates.update(table.tls(), objects, unix_now());
            problems.extend(update.problems);
            certificates.client_auth.update(&table);
        }
        self.follow_source_ranges(table.ingress_source_ranges());
        let backends = self.routes.install(table);
        let l4_services = match &self.l4 {
            Some(l4) => {
                let outcome = l4.apply(objects);
                problems.extend(outcome.problems);
                outcome.services
            }
            None => 0,
        };
        let took = started.elapsed();
        let new_problems = self.report(&problems);
        info!(
            paths,
            backends,
            l4_services,
            problems = problems.len(),
            took_us = took.as_micros() as u64,
            "configuration applied"
        );
        let outcome = ApplyOutcome {
            paths,
            backends,
            problems,
            new_problems,
            l4_services,
            took,
        };
        if let Some(metrics) = &self.metrics {
            metrics.config_applied(&outcome);
        }
        if let Some(readiness) = &self.readiness {
            readiness.set_configured();
        }
        crate::memory::release_freed_memory();
        outcome
    }

    /// Reads the controller ConfigMap again when it changed: its settings
    /// go live, and a change of the routing model's options starts the
    /// table over. Returns its problems.
    fn follow_controller_config(&self, objects: &ClusterObjects) -> Vec<Problem> {
        let Some(source) = &self.controller else {
            return Vec::new();
        };
        let current = objects.config_maps.get(&source.key).cloned();
        let mut seen = source.seen.lock().expect("controller config lock");
        if let Some((version, problems)) = &*seen {
            let same = match (version, &current) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if same {
                return problems.clone();
            }
        }
        let object = ObjectRef::new(ObjectKind::ConfigMap, source.key.clone());
        let (config, mut problems) = controller_config(&object, current.as_deref());
        if current.is_none() {
            problems.push(Problem::new(
                object,
                ProblemReason::ConfigMapNotFound,
                format!(
                    "--configmap {} does not exist: the flags' settings apply",
                    source.key
                ),
            ));
        }
        let options = ModelOptions {
            ssl_redirect: config.ssl_redirect.unwrap_or(true),
            force_ssl_redirect: config.force_ssl_redirect.unwrap_or(false),
            ..self.options.clone()
        };
        let mut builder = self.builder.lock().expect("table builder lock");
        if builder.options() != &options {
            info!("the ConfigMap changed the routing options: building the table anew");
            *builder = RouteTableBuilder::new(options);
        }
        self.routes
            .set_custom_errors_everywhere(!config.custom_http_errors.is_empty());
        let mut global = Global::new(config, source.hsts);
        global.listener_drop = source.global.load().listener_drop.clone();
        source.global.store(Arc::new(global));
        *seen = Some((current, problems.clone()));
        problems
    }

    /// Hands the kernel the source ranges it can drop exactly, from the
    /// ConfigMap read last and what the Ingresses say.
    fn follow_source_ranges(&self, ingresses: &IngressSourceRanges) {
        if let Some(global) = &self.global
            && global.load().listener_drop != ingresses.xdp_drop
        {
            let updated = global.load().with_listener_drop(ingresses.xdp_drop.clone());
            global.store(Arc::new(updated));
        }
        let Some(sync) = &self.source_ranges else {
            let mut said = self.drops_without_edge.lock().expect("drops lock");
            let dropping = !ingresses.xdp_drop.is_empty();
            if dropping && !*said {
                warn!(
                    "xdp-ingress.io/xdp-drop-source-range: no XDP edge (--interface) drops these \
                     sources; the proxy refuses them (403)"
                );
            }
            *said = dropping;
            return;
        };
        let ranges = match &self.controller {
            Some(source) => source.global.load().config.kernel_source_ranges(ingresses),
            None => ControllerConfig::default().kernel_source_ranges(ingresses),
        };
        sync.set(ranges);
    }

    /// Our Ingresses that the last applied table does not serve: they lost
    /// every path and default backend they have to other Ingresses.
    pub fn unserved(&self) -> Arc<BTreeSet<ObjectKey>> {
        Arc::clone(&self.unserved.lock().expect("unserved lock"))
    }

    /// Logs the problems that appeared and the ones that went away;
    /// returns the ones that appeared.
    fn report(&self, problems: &[Problem]) -> Vec<Problem> {
        let current: BTreeSet<Problem> = problems.iter().cloned().collect();
        let mut reported = self.reported.lock().expect("problem set lock");
        let appeared: Vec<Problem> = current.difference(&reported).cloned().collect();
        for problem in &appeared {
            warn!(object = %problem.object, reason = %problem.reason, "{}", problem.message);
        }
        for gone in reported.difference(&current) {
            info!("resolved: {gone}");
        }
        *reported = current;
        appeared
    }
}

#[cfg(test)]
mod tests {
    use ingress_model::fixtures::{ingress, prefix, world};

    use super::*;

    #[test]
    fn listener_wide_drops_reach_the_proxy_and_the_kernel_sync() {
        let global = Arc::new(ArcSwap::from_pointee(Global::default()));
        let sync = Arc::new(SourceRangeSync::new());
        let applier = ConfigApplier::new(ModelOptions::default(), LiveRoutes::new(), None)
            .with_proxy_global(global.clone())
            .with_source_ranges(sync);
        let dropper = |value: &str| {
            ingress("default", "web")
                .ours()
                .annotation("xdp-ingress.io/xdp-drop-source-range", value)
                .rule(Some("web.example.com"), vec![prefix("/", "web")])
                .object()
        };
        applier.apply(&world([dropper("198.18.7.0/24")]));
        let ip = |text: &str| text.parse().unwrap();
        assert!(global.load().blocks(ip("198.18.7.9"), None));
        assert!(!global.load().blocks(ip("198.18.8.9"), None));
        applier.apply(&world([dropper("198.18.8.0/24")]));
        assert!(!global.load().blocks(ip("198.18.7.9"), None));
        assert!(global.load().blocks(ip("198.18.8.9"), None));
    }
}
