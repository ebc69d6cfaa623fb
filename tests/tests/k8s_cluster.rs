//! The lab's Kubernetes control plane (`xdp_ingress_lab::k8s`) really works:
//! the real kube-apiserver v1.37.2 with etcd, RBAC for ServiceAccounts, an
//! API server that can be taken away and brought back with its data, and
//! (with workloads) Deployments whose pods kwok runs with IPs in the lab's
//! endpoint subnet and which Services list as ready endpoints. Each test
//! checks that the cluster leaves no process and no file behind.
//!
//! Needs the binaries of `cargo xtask setup --k8s` (or KUBEBUILDER_ASSETS);
//! not root.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use xdp_ingress_lab::k8s::{KUBERNETES_VERSION, TestCluster};

/// How long pods and endpoints may take to follow a change.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the workloads test takes the API server away: short, because
/// kube-controller-manager's informers (client-go) retry with a jittered
/// back-off that grows to a minute over a long outage, and the test waits
/// for them to react afterwards.
const OUTAGE: Duration = Duration::from_secs(5);

/// Drops `cluster` and checks that its processes and directory are gone.
fn drop_and_check_cleanup(cluster: TestCluster) -> Result<()> {
    let pids = cluster.pids();
    let dir: PathBuf = cluster.dir().to_path_buf();
    ensure!(!pids.is_empty(), "the cluster reports no processes");
    drop(cluster);
    for (name, pid) in pids {
        ensure!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{name} ({pid}) still runs after the cluster was dropped"
        );
    }
    ensure!(!dir.exists(), "{} remains after the drop", dir.display());
    Ok(())
}

/// True when `ip` is in 198.19.64.0/18, kwok's pod range.
fn in_pod_cidr(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[..2] == [198, 19] && (64..128).contains(&v4.octets()[2]))
}

#[test]
fn control_plane_enforces_rbac_and_keeps_its_data_across_an_apiserver_restart() -> Result<()> {
    let mut cluster = TestCluster::start()?;

    let version = cluster.kubectl(&["version"])?;
    ensure!(
        version.contains(&format!("Client Version: {KUBERNETES_VERSION}\n"))
            && version.contains(&format!("Server Version: {KUBERNETES_VERSION}\n")),
        "kubectl version reports {version}"
    );

    cluster.kubectl(&["create", "namespace", "rbac"])?;
    cluster.kubectl(&["-n", "rbac", "create", "serviceaccount", "reader"])?;
    cluster.kubectl(&[
        "-n",
        "rbac",
        "create",
        "configmap",
        "kept",
        "--from-literal=k=v",
    ])?;
    let reader = cluster.service_account_kubeconfig("rbac", "reader")?;

    let denied = cluster
        .kubectl_with(&reader, &["-n", "rbac", "get", "configmaps"])
        .err()
        .context("the ServiceAccount listed ConfigMaps without any Role")?;
    ensure!(
        format!("{denied:#}").contains("Forbidden"),
        "expected Forbidden, got: {denied:#}"
    );

    cluster.apply(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: configmap-reader, namespace: rbac}
rules:
- apiGroups: [\"\"]
  resources: [configmaps]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: rbac}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}
subjects:
- {kind: ServiceAccount, name: reader, namespace: rbac}
",
    )?;
    let names =
        cluster.kubectl_with(&reader, &["-n", "rbac", "get", "configmaps", "-o", "name"])?;
    ensure!(names.contains("configmap/kept"), "the reader sees: {names}");
    // The grant is for ConfigMaps only.
    let still_denied = cluster.kubectl_with(&reader, &["-n", "rbac", "get", "secrets"]);
    ensure!(
        still_denied
            .as_ref()
            .is_err_and(|e| format!("{e:#}").contains("Forbidden")),
        "secrets: {still_denied:?}"
    );

    cluster.stop_apiserver()?;
    ensure!(!cluster.apiserver_running(), "the API server still runs");
    ensure!(
        cluster.kubectl(&["get", "namespaces"]).is_err(),
        "kubectl reached a stopped API server"
    );
    cluster.start_apiserver()?;
    let value = cluster.kubectl(&[
        "-n",
        "rbac",
        "get",
        "configmap",
        "kept",
        "-o",
        "jsonpath={.data.k}",
    ])?;
    ensure!(
        value == "v",
        "the ConfigMap after the restart holds {value:?}"
    );
    // Tokens stay valid: the signing key is the same.
    cluster.kubectl_with(&reader, &["-n", "rbac", "get", "configmaps"])?;

    drop_and_check_cleanup(cluster)
}

