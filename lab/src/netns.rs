//! Network namespaces: creating them, configuring them with `ip`, running
//! commands and threads inside them, and reading what is attached to their
//! interfaces.

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, ensure};
use serde_json::Value;

use crate::{
    process::{Background, COMMAND_TIMEOUT, poll_until, run_ok, run_with_timeout, unique_suffix},
    raw_socket,
    reap::{NETNS_PREFIX, reap_stale},
};

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
    /// Creates `xlab-<prefix>-<pid>-<n>` with loopback up. Keep `prefix` short.
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

    /// Gives `iface` every address of `addrs` (with prefix length:
    /// `198.18.1.1/32`, `2001:db8:1::1/64`); IPv6 addresses skip DAD.
    pub fn add_addrs(&self, iface: &str, addrs: &[&str]) -> Result<()> {
        add_addrs_in(Some(&self.name), iface, addrs)
    }

    /// `ip route replace TO via VIA`: reach the prefix `to` through the
    /// neighbor `via`.
    pub fn add_route(&self, to: &str, via: &str) -> Result<()> {
        self.ip(&["route", "replace", to, "via", via])?;
        Ok(())
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

    /// True when a TCP connection from inside the namespace to `addr` is
    /// accepted within a short while (one attempt). An unspecified address
    /// (`0.0.0.0`, `::`) means loopback, as for a listener bound to it.
    pub fn accepts_tcp(&self, addr: SocketAddr) -> Result<bool> {
        let mut target = addr;
        if target.ip().is_unspecified() {
            target.set_ip(match addr {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        self.enter(|| TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok())
    }

    /// Waits, at most `timeout`, until TCP connections from inside the
    /// namespace to `addr` are accepted.
    pub fn wait_tcp(&self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        poll_until(
            &format!("{addr} to accept TCP connections in {}", self.name),
            timeout,
            || Ok(self.accepts_tcp(addr)?.then_some(())),
        )
    }

    /// Sends `frames` as they are (from the Ethernet header on) out of
    /// `iface` with an `AF_PACKET` socket.
    pub fn inject(&self, iface: &str, frames: &[Vec<u8>]) -> Result<()> {
        self.enter(|| raw_socket::inject_frames(iface, frames))?
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
        self.enter(|| raw_socket::send_icmp_echo(to, count, payload_len))?
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
        // this uniquely named namespace was started by the lab's user.
        for pid in self.pids().unwrap_or_default() {
            // SAFETY: kill by pid has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        if let Err(error) = run_ok(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("lab: deleting namespace {}: {error:#}", self.name);
        }
    }
}

/// `ip ARGS` in the root namespace, or `ip -n NS ARGS`.
pub(crate) fn ip_in(ns: Option<&str>, args: &[&str]) -> Result<String> {
    let mut command = Command::new("ip");
    if let Some(ns) = ns {
        command.args(["-n", ns]);
    }
    run_ok(command.args(args))
}

/// Adds `addrs` (with prefix length) to `iface` in `ns` (or the root
/// namespace); IPv6 addresses skip DAD.
pub(crate) fn add_addrs_in(ns: Option<&str>, iface: &str, addrs: &[&str]) -> Result<()> {
    for addr in addrs {
        let mut args = vec!["addr", "add", addr, "dev", iface];
        if addr.contains(':') {
            args.push("nodad");
        }
        ip_in(ns, &args)?;
    }
    Ok(())
}

/// Runs `f` on a new thread that has joined the network namespace at
/// `netns` (or stays in the root one). Sockets it creates stay in that
/// namespace wherever they are used afterwards.
pub(crate) fn in_netns<T: Send>(netns: Option<&Path>, f: impl FnOnce() -> T + Send) -> Result<T> {
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

/// Writes a sysctl in the namespace at `netns` (or the root one).
pub(crate) fn write_sysctl(netns: Option<&Path>, key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    in_netns(netns, || {
        std::fs::write(&path, value).with_context(|| format!("sysctl {key}={value}"))
    })?
}

/// `ip -j link show dev IFACE` (in `ns`, or the root namespace), the one link.
pub(crate) fn link_json(ns: Option<&str>, iface: &str) -> Result<Value> {
    let json = ip_in(ns, &["-j", "link", "show", "dev", iface])?;
    let value: Value = serde_json::from_str(&json).context("parsing `ip -j link show`")?;
    value
        .get(0)
        .cloned()
        .ok_or_else(|| anyhow!("`ip -j link show dev {iface}` printed no link"))
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
}
