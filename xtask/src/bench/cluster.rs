//! `cargo xtask bench cluster`: xdp-ingress as a controller of a real API
//! server (etcd and kube-apiserver v1.37.2 of the lab's `TestCluster`) at
//! scale, in one run:
//!
//! 1. The daemon runs (release build, in the bench lab's edge with XDP, as
//!    deploy/'s ServiceAccount under its RBAC) with nothing to serve; then
//!    10,000 Ingresses, each with its Service and an EndpointSlice of one
//!    real `lab-backend` endpoint, are created through the API by parallel
//!    `kubectl create -f` chunks. Measured: from the last create until
//!    every host answers 200 through the edge (each host is probed from the
//!    moment its chunk was created until it answers), and the daemon's peak
//!    RSS. Then until the daemon has written the status of every Ingress.
//! 2. 1,000 EndpointSlice updates at 100/s (`kubectl proxy` and merge
//!    patches): each moves its Service's only endpoint to another backend
//!    address. An update is followed when a request for its host through
//!    the edge is first answered by the new endpoint (lab-backend reports
//!    the address that accepted the connection); the delay runs from the
//!    API server's answer to the patch.
//!
//! Throughout, the API server's audit log records the daemon's requests
//! (its ServiceAccount's only), counted by verb and resource per phase: no
//! GET of single watched objects and no relist is expected once the
//! watches have listed.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use xdp_ingress_lab::{
    BackendReport, Daemon, EDGE_ADDR, LoopbackBridge, ScratchDir, SliceEndpoint, k8s::TestCluster,
    poll_until, service_yaml,
};

use super::{
    Binaries, Progress,
    api_proxy::ApiProxy,
    audit::{AuditLog, PhaseCounts, RequestKind},
    catch_interrupts, check_interrupted,
    lab::{BenchLab, ENDPOINTS, PROXY_CPU},
    measure::{self, CpuSample},
    prepare, probe, raise_open_file_limit,
    report::{self, Table},
    target_dir,
    xdp::{NAMESPACE, host, ingress_yaml, service},
};

/// Options of `cargo xtask bench cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Ingresses (each with its Service and EndpointSlice) created.
    #[arg(long, default_value_t = 10_000)]
    pub ingresses: usize,
    /// Ingresses per `kubectl create -f` (three objects each).
    #[arg(long, default_value_t = 100)]
    pub chunk: usize,
    /// `kubectl create` processes running at once.
    #[arg(long, default_value_t = 4)]
    pub creators: usize,
    /// EndpointSlice updates (each to another Service; at most
    /// `--ingresses`).
    #[arg(long, default_value_t = 1_000)]
    pub updates: usize,
    /// EndpointSlice updates per second.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Pin the daemon to one CPU with one tokio worker, as `bench l7` does
    /// (by default it runs as deploy/ runs it: no CPU limit, a worker per
    /// CPU).
    #[arg(long)]
    pub one_core: bool,
    /// Use the release binaries as they are (no setup, no build).
    #[arg(long)]
    pub no_build: bool,
}

impl ClusterArgs {
    /// How the daemon runs, for the report.
    fn daemon_cpus(&self) -> String {
        if self.one_core {
            format!("pinned to CPU {PROXY_CPU} with 1 tokio worker")
        } else {
            "on every CPU with a tokio worker each, as deploy/ runs it (no CPU limit)".to_owned()
        }
    }
}

/// The controller's namespace and ServiceAccount (deploy/).
const CONTROLLER_NAMESPACE: &str = "xdp-ingress";
const CONTROLLER_ACCOUNT: &str = "xdp-ingress";
/// The user the API server sees for that ServiceAccount.
const CONTROLLER_USER: &str = "system:serviceaccount:xdp-ingress:xdp-ingress";
/// `endpointslice.kubernetes.io/managed-by` of the benchmark's slices: not
/// the EndpointSlice controller's, so no controller would touch them.
const SLICE_MANAGER: &str = "bench.xdp-ingress.io";
/// Bounds of the phases.
const FIRST_LIST_TIMEOUT: Duration = Duration::from_secs(60);
const CREATE_TIMEOUT: Duration = Duration::from_secs(900);
const SERVE_TIMEOUT: Duration = Duration::from_secs(300);
const STATUS_TIMEOUT: Duration = Duration::from_secs(300);
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause of a prober that has nothing pending, or between its rounds.
const PROBE_PAUSE: Duration = Duration::from_millis(2);
/// Threads sending the updates (a slow answer must not hold the next ones).
const UPDATERS: usize = 4;
/// Threads probing the updated hosts, each for every fourth update: fewer
/// pending hosts each, so each is probed more often.
const PROBERS: usize = 4;
/// Machine load (outside the benchmark) above which results are flagged.
const QUIET_THRESHOLD: f64 = 0.10;

/// The endpoint Service `index` starts with: the lab's three addresses in
/// turn, one per Service.
fn endpoint(index: usize) -> SocketAddr {
    ENDPOINTS[index % ENDPOINTS.len()]
}

/// The endpoint its update moves it to.
fn moved_endpoint(index: usize) -> SocketAddr {
    ENDPOINTS[(index + 1) % ENDPOINTS.len()]
}

