//! Kernel tests of the XDP program with `BPF_PROG_TEST_RUN`: crafted packets
//! in, verdict out, and for every packet the counters it must (and must
//! not) have bumped: `VERDICT_STATS` by reason, `LISTENER_STATS` by
//! listener id, and `LISTENER_DENIED_STATS` (packets dropped for their
//! source by the source-range tries), packets and bytes.
//!
//! Each test loads its own, unpinned copy of the program (`XdpEdge::load(None)`),
//! so counters start at zero and tests run in parallel. Needs root.

use std::{collections::BTreeMap, net::Ipv6Addr};

use aya::programs::{ProgramError, TestRun, TestRunOptions, TestRunResult};
use ingress_common::{
    ListenerKey, MAX_LISTENERS, TrafficCounters, action, map_names, protocol, verdict,
};
use ingress_model::access::{IpRange, KernelSourceRanges};
use xdp_ingress::bpf::{
    edge::XdpEdge,
    listeners::key_for_ip,
    source_ranges::{SourceRangeMaps, TrieEntries, plan_entries},
};
use xdp_ingress_lab as lab;
use xdp_ingress_tests::packets::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6, ETH_P_LLDP, ExtHeader, Packet,
    Prng, arp_request, ipproto,
};

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// The address with exact listeners (TCP 23 and 80 dropped, TCP 8080 proxied).
const EXACT_V4: [u8; 4] = [198, 18, 0, 1];
/// Another address: only the wildcards apply to it.
const OTHER_V4: [u8; 4] = [198, 18, 0, 2];

fn exact_v6() -> Ipv6Addr {
    "2001:db8::1".parse().unwrap()
}

fn other_v6() -> Ipv6Addr {
    "2001:db8::2".parse().unwrap()
}

fn tcp4(addr: [u8; 4], port: u16) -> ListenerKey {
    key_for_ip(addr.into(), port, protocol::TCP)
}

fn udp4(addr: [u8; 4], port: u16) -> ListenerKey {
    key_for_ip(addr.into(), port, protocol::UDP)
}

fn tcp6(addr: Ipv6Addr, port: u16) -> ListenerKey {
    key_for_ip(addr.into(), port, protocol::TCP)
}

fn udp6(addr: Ipv6Addr, port: u16) -> ListenerKey {
    key_for_ip(addr.into(), port, protocol::UDP)
}

const ANY_V4: [u8; 4] = [0; 4];
const ANY_V6: Ipv6Addr = Ipv6Addr::UNSPECIFIED;

/// The listener set of most tests.
fn standard_listeners() -> BTreeMap<ListenerKey, u32> {
    [
        // The proxy's wildcards, both families.
        (tcp4(ANY_V4, 80), action::PASS_TO_PROXY),
        (tcp4(ANY_V4, 443), action::PASS_TO_PROXY),
        (tcp6(ANY_V6, 80), action::PASS_TO_PROXY),
        (tcp6(ANY_V6, 443), action::PASS_TO_PROXY),
        // Exact-address drops.
        (tcp4(EXACT_V4, 23), action::DROP),
        (tcp6(exact_v6(), 23), action::DROP),
        // An exact entry overriding a wildcard with another action.
        (tcp4(EXACT_V4, 80), action::DROP),
        // An exact entry without a wildcard.
        (tcp4(EXACT_V4, 8080), action::PASS_TO_PROXY),
        // UDP drops.
        (udp4(ANY_V4, 9), action::DROP),
        (udp6(ANY_V6, 9), action::DROP),
    ]
    .into()
}

/// What a packet must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// `BPF_PROG_TEST_RUN` refuses the input (EINVAL): the program never runs.
    Refused,
    /// The program returns `xdp`, counts `reason` and, when matched, `listener`.
    Verdict {
        xdp: u32,
        reason: u32,
        listener: Option<ListenerKey>,
    },
}

fn passed(reason: u32) -> Expect {
    Expect::Verdict {
        xdp: XDP_PASS,
        reason,
        listener: None,
    }
}

fn proxied(key: ListenerKey) -> Expect {
    Expect::Verdict {
        xdp: XDP_PASS,
        reason: verdict::PASS_TO_PROXY,
        listener: Some(key),
    }
}

fn dropped(key: ListenerKey) -> Expect {
    Expect::Verdict {
        xdp: XDP_DROP,
        reason: verdict::DROP_LISTENER,
        listener: Some(key),
    }
}

fn denied(key: ListenerKey) -> Expect {
    Expect::Verdict {
        xdp: XDP_DROP,
        reason: verdict::DROP_SOURCE_RANGE,
        listener: Some(key),
    }
}

fn reason_name(reason: u32) -> &'static str {
    verdict::NAMES
        .get(reason as usize)
        .copied()
        .unwrap_or("unknown")
}

/// One loaded program with its listeners, and the counters as last seen.
struct Harness {
    edge: XdpEdge,
    source_ranges: SourceRangeMaps,
    listeners: BTreeMap<ListenerKey, u32>,
    ids: BTreeMap<ListenerKey, u32>,
    verdicts: Vec<TrafficCounters>,
    listener_stats: Vec<TrafficCounters>,
    denied_stats: Vec<TrafficCounters>,
    checked: usize,
}

impl Harness {
    /// `None` (after saying so) when not root.
    fn new(listeners: BTreeMap<ListenerKey, u32>) -> Option<Self> {
        if !lab::require_root() {
            return None;
        }
        let mut edge = XdpEdge::load(None).expect("loading the XDP program");
        let source_ranges = edge
            .take_source_range_maps()
            .expect("the source-range maps");
        let mut harness = Self {
            edge,
            source_ranges,
            listeners: BTreeMap::new(),
            ids: BTreeMap::new(),
            verdicts: Vec::new(),
            listener_stats: Vec::new(),
            denied_stats: Vec::new(),
            checked: 0,
        };
        harness.sync(listeners);
        harness.verdicts = harness.read(map_names::VERDICT_STATS);
        harness.listener_stats = harness.read(map_names::LISTENER_STATS);
        harness.denied_stats = harness.source_ranges.denied().expect("denied counters");
        assert!(
            harness
                .denied_stats
                .iter()
                .all(|c| *c == TrafficCounters::default())
        );
        assert_eq!(harness.verdicts.len(), verdict::COUNT as usize);
        assert_eq!(harness.listener_stats.len(), MAX_LISTENERS as usize);
        assert!(
            harness
                .verdicts
                .iter()
                .chain(&harness.listener_stats)
                .all(|c| *c == TrafficCounters::default()),
            "a fresh program starts with zero counters"
        );
        Some(harness)
    }

    fn standard() -> Option<Self> {
        Self::new(standard_listeners())
    }

    fn sync(&mut self, listeners: BTreeMap<ListenerKey, u32>) {
        self.edge
            .sync_listeners(&listeners)
            .expect("syncing listeners");
        let present = self.edge.listeners().expect("reading listeners");
        assert_eq!(
            present
                .iter()
                .map(|(k, v)| (*k, v.action))
                .collect::<BTreeMap<_, _>>(),
            listeners,
            "the listener map holds exactly what was synced"
        );
        self.ids = present.iter().map(|(k, v)| (*k, v.listener_id)).collect();
        self.listeners = listeners;
    }

