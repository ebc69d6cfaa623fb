//! End-to-end tests of the daemon in a lab of two network namespaces:
//!
//! ```text
//!   client ns                         edge ns
//!   198.18.1.1/24  veth <-----> veth  198.18.1.2/24
//!   (curl, UDP,                 ^     xdp-ingress's proxy on :80,
//!    ICMP, raw frames)          |     xdp-ingress run --interface <this veth>
//!                               XDP program (native or skb mode)
//! ```
//!
//! Neighbors are static and IPv6 is off on the veths (except in the
//! dual-stack test), so no ARP or ND crosses the link: every packet the XDP
//! program sees was sent by the test, and most counts are exact. TCP counts
//! are lower bounds (the kernel decides how many segments a connection takes).
//!
//! Needs root and the daemon binary (`cargo build -p ingress-userspace`).

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use ingress_common::verdict;
use xdp_ingress_lab::{
    self as lab, Background, Counts, Daemon, MapsJson, Netns, PinDir, Veth, bpftool_counters,
    poll_until, run_daemon_once, xdp_mode,
};
use xdp_ingress_tests::packets::{ETH_P_8021AD, ETH_P_8021Q, Packet, arp_request};

const CLIENT_V4: &str = "198.18.1.1";
const EDGE_V4: &str = "198.18.1.2";
/// A UDP port nothing listens on (and no XDP listener covers).
const UDP_PORT: u16 = 9999;
const UDP_PAYLOAD: usize = 100;
const ICMP_PAYLOAD: usize = 56;

/// What the daemon's proxy answers without manifests: its built-in 404.
const PROXY_FALLBACK_STATUS: u16 = 404;

/// The lab: two namespaces joined by a veth; the daemon (started by each
/// test) serves HTTP on the edge.
struct Lab {
    // Drop order is declaration order: veth, then the namespaces.
    veth: Veth,
    client: Netns,
    edge: Netns,
}

impl Lab {
    fn new(dual_stack: bool) -> Result<Self> {
        let client = Netns::new("cli")?;
        let edge = Netns::new("edge")?;
        let (client_addrs, edge_addrs): (Vec<&str>, Vec<&str>) = if dual_stack {
            (
                vec!["198.18.1.1/24", "2001:db8:1::1/64"],
                vec!["198.18.1.2/24", "2001:db8:1::2/64"],
            )
        } else {
            (vec!["198.18.1.1/24"], vec!["198.18.1.2/24"])
        };
        let veth = Veth::between(Some(&client), Some(&edge))
            .addrs_a(&client_addrs)
            .addrs_b(&edge_addrs)
            .static_neighbors()
            .create()?;
        Ok(Self { veth, client, edge })
    }

    /// The edge's end of the veth, where XDP is attached.
    fn edge_if(&self) -> &str {
        &self.veth.b.name
    }

    /// `count` HTTP GETs with curl from the client; the daemon's proxy must
    /// answer each (with its fallback, as no Ingress is loaded).
    fn curl(&self, url: &str, count: usize) -> Result<()> {
        for i in 0..count {
            let reply = self
                .client
                .http_get(url, &[])
                .with_context(|| format!("curl #{i} {url}"))?;
            ensure!(
                reply.status == PROXY_FALLBACK_STATUS,
                "curl #{i} {url}: {} {}",
                reply.status,
                reply.text()
            );
        }
        Ok(())
    }
}

fn verdict_counts(maps: &MapsJson, reason: u32) -> Counts {
    maps.verdicts
        .get(verdict::NAMES[reason as usize])
        .copied()
        .unwrap_or_else(|| panic!("no verdict {} in {:#}", reason, maps.raw))
}

fn listener_counts(maps: &MapsJson, family: &str, port: u64) -> Counts {
    maps.listeners
        .iter()
        .find(|l| l.family == family && l.protocol == "tcp" && l.address == "*" && l.port == port)
        .map(|l| l.counts)
        .unwrap_or_else(|| panic!("no {family} tcp/*:{port} listener in {:#}", maps.raw))
}