/// The Service that update `n` of `count` Ingresses changes: spread over
/// all of them, each at most once (7919 is prime, so coprime with any
/// count it does not divide).
fn updated_service(n: usize, count: usize) -> usize {
    let stride = if count.is_multiple_of(7919) { 1 } else { 7919 };
    (n * stride) % count
}

/// The Service, EndpointSlice (one ready endpoint, our manager) and
/// Ingress of each index of `hosts`. The Services are headless: the lab's
/// Service range has 254 addresses, and the controller reads endpoints,
/// never a cluster IP.
fn chunk_yaml(hosts: Range<usize>) -> String {
    let mut yaml = String::new();
    for index in hosts {
        let name = service(index);
        let slice = [SliceEndpoint::ready(endpoint(index).ip())];
        let objects = service_yaml(NAMESPACE, &name, 80, endpoint(index).port(), &slice)
            .replacen("spec:\n  ports:", "spec:\n  clusterIP: None\n  ports:", 1)
            .replacen(
                "labels: {",
                &format!("labels: {{endpointslice.kubernetes.io/managed-by: {SLICE_MANAGER}, "),
                1,
            );
        let _ = write!(
            yaml,
            "{objects}---\n{}---\n",
            ingress_yaml(&format!("ing-{index}"), &host(index), &name)
        );
    }
    yaml
}

/// The path of Service `index`'s EndpointSlice (named by `service_yaml`).
fn slice_path(index: usize) -> String {
    format!(
        "/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices/{}-lab",
        service(index)
    )
}

/// The merge patch that gives a slice `addr` as its only, ready endpoint.
fn endpoint_patch(addr: SocketAddr) -> String {
    json!({ "endpoints": [{ "addresses": [addr.ip().to_string()], "conditions": { "ready": true } }] })
        .to_string()
}

/// A chunk of Ingresses whose `kubectl create` has returned.
#[derive(Debug, Clone)]
struct Created {
    hosts: Range<usize>,
    at: Instant,
}

/// One EndpointSlice update, as the API server confirmed it.
#[derive(Debug, Clone)]
struct Update {
    service: usize,
    sent: Instant,
    confirmed: Instant,
    resource_version: String,
}

/// What the run measured.
#[derive(Debug, Default)]
struct Results {
    background: f64,
    objects: usize,
    first_create: Option<Instant>,
    last_create: Option<Instant>,
    /// For each host: from its chunk's create to its first 200.
    chunk_to_served: Vec<Duration>,
    /// From the last create to the last host's first 200.
    all_served: Duration,
    /// After the last create, until the status of every Ingress was
    /// written (None: not within the bound).
    statuses_written: Option<Duration>,
    rss_after_create_kib: u64,
    peak_rss_kib: u64,
    applies_creating: Vec<Duration>,
    update_rate: f64,
    /// Delay of each followed update.
    followed: Vec<Duration>,
    not_followed: Vec<Update>,
    /// Time between two probes of the same pending update, on average.
    probe_cycle: Duration,
    applies_updating: Vec<Duration>,
    /// The daemon's requests per phase (see [`PHASES`]).
    requests: Vec<PhaseCounts>,
}

/// The audit phases, in order.
const PHASES: [&str; 4] = [
    "start, first list",
    "creating",
    "statuses",
    "updates (steady state)",
];

