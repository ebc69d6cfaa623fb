//! A load tool of `bench l4` run on the load core, with what that core did
//! meanwhile: the shared measuring of the generator's and the injector's
//! rounds.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use xdp_ingress_lab::Netns;

use super::{
    lab::{LOAD_CPU, LOAD_CPU_INDEX, PROXY_CPU_INDEX},
    measure::{self, CpuSample},
};

/// How long a load tool may run beyond the seconds it was asked for.
const GRACE: Duration = Duration::from_secs(30);

/// One run of a load tool.
pub struct LoadRun {
    /// What it printed (its JSON report).
    pub stdout: String,
    /// Wall time of the run, in seconds.
    pub wall: f64,
    /// The load core's busy time over the run (all processes, softirqs), in
    /// seconds.
    pub load_core_busy: f64,
    /// How busy the other core was over the run (0..=1).
    pub other_core_busy: f64,
    /// The load core's `ksoftirqd`'s CPU time over the run, in seconds.
    pub ksoftirqd: f64,
    /// What `delivered` counted over the run and just after it.
    pub delivered: u64,
}

impl LoadRun {
    /// The share of the run other processes took of the load core: its busy
    /// time beyond `tasks` (the tool's and `ksoftirqd`'s CPU time, seconds).
    pub fn others(&self, tasks: f64) -> f64 {
        ((self.load_core_busy - tasks) / self.wall.max(1e-9)).max(0.0)
    }
}

/// Runs `command` (a load tool and its arguments) in `ns`, pinned to the
/// load core, for `seconds` and at most [`GRACE`] more; `delivered` counts
/// what reached the backends (read before, and 200 ms after, for what was
/// still in flight).
pub fn run_on_load_core(
    ns: &Netns,
    command: &[&str],
    seconds: u64,
    ksoftirqd: u32,
    delivered: impl Fn() -> Result<u64>,
) -> Result<LoadRun> {
    let mut pinned = vec!["taskset", "-c", LOAD_CPU];
    pinned.extend_from_slice(command);
    let delivered_before = delivered()?;
    let cpu_before = CpuSample::now()?;
    let ksoftirqd_before = measure::cpu_time(&[ksoftirqd]);
    let started = Instant::now();
    let out = ns.exec_timeout(&pinned, Duration::from_secs(seconds) + GRACE)?;
    let wall = started.elapsed().as_secs_f64();
    let cpu_after = CpuSample::now()?;
    let ksoftirqd_time = measure::cpu_time(&[ksoftirqd]).saturating_sub(ksoftirqd_before);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{} failed ({}): {stdout}{}",
            command.first().unwrap_or(&"the load tool"),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let delivered = delivered()?.saturating_sub(delivered_before);
    Ok(LoadRun {
        stdout,
        wall,
        load_core_busy: cpu_after.busy_since(&cpu_before, LOAD_CPU_INDEX) * wall,
        other_core_busy: cpu_after.busy_since(&cpu_before, PROXY_CPU_INDEX),
        ksoftirqd: ksoftirqd_time.as_secs_f64(),
        delivered,
    })
}
