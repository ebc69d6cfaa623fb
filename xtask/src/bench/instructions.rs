//! User-space instructions per request, counted by callgrind: the part of a
//! proxy's per-request cost that its own code (and its libraries) decides.
//! The kernel's part is not counted: in this lab it is the same for both
//! proxies (two `writev` and two `recvfrom` per request). Unlike the timed
//! rows, the count does not depend on what else the machine is doing.
//!
//! Each proxy runs under `valgrind --tool=callgrind` in a namespace of its
//! own, on loopback, with the row's configuration for one Ingress and the
//! same three `lab-backend` endpoints; the counters are zeroed after a
//! warm-up and dumped after a wrk run, whose responses divide the total.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use xdp_ingress_lab::{Backend, Background, Netns, ScratchDir, poll_until, run_ok};

use super::{
    Binaries,
    lab::{LOAD_CPU, PROXY_CPU},
    nginx::{self, UpstreamLayout},
    under_test::Proxy,
    wrk::{HOSTS_SCRIPT, WrkLoad},
    xdp,
};

/// The backends' addresses: loopback addresses of the namespace.
const ENDPOINTS: [SocketAddr; 3] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 8080),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 12)), 8080),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 13)), 8080),
];

/// Where the proxy listens.
const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 8000);

/// Valgrind runs a program 20-50 times slower: generous bounds.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What callgrind counted for one proxy.
#[derive(Debug, Clone, Copy)]
pub struct InstructionCount {
    /// Responses wrk received while counting.
    pub requests: u64,
    /// User-space instructions executed by the proxy's processes meanwhile.
    pub instructions: u64,
}

impl InstructionCount {
    /// Instructions per request.
    pub fn per_request(&self) -> f64 {
        self.instructions as f64 / self.requests.max(1) as f64
    }
}

/// True when valgrind is installed.
pub fn available() -> bool {
    run_ok(Command::new("valgrind").arg("--version")).is_ok()
}

/// Counts `proxy`'s instructions per request under `seconds` of wrk with
/// `connections` connections (after `warmup` seconds of it).
pub fn count(
    proxy: Proxy,
    binaries: &Binaries,
    warmup: u64,
    seconds: u64,
    connections: u32,
) -> Result<InstructionCount> {
    let ns = Netns::new("ins")?;
    let dir = ScratchDir::new("instructions")?;
    let _backend = Backend::builder(&ns, "backend", &ENDPOINTS)
        .binary(&binaries.backend)
        .cpus(LOAD_CPU)
        .start()?;
    let out_file = dir.path().join("callgrind.out");
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns.name(), "taskset", "-c", PROXY_CPU]);
    command.args(["valgrind", "--tool=callgrind"]);
    command.arg(format!("--callgrind-out-file={}", out_file.display()));
    proxy_command(&mut command, proxy, binaries, dir.path())?;
    let mut running = Background::start(&mut command)?;
    poll_until(
        &format!("{} under valgrind to serve", proxy.name()),
        START_TIMEOUT,
        || {
            if !running.running() {
                bail!("{} exited under valgrind", proxy.name());
            }
            Ok(ns.accepts_tcp(LISTEN)?.then_some(()))
        },
    )?;

    let script = dir.path().join("hosts.lua");
    std::fs::write(&script, HOSTS_SCRIPT)?;
    let load = |seconds: u64| {
        WrkLoad {
            client: &ns,
            cpus: LOAD_CPU,
            url: format!("http://{LISTEN}/"),
            script: &script,
            hosts: 1,
            connections,
            duration: Duration::from_secs(seconds),
        }
        .run()
    };
    let warm = load(warmup.max(1))?;
    if warm.requests == 0 || warm.failures() > 0 {
        bail!(
            "{} under valgrind did not serve the warm-up: {warm:?}",
            proxy.name()
        );
    }
    callgrind_control(running.pid(), "--zero")?;
    let measured = load(seconds)?;
    callgrind_control(running.pid(), "--dump")?;
    running.stop(Duration::from_secs(30))?;
    if measured.failures() > 0 {
        bail!(
            "{} failed requests under valgrind: {measured:?}",
            proxy.name()
        );
    }
    let instructions = dumped_instructions(&dump_file(&out_file))?;
    Ok(InstructionCount {
        requests: measured.requests,
        instructions,
    })
}

/// Appends the proxy's command line (one process: no master, one worker).
fn proxy_command(
    command: &mut Command,
    proxy: Proxy,
    binaries: &Binaries,
    dir: &Path,
) -> Result<()> {
    match proxy {
        Proxy::XdpIngress => {
            let manifests = dir.join("manifests.yaml");
            std::fs::write(&manifests, xdp::manifests(1, &ENDPOINTS))?;
            command
                .env("TOKIO_WORKER_THREADS", "1")
                .arg(&binaries.daemon)
                .args([
                    "run",
                    "--manifests",
                    &manifests.display().to_string(),
                    "--http-addr",
                    &LISTEN.to_string(),
                    "--https-addr",
                    "127.0.0.1:8443",
                    "--metrics-addr",
                    "127.0.0.1:10254",
                    "--access-log",
                    "off",
                ]);
        }
        Proxy::Nginx => {
            std::fs::create_dir_all(dir.join("tmp"))?;
            std::fs::create_dir_all(dir.join("conf.d"))?;
            let config = dir.join("nginx.conf");
            std::fs::write(
                &config,
                nginx::config(dir, LISTEN, 1, &ENDPOINTS, UpstreamLayout::Shared),
            )?;
            command
                .arg("nginx")
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&config)
                .args(["-g", "daemon off; master_process off;"]);
        }
    }
    Ok(())
}

fn callgrind_control(pid: u32, action: &str) -> Result<()> {
    run_ok(Command::new("callgrind_control").args([action, &pid.to_string()]))
        .with_context(|| format!("callgrind_control {action} {pid}"))?;
    Ok(())
}

/// The file of the first explicit dump (callgrind appends `.1`).
fn dump_file(out_file: &Path) -> PathBuf {
    let mut name = out_file.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The `summary:` (or `totals:`) of a callgrind dump: instructions since
/// the last zeroing.
fn dumped_instructions(file: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading callgrind's dump {}", file.display()))?;
    parse_total(&text).with_context(|| format!("no instruction total in {}", file.display()))
}

fn parse_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| {
            line.strip_prefix("summary:")
                .or_else(|| line.strip_prefix("totals:"))
        })
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_total_is_read() {
        let dump = "# callgrind format\nversion: 1\npositions: line\nevents: Ir\nsummary: 243117191\n\nob=(3) x\n";
        assert_eq!(parse_total(dump), Some(243_117_191));
        assert_eq!(parse_total("events: Ir\ntotals: 12\n"), Some(12));
        assert_eq!(parse_total("events: Ir\n"), None);
    }

    #[test]
    fn dumps_are_numbered() {
        assert_eq!(
            dump_file(Path::new("/tmp/x/callgrind.out")),
            PathBuf::from("/tmp/x/callgrind.out.1")
        );
    }

    #[test]
    fn per_request_divides() {
        let count = InstructionCount {
            requests: 4,
            instructions: 100,
        };
        assert_eq!(count.per_request(), 25.0);
    }
}
