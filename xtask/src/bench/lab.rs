//! The benchmarks' lab: the L7 edge lab of the tests (client, edge and
//! backends namespaces, [`EdgeLab`]) with one `lab-backend` serving three
//! endpoints, and the CPU split: the client and the backends share one
//! core, the proxy under test has the other to itself.
//!
//! ```text
//!  client (wrk, CPU 0)    edge (proxy under test, CPU 1)          backends (CPU 0)
//!  198.18.0.2/24 <-veth-> 198.18.0.1/24 (:80; XDP for xdp-ingress)
//!                         198.18.3.1/24                <-veth->   198.18.3.2/24
//!                         198.19.0.0/16 via 198.18.3.2            198.19.0.1-3:80 lab-backend
//! ```

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result, ensure};
use xdp_ingress_lab::{Backend, EdgeLab, Netns};

use super::Binaries;

/// The CPU of the client and the backends (`taskset -c`).
pub const LOAD_CPU: &str = "0";
/// The CPU of the proxy under test.
pub const PROXY_CPU: &str = "1";
/// Index of [`LOAD_CPU`] and [`PROXY_CPU`] in `/proc/stat`.
pub const LOAD_CPU_INDEX: usize = 0;
/// See [`LOAD_CPU_INDEX`].
pub const PROXY_CPU_INDEX: usize = 1;

/// The three endpoints of every benchmark Service (pod IPs, port 80).
pub const ENDPOINTS: [SocketAddr; 3] = [
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)), 80),
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2)), 80),
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(198, 19, 0, 3)), 80),
];

/// The lab with its backend running; dropped in order: backend, then the
/// links and namespaces.
#[derive(Debug)]
pub struct BenchLab {
    backend: Backend,
    edge_lab: EdgeLab,
}

impl BenchLab {
    /// Creates the namespaces and starts `lab-backend` (release build, one
    /// tokio worker, on [`LOAD_CPU`]) on the three [`ENDPOINTS`].
    pub fn create(binaries: &Binaries) -> Result<Self> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        ensure!(
            cpus >= 2,
            "the benchmarks need two CPUs (one for the client and backends, one for the proxy); this machine has {cpus}"
        );
        // Permanent neighbours: the benchmarks measure the steady state only
        // (the tests resolve neighbours as a node does).
        let mut edge_lab = EdgeLab::create_with_static_neighbors()?;
        for endpoint in ENDPOINTS {
            edge_lab.add_endpoint_addr(endpoint.ip())?;
        }
        let backend = Backend::builder(&edge_lab.backend_ns, "web", &ENDPOINTS)
            .binary(&binaries.backend)
            .cpus(LOAD_CPU)
            .env("TOKIO_WORKER_THREADS", "1")
            .start()?;
        for endpoint in ENDPOINTS {
            edge_lab
                .edge
                .wait_tcp(endpoint, std::time::Duration::from_secs(5))
                .with_context(|| format!("the edge cannot reach the backend at {endpoint}"))?;
        }
        Ok(Self { backend, edge_lab })
    }

    /// The namespaces and links underneath (the L4 benchmark configures
    /// the edge's forwarding and the backends' side itself).
    pub fn edge_lab(&self) -> &EdgeLab {
        &self.edge_lab
    }

    /// Where the client runs.
    pub fn client(&self) -> &Netns {
        &self.edge_lab.client
    }

    /// Where the proxy under test runs.
    pub fn edge(&self) -> &Netns {
        &self.edge_lab.edge
    }

    /// The edge's interface on the client's link (where XDP goes).
    pub fn edge_interface(&self) -> &str {
        self.edge_lab.edge_interface()
    }

    /// The address the proxies listen on and the client sends to.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.edge_lab.proxy_addr()
    }

    /// One line per namespace, for the progress output.
    pub fn describe(&self) -> Vec<String> {
        vec![
            format!(
                "client   {:<24} {} (wrk on CPU {LOAD_CPU})",
                self.edge_lab.client.name(),
                xdp_ingress_lab::CLIENT_ADDR
            ),
            format!(
                "edge     {:<24} {} on {} (proxy under test on CPU {PROXY_CPU})",
                self.edge_lab.edge.name(),
                self.proxy_addr(),
                self.edge_interface()
            ),
            format!(
                "backends {:<24} lab-backend on {} (CPU {LOAD_CPU}, pid {})",
                self.edge_lab.backend_ns.name(),
                ENDPOINTS.map(|e| e.to_string()).join(" "),
                self.backend.pid()
            ),
        ]
    }
}
