//! Where the control-plane binaries are: one definition of the versions and
//! of the cache directory, shared by `cargo xtask setup --k8s` (which builds
//! into it) and the harness (which runs from it).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The Kubernetes release, matching the `v1_37` feature of k8s-openapi.
pub const KUBERNETES_VERSION: &str = "v1.37.2";
/// The etcd release.
pub const ETCD_VERSION: &str = "v3.6.16";
/// The kwok release (nodes and pods without a kubelet).
pub const KWOK_VERSION: &str = "v0.8.0";

/// The root of the cache `cargo xtask setup --k8s` builds into, outside the
/// work tree.
pub const K8S_CACHE_ROOT: &str = "/var/cache/xdp-ingress/k8s";

/// The environment variable naming a directory with the binaries, as
/// controller-runtime's envtest uses it; it wins over the cache.
pub const ASSETS_ENV: &str = "KUBEBUILDER_ASSETS";

/// The control-plane binaries every cluster needs.
pub const CONTROL_PLANE_BINARIES: &[&str] = &["etcd", "kube-apiserver", "kubectl"];
/// The binaries a cluster with workloads needs as well.
pub const WORKLOAD_BINARIES: &[&str] = &["kube-controller-manager", "kube-scheduler", "kwok"];

/// The subdirectory of the binaries' directory holding kwok's stage
/// configurations.
pub const KWOK_STAGES_DIR: &str = "kwok-stages";
/// kwok's stages the harness runs, as (path inside kwok's module, file
/// name in [`KWOK_STAGES_DIR`]): nodes become Ready and keep a lease, pods
/// become Running and Ready with an IP, complete, and go away when deleted.
pub const KWOK_STAGES: &[(&str, &str)] = &[
    (
        "kustomize/stage/node/fast/node-initialize.yaml",
        "node-initialize.yaml",
    ),
    (
        "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
        "node-heartbeat-with-lease.yaml",
    ),
    ("kustomize/stage/pod/fast/pod-ready.yaml", "pod-ready.yaml"),
    (
        "kustomize/stage/pod/fast/pod-complete.yaml",
        "pod-complete.yaml",
    ),
    (
        "kustomize/stage/pod/fast/pod-delete.yaml",
        "pod-delete.yaml",
    ),
];

/// The versioned directory `cargo xtask setup --k8s` builds into:
/// `/var/cache/xdp-ingress/k8s/v1.37.2-etcd3.6.16-kwok0.8.0/bin`. A new
/// version of any of them builds into a fresh directory.
pub fn k8s_cache_bin_dir() -> PathBuf {
    let etcd = ETCD_VERSION.trim_start_matches('v');
    let kwok = KWOK_VERSION.trim_start_matches('v');
    Path::new(K8S_CACHE_ROOT)
        .join(format!("{KUBERNETES_VERSION}-etcd{etcd}-kwok{kwok}"))
        .join("bin")
}

/// The directory the harness runs binaries from: `$KUBEBUILDER_ASSETS` when
/// set, else [`k8s_cache_bin_dir`].
pub fn k8s_assets_dir() -> PathBuf {
    match std::env::var_os(ASSETS_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => k8s_cache_bin_dir(),
    }
}

/// The files of `names` (binaries, or paths relative to the directory)
/// missing from `dir`.
pub fn missing_in(dir: &Path, names: &[&'static str]) -> Vec<&'static str> {
    names
        .iter()
        .copied()
        .filter(|name| !dir.join(name).is_file())
        .collect()
}

/// The directory of the binaries, or an error naming what is missing and
/// how to build it; with `workloads`, the workload binaries and kwok's
/// stages are required too.
pub(crate) fn require_assets(workloads: bool) -> Result<PathBuf> {
    let dir = k8s_assets_dir();
    require_assets_in(&dir, workloads)?;
    Ok(dir)
}

/// [`require_assets`] for a given directory.
fn require_assets_in(dir: &Path, workloads: bool) -> Result<()> {
    let mut missing = missing_in(dir, CONTROL_PLANE_BINARIES);
    if workloads {
        missing.extend(missing_in(dir, WORKLOAD_BINARIES));
        missing.extend(
            KWOK_STAGES
                .iter()
                .filter(|(_, file)| !dir.join(KWOK_STAGES_DIR).join(file).is_file())
                .map(|(_, file)| *file),
        );
    }
    if !missing.is_empty() {
        bail!(
            "the Kubernetes test binaries are missing from {} ({}): run `cargo xtask setup --k8s`{}",
            dir.display(),
            missing.join(", "),
            if std::env::var_os(ASSETS_ENV).is_some() {
                format!(" (or fix {ASSETS_ENV})")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDir;

    #[test]
    fn missing_binaries_are_named_with_the_command_that_builds_them() {
        let dir = ScratchDir::new("k8s-assets").unwrap();
        let error = format!("{:#}", require_assets_in(dir.path(), false).unwrap_err());
        assert!(error.contains("run `cargo xtask setup --k8s`"), "{error}");
        assert!(error.contains("etcd, kube-apiserver, kubectl"), "{error}");
        assert!(!error.contains("kwok"), "{error}");

        for binary in CONTROL_PLANE_BINARIES {
            dir.write(binary, "").unwrap();
        }
        require_assets_in(dir.path(), false).unwrap();
        let error = format!("{:#}", require_assets_in(dir.path(), true).unwrap_err());
        assert!(
            error.contains("kube-controller-manager, kube-scheduler, kwok, node-initialize.yaml"),
            "{error}"
        );
    }

    #[test]
    fn the_cache_directory_names_every_version() {
        let dir = k8s_cache_bin_dir();
        assert_eq!(
            dir,
            Path::new("/var/cache/xdp-ingress/k8s/v1.37.2-etcd3.6.16-kwok0.8.0/bin")
        );
    }
}
