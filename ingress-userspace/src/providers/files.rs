//! Manifest files on disk: which files a `--manifests` path names, reading
//! them, and noticing when they change. Parsing is the routing model's job.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::warn;

/// One manifest file's text, named by its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSource {
    /// The path, as shown in errors.
    pub name: String,
    /// The file's contents.
    pub text: String,
}

/// A `--manifests` path could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {path}: {source}")]
pub struct ReadError {
    /// The file or directory.
    pub path: PathBuf,
    /// The error.
    #[source]
    pub source: io::Error,
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// The files a path names: the file itself, or a directory's `.yaml`,
/// `.yml` and `.json` files (not hidden, sorted, not recursive: Kubernetes
/// ConfigMap volumes keep their real files in hidden `..data` directories).
pub fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let error = |source| ReadError {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(error)?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(error)? {
        let entry = entry.map_err(error)?;
        let file = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && is_manifest(&file) && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every manifest file under `paths`, in order.
pub fn read_sources(paths: &[PathBuf]) -> Result<Vec<ManifestSource>, ReadError> {
    let mut sources = Vec::new();
    for path in paths {
        for file in manifest_files(path)? {
            let text = std::fs::read_to_string(&file).map_err(|source| ReadError {
                path: file.clone(),
                source,
            })?;
            sources.push(ManifestSource {
                name: file.display().to_string(),
                text,
            });
        }
    }
    Ok(sources)
}

/// The `--manifests` paths, split into files and directories, to tell which
/// file-system events concern them (a file's directory also holds others).
#[derive(Debug, Clone)]
struct WatchedPaths {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl WatchedPaths {
    fn new(paths: &[PathBuf]) -> Self {
        let (dirs, files) = paths.iter().cloned().partition(|p| p.is_dir());
        Self { files, dirs }
    }

    /// The directories to watch: each directory, and each file's directory
    /// (editors and the kubelet replace files by renaming).
    fn watch_targets(&self) -> Vec<PathBuf> {
        let mut targets: Vec<PathBuf> = self.dirs.clone();
        for file in &self.files {
            let parent = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            if !targets.contains(&parent) {
                targets.push(parent);
            }
        }
        targets
    }

    /// Whether an event on `path` can change what the manifests say: one of
    /// the files, a manifest in one of the directories, or a hidden entry
    /// there (the `..data` link a ConfigMap volume swaps).
    fn is_relevant(&self, path: &Path) -> bool {
        let same_name = |file: &PathBuf| file.file_name() == path.file_name();
        if self
            .files
            .iter()
            .any(|file| same_name(file) && same_parent(file, path))
        {
            return true;
        }
        self.dirs.iter().any(|dir| {
            path.parent().is_some_and(|parent| same_dir(parent, dir))
                && (is_manifest(path)
                    || path
                        .file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with("..")))
        })
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

fn same_parent(file: &Path, event_path: &Path) -> bool {
    let file_parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    event_path
        .parent()
        .is_some_and(|parent| same_dir(parent, file_parent))
}

/// Watches `paths` (a file's directory, or the directory itself) and sends
/// one `()` per burst of changes, after `debounce` of quiet. Keep the
/// returned watcher alive for as long as changes should be seen.
pub fn watch(
    paths: &[PathBuf],
    debounce: Duration,
) -> Result<(notify::RecommendedWatcher, mpsc::Receiver<()>), notify::Error> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let watched = WatchedPaths::new(paths);
    let targets = watched.watch_targets();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if event.kind.is_access() => {}
            Ok(event) => {
                if event.paths.iter().any(|path| watched.is_relevant(path)) {
                    let _ = raw_tx.send(());
                }
            }
            Err(error) => warn!(%error, "watching manifests"),
        })?;
    for target in targets {
        watcher.watch(&target, RecursiveMode::NonRecursive)?;
    }
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Debounce: wait until the burst (editor save, kubelet swap) is over.
            while let Ok(Some(())) = tokio::time::timeout(debounce, raw_rx.recv()).await {}
            if tx.send(()).await.is_err() {
                break;
            }
        }
    });
    Ok((watcher, rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xdpi-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_directory_yields_its_manifests_sorted() {
        let dir = temp_dir("list");
        for name in ["b.yaml", "a.yml", "c.json", "notes.txt", ".hidden.yaml"] {
            std::fs::write(dir.join(name), "x").unwrap();
        }
        std::fs::create_dir(dir.join("sub.yaml")).unwrap();
        let files = manifest_files(&dir).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a.yml", "b.yaml", "c.json"]);
        let sources = read_sources(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(sources.len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_events_on_our_files_count() {
        let dir = temp_dir("relevant");
        let conf = dir.join("conf");
        std::fs::create_dir(&conf).unwrap();
        let file = dir.join("routes.yaml");
        std::fs::write(&file, "a").unwrap();
        let watched = WatchedPaths::new(&[file.clone(), conf.clone()]);
        assert!(watched.is_relevant(&file));
        assert!(!watched.is_relevant(&dir.join("daemon.log")));
        assert!(!watched.is_relevant(&dir.join("other.yaml")));
        assert!(watched.is_relevant(&conf.join("extra.yml")));
        assert!(watched.is_relevant(&conf.join("..data")));
        assert!(!watched.is_relevant(&conf.join("notes.txt")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_path_is_an_error_naming_it() {
        let error = read_sources(&[PathBuf::from("/nonexistent/xdpi.yaml")]).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/xdpi.yaml"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn writes_next_to_the_file_are_ignored() {
        let dir = temp_dir("ignore");
        let file = dir.join("routes.yaml");
        std::fs::write(&file, "a").unwrap();
        let (_watcher, mut changes) =
            watch(std::slice::from_ref(&file), Duration::from_millis(50)).unwrap();
        std::fs::write(dir.join("daemon.log"), "log line").unwrap();
        let noticed = tokio::time::timeout(Duration::from_millis(400), changes.recv()).await;
        assert!(
            noticed.is_err(),
            "a write to another file was taken for a change"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn changes_are_noticed_once_per_burst() {
        let dir = temp_dir("watch");
        let file = dir.join("routes.yaml");
        std::fs::write(&file, "a").unwrap();
        let (_watcher, mut changes) =
            watch(std::slice::from_ref(&file), Duration::from_millis(200)).unwrap();
        for i in 0..5 {
            std::fs::write(&file, format!("{i}")).unwrap();
        }
        let first = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await;
        assert_eq!(first.unwrap(), Some(()));
        // The burst was folded into that one notification.
        let second = tokio::time::timeout(Duration::from_millis(500), changes.recv()).await;
        assert!(second.is_err(), "a second notification for the same burst");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
