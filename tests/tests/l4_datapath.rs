//! Kernel tests of the L4 data path with `BPF_PROG_TEST_RUN`: crafted
//! packets to a service, the translated packet parsed back (addresses,
//! ports, MACs, checksums recomputed from scratch), replies translated
//! back, the connection table (same flow, same backend; FIN/RST end it),
//! and what is passed untouched.
//!
//! `bpf_fib_lookup` inside `BPF_PROG_TEST_RUN` looks in the caller's network
//! namespace, so every test runs on a thread inside a namespace of its own
//! with an interface `198.18.50.1/24` (one end of a veth pair), routes to the backends
//! (198.19.0.0/16) and to the clients (198.18.0.0/24) through a gateway
//! 198.18.50.2 with a permanent neighbour entry (IPv6 alike: 2001:db8:5::1/64,
//! routes to 2001:db8:50::/64 and 2001:db8::/64), and forwarding on: there the
//! FIB answers, the program redirects to that interface (`XDP_REDIRECT`, which
//! TEST_RUN reports without sending) and the MACs come from the neighbour
//! entry. Backends in 198.18.201.0/24 have a route but no neighbour (the
//! program drops their packets untouched and reports the next hop,
//! `l4-no-neigh`) and those in 198.18.200.0/24 no route at all (passed
//! untouched, `l4-no-route`).
//!
//! Needs root; skips otherwise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use aya::programs::{TestRun, TestRunOptions};
use ingress_common::{L4NeighbourMiss, TrafficCounters, map_names, protocol, verdict};
use xdp_ingress::bpf::{
    edge::{EdgeOptions, XdpEdge},
    l4_maps::L4Maps,
    l4_plan::{DesiredService, L4Settings, NatMode, backend_addr, plan_l4, words_ip},
};
use xdp_ingress_lab::{self as lab, Netns};
use xdp_ingress_tests::packets::{
    ETH_P_8021Q, Packet, ParsedFrame, parse_frame, tcp_flags, without_udp_checksum,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

/// The service address and port clients use.
const VIP: [u8; 4] = [198, 18, 0, 1];
const VIP_PORT: u16 = 9000;
/// The client (the packet builder's default source).
const CLIENT: [u8; 4] = [198, 18, 0, 100];
/// The edge's address on the dummy: the full-NAT source.
const EDGE_SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 50, 1);
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
const TABLE_SIZE: u32 = 251;
const BACKENDS: [&str; 3] = ["198.19.50.1:8080", "198.19.50.2:8080", "198.19.50.3:8080"];

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// The backends of `backends` but the one at `removed`.
fn without<'a>(backends: &[&'a str], removed: IpAddr) -> Vec<&'a str> {
    backends
        .iter()
        .copied()
        .filter(|b| addr(b).ip() != removed)
        .collect()
}

fn vip() -> IpAddr {
    IpAddr::from(VIP)
}

fn service(l4_protocol: u8, backends: &[&str]) -> DesiredService {
    DesiredService {
        protocol: l4_protocol,
        port: VIP_PORT,
        addrs: vec![vip()],
        backends: backends.iter().map(|b| addr(b)).collect(),
    }
}

/// The program, its L4 maps, and the namespace's dummy interface.
struct Rig {
    edge: XdpEdge,
    maps: L4Maps,
    settings: L4Settings,
    dummy_ifindex: u32,
    dummy_mac: [u8; 6],
    verdicts: Vec<TrafficCounters>,
}

impl Rig {
    fn new(nat: NatMode, dummy_ifindex: u32, dummy_mac: [u8; 6]) -> Self {
        let mut edge = XdpEdge::load_with(
            None,
            &EdgeOptions {
                maglev_table_size: TABLE_SIZE,
            },
        )
        .expect("loading the XDP program");
        let mut maps = edge.take_l4_maps().expect("the L4 maps");
        assert_eq!(maps.table_size(), TABLE_SIZE);
        let settings = L4Settings {
            nat,
            table_size: TABLE_SIZE,
            ports: (61_000, 65_535),
        };
        maps.configure_ports(settings.ports).expect("ports");
        let verdicts = edge.counters(map_names::VERDICT_STATS).unwrap();
        Self {
            edge,
            maps,
            settings,
            dummy_ifindex,
            dummy_mac,
            verdicts,
        }
    }

    fn set(&mut self, services: &[DesiredService]) {
        let present = self.maps.present().expect("reading the L4 maps");
        let plan = plan_l4(&present, services, &self.settings).expect("planning");
        self.maps.apply(&plan).expect("writing the L4 maps");
    }

