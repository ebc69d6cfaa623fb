//! `cargo xtask bench l4`: the kernel L4 tier against kube-proxy-style
//! nftables DNAT, in the same lab, with the same load and the same backends.
//!
//! In a veth lab all the work of a packet runs on the sender's core, so the
//! packets per second a client sees mostly measure the client. The edge's
//! own cost is measured instead: a UDP load generator (`lab-udp-flood`,
//! many flows, `sendmmsg`, pinned to the load core) floods the service,
//! the backends drop the load with a tiny XDP program (`lab-drop`, so they
//! cost the same in every row), and each row's cost per packet is the load
//! core's busy time from `/proc/stat` over the run divided by the packets
//! sent (also shown: the CPU time of the generator and of the load core's
//! `ksoftirqd` alone, which other processes on that core cannot inflate):
//!
//! - (A) the edge drops the load at XDP on its client link (the floor);
//! - (R) the edge redirects the load at XDP to its backend link with no
//!   lookup and no rewrite (`lab-redirect`): the kernel's redirect path
//!   alone, the least any XDP forwarder pays in this lab (with `--devmap`
//!   also (Rd), the same through a devmap);
//! - (B) nftables DNAT with `numgen random mod 3` over the three backends,
//!   as kube-proxy's nftables mode writes it, and (Cd) xdp-ingress's L4
//!   tier with `--l4-nat dnat`: both rewrite the destination only;
//! - (Bm) the same nftables DNAT with kube-proxy's masquerade, as it
//!   handles a client from outside the cluster (`mark-for-masquerade`,
//!   `masquerade fully-random`), and (C) xdp-ingress's L4 tier in its
//!   default full NAT: both rewrite the destination and the source.
//!   (Native mode on both edge links for C and Cd.)
//!
//! B-A, Bm-A, C-A and Cd-A are what forwarding costs the edge, compared
//! like for like (target: Cd-A at most a third of B-A, and C-A at most a
//! third of Bm-A); (B-A)/(R-A) is the best ratio any XDP forwarder could
//! reach here.
//!
//! Each row is measured a second way in the same round: frames injected at
//! the edge's client link from inside the kernel (`lab-xdp-inject`,
//! `BPF_PROG_TEST_RUN` with live frames; see [`super::l4_inject`]), which
//! leaves out the ~2 µs a datagram the generator's sending costs the load
//! core, and hands frames over in batches of 64 as a NIC driver's poll
//! does. The target is judged by both loads.
//!
//! Every round measures every row, so the machine's drift in speed falls on
//! every row alike, in another order each time (a balanced Latin square,
//! [`round_order`]), so that no row's place in the round moves its cost
//! systematically. Each row starts from a clean state: the edge's
//! connection tracking table flushed (NAT bindings left by an earlier row
//! would serve this row's flows without its rules), xdp-ingress started
//! with empty maps, the nftables table created for it; and it is torn down
//! after its round. A round in which a row cost less than the floor or
//! than a row whose work it contains breaks an invariant
//! ([`super::l4_checks`]) and gives no ratio; a pair whose medians break
//! one is invalid, not met or missed. Rounds in which other processes took
//! more than 5% of the load core (its busy time beyond the generator's and
//! its `ksoftirqd`'s) do not count unless all did; medians are reported.
//! (The generator's own wait for its core is no such sign: it waits for
//! `ksoftirqd` forwarding its packets.) Also: TCP requests/s through B, Bm,
//! C and Cd (wrk, kept-alive HTTP to `lab-backend`), and the XDP fast
//! path's nanoseconds per packet for an established flow by
//! `BPF_PROG_TEST_RUN` with repeat (the `l4_datapath` test's timing),
//! judged by its own time (target under 67 ns: 64-byte line rate at 10
//! Gb/s on one core), with a trivial program's time beside it.
//!
//! As the lab facts say, the outer veth ends get `ethtool -K DEV tx
//! off gro on` (in every row, so they behave like NICs), and the edge
//! forwards (`ip_forward`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use xdp_ingress_lab::{
    EDGE_ADDR, EDGE_BACKEND_LINK_ADDR, Netns, PinDir, ScratchDir, SliceEndpoint, ensure_bpffs,
    run_ok, service_yaml,
};

use super::{
    Binaries, Progress, catch_interrupts, check_interrupted,
    l4_checks::{Assessment, Verdict, overall, round_order},
    l4_inject::{InjectRound, Injection},
    lab::{BenchLab, ENDPOINTS, LOAD_CPU, LOAD_CPU_INDEX, PROXY_CPU},
    load_core::run_on_load_core,
    measure::{DISTURBED_THRESHOLD, median_of},
    prepare,
    report::{self, Table},
    target_dir,
    wrk::{HOSTS_SCRIPT, WrkLoad},
    xdp::{NAMESPACE, XdpIngress, XdpMode},
};
use crate::command::{self, workspace_root};

/// Options of `cargo xtask bench l4`.
#[derive(Debug, clap::Args)]
pub struct L4Args {
    /// Seconds of UDP load per round and row.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
    /// Rounds per row; the medians are reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// UDP flows of the load (one source port each).
    #[arg(long, default_value_t = 256)]
    pub flows: usize,
    /// UDP payload bytes (18: 64-byte frames with the Ethernet FCS).
    #[arg(long, default_value_t = 18)]
    pub payload: usize,
    /// Seconds of frames injected at the edge per round and row (the
    /// second load, `lab-xdp-inject`); 0 skips it.
    #[arg(long, default_value_t = 2)]
    pub inject_seconds: u64,
    /// Seconds of TCP load (wrk) through B and C.
    #[arg(long, default_value_t = 5)]
    pub tcp_seconds: u64,
    /// wrk's open connections (one wrk thread).
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    /// Use the release binaries as they are (no setup, no build).
    #[arg(long)]
    pub no_build: bool,
    /// Also measure the redirect floor through a devmap (`bpf_redirect_map`).
    #[arg(long)]
    pub devmap: bool,
    /// Measure only these rows, by letter (`--only Cd,C`); the floor A is
    /// always measured. Default: all.
    #[arg(long, value_delimiter = ',', value_parser = Row::parse_letter)]
    pub only: Vec<Row>,
}

/// The UDP service's port on the edge (the load's destination).
const UDP_PORT: u16 = 9053;
/// The UDP port of the backends (dropped there by `lab-drop` anyway).
const BACKEND_UDP_PORT: u16 = 5353;
/// The TCP service's port on the edge (to `lab-backend` on port 80).
const TCP_PORT: u16 = 9000;
/// How long the edge may take to serve the TCP service once set up.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// The fast-path target, in nanoseconds per packet.
const FAST_PATH_TARGET_NS: f64 = 67.0;

/// The rows (in the first round's order; see [`round_order`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    EdgeDrop,
    Redirect,
    RedirectDevmap,
    Nftables,
    NftablesMasquerade,
    XdpIngress,
    XdpIngressDnat,
}

/// The rows compared like for like, nftables first: the same NAT.
const NAT_PAIRS: [(Row, Row, &str); 2] = [
    (
        Row::Nftables,
        Row::XdpIngressDnat,
        "DNAT, the client's address kept",
    ),
    (
        Row::NftablesMasquerade,
        Row::XdpIngress,
        "full NAT, destination and source rewritten",
    ),
];

impl Row {
    /// The rows a run measures, in round order: all (R with `devmap`
    /// also Rd), or A and those in `only`.
    fn chosen(devmap: bool, only: &[Row]) -> Vec<Row> {
        Row::measured(devmap || only.contains(&Row::RedirectDevmap))
            .into_iter()
            .filter(|row| only.is_empty() || *row == Row::EdgeDrop || only.contains(row))
            .collect()
    }

    /// The row of a letter (`A`, `R`, `Rd`, `B`, `Bm`, `C`, `Cd`).
    fn parse_letter(letter: &str) -> Result<Row, String> {
        Row::measured(true)
            .into_iter()
            .find(|row| row.letter().eq_ignore_ascii_case(letter.trim()))
            .ok_or_else(|| format!("no row {letter:?}: the rows are A, R, Rd, B, Bm, C, Cd"))
    }

    /// All rows in round order (Rd only with `devmap`).
    fn measured(devmap: bool) -> Vec<Row> {
        let mut rows = vec![Row::EdgeDrop, Row::Redirect];
        if devmap {
            rows.push(Row::RedirectDevmap);
        }
        rows.extend([
            Row::Nftables,
            Row::XdpIngressDnat,
            Row::NftablesMasquerade,
            Row::XdpIngress,
        ]);
        rows
    }

