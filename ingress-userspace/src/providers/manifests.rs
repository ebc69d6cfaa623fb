//! The manifests provider (`--manifests`): Kubernetes objects from YAML or
//! JSON files, applied at start and again whenever the files change. A
//! broken file is reported with its file and line, and the last good
//! configuration keeps serving.

use std::{
    collections::{HashMap, HashSet},
    hash::BuildHasher,
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

/// What each manifest file defined when last parsed, and the snapshot they
/// make, so that a reload parses only the files whose text changed and
/// touches only their objects in the snapshot (at 10,000 Ingresses,
/// parsing everything, or even copying every object into a new snapshot,
/// is most of a reload; a change usually touches one file). Only the
/// snapshot holds the objects; files keep the references of theirs.
#[derive(Debug, Default)]
pub struct ParsedFiles {
    files: HashMap<String, ParsedFile>,
    snapshot: ClusterObjects,
    /// Every object the files define (checking a re-parsed file for
    /// duplicates must not hash all 30,000 references at each reload).
    defined: HashSet<ObjectRef, foldhash::fast::RandomState>,
    /// Whether every object is defined once: then a reload updates the
    /// snapshot in place. Otherwise each reload parses every file again
    /// and rebuilds it, which settles duplicates (the later wins).
    incremental: bool,
    /// Files parsed so far (each parse of each file counts).
    parses: u64,
}

#[derive(Debug)]
struct ParsedFile {
    text_hash: u64,
    /// The objects the file defines, in order.
    objects: Vec<ObjectRef>,
}

impl ParsedFiles {
    /// Reads every manifest under `paths`, parses those that changed since
    /// the last call, and returns the snapshot of all of them. On an error
    /// nothing changes, so the failed file is parsed again next time.
    pub fn load(&mut self, paths: &[PathBuf]) -> Result<&ClusterObjects, LoadError> {
        let sources = read_sources(paths)?;
        let hashes: Vec<u64> = sources.iter().map(|s| text_hash(&s.text)).collect();
        let stale: Vec<bool> = sources
            .iter()
            .zip(&hashes)
            .map(|(source, hash)| {
                !self.incremental
                    || self
                        .files
                        .get(&source.name)
                        .is_none_or(|file| file.text_hash != *hash)
            })
            .collect();
        let mut parsed = HashMap::new();
        for (source, _) in sources.iter().zip(&stale).filter(|(_, stale)| **stale) {
            parsed.insert(source.name.clone(), self.parse(&source.name, &source.text)?);
        }
        let current: HashMap<&str, u64> = sources
            .iter()
            .zip(&hashes)
            .map(|(source, hash)| (source.name.as_str(), *hash))
            .collect();
        if self.incremental {
            let gone: Vec<String> = self
                .files
                .keys()
                .filter(|name| !current.contains_key(name.as_str()))
                .cloned()
                .collect();
            if self.update(&mut parsed, &gone, &current) {
                return Ok(&self.snapshot);
            }
            // An object defined twice: every file is needed again.
            for source in &sources {
                if !parsed.contains_key(&source.name) {
                    parsed.insert(source.name.clone(), self.parse(&source.name, &source.text)?);
                }
            }
        }
        self.rebuild(parsed, &current);
        Ok(&self.snapshot)
    }

    /// Takes the objects of the re-parsed and `gone` files out of the
    /// snapshot and moves the re-parsed files' objects in; an object a
    /// re-parsed file still defines unchanged keeps its version in the
    /// snapshot (so nothing built from it is built again). False when an
    /// object turns out to be defined twice (the snapshot then needs a
    /// rebuild).
    fn update(
        &mut self,
        parsed: &mut HashMap<String, Vec<KubeObject>>,
        gone: &[String],
        current: &HashMap<&str, u64>,
    ) -> bool {
        for name in parsed.keys().chain(gone) {
            if let Some(file) = self.files.remove(name) {
                let still: HashSet<ObjectRef> = parsed
                    .get(name)
                    .into_iter()
                    .flatten()
                    .filter_map(KubeObject::object_ref)
                    .collect();
                for object_ref in &file.objects {
                    self.defined.remove(object_ref);
                    if !still.contains(object_ref) {
                        self.snapshot.remove(object_ref);
                    }
                }
            }
        }
        let mut added: HashSet<ObjectRef> = HashSet::new();
        for objects in parsed.values() {
            for object_ref in objects.iter().filter_map(KubeObject::object_ref) {
                if self.defined.contains(&object_ref) || !added.insert(object_ref) {
                    self.incremental = false;
                    return false;
                }
            }
        }
        self.defined.extend(added);
        for (name, objects) in parsed.drain() {
            let refs = objects.iter().filter_map(KubeObject::object_ref).collect();
            for object in objects {
                self.snapshot.insert(object);
            }
            let text_hash = current[name.as_str()];
            self.files.insert(
                name,
                ParsedFile {
                    text_hash,
                    objects: refs,
                },
            );
        }
        true
    }

    /// The snapshot from every file, in file name order (the later of two
    /// definitions wins, and is warned about).
    fn rebuild(&mut self, parsed: HashMap<String, Vec<KubeObject>>, current: &HashMap<&str, u64>) {
        let mut files: Vec<(String, Vec<KubeObject>)> = parsed.into_iter().collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        self.files = files
            .iter()
            .map(|(name, objects)| {
                let file = ParsedFile {
                    text_hash: current[name.as_str()],
                    objects: objects.iter().filter_map(KubeObject::object_ref).collect(),
                };
                (name.clone(), file)
            })
            .collect();
        let (snapshot, duplicates) =
            ClusterObjects::from_objects(files.into_iter().flat_map(|(_, objects)| objects));
        for problem in &duplicates {
            warn!("{problem}");
        }
        self.snapshot = snapshot;
        self.incremental = duplicates.is_empty();
        self.defined = self
            .files
            .values()
            .flat_map(|file| file.objects.iter().cloned())
            .collect();
    }
}

/// A fingerprint of a file's text (foldhash: every file is hashed at
/// every reload, megabytes at 10,000 Ingresses, where SipHash took
/// milliseconds).
fn text_hash(text: &str) -> u64 {
    foldhash::fast::FixedState::with_seed(0).hash_one(text)
}

impl ParsedFiles {
    fn parse(&mut self, name: &str, text: &str) -> Result<Vec<KubeObject>, ManifestError> {
        self.parses += 1;
        parse_file(name, text)
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
        assert_eq!(parsed.parses, 2);

        std::fs::write(dir.join("b.yaml"), "kind: [broken").unwrap();
        let error = parsed.load(&paths).unwrap_err();
        assert!(error.to_string().contains("b.yaml"), "{error}");
        assert_eq!(
            parsed.snapshot.services.len(),
            2,
            "the error kept everything"
        );

        std::fs::write(
            dir.join("b.yaml"),
            format!("{OTHER}---\n{}", SERVICE.replace("web", "third")),
        )
        .unwrap();
        let snapshot = parsed.load(&paths).unwrap();
        assert_eq!(snapshot.services.len(), 3);
        // a.yaml did not change: only b.yaml was parsed (twice: broken, fixed).
        assert_eq!(parsed.parses, 4);

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