    /// Runs `packet` once: (XDP action, the packet as it came out).
    fn run(&mut self, packet: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; packet.len() + 256];
        let result = self
            .edge
            .program()
            .unwrap()
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                ..TestRunOptions::new()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }

    /// The verdict reasons counted since the last call, by name.
    fn reasons(&mut self) -> Vec<(&'static str, u64)> {
        let now = self.edge.counters(map_names::VERDICT_STATS).unwrap();
        let delta = now
            .iter()
            .zip(&self.verdicts)
            .enumerate()
            .filter(|(_, (n, b))| n.packets != b.packets)
            .map(|(i, (n, b))| (verdict::NAMES[i], n.packets - b.packets))
            .collect();
        self.verdicts = now;
        delta
    }

    /// Runs a packet that must be translated and redirected to the dummy;
    /// returns it parsed, its checksums and MACs checked.
    fn forwarded(&mut self, what: &str, packet: &[u8]) -> ParsedFrame {
        let (action, out) = self.run(packet);
        assert_eq!(
            action,
            XDP_REDIRECT,
            "{what}: redirected (reasons {:?})",
            self.reasons()
        );
        let parsed = parse_frame(&out).unwrap_or_else(|| panic!("{what}: unparsable {out:02x?}"));
        assert!(parsed.ip_checksum_ok, "{what}: IP checksum {parsed:?}");
        assert!(parsed.l4_checksum_ok, "{what}: L4 checksum {parsed:?}");
        assert_eq!(parsed.dst_mac, GATEWAY_MAC, "{what}: next hop MAC");
        assert_eq!(parsed.src_mac, self.dummy_mac, "{what}: egress MAC");
        assert_eq!(out.len(), packet.len(), "{what}: same length");
        parsed
    }

    fn flow_count(&self) -> usize {
        self.maps.flows().unwrap().len()
    }

    fn reverse_count(&self) -> usize {
        self.maps.reverse_nat().unwrap().len()
    }

    fn cached_count(&self) -> usize {
        self.maps.cached_flows().unwrap()
    }
}

/// Runs `test` on a thread inside a fresh namespace with the dummy, routes
/// and neighbour entries (see the module documentation). `None` when not root.
fn in_lab(nat: NatMode, test: impl FnOnce(&mut Rig) + Send) -> Option<()> {
    if !lab::require_root() {
        return None;
    }
    let ns = Netns::new("l4dp").expect("namespace");
    // A veth pair inside the namespace stands for the egress NIC (this
    // kernel has no dummy driver); both ends up, so the link has carrier.
    ns.ip(&[
        "link", "add", "l4t0", "type", "veth", "peer", "name", "l4t1",
    ])
    .unwrap();
    ns.add_addrs("l4t0", &["198.18.50.1/24", "2001:db8:5::1/64"])
        .unwrap();
    ns.ip(&["link", "set", "l4t1", "up"]).unwrap();
    ns.ip(&["link", "set", "l4t0", "up"]).unwrap();
    ns.ip(&[
        "neigh",
        "replace",
        "198.18.50.2",
        "lladdr",
        "02:00:00:00:00:aa",
        "dev",
        "l4t0",
        "nud",
        "permanent",
    ])
    .unwrap();
    ns.add_route("198.19.0.0/16", "198.18.50.2").unwrap();
    ns.add_route("198.18.0.0/24", "198.18.50.2").unwrap();
    ns.add_route("198.18.201.0/24", "198.18.50.3").unwrap();
    ns.ip(&[
        "-6",
        "neigh",
        "replace",
        "2001:db8:5::2",
        "lladdr",
        "02:00:00:00:00:aa",
        "dev",
        "l4t0",
        "nud",
        "permanent",
    ])
    .unwrap();
    ns.add_route("2001:db8:50::/64", "2001:db8:5::2").unwrap();
    ns.add_route("2001:db8::/64", "2001:db8:5::2").unwrap();
    ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
    ns.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
    let link = ns.link("l4t0").unwrap();
    let ifindex = link["ifindex"].as_u64().unwrap() as u32;
    let mac: Vec<u8> = link["address"]
        .as_str()
        .unwrap()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    let mac: [u8; 6] = mac.try_into().unwrap();
    ns.enter(move || {
        let mut rig = Rig::new(nat, ifindex, mac);
        test(&mut rig);
    })
    .expect("entering the namespace");
    Some(())
}

fn syn(sport: u16) -> Packet {
    Packet::tcp_v4(VIP, VIP_PORT).sport(sport)
}

/// A backend's reply to the translated packet `to`: addresses and ports swapped.
fn reply_to(to: &ParsedFrame, flags: u8) -> Vec<u8> {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (to.dst, to.src) else {
        panic!("IPv4 expected");
    };
    let packet = if to.protocol == protocol::TCP {
        Packet::tcp_v4(dst.octets(), to.sport).tcp_flags(flags)
    } else {
        Packet::udp_v4(dst.octets(), to.sport)
    };
    packet
        .src_v4(src.octets())
        .sport(to.dport)
        .payload(b"reply")
        .build()
}

