//! The manifests provider (`--manifests`): Kubernetes objects from YAML or
//! JSON files, applied at start and again whenever the files change. A
//! broken file is reported with its file and line, and the last good
//! configuration keeps serving.

use std::{path::PathBuf, sync::Arc, time::Duration};

use ingress_model::{ClusterObjects, KubeObject, ManifestError, parse_manifests};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::files::{ReadError, read_sources, watch as watch_files};
use crate::config::{ApplyOutcome, ConfigApplier};

/// Why a set of manifests could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or directory could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A document is not a valid object (file and line inside).
    #[error(transparent)]
    Parse(#[from] ManifestError),
}

/// Reads and parses every manifest under `paths` into one snapshot.
/// Duplicates (the same object twice) are warned about; the later wins.
pub fn load(paths: &[PathBuf]) -> Result<ClusterObjects, LoadError> {
    let mut objects = Vec::new();
    for source in read_sources(paths)? {
        for object in parse_manifests(&source.name, &source.text)? {
            if let KubeObject::Skipped(skipped) = &object {
                debug!(file = %source.name, "skipped: {skipped:?}");
                continue;
            }
            objects.push(object);
        }
    }
    let (snapshot, duplicates) = ClusterObjects::from_objects(objects);
    for problem in duplicates {
        warn!("{problem}");
    }
    Ok(snapshot)
}

/// Loads `paths` and applies them; on failure logs the error and keeps the
/// configuration that is serving. Returns what was applied, if anything.
pub fn reload(paths: &[PathBuf], applier: &ConfigApplier) -> Option<ApplyOutcome> {
    let outcome = match load(paths) {
        Ok(objects) => Some(applier.apply(&objects)),
        Err(error) => {
            error!("manifests not applied, the previous configuration keeps serving: {error}");
            None
        }
    };
    release_freed_memory();
    outcome
}

/// Parsing thousands of objects frees far more than it keeps; glibc holds
/// freed memory until asked (at 10,000 Ingresses: 130 MiB resident instead
/// of 35 MiB), so give it back after each reload.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Applies `paths` now, before returning (so the first request sees the
/// configuration), and then after every change until `shutdown` is true.
/// The watch starts before the first read, so no change is missed.
pub fn start(
    paths: Vec<PathBuf>,
    applier: Arc<ConfigApplier>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
    let (watcher, mut changes) = watch_files(&paths, Duration::from_millis(20))?;
    reload(&paths, &applier);
    Ok(tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                change = changes.recv() => {
                    if change.is_none() {
                        break;
                    }
                    info!("manifests changed, reloading");
                    reload(&paths, &applier);
                }
                () = crate::shutdown::stopped(&mut shutdown) => break,
            }
        }
    }))
}
