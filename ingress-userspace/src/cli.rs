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
    /// Run the controller: serve HTTP and HTTPS routed by the Ingresses
    /// (watched on the API server, or read from --manifests), with the XDP
    /// program on the --interface NICs steering the listener ports to the
    /// proxy, until SIGINT or SIGTERM, which drain open connections, detach
    /// the program and remove its pins.
    Run(Box<RunArgs>),
    /// Print the pinned maps of a running daemon: listeners and the counters
    /// summed over CPUs.
    Maps(MapsArgs),
    /// Print the routing table that manifests resolve to (host, path, type,
    /// Ingress, Service, endpoints) and the problems found, then exit.
    Routes(RoutesArgs),
    /// Before switching from ingress-nginx: for every Ingress (of any
    /// class), each ingress-nginx annotation applied as ingress-nginx does,
    /// applied with a difference, not supported, failing closed or refused.
    Migrate(MigrateArgs),
}

/// Options of `xdp-ingress migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The Ingresses (and the Secrets they name) from YAML or JSON files: a
    /// file or a directory (repeatable).
    #[arg(long = "manifests", value_name = "PATH")]
    pub manifests: Vec<PathBuf>,

    /// Read them from the cluster of this kubeconfig instead (Ingresses and
    /// Secrets of every namespace).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Where ingress-nginx's annotations are (its `--annotations-prefix`).
    #[arg(long, value_name = "PREFIX", default_value = ingress_model::options::DEFAULT_ANNOTATIONS_PREFIX)]
    pub annotations_prefix: String,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Which Ingresses are ours, and where unmatched requests go.
#[derive(Debug, Clone, Args)]
pub struct IngressArgs {
    /// Kubernetes objects from YAML or JSON files: a file or a directory of
    /// .yaml/.yml/.json files (repeatable). Changes apply live. Without
    /// it, `run` watches the API server when in a pod or given --kubeconfig.
    #[arg(long = "manifests", value_name = "PATH")]
    pub manifests: Vec<PathBuf>,

    /// Name of our IngressClass (also accepted in the legacy
    /// kubernetes.io/ingress.class annotation).
    #[arg(long, value_name = "NAME", default_value = ingress_model::DEFAULT_INGRESS_CLASS)]
    pub ingress_class: String,

    /// The spec.controller value of IngressClasses that are ours.
    #[arg(long, value_name = "NAME", default_value = ingress_model::CONTROLLER_NAME)]
    pub controller_class: String,

    /// Also take Ingresses that name no class, without a default IngressClass.
    #[arg(long)]
    pub watch_ingress_without_class: bool,

    /// Service (namespace/name[:port]) for requests that match no rule,
    /// instead of the built-in 404.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub default_backend_service: Option<ingress_model::DefaultBackendService>,

    /// ConfigMap (namespace/name) with global settings under
    /// ingress-nginx's keys (proxy-body-size, whitelist-source-range,
    /// ssl-redirect, ...), applied live; they override the flags.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_object_key)]
    pub configmap: Option<ingress_model::ObjectKey>,

    /// Where ingress-nginx's annotations are read, as its flag of the same
    /// name (xdp-ingress.io/ is read too, and wins).
    #[arg(long, value_name = "PREFIX", default_value = ingress_model::options::DEFAULT_ANNOTATIONS_PREFIX)]
    pub annotations_prefix: String,
}

impl IngressArgs {
    /// The routing model's options.
    pub fn model_options(&self) -> ingress_model::ModelOptions {
        ingress_model::ModelOptions {
            controller_name: self.controller_class.clone(),
            ingress_class: self.ingress_class.clone(),
            watch_ingress_without_class: self.watch_ingress_without_class,
            default_backend_service: self.default_backend_service.clone(),
            annotations_prefix: self.annotations_prefix.clone(),
            ..ingress_model::ModelOptions::default()
        }
    }
}

