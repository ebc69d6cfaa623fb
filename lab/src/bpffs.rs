//! The BPF filesystem: mounting it, the daemon's pin directories, and which
//! programs a process holds.

use std::{
    ffi::CString,
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::{process::unique_suffix, reap::FILE_PREFIX};

/// Where bpffs is mounted in the root mount namespace.
pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Makes sure bpffs is mounted at /sys/fs/bpf in the root mount namespace
/// (the daemon would mount it too; the lab reads the pins from there).
pub fn ensure_bpffs() -> Result<()> {
    let path = Path::new(BPFFS_MOUNT);
    if path.exists() && is_bpffs(path)? {
        return Ok(());
    }
    std::fs::create_dir_all(path).with_context(|| format!("creating {BPFFS_MOUNT}"))?;
    let target = CString::new(BPFFS_MOUNT).expect("no NUL");
    // SAFETY: valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mount -t bpf bpf {BPFFS_MOUNT}"));
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> Result<bool> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs {}", path.display()));
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets.
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

/// True when a daemon holds the lock on `dir`.
pub(crate) fn pin_dir_locked(dir: &Path) -> bool {
    let Ok(file) = File::open(dir) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; dropping the file releases it.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
}

/// Removes the pins in `dir` and then `dir` (bpffs has no recursive remove).
pub fn remove_pin_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// A unique pin directory for one daemon: `/sys/fs/bpf/xdp-ingress-lab-<pid>-<n>`.
pub fn unique_pin_dir() -> PathBuf {
    Path::new(BPFFS_MOUNT).join(format!("{FILE_PREFIX}{}", unique_suffix()))
}

/// A unique pin directory path (see [`unique_pin_dir`]) for a daemon the
/// caller runs by hand; whatever is left in it is removed on drop.
#[derive(Debug)]
pub struct PinDir(PathBuf);

impl PinDir {
    /// A fresh, unique path (not created).
    pub fn new() -> Self {
        Self(unique_pin_dir())
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as a string, for a command line.
    pub fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.0.exists() {
            remove_pin_dir(&self.0);
        }
    }
}

/// The ids of the BPF programs `pid` holds descriptors of (programs and links).
pub fn prog_ids_held_by(pid: u32) -> Vec<u64> {
    let mut ids = Vec::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for entry in entries.flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        ids.extend(
            info.lines()
                .filter_map(|line| line.strip_prefix("prog_id:"))
                .filter_map(|id| id.trim().parse::<u64>().ok()),
        );
    }
    ids
}
