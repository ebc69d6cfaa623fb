//! The `#[repr(C)]` keys and values of the maps that the XDP program and the
//! `xdp-ingress` daemon share. Every map type is defined here once; the eBPF
//! crate declares the maps with these types and userspace reads and writes
//! them through `aya` (the `user` feature implements `aya::Pod`).
//!
//! Layouts have no implicit padding, so that BTF, `bpftool map dump` and both
//! sides agree byte for byte.
#![no_std]

/// Map names as they appear in the object file, and the file names of their pins.
pub mod map_names {
    /// [`crate::ListenerKey`] -> [`crate::ListenerValue`].
    pub const LISTENERS: &str = "LISTENERS";
    /// Per-CPU [`crate::TrafficCounters`] indexed by [`crate::ListenerValue::listener_id`].
    pub const LISTENER_STATS: &str = "LISTENER_STATS";
    /// Per-CPU [`crate::TrafficCounters`] indexed by a [`crate::verdict`] reason.
    pub const VERDICT_STATS: &str = "VERDICT_STATS";
    /// [`crate::L4Config`] at index 0: the L4 tier's global settings.
    pub const L4_CONFIG: &str = "L4_CONFIG";
    /// [`crate::L4ServiceKey`] -> [`crate::L4Service`].
    pub const L4_SERVICES: &str = "L4_SERVICES";
    /// The Maglev slots: a flat array of backend indices, see [`crate::maglev_slot`]
    /// and [`crate::MaglevLanes`].
    pub const L4_MAGLEV: &str = "L4_MAGLEV";
    /// [`crate::L4Backend`] by backend index.
    pub const L4_BACKENDS: &str = "L4_BACKENDS";
    /// LRU [`crate::L4FlowKey`] (an IPv6 client's packet) -> [`crate::L4Flow`];
    /// IPv4 flows are in [`L4_FLOWS4`].
    pub const L4_FLOWS: &str = "L4_FLOWS";
    /// LRU [`crate::L4FlowKey`] (an IPv6 reply as it arrives) -> [`crate::L4ReverseNat`];
    /// IPv4 replies are in [`L4_REVERSE4`].
    pub const L4_REVERSE: &str = "L4_REVERSE";
    /// LRU [`crate::L4FlowKey4`] (an IPv4 client's packet) -> [`crate::L4Nat4`].
    pub const L4_FLOWS4: &str = "L4_FLOWS4";
    /// LRU [`crate::L4FlowKey4`] (an IPv4 reply as it arrives) -> [`crate::L4Nat4`].
    pub const L4_REVERSE4: &str = "L4_REVERSE4";
    /// Per-CPU [`crate::L4CachedFlow4`] by [`crate::flow_cache_slot`]: each
    /// CPU's copies of the IPv4 flows it forwards.
    pub const L4_FLOW_CACHE4: &str = "L4_FLOW_CACHE4";
    /// Per-CPU [`crate::L4CachedFlow6`] by [`crate::flow_cache_slot6`]:
    /// each CPU's translations of the IPv6 flows it forwards.
    pub const L4_FLOW_CACHE6: &str = "L4_FLOW_CACHE6";
    /// Per-CPU [`crate::L4PortCursor`]: each CPU's share of the source ports of full NAT.
    pub const L4_PORTS: &str = "L4_PORTS";
    /// Per-CPU [`crate::L4Counters`] by service index.
    pub const L4_SERVICE_STATS: &str = "L4_SERVICE_STATS";
    /// Per-CPU [`crate::L4Counters`] by backend index.
    pub const L4_BACKEND_STATS: &str = "L4_BACKEND_STATS";
    /// Ring buffer of [`crate::L4NeighbourMiss`]: next hops the FIB had no
    /// neighbour entry for. Read by the daemon, not pinned.
    pub const L4_NEIGHBOUR_MISSES: &str = "L4_NEIGHBOUR_MISSES";
    /// The ports in use by L4 services and backends, four bits a port
    /// (see [`crate::l4::port_flags`]).
    pub const L4_PORT_FLAGS: &str = "L4_PORT_FLAGS";
    /// LPM trie [`crate::SourcePrefix4`] (a listener id and an IPv4 source
    /// prefix) -> a [`crate::source_range`] rule.
    pub const SOURCE_RANGES4: &str = "SOURCE_RANGES4";
    /// LPM trie [`crate::SourcePrefix6`] -> a [`crate::source_range`] rule.
    pub const SOURCE_RANGES6: &str = "SOURCE_RANGES6";
    /// `u32` by listener id: which families' tries the listener's packets
    /// are looked up in ([`crate::source_range::CHECK_IPV4`], ...).
    pub const LISTENER_SOURCE_CHECKS: &str = "LISTENER_SOURCE_CHECKS";
    /// Per-CPU [`crate::TrafficCounters`] by listener id: the packets of
    /// the listener dropped for their source address.
    pub const LISTENER_DENIED_STATS: &str = "LISTENER_DENIED_STATS";
    /// The maps of the kernel source ranges, with the file names of their pins.
    pub const SOURCE_RANGE_PINNED: [(&str, &str); 4] = [
        (SOURCE_RANGES4, "source_ranges4"),
        (SOURCE_RANGES6, "source_ranges6"),
        (LISTENER_SOURCE_CHECKS, "listener_source_checks"),
        (LISTENER_DENIED_STATS, "listener_denied_stats"),
    ];
    /// The maps of the L4 tier, with the file names of their pins.
    pub const L4_PINNED: [(&str, &str); 14] = [
        (L4_CONFIG, "l4_config"),
        (L4_SERVICES, "l4_services"),
        (L4_MAGLEV, "l4_maglev"),
        (L4_BACKENDS, "l4_backends"),
        (L4_FLOWS, "l4_flows"),
        (L4_REVERSE, "l4_reverse"),
        (L4_PORTS, "l4_ports"),
        (L4_SERVICE_STATS, "l4_service_stats"),
        (L4_BACKEND_STATS, "l4_backend_stats"),
        (L4_PORT_FLAGS, "l4_port_flags"),
        (L4_FLOWS4, "l4_flows4"),
        (L4_REVERSE4, "l4_reverse4"),
        (L4_FLOW_CACHE4, "l4_flow_cache4"),
        (L4_FLOW_CACHE6, "l4_flow_cache6"),
    ];
    /// Every map the daemon pins, with the file name of its pin.
    pub const PINNED: [(&str, &str); 21] = [
        (LISTENERS, "listeners"),
        (LISTENER_STATS, "listener_stats"),
        (VERDICT_STATS, "verdict_stats"),
        SOURCE_RANGE_PINNED[0],
        SOURCE_RANGE_PINNED[1],
        SOURCE_RANGE_PINNED[2],
        SOURCE_RANGE_PINNED[3],
        L4_PINNED[0],
        L4_PINNED[1],
        L4_PINNED[2],
        L4_PINNED[3],
        L4_PINNED[4],
        L4_PINNED[5],
        L4_PINNED[6],
        L4_PINNED[7],
        L4_PINNED[8],
        L4_PINNED[9],
        L4_PINNED[10],
        L4_PINNED[11],
        L4_PINNED[12],
        L4_PINNED[13],
    ];
}

