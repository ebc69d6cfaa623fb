//! `cargo xtask test`: the README's test command, and what CI runs.

use std::process::Command;

use anyhow::Result;

use crate::{
    command::{self, is_root, step, workspace_root},
    ebpf::{self, BuildEbpfArgs, EbpfToolchain},
    k8s, setup,
};

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Arguments passed to `cargo test` after `--` (a test name filter, `--nocapture`, ...).
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

/// Setup if needed (`setup`, then `setup --k8s`), build-ebpf, fmt, clippy,
/// then every test.
pub fn run(args: &TestArgs) -> Result<()> {
    let missing = setup::missing()?;
    if !missing.is_empty() {
        step(&format!(
            "Setting up first (missing: {})",
            missing.join(", ")
        ));
        setup::run()?;
    }
    k8s::set_up_if_missing()?;
    let root = workspace_root();

    step("rustfmt --check");
    command::run(
        Command::new("cargo")
            .current_dir(&root)
            .args(["fmt", "--all", "--", "--check"]),
    )?;

    ebpf::build(&BuildEbpfArgs { release: false })?;

    step("clippy on the eBPF crate (bpfel-unknown-none)");
    let toolchain = EbpfToolchain::detect()?;
    command::run(toolchain.cargo().current_dir(&root).args([
        "clippy",
        "--package",
        "ingress-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))?;

    step("clippy on the workspace");
    command::run(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;

    step("Building the daemon and lab-backend (the end-to-end tests run them)");
    command::run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--package",
        "ingress-userspace",
        "--package",
        "xdp-ingress-lab",
    ]))?;

    if !is_root() {
        println!(
            "not root: the kernel and end-to-end tests will skip themselves (CI runs as root)"
        );
    }
    step("Tests (unit, kernel, end-to-end)");
    command::run(
        Command::new("cargo")
            .current_dir(&root)
            .arg("test")
            .arg("--")
            .args(&args.test_args),
    )?;
    println!("\nall checks passed");
    Ok(())
}