    fn id(&self, key: &ListenerKey) -> u32 {
        *self
            .ids
            .get(key)
            .unwrap_or_else(|| panic!("no listener {key:?}"))
    }

    /// Writes the source ranges `ranges` of each listener into the tries
    /// (replacing what they held).
    fn set_source_ranges(&mut self, ranges: &[(ListenerKey, &[&str], &[&str])]) {
        let mut entries = TrieEntries::default();
        for (key, deny, allow) in ranges {
            let parse = |list: &[&str]| list.iter().map(|r| IpRange::parse(r).unwrap()).collect();
            let planned = plan_entries(
                &[self.id(key)],
                &KernelSourceRanges {
                    deny: parse(deny),
                    allow: parse(allow),
                    proxy_only: Vec::new(),
                },
            );
            entries.v4.extend(planned.v4);
            entries.v6.extend(planned.v6);
            entries.checks.extend(planned.checks);
        }
        self.source_ranges
            .sync(&entries)
            .expect("syncing the source ranges");
        assert_eq!(
            self.source_ranges.present().expect("reading the tries"),
            entries,
            "the tries hold exactly what was synced"
        );
    }

    fn read(&mut self, map: &'static str) -> Vec<TrafficCounters> {
        self.edge.counters(map).expect("reading counters")
    }

    fn test_run(
        &mut self,
        packet: &[u8],
        out: &mut [u8],
        repeat: u32,
    ) -> Result<TestRunResult, ProgramError> {
        let program = self.edge.program().expect("the XDP program");
        program.test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(out),
            repeat,
            ..TestRunOptions::new()
        })
    }

    /// Runs `packet` once and checks the verdict, that the packet came out
    /// unmodified, and the exact counter deltas.
    fn check(&mut self, what: &str, packet: &[u8], expect: Expect) {
        self.checked += 1;
        let mut out = vec![0u8; packet.len() + 256];
        let result = self.test_run(packet, &mut out, 1);
        let ctx = || format!("{what} ({} bytes: {:02x?})", packet.len(), packet);
        match (expect, result) {
            (Expect::Refused, Err(ProgramError::SyscallError(error))) => {
                assert_eq!(
                    error.io_error.raw_os_error(),
                    Some(libc::EINVAL),
                    "{}: BPF_PROG_TEST_RUN refuses it with EINVAL, got {error}",
                    ctx()
                );
            }
            (Expect::Refused, other) => {
                panic!(
                    "{}: expected BPF_PROG_TEST_RUN to refuse it (EINVAL), got {other:?}",
                    ctx()
                )
            }
            (Expect::Verdict { xdp, .. }, Ok(result)) => {
                assert_eq!(
                    result.return_value,
                    xdp,
                    "{}: XDP action (0 aborted, 1 drop, 2 pass)",
                    ctx()
                );
                assert_eq!(result.data_size_out as usize, packet.len(), "{}", ctx());
                assert_eq!(
                    &out[..packet.len()],
                    packet,
                    "{}: the program must not modify packets",
                    ctx()
                );
            }
            (Expect::Verdict { .. }, Err(error)) => {
                panic!("{}: BPF_PROG_TEST_RUN failed: {error}", ctx())
            }
        }
        let len = packet.len() as u64;
        let (reason, listener) = match expect {
            Expect::Refused => (None, None),
            Expect::Verdict {
                reason, listener, ..
            } => (Some(reason), listener.map(|key| self.id(&key))),
        };
        self.expect_deltas(&ctx(), reason, listener, 1, len);
    }

    /// Reads the counters and checks that exactly `packets` packets of
    /// `bytes` bytes each were counted under `reason` and `listener` (and
    /// nothing anywhere else) since the last look.
    fn expect_deltas(
        &mut self,
        ctx: &str,
        reason: Option<u32>,
        listener: Option<u32>,
        packets: u64,
        bytes: u64,
    ) {
        let verdicts = self.read(map_names::VERDICT_STATS);
        let listener_stats = self.read(map_names::LISTENER_STATS);
        let denied_stats = self.source_ranges.denied().expect("denied counters");
        let delta = |now: &TrafficCounters, before: &TrafficCounters| TrafficCounters {
            packets: now.packets - before.packets,
            bytes: now.bytes - before.bytes,
        };
        let one = TrafficCounters {
            packets,
            bytes: packets * bytes,
        };
        for (index, (now, before)) in verdicts.iter().zip(&self.verdicts).enumerate() {
            let wanted = if reason == Some(index as u32) {
                one
            } else {
                TrafficCounters::default()
            };
            assert_eq!(
                delta(now, before),
                wanted,
                "{ctx}: VERDICT_STATS[{}] (expected reason: {})",
                reason_name(index as u32),
                reason.map_or("none: refused", reason_name)
            );
        }
        for (id, (now, before)) in listener_stats.iter().zip(&self.listener_stats).enumerate() {
            let wanted = if listener == Some(id as u32) {
                one
            } else {
                TrafficCounters::default()
            };
            assert_eq!(
                delta(now, before),
                wanted,
                "{ctx}: LISTENER_STATS[{id}] (expected listener id {listener:?})"
            );
        }
        for (id, (now, before)) in denied_stats.iter().zip(&self.denied_stats).enumerate() {
            let wanted =
                if listener == Some(id as u32) && reason == Some(verdict::DROP_SOURCE_RANGE) {
                    one
                } else {
                    TrafficCounters::default()
                };
            assert_eq!(
                delta(now, before),
                wanted,
                "{ctx}: LISTENER_DENIED_STATS[{id}] (expected listener id {listener:?})"
            );
        }
        self.verdicts = verdicts;
        self.listener_stats = listener_stats;
        self.denied_stats = denied_stats;
    }

    /// The reference model's answer for `packet` under this harness's listeners.
    fn model(&self, packet: &[u8]) -> Expect {
        model::expect(packet, &self.listeners)
    }

    /// Checks `packet` against `expect` and the model against both.
    fn check_with_model(&mut self, what: &str, packet: &[u8], expect: Expect) {
        assert_eq!(
            self.model(packet),
            expect,
            "{what}: the reference model disagrees with the test's expectation"
        );
        self.check(what, packet, expect);
    }
}

/// An independent userspace model of what the program must decide, written
/// from the documented contract (ingress-common and the parser's doc
/// comments): two VLAN tags, IPv4 options, six IPv6 extension headers,
/// fixed TCP/UDP headers present, exact listener before wildcard.
mod model {
    use std::collections::BTreeMap;

    use ingress_common::{ListenerKey, action, family, protocol, verdict};

    use super::{Expect, dropped, passed, proxied};

    fn be16(p: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([p[at], p[at + 1]])
    }