/// The name of the XDP program in the object file.
pub const XDP_PROGRAM_NAME: &str = "xdp_ingress";

/// Capacity of the listener map and of its counters.
pub const MAX_LISTENERS: u32 = 1024;

/// IP family tags used in map keys (the IP version number, readable in a dump).
pub mod family {
    /// IPv4.
    pub const IPV4: u8 = 4;
    /// IPv6.
    pub const IPV6: u8 = 6;
}

/// IANA protocol numbers used in map keys.
pub mod protocol {
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

/// What the XDP program does with a packet that matches a listener.
pub mod action {
    /// Hand the packet to the kernel stack, where the local L7 proxy listens (`XDP_PASS`).
    pub const PASS_TO_PROXY: u32 = 1;
    /// Drop the packet in XDP (`XDP_DROP`).
    pub const DROP: u32 = 2;

    /// A short lower-case name for a dump or a log line.
    pub const fn name(action: u32) -> &'static str {
        match action {
            PASS_TO_PROXY => "pass-to-proxy",
            DROP => "drop",
            _ => "unknown",
        }
    }
}

/// Why the XDP program returned what it returned: the index into `VERDICT_STATS`.
pub mod verdict {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): passed.
    pub const PASS_NOT_IP: u32 = 0;
    /// Truncated or malformed headers: passed untouched, the stack decides.
    pub const PASS_MALFORMED: u32 = 1;
    /// IP but neither TCP nor UDP (ICMP, ...), or a non-first fragment: passed.
    pub const PASS_OTHER_L4: u32 = 2;
    /// TCP or UDP to an address and port without a listener: passed.
    pub const PASS_NO_LISTENER: u32 = 3;
    /// A listener with [`crate::action::PASS_TO_PROXY`]: passed to the proxy.
    pub const PASS_TO_PROXY: u32 = 4;
    /// A listener with [`crate::action::DROP`]: dropped.
    pub const DROP_LISTENER: u32 = 5;
    /// To an L4 service: translated and sent to a backend (`XDP_TX` or redirect).
    pub const L4_FORWARD: u32 = 6;
    /// A backend's reply: translated back and sent to the client.
    pub const L4_REPLY: u32 = 7;
    /// To an L4 service without backends: passed untouched (the stack
    /// answers with a RST or an ICMP unreachable).
    pub const L4_NO_BACKEND: u32 = 8;
    /// Translated, but the FIB gave no next hop (no neighbour entry yet, no
    /// route, forwarding off): passed translated, for the stack to route.
    pub const L4_FIB_PASS: u32 = 9;
    /// To an L4 service, but no source port was free for full NAT: passed untouched.
    pub const L4_NO_PORT: u32 = 10;
    /// To an L4 service but not translatable (a fragment, VLAN-tagged, IPv6
    /// extension headers): passed untouched.
    pub const L4_UNSUPPORTED: u32 = 11;
    /// To an L4 service or a reply, but the FIB has no route (or no source
    /// address for full NAT): passed untouched.
    pub const L4_NO_ROUTE: u32 = 12;
    /// To an L4 service or a reply, but the next hop has no neighbour entry
    /// (no MAC address) yet: dropped untouched, and userspace is told on
    /// `L4_NEIGHBOUR_MISSES` so the neighbour is resolved at once; TCP's
    /// retransmission, or the client's next datagram, then gets through. (A
    /// packet passed to the stack after translation would be dropped there
    /// as a martian with full NAT, and the stack would never resolve the
    /// neighbour either.)
    pub const L4_NO_NEIGH: u32 = 13;
    /// To a listener with [`crate::action::PASS_TO_PROXY`], from a source
    /// address its [`crate::source_range`] rules deny: dropped.
    pub const DROP_SOURCE_RANGE: u32 = 14;
    /// Number of verdict reasons (the size of `VERDICT_STATS`).
    pub const COUNT: u32 = 15;

    /// A short lower-case name for each reason, by index.
    pub const NAMES: [&str; COUNT as usize] = [
        "pass-not-ip",
        "pass-malformed",
        "pass-other-l4",
        "pass-no-listener",
        "pass-to-proxy",
        "drop-listener",
        "l4-forward",
        "l4-reply",
        "l4-no-backend",
        "l4-fib-pass",
        "l4-no-port",
        "l4-unsupported",
        "l4-no-route",
        "l4-no-neigh",
        "drop-source-range",
    ];
}

