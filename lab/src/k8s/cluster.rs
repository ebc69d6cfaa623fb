//! [`TestCluster`]: etcd and kube-apiserver on loopback, in a directory of
//! their own, gone with every process on drop; optionally the parts that
//! run workloads without a kubelet (see the `workloads` module).

use std::{
    net::{IpAddr, Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;

use super::{
    assets::require_assets,
    component::{Component, KILL_TIMEOUT, Lifetime, STOP_GRACE, log_tail},
    pki::Pki,
};
use crate::{
    process::{describe, pid_alive, poll_until, run_with_timeout},
    scratch::ScratchDir,
};

/// The Services' cluster IPs (`--service-cluster-ip-range`): inside
/// 198.18.0.0/15, apart from the lab's other subnets.
pub const SERVICE_CLUSTER_IP_RANGE: &str = "198.18.240.0/24";
/// The `kubernetes` Service's cluster IP, the range's first address.
pub const KUBERNETES_SERVICE_IP: &str = "198.18.240.1";
/// How long the API server may take to become ready (`/readyz`).
pub const API_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one kubectl command may take.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);
/// The service-account issuer, and the audience of its tokens.
const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The API server's audit log, in the cluster's directory.
const AUDIT_LOG: &str = "audit.log";
/// The file of `cargo xtask k8s up`'s cluster listing its processes.
const PIDS_FILE: &str = "pids";

/// Where a cluster keeps its files.
#[derive(Debug)]
enum ClusterDir {
    /// A scratch directory, removed on drop.
    Scratch(ScratchDir),
    /// A fixed directory (`cargo xtask k8s up`), removed on drop unless the
    /// cluster was detached.
    Fixed(PathBuf),
}

impl ClusterDir {
    fn path(&self) -> &Path {
        match self {
            Self::Scratch(dir) => dir.path(),
            Self::Fixed(dir) => dir,
        }
    }
}

/// Builds a [`TestCluster`].
#[derive(Debug, Default)]
pub struct TestClusterBuilder {
    workloads: bool,
    persistent_dir: Option<PathBuf>,
    audited_users: Vec<String>,
}

impl TestClusterBuilder {
    /// With `true`, also runs kube-controller-manager, kube-scheduler and
    /// kwok, and registers a kwok Node: Deployments get pods that become
    /// Running and Ready with IPs in [`super::POD_CIDR`], Services get
    /// EndpointSlices.
    pub fn workloads(mut self, workloads: bool) -> Self {
        self.workloads = workloads;
        self
    }

    /// Writes the API server's audit log ([`TestCluster::audit_log_path`],
    /// JSON lines) of the requests of these users (say
    /// `system:serviceaccount:NS:NAME`), at the Metadata level (verb,
    /// resource, name; no bodies), from the moment a response starts
    /// (`RequestReceived` is omitted: a request shows once, a watch twice,
    /// when it starts and when it ends, under the same `auditID`). Nobody
    /// else's requests are logged: for counting what a controller asks.
    pub fn audit_users(mut self, users: &[&str]) -> Self {
        self.audited_users = users.iter().map(|user| user.to_string()).collect();
        self
    }

    /// Keeps the files in `dir` (created; must not hold a running cluster)
    /// and starts the processes in their own sessions, so that
    /// [`TestCluster::detach`] can leave them running after this process
    /// exits (`cargo xtask k8s up`). Tests do not need this.
    pub fn persistent_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.persistent_dir = Some(dir.into());
        self
    }

    /// Starts etcd and the API server (and the workload parts), waiting
    /// until the API server is ready. Fails, naming what is missing, when
    /// the binaries are not built (`cargo xtask setup --k8s`).
    pub fn start(self) -> Result<TestCluster> {
        let assets = require_assets(self.workloads)?;
        let (dir, lifetime) = match self.persistent_dir {
            Some(path) => {
                ensure!(
                    !path.join(PIDS_FILE).exists(),
                    "{} already holds a cluster: stop it first (`cargo xtask k8s down`)",
                    path.display()
                );
                std::fs::create_dir_all(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                (ClusterDir::Fixed(path), Lifetime::Detached)
            }
            None => (
                ClusterDir::Scratch(ScratchDir::new("k8s")?),
                Lifetime::Guarded,
            ),
        };
        let root = dir.path().to_path_buf();
        let pki = Pki::generate(&root.join("pki"), KUBERNETES_SERVICE_IP)
            .context("generating the cluster's certificates")?;
        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let apiserver_port = free_port()?;
        let admin_kubeconfig = root.join("admin.kubeconfig");
        let server = format!("https://127.0.0.1:{apiserver_port}");
        write_kubeconfig(
            &admin_kubeconfig,
            &server,
            &pki.ca_cert,
            json!({
                "client-certificate": pki.admin_cert,
                "client-key": pki.admin_key,
            }),
            "default",
        )?;
        let mut apiserver_args = apiserver_args(&root, &pki, etcd_port, apiserver_port);
        if !self.audited_users.is_empty() {
            apiserver_args.extend(audit_args(&root, &self.audited_users)?);
        }
        let mut cluster = TestCluster {
            dir,
            assets,
            lifetime,
            apiserver_args,
            pki,
            server,
            admin_kubeconfig,
            etcd: None,
            apiserver: None,
            workloads: Vec::new(),
            node_name: None,
            detached: false,
        };
        let etcd_args = etcd_args(&root, etcd_port, etcd_peer_port);
        cluster.etcd = Some(cluster.start_component("etcd", &etcd_args)?);
        cluster.start_apiserver()?;
        if self.workloads {
            cluster.start_workloads()?;
        }
        Ok(cluster)
    }
}

/// A real Kubernetes control plane for tests, like controller-runtime's
/// envtest: etcd and kube-apiserver on loopback on free ports, client
/// certificates (the admin is in `system:masters`), RBAC, service-account
/// tokens, Service IPs in [`SERVICE_CLUSTER_IP_RANGE`]. Its directory and
/// every process go away on drop, also when a test panics; the processes
/// also die with the thread that started them (a parent-death signal, so a
/// killed test leaves nothing running): start the cluster on the thread
/// that uses it, not in a static shared between tests.
///
/// ```no_run
/// use xdp_ingress_lab::k8s::TestCluster;
/// # fn main() -> anyhow::Result<()> {
/// let cluster = TestCluster::builder().workloads(true).start()?;
/// cluster.kubectl(&["create", "namespace", "demo"])?;
/// cluster.kubectl(&["-n", "demo", "create", "deployment", "web", "--image=web", "--replicas=2"])?;
/// let ips = cluster.wait_deployment_pods("demo", "web", 2, std::time::Duration::from_secs(60))?;
/// println!("pods at {ips:?}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TestCluster {
    dir: ClusterDir,
    assets: PathBuf,
    lifetime: Lifetime,
    pki: Pki,
    server: String,
    admin_kubeconfig: PathBuf,
    apiserver_args: Vec<String>,
    etcd: Option<Component>,
    apiserver: Option<Component>,
    /// kube-controller-manager, kube-scheduler, kwok, in start order.
    pub(super) workloads: Vec<Component>,
    pub(super) node_name: Option<String>,
    detached: bool,
}

