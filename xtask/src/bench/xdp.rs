//! xdp-ingress under test: the manifests of N Ingresses (one Service with
//! its EndpointSlice per Ingress, all on the lab's three endpoints), and the
//! daemon on the edge with XDP attached in native mode, as deployed.

use std::{fmt::Write as _, net::SocketAddr, time::Duration};

use anyhow::Result;
use xdp_ingress_lab::{Daemon, ManifestDir, SliceEndpoint, XDP_INGRESS_CLASS, service_yaml};

use super::{
    Binaries,
    lab::{BenchLab, ENDPOINTS, PROXY_CPU},
};

/// The namespace of every benchmark object.
pub const NAMESPACE: &str = "bench";

/// The host of Ingress `index`: `h<index>.bench.example`.
pub fn host(index: usize) -> String {
    format!("h{index}.bench.example")
}

/// The Service of Ingress `index`.
pub fn service(index: usize) -> String {
    format!("svc-{index}")
}

/// An Ingress of class `xdp`: `host` to `service` port 80, path `/` Prefix.
pub fn ingress_yaml(name: &str, host: &str, service: &str) -> String {
    format!(
        "\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  ingressClassName: xdp
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}
"
    )
}

/// The IngressClass and `count` Ingresses `ing-I` for `h<I>.bench.example`,
/// each to its own Service `svc-I` (port 80) whose EndpointSlice lists
/// `endpoints`.
pub fn manifests(count: usize, endpoints: &[SocketAddr]) -> String {
    let slice: Vec<SliceEndpoint> = endpoints
        .iter()
        .map(|e| SliceEndpoint::ready(e.ip()))
        .collect();
    let port = endpoints.first().map_or(80, SocketAddr::port);
    let mut yaml = String::from(XDP_INGRESS_CLASS);
    for index in 0..count {
        let service = service(index);
        let _ = write!(
            yaml,
            "---\n{}---\n{}",
            service_yaml(NAMESPACE, &service, 80, port, &slice),
            ingress_yaml(&format!("ing-{index}"), &host(index), &service)
        );
    }
    yaml
}

/// Where xdp-ingress's XDP program runs in the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpMode {
    /// Native (driver) mode on the edge's client link, as deployed. On a
    /// veth this costs more than on a NIC: the peer's packets are
    /// converted (often copied) for the program.
    Native,
    /// Generic (skb) mode.
    Skb,
    /// No XDP program: the proxy alone.
    Off,
}

impl XdpMode {
    /// The `--xdp-mode` value, `None` for no program.
    fn flag(self) -> Option<&'static str> {
        match self {
            XdpMode::Native => Some("native"),
            XdpMode::Skb => Some("skb"),
            XdpMode::Off => None,
        }
    }

    /// How the report names it.
    pub fn describe(self) -> &'static str {
        match self {
            XdpMode::Native => "XDP native on the edge's client link",
            XdpMode::Skb => "XDP generic (skb) on the edge's client link",
            XdpMode::Off => "no XDP program",
        }
    }
}

/// `xdp-ingress run` on the edge with the manifests of N Ingresses.
#[derive(Debug)]
pub struct XdpIngress {
    daemon: Daemon,
    manifests: ManifestDir,
}

impl XdpIngress {
    /// Writes the manifests of `count` Ingresses and starts the release
    /// daemon on [`PROXY_CPU`] with one tokio worker, the proxy on the lab's
    /// address, XDP attached in `mode` on the edge's client-facing interface
    /// (or not at all).
    pub fn start(lab: &BenchLab, binaries: &Binaries, count: usize, mode: XdpMode) -> Result<Self> {
        Self::start_with(
            lab,
            binaries,
            &self::manifests(count, &ENDPOINTS),
            mode,
            &[],
        )
    }