/// `cargo xtask bench cluster`.
pub fn run(args: &ClusterArgs) -> Result<()> {
    ensure!(
        args.ingresses > 0 && args.chunk > 0 && args.creators > 0 && args.rate > 0,
        "--ingresses, --chunk, --creators and --rate must be at least 1"
    );
    ensure!(
        args.updates <= args.ingresses,
        "--updates may be at most --ingresses (each update changes another Service)"
    );
    let binaries = prepare(!args.no_build)?;
    if !args.no_build {
        crate::k8s::set_up_if_missing()?;
    }
    raise_open_file_limit(1 << 20).context("raising the open-file limit")?;
    catch_interrupts();
    let progress = Progress::start();
    let mut results = Results::default();

    progress.phase("Checking that the machine is otherwise idle (1 s)");
    let before = CpuSample::now()?;
    std::thread::sleep(Duration::from_secs(1));
    results.background = CpuSample::now()?.machine_busy_since(&before);
    progress.detail(&format!(
        "CPUs busy {}{}",
        report::percent(results.background),
        if results.background > QUIET_THRESHOLD {
            ": something else is running, the results will be noisy"
        } else {
            ""
        }
    ));

    progress.phase("Starting etcd and kube-apiserver (audit log of the controller's requests)");
    let cluster = TestCluster::builder()
        .audit_users(&[CONTROLLER_USER])
        .start()?;
    let deploy = crate::command::workspace_root().join("deploy");
    cluster
        .kubectl(&["apply", "-k", &deploy.display().to_string()])
        .context("kubectl apply -k deploy/")?;
    let kubeconfig =
        cluster.service_account_kubeconfig(CONTROLLER_NAMESPACE, CONTROLLER_ACCOUNT)?;
    cluster.kubectl(&["create", "namespace", NAMESPACE])?;
    let audit = AuditLog::new(cluster.audit_log_path());

    progress.phase("Creating the lab and starting the daemon as deploy/'s ServiceAccount");
    let lab = BenchLab::create(&binaries)?;
    let bridge = LoopbackBridge::new(lab.edge(), apiserver_port(&cluster)?)?;
    let mut daemon = start_daemon(&lab, &binaries, &kubeconfig, args.one_core)?;
    poll_until("the daemon's first full list", FIRST_LIST_TIMEOUT, || {
        Ok(daemon
            .log()
            .contains("first full list from the API server")
            .then_some(()))
    })
    .with_context(|| format!("the daemon did not list:\n{}", daemon.log()))?;
    progress.detail(&format!(
        "daemon pid {}, {}, API server through {}",
        daemon.pid(),
        args.daemon_cpus(),
        cluster.server_url()
    ));
    let mut marks = vec![audit.mark()];

    progress.phase(&format!(
        "Creating {} Ingresses with their Services and EndpointSlices ({} `kubectl create` at once, {} per chunk)",
        report::thousands(args.ingresses as f64),
        args.creators,
        args.chunk
    ));
    let log_lines = daemon.log().lines().count();
    create_and_probe(args, &cluster, &lab, &progress, &mut results)?;
    ensure_running(&mut daemon)?;
    results.rss_after_create_kib = measure::peak_rss_kib(&[daemon.pid()]);
    results.applies_creating = applies_since(&daemon.log(), log_lines);
    progress.detail(&format!(
        "every host answered {} after the last create; daemon VmHWM {}",
        report::latency(results.all_served),
        report::mebibytes(results.rss_after_create_kib)
    ));
    marks.push(audit.mark());

    progress.phase("Waiting for the daemon to write the status of every Ingress");
    let last_create = results.last_create.context("nothing was created")?;
    match wait_for_statuses(&audit, marks[0], args.ingresses as u64, last_create) {
        Ok(after) => {
            results.statuses_written = Some(after);
            progress.detail(&format!(
                "written {} after the last create",
                report::latency(after)
            ));
        }
        Err(error) => progress.detail(&format!("{error:#}; going on")),
    }
    marks.push(audit.mark());

    progress.phase(&format!(
        "{} EndpointSlice updates at {}/s",
        report::thousands(args.updates as f64),
        args.rate
    ));
    let log_lines = daemon.log().lines().count();
    update_and_follow(args, &cluster, &lab, &mut results)?;
    ensure_running(&mut daemon)?;
    results.applies_updating = applies_since(&daemon.log(), log_lines);
    results.peak_rss_kib = measure::peak_rss_kib(&[daemon.pid()]);
    results.requests = audit.count(&marks)?;

    progress.phase("Results");
    let text = render(args, &results);
    println!("\n{text}");
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let markdown = out_dir.join("cluster.md");
    std::fs::write(&markdown, &text).with_context(|| format!("writing {}", markdown.display()))?;
    let json_file = out_dir.join("cluster.json");
    std::fs::write(
        &json_file,
        serde_json::to_string_pretty(&to_json(args, &results))?,
    )
    .with_context(|| format!("writing {}", json_file.display()))?;
    println!(
        "(also in {} and {})",
        markdown.display(),
        json_file.display()
    );

    progress.phase("Done: stopping the daemon, the lab and the cluster");
    drop(daemon);
    drop(bridge);
    drop(lab);
    drop(cluster);
    Ok(())
}

/// Waits (polling the audit log after `from` once a second, bounded by
/// [`STATUS_TIMEOUT`]) until the daemon has patched the status of `count`
/// distinct Ingresses; returns the time since `since`.
fn wait_for_statuses(audit: &AuditLog, from: u64, count: u64, since: Instant) -> Result<Duration> {
    let started = Instant::now();
    let (mut offset, mut patched) = (from, BTreeSet::new());
    for _ in 0..STATUS_TIMEOUT.as_secs() + 1 {
        check_interrupted()?;
        let (counts, end) = audit.count_from(offset)?;
        patched.extend(counts.objects("patch", "ingresses/status"));
        offset = end;
        if patched.len() as u64 >= count {
            return Ok(since.elapsed());
        }
        if started.elapsed() > STATUS_TIMEOUT {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    bail!(
        "the daemon patched the status of {} Ingresses of {count} within {STATUS_TIMEOUT:?}",
        patched.len()
    )
}

/// The API server's port, from its URL.
fn apiserver_port(cluster: &TestCluster) -> Result<u16> {
    let url = cluster.server_url();
    url.rsplit(':')
        .next()
        .and_then(|port| port.trim_end_matches('/').parse().ok())
        .with_context(|| format!("no port in {url}"))
}

/// The release daemon in the lab's edge (XDP native on the client link,
/// as in `bench l7`), watching the API server with `kubeconfig`; with
/// `one_core`, on [`PROXY_CPU`] with one tokio worker.
fn start_daemon(
    lab: &BenchLab,
    binaries: &Binaries,
    kubeconfig: &Path,
    one_core: bool,
) -> Result<Daemon> {
    let kubeconfig = kubeconfig.display().to_string();
    let http_addr = lab.proxy_addr().to_string();
    let status_address = EDGE_ADDR.to_string();
    let mut daemon = Daemon::in_netns(lab.edge()).binary(&binaries.daemon);
    if one_core {
        daemon = daemon.cpus(PROXY_CPU).env("TOKIO_WORKER_THREADS", "1");
    }
    daemon
        .env("POD_NAMESPACE", CONTROLLER_NAMESPACE)
        .env("RUST_LOG", "info")
        .interface(lab.edge_interface())
        .args(&[
            "--xdp-mode",
            "native",
            "--kubeconfig",
            &kubeconfig,
            "--publish-status-address",
            &status_address,
            "--http-addr",
            &http_addr,
        ])
        .start()
}

/// Fails, with its log, when the daemon has stopped.
fn ensure_running(daemon: &mut Daemon) -> Result<()> {
    if !daemon.running() {
        bail!("the daemon stopped:\n{}", daemon.log());
    }
    Ok(())
}

/// The `took_us` of each "configuration applied" after the first `skip`
/// lines of a daemon log.
fn applies_since(log: &str, skip: usize) -> Vec<Duration> {
    log.lines()
        .skip(skip)
        .filter(|line| line.contains("configuration applied"))
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix("took_us="))?
                .parse()
                .ok()
        })
        .map(Duration::from_micros)
        .collect()
}

