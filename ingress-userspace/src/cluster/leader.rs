//! Leader election on a `coordination.k8s.io/v1` Lease (`--election-id`,
//! in the controller's namespace), by kube-lease-manager: the leader renews
//! the Lease; when it stops renewing (killed) another replica takes it once
//! it expires, and a leader that shuts down releases it at once.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

/// Seconds a Lease stays held without renewal: how long a killed leader's
/// status writes pause before another replica takes over.
pub const LEASE_DURATION_SECONDS: u64 = 15;
/// Seconds before expiry the holder renews.
pub const LEASE_GRACE_SECONDS: u64 = 5;
/// Wait between attempts while the API server is unreachable.
const RETRY: Duration = Duration::from_secs(2);

/// This replica's part in the election.
pub struct Leadership {
    /// True while this replica holds the Lease.
    pub is_leader: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// How long resigning waits for the Lease's release.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

impl Leadership {
    /// Campaigns for the Lease `election_id` in `namespace` as `holder`,
    /// until [`Leadership::resign`]; API errors are retried.
    pub fn campaign(
        client: Client,
        namespace: String,
        election_id: String,
        holder: String,
    ) -> Self {
        let (leader_tx, is_leader) = watch::channel(false);
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            while !*stopped.borrow() {
                let manager = LeaseManagerBuilder::new(client.clone(), &election_id)
                    .with_namespace(&namespace)
                    .with_identity(&holder)
                    .with_duration(LEASE_DURATION_SECONDS)
                    .with_grace(LEASE_GRACE_SECONDS)
                    .build()
                    .await;
                let manager = match manager {
                    Ok(manager) => manager,
                    Err(error) => {
                        warn!(lease = %election_id, %namespace, "leader election: {error}; retrying");
                        let _ = tokio::time::timeout(RETRY, stopped.changed()).await;
                        continue;
                    }
                };
                let (mut changes, watcher) = manager.watch().await;
                let resigned = loop {
                    let leading = *changes.borrow_and_update();
                    if leading != *leader_tx.borrow() {
                        if leading {
                            info!(lease = %election_id, %holder, "became the leader: writing Ingress status and events");
                        } else {
                            info!(lease = %election_id, %holder, "no longer the leader");
                        }
                        let _ = leader_tx.send(leading);
                    }
                    tokio::select! {
                        changed = changes.changed() => if changed.is_err() { break false },
                        _ = stopped.changed() => break true,
                    }
                };
                let _ = leader_tx.send(false);
                // Closing the channel makes the manager release the Lease
                // (when it holds it) and end.
                drop(changes);
                match tokio::time::timeout(RELEASE_TIMEOUT, watcher).await {
                    Ok(Ok(Err(error))) if !resigned => {
                        warn!(lease = %election_id, "leader election stopped: {error}; restarting")
                    }
                    Err(_) => warn!(lease = %election_id, "the Lease was not released in time"),
                    _ => {}
                }
                if resigned {
                    info!(lease = %election_id, "resigned from the election");
                    break;
                }
                let _ = tokio::time::timeout(RETRY, stopped.changed()).await;
            }
        });
        Self {
            is_leader,
            stop,
            task,
        }
    }

    /// Stops campaigning, releasing the Lease when held, so another replica
    /// takes over without waiting for it to expire.
    pub async fn resign(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
