//! `cargo xtask setup`: installs what the project needs, idempotently.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{
    command::{self, is_root, step},
    ebpf::{BPF_LINKER_VERSION, EbpfToolchain},
};

/// Debian packages: the eBPF toolchain (LLVM 22 for bpf-linker), bpftool,
/// the lab (iproute2, ethtool, nsenter from util-linux), the test clients
/// (curl, openssl, python3), and what the benchmarks compare against and
/// load with (nftables, nginx, wrk), valgrind (callgrind counts the L7
/// proxies' instructions per request) and conntrack (`bench l4` empties
/// the edge's connection tracking table before each row).
const DEBIAN_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "bpftool",
    "iproute2",
    "ethtool",
    "util-linux",
    "curl",
    "openssl",
    "python3",
    "nftables",
    "nginx",
    "wrk",
    "valgrind",
    "conntrack",
];

/// What setup would do, for `test` to decide whether to run it.
pub fn missing() -> Result<Vec<String>> {
    let mut missing: Vec<String> = missing_debian_packages(DEBIAN_PACKAGES)
        .into_iter()
        .map(|p| format!("Debian package {p}"))
        .collect();
    let toolchain = EbpfToolchain::detect()?;
    if !has_rust_src(&toolchain)? {
        missing.push(format!("rust-src for {}", toolchain.name));
    }
    if !has_bpf_linker() {
        missing.push(format!("bpf-linker {BPF_LINKER_VERSION}"));
    }
    Ok(missing)
}

/// The packages of `packages` that dpkg does not have installed.
pub fn missing_debian_packages(packages: &[&'static str]) -> Vec<&'static str> {
    packages
        .iter()
        .copied()
        .filter(|package| {
            let out = command::output(
                Command::new("dpkg-query").args(["-W", "-f=${Status}", package]),
            );
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

fn has_rust_src(toolchain: &EbpfToolchain) -> Result<bool> {
    let out = command::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        &toolchain.name,
    ]))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|line| line.starts_with("rust-src")))
}

fn has_bpf_linker() -> bool {
    command::output(Command::new("bpf-linker").arg("--version"))
        .map(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
        .unwrap_or(false)
}

/// `cargo xtask setup`.
pub fn run() -> Result<()> {
    if !is_root() {
        bail!(
            "cargo xtask setup installs Debian packages and must run as root (for example `sudo -E cargo xtask setup`)"
        );
    }

    step("Debian packages");
    install_debian_packages(&missing_debian_packages(DEBIAN_PACKAGES), DEBIAN_PACKAGES)?;

    let toolchain = EbpfToolchain::detect()?;
    step(&format!(
        "rust-src for the eBPF toolchain ({})",
        toolchain.name
    ));
    if has_rust_src(&toolchain)? {
        println!("present");
    } else {
        command::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            &toolchain.name,
        ]))
        .context("rustup could not add rust-src")?;
    }
    if toolchain.needs_bootstrap {
        println!("no nightly toolchain: the eBPF crate builds on stable with RUSTC_BOOTSTRAP=1");
    }

    step(&format!("bpf-linker {BPF_LINKER_VERSION} (LLVM 22)"));
    if has_bpf_linker() {
        println!("present");
    } else {
        println!("building bpf-linker against /usr/lib/llvm-22 (about a minute)");
        command::run(
            Command::new("cargo")
                .env("LLVM_PREFIX", "/usr/lib/llvm-22")
                .env_remove("RUSTUP_TOOLCHAIN")
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--locked",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ]),
        )
        .context("installing bpf-linker failed")?;
    }
    println!("\nsetup complete");
    Ok(())
}

/// Installs `missing` (from `packages`) with apt-get, or says all of
/// `packages` are present.
pub fn install_debian_packages(missing: &[&str], packages: &[&str]) -> Result<()> {
    if missing.is_empty() {
        println!("all present: {}", packages.join(" "));
        return Ok(());
    }
    println!("installing: {}", missing.join(" "));
    command::run(Command::new("apt-get").args(["update", "-q"]))
        .context("apt-get update failed: check the machine's Debian sources and network")?;
    command::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(missing),
    )
    .context("apt-get install failed")
}
