//! `cargo xtask bench access-log`: what the access log costs a request.
//! xdp-ingress twice, side by side in one run, as `bench l7` runs its
//! proxies (a copy of the lab each, one CPU core each, the same wrk load,
//! rounds alternating): `--access-log off` and `--access-log stdout`
//! (ingress-nginx's `upstreaminfo` lines, into the daemon's log file). The
//! writer thread shares the proxy's core, so its formatting and writes
//! count. Prints requests/s and CPU per request of both, and their ratio
//! against the target (under 5%); also written to
//! `target/bench/access-log.md`.

use std::{fmt::Write as _, time::Duration};

use anyhow::{Context, Result, bail};
use xdp_ingress_lab::ScratchDir;

use super::{
    Progress, catch_interrupts, check_interrupted,
    lab::{BenchLab, LOAD_CPU},
    measure::{counted_rounds, median_of},
    prepare, probe, raise_open_file_limit, report,
    side_by_side::{RoundCpu, account_round, alternate_rounds},
    target_dir,
    under_test::UnderTest,
    wrk::{HOSTS_SCRIPT, WrkLoad, WrkReport},
    xdp::{self, XdpIngress, XdpMode},
};

/// Options of `cargo xtask bench access-log`.
#[derive(Debug, clap::Args)]
pub struct AccessLogArgs {
    /// Seconds of measured load per round and variant.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Measurements per variant, alternating; the medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds of load before the first round (fills connection pools).
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// wrk's open connections (one wrk thread).
    #[arg(long, default_value_t = 50)]
    pub connections: u32,
    /// Where xdp-ingress's XDP program runs.
    #[arg(long, value_enum, default_value = "native")]
    pub xdp_mode: XdpMode,
    /// Use the release binaries as they are (no setup, no build).
    #[arg(long)]
    pub no_build: bool,
}

/// The cost the issue allows: the log on costs under 5% a request.
const TARGET: f64 = 0.05;

/// One measured round.
struct Sample {
    load: WrkReport,
    cpu: RoundCpu,
}

/// `cargo xtask bench access-log`.
pub fn run(args: &AccessLogArgs) -> Result<()> {
    if args.seconds == 0 || args.rounds == 0 || args.connections == 0 {
        bail!("--seconds, --rounds and --connections must be at least 1");
    }
    let binaries = prepare(!args.no_build)?;
    raise_open_file_limit(1 << 20).context("raising the open-file limit")?;
    catch_interrupts();
    let progress = Progress::start();
    progress.phase("Creating a lab per variant (client, edge, backends)");
    let labs = [BenchLab::create(&binaries)?, BenchLab::create(&binaries)?];
    let scratch = ScratchDir::new("bench")?;
    let script = scratch.write("hosts.lua", HOSTS_SCRIPT)?;
    let variants = [("log off", "off"), ("log on", "stdout")];
    let mut started = Vec::new();
    for ((name, flag), lab) in variants.iter().zip(&labs) {
        check_interrupted()?;
        progress.phase(&format!("starting xdp-ingress, {name}"));
        let daemon = XdpIngress::start_with(
            lab,
            &binaries,
            &xdp::manifests(1, &super::lab::ENDPOINTS),
            args.xdp_mode,
            &["--access-log", flag],
        )?;
        probe::check_serving(lab.client(), lab.proxy_addr(), &[xdp::host(0)])?;
        started.push((*name, lab, UnderTest::XdpIngress(daemon)));
    }
    let load = |lab: &BenchLab, seconds: u64| {
        WrkLoad {
            client: lab.client(),
            cpus: LOAD_CPU,
            url: format!("http://{}/", lab.proxy_addr()),
            script: &script,
            hosts: 1,
            connections: args.connections,
            duration: Duration::from_secs(seconds),
        }
        .run()
    };
    if args.warmup > 0 {
        for (name, lab, _) in &started {
            progress.phase(&format!("warming up, {name} ({} s)", args.warmup));
            load(lab, args.warmup)?;
        }
    }
    let samples = alternate_rounds(args.rounds, &mut started, |round, (name, lab, daemon)| {
        progress.phase(&format!(
            "round {round}/{}, {name} ({} s of wrk)",
            args.rounds, args.seconds
        ));
        let (load, cpu) = account_round(daemon, || load(lab, args.seconds))?;
        progress.detail(&format!(
            "{} requests/s, p50 {}, p99 {}, {} failed, proxy CPU {}",
            report::thousands(load.requests_per_second),
            report::latency(load.p50),
            report::latency(load.p99),
            load.failures(),
            report::percent(cpu.proxy_cpu),
        ));
        Ok(Sample { load, cpu })
    })?;
    let lines = match &started[1].2 {
        UnderTest::XdpIngress(daemon) => daemon
            .log()
            .lines()
            .filter(|line| line.contains("\" 200 "))
            .count(),
        UnderTest::Nginx(_) => 0,
    };

    progress.phase("Results");
    let text = render(args, &samples, lines);
    println!("\n{text}");
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("access-log.md");
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("(also in {})", out.display());
    progress.phase("Done: removing the labs");
    Ok(())
}

/// The table: each variant's medians, then the cost of the log.
fn render(args: &AccessLogArgs, samples: &[Vec<Sample>], lines: usize) -> String {
    let medians: Vec<(f64, f64)> = samples
        .iter()
        .map(|samples| {
            let counted = counted_rounds(samples, |s| s.cpu.proxy_waited);
            let rate = median_of(&counted, |s| s.load.requests_per_second);
            // CPU seconds of the proxy (the writer thread included) per
            // request, in microseconds.
            let cpu = median_of(&counted, |s| {
                s.cpu.proxy_cpu / s.load.requests_per_second.max(1.0) * 1e6
            });
            (rate, cpu)
        })
        .collect();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "## Access log: on against off (xdp-ingress, 1 core, {} connections, {} x {} s)\n",
        args.connections, args.rounds, args.seconds
    );
    let _ = writeln!(text, "| | requests/s | proxy CPU per request |");
    let _ = writeln!(text, "|---|---|---|");
    for (name, (rate, cpu)) in ["`--access-log off`", "`--access-log stdout`"]
        .iter()
        .zip(&medians)
    {
        let _ = writeln!(
            text,
            "| {name} | {} | {cpu:.2} us |",
            report::thousands(*rate)
        );
    }
    let (off, on) = (medians[0], medians[1]);
    let throughput = 1.0 - on.0 / off.0.max(1.0);
    let cpu = on.1 / off.1.max(f64::MIN_POSITIVE) - 1.0;
    let verdict = |cost: f64| if cost < TARGET { "met" } else { "missed" };
    let _ = writeln!(
        text,
        "\nCost of the log: {} fewer requests/s ({} the target of under {}), {} more CPU per \
         request ({}); {lines} lines written.",
        report::percent(throughput),
        verdict(throughput),
        report::percent(TARGET),
        report::percent(cpu),
        verdict(cpu),
    );
    text
}
