//! The API server's audit log (JSON lines at the Metadata level, see
//! `TestClusterBuilder::audit_users`), counted: which requests a client
//! made, by verb and resource, in the phases of a run. A phase is the part
//! of the log between two [`AuditLog::mark`]s; a request counts in the
//! phase where its first line is (a watch logs a line when it starts and
//! one when it ends, under the same `auditID`).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use anyhow::{Context, Result};
use serde_json::Value;

/// The kinds a controller watches: a `get` of one of them, or a `list`
/// after the first, means it reads objects one by one or relists.
pub const WATCHED_RESOURCES: [&str; 7] = [
    "ingresses",
    "ingressclasses",
    "services",
    "endpointslices",
    "secrets",
    "configmaps",
    "namespaces",
];

/// `verb resource[/subresource]` (or the path of a non-resource request).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestKind {
    /// `get`, `list`, `watch`, `create`, `patch`, ...
    pub verb: String,
    /// `ingresses/status`, `leases`, `/api` ...
    pub resource: String,
}

/// The requests of one phase.
#[derive(Debug, Clone, Default)]
pub struct PhaseCounts {
    /// How many of each kind.
    pub requests: BTreeMap<RequestKind, u64>,
    /// How many were answered with a status of 400 or more.
    pub failed: u64,
    /// The objects (`namespace/name`) each kind of request named.
    pub objects: BTreeMap<RequestKind, BTreeSet<String>>,
}

impl PhaseCounts {
    /// The number of requests `verb resource` (no subresource).
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.requests
            .iter()
            .filter(|(kind, _)| kind.verb == verb && kind.resource == resource)
            .map(|(_, n)| n)
            .sum()
    }

    /// The objects that requests `verb resource` named.
    pub fn objects(&self, verb: &str, resource: &str) -> BTreeSet<String> {
        self.objects
            .iter()
            .filter(|(kind, _)| kind.verb == verb && kind.resource == resource)
            .flat_map(|(_, names)| names.iter().cloned())
            .collect()
    }

    /// Every request in the phase.
    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }

    /// The `get`s of single watched objects and the `list`s of watched
    /// kinds: none are expected once the watches have listed.
    pub fn reads_besides_watches(&self) -> u64 {
        WATCHED_RESOURCES
            .iter()
            .map(|resource| self.count("get", resource) + self.count("list", resource))
            .sum()
    }
}

/// An audit log file being written by the API server.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// The log at `path` (which may not exist yet).
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Where the log ends now: what follows belongs to the next phase.
    pub fn mark(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |meta| meta.len())
    }

    /// The requests logged from `offset` on (complete lines only; a watch
    /// that started before counts again when it ends), and the offset
    /// after the last complete line: for polling a growing log.
    pub fn count_from(&self, offset: u64) -> Result<(PhaseCounts, u64)> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok((PhaseCounts::default(), offset));
            }
            Err(error) => {
                return Err(error).with_context(|| format!("opening {}", self.path.display()));
            }
        };
        file.seek(SeekFrom::Start(offset))?;
        let mut tail = String::new();
        file.read_to_string(&mut tail)
            .with_context(|| format!("reading {}", self.path.display()))?;
        let complete = tail.rfind('\n').map_or(0, |end| end + 1);
        let mut phases = count_phases(&tail[..complete], &[])?;
        Ok((phases.remove(0), offset + complete as u64))
    }

    /// The requests of each phase: before `marks[0]`, between consecutive
    /// marks, and after the last (`marks.len() + 1` phases).
    pub fn count(&self, marks: &[u64]) -> Result<Vec<PhaseCounts>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", self.path.display()));
            }
        };
        count_phases(&text, marks)
    }
}

/// See [`AuditLog::count`]; a last line without its newline (being
/// written) is left for later.
fn count_phases(text: &str, marks: &[u64]) -> Result<Vec<PhaseCounts>> {
    let mut phases = vec![PhaseCounts::default(); marks.len() + 1];
    let mut seen = BTreeSet::new();
    let mut offset = 0u64;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len() as u64;
        if !line.ends_with('\n') || line.trim().is_empty() {
            continue;
        }
        let event: Value = serde_json::from_str(line)
            .with_context(|| format!("an audit log line that is no JSON: {line}"))?;
        let id = event["auditID"].as_str().unwrap_or_default().to_owned();
        if !seen.insert(id) {
            continue;
        }
        let phase = marks.iter().filter(|&&mark| start >= mark).count();
        let counts = &mut phases[phase];
        let kind = kind_of(&event);
        let object = &event["objectRef"];
        if let Some(name) = object["name"].as_str() {
            let namespace = object["namespace"].as_str().unwrap_or_default();
            counts
                .objects
                .entry(kind.clone())
                .or_default()
                .insert(format!("{namespace}/{name}"));
        }
        *counts.requests.entry(kind).or_default() += 1;
        if event["responseStatus"]["code"]
            .as_u64()
            .is_some_and(|code| code >= 400)
        {
            counts.failed += 1;
        }
    }
    Ok(phases)
}

