//! The names the lab gives what it creates, and the reaping of what earlier,
//! killed runs left behind. Every name carries the creating process's pid,
//! so a leftover is recognised by its pid being gone.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Once,
};

use serde_json::Value;

use crate::{
    bpffs::{BPFFS_MOUNT, pin_dir_locked, remove_pin_dir},
    netns::ip_in,
    process::{pid_alive, run_ok, unique_suffix},
};

/// Prefix of every namespace the lab creates: `xlab-<prefix>-<pid>-<n>`.
pub(crate) const NETNS_PREFIX: &str = "xlab-";
/// Prefix of every veth name the lab creates: `xv<pid hex>-<n hex>{a,b}`.
pub(crate) const VETH_PREFIX: &str = "xv";
/// Prefix of every pin directory (under /sys/fs/bpf) and log file (in the
/// temporary directory) the lab creates: `xdp-ingress-lab-<pid>-<n>...`.
pub(crate) const FILE_PREFIX: &str = "xdp-ingress-lab-";

/// A fresh log file path for a lab process: `$TMPDIR/xdp-ingress-lab-<pid>-<n>-<what>.log`.
pub(crate) fn log_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{FILE_PREFIX}{}-{what}.log", unique_suffix()))
}

/// Removes what earlier, killed runs left behind: namespaces, root-side
/// veths, logs, manifest directories and pin directories named by the lab
/// whose process is gone.
/// Pin directories still locked by a daemon and namespaces with processes in
/// them are left alone. Runs once per process.
pub(crate) fn reap_stale() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        reap_namespaces();
        reap_veths();
        // Logs, and directories of manifests (see `ManifestDir`).
        reap_files(&std::env::temp_dir(), |path| {
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(path);
            } else {
                let _ = std::fs::remove_file(path);
            }
        });
        reap_files(Path::new(BPFFS_MOUNT), |path| {
            if !pin_dir_locked(path) {
                remove_pin_dir(path);
            }
        });
    });
}

/// True when `rest` starts with `<pid>-` (in `radix`) of a process that is gone.
fn dead(rest: &str, radix: u32) -> bool {
    rest.split_once('-')
        .and_then(|(pid, _)| u32::from_str_radix(pid, radix).ok())
        .is_some_and(|pid| pid != std::process::id() && !pid_alive(pid))
}

fn reap_namespaces() {
    let Ok(list) = run_ok(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        // xlab-<prefix>-<pid>-<n>: the second to last part is the pid.
        let parts: Vec<&str> = rest.rsplitn(3, '-').collect();
        let stale = parts.len() == 3
            && parts[1]
                .parse::<u32>()
                .is_ok_and(|pid| pid != std::process::id() && !pid_alive(pid));
        let idle = || {
            run_ok(Command::new("ip").args(["netns", "pids", name]))
                .is_ok_and(|pids| pids.trim().is_empty())
        };
        if stale && idle() {
            let _ = run_ok(Command::new("ip").args(["netns", "del", name]));
        }
    }
}

fn reap_veths() {
    let Ok(json) = ip_in(None, &["-j", "link", "show", "type", "veth"]) else {
        return;
    };
    let Ok(Value::Array(links)) = serde_json::from_str::<Value>(&json) else {
        return;
    };
    for link in links {
        if let Some(name) = link["ifname"].as_str()
            && let Some(rest) = name.strip_prefix(VETH_PREFIX)
            && dead(rest, 16)
        {
            let _ = ip_in(None, &["link", "del", name]);
        }
    }
}

/// Calls `remove` on every entry of `dir` named by the lab for a dead process.
fn reap_files(dir: &Path, remove: impl Fn(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix(FILE_PREFIX)
            && dead(rest, 10)
        {
            remove(&entry.path());
        }
    }
}