/// Creates the Ingresses in chunks with `--creators` kubectl processes at
/// once, while a prober in the client namespace polls every host of each
/// created chunk until it answers 200.
fn create_and_probe(
    args: &ClusterArgs,
    cluster: &TestCluster,
    lab: &BenchLab,
    progress: &Progress,
    results: &mut Results,
) -> Result<()> {
    let scratch = ScratchDir::new("bench-cluster")?;
    let chunks: Vec<(Range<usize>, PathBuf)> = (0..args.ingresses)
        .step_by(args.chunk)
        .enumerate()
        .map(|(number, start)| {
            let hosts = start..(start + args.chunk).min(args.ingresses);
            let file = scratch.path().join(format!("chunk-{number}.yaml"));
            std::fs::write(&file, chunk_yaml(hosts.clone()))
                .with_context(|| format!("writing {}", file.display()))?;
            Ok((hosts, file))
        })
        .collect::<Result<_>>()?;
    results.objects = args.ingresses * 3;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_create = Instant::now();
    let (created_tx, created_rx) = mpsc::channel::<Created>();
    let (served, creators) = std::thread::scope(|scope| {
        let failed = &failed;
        let prober = scope.spawn(move || {
            lab.client()
                .enter(move || probe_created(lab.proxy_addr(), created_rx, failed, args.ingresses))
        });
        let creators: Vec<_> = (0..args.creators)
            .map(|_| {
                let created_tx = created_tx.clone();
                let (next, chunks) = (&next, &chunks);
                scope.spawn(move || {
                    create_chunks(cluster, chunks, next, failed, &created_tx).inspect_err(|_| {
                        failed.store(true, Ordering::SeqCst);
                    })
                })
            })
            .collect();
        drop(created_tx);
        let creators: Vec<Result<Vec<Instant>>> = creators
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a creator panicked")))
            })
            .collect();
        let served = prober
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the prober panicked")));
        (served, creators)
    });
    let mut creates = Vec::new();
    for outcome in creators {
        creates.extend(outcome?);
    }
    let served = served??;
    let last_create = creates.into_iter().max().context("no chunk was created")?;
    progress.detail(&format!(
        "{} objects created in {} ({}/s)",
        report::thousands(results.objects as f64),
        report::latency(last_create - first_create),
        report::thousands(results.objects as f64 / (last_create - first_create).as_secs_f64())
    ));
    let last_served = served
        .iter()
        .map(|(_, answered)| *answered)
        .max()
        .context("no host answered")?;
    results.first_create = Some(first_create);
    results.last_create = Some(last_create);
    results.all_served = last_served.saturating_duration_since(last_create);
    results.chunk_to_served = served
        .iter()
        .map(|(created, answered)| answered.saturating_duration_since(*created))
        .collect();
    Ok(())
}

/// One creator: `kubectl create -f` of the next chunk until none is left;
/// tells the prober about each. Returns when each of its chunks was
/// created.
fn create_chunks(
    cluster: &TestCluster,
    chunks: &[(Range<usize>, PathBuf)],
    next: &AtomicUsize,
    failed: &AtomicBool,
    created: &Sender<Created>,
) -> Result<Vec<Instant>> {
    let mut done = Vec::new();
    // Bounded: each turn takes a chunk.
    for _ in 0..chunks.len() {
        let number = next.fetch_add(1, Ordering::SeqCst);
        let Some((hosts, file)) = chunks.get(number) else {
            break;
        };
        if failed.load(Ordering::SeqCst) {
            break;
        }
        check_interrupted()?;
        cluster.kubectl(&["create", "-f", &file.display().to_string()])?;
        let at = Instant::now();
        done.push(at);
        let _ = created.send(Created {
            hosts: hosts.clone(),
            at,
        });
    }
    Ok(done)
}

