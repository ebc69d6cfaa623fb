//! `xdp-ingress`: parse the command line, then run the edge or inspect it.

use std::{collections::BTreeMap, io::IsTerminal};

use anyhow::{Context, Result};
use clap::Parser;
use ingress_common::{action, protocol};
use tracing::{info, warn};
use xdp_ingress::{
    bpf::{
        bpffs::{self, PinDirLock},
        edge::XdpEdge,
        inspect,
        listeners::keys_for_socket,
    },
    cli::{Cli, Command, MapsArgs, RunArgs},
};

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Maps(args) => print_maps(&args),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

#[tokio::main]
async fn run(args: RunArgs) -> Result<()> {
    // Installed first: a SIGTERM during start-up (a pod killed while
    // starting) is held until start-up is done, then cleaned up as usual.
    let mut shutdown = ShutdownSignals::install()?;
    if bpffs::ensure_pin_dir(&args.bpffs)? {
        info!(
            mount = bpffs::DEFAULT_BPFFS_MOUNT,
            "no BPF filesystem was mounted: mounted bpffs"
        );
    }
    let _lock = PinDirLock::acquire(&args.bpffs)?;
    let mut edge = XdpEdge::load(Some(&args.bpffs)).context("loading the XDP program")?;
    let result = serve(&mut edge, &args, &mut shutdown).await;
    edge.detach_all();
    edge.unpin()?;
    info!(bpffs = %args.bpffs.display(), "removed pins");
    result
}

async fn serve(edge: &mut XdpEdge, args: &RunArgs, shutdown: &mut ShutdownSignals) -> Result<()> {
    let mut listeners = BTreeMap::new();
    for addr in [args.http_addr, args.https_addr] {
        for key in keys_for_socket(addr, protocol::TCP) {
            listeners.insert(key, action::PASS_TO_PROXY);
        }
    }
    edge.sync_listeners(&listeners)?;
    for interface in &args.interfaces {
        let mode = edge.attach(interface, args.xdp_mode)?;
        info!(%interface, %mode, "attached XDP");
    }
    info!(
        http = %args.http_addr,
        https = %args.https_addr,
        bpffs = %args.bpffs.display(),
        "xdp-ingress ready"
    );
    shutdown.wait().await;
    Ok(())
}

/// SIGTERM and SIGINT, caught from the start of `run`.
struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => info!("SIGTERM: shutting down"),
            _ = self.interrupt.recv() => info!("SIGINT: shutting down"),
        }
    }
}

fn print_maps(args: &MapsArgs) -> Result<()> {
    if !args.bpffs.exists() {
        warn!(bpffs = %args.bpffs.display(), "pin directory does not exist");
    }
    let report = inspect::read_pinned(&args.bpffs)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}