    /// The row's letter in the ratios.
    pub(super) fn letter(self) -> &'static str {
        match self {
            Row::EdgeDrop => "A",
            Row::Redirect => "R",
            Row::RedirectDevmap => "Rd",
            Row::Nftables => "B",
            Row::NftablesMasquerade => "Bm",
            Row::XdpIngress => "C",
            Row::XdpIngressDnat => "Cd",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Row::EdgeDrop => "(A) edge drops at XDP",
            Row::Redirect => {
                "(R) XDP redirect only, no lookup, no rewrite: any XDP forwarder's floor"
            }
            Row::RedirectDevmap => "(Rd) the same through a devmap",
            Row::Nftables => "(B) nftables DNAT, numgen random mod 3",
            Row::NftablesMasquerade => {
                "(Bm) nftables DNAT + masquerade, as kube-proxy for an external client"
            }
            Row::XdpIngress => "(C) xdp-ingress L4, full NAT, XDP native",
            Row::XdpIngressDnat => "(Cd) xdp-ingress L4, --l4-nat dnat, XDP native",
        }
    }

    /// Whether the row serves the TCP service (B, Bm, C and Cd forward it).
    fn serves_tcp(self) -> bool {
        matches!(
            self,
            Row::Nftables | Row::NftablesMasquerade | Row::XdpIngress | Row::XdpIngressDnat
        )
    }

    /// Whether the row redirects the load at XDP without looking at it
    /// (R, Rd): all of it must reach the backends.
    fn redirects_blindly(self) -> bool {
        matches!(self, Row::Redirect | Row::RedirectDevmap)
    }
}

/// One round of UDP load.
#[derive(Debug, Clone)]
struct FloodRound {
    /// Datagrams the generator's kernel accepted.
    sent: u64,
    /// How long it sent.
    seconds: f64,
    /// The share of the run other processes took of the load core: its
    /// busy time beyond the generator's and ksoftirqd's.
    others: f64,
    /// How busy the other core, where no row puts any work, was over the
    /// run (0..=1): shown, not judged (a compile there at 100% left the
    /// load core's rounds as steady as on an idle machine).
    other_core_busy: f64,
    /// The load core's busy time over the run (all processes, softirqs).
    load_core_busy: f64,
    /// The CPU time of the generator (with the softirq work it ran) and of
    /// the load core's `ksoftirqd` over the run.
    load_tasks: f64,
    /// Datagrams the XDP drops of the row counted (delivered).
    delivered: u64,
}

/// A round of one row's load, by either load.
trait Round {
    /// Whether other processes took more than [`DISTURBED_THRESHOLD`] of the
    /// load core.
    fn disturbed(&self) -> bool;
}

impl Round for FloodRound {
    fn disturbed(&self) -> bool {
        self.others > DISTURBED_THRESHOLD
    }
}

impl Round for InjectRound {
    fn disturbed(&self) -> bool {
        InjectRound::disturbed(self)
    }
}

impl FloodRound {
    fn ns_per_packet(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.load_core_busy * 1e9 / self.sent as f64
    }

    fn task_ns_per_packet(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.load_tasks * 1e9 / self.sent as f64
    }

    fn delivered_pps(&self) -> f64 {
        self.delivered as f64 / self.seconds.max(1e-9)
    }

    fn sent_pps(&self) -> f64 {
        self.sent as f64 / self.seconds.max(1e-9)
    }
}