/// Source ranges in the kernel: per listener, the client addresses whose
/// packets are dropped before the stack sees them.
///
/// Two LPM tries (`SOURCE_RANGES4`, `SOURCE_RANGES6`) are keyed by the
/// listener id (big-endian, so it forms the first 32 bits of the prefix)
/// followed by the source address: a key's prefix length is 32 plus the
/// range's. A packet is looked up with its listener's id and full address;
/// the longest matching entry's rule decides. Userspace writes every entry
/// with the rule the longest match must give: [`DENY`] for a deny range and
/// for an allowed range inside a deny range; [`ALLOW`] for the other
/// allowed ranges; a listener with an allow list gets a [`DENY`] entry of
/// the bare listener id (prefix 32) in both tries, so a source outside
/// every range is denied. No match: passed.
pub mod source_range {
    /// The source is dropped.
    pub const DENY: u32 = 1;
    /// The source is let through (a range of an allow list).
    pub const ALLOW: u32 = 2;
    /// `LISTENER_SOURCE_CHECKS` bit: look IPv4 packets up in `SOURCE_RANGES4`.
    pub const CHECK_IPV4: u32 = 1;
    /// `LISTENER_SOURCE_CHECKS` bit: look IPv6 packets up in `SOURCE_RANGES6`.
    pub const CHECK_IPV6: u32 = 2;
    /// Entries of each trie.
    pub const MAX_ENTRIES: u32 = 16_384;
    /// Bits of a key's prefix taken by the listener id.
    pub const LISTENER_BITS: u32 = 32;

    /// A short lower-case name of a rule.
    pub const fn name(rule: u32) -> &'static str {
        match rule {
            DENY => "deny",
            ALLOW => "allow",
            _ => "unknown",
        }
    }
}

/// The data of a `SOURCE_RANGES4` key (after its prefix length): a
/// listener id and an IPv4 source address, both in network byte order.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePrefix4 {
    /// `ListenerValue::listener_id`, big-endian.
    pub listener: [u8; 4],
    /// The address (its first bits, as many as the prefix length says).
    pub addr: [u8; 4],
}

/// The data of a `SOURCE_RANGES6` key: a listener id and an IPv6 source
/// address, both in network byte order.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePrefix6 {
    /// `ListenerValue::listener_id`, big-endian.
    pub listener: [u8; 4],
    /// The address.
    pub addr: [u8; 16],
}

/// Key of the listener map: where a packet is going.
///
/// `addr` holds the destination address in network byte order: IPv4 in the
/// first four bytes and zeros after, IPv6 in all sixteen. An all-zero `addr`
/// is the wildcard for its family, looked up when no exact entry matches.
/// Aligned to 4 so the XDP program builds it with word stores.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerKey {
    /// Destination address, network byte order.
    pub addr: [u8; 16],
    /// Destination port, host byte order.
    pub port: u16,
    /// [`family::IPV4`] or [`family::IPV6`].
    pub family: u8,
    /// [`protocol::TCP`] or [`protocol::UDP`].
    pub protocol: u8,
}

impl ListenerKey {
    /// The wildcard key for the same family, protocol and port.
    pub const fn wildcard(self) -> Self {
        Self {
            addr: [0; 16],
            ..self
        }
    }
}

