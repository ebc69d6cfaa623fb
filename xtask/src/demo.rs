//! `cargo xtask demo`: the quick-start of the ingress-nginx tutorial
//! (deploy/examples/quickstart.yaml) on xdp-ingress, in a lab of network
//! namespaces built with the shared lab crate:
//!
//! ```text
//!  client                 edge                                    backends
//!  198.18.0.2/24 <-veth-> 198.18.0.1/24 (XDP, proxy on :80)
//!                         198.18.3.1/24                <-veth->   198.18.3.2/24
//!                         198.18.1.0/24, 198.18.2.0/24            198.18.1.1-3 nginx-web :80
//!                           via 198.18.3.2                        198.18.2.1   web-httpd :80
//! ```
//!
//! The client sends requests for the tutorial's two hosts and an unknown
//! one; the demo prints who answered each, and the XDP counters.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use xdp_ingress_lab::{self as lab, Backend, Daemon, HttpReply, Netns, Veth};

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

/// The manifests of the tutorial's quick-start, relative to the workspace.
const MANIFESTS: &str = "deploy/examples/quickstart.yaml";
/// Where the daemon pins its maps (its default, so the hints are the usual ones).
const BPFFS_DIR: &str = "/sys/fs/bpf/xdp-ingress";
/// The edge's address on the client's link: the "node" curl talks to.
const EDGE_ADDR: &str = "198.18.0.1";
const CLIENT_ADDR: &str = "198.18.0.2";
/// The link between the edge and the backends' namespace.
const EDGE_BACKEND_LINK_ADDR: &str = "198.18.3.1";
const BACKENDS_LINK_ADDR: &str = "198.18.3.2";
/// The Services of the quick-start: name, endpoint addresses (port 80), and
/// the subnet the edge routes to the backends' namespace.
const SERVICES: [(&str, &[&str], &str); 2] = [
    (
        "nginx-web",
        &["198.18.1.1", "198.18.1.2", "198.18.1.3"],
        "198.18.1.0/24",
    ),
    ("web-httpd", &["198.18.2.1"], "198.18.2.0/24"),
];
/// The requests of one round: the Host header, how many times.
const REQUESTS: [(&str, usize); 3] = [
    ("web.myingressplayroom.com", 3),
    ("httpd.ingressplayroom.com", 1),
    ("unknown.example.com", 1),
];
/// Time from the start of one round to the start of the next.
const ROUND_INTERVAL: Duration = Duration::from_secs(2);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// The demo's namespaces, links and backends; removed on drop (fields drop
/// in declaration order: backends, links, then namespaces), also after an
/// error or Ctrl-C.
struct QuickstartLab {
    backends: Vec<Backend>,
    client_link: Veth,
    backend_link: Veth,
    client: Netns,
    edge: Netns,
    backend_ns: Netns,
}

impl QuickstartLab {
    fn create() -> Result<Self> {
        let client = Netns::new("client")?;
        let edge = Netns::new("edge")?;
        let backend_ns = Netns::new("backends")?;
        let client_link = Veth::between(Some(&client), Some(&edge))
            .addrs_a(&[&format!("{CLIENT_ADDR}/24")])
            .addrs_b(&[&format!("{EDGE_ADDR}/24")])
            .create()?;
        let backend_link = Veth::between(Some(&edge), Some(&backend_ns))
            .addrs_a(&[&format!("{EDGE_BACKEND_LINK_ADDR}/24")])
            .addrs_b(&[&format!("{BACKENDS_LINK_ADDR}/24")])
            .create()?;
        let mut lab = Self {
            backends: Vec::new(),
            client_link,
            backend_link,
            client,
            edge,
            backend_ns,
        };
        // The endpoints are host addresses in the backends' namespace, like
        // pod IPs, which the edge reaches through its routes; the replies
        // go back over the link's own subnet. The client only reaches the
        // edge: no forwarding, the proxy is the way in.
        for (name, endpoints, subnet) in SERVICES {
            let hosts: Vec<String> = endpoints.iter().map(|ip| format!("{ip}/32")).collect();
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            lab.backend_ns.add_addrs(&lab.backend_link.b.name, &hosts)?;
            lab.edge.add_route(subnet, BACKENDS_LINK_ADDR)?;
            let addrs = endpoints
                .iter()
                .map(|ip| format!("{ip}:80").parse())
                .collect::<Result<Vec<SocketAddr>, _>>()?;
            lab.backends
                .push(Backend::start(&lab.backend_ns, name, &addrs)?);
            for addr in addrs {
                lab.edge
                    .wait_tcp(addr, Duration::from_secs(5))
                    .context("the edge cannot reach a backend")?;
            }
        }
        Ok(lab)
    }

