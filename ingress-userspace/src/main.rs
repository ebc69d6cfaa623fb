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
    if bpffs::ensure_pin_dir(&args.bpffs)? {
        info!(
            mount = bpffs::DEFAULT_BPFFS_MOUNT,
            "no BPF filesystem was mounted: mounted bpffs"
        );
    }
    let _lock = PinDirLock::acquire(&args.bpffs)?;
    let mut edge = XdpEdge::load(Some(&args.bpffs)).context("loading the XDP program")?;
    let result = serve(&mut edge, &args).await;
    edge.detach_all();
    edge.unpin()?;
    info!(bpffs = %args.bpffs.display(), "removed pins");
    result
}

async fn serve(edge: &mut XdpEdge, args: &RunArgs) -> Result<()> {
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
    wait_for_shutdown().await?;
    Ok(())
}

async fn wait_for_shutdown() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => info!("SIGTERM: shutting down"),
        _ = interrupt.recv() => info!("SIGINT: shutting down"),
    }
    Ok(())
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