    pub fn expect(p: &[u8], listeners: &BTreeMap<ListenerKey, u32>) -> Expect {
        if p.len() < 14 {
            return Expect::Refused;
        }
        let malformed = passed(verdict::PASS_MALFORMED);
        let has = |offset: usize, len: usize| offset + len <= p.len();
        let mut ether_type = be16(p, 12);
        let mut offset = 14;
        for _ in 0..2 {
            if ether_type != 0x8100 && ether_type != 0x88a8 {
                break;
            }
            if !has(offset, 4) {
                return malformed;
            }
            ether_type = be16(p, offset + 2);
            offset += 4;
        }
        let mut daddr = [0u8; 16];
        let (fam, l4_protocol, l4_offset) = match ether_type {
            0x0800 => {
                if !has(offset, 20) {
                    return malformed;
                }
                let version_ihl = p[offset];
                let header_len = usize::from(version_ihl & 0x0f) * 4;
                if version_ihl >> 4 != 4 || header_len < 20 || !has(offset, header_len) {
                    return malformed;
                }
                if be16(p, offset + 6) & 0x1fff != 0 {
                    return passed(verdict::PASS_OTHER_L4);
                }
                daddr[..4].copy_from_slice(&p[offset + 16..offset + 20]);
                (family::IPV4, p[offset + 9], offset + header_len)
            }
            0x86dd => {
                if !has(offset, 40) {
                    return malformed;
                }
                if p[offset] >> 4 != 6 {
                    return malformed;
                }
                let mut next = p[offset + 6];
                daddr.copy_from_slice(&p[offset + 24..offset + 40]);
                offset += 40;
                for _ in 0..6 {
                    match next {
                        0 | 43 | 60 => {
                            if !has(offset, 2) {
                                return malformed;
                            }
                            next = p[offset];
                            offset += (usize::from(p[offset + 1]) + 1) * 8;
                        }
                        51 => {
                            if !has(offset, 2) {
                                return malformed;
                            }
                            next = p[offset];
                            offset += (usize::from(p[offset + 1]) + 2) * 4;
                        }
                        44 => {
                            if !has(offset, 8) {
                                return malformed;
                            }
                            if be16(p, offset + 2) & 0xfff8 != 0 {
                                return passed(verdict::PASS_OTHER_L4);
                            }
                            next = p[offset];
                            offset += 8;
                        }
                        _ => break,
                    }
                }
                (family::IPV6, next, offset)
            }
            _ => return passed(verdict::PASS_NOT_IP),
        };
        let header_len = match l4_protocol {
            protocol::TCP => 20,
            protocol::UDP => 8,
            _ => return passed(verdict::PASS_OTHER_L4),
        };
        if !has(l4_offset, header_len) {
            return malformed;
        }
        let key = ListenerKey {
            addr: daddr,
            port: be16(p, l4_offset + 2),
            family: fam,
            protocol: l4_protocol,
        };
        let (found, act) = match listeners.get(&key) {
            Some(act) => (key, *act),
            None => match listeners.get(&key.wildcard()) {
                Some(act) => (key.wildcard(), *act),
                None => return passed(verdict::PASS_NO_LISTENER),
            },
        };
        if act == action::DROP {
            dropped(found)
        } else {
            proxied(found)
        }
    }
}

#[test]
fn ipv4_tcp_and_udp_to_listeners_and_elsewhere() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    for port in [80, 443] {
        h.check_with_model(
            &format!("IPv4 TCP SYN to {port}"),
            &Packet::tcp_v4(OTHER_V4, port).build(),
            proxied(tcp4(ANY_V4, port)),
        );
    }
    h.check_with_model(
        "IPv4 TCP with payload to 443",
        &Packet::tcp_v4(OTHER_V4, 443)
            .tcp_flags(0x18)
            .payload(&[0x16; 300])
            .build(),
        proxied(tcp4(ANY_V4, 443)),
    );
    for port in [0, 22, 81, 8443, 65535] {
        h.check_with_model(
            &format!("IPv4 TCP to {port}, no listener"),
            &Packet::tcp_v4(OTHER_V4, port).build(),
            passed(verdict::PASS_NO_LISTENER),
        );
    }
    h.check_with_model(
        "IPv4 UDP to 9, the UDP drop listener",
        &Packet::udp_v4(OTHER_V4, 9).payload(b"discard me").build(),
        dropped(udp4(ANY_V4, 9)),
    );
    for port in [53, 80, 443] {
        h.check_with_model(
            &format!("IPv4 UDP to {port}: the TCP listeners do not match UDP"),
            &Packet::udp_v4(OTHER_V4, port).build(),
            passed(verdict::PASS_NO_LISTENER),
        );
    }
    h.check_with_model(
        "IPv4 TCP to 9: the UDP listener does not match TCP",
        &Packet::tcp_v4(OTHER_V4, 9).build(),
        passed(verdict::PASS_NO_LISTENER),
    );
}

#[test]
fn ipv6_tcp_and_udp_to_listeners_and_elsewhere() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    for port in [80, 443] {
        h.check_with_model(
            &format!("IPv6 TCP SYN to {port}"),
            &Packet::tcp_v6(other_v6(), port).build(),
            proxied(tcp6(ANY_V6, port)),
        );
    }
    h.check_with_model(
        "IPv6 TCP to 22, no listener",
        &Packet::tcp_v6(other_v6(), 22).build(),
        passed(verdict::PASS_NO_LISTENER),
    );
    h.check_with_model(
        "IPv6 TCP to 2001:db8::1 port 23: exact drop",
        &Packet::tcp_v6(exact_v6(), 23).build(),
        dropped(tcp6(exact_v6(), 23)),
    );
    h.check_with_model(
        "IPv6 TCP to 2001:db8::2 port 23: no listener for that address",
        &Packet::tcp_v6(other_v6(), 23).build(),
        passed(verdict::PASS_NO_LISTENER),
    );
    h.check_with_model(
        "IPv6 UDP to 9",
        &Packet::udp_v6(other_v6(), 9).payload(&[1; 64]).build(),
        dropped(udp6(ANY_V6, 9)),
    );
    h.check_with_model(
        "IPv6 UDP to 443",
        &Packet::udp_v6(other_v6(), 443).build(),
        passed(verdict::PASS_NO_LISTENER),
    );
}

#[test]
fn exact_address_listeners_win_over_wildcards() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    h.check_with_model(
        "TCP 198.18.0.1:80: the exact DROP entry beats the wildcard",
        &Packet::tcp_v4(EXACT_V4, 80).build(),
        dropped(tcp4(EXACT_V4, 80)),
    );
    h.check_with_model(
        "TCP 198.18.0.2:80: only the wildcard applies",
        &Packet::tcp_v4(OTHER_V4, 80).build(),
        proxied(tcp4(ANY_V4, 80)),
    );
    h.check_with_model(
        "TCP 198.18.0.1:23: exact drop",
        &Packet::tcp_v4(EXACT_V4, 23).build(),
        dropped(tcp4(EXACT_V4, 23)),
    );
    h.check_with_model(
        "TCP 198.18.0.2:23: nothing for that address",
        &Packet::tcp_v4(OTHER_V4, 23).build(),
        passed(verdict::PASS_NO_LISTENER),
    );
    h.check_with_model(
        "TCP 198.18.0.1:8080: exact entry without a wildcard",
        &Packet::tcp_v4(EXACT_V4, 8080).build(),
        proxied(tcp4(EXACT_V4, 8080)),
    );
    h.check_with_model(
        "TCP 198.18.0.2:8080: no wildcard for 8080",
        &Packet::tcp_v4(OTHER_V4, 8080).build(),
        passed(verdict::PASS_NO_LISTENER),
    );
    h.check_with_model(
        "UDP 198.18.0.1:23: the exact TCP entry does not match UDP",
        &Packet::udp_v4(EXACT_V4, 23).build(),
        passed(verdict::PASS_NO_LISTENER),
    );
    h.check_with_model(
        "a source address equal to a listener's does not matter",
        &Packet::tcp_v4(OTHER_V4, 23).src_v4(EXACT_V4).build(),
        passed(verdict::PASS_NO_LISTENER),
    );
}

