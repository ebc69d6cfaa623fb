//! The container image: `cargo xtask image` builds it (and saves it as an
//! OCI archive); its filesystem, exported from a container created (never
//! started) from it, holds the daemon and nothing else, and that binary runs
//! alone: in a chroot of that filesystem, `xdp-ingress --version` names
//! itself and the workspace version. Nothing else to run means statically
//! linked.
//!
//! Slow when cold: the first run builds the daemon for musl in release
//! (several minutes); later runs reuse that build.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use xdp_ingress_lab::{COMMAND_TIMEOUT, ScratchDir, require_root, run_with_timeout, unique_suffix};

/// A cold `cargo xtask image` (a release build of the daemon and its C
/// dependencies for musl) on two busy cores, with room to spare.
const IMAGE_BUILD_TIMEOUT: Duration = Duration::from_secs(45 * 60);

/// The image as deploy/ names it.
fn image() -> String {
    format!("xdp-ingress:{}", env!("CARGO_PKG_VERSION"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// A podman command on the storage `cargo xtask image` builds into.
fn podman() -> Command {
    let mut podman = Command::new("podman");
    podman.args(["--storage-driver", "vfs"]);
    podman
}

/// Runs `command`, failing with its output unless it succeeds.
fn checked(command: &mut Command, timeout: Duration) -> Result<Output> {
    let line = xdp_ingress_lab::describe(command);
    let output = run_with_timeout(command, timeout)?;
    ensure!(
        output.status.success(),
        "`{line}` failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

/// A container created from the image and never started, removed on drop.
struct CreatedContainer {
    name: String,
}

impl CreatedContainer {
    fn create(image: &str) -> Result<Self> {
        let name = format!("xdp-ingress-image-test-{}", unique_suffix());
        checked(
            podman()
                .args(["create", "--pull=never", "--name", &name])
                .arg(image),
            COMMAND_TIMEOUT,
        )?;
        Ok(Self { name })
    }
}

impl Drop for CreatedContainer {
    fn drop(&mut self) {
        let _ = run_with_timeout(
            podman().args(["rm", "--force", &self.name]),
            COMMAND_TIMEOUT,
        );
    }
}

/// The entries of a tar archive, as `tar --list` prints them.
fn tar_entries(archive: &Path) -> Result<Vec<String>> {
    let output = checked(
        Command::new("tar").arg("--list").arg("--file").arg(archive),
        COMMAND_TIMEOUT,
    )?;
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .map(|line| {
            line.trim_start_matches("./")
                .trim_end_matches('/')
                .to_owned()
        })
        .filter(|line| !line.is_empty() && line != ".")
        .collect())
}

#[test]
fn the_image_holds_only_the_static_daemon_and_it_runs() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let scratch = ScratchDir::new("image")?;
    let archive = scratch.join("xdp-ingress.oci.tar");

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    checked(
        Command::new(cargo)
            .current_dir(workspace_root())
            .args(["xtask", "image", "--output"])
            .arg(&archive),
        IMAGE_BUILD_TIMEOUT,
    )
    .context("cargo xtask image")?;

    // The OCI archive names the image as Kubernetes resolves deploy/'s name.
    let entries = tar_entries(&archive)?;
    ensure!(
        entries.iter().any(|e| e == "oci-layout") && entries.iter().any(|e| e == "index.json"),
        "{} is not an OCI archive: {entries:?}",
        archive.display()
    );
    let index = checked(
        Command::new("tar")
            .arg("--extract")
            .arg("--to-stdout")
            .arg("--file")
            .arg(&archive)
            .arg("index.json"),
        COMMAND_TIMEOUT,
    )?;
    let index = String::from_utf8(index.stdout)?;
    ensure!(
        index.contains(&format!("\"docker.io/library/{}\"", image())),
        "the archive's index does not name docker.io/library/{}: {index}",
        image()
    );

    // The image's filesystem: the binary, nothing else.
    let filesystem = scratch.join("filesystem.tar");
    {
        let container = CreatedContainer::create(&image())?;
        checked(
            podman()
                .arg("export")
                .arg("--output")
                .arg(&filesystem)
                .arg(&container.name),
            COMMAND_TIMEOUT,
        )?;
    }
    let files = tar_entries(&filesystem)?;
    ensure!(
        files == ["xdp-ingress"],
        "the image holds more than the daemon: {files:?}"
    );

    // Run it where nothing else exists: a dynamically linked binary would
    // not find its loader.
    let root = scratch.join("root");
    std::fs::create_dir(&root)?;
    checked(
        Command::new("tar")
            .arg("--extract")
            .arg("--file")
            .arg(&filesystem)
            .arg("--directory")
            .arg(&root),
        COMMAND_TIMEOUT,
    )?;
    let output = checked(
        Command::new("chroot")
            .arg(&root)
            .args(["/xdp-ingress", "--version"]),
        COMMAND_TIMEOUT,
    )?;
    let version = String::from_utf8(output.stdout)?;
    ensure!(
        version.trim() == format!("xdp-ingress {}", env!("CARGO_PKG_VERSION")),
        "`xdp-ingress --version` in the image printed {version:?}"
    );
    Ok(())
}
