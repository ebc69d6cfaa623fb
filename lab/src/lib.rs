//! The lab of xdp-ingress, shared by the end-to-end tests, `cargo xtask
//! demo` and the benchmarks: network namespaces joined by veth pairs, the
//! `xdp-ingress` daemon under test, `lab-backend` backends, clients, and the
//! daemon's maps as the tools print them.
//!
//! Everything here cleans up after itself on `Drop`, also while a test
//! panics; names are unique per process (`<pid>-<counter>`) so tests run in
//! parallel, and leftovers of a killed run are reaped on the next one.
//! Every wait is a bounded poll. Using the kernel needs root (see
//! [`require_root`]).
//!
//! Addresses: only 198.18.0.0/15 (benchmarking), 2001:db8::/32
//! (documentation, inside namespaces) and loopback.
//!
//! ```no_run
//! use xdp_ingress_lab::{Backend, Daemon, Netns, Veth};
//! # fn main() -> anyhow::Result<()> {
//! let client = Netns::new("cli")?;
//! let edge = Netns::new("edge")?;
//! let link = Veth::between(Some(&client), Some(&edge))
//!     .addrs_a(&["198.18.0.2/24"])
//!     .addrs_b(&["198.18.0.1/24"])
//!     .create()?;
//! let _backend = Backend::start(&edge, "web", &["198.18.0.1:8080".parse()?])?;
//! let _daemon = Daemon::in_netns(&edge)
//!     .interface(&link.b.name)
//!     .args(&["--xdp-mode", "native"])
//!     .start()?;
//! let reply = client.http_get("http://198.18.0.1:8080/", &[])?;
//! println!("{} answered", reply.report()?.backend);
//! # Ok(())
//! # }
//! ```
//!
//! [`EdgeLab`] is the three-namespace lab of the L7 edge (client, edge,
//! backends), with [`ManifestDir`] for the daemon's `--manifests`,
//! [`HttpConnection`] for hand-written HTTP/1.1 and [`Netns::curl`].
//!
//! The benchmarks start the daemon and backends from release builds, pinned
//! to CPUs and with their own environment ([`DaemonBuilder::binary`],
//! [`DaemonBuilder::cpus`], [`Backend::builder`]), and keep the files of
//! other processes (nginx's configuration, wrk's scripts) in a
//! [`ScratchDir`].
//!
//! [`k8s::TestCluster`] is a real Kubernetes control plane (etcd,
//! kube-apiserver, and for workloads kube-controller-manager,
//! kube-scheduler and kwok) for the tests of the cluster provider.
//!
//! `lab-backend` (src/bin, feature `backend`) is the backend process: it
//! reports which backend and endpoint served a request and what it received
//! (over TLS with [`BackendBuilder::tls`]). [`grpc_interop`] builds grpc-go's
//! interop server and client, real gRPC programs.

mod backend;
mod bpffs;
mod daemon;
mod edge_lab;
mod grpc_interop;
mod http_client;
mod http_conn;
pub mod k8s;
mod loopback_bridge;
mod manifests;
mod maps;
mod netns;
mod process;
mod raw_socket;
mod reap;
mod scratch;
mod veth;

pub use backend::{BACKEND_READY_TIMEOUT, Backend, BackendBuilder, BackendReport, backend_binary};
pub use bpffs::{
    BPFFS_MOUNT, PinDir, ensure_bpffs, prog_ids_held_by, remove_pin_dir, unique_pin_dir,
};
pub use daemon::{
    DAEMON_READY_TIMEOUT, DAEMON_STOP_TIMEOUT, Daemon, DaemonBuilder, daemon_binary,
    run_daemon_once,
};
pub use edge_lab::{
    BACKENDS_LINK_ADDR, CLIENT_ADDR, EDGE_ADDR, EDGE_BACKEND_LINK_ADDR, ENDPOINT_SUBNET, EdgeLab,
};
pub use grpc_interop::{GrpcInterop, grpc_interop};
pub use http_client::{CurlReply, HttpReply};
pub use http_conn::{HttpConnection, RawResponse, ResponseHead};
pub use loopback_bridge::LoopbackBridge;
pub use manifests::{ManifestDir, SliceEndpoint, XDP_INGRESS_CLASS, documents, service_yaml};
pub use maps::{Counts, ListenerJson, MapsJson, bpftool_counters, read_maps};
pub use netns::{Netns, XdpInfo, parse_xdp, xdp_mode};
pub use process::{
    Background, COMMAND_TIMEOUT, catches_signal, describe, poll_until, process_cpu_time,
    require_root, run_ok, run_with_timeout, unique_suffix, wait_timeout,
};
pub use raw_socket::checksum;
pub use scratch::ScratchDir;
pub use veth::{Veth, VethBuilder, VethEnd};
