//! Scratch directories for what lab processes read and write (a proxy's
//! configuration, a client's scripts): named like the lab's other files, so
//! a killed run's directory is reaped by the next run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{
    process::unique_suffix,
    reap::{FILE_PREFIX, reap_stale},
};

/// A temporary directory, removed with its contents on drop:
/// `$TMPDIR/xdp-ingress-lab-<pid>-<n>-<what>`.
#[derive(Debug)]
pub struct ScratchDir {
    dir: PathBuf,
}

impl ScratchDir {
    /// Creates the directory, empty; `what` names its use (`nginx`).
    pub fn new(what: &str) -> Result<Self> {
        reap_stale();
        let dir = std::env::temp_dir().join(format!("{FILE_PREFIX}{}-{what}", unique_suffix()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `name` inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `contents` (text or bytes) to `name` (relative, parent
    /// directories created) atomically: into a hidden file next to it, then
    /// renamed over it. Returns the file's path.
    pub fn write(&self, name: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<PathBuf> {
        let path = self.dir.join(name);
        let parent = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temporary = parent.join(format!(".{file_name}.{}.tmp", unique_suffix()));
        std::fs::write(&temporary, contents)
            .with_context(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, &path)
            .with_context(|| format!("renaming {} to {}", temporary.display(), path.display()))?;
        Ok(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_written_whole_and_removed_with_the_directory() {
        let dir = ScratchDir::new("test").unwrap();
        let path = dir.write("conf.d/a.conf", "one\n").unwrap();
        dir.write("conf.d/a.conf", "two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(std::fs::read_dir(dir.join("conf.d")).unwrap().count(), 1);
        let root = dir.path().to_path_buf();
        drop(dir);
        assert!(!root.exists());
    }
}
