//! Prometheus metrics (`/metrics` on `--metrics-addr`): requests by
//! Ingress, host rule, Service and status class with their latency,
//! upstream latency, open connections, TLS handshakes, configuration
//! applies, and the XDP program's per-CPU counters summed, read from the
//! pinned maps at each scrape.
//!
//! Names follow the Prometheus conventions: `xdp_ingress_` prefix, base
//! units (seconds, bytes), `_total` for counters (added by the encoder).

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::{bpf::inspect, config::ApplyOutcome};

/// The labels of a request: the Ingress and host rule that routed it (empty
/// when none did: the built-in 404 or `--default-backend-service`), the
/// Service (`namespace/name:port`, empty when none) and the status class.
/// The host is the rule's (`*.example.com` for a wildcard), never the
/// request's `Host`, so clients cannot grow the label set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// namespace/name of the Ingress.
    pub ingress: String,
    /// The host of the rule.
    pub host: String,
    /// namespace/name:port of the Service.
    pub service: String,
    /// `2xx`, `3xx`, `4xx`, `5xx` (or `1xx`).
    pub status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SchemeLabels {
    scheme: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Every metric of the daemon.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
    upstream: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    connections: Family<SchemeLabels, Gauge>,
    tls_handshakes: Family<ResultLabels, Counter>,
    config_applies: Counter,
    config_apply_seconds: Histogram,
    config_problems: Gauge,
    unresolved_next_hops: Gauge,
    unrouted: Arc<RouteMetrics>,
    access_log_dropped: Counter,
}

/// The request histograms of one route (Ingress, host rule, Service), one
/// per status class, each taken from the family at its first request and
/// kept: a request then costs one atomic load and the observation, with no
/// label hashing. Kept per route across configurations by the routes.
#[derive(Debug)]
pub struct RouteMetrics {
    requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
    ingress: String,
    host: String,
    service: String,
    by_class: [OnceLock<Histogram>; 5],
}

impl RouteMetrics {
    /// A request of this route answered `status` after `elapsed`.
    pub fn observe(&self, status: u16, elapsed: Duration) {
        let class = status_class(status);
        let index = match class {
            "1xx" => 0,
            "2xx" => 1,
            "3xx" => 2,
            "4xx" => 3,
            _ => 4,
        };
        self.by_class[index]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&RequestLabels {
                        ingress: self.ingress.clone(),
                        host: self.host.clone(),
                        service: self.service.clone(),
                        status: class,
                    })
                    .clone()
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The labels: (ingress, host, service).
    pub fn labels(&self) -> (&str, &str, &str) {
        (&self.ingress, &self.host, &self.service)
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~65 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

impl Metrics {
    /// The metrics, with the XDP counters read from the pins in `bpffs`
    /// when the edge runs.
    pub fn new(bpffs: Option<PathBuf>) -> Arc<Self> {
        let mut registry = Registry::with_prefix("xdp_ingress");
        let requests = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's head to its response's head, by Ingress, host rule, Service and status class (the _count is the number of requests)",
            requests.clone(),
        );
        let upstream = Family::<ServiceLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "upstream_response_duration_seconds",
            "Time an upstream took to answer with a response head, by Service",
            upstream.clone(),
        );
        let connections = Family::<SchemeLabels, Gauge>::default();
        registry.register(
            "open_connections",
            "Client connections open, by scheme",
            connections.clone(),
        );
        let tls_handshakes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes, by result (ok, error)",
            tls_handshakes.clone(),
        );
        let config_applies = Counter::default();
        registry.register(
            "config_applies",
            "Configurations applied (every change of the watched objects)",
            config_applies.clone(),
        );
        let config_apply_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register(
            "config_apply_duration_seconds",
            "Time to build and install a configuration",
            config_apply_seconds.clone(),
        );
        let config_problems = Gauge::default();
        registry.register(
            "config_problems",
            "Problems in the applied configuration (see the log or the Ingresses' events)",
            config_problems.clone(),
        );
        let unresolved_next_hops = Gauge::default();
        registry.register(
            "l4_unresolved_next_hops",
            "Next hops of L4 backends the kernel cannot resolve (their packets are dropped until they answer)",
            unresolved_next_hops.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let unrouted = Arc::new(RouteMetrics {
            requests: requests.clone(),
            ingress: String::new(),
            host: String::new(),
            service: String::new(),
            by_class: Default::default(),
        });
        if let Some(bpffs) = bpffs {
            registry.register_collector(Box::new(XdpCounters { bpffs }));
        }
        Arc::new(Self {
            registry,
            requests,
            upstream,
            connections,
            tls_handshakes,
            config_applies,
            config_apply_seconds,
            config_problems,
            unresolved_next_hops,
            unrouted,
            access_log_dropped,
        })
    }