/// Reads the daemon's maps until `done` holds and two reads 100 ms apart
/// agree (no packet still in flight), bounded.
fn settled_maps(daemon: &Daemon, done: impl Fn(&MapsJson) -> bool) -> Result<MapsJson> {
    let mut last: Option<MapsJson> = None;
    poll_until(
        "the counters to reach and hold their values",
        Duration::from_secs(20),
        || {
            let now = daemon.maps()?;
            let stable = last
                .as_ref()
                .is_some_and(|before| before.raw == now.raw && done(&now));
            if stable {
                return Ok(Some(now));
            }
            last = Some(now);
            std::thread::sleep(Duration::from_millis(100));
            Ok(None)
        },
    )
}

/// The pinned per-CPU counters as bpftool reads them must agree with
/// `xdp-ingress maps`: read maps, bpftool, maps again; bpftool's values lie
/// between the two (counters only grow), and equal them when nothing moved.
fn check_bpftool_agrees(daemon: &Daemon) -> Result<()> {
    let before = daemon.maps()?;
    let verdicts = bpftool_counters(&daemon.bpffs().join("verdict_stats"))?;
    let listeners = bpftool_counters(&daemon.bpffs().join("listener_stats"))?;
    let after = daemon.maps()?;
    let between = |what: &str, low: Counts, seen: Counts, high: Counts| {
        assert!(
            low.packets <= seen.packets
                && seen.packets <= high.packets
                && low.bytes <= seen.bytes
                && seen.bytes <= high.bytes,
            "bpftool says {seen:?} for {what}, `xdp-ingress maps` said {low:?} then {high:?}"
        );
    };
    assert_eq!(verdicts.len(), verdict::COUNT as usize, "{verdicts:?}");
    for (reason, name) in verdict::NAMES.iter().enumerate() {
        between(
            name,
            before.verdicts[*name],
            verdicts[&(reason as u32)],
            after.verdicts[*name],
        );
    }
    for (low, high) in before.listeners.iter().zip(&after.listeners) {
        assert_eq!(low.id, high.id);
        between(
            &format!("listener {low:?}"),
            low.counts,
            listeners[&(low.id as u32)],
            high.counts,
        );
    }
    Ok(())
}

