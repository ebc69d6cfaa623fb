//! Every map of the XDP program, in one place, with its type and size.
//! Names are the ones in `ingress_common::map_names`; userspace pins them.

use aya_ebpf::{
    btf_maps::{HashMap, PerCpuArray},
    macros::btf_map,
};
use ingress_common::{ListenerKey, ListenerValue, MAX_LISTENERS, TrafficCounters, verdict};

/// Where a packet goes -> what to do with it. Filled by userspace.
#[btf_map]
pub static LISTENERS: HashMap<ListenerKey, ListenerValue, { MAX_LISTENERS as usize }> =
    HashMap::new();

/// Per-CPU counters per listener, indexed by `ListenerValue::listener_id`.
#[btf_map]
pub static LISTENER_STATS: PerCpuArray<TrafficCounters, { MAX_LISTENERS as usize }> =
    PerCpuArray::new();

/// Per-CPU counters per verdict reason (`ingress_common::verdict`).
#[btf_map]
pub static VERDICT_STATS: PerCpuArray<TrafficCounters, { verdict::COUNT as usize }> =
    PerCpuArray::new();
