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

use ingress_model::{ClusterObjects, ModelOptions, ObjectKey, Problem, RouteTableBuilder};
use tracing::{info, warn};

use crate::{
    bpf::l4_sync::L4Sync,
    health::Readiness,
    metrics::Metrics,
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
    metrics: Option<Arc<Metrics>>,
    readiness: Option<Arc<Readiness>>,
    reported: Mutex<BTreeSet<Problem>>,
    /// The Ingresses of ours the last applied table does not serve.
    unserved: Mutex<Arc<BTreeSet<ObjectKey>>>,
}

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
            metrics: None,
            readiness: None,
            reported: Mutex::new(BTreeSet::new()),
            unserved: Mutex::default(),
        }
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

    /// Builds the table for `objects` and installs it. Problems are logged
    /// once each (when they appear), and when they go away. Successive
    /// snapshots should be versions of one another (as the providers'
    /// snapshots are, updated in place): then only what changed is built
    /// again.
    pub fn apply(&self, objects: &ClusterObjects) -> ApplyOutcome {
        let started = Instant::now();
        let (table, mut problems) = self
            .builder
            .lock()
            .expect("table builder lock")
            .build(objects);
        let paths = table.path_count();
        *self.unserved.lock().expect("unserved lock") = Arc::clone(table.unserved_ingresses());
        if let Some(certificates) = &self.certificates {
            let update = certificates.update(table.tls(), objects, unix_now());
            problems.extend(update.problems);
            certificates.client_auth.update(&table);
        }
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