fn assert_pin_dir_gone(dir: &Path) {
    assert!(
        !dir.exists(),
        "{} is left behind: {:?}",
        dir.display(),
        std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
}

/// The whole story in one mode: attach, count real traffic exactly, refuse
/// a second daemon, stop cleanly.
fn traffic_is_counted_and_the_daemon_cleans_up(mode: &str, expected_mode: u64) -> Result<()> {
    const CONNECTIONS: u64 = 5;
    const DATAGRAMS: u64 = 7;
    const ECHOES: u16 = 3;

    let lab = Lab::new(false)?;
    let mut daemon = Daemon::start(&lab.edge, lab.edge_if(), mode)?;
    let xdp = lab
        .edge
        .xdp(lab.edge_if())?
        .context("no XDP program on the edge veth")?;
    assert_eq!(xdp.mode, expected_mode, "attach mode of {xdp:?}");
    assert_eq!(xdp.prog_name, "xdp_ingress");
    assert!(lab::prog_ids_held_by(daemon.pid()).contains(&xdp.prog_id));
    assert!(
        lab.client.xdp(&lab.veth.a.name)?.is_none(),
        "the client end has no XDP"
    );

    // The listeners of the default --http-addr/--https-addr, nothing counted yet.
    let maps = daemon.maps()?;
    let listeners: Vec<_> = maps
        .listeners
        .iter()
        .map(|l| {
            (
                l.family.as_str(),
                l.protocol.as_str(),
                l.address.as_str(),
                l.port,
                l.action.as_str(),
            )
        })
        .collect();
    assert_eq!(
        listeners,
        [
            ("ipv4", "tcp", "*", 80, "pass-to-proxy"),
            ("ipv4", "tcp", "*", 443, "pass-to-proxy")
        ]
    );
    assert!(
        maps.verdicts.values().all(|c| *c == Counts::default()),
        "no traffic yet, but: {:#}",
        maps.raw
    );

    // Real traffic from the client namespace.
    lab.curl(&format!("http://{EDGE_V4}/"), CONNECTIONS as usize)?;
    let edge_v4: Ipv4Addr = EDGE_V4.parse()?;
    lab.client.udp_send(
        SocketAddr::new(edge_v4.into(), UDP_PORT),
        &[0x55; UDP_PAYLOAD],
        DATAGRAMS as usize,
    )?;
    lab.client.icmp_echo(edge_v4, ECHOES, ICMP_PAYLOAD)?;
    // Crafted frames, with the real MACs so the edge accepts what is valid.
    let (client_mac, edge_mac) = (lab.veth.a.mac, lab.veth.b.mac);
    let client_v4: [u8; 4] = CLIENT_V4.parse::<Ipv4Addr>()?.octets();
    let arp = arp_request(client_mac, client_v4, [198, 18, 1, 99]);
    let truncated = Packet::tcp_v4(edge_v4.octets(), 80)
        .macs(client_mac, edge_mac)
        .build()[..30]
        .to_vec();
    let tagged_udp = Packet::udp_v4(edge_v4.octets(), UDP_PORT - 1)
        .macs(client_mac, edge_mac)
        .src_v4(client_v4)
        .vlan(ETH_P_8021Q, 42)
        .build();
    let qinq_https = Packet::tcp_v4(edge_v4.octets(), 443)
        .macs(client_mac, edge_mac)
        .src_v4(client_v4)
        .vlan(ETH_P_8021AD, 1)
        .vlan(ETH_P_8021Q, 2)
        .build();
    lab.client.inject(
        &lab.veth.a.name,
        &[
            arp.clone(),
            arp.clone(),
            truncated.clone(),
            tagged_udp.clone(),
            qinq_https.clone(),
        ],
    )?;

    let udp_frame = (14 + 20 + 8 + UDP_PAYLOAD) as u64;
    let icmp_frame = (14 + 20 + 8 + ICMP_PAYLOAD) as u64;
    let exact = [
        (
            verdict::PASS_NOT_IP,
            Counts {
                packets: 2,
                bytes: 2 * arp.len() as u64,
            },
        ),
        (
            verdict::PASS_MALFORMED,
            Counts {
                packets: 1,
                bytes: truncated.len() as u64,
            },
        ),
        (
            verdict::PASS_OTHER_L4,
            Counts {
                packets: u64::from(ECHOES),
                bytes: u64::from(ECHOES) * icmp_frame,
            },
        ),
        (
            verdict::PASS_NO_LISTENER,
            Counts {
                packets: DATAGRAMS + 1,
                bytes: DATAGRAMS * udp_frame + tagged_udp.len() as u64,
            },
        ),
        (verdict::DROP_LISTENER, Counts::default()),
    ];
    let maps = settled_maps(&daemon, |maps| {
        exact
            .iter()
            .all(|(reason, counts)| verdict_counts(maps, *reason).packets >= counts.packets)
            && verdict_counts(maps, verdict::PASS_TO_PROXY).packets > 3 * CONNECTIONS
    })
    .with_context(|| format!("daemon log:\n{}", daemon.log()))?;
    eprintln!("{mode} mode, after traffic: {:#}", maps.raw["verdicts"]);
    for (reason, counts) in exact {
        assert_eq!(
            verdict_counts(&maps, reason),
            counts,
            "{mode}: {} must count exactly what was sent",
            verdict::NAMES[reason as usize]
        );
    }
    // TCP: every connection takes at least a SYN, the request and a FIN
    // from the client; the QinQ SYN to 443 is the only packet to 443.
    let proxied = verdict_counts(&maps, verdict::PASS_TO_PROXY);
    let http = listener_counts(&maps, "ipv4", 80);
    let https = listener_counts(&maps, "ipv4", 443);
    assert!(
        http.packets >= 3 * CONNECTIONS && http.packets <= 20 * CONNECTIONS,
        "{mode}: {} packets to port 80 for {CONNECTIONS} connections",
        http.packets
    );
    assert!(
        http.bytes >= http.packets * 54,
        "{mode}: at least Ethernet + IPv4 + TCP per packet: {http:?}"
    );
    assert_eq!(
        https,
        Counts {
            packets: 1,
            bytes: qinq_https.len() as u64
        }
    );
    assert_eq!(
        proxied,
        Counts {
            packets: http.packets + https.packets,
            bytes: http.bytes + https.bytes
        },
        "{mode}: pass-to-proxy is the sum of the listeners"
    );
    check_bpftool_agrees(&daemon)?;

    // A second daemon on the same interface (its own pin directory) must
    // fail clearly and leave nothing behind.
    let second_dir = PinDir::new();
    let second = run_daemon_once(
        &lab.edge,
        &[
            "run",
            "--interface",
            lab.edge_if(),
            "--xdp-mode",
            mode,
            "--bpffs",
            &second_dir.arg(),
        ],
        Duration::from_secs(60),
    )?;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "a second daemon on {} must fail: {stderr}",
        lab.edge_if()
    );
    assert!(
        stderr.contains("already"),
        "the error says the interface is already taken: {stderr}"
    );
    assert_pin_dir_gone(second_dir.path());
    // A second daemon on the same pin directory must fail too, and must not
    // touch the first one's pins.
    let first_dir = daemon.bpffs().display().to_string();
    let same_dir = run_daemon_once(
        &lab.edge,
        &["run", "--interface", "lo", "--bpffs", &first_dir],
        Duration::from_secs(60),
    )?;
    let stderr = String::from_utf8_lossy(&same_dir.stderr);
    assert!(
        !same_dir.status.success(),
        "same --bpffs must fail: {stderr}"
    );
    assert!(stderr.contains("another xdp-ingress"), "{stderr}");
    assert!(
        lab.edge.xdp("lo")?.is_none(),
        "nothing attached to lo by the refused daemon"
    );

    // The first daemon is unharmed: same program, pins, and still counting.
    assert!(daemon.running(), "the first daemon still runs");
    assert_eq!(
        lab.edge.xdp(lab.edge_if())?.map(|x| x.prog_id),
        Some(xdp.prog_id)
    );
    lab.client.udp_send(
        SocketAddr::new(edge_v4.into(), UDP_PORT),
        &[0x55; UDP_PAYLOAD],
        1,
    )?;
    let no_listener = verdict_counts(&maps, verdict::PASS_NO_LISTENER).packets + 1;
    settled_maps(&daemon, |maps| {
        verdict_counts(maps, verdict::PASS_NO_LISTENER).packets == no_listener
    })?;

    // SIGTERM: a clean exit, nothing attached, nothing pinned.
    let bpffs = daemon.bpffs().to_path_buf();
    let status = daemon.stop()?;
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        daemon.log()
    );
    assert_eq!(lab.edge.xdp(lab.edge_if())?, None, "XDP detached on exit");
    let link = lab.edge.link(lab.edge_if())?;
    assert!(link.get("xdp").is_none(), "ip -j link: {link}");
    assert_pin_dir_gone(&bpffs);
    // The kernel frees the program once its last reference is gone.
    poll_until("the program to be freed", Duration::from_secs(10), || {
        let out = lab::run_with_timeout(
            Command::new("bpftool").args(["prog", "show", "id", &xdp.prog_id.to_string()]),
            lab::COMMAND_TIMEOUT,
        )?;
        Ok((!out.status.success()).then_some(()))
    })?;
    // And `maps` on the gone directory explains itself.
    let out = lab::run_with_timeout(
        Command::new(lab::daemon_binary()?)
            .args(["maps", "--bpffs"])
            .arg(&bpffs),
        lab::COMMAND_TIMEOUT,
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no pinned map"), "{stderr}");
    Ok(())
}

