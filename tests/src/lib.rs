//! Test support for xdp-ingress: the crafted-packet builder [`packets`]. The
//! network-namespace lab every end-to-end test shares is the
//! `xdp-ingress-lab` crate (`lab/`), which the demo and benchmarks use too.
//!
//! The tests themselves live in `tests/tests/`: `xdp_verdicts.rs` runs the
//! XDP program on crafted packets with `BPF_PROG_TEST_RUN`, `xdp_lab.rs`
//! runs the real daemon on a veth between two namespaces. Both need root
//! and skip themselves (with a message) otherwise.

pub mod certs;
pub mod packets;
pub mod sites;