/// `cargo xtask bench l4`.
pub fn run(args: &L4Args) -> Result<()> {
    ensure!(
        args.rounds > 0 && args.seconds > 0 && args.flows > 0,
        "rounds, seconds and flows must be positive"
    );
    let binaries = prepare(!args.no_build)?;
    let tools = Tools::find(&binaries)?;
    catch_interrupts();
    let progress = Progress::start();
    progress.phase("Creating the lab");
    let lab = BenchLab::create(&binaries)?;
    let edge_lab = lab.edge_lab();
    for line in lab.describe() {
        progress.detail(&line);
    }
    edge_lab.edge.sysctl("net.ipv4.ip_forward", "1")?;
    // Replies to the client (DNAT keeps its address) go back via the edge.
    edge_lab.backend_ns.ip(&[
        "route",
        "replace",
        "default",
        "via",
        &EDGE_BACKEND_LINK_ADDR.to_string(),
    ])?;
    for (ns, dev) in [
        (&edge_lab.client, &edge_lab.client_link.a.name),
        (&edge_lab.backend_ns, &edge_lab.backend_link.b.name),
    ] {
        ns.exec_ok(&["ethtool", "-K", dev, "tx", "off", "gro", "on"])?;
    }
    let backend_sink = XdpSink::attach(
        &edge_lab.backend_ns,
        &edge_lab.backend_link.b.name,
        &tools.drop_object,
    )?;
    let scratch = ScratchDir::new("bench-l4")?;
    let script = scratch.write("hosts.lua", HOSTS_SCRIPT)?;

    // Rounds go A, R, B, Cd, Bm, C, A, R, ...: this machine's speed drifts by
    // a third over minutes, and interleaving spreads the drift over every row.
    let ksoftirqd = ksoftirqd_pid(LOAD_CPU_INDEX)?;
    let rows = Row::chosen(args.devmap, &args.only);
    let mut rounds: Vec<Vec<FloodRound>> = vec![Vec::new(); rows.len()];
    let mut injected: Vec<Vec<InjectRound>> = vec![Vec::new(); rows.len()];
    let mut requests_per_second: Vec<Option<f64>> = vec![None; rows.len()];
    let client_mac = edge_lab
        .client
        .link(&edge_lab.client_link.a.name)?
        .get("address")
        .and_then(|mac| mac.as_str())
        .context("the client link has no MAC address")?
        .to_owned();
    let injection = Injection {
        tool: &tools.inject,
        edge: &edge_lab.edge,
        device: edge_lab.edge_interface(),
        client_mac: &client_mac,
        to: SocketAddr::from((EDGE_ADDR, UDP_PORT)),
        flows: args.flows,
        payload: args.payload,
        seconds: args.inject_seconds,
    };
    for round in 1..=args.rounds {
        let order = round_order(rows.len(), round - 1);
        let letters: Vec<&str> = order.iter().map(|index| rows[*index].letter()).collect();
        progress.phase(&format!(
            "round {round} of {}, in the order {}",
            args.rounds,
            letters.join(", ")
        ));
        for index in order {
            let row = rows[index];
            check_interrupted()?;
            progress.phase(&format!(
                "round {round} of {}: {}",
                args.rounds,
                row.describe()
            ));
            // A clean start: no connection tracked by an earlier row (its
            // NAT bindings would serve this row's flows without its rules).
            // xdp-ingress starts with empty maps below, and the nftables
            // table is created for the row.
            let left = flush_conntrack(&edge_lab.edge)?;
            if left > 0 {
                progress.detail(&format!(
                    "{left} connections still tracked after `conntrack -F`"
                ));
            }
            let mut edge = RowEdge::set_up(row, &lab, &binaries, &tools)?;
            let sink = edge.sink().unwrap_or(&backend_sink);
            let flood = flood_round(args, &lab, &tools, sink, ksoftirqd, &progress)?;
            ensure!(
                !row.redirects_blindly() || flood.delivered * 10 >= flood.sent * 9,
                "{}: only {} of {} datagrams reached the backends",
                row.describe(),
                flood.delivered,
                flood.sent
            );
            rounds[index].push(flood);
            if args.inject_seconds > 0 {
                let round = injection.run(ksoftirqd, || sink.drops()).context(
                    "injecting frames at the edge (`--inject-seconds 0` skips this load)",
                )?;
                progress.detail(&format!(
                    "injected: {:.0} ns/frame ({:.0} by the kernel's timing), {} frames/s, {} delivered, other processes {} of the core{}",
                    round.ns_per_frame(),
                    round.run_ns_per_frame(),
                    report::thousands(round.frames as f64 / round.seconds.max(1e-9)),
                    report::percent(round.delivered_share()),
                    report::percent(round.others),
                    if round.disturbed() { " (disturbed)" } else { "" },
                ));
                ensure!(
                    row == Row::EdgeDrop || round.delivered_share() >= 0.9,
                    "{}: only {} of {} injected frames reached the backends",
                    row.describe(),
                    round.delivered,
                    round.frames
                );
                injected[index].push(round);
            }
            if round == args.rounds && row.serves_tcp() {
                requests_per_second[index] = Some(tcp_requests(args, &lab, &script, &progress)?);
            }
            edge.check_running()?;
        }
    }
    drop(backend_sink);
    drop(lab);

    check_interrupted()?;
    progress.phase("XDP fast path by BPF_PROG_TEST_RUN with repeat (test l4_datapath)");
    // A trivial program timed the same way just before and after: the
    // machine's pace at the moment (its speed drifts by a third or more).
    let mut trivial = trivial_program_ns(&tools, 3)?;
    let (fast_path, ipv6) = fast_path_ns()?;
    trivial.extend(trivial_program_ns(&tools, 3)?);
    let list = |values: &[f64]| {
        values
            .iter()
            .map(|ns| format!("{ns:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    progress.detail(&format!(
        "rounds: {} ns/packet; an IPv6 flow: {} ns/packet; a trivial program before and after: {} ns/packet",
        list(&fast_path),
        list(&ipv6),
        list(&trivial)
    ));

    let text = render(
        args,
        &rows,
        &rounds,
        &requests_per_second,
        &injected,
        &FastPath {
            rounds: fast_path,
            ipv6,
            trivial,
        },
    );
    println!("\n{text}");
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("l4.md");
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("(also written to {})", out.display());
    Ok(())
}

/// The generator and the drop and redirect programs, built by [`prepare`].
struct Tools {
    flood: PathBuf,
    inject: PathBuf,
    drop_object: PathBuf,
    redirect_object: PathBuf,
}

impl Tools {
    fn find(binaries: &Binaries) -> Result<Self> {
        let flood = binaries
            .backend
            .parent()
            .context("lab-backend has no directory")?
            .join("lab-udp-flood");
        let inject = flood.with_file_name("lab-xdp-inject");
        let objects = target_dir().join("bpfel-unknown-none/release");
        let (drop_object, redirect_object) =
            (objects.join("lab-drop"), objects.join("lab-redirect"));
        for path in [&flood, &inject, &drop_object, &redirect_object] {
            ensure!(
                path.is_file(),
                "{} is missing: run `cargo xtask build-ebpf` and `cargo build --release -p xdp-ingress-lab`",
                path.display()
            );
        }
        ensure!(
            command::succeeds(Command::new("conntrack").arg("--version")),
            "conntrack (the tool) is missing: run `cargo xtask setup` (or `apt-get install conntrack`)"
        );
        Ok(Self {
            flood,
            inject,
            drop_object,
            redirect_object,
        })
    }
}

/// What a row sets up on the edge for one round, undone on drop: the
/// edge's own drop program (A), the blind redirect (R, Rd), the nftables
/// table (B, Bm), or xdp-ingress with its L4 services (C, Cd).
enum RowEdge<'a> {
    Drop(XdpSink<'a>),
    /// Held for its `Drop`, which detaches and unpins the program.
    Redirect {
        _program: XdpRedirect<'a>,
    },
    /// Held for its `Drop`, which deletes the table.
    Nftables {
        _table: NftDnat<'a>,
    },
    XdpIngress(XdpIngress),
}

impl<'a> RowEdge<'a> {
    /// Sets up `row` and, for B and C, waits until its TCP service answers.
    fn set_up(row: Row, lab: &'a BenchLab, binaries: &Binaries, tools: &Tools) -> Result<Self> {
        let edge_lab = lab.edge_lab();
        let edge = match row {
            Row::EdgeDrop => {
                return Ok(Self::Drop(XdpSink::attach(
                    &edge_lab.edge,
                    edge_lab.edge_interface(),
                    &tools.drop_object,
                )?));
            }
            Row::Redirect | Row::RedirectDevmap => {
                return Ok(Self::Redirect {
                    _program: XdpRedirect::attach(
                        &edge_lab.edge,
                        edge_lab.edge_interface(),
                        &edge_lab.backend_link.a.name,
                        &tools.redirect_object,
                        if row == Row::RedirectDevmap {
                            RedirectBy::Devmap
                        } else {
                            RedirectBy::Ifindex
                        },
                    )?,
                });
            }
            Row::Nftables | Row::NftablesMasquerade => Self::Nftables {
                _table: NftDnat::create(&edge_lab.edge, row == Row::NftablesMasquerade)?,
            },
            Row::XdpIngress | Row::XdpIngressDnat => {
                let backend_interface = edge_lab.backend_link.a.name.clone();
                let nat = if row == Row::XdpIngressDnat {
                    "dnat"
                } else {
                    "full"
                };
                Self::XdpIngress(XdpIngress::start_with(
                    lab,
                    binaries,
                    &l4_manifests(),
                    XdpMode::Native,
                    &[
                        "--interface",
                        &backend_interface,
                        "--tcp-services-configmap",
                        &format!("{NAMESPACE}/tcp-services"),
                        "--udp-services-configmap",
                        &format!("{NAMESPACE}/udp-services"),
                        "--l4-address",
                        &EDGE_ADDR.to_string(),
                        "--l4-nat",
                        nat,
                    ],
                )?)
            }
        };
        edge_lab
            .client
            .wait_tcp(tcp_service(), READY_TIMEOUT)
            .with_context(|| match &edge {
                Self::XdpIngress(daemon) => format!(
                    "xdp-ingress's L4 service does not answer; its log:\n{}",
                    daemon.log()
                ),
                _ => "nftables DNAT does not reach the backends".to_owned(),
            })?;
        Ok(edge)
    }

    /// The drop program that counts this row's delivered datagrams, when
    /// the row has its own (A); otherwise the backends' counts them.
    fn sink(&self) -> Option<&XdpSink<'a>> {
        match self {
            Self::Drop(sink) => Some(sink),
            _ => None,
        }
    }

    /// Fails, with its log, when xdp-ingress stopped during the round.
    fn check_running(&mut self) -> Result<()> {
        if let Self::XdpIngress(daemon) = self {
            ensure!(
                daemon.running(),
                "xdp-ingress exited during the run; its log:\n{}",
                daemon.log()
            );
        }
        Ok(())
    }
}

/// The TCP service as the client reaches it.
fn tcp_service() -> SocketAddr {
    SocketAddr::from((EDGE_ADDR, TCP_PORT))
}

/// `lab-drop` attached in native mode to `dev` in `ns`; detached on drop.
/// Its XDP drops (`ethtool -S`) count the datagrams that arrived.
struct XdpSink<'a> {
    ns: &'a Netns,
    dev: String,
}

impl<'a> XdpSink<'a> {
    fn attach(ns: &'a Netns, dev: &str, object: &Path) -> Result<Self> {
        let object = object.display().to_string();
        ns.ip(&[
            "link", "set", "dev", dev, "xdpdrv", "obj", &object, "sec", "xdp",
        ])
        .with_context(|| format!("attaching lab-drop to {dev}"))?;
        Ok(Self {
            ns,
            dev: dev.to_owned(),
        })
    }

    /// The XDP drops counted so far on every queue.
    fn drops(&self) -> Result<u64> {
        let stats = self.ns.exec_ok(&["ethtool", "-S", &self.dev])?;
        Ok(xdp_drops(&stats))
    }
}

impl Drop for XdpSink<'_> {
    fn drop(&mut self) {
        let _ = self
            .ns
            .ip(&["link", "set", "dev", &self.dev, "xdpdrv", "off"]);
    }
}

/// How `lab-redirect` names its target: which of its programs runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RedirectBy {
    /// `lab_redirect`: `bpf_redirect` to the ifindex in an array map.
    Ifindex,
    /// `lab_redirect_devmap`: `bpf_redirect_map` through a devmap.
    Devmap,
}

impl RedirectBy {
    /// The program's name (its pin's name) and its map's.
    fn program_and_map(self) -> (&'static str, &'static str) {
        match self {
            Self::Ifindex => ("lab_redirect", "LAB_REDIRECT_IFINDEX"),
            Self::Devmap => ("lab_redirect_devmap", "LAB_REDIRECT_DEVMAP"),
        }
    }

    /// `bpftool map update`'s value bytes for `ifindex`: a u32, or a
    /// `struct bpf_devmap_val` (ifindex, then no program: fd 0).
    fn value_bytes(self, ifindex: u32) -> Vec<String> {
        let mut bytes = ifindex.to_le_bytes().to_vec();
        if self == Self::Devmap {
            bytes.extend([0; 4]);
        }
        bytes.iter().map(u8::to_string).collect()
    }
}

/// `lab-redirect` loaded by bpftool with its programs and maps pinned (in
/// two lab pin directories, which the lab's reaper also clears after a
/// killed run), its target set to `target`, one program attached in
/// native mode to `dev`; detached and unpinned on drop.
struct XdpRedirect<'a> {
    ns: &'a Netns,
    dev: String,
    attached: bool,
    /// Dropped after the detach (field order), which frees the program.
    _programs: PinDir,
    _maps: PinDir,
}

