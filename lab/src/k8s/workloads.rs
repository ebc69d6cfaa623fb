//! Workloads without a kubelet: kube-controller-manager (Deployments,
//! ReplicaSets, EndpointSlices, ServiceAccounts), kube-scheduler, and kwok
//! playing the kubelet of a fake Node, so that pods become Running and Ready
//! with IPs from [`POD_CIDR`] and Services list them as endpoints.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{
    assets::{KWOK_STAGES, KWOK_STAGES_DIR},
    cluster::{TestCluster, component_log_tail, parse_ips},
};
use crate::process::poll_until;

/// The pods' IPs (kwok's `--cidr`): inside the lab's endpoint subnet
/// 198.19.0.0/16.
pub const POD_CIDR: &str = "198.19.64.0/18";
/// The annotation that puts a Node under kwok, with value `fake`.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// The name of the fake Node of a cluster with workloads.
pub const KWOK_NODE_NAME: &str = "lab-kwok-node";
/// How long the fake Node may take to become Ready.
pub const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The lease kwok renews for its Node, in seconds.
const NODE_LEASE_SECONDS: u32 = 40;

impl TestCluster {
    /// Starts kube-controller-manager, kube-scheduler and kwok, registers
    /// the fake Node and waits until it is Ready.
    pub(super) fn start_workloads(&mut self) -> Result<()> {
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig().display());
        let pki_dir = self.dir().join("pki");
        let controller_manager = vec![
            kubeconfig.clone(),
            // No node IPAM: there is no cluster CIDR to hand out; kwok picks
            // the pods' IPs.
            "--controllers=*,-nodeipam".into(),
            // kwok's heartbeats are leases; a long grace period keeps a
            // briefly stopped API server from making the Node NotReady and
            // its pods evicted.
            "--node-monitor-grace-period=1h".into(),
            format!(
                "--service-account-private-key-file={}",
                pki_dir.join("service-account.key").display()
            ),
            format!("--root-ca-file={}", self.ca_cert().display()),
            "--leader-elect=false".into(),
            // Serves nothing: no port to collide with parallel clusters.
            "--secure-port=0".into(),
        ];
        let component = self.start_component("kube-controller-manager", &controller_manager)?;
        self.workloads.push(component);

        let scheduler = vec![
            kubeconfig.clone(),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
        ];
        let component = self.start_component("kube-scheduler", &scheduler)?;
        self.workloads.push(component);

        let stages = self.assets_dir().join(KWOK_STAGES_DIR);
        let mut kwok = vec![
            kubeconfig,
            "--manage-all-nodes=false".into(),
            format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
            format!("--cidr={POD_CIDR}"),
            "--node-ip=127.0.0.1".into(),
            format!("--node-lease-duration-seconds={NODE_LEASE_SECONDS}"),
        ];
        for (_, file) in KWOK_STAGES {
            kwok.push("-c".into());
            kwok.push(stages.join(file).display().to_string());
        }
        let component = self.start_component("kwok", &kwok)?;
        self.workloads.push(component);

        self.apply(&format!(
            "apiVersion: v1
kind: Node
metadata:
  name: {KWOK_NODE_NAME}
  annotations:
    {KWOK_NODE_ANNOTATION}: fake
  labels:
    kubernetes.io/hostname: {KWOK_NODE_NAME}
    kubernetes.io/os: linux
    type: kwok
"
        ))?;
        self.node_name = Some(KWOK_NODE_NAME.to_string());
        poll_until("the kwok Node to be Ready", NODE_READY_TIMEOUT, || {
            self.ensure_running()?;
            let ready = self.kubectl(&[
                "get",
                "node",
                KWOK_NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ])?;
            Ok((ready.trim() == "True").then_some(()))
        })
        .with_context(|| component_log_tail(self, "kwok"))
    }

    /// The fake Node's name, in a cluster with workloads.
    pub fn node_name(&self) -> Option<&str> {
        self.node_name.as_deref()
    }

    /// Waits (bounded by `timeout`) until Deployment `name` in `namespace`
    /// has exactly `replicas` pods, none terminating, all Running and Ready
    /// with an IP; returns their IPs, sorted. Needs a cluster with
    /// workloads.
    pub fn wait_deployment_pods(
        &self,
        namespace: &str,
        name: &str,
        replicas: usize,
        timeout: Duration,
    ) -> Result<Vec<IpAddr>> {
        if self.node_name.is_none() {
            bail!("pods only run in a cluster started with .workloads(true)");
        }
        let mut last = String::from("no answer yet");
        poll_until(
            &format!("{replicas} Running pods of Deployment {namespace}/{name}"),
            timeout,
            || {
                self.ensure_running()?;
                let deployment: Value = serde_json::from_str(&self.kubectl(&[
                    "-n",
                    namespace,
                    "get",
                    "deployment",
                    name,
                    "-o",
                    "json",
                ])?)?;
                let selector = match_labels_selector(&deployment)?;
                let pods: Value = serde_json::from_str(&self.kubectl(&[
                    "-n", namespace, "get", "pods", "-l", &selector, "-o", "json",
                ])?)?;
                let pods = pods["items"].as_array().cloned().unwrap_or_default();
                let running: Vec<&str> = pods
                    .iter()
                    .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null())
                    .filter(|pod| pod["status"]["phase"] == "Running" && pod_ready(pod))
                    .filter_map(|pod| pod["status"]["podIP"].as_str())
                    .collect();
                last = format!(
                    "{} pods, {} Running and Ready with IPs",
                    pods.len(),
                    running.len()
                );
                if pods.len() == replicas && running.len() == replicas {
                    return parse_ips(&running.join(" ")).map(Some);
                }
                Ok(None)
            },
        )
        .with_context(|| format!("last seen: {last}"))
    }

    /// The addresses of the ready endpoints in the EndpointSlices of Service
    /// `service` in `namespace`, sorted.
    pub fn ready_endpoints(&self, namespace: &str, service: &str) -> Result<Vec<IpAddr>> {
        let slices: Value = serde_json::from_str(&self.kubectl(&[
            "-n",
            namespace,
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={service}"),
            "-o",
            "json",
        ])?)?;
        let mut addresses = Vec::new();
        for slice in slices["items"].as_array().into_iter().flatten() {
            for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
                // An absent `ready` means ready (the API's convention).
                if endpoint["conditions"]["ready"] == Value::Bool(false) {
                    continue;
                }
                for address in endpoint["addresses"].as_array().into_iter().flatten() {
                    if let Some(address) = address.as_str() {
                        addresses.push(address.to_string());
                    }
                }
            }
        }
        parse_ips(&addresses.join(" "))
    }

    /// Waits (bounded) until Service `service` in `namespace` has exactly
    /// `count` ready endpoints; returns them, sorted.
    pub fn wait_ready_endpoints(
        &self,
        namespace: &str,
        service: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<IpAddr>> {
        poll_until(
            &format!("{count} ready endpoints of Service {namespace}/{service}"),
            timeout,
            || {
                let endpoints = self.ready_endpoints(namespace, service)?;
                Ok((endpoints.len() == count).then_some(endpoints))
            },
        )
    }
}

/// True when the pod's Ready condition is True.
fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|condition| condition["type"] == "Ready" && condition["status"] == "True")
}

/// The Deployment's `spec.selector.matchLabels` as a label selector
/// (`a=b,c=d`).
fn match_labels_selector(deployment: &Value) -> Result<String> {
    let labels = deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("the Deployment has no spec.selector.matchLabels")?;
    Ok(labels
        .iter()
        .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(","))
}
