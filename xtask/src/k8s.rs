//! The real Kubernetes control plane the tests run against: `cargo xtask
//! setup --k8s` builds kube-apiserver, kubectl, kube-controller-manager,
//! kube-scheduler and etcd from their Go modules (xtask/k8s) with the
//! installed Go toolchain; `cargo xtask k8s path` prints where they are.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::command::{self, step, workspace_root};

/// The Kubernetes release, matching the `v1_37` feature of k8s-openapi.
pub const KUBERNETES_VERSION: &str = "v1.37.2";
/// The etcd release.
pub const ETCD_VERSION: &str = "v3.6.16";

/// Where the binaries are cached, outside the work tree; versioned, so that
/// changing a version builds into a fresh directory.
const CACHE_ROOT: &str = "/var/cache/xdp-ingress/k8s";

/// A binary: its name, the Go module it is built in (relative to
/// xtask/k8s) and its main package.
struct Binary {
    name: &'static str,
    module: &'static str,
    package: &'static str,
}

const BINARIES: &[Binary] = &[
    Binary {
        name: "kube-apiserver",
        module: ".",
        package: "k8s.io/kubernetes/cmd/kube-apiserver",
    },
    Binary {
        name: "kubectl",
        module: ".",
        package: "k8s.io/kubernetes/cmd/kubectl",
    },
    Binary {
        name: "kube-controller-manager",
        module: ".",
        package: "k8s.io/kubernetes/cmd/kube-controller-manager",
    },
    Binary {
        name: "kube-scheduler",
        module: ".",
        package: "k8s.io/kubernetes/cmd/kube-scheduler",
    },
    // etcd has its own module: Kubernetes requires a newer etcd client than
    // etcd v3.6.16 is built with, and its version comes from that module.
    Binary {
        name: "etcd",
        module: "etcd",
        package: "go.etcd.io/etcd/server/v3",
    },
];

#[derive(Debug, Args)]
pub struct K8sArgs {
    #[command(subcommand)]
    command: K8sCommand,
}

#[derive(Debug, Subcommand)]
enum K8sCommand {
    /// Print the directory of the binaries built by `cargo xtask setup --k8s`
    /// (for KUBEBUILDER_ASSETS); fails if they are not built.
    Path,
}

/// `cargo xtask k8s ...`.
pub fn run(args: &K8sArgs) -> Result<()> {
    match args.command {
        K8sCommand::Path => {
            let dir = bin_dir();
            let missing = missing();
            if !missing.is_empty() {
                bail!(
                    "the Kubernetes binaries are not built in {} (missing: {}): run `cargo xtask setup --k8s`",
                    dir.display(),
                    missing.join(" ")
                );
            }
            println!("{}", dir.display());
            Ok(())
        }
    }
}

/// The directory holding the binaries.
pub fn bin_dir() -> PathBuf {
    let etcd = ETCD_VERSION.trim_start_matches('v');
    Path::new(CACHE_ROOT)
        .join(format!("{KUBERNETES_VERSION}-etcd{etcd}"))
        .join("bin")
}

/// The binaries not yet built.
pub fn missing() -> Vec<&'static str> {
    let dir = bin_dir();
    BINARIES
        .iter()
        .filter(|binary| !dir.join(binary.name).is_file())
        .map(|binary| binary.name)
        .collect()
}

/// The `-ldflags` Kubernetes' own build passes: no symbol tables (as
/// releases), and the version stamp, so that the binaries report their
/// release (`kubectl version` fails on the default v0.0.0-master).
fn kubernetes_ldflags() -> String {
    let version = KUBERNETES_VERSION;
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next().unwrap_or_default();
    let minor = parts.next().unwrap_or_default();
    let stamps = ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"]
        .iter()
        .map(|package| {
            format!(
                "-X {package}.gitVersion={version} -X {package}.gitMajor={major} -X {package}.gitMinor={minor} -X {package}.gitTreeState=clean"
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    format!("-s -w {stamps}")
}

/// `cargo xtask setup --k8s`: builds the binaries that are missing.
pub fn setup() -> Result<()> {
    let dir = bin_dir();
    step(&format!(
        "Kubernetes {KUBERNETES_VERSION} and etcd {ETCD_VERSION} binaries in {}",
        dir.display()
    ));
    let missing = missing();
    for binary in BINARIES {
        if !missing.contains(&binary.name) {
            println!("{}: present, skipped", binary.name);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }

    let go = command::output(Command::new("go").arg("version")).context(
        "Go is needed to build the Kubernetes binaries: install it (https://go.dev/dl/)",
    )?;
    if !go.status.success() {
        bail!(
            "`go version` failed: {}",
            String::from_utf8_lossy(&go.stderr).trim()
        );
    }
    println!("with {}", String::from_utf8_lossy(&go.stdout).trim());
    println!(
        "building {} (several minutes from nothing; the build cache stays in Go's default cache)",
        missing.join(" ")
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;

    let modules = workspace_root().join("xtask/k8s");
    let ldflags = kubernetes_ldflags();
    let todo: Vec<&Binary> = BINARIES
        .iter()
        .filter(|binary| missing.contains(&binary.name))
        .collect();
    let started = Instant::now();
    for (index, binary) in todo.iter().enumerate() {
        let output = dir.join(format!(".{}.partial", binary.name));
        let mut go = Command::new("go");
        go.current_dir(modules.join(binary.module))
            // Static binaries, as Kubernetes and etcd release them; no
            // toolchain download behind the user's back.
            .env("CGO_ENABLED", "0")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=readonly")
            .args(["build", "-trimpath", "-o"])
            .arg(&output);
        if binary.module == "." {
            go.args(["-ldflags", &ldflags]);
        } else {
            go.args(["-ldflags", "-s -w"]);
        }
        go.arg(binary.package);
        println!(
            "[{}/{}] {} ({})",
            index + 1,
            todo.len(),
            binary.name,
            binary.package
        );
        let one = Instant::now();
        run_go(&mut go).with_context(|| {
            format!(
                "building {} with Go failed (check that the Go module proxy is reachable)",
                binary.name
            )
        })?;
        let target = dir.join(binary.name);
        std::fs::rename(&output, &target)
            .with_context(|| format!("could not move the build to {}", target.display()))?;
        println!(
            "      built in {}s -> {}",
            one.elapsed().as_secs(),
            target.display()
        );
    }
    println!(
        "Kubernetes binaries built in {}s: {}",
        started.elapsed().as_secs(),
        dir.display()
    );
    Ok(())
}

/// Runs a Go command, showing its output as it comes (downloads, errors) and
/// failing with all of it.
fn run_go(go: &mut Command) -> Result<()> {
    let mut child = go
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start `go`")?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let forward = |stream: Box<dyn std::io::Read + Send>| {
        thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                println!("      {line}");
                lines.push(line);
            }
            lines
        })
    };
    let out = forward(Box::new(stdout));
    let err = forward(Box::new(stderr));
    let status = child.wait().context("waiting for `go`")?;
    let mut lines = out.join().unwrap_or_default();
    lines.extend(err.join().unwrap_or_default());
    if !status.success() {
        bail!("`go build` failed ({status}):\n{}", lines.join("\n"));
    }
    Ok(())
}