#[test]
fn native_mode_counts_real_traffic_and_cleans_up() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    traffic_is_counted_and_the_daemon_cleans_up("native", xdp_mode::NATIVE)
}

#[test]
fn skb_mode_counts_real_traffic_and_cleans_up() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    traffic_is_counted_and_the_daemon_cleans_up("skb", xdp_mode::SKB)
}

#[test]
fn auto_mode_attaches_natively_on_veth() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let lab = Lab::new(false)?;
    let mut daemon = Daemon::start(&lab.edge, lab.edge_if(), "auto")?;
    let xdp = lab.edge.xdp(lab.edge_if())?.context("no XDP program")?;
    assert_eq!(xdp.mode, xdp_mode::NATIVE, "veth supports native XDP");
    lab.curl(&format!("http://{EDGE_V4}/"), 1)?;
    let maps = settled_maps(&daemon, |maps| {
        listener_counts(maps, "ipv4", 80).packets >= 3
    })?;
    assert!(verdict_counts(&maps, verdict::PASS_TO_PROXY).packets >= 3);
    assert!(daemon.stop()?.success());
    assert_eq!(lab.edge.xdp(lab.edge_if())?, None);
    Ok(())
}

#[test]
fn dual_stack_listeners_count_ipv6_traffic() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    const CONNECTIONS: u64 = 3;
    const DATAGRAMS: u64 = 4;
    let lab = Lab::new(true)?;
    // [::]:80 covers both families.
    let daemon = Daemon::start_with(
        &lab.edge,
        &[lab.edge_if()],
        &["--xdp-mode", "native", "--http-addr", "[::]:80"],
    )?;
    let maps = daemon.maps()?;
    let families: Vec<(&str, u64)> = maps
        .listeners
        .iter()
        .map(|l| (l.family.as_str(), l.port))
        .collect();
    assert!(families.contains(&("ipv4", 80)) && families.contains(&("ipv6", 80)));

    lab.curl("http://[2001:db8:1::2]/", CONNECTIONS as usize)?;
    lab.client.udp_send(
        "[2001:db8:1::2]:9999".parse()?,
        &[0xaa; UDP_PAYLOAD],
        DATAGRAMS as usize,
    )?;
    let udp_frame = (14 + 40 + 8 + UDP_PAYLOAD) as u64;
    let maps = settled_maps(&daemon, |maps| {
        verdict_counts(maps, verdict::PASS_NO_LISTENER).packets >= DATAGRAMS
            && listener_counts(maps, "ipv6", 80).packets >= 3 * CONNECTIONS
    })?;
    // IPv6 is on here, so ND and MLD (ICMPv6: other-l4) may add noise; UDP
    // and TCP counts are still only ours.
    assert_eq!(
        verdict_counts(&maps, verdict::PASS_NO_LISTENER),
        Counts {
            packets: DATAGRAMS,
            bytes: DATAGRAMS * udp_frame
        }
    );
    let v6 = listener_counts(&maps, "ipv6", 80);
    assert!(
        v6.packets >= 3 * CONNECTIONS && v6.packets <= 20 * CONNECTIONS,
        "{v6:?}"
    );
    assert_eq!(listener_counts(&maps, "ipv4", 80), Counts::default());
    assert_eq!(verdict_counts(&maps, verdict::PASS_TO_PROXY), v6);
    assert_eq!(
        verdict_counts(&maps, verdict::PASS_NOT_IP),
        Counts::default()
    );
    check_bpftool_agrees(&daemon)?;
    Ok(())
}