#[test]
fn tcp_full_nat_translates_both_ways_and_keeps_the_backend() {
    in_lab(NatMode::Full, |rig| {
        rig.set(&[service(protocol::TCP, &BACKENDS)]);
        let out = rig.forwarded("SYN", &syn(40_000).payload(b"hello").build());
        assert_eq!(out.src, IpAddr::V4(EDGE_SRC), "full NAT source");
        assert!((61_000..=65_535).contains(&out.sport), "{}", out.sport);
        assert!(BACKENDS.contains(&SocketAddr::new(out.dst, out.dport).to_string().as_str()));
        assert_eq!(out.tcp_flags, tcp_flags::SYN);
        assert_eq!(out.payload, b"hello");
        assert_eq!(rig.reasons(), vec![("l4-forward", 1)]);
        assert_eq!((rig.flow_count(), rig.reverse_count()), (1, 1));

        // The same flow keeps its backend and its source port.
        let again = rig.forwarded(
            "ACK",
            &syn(40_000)
                .tcp_flags(tcp_flags::ACK)
                .payload(b"more")
                .build(),
        );
        assert_eq!((again.dst, again.dport), (out.dst, out.dport));
        assert_eq!((again.src, again.sport), (out.src, out.sport));
        assert_eq!(rig.flow_count(), 1);

        // The reply comes back from the service address to the client.
        let back = rig.forwarded("SYN-ACK", &reply_to(&out, tcp_flags::SYN | tcp_flags::ACK));
        assert_eq!(back.src, vip());
        assert_eq!(back.sport, VIP_PORT);
        assert_eq!(back.dst, IpAddr::from(CLIENT));
        assert_eq!(back.dport, 40_000);
        assert_eq!(back.payload, b"reply");
        assert_eq!(rig.reasons(), vec![("l4-forward", 1), ("l4-reply", 1)]);

        // Counters: per service and per backend, both directions, one new flow.
        let services = rig.maps.service_counters().unwrap();
        assert_eq!(services[0].packets, 3);
        assert_eq!(services[0].new_flows, 1);
        let backends = rig.maps.backend_counters().unwrap();
        let total: u64 = backends.iter().map(|c| c.packets).sum();
        let flows: u64 = backends.iter().map(|c| c.new_flows).sum();
        assert_eq!((total, flows), (3, 1));
    });
}

#[test]
fn many_flows_spread_over_the_backends_and_get_distinct_ports() {
    in_lab(NatMode::Full, |rig| {
        rig.set(&[service(protocol::TCP, &BACKENDS)]);
        let mut per_backend = std::collections::BTreeMap::new();
        let mut ports = std::collections::BTreeSet::new();
        const FLOWS: u16 = 600;
        for i in 0..FLOWS {
            let out = rig.forwarded("SYN", &syn(20_000 + i).build());
            *per_backend.entry(out.dst).or_insert(0u32) += 1;
            ports.insert(out.sport);
        }
        assert_eq!(
            ports.len(),
            FLOWS as usize,
            "every flow its own source port"
        );
        assert_eq!(per_backend.len(), 3, "{per_backend:?}");
        for (backend, count) in &per_backend {
            let share = f64::from(*count) / f64::from(FLOWS);
            assert!(
                (0.25..=0.42).contains(&share),
                "{backend} got {count} of {FLOWS}: {per_backend:?}"
            );
        }
        assert_eq!(rig.flow_count(), FLOWS as usize);
    });
}

#[test]
fn udp_with_and_without_checksum() {
    in_lab(NatMode::Full, |rig| {
        rig.set(&[service(protocol::UDP, &BACKENDS)]);
        let datagram = Packet::udp_v4(VIP, VIP_PORT)
            .sport(5353)
            .payload(b"question");
        let out = rig.forwarded("UDP", &datagram.build());
        assert_ne!(out.udp_checksum, 0);
        assert_eq!(out.payload, b"question");
        let back = rig.forwarded("UDP reply", &reply_to(&out, 0));
        assert_eq!((back.src, back.sport), (vip(), VIP_PORT));
        assert_eq!((back.dst, back.dport), (IpAddr::from(CLIENT), 5353));

        // A zero checksum ("none" over IPv4) stays zero both ways.
        let bare = rig.forwarded(
            "UDP without checksum",
            &without_udp_checksum(datagram.build()),
        );
        assert_eq!(bare.udp_checksum, 0);
        assert_eq!((bare.dst, bare.sport), (out.dst, out.sport));
        let back = rig.forwarded(
            "UDP reply without checksum",
            &without_udp_checksum(reply_to(&out, 0)),
        );
        assert_eq!(back.udp_checksum, 0);
        assert_eq!(back.dst, IpAddr::from(CLIENT));
    });
}

