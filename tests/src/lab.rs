//! The network-namespace lab shared by every end-to-end test: namespaces,
//! veth pairs, commands and threads inside a namespace, a tiny HTTP server,
//! crafted-frame injection, and the `xdp-ingress` daemon as a guard.
//!
//! Everything here cleans up after itself on `Drop`, also while a test
//! panics; names are unique per process (`<pid>-<counter>`) so tests run in
//! parallel, and leftovers of a killed test run are reaped on the next one.
//! Every wait is a bounded poll.
//!
//! Addresses: only 198.18.0.0/15 (benchmarking), 2001:db8::/32
//! (documentation, inside namespaces) and loopback.

use std::{
    collections::BTreeMap,
    ffi::CString,
    fs::File,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        Arc, Once,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;

/// How long an ordinary command (`ip`, `curl`, ...) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon may take to load, pin and attach.
pub const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon may take to exit after SIGTERM before it is killed.
pub const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Where bpffs is mounted in the root mount namespace.
pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";
/// Prefix of every namespace the lab creates.
const NETNS_PREFIX: &str = "xit-";
/// Prefix of every pin directory the lab gives the daemon.
const PIN_DIR_PREFIX: &str = "xdp-ingress-test-";
/// Prefix of every veth name the lab creates.
const VETH_PREFIX: &str = "xv";

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// `ip link`'s XDP attach modes (`XDP_ATTACHED_*`).
pub mod xdp_mode {
    /// Native (driver) mode.
    pub const NATIVE: u64 = 1;
    /// Generic (skb) mode.
    pub const SKB: u64 = 2;
    /// Offloaded to the NIC.
    pub const HW: u64 = 3;
    /// Several programs.
    pub const MULTI: u64 = 4;
}

/// True when the tests may use the kernel; otherwise prints why they skip.
///
/// ```no_run
/// if !xdp_ingress_tests::lab::require_root() {
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

fn next_counter() -> u32 {
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

/// `ip ARGS` in the root namespace, or `ip -n NS ARGS`.
fn ip_in(ns: Option<&str>, args: &[&str]) -> Result<String> {
    let mut command = Command::new("ip");
    if let Some(ns) = ns {
        command.args(["-n", ns]);
    }
    run_ok(command.args(args))
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Makes sure bpffs is mounted at /sys/fs/bpf in the root mount namespace
/// (the daemon would mount it too; the tests read the pins from there).
pub fn ensure_bpffs() -> Result<()> {
    let path = Path::new(BPFFS_MOUNT);
    if path.exists() && is_bpffs(path)? {
        return Ok(());
    }
    std::fs::create_dir_all(path).with_context(|| format!("creating {BPFFS_MOUNT}"))?;
    let target = CString::new(BPFFS_MOUNT).expect("no NUL");
    // SAFETY: valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mount -t bpf bpf {BPFFS_MOUNT}"));
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> Result<bool> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs {}", path.display()));
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets.
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

/// Removes what earlier, killed test runs left behind: namespaces, root-side
/// veths, daemon logs and pin directories named by the lab whose process is
/// gone. Pin directories still locked by a daemon and namespaces with
/// processes in them are left alone.
fn reap_stale() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // "<pid>-<rest>": true when that pid is not running.
        let dead = |rest: &str, radix: u32| {
            rest.split_once('-')
                .and_then(|(pid, _)| u32::from_str_radix(pid, radix).ok())
                .is_some_and(|pid| pid != std::process::id() && !pid_alive(pid))
        };
        if let Ok(list) = run_ok(Command::new("ip").args(["netns", "list"])) {
            for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
                let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
                    continue;
                };
                // xit-<prefix>-<pid>-<n>: the second to last part is the pid.
                let parts: Vec<&str> = rest.rsplitn(3, '-').collect();
                let stale = parts.len() == 3
                    && parts[1]
                        .parse::<u32>()
                        .is_ok_and(|pid| pid != std::process::id() && !pid_alive(pid));
                let idle = || {
                    run_ok(Command::new("ip").args(["netns", "pids", name]))
                        .is_ok_and(|pids| pids.trim().is_empty())
                };
                if stale && idle() {
                    let _ = run_ok(Command::new("ip").args(["netns", "del", name]));
                }
            }
        }
        if let Ok(json) = ip_in(None, &["-j", "link", "show", "type", "veth"])
            && let Ok(Value::Array(links)) = serde_json::from_str::<Value>(&json)
        {
            for link in links {
                let Some(name) = link["ifname"].as_str() else {
                    continue;
                };
                if let Some(rest) = name.strip_prefix(VETH_PREFIX)
                    && dead(rest, 16)
                {
                    let _ = ip_in(None, &["link", "del", name]);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(rest) = name.strip_prefix(PIN_DIR_PREFIX)
                    && name.ends_with(".log")
                    && dead(rest, 10)
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(BPFFS_MOUNT) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(rest) = name.strip_prefix(PIN_DIR_PREFIX)
                    && dead(rest, 10)
                    && !pin_dir_locked(&entry.path())
                {
                    remove_pin_dir(&entry.path());
                }
            }
        }
    });
}