#[test]
fn unknown_interface_fails_clearly_and_leaves_nothing() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let ns = Netns::new("bad")?;
    let dir = PinDir::new();
    let out = run_daemon_once(
        &ns,
        &["run", "--interface", "nosuch0", "--bpffs", &dir.arg()],
        Duration::from_secs(60),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("nosuch0") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert_pin_dir_gone(dir.path());
    Ok(())
}

/// A SIGTERM that arrives while the daemon starts (maps pinned, handler not
/// yet installed) must still end in the usual cleanup.
#[test]
fn sigterm_during_startup_still_cleans_up() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    lab::ensure_bpffs()?;
    let ns = Netns::new("term")?;
    let dir = PinDir::new();
    let mut daemon = Background::start(
        Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .arg(lab::daemon_binary()?)
            .args(["run", "--interface", "lo", "--xdp-mode", "skb", "--bpffs"])
            .arg(dir.path()),
    )?;
    // SIGTERM as soon as the first pin appears: loaded, not yet attached.
    let listeners = dir.path().join("listeners");
    let start = Instant::now();
    for _ in 0..100_000_000u64 {
        if listeners.exists() || !daemon.running() || start.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::hint::spin_loop();
    }
    ensure!(
        listeners.exists(),
        "the daemon never pinned its maps in {}",
        dir.arg()
    );
    let status = daemon.stop(Duration::from_secs(15))?;
    assert!(
        status.success(),
        "exit status after an early SIGTERM: {status} (signal 15 = killed by it, no cleanup)"
    );
    assert_pin_dir_gone(dir.path());
    assert_eq!(ns.xdp("lo")?, None);
    Ok(())
}