#[test]
fn families_do_not_mix() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    // An IPv6 address whose first four bytes are 198.18.0.1 must not hit
    // the IPv4 exact entry (the key carries the family).
    let lookalike: Ipv6Addr = "c612:1::".parse().unwrap();
    assert_eq!(&lookalike.octets()[..4], &EXACT_V4);
    h.check_with_model(
        "IPv6 c612:1:: TCP 23",
        &Packet::tcp_v6(lookalike, 23).build(),
        passed(verdict::PASS_NO_LISTENER),
    );
    h.check_with_model(
        "IPv6 c612:1:: TCP 8080 (exact IPv4 only)",
        &Packet::tcp_v6(lookalike, 8080).build(),
        passed(verdict::PASS_NO_LISTENER),
    );
    h.check_with_model(
        "IPv6 c612:1:: TCP 80 takes the IPv6 wildcard, not the IPv4 exact drop",
        &Packet::tcp_v6(lookalike, 80).build(),
        proxied(tcp6(ANY_V6, 80)),
    );
    // An IPv4-mapped destination in an IPv6 packet is IPv6 on the wire.
    let mapped: Ipv6Addr = "::ffff:198.18.0.1".parse().unwrap();
    h.check_with_model(
        "IPv6 ::ffff:198.18.0.1 TCP 23",
        &Packet::tcp_v6(mapped, 23).build(),
        passed(verdict::PASS_NO_LISTENER),
    );
}

#[test]
fn vlan_tags_are_looked_through() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    h.check_with_model(
        "802.1Q TCP to 80",
        &Packet::tcp_v4(OTHER_V4, 80).vlan(ETH_P_8021Q, 10).build(),
        proxied(tcp4(ANY_V4, 80)),
    );
    h.check_with_model(
        "802.1Q TCP to 198.18.0.1:23",
        &Packet::tcp_v4(EXACT_V4, 23).vlan(ETH_P_8021Q, 4094).build(),
        dropped(tcp4(EXACT_V4, 23)),
    );
    h.check_with_model(
        "802.1ad + 802.1Q TCP to 443",
        &Packet::tcp_v4(OTHER_V4, 443)
            .vlan(ETH_P_8021AD, 100)
            .vlan(ETH_P_8021Q, 200)
            .build(),
        proxied(tcp4(ANY_V4, 443)),
    );
    h.check_with_model(
        "802.1Q + 802.1Q IPv6 UDP to 9",
        &Packet::udp_v6(other_v6(), 9)
            .vlan(ETH_P_8021Q, 1)
            .vlan(ETH_P_8021Q, 2)
            .build(),
        dropped(udp6(ANY_V6, 9)),
    );
    h.check_with_model(
        "802.1ad + 802.1Q IPv6 TCP to 22",
        &Packet::tcp_v6(other_v6(), 22)
            .vlan(ETH_P_8021AD, 1)
            .vlan(ETH_P_8021Q, 2)
            .build(),
        passed(verdict::PASS_NO_LISTENER),
    );
    h.check_with_model(
        "802.1Q ARP",
        &Packet::raw_ethernet(ETH_P_ARP, &[0; 28])
            .vlan(ETH_P_8021Q, 5)
            .build(),
        passed(verdict::PASS_NOT_IP),
    );
    // Three tags are one more than the program looks through: the third
    // TPID is "not IP", and the packet passes.
    h.check_with_model(
        "three VLAN tags: beyond the parser's limit, passed as not IP",
        &Packet::tcp_v4(EXACT_V4, 23)
            .vlan(ETH_P_8021AD, 1)
            .vlan(ETH_P_8021Q, 2)
            .vlan(ETH_P_8021Q, 3)
            .build(),
        passed(verdict::PASS_NOT_IP),
    );
}

#[test]
fn ipv4_options_are_skipped() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    // Router alert, then NOPs up to every IHL from 6 to 15.
    for ihl in 6..=15u8 {
        let mut options = vec![148, 4, 0, 0];
        options.resize((usize::from(ihl) - 5) * 4, 1);
        let packet = Packet::tcp_v4(EXACT_V4, 23).ipv4_options(&options).build();
        assert_eq!(packet[14], 0x40 | ihl);
        h.check_with_model(
            &format!("IHL {ihl} TCP to 198.18.0.1:23"),
            &packet,
            dropped(tcp4(EXACT_V4, 23)),
        );
        h.check_with_model(
            &format!("IHL {ihl} TCP to 443"),
            &Packet::tcp_v4(OTHER_V4, 443).ipv4_options(&options).build(),
            proxied(tcp4(ANY_V4, 443)),
        );
        h.check_with_model(
            &format!("IHL {ihl} UDP to 9, VLAN tagged"),
            &Packet::udp_v4(OTHER_V4, 9)
                .vlan(ETH_P_8021Q, 3)
                .ipv4_options(&options)
                .build(),
            dropped(udp4(ANY_V4, 9)),
        );
    }
}

#[test]
fn ipv4_fragments() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    h.check_with_model(
        "first fragment (offset 0, more fragments) carries the ports",
        &Packet::tcp_v4(OTHER_V4, 80).ipv4_fragment(0, true).build(),
        proxied(tcp4(ANY_V4, 80)),
    );
    h.check_with_model(
        "first fragment to an exact drop",
        &Packet::udp_v4(OTHER_V4, 9).ipv4_fragment(0, true).build(),
        dropped(udp4(ANY_V4, 9)),
    );
    for (offset, more) in [(1, true), (185, false), (0x1fff, false)] {
        // A later fragment whose payload happens to look like a header for
        // a drop listener must still not be dropped.
        h.check_with_model(
            &format!("non-first fragment, offset {offset}"),
            &Packet::udp_v4(OTHER_V4, 9)
                .ipv4_fragment(offset, more)
                .build(),
            passed(verdict::PASS_OTHER_L4),
        );
    }
}

