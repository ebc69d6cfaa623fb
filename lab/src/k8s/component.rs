//! One process of the control plane (etcd, kube-apiserver, ...): started
//! with its output in a log file, stopped with SIGTERM then SIGKILL.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};

use crate::process::{describe, guard_process, wait_timeout};

/// How long a component may take to exit after SIGTERM before it is
/// killed. Short: the API server waits up to its request timeout (a minute)
/// for its clients' watches to end, and a test cluster's data needs no
/// graceful shutdown (etcd runs without fsync anyway).
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a killed process may take to be gone.
pub(crate) const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// How a component is tied to the process that starts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// Dies with the starting thread (parent-death signal), in its own
    /// process group: a test's cluster.
    Guarded,
    /// Its own session, no parent-death signal: `cargo xtask k8s up`'s
    /// cluster, which outlives xtask.
    Detached,
}

/// A running component.
#[derive(Debug)]
pub(crate) struct Component {
    /// Its name (`etcd`, `kube-apiserver`, ...).
    pub name: &'static str,
    child: Child,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Component {
    /// Starts `binary` with `args`, appending its output to `log`.
    pub(crate) fn start(
        name: &'static str,
        binary: &Path,
        args: &[String],
        log: PathBuf,
        lifetime: Lifetime,
    ) -> Result<Self> {
        let mut command = Command::new(binary);
        command.args(args);
        match lifetime {
            Lifetime::Guarded => guard_process(&mut command),
            Lifetime::Detached => {
                use std::os::unix::process::CommandExt as _;
                // SAFETY: setsid is async-signal-safe, as pre_exec requires.
                unsafe {
                    command.pre_exec(|| {
                        if libc::setsid() < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
        }
        let output = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let errors = output.try_clone()?;
        let line = describe(&command);
        let child = command
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .with_context(|| format!("starting `{line}`"))?;
        Ok(Self { name, child, log })
    }

    /// Its pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while it runs.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// True when it has exited (a zombie not yet reaped, or gone); for
    /// shared references, where `try_wait` is not available.
    pub(crate) fn exited(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) {
            // The state follows the parenthesised command name.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
            Err(_) => true,
        }
    }

    /// SIGTERM, a wait of [`STOP_GRACE`], then SIGKILL: stopped either way.
    pub(crate) fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: kill by the pid of our own child, which we have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        if wait_timeout(&mut self.child, STOP_GRACE)?.is_none() {
            self.child
                .kill()
                .with_context(|| format!("killing {}", self.name))?;
            self.child
                .wait()
                .with_context(|| format!("waiting for {}", self.name))?;
        }
        Ok(())
    }

    /// The last lines of its log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

/// The last lines of a log file.
pub(crate) fn log_tail(log: &Path) -> String {
    const LINES: usize = 20;
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LINES)..].join("\n");
    format!("last lines of {}:\n{tail}", log.display())
}