#[test]
fn rst_and_the_last_ack_after_both_fins_end_the_flow() {
    in_lab(NatMode::Full, |rig| {
        rig.set(&[service(protocol::TCP, &BACKENDS)]);
        // RST from the client ends the flow at once.
        let first = rig.forwarded("SYN", &syn(41_000).build());
        assert_eq!((rig.flow_count(), rig.reverse_count()), (1, 1));
        rig.forwarded("RST", &syn(41_000).tcp_flags(tcp_flags::RST).build());
        assert_eq!((rig.flow_count(), rig.reverse_count()), (0, 0));

        // RST from the backend too.
        let out = rig.forwarded("SYN", &syn(41_001).build());
        rig.forwarded("RST back", &reply_to(&out, tcp_flags::RST));
        assert_eq!((rig.flow_count(), rig.reverse_count()), (0, 0));

        // FIN from the client, FIN from the backend, the last ACK: gone.
        let out = rig.forwarded("SYN", &syn(41_002).build());
        let ack = tcp_flags::ACK;
        rig.forwarded("FIN", &syn(41_002).tcp_flags(tcp_flags::FIN | ack).build());
        assert_eq!(rig.flow_count(), 1, "one FIN keeps the flow");
        rig.forwarded("ACK of FIN", &reply_to(&out, ack));
        assert_eq!(rig.flow_count(), 1);
        rig.forwarded("FIN back", &reply_to(&out, tcp_flags::FIN | ack));
        assert_eq!(rig.flow_count(), 1);
        let last = rig.forwarded("last ACK", &syn(41_002).tcp_flags(ack).build());
        assert_eq!((last.dst, last.sport), (out.dst, out.sport));
        assert_eq!((rig.flow_count(), rig.reverse_count()), (0, 0));

        // The backend closing first ends it at its last ACK.
        let out = rig.forwarded("SYN", &syn(41_003).build());
        rig.forwarded("FIN back", &reply_to(&out, tcp_flags::FIN | ack));
        rig.forwarded("FIN", &syn(41_003).tcp_flags(tcp_flags::FIN | ack).build());
        assert_eq!(rig.flow_count(), 1);
        rig.forwarded("last ACK back", &reply_to(&out, ack));
        assert_eq!((rig.flow_count(), rig.reverse_count()), (0, 0));
        let _ = first;
    });
}

/// Keeps the calling thread on CPU 0, so every `BPF_PROG_TEST_RUN` uses
/// the same CPU's flow cache and the cached copies can be counted exactly.
fn stay_on_cpu0() {
    // SAFETY: a zeroed `cpu_set_t` is a valid empty set; the calls only
    // read and write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(
            libc::sched_setaffinity(0, size, &set),
            0,
            "pinning to CPU 0"
        );
    }
}

#[test]
fn the_flow_cache_translates_alike_and_forgets_flows_at_fin_and_rst() {
    in_lab(NatMode::Full, |rig| {
        stay_on_cpu0();
        rig.set(&[service(protocol::TCP, &BACKENDS)]);
        let ack = tcp_flags::ACK;
        let out = rig.forwarded("SYN", &syn(42_500).build());
        assert_eq!(rig.cached_count(), 0, "a new flow is not cached yet");
        // The first ACK comes from the flow table and fills this CPU's
        // cache, the next ones come from the cache: all translated alike.
        let mut forward = Vec::new();
        let mut back = Vec::new();
        for i in 0..3 {
            forward.push(rig.forwarded("ACK", &syn(42_500).tcp_flags(ack).build()));
            back.push(rig.forwarded("ACK back", &reply_to(&out, ack)));
            assert_eq!(rig.cached_count(), 2, "round {i}: both directions cached");
        }
        for (f, b) in forward.iter().zip(&back) {
            assert_eq!(
                (f.src, f.sport, f.dst, f.dport),
                (out.src, out.sport, out.dst, out.dport)
            );
            assert_eq!((b.src, b.sport), (vip(), VIP_PORT));
            assert_eq!((b.dst, b.dport), (IpAddr::from(CLIENT), 42_500));
        }
        assert_eq!(rig.reasons(), vec![("l4-forward", 4), ("l4-reply", 3)]);
        let services = rig.maps.service_counters().unwrap();
        assert_eq!((services[0].packets, services[0].new_flows), (7, 1));

        // A FIN clears both directions, and a flow with a FIN is not
        // cached again: the flow table keeps track of the close.
        rig.forwarded("FIN", &syn(42_500).tcp_flags(tcp_flags::FIN | ack).build());
        assert_eq!(rig.cached_count(), 0);
        rig.forwarded("ACK of FIN", &reply_to(&out, ack));
        rig.forwarded("ACK", &syn(42_500).tcp_flags(ack).build());
        assert_eq!(rig.cached_count(), 0);
        rig.forwarded("FIN back", &reply_to(&out, tcp_flags::FIN | ack));
        rig.forwarded("last ACK", &syn(42_500).tcp_flags(ack).build());
        assert_eq!((rig.flow_count(), rig.reverse_count()), (0, 0));

        // An RST on a cached flow ends it and clears the cache.
        let out = rig.forwarded("SYN", &syn(42_501).build());
        rig.forwarded("ACK", &syn(42_501).tcp_flags(ack).build());
        rig.forwarded("ACK back", &reply_to(&out, ack));
        assert_eq!(rig.cached_count(), 2);
        rig.forwarded("RST", &syn(42_501).tcp_flags(tcp_flags::RST).build());
        assert_eq!(rig.cached_count(), 0);
        assert_eq!((rig.flow_count(), rig.reverse_count()), (0, 0));
        // A packet of the ended flow is a new flow again, not a cached one.
        rig.forwarded("SYN again", &syn(42_501).build());
        assert_eq!(rig.reasons().iter().map(|r| r.1).sum::<u64>(), 10);
        let services = rig.maps.service_counters().unwrap();
        assert_eq!(services[0].new_flows, 3);
    });
}