/// The prober of the creation (inside the client namespace): polls each
/// host of every created chunk until it answers 200, round after round,
/// until the creators are done and every host answered. Returns, per host,
/// when its chunk was created and when it first answered.
fn probe_created(
    proxy: SocketAddr,
    created: Receiver<Created>,
    failed: &AtomicBool,
    count: usize,
) -> Result<Vec<(Instant, Instant)>> {
    let started = Instant::now();
    let deadline = CREATE_TIMEOUT + SERVE_TIMEOUT;
    let mut pending: Vec<(usize, Instant)> = Vec::new();
    let mut served = Vec::with_capacity(count);
    let mut creating = true;
    let mut last_created = started;
    let max_rounds = deadline.as_millis() / PROBE_PAUSE.as_millis();
    for _ in 0..max_rounds {
        check_interrupted()?;
        if failed.load(Ordering::SeqCst) {
            bail!("creating the objects failed");
        }
        loop {
            match created.try_recv() {
                Ok(chunk) => {
                    last_created = chunk.at;
                    pending.extend(chunk.hosts.map(|index| (index, chunk.at)));
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    creating = false;
                    break;
                }
            }
        }
        if pending.is_empty() {
            if !creating {
                return Ok(served);
            }
            std::thread::sleep(PROBE_PAUSE);
            continue;
        }
        if !creating && last_created.elapsed() > SERVE_TIMEOUT {
            bail!(
                "{} hosts did not answer within {SERVE_TIMEOUT:?} of their create (first: {})",
                pending.len(),
                host(pending[0].0)
            );
        }
        if started.elapsed() > deadline {
            bail!("creating and serving took longer than {deadline:?}");
        }
        pending.retain(
            |&(index, created_at)| match probe::status_of(proxy, &host(index)) {
                Ok(200) => {
                    served.push((created_at, Instant::now()));
                    false
                }
                _ => true,
            },
        );
        std::thread::sleep(PROBE_PAUSE);
    }
    bail!("probing the created hosts did not end within {max_rounds} rounds")
}

/// Sends the updates at `--rate` from [`UPDATERS`] threads (on the host,
/// to `kubectl proxy`) while [`PROBERS`] threads in the client namespace
/// poll each updated host until the new endpoint answers.
fn update_and_follow(
    args: &ClusterArgs,
    cluster: &TestCluster,
    lab: &BenchLab,
    results: &mut Results,
) -> Result<()> {
    let proxy = ApiProxy::start(cluster)?;
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let start = Instant::now() + Duration::from_millis(100);
    let failed = AtomicBool::new(false);
    let (senders, receivers): (Vec<Sender<Update>>, Vec<Receiver<Update>>) =
        (0..PROBERS).map(|_| mpsc::channel::<Update>()).unzip();
    let first_error = Mutex::new(None);
    let outcomes = std::thread::scope(|scope| {
        let failed = &failed;
        let deadline = interval * args.updates as u32 + FOLLOW_TIMEOUT + Duration::from_secs(60);
        let probers: Vec<_> = receivers
            .into_iter()
            .map(|updates| {
                scope.spawn(move || {
                    lab.client()
                        .enter(move || follow_updates(lab.proxy_addr(), updates, failed, deadline))
                })
            })
            .collect();
        for worker in 0..UPDATERS {
            let senders = senders.clone();
            let (proxy, first_error) = (&proxy, &first_error);
            scope.spawn(move || {
                for n in (worker..args.updates).step_by(UPDATERS) {
                    if failed.load(Ordering::SeqCst) || check_interrupted().is_err() {
                        failed.store(true, Ordering::SeqCst);
                        return;
                    }
                    let due = start + interval * n as u32;
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let index = updated_service(n, args.ingresses);
                    let sent = Instant::now();
                    match proxy
                        .merge_patch(&slice_path(index), &endpoint_patch(moved_endpoint(index)))
                    {
                        Ok(resource_version) => {
                            let _ = senders[n % PROBERS].send(Update {
                                service: index,
                                sent,
                                confirmed: Instant::now(),
                                resource_version,
                            });
                        }
                        Err(error) => {
                            failed.store(true, Ordering::SeqCst);
                            first_error.lock().expect("error lock").get_or_insert(error);
                            return;
                        }
                    }
                }
            });
        }
        drop(senders);
        probers
            .into_iter()
            .map(|prober| {
                prober
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a prober panicked")))
            })
            .collect::<Vec<_>>()
    });
    if let Some(error) = first_error.into_inner().expect("error lock") {
        return Err(error.context("an EndpointSlice update failed"));
    }
    let mut outcome = Following::default();
    for following in outcomes {
        let following = following??;
        outcome.followed.extend(following.followed);
        outcome.not_followed.extend(following.not_followed);
        outcome.sent.extend(following.sent);
        outcome.confirmed.extend(following.confirmed);
        outcome.probe_cycle += following.probe_cycle / PROBERS as u32;
    }
    ensure!(
        outcome.followed.len() + outcome.not_followed.len() == args.updates,
        "{} of {} updates were sent",
        outcome.followed.len() + outcome.not_followed.len(),
        args.updates
    );
    let first = outcome.sent.iter().min().copied().unwrap_or(start);
    let last = outcome.confirmed.iter().max().copied().unwrap_or(start);
    results.update_rate = args.updates as f64 / (last - first).as_secs_f64().max(1e-6);
    results.followed = outcome.followed;
    results.not_followed = outcome.not_followed;
    results.probe_cycle = outcome.probe_cycle;
    Ok(())
}

