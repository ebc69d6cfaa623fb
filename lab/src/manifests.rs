//! Manifests for `xdp-ingress run --manifests DIR`: a temporary directory
//! the daemon watches, written atomically so the daemon never reads half a
//! file, and the YAML of the objects the lab's backends stand behind.

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::{
    process::unique_suffix,
    reap::{FILE_PREFIX, reap_stale},
};

/// The IngressClass `xdp` of xdp-ingress's controller (not the default
/// class): Ingresses name it with `ingressClassName: xdp`.
pub const XDP_INGRESS_CLASS: &str = "\
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: xdp}
spec: {controller: xdp-ingress.io/controller}
";

/// A temporary directory of manifest files, removed on drop:
/// `$TMPDIR/xdp-ingress-lab-<pid>-<n>-manifests`.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
}

/// Joins YAML documents into one stream (`---` before each).
pub fn documents<S: AsRef<str>>(docs: &[S]) -> String {
    docs.iter()
        .map(|doc| format!("---\n{}\n", doc.as_ref().trim_end()))
        .collect()
}

impl ManifestDir {
    /// Creates the directory, empty.
    pub fn new() -> Result<Self> {
        reap_stale();
        let dir = std::env::temp_dir().join(format!("{FILE_PREFIX}{}-manifests", unique_suffix()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// The directory (for `--manifests`).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The directory as a command-line argument.
    pub fn arg(&self) -> String {
        self.dir.display().to_string()
    }

    /// Writes `text` to `name` (`routes.yaml`) in the directory atomically:
    /// into a hidden file first, then renamed over `name`, as editors and
    /// the kubelet do. Returns the file's path.
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        let temporary = self.dir.join(format!(".{name}.{}.tmp", unique_suffix()));
        std::fs::write(&temporary, text)
            .with_context(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, &path)
            .with_context(|| format!("renaming {} to {}", temporary.display(), path.display()))?;
        Ok(path)
    }
}

impl Drop for ManifestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One endpoint of an EndpointSlice, and whether it is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    /// Its address (a pod IP).
    pub addr: IpAddr,
    /// `conditions.ready`.
    pub ready: bool,
}

impl SliceEndpoint {
    /// A ready endpoint.
    pub fn ready(addr: IpAddr) -> Self {
        Self { addr, ready: true }
    }

    /// An endpoint that is not ready (and not serving).
    pub fn not_ready(addr: IpAddr) -> Self {
        Self { addr, ready: false }
    }
}

/// The YAML of a Service `namespace/name` with one port `port` (named
/// `http`) whose `targetPort` is `target_port`, and of its EndpointSlice
/// with `endpoints` on `target_port` (none: a slice without endpoints). The
/// address type follows the first endpoint (IPv4 without any).
pub fn service_yaml(
    namespace: &str,
    name: &str,
    port: u16,
    target_port: u16,
    endpoints: &[SliceEndpoint],
) -> String {
    let address_type = match endpoints.first() {
        Some(endpoint) if endpoint.addr.is_ipv6() => "IPv6",
        _ => "IPv4",
    };
    let mut yaml = format!(
        "\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports:
  - {{name: http, port: {port}, targetPort: {target_port}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-lab
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: {address_type}
ports:
- {{name: http, port: {target_port}, protocol: TCP}}
endpoints:"
    );
    if endpoints.is_empty() {
        yaml.push_str(" []\n");
    }
    yaml.push('\n');
    for endpoint in endpoints {
        let _ = writeln!(
            yaml,
            "- {{addresses: [\"{}\"], conditions: {{ready: {}}}}}",
            endpoint.addr, endpoint.ready
        );
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_yaml_names_its_endpoints() {
        let yaml = service_yaml(
            "default",
            "web",
            80,
            8080,
            &[
                SliceEndpoint::ready("198.19.1.1".parse().unwrap()),
                SliceEndpoint::not_ready("198.19.1.2".parse().unwrap()),
            ],
        );
        assert!(yaml.contains("metadata: {name: web, namespace: default}"));
        assert!(yaml.contains("- {name: http, port: 80, targetPort: 8080}"));
        assert!(yaml.contains("kubernetes.io/service-name: web"));
        assert!(yaml.contains("addressType: IPv4"));
        assert!(yaml.contains("- {addresses: [\"198.19.1.1\"], conditions: {ready: true}}"));
        assert!(yaml.contains("- {addresses: [\"198.19.1.2\"], conditions: {ready: false}}"));
        assert!(service_yaml("default", "none", 80, 80, &[]).contains("endpoints: []"));
    }

    #[test]
    fn manifest_files_are_replaced_whole_and_removed_with_the_directory() {
        let dir = ManifestDir::new().unwrap();
        let path = dir.write("routes.yaml", "a: 1\n").unwrap();
        dir.write("routes.yaml", "b: 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b: 2\n");
        let entries = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(entries, 1, "no temporary file is left");
        let root = dir.path().to_path_buf();
        drop(dir);
        assert!(!root.exists());
    }
}