#[test]
fn ipv6_extension_headers_are_skipped() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    let single = [
        ExtHeader::HopByHop { len: 0 },
        ExtHeader::HopByHop { len: 3 },
        ExtHeader::Routing { len: 2 },
        ExtHeader::DestOpts { len: 1 },
        ExtHeader::Fragment {
            offset: 0,
            more: true,
            id: 1,
        },
        ExtHeader::Fragment {
            offset: 0,
            more: false,
            id: 2,
        },
        ExtHeader::Ah { len: 4 },
    ];
    for ext in &single {
        h.check_with_model(
            &format!("IPv6 {ext:?} then TCP to 443"),
            &Packet::tcp_v6(other_v6(), 443).ext(ext.clone()).build(),
            proxied(tcp6(ANY_V6, 443)),
        );
        h.check_with_model(
            &format!("IPv6 {ext:?} then TCP to 2001:db8::1:23"),
            &Packet::tcp_v6(exact_v6(), 23).ext(ext.clone()).build(),
            dropped(tcp6(exact_v6(), 23)),
        );
        h.check_with_model(
            &format!("IPv6 {ext:?} then UDP to 9"),
            &Packet::udp_v6(other_v6(), 9).ext(ext.clone()).build(),
            dropped(udp6(ANY_V6, 9)),
        );
    }
    let chain = [
        ExtHeader::HopByHop { len: 0 },
        ExtHeader::DestOpts { len: 0 },
        ExtHeader::Routing { len: 2 },
        ExtHeader::Fragment {
            offset: 0,
            more: true,
            id: 3,
        },
        ExtHeader::Ah { len: 4 },
        ExtHeader::DestOpts { len: 1 },
    ];
    let mut packet = Packet::tcp_v6(other_v6(), 80);
    for ext in &chain {
        packet = packet.ext(ext.clone());
    }
    h.check_with_model(
        "IPv6 with six extension headers (the parser's limit) then TCP to 80",
        &packet.build(),
        proxied(tcp6(ANY_V6, 80)),
    );
    h.check_with_model(
        "the same, VLAN tagged twice",
        &packet
            .clone()
            .vlan(ETH_P_8021AD, 7)
            .vlan(ETH_P_8021Q, 8)
            .build(),
        proxied(tcp6(ANY_V6, 80)),
    );
    // A seventh header is past the limit: the program gives up and passes,
    // counted as "other L4" (the next header is not TCP/UDP to it).
    let seven = Packet::tcp_v6(exact_v6(), 23)
        .ext(ExtHeader::DestOpts { len: 0 })
        .ext(ExtHeader::HopByHop { len: 0 });
    let seven = chain[..5]
        .iter()
        .fold(seven, |packet, ext| packet.ext(ext.clone()));
    h.check_with_model(
        "IPv6 with seven extension headers before TCP to a drop listener: passed",
        &seven.build(),
        passed(verdict::PASS_OTHER_L4),
    );
    h.check_with_model(
        "IPv6 no-next-header",
        &Packet::tcp_v6(other_v6(), 80)
            .ext(ExtHeader::DestOpts { len: 0 })
            .raw_protocol(ipproto::NONE)
            .payload(&[0; 8])
            .build(),
        passed(verdict::PASS_OTHER_L4),
    );
}

#[test]
fn ipv6_non_first_fragments_are_other_l4() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    for (offset, more) in [(1, true), (100, false), (0x1fff, true)] {
        h.check_with_model(
            &format!("IPv6 fragment offset {offset} that looks like UDP to 9"),
            &Packet::udp_v6(other_v6(), 9)
                .ext(ExtHeader::Fragment {
                    offset,
                    more,
                    id: 9,
                })
                .build(),
            passed(verdict::PASS_OTHER_L4),
        );
        h.check_with_model(
            &format!("IPv6 hop-by-hop + fragment offset {offset}, TCP-looking"),
            &Packet::tcp_v6(exact_v6(), 23)
                .ext(ExtHeader::HopByHop { len: 0 })
                .ext(ExtHeader::Fragment {
                    offset,
                    more,
                    id: 9,
                })
                .build(),
            passed(verdict::PASS_OTHER_L4),
        );
    }
}

#[test]
fn other_l4_protocols_pass() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    h.check_with_model(
        "ICMP echo to 198.18.0.1",
        &Packet::icmp_v4(EXACT_V4).payload(&[7; 56]).build(),
        passed(verdict::PASS_OTHER_L4),
    );
    h.check_with_model(
        "ICMPv6 echo to 2001:db8::1",
        &Packet::icmp_v6(exact_v6()).payload(&[7; 56]).build(),
        passed(verdict::PASS_OTHER_L4),
    );
    for proto in [ipproto::GRE, ipproto::SCTP, 41, 255] {
        // Bytes that would read as port 23 if parsed as TCP.
        h.check_with_model(
            &format!("IPv4 protocol {proto}"),
            &Packet::tcp_v4(EXACT_V4, 80)
                .raw_protocol(proto)
                .payload(&[
                    0, 80, 0, 23, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 2, 0, 0, 0, 0, 0, 0,
                ])
                .build(),
            passed(verdict::PASS_OTHER_L4),
        );
        h.check_with_model(
            &format!("IPv6 protocol {proto}"),
            &Packet::tcp_v6(exact_v6(), 80)
                .raw_protocol(proto)
                .payload(&[0; 20])
                .build(),
            passed(verdict::PASS_OTHER_L4),
        );
    }
    h.check_with_model(
        "ICMP with VLAN tag",
        &Packet::icmp_v4(OTHER_V4).vlan(ETH_P_8021Q, 9).build(),
        passed(verdict::PASS_OTHER_L4),
    );
}

#[test]
fn non_ip_frames_pass_not_ip() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    h.check_with_model(
        "ARP request",
        &arp_request([2, 0, 0, 0, 0, 9], [198, 18, 0, 9], EXACT_V4),
        passed(verdict::PASS_NOT_IP),
    );
    h.check_with_model(
        "ARP padded to 60 bytes",
        &Packet::raw_ethernet(ETH_P_ARP, &[0; 46]).build(),
        passed(verdict::PASS_NOT_IP),
    );
    h.check_with_model(
        "LLDP",
        &Packet::raw_ethernet(ETH_P_LLDP, &[0; 46])
            .macs([2, 0, 0, 0, 0, 9], [0x01, 0x80, 0xc2, 0, 0, 0x0e])
            .build(),
        passed(verdict::PASS_NOT_IP),
    );
    h.check_with_model(
        "an 802.3 length field instead of an EtherType",
        &Packet::raw_ethernet(46, &[0; 46]).build(),
        passed(verdict::PASS_NOT_IP),
    );
    h.check_with_model(
        "just an Ethernet header",
        &Packet::raw_ethernet(0x88b5, &[]).build(),
        passed(verdict::PASS_NOT_IP),
    );
    // An IPv4 header under the IPv6 EtherType (and the reverse) is not
    // looked up as the other family.
    let v4_bytes = Packet::tcp_v4(EXACT_V4, 23).build();
    h.check_with_model(
        "an IPv4 packet under EtherType MPLS",
        &[
            &v4_bytes[..12],
            &0x8847u16.to_be_bytes()[..],
            &v4_bytes[14..],
        ]
        .concat(),
        passed(verdict::PASS_NOT_IP),
    );
}