/// What the probers of the updates saw.
#[derive(Debug, Default)]
struct Following {
    followed: Vec<Duration>,
    not_followed: Vec<Update>,
    sent: Vec<Instant>,
    confirmed: Vec<Instant>,
    probe_cycle: Duration,
}

/// The prober of the updates (inside the client namespace): polls each
/// confirmed update's host, round after round, until lab-backend reports
/// the new endpoint, or [`FOLLOW_TIMEOUT`] has passed; all of it within
/// `deadline`.
fn follow_updates(
    proxy: SocketAddr,
    updates: Receiver<Update>,
    failed: &AtomicBool,
    deadline: Duration,
) -> Result<Following> {
    let started = Instant::now();
    let mut pending: Vec<(Update, String)> = Vec::new();
    let mut outcome = Following::default();
    let mut accept = |update: Update, pending: &mut Vec<(Update, String)>| {
        outcome.sent.push(update.sent);
        outcome.confirmed.push(update.confirmed);
        let expected = moved_endpoint(update.service).to_string();
        pending.push((update, expected));
    };
    let mut sending = true;
    let (mut rounds, mut probing) = (0u32, Duration::ZERO);
    let (mut followed, mut not_followed) = (Vec::new(), Vec::new());
    let max_rounds = deadline.as_millis() / PROBE_PAUSE.as_millis() + 1;
    for _ in 0..max_rounds {
        check_interrupted()?;
        if failed.load(Ordering::SeqCst) {
            bail!("sending the updates failed");
        }
        if started.elapsed() > deadline {
            bail!("following the updates took longer than {deadline:?}");
        }
        if pending.is_empty() && sending {
            // Nothing to probe: wait for the next update.
            match updates.recv_timeout(Duration::from_millis(100)) {
                Ok(update) => accept(update, &mut pending),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => sending = false,
            }
        }
        loop {
            match updates.try_recv() {
                Ok(update) => accept(update, &mut pending),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    sending = false;
                    break;
                }
            }
        }
        if pending.is_empty() {
            if !sending {
                break;
            }
            continue;
        }
        let round = Instant::now();
        let mut still = Vec::with_capacity(pending.len());
        for (update, expected) in pending.drain(..) {
            let answered = probe::response_of(proxy, &host(update.service))
                .ok()
                .filter(|(status, _)| *status == 200)
                .and_then(|(_, body)| BackendReport::parse(&body).ok())
                .is_some_and(|report| report.endpoint == expected);
            if answered {
                followed.push(update.confirmed.elapsed());
            } else if update.confirmed.elapsed() > FOLLOW_TIMEOUT {
                not_followed.push(update);
            } else {
                still.push((update, expected));
            }
        }
        pending = still;
        rounds += 1;
        probing += round.elapsed();
        std::thread::sleep(PROBE_PAUSE);
    }
    if sending || !pending.is_empty() {
        bail!("following the updates did not end within {max_rounds} rounds");
    }
    outcome.followed = followed;
    outcome.not_followed = not_followed;
    outcome.probe_cycle = probing / rounds.max(1);
    Ok(outcome)
}

/// `p50 / p99 / max` of some durations.
fn distribution(values: &[Duration]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort();
    match sorted.last() {
        None => "-".to_owned(),
        Some(&max) => format!(
            "{} / {} / {}",
            report::latency(percentile(&sorted, 0.50)),
            report::latency(percentile(&sorted, 0.99)),
            report::latency(max)
        ),
    }
}

/// The `fraction` percentile of `sorted` (nearest rank).
fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(values: &[Duration]) -> Vec<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted
}

