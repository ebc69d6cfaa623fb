//! What the kernel says about processes and CPUs: peak memory, CPU time,
//! threads and children of a process (`/proc/PID`), and how busy each CPU
//! was (`/proc/stat`).

use std::time::Duration;

use anyhow::{Context, Result};

/// A field of `/proc/PID/status` in KiB (`VmHWM`, `VmRSS`); 0 when the
/// process is gone.
fn status_kib(pid: u32, field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Peak resident memory (`VmHWM`), summed over `pids`, in KiB.
pub fn peak_rss_kib(pids: &[u32]) -> u64 {
    pids.iter().map(|&pid| status_kib(pid, "VmHWM")).sum()
}

/// Proportional set size now (`Pss` of `/proc/PID/smaps_rollup`: shared
/// pages split between the processes sharing them), summed over `pids`, in
/// KiB. Unlike a sum of RSS, counts nginx's master and worker pages once.
pub fn pss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|rollup| {
            rollup
                .lines()
                .find_map(|line| line.strip_prefix("Pss:"))
                .and_then(|value| value.split_whitespace().next()?.parse::<u64>().ok())
        })
        .sum()
}

/// CPU time (user + system, all threads) used so far by `pids`.
pub fn cpu_time(pids: &[u32]) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // The command name may hold spaces: fields start after its ')'.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of stat(5), 12 and 13 here.
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    Duration::from_secs_f64(ticks as f64 / ticks_per_second)
}

/// Time the threads of `pids` spent runnable but waiting for a CPU so far
/// (`/proc/PID/task/TID/schedstat`): how much other work got in the way.
pub fn run_delay(pids: &[u32]) -> Duration {
    let nanos: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok())
        .flat_map(|tasks| tasks.flatten())
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// The names of a process's threads (`tokio-rt-worker`, ...).
pub fn thread_names(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// The pids of `parent`'s child processes.
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                    fields.get(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Jiffies per CPU from `/proc/stat`: (busy, total).
#[derive(Debug, Clone)]
pub struct CpuSample {
    cpus: Vec<(u64, u64)>,
}

impl CpuSample {
    /// Reads `/proc/stat` now.
    pub fn now() -> Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let cpus = stat
            .lines()
            .filter(|line| {
                line.strip_prefix("cpu")
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .map(|line| {
                let values: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|v| v.parse().ok())
                    .collect();
                // user nice system idle iowait irq softirq steal (guest is in user).
                let total: u64 = values.iter().take(8).sum();
                let idle =
                    values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
                (total - idle, total)
            })
            .collect();
        Ok(Self { cpus })
    }

    /// How busy CPU `index` was between `earlier` and this sample (0..=1).
    pub fn busy_since(&self, earlier: &CpuSample, index: usize) -> f64 {
        match (self.cpus.get(index), earlier.cpus.get(index)) {
            (Some(&(busy, total)), Some(&(busy0, total0))) if total > total0 => {
                (busy - busy0) as f64 / (total - total0) as f64
            }
            _ => 0.0,
        }
    }

    /// How busy the whole machine was between `earlier` and this sample.
    pub fn machine_busy_since(&self, earlier: &CpuSample) -> f64 {
        let sum = |sample: &CpuSample| {
            sample
                .cpus
                .iter()
                .fold((0, 0), |(b, t), &(busy, total)| (b + busy, t + total))
        };
        let ((busy, total), (busy0, total0)) = (sum(self), sum(earlier));
        if total > total0 {
            (busy - busy0) as f64 / (total - total0) as f64
        } else {
            0.0
        }
    }
}

/// A round counts as disturbed when the proxy waited for its core longer
/// than this share of the round (other processes took it).
pub const DISTURBED_THRESHOLD: f64 = 0.05;

/// The rounds that count: those no other process disturbed (`waited`, the
/// share of the round the proxy waited for its core, at most
/// [`DISTURBED_THRESHOLD`]), or all of them when every one was.
pub fn counted_rounds<S>(samples: &[S], waited: impl Fn(&S) -> f64) -> Vec<&S> {
    let clean: Vec<&S> = samples
        .iter()
        .filter(|s| waited(s) <= DISTURBED_THRESHOLD)
        .collect();
    if clean.is_empty() {
        samples.iter().collect()
    } else {
        clean
    }
}

/// True when every one of `samples` was disturbed (see [`counted_rounds`]):
/// its medians stand on disturbed rounds.
pub fn all_disturbed<S>(samples: &[S], waited: impl Fn(&S) -> f64) -> bool {
    samples.iter().all(|s| waited(s) > DISTURBED_THRESHOLD)
}

/// The lowest and highest `rate` over `rounds`.
pub fn spread_of<S>(rounds: &[&S], rate: impl Fn(&S) -> f64) -> (f64, f64) {
    rounds.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), s| {
        let rate = rate(s);
        (lo.min(rate), hi.max(rate))
    })
}

/// The median of `metric` over `rounds` (0 for none).
pub fn median_of<S>(rounds: &[&S], metric: impl Fn(&S) -> f64) -> f64 {
    let mut values: Vec<f64> = rounds.iter().map(|s| metric(s)).collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_a_cpu_sample() {
        let pid = std::process::id();
        assert!(peak_rss_kib(&[pid]) > 0);
        assert!(pss_kib(&[pid]) > 0);
        assert!(!thread_names(pid).is_empty());
        assert!(cpu_time(&[pid]) <= Duration::from_secs(3600));
        let _ = run_delay(&[pid]);
        let sample = CpuSample::now().unwrap();
        assert!(!sample.cpus.is_empty());
        assert_eq!(peak_rss_kib(&[u32::MAX]), 0);
    }

    #[test]
    fn disturbed_rounds_do_not_count_unless_all_are() {
        let waited = [0.01, 0.20, 0.03, 0.04];
        let rounds = counted_rounds(&waited, |w| *w);
        assert_eq!(rounds, vec![&0.01, &0.03, &0.04]);
        assert_eq!(median_of(&rounds, |w| *w), 0.03);
        assert_eq!(spread_of(&rounds, |w| *w * 100.0), (1.0, 4.0));
        assert!(!all_disturbed(&waited, |w| *w));
        let disturbed = [0.3, 0.2];
        assert_eq!(counted_rounds(&disturbed, |w| *w).len(), 2);
        assert!(all_disturbed(&disturbed, |w| *w));
        assert_eq!(median_of::<f64>(&[], |w| *w), 0.0);
    }
}