#[test]
fn bad_ihl_and_wrong_version_are_malformed() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    for ihl in 0..5 {
        h.check_with_model(
            &format!("IPv4 IHL {ihl}"),
            &Packet::tcp_v4(EXACT_V4, 23).ihl(ihl).build(),
            passed(verdict::PASS_MALFORMED),
        );
    }
    for ihl in [6, 10, 15] {
        // The IHL claims options that the packet does not have room for.
        let packet = Packet::tcp_v4(EXACT_V4, 23).ihl(ihl).build();
        let claimed = 14 + usize::from(ihl) * 4;
        let cut = &packet[..claimed.min(packet.len()) - 1];
        h.check_with_model(
            &format!("IPv4 IHL {ihl} cut one byte before the end of its header"),
            cut,
            passed(verdict::PASS_MALFORMED),
        );
    }
    for version in [0, 5, 6, 15] {
        h.check_with_model(
            &format!("EtherType IPv4, version {version}"),
            &Packet::tcp_v4(EXACT_V4, 23).ip_version(version).build(),
            passed(verdict::PASS_MALFORMED),
        );
    }
    for version in [0, 4, 7, 15] {
        h.check_with_model(
            &format!("EtherType IPv6, version {version}"),
            &Packet::tcp_v6(exact_v6(), 23).ip_version(version).build(),
            passed(verdict::PASS_MALFORMED),
        );
    }
    // Lengths in the IP header are not trusted and not needed: a wrong
    // total length does not change the verdict.
    let mut packet = Packet::tcp_v4(OTHER_V4, 80).build();
    packet[16..18].copy_from_slice(&9000u16.to_be_bytes());
    h.check_with_model(
        "IPv4 total length larger than the packet",
        &packet,
        proxied(tcp4(ANY_V4, 80)),
    );
    // An extension header whose length points past the end of the packet.
    let mut packet = Packet::tcp_v6(other_v6(), 80)
        .ext(ExtHeader::HopByHop { len: 0 })
        .build();
    packet[54 + 1] = 200;
    h.check_with_model(
        "IPv6 hop-by-hop length past the end",
        &packet,
        passed(verdict::PASS_MALFORMED),
    );
}

/// The packets of [`truncated_packets_pass_at_every_length`], with the
/// verdict of the whole packet and whether it carries TCP/UDP.
fn truncation_cases() -> Vec<(&'static str, Packet, Expect, bool)> {
    vec![
        (
            "IPv4 TCP to 80",
            Packet::tcp_v4(OTHER_V4, 80),
            proxied(tcp4(ANY_V4, 80)),
            true,
        ),
        (
            "IPv4 TCP to 198.18.0.1:23 (drop)",
            Packet::tcp_v4(EXACT_V4, 23),
            dropped(tcp4(EXACT_V4, 23)),
            true,
        ),
        (
            "IPv4 TCP with 24 bytes of payload to 443",
            Packet::tcp_v4(OTHER_V4, 443).payload(&[0xab; 24]),
            proxied(tcp4(ANY_V4, 443)),
            true,
        ),
        (
            "IPv4 UDP to 9 (drop)",
            Packet::udp_v4(OTHER_V4, 9).payload(b"x"),
            dropped(udp4(ANY_V4, 9)),
            true,
        ),
        (
            "IPv4 IHL 15 TCP to 198.18.0.1:23 (drop)",
            Packet::tcp_v4(EXACT_V4, 23).ipv4_options(&[1; 40]),
            dropped(tcp4(EXACT_V4, 23)),
            true,
        ),
        (
            "QinQ IPv4 TCP to 198.18.0.1:80 (drop)",
            Packet::tcp_v4(EXACT_V4, 80)
                .vlan(ETH_P_8021AD, 1)
                .vlan(ETH_P_8021Q, 2),
            dropped(tcp4(EXACT_V4, 80)),
            true,
        ),
        (
            "IPv6 TCP to 2001:db8::1:23 (drop)",
            Packet::tcp_v6(exact_v6(), 23),
            dropped(tcp6(exact_v6(), 23)),
            true,
        ),
        (
            "IPv6 with HBH, routing, fragment, AH, dest-opts, UDP to 9 (drop)",
            Packet::udp_v6(other_v6(), 9)
                .ext(ExtHeader::HopByHop { len: 0 })
                .ext(ExtHeader::Routing { len: 2 })
                .ext(ExtHeader::Fragment {
                    offset: 0,
                    more: true,
                    id: 4,
                })
                .ext(ExtHeader::Ah { len: 4 })
                .ext(ExtHeader::DestOpts { len: 1 }),
            dropped(udp6(ANY_V6, 9)),
            true,
        ),
        (
            "802.1Q IPv6 TCP to 80",
            Packet::tcp_v6(other_v6(), 80).vlan(ETH_P_8021Q, 77),
            proxied(tcp6(ANY_V6, 80)),
            true,
        ),
        (
            "ICMP echo",
            Packet::icmp_v4(EXACT_V4).payload(&[1; 8]),
            passed(verdict::PASS_OTHER_L4),
            false,
        ),
        (
            "IPv4 non-first fragment",
            Packet::udp_v4(OTHER_V4, 9).ipv4_fragment(3, false),
            passed(verdict::PASS_OTHER_L4),
            false,
        ),
        (
            "IPv6 non-first fragment",
            Packet::udp_v6(other_v6(), 9).ext(ExtHeader::Fragment {
                offset: 3,
                more: false,
                id: 5,
            }),
            passed(verdict::PASS_OTHER_L4),
            false,
        ),
        (
            "ARP",
            Packet::raw_ethernet(ETH_P_ARP, &[0; 28]),
            passed(verdict::PASS_NOT_IP),
            false,
        ),
    ]
}

#[test]
fn truncated_packets_pass_at_every_length() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    for (name, packet, whole, carries_ports) in truncation_cases() {
        let built = packet.build_with_layout();
        let bytes = &built.bytes;
        for len in 0..=bytes.len() {
            let prefix = &bytes[..len];
            let expect = if len < 14 {
                // BPF_PROG_TEST_RUN wants at least an Ethernet header.
                Expect::Refused
            } else if len == bytes.len() {
                whole
            } else if carries_ports && len < built.l4_end {
                // Any cut before the end of the TCP/UDP header: passed
                // untouched and counted as malformed, never dropped.
                passed(verdict::PASS_MALFORMED)
            } else if carries_ports {
                // Cut inside the payload: the headers decide, as whole.
                whole
            } else if built.l3_offset == built.l4_offset {
                // Not IP: the EtherType alone decides.
                passed(verdict::PASS_NOT_IP)
            } else {
                // Other L4: malformed until the IP headers are complete.
                h.model(prefix)
            };
            if let Expect::Verdict { xdp, .. } = expect
                && len < built.l4_end
            {
                assert_eq!(xdp, XDP_PASS, "{name} cut to {len}: must pass");
            }
            h.check_with_model(&format!("{name} cut to {len} bytes"), prefix, expect);
        }
        // Bytes after the headers (payload, padding) do not change anything.
        if carries_ports {
            let mut padded = bytes.clone();
            padded.extend_from_slice(&[0; 18]);
            h.check_with_model(&format!("{name} with trailing padding"), &padded, whole);
        }
    }
}