/// The kind of request one audit event records.
fn kind_of(event: &Value) -> RequestKind {
    let object = &event["objectRef"];
    let resource = match (object["resource"].as_str(), object["subresource"].as_str()) {
        (Some(resource), Some(sub)) => format!("{resource}/{sub}"),
        (Some(resource), None) => resource.to_owned(),
        _ => event["requestURI"]
            .as_str()
            .unwrap_or("?")
            .split('?')
            .next()
            .unwrap_or("?")
            .to_owned(),
    };
    RequestKind {
        verb: event["verb"].as_str().unwrap_or("?").to_owned(),
        resource,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"{"kind":"Event","auditID":"a","stage":"ResponseComplete","requestURI":"/apis/networking.k8s.io/v1/ingresses?limit=500","verb":"list","objectRef":{"resource":"ingresses","apiGroup":"networking.k8s.io"},"responseStatus":{"code":200}}
{"kind":"Event","auditID":"b","stage":"ResponseStarted","requestURI":"/apis/networking.k8s.io/v1/ingresses?watch=true","verb":"watch","objectRef":{"resource":"ingresses"},"responseStatus":{"code":200}}
{"kind":"Event","auditID":"c","stage":"ResponseComplete","requestURI":"/apis/networking.k8s.io/v1/namespaces/bench/ingresses/i/status","verb":"patch","objectRef":{"resource":"ingresses","namespace":"bench","name":"i","subresource":"status"},"responseStatus":{"code":200}}
{"kind":"Event","auditID":"b","stage":"ResponseComplete","requestURI":"/apis/networking.k8s.io/v1/ingresses?watch=true","verb":"watch","objectRef":{"resource":"ingresses"},"responseStatus":{"code":200}}
{"kind":"Event","auditID":"d","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/bench/services/s","verb":"get","objectRef":{"resource":"services","namespace":"bench","name":"s"},"responseStatus":{"code":404}}
{"kind":"Event","auditID":"e","stage":"ResponseComplete","requestURI":"/version","verb":"get","responseStatus":{"code":200}}
{"kind":"Event","auditID":"f"#;

    fn kind(verb: &str, resource: &str) -> RequestKind {
        RequestKind {
            verb: verb.into(),
            resource: resource.into(),
        }
    }

    #[test]
    fn requests_count_once_in_the_phase_of_their_first_line() {
        let second = LOG.find(r#"{"kind":"Event","auditID":"c""#).unwrap() as u64;
        let phases = count_phases(LOG, &[second]).unwrap();
        assert_eq!(phases.len(), 2);
        assert_eq!(phases[0].total(), 2);
        assert_eq!(phases[0].requests[&kind("list", "ingresses")], 1);
        assert_eq!(phases[0].requests[&kind("watch", "ingresses")], 1);
        assert_eq!(phases[0].reads_besides_watches(), 1);
        // The watch's second line and the unfinished last line count nothing.
        assert_eq!(phases[1].total(), 3);
        assert_eq!(phases[1].requests[&kind("patch", "ingresses/status")], 1);
        assert_eq!(
            phases[1].objects("patch", "ingresses/status"),
            BTreeSet::from(["bench/i".to_owned()])
        );
        assert!(phases[0].objects("list", "ingresses").is_empty());
        assert_eq!(phases[1].requests[&kind("get", "/version")], 1);
        assert_eq!(phases[1].count("get", "services"), 1);
        assert_eq!(phases[1].reads_besides_watches(), 1);
        assert_eq!(phases[1].failed, 1);
    }

    #[test]
    fn a_growing_log_is_counted_from_an_offset() {
        let dir = std::env::temp_dir().join(format!("audit-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        std::fs::write(&path, LOG).unwrap();
        let log = AuditLog::new(path);
        let (first, end) = log.count_from(0).unwrap();
        assert_eq!(first.total(), 5);
        assert_eq!(end as usize, LOG.rfind('\n').unwrap() + 1);
        let (rest, same) = log.count_from(end).unwrap();
        assert_eq!((rest.total(), same), (0, end));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_log_has_no_requests() {
        let log = AuditLog::new(PathBuf::from("/nonexistent/audit.log"));
        assert_eq!(log.mark(), 0);
        assert_eq!(log.count(&[]).unwrap()[0].total(), 0);
    }
}
