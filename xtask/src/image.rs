//! `cargo xtask image`: the container image of the daemon, one statically
//! linked (musl) binary in a `FROM scratch` image, built with podman.
//!
//! Only building from scratch is asked of podman: on the machines this runs
//! on it can neither pull base images nor run containers, and the image needs
//! neither (no shell, no libc, no CA certificates: the daemon talks to the
//! API server with the cluster's CA from its ServiceAccount).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail, ensure};

use crate::{
    command::{self, is_root, step, workspace_root},
    ebpf::{self, BuildEbpfArgs},
    setup,
};

/// The target the daemon is built for: musl links statically.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// The image's name as the manifests in deploy/ write it; the tag is the
/// workspace version.
pub const IMAGE_NAME: &str = "xdp-ingress";

/// The repository the image is tagged in: where Kubernetes looks for a name
/// without a registry (`xdp-ingress` is `docker.io/library/xdp-ingress` to
/// the CRI), so an archive imported on a node (`ctr images import`) carries
/// the name deploy/ asks for. Nothing is pushed there; podman finds the image
/// by its short name too.
const IMAGE_REPOSITORY: &str = "docker.io/library/xdp-ingress";

/// The binary, in the build and in the image.
const BINARY: &str = "xdp-ingress";

/// Debian packages the image build needs: musl-gcc for the C parts (aws-lc's
/// libcrypto under rustls), podman to build the image.
const DEBIAN_PACKAGES: &[&str] = &["musl-tools", "podman"];

/// Options of `cargo xtask image`.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// Also save the image as an OCI archive to FILE (for `podman load`,
    /// `ctr images import`, `kind load image-archive`).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The image's tag, the workspace version (every crate's, the daemon's
/// included).
fn image_tag() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// `cargo xtask image`.
pub fn run(args: &ImageArgs) -> Result<()> {
    let started = Instant::now();
    let short = format!("{IMAGE_NAME}:{}", image_tag());
    let reference = format!("{IMAGE_REPOSITORY}:{}", image_tag());
    let output = args
        .output
        .as_ref()
        .map(|file| absolute(file))
        .transpose()?;

    step(&format!(
        "What the image build needs: Debian's {}, the {MUSL_TARGET} Rust target",
        DEBIAN_PACKAGES.join(" and ")
    ));
    install_missing_packages()?;
    add_musl_target()?;

    ebpf::build(&BuildEbpfArgs { release: true })?;

    step(&format!(
        "Building the daemon for {MUSL_TARGET} (release, statically linked)"
    ));
    let binary = build_static_daemon()?;
    let interpreter = elf_interpreter(&binary)?;
    ensure!(
        interpreter.is_none(),
        "{} is dynamically linked (interpreter {}): a FROM scratch image cannot run it",
        binary.display(),
        interpreter.unwrap_or_default()
    );
    println!(
        "{}: statically linked, {:.1} MiB",
        binary.display(),
        fs::metadata(&binary)?.len() as f64 / (1024.0 * 1024.0)
    );

    step(&format!(
        "Building the image {short} ({reference}) with podman"
    ));
    let context = write_build_context(&binary)?;
    let previous = image_id(&reference);
    command::run(
        podman()
            .args(["build", "--pull=never", "--network=none", "--tag"])
            .arg(&reference)
            .arg("--file")
            .arg(context.join("Containerfile"))
            .arg(&context),
    )
    .context("podman could not build the image")?;
    remove_superseded(previous, &reference);

    if let Some(file) = &output {
        step(&format!("Saving {short} to {}", file.display()));
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("could not create {}", parent.display()))?;
        }
        command::run(
            podman()
                .args(["save", "--format", "oci-archive", "--output"])
                .arg(file)
                .arg(&reference),
        )
        .context("podman could not save the image")?;
    }

    println!(
        "\nimage {short} built in {}s (podman --storage-driver vfs images {IMAGE_NAME}){}",
        started.elapsed().as_secs(),
        output
            .map(|file| format!("; OCI archive: {}", file.display()))
            .unwrap_or_default()
    );
    Ok(())
}

/// A podman command on the storage the image lives in. vfs: it works on any
/// filesystem and needs no fuse-overlayfs or kernel overlay support; every
/// podman call here and in the tests must name the same driver.
pub fn podman() -> Command {
    let mut podman = Command::new("podman");
    podman.args(["--storage-driver", "vfs"]);
    podman
}

/// The id of the image `reference` names, if there is one.
fn image_id(reference: &str) -> Option<String> {
    let out =
        command::output(podman().args(["image", "inspect", "--format", "{{.Id}}", reference]))
            .ok()?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !id.is_empty()).then_some(id)
}

/// Removes the image a rebuild took the tag from: with vfs storage each one
/// is a full copy of the binary, and they would pile up untagged.
fn remove_superseded(previous: Option<String>, reference: &str) {
    let Some(previous) = previous else { return };
    if image_id(reference).as_ref() == Some(&previous) {
        return;
    }
    // A container still using it keeps it; that is its owner's to remove.
    if command::succeeds(podman().args(["rmi", &previous])) {
        println!("removed the image this one replaces ({previous:.12})");
    }
}

fn install_missing_packages() -> Result<()> {
    let missing = setup::missing_debian_packages(DEBIAN_PACKAGES);
    if !missing.is_empty() && !is_root() {
        bail!(
            "the image build needs the Debian packages {}: install them as root (`sudo apt-get install {}`) or run `sudo -E cargo xtask image`",
            missing.join(" "),
            missing.join(" ")
        );
    }
    setup::install_debian_packages(&missing, DEBIAN_PACKAGES)
}