/// A backend's IPv6 reply to the translated packet `to`: addresses and
/// ports swapped.
fn reply6_to(to: &ParsedFrame, flags: u8) -> Vec<u8> {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (to.dst, to.src) else {
        panic!("IPv6 expected");
    };
    Packet::tcp_v6(dst, to.sport)
        .src_v6(src)
        .sport(to.dport)
        .tcp_flags(flags)
        .payload(b"reply")
        .build()
}

#[test]
fn the_ipv6_flow_cache_translates_alike_and_forgets_flows_at_fin_rst_and_removal() {
    in_lab(NatMode::Full, |rig| {
        stay_on_cpu0();
        let service6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        let backends6 = ["[2001:db8:50::1]:8080", "[2001:db8:50::2]:8080"];
        let service = |backends: &[&str]| DesiredService {
            protocol: protocol::TCP,
            port: VIP_PORT,
            addrs: vec![IpAddr::V6(service6)],
            backends: backends.iter().map(|b| addr(b)).collect(),
        };
        rig.set(&[service(&backends6)]);
        let client = |sport: u16, flags: u8| {
            Packet::tcp_v6(service6, VIP_PORT)
                .sport(sport)
                .tcp_flags(flags)
                .payload(b"v6")
                .build()
        };
        let ack = tcp_flags::ACK;
        let out = rig.forwarded("IPv6 SYN", &client(44_000, tcp_flags::SYN));
        assert_eq!(rig.cached_count(), 0, "a new flow is not cached yet");
        // The first ACK each way comes from the tables and fills this CPU's
        // cache; the next ones come from the cache: all translated alike
        // (`forwarded` checks the checksums from scratch).
        for i in 0..3 {
            let forward = rig.forwarded("IPv6 ACK", &client(44_000, ack));
            assert_eq!(
                (forward.src, forward.sport, forward.dst, forward.dport),
                (out.src, out.sport, out.dst, out.dport)
            );
            assert_eq!(forward.payload, b"v6");
            let back = rig.forwarded("IPv6 ACK back", &reply6_to(&out, ack));
            assert_eq!((back.src, back.sport), (IpAddr::V6(service6), VIP_PORT));
            assert_eq!(back.dport, 44_000);
            assert_eq!(back.payload, b"reply");
            assert_eq!(rig.cached_count(), 2, "round {i}: both directions cached");
        }
        assert_eq!(rig.reasons(), vec![("l4-forward", 4), ("l4-reply", 3)]);
        let services = rig.maps.service_counters().unwrap();
        assert_eq!((services[0].packets, services[0].new_flows), (7, 1));

        // A FIN clears both directions and is not cached again; the last
        // ACK ends the flow in the tables.
        rig.forwarded("IPv6 FIN", &client(44_000, tcp_flags::FIN | ack));
        assert_eq!(rig.cached_count(), 0);
        rig.forwarded("IPv6 ACK of FIN", &reply6_to(&out, ack));
        rig.forwarded("IPv6 ACK", &client(44_000, ack));
        assert_eq!(rig.cached_count(), 0);
        rig.forwarded("IPv6 FIN back", &reply6_to(&out, tcp_flags::FIN | ack));
        rig.forwarded("IPv6 last ACK", &client(44_000, ack));
        assert_eq!((rig.flow_count(), rig.reverse_count()), (0, 0));

        // An RST on a cached flow ends it and clears the cache.
        let out = rig.forwarded("IPv6 SYN", &client(44_001, tcp_flags::SYN));
        rig.forwarded("IPv6 ACK", &client(44_001, ack));
        rig.forwarded("IPv6 ACK back", &reply6_to(&out, ack));
        assert_eq!(rig.cached_count(), 2);
        rig.forwarded("IPv6 RST", &client(44_001, tcp_flags::RST));
        assert_eq!((rig.cached_count(), rig.flow_count()), (0, 0));

        // A cached flow of a removed backend moves to the other one.
        let mut flows = Vec::new();
        for sport in 44_100..44_120 {
            let out = rig.forwarded("IPv6 SYN", &client(sport, tcp_flags::SYN));
            rig.forwarded("IPv6 ACK", &client(sport, ack));
            flows.push((sport, out));
        }
        assert!(rig.cached_count() > 0);
        let removed = flows[0].1.dst;
        rig.set(&[service(&without(&backends6, removed))]);
        for (sport, before) in &flows {
            let now = rig.forwarded("IPv6 after removal", &client(*sport, ack));
            if before.dst == removed {
                assert_ne!(now.dst, removed, "a flow of the removed backend moves");
            } else {
                assert_eq!((now.dst, now.sport), (before.dst, before.sport));
            }
        }
    });
}

