//! The kernel side as the daemon sees it: the BPF filesystem, the loaded XDP
//! program and its maps, and reading the pins back.

pub mod bpffs;
pub mod edge;
pub mod egress;
pub mod inspect;
pub mod l4_maps;
pub mod l4_plan;
pub mod l4_sync;
pub mod listeners;
pub mod source_ranges;