    /// The count of access log lines dropped, for the access log to keep.
    pub fn access_log_dropped(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// The request histograms of a route (empty strings where no Ingress,
    /// host rule or Service applies).
    pub fn route(&self, ingress: &str, host: &str, service: &str) -> RouteMetrics {
        RouteMetrics {
            requests: self.requests.clone(),
            ingress: ingress.to_owned(),
            host: host.to_owned(),
            service: service.to_owned(),
            by_class: Default::default(),
        }
    }

    /// The histograms of requests no route describes.
    pub fn unrouted(&self) -> &Arc<RouteMetrics> {
        &self.unrouted
    }

    /// The upstream latency histogram of `service`, to keep with it.
    pub fn upstream(&self, service: &str) -> Histogram {
        self.upstream
            .get_or_create(&ServiceLabels {
                service: service.to_owned(),
            })
            .clone()
    }

    /// A client connection opened; the guard counts it until dropped.
    pub fn connection_opened(self: &Arc<Self>, scheme: &'static str) -> ConnectionGuard {
        let gauge = self
            .connections
            .get_or_create(&SchemeLabels { scheme })
            .clone();
        gauge.inc();
        ConnectionGuard { gauge }
    }

    /// A TLS handshake ended.
    pub fn tls_handshake(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.tls_handshakes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// A configuration was applied.
    pub fn config_applied(&self, outcome: &ApplyOutcome) {
        self.config_applies.inc();
        self.config_apply_seconds
            .observe(outcome.took.as_secs_f64());
        self.config_problems.set(outcome.problems.len() as i64);
    }

    /// How many next hops of L4 backends cannot be resolved now.
    pub fn set_unresolved_next_hops(&self, count: usize) {
        self.unresolved_next_hops.set(count as i64);
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Counts one open connection while alive.
#[derive(Debug)]
pub struct ConnectionGuard {
    gauge: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The status class label of a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The XDP program's counters, read from the pinned maps at each scrape
/// (summed over CPUs), as `inspect` (and `xdp-ingress maps`) reads them.
#[derive(Debug)]
struct XdpCounters {
    bpffs: PathBuf,
}

impl Collector for XdpCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A scrape while the maps are being replaced just misses them.
        let Ok(report) = inspect::read_pinned(&self.bpffs) else {
            return Ok(());
        };
        let mut family = |name: &str,
                          help: &str,
                          rows: Vec<(Vec<(&'static str, String)>, u64)>|
         -> Result<(), std::fmt::Error> {
            if rows.is_empty() {
                return Ok(());
            }
            let counter = ConstCounter::new(0u64);
            let mut metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for (labels, value) in rows {
                ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
            }
            Ok(())
        };
        let listener_labels = |row: &inspect::ListenerRow| {
            vec![
                ("protocol", row.protocol.clone()),
                ("address", row.address.clone()),
                ("port", row.port.to_string()),
                ("action", row.action.to_owned()),
            ]
        };
        family(
            "xdp_listener_packets",
            "Packets the XDP program matched to a listener",
            report
                .listeners
                .iter()
                .map(|row| (listener_labels(row), row.packets))
                .collect(),
        )?;
        family(
            "xdp_listener_bytes",
            "Bytes the XDP program matched to a listener",
            report
                .listeners
                .iter()
                .map(|row| (listener_labels(row), row.bytes))
                .collect(),
        )?;
        family(
            "xdp_listener_denied_packets",
            "Packets of a listener dropped at XDP for their source address (source ranges)",
            report
                .listeners
                .iter()
                .filter(|row| row.action == "pass-to-proxy")
                .map(|row| (listener_labels(row), row.denied_packets))
                .collect(),
        )?;
        family(
            "xdp_listener_denied_bytes",
            "Bytes of a listener dropped at XDP for their source address (source ranges)",
            report
                .listeners
                .iter()
                .filter(|row| row.action == "pass-to-proxy")
                .map(|row| (listener_labels(row), row.denied_bytes))
                .collect(),
        )?;
        family(
            "xdp_verdict_packets",
            "Packets by the XDP program's verdict reason",
            report
                .verdicts
                .iter()
                .map(|row| (vec![("reason", row.reason.to_owned())], row.packets))
                .collect(),
        )?;
        if let Some(l4) = &report.l4 {
            let service_labels = |row: &inspect::L4ServiceRow| {
                vec![
                    ("protocol", row.protocol.clone()),
                    ("address", row.address.clone()),
                    ("port", row.port.to_string()),
                ]
            };
            let backend_labels = |row: &inspect::L4BackendRow| {
                vec![("backend", format!("{}:{}", row.address, row.port))]
            };
            family(
                "xdp_l4_service_packets",
                "Packets of an L4 service balanced in XDP (both directions)",
                l4.services
                    .iter()
                    .map(|row| (service_labels(row), row.packets))
                    .collect(),
            )?;
            family(
                "xdp_l4_service_bytes",
                "Bytes of an L4 service balanced in XDP (both directions)",
                l4.services
                    .iter()
                    .map(|row| (service_labels(row), row.bytes))
                    .collect(),
            )?;
            family(
                "xdp_l4_service_flows",
                "Flows an L4 service took",
                l4.services
                    .iter()
                    .map(|row| (service_labels(row), row.new_flows))
                    .collect(),
            )?;
            family(
                "xdp_l4_backend_packets",
                "Packets of an L4 backend (both directions)",
                l4.backends
                    .iter()
                    .filter(|row| row.active)
                    .map(|row| (backend_labels(row), row.packets))
                    .collect(),
            )?;
            family(
                "xdp_l4_backend_flows",
                "Flows an L4 backend took",
                l4.backends
                    .iter()
                    .filter(|row| row.active)
                    .map(|row| (backend_labels(row), row.new_flows))
                    .collect(),
            )?;
            let gauge = ConstGauge::new(l4.flows as i64);
            gauge.encode(encoder.encode_descriptor(
                "xdp_l4_flows",
                "Entries of the L4 connection table",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_carries_requests_connections_and_applies() {
        let metrics = Metrics::new(None);
        let route = metrics.route("default/web", "web.example.com", "default/web:80");
        route.observe(200, Duration::from_millis(3));
        route.observe(204, Duration::from_millis(5));
        // The same labels again (a new configuration) share the series.
        let again = metrics.route("default/web", "web.example.com", "default/web:80");
        again.observe(503, Duration::from_millis(1));
        metrics
            .upstream("default/web:80")
            .observe(Duration::from_millis(2).as_secs_f64());
        let guard = metrics.connection_opened("http");
        metrics.tls_handshake(false);
        let text = metrics.encode();
        assert!(text.contains(
            r#"xdp_ingress_request_duration_seconds_count{ingress="default/web",host="web.example.com",service="default/web:80",status="2xx"} 2"#
        ), "{text}");
        assert!(
            text.contains(r#"xdp_ingress_open_connections{scheme="http"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"xdp_ingress_tls_handshakes_total{result="error"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                "xdp_ingress_upstream_response_duration_seconds_count{service=\"default/web:80\"} 1"
            ),
            "{text}"
        );
        drop(guard);
        assert!(
            metrics
                .encode()
                .contains(r#"xdp_ingress_open_connections{scheme="http"} 0"#)
        );
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(101), "1xx");
        assert_eq!(status_class(308), "3xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(504), "5xx");
    }
}