impl TestCluster {
    /// A builder: `TestCluster::builder().workloads(true).start()`.
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder::default()
    }

    /// Starts etcd and the API server only.
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// The cluster's directory (certificates, data, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The admin kubeconfig (group `system:masters`), for `KUBECONFIG`.
    pub fn kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// The CA certificate that signed the API server's certificate.
    pub fn ca_cert(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// The directory the binaries run from.
    pub fn assets_dir(&self) -> &Path {
        &self.assets
    }

    /// The log file of a component (`etcd`, `kube-apiserver`,
    /// `kube-controller-manager`, `kube-scheduler`, `kwok`).
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.dir().join(format!("{component}.log"))
    }

    /// The API server's audit log, written when the cluster was built with
    /// [`TestClusterBuilder::audit_users`].
    pub fn audit_log_path(&self) -> PathBuf {
        self.dir().join(AUDIT_LOG)
    }

    /// The pids of the running processes, by component name.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.etcd
            .iter()
            .chain(&self.apiserver)
            .chain(&self.workloads)
            .map(|component| (component.name, component.pid()))
            .collect()
    }

    /// Fails, naming it and with the end of its log, when a component has
    /// exited (the API server only counts between
    /// [`TestCluster::stop_apiserver`] and [`TestCluster::start_apiserver`]
    /// if it died on its own).
    pub fn ensure_running(&self) -> Result<()> {
        let components = self
            .etcd
            .iter()
            .chain(&self.apiserver)
            .chain(&self.workloads);
        for component in components {
            if component.exited() {
                bail!("{} exited; {}", component.name, component.log_tail());
            }
        }
        Ok(())
    }

    /// Runs kubectl as the admin; returns its stdout, or an error with its
    /// stderr. Bounded by [`KUBECTL_TIMEOUT`].
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_with(&self.admin_kubeconfig, args)
    }

    /// Runs kubectl with another kubeconfig (say, from
    /// [`TestCluster::service_account_kubeconfig`]); as [`TestCluster::kubectl`].
    pub fn kubectl_with(&self, kubeconfig: &Path, args: &[&str]) -> Result<String> {
        let mut command = Command::new(self.assets.join("kubectl"));
        command
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg(format!(
                "--request-timeout={}s",
                KUBECTL_TIMEOUT.as_secs() / 2
            ))
            .args(args);
        let line = describe(&command);
        let output = run_with_timeout(&mut command, KUBECTL_TIMEOUT)?;
        if !output.status.success() {
            bail!(
                "`{line}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `kubectl apply` of `yaml` (one or more documents) as the admin;
    /// returns kubectl's report.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        let file = self
            .dir()
            .join(format!("apply-{}.yaml", crate::process::unique_suffix()));
        std::fs::write(&file, yaml).with_context(|| format!("writing {}", file.display()))?;
        let file_arg = file.to_string_lossy().into_owned();
        let result = self.kubectl(&["apply", "-f", &file_arg]);
        let _ = std::fs::remove_file(&file);
        result
    }

    /// A kubeconfig that authenticates as ServiceAccount `name` in
    /// `namespace` (which must exist), with a token from `kubectl create
    /// token` valid for 24 hours: for running the controller under the RBAC
    /// of deploy/.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let token = self
            .kubectl(&["-n", namespace, "create", "token", name, "--duration=24h"])?
            .trim()
            .to_string();
        ensure!(!token.is_empty(), "kubectl create token printed no token");
        let path = self
            .dir()
            .join(format!("serviceaccount-{namespace}-{name}.kubeconfig"));
        write_kubeconfig(
            &path,
            &self.server,
            &self.pki.ca_cert,
            json!({ "token": token }),
            namespace,
        )?;
        Ok(path)
    }

    /// True while the API server runs.
    pub fn apiserver_running(&mut self) -> bool {
        self.apiserver.as_mut().is_some_and(Component::running)
    }

    /// Stops the API server (SIGTERM, SIGKILL after a few seconds; etcd
    /// keeps the data): clients see the port refuse connections until
    /// [`TestCluster::start_apiserver`]. Note that kube-controller-manager,
    /// kube-scheduler and kwok (client-go) retry with a jittered back-off
    /// that grows to 30-60 s over a long outage: after one of 30 s, allow a
    /// minute or more before they act on changes again.
    pub fn stop_apiserver(&mut self) -> Result<()> {
        if let Some(mut apiserver) = self.apiserver.take() {
            apiserver.stop()?;
        }
        Ok(())
    }

    /// Starts the API server again on the same port with the same etcd, and
    /// waits until it is ready. Fails if it runs already.
    pub fn start_apiserver(&mut self) -> Result<()> {
        ensure!(!self.apiserver_running(), "the API server runs already");
        let args = self.apiserver_args.clone();
        self.apiserver = Some(self.start_component("kube-apiserver", &args)?);
        self.wait_ready(API_READY_TIMEOUT)
    }

    /// Waits (bounded) until the API server's `/readyz` answers `ok`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let mut last = String::new();
        let ready = poll_until("kube-apiserver /readyz", timeout, || {
            // An API server that exited will not become ready.
            if let Some(apiserver) = &self.apiserver
                && apiserver.exited()
            {
                bail!("kube-apiserver exited; {}", apiserver.log_tail());
            }
            match self.kubectl(&["get", "--raw", "/readyz"]) {
                Ok(body) if body.trim() == "ok" => Ok(Some(())),
                Ok(body) => {
                    last = body;
                    Ok(None)
                }
                Err(error) => {
                    last = format!("{error:#}");
                    Ok(None)
                }
            }
        });
        ready.map_err(|error| {
            let logs = self
                .apiserver
                .as_ref()
                .map(Component::log_tail)
                .unwrap_or_default();
            error.context(format!("last answer: {last}\n{logs}"))
        })
    }

    /// Leaves the processes running and the directory in place when this
    /// value goes away (only for a [`TestClusterBuilder::persistent_dir`]
    /// cluster): writes their pids to the directory, for
    /// [`stop_detached_cluster`]. Returns the directory.
    pub fn detach(mut self) -> Result<PathBuf> {
        let ClusterDir::Fixed(dir) = &self.dir else {
            bail!("only a cluster with a persistent directory can be detached");
        };
        let dir = dir.clone();
        let pids: String = self
            .pids()
            .iter()
            .map(|(name, pid)| format!("{name} {pid}\n"))
            .collect();
        std::fs::write(dir.join(PIDS_FILE), pids)
            .with_context(|| format!("writing {}", dir.join(PIDS_FILE).display()))?;
        self.detached = true;
        Ok(dir)
    }

    /// Starts a component, its log in the cluster's directory.
    pub(super) fn start_component(&self, name: &'static str, args: &[String]) -> Result<Component> {
        Component::start(
            name,
            &self.assets.join(name),
            args,
            self.log_path(name),
            self.lifetime,
        )
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        // Dependents first: the workload parts, the API server, etcd.
        for component in self.workloads.iter_mut().rev() {
            let _ = component.stop();
        }
        let _ = self.stop_apiserver();
        if let Some(mut etcd) = self.etcd.take() {
            let _ = etcd.stop();
        }
        if let ClusterDir::Fixed(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Stops the processes of a cluster left running by [`TestCluster::detach`]
/// in `dir` and removes the directory. Only processes whose command line
/// names `dir` are signalled (a recycled pid is left alone). Returns false
/// when `dir` held no cluster.
pub fn stop_detached_cluster(dir: &Path) -> Result<bool> {
    let pids_file = dir.join(PIDS_FILE);
    let Ok(pids) = std::fs::read_to_string(&pids_file) else {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        return Ok(false);
    };
    let marker = dir.to_string_lossy().into_owned();
    // Dependents first: the file lists them in start order.
    for line in pids.lines().rev() {
        let Some((name, pid)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(&marker) {
            continue;
        }
        // SAFETY: kill with a pid whose command line names our directory.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let exited = poll_until(&format!("{name} ({pid}) to exit"), STOP_GRACE, || {
            Ok((!pid_alive(pid)).then_some(()))
        });
        if exited.is_err() {
            // SAFETY: as above.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            poll_until(&format!("{name} ({pid}) to die"), KILL_TIMEOUT, || {
                Ok((!pid_alive(pid)).then_some(()))
            })?;
        }
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(true)
}