#[test]
fn dnat_keeps_the_client_address() {
    in_lab(NatMode::Dnat, |rig| {
        rig.set(&[service(protocol::TCP, &BACKENDS)]);
        let out = rig.forwarded("SYN", &syn(42_000).build());
        assert_eq!((out.src, out.sport), (IpAddr::from(CLIENT), 42_000));
        let back = rig.forwarded("SYN-ACK", &reply_to(&out, tcp_flags::SYN | tcp_flags::ACK));
        assert_eq!((back.src, back.sport), (vip(), VIP_PORT));
        assert_eq!((back.dst, back.dport), (IpAddr::from(CLIENT), 42_000));
    });
}

#[test]
fn a_removed_backend_loses_its_flows_and_new_flows_avoid_it() {
    in_lab(NatMode::Full, |rig| {
        rig.set(&[service(protocol::TCP, &BACKENDS)]);
        let mut flows = Vec::new();
        for i in 0..60 {
            let out = rig.forwarded("SYN", &syn(43_000 + i).build());
            flows.push((43_000 + i, out));
        }
        // Each flow's ACK fills the flow cache: the removal must reach
        // cached flows too.
        for (sport, _) in &flows {
            rig.forwarded("ACK", &syn(*sport).tcp_flags(tcp_flags::ACK).build());
        }
        assert!(rig.cached_count() > 0);
        let removed = flows[0].1.dst;
        rig.set(&[service(protocol::TCP, &without(&BACKENDS, removed))]);
        for (sport, before) in &flows {
            let now = rig.forwarded(
                "after removal",
                &syn(*sport).tcp_flags(tcp_flags::ACK).build(),
            );
            if before.dst == removed {
                assert_ne!(now.dst, removed, "a flow of the removed backend moves");
            } else {
                assert_eq!(
                    (now.dst, now.sport),
                    (before.dst, before.sport),
                    "a flow of a backend that stays keeps it and its port"
                );
            }
        }
        for i in 0..60 {
            let out = rig.forwarded("new SYN", &syn(44_000 + i).build());
            assert_ne!(out.dst, removed);
        }
        // Added back: new flows reach it again, established ones stay put.
        rig.set(&[service(protocol::TCP, &BACKENDS)]);
        let mut reached = false;
        for i in 0..60 {
            reached |= rig.forwarded("SYN", &syn(45_000 + i).build()).dst == removed;
        }
        assert!(reached, "the added backend gets new flows");
        let present = rig.maps.present().unwrap();
        let active: Vec<SocketAddr> = present
            .backends
            .values()
            .filter(|b| b.flags != 0)
            .map(backend_addr)
            .collect();
        assert_eq!(active.len(), 3);
    });
}

#[test]
fn services_without_backends_and_untranslatable_packets_pass_untouched() {
    in_lab(NatMode::Full, |rig| {
        rig.set(&[service(protocol::TCP, &[])]);
        let packet = syn(46_000).build();
        assert_eq!(rig.run(&packet), (XDP_PASS, packet.clone()));
        assert_eq!(rig.reasons(), vec![("l4-no-backend", 1)]);

        rig.set(&[service(protocol::TCP, &BACKENDS)]);
        let tagged = syn(46_001).vlan(ETH_P_8021Q, 7).build();
        assert_eq!(rig.run(&tagged), (XDP_PASS, tagged.clone()));
        let fragment = syn(46_002).ipv4_fragment(0, true).build();
        assert_eq!(rig.run(&fragment), (XDP_PASS, fragment.clone()));
        assert_eq!(rig.reasons(), vec![("l4-unsupported", 2)]);

        // Truncated: every prefix of a SYN to the service passes untouched.
        let whole = syn(46_003).build();
        for len in 0..whole.len() {
            if len < 14 {
                continue; // TEST_RUN refuses frames shorter than Ethernet.
            }
            let prefix = &whole[..len];
            assert_eq!(rig.run(prefix), (XDP_PASS, prefix.to_vec()), "{len} bytes");
        }
        assert_eq!(rig.flow_count(), 0);
        // UDP to a TCP service is not the service.
        let udp = Packet::udp_v4(VIP, VIP_PORT).build();
        assert_eq!(rig.run(&udp), (XDP_PASS, udp.clone()));
        assert_eq!(rig.flow_count(), 0);
    });
}

