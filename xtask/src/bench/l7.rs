//! `cargo xtask bench l7`: xdp-ingress against nginx (configured as
//! ingress-nginx configures it) as HTTP/1.1 proxies, in one run, in the
//! same lab, with the same client (wrk), backends (one `lab-backend` on
//! three endpoints) and one CPU core for the proxy under test.
//!
//! Each proxy gets its own copy of the lab (identical namespaces, links and
//! backend), so both run side by side, idle while the other is measured,
//! and the measurements alternate: xdp-ingress, nginx, xdp-ingress, ...
//! (`--rounds`), which spreads whatever else the machine does over both.
//!
//! For 1 and for 10,000 Ingresses: start both, check they serve, warm them
//! up (connection pools), measure requests/s and latency under wrk in
//! rounds (medians reported), read their peak RSS, then time route changes
//! (a new Ingress; a new server block and a reload) to the first request
//! served. Prints one table with the ratios and the targets, also written
//! to `target/bench/l7.md`. With `--perf`, profiles both afterwards.

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use xdp_ingress_lab::ScratchDir;

use super::{
    Binaries, Progress, catch_interrupts, check_interrupted,
    instructions::{self, InstructionCount},
    lab::{BenchLab, LOAD_CPU, PROXY_CPU},
    measure::{
        self, CpuSample, DISTURBED_THRESHOLD, all_disturbed, counted_rounds, median_of, spread_of,
    },
    nginx::UpstreamLayout,
    perf, prepare, probe, raise_open_file_limit,
    report::{self, Table},
    side_by_side::{PROXIES, ProxyLabs, RoundCpu, account_round, alternate_rounds},
    target_dir,
    under_test::{Proxy, ProxyOptions, UnderTest},
    wrk::{HOSTS_SCRIPT, WrkLoad, WrkReport},
    xdp::{self, XdpMode},
};

/// Options of `cargo xtask bench l7`.
#[derive(Debug, clap::Args)]
pub struct L7Args {
    /// Seconds of measured load per round, proxy and row.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Measurements per proxy and row, alternating between the proxies;
    /// the medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds of load before the first round (fills connection pools).
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// wrk's open connections (one wrk thread).
    #[arg(long, default_value_t = 50)]
    pub connections: u32,
    /// Ingresses (hosts) of the second row.
    #[arg(long, default_value_t = 10_000)]
    pub ingresses: usize,
    /// Route changes timed per proxy and row (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub changes: usize,
    /// nginx's upstreams: one shared by every Service, with one keep-alive
    /// cache (as ingress-nginx's `upstream_balancer`), or one per Service
    /// with a keep-alive cache each (its configuration before the Lua
    /// balancer).
    #[arg(long, value_enum, default_value = "shared")]
    pub nginx_upstreams: UpstreamLayout,
    /// Where xdp-ingress's XDP program runs: native (as deployed), skb, or
    /// off (the proxy alone, to tell the program's cost from the proxy's).
    #[arg(long, value_enum, default_value = "native")]
    pub xdp_mode: XdpMode,
    /// Afterwards, profile each proxy under the 1-Ingress load with
    /// `perf record` (reports in target/bench/).
    #[arg(long)]
    pub perf: bool,
    /// Skip counting each proxy's user-space instructions per request
    /// under callgrind (about 40 s; exact where the timed rows are noisy).
    #[arg(long)]
    pub no_instructions: bool,
    /// Use the release binaries as they are (no setup, no build).
    #[arg(long)]
    pub no_build: bool,
}

impl L7Args {
    fn options(&self) -> ProxyOptions {
        ProxyOptions {
            xdp_mode: self.xdp_mode,
            nginx_upstreams: self.nginx_upstreams,
        }
    }

    /// The rows: 1 Ingress, then `--ingresses`.
    fn counts(&self) -> Vec<usize> {
        if self.ingresses == 1 {
            vec![1]
        } else {
            vec![1, self.ingresses]
        }
    }
}

/// How long a change may take to serve before the run fails (nginx
/// reloads 10,000 upstreams in seconds).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two changes, so one reload has settled before the next.
const CHANGE_PAUSE: Duration = Duration::from_millis(300);
/// Machine load (outside the lab) above which results are flagged noisy.
const QUIET_THRESHOLD: f64 = 0.10;

/// One measured round of one proxy.
#[derive(Debug, Clone)]
struct Sample {
    load: WrkReport,
    cpu: RoundCpu,
}