impl<'a> XdpRedirect<'a> {
    fn attach(
        ns: &'a Netns,
        dev: &str,
        target: &str,
        object: &Path,
        by: RedirectBy,
    ) -> Result<Self> {
        ensure_bpffs()?;
        let mut this = Self {
            ns,
            dev: dev.to_owned(),
            attached: false,
            _programs: PinDir::new(),
            _maps: PinDir::new(),
        };
        let (programs, maps) = (this._programs.path(), this._maps.path());
        run_ok(Command::new("bpftool").args([
            "prog",
            "loadall",
            &object.display().to_string(),
            &programs.display().to_string(),
            "type",
            "xdp",
            "pinmaps",
            &maps.display().to_string(),
        ]))
        .context("loading lab-redirect with bpftool")?;
        let ifindex = ns
            .link(target)?
            .get("ifindex")
            .and_then(|index| index.as_u64())
            .and_then(|index| u32::try_from(index).ok())
            .with_context(|| format!("no ifindex for {target}"))?;
        let (program, map) = by.program_and_map();
        // In `ns`: a devmap resolves the ifindex in the updater's namespace.
        let mut update = Command::new("nsenter");
        update
            .arg(format!("--net={}", ns.path().display()))
            .args(["bpftool", "map", "update", "pinned"])
            .arg(maps.join(map))
            .args(["key", "0", "0", "0", "0", "value"])
            .args(by.value_bytes(ifindex));
        run_ok(&mut update).with_context(|| format!("setting {map} to {target}"))?;
        // Like the update, through `nsenter --net`, which keeps this mount
        // namespace's /sys/fs/bpf (`ip netns exec` and `ip -n` mount a fresh
        // /sys without it).
        run_ok(
            Command::new("nsenter")
                .arg(format!("--net={}", ns.path().display()))
                .args(["ip", "link", "set", "dev", dev, "xdpdrv", "pinned"])
                .arg(programs.join(program)),
        )
        .with_context(|| format!("attaching lab-redirect's {program} to {dev}"))?;
        this.attached = true;
        Ok(this)
    }
}

impl Drop for XdpRedirect<'_> {
    fn drop(&mut self) {
        if self.attached {
            let _ = self
                .ns
                .ip(&["link", "set", "dev", &self.dev, "xdpdrv", "off"]);
        }
    }
}

/// The sum of veth's `rx_queue_N_xdp_drops` in `ethtool -S` output.
fn xdp_drops(stats: &str) -> u64 {
    stats
        .lines()
        .filter_map(|line| line.trim().split_once(':'))
        .filter(|(name, _)| name.starts_with("rx_queue_") && name.ends_with("_xdp_drops"))
        .filter_map(|(_, value)| value.trim().parse::<u64>().ok())
        .sum()
}

/// kube-proxy's nftables mode, reduced to the service at hand: a DNAT
/// chain per endpoint, picked by `numgen random mod 3` from a verdict map,
/// with or without its masquerade, in a table of its own that is deleted
/// on drop.
struct NftDnat<'a> {
    ns: &'a Netns,
}

/// The table's name in the edge's namespace.
const NFT_TABLE: &str = "bench-kube-proxy";

impl<'a> NftDnat<'a> {
    fn create(ns: &'a Netns, masquerade: bool) -> Result<Self> {
        let ruleset = nft_ruleset(masquerade);
        let scratch = ScratchDir::new("bench-l4-nft")?;
        let file = scratch.write("kube-proxy.nft", &ruleset)?;
        let this = Self { ns };
        ns.exec_ok(&["nft", "-f", &file.display().to_string()])
            .context("loading the nftables DNAT rules")?;
        Ok(this)
    }
}

impl Drop for NftDnat<'_> {
    fn drop(&mut self) {
        let _ = self.ns.exec(&["nft", "delete", "table", "ip", NFT_TABLE]);
    }
}

/// The rules kube-proxy's nftables mode writes for one Service with a UDP
/// and a TCP port and three endpoints. With `masquerade`, as for a client
/// from outside the cluster (a NodePort or external IP with the Cluster
/// traffic policy): the service's external chain marks the packet and the
/// postrouting chain masquerades what is marked. Without, the destination
/// alone is rewritten (the backends route back through the edge here).
fn nft_ruleset(masquerade: bool) -> String {
    let (udp_chain, tcp_chain) = if masquerade {
        ("external-udp", "external-tcp")
    } else {
        ("service-udp", "service-tcp")
    };
    let mut text = format!(
        "table ip {NFT_TABLE} {{\n\
         \tchain nat-prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tjump services\n\
         \t}}\n\
         \tchain services {{\n\
         \t\tip daddr {EDGE_ADDR} udp dport {UDP_PORT} goto {udp_chain}\n\
         \t\tip daddr {EDGE_ADDR} tcp dport {TCP_PORT} goto {tcp_chain}\n\
         \t}}\n"
    );
    if masquerade {
        text.push_str(
            "\tchain mark-for-masquerade {\n\t\tmark set mark or 0x4000\n\t}\n\
             \tchain nat-postrouting {\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tjump masquerading\n\
             \t}\n\
             \tchain masquerading {\n\
             \t\tmark and 0x4000 == 0 return\n\
             \t\tmark set mark xor 0x4000\n\
             \t\tmasquerade fully-random\n\
             \t}\n\
             \tchain external-udp {\n\t\tjump mark-for-masquerade\n\t\tgoto service-udp\n\t}\n\
             \tchain external-tcp {\n\t\tjump mark-for-masquerade\n\t\tgoto service-tcp\n\t}\n",
        );
    }
    for (protocol, port) in [("udp", BACKEND_UDP_PORT), ("tcp", 80)] {
        let targets: Vec<String> = (0..ENDPOINTS.len())
            .map(|i| format!("{i} : goto endpoint-{protocol}-{i}"))
            .collect();
        text.push_str(&format!(
            "\tchain service-{protocol} {{\n\t\tnumgen random mod {} vmap {{ {} }}\n\t}}\n",
            ENDPOINTS.len(),
            targets.join(", ")
        ));
        for (i, endpoint) in ENDPOINTS.iter().enumerate() {
            text.push_str(&format!(
                "\tchain endpoint-{protocol}-{i} {{\n\t\tmeta l4proto {protocol} dnat to {}:{port}\n\t}}\n",
                endpoint.ip()
            ));
        }
    }
    text.push_str("}\n");
    text
}

