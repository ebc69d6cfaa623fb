//! Profiling a proxy under load with `perf record`: where its CPU time goes,
//! by binary (kernel, the proxy, libc) and by function.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use xdp_ingress_lab::{Background, run_ok, run_with_timeout};

/// True when `perf` can count here (installed, and allowed).
pub fn available() -> bool {
    run_with_timeout(
        Command::new("perf").args(["stat", "-e", "task-clock", "true"]),
        Duration::from_secs(10),
    )
    .is_ok_and(|out| out.status.success())
}

/// A `perf record` of some processes, running in the background.
#[derive(Debug)]
pub struct Recording {
    process: Background,
    data: PathBuf,
}

impl Recording {
    /// Starts `perf record -F 999 -g -p PIDS -o DATA -- sleep SECONDS`.
    pub fn start(pids: &[u32], duration: Duration, data: &Path) -> Result<Self> {
        let pids = pids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let seconds = duration.as_secs().max(1).to_string();
        let process = Background::start(
            Command::new("perf")
                .args(["record", "-F", "999", "-g", "-p", &pids, "-o"])
                .arg(data)
                .args(["--", "sleep", &seconds]),
        )?;
        Ok(Self {
            process,
            data: data.to_path_buf(),
        })
    }

    /// Waits for the recording to end (bounded) and returns the reports:
    /// self time by binary, then by function.
    pub fn finish(mut self, timeout: Duration) -> Result<String> {
        xdp_ingress_lab::poll_until("perf record to finish", timeout, || {
            Ok((!self.process.running()).then_some(()))
        })?;
        if !self.data.is_file() {
            bail!("perf record wrote no {}", self.data.display());
        }
        let report = |fields: &str, limit: &str| -> Result<String> {
            let out = run_ok(
                Command::new("perf")
                    .args(["report", "--stdio", "--no-children", "-g", "none"])
                    .args(["--percent-limit", limit, "--fields", fields, "-i"])
                    .arg(&self.data),
            )
            .context("perf report")?;
            Ok(out
                .lines()
                .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
                .map(|line| format!("{}\n", line.trim_end()))
                .collect())
        };
        Ok(format!(
            "Self time by binary:\n{}\nSelf time by function (>= 0.5%):\n{}",
            report("overhead,dso", "0.5")?,
            report("overhead,dso,sym", "0.5")?
        ))
    }
}
