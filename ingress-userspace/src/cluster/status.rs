//! The Ingresses' `status.loadBalancer.ingress`, written by the leader:
//! the addresses clients reach the controller at, set on our Ingresses and
//! removed from Ingresses that stop being ours, as ingress-nginx does; and
//! removed from (or not given to) an Ingress of ours that serves nothing,
//! having lost every path and default backend it has to other Ingresses,
//! so that the status never claims what the routes do not do.
//!
//! The addresses come from `--publish-status-address`, else from
//! `--publish-service` (its load balancer, else its external IPs), else
//! from the nodes that run the controller's pods (a node's ExternalIP,
//! else its InternalIP).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use ingress_model::ObjectKey;
use k8s_openapi::api::{
    core::v1::{Node, Pod, Service},
    networking::v1::Ingress,
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{
    Identity,
    watch::{AppliedConfig, IngressView},
};

/// How often the leader re-checks the addresses and every Ingress's status
/// even without a change (nodes come and go), as ingress-nginx does.
const RESYNC: Duration = Duration::from_secs(60);
/// The field manager of our status writes.
const FIELD_MANAGER: &str = "xdp-ingress";

/// Where the published addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressSource {
    /// `--publish-status-address`: these, as given.
    Fixed(Vec<String>),
    /// `--publish-service`: that Service's load balancer or external IPs.
    Service(ObjectKey),
    /// The nodes that run the controller's pods (or the node named by
    /// `NODE_NAME` outside a pod).
    Nodes(Identity),
}

/// The addresses to publish, in a stable order.
async fn addresses(client: &Client, source: &AddressSource, config: &AppliedConfig) -> Vec<String> {
    match source {
        AddressSource::Fixed(addresses) => addresses.clone(),
        AddressSource::Service(key) => match &config.publish_service {
            Some(service) => service_addresses(service),
            None => {
                debug!(service = %key, "--publish-service not found (yet)");
                Vec::new()
            }
        },
        AddressSource::Nodes(identity) => match node_addresses(client, identity).await {
            Ok(addresses) => addresses,
            Err(error) => {
                warn!("reading the controller's nodes for the Ingress status: {error}");
                Vec::new()
            }
        },
    }
}

/// A Service's load-balancer addresses, else its external IPs.
pub fn service_addresses(service: &Service) -> Vec<String> {
    let balanced: Vec<String> = service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ip.clone().or_else(|| entry.hostname.clone()))
        .collect();
    if !balanced.is_empty() {
        return sorted(balanced);
    }
    sorted(
        service
            .spec
            .as_ref()
            .and_then(|spec| spec.external_ips.clone())
            .unwrap_or_default(),
    )
}

fn sorted(mut addresses: Vec<String>) -> Vec<String> {
    addresses.sort();
    addresses.dedup();
    addresses
}

/// The nodes running pods like ours (same namespace and labels), or the
/// node named by `NODE_NAME`.
async fn node_addresses(client: &Client, identity: &Identity) -> Result<Vec<String>, kube::Error> {
    let mut node_names = BTreeSet::new();
    if let Some(pod_name) = &identity.pod_name {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &identity.namespace);
        let own = pods.get(pod_name).await?;
        let selector = own
            .metadata
            .labels
            .unwrap_or_default()
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(",");
        for pod in pods.list(&ListParams::default().labels(&selector)).await? {
            let running = pod
                .status
                .as_ref()
                .and_then(|status| status.phase.as_deref())
                == Some("Running");
            if let Some(node) = pod.spec.and_then(|spec| spec.node_name)
                && running
            {
                node_names.insert(node);
            }
        }
    } else if let Some(node) = &identity.node_name {
        node_names.insert(node.clone());
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let mut addresses = Vec::new();
    for name in node_names {
        let node = nodes.get(&name).await?;
        if let Some(address) = node_address(&node) {
            addresses.push(address);
        }
    }
    Ok(sorted(addresses))
}

/// A node's ExternalIP, else its InternalIP.
pub fn node_address(node: &Node) -> Option<String> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    ["ExternalIP", "InternalIP"].into_iter().find_map(|kind| {
        addresses
            .iter()
            .find(|a| a.type_ == kind)
            .map(|a| a.address.clone())
    })
}

/// The status entries for `addresses`: an IP as `ip`, anything else as
/// `hostname`.
fn status_entries(addresses: &[String]) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = addresses
        .iter()
        .map(|address| match address.parse::<IpAddr>() {
            Ok(_) => json!({ "ip": address }),
            Err(_) => json!({ "hostname": address }),
        })
        .collect();
    serde_json::Value::Array(entries)
}

/// What one pass changes: Ingresses to set, and Ingresses to clear.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StatusPlan {
    /// Our Ingresses whose status differs from the addresses.
    pub set: Vec<ObjectKey>,
    /// Ingresses that are no longer ours but carry our addresses, and ours
    /// that serve nothing but carry an address.
    pub clear: Vec<ObjectKey>,
}

/// A status write whose result the watch has not shown yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Set to the addresses.
    Set,
    /// Cleared.
    Cleared,
}