/// ConfigMaps for the UDP and TCP services and their Service over the
/// lab's three endpoints (TCP to `lab-backend` on port 80).
fn l4_manifests() -> String {
    let slice: Vec<SliceEndpoint> = ENDPOINTS
        .iter()
        .map(|e| SliceEndpoint::ready(e.ip()))
        .collect();
    format!(
        "\
apiVersion: v1
kind: ConfigMap
metadata: {{name: udp-services, namespace: {NAMESPACE}}}
data: {{\"{UDP_PORT}\": \"{NAMESPACE}/flood:53\"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: tcp-services, namespace: {NAMESPACE}}}
data: {{\"{TCP_PORT}\": \"{NAMESPACE}/web:80\"}}
---
{}---
{}",
        service_yaml_udp(&slice),
        service_yaml(NAMESPACE, "web", 80, 80, &slice),
    )
}

/// The UDP Service `flood` (port 53 to [`BACKEND_UDP_PORT`]) and its
/// EndpointSlice.
fn service_yaml_udp(slice: &[SliceEndpoint]) -> String {
    let addresses: Vec<String> = slice
        .iter()
        .map(|e| {
            format!(
                "- {{addresses: [\"{}\"], conditions: {{ready: true}}}}\n",
                e.addr
            )
        })
        .collect();
    format!(
        "\
apiVersion: v1
kind: Service
metadata: {{name: flood, namespace: {NAMESPACE}}}
spec:
  ports:
  - {{name: dns, port: 53, targetPort: {BACKEND_UDP_PORT}, protocol: UDP}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: flood-1
  namespace: {NAMESPACE}
  labels: {{kubernetes.io/service-name: flood}}
addressType: IPv4
ports:
- {{name: dns, port: {BACKEND_UDP_PORT}, protocol: UDP}}
endpoints:
{}",
        addresses.concat()
    )
}

/// One run of the generator against the UDP service, with the load core's
/// busy time and the datagrams `sink` dropped.
fn flood_round(
    args: &L4Args,
    lab: &BenchLab,
    tools: &Tools,
    sink: &XdpSink<'_>,
    ksoftirqd: u32,
    progress: &Progress,
) -> Result<FloodRound> {
    let target = SocketAddr::from((EDGE_ADDR, UDP_PORT)).to_string();
    let (flows, seconds, payload) = (
        args.flows.to_string(),
        args.seconds.to_string(),
        args.payload.to_string(),
    );
    let flood = tools.flood.display().to_string();
    let run = run_on_load_core(
        lab.client(),
        &[
            &flood,
            "--to",
            &target,
            "--flows",
            &flows,
            "--seconds",
            &seconds,
            "--payload",
            &payload,
        ],
        args.seconds,
        ksoftirqd,
        || sink.drops(),
    )?;
    let report = FloodReport::parse(&run.stdout)?;
    let load_tasks = report.cpu_seconds + run.ksoftirqd;
    let sample = FloodRound {
        sent: report.sent,
        seconds: report.seconds,
        others: run.others(load_tasks),
        other_core_busy: run.other_core_busy,
        load_core_busy: run.load_core_busy,
        load_tasks,
        delivered: run.delivered,
    };
    progress.detail(&format!(
        "{:.0} ns/packet ({:.0} generator + ksoftirqd), sent {} pps, delivered {} pps, other processes {} of the core, generator waited {}, CPU {PROXY_CPU} busy {}{}{}",
        sample.ns_per_packet(),
        sample.task_ns_per_packet(),
        report::thousands(sample.sent_pps()),
        report::thousands(sample.delivered_pps()),
        report::percent(sample.others),
        report::percent(report.waited_seconds / report.seconds.max(1e-9)),
        report::percent(sample.other_core_busy),
        if sample.disturbed() {
            " (disturbed)"
        } else {
            ""
        },
        if report.errors > 0 {
            format!(", {} failed sends", report.errors)
        } else {
            String::new()
        }
    ));
    Ok(sample)
}

/// The generator's JSON line.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FloodReport {
    sent: u64,
    errors: u64,
    seconds: f64,
    cpu_seconds: f64,
    waited_seconds: f64,
}

impl FloodReport {
    fn parse(text: &str) -> Result<Self> {
        let field = |name: &str| -> Result<f64> {
            let key = format!("\"{name}\":");
            let at = text
                .find(&key)
                .with_context(|| format!("no {name} in lab-udp-flood's report {text:?}"))?;
            let rest = &text[at + key.len()..];
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            rest[..end]
                .trim()
                .parse()
                .with_context(|| format!("{name} in lab-udp-flood's report {text:?}"))
        };
        Ok(Self {
            sent: field("sent")? as u64,
            errors: field("errors")? as u64,
            seconds: field("seconds")?,
            cpu_seconds: field("cpu_seconds")?,
            waited_seconds: field("waited_seconds")?,
        })
    }
}

/// The pid of `ksoftirqd/<cpu>`, which runs the softirq work the load
/// core could not finish on the way out of the generator's system calls.
fn ksoftirqd_pid(cpu: usize) -> Result<u32> {
    let name = format!("ksoftirqd/{cpu}");
    std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .with_context(|| format!("no {name} thread"))
}

/// Empties the connection tracking table of `ns` (`conntrack -F`) and
/// returns how many connections it still holds (`conntrack -C`: none,
/// unless a packet arrived in between).
fn flush_conntrack(ns: &Netns) -> Result<u64> {
    ns.exec_ok(&["conntrack", "-F"])
        .context("flushing the edge's connection tracking table (conntrack -F)")?;
    let count = ns
        .exec_ok(&["conntrack", "-C"])
        .context("counting the edge's tracked connections (conntrack -C)")?;
    count
        .trim()
        .parse()
        .with_context(|| format!("conntrack -C said {count:?}"))
}

/// Kept-alive HTTP requests/s through the TCP service (wrk on the load
/// core, `lab-backend` answering).
fn tcp_requests(args: &L4Args, lab: &BenchLab, script: &Path, progress: &Progress) -> Result<f64> {
    let load = WrkLoad {
        client: lab.client(),
        cpus: LOAD_CPU,
        url: format!("http://{}/", tcp_service()),
        script,
        hosts: 1,
        connections: args.connections,
        duration: Duration::from_secs(args.tcp_seconds.max(1)),
    };
    let report = load.run()?;
    ensure!(
        report.failures() == 0,
        "{} of the TCP requests failed",
        report.failures()
    );
    progress.detail(&format!(
        "TCP: {} requests/s (p50 {}, p99 {})",
        report::thousands(report.requests_per_second),
        report::latency(report.p50),
        report::latency(report.p99)
    ));
    Ok(report.requests_per_second)
}

/// One measure of every row's cost in every round (`cost`, ns a packet),
/// checked against the invariants.
fn assess_by<R: Round>(rows: &[Row], rounds: &[Vec<R>], cost: impl Fn(&R) -> f64) -> Assessment {
    Assessment::new(
        rows,
        rounds
            .iter()
            .map(|row| row.iter().map(&cost).collect())
            .collect(),
        rounds
            .iter()
            .map(|row| row.iter().map(Round::disturbed).collect())
            .collect(),
    )
}

/// The median of `value` over the rounds `assessment` counts for `row`.
fn counted_median<R>(
    assessment: &Assessment,
    rows: &[Row],
    rounds: &[Vec<R>],
    row: Row,
    value: impl Fn(&R) -> f64,
) -> f64 {
    let Some(index) = rows.iter().position(|r| *r == row) else {
        return 0.0;
    };
    let counted: Vec<&R> = assessment
        .counted(row)
        .iter()
        .map(|round| &rounds[index][*round])
        .collect();
    median_of(&counted, value)
}

/// `lab-drop` (one bounds check, two loads, `XDP_DROP`) loaded by bpftool
/// and run by `bpftool prog run` on a 64-byte UDP frame, repeat 10,000:
/// one average per round, in nanoseconds per packet. The pin is removed
/// on return.
fn trivial_program_ns(tools: &Tools, rounds: usize) -> Result<Vec<f64>> {
    ensure_bpffs()?;
    let pins = PinDir::new();
    run_ok(Command::new("bpftool").args([
        "prog",
        "loadall",
        &tools.drop_object.display().to_string(),
        &pins.arg(),
        "type",
        "xdp",
    ]))
    .context("loading lab-drop with bpftool")?;
    let scratch = ScratchDir::new("bench-l4-trivial")?;
    let frame = scratch.write("udp-frame", udp_frame_64())?;
    (0..rounds)
        .map(|_| {
            let out = run_ok(
                Command::new("bpftool")
                    .args(["prog", "run", "pinned"])
                    .arg(pins.path().join("lab_drop_udp"))
                    .arg("data_in")
                    .arg(&frame)
                    .args(["repeat", "10000"]),
            )
            .context("running lab-drop with bpftool prog run")?;
            test_run_average_ns(&out).with_context(|| format!("bpftool prog run said {out:?}"))
        })
        .collect()
}

/// A 64-byte IPv4 UDP frame as far as `lab-drop` reads it (EtherType and
/// protocol; the rest zero).
fn udp_frame_64() -> Vec<u8> {
    let mut frame = vec![0u8; 64];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame[14] = 0x45;
    frame[23] = 17;
    frame
}

/// The `duration (average): 36ns` of `bpftool prog run`'s output.
fn test_run_average_ns(text: &str) -> Option<f64> {
    let rest = text.split_once("duration (average):")?.1.trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// The IPv4 and IPv6 fast paths' rounds, and a trivial program's, timed
/// around them.
struct FastPath {
    rounds: Vec<f64>,
    ipv6: Vec<f64>,
    trivial: Vec<f64>,
}

/// Nanoseconds per packet, one value per round of the `l4_datapath`
/// tests' timings (BPF_PROG_TEST_RUN, repeat): the IPv4 and the IPv6 fast
/// paths' (established flows).
fn fast_path_ns() -> Result<(Vec<f64>, Vec<f64>)> {
    let out = command::output(Command::new("cargo").current_dir(workspace_root()).args([
        "test",
        "--package",
        "xdp-ingress-tests",
        "--test",
        "l4_datapath",
        "--",
        "timing_with_repeat",
        "--test-threads",
        "1",
        "--nocapture",
    ]))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "the fast-path timing test failed:\n{text}"
    );
    let (ipv4, ipv6) = (
        timing_rounds(&text, "fast path round: "),
        timing_rounds(&text, "ipv6 flow round: "),
    );
    ensure!(
        !ipv4.is_empty() && !ipv6.is_empty(),
        "no `fast path round:` or `ipv6 flow round:` lines in the tests' output:\n{text}"
    );
    Ok((ipv4, ipv6))
}

/// The `<label>N ns/packet` values of the tests' output.
fn timing_rounds(text: &str, label: &str) -> Vec<f64> {
    text.lines()
        .filter_map(|line| line.split_once(label)?.1.split_once(" ns/packet"))
        .filter_map(|(value, _)| value.trim().parse().ok())
        .collect()
}

/// `(B-A)/(Cd-A) 8.66x (per valid round 5.60-14.70x)`: the ratio of the
/// medians (each row's over its own counted rounds, so it may fall outside
/// the rounds' spread) and the valid rounds' lowest and highest, or why no
/// ratio stands.
fn shown_ratio(assessment: &Assessment, numerator: Row, denominator: Row) -> String {
    let label = format!("({}-A)/({}-A)", numerator.letter(), denominator.letter());
    if !assessment.measured(numerator, denominator) {
        return format!("{label} not measured");
    }
    match assessment.ratio(numerator, denominator) {
        Ok(ratio) => match assessment.spread(numerator, denominator) {
            Some((low, high)) => {
                format!("{label} {ratio:.2}x (per valid round {low:.2}-{high:.2}x)")
            }
            None => format!("{label} {ratio:.2}x"),
        },
        Err(why) => format!("{label} INVALID ({})", why.join("; ")),
    }
}

/// Which rounds passed the checks, and what the others broke: "3 of 3
/// rounds passed the checks" or "1 of 3 ...; left out: round 2 (C cost
/// ...), round 3 (...)".
fn checks_text(assessment: &Assessment) -> String {
    let mut text = format!(
        "{} of {} rounds passed the checks",
        assessment.valid_rounds().len(),
        assessment.round_count()
    );
    let invalid = assessment.invalid_rounds();
    if !invalid.is_empty() {
        let listed: Vec<String> = invalid
            .iter()
            .map(|(round, found)| {
                let texts: Vec<&str> = found.iter().map(|v| v.text.as_str()).collect();
                format!("round {} ({})", round + 1, texts.join("; "))
            })
            .collect();
        text.push_str(&format!("; left out: {}", listed.join(", ")));
    }
    text
}

/// Each valid round's ratio, as listed: "2.87, 3.10*" (* a round other
/// processes disturbed).
fn listed_round_ratios(assessment: &Assessment, numerator: Row, denominator: Row) -> String {
    let ratios = assessment.round_ratios(numerator, denominator);
    if ratios.is_empty() {
        return "-".to_owned();
    }
    ratios
        .iter()
        .map(|r| format!("{:.2}{}", r.ratio, if r.disturbed { "*" } else { "" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `value` of each like-for-like pair and of the bare redirect, joined:
/// "(B-A)/(Cd-A) ...; (Bm-A)/(C-A) ...; (B-A)/(R-A) ...".
fn each_ratio(value: impl Fn(Row, Row) -> String) -> String {
    NAT_PAIRS
        .iter()
        .map(|&(nftables, xdp, _)| (nftables, xdp))
        .chain([(Row::Nftables, Row::Redirect)])
        .map(|(numerator, denominator)| value(numerator, denominator))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The like-for-like pairs by one measure (`cost_text` formats its costs):
/// a line each with the ratio of the medians, its spread over the valid
/// rounds and the verdict (none from costs that break an invariant), the
/// pairs' floor (nftables over the bare redirect), each valid round's
/// ratios, and the rounds left out; and both pairs' verdict.
fn judge_pairs(
    assessment: &Assessment,
    rows: &[Row],
    cost_text: fn(f64) -> String,
) -> (String, Verdict) {
    let mut text = String::new();
    let mut verdicts = Vec::new();
    for (nftables, xdp, nat) in NAT_PAIRS {
        let (b, c) = (nftables.letter(), xdp.letter());
        let verdict = assessment.verdict(nftables, xdp);
        match &verdict {
            Verdict::NotMeasured => {
                text.push_str(&format!("- {nat}: ({b}-A)/({c}-A) not measured\n"));
            }
            Verdict::Invalid(why) => text.push_str(&format!(
                "- {nat}: ({b}-A)/({c}-A) INVALID, no ratio and no verdict: {}\n",
                why.join("; ")
            )),
            Verdict::Met | Verdict::Missed => {
                let beyond_redirect = if rows.contains(&Row::Redirect) {
                    format!(
                        "; beyond the bare redirect, {c}-R: {}",
                        cost_text(assessment.median(xdp) - assessment.median(Row::Redirect))
                    )
                } else {
                    String::new()
                };
                text.push_str(&format!(
                    "- {nat}: {}; {}{beyond_redirect}\n",
                    shown_ratio(assessment, nftables, xdp),
                    verdict.describe(&format!("target {c}-A at most a third of {b}-A")),
                ));
            }
        }
        verdicts.push(verdict);
    }
    if rows.contains(&Row::Redirect) {
        text.push_str(&format!(
            "- nftables over the bare redirect, the best any XDP forwarder could score in this lab: {}, {}\n",
            shown_ratio(assessment, Row::Nftables, Row::Redirect),
            shown_ratio(assessment, Row::NftablesMasquerade, Row::Redirect),
        ));
    }
    text.push_str(&format!(
        "- per valid round (* other processes took more than {} of the load core in one of its rows): {}\n",
        report::percent(DISTURBED_THRESHOLD),
        each_ratio(|numerator, denominator| format!(
            "({}-A)/({}-A) {}",
            numerator.letter(),
            denominator.letter(),
            listed_round_ratios(assessment, numerator, denominator)
        )),
    ));
    text.push_str(&format!("- {}\n", checks_text(assessment)));
    (text, overall(&verdicts))
}

/// The pairs by a measure shown beside the judged one, in one line: each
/// ratio (or why it is invalid), then which rounds passed the checks.
fn ratios_line(assessment: &Assessment) -> String {
    format!(
        "{}; {}",
        each_ratio(|numerator, denominator| shown_ratio(assessment, numerator, denominator)),
        checks_text(assessment)
    )
}

/// `1.25 µs`.
fn micros(ns: f64) -> String {
    format!("{:.2} µs", ns / 1e3)
}

/// `134 ns`.
fn nanos(ns: f64) -> String {
    format!("{ns:.0} ns")
}

/// The injected frames' table and pairs, and both pairs' verdict by them;
/// `None` when no frames were injected.
fn render_injected(rows: &[Row], injected: &[Vec<InjectRound>]) -> Option<(String, Verdict)> {
    if injected.iter().all(Vec::is_empty) {
        return None;
    }
    let cpu = assess_by(rows, injected, InjectRound::ns_per_frame);
    let kernel = assess_by(rows, injected, InjectRound::run_ns_per_frame);
    let mut table = Table::new(&[
        "Frames injected at the edge's client link",
        "CPU per frame",
        "edge's forwarding cost",
        "kernel's timing per frame",
        "its forwarding cost",
        "frames/s",
        "delivered",
    ]);
    for &row in rows {
        let above = |assessment: &Assessment| {
            if row == Row::EdgeDrop {
                "(floor)".to_owned()
            } else {
                nanos(assessment.above_floor(row))
            }
        };
        table.row(vec![
            row.describe().to_owned(),
            nanos(cpu.median(row)),
            above(&cpu),
            nanos(kernel.median(row)),
            above(&kernel),
            report::thousands(counted_median(&cpu, rows, injected, row, |r| {
                r.frames as f64 / r.seconds.max(1e-9)
            })),
            if row == Row::EdgeDrop {
                "-".to_owned()
            } else {
                report::percent(counted_median(
                    &cpu,
                    rows,
                    injected,
                    row,
                    InjectRound::delivered_share,
                ))
            },
        ]);
    }
    let mut text = format!(
        "\nThe same rows with frames injected at the edge's client link instead (lab-xdp-inject: \
         BPF_PROG_TEST_RUN with live frames, batches of 64 as a driver's poll hands them over; \
         the row's XDP program runs on each and its verdict is carried out, B and Bm's frames \
         pass to the stack). No sender's system calls and socket layer: the edge's own work is \
         most of what is measured. Medians of the rounds that passed the checks, of {}:\n",
        cpu.round_count()
    );
    text.push_str(&table.render());
    text.push_str(
        "\nEdge's forwarding cost by injected frames (the load core's busy time), nftables over xdp-ingress doing the same NAT:\n",
    );
    let (pairs, verdict) = judge_pairs(&cpu, rows, nanos);
    text.push_str(&pairs);
    text.push_str(&format!(
        "By the kernel's timing of the runs: {}\n",
        ratios_line(&kernel)
    ));
    Some((text, verdict))
}

fn render(
    args: &L4Args,
    rows: &[Row],
    rounds: &[Vec<FloodRound>],
    requests_per_second: &[Option<f64>],
    injected: &[Vec<InjectRound>],
    fast_path: &FastPath,
) -> String {
    let busy = assess_by(rows, rounds, FloodRound::ns_per_packet);
    let tasks = assess_by(rows, rounds, FloodRound::task_ns_per_packet);
    let mut table = Table::new(&[
        "UDP load through the edge",
        "CPU per packet",
        "edge's forwarding cost",
        "generator + ksoftirqd per packet",
        "sent pps",
        "delivered pps",
        "TCP requests/s",
    ]);
    for (&row, requests) in rows.iter().zip(requests_per_second) {
        let median =
            |value: fn(&FloodRound) -> f64| counted_median(&busy, rows, rounds, row, value);
        table.row(vec![
            row.describe().to_owned(),
            micros(busy.median(row)),
            if row == Row::EdgeDrop {
                "(floor)".to_owned()
            } else {
                micros(busy.above_floor(row))
            },
            if row == Row::EdgeDrop {
                micros(tasks.median(row))
            } else {
                format!(
                    "{} (+{:.2})",
                    micros(tasks.median(row)),
                    tasks.above_floor(row) / 1e3
                )
            },
            report::thousands(median(FloodRound::sent_pps)),
            report::thousands(median(FloodRound::delivered_pps)),
            requests.map_or("-".to_owned(), report::thousands),
        ]);
    }
    let mut text = table.render();
    text.push_str(
        "\nEdge's forwarding cost by the generator's datagrams (the load core's busy time), nftables over xdp-ingress doing the same NAT:\n",
    );
    let (pairs, generator_verdict) = judge_pairs(&busy, rows, micros);
    text.push_str(&pairs);
    if rows.contains(&Row::RedirectDevmap) {
        text.push_str(&format!(
            "The bare redirect through a devmap, (B-A)/(Rd-A): {} (Rd-A {} against R-A {})\n",
            report::ratio(
                busy.above_floor(Row::Nftables),
                busy.above_floor(Row::RedirectDevmap)
            ),
            micros(busy.above_floor(Row::RedirectDevmap)),
            micros(busy.above_floor(Row::Redirect)),
        ));
    }
    text.push_str(&format!(
        "By the generator's and ksoftirqd's CPU time alone: {}\n",
        ratios_line(&tasks)
    ));
    let injected_section = render_injected(rows, injected);
    text.push_str(&format!(
        "Target, both pairs: {}{}\n",
        generator_verdict.describe(
            "xdp-ingress's cost at most a third of nftables' by the generator's datagrams"
        ),
        injected_section
            .as_ref()
            .map_or(String::new(), |(_, verdict)| format!(
                "; {}",
                verdict.describe("by frames injected at the edge (below)")
            )),
    ));
    if let Some((section, _)) = &injected_section {
        text.push_str(section);
    }
    text.push_str(&render_fast_path(fast_path));
    text.push_str(&format!(
        "\nCPU per packet: busy time of the load core (CPU {LOAD_CPU}, /proc/stat) over a run of lab-udp-flood \
         ({} flows, {}-byte payloads, sendmmsg) divided by datagrams sent (next to it: the CPU time of the generator, with the softirq work it ran, \
         and of ksoftirqd on that core, which other processes cannot inflate); {} rounds of {} s a row, the rows in another order each round \
         (a balanced Latin square), each from a clean state (conntrack flushed, xdp-ingress started with empty maps, the nftables table created). \
         A round in which a row cost less than the floor A or than a row whose work it contains (R <= Cd, R <= C, Cd <= C, B <= Bm) is left out, \
         and a pair whose medians do so is INVALID, not met or missed. Medians of the remaining rounds in which other processes took at most {} \
         of the load core (all of them if none was). Backends drop the load with lab-drop at XDP in every row; R redirects with lab-redirect.\n",
        args.flows,
        args.payload,
        args.rounds,
        args.seconds,
        report::percent(DISTURBED_THRESHOLD),
    ));
    text
}

/// The fast path's lines: the IPv4 flow judged by its own time against the
/// target, the IPv6 flow beside it, and the trivial program's time (the
/// machine's pace) with what each fast path took beyond it.
fn render_fast_path(fast_path: &FastPath) -> String {
    let median = |values: &[f64]| median_of(&values.iter().collect::<Vec<_>>(), |v| *v);
    let spread = |values: &[f64]| {
        let low = values.iter().copied().fold(f64::MAX, f64::min);
        let high = values.iter().copied().fold(0.0, f64::max);
        format!("{low:.0}-{high:.0}")
    };
    let (ipv4, ipv6, trivial) = (
        median(&fast_path.rounds),
        median(&fast_path.ipv6),
        median(&fast_path.trivial),
    );
    format!(
        "XDP fast path by BPF_PROG_TEST_RUN (repeat 10,000, medians of {} rounds): an established IPv4 flow {ipv4:.0} ns/packet (rounds {}): {}; \
         an established IPv6 flow (its flow cache) {ipv6:.0} ns/packet (rounds {}). A trivial program (lab-drop) timed the same way just before \
         and after: {trivial:.0} ns/packet (rounds {}; the machine's pace, the issue measured 22 ns for one), so the IPv4 fast path's work took \
         {:.0} ns beyond it, the IPv6 one's {:.0} ns\n",
        fast_path.rounds.len(),
        spread(&fast_path.rounds),
        fast_path_verdict(ipv4, trivial)
            .describe(&format!("target under {FAST_PATH_TARGET_NS:.0} ns")),
        spread(&fast_path.ipv6),
        spread(&fast_path.trivial),
        ipv4 - trivial,
        ipv6 - trivial,
    )
}

/// The IPv4 fast path's verdict by its own median time: under the target
/// or not; invalid when it took less than the trivial program, which does
/// a fraction of its work.
fn fast_path_verdict(ipv4: f64, trivial: f64) -> Verdict {
    if ipv4 <= 0.0 {
        Verdict::Invalid(vec!["not measured".to_owned()])
    } else if ipv4 < trivial {
        Verdict::Invalid(vec![format!(
            "it took {:.0} ns less than the trivial program",
            trivial - ipv4
        )])
    } else if ipv4 < FAST_PATH_TARGET_NS {
        Verdict::Met
    } else {
        Verdict::Missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_report_is_read() {
        let report = FloodReport::parse(
            "{\"sent\":1200,\"errors\":2,\"seconds\":3.000100,\"cpu_seconds\":2.5,\"waited_seconds\":0.010000}\n",
        )
        .unwrap();
        assert_eq!(report.sent, 1200);
        assert_eq!(report.errors, 2);
        assert_eq!(report.seconds, 3.0001);
        assert_eq!(report.cpu_seconds, 2.5);
        assert_eq!(report.waited_seconds, 0.01);
        assert!(FloodReport::parse("{}").is_err());
    }

    #[test]
    fn veth_xdp_drops_are_summed_over_queues() {
        let stats = "NIC statistics:\n     peer_ifindex: 3\n     rx_queue_0_xdp_drops: 10\n     rx_queue_0_drops: 7\n     rx_queue_1_xdp_drops: 5\n";
        assert_eq!(xdp_drops(stats), 15);
    }

    #[test]
    fn bpftool_prog_run_averages_are_read() {
        let text = "Return value: 1, duration (average): 36ns\n";
        assert_eq!(test_run_average_ns(text), Some(36.0));
        assert_eq!(test_run_average_ns("Return value: 1\n"), None);
        let frame = udp_frame_64();
        assert_eq!(
            (frame.len(), &frame[12..14], frame[23]),
            (64, &[8u8, 0][..], 17)
        );
    }

    #[test]
    fn the_fast_path_rounds_are_read_from_the_test_output() {
        let text = "running 1 test\nfast path round: 61.5 ns/packet\nnoise\nfast path round: 60 ns/packet\n";
        assert_eq!(timing_rounds(text, "fast path round: "), vec![61.5, 60.0]);
        let both = "fast path round: 61 ns/packet\nipv6 flow round: 130 ns/packet\n";
        assert_eq!(timing_rounds(both, "ipv6 flow round: "), vec![130.0]);
        assert_eq!(timing_rounds(both, "fast path round: "), vec![61.0]);
    }

    #[test]
    fn the_nftables_rules_pick_one_of_three_endpoints() {
        let rules = nft_ruleset(false);
        assert!(rules.contains("numgen random mod 3 vmap { 0 : goto endpoint-udp-0"));
        assert!(rules.contains("meta l4proto udp dnat to 198.19.0.3:5353"));
        assert!(rules.contains("meta l4proto tcp dnat to 198.19.0.1:80"));
        assert!(rules.contains("ip daddr 198.18.0.1 udp dport 9053 goto service-udp"));
        assert!(!rules.contains("masquerade"));
    }

    #[test]
    fn the_masquerading_rules_mark_external_traffic_and_masquerade_it() {
        let rules = nft_ruleset(true);
        assert!(rules.contains("ip daddr 198.18.0.1 udp dport 9053 goto external-udp"));
        assert!(rules.contains("jump mark-for-masquerade\n\t\tgoto service-udp"));
        assert!(rules.contains("type nat hook postrouting priority srcnat"));
        assert!(rules.contains("mark and 0x4000 == 0 return"));
        assert!(rules.contains("masquerade fully-random"));
        assert!(rules.contains("meta l4proto tcp dnat to 198.19.0.2:80"));
    }

    #[test]
    fn the_redirect_rows_come_after_the_floor_and_before_the_forwarders() {
        use Row::*;
        assert_eq!(
            Row::measured(false),
            vec![
                EdgeDrop,
                Redirect,
                Nftables,
                XdpIngressDnat,
                NftablesMasquerade,
                XdpIngress
            ]
        );
        assert_eq!(Row::measured(true)[2], RedirectDevmap);
        assert_eq!(Row::chosen(false, &[]), Row::measured(false));
        assert_eq!(
            Row::chosen(false, &[XdpIngress, XdpIngressDnat]),
            vec![EdgeDrop, XdpIngressDnat, XdpIngress]
        );
        assert_eq!(
            Row::chosen(false, &[RedirectDevmap]),
            vec![EdgeDrop, RedirectDevmap]
        );
        assert_eq!(Row::parse_letter("cd"), Ok(XdpIngressDnat));
        assert_eq!(Row::parse_letter(" Bm"), Ok(NftablesMasquerade));
        assert!(Row::parse_letter("D").is_err());
        // Every pair is measured, nftables first.
        for (nftables, xdp, _) in NAT_PAIRS {
            assert!(nftables.letter().starts_with('B') && xdp.letter().starts_with('C'));
            assert!(
                Row::measured(false).contains(&nftables) && Row::measured(false).contains(&xdp)
            );
        }
        assert!(Redirect.redirects_blindly() && !Redirect.serves_tcp());
        assert!(XdpIngress.serves_tcp() && !XdpIngress.redirects_blindly());
    }

    #[test]
    fn the_redirect_target_is_written_as_bpftool_bytes() {
        assert_eq!(
            RedirectBy::Ifindex.value_bytes(0x0102),
            vec!["2", "1", "0", "0"]
        );
        assert_eq!(
            RedirectBy::Devmap.value_bytes(7),
            vec!["7", "0", "0", "0", "0", "0", "0", "0"]
        );
    }

    /// A generator's round whose load core was busy `ns` a datagram;
    /// disturbed when `disturbed`.
    fn costing(ns: f64, disturbed: bool) -> FloodRound {
        FloodRound {
            sent: 1_000_000,
            seconds: 1.0,
            others: if disturbed { 0.2 } else { 0.0 },
            other_core_busy: 0.0,
            load_core_busy: ns / 1e3,
            load_tasks: 0.0,
            delivered: 0,
        }
    }

    /// Rounds of (A, R, B, Cd, Bm, C) costs, per row.
    fn per_row(rounds: &[[f64; 6]]) -> Vec<Vec<FloodRound>> {
        (0..6)
            .map(|row| {
                rounds
                    .iter()
                    .map(|round| costing(round[row], false))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn each_valid_round_gives_its_own_ratio_and_the_others_are_listed() {
        let rows = Row::measured(false);
        //                      A       R       B       Cd      Bm      C
        let mut rounds = per_row(&[
            [2000.0, 2500.0, 4000.0, 3000.0, 5300.0, 3100.0],
            [3000.0, 3200.0, 4200.0, 3600.0, 4800.0, 3600.0],
            [2260.0, 3000.0, 3600.0, 2900.0, 2860.0, 2770.0],
        ]);
        // The second round's B was disturbed: B's median is the first's.
        rounds[2][1] = costing(4200.0, true);
        let busy = assess_by(&rows, &rounds, FloodRound::ns_per_packet);
        assert_eq!(
            listed_round_ratios(&busy, Row::Nftables, Row::XdpIngressDnat),
            "2.00, 2.00*"
        );
        assert_eq!(
            listed_round_ratios(&busy, Row::NftablesMasquerade, Row::XdpIngress),
            "3.00, 3.00"
        );
        assert_eq!(
            shown_ratio(&busy, Row::Nftables, Row::Redirect),
            "(B-A)/(R-A) 5.00x (per valid round 4.00-6.00x)"
        );
        assert_eq!(
            shown_ratio(&busy, Row::Nftables, Row::RedirectDevmap),
            "(B-A)/(Rd-A) not measured"
        );
        let checks = checks_text(&busy);
        assert!(
            checks.starts_with(
                "2 of 3 rounds passed the checks; left out: round 3 (Cd cost 100 ns less than R"
            ),
            "{checks}"
        );
        assert!(checks.contains("Bm cost 740 ns less than B"), "{checks}");
    }

    #[test]
    fn both_pairs_must_cost_a_third_of_nftables_or_less() {
        let rows = Row::measured(false);
        let judged = |b: f64, cd: f64, bm: f64, c: f64| {
            let rounds = per_row(&[[
                1000.0,
                1100.0,
                1000.0 + b,
                1000.0 + cd,
                1000.0 + bm,
                1000.0 + c,
            ]]);
            judge_pairs(
                &assess_by(&rows, &rounds, FloodRound::ns_per_packet),
                &rows,
                micros,
            )
        };
        let (text, verdict) = judged(1500.0, 150.0, 1600.0, 400.0);
        assert_eq!(verdict, Verdict::Met, "{text}");
        assert!(
            text.contains("(B-A)/(Cd-A) 10.00x (per valid round 10.00-10.00x)"),
            "{text}"
        );
        assert!(text.contains("C-R: 0.30 µs"), "{text}");
        assert!(text.contains("1 of 1 rounds passed the checks\n"), "{text}");
        // Full NAT just over a third of its nftables row: missed.
        let (_, verdict) = judged(1500.0, 150.0, 1600.0, 534.0);
        assert_eq!(verdict, Verdict::Missed);
        // A forwarder that costs less than the bare redirect it contains:
        // no ratio and no verdict for its pair, and none for both.
        let (text, verdict) = judged(1500.0, 150.0, 1600.0, 90.0);
        assert_eq!(verdict, Verdict::Invalid(Vec::new()), "{text}");
        assert!(
            text.contains("- full NAT, destination and source rewritten: (Bm-A)/(C-A) INVALID, no ratio and no verdict: no round passed the checks\n"),
            "{text}"
        );
        assert!(!text.contains("met") && !text.contains("MISSED"), "{text}");
        // A pair left out by `--only` is not judged.
        let only = [Row::EdgeDrop, Row::Nftables, Row::XdpIngressDnat];
        let rounds = vec![
            vec![costing(1000.0, false)],
            vec![costing(2500.0, false)],
            vec![costing(1150.0, false)],
        ];
        let (text, verdict) = judge_pairs(
            &assess_by(&only, &rounds, FloodRound::ns_per_packet),
            &only,
            micros,
        );
        assert_eq!(verdict, Verdict::NotMeasured, "{text}");
        assert!(text.contains("(Bm-A)/(C-A) not measured"), "{text}");
    }

    #[test]
    fn the_fast_path_is_judged_by_its_own_time() {
        // The case: a fast machine's 48 ns is under the target,
        // whatever the trivial program took.
        assert_eq!(fast_path_verdict(48.0, 14.0), Verdict::Met);
        assert_eq!(fast_path_verdict(81.0, 40.0), Verdict::Missed);
        assert_eq!(
            fast_path_verdict(30.0, 40.0),
            Verdict::Invalid(vec![
                "it took 10 ns less than the trivial program".to_owned()
            ])
        );
        let text = render_fast_path(&FastPath {
            rounds: vec![50.0, 48.0, 52.0],
            ipv6: vec![90.0, 95.0, 92.0],
            trivial: vec![14.0, 15.0, 14.0],
        });
        assert!(
            text.contains(
                "an established IPv4 flow 50 ns/packet (rounds 48-52): target under 67 ns: met"
            ),
            "{text}"
        );
        assert!(
            text.contains("IPv6 flow (its flow cache) 92 ns/packet"),
            "{text}"
        );
        assert!(!text.contains("scaled"), "{text}");
    }

    #[test]
    fn the_cost_per_packet_is_busy_time_over_packets() {
        let round = FloodRound {
            sent: 1_000_000,
            seconds: 2.0,
            others: 0.0,
            other_core_busy: 0.0,
            load_core_busy: 2.0,
            load_tasks: 1.0,
            delivered: 500_000,
        };
        assert_eq!(round.ns_per_packet(), 2000.0);
        assert_eq!(round.task_ns_per_packet(), 1000.0);
        assert_eq!(round.delivered_pps(), 250_000.0);
        assert_eq!(round.sent_pps(), 500_000.0);
        assert!(!round.disturbed());
        let busy_neighbour = FloodRound {
            other_core_busy: 1.0,
            ..round.clone()
        };
        let busy_load_core = FloodRound {
            others: 0.1,
            ..round
        };
        assert!(!busy_neighbour.disturbed() && busy_load_core.disturbed());
    }
}
