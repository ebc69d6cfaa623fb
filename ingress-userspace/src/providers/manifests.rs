//! The manifests provider (`--manifests`): Kubernetes objects from YAML or
//! JSON files, applied at start and again whenever the files change. A
//! broken file is reported with its file and line, and the last good
//! configuration keeps serving.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use ingress_model::{ClusterObjects, KubeObject, ManifestError, ObjectRef, parse_manifests};
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
    ParsedFiles::default().load(paths).cloned()
}

/// The objects of each manifest file as last parsed, and the snapshot they
/// make, so that a reload parses only the files whose text changed and
/// touches only their objects in the snapshot (at 10,000 Ingresses,
/// parsing everything, or even copying every object into a new snapshot,
/// is most of a reload; a change usually touches one file).
#[derive(Debug, Default)]
pub struct ParsedFiles {
    files: HashMap<String, ParsedFile>,
    snapshot: ClusterObjects,
    /// The file that defines each object of the snapshot. Kept only while
    /// no object is defined twice (`incremental`); otherwise every reload
    /// rebuilds the snapshot, which settles duplicates (the later wins).
    owners: HashMap<ObjectRef, String>,
    incremental: bool,
}

#[derive(Debug)]
struct ParsedFile {
    text_hash: u64,
    objects: Arc<Vec<KubeObject>>,
}

impl ParsedFiles {
    /// Reads every manifest under `paths`, parses those that changed since
    /// the last call, and returns the snapshot of all of them. On an error
    /// nothing changes, so the failed file is parsed again next time.
    pub fn load(&mut self, paths: &[PathBuf]) -> Result<&ClusterObjects, LoadError> {
        let sources = read_sources(paths)?;
        let mut current = HashMap::with_capacity(sources.len());
        let mut changed = Vec::new();
        for source in sources {
            let mut hasher = DefaultHasher::new();
            source.text.hash(&mut hasher);
            let text_hash = hasher.finish();
            let objects = match self.files.get(&source.name) {
                Some(parsed) if parsed.text_hash == text_hash => parsed.objects.clone(),
                _ => {
                    changed.push(source.name.clone());
                    Arc::new(parse_file(&source.name, &source.text)?)
                }
            };
            current.insert(source.name, ParsedFile { text_hash, objects });
        }
        let removed: Vec<String> = self
            .files
            .keys()
            .filter(|name| !current.contains_key(*name))
            .cloned()
            .collect();
        let previous = std::mem::replace(&mut self.files, current);
        if !(self.incremental && self.update(&previous, &changed, &removed)) {
            self.rebuild();
        }
        Ok(&self.snapshot)
    }

    /// Takes the objects of `changed` and `removed` files out of the
    /// snapshot and puts the changed files' new objects in. False (the
    /// snapshot then needs a rebuild) when an object turns out to be
    /// defined twice.
    fn update(
        &mut self,
        previous: &HashMap<String, ParsedFile>,
        changed: &[String],
        removed: &[String],
    ) -> bool {
        for name in changed.iter().chain(removed) {
            for object in previous
                .get(name)
                .map(|f| f.objects.as_slice())
                .unwrap_or_default()
            {
                if let Some(object_ref) = object.object_ref() {
                    self.snapshot.remove(&object_ref);
                    self.owners.remove(&object_ref);
                }
            }
        }
        for name in changed {
            for object in self.files[name].objects.iter() {
                let Some(object_ref) = object.object_ref() else {
                    continue;
                };
                if self.owners.contains_key(&object_ref) {
                    return false;
                }
                self.owners.insert(object_ref, name.clone());
                self.snapshot.insert(object.clone());
            }
        }
        true
    }

    /// The snapshot from every file, in file name order (the later of two
    /// definitions wins, and is warned about).
    fn rebuild(&mut self) {
        let mut names: Vec<&String> = self.files.keys().collect();
        names.sort();
        let objects = names
            .iter()
            .flat_map(|name| self.files[*name].objects.iter().cloned());
        let (snapshot, duplicates) = ClusterObjects::from_objects(objects);
        for problem in &duplicates {
            warn!("{problem}");
        }
        self.snapshot = snapshot;
        self.owners.clear();
        self.incremental = duplicates.is_empty();
        if self.incremental {
            for name in names {
                for object in self.files[name].objects.iter() {
                    if let Some(object_ref) = object.object_ref() {
                        self.owners.insert(object_ref, name.clone());
                    }
                }
            }
        }
    }
}

fn parse_file(name: &str, text: &str) -> Result<Vec<KubeObject>, ManifestError> {
    let mut objects = parse_manifests(name, text)?;
    objects.retain(|object| match object {
        KubeObject::Skipped(skipped) => {
            debug!(file = %name, "skipped: {skipped:?}");
            false
        }
        _ => true,
    });
    Ok(objects)
}

