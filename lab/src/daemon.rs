//! The `xdp-ingress` daemon under test: started inside a namespace as a
//! guard, ready once its pins exist and its program is attached.

use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    bpffs::{ensure_bpffs, pin_dir_locked, prog_ids_held_by, remove_pin_dir, unique_pin_dir},
    maps::{MapsJson, read_maps},
    netns::{Netns, link_json, parse_xdp},
    process::{
        Launch, catches_signal, describe, guard_process, poll_until, run_with_timeout, terminate,
        workspace_binary,
    },
    reap::{log_path, reap_stale},
};

/// How long the daemon may take to load, pin, attach and listen.
pub const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon may take to exit after SIGTERM before it is killed.
pub const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The daemon binary: `$XDP_INGRESS_BIN`, or `xdp-ingress` next to the
/// running executable's directory (`target/debug/deps/<test>` or
/// `target/debug/xtask` -> `target/debug/xdp-ingress`).
pub fn daemon_binary() -> Result<PathBuf> {
    workspace_binary(
        "xdp-ingress",
        "XDP_INGRESS_BIN",
        "cargo build -p ingress-userspace",
    )
}

/// Builds a [`Daemon`]: `Daemon::in_netns(&edge).interface("eth0").args(&[...]).start()`.
#[derive(Debug)]
pub struct DaemonBuilder<'a> {
    ns: &'a Netns,
    interfaces: Vec<String>,
    bpffs: Option<PathBuf>,
    args: Vec<String>,
    launch: Launch,
}

impl DaemonBuilder<'_> {
    /// Attaches to `iface` (`--interface`; repeat for several).
    pub fn interface(mut self, iface: &str) -> Self {
        self.interfaces.push(iface.to_owned());
        self
    }

    /// Pins under `dir` (`--bpffs`) instead of a unique directory. A
    /// directory another daemon holds makes the start fail, and is left alone.
    pub fn bpffs(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bpffs = Some(dir.into());
        self
    }

    /// More arguments of `xdp-ingress run` (`--xdp-mode`, `--http-addr`,
    /// ...). Without `--access-log stdout` the daemon runs with
    /// `--access-log off`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Runs this binary instead of [`daemon_binary`] (a release build, for
    /// the benchmarks).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.launch.binary = Some(path.into());
        self
    }

    /// Restricts the daemon to the CPUs of `list` (`taskset -c LIST`: `1`,
    /// `0-3`), from its first instruction on, so runtimes that size
    /// themselves by the CPUs they may use see only those.
    pub fn cpus(mut self, list: &str) -> Self {
        self.launch.cpus = Some(list.to_owned());
        self
    }

    /// Sets an environment variable of the daemon (`TOKIO_WORKER_THREADS`,
    /// `RUST_LOG`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.launch.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Starts `xdp-ingress run --interface I... --bpffs DIR ARGS...` in the
    /// namespace (entered with `nsenter --net`, which keeps the host's /sys
    /// so the pins are visible from the root namespace); returns once it is
    /// ready: its pins exist, every interface has the program it holds
    /// attached, it handles SIGTERM, and its proxy accepts connections on
    /// `--http-addr` (default `0.0.0.0:80`; probed from inside the
    /// namespace, over loopback, so XDP on the interfaces counts nothing).
    /// Without any interface the daemon runs its proxy only and pins
    /// nothing: then it is ready once it handles SIGTERM and accepts
    /// connections.
    ///
    /// The daemon gets SIGTERM if the starting thread dies (a killed run),
    /// so keep the guard on the thread that created it.
    pub fn start(self) -> Result<Daemon> {
        reap_stale();
        ensure_bpffs()?;
        let binary = match &self.launch.binary {
            Some(binary) => binary.clone(),
            None => daemon_binary()?,
        };
        let bpffs = self.bpffs.unwrap_or_else(unique_pin_dir);
        let log = log_path("daemon");
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = self.launch.nsenter(self.ns);
        command.arg(&binary).arg("run");
        for iface in &self.interfaces {
            command.args(["--interface", iface]);
        }
        command.arg("--bpffs").arg(&bpffs).args(&self.args);
        // Its log is a file: no access log (a line per request) unless the
        // test asks for it with `--access-log`.
        if !self.args.iter().any(|arg| arg.starts_with("--access-log")) {
            command.args(["--access-log", "off"]);
        }
        let line = describe(&command);
        guard_process(&mut command);
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting `{line}`"))?;
        let http_addr = http_addr(&self.args)?;
        let proxy_only = self.interfaces.is_empty() && !names_an_interface(&self.args);
        let mut daemon = Daemon {
            child,
            netns: self.ns.name().to_owned(),
            interfaces: self.interfaces,
            bpffs,
            log,
            exit: None,
        };
        daemon
            .wait_ready(self.ns, http_addr, proxy_only)
            .with_context(|| format!("`{line}` did not get ready:\n{}", daemon.log()))?;
        Ok(daemon)
    }
}