/// Value of the listener map: what to do and which counters to bump.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerValue {
    /// One of [`action`].
    pub action: u32,
    /// Index into `LISTENER_STATS`, below [`MAX_LISTENERS`]; allocated by userspace.
    pub listener_id: u32,
}

/// Packet and byte counters; per CPU in the maps, summed by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TrafficCounters {
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen, from the Ethernet header on.
    pub bytes: u64,
}

impl TrafficCounters {
    /// The sum of two counters (wrapping, as the kernel side does).
    pub const fn plus(self, other: Self) -> Self {
        Self {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

/// The L4 tier: sizes, NAT modes and the layout of its maps.
///
/// Addresses in L4 keys and values are four `u32` words holding the address
/// bytes in network order as they lie in memory (IPv4 in word 0, the other
/// words zero; see [`addr_words`]), so the XDP program copies them with word
/// loads and stores. Ports are in host byte order.
pub mod l4 {
    /// Maglev tables (service indices): the number of distinct
    /// (protocol, port) services, each with its own table.
    pub const MAX_SERVICES: u32 = 64;
    /// Entries of the service map: a service listens on several addresses.
    pub const MAX_SERVICE_KEYS: u32 = 1024;
    /// Backend indices (a Maglev slot holds one as a `u16`).
    pub const MAX_BACKENDS: u32 = 4096;
    /// Entries of the connection table (and of the reverse-NAT table).
    pub const MAX_FLOWS: u32 = 131_072;
    /// Maglev slots per table half in the object as built; the daemon sets
    /// the map's real size at load time from `--maglev-table-size`.
    pub const DEFAULT_TABLE_SIZE: u32 = 65_537;
    /// Slots of each CPU's IPv4 flow cache (`L4_FLOW_CACHE4`), a power of two.
    pub const FLOW_CACHE_SLOTS: u32 = 4096;
    /// Slots of each CPU's IPv6 flow cache (`L4_FLOW_CACHE6`), a power of two.
    pub const FLOW_CACHE6_SLOTS: u32 = 1024;
    /// CPUs whose flow caches a closing flow clears (the kernel's possible
    /// CPUs, up to this many).
    pub const MAX_CPUS: u32 = 512;
    /// Tries at finding a free source port for one new flow in full NAT.
    pub const PORT_TRIES: u32 = 8;

    /// Full NAT: destination to the backend, source to the edge's address
    /// and a port the program allocates. Replies are translated back.
    pub const NAT_FULL: u32 = 0;
    /// Destination NAT only: the backend sees the client's address and
    /// must route its replies back through the edge.
    pub const NAT_DNAT: u32 = 1;

    /// [`crate::L4Backend::flags`]: the slot holds a live backend.
    pub const BACKEND_ACTIVE: u8 = 1;

    /// How long a flow's cached next hop (`bpf_fib_lookup`'s answer) is
    /// used before the FIB is asked again, in jiffies: route and neighbour
    /// changes reach established flows within this time (0.26 s at the
    /// usual HZ=250; 64 ms at 1000, 0.64 s at 100), so a backend whose MAC
    /// address changed is followed within a second once the daemon has
    /// resolved it again. Jiffies, not nanoseconds:
    /// the verifier inlines `bpf_jiffies64` as one load, while a clock
    /// helper is a call on every packet.
    pub const NEXT_HOP_TTL_JIFFIES: u64 = 64;

    /// The bits of a port in `L4_PORT_FLAGS`: which kind of packet may be
    /// the L4 tier's, checked before any hash lookup.
    pub mod port_flags {
        /// A TCP service listens on the port (destination port).
        pub const SERVICE_TCP: u64 = 1;
        /// A UDP service listens on the port.
        pub const SERVICE_UDP: u64 = 2;
        /// A TCP backend listens on the port (the source port of replies).
        pub const BACKEND_TCP: u64 = 4;
        /// A UDP backend listens on the port.
        pub const BACKEND_UDP: u64 = 8;
        /// Ports per 64-bit word.
        pub const PORTS_PER_WORD: u32 = 16;
        /// Words of the map.
        pub const WORDS: u32 = 65_536 / PORTS_PER_WORD;

        /// The bits of `port` in `word` (the word at `port / PORTS_PER_WORD`).
        #[inline(always)]
        pub const fn of(word: u64, port: u16) -> u64 {
            (word >> ((port as u32 % PORTS_PER_WORD) * 4)) & 0xf
        }
    }
}

/// The position of `slot` of the table half `half` of service `service`,
/// for tables of `table_size` slots, in the flat sequence of
/// `MAX_SERVICES x 2 x table_size` backend indices that `L4_MAGLEV` holds.
/// The map packs them four to an element ([`MaglevLanes`]): position `p` is
/// lane `p % 4` of element `p / 4`.
#[inline(always)]
pub const fn maglev_slot(service: u32, half: u32, table_size: u32, slot: u32) -> u32 {
    (service * 2 + half) * table_size + slot
}

/// An element of `L4_MAGLEV`: four backend indices. The kernel rounds array
/// elements up to 8 bytes, so four `u16` lanes waste nothing (a `u32` value
/// would waste half), and the memory-mapped array reads as one `u16` sequence.
pub type MaglevLanes = [u16; 4];

/// Elements of `L4_MAGLEV` for tables of `table_size` slots.
pub const fn maglev_elements(table_size: u32) -> u32 {
    (l4::MAX_SERVICES * 2 * table_size).div_ceil(4)
}

/// An address as the four words of L4 keys: `octets` (4 or 16 bytes, network
/// order) in memory order, zero-padded.
pub const fn addr_words(octets: &[u8]) -> [u32; 4] {
    let mut words = [0u32; 4];
    let mut i = 0;
    while i < octets.len() && i < 16 {
        let shift = (i % 4) * 8;
        // Little- and big-endian hosts alike: byte i goes to memory offset i.
        let word = if cfg!(target_endian = "little") {
            (octets[i] as u32) << shift
        } else {
            (octets[i] as u32) << (24 - shift)
        };
        words[i / 4] |= word;
        i += 1;
    }
    words
}

/// The sixteen address bytes (network order) of [`addr_words`] words.
pub const fn words_octets(words: [u32; 4]) -> [u8; 16] {
    let mut octets = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let bytes = words[i].to_ne_bytes();
        octets[i * 4] = bytes[0];
        octets[i * 4 + 1] = bytes[1];
        octets[i * 4 + 2] = bytes[2];
        octets[i * 4 + 3] = bytes[3];
        i += 1;
    }
    octets
}

/// Settings of the L4 tier, at index 0 of `L4_CONFIG`. All zero (as the
/// map starts) means no L4 service: the program skips the L4 lookups.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L4Config {
    /// Service keys in `L4_SERVICES`; 0 skips the L4 lookups.
    pub services: u32,
    /// [`l4::NAT_FULL`] or [`l4::NAT_DNAT`].
    pub nat_mode: u32,
    /// Lowest source port of full NAT (replies to other ports are not ours).
    pub port_min: u16,
    /// Highest source port of full NAT.
    pub port_max: u16,
    /// Reserved, zero.
    pub reserved: u32,
}

/// Key of `L4_SERVICES`: an address and port the L4 tier balances.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct L4ServiceKey {
    /// Destination address ([`addr_words`]).
    pub addr: [u32; 4],
    /// Destination port, host byte order.
    pub port: u16,
    /// [`family::IPV4`] or [`family::IPV6`].
    pub family: u8,
    /// [`protocol::TCP`] or [`protocol::UDP`].
    pub protocol: u8,
}