#[test]
fn fib_failures_drop_or_pass_and_report_missing_neighbours() {
    for nat in [NatMode::Dnat, NatMode::Full] {
        in_lab(nat, |rig| {
            // A route but no neighbour entry: dropped untouched (passed
            // translated, full NAT's packet would be a martian to the stack,
            // which would not resolve the neighbour either), and the next
            // hop is reported to userspace, once for a burst.
            let mut misses = rig.edge.take_neighbour_misses().expect("the ring buffer");
            rig.set(&[service(protocol::TCP, &["198.18.201.9:80"])]);
            for sport in [47_000, 47_001, 47_002] {
                let (action, _) = rig.run(&syn(sport).build());
                assert_eq!(action, XDP_DROP, "{nat:?}");
            }
            assert_eq!(rig.reasons(), vec![("l4-no-neigh", 3)], "{nat:?}");
            let mut reported = Vec::new();
            while let Some(item) = misses.next() {
                assert!(item.len() >= size_of::<L4NeighbourMiss>());
                // SAFETY: the program wrote an `L4NeighbourMiss` (plain data).
                let miss = unsafe { item.as_ptr().cast::<L4NeighbourMiss>().read_unaligned() };
                reported.push((words_ip(miss.addr, miss.family), miss.ifindex));
            }
            // The route's gateway, which the kernel filled in.
            let next_hop: IpAddr = "198.18.50.3".parse().unwrap();
            assert_eq!(reported, vec![(next_hop, rig.dummy_ifindex)], "{nat:?}");
        });
    }
    in_lab(NatMode::Full, |rig| {
        // No route at all, full NAT: no source address, passed untouched.
        rig.set(&[service(protocol::TCP, &["198.18.200.9:80"])]);
        let packet = syn(47_001).build();
        assert_eq!(rig.run(&packet), (XDP_PASS, packet.clone()));
        assert_eq!(rig.reasons(), vec![("l4-no-route", 1)]);
        assert_eq!(rig.flow_count(), 0);
    });
}

#[test]
fn the_listener_path_is_untouched_by_l4_services() {
    in_lab(NatMode::Full, |rig| {
        rig.set(&[service(protocol::TCP, &BACKENDS)]);
        let listeners = [(
            xdp_ingress::bpf::listeners::key_for_ip(vip(), 80, protocol::TCP),
            ingress_common::action::PASS_TO_PROXY,
        )]
        .into();
        rig.edge.sync_listeners(&listeners).unwrap();
        let http = Packet::tcp_v4(VIP, 80).build();
        assert_eq!(rig.run(&http), (XDP_PASS, http.clone()));
        // Replies to the edge's own connections (ports below the NAT range).
        let upstream = Packet::tcp_v4(EDGE_SRC.octets(), 40_000)
            .src_v4([198, 19, 50, 1])
            .sport(8080)
            .build();
        assert_eq!(rig.run(&upstream), (XDP_PASS, upstream.clone()));
        assert_eq!(
            rig.reasons(),
            vec![("pass-no-listener", 1), ("pass-to-proxy", 1)]
        );
    });
}

#[test]
fn ipv6_tcp_full_nat_both_ways() {
    in_lab(NatMode::Full, |rig| {
        let vip6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        rig.set(&[DesiredService {
            protocol: protocol::TCP,
            port: VIP_PORT,
            addrs: vec![IpAddr::V6(vip6)],
            backends: ["[2001:db8:50::1]:8080", "[2001:db8:50::2]:8080"]
                .iter()
                .map(|b| addr(b))
                .collect(),
        }]);
        let packet = Packet::tcp_v6(vip6, VIP_PORT)
            .sport(40_600)
            .payload(b"v6")
            .build();
        let out = rig.forwarded("IPv6 SYN", &packet);
        assert_eq!(out.src, "2001:db8:5::1".parse::<IpAddr>().unwrap());
        assert!((61_000..=65_535).contains(&out.sport));
        assert_eq!(out.dport, 8080);
        assert_eq!(out.payload, b"v6");
        let (IpAddr::V6(backend), IpAddr::V6(edge)) = (out.dst, out.src) else {
            panic!("IPv6 expected");
        };
        let reply = Packet::tcp_v6(edge, out.sport)
            .src_v6(backend)
            .sport(8080)
            .tcp_flags(tcp_flags::SYN | tcp_flags::ACK)
            .build();
        let back = rig.forwarded("IPv6 SYN-ACK", &reply);
        assert_eq!((back.src, back.sport), (IpAddr::V6(vip6), VIP_PORT));
        assert_eq!(back.dport, 40_600);
        assert_eq!(
            back.dst,
            "2001:db8::100".parse::<IpAddr>().unwrap(),
            "the client"
        );
        assert_eq!(rig.reasons(), vec![("l4-forward", 1), ("l4-reply", 1)]);
    });
}