/// True when a daemon holds the lock on `dir`.
fn pin_dir_locked(dir: &Path) -> bool {
    let Ok(file) = File::open(dir) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; dropping the file releases it.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
}

/// Removes the pins in `dir` and then `dir` (bpffs has no recursive remove).
pub fn remove_pin_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Runs `f` on a new thread that has joined the network namespace at
/// `netns` (or stays in the root one). Sockets it creates stay in that
/// namespace wherever they are used afterwards.
fn in_netns<T: Send>(netns: Option<&Path>, f: impl FnOnce() -> T + Send) -> Result<T> {
    thread::scope(|scope| {
        let handle = scope.spawn(|| -> Result<T> {
            if let Some(path) = netns {
                let file =
                    File::open(path).with_context(|| format!("opening {}", path.display()))?;
                // SAFETY: setns on a descriptor we own; it affects this thread only.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("setns {}", path.display()));
                }
            }
            Ok(f())
        });
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Where the XDP program is attached on an interface, as `ip -j link` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpInfo {
    /// One of [`xdp_mode`].
    pub mode: u64,
    /// The program's id.
    pub prog_id: u64,
    /// The program's name.
    pub prog_name: String,
}

/// Parses the `xdp` object of one `ip -j link show` entry.
pub fn parse_xdp(link: &Value) -> Option<XdpInfo> {
    let xdp = link.get("xdp")?;
    let mode = xdp["mode"].as_u64()?;
    let prog = if xdp["prog"].is_object() {
        &xdp["prog"]
    } else {
        &xdp["attached"][0]["prog"]
    };
    Some(XdpInfo {
        mode,
        prog_id: prog["id"].as_u64()?,
        prog_name: prog["name"].as_str().unwrap_or_default().to_owned(),
    })
}

/// A network namespace, deleted on drop (processes left in it are killed).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `xit-<prefix>-<pid>-<n>` with loopback up. Keep `prefix` short.
    pub fn new(prefix: &str) -> Result<Self> {
        reap_stale();
        let name = format!("{NETNS_PREFIX}{prefix}-{}", unique_suffix());
        run_ok(Command::new("ip").args(["netns", "add", &name]))?;
        let netns = Self { name };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's name (for `ip -n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, for `nsenter --net=` and `setns`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS`; returns stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        ip_in(Some(&self.name), args)
    }

    /// `ip netns exec NAME ARGS`, captured, bounded by [`COMMAND_TIMEOUT`];
    /// the caller judges the exit status.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        self.exec_timeout(args, COMMAND_TIMEOUT)
    }

    /// [`Self::exec`] with another timeout.
    pub fn exec_timeout(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        run_with_timeout(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(args),
            timeout,
        )
    }

    /// `ip netns exec NAME ARGS`, which must succeed; returns stdout.
    pub fn exec_ok(&self, args: &[&str]) -> Result<String> {
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(args),
        )
    }

    /// Starts `ARGS` in the namespace in the background (`ip netns exec`),
    /// stopped when the guard drops.
    pub fn spawn(&self, args: &[&str]) -> Result<Background> {
        Background::start(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(args),
        )
    }

    /// Runs `f` on a thread inside the namespace (see [`Netns::udp_send`]
    /// for an example); sockets it opens belong to the namespace.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        in_netns(Some(&self.path()), f)
    }

    /// Writes a sysctl of this namespace (`net.ipv4.ip_forward` style key).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        write_sysctl(Some(&self.path()), key, value)
    }

    /// `ip -j link show dev IFACE` in the namespace.
    pub fn link(&self, iface: &str) -> Result<Value> {
        link_json(Some(&self.name), iface)
    }

    /// The XDP program attached to `iface`, if any.
    pub fn xdp(&self, iface: &str) -> Result<Option<XdpInfo>> {
        Ok(parse_xdp(&self.link(iface)?))
    }

    /// Sends `frames` as they are (from the Ethernet header on) out of
    /// `iface` with an `AF_PACKET` socket.
    pub fn inject(&self, iface: &str, frames: &[Vec<u8>]) -> Result<()> {
        self.enter(|| inject_frames(iface, frames))?
    }

    /// Sends `count` UDP datagrams of `payload` to `to` from an ephemeral port.
    pub fn udp_send(&self, to: SocketAddr, payload: &[u8], count: usize) -> Result<()> {
        self.enter(|| -> Result<()> {
            let bind: SocketAddr = if to.is_ipv4() {
                "0.0.0.0:0".parse()?
            } else {
                "[::]:0".parse()?
            };
            let socket = UdpSocket::bind(bind)?;
            for _ in 0..count {
                let sent = socket.send_to(payload, to)?;
                ensure!(sent == payload.len(), "short UDP send");
            }
            Ok(())
        })?
    }

    /// Sends `count` ICMP echo requests with `payload_len` bytes of payload
    /// to `to` (a raw socket; replies are not awaited).
    pub fn icmp_echo(&self, to: Ipv4Addr, count: u16, payload_len: usize) -> Result<()> {
        self.enter(|| send_icmp_echo(to, count, payload_len))?
    }

    /// The PIDs of processes in the namespace.
    pub fn pids(&self) -> Result<Vec<u32>> {
        Ok(
            run_ok(Command::new("ip").args(["netns", "pids", &self.name]))?
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect(),
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Guards normally stopped their processes already; anything left in
        // this uniquely named namespace was started by this test.
        for pid in self.pids().unwrap_or_default() {
            // SAFETY: kill by pid has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        if let Err(error) = run_ok(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("lab: deleting namespace {}: {error:#}", self.name);
        }
    }
}