/// Value of `L4_SERVICES`: which Maglev table, and which half of it is live.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L4Service {
    /// Service index: Maglev table and `L4_SERVICE_STATS` slot, below
    /// [`l4::MAX_SERVICES`]; allocated by userspace.
    pub index: u32,
    /// The half of the table lookups use (0 or 1). Userspace writes the
    /// other half whole, then flips this, so no lookup sees a half-written table.
    pub active_half: u32,
    /// Slots of one table half (a prime).
    pub table_size: u32,
    /// Backends in the table; 0 passes the packets to the stack.
    pub backends: u32,
}

/// Value of `L4_BACKENDS`: where a backend is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L4Backend {
    /// Its address ([`addr_words`]).
    pub addr: [u32; 4],
    /// Its port, host byte order.
    pub port: u16,
    /// [`family::IPV4`] or [`family::IPV6`].
    pub family: u8,
    /// [`l4::BACKEND_ACTIVE`] while the slot holds a live backend.
    pub flags: u8,
    /// Bumped by userspace each time the slot gets a new backend, so a flow
    /// pinned to a removed backend never follows its slot to another one.
    pub generation: u32,
}

/// Key of `L4_FLOWS4` (an IPv4 client's packet: client -> service) and of
/// `L4_REVERSE4` (an IPv4 reply as it arrives: backend -> the NAT address):
/// the IPv4 5-tuple in 16 bytes, so the established path hashes and compares
/// less than half of an [`L4FlowKey`].
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct L4FlowKey4 {
    /// Source address (word 0 of [`addr_words`]).
    pub src: u32,
    /// Destination address (word 0 of [`addr_words`]).
    pub dst: u32,
    /// Source port, host byte order.
    pub sport: u16,
    /// Destination port, host byte order.
    pub dport: u16,
    /// [`protocol::TCP`] or [`protocol::UDP`].
    pub protocol: u8,
    /// Zero.
    pub pad: u8,
    /// Zero. (Two fields rather than a `[u8; 3]`: the XDP program zeroes a
    /// byte array with a call to `memset`, a byte loop.)
    pub reserved: u16,
}

