//! Per-CPU counter updates. Per-CPU slots need no atomics: only the program
//! running on that CPU writes them.

use aya_ebpf::btf_maps::PerCpuArray;
use ingress_common::{L4Counters, TrafficCounters};

/// Adds one packet of `bytes` bytes to slot `index` of `map`; an index out of
/// range is ignored (the verifier still sees the bounds check).
#[inline(always)]
pub fn count<const N: usize>(map: &PerCpuArray<TrafficCounters, N>, index: u32, bytes: u64) {
    if let Some(counters) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU array slot is valid for the whole program run and
        // only this CPU writes it.
        unsafe {
            (*counters).packets += 1;
            (*counters).bytes += bytes;
        }
    }
}

/// Adds one packet of `bytes` bytes (and `new_flows`, 0 or 1; `replies`, 1
/// for a backend's reply, else 0) to an L4 counter slot (from `get_ptr_mut`
/// of a per-CPU array), if there is one.
#[inline(always)]
pub fn bump_l4(counters: Option<*mut L4Counters>, bytes: u64, new_flows: u64, replies: u64) {
    if let Some(counters) = counters {
        // SAFETY: as in `count`.
        unsafe {
            (*counters).packets += 1;
            (*counters).bytes += bytes;
            (*counters).new_flows += new_flows;
            (*counters).replies += replies;
        }
    }
}