/// Options of `xdp-ingress routes`.
#[derive(Debug, Args)]
pub struct RoutesArgs {
    /// Where the objects come from, and which are ours.
    #[command(flatten)]
    pub ingress: IngressArgs,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options of `xdp-ingress run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A network interface to attach the XDP program to (repeat for several).
    /// Without any, only the proxy runs (no XDP edge).
    #[arg(long = "interface", short = 'i', value_name = "IFACE")]
    pub interfaces: Vec<String>,

    /// Where the objects come from, and which are ours.
    #[command(flatten)]
    pub ingress: IngressArgs,

    /// XDP attach mode: native (in the driver), skb (generic, any interface),
    /// or auto (native, falling back to skb where the driver refuses).
    #[arg(long, value_enum, default_value_t = XdpModeChoice::Auto)]
    pub xdp_mode: XdpModeChoice,

    /// Directory for the pinned maps. When it is not on a BPF filesystem,
    /// bpffs is mounted at /sys/fs/bpf first.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BPFFS_DIR)]
    pub bpffs: PathBuf,

    /// Address of the HTTP listener (the proxy); XDP steers TCP to it to the stack.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:80")]
    pub http_addr: SocketAddr,

    /// Address of the HTTPS listener; XDP steers TCP to it to the stack.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:443")]
    pub https_addr: SocketAddr,

    /// Secret (namespace/name, type kubernetes.io/tls) with the certificate
    /// for TLS handshakes without SNI or for unknown names; without it a
    /// self-signed certificate is generated at start.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_object_key)]
    pub default_ssl_certificate: Option<ingress_model::ObjectKey>,

    /// Send Strict-Transport-Security on HTTPS responses (ingress-nginx's hsts).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub hsts: bool,

    /// The max-age of Strict-Transport-Security, in seconds (hsts-max-age).
    #[arg(long, value_name = "SECONDS", default_value_t = 31_536_000)]
    pub hsts_max_age: u64,

    /// Add includeSubDomains to Strict-Transport-Security (hsts-include-subdomains).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub hsts_include_subdomains: bool,

    /// Add preload to Strict-Transport-Security (hsts-preload).
    #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set)]
    pub hsts_preload: bool,

    /// Where the access log goes: one line per request on stdout, in the
    /// ConfigMap's log-format-upstream (ingress-nginx's upstreaminfo by
    /// default), or off.
    #[arg(long, value_enum, default_value_t = AccessLogTarget::Stdout)]
    pub access_log: AccessLogTarget,

    /// Largest request body in bytes (ingress-nginx's proxy-body-size, 1m);
    /// larger requests get 413.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub proxy_body_size: u64,

    /// Seconds to wait for an upstream connection (proxy-connect-timeout).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub proxy_connect_timeout: u64,

    /// Seconds to wait for upstream response data (proxy-read-timeout).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub proxy_read_timeout: u64,

    /// Seconds to wait for request body data to send upstream (proxy-send-timeout).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub proxy_send_timeout: u64,

    /// Seconds a client may take to send a request head (client-header-timeout).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub client_header_timeout: u64,

    /// Seconds open client connections get to finish on shutdown before
    /// they are closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub shutdown_grace_period: u64,

    /// The kernel L4 tier (TCP/UDP services balanced in XDP).
    #[command(flatten)]
    pub l4: L4Args,
    /// The API server, status, events and leader election.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Address of the health and metrics listener: /healthz, /readyz and
    /// Prometheus /metrics (ingress-nginx's port).
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:10254")]
    pub metrics_addr: SocketAddr,
}

/// Options of running against the API server (in a pod, or with
/// --kubeconfig; not with --manifests). The downward API's POD_NAME,
/// POD_NAMESPACE and NODE_NAME say which pod and node this replica is; the
/// election Lease lives in POD_NAMESPACE (else the kubeconfig's namespace).
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Watch the API server of this kubeconfig. In a pod, without it and
    /// without --manifests, the pod's service account is used.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (IngressClasses are cluster-wide).
    #[arg(long, value_name = "NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Name of the Lease (in POD_NAMESPACE) that elects the one replica
    /// writing Ingress status and events.
    #[arg(long, value_name = "NAME", default_value = "xdp-ingress-leader")]
    pub election_id: String,
    /// Write status.loadBalancer of our Ingresses (the leader does).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub update_status: bool,
    /// Publish these addresses (IPs or host names, comma-separated) in the
    /// Ingress status instead of the nodes' addresses.
    #[arg(long, value_name = "ADDRESS,...", value_delimiter = ',')]
    pub publish_status_address: Vec<String>,
    /// Publish the load-balancer addresses (else external IPs) of this
    /// Service (namespace/name) in the Ingress status.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_object_key, conflicts_with = "publish_status_address")]
    pub publish_service: Option<ingress_model::ObjectKey>,
}

/// Options of the kernel L4 tier: ingress-nginx's TCP and UDP services
/// ConfigMaps, balanced in XDP (needs --interface).
#[derive(Debug, Clone, Args)]
pub struct L4Args {
    /// ConfigMap (namespace/name) of TCP services: entries
    /// "<port>": "<namespace>/<service>:<port>" (ingress-nginx's format;
    /// the :PROXY suffixes are reported as unsupported).
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_object_key)]
    pub tcp_services_configmap: Option<ingress_model::ObjectKey>,

    /// ConfigMap (namespace/name) of UDP services, as --tcp-services-configmap.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_object_key)]
    pub udp_services_configmap: Option<ingress_model::ObjectKey>,

    /// An address the L4 services listen on (repeatable); without it, the
    /// addresses of the --interface NICs.
    #[arg(long = "l4-address", value_name = "IP")]
    pub addresses: Vec<std::net::IpAddr>,

    /// full: backends see the edge's address (works whatever their route
    /// back); dnat: they see the client's and must route back through the edge.
    #[arg(long = "l4-nat", value_enum, default_value_t = crate::bpf::l4_plan::NatMode::Full)]
    pub nat: crate::bpf::l4_plan::NatMode,

    /// Slots of each service's Maglev table (a prime; ~100 x the backends
    /// a service has, at least).
    #[arg(long, value_name = "PRIME", default_value_t = ingress_common::l4::DEFAULT_TABLE_SIZE)]
    pub maglev_table_size: u32,

    /// Leave the pins in --bpffs when exiting: the maps (the L4 connection
    /// table among them) and the XDP links, so the program stays attached
    /// and keeps forwarding while no daemon runs, and a restarted daemon
    /// takes the links and flows over without losing a packet. Without it
    /// the pins are removed on exit, which detaches the program. Pins of
    /// the right shape are always reused at start.
    #[arg(long)]
    pub keep_pins_on_exit: bool,
}

impl L4Args {
    /// The ConfigMaps to read.
    pub fn config_maps(&self) -> ingress_model::L4ConfigMaps {
        ingress_model::L4ConfigMaps {
            tcp: self.tcp_services_configmap.clone(),
            udp: self.udp_services_configmap.clone(),
        }
    }
}

impl RunArgs {
    /// The Strict-Transport-Security value, `None` when turned off.
    pub fn hsts_value(&self) -> Option<String> {
        self.hsts_settings().value()
    }

    /// The `--hsts*` flags.
    pub fn hsts_settings(&self) -> ingress_model::controller_config::Hsts {
        ingress_model::controller_config::Hsts {
            enabled: self.hsts,
            max_age: self.hsts_max_age,
            include_subdomains: self.hsts_include_subdomains,
            preload: self.hsts_preload,
        }
    }
}

/// `namespace/name`.
fn parse_object_key(value: &str) -> Result<ingress_model::ObjectKey, String> {
    match value.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok(ingress_model::ObjectKey::new(namespace, name))
        }
        _ => Err(format!("{value:?} is not namespace/name")),
    }
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
    fn run_parses_ingress_options() {
        let cli = Cli::try_parse_from([
            "xdp-ingress",
            "run",
            "--manifests",
            "a.yaml",
            "--manifests",
            "dir",
            "--default-backend-service",
            "ns/fallback",
            "--watch-ingress-without-class",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("expected run");
        };
        assert!(run.interfaces.is_empty());
        assert_eq!(
            run.ingress.manifests,
            vec![PathBuf::from("a.yaml"), PathBuf::from("dir")]
        );
        let options = run.ingress.model_options();
        assert!(options.watch_ingress_without_class);
        assert_eq!(options.ingress_class, "xdp");
        assert_eq!(
            options.default_backend_service.unwrap().to_string(),
            "ns/fallback"
        );
    }

    #[test]
    fn tls_options() {
        let cli = Cli::try_parse_from([
            "xdp-ingress",
            "run",
            "--default-ssl-certificate",
            "ingress/default-cert",
            "--hsts-max-age",
            "60",
            "--hsts-include-subdomains",
            "false",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(
            run.default_ssl_certificate,
            Some(ingress_model::ObjectKey::new("ingress", "default-cert"))
        );
        assert_eq!(run.hsts_value().as_deref(), Some("max-age=60"));
        let cli = Cli::try_parse_from(["xdp-ingress", "run", "--hsts", "false"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(run.hsts_value(), None);
        assert!(
            Cli::try_parse_from(["xdp-ingress", "run", "--default-ssl-certificate", "nope"])
                .is_err()
        );
    }

    #[test]
    fn l4_options() {
        let cli = Cli::try_parse_from([
            "xdp-ingress",
            "run",
            "--tcp-services-configmap",
            "ingress/tcp",
            "--udp-services-configmap",
            "ingress/udp",
            "--l4-address",
            "198.18.0.1",
            "--l4-address",
            "2001:db8::1",
            "--l4-nat",
            "dnat",
            "--maglev-table-size",
            "251",
            "--keep-pins-on-exit",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("expected run");
        };
        let maps = run.l4.config_maps();
        assert_eq!(
            maps.tcp,
            Some(ingress_model::ObjectKey::new("ingress", "tcp"))
        );
        assert_eq!(
            maps.udp,
            Some(ingress_model::ObjectKey::new("ingress", "udp"))
        );
        assert_eq!(run.l4.addresses.len(), 2);
        assert_eq!(run.l4.nat, crate::bpf::l4_plan::NatMode::Dnat);
        assert_eq!(run.l4.maglev_table_size, 251);
        assert!(run.l4.keep_pins_on_exit);
        let cli = Cli::try_parse_from(["xdp-ingress", "run"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("expected run");
        };
        assert!(run.l4.config_maps().is_empty());
        assert_eq!(run.l4.nat, crate::bpf::l4_plan::NatMode::Full);
        assert_eq!(run.l4.maglev_table_size, 65_537);
        assert!(!run.l4.keep_pins_on_exit);
    }

    #[test]
    fn a_bad_default_backend_is_refused() {
        assert!(
            Cli::try_parse_from([
                "xdp-ingress",
                "run",
                "--default-backend-service",
                "nonamespace"
            ])
            .is_err()
        );
    }
}

/// Where the access log goes (`--access-log`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogTarget {
    /// One line per request on stdout.
    Stdout,
    /// No access log.
    Off,
}