/// Value of `L4_FLOWS4` and `L4_REVERSE4`: an IPv4 packet's translation,
/// worked out when the flow started, so an established packet needs no
/// other lookup than its own: the new addresses and ports, the checksum
/// changes they make (the old values are the key's), and the next hop.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L4Nat4 {
    /// The next hop of the translated packet.
    pub hop: L4NextHop,
    /// New source address (word 0 of [`addr_words`]): the edge's (full
    /// NAT) or the client's (DNAT) toward the backend; the service's back.
    pub src: u32,
    /// New destination address: the backend's, or the client's back.
    pub dst: u32,
    /// New source port, host byte order.
    pub sport: u16,
    /// New destination port, host byte order.
    pub dport: u16,
    /// The IPv4 header checksum's change, folded to 16 bits (RFC 1624: the
    /// sum of `!old + new` over the changed words).
    pub ip_delta: u16,
    /// The TCP or UDP checksum's change (addresses and ports), folded.
    pub l4_delta: u16,
    /// Service index (for the counters).
    pub service: u32,
    /// Backend index (for the counters).
    pub backend: u32,
    /// The backend's generation when the flow picked it: a forward entry
    /// is used only while the backend's slot still has it.
    pub generation: u32,
    /// 1 once the client sent a FIN.
    pub client_fin: u8,
    /// 1 once the backend sent a FIN.
    pub backend_fin: u8,
    /// Zero.
    pub reserved: u16,
}

/// A slot of `L4_FLOW_CACHE4`: a copy of an `L4_FLOWS4` or `L4_REVERSE4`
/// entry with its key, in a per-CPU array indexed by [`flow_cache_slot`],
/// so the established path of a flow this CPU forwarded before costs an
/// array lookup and a compare rather than a hash-table lookup. Filled on a
/// hash-table hit; used only for packets without FIN or RST while the copy's
/// next hop is fresh (so the hash table is looked up again, and its entry
/// marked used for the LRU, at least once per next-hop TTL); never filled
/// once either side sent a FIN; cleared on every CPU when a FIN or RST
/// changes the flow, and by userspace when it forgets a service's flows.
/// A copy made from an entry read just before another CPU cleared the
/// caches lives until its next hop expires, at most one next-hop TTL.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L4CachedFlow4 {
    /// The entry's key, with `pad` 0 for a client's packet (`L4_FLOWS4`)
    /// or 1 for a reply (`L4_REVERSE4`); `protocol` 0 marks an empty slot.
    pub key: L4FlowKey4,
    /// The entry.
    pub nat: L4Nat4,
}

/// The slot of `key` (as looked up in `L4_FLOWS4` or `L4_REVERSE4`) in
/// each CPU's `L4_FLOW_CACHE4`: a multiplicative hash of its words.
#[inline(always)]
pub const fn flow_cache_slot(key: &L4FlowKey4) -> u32 {
    let ports = (key.sport as u32) | ((key.dport as u32) << 16);
    let mixed = key.src ^ key.dst.rotate_left(16) ^ ports ^ key.protocol as u32;
    mixed.wrapping_mul(0x9e37_79b1) >> (32 - l4::FLOW_CACHE_SLOTS.trailing_zeros())
}

/// An IPv6 packet's translation as a CPU's flow cache keeps it (see
/// [`L4CachedFlow6`]): made from an `L4_FLOWS` or `L4_REVERSE` entry and the
/// backend's address when a packet of the flow was translated, so the next
/// ones need no other lookup: the new addresses and ports, the checksum
/// change they make (IPv6 has no header checksum), the next hop.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L4Nat6 {
    /// The next hop of the translated packet.
    pub hop: L4NextHop,
    /// New source address ([`addr_words`]).
    pub src: [u32; 4],
    /// New destination address ([`addr_words`]).
    pub dst: [u32; 4],
    /// New source port, host byte order.
    pub sport: u16,
    /// New destination port, host byte order.
    pub dport: u16,
    /// The TCP or UDP checksum's change (addresses and ports), folded.
    pub l4_delta: u16,
    /// Zero.
    pub reserved: u16,
    /// Service index (for the counters).
    pub service: u32,
    /// Backend index (for the counters).
    pub backend: u32,
    /// The backend's generation when the flow picked it: a client's packet
    /// uses the copy only while the backend's slot still has it.
    pub generation: u32,
    /// Zero.
    pub pad: u32,
}

/// A slot of `L4_FLOW_CACHE6`: the translation of an IPv6 flow's packets
/// with the key it was made for, in a per-CPU array indexed by
/// [`flow_cache_slot6`] (the IPv6 side of [`L4CachedFlow4`], with the same
/// rules: filled when a packet without FIN or RST of a flow with no FIN
/// noted was sent on a fresh next hop; used for packets without FIN or RST
/// while that next hop is fresh; cleared on every CPU when a FIN or RST
/// changes the flow, and by userspace when it forgets a service's flows).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L4CachedFlow6 {
    /// The entry's key, with `pad[0]` 0 for a client's packet (`L4_FLOWS`)
    /// or 1 for a reply (`L4_REVERSE`); `protocol` 0 marks an empty slot.
    pub key: L4FlowKey,
    /// The translation.
    pub nat: L4Nat6,
}

