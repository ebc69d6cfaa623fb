//! xdp-ingress: a Kubernetes ingress controller whose edge runs in XDP.
//!
//! The binary (`src/main.rs`) wires these modules together; the library is
//! what the tests use.

pub mod bpf;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod health;
pub mod memory;
pub mod metrics;
pub mod neighbours;
pub mod netlink;
pub mod providers;
pub mod proxy;
pub mod routing;
pub mod shutdown;
pub mod tls;