fn write_sysctl(netns: Option<&Path>, key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    in_netns(netns, || {
        std::fs::write(&path, value).with_context(|| format!("sysctl {key}={value}"))
    })?
}

fn link_json(ns: Option<&str>, iface: &str) -> Result<Value> {
    let json = ip_in(ns, &["-j", "link", "show", "dev", iface])?;
    let value: Value = serde_json::from_str(&json).context("parsing `ip -j link show`")?;
    value
        .get(0)
        .cloned()
        .ok_or_else(|| anyhow!("`ip -j link show dev {iface}` printed no link"))
}

fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|part| u8::from_str_radix(part, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC address {text}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow!("MAC address {text} is not 6 bytes"))
}

fn inject_frames(iface: &str, frames: &[Vec<u8>]) -> Result<()> {
    let c_iface = CString::new(iface)?;
    // SAFETY: valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(c_iface.as_ptr()) };
    ensure!(ifindex != 0, "no interface {iface} in this namespace");
    // SAFETY: plain socket call; the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    ensure!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    for frame in frames {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        let dst = frame.len().min(6);
        addr.sll_addr[..dst].copy_from_slice(&frame[..dst]);
        // SAFETY: the buffer and address are valid for the call.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        ensure!(
            sent == frame.len() as isize,
            "sending a {}-byte frame on {iface}: {}",
            frame.len(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn send_icmp_echo(to: Ipv4Addr, count: u16, payload_len: usize) -> Result<()> {
    // SAFETY: plain socket call; the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    ensure!(
        fd >= 0,
        "raw ICMP socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as u16;
    addr.sin_addr.s_addr = u32::from_ne_bytes(to.octets());
    for seq in 0..count {
        let mut message = vec![8, 0, 0, 0, 0x12, 0x34];
        message.extend_from_slice(&seq.to_be_bytes());
        message.extend((0..payload_len).map(|i| i as u8));
        let check = crate::packets::checksum(&[&message]);
        message[2..4].copy_from_slice(&check.to_be_bytes());
        // SAFETY: the buffer and address are valid for the call.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        ensure!(
            sent == message.len() as isize,
            "sending ICMP echo to {to}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// One end of a [`Veth`] pair.
#[derive(Clone, Debug)]
pub struct VethEnd {
    /// The namespace it lives in (`None`: the root namespace).
    pub ns: Option<String>,
    /// Interface name.
    pub name: String,
    /// MAC address.
    pub mac: [u8; 6],
    /// Addresses with prefix length (`198.18.1.1/24`).
    pub addrs: Vec<String>,
}

impl VethEnd {
    /// The addresses without prefix length, IPv4 ones only.
    pub fn ipv4(&self) -> Vec<Ipv4Addr> {
        self.addrs
            .iter()
            .filter_map(|a| a.split('/').next()?.parse().ok())
            .collect()
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        ip_in(self.ns.as_deref(), args)
    }
}

/// Builds a [`Veth`]: `Veth::between(Some(&client), Some(&edge))`.
#[derive(Debug)]
pub struct VethBuilder<'a> {
    ends: [(Option<&'a Netns>, Vec<String>); 2],
    static_neighbors: bool,
}

impl VethBuilder<'_> {
    /// Addresses of the first end (`198.18.1.1/24`, `2001:db8:1::1/64`).
    pub fn addrs_a(mut self, addrs: &[&str]) -> Self {
        self.ends[0].1 = addrs.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Addresses of the second end.
    pub fn addrs_b(mut self, addrs: &[&str]) -> Self {
        self.ends[1].1 = addrs.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Adds permanent neighbor entries for each other's addresses, so no
    /// ARP (or ND) ever crosses the link: packet counts stay exact.
    pub fn static_neighbors(mut self) -> Self {
        self.static_neighbors = true;
        self
    }

    /// Creates the pair. An end without an IPv6 address gets IPv6 disabled
    /// (no link-local address, no ND or MLD noise); IPv6 addresses skip DAD.
    pub fn create(self) -> Result<Veth> {
        let suffix = format!("{:x}-{:x}", std::process::id(), next_counter() % 0xfff);
        let names = [
            format!("{VETH_PREFIX}{suffix}a"),
            format!("{VETH_PREFIX}{suffix}b"),
        ];
        let mut command = Command::new("ip");
        command.args(["link", "add", &names[0]]);
        if let Some(ns) = self.ends[0].0 {
            command.args(["netns", ns.name()]);
        }
        command.args(["type", "veth", "peer", "name", &names[1]]);
        if let Some(ns) = self.ends[1].0 {
            command.args(["netns", ns.name()]);
        }
        run_ok(&mut command)?;
        // From here on the guard deletes the pair, also when setup fails.
        let mut veth = Veth {
            a: VethEnd {
                ns: self.ends[0].0.map(|ns| ns.name().to_owned()),
                name: names[0].clone(),
                mac: [0; 6],
                addrs: self.ends[0].1.clone(),
            },
            b: VethEnd {
                ns: self.ends[1].0.map(|ns| ns.name().to_owned()),
                name: names[1].clone(),
                mac: [0; 6],
                addrs: self.ends[1].1.clone(),
            },
        };
        for (end, (netns, _)) in [&mut veth.a, &mut veth.b].into_iter().zip(&self.ends) {
            let has_v6 = end.addrs.iter().any(|a| a.contains(':'));
            if !has_v6 {
                write_sysctl(
                    netns.map(Netns::path).as_deref(),
                    &format!("net.ipv6.conf.{}.disable_ipv6", end.name),
                    "1",
                )?;
            }
            for addr in &end.addrs {
                let mut args = vec!["addr", "add", addr.as_str(), "dev", end.name.as_str()];
                if addr.contains(':') {
                    args.push("nodad");
                }
                end.ip(&args)?;
            }
            let link = link_json(end.ns.as_deref(), &end.name)?;
            end.mac = parse_mac(link["address"].as_str().unwrap_or_default())?;
        }
        if self.static_neighbors {
            for (end, other) in [(&veth.a, &veth.b), (&veth.b, &veth.a)] {
                let mac = other
                    .mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":");
                for addr in &other.addrs {
                    let ip = addr.split('/').next().unwrap_or(addr);
                    end.ip(&[
                        "neigh",
                        "replace",
                        ip,
                        "lladdr",
                        &mac,
                        "dev",
                        &end.name,
                        "nud",
                        "permanent",
                    ])?;
                }
            }
        }
        for end in [&veth.a, &veth.b] {
            end.ip(&["link", "set", &end.name, "up"])?;
        }
        Ok(veth)
    }
}

/// A veth pair between two namespaces (or a namespace and the root
/// namespace), deleted on drop.
#[derive(Debug)]
pub struct Veth {
    /// The first end.
    pub a: VethEnd,
    /// The second end.
    pub b: VethEnd,
}

impl Veth {
    /// Starts a pair between `a` and `b` (`None`: the root namespace).
    pub fn between<'a>(a: Option<&'a Netns>, b: Option<&'a Netns>) -> VethBuilder<'a> {
        VethBuilder {
            ends: [(a, Vec::new()), (b, Vec::new())],
            static_neighbors: false,
        }
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting either end deletes the pair; the root end first, since a
        // namespace may be gone already.
        let mut ends = [&self.a, &self.b];
        ends.sort_by_key(|end| end.ns.is_some());
        for end in ends {
            if end.ip(&["link", "del", &end.name]).is_ok() {
                return;
            }
        }
    }
}

/// Makes the kernel send SIGTERM to the process `command` starts when the
/// thread that starts it dies, so a test run that is killed outright does
/// not leave daemons (with XDP attached) running. Note that it is the
/// starting *thread*: start a guard on the thread that keeps it.
fn terminate_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    let parent = std::process::id() as libc::pid_t;
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
        terminate_with_parent(command);
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

/// SIGTERM to `child`, a bounded wait, SIGKILL when it did not exit.
fn terminate(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
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

/// A tiny HTTP/1.1 server on a socket inside a namespace: answers every
/// request with `200 OK` and a fixed body, then closes the connection.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Longest a server runs, whatever happens to its guard.
    const MAX_LIFETIME: Duration = Duration::from_secs(600);

    /// Binds `addr` inside `ns` and serves until dropped.
    pub fn start(ns: &Netns, addr: SocketAddr, body: &str) -> Result<Self> {
        let listener = ns
            .enter(|| TcpListener::bind(addr))?
            .with_context(|| format!("binding {addr} in {}", ns.name()))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let thread = {
            let (stop, served) = (stop.clone(), served.clone());
            thread::spawn(move || serve(&listener, &response, &stop, &served))
        };
        Ok(Self {
            addr,
            stop,
            served,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

fn serve(listener: &TcpListener, response: &str, stop: &AtomicBool, served: &AtomicUsize) {
    let start = Instant::now();
    while !stop.load(Ordering::SeqCst) && start.elapsed() < HttpServer::MAX_LIFETIME {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                // Headers only (GET), at most 64 KiB.
                while request.len() < 65_536 && !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if stream.write_all(response.as_bytes()).is_ok() {
                    served.fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The daemon binary: `$XDP_INGRESS_BIN`, or `xdp-ingress` next to the test
/// binary's directory (`target/debug/deps/<test>` -> `target/debug/xdp-ingress`).
pub fn daemon_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("XDP_INGRESS_BIN") {
        let path = PathBuf::from(path);
        ensure!(
            path.is_file(),
            "XDP_INGRESS_BIN={} is not a file",
            path.display()
        );
        return Ok(path);
    }
    let exe = std::env::current_exe().context("locating the test binary")?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("xdp-ingress"))
        .collect();
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "the daemon binary is missing (looked for {}): build it first with `cargo build -p ingress-userspace` (or set XDP_INGRESS_BIN)",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// A unique pin directory for one daemon: `/sys/fs/bpf/xdp-ingress-test-<pid>-<n>`.
pub fn unique_pin_dir() -> PathBuf {
    Path::new(BPFFS_MOUNT).join(format!("{PIN_DIR_PREFIX}{}", unique_suffix()))
}

/// A unique pin directory path (see [`unique_pin_dir`]) for a daemon the
/// test runs by hand; whatever is left in it is removed on drop.
#[derive(Debug)]
pub struct PinDir(PathBuf);

impl PinDir {
    /// A fresh, unique path (not created).
    pub fn new() -> Self {
        Self(unique_pin_dir())
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as a string, for a command line.
    pub fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.0.exists() {
            remove_pin_dir(&self.0);
        }
    }
}

/// The ids of the BPF programs `pid` holds descriptors of (programs and links).
pub fn prog_ids_held_by(pid: u32) -> Vec<u64> {
    let mut ids = Vec::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for entry in entries.flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        ids.extend(
            info.lines()
                .filter_map(|line| line.strip_prefix("prog_id:"))
                .filter_map(|id| id.trim().parse::<u64>().ok()),
        );
    }
    ids
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

/// `xdp-ingress run` inside a namespace, with its own pin directory, as a
/// guard: SIGTERM (then SIGKILL) on drop, and the pin directory removed.
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
    /// `xdp-ingress run --interface IFACE --xdp-mode MODE` in `ns`.
    pub fn start(ns: &Netns, iface: &str, xdp_mode: &str) -> Result<Self> {
        Self::start_with(ns, &[iface], &["--xdp-mode", xdp_mode])
    }

    /// `xdp-ingress run --interface I... --bpffs <unique> EXTRA...` in `ns`
    /// (entered with `nsenter --net`, which keeps the host's /sys so the
    /// pins are visible from the tests); returns once it is ready: its pins
    /// exist and every interface has the program it holds attached.
    ///
    /// The daemon gets SIGTERM if the starting thread dies (a killed test
    /// run), so keep the guard on the thread that created it.
    pub fn start_with(ns: &Netns, interfaces: &[&str], extra: &[&str]) -> Result<Self> {
        reap_stale();
        ensure_bpffs()?;
        let binary = daemon_binary()?;
        let bpffs = unique_pin_dir();
        let log = std::env::temp_dir().join(format!(
            "{PIN_DIR_PREFIX}{}.log",
            bpffs
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(PIN_DIR_PREFIX))
                .unwrap_or("daemon")
        ));
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", ns.path().display()))
            .arg(&binary)
            .arg("run");
        for iface in interfaces {
            command.args(["--interface", iface]);
        }
        command.arg("--bpffs").arg(&bpffs).args(extra);
        let line = describe(&command);
        terminate_with_parent(&mut command);
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting `{line}`"))?;
        let mut daemon = Self {
            child,
            netns: ns.name().to_owned(),
            interfaces: interfaces.iter().map(|i| i.to_string()).collect(),
            bpffs,
            log,
            exit: None,
        };
        daemon
            .wait_ready()
            .with_context(|| format!("`{line}` did not get ready:\n{}", daemon.log()))?;
        Ok(daemon)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let listeners_pin = self.bpffs.join("listeners");
        let pid = self.child.id();
        poll_until(
            "the daemon's pins, XDP attachment and SIGTERM handler",
            DAEMON_READY_TIMEOUT,
            || {
                if let Some(status) = self.child.try_wait()? {
                    self.exit = Some(status);
                    bail!("the daemon exited early ({status})");
                }
                if !listeners_pin.exists() {
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
                Ok(catches_signal(pid, libc::SIGTERM).then_some(()))
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
            // terminate() killed it; remember so that we do not wait again.
        }
        if thread::panicking() {
            eprintln!(
                "--- xdp-ingress log ({}) ---\n{}--- end of log ---",
                self.log.display(),
                self.log()
            );
        }
        if self.bpffs.exists() {
            remove_pin_dir(&self.bpffs);
        }
        let _ = std::fs::remove_file(&self.log);
    }
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

/// Packet and byte counters as the tools print them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Counts {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One listener of `xdp-ingress maps --json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerJson {
    /// Counter slot.
    pub id: u64,
    /// `ipv4` / `ipv6`.
    pub family: String,
    /// `tcp` / `udp`.
    pub protocol: String,
    /// Address or `*`.
    pub address: String,
    /// Port.
    pub port: u64,
    /// `pass-to-proxy` / `drop`.
    pub action: String,
    /// Counters.
    pub counts: Counts,
}

/// `xdp-ingress maps --json`, parsed.
#[derive(Clone, Debug)]
pub struct MapsJson {
    /// The raw JSON.
    pub raw: Value,
    /// Listeners in id order.
    pub listeners: Vec<ListenerJson>,
    /// Verdict counters by reason name (`pass-to-proxy`, ...).
    pub verdicts: BTreeMap<String, Counts>,
}

fn counts(value: &Value) -> Counts {
    Counts {
        packets: value["packets"].as_u64().unwrap_or(0),
        bytes: value["bytes"].as_u64().unwrap_or(0),
    }
}

/// Runs `xdp-ingress maps --bpffs DIR --json` in the root namespace and parses it.
pub fn read_maps(bpffs: &Path) -> Result<MapsJson> {
    let out = run_ok(
        Command::new(daemon_binary()?)
            .args(["maps", "--json", "--bpffs"])
            .arg(bpffs),
    )?;
    let raw: Value = serde_json::from_str(&out).context("parsing `xdp-ingress maps --json`")?;
    let string = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let listeners = raw["listeners"]
        .as_array()
        .ok_or_else(|| anyhow!("no listeners array in {raw}"))?
        .iter()
        .map(|l| ListenerJson {
            id: l["id"].as_u64().unwrap_or(u64::MAX),
            family: string(&l["family"]),
            protocol: string(&l["protocol"]),
            address: string(&l["address"]),
            port: l["port"].as_u64().unwrap_or(0),
            action: string(&l["action"]),
            counts: counts(l),
        })
        .collect();
    let verdicts = raw["verdicts"]
        .as_array()
        .ok_or_else(|| anyhow!("no verdicts array in {raw}"))?
        .iter()
        .map(|v| (string(&v["reason"]), counts(v)))
        .collect();
    Ok(MapsJson {
        raw,
        listeners,
        verdicts,
    })
}

/// `bpftool -j map dump pinned PIN` of a per-CPU array of
/// `{packets, bytes}` (u64 each), summed over CPUs, by key.
pub fn bpftool_counters(pin: &Path) -> Result<BTreeMap<u32, Counts>> {
    let out = run_ok(
        Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(pin),
    )?;
    let entries: Value = serde_json::from_str(&out).context("parsing bpftool's JSON")?;
    let mut sums = BTreeMap::new();
    for entry in entries.as_array().into_iter().flatten() {
        let (key, values) = if let Some(formatted) = entry.get("formatted") {
            (formatted["key"].as_u64(), &formatted["values"])
        } else {
            (hex_le(&entry["key"]), &entry["values"])
        };
        let key = key.ok_or_else(|| anyhow!("bpftool entry without a key: {entry}"))? as u32;
        let mut sum = Counts::default();
        for per_cpu in values.as_array().into_iter().flatten() {
            let value = &per_cpu["value"];
            let (packets, bytes) = if value.is_object() {
                (value["packets"].as_u64(), value["bytes"].as_u64())
            } else {
                let raw = value.as_array().cloned().unwrap_or_default();
                let half = raw.len() / 2;
                (
                    hex_le(&Value::Array(raw[..half].to_vec())),
                    hex_le(&Value::Array(raw[half..].to_vec())),
                )
            };
            sum.packets += packets.ok_or_else(|| anyhow!("bad bpftool value {value}"))?;
            sum.bytes += bytes.ok_or_else(|| anyhow!("bad bpftool value {value}"))?;
        }
        sums.insert(key, sum);
    }
    Ok(sums)
}

/// `["0x01", "0x00", ...]` (little endian) as a number.
fn hex_le(bytes: &Value) -> Option<u64> {
    let bytes = bytes.as_array()?;
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(8) {
        let byte = u64::from_str_radix(byte.as_str()?.trim_start_matches("0x"), 16).ok()?;
        value |= byte << (8 * i);
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_link_xdp() {
        let link: Value = serde_json::from_str(
            r#"{"ifname":"x","xdp":{"mode":1,"prog":{"id":32,"name":"xdp_ingress"}}}"#,
        )
        .unwrap();
        assert_eq!(
            parse_xdp(&link),
            Some(XdpInfo {
                mode: xdp_mode::NATIVE,
                prog_id: 32,
                prog_name: "xdp_ingress".into()
            })
        );
        let none: Value = serde_json::from_str(r#"{"ifname":"x"}"#).unwrap();
        assert_eq!(parse_xdp(&none), None);
    }

    #[test]
    fn hex_le_reads_bpftool_bytes() {
        let v: Value = serde_json::from_str(r#"["0x02","0x01","0x00"]"#).unwrap();
        assert_eq!(hex_le(&v), Some(0x0102));
    }

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