/// A free TCP port on loopback (the kernel's choice; released at once, so
/// the component binds it right after).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// etcd, alone, on loopback; fsync off (test data).
fn etcd_args(root: &Path, client_port: u16, peer_port: u16) -> Vec<String> {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    vec![
        "--name=lab".into(),
        format!("--data-dir={}", root.join("etcd").display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=lab={peer}"),
        "--unsafe-no-fsync".into(),
        "--log-level=warn".into(),
    ]
}

/// kube-apiserver on loopback: client certificates, RBAC, service-account
/// tokens, no endpoint reconciler (its loopback address is no endpoint of
/// the `kubernetes` Service).
fn apiserver_args(root: &Path, pki: &Pki, etcd_port: u16, port: u16) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    vec![
        "--advertise-address=127.0.0.1".into(),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", root.join("apiserver-certs").display()),
        format!("--tls-cert-file={}", path(&pki.serving_cert)),
        format!("--tls-private-key-file={}", path(&pki.serving_key)),
        format!("--client-ca-file={}", path(&pki.ca_cert)),
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
        "--authorization-mode=RBAC".into(),
        format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
        format!(
            "--service-account-key-file={}",
            path(&pki.service_account_pub)
        ),
        format!(
            "--service-account-signing-key-file={}",
            path(&pki.service_account_key)
        ),
        "--endpoint-reconciler-type=none".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
    ]
}

