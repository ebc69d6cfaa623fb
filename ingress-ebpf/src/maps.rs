//! Every map of the XDP program, in one place, with its type and size.
//! Names are the ones in `ingress_common::map_names`; userspace pins them.
//!
//! The L4 maps are connected by indices that userspace allocates: a service
//! key leads to a service index (its Maglev table and counters), a Maglev
//! slot to a backend index (its address and counters).

use crate::fib::FibQuery;

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use ingress_common::{
    L4Backend, L4CachedFlow4, L4CachedFlow6, L4Config, L4Counters, L4Flow, L4FlowKey, L4FlowKey4,
    L4Nat4, L4NeighbourMiss, L4PortCursor, L4ReverseNat, L4Service, L4ServiceKey, ListenerKey,
    ListenerValue, MAX_LISTENERS, MaglevLanes, SourcePrefix4, SourcePrefix6, TrafficCounters, l4,
    maglev_elements, source_range, verdict,
};

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

/// (listener id, IPv4 source prefix) -> `source_range::DENY` or `ALLOW`
/// (see `ingress_common::source_range`). Filled by userspace.
#[btf_map]
pub static SOURCE_RANGES4: LpmTrie<SourcePrefix4, u32, { source_range::MAX_ENTRIES as usize }> =
    LpmTrie::new();

/// (listener id, IPv6 source prefix) -> a rule, as [`SOURCE_RANGES4`].
#[btf_map]
pub static SOURCE_RANGES6: LpmTrie<SourcePrefix6, u32, { source_range::MAX_ENTRIES as usize }> =
    LpmTrie::new();

/// Per listener id, which families' tries its packets are looked up in
/// (`source_range::CHECK_IPV4`, `CHECK_IPV6`): a listener without source
/// ranges costs one array load. Filled by userspace.
#[btf_map]
pub static LISTENER_SOURCE_CHECKS: Array<u32, { MAX_LISTENERS as usize }> = Array::new();

/// Per-CPU counters per listener id: its packets dropped for their source.
#[btf_map]
pub static LISTENER_DENIED_STATS: PerCpuArray<TrafficCounters, { MAX_LISTENERS as usize }> =
    PerCpuArray::new();

/// The L4 tier's settings, at index 0. Filled by userspace.
#[btf_map]
pub static L4_CONFIG: Array<L4Config, 1> = Array::new();

/// (address, port, family, protocol) -> service. Filled by userspace.
#[btf_map]
pub static L4_SERVICES: HashMap<L4ServiceKey, L4Service, { l4::MAX_SERVICE_KEYS as usize }> =
    HashMap::new();

/// The Maglev tables: service index x 2 halves x table size backend indices
/// (`ingress_common::maglev_slot`), four to an element. Memory-mappable, so
/// userspace writes a half with one copy; its real size is set at load time.
#[btf_map]
pub static L4_MAGLEV: Array<
    MaglevLanes,
    { maglev_elements(l4::DEFAULT_TABLE_SIZE) as usize },
    { BPF_F_MMAPABLE as usize },
> = Array::new();

/// Four bits a port: which ports L4 services and backends use, so every
/// other packet skips the L4 hash lookups. Memory-mappable; filled by userspace.
#[btf_map]
pub static L4_PORT_FLAGS: Array<
    u64,
    { l4::port_flags::WORDS as usize },
    { BPF_F_MMAPABLE as usize },
> = Array::new();

/// Backend index -> backend. Filled by userspace.
#[btf_map]
pub static L4_BACKENDS: Array<L4Backend, { l4::MAX_BACKENDS as usize }> = Array::new();

/// The IPv6 connection table: a client's 5-tuple -> its backend and translation.
#[btf_map]
pub static L4_FLOWS: LruHashMap<L4FlowKey, L4Flow, { l4::MAX_FLOWS as usize }> = LruHashMap::new();

/// IPv6 reverse NAT: a reply's 5-tuple as it arrives -> the client and service.
#[btf_map]
pub static L4_REVERSE: LruHashMap<L4FlowKey, L4ReverseNat, { l4::MAX_FLOWS as usize }> =
    LruHashMap::new();

/// The IPv4 connection table: a client's 5-tuple (16 bytes) -> the
/// translation worked out when the flow started (see `l4_fast`).
#[btf_map]
pub static L4_FLOWS4: LruHashMap<L4FlowKey4, L4Nat4, { l4::MAX_FLOWS as usize }> =
    LruHashMap::new();

/// IPv4 reverse NAT: a reply's 5-tuple as it arrives -> its translation back.
#[btf_map]
pub static L4_REVERSE4: LruHashMap<L4FlowKey4, L4Nat4, { l4::MAX_FLOWS as usize }> =
    LruHashMap::new();

/// Each CPU's copies of the IPv4 flows it forwards (see `L4CachedFlow4`).
#[btf_map]
pub static L4_FLOW_CACHE4: PerCpuArray<L4CachedFlow4, { l4::FLOW_CACHE_SLOTS as usize }> =
    PerCpuArray::new();

/// Each CPU's translations of the IPv6 flows it forwards (see `L4CachedFlow6`).
#[btf_map]
pub static L4_FLOW_CACHE6: PerCpuArray<L4CachedFlow6, { l4::FLOW_CACHE6_SLOTS as usize }> =
    PerCpuArray::new();

/// Each CPU's cursor in its share of the full-NAT source ports.
#[btf_map]
pub static L4_PORTS: PerCpuArray<L4PortCursor, 1> = PerCpuArray::new();

/// Per-CPU counters per service index.
#[btf_map]
pub static L4_SERVICE_STATS: PerCpuArray<L4Counters, { l4::MAX_SERVICES as usize }> =
    PerCpuArray::new();

/// Per-CPU working memory for what does not fit the 512-byte stack: the
/// FIB lookup's structure and a new flow's entries. Not pinned (no state).
#[btf_map]
pub static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// The layout of [`SCRATCH`].
#[repr(C)]
pub struct Scratch {
    /// `struct bpf_fib_lookup`, as eight words.
    pub fib: [u64; 8],
    /// A new flow's connection-table entry.
    pub flow: L4Flow,
    /// A new flow's reverse-NAT entry.
    pub reverse: L4ReverseNat,
    /// The packet's own flow key (client side, or the reply as it arrived).
    pub key: L4FlowKey,
    /// The key of the other direction.
    pub other: L4FlowKey,
    /// The addresses and ports the packet is translated to.
    pub to: FibQuery,
    /// A new IPv4 flow's connection-table entry.
    pub flow4: L4Nat4,
    /// A new IPv4 flow's reverse-NAT entry.
    pub reverse4: L4Nat4,
    /// An IPv4 packet's own flow key.
    pub key4: L4FlowKey4,
    /// The IPv4 key of the other direction.
    pub other4: L4FlowKey4,
    /// The next hop this CPU last reported missing (`fib::report_miss`),
    /// kept across runs.
    pub miss: L4NeighbourMiss,
    /// When it reported it, in jiffies.
    pub missed_at: u64,
}

/// Next hops the FIB found no neighbour entry for ([`L4NeighbourMiss`]),
/// read by the daemon, which resolves them at once. Not pinned.
#[btf_map]
pub static L4_NEIGHBOUR_MISSES: RingBuf<L4NeighbourMiss, { 16 * 4096 }> = RingBuf::new();

/// Per-CPU counters per backend index.
#[btf_map]
pub static L4_BACKEND_STATS: PerCpuArray<L4Counters, { l4::MAX_BACKENDS as usize }> =
    PerCpuArray::new();