/// Repetitions per timed round, and rounds, of [`timed_rounds`].
const TIMED_REPEAT: u32 = 10_000;
const TIMED_ROUNDS: u32 = 5;

/// Runs `packet` [`TIMED_ROUNDS`] times [`TIMED_REPEAT`] times through the
/// program (each repetition on the same buffer, so the packet must
/// translate into one that translates back), checks every round redirects,
/// prints each round's mean as `<label>: N ns/packet` (`cargo xtask bench
/// l4` reads these lines) and returns the means.
fn timed_rounds(rig: &mut Rig, packet: &[u8], label: &str) -> Vec<u128> {
    let mut out = vec![0u8; packet.len() + 256];
    (0..TIMED_ROUNDS)
        .map(|_| {
            let result = rig
                .edge
                .program()
                .unwrap()
                .test_run(TestRunOptions {
                    data_in: Some(packet),
                    data_out: Some(&mut out),
                    repeat: TIMED_REPEAT,
                    ..TestRunOptions::new()
                })
                .unwrap();
            assert_eq!(result.return_value, XDP_REDIRECT);
            let ns = result.duration.as_nanos();
            eprintln!("{label}: {ns} ns/packet");
            ns
        })
        .collect()
}

/// The fast path's cost by `BPF_PROG_TEST_RUN` with repeat. TEST_RUN runs
/// every repetition on the same buffer, so a translated packet would not be
/// the same packet the next time; here two DNAT services translate into each
/// other (198.18.0.1:9000 -> 198.19.50.1:8080 -> 198.18.0.1:9000), so after
/// the first two runs every repetition is an established flow: from the
/// third run on a hit in this CPU's flow cache (the second run of each flow
/// fills it from the connection table), the cached next hop, rewrite,
/// counters, redirect.
#[test]
fn fast_path_timing_with_repeat() {
    in_lab(NatMode::Dnat, |rig| {
        rig.set(&[
            service(protocol::TCP, &["198.19.50.1:8080"]),
            DesiredService {
                protocol: protocol::TCP,
                port: 8080,
                addrs: vec!["198.19.50.1".parse().unwrap()],
                backends: vec![addr("198.18.0.1:9000")],
            },
        ]);
        let packet = syn(48_000).tcp_flags(tcp_flags::ACK).build();
        let best = timed_rounds(rig, &packet, "fast path round")
            .into_iter()
            .min()
            .unwrap();
        assert_eq!(rig.flow_count(), 2);
        let reasons = rig.reasons();
        assert_eq!(
            reasons,
            vec![("l4-forward", u64::from(TIMED_REPEAT * TIMED_ROUNDS))]
        );
        eprintln!(
            "fast path: L4 established flow (flow-cache hit, cached next hop, rewrite, counters, redirect): {best} ns/packet (best mean of {TIMED_ROUNDS} x {TIMED_REPEAT}, BPF_PROG_TEST_RUN)"
        );
        let _ = (rig.dummy_ifindex, Ipv4Addr::LOCALHOST);
    });
}

/// The IPv6 fast path's cost by `BPF_PROG_TEST_RUN` with repeat, as the
/// IPv4 one's above (two DNAT services translating into each other): after
/// the first runs every repetition is a hit in this CPU's IPv6 flow cache
/// (`l4_fast6`: the translation kept whole, no general parser, no 40-byte-key
/// hash lookup).
#[test]
fn ipv6_established_flow_timing_with_repeat() {
    in_lab(NatMode::Dnat, |rig| {
        let service6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        let backend6: std::net::Ipv6Addr = "2001:db8:50::1".parse().unwrap();
        rig.set(&[
            DesiredService {
                protocol: protocol::TCP,
                port: VIP_PORT,
                addrs: vec![IpAddr::V6(service6)],
                backends: vec![addr("[2001:db8:50::1]:8080")],
            },
            DesiredService {
                protocol: protocol::TCP,
                port: 8080,
                addrs: vec![IpAddr::V6(backend6)],
                backends: vec![addr("[2001:db8::1]:9000")],
            },
        ]);
        let packet = Packet::tcp_v6(service6, VIP_PORT)
            .sport(48_000)
            .tcp_flags(tcp_flags::ACK)
            .build();
        timed_rounds(rig, &packet, "ipv6 flow round");
        // One flow each way through the two services, every packet forwarded.
        assert_eq!(rig.flow_count(), 2);
        assert_eq!(
            rig.reasons(),
            vec![("l4-forward", u64::from(TIMED_REPEAT * TIMED_ROUNDS))]
        );
    });
}