/// The audit flags: a policy (JSON, which the API server accepts) that
/// logs `users`' requests at the Metadata level and nothing else, to
/// [`AUDIT_LOG`] without rotation.
fn audit_args(root: &Path, users: &[String]) -> Result<Vec<String>> {
    let policy = json!({
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            { "level": "Metadata", "users": users },
            { "level": "None" },
        ],
    });
    let policy_file = root.join("audit-policy.json");
    std::fs::write(&policy_file, serde_json::to_string_pretty(&policy)?)
        .with_context(|| format!("writing {}", policy_file.display()))?;
    Ok(vec![
        format!("--audit-policy-file={}", policy_file.display()),
        format!("--audit-log-path={}", root.join(AUDIT_LOG).display()),
        "--audit-log-maxsize=0".into(),
        "--audit-log-maxbackup=0".into(),
    ])
}

/// Writes a kubeconfig (as JSON, which kubeconfig readers accept) with one
/// cluster, one user (`auth`: certificate files or a token) and one context
/// in `namespace`.
fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    auth: serde_json::Value,
    namespace: &str,
) -> Result<()> {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "lab",
            "cluster": { "server": server, "certificate-authority": ca },
        }],
        "users": [{ "name": "lab", "user": auth }],
        "contexts": [{
            "name": "lab",
            "context": { "cluster": "lab", "user": "lab", "namespace": namespace },
        }],
        "current-context": "lab",
    });
    std::fs::write(path, serde_json::to_string_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Parses the IP addresses kubectl printed, one per whitespace-separated word.
pub(super) fn parse_ips(text: &str) -> Result<Vec<IpAddr>> {
    let mut ips = text
        .split_whitespace()
        .map(|word| {
            word.parse::<IpAddr>()
                .with_context(|| format!("not an IP address: {word:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    ips.sort();
    Ok(ips)
}

/// The last lines of a component's log, for messages of other modules.
pub(super) fn component_log_tail(cluster: &TestCluster, name: &str) -> String {
    log_tail(&cluster.log_path(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_output_becomes_sorted_addresses() {
        let ips = parse_ips("198.19.64.3 198.19.64.1\n").unwrap();
        assert_eq!(
            ips,
            ["198.19.64.1", "198.19.64.3"].map(|ip| ip.parse::<IpAddr>().unwrap())
        );
        assert!(parse_ips("").unwrap().is_empty());
        assert!(parse_ips("pending").is_err());
    }
}