/// The results and the daemon's API requests, as Markdown, with how they
/// were measured.
fn render(args: &ClusterArgs, results: &Results) -> String {
    let count = report::thousands(args.ingresses as f64);
    let mut table = Table::new(&["", "xdp-ingress"]);
    table.section(&format!(
        "{count} Ingresses created through the API ({} objects)",
        report::thousands(results.objects as f64)
    ));
    if let (Some(first), Some(last)) = (results.first_create, results.last_create) {
        let took = last - first;
        table.row(vec![
            format!(
                "creating them ({} × `kubectl create -f`, {} at once)",
                args.ingresses.div_ceil(args.chunk),
                args.creators
            ),
            format!(
                "{} ({} objects/s)",
                report::latency(took),
                report::thousands(results.objects as f64 / took.as_secs_f64().max(1e-6))
            ),
        ]);
    }
    table.row(vec![
        "last create → every host answers through the edge".into(),
        report::latency(results.all_served),
    ]);
    table.row(vec![
        "chunk created → each of its hosts answers, p50 / p99 / max".into(),
        distribution(&results.chunk_to_served),
    ]);
    table.row(vec![
        "last create → status of every Ingress written".into(),
        results
            .statuses_written
            .map_or_else(|| "not within the bound".to_owned(), report::latency),
    ]);
    let patches: u64 = results
        .requests
        .iter()
        .map(|phase| phase.count("patch", "ingresses/status"))
        .sum();
    let patched: BTreeSet<String> = results
        .requests
        .iter()
        .flat_map(|phase| phase.objects("patch", "ingresses/status"))
        .collect();
    table.row(vec![
        "status patches (of distinct Ingresses)".into(),
        format!(
            "{} ({})",
            report::thousands(patches as f64),
            report::thousands(patched.len() as f64)
        ),
    ]);
    table.row(vec![
        "configuration applies while creating (took, p50 / p99 / max)".into(),
        format!(
            "{} ({})",
            results.applies_creating.len(),
            distribution(&results.applies_creating)
        ),
    ]);
    table.row(vec![
        "daemon peak RSS (VmHWM) after creating / at the end".into(),
        format!(
            "{} / {}",
            report::mebibytes(results.rss_after_create_kib),
            report::mebibytes(results.peak_rss_kib)
        ),
    ]);
    table.section(&format!(
        "{} EndpointSlice updates at {}/s",
        report::thousands(args.updates as f64),
        args.rate
    ));
    table.row(vec![
        "rate achieved".into(),
        format!("{:.0}/s", results.update_rate),
    ]);
    let followed = sorted(&results.followed);
    table.row(vec![
        "update → followed, p50".into(),
        report::latency(percentile(&followed, 0.50)),
    ]);
    table.row(vec![
        "update → followed, p99".into(),
        report::latency(percentile(&followed, 0.99)),
    ]);
    table.row(vec![
        "update → followed, max".into(),
        followed
            .last()
            .map_or_else(|| "-".to_owned(), |max| report::latency(*max)),
    ]);
    table.row(vec![
        format!("not followed within {}", report::latency(FOLLOW_TIMEOUT)),
        results.not_followed.len().to_string(),
    ]);
    table.row(vec![
        "configuration applies while updating (took, p50 / p99 / max)".into(),
        format!(
            "{} ({})",
            results.applies_updating.len(),
            distribution(&results.applies_updating)
        ),
    ]);

    let mut text = String::from("# cargo xtask bench cluster\n\n");
    text.push_str(&table.render());
    text.push_str("\nThe daemon's API requests (audit log of its ServiceAccount), by phase:\n\n");
    text.push_str(&requests_table(&results.requests).render());
    let steady_reads: u64 = results
        .requests
        .iter()
        .skip(1)
        .map(PhaseCounts::reads_besides_watches)
        .sum();
    let _ = writeln!(
        text,
        "\nAfter the first list: {steady_reads} GETs of single watched objects or relists ({}).",
        report::verdict("0", steady_reads == 0)
    );
    if let Some(steady) = results.requests.last() {
        let events = steady.count("create", "events") + steady.count("patch", "events");
        let _ = writeln!(
            text,
            "During the updates (no Ingress changed), the daemon still wrote {} Ingress status(es) \
             and {} event(s).",
            steady.count("patch", "ingresses/status"),
            events
        );
    }
    for update in results.not_followed.iter().take(5) {
        let _ = writeln!(
            text,
            "- not followed: {} (resourceVersion {}) moved to {}",
            service(update.service),
            update.resource_version,
            moved_endpoint(update.service)
        );
    }
    let _ = write!(
        text,
        "\netcd and kube-apiserver {version} on loopback (the lab's TestCluster), the daemon (release, \
         {cpus}, XDP native) in the lab's edge as deploy/'s ServiceAccount, \
         lab-backend on {endpoints} (one endpoint per Service, in turn). A host is served when \
         `GET /` through the edge answers 200; each is probed from its chunk's create on. An \
         update moves a Service's only endpoint to the next address; it is followed when a \
         request for its host is answered by lab-backend on the new address (4 threads probe \
         their pending updates round-robin, each about every {cycle}); the delay runs from the API \
         server's answer to the PATCH. Status: the daemon's `patch ingresses/status` requests \
         counted in the audit log. CPUs busy before the run: {background}; the machine is shared, \
         so other work may have run at the same time.\n",
        version = xdp_ingress_lab::k8s::KUBERNETES_VERSION,
        cpus = args.daemon_cpus(),
        endpoints = ENDPOINTS.map(|e| e.ip().to_string()).join(", "),
        cycle = report::latency(results.probe_cycle + PROBE_PAUSE),
        background = report::percent(results.background),
    );
    text
}