/// What one proxy did with one configuration.
#[derive(Debug, Clone)]
struct Run {
    proxy: Proxy,
    ingresses: usize,
    /// From start to serving.
    startup: Duration,
    samples: Vec<Sample>,
    peak_rss_kib: u64,
    /// Proportional set size after the load.
    pss_kib: u64,
    /// From each change to the first request served by its route.
    changes: Vec<Duration>,
}

impl Run {
    /// The rounds that count: those no other process disturbed, or all of
    /// them when every one was.
    fn counted(&self) -> Vec<&Sample> {
        counted_rounds(&self.samples, |s| s.cpu.proxy_waited)
    }

    /// The median over the counted rounds of `metric`.
    fn median(&self, metric: impl Fn(&Sample) -> f64) -> f64 {
        median_of(&self.counted(), metric)
    }

    fn requests_per_second(&self) -> f64 {
        self.median(|s| s.load.requests_per_second)
    }

    fn p50(&self) -> Duration {
        Duration::from_secs_f64(self.median(|s| s.load.p50.as_secs_f64()))
    }

    fn p99(&self) -> Duration {
        Duration::from_secs_f64(self.median(|s| s.load.p99.as_secs_f64()))
    }

    fn failures(&self) -> u64 {
        self.samples.iter().map(|s| s.load.failures()).sum()
    }

    /// The lowest and highest requests/s of the counted rounds.
    fn spread(&self) -> (f64, f64) {
        spread_of(&self.counted(), |s| s.load.requests_per_second)
    }

    /// CPU time per request: the proxy's processes, and its whole core.
    fn per_request(&self) -> (f64, f64) {
        (
            self.median(|s| s.cpu.proxy_cpu / s.load.requests_per_second.max(1.0)),
            self.median(|s| s.cpu.proxy_core_busy / s.load.requests_per_second.max(1.0)),
        )
    }

    /// True when every round was disturbed.
    fn disturbed(&self) -> bool {
        all_disturbed(&self.samples, |s| s.cpu.proxy_waited)
    }

    /// `3 of 3`: how many rounds the medians stand on.
    fn rounds(&self) -> String {
        format!("{} of {}", self.counted().len(), self.samples.len())
    }
}

/// Everything one invocation shares: one lab per proxy.
struct Bench<'a> {
    args: &'a L7Args,
    binaries: &'a Binaries,
    progress: Progress,
    script: &'a Path,
    labs: ProxyLabs,
}

/// `cargo xtask bench l7`.
pub fn run(args: &L7Args) -> Result<()> {
    if args.seconds == 0 || args.rounds == 0 || args.connections == 0 || args.ingresses == 0 {
        bail!("--seconds, --rounds, --connections and --ingresses must be at least 1");
    }
    let binaries = prepare(!args.no_build)?;
    let open_files = raise_open_file_limit(1 << 20).context("raising the open-file limit")?;
    catch_interrupts();
    let progress = Progress::start();
    progress.detail(&format!(
        "open-file limit of the lab's processes: {open_files}"
    ));

    progress.phase("Checking that the machine is otherwise idle (1 s)");
    let before = CpuSample::now()?;
    std::thread::sleep(Duration::from_secs(1));
    let background = CpuSample::now()?.machine_busy_since(&before);
    progress.detail(&format!(
        "CPUs busy {} before the labs start{}",
        report::percent(background),
        if background > QUIET_THRESHOLD {
            ": something else is running, the results will be noisy"
        } else {
            ""
        }
    ));

    let labs = ProxyLabs::create(&binaries, &progress)?;
    let scratch = ScratchDir::new("bench")?;
    let script = scratch.write("hosts.lua", HOSTS_SCRIPT)?;
    let mut bench = Bench {
        args,
        binaries: &binaries,
        progress,
        script: &script,
        labs,
    };

    let mut runs = Vec::new();
    for count in args.counts() {
        check_interrupted()?;
        runs.extend(bench.row(count)?);
    }

    let counts = if args.no_instructions {
        Vec::new()
    } else {
        bench.count_instructions()?
    };

    bench.progress.phase("Results");
    let mut text = render(args, &runs, background);
    text.push_str(&render_instructions(&counts));
    println!("\n{text}");
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("l7.md");
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("(also in {})", out.display());

    if args.perf {
        bench.profile(&out_dir)?;
    }
    bench.progress.phase("Done: removing the labs");
    Ok(())
}

