//! Building the XDP object for bpfel-unknown-none.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::command::{self, step, workspace_root};

/// bpf-linker version the build needs; `setup` installs exactly this one.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Options of `cargo xtask build-ebpf`.
#[derive(Debug, clap::Args)]
pub struct BuildEbpfArgs {
    /// Accepted for habit's sake: the object is always built with the release
    /// profile, since the verifier rejects unoptimised BPF (debug builds of
    /// `core` keep panic loops that are not an exit).
    #[arg(long)]
    pub release: bool,
}

/// The toolchain that builds the eBPF crate: nightly where installed, else
/// stable with RUSTC_BOOTSTRAP=1 (both can do `-Z build-std=core`).
#[derive(Debug, Clone)]
pub struct EbpfToolchain {
    /// The rustup toolchain name.
    pub name: String,
    /// Whether unstable flags need RUSTC_BOOTSTRAP=1.
    pub needs_bootstrap: bool,
}

impl EbpfToolchain {
    /// Picks the toolchain from what rustup has installed.
    pub fn detect() -> Result<Self> {
        let out = command::output(Command::new("rustup").args(["toolchain", "list"]))
            .context("rustup is needed to build the eBPF crate")?;
        let list = String::from_utf8_lossy(&out.stdout);
        let nightly = list
            .lines()
            .map(|line| line.split_whitespace().next().unwrap_or(""))
            .find(|name| name.starts_with("nightly"));
        Ok(match nightly {
            Some(name) => Self {
                name: name.to_owned(),
                needs_bootstrap: false,
            },
            None => Self {
                name: "stable".to_owned(),
                needs_bootstrap: true,
            },
        })
    }

    /// A `cargo` command on this toolchain, cleared of the variables that
    /// the outer `cargo xtask` set for the host toolchain.
    pub fn cargo(&self) -> Command {
        let mut cmd = Command::new("rustup");
        cmd.args(["run", &self.name, "cargo"]);
        for var in [
            "RUSTUP_TOOLCHAIN",
            "RUSTC",
            "RUSTC_WORKSPACE_WRAPPER",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
        ] {
            cmd.env_remove(var);
        }
        if self.needs_bootstrap {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        cmd
    }
}

/// Flags for the eBPF build: BTF (so bpftool prints named fields and BTF
/// maps load), the target architecture cfg that aya-ebpf expects, and BPF
/// ISA v3 (32-bit ALU and jumps: no shifts to clear upper halves; kernels
/// since 5.1 run it), which executes fewer instructions per packet.
fn ebpf_rustflags() -> String {
    let arch = std::env::consts::ARCH;
    [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".to_owned(),
        "-Clink-arg=--btf".to_owned(),
        "-Ctarget-cpu=v3".to_owned(),
    ]
    .join("\x1f")
}

/// `cargo xtask build-ebpf`.
pub fn build(args: &BuildEbpfArgs) -> Result<()> {
    if !command::succeeds(Command::new("bpf-linker").arg("--version")) {
        bail!("bpf-linker is not installed: run `cargo xtask setup` first");
    }
    let toolchain = EbpfToolchain::detect()?;
    let _ = args.release;
    step(&format!(
        "Building the XDP object (release profile, toolchain {}{})",
        toolchain.name,
        if toolchain.needs_bootstrap {
            ", RUSTC_BOOTSTRAP=1"
        } else {
            ""
        }
    ));
    let mut cmd = toolchain.cargo();
    cmd.current_dir(workspace_root())
        .env("CARGO_ENCODED_RUSTFLAGS", ebpf_rustflags())
        .args([
            "build",
            "--package",
            "ingress-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
        ]);
    command::run(&mut cmd).context(
        "building the eBPF crate failed: `cargo xtask setup` installs rust-src, LLVM 22 and bpf-linker",
    )?;
    Ok(())
}
