//! The second load of `cargo xtask bench l4`: frames that arrive at the
//! edge's client link from inside the kernel (`lab-xdp-inject`:
//! `BPF_PROG_TEST_RUN` with live frames), with no sender.
//!
//! The generator's load (`lab-udp-flood`) costs the load core about 2 µs a
//! datagram before the edge sees it (system call, UDP, the client's veth),
//! and that floor moves with the machine's pace by more than the edge's
//! whole forwarding cost. Injected frames start where a NIC driver's poll
//! would: the row's XDP program runs on each, and its verdict is carried
//! out for real, in batches of 64 as a driver's poll does. A redirect goes
//! to the backend link, a pass becomes an skb for the edge's stack
//! (nftables, routing, forwarding, the backend link), a drop frees the
//! frame. The edge's own work per packet is then most of what is measured:
//!
//! - (A) the edge's `lab-drop`: the floor (a frame set up and freed);
//! - (R) `lab-redirect`, (C, Cd) xdp-ingress's program: the program
//!   attached to the client link, run on the frames;
//! - (B, Bm) a two-instruction `XDP_PASS` program: the stack forwards.
//!
//! The cost per frame is, as for the generator, the load core's busy time
//! from `/proc/stat` over the run divided by the frames; the kernel's own
//! timing of the runs (`duration`) is shown next to it.

use std::{net::SocketAddr, path::Path};

use anyhow::{Context, Result};
use xdp_ingress_lab::{CLIENT_ADDR, Netns};

use super::{load_core::run_on_load_core, measure::DISTURBED_THRESHOLD};

/// The injected flows' first source port: below the ephemeral range, so no
/// flow of the generator's shares a 5-tuple with them.
const FIRST_SOURCE_PORT: u16 = 10_000;

/// One run of `lab-xdp-inject` in a row.
#[derive(Debug, Clone)]
pub struct InjectRound {
    /// Frames run through the program.
    pub frames: u64,
    /// How long it ran.
    pub seconds: f64,
    /// The load core's busy time over the run (all processes, softirqs).
    pub load_core_busy: f64,
    /// The kernel's own timing of the test runs (their frames times their
    /// average `duration`).
    pub run_seconds: f64,
    /// The share of the run other processes took of the load core: its
    /// busy time beyond the injector's and its `ksoftirqd`'s.
    pub others: f64,
    /// Datagrams the backends' drop program counted (forwarded).
    pub delivered: u64,
}

impl InjectRound {
    /// The load core's busy time per frame.
    pub fn ns_per_frame(&self) -> f64 {
        if self.frames == 0 {
            return 0.0;
        }
        self.load_core_busy * 1e9 / self.frames as f64
    }

    /// The kernel's own timing per frame.
    pub fn run_ns_per_frame(&self) -> f64 {
        if self.frames == 0 {
            return 0.0;
        }
        self.run_seconds * 1e9 / self.frames as f64
    }

    /// Whether other processes took more than [`DISTURBED_THRESHOLD`] of the
    /// load core.
    pub fn disturbed(&self) -> bool {
        self.others > DISTURBED_THRESHOLD
    }

    /// The share of the frames the backends received.
    pub fn delivered_share(&self) -> f64 {
        self.delivered as f64 / self.frames.max(1) as f64
    }
}

/// What one run injects, and where.
pub struct Injection<'a> {
    /// `lab-xdp-inject`.
    pub tool: &'a Path,
    /// The edge's namespace and its client link (the frames' device).
    pub edge: &'a Netns,
    pub device: &'a str,
    /// The client link's other end's MAC (the frames' source).
    pub client_mac: &'a str,
    /// The frames' destination: the UDP service.
    pub to: SocketAddr,
    pub flows: usize,
    pub payload: usize,
    pub seconds: u64,
}

impl Injection<'_> {
    /// Runs the injector on the load core against the program attached to
    /// the device (none: an `XDP_PASS` program, the stack forwards), with
    /// the load core's busy time and the datagrams `delivered` counts.
    pub fn run(&self, ksoftirqd: u32, delivered: impl Fn() -> Result<u64>) -> Result<InjectRound> {
        let program = self.edge.xdp(self.device)?.map(|xdp| xdp.prog_id);
        let from = SocketAddr::from((CLIENT_ADDR, FIRST_SOURCE_PORT)).to_string();
        let (to, flows, seconds, payload) = (
            self.to.to_string(),
            self.flows
                .min(usize::from(u16::MAX - FIRST_SOURCE_PORT))
                .to_string(),
            self.seconds.to_string(),
            self.payload.to_string(),
        );
        let tool = self.tool.display().to_string();
        let mut command = vec![
            tool.as_str(),
            "--dev",
            self.device,
            "--src-mac",
            self.client_mac,
            "--from",
            &from,
            "--to",
            &to,
            "--flows",
            &flows,
            "--seconds",
            &seconds,
            "--payload",
            &payload,
        ];
        let program_id = program.map(|id| id.to_string());
        if let Some(id) = &program_id {
            command.extend(["--prog-id", id]);
        }
        let run = run_on_load_core(self.edge, &command, self.seconds, ksoftirqd, delivered)?;
        let report = InjectReport::parse(&run.stdout)?;
        Ok(InjectRound {
            frames: report.frames,
            seconds: report.seconds,
            load_core_busy: run.load_core_busy,
            run_seconds: report.run_seconds,
            others: run.others(report.cpu_seconds + run.ksoftirqd),
            delivered: run.delivered,
        })
    }
}

/// `lab-xdp-inject`'s JSON line.
#[derive(Debug, Clone, Copy, PartialEq)]
struct InjectReport {
    frames: u64,
    seconds: f64,
    run_seconds: f64,
    cpu_seconds: f64,
}

impl InjectReport {
    fn parse(text: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text.trim())
            .with_context(|| format!("lab-xdp-inject's report {text:?}"))?;
        let field = |name: &str| {
            value[name]
                .as_f64()
                .with_context(|| format!("no {name} in lab-xdp-inject's report {text:?}"))
        };
        Ok(Self {
            frames: field("frames")? as u64,
            seconds: field("seconds")?,
            run_seconds: field("run_seconds")?,
            cpu_seconds: field("cpu_seconds")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_injector_report_is_read() {
        let report = InjectReport::parse(
            "{\"frames\":1000000,\"calls\":61,\"seconds\":2.000100,\"run_seconds\":0.400000,\"cpu_seconds\":1.990000}\n",
        )
        .unwrap();
        assert_eq!(
            report,
            InjectReport {
                frames: 1_000_000,
                seconds: 2.0001,
                run_seconds: 0.4,
                cpu_seconds: 1.99,
            }
        );
        assert!(InjectReport::parse("{\"frames\":3}").is_err());
        assert!(InjectReport::parse("lab-xdp-inject: no device").is_err());
    }

    #[test]
    fn the_cost_per_frame_is_busy_time_over_frames() {
        let round = InjectRound {
            frames: 2_000_000,
            seconds: 2.0,
            load_core_busy: 1.0,
            run_seconds: 0.8,
            others: 0.0,
            delivered: 1_900_000,
        };
        assert_eq!(round.ns_per_frame(), 500.0);
        assert_eq!(round.run_ns_per_frame(), 400.0);
        assert_eq!(round.delivered_share(), 0.95);
        assert!(!round.disturbed());
        assert!(
            InjectRound {
                others: 0.1,
                ..round
            }
            .disturbed()
        );
    }
}