impl Bench<'_> {
    fn lab(&self, proxy: Proxy) -> &BenchLab {
        self.labs.of(proxy)
    }

    /// One row: both proxies with `count` Ingresses, started side by side,
    /// measured in alternating rounds, then their route changes timed.
    fn row(&mut self, count: usize) -> Result<Vec<Run>> {
        let label = ingresses(count);
        let mut started = Vec::new();
        for proxy in PROXIES {
            check_interrupted()?;
            self.progress
                .phase(&format!("{label}: starting {}", proxy.name()));
            let clock = Instant::now();
            let under_test = UnderTest::start(
                proxy,
                self.lab(proxy),
                self.binaries,
                count,
                &self.args.options(),
            )?;
            let startup = clock.elapsed();
            self.progress.detail(&format!(
                "serving after {} ({}, pids {:?})",
                report::latency(startup),
                under_test.workers(),
                under_test.pids()
            ));
            let lab = self.lab(proxy);
            let hosts = [0, count / 2, count - 1].map(xdp::host);
            probe::check_serving(lab.client(), lab.proxy_addr(), &hosts)?;
            started.push((proxy, under_test, startup));
        }

        if self.args.warmup > 0 {
            for (proxy, _, _) in &started {
                check_interrupted()?;
                self.progress.phase(&format!(
                    "{label}: warming up {} ({} s)",
                    proxy.name(),
                    self.args.warmup
                ));
                self.load(*proxy, count, self.args.warmup)?;
            }
        }

        let samples = alternate_rounds(
            self.args.rounds,
            &mut started,
            |round, (proxy, under_test, _)| {
                self.progress.phase(&format!(
                    "{label}: round {round}/{}, {} ({} s of wrk)",
                    self.args.rounds,
                    proxy.name(),
                    self.args.seconds
                ));
                let sample = self.sample(*proxy, under_test, count)?;
                self.progress.detail(&format!(
                    "{} requests/s, p50 {}, p99 {}, {} failed, proxy CPU {} (waited for it {})",
                    report::thousands(sample.load.requests_per_second),
                    report::latency(sample.load.p50),
                    report::latency(sample.load.p99),
                    sample.load.failures(),
                    report::percent(sample.cpu.proxy_cpu),
                    report::percent(sample.cpu.proxy_waited)
                ));
                Ok(sample)
            },
        )?;

        let mut runs = Vec::new();
        for ((proxy, under_test, startup), samples) in started.into_iter().zip(samples) {
            if samples.iter().any(|s| s.load.failures() > 0) {
                self.progress
                    .detail(&format!("{} failed requests; its log says:", proxy.name()));
                for line in under_test.log_summary(5) {
                    self.progress.detail(&format!("  {line}"));
                }
            }
            let peak_rss_kib = measure::peak_rss_kib(&under_test.pids());
            let pss_kib = measure::pss_kib(&under_test.pids());
            let changes = self.changes(proxy, &under_test, &label)?;
            runs.push(Run {
                proxy,
                ingresses: count,
                startup,
                samples,
                peak_rss_kib,
                pss_kib,
                changes,
            });
            // The guard stops it here, before the next proxy's changes.
        }
        Ok(runs)
    }

    /// One round of load against `proxy`, with its CPU accounting.
    fn sample(&self, proxy: Proxy, under_test: &mut UnderTest, count: usize) -> Result<Sample> {
        let (load, cpu) = account_round(under_test, || self.load(proxy, count, self.args.seconds))?;
        Ok(Sample { load, cpu })
    }

    /// Times `--changes` route changes of `proxy`.
    fn changes(&self, proxy: Proxy, under_test: &UnderTest, label: &str) -> Result<Vec<Duration>> {
        let lab = self.lab(proxy);
        let mut changes = Vec::new();
        for index in 0..self.args.changes {
            check_interrupted()?;
            self.progress.phase(&format!(
                "{label}: {} route change {}/{}",
                proxy.name(),
                index + 1,
                self.args.changes
            ));
            let name = format!("change-{index}");
            let host = format!("new{index}.bench.example");
            let since = Instant::now();
            under_test.add_ingress(&name, &host)?;
            let took =
                probe::time_to_serve(lab.client(), lab.proxy_addr(), &host, since, CHANGE_TIMEOUT)
                    .with_context(|| format!("{} did not serve a new route", proxy.name()))?;
            self.progress.detail(&format!(
                "{host} served {} after the change",
                report::latency(took)
            ));
            changes.push(took);
            std::thread::sleep(CHANGE_PAUSE);
            if let Some(reload) = under_test.last_reload() {
                self.progress.detail(&reload);
            }
        }
        Ok(changes)
    }

    /// wrk from `proxy`'s client against it, over `count` hosts.
    fn load(&self, proxy: Proxy, count: usize, seconds: u64) -> Result<WrkReport> {
        let lab = self.lab(proxy);
        WrkLoad {
            client: lab.client(),
            cpus: LOAD_CPU,
            url: format!("http://{}/", lab.proxy_addr()),
            script: self.script,
            hosts: count,
            connections: self.args.connections,
            duration: Duration::from_secs(seconds),
        }
        .run()
    }

    /// Each proxy's user-space instructions per request (callgrind).
    fn count_instructions(&self) -> Result<Vec<(Proxy, InstructionCount)>> {
        if !instructions::available() {
            bail!("valgrind is missing: run `cargo xtask setup` (or pass --no-instructions)");
        }
        let mut counts = Vec::new();
        for proxy in PROXIES {
            check_interrupted()?;
            self.progress.phase(&format!(
                "{}: user-space instructions per request under callgrind (1 Ingress, {} s of wrk)",
                proxy.name(),
                INSTRUCTIONS_SECONDS
            ));
            let count = instructions::count(
                proxy,
                self.binaries,
                self.args.warmup,
                INSTRUCTIONS_SECONDS,
                self.args.connections,
            )?;
            self.progress.detail(&format!(
                "{} instructions per request ({} requests)",
                report::thousands(count.per_request()),
                report::thousands(count.requests as f64)
            ));
            counts.push((proxy, count));
        }
        Ok(counts)
    }

    /// Profiles each proxy (1 Ingress) under load with perf; writes the
    /// reports (and perf.data) to `out_dir`, prints their heads.
    fn profile(&self, out_dir: &Path) -> Result<()> {
        if !perf::available() {
            bail!("perf is not usable here: install it with `apt-get install linux-perf`");
        }
        for proxy in PROXIES {
            check_interrupted()?;
            let label = format!("profile of {}, 1 Ingress", proxy.name());
            self.progress
                .phase(&format!("{label}: starting and warming up"));
            let mut under_test = UnderTest::start(
                proxy,
                self.lab(proxy),
                self.binaries,
                1,
                &self.args.options(),
            )?;
            self.load(proxy, 1, self.args.warmup.max(1))?;
            self.progress.phase(&format!(
                "{label}: perf record during {} s of wrk",
                self.args.seconds
            ));
            let data = out_dir.join(format!("l7-{}.perf.data", proxy.name()));
            let duration = Duration::from_secs(self.args.seconds);
            let recording = perf::Recording::start(&under_test.pids(), duration, &data)?;
            let load = self.load(proxy, 1, self.args.seconds + 1)?;
            let profile = recording.finish(Duration::from_secs(60))?;
            under_test.check_running()?;
            let text = format!(
                "{} under wrk (1 Ingress, {} requests/s while profiled):\n\n{profile}",
                proxy.name(),
                report::thousands(load.requests_per_second)
            );
            let file = out_dir.join(format!("l7-perf-{}.txt", proxy.name()));
            std::fs::write(&file, &text)?;
            for line in text.lines().take(45) {
                self.progress.detail(line);
            }
            self.progress.detail(&format!(
                "(all of it in {}; perf report -i {})",
                file.display(),
                data.display()
            ));
        }
        Ok(())
    }
}

