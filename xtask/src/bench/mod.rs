//! `cargo xtask bench`: xdp-ingress against what it replaces, in the lab,
//! with the same client, backends and CPU budget for both. One subcommand
//! per comparison: `l7` (HTTP proxying, against nginx configured as
//! ingress-nginx configures it), `tls` (HTTPS termination), `l4` (the
//! kernel L4 tier, against nftables DNAT), `cluster` (xdp-ingress alone
//! as a controller of a real API server at scale) and `access-log` (the
//! access log on against off).
//!
//! Every benchmark builds release binaries first, runs in network
//! namespaces of the shared lab, bounds every wait, and removes what it
//! created on exit, on error and on Ctrl-C.

mod access_log;
mod api_proxy;
mod audit;
mod cluster;
mod instructions;
mod l4;
mod l4_checks;
mod l4_inject;
mod l7;
mod lab;
mod load_core;
mod measure;
mod nginx;
mod perf;
mod probe;
mod report;
mod side_by_side;
mod tls;
mod under_test;
mod wrk;
mod xdp;

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use anyhow::{Result, bail};
use clap::Subcommand;

use crate::{
    command::{self, is_root, step, workspace_root},
    ebpf::{self, BuildEbpfArgs},
    setup,
};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    target: BenchTarget,
}

#[derive(Debug, Subcommand)]
enum BenchTarget {
    /// HTTP/1.1 proxying: xdp-ingress against nginx as ingress-nginx
    /// configures it, one CPU core each, with 1 and 10,000 Ingresses, and
    /// the time from a manifest change to the first request served.
    L7(l7::L7Args),
    /// HTTPS termination: full handshakes/s and kept-alive HTTPS
    /// requests/s, ECDSA P-256 and RSA-2048, xdp-ingress against nginx with
    /// the same certificate, one CPU core each.
    Tls(tls::TlsArgs),
    /// The kernel L4 tier: the edge's CPU cost per forwarded UDP packet,
    /// xdp-ingress against kube-proxy-style nftables DNAT (over an edge
    /// that drops at XDP), TCP requests/s through both, and the XDP fast
    /// path's ns/packet by BPF_PROG_TEST_RUN.
    L4(l4::L4Args),
    /// xdp-ingress watching a real API server: 10,000 Ingresses created
    /// through the API until every host answers, peak RSS, the API
    /// requests it made, and EndpointSlice updates followed (p50/p99).
    Cluster(cluster::ClusterArgs),
    /// The access log's cost per request: xdp-ingress with
    /// `--access-log off` and `--access-log stdout` side by side (one
    /// core each, alternating rounds), as a ratio against the target.
    AccessLog(access_log::AccessLogArgs),
}

/// `cargo xtask bench ...`.
pub fn run(args: &BenchArgs) -> Result<()> {
    match &args.target {
        BenchTarget::L7(l7_args) => l7::run(l7_args),
        BenchTarget::Tls(tls_args) => tls::run(tls_args),
        BenchTarget::L4(l4_args) => l4::run(l4_args),
        BenchTarget::Cluster(cluster_args) => cluster::run(cluster_args),
        BenchTarget::AccessLog(log_args) => access_log::run(log_args),
    }
}

/// The release binaries a benchmark runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `xdp-ingress`.
    pub daemon: PathBuf,
    /// `lab-backend`.
    pub backend: PathBuf,
}

/// Where cargo puts its output: `$CARGO_TARGET_DIR` or `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Checks root, sets up what is missing, builds the XDP object and the
/// release binaries (unless `build` is false), and returns their paths.
pub fn prepare(build: bool) -> Result<Binaries> {
    if !is_root() {
        bail!("the benchmarks create network namespaces and load XDP: run them as root");
    }
    if build {
        let missing = setup::missing()?;
        if !missing.is_empty() {
            step(&format!(
                "Setting up first (missing: {})",
                missing.join(", ")
            ));
            setup::run()?;
        }
        ebpf::build(&BuildEbpfArgs { release: true })?;
        step("Building xdp-ingress and lab-backend (release)");
        command::run(Command::new("cargo").current_dir(workspace_root()).args([
            "build",
            "--release",
            "--package",
            "ingress-userspace",
            "--package",
            "xdp-ingress-lab",
        ]))?;
    }
    let release = target_dir().join("release");
    let binaries = Binaries {
        daemon: release.join("xdp-ingress"),
        backend: release.join("lab-backend"),
    };
    for binary in [&binaries.daemon, &binaries.backend] {
        if !binary.is_file() {
            bail!(
                "{} is missing: build it with `cargo build --release -p ingress-userspace -p xdp-ingress-lab`",
                binary.display()
            );
        }
    }
    Ok(binaries)
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on Ctrl-C (and SIGTERM) only sets a flag that the benchmark
/// checks between steps; the lab's processes have their own process
/// groups, so their guards stop them in order.
pub fn catch_interrupts() {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
}

/// True once Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails when Ctrl-C was pressed, so the guards clean up on the way out.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Raises this process's open-file limit (which the lab's processes
/// inherit) towards `wanted`, as far as the hard limit allows when it cannot
/// be raised: proxies with 10,000 upstreams hold thousands of connections.
/// Returns the limit now in force.
pub fn raise_open_file_limit(wanted: u64) -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if limit.rlim_cur >= wanted {
            return Ok(limit.rlim_cur);
        }
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max.max(wanted),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return Ok(wanted);
        }
        // Not allowed past the hard limit here: up to it, then.
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(limit.rlim_cur)
}

/// Progress lines: `==> [  12.3 s] message`, timed from the start.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
}

impl Progress {
    /// Starts the clock.
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
        }
    }

    /// Prints a phase heading with the time since the start.
    pub fn phase(&self, message: &str) {
        step(&format!(
            "[{:>6.1} s] {message}",
            self.started.elapsed().as_secs_f64()
        ));
    }

    /// Prints an indented detail line.
    pub fn detail(&self, message: &str) {
        println!("    {message}");
    }
}