/// Decides a pass (pure). `published` holds the Ingresses this replica has
/// published to as leader; an Ingress leaving our class is cleared when it
/// is among them, or when it carries exactly our addresses on the first
/// pass (it left while no replica was leading). An Ingress of ours that
/// serves nothing is cleared of any address. `in_flight` holds those
/// already written (with these addresses) whose write the watch has not
/// shown yet: they are not written again the same way.
pub fn plan(
    ingresses: &[IngressView],
    addresses: &[String],
    published: &BTreeSet<ObjectKey>,
    in_flight: &BTreeMap<ObjectKey, Written>,
    first_pass: bool,
) -> StatusPlan {
    let mut plan = StatusPlan::default();
    for ingress in ingresses {
        let mut current = ingress.status_addresses.clone();
        current.sort();
        current.dedup();
        let written = in_flight.get(&ingress.key);
        if ingress.ours && ingress.serves {
            if current != addresses && written != Some(&Written::Set) {
                plan.set.push(ingress.key.clone());
            }
        } else if ingress.ours {
            if !current.is_empty() && written != Some(&Written::Cleared) {
                plan.clear.push(ingress.key.clone());
            }
        } else if !current.is_empty()
            && (published.contains(&ingress.key)
                || (first_pass && !addresses.is_empty() && current == addresses))
        {
            plan.clear.push(ingress.key.clone());
        }
    }
    plan
}

/// Writes the status while this replica leads, after every applied
/// configuration, on becoming leader and every [`RESYNC`], until
/// `shutdown`.
pub async fn run(
    client: Client,
    source: AddressSource,
    mut applied: watch::Receiver<Option<Arc<AppliedConfig>>>,
    mut is_leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut published: BTreeSet<ObjectKey> = BTreeSet::new();
    // Written (with `written_addresses`) since the last resync; their
    // writes come back through the watch a little later.
    let mut in_flight: BTreeMap<ObjectKey, Written> = BTreeMap::new();
    let mut written_addresses: Vec<String> = Vec::new();
    let mut first_pass = true;
    let mut warned_empty = false;
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        let leading = *is_leader.borrow_and_update();
        let config = applied.borrow_and_update().clone();
        if leading && let Some(config) = config {
            let addresses = addresses(&client, &source, &config).await;
            if addresses.is_empty() && !warned_empty {
                warn!(
                    ?source,
                    "no address to publish in the Ingress status (give --publish-status-address or --publish-service)"
                );
                warned_empty = true;
            }
            if addresses != written_addresses {
                in_flight.clear();
                written_addresses = addresses.clone();
            }
            let plan = plan(
                &config.ingresses,
                &addresses,
                &published,
                &in_flight,
                first_pass,
            );
            first_pass = false;
            write(&client, &plan, &addresses, &mut published).await;
            in_flight.extend(plan.set.into_iter().map(|key| (key, Written::Set)));
            in_flight.extend(plan.clear.into_iter().map(|key| (key, Written::Cleared)));
        } else if !leading {
            published.clear();
            in_flight.clear();
            first_pass = true;
        }
        tokio::select! {
            _ = applied.changed() => {}
            _ = is_leader.changed() => {}
            // Every RESYNC, every Ingress is checked again, written or not.
            _ = resync.tick() => in_flight.clear(),
            () = crate::shutdown::stopped(&mut shutdown) => return,
        }
    }
}