/// The slot of a key (as looked up in `L4_FLOWS` or `L4_REVERSE`) in each
/// CPU's `L4_FLOW_CACHE6`, from the key's ten words as they lie in memory
/// (little-endian: the ports in word 8, the protocol in byte 1 of word 9,
/// whose pad bytes do not count): a multiplicative hash of them.
#[inline(always)]
pub const fn flow_cache_slot6(words: &[u32; 10]) -> u32 {
    let mixed = words[0]
        ^ words[1].rotate_left(5)
        ^ words[2].rotate_left(10)
        ^ words[3].rotate_left(15)
        ^ words[4].rotate_left(16)
        ^ words[5].rotate_left(21)
        ^ words[6].rotate_left(26)
        ^ words[7].rotate_left(31)
        ^ words[8]
        ^ (words[9] & 0xffff);
    mixed.wrapping_mul(0x9e37_79b1) >> (32 - l4::FLOW_CACHE6_SLOTS.trailing_zeros())
}

/// Key of `L4_FLOWS` (a client's packet: client -> service) and of
/// `L4_REVERSE` (a reply as it arrives: backend -> the NAT address).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct L4FlowKey {
    /// Source address ([`addr_words`]).
    pub src: [u32; 4],
    /// Destination address ([`addr_words`]).
    pub dst: [u32; 4],
    /// Source port, host byte order.
    pub sport: u16,
    /// Destination port, host byte order.
    pub dport: u16,
    /// [`family::IPV4`] or [`family::IPV6`].
    pub family: u8,
    /// [`protocol::TCP`] or [`protocol::UDP`].
    pub protocol: u8,
    /// Zero.
    pub pad: [u8; 2],
}

/// A cached answer of `bpf_fib_lookup`: where a flow's packets leave.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L4NextHop {
    /// `bpf_jiffies64` after which the FIB is asked again (0: never asked).
    pub expires_jiffies: u64,
    /// The egress interface.
    pub ifindex: u32,
    /// Destination then source MAC, as six 16-bit words in memory order.
    pub macs: [u16; 6],
}

/// Value of `L4_FLOWS`: the backend a flow keeps, and how it is translated.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L4Flow {
    /// The source address toward the backend: the edge's (full NAT) or the
    /// client's (DNAT).
    pub nat_addr: [u32; 4],
    /// Backend index.
    pub backend: u32,
    /// The backend's generation when the flow picked it.
    pub generation: u32,
    /// Service index (for the counters).
    pub service: u32,
    /// The source port toward the backend, host byte order.
    pub nat_port: u16,
    /// 1 once the client sent a FIN.
    pub client_fin: u8,
    /// 1 once the backend sent a FIN.
    pub backend_fin: u8,
    /// The next hop toward the backend.
    pub hop: L4NextHop,
}

/// Value of `L4_REVERSE`: how to translate a reply back.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L4ReverseNat {
    /// The client's address: the reply's new destination.
    pub client: [u32; 4],
    /// The service address: the reply's new source.
    pub service_addr: [u32; 4],
    /// The client's port.
    pub client_port: u16,
    /// The service port.
    pub service_port: u16,
    /// Service index (for the counters).
    pub service: u32,
    /// Backend index (for the counters).
    pub backend: u32,
    /// 1 once the client sent a FIN.
    pub client_fin: u8,
    /// 1 once the backend sent a FIN.
    pub backend_fin: u8,
    /// Zero.
    pub reserved: u16,
    /// The next hop toward the client.
    pub hop: L4NextHop,
}

/// One CPU's share of the full-NAT source ports, at index 0 of `L4_PORTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L4PortCursor {
    /// The next port to try.
    pub next: u16,
    /// The CPU's lowest port.
    pub min: u16,
    /// The CPU's highest port.
    pub max: u16,
    /// Zero.
    pub reserved: u16,
}

/// Per-CPU counters of a service or a backend, summed by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L4Counters {
    /// Packets, both directions.
    pub packets: u64,
    /// Bytes from the Ethernet header on, both directions.
    pub bytes: u64,
    /// Flows that picked this service or backend.
    pub new_flows: u64,
    /// Of `packets`, the replies (from the backends to the clients): the
    /// daemon tells a backend that stopped answering (its MAC address
    /// changed behind the same IP) from one that answers.
    pub replies: u64,
}

/// A next hop that `bpf_fib_lookup` found no neighbour entry for, as the
/// XDP program reports it on `L4_NEIGHBOUR_MISSES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L4NeighbourMiss {
    /// The next hop's address as the FIB left it (the gateway, or the
    /// destination itself on a link), network order; IPv4 in the first word.
    pub addr: [u32; 4],
    /// The interface of the route.
    pub ifindex: u32,
    /// [`family::IPV4`] or [`family::IPV6`].
    pub family: u8,
    /// Zero.
    pub pad: [u8; 3],
}