    /// Like [`XdpIngress::start`], with the manifests `yaml` and `extra`
    /// arguments to `xdp-ingress run`.
    pub fn start_with(
        lab: &BenchLab,
        binaries: &Binaries,
        yaml: &str,
        mode: XdpMode,
        extra: &[&str],
    ) -> Result<Self> {
        let manifests = ManifestDir::new()?;
        manifests.write("bench.yaml", yaml)?;
        let http_addr = lab.proxy_addr().to_string();
        let manifests_arg = manifests.arg();
        let mut daemon = Daemon::in_netns(lab.edge())
            .binary(&binaries.daemon)
            .cpus(PROXY_CPU)
            .env("TOKIO_WORKER_THREADS", "1")
            .args(&["--manifests", &manifests_arg, "--http-addr", &http_addr])
            .args(extra);
        if let Some(mode) = mode.flag() {
            daemon = daemon
                .interface(lab.edge_interface())
                .args(&["--xdp-mode", mode]);
        }
        Ok(Self {
            daemon: daemon.start()?,
            manifests,
        })
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// True while the daemon runs.
    pub fn running(&mut self) -> bool {
        self.daemon.running()
    }

    /// What the daemon logged.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// From the daemon's log, its last reload: (from noticing the change
    /// to the table installed, of which building and installing the table).
    pub fn last_reload(&self) -> Option<(Duration, Duration)> {
        last_reload(&self.daemon.log())
    }

    /// The change: a new Ingress `name` for `host` to the Service of
    /// Ingress 0, in a file of its own (written atomically).
    pub fn add_ingress(&self, name: &str, host: &str) -> Result<()> {
        self.manifests.write(
            &format!("{name}.yaml"),
            &ingress_yaml(name, host, &service(0)),
        )?;
        Ok(())
    }
}

/// The last `manifests changed, reloading` .. `configuration applied ...
/// took_us=N` pair of a daemon log (tracing's default format, RFC 3339
/// timestamps first): the whole reload and the table's part of it.
fn last_reload(log: &str) -> Option<(Duration, Duration)> {
    let lines: Vec<&str> = log.lines().collect();
    let applied = lines
        .iter()
        .rposition(|line| line.contains("configuration applied"))?;
    let changed = lines[..applied]
        .iter()
        .rposition(|line| line.contains("manifests changed"))?;
    let table_us: u64 = lines[applied]
        .split_whitespace()
        .find_map(|field| field.strip_prefix("took_us="))?
        .parse()
        .ok()?;
    let whole = time_of_day(lines[applied])? - time_of_day(lines[changed])?;
    Some((
        Duration::from_secs_f64(whole.max(0.0)),
        Duration::from_micros(table_us),
    ))
}

/// Seconds since midnight of a log line's `2026-11-25T13:57:44.984202Z`.
fn time_of_day(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let time = stamp.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_hold_one_ingress_and_service_per_host() {
        let yaml = manifests(3, &ENDPOINTS);
        assert_eq!(yaml.matches("kind: Ingress\n").count(), 3);
        assert_eq!(yaml.matches("kind: Service\n").count(), 3);
        assert_eq!(yaml.matches("kind: EndpointSlice\n").count(), 3);
        assert!(yaml.contains("- host: h2.bench.example"));
        assert!(yaml.contains("name: svc-2"));
        assert!(yaml.contains("198.19.0.3"));
    }

    #[test]
    fn the_last_reload_is_read_from_the_log() {
        let log = "\
2026-11-25T13:57:44.984202Z  INFO xdp_ingress::config: configuration applied paths=1 backends=1 problems=0 took_us=41
2026-11-25T13:57:50.100000Z  INFO xdp_ingress::providers::manifests: manifests changed, reloading
2026-11-25T13:57:50.350000Z  INFO xdp_ingress::config: configuration applied paths=2 backends=1 problems=0 took_us=1500
";
        let (whole, table) = last_reload(log).unwrap();
        assert_eq!(whole.as_millis(), 250);
        assert_eq!(table, Duration::from_micros(1500));
        assert_eq!(last_reload("nothing"), None);
    }
}