/// Rows: `verb resource`; columns: the phases.
fn requests_table(phases: &[PhaseCounts]) -> Table {
    let mut header = vec!["request"];
    header.extend(PHASES.iter().take(phases.len()));
    let mut table = Table::new(&header);
    let kinds: BTreeSet<&RequestKind> = phases
        .iter()
        .flat_map(|phase| phase.requests.keys())
        .collect();
    for kind in kinds {
        let mut row = vec![format!("{} {}", kind.verb, kind.resource)];
        row.extend(phases.iter().map(|phase| {
            phase
                .requests
                .get(kind)
                .map_or_else(String::new, |n| report::thousands(*n as f64))
        }));
        table.row(row);
    }
    let mut total = vec!["all requests".to_owned()];
    total.extend(
        phases
            .iter()
            .map(|phase| report::thousands(phase.total() as f64)),
    );
    table.row(total);
    let mut failed = vec!["answered with an error (status >= 400)".to_owned()];
    failed.extend(phases.iter().map(|phase| phase.failed.to_string()));
    table.row(failed);
    table
}

/// The numbers, for tools.
fn to_json(args: &ClusterArgs, results: &Results) -> serde_json::Value {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let followed = sorted(&results.followed);
    let served = sorted(&results.chunk_to_served);
    let requests: Vec<_> = PHASES
        .iter()
        .zip(&results.requests)
        .map(|(phase, counts)| {
            json!({
                "phase": phase,
                "failed": counts.failed,
                "requests": counts.requests.iter().map(|(kind, n)| json!({
                    "verb": kind.verb, "resource": kind.resource, "count": n,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "ingresses": args.ingresses,
        "daemon": args.daemon_cpus(),
        "objects": results.objects,
        "creating_ms": match (results.first_create, results.last_create) {
            (Some(first), Some(last)) => Some(ms(last - first)),
            _ => None,
        },
        "last_create_to_all_served_ms": ms(results.all_served),
        "chunk_to_served_ms": {
            "p50": ms(percentile(&served, 0.5)),
            "p99": ms(percentile(&served, 0.99)),
            "max": served.last().copied().map(ms),
        },
        "statuses_written_ms": results.statuses_written.map(ms),
        "rss_after_create_kib": results.rss_after_create_kib,
        "peak_rss_kib": results.peak_rss_kib,
        "applies_while_creating": results.applies_creating.len(),
        "updates": args.updates,
        "update_rate_per_s": results.update_rate,
        "followed_ms": {
            "p50": ms(percentile(&followed, 0.5)),
            "p99": ms(percentile(&followed, 0.99)),
            "max": followed.last().copied().map(ms),
        },
        "not_followed": results.not_followed.len(),
        "applies_while_updating": results.applies_updating.len(),
        "probe_cycle_ms": ms(results.probe_cycle),
        "daemon_requests": requests,
        "cpus_busy_before": results.background,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_a_service_slice_and_ingress_per_host() {
        let yaml = chunk_yaml(3..5);
        assert_eq!(yaml.matches("kind: Service\n").count(), 2);
        assert_eq!(yaml.matches("kind: EndpointSlice\n").count(), 2);
        assert_eq!(yaml.matches("kind: Ingress\n").count(), 2);
        assert!(yaml.contains(&format!(
            "labels: {{endpointslice.kubernetes.io/managed-by: {SLICE_MANAGER}, kubernetes.io/service-name: svc-3}}"
        )));
        assert!(yaml.contains("- host: h4.bench.example"));
        assert_eq!(
            yaml.matches("spec:\n  clusterIP: None\n  ports:").count(),
            2
        );
        // Service 3 starts on the first address, 4 on the second.
        assert!(yaml.contains("[\"198.19.0.1\"]") && yaml.contains("[\"198.19.0.2\"]"));
    }

    #[test]
    fn updates_move_to_another_endpoint_of_distinct_services() {
        for index in 0..6 {
            assert_ne!(endpoint(index), moved_endpoint(index));
        }
        let touched: BTreeSet<usize> = (0..1000).map(|n| updated_service(n, 10_000)).collect();
        assert_eq!(touched.len(), 1000);
        assert!(touched.iter().all(|&index| index < 10_000));
        let all: BTreeSet<usize> = (0..7919).map(|n| updated_service(n, 7919)).collect();
        assert_eq!(all.len(), 7919);
        assert_eq!(
            endpoint_patch(ENDPOINTS[1]),
            r#"{"endpoints":[{"addresses":["198.19.0.2"],"conditions":{"ready":true}}]}"#
        );
        assert_eq!(
            slice_path(7),
            "/apis/discovery.k8s.io/v1/namespaces/bench/endpointslices/svc-7-lab"
        );
    }

    #[test]
    fn applies_and_percentiles_are_read() {
        let log = "\
2026-11-25T13:57:44.984202Z  INFO xdp_ingress::config: configuration applied paths=1 backends=1 problems=0 took_us=41
2026-11-25T13:57:45.984202Z  INFO xdp_ingress::config: configuration applied paths=2 backends=1 problems=0 took_us=1500
";
        assert_eq!(applies_since(log, 1), [Duration::from_micros(1500)]);
        assert_eq!(applies_since(log, 0).len(), 2);
        let ms = Duration::from_millis;
        let values: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&values, 0.5), ms(50));
        assert_eq!(percentile(&values, 0.99), ms(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(
            distribution(&[ms(3), ms(1), ms(2)]),
            "2.00 ms / 3.00 ms / 3.00 ms"
        );
    }
}