impl L4Counters {
    /// The sum of two counters (wrapping, as the kernel side does).
    pub const fn plus(self, other: Self) -> Self {
        Self {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
            new_flows: self.new_flows.wrapping_add(other.new_flows),
            replies: self.replies.wrapping_add(other.replies),
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data without padding or pointers.
    unsafe impl aya::Pod for super::ListenerKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListenerValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TrafficCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4ServiceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4Service {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4Backend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4Flow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4ReverseNat {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4PortCursor {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4NeighbourMiss {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4NextHop {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4FlowKey4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4Nat4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4CachedFlow4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4Nat6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4CachedFlow6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourcePrefix4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourcePrefix6 {}
}

// The layouts are part of the contract with the kernel side and with bpftool.
const _: () = assert!(core::mem::size_of::<ListenerKey>() == 20);
const _: () = assert!(core::mem::size_of::<ListenerValue>() == 8);
const _: () = assert!(core::mem::size_of::<TrafficCounters>() == 16);
const _: () = assert!(core::mem::size_of::<SourcePrefix4>() == 8);
const _: () = assert!(core::mem::size_of::<SourcePrefix6>() == 20);
const _: () = assert!(core::mem::size_of::<L4Config>() == 16);
const _: () = assert!(core::mem::size_of::<L4ServiceKey>() == 20);
const _: () = assert!(core::mem::size_of::<L4Service>() == 16);
const _: () = assert!(core::mem::size_of::<L4Backend>() == 24);
const _: () = assert!(core::mem::size_of::<L4FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<L4NextHop>() == 24);
const _: () = assert!(core::mem::size_of::<L4FlowKey4>() == 16);
const _: () = assert!(core::mem::size_of::<L4Nat4>() == 56);
const _: () = assert!(core::mem::size_of::<L4CachedFlow4>() == 72);
const _: () = assert!(l4::FLOW_CACHE_SLOTS.is_power_of_two());
const _: () = assert!(l4::FLOW_CACHE6_SLOTS.is_power_of_two());
const _: () = assert!(core::mem::size_of::<L4Nat6>() == 80);
const _: () = assert!(core::mem::size_of::<L4CachedFlow6>() == 120);
const _: () = assert!(core::mem::size_of::<L4Flow>() == 56);
const _: () = assert!(core::mem::size_of::<L4ReverseNat>() == 72);
const _: () = assert!(core::mem::size_of::<L4PortCursor>() == 8);
const _: () = assert!(core::mem::size_of::<L4Counters>() == 32);
const _: () = assert!(core::mem::size_of::<L4NeighbourMiss>() == 24);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_words_round_trip_in_memory_order() {
        let words = addr_words(&[198, 18, 0, 1]);
        assert_eq!(words[1..], [0, 0, 0]);
        assert_eq!(words[0].to_ne_bytes(), [198, 18, 0, 1]);
        let v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(words_octets(addr_words(&v6)), v6);
        assert_eq!(maglev_slot(0, 0, 7, 3), 3);
        assert_eq!(maglev_slot(2, 1, 7, 3), 5 * 7 + 3);
    }

    /// The IPv6 fast path hashes the key's words as it builds them from
    /// the packet (ports in word 8, family and protocol in word 9), the
    /// general path as they lie in an `L4FlowKey`: both must agree, and
    /// the reply tag in the pad byte must not move a flow's slot.
    #[test]
    fn ipv6_cache_slots_come_from_the_key_words_as_they_lie_in_memory() {
        let key = L4FlowKey {
            src: addr_words(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            dst: addr_words(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            sport: 48_000,
            dport: 9000,
            family: family::IPV6,
            protocol: protocol::TCP,
            pad: [0; 2],
        };
        // SAFETY: ten words of plain data, align 4.
        let in_memory =
            |key: L4FlowKey| unsafe { core::mem::transmute::<L4FlowKey, [u32; 10]>(key) };
        let words = in_memory(key);
        let built = [
            key.src[0],
            key.src[1],
            key.src[2],
            key.src[3],
            key.dst[0],
            key.dst[1],
            key.dst[2],
            key.dst[3],
            u32::from(key.sport) | (u32::from(key.dport) << 16),
            u32::from_ne_bytes([key.family, key.protocol, 0, 0]),
        ];
        assert_eq!(words, built);
        let slot = flow_cache_slot6(&words);
        assert!(slot < l4::FLOW_CACHE6_SLOTS);
        let tagged = in_memory(L4FlowKey { pad: [1, 0], ..key });
        assert_eq!(
            flow_cache_slot6(&tagged),
            slot,
            "the reply tag keeps the slot"
        );
        // Flows that differ only in a port or in the client spread out.
        let mut slots = [0u32; 64];
        for (i, slot) in slots.iter_mut().enumerate() {
            let sport = 40_000 + i as u16;
            *slot = flow_cache_slot6(&in_memory(L4FlowKey { sport, ..key }));
        }
        slots.sort_unstable();
        let distinct = 1 + slots.windows(2).filter(|pair| pair[0] != pair[1]).count();
        assert!(distinct > 48, "{distinct} distinct slots of 64");
    }
}
