//! The daemon-wide stop signal: a `watch` channel that turns true once.

use tokio::sync::watch;

/// Resolves once `shutdown` says stop (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`, so it is dropped here
    // rather than held inside the caller's `select!`.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}