/// `xdp-ingress run` inside a namespace as a guard: SIGTERM (then SIGKILL)
/// on drop, its pin directory and log removed.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    netns: String,
    interfaces: Vec<String>,
    bpffs: PathBuf,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Daemon {
    /// Starts describing a daemon to run inside `ns`; see [`DaemonBuilder`].
    pub fn in_netns(ns: &Netns) -> DaemonBuilder<'_> {
        DaemonBuilder {
            ns,
            interfaces: Vec::new(),
            bpffs: None,
            args: Vec::new(),
            launch: Launch::default(),
        }
    }

    /// `xdp-ingress run --interface IFACE --xdp-mode MODE` in `ns`, with a
    /// unique pin directory.
    pub fn start(ns: &Netns, iface: &str, xdp_mode: &str) -> Result<Self> {
        Self::start_with(ns, &[iface], &["--xdp-mode", xdp_mode])
    }

    /// `xdp-ingress run --interface I... --bpffs <unique> EXTRA...` in `ns`;
    /// see [`DaemonBuilder::start`].
    pub fn start_with(ns: &Netns, interfaces: &[&str], extra: &[&str]) -> Result<Self> {
        interfaces
            .iter()
            .fold(Self::in_netns(ns), |builder, iface| {
                builder.interface(iface)
            })
            .args(extra)
            .start()
    }

    /// Waits until the daemon serves; `proxy_only` (no interface) expects
    /// no pins and no attachment.
    fn wait_ready(&mut self, ns: &Netns, http_addr: SocketAddr, proxy_only: bool) -> Result<()> {
        let listeners_pin = self.bpffs.join("listeners");
        let pid = self.child.id();
        poll_until(
            "the daemon's pins, XDP attachment, SIGTERM handler and HTTP listener",
            DAEMON_READY_TIMEOUT,
            || {
                if let Some(status) = self.child.try_wait()? {
                    self.exit = Some(status);
                    bail!("the daemon exited early ({status})");
                }
                if !proxy_only && !listeners_pin.exists() {
                    return Ok(None);
                }
                let held = prog_ids_held_by(pid);
                for iface in &self.interfaces {
                    match parse_xdp(&link_json(Some(&self.netns), iface)?) {
                        Some(xdp) if held.contains(&xdp.prog_id) => {}
                        _ => return Ok(None),
                    }
                }
                // Until its SIGTERM handler is installed, a SIGTERM would
                // kill it without cleanup (pins left): not ready before that.
                if !catches_signal(pid, libc::SIGTERM) {
                    return Ok(None);
                }
                Ok(ns.accepts_tcp(http_addr)?.then_some(()))
            },
        )
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its pin directory (`--bpffs`).
    pub fn bpffs(&self) -> &Path {
        &self.bpffs
    }

    /// What it logged so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while it runs.
    pub fn running(&mut self) -> bool {
        self.exit.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// `xdp-ingress maps --bpffs DIR --json`, run from the root namespace.
    pub fn maps(&self) -> Result<MapsJson> {
        read_maps(&self.bpffs)
    }

    /// Sends it SIGTERM without waiting: it drains, then exits (see
    /// [`Self::stop`] to wait, which may follow: the daemon keeps its
    /// handler, so a second SIGTERM is harmless).
    pub fn sigterm(&self) -> Result<()> {
        if self.exit.is_none() {
            // SAFETY: kill by the pid of our own child, which we have not reaped.
            if unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) } != 0 {
                return Err(std::io::Error::last_os_error()).context("SIGTERM to the daemon");
            }
        }
        Ok(())
    }

    /// Stops it with SIGTERM (bounded wait, then SIGKILL) and returns how it exited.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        let status = terminate(&mut self.child, DAEMON_STOP_TIMEOUT)
            .with_context(|| format!("stopping the daemon:\n{}", self.log()))?;
        self.exit = Some(status);
        Ok(status)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("lab: {error:#}");
        }
        if thread::panicking() {
            eprintln!(
                "--- xdp-ingress log ({}) ---\n{}--- end of log ---",
                self.log.display(),
                self.log()
            );
        }
        // Ours has stopped: a lock now means another daemon owns the directory.
        if self.bpffs.exists() && !pin_dir_locked(&self.bpffs) {
            remove_pin_dir(&self.bpffs);
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The proxy's address in `xdp-ingress run` arguments: `--http-addr A`,
/// `--http-addr=A`, or the daemon's default.
fn http_addr(args: &[String]) -> Result<SocketAddr> {
    let mut value = "0.0.0.0:80";
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--http-addr" {
            value = args.next().context("--http-addr without a value")?;
        } else if let Some(addr) = arg.strip_prefix("--http-addr=") {
            value = addr;
        }
    }
    value
        .parse()
        .with_context(|| format!("--http-addr {value}"))
}

/// True when `args` give an interface themselves (`--interface I`,
/// `--interface=I`, `-i I`), not through [`DaemonBuilder::interface`].
fn names_an_interface(args: &[String]) -> bool {
    args.iter()
        .any(|arg| arg == "--interface" || arg == "-i" || arg.starts_with("--interface="))
}

/// Runs `xdp-ingress ARGS` to completion inside `ns` (with `nsenter --net`),
/// for commands that are expected to exit (errors, `--help`).
pub fn run_daemon_once(ns: &Netns, args: &[&str], timeout: Duration) -> Result<Output> {
    ensure_bpffs()?;
    run_with_timeout(
        Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .arg(daemon_binary()?)
            .args(args),
        timeout,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_addr_comes_from_the_arguments_or_the_default() {
        let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(http_addr(&[]).unwrap(), "0.0.0.0:80".parse().unwrap());
        assert_eq!(
            http_addr(&args(&["--xdp-mode", "skb", "--http-addr", "[::]:8080"])).unwrap(),
            "[::]:8080".parse().unwrap()
        );
        assert_eq!(
            http_addr(&args(&["--http-addr=198.18.0.1:80"])).unwrap(),
            "198.18.0.1:80".parse().unwrap()
        );
        assert!(http_addr(&args(&["--http-addr"])).is_err());
    }

    #[test]
    fn interfaces_given_as_arguments_are_noticed() {
        let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert!(!names_an_interface(&args(&["--manifests", "m.yaml"])));
        assert!(names_an_interface(&args(&["--interface", "eth0"])));
        assert!(names_an_interface(&args(&["--interface=eth0"])));
        assert!(names_an_interface(&args(&["-i", "eth0"])));
    }
}