/// Seconds of wrk while callgrind counts (a few thousand requests under valgrind).
const INSTRUCTIONS_SECONDS: u64 = 8;

/// The instruction counts as a small table after the main one.
fn render_instructions(counts: &[(Proxy, InstructionCount)]) -> String {
    let find = |proxy: Proxy| counts.iter().find(|(p, _)| *p == proxy).map(|(_, c)| c);
    let (Some(x), Some(n)) = (find(Proxy::XdpIngress), find(Proxy::Nginx)) else {
        return String::new();
    };
    format!(
        "\n\nUser-space instructions per request (callgrind, 1 Ingress, the proxy alone on loopback; \
         the kernel's part is the same for both): xdp-ingress {} ({} requests), nginx {} ({} \
         requests), ratio {}.\n",
        report::thousands(x.per_request()),
        report::thousands(x.requests as f64),
        report::thousands(n.per_request()),
        report::thousands(n.requests as f64),
        report::ratio(x.per_request(), n.per_request())
    )
}

fn ingresses(count: usize) -> String {
    if count == 1 {
        "1 Ingress".to_owned()
    } else {
        format!("{} Ingresses", report::thousands(count as f64))
    }
}

/// The results table with the targets, and how it was measured.
fn render(args: &L7Args, runs: &[Run], background: f64) -> String {
    let find = |proxy: Proxy, count: usize| {
        runs.iter()
            .find(|run| run.proxy == proxy && run.ingresses == count)
    };
    let mut table = Table::new(&["", "xdp-ingress", "nginx", "xdp-ingress / nginx", "target"]);
    let single = (find(Proxy::XdpIngress, 1), find(Proxy::Nginx, 1));
    for count in args.counts() {
        let (Some(x), Some(n)) = (find(Proxy::XdpIngress, count), find(Proxy::Nginx, count)) else {
            continue;
        };
        let first = count == 1;
        table.section(&ingresses(count));
        let rps = |run: &Run| {
            let (lo, hi) = run.spread();
            format!(
                "{} ({}-{})",
                report::thousands(run.requests_per_second()),
                report::thousands(lo),
                report::thousands(hi)
            )
        };
        let rps_ratio = x.requests_per_second() / n.requests_per_second();
        table.row(vec![
            format!(
                "requests/s, median (range) of rounds {} / {}",
                x.rounds(),
                n.rounds()
            ),
            rps(x),
            rps(n),
            report::ratio(x.requests_per_second(), n.requests_per_second()),
            if first {
                report::verdict(">= 1.30x", rps_ratio >= 1.3)
            } else {
                String::new()
            },
        ]);
        if !first && let (Some(x1), Some(n1)) = single {
            let lost =
                |run: &Run, one: &Run| 1.0 - run.requests_per_second() / one.requests_per_second();
            table.row(vec![
                "lost vs 1 Ingress".into(),
                report::percent(lost(x, x1)),
                report::percent(lost(n, n1)),
                String::new(),
                report::verdict("xdp-ingress < 5%", lost(x, x1) < 0.05),
            ]);
        }
        table.row(vec![
            "p50 latency".into(),
            report::latency(x.p50()),
            report::latency(n.p50()),
            report::ratio(x.p50().as_secs_f64(), n.p50().as_secs_f64()),
            String::new(),
        ]);
        table.row(vec![
            "p99 latency".into(),
            report::latency(x.p99()),
            report::latency(n.p99()),
            report::ratio(x.p99().as_secs_f64(), n.p99().as_secs_f64()),
            if first {
                report::verdict("<= 1.00x", x.p99() <= n.p99())
            } else {
                String::new()
            },
        ]);
        table.row(vec![
            "peak RSS".into(),
            report::mebibytes(x.peak_rss_kib),
            report::mebibytes(n.peak_rss_kib),
            report::ratio(x.peak_rss_kib as f64, n.peak_rss_kib as f64),
            if first {
                String::new()
            } else {
                report::verdict("< 1.00x", x.peak_rss_kib < n.peak_rss_kib)
            },
        ]);
        table.row(vec![
            "PSS after the load (shared pages counted once)".into(),
            report::mebibytes(x.pss_kib),
            report::mebibytes(n.pss_kib),
            report::ratio(x.pss_kib as f64, n.pss_kib as f64),
            String::new(),
        ]);
        table.row(vec![
            "failed requests (non-2xx, socket errors)".into(),
            x.failures().to_string(),
            n.failures().to_string(),
            String::new(),
            report::verdict("0", x.failures() == 0 && n.failures() == 0),
        ]);
        let change = |run: &Run| report::median(&run.changes);
        let show = |run: &Run| match change(run) {
            Some(median) => format!(
                "{} (max {})",
                report::latency(median),
                report::latency(run.changes.iter().max().copied().unwrap_or_default())
            ),
            None => "-".to_owned(),
        };
        table.row(vec![
            format!("change to serving, median of {}", x.changes.len()),
            show(x),
            show(n),
            match (change(x), change(n)) {
                (Some(a), Some(b)) => report::ratio(a.as_secs_f64(), b.as_secs_f64()),
                _ => "-".to_owned(),
            },
            match change(x) {
                Some(median) => report::verdict("< 100 ms", median < Duration::from_millis(100)),
                None => String::new(),
            },
        ]);
        table.row(vec![
            "start to serving".into(),
            report::latency(x.startup),
            report::latency(n.startup),
            String::new(),
            String::new(),
        ]);
        let ((x_process, x_core), (n_process, n_core)) = (x.per_request(), n.per_request());
        table.row(vec![
            "CPU per request: proxy / its core (softirqs too)".into(),
            format!("{} / {}", micros(x_process), micros(x_core)),
            format!("{} / {}", micros(n_process), micros(n_core)),
            report::ratio(x_core, n_core),
            String::new(),
        ]);
        let cpu = |run: &Run| {
            format!(
                "{} ({})",
                report::percent(run.median(|s| s.cpu.proxy_cpu)),
                report::percent(run.median(|s| s.cpu.proxy_waited))
            )
        };
        table.row(vec![
            "proxy CPU time (waiting for its core)".into(),
            cpu(x),
            cpu(n),
            String::new(),
            String::new(),
        ]);
        let cores = |run: &Run| {
            format!(
                "{} / {}",
                report::percent(run.median(|s| s.cpu.proxy_core_busy)),
                report::percent(run.median(|s| s.cpu.load_core_busy))
            )
        };
        table.row(vec![
            format!("core {PROXY_CPU} (proxy) / core {LOAD_CPU} (wrk, backends) busy"),
            cores(x),
            cores(n),
            String::new(),
            String::new(),
        ]);
    }
    let mut text = String::from("# cargo xtask bench l7\n\n");
    text.push_str(&table.render());
    let disturbed: Vec<String> = runs
        .iter()
        .filter(|run| run.disturbed())
        .map(|run| format!("{}, {}", run.proxy.name(), ingresses(run.ingresses)))
        .collect();
    if !disturbed.is_empty() {
        let _ = write!(
            text,
            "\n**Disturbed:** other processes took the proxy's core for more than {} of every \
             round ({}): run again on an idle machine before trusting the ratios.\n",
            report::percent(DISTURBED_THRESHOLD),
            disturbed.join("; ")
        );
    }
    let saturated_load = runs.iter().any(|run| {
        run.median(|s| s.cpu.load_core_busy) > 0.9 && run.median(|s| s.cpu.proxy_core_busy) < 0.9
    });
    if saturated_load {
        text.push_str(
            "\n**Load-bound:** a proxy's core was not saturated while the load core was: that \
             proxy's requests/s is the lab's ceiling, not its own; compare CPU per request.\n",
        );
    }
    let _ = write!(
        text,
        "\nwrk -t1 -c{connections} -d{seconds}s --latency, {rounds} round(s) per proxy alternating \
         between them (after {warmup} s of warm-up; medians over the rounds in which the proxy \
         waited for its core less than {threshold} of the time, all rounds if none did), a random Host per request among the row's \
         Ingresses; each proxy in its own copy of the lab; client and lab-backend (3 endpoints) on \
         CPU {LOAD_CPU}, the proxy on CPU {PROXY_CPU} (xdp-ingress: 1 tokio worker, {xdp}; nginx \
         {version}: worker_processes 1, upstreams {layout}, no access log, like xdp-ingress). Peak \
         RSS is VmHWM (nginx: master + worker). Latencies are wrk's (closed loop). A change is a \
         new Ingress file (xdp-ingress) or a new server block and `nginx -s reload`, timed to the \
         first 200 for its host. CPUs busy before the run: {background}.\n",
        connections = args.connections,
        seconds = args.seconds,
        rounds = args.rounds,
        warmup = args.warmup,
        xdp = args.xdp_mode.describe(),
        version = nginx_version(),
        layout = match args.nginx_upstreams {
            UpstreamLayout::PerService => "one per Service (keepalive 320 each)",
            UpstreamLayout::Shared => "one shared by all Services (keepalive 320)",
        },
        background = report::percent(background),
        threshold = report::percent(DISTURBED_THRESHOLD),
    );
    text
}

/// Seconds as `12.3 µs`.
fn micros(seconds: f64) -> String {
    format!("{:.1} µs", seconds * 1e6)
}

/// `1.22.1`, from `nginx -v`.
fn nginx_version() -> String {
    std::process::Command::new("nginx")
        .arg("-v")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .rsplit_once('/')
                .map(|(_, version)| version.to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}
