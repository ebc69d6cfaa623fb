//! The command line. Flags keep ingress-nginx's names where it has one.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::bpf::edge::XdpModeChoice;

/// Default directory of the pinned maps.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/xdp-ingress";

/// xdp-ingress: a Kubernetes ingress controller with an XDP-accelerated edge.
///
/// Logging follows RUST_LOG (for example RUST_LOG=debug or
/// RUST_LOG=xdp_ingress=debug); the default is info.
#[derive(Debug, Parser)]
#[command(name = "xdp-ingress", version, about, long_about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the edge: load the XDP program, attach it to the interfaces, fill
    /// its listener map, and serve until SIGINT or SIGTERM, which detach the
    /// program and remove its pins.
    Run(RunArgs),
    /// Print the pinned maps of a running daemon: listeners and the counters
    /// summed over CPUs.
    Maps(MapsArgs),
}

/// Options of `xdp-ingress run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A network interface to attach the XDP program to (repeat for several).
    #[arg(long = "interface", short = 'i', value_name = "IFACE", required = true)]
    pub interfaces: Vec<String>,

    /// XDP attach mode: native (in the driver), skb (generic, any interface),
    /// or auto (native, falling back to skb where the driver refuses).
    #[arg(long, value_enum, default_value_t = XdpModeChoice::Auto)]
    pub xdp_mode: XdpModeChoice,

    /// Directory for the pinned maps. When it is not on a BPF filesystem,
    /// bpffs is mounted at /sys/fs/bpf first.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BPFFS_DIR)]
    pub bpffs: PathBuf,

    /// Address of the HTTP listener; TCP to it is steered to the proxy.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:80")]
    pub http_addr: SocketAddr,

    /// Address of the HTTPS listener; TCP to it is steered to the proxy.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:443")]
    pub https_addr: SocketAddr,
}

/// Options of `xdp-ingress maps`.
#[derive(Debug, Args)]
pub struct MapsArgs {
    /// Directory of the pinned maps (the daemon's --bpffs).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BPFFS_DIR)]
    pub bpffs: PathBuf,

    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults_match_ingress_nginx_ports() {
        let cli = Cli::try_parse_from(["xdp-ingress", "run", "--interface", "eth0"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(run.interfaces, vec!["eth0"]);
        assert_eq!(run.xdp_mode, XdpModeChoice::Auto);
        assert_eq!(run.http_addr, "0.0.0.0:80".parse().unwrap());
        assert_eq!(run.https_addr, "0.0.0.0:443".parse().unwrap());
        assert_eq!(run.bpffs, PathBuf::from(DEFAULT_BPFFS_DIR));
    }

    #[test]
    fn run_needs_an_interface() {
        assert!(Cli::try_parse_from(["xdp-ingress", "run"]).is_err());
    }
}
