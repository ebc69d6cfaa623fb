//! A real Kubernetes control plane for tests, like controller-runtime's
//! envtest: [`TestCluster`] runs etcd and kube-apiserver (v1.37.2) on
//! loopback in a temporary directory, and with
//! [`TestClusterBuilder::workloads`] kube-controller-manager,
//! kube-scheduler and kwok, so that Deployments get Running pods with IPs
//! and Services get EndpointSlices, without a kubelet or containers.
//!
//! The binaries come from `$KUBEBUILDER_ASSETS`, else from the versioned
//! cache `cargo xtask setup --k8s` builds ([`k8s_cache_bin_dir`]).
//! Addresses: loopback for the components, Service IPs in
//! [`SERVICE_CLUSTER_IP_RANGE`], pod IPs in [`POD_CIDR`].

mod assets;
mod cluster;
mod component;
mod pki;
mod workloads;

pub use assets::{
    ASSETS_ENV, CONTROL_PLANE_BINARIES, ETCD_VERSION, K8S_CACHE_ROOT, KUBERNETES_VERSION,
    KWOK_STAGES, KWOK_STAGES_DIR, KWOK_VERSION, WORKLOAD_BINARIES, k8s_assets_dir,
    k8s_cache_bin_dir, missing_in,
};
pub use cluster::{
    API_READY_TIMEOUT, KUBECTL_TIMEOUT, KUBERNETES_SERVICE_IP, SERVICE_CLUSTER_IP_RANGE,
    TestCluster, TestClusterBuilder, stop_detached_cluster,
};
pub use workloads::{KWOK_NODE_ANNOTATION, KWOK_NODE_NAME, NODE_READY_TIMEOUT, POD_CIDR};
