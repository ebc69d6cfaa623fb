//! The BPF filesystem under the pin directory: detect it, mount it when a
//! node has none (as Cilium's agent does), and lock the pin directory so two
//! daemons never share (and then remove) each other's pins.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
};

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Where the daemon mounts bpffs when the pin directory is not on one.
pub const DEFAULT_BPFFS_MOUNT: &str = "/sys/fs/bpf";

/// Problems with the BPF filesystem or the pin directory.
#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    /// `statfs` or `mount` failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path it was done on.
        path: PathBuf,
        /// The error from the kernel.
        source: io::Error,
    },
    /// The pin directory is not under the mount point we would create.
    #[error(
        "{dir} is not on a BPF filesystem, and it is not under {DEFAULT_BPFFS_MOUNT} where xdp-ingress would mount one: mount bpffs there yourself (mount -t bpf bpf DIR) or choose --bpffs under {DEFAULT_BPFFS_MOUNT}"
    )]
    NotUnderDefaultMount {
        /// The requested pin directory.
        dir: PathBuf,
    },
    /// Another daemon holds the pin directory.
    #[error(
        "another xdp-ingress is running with --bpffs {dir} (it holds the lock on that directory): stop it first, or give this one another --bpffs and other interfaces"
    )]
    Locked {
        /// The pin directory.
        dir: PathBuf,
    },
}

/// True when `path` lies on a BPF filesystem.
pub fn is_bpffs(path: &Path) -> Result<bool, BpffsError> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| BpffsError::Io {
        what: "statfs",
        path: path.into(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: `statfs` writes into the zeroed struct we own.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(BpffsError::Io {
            what: "statfs",
            path: path.into(),
            source: io::Error::last_os_error(),
        });
    }
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64, other widths elsewhere.
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

/// Makes sure `pin_dir` exists on a BPF filesystem, mounting bpffs at
/// [`DEFAULT_BPFFS_MOUNT`] when needed. Returns true when it mounted one.
pub fn ensure_pin_dir(pin_dir: &Path) -> Result<bool, BpffsError> {
    let mut mounted = false;
    let existing = pin_dir
        .ancestors()
        .find(|dir| dir.exists())
        .unwrap_or(Path::new("/"));
    if !is_bpffs(existing)? {
        let mount_point = Path::new(DEFAULT_BPFFS_MOUNT);
        if !pin_dir.starts_with(mount_point) {
            return Err(BpffsError::NotUnderDefaultMount {
                dir: pin_dir.into(),
            });
        }
        if !(mount_point.exists() && is_bpffs(mount_point)?) {
            mount_bpffs(mount_point)?;
            mounted = true;
        }
    }
    std::fs::create_dir_all(pin_dir).map_err(|source| BpffsError::Io {
        what: "create directory",
        path: pin_dir.into(),
        source,
    })?;
    Ok(mounted)
}

/// Mounts a BPF filesystem at `mount_point`, creating the directory.
pub fn mount_bpffs(mount_point: &Path) -> Result<(), BpffsError> {
    std::fs::create_dir_all(mount_point).map_err(|source| BpffsError::Io {
        what: "create directory",
        path: mount_point.into(),
        source,
    })?;
    let target = CString::new(mount_point.as_os_str().as_bytes()).expect("no NUL in path");
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
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
        return Err(BpffsError::Io {
            what: "mount bpffs at",
            path: mount_point.into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// An exclusive lock on the pin directory, held for the daemon's lifetime.
#[derive(Debug)]
pub struct PinDirLock {
    _dir: File,
}

impl PinDirLock {
    /// Takes the lock without waiting, or says who holds it.
    pub fn acquire(pin_dir: &Path) -> Result<Self, BpffsError> {
        let dir = File::open(pin_dir).map_err(|source| BpffsError::Io {
            what: "open",
            path: pin_dir.into(),
            source,
        })?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(BpffsError::Locked {
                    dir: pin_dir.into(),
                });
            }
            return Err(BpffsError::Io {
                what: "lock",
                path: pin_dir.into(),
                source: error,
            });
        }
        Ok(Self { _dir: dir })
    }
}