fn add_musl_target() -> Result<()> {
    let installed = command::output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup is needed to add the musl target")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == MUSL_TARGET)
    {
        println!("present: Rust target {MUSL_TARGET}");
        return Ok(());
    }
    command::run(Command::new("rustup").args(["target", "add", MUSL_TARGET]))
        .context("rustup could not add the musl target")
}

/// The target directory, as cargo and ingress-userspace's build.rs find it.
fn target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Builds the daemon for musl and returns the binary's path.
fn build_static_daemon() -> Result<PathBuf> {
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(workspace_root())
        // aws-lc-sys compiles C: with the host gcc it would pick up glibc's
        // headers; musl-gcc wraps gcc with musl's.
        .env("CC_x86_64_unknown_linux_musl", "musl-gcc")
        .args([
            "build",
            "--release",
            "--locked",
            "--package",
            "ingress-userspace",
            "--bin",
            BINARY,
            "--target",
            MUSL_TARGET,
        ]);
    command::run(&mut cargo).context("building the daemon for musl failed")?;
    let binary = target_dir().join(MUSL_TARGET).join("release").join(BINARY);
    ensure!(
        binary.is_file(),
        "cargo built, but {} is missing",
        binary.display()
    );
    Ok(binary)
}

/// The image's build context: the binary and the Containerfile, nothing
/// else, so podman copies no more than it needs.
fn write_build_context(binary: &Path) -> Result<PathBuf> {
    let context = target_dir().join("image");
    fs::create_dir_all(&context)
        .with_context(|| format!("could not create {}", context.display()))?;
    fs::copy(binary, context.join(BINARY))
        .with_context(|| format!("could not copy {} into the build context", binary.display()))?;
    let containerfile = context.join("Containerfile");
    fs::write(&containerfile, containerfile_text())
        .with_context(|| format!("could not write {}", containerfile.display()))?;
    println!("wrote {}", containerfile.display());
    Ok(context)
}

/// The Containerfile: the binary alone, as the entrypoint; the manifests in
/// deploy/ give the arguments (`run ...`).
fn containerfile_text() -> String {
    let version = env!("CARGO_PKG_VERSION");
    format!(
        "# Written by `cargo xtask image`: xdp-ingress as one static binary.\n\
         FROM scratch\n\
         LABEL org.opencontainers.image.title=\"xdp-ingress\" \\\n      \
         org.opencontainers.image.description=\"A Kubernetes ingress controller with an XDP-accelerated edge\" \\\n      \
         org.opencontainers.image.version=\"{version}\" \\\n      \
         org.opencontainers.image.licenses=\"Apache-2.0\"\n\
         COPY {BINARY} /{BINARY}\n\
         ENTRYPOINT [\"/{BINARY}\"]\n"
    )
}

fn absolute(file: &Path) -> Result<PathBuf> {
    if file.is_absolute() {
        return Ok(file.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("no current directory")?
        .join(file))
}

/// The headers of a 64-bit little-endian ELF file that say how it is loaded.
struct Elf {
    bytes: Vec<u8>,
}

/// A program header's type, and where its contents are in the file.
struct Segment {
    kind: u32,
    offset: usize,
    size: usize,
}

const PT_INTERP: u32 = 3;

impl Elf {
    fn read(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).with_context(|| format!("could not read {}", path.display()))?;
        ensure!(
            bytes.len() >= 64 && bytes[..4] == *b"\x7fELF" && bytes[4] == 2 && bytes[5] == 1,
            "{} is not a 64-bit little-endian ELF file",
            path.display()
        );
        Ok(Self { bytes })
    }

    fn u16_at(&self, at: usize) -> Result<u16> {
        let slice = self.bytes.get(at..at + 2).context("truncated ELF file")?;
        Ok(u16::from_le_bytes(slice.try_into().expect("2 bytes")))
    }

    fn u32_at(&self, at: usize) -> Result<u32> {
        let slice = self.bytes.get(at..at + 4).context("truncated ELF file")?;
        Ok(u32::from_le_bytes(slice.try_into().expect("4 bytes")))
    }

    fn u64_at(&self, at: usize) -> Result<u64> {
        let slice = self.bytes.get(at..at + 8).context("truncated ELF file")?;
        Ok(u64::from_le_bytes(slice.try_into().expect("8 bytes")))
    }

    fn segments(&self) -> Result<Vec<Segment>> {
        let table = usize::try_from(self.u64_at(0x20)?)?;
        let entry_size = usize::from(self.u16_at(0x36)?);
        let count = usize::from(self.u16_at(0x38)?);
        (0..count)
            .map(|index| {
                let header = table + index * entry_size;
                Ok(Segment {
                    kind: self.u32_at(header)?,
                    offset: usize::try_from(self.u64_at(header + 8)?)?,
                    size: usize::try_from(self.u64_at(header + 32)?)?,
                })
            })
            .collect()
    }
}

/// The dynamic loader a binary asks for (PT_INTERP), if any. Without one the
/// kernel runs the binary by itself: it is static (static-pie included).
fn elf_interpreter(path: &Path) -> Result<Option<String>> {
    let elf = Elf::read(path)?;
    let Some(interp) = elf.segments()?.into_iter().find(|s| s.kind == PT_INTERP) else {
        return Ok(None);
    };
    let name = elf
        .bytes
        .get(interp.offset..interp.offset + interp.size)
        .context("truncated ELF file")?;
    Ok(Some(
        String::from_utf8_lossy(name)
            .trim_end_matches('\0')
            .to_owned(),
    ))
}