#[test]
fn workloads_get_running_pods_with_ips_and_ready_endpoints() -> Result<()> {
    let mut cluster = TestCluster::builder().workloads(true).start()?;
    cluster.kubectl(&["create", "namespace", "web"])?;
    cluster.apply(
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: web}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: lab.invalid/web:1
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: web}
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
",
    )?;

    let ips = cluster.wait_deployment_pods("web", "web", 3, SETTLE_TIMEOUT)?;
    ensure!(
        ips.iter().all(in_pod_cidr),
        "pod IPs outside 198.19.64.0/18: {ips:?}"
    );
    let endpoints = cluster.wait_ready_endpoints("web", "web", 3, SETTLE_TIMEOUT)?;
    ensure!(endpoints == ips, "endpoints {endpoints:?}, pods {ips:?}");
    let cluster_ip = cluster.kubectl(&[
        "-n",
        "web",
        "get",
        "service",
        "web",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    ensure!(
        cluster_ip.starts_with("198.18.240."),
        "cluster IP {cluster_ip}"
    );

    cluster.kubectl(&["-n", "web", "scale", "deployment", "web", "--replicas=1"])?;
    let ips = cluster.wait_deployment_pods("web", "web", 1, SETTLE_TIMEOUT)?;
    let endpoints = cluster.wait_ready_endpoints("web", "web", 1, SETTLE_TIMEOUT)?;
    ensure!(
        endpoints == ips,
        "after scaling: endpoints {endpoints:?}, pods {ips:?}"
    );

    // An API server outage: the controllers and kwok reconnect, the Node
    // stays Ready (long grace period), the pod and its endpoint stay.
    cluster.stop_apiserver()?;
    std::thread::sleep(OUTAGE);
    cluster.start_apiserver()?;
    cluster.ensure_running()?;
    let after = cluster.wait_deployment_pods("web", "web", 1, SETTLE_TIMEOUT)?;
    ensure!(
        after == ips,
        "after the outage: pods {after:?}, before {ips:?}"
    );
    let node = cluster.node_name().context("no kwok Node")?;
    let ready = cluster.kubectl(&[
        "get",
        "node",
        node,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ])?;
    ensure!(ready == "True", "the Node after the outage: Ready={ready}");
    cluster.kubectl(&["-n", "web", "scale", "deployment", "web", "--replicas=2"])?;
    cluster.wait_deployment_pods("web", "web", 2, SETTLE_TIMEOUT)?;
    cluster.wait_ready_endpoints("web", "web", 2, SETTLE_TIMEOUT)?;

    drop_and_check_cleanup(cluster)
}

#[test]
fn the_audit_log_records_only_the_audited_users_requests() -> Result<()> {
    let cluster = TestCluster::builder()
        .audit_users(&["system:serviceaccount:audit:watcher"])
        .start()?;
    cluster.kubectl(&["create", "namespace", "audit"])?;
    cluster.kubectl(&["-n", "audit", "create", "serviceaccount", "watcher"])?;
    cluster.kubectl(&[
        "-n",
        "audit",
        "create",
        "configmap",
        "seen",
        "--from-literal=k=v",
    ])?;
    cluster.kubectl(&[
        "-n",
        "audit",
        "create",
        "role",
        "reader",
        "--verb=get",
        "--resource=configmaps",
    ])?;
    cluster.kubectl(&[
        "-n",
        "audit",
        "create",
        "rolebinding",
        "reader",
        "--role=reader",
        "--serviceaccount=audit:watcher",
    ])?;
    let watcher = cluster.service_account_kubeconfig("audit", "watcher")?;
    cluster.kubectl_with(&watcher, &["-n", "audit", "get", "configmap", "seen"])?;

    let log = std::fs::read_to_string(cluster.audit_log_path())
        .with_context(|| format!("reading {}", cluster.audit_log_path().display()))?;
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(
        events
            .iter()
            .all(|e| e["user"]["username"] == "system:serviceaccount:audit:watcher"),
        "requests of other users were logged: {log}"
    );
    ensure!(
        events.iter().any(|e| e["verb"] == "get"
            && e["objectRef"]["resource"] == "configmaps"
            && e["objectRef"]["name"] == "seen"
            && e["level"] == "Metadata"
            && e["stage"] == "ResponseComplete"),
        "the watcher's GET of the ConfigMap is missing: {log}"
    );
    ensure!(
        events.iter().all(|e| e["stage"] != "RequestReceived"),
        "RequestReceived is logged: {log}"
    );
    drop_and_check_cleanup(cluster)
}
