//! `cargo xtask demo`: a lab of network namespaces (client and edge), the
//! daemon attached to the edge's interface, traffic from the client, and the
//! XDP counters as they grow.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    command::{self, is_root, step, workspace_root},
    ebpf::{self, BuildEbpfArgs},
    setup,
};

/// Options of `cargo xtask demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub seconds: Option<u64>,
    /// XDP mode for the edge: native, skb or auto.
    #[arg(long, default_value = "native")]
    pub xdp_mode: String,
}

const EDGE_ADDR: &str = "198.18.0.1";
const CLIENT_ADDR: &str = "198.18.0.2";
const BPFFS_DIR: &str = "/sys/fs/bpf/xdp-ingress";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// The demo's namespaces and daemon; removed on drop, also after an error.
struct DemoLab {
    client: String,
    edge: String,
    edge_if: String,
    daemon: Option<Child>,
    log: PathBuf,
}

impl DemoLab {
    fn create() -> Result<Self> {
        let id = std::process::id() % 100_000;
        let lab = Self {
            client: format!("xdpi-demo-{id}-client"),
            edge: format!("xdpi-demo-{id}-edge"),
            edge_if: format!("xdpe{id}"),
            daemon: None,
            log: std::env::temp_dir().join(format!("xdp-ingress-demo-{id}.log")),
        };
        let client_if = format!("xdpc{id}");
        for ns in [&lab.client, &lab.edge] {
            command::run(Command::new("ip").args(["netns", "add", ns]))?;
            ip(ns, &["link", "set", "lo", "up"])?;
        }
        command::run(Command::new("ip").args([
            "link",
            "add",
            &client_if,
            "netns",
            &lab.client,
            "type",
            "veth",
            "peer",
            "name",
            &lab.edge_if,
            "netns",
            &lab.edge,
        ]))?;
        ip(
            &lab.client,
            &[
                "addr",
                "add",
                &format!("{CLIENT_ADDR}/24"),
                "dev",
                &client_if,
            ],
        )?;
        ip(
            &lab.edge,
            &[
                "addr",
                "add",
                &format!("{EDGE_ADDR}/24"),
                "dev",
                &lab.edge_if,
            ],
        )?;
        ip(&lab.client, &["link", "set", &client_if, "up"])?;
        ip(&lab.edge, &["link", "set", &lab.edge_if, "up"])?;
        Ok(lab)
    }

    /// Starts the daemon inside the edge namespace. `nsenter --net` (not
    /// `ip netns exec`) keeps the host's /sys, so the pins land on the
    /// host's bpffs where bpftool and `xdp-ingress maps` see them.
    fn start_daemon(&mut self, binary: &Path, xdp_mode: &str) -> Result<()> {
        let log = std::fs::File::create(&self.log)?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.edge))
            .arg(binary)
            .args(["run", "--interface", &self.edge_if, "--xdp-mode", xdp_mode])
            .args(["--bpffs", BPFFS_DIR])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting xdp-ingress")?;
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains("xdp-ingress ready") {
                print!("{text}");
                return Ok(());
            }
            if let Some(status) = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("xdp-ingress exited ({status}):\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "xdp-ingress did not become ready within 15 s; its log is {}",
            self.log.display()
        )
    }

    fn stop_daemon(&mut self) {
        let Some(mut child) = self.daemon.take() else {
            return;
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                // The daemon's own account of its shutdown (detach, unpin).
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                for line in &lines[lines.len().saturating_sub(4)..] {
                    println!("{line}");
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for DemoLab {
    fn drop(&mut self) {
        self.stop_daemon();
        for ns in [&self.client, &self.edge] {
            let _ = command::output(Command::new("ip").args(["netns", "del", ns]));
        }
        let _ = std::fs::remove_file(&self.log);
        println!(
            "\nlab removed (namespaces {} and {})",
            self.client, self.edge
        );
    }
}

fn ip(ns: &str, args: &[&str]) -> Result<()> {
    command::run(Command::new("ip").args(["-n", ns]).args(args))
}

fn in_ns(ns: &str, script: &str) -> Result<std::process::Output> {
    command::output(Command::new("ip").args(["netns", "exec", ns, "bash", "-c", script]))
}

/// One round of traffic from the client: HTTP and HTTPS connection attempts
/// (steered to the proxy by XDP) and UDP datagrams to a port without a listener.
fn send_round(lab: &DemoLab) -> Result<String> {
    let script = format!(
        "ok=0; for i in 1 2 3; do curl -s -o /dev/null -m 1 http://{EDGE_ADDR}/ && ok=$((ok+1)); done; \
         curl -s -o /dev/null -m 1 https://{EDGE_ADDR}/ ; \
         for i in 1 2 3 4 5; do echo demo > /dev/udp/{EDGE_ADDR}/5353; done; echo $ok"
    );
    let out = in_ns(&lab.client, &script)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `cargo xtask demo`.
pub fn run(args: &DemoArgs) -> Result<()> {
    if !is_root() {
        bail!("the demo creates network namespaces and loads XDP: run it as root");
    }
    let missing = setup::missing()?;
    if !missing.is_empty() {
        step(&format!(
            "Setting up first (missing: {})",
            missing.join(", ")
        ));
        setup::run()?;
    }
    ebpf::build(&BuildEbpfArgs { release: false })?;
    step("Building xdp-ingress");
    let root = workspace_root();
    command::run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--package",
        "ingress-userspace",
    ]))?;
    let binary = command::target_dir().join("debug/xdp-ingress");

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

    step("Creating the lab: client namespace <-> edge namespace (veth)");
    let mut lab = DemoLab::create()?;
    println!(
        "client {CLIENT_ADDR} in {}, edge {EDGE_ADDR} in {} ({})",
        lab.client, lab.edge, lab.edge_if
    );

    step("Starting xdp-ingress on the edge");
    lab.start_daemon(&binary, &args.xdp_mode)?;
    println!(
        "\nWhile the demo runs, read the pinned maps from another terminal:\n  \
         bpftool map dump pinned {BPFFS_DIR}/verdict_stats\n  \
         bpftool map dump pinned {BPFFS_DIR}/listeners\n  \
         {} maps\n",
        binary.display()
    );
    println!(
        "The L7 proxy is not in this build yet, so connections to ports 80/443 are refused by the\n\
         edge's kernel after XDP has counted them and passed them up (pass-to-proxy)."
    );

    let deadline = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut round = 0u64;
    while !INTERRUPTED.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        round += 1;
        let answered = send_round(&lab)?;
        step(&format!(
            "Round {round}: 3 HTTP + 1 HTTPS connection attempts ({answered} answered), 5 UDP datagrams to port 5353"
        ));
        let maps = command::output(Command::new(&binary).args(["maps", "--bpffs", BPFFS_DIR]))?;
        print!("{}", String::from_utf8_lossy(&maps.stdout));
        if !maps.status.success() {
            bail!(
                "xdp-ingress maps failed: {}",
                String::from_utf8_lossy(&maps.stderr)
            );
        }
        for _ in 0..20 {
            if INTERRUPTED.load(Ordering::SeqCst) || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    step("Stopping");
    lab.stop_daemon();
    let left = Path::new(BPFFS_DIR).exists();
    println!(
        "pins {}",
        if left {
            "still present (unexpected)"
        } else {
            "removed"
        }
    );
    Ok(())
}
