//! `xdp-ingress`: parse the command line, then run the edge or inspect it.

use std::{collections::BTreeMap, io::IsTerminal, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use aya::maps::{MapData, RingBuf};
use clap::Parser;
use http::HeaderValue;
use ingress_common::{action, protocol};
use ingress_model::RouteRowsTable;
use tokio::{net::TcpListener, sync::watch};
use tracing::{info, warn};
use xdp_ingress::{
    bpf::{
        bpffs::{self, PinDirLock},
        edge::{EdgeOptions, XdpEdge, XdpModeChoice},
        inspect,
        l4_plan::{DEFAULT_NAT_PORTS, L4Settings},
        l4_sync::{L4Addresses, L4Sync},
        listeners::keys_for_socket,
        source_ranges::SourceRangeSync,
    },
    cli::{AccessLogTarget, Cli, Command, MapsArgs, MigrateArgs, RoutesArgs, RunArgs},
    cluster::{
        self, Identity, events,
        leader::Leadership,
        status,
        status::AddressSource,
        watch::{ClusterWatch, WatchScope},
    },
    config::ConfigApplier,
    health::{self, Readiness},
    metrics::Metrics,
    neighbours::{NeighbourKeeper, ReportedProblem},
    providers::manifests,
    proxy::{
        access_log::AccessLog,
        global::Global,
        server::{self, ProxySettings, ProxyState},
        upstream::{UpstreamPool, UpstreamSettings},
        upstream_client::ClientPool,
    },
    routing::LiveRoutes,
    tls::{self, certs::self_signed_default, store::CertStore},
};

fn main() {
    xdp_ingress::memory::configure();
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
        Command::Run(args) => run(*args),
        Command::Maps(args) => print_maps(&args),
        Command::Routes(args) => print_routes(&args),
        Command::Migrate(args) => print_migration(&args),
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
    if args.interfaces.is_empty() {
        info!("no --interface given: serving the proxy without the XDP edge");
        if !args.l4.config_maps().is_empty() {
            warn!("TCP/UDP services ConfigMaps need the XDP edge (--interface): not served");
        }
        return serve(&args, &mut shutdown, None, None, EdgeStart::None).await;
    }
    if bpffs::ensure_pin_dir(&args.bpffs)? {
        info!(
            mount = bpffs::DEFAULT_BPFFS_MOUNT,
            "no BPF filesystem was mounted: mounted bpffs"
        );
    }
    let _lock = PinDirLock::acquire(&args.bpffs)?;
    let options = EdgeOptions {
        maglev_table_size: args.l4.maglev_table_size,
    };
    let source_ranges = Arc::new(SourceRangeSync::new());
    if args.l4.config_maps().is_empty() {
        return run_serving_while_loading(&args, &mut shutdown, options, source_ranges).await;
    }
    let mut edge =
        XdpEdge::load_with(Some(&args.bpffs), &options).context("loading the XDP program")?;
    let result = match start_edge(&mut edge, &args, &source_ranges) {
        Ok(l4) => {
            serve(
                &args,
                &mut shutdown,
                l4,
                Some(source_ranges),
                EdgeStart::Attached,
            )
            .await
        }
        Err(error) => Err(error),
    };
    release_edge(edge, &args)?;
    result
}

/// Without TCP/UDP services the XDP program steers the listener ports to
/// the proxy, which the kernel delivers to it without the program too: the
/// proxy serves while the verifier checks the program (most of a start's
/// second), and readiness waits for the program. A program that fails to
/// load or attach ends the run with its error, as when it loads first.
async fn run_serving_while_loading(
    args: &RunArgs,
    shutdown: &mut ShutdownSignals,
    options: EdgeOptions,
    source_ranges: Arc<SourceRangeSync>,
) -> Result<()> {
    let bpffs = args.bpffs.clone();
    let kernel_ranges = source_ranges.clone();
    let interfaces = args.interfaces.clone();
    let (http_addr, https_addr, mode) = (args.http_addr, args.https_addr, args.xdp_mode);
    let (attached_tx, attached_rx) = tokio::sync::oneshot::channel();
    // A thread of its own rather than the runtime's blocking pool, whose
    // idle threads linger: it ends as soon as the program is attached. It
    // hands back the loaded program even when attaching failed, so that it
    // is released below as in the sequential start.
    let loading = std::thread::Builder::new()
        .name("xdp-load".into())
        .spawn(move || {
            let mut edge = match XdpEdge::load_with(Some(&bpffs), &options) {
                Ok(edge) => edge,
                Err(error) => {
                    let error = anyhow::Error::new(error).context("loading the XDP program");
                    let _ = attached_tx.send(Err(format!("{error:#}")));
                    return None;
                }
            };
            let attached = sync_listeners_and_attach(
                &mut edge,
                http_addr,
                https_addr,
                &interfaces,
                mode,
                &kernel_ranges,
            );
            let _ = attached_tx.send(attached.map_err(|error| format!("{error:#}")));
            Some(edge)
        })
        .context("starting the XDP loading thread")?;
    let served = serve(
        args,
        shutdown,
        None,
        Some(source_ranges),
        EdgeStart::Loading(attached_rx),
    )
    .await;
    // Whatever ended the serving, the program's pins are the run's to
    // clean: wait for the load (over already, unless stopped during it).
    match loading.join() {
        Ok(Some(edge)) => release_edge(edge, args)?,
        Ok(None) => {}
        Err(_) => warn!("the XDP loading thread panicked"),
    }
    served
}

/// Detaches the program and removes its pins (unless they are to be kept).
fn release_edge(mut edge: XdpEdge, args: &RunArgs) -> Result<()> {
    edge.detach_all();
    if args.l4.keep_pins_on_exit {
        info!(bpffs = %args.bpffs.display(), "kept pins (--keep-pins-on-exit)");
    } else {
        edge.unpin()?;
        info!(bpffs = %args.bpffs.display(), "removed pins");
    }
    Ok(())
}

/// Fills the listener map, takes the L4 maps when TCP/UDP services are
/// configured, then attaches to every interface.
fn start_edge(
    edge: &mut XdpEdge,
    args: &RunArgs,
    source_ranges: &SourceRangeSync,
) -> Result<Option<L4Edge>> {
    let l4 = match l4_sync(edge, args)? {
        Some(sync) => Some(L4Edge {
            sync,
            misses: edge
                .take_neighbour_misses()
                .context("the L4 neighbour reports")?,
        }),
        None => None,
    };
    sync_listeners_and_attach(
        edge,
        args.http_addr,
        args.https_addr,
        &args.interfaces,
        args.xdp_mode,
        source_ranges,
    )?;
    Ok(l4)
}

/// Steers the proxy's listener ports to the proxy, hands the source-range
/// maps to `source_ranges` (which writes the ranges asked for so far), then
/// attaches to every interface.
fn sync_listeners_and_attach(
    edge: &mut XdpEdge,
    http_addr: std::net::SocketAddr,
    https_addr: std::net::SocketAddr,
    interfaces: &[String],
    mode: XdpModeChoice,
    source_ranges: &SourceRangeSync,
) -> Result<()> {
    let mut listeners = BTreeMap::new();
    for addr in [http_addr, https_addr] {
        for key in keys_for_socket(addr, protocol::TCP) {
            listeners.insert(key, action::PASS_TO_PROXY);
        }
    }
    let plan = edge.sync_listeners(&listeners)?;
    let mut maps = edge
        .take_source_range_maps()
        .context("the source-range maps")?;
    for &slot in &plan.fresh_slots {
        maps.zero_denied(slot).context("the source-range maps")?;
    }
    let proxy_listeners: Vec<u32> = edge
        .listeners()?
        .values()
        .filter(|value| value.action == action::PASS_TO_PROXY)
        .map(|value| value.listener_id)
        .collect();
    source_ranges
        .attach(maps, proxy_listeners)
        .context("writing the source ranges")?;
    for interface in interfaces {
        let mode = edge.attach(interface, mode)?;
        info!(%interface, %mode, "attached XDP");
    }
    Ok(())
}

/// The L4 tier's sync, when a TCP or UDP services ConfigMap is configured.
/// Its maps may hold a previous daemon's state (pins kept): it is diffed.
fn l4_sync(edge: &mut XdpEdge, args: &RunArgs) -> Result<Option<Arc<L4Sync>>> {
    let config_maps = args.l4.config_maps();
    if config_maps.is_empty() {
        return Ok(None);
    }
    let maps = edge.take_l4_maps().context("the L4 maps")?;
    let addresses = if args.l4.addresses.is_empty() {
        L4Addresses::Interfaces(args.interfaces.clone())
    } else {
        L4Addresses::Fixed(args.l4.addresses.clone())
    };
    let settings = L4Settings {
        nat: args.l4.nat,
        table_size: args.l4.maglev_table_size,
        ports: DEFAULT_NAT_PORTS,
    };
    info!(?config_maps, ?addresses, nat = ?settings.nat, table_size = settings.table_size, "L4 services in XDP");
    let sync = L4Sync::new(maps, settings, config_maps, addresses).context("the L4 maps")?;
    Ok(Some(Arc::new(sync)))
}

/// The L4 tier of an attached program: its maps' sync and the next hops
/// the program reports missing.
struct L4Edge {
    sync: Arc<L4Sync>,
    misses: RingBuf<MapData>,
}

/// Runs the configuration provider, the proxy and the health listener
/// until a signal, then drains open connections (bounded by the grace
/// period).
async fn serve(
    args: &RunArgs,
    shutdown: &mut ShutdownSignals,
    l4: Option<L4Edge>,
    source_ranges: Option<Arc<SourceRangeSync>>,
    edge: EdgeStart,
) -> Result<()> {
    let metrics = Metrics::new((!matches!(edge, EdgeStart::None)).then(|| args.bpffs.clone()));
    let (reported_tx, reported_rx) = watch::channel(Vec::new());
    let (l4, neighbours) = match l4 {
        Some(L4Edge { sync, misses }) => {
            let keeper =
                NeighbourKeeper::spawn(sync.clone(), misses, Some(metrics.clone()), reported_tx)
                    .context("starting the neighbour keeper")?;
            (Some(sync), Some(keeper))
        }
        None => (None, None),
    };
    let routes = LiveRoutes::with_metrics(metrics.clone());
    let readiness = Readiness::new();
    if matches!(edge, EdgeStart::Loading(_)) {
        readiness.set_edge_loading(true);
    }
    let default_certificate =
        self_signed_default().context("generating the default certificate")?;
    match &args.default_ssl_certificate {
        Some(secret) => {
            info!(%secret, "default certificate: from --default-ssl-certificate once it loads")
        }
        None => info!("no --default-ssl-certificate: generated a self-signed default certificate"),
    }
    let certificates = Arc::new(CertStore::new(
        default_certificate.key,
        args.default_ssl_certificate.clone(),
    ));
    let mut applier = ConfigApplier::new(
        args.ingress.model_options(),
        routes.clone(),
        Some(certificates.clone()),
    )
    .with_observers(metrics.clone(), readiness.clone());
    let global = Arc::new(ArcSwap::from_pointee(Global::default()));
    applier = applier.with_proxy_global(global.clone());
    if let Some(key) = &args.ingress.configmap {
        info!(configmap = %key, "global settings from the ConfigMap, applied live");
        applier = applier.with_controller_config(key.clone(), global.clone(), args.hsts_settings());
    }
    if let Some(l4) = l4 {
        applier = applier.with_l4(l4);
    }
    if let Some(source_ranges) = source_ranges {
        applier = applier.with_source_ranges(source_ranges);
    }
    let applier = Arc::new(applier);
    let (stop_tx, stop_rx) = watch::channel(false);

    let metrics_listener = TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("listening on --metrics-addr {}", args.metrics_addr))?;
    let health = tokio::spawn(health::serve(
        metrics_listener,
        metrics.clone(),
        readiness.clone(),
        stop_rx.clone(),
    ));
    let provider = if !args.ingress.manifests.is_empty() {
        let task = manifests::start(
            args.ingress.manifests.clone(),
            applier.clone(),
            stop_rx.clone(),
        )
        .context("watching --manifests")?;
        Provider::Manifests(task)
    } else if args.cluster.kubeconfig.is_some() || cluster::in_pod() {
        Provider::Cluster(start_cluster(args, applier.clone(), reported_rx, stop_rx.clone()).await?)
    } else {
        warn!(
            "no --manifests and no --kubeconfig (and not in a pod): no Ingress is configured, every request gets 404"
        );
        readiness.set_configured();
        Provider::None
    };

    let access_log = match args.access_log {
        AccessLogTarget::Stdout => AccessLog::stdout(metrics.access_log_dropped()),
        AccessLogTarget::Off => AccessLog::off(),
    };
    let state = Arc::new(ProxyState {
        metrics,
        resolver: routes,
        pool: UpstreamPool::new(UpstreamSettings {
            connect_timeout: Duration::from_secs(args.proxy_connect_timeout),
            ..UpstreamSettings::default()
        }),
        clients: ClientPool::new(
            Duration::from_secs(args.proxy_connect_timeout),
            UpstreamSettings::default().max_idle_per_endpoint,
        ),
        settings: ProxySettings {
            max_body_size: args.proxy_body_size,
            read_timeout: Duration::from_secs(args.proxy_read_timeout),
            send_timeout: Duration::from_secs(args.proxy_send_timeout),
            client_header_timeout: Duration::from_secs(args.client_header_timeout),
            keep_alive: true,
            https_port: args.https_addr.port(),
            hsts: args
                .hsts_value()
                .map(|v| HeaderValue::from_str(&v).expect("HSTS value is ASCII")),
            ..ProxySettings::default()
        },
        global,
        ewma: Default::default(),
        rate_limiter: Default::default(),
        connection_limiter: Default::default(),
        authenticator: Default::default(),
        access_log,
    });
    let http_listener = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("listening on --http-addr {}", args.http_addr))?;
    let https_listener = TcpListener::bind(args.https_addr)
        .await
        .with_context(|| format!("listening on --https-addr {}", args.https_addr))?;
    let terminator = Arc::new(tls::TlsTerminator::new(certificates)?);
    let http = tokio::spawn(server::serve(
        http_listener,
        None,
        state.clone(),
        stop_rx.clone(),
    ));
    let https = tokio::spawn(server::serve(
        https_listener,
        Some(terminator),
        state,
        stop_rx,
    ));
    readiness.set_listening();
    let mut stopping = false;
    let mut failure = None;
    if let EdgeStart::Loading(attached) = edge {
        info!(http = %args.http_addr, https = %args.https_addr, "serving while the XDP program loads");
        tokio::select! {
            outcome = attached => match outcome {
                Ok(Ok(())) => readiness.set_edge_loading(false),
                Ok(Err(message)) => failure = Some(anyhow::anyhow!(message)),
                Err(_) => failure = Some(anyhow::anyhow!("the XDP loading thread ended without an answer")),
            },
            () = shutdown.wait() => stopping = true,
        }
    }
    if failure.is_none() && !stopping {
        info!(
            http = %args.http_addr,
            https = %args.https_addr,
            metrics = %args.metrics_addr,
            interfaces = ?args.interfaces,
            bpffs = %args.bpffs.display(),
            "xdp-ingress ready"
        );
        shutdown.wait().await;
    }
    let _ = stop_tx.send(true);
    // Hand leadership over first, so another replica takes over the
    // status while this one drains.
    provider.stop().await;
    let grace = Duration::from_secs(args.shutdown_grace_period);
    if tokio::time::timeout(grace, async { tokio::join!(http, https) })
        .await
        .is_err()
    {
        warn!(
            ?grace,
            "connections still open after the grace period: closing them"
        );
    }
    health.abort();
    if let Some(keeper) = neighbours {
        keeper.stop(args.l4.keep_pins_on_exit);
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// How the XDP program stands when the proxy starts.
enum EdgeStart {
    /// No program (no `--interface`).
    None,
    /// Loaded and attached already (the L4 tier needs its maps first).
    Attached,
    /// Loading on a thread of its own: the channel says when it is
    /// attached, or why it failed.
    Loading(tokio::sync::oneshot::Receiver<Result<(), String>>),
}

/// Where the objects come from.
enum Provider {
    /// Nothing configured.
    None,
    /// `--manifests`: the file watcher's task.
    Manifests(tokio::task::JoinHandle<()>),
    /// The API server.
    Cluster(ClusterTasks),
}

/// The API-server provider and the leader's writers.
struct ClusterTasks {
    watch: ClusterWatch,
    leadership: Leadership,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Provider {
    async fn stop(self) {
        match self {
            Provider::None => {}
            Provider::Manifests(task) => task.abort(),
            Provider::Cluster(tasks) => {
                tasks.watch.abort();
                for writer in tasks.writers {
                    writer.abort();
                }
                tasks.leadership.resign().await;
            }
        }
    }
}

/// Connects to the API server and starts watching, electing and writing
/// status and events. The first configuration is applied once every kind
/// has been listed (until then /readyz says not ready and requests get 404).
async fn start_cluster(
    args: &RunArgs,
    applier: Arc<ConfigApplier>,
    reported: watch::Receiver<Vec<ReportedProblem>>,
    stop: watch::Receiver<bool>,
) -> Result<ClusterTasks> {
    let options = &args.cluster;
    let client = cluster::connect(options.kubeconfig.as_deref()).await?;
    let identity = Identity::from_env(client.default_namespace());
    let scope = WatchScope {
        namespace: options.watch_namespace.clone(),
        config_maps: args
            .l4
            .config_maps()
            .keys()
            .into_iter()
            .chain(args.ingress.configmap.clone())
            .collect(),
        publish_service: options.publish_service.clone(),
    };
    info!(
        namespace = options.watch_namespace.as_deref().unwrap_or("(all)"),
        holder = %identity.holder,
        "watching the API server"
    );
    let watch = ClusterWatch::start(client.clone(), &scope, applier);
    let leadership = Leadership::campaign(
        client.clone(),
        identity.namespace.clone(),
        options.election_id.clone(),
        identity.holder.clone(),
    );
    let mut writers = vec![
        tokio::spawn(events::run(
            client.clone(),
            identity.holder.clone(),
            options.watch_namespace.clone(),
            watch.applied.clone(),
            leadership.is_leader.clone(),
            stop.clone(),
        )),
        tokio::spawn(events::run_reported(
            client.clone(),
            identity.holder.clone(),
            reported,
            leadership.is_leader.clone(),
            stop.clone(),
        )),
    ];
    if options.update_status {
        let source = if !options.publish_status_address.is_empty() {
            AddressSource::Fixed(options.publish_status_address.clone())
        } else if let Some(service) = &options.publish_service {
            AddressSource::Service(service.clone())
        } else {
            AddressSource::Nodes(identity.clone())
        };
        writers.push(tokio::spawn(status::run(
            client,
            source,
            watch.applied.clone(),
            leadership.is_leader.clone(),
            stop,
        )));
    }
    Ok(ClusterTasks {
        watch,
        leadership,
        writers,
    })
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

fn print_migration(args: &MigrateArgs) -> Result<()> {
    let objects = match (&args.kubeconfig, args.manifests.is_empty()) {
        (Some(kubeconfig), true) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(cluster::list_for_migration(kubeconfig))?,
        (None, false) => manifests::load(&args.manifests)?,
        _ => anyhow::bail!("give either --manifests PATH or --kubeconfig PATH"),
    };
    let report = ingress_model::migration::migration_report(&objects, &args.annotations_prefix);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let rows: Vec<[String; 4]> = report
        .iter()
        .map(|row| {
            [
                row.ingress.clone(),
                row.annotation.clone(),
                row.outcome.as_str().to_owned(),
                row.note.clone(),
            ]
        })
        .collect();
    let header = ["INGRESS", "ANNOTATION", "OUTCOME", "NOTE"].map(str::to_owned);
    let mut widths = [0usize; 3];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        println!("{}", line.trim_end());
    }
    let ingresses = ingress_model::migration::ingresses_named(&report).len();
    let count = |outcome| report.iter().filter(|r| r.outcome == outcome).count();
    use ingress_model::migration::Outcome;
    println!(
        "\n{ingresses} Ingresses with annotations: {} applied, {} differ, {} invalid, {} unsupported, {} fail closed, {} refused",
        count(Outcome::Applied),
        count(Outcome::Differs),
        count(Outcome::Invalid),
        count(Outcome::Unsupported),
        count(Outcome::FailsClosed),
        count(Outcome::Refused),
    );
    Ok(())
}

fn print_routes(args: &RoutesArgs) -> Result<()> {
    if args.ingress.manifests.is_empty() {
        anyhow::bail!("give the objects with --manifests PATH (a file or a directory)");
    }
    let objects = manifests::load(&args.ingress.manifests)?;
    // The daemon's own apply path, ConfigMap included.
    let routes = LiveRoutes::new();
    let mut applier = ConfigApplier::new(args.ingress.model_options(), routes.clone(), None);
    if let Some(key) = &args.ingress.configmap {
        applier = applier.with_controller_config(
            key.clone(),
            Arc::new(ArcSwap::from_pointee(Global::default())),
            ingress_model::controller_config::Hsts::default(),
        );
    }
    let problems = applier.apply(&objects).problems;
    let rows = routes.snapshot().table().rows();
    if args.json {
        let json = serde_json::json!({
            "routes": rows.iter().map(|row| {
                let [host, path, path_type, ingress, backend, endpoints] = row.cells();
                serde_json::json!({
                    "host": host, "path": path, "pathType": path_type,
                    "ingress": ingress, "backend": backend, "endpoints": endpoints,
                })
            }).collect::<Vec<_>>(),
            "problems": problems.iter().map(|p| serde_json::json!({
                "object": p.object.to_string(),
                "reason": p.reason.to_string(),
                "message": p.message,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    print!("{}", RouteRowsTable(&rows));
    if problems.is_empty() {
        println!("\nno problems");
    } else {
        println!("\nPROBLEMS");
        for problem in &problems {
            println!("{problem}");
        }
    }
    Ok(())
}

#[global_allocator]
static ALLOCATOR: xdp_ingress::memory::Allocator = xdp_ingress::memory::Allocator {};