    /// The edge's interface on the client's link, where XDP goes.
    fn edge_interface(&self) -> &str {
        &self.client_link.b.name
    }

    /// Prints who is where.
    fn describe(&self) {
        println!(
            "  client   {:<26} {CLIENT_ADDR}/24 on {}",
            self.client.name(),
            self.client_link.a.name
        );
        println!(
            "  edge     {:<26} {EDGE_ADDR}/24 on {} (XDP, proxy :80), {EDGE_BACKEND_LINK_ADDR}/24 on {}",
            self.edge.name(),
            self.client_link.b.name,
            self.backend_link.a.name
        );
        println!(
            "  backends {:<26} {BACKENDS_LINK_ADDR}/24 on {}",
            self.backend_ns.name(),
            self.backend_link.b.name
        );
        for backend in &self.backends {
            let addrs: Vec<String> = backend.addrs().iter().map(|a| a.to_string()).collect();
            println!(
                "           lab-backend {:<14} {}",
                backend.name(),
                addrs.join(" ")
            );
        }
    }
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
    step("Building xdp-ingress and lab-backend");
    let root = workspace_root();
    command::run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--package",
        "ingress-userspace",
        "--package",
        "xdp-ingress-lab",
    ]))?;
    let binary = lab::daemon_binary()?;
    let manifests = root.join(MANIFESTS);

    step(&format!("xdp-ingress routes --manifests {MANIFESTS}"));
    print_routes(&binary, &manifests)?;

    // Ctrl-C only stops the loop below; the lab's processes have their own
    // process group, so the guards stop them in order.
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

    step("Creating the lab: client <-> edge <-> backends (network namespaces)");
    let lab = QuickstartLab::create()?;
    lab.describe();

    step(&format!(
        "Starting xdp-ingress on the edge ({})",
        lab.edge_interface()
    ));
    let manifests_arg = manifests.display().to_string();
    let mut daemon = Daemon::in_netns(&lab.edge)
        .interface(lab.edge_interface())
        .bpffs(BPFFS_DIR)
        .args(&[
            "--xdp-mode",
            &args.xdp_mode,
            "--manifests",
            &manifests_arg,
            "--http-addr",
            "0.0.0.0:80",
        ])
        .start()?;
    print_indented(&daemon.log());
    println!(
        "\nWhile the demo runs, from another terminal:\n  \
         bpftool map dump pinned {BPFFS_DIR}/verdict_stats\n  \
         {} maps\n  \
         ip netns exec {} curl -H 'Host: web.myingressplayroom.com' http://{EDGE_ADDR}/\n\n\
         A round of requests every {} s{}.",
        binary.display(),
        lab.client.name(),
        ROUND_INTERVAL.as_secs(),
        match args.seconds {
            Some(seconds) => format!(" for {seconds} s"),
            None => ", until Ctrl-C".to_owned(),
        }
    );

    let deadline = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    let over =
        || INTERRUPTED.load(Ordering::SeqCst) || deadline.is_some_and(|d| Instant::now() >= d);
    let mut spread: BTreeMap<String, u64> = BTreeMap::new();
    let mut round = 0u64;
    while !over() {
        round += 1;
        let started = Instant::now();
        step(&format!(
            "Round {round}: requests from the client to http://{EDGE_ADDR}/"
        ));
        if !send_requests(&lab.client, &mut spread) {
            break;
        }
        if !daemon.running() {
            bail!("xdp-ingress stopped unexpectedly:\n{}", daemon.log());
        }
        let tally: Vec<String> = spread.iter().map(|(e, n)| format!("{e} x{n}")).collect();
        println!("  nginx-web endpoints so far: {}", tally.join(", "));
        println!("\n  xdp-ingress maps:");
        let maps = lab::run_ok(Command::new(&binary).args(["maps", "--bpffs", BPFFS_DIR]))?;
        print_indented(&maps);
        while !over() && started.elapsed() < ROUND_INTERVAL {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    step("Stopping");
    let status = daemon.stop()?;
    let log = daemon.log();
    let lines: Vec<&str> = log.lines().collect();
    print_indented(&lines[lines.len().saturating_sub(3)..].join("\n"));
    println!("  xdp-ingress exited ({status})");
    if !status.success() {
        bail!("xdp-ingress did not exit cleanly:\n{log}");
    }
    drop(daemon);
    let names = [
        lab.client.name().to_owned(),
        lab.edge.name().to_owned(),
        lab.backend_ns.name().to_owned(),
    ];
    drop(lab);
    println!(
        "  lab removed (namespaces {}); pins {}",
        names.join(", "),
        if Path::new(BPFFS_DIR).exists() {
            "still present (unexpected)"
        } else {
            "removed"
        }
    );
    Ok(())
}

/// `xdp-ingress routes --manifests FILE`, or a note when this build of the
/// daemon has no `routes` subcommand.
fn print_routes(binary: &Path, manifests: &Path) -> Result<()> {
    let out = lab::run_with_timeout(
        Command::new(binary)
            .arg("routes")
            .arg("--manifests")
            .arg(manifests),
        lab::COMMAND_TIMEOUT,
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        print_indented(&String::from_utf8_lossy(&out.stdout));
    } else if stderr.contains("unrecognized subcommand") {
        println!("  (skipped: this build of xdp-ingress has no `routes` subcommand)");
    } else {
        bail!("xdp-ingress routes failed ({}):\n{stderr}", out.status);
    }
    Ok(())
}

/// One round of [`REQUESTS`] from the client, a line each; counts which
/// nginx-web endpoint answered in `spread`. False when interrupted.
fn send_requests(client: &Netns, spread: &mut BTreeMap<String, u64>) -> bool {
    println!(
        "  {:<27} {:<6} {:<10} ENDPOINT",
        "HOST", "STATUS", "BACKEND"
    );
    for (host, count) in REQUESTS {
        for _ in 0..count {
            let reply =
                client.http_get(&format!("http://{EDGE_ADDR}/"), &[&format!("Host: {host}")]);
            if INTERRUPTED.load(Ordering::SeqCst) {
                // Ctrl-C reached curl too; its failure means nothing.
                return false;
            }
            let (status, backend, endpoint) = describe_reply(reply);
            if backend == "nginx-web" {
                *spread.entry(endpoint.clone()).or_default() += 1;
            }
            println!("  {host:<27} {status:<6} {backend:<10} {endpoint}");
        }
    }
    true
}

/// (status, backend, endpoint) of a reply, for a line of the table: the
/// backend's own report, or what the proxy (or curl) said instead.
fn describe_reply(reply: Result<HttpReply>) -> (String, String, String) {
    match reply {
        Ok(reply) => match reply.report() {
            Ok(report) => (reply.status.to_string(), report.backend, report.endpoint),
            Err(_) => (
                reply.status.to_string(),
                "-".to_owned(),
                format!("(from xdp-ingress: {})", page_title(&reply.text())),
            ),
        },
        Err(error) => ("-".to_owned(), "-".to_owned(), format!("{error:#}")),
    }
}

/// The `<title>` of the proxy's own (nginx-style) error page, else the
/// body's first line.
fn page_title(body: &str) -> &str {
    body.split_once("<title>")
        .and_then(|(_, rest)| rest.split_once("</title>"))
        .map_or_else(|| body.lines().next().unwrap_or(""), |(title, _)| title)
        .trim()
}

fn print_indented(text: &str) {
    for line in text.lines() {
        if line.trim().is_empty() {
            println!();
        } else {
            println!("  {line}");
        }
    }
}