#[test]
fn random_garbage_is_passed_and_matches_the_model() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    let mut rng = Prng::new(0x5eed_0f1d);
    // Pure noise: whatever it looks like, nothing is dropped.
    for round in 0..300 {
        let len = 14 + rng.below(200) as usize;
        let packet = rng.bytes(len);
        let expect = h.model(&packet);
        assert!(
            matches!(expect, Expect::Verdict { xdp: XDP_PASS, .. }),
            "seeded noise #{round} would be dropped: {packet:02x?}"
        );
        h.check(&format!("noise #{round}"), &packet, expect);
    }
    // Noise behind a plausible EtherType (and VLAN tags), to get past the
    // Ethernet layer: still all passed.
    let ether_types = [ETH_P_IPV4, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD];
    for round in 0..300 {
        let len = 14 + rng.below(120) as usize;
        let mut packet = rng.bytes(len);
        packet[12..14].copy_from_slice(&ether_types[rng.below(4) as usize].to_be_bytes());
        let expect = h.model(&packet);
        assert!(
            !matches!(expect, Expect::Verdict { xdp: XDP_DROP, .. }),
            "seeded noise #{round} would be dropped: {packet:02x?}"
        );
        h.check(&format!("typed noise #{round}"), &packet, expect);
    }
    // Valid packets with a few random bytes flipped and a random length:
    // whatever the mutation makes of them, program and model agree.
    let templates: Vec<Vec<u8>> = truncation_cases()
        .into_iter()
        .map(|(_, packet, _, _)| packet.build())
        .collect();
    let mut outcomes = BTreeMap::new();
    for round in 0..600 {
        let mut packet = templates[rng.below(templates.len() as u64) as usize].clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(packet.len() as u64) as usize;
            packet[at] = rng.next_u64() as u8;
        }
        let len = 14 + rng.below(packet.len() as u64 - 13) as usize;
        packet.truncate(len);
        let expect = h.model(&packet);
        if let Expect::Verdict { reason, .. } = expect {
            *outcomes.entry(reason_name(reason)).or_insert(0) += 1;
        }
        h.check(&format!("mutated #{round}"), &packet, expect);
    }
    eprintln!("mutated packets by verdict: {outcomes:?}");
    assert!(outcomes.len() >= 4, "mutations reach several verdicts");
    assert!(h.checked >= 1200);
}

#[test]
fn listener_changes_take_effect_and_reused_slots_start_at_zero() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    let http = tcp4(ANY_V4, 80);
    let https = tcp4(ANY_V4, 443);
    h.check(
        "TCP 80 before",
        &Packet::tcp_v4(OTHER_V4, 80).build(),
        proxied(http),
    );
    h.check(
        "TCP 443 before",
        &Packet::tcp_v4(OTHER_V4, 443).build(),
        proxied(https),
    );
    let (http_id, https_id) = (h.id(&http), h.id(&https));

    // 80 becomes a drop, 443 goes away, UDP 5353 arrives.
    let mdns = udp4(ANY_V4, 5353);
    let mut next = standard_listeners();
    next.insert(http, action::DROP);
    next.remove(&https);
    next.insert(mdns, action::PASS_TO_PROXY);
    h.sync(next);
    assert_eq!(h.id(&http), http_id, "a listener that stays keeps its id");
    assert_eq!(
        h.id(&mdns),
        https_id,
        "the new listener reuses the lowest free id"
    );
    // The reused slot was zeroed: the check below expects exactly one
    // packet there, and counters carried over elsewhere.
    h.listener_stats[https_id as usize] = TrafficCounters::default();
    h.check(
        "TCP 80 after: dropped",
        &Packet::tcp_v4(OTHER_V4, 80).build(),
        dropped(http),
    );
    h.check(
        "TCP 443 after: no listener",
        &Packet::tcp_v4(OTHER_V4, 443).build(),
        passed(verdict::PASS_NO_LISTENER),
    );
    h.check(
        "UDP 5353 after: proxied in the reused slot",
        &Packet::udp_v4(OTHER_V4, 5353).build(),
        proxied(mdns),
    );
    let stats = h.read(map_names::LISTENER_STATS);
    assert_eq!(
        stats[http_id as usize].packets, 2,
        "the kept listener's counters carried over"
    );
    assert_eq!(stats[https_id as usize].packets, 1);

    // Emptying the map: everything is "no listener".
    h.sync(BTreeMap::new());
    h.check(
        "TCP 80 with no listeners",
        &Packet::tcp_v4(EXACT_V4, 80).build(),
        passed(verdict::PASS_NO_LISTENER),
    );
}

#[test]
fn source_ranges_drop_denied_sources_per_listener() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    let (http4, https4) = (tcp4(ANY_V4, 80), tcp4(ANY_V4, 443));
    let (http6, https6) = (tcp6(ANY_V6, 80), tcp6(ANY_V6, 443));
    // Deny ranges on port 80 only (both families); nothing on 443.
    h.set_source_ranges(&[
        (http4, &["198.18.7.0/24", "2001:db8:7::/48"], &[]),
        (http6, &["198.18.7.0/24", "2001:db8:7::/48"], &[]),
    ]);
    let from4 = |src: [u8; 4], port| Packet::tcp_v4(OTHER_V4, port).src_v4(src).build();
    let from6 = |src: &str, port| {
        Packet::tcp_v6(other_v6(), port)
            .src_v6(src.parse().unwrap())
            .build()
    };
    h.check(
        "IPv4 denied source to 80",
        &from4([198, 18, 7, 9], 80),
        denied(http4),
    );
    h.check(
        "IPv4 denied source, payload, to 80",
        &Packet::tcp_v4(OTHER_V4, 80)
            .src_v4([198, 18, 7, 200])
            .tcp_flags(0x18)
            .payload(&[b'G'; 100])
            .build(),
        denied(http4),
    );
    h.check(
        "IPv4 allowed source to 80",
        &from4([198, 18, 8, 9], 80),
        proxied(http4),
    );
    h.check(
        "IPv4 denied source to 443: another listener's ranges do not apply",
        &from4([198, 18, 7, 9], 443),
        proxied(https4),
    );
    h.check(
        "IPv4 denied source to 22: no listener, nothing to deny",
        &from4([198, 18, 7, 9], 22),
        passed(verdict::PASS_NO_LISTENER),
    );
    h.check(
        "IPv4 denied source to the drop listener: the listener's drop first",
        &Packet::tcp_v4(EXACT_V4, 23).src_v4([198, 18, 7, 9]).build(),
        dropped(tcp4(EXACT_V4, 23)),
    );
    h.check(
        "IPv6 denied source to 80",
        &from6("2001:db8:7::1", 80),
        denied(http6),
    );
    h.check(
        "IPv6 allowed source to 80",
        &from6("2001:db8:8::1", 80),
        proxied(http6),
    );
    h.check(
        "IPv6 denied source to 443",
        &from6("2001:db8:7::1", 443),
        proxied(https6),
    );
    h.check(
        "VLAN-tagged IPv4 denied source (the general parser)",
        &Packet::tcp_v4(OTHER_V4, 80)
            .vlan(ETH_P_8021Q, 5)
            .src_v4([198, 18, 7, 1])
            .build(),
        denied(http4),
    );
    h.check(
        "IPv6 with extension headers, denied source",
        &Packet::tcp_v6(other_v6(), 80)
            .ext(ExtHeader::HopByHop { len: 0 })
            .src_v6("2001:db8:7::5".parse().unwrap())
            .build(),
        denied(http6),
    );
    // Removed: served again, and the counters stay where they were.
    h.set_source_ranges(&[]);
    h.check(
        "IPv4 formerly denied source",
        &from4([198, 18, 7, 9], 80),
        proxied(http4),
    );
    h.check(
        "IPv6 formerly denied source",
        &from6("2001:db8:7::1", 80),
        proxied(http6),
    );
}