/// Loads `paths` (parsing only changed files) and applies them; on failure
/// logs the error and keeps the configuration that is serving. Returns what
/// was applied, if anything.
pub fn reload(
    paths: &[PathBuf],
    parsed: &mut ParsedFiles,
    applier: &ConfigApplier,
) -> Option<ApplyOutcome> {
    match parsed.load(paths) {
        Ok(objects) => Some(applier.apply(objects)),
        Err(error) => {
            error!("manifests not applied, the previous configuration keeps serving: {error}");
            None
        }
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
    let mut parsed = ParsedFiles::default();
    reload(&paths, &mut parsed, &applier);
    Ok(tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                change = changes.recv() => {
                    if change.is_none() {
                        break;
                    }
                    info!("manifests changed, reloading");
                    reload(&paths, &mut parsed, &applier);
                }
                () = crate::shutdown::stopped(&mut shutdown) => break,
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {ports: [{port: 80}]}\n";
    const OTHER: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: default}\nspec: {ports: [{port: 81}]}\n";

    #[test]
    fn only_changed_files_are_parsed_again_and_errors_keep_nothing() {
        let dir = std::env::temp_dir().join(format!("xdpi-parsed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), SERVICE).unwrap();
        std::fs::write(dir.join("b.yaml"), OTHER).unwrap();
        let paths = vec![dir.clone()];
        let mut parsed = ParsedFiles::default();
        assert_eq!(parsed.load(&paths).unwrap().services.len(), 2);
        let a_before = parsed.files[&dir.join("a.yaml").display().to_string()]
            .objects
            .clone();

        std::fs::write(dir.join("b.yaml"), "kind: [broken").unwrap();
        let error = parsed.load(&paths).unwrap_err();
        assert!(error.to_string().contains("b.yaml"), "{error}");

        std::fs::write(
            dir.join("b.yaml"),
            format!("{OTHER}---\n{}", SERVICE.replace("web", "third")),
        )
        .unwrap();
        let snapshot = parsed.load(&paths).unwrap();
        assert_eq!(snapshot.services.len(), 3);
        // a.yaml did not change: its parsed objects were reused, not parsed again.
        let a_after = &parsed.files[&dir.join("a.yaml").display().to_string()].objects;
        assert!(Arc::ptr_eq(&a_before, a_after));

        std::fs::remove_file(dir.join("b.yaml")).unwrap();
        assert_eq!(parsed.load(&paths).unwrap().services.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn duplicates_across_files_settle_like_a_full_load_and_incremental_resumes() {
        let dir = std::env::temp_dir().join(format!("xdpi-dups-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = |snapshot: &ClusterObjects, name: &str| {
            snapshot.services[&ingress_model::ObjectKey::new("default", name)]
                .spec
                .as_ref()
                .unwrap()
                .ports
                .as_ref()
                .unwrap()[0]
                .port
        };
        std::fs::write(dir.join("a.yaml"), SERVICE).unwrap();
        std::fs::write(dir.join("b.yaml"), OTHER).unwrap();
        let paths = vec![dir.clone()];
        let mut parsed = ParsedFiles::default();
        parsed.load(&paths).unwrap();
        assert!(parsed.incremental);
        // b.yaml now also defines web (port 82): the later file wins.
        std::fs::write(
            dir.join("b.yaml"),
            format!("{OTHER}---\n{}", SERVICE.replace("port: 80", "port: 82")),
        )
        .unwrap();
        let snapshot = parsed.load(&paths).unwrap();
        assert_eq!(port(snapshot, "web"), 82);
        assert_eq!(port(snapshot, "other"), 81);
        assert!(!parsed.incremental);
        // The duplicate goes: a.yaml's web is back, and reloads are
        // incremental again.
        std::fs::write(dir.join("b.yaml"), OTHER).unwrap();
        assert_eq!(port(parsed.load(&paths).unwrap(), "web"), 80);
        assert!(parsed.incremental);
        std::fs::write(dir.join("c.yaml"), SERVICE.replace("web", "third")).unwrap();
        let snapshot = parsed.load(&paths).unwrap().clone();
        assert_eq!(snapshot.services.len(), 3);
        assert_eq!(snapshot, load(&paths).unwrap(), "the same as a full load");
        std::fs::remove_file(dir.join("a.yaml")).unwrap();
        let snapshot = parsed.load(&paths).unwrap().clone();
        assert_eq!(snapshot, load(&paths).unwrap());
        assert!(
            !snapshot
                .services
                .contains_key(&ingress_model::ObjectKey::new("default", "web"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
