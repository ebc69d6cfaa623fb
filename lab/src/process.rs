//! Commands and processes: bounded runs of a command, background processes
//! as guards, bounded polling, and where the workspace's binaries are.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::netns::Netns;

/// How long an ordinary command (`ip`, `curl`, ...) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// This process's CPU time so far (user and system), by `getrusage`: what
/// the lab's load tools report of their own cost.
pub fn process_cpu_time() -> Duration {
    // SAFETY: rusage is plain data; getrusage fills the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// True when the caller may use the kernel (root); otherwise prints why the
/// caller (a test) skips.
///
/// ```no_run
/// if !xdp_ingress_lab::require_root() {
///     return;
/// }
/// ```
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!(
        "skipping: needs root (CAP_NET_ADMIN, CAP_BPF); run the tests as root (sudo -E cargo test -p xdp-ingress-tests)"
    );
    false
}

/// `<pid>-<counter>`: unique within this machine while the process lives.
pub fn unique_suffix() -> String {
    format!("{}-{}", std::process::id(), next_counter())
}

/// A per-process counter, for unique names.
pub(crate) fn next_counter() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Polls `check` until it returns `Some`, at most `timeout` (and a bounded
/// number of rounds, with a short back-off); an error from `check` stops the
/// wait at once.
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut interval = Duration::from_millis(2);
    let max_rounds = timeout.as_millis() / 2 + 2;
    for _ in 0..max_rounds {
        if let Some(value) = check()? {
            return Ok(value);
        }
        if start.elapsed() >= timeout {
            break;
        }
        thread::sleep(interval);
        interval = (interval * 2).min(Duration::from_millis(50));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// A command line, for error messages.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Waits for `child` at most `timeout`; `None` when it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    match poll_until("a process to exit", timeout, || Ok(child.try_wait()?)) {
        Ok(status) => Ok(Some(status)),
        // Timed out (None), or try_wait failed (the same error again).
        Err(_) => Ok(child.try_wait()?),
    }
}

/// Runs `command` to completion (stdin closed, output captured), killing it
/// after `timeout`.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Result<Output> {
    let line = describe(command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("starting `{line}`"))?;
    let readers = [
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    ]
    .map(|reader| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut reader) = reader {
                let _ = reader.read_to_end(&mut bytes);
            }
            bytes
        })
    });
    let status = match wait_timeout(&mut child, timeout)? {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{line}` did not finish within {timeout:?}: killed it");
        }
    };
    let [stdout, stderr] = readers.map(|reader| reader.join().unwrap_or_default());
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Runs `command`, requires success, returns its stdout.
pub fn run_ok(command: &mut Command) -> Result<String> {
    let line = describe(command);
    let output = run_with_timeout(command, COMMAND_TIMEOUT)?;
    if !output.status.success() {
        bail!(
            "`{line}` failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// True while a process with this pid exists.
pub(crate) fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// True when process `pid` has a handler for `signal` (`SigCgt` in
/// `/proc/PID/status`).
pub fn catches_signal(pid: u32, signal: libc::c_int) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("SigCgt:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// A binary of this workspace: `$ENV_VAR` when set, else `name` next to the
/// running executable's directory (`target/debug/deps/<test>` and
/// `target/debug/xtask` both find `target/debug/<name>`). `build` is the
/// command that builds it, for the error message.
pub(crate) fn workspace_binary(name: &str, env_var: &str, build: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        ensure!(path.is_file(), "{env_var}={} is not a file", path.display());
        return Ok(path);
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .collect();
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "{name} is missing (looked for {}): build it first with `{build}` (or set {env_var})",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// How a lab process is launched inside a namespace: which binary (when not
/// the default), on which CPUs, with which extra environment.
#[derive(Clone, Debug, Default)]
pub(crate) struct Launch {
    /// The binary to run instead of the default one.
    pub binary: Option<PathBuf>,
    /// `taskset -c` CPU list.
    pub cpus: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl Launch {
    /// `[taskset -c CPUS] nsenter --net=NS` with the environment set; the
    /// caller appends the program and its arguments. Both tools exec what
    /// follows, so the child's pid is the program's.
    pub(crate) fn nsenter(&self, ns: &Netns) -> Command {
        let mut command = match &self.cpus {
            Some(cpus) => {
                let mut command = Command::new("taskset");
                command.args(["-c", cpus, "nsenter"]);
                command
            }
            None => Command::new("nsenter"),
        };
        command.arg(format!("--net={}", ns.path().display()));
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }
}

/// Prepares `command` to run as a guarded process: the kernel sends it
/// SIGTERM when the thread that starts it dies, so a run that is killed
/// outright does not leave daemons (with XDP attached) or backends running
/// (note that it is the starting *thread*: start a guard on the thread that
/// keeps it); and it gets its own process group, so a Ctrl-C at the
/// terminal reaches only the lab's user, whose guards then stop it in order.
pub(crate) fn guard_process(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    let parent = std::process::id() as libc::pid_t;
    command.process_group(0);
    // SAFETY: prctl and getppid are async-signal-safe, as pre_exec requires.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // The parent is already gone: do not run at all.
                return Err(std::io::Error::from(std::io::ErrorKind::Interrupted));
            }
            Ok(())
        });
    }
}

/// SIGTERM to `child`, a bounded wait, SIGKILL when it did not exit.
pub(crate) fn terminate(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    // SAFETY: kill by the pid of our own child, which we have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    if let Some(status) = wait_timeout(child, timeout)? {
        return Ok(status);
    }
    child.kill()?;
    let status = child.wait()?;
    bail!("did not exit within {timeout:?} of SIGTERM: killed it ({status})")
}

/// A background process, stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct Background {
    child: Child,
    line: String,
}

impl Background {
    /// Starts `command` with stdin closed and output discarded.
    pub fn start(command: &mut Command) -> Result<Self> {
        let line = describe(command);
        guard_process(command);
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting `{line}`"))?;
        Ok(Self { child, line })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while it runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, wait up to `timeout`, then SIGKILL.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        terminate(&mut self.child, timeout).with_context(|| format!("stopping `{}`", self.line))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_suffixes_differ() {
        assert_ne!(unique_suffix(), unique_suffix());
    }

    #[test]
    fn poll_until_is_bounded() {
        let start = Instant::now();
        let result: Result<()> = poll_until("nothing", Duration::from_millis(50), || Ok(None));
        assert!(result.is_err());
        assert!(start.elapsed() < Duration::from_secs(2));
        let mut n = 0;
        assert_eq!(
            poll_until("three", Duration::from_secs(5), || {
                n += 1;
                Ok((n == 3).then_some(n))
            })
            .unwrap(),
            3
        );
    }
}
