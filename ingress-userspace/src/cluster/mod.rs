//! Running in a cluster: the API-server provider ([`watch`]), and what only
//! the elected leader does ([`leader`]): the Ingresses' load-balancer
//! status ([`status`]) and their events ([`events`]). Every replica serves
//! traffic whether or not it leads.

pub mod events;
pub mod leader;
pub mod status;
pub mod watch;

use std::path::Path;

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use thiserror::Error;

/// Why the API server cannot be reached.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// `--kubeconfig` cannot be read.
    #[error("reading --kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither in-cluster configuration nor `KUBECONFIG`/~/.kube/config.
    #[error(
        "no Kubernetes configuration: not in a pod (no service account), and no KUBECONFIG or ~/.kube/config; give --kubeconfig, or --manifests to run without a cluster: {0}"
    )]
    Infer(#[from] kube::config::InferConfigError),
    /// The client cannot be built from the configuration.
    #[error("building the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client from `kubeconfig`, else the in-cluster configuration (the pod's
/// service account), else `KUBECONFIG` or ~/.kube/config.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client, ConnectError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|source| ConnectError::Kubeconfig {
                path: path.display().to_string(),
                source,
            })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|source| ConnectError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// Whether this process runs in a Kubernetes pod (the kubelet sets
/// `KUBERNETES_SERVICE_HOST` in every container): then, without
/// `--manifests`, the API server is watched with the pod's service account.
pub fn in_pod() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty())
}

/// Who this replica is: the downward API's pod and node (`POD_NAME`,
/// `POD_NAMESPACE`, `NODE_NAME`), with fallbacks for a daemon run by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The pod's name, if in a pod.
    pub pod_name: Option<String>,
    /// The namespace of the pod, else the client's default namespace: where
    /// the leader election Lease lives.
    pub namespace: String,
    /// The node the pod runs on, if known.
    pub node_name: Option<String>,
    /// The holder identity in the Lease: the pod's name, else host name and
    /// process id.
    pub holder: String,
}

impl Identity {
    /// From the environment, with `default_namespace` when `POD_NAMESPACE`
    /// is unset.
    pub fn from_env(default_namespace: &str) -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        let pod_name = var("POD_NAME");
        let holder = pod_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "xdp-ingress".into());
            format!("{host}-{}", std::process::id())
        });
        Self {
            pod_name,
            namespace: var("POD_NAMESPACE").unwrap_or_else(|| default_namespace.to_owned()),
            node_name: var("NODE_NAME"),
            holder,
        }
    }
}

/// The Ingresses and Secrets of every namespace of the cluster of
/// `kubeconfig`, for `xdp-ingress migrate` (one paged list of each).
pub async fn list_for_migration(
    kubeconfig: &Path,
) -> anyhow::Result<ingress_model::ClusterObjects> {
    use k8s_openapi::api::{core::v1::Secret, networking::v1::Ingress};
    use kube::Api;

    let client = connect(Some(kubeconfig)).await?;
    let mut objects = Vec::new();
    let ingresses: Api<Ingress> = Api::all(client.clone());
    for ingress in list_all(&ingresses, None).await? {
        objects.push(ingress_model::KubeObject::Ingress(ingress));
    }
    let secrets: Api<Secret> = Api::all(client);
    for secret in list_all(&secrets, Some(watch::IGNORED_SECRET_TYPES)).await? {
        objects.push(ingress_model::KubeObject::Secret(secret));
    }
    Ok(ingress_model::ClusterObjects::from_objects(objects).0)
}

/// Every object of `api` (with the field selector `fields`), 500 a page.
async fn list_all<K>(api: &kube::Api<K>, fields: Option<&str>) -> Result<Vec<K>, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut all = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut params = kube::api::ListParams::default().limit(500);
        if let Some(fields) = fields {
            params = params.fields(fields);
        }
        if let Some(token) = &next {
            params = params.continue_token(token);
        }
        let page = api.list(&params).await?;
        next = page.metadata.continue_.clone().filter(|t| !t.is_empty());
        all.extend(page.items);
        if next.is_none() {
            return Ok(all);
        }
    }
}