#[test]
fn source_ranges_longest_prefix_and_allow_lists() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    let http4 = tcp4(ANY_V4, 80);
    let http6 = tcp6(ANY_V6, 80);
    let from4 = |src: [u8; 4]| Packet::tcp_v4(OTHER_V4, 80).src_v4(src).build();
    let from6 = |src: &str| {
        Packet::tcp_v6(other_v6(), 80)
            .src_v6(src.parse().unwrap())
            .build()
    };
    // Allow 198.18.0.0/15 and 2001:db8::/32 but deny 198.18.5.0/24 and one
    // address; an allowed /28 inside the denied /24 stays denied.
    let deny: &[&str] = &["198.18.5.0/24", "198.19.0.77"];
    let allow: &[&str] = &["198.18.0.0/15", "198.18.5.16/28", "2001:db8::/32"];
    h.set_source_ranges(&[(http4, deny, allow), (http6, deny, allow)]);
    h.check("allowed", &from4([198, 18, 0, 2]), proxied(http4));
    h.check(
        "allowed, other half of the /15",
        &from4([198, 19, 0, 1]),
        proxied(http4),
    );
    h.check(
        "the denied address inside the allowed /15",
        &from4([198, 19, 0, 77]),
        denied(http4),
    );
    h.check(
        "the denied /24 inside the allowed /15",
        &from4([198, 18, 5, 1]),
        denied(http4),
    );
    h.check(
        "an allowed /28 inside the denied /24: the deny wins",
        &from4([198, 18, 5, 17]),
        denied(http4),
    );
    h.check(
        "outside the allow list",
        &from4([203, 0, 113, 1]),
        denied(http4),
    );
    h.check(
        "IPv6 inside the allow list",
        &from6("2001:db8:1::1"),
        proxied(http6),
    );
    h.check(
        "IPv6 outside the allow list",
        &from6("2001:db9::1"),
        denied(http6),
    );
    // Longest prefix between deny ranges: a /16 denied, nothing allowed
    // more specifically: every address of it is dropped, its neighbours not.
    h.set_source_ranges(&[(http4, &["198.18.0.0/16", "198.18.3.0/24"], &[])]);
    h.check(
        "in the /24 and the /16",
        &from4([198, 18, 3, 3]),
        denied(http4),
    );
    h.check("in the /16 only", &from4([198, 18, 200, 3]), denied(http4));
    h.check("next to the /16", &from4([198, 19, 0, 3]), proxied(http4));
    h.check(
        "IPv6 on a listener with IPv4 ranges only",
        &from6("2001:db8::1"),
        proxied(http6),
    );
}

#[test]
fn fast_path_timing_with_repeat() {
    let Some(mut h) = Harness::standard() else {
        return;
    };
    const REPEAT: u32 = 1000;
    let cases = [
        (
            "IPv4 TCP SYN to 80 (pass-to-proxy)",
            Packet::tcp_v4(OTHER_V4, 80).build(),
            proxied(tcp4(ANY_V4, 80)),
        ),
        (
            "IPv4 TCP SYN to 198.18.0.1:23 (drop)",
            Packet::tcp_v4(EXACT_V4, 23).build(),
            dropped(tcp4(EXACT_V4, 23)),
        ),
        (
            "IPv4 TCP SYN to 22 (two lookups, no listener)",
            Packet::tcp_v4(OTHER_V4, 22).build(),
            passed(verdict::PASS_NO_LISTENER),
        ),
        (
            "QinQ IPv6 + 4 extension headers, TCP to 443",
            Packet::tcp_v6(other_v6(), 443)
                .vlan(ETH_P_8021AD, 1)
                .vlan(ETH_P_8021Q, 2)
                .ext(ExtHeader::HopByHop { len: 0 })
                .ext(ExtHeader::Routing { len: 2 })
                .ext(ExtHeader::Fragment {
                    offset: 0,
                    more: false,
                    id: 1,
                })
                .ext(ExtHeader::DestOpts { len: 0 })
                .build(),
            proxied(tcp6(ANY_V6, 443)),
        ),
        (
            "ARP (pass-not-ip)",
            arp_request([2, 0, 0, 0, 0, 9], [198, 18, 0, 9], EXACT_V4),
            passed(verdict::PASS_NOT_IP),
        ),
    ];
    for (name, packet, expect) in cases {
        let Expect::Verdict {
            xdp,
            reason,
            listener,
        } = expect
        else {
            unreachable!()
        };
        let mut out = vec![0u8; packet.len() + 256];
        let result = h
            .test_run(&packet, &mut out, REPEAT)
            .expect("BPF_PROG_TEST_RUN with repeat");
        assert_eq!(result.return_value, xdp, "{name}");
        assert_ne!(result.return_value, XDP_ABORTED, "{name}");
        let listener = listener.map(|key| h.id(&key));
        h.expect_deltas(
            &format!("{name} x{REPEAT}"),
            Some(reason),
            listener,
            u64::from(REPEAT),
            packet.len() as u64,
        );
        // The kernel reports the mean time of one run.
        eprintln!(
            "fast path: {name}: {} ns/packet (mean of {REPEAT} runs, BPF_PROG_TEST_RUN)",
            result.duration.as_nanos()
        );
    }
    // The same listener with 1,000 deny ranges (a /32 each) on it.
    let http4 = tcp4(ANY_V4, 80);
    let ranges: Vec<String> = (0..1000u32)
        .map(|i| format!("198.18.{}.{}/32", 16 + i / 250, i % 250))
        .collect();
    let ranges: Vec<&str> = ranges.iter().map(String::as_str).collect();
    h.set_source_ranges(&[(http4, &ranges, &[])]);
    for (name, src, expect) in [
        (
            "IPv4 TCP SYN to 80, 1,000 ranges, allowed",
            [198, 18, 0, 2],
            proxied(http4),
        ),
        (
            "IPv4 TCP SYN to 80, 1,000 ranges, denied",
            [198, 18, 17, 7],
            denied(http4),
        ),
    ] {
        let Expect::Verdict { xdp, reason, .. } = expect else {
            unreachable!()
        };
        let packet = Packet::tcp_v4(OTHER_V4, 80).src_v4(src).build();
        let mut out = vec![0u8; packet.len() + 256];
        let result = h
            .test_run(&packet, &mut out, REPEAT)
            .expect("BPF_PROG_TEST_RUN with repeat");
        assert_eq!(result.return_value, xdp, "{name}");
        h.expect_deltas(
            &format!("{name} x{REPEAT}"),
            Some(reason),
            Some(h.id(&http4)),
            u64::from(REPEAT),
            packet.len() as u64,
        );
        eprintln!(
            "fast path: {name}: {} ns/packet (mean of {REPEAT} runs, BPF_PROG_TEST_RUN)",
            result.duration.as_nanos()
        );
    }
}