async fn write(
    client: &Client,
    plan: &StatusPlan,
    addresses: &[String],
    published: &mut BTreeSet<ObjectKey>,
) {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let mut outcomes: BTreeMap<&'static str, usize> = BTreeMap::new();
    let set = json!({ "status": { "loadBalancer": { "ingress": status_entries(addresses) } } });
    for key in &plan.set {
        let api: Api<Ingress> = Api::namespaced(client.clone(), &key.namespace);
        match api
            .patch_status(&key.name, &params, &Patch::Merge(&set))
            .await
        {
            Ok(_) => {
                published.insert(key.clone());
                *outcomes.entry("set").or_default() += 1;
            }
            Err(error) => {
                warn!(ingress = %key, "updating the Ingress status: {error}");
                *outcomes.entry("failed").or_default() += 1;
            }
        }
    }
    let clear = json!({ "status": { "loadBalancer": { "ingress": null } } });
    for key in &plan.clear {
        let api: Api<Ingress> = Api::namespaced(client.clone(), &key.namespace);
        match api
            .patch_status(&key.name, &params, &Patch::Merge(&clear))
            .await
        {
            Ok(_) => {
                published.remove(key);
                *outcomes.entry("cleared").or_default() += 1;
            }
            // Deleted meanwhile: nothing to clear.
            Err(kube::Error::Api(status)) if status.code == 404 => {
                published.remove(key);
            }
            Err(error) => {
                warn!(ingress = %key, "clearing the Ingress status: {error}");
                *outcomes.entry("failed").or_default() += 1;
            }
        }
    }
    if outcomes.is_empty() {
        debug!(?addresses, "Ingress status up to date");
    } else {
        info!(?addresses, ?outcomes, "Ingress status written");
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, NodeAddress, NodeStatus, ServiceSpec,
        ServiceStatus,
    };

    use super::*;

    fn view(name: &str, ours: bool, status: &[&str]) -> IngressView {
        IngressView {
            key: ObjectKey::new("default", name),
            uid: None,
            revision: 0,
            ours,
            serves: true,
            status_addresses: status.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn in_flight(keys: &[ObjectKey], written: Written) -> BTreeMap<ObjectKey, Written> {
        keys.iter().map(|key| (key.clone(), written)).collect()
    }

    fn addrs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ours_get_the_addresses_when_they_differ() {
        let ingresses = [
            view("fresh", true, &[]),
            view("done", true, &["198.18.0.1"]),
            view("stale", true, &["198.18.0.9"]),
            view("other", false, &["203.0.113.7"]),
        ];
        let plan_with = |in_flight: &BTreeMap<ObjectKey, Written>| {
            plan(
                &ingresses,
                &addrs(&["198.18.0.1"]),
                &BTreeSet::new(),
                in_flight,
                false,
            )
        };
        let first = plan_with(&BTreeMap::new());
        let names: Vec<_> = first.set.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["fresh", "stale"]);
        assert!(
            first.clear.is_empty(),
            "another controller's status is left alone"
        );
        // Written, not yet seen back through the watch: not written again.
        let again = plan_with(&in_flight(&first.set, Written::Set));
        assert!(again.set.is_empty());
    }

    #[test]
    fn ours_that_serve_nothing_claim_no_address() {
        let unserved = |name, status: &[&str]| IngressView {
            serves: false,
            ..view(name, true, status)
        };
        let ingresses = [
            unserved("lost", &["198.18.0.1"]),
            unserved("never-had-one", &[]),
            view("serving", true, &[]),
        ];
        let addresses = addrs(&["198.18.0.1"]);
        let plan_with = |in_flight: &BTreeMap<ObjectKey, Written>| {
            plan(&ingresses, &addresses, &BTreeSet::new(), in_flight, false)
        };
        let first = plan_with(&BTreeMap::new());
        let cleared: Vec<_> = first.clear.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(cleared, ["lost"]);
        let set: Vec<_> = first.set.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(set, ["serving"]);
        // Cleared, not yet seen back: not cleared again.
        assert!(
            plan_with(&in_flight(&first.clear, Written::Cleared))
                .clear
                .is_empty()
        );
        // Set just before it lost: cleared all the same.
        let set_before = in_flight(&[ObjectKey::new("default", "lost")], Written::Set);
        assert_eq!(plan_with(&set_before).clear.len(), 1);
    }

    #[test]
    fn ingresses_leaving_our_class_are_cleared() {
        let ingresses = [
            view("left", false, &["198.18.0.1"]),
            view("left-while-down", false, &["198.18.0.1"]),
        ];
        let published = BTreeSet::from([ObjectKey::new("default", "left")]);
        let none = BTreeMap::new();
        let later = plan(
            &ingresses,
            &addrs(&["198.18.0.1"]),
            &published,
            &none,
            false,
        );
        let names: Vec<_> = later.clear.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["left"]);
        let first = plan(&ingresses, &addrs(&["198.18.0.1"]), &published, &none, true);
        assert_eq!(first.clear.len(), 2);
    }

    #[test]
    fn address_order_does_not_cause_writes() {
        let ingresses = [view("web", true, &["198.18.0.2", "198.18.0.1"])];
        let plan = plan(
            &ingresses,
            &addrs(&["198.18.0.1", "198.18.0.2"]),
            &BTreeSet::new(),
            &BTreeMap::new(),
            false,
        );
        assert!(plan.set.is_empty());
    }

    #[test]
    fn service_and_node_addresses() {
        let mut service = Service {
            spec: Some(ServiceSpec {
                external_ips: Some(addrs(&["198.18.5.5"])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(service_addresses(&service), ["198.18.5.5"]);
        service.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    hostname: Some("lb.example.com".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
        assert_eq!(service_addresses(&service), ["lb.example.com"]);

        let node = |kinds: &[(&str, &str)]| Node {
            status: Some(NodeStatus {
                addresses: Some(
                    kinds
                        .iter()
                        .map(|(kind, address)| NodeAddress {
                            type_: kind.to_string(),
                            address: address.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            node_address(&node(&[
                ("InternalIP", "198.18.0.1"),
                ("ExternalIP", "198.18.9.9")
            ])),
            Some("198.18.9.9".into())
        );
        assert_eq!(
            node_address(&node(&[("Hostname", "n1"), ("InternalIP", "198.18.0.1")])),
            Some("198.18.0.1".into())
        );
        assert_eq!(node_address(&node(&[("Hostname", "n1")])), None);
    }

    #[test]
    fn entries_split_ips_and_hostnames() {
        assert_eq!(
            status_entries(&addrs(&["198.18.0.1", "lb.example.com", "2001:db8::1"])),
            json!([{"ip": "198.18.0.1"}, {"hostname": "lb.example.com"}, {"ip": "2001:db8::1"}])
        );
    }
}
