//! The real Kubernetes control plane the tests run against: `cargo xtask
//! setup --k8s` builds kube-apiserver, kubectl, kube-controller-manager,
//! kube-scheduler, etcd and kwok from their Go modules (xtask/k8s) with the
//! installed Go toolchain, and copies kwok's stage configurations next to
//! them; `cargo xtask k8s path` prints where they are; `cargo xtask k8s up`
//! and `down` run the lab's cluster (`xdp_ingress_lab::k8s`) in the
//! background for hands-on work.

use std::{
    ffi::OsString,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use xdp_ingress_lab::k8s::{
    ASSETS_ENV, ETCD_VERSION, KUBERNETES_VERSION, KWOK_STAGES, KWOK_STAGES_DIR, KWOK_VERSION,
    TestCluster, k8s_cache_bin_dir, stop_detached_cluster,
};

use crate::command::{self, step, workspace_root};

/// Where `cargo xtask k8s up` keeps its cluster (certificates, etcd's data,
/// logs, the admin kubeconfig).
const UP_DIR: &str = "/run/xdp-ingress-k8s";

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
    // kwok too: it pins its own k8s.io client modules; it stamps its own
    // version.
    Binary {
        name: "kwok",
        module: "kwok",
        package: "sigs.k8s.io/kwok/cmd/kwok",
    },
];

/// How often a Go command that prints nothing is said to be still running.
const STILL_RUNNING_EVERY: Duration = Duration::from_secs(30);

/// kwok's Go module, whose stage configurations are copied.
const KWOK_MODULE: &str = "sigs.k8s.io/kwok";

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
    /// Start etcd and kube-apiserver on loopback in the background (state in
    /// /run/xdp-ingress-k8s) and print the KUBECONFIG to use.
    Up(UpArgs),
    /// Stop what `k8s up` started and remove its data.
    Down,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Also run kube-controller-manager, kube-scheduler and kwok with a fake
    /// Node, so that Deployments get Running pods (without containers).
    #[arg(long)]
    workloads: bool,
}

/// `cargo xtask k8s ...`.
pub fn run(args: &K8sArgs) -> Result<()> {
    match &args.command {
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
        K8sCommand::Up(up_args) => up(up_args.workloads),
        K8sCommand::Down => down(),
    }
}

/// `cargo xtask k8s up`.
fn up(workloads: bool) -> Result<()> {
    step(&format!(
        "Kubernetes {KUBERNETES_VERSION} control plane{} in {UP_DIR}",
        if workloads {
            " with workloads (kwok)"
        } else {
            ""
        }
    ));
    let cluster = TestCluster::builder()
        .workloads(workloads)
        .persistent_dir(UP_DIR)
        .start()?;
    let kubeconfig = cluster.kubeconfig().to_path_buf();
    let server = cluster.server_url().to_string();
    let pids = cluster.pids();
    let dir = cluster.detach()?;
    for (name, pid) in pids {
        println!(
            "{name}: pid {pid}, log {}",
            dir.join(format!("{name}.log")).display()
        );
    }
    println!("API server: {server}");
    println!("\nexport KUBECONFIG={}", kubeconfig.display());
    println!("stop it (and remove its data) with: cargo xtask k8s down");
    Ok(())
}

/// `cargo xtask k8s down`.
fn down() -> Result<()> {
    if stop_detached_cluster(Path::new(UP_DIR))? {
        println!("stopped the cluster of `cargo xtask k8s up` and removed {UP_DIR}");
    } else {
        println!("no cluster of `cargo xtask k8s up` in {UP_DIR}");
    }
    Ok(())
}

/// The directory holding the binaries (the lab's one definition).
pub fn bin_dir() -> PathBuf {
    k8s_cache_bin_dir()
}

/// The binaries not yet built.
pub fn missing() -> Vec<&'static str> {
    missing_binaries_in(&bin_dir())
}

/// The binaries missing from `dir`.
fn missing_binaries_in(dir: &Path) -> Vec<&'static str> {
    BINARIES
        .iter()
        .filter(|binary| !dir.join(binary.name).is_file())
        .map(|binary| binary.name)
        .collect()
}

/// kwok's stage configurations not yet copied.
fn missing_stages() -> Vec<&'static str> {
    missing_stages_in(&bin_dir())
}

/// kwok's stage configurations missing from `dir`'s [`KWOK_STAGES_DIR`].
fn missing_stages_in(dir: &Path) -> Vec<&'static str> {
    let dir = dir.join(KWOK_STAGES_DIR);
    KWOK_STAGES
        .iter()
        .filter(|(_, file)| !dir.join(file).is_file())
        .map(|(_, file)| *file)
        .collect()
}

/// Where the cluster tests will find their binaries, and whether
/// `setup --k8s` must build them first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestAssets {
    /// `$KUBEBUILDER_ASSETS` names the user's own directory: the harness
    /// runs from it, so building into the cache would not help; left as it
    /// is (the harness names what it lacks).
    External(PathBuf),
    /// Everything `setup --k8s` builds is in the cache.
    Built,
    /// The cache lacks these (binaries, then kwok's stages): `setup --k8s`
    /// must run.
    Missing(Vec<&'static str>),
}

/// [`TestAssets`] for a harness that honours `assets_env` (the value of
/// `$KUBEBUILDER_ASSETS`; unset or empty means the cache, as in the lab)
/// and the cache `dir`.
pub fn test_assets_in(assets_env: Option<OsString>, dir: &Path) -> TestAssets {
    if let Some(assets) = assets_env.filter(|value| !value.is_empty()) {
        return TestAssets::External(PathBuf::from(assets));
    }
    let mut missing = missing_binaries_in(dir);
    missing.extend(missing_stages_in(dir));
    if missing.is_empty() {
        TestAssets::Built
    } else {
        TestAssets::Missing(missing)
    }
}

/// [`test_assets_in`] for this process's environment and the cache.
pub fn test_assets() -> TestAssets {
    test_assets_in(std::env::var_os(ASSETS_ENV), &bin_dir())
}

/// Builds the Kubernetes binaries the cluster tests and `bench cluster`
/// run when the cache lacks them, as `cargo xtask setup --k8s` does (with
/// each build's progress); says where they come from otherwise.
pub fn set_up_if_missing() -> Result<()> {
    match test_assets() {
        TestAssets::Built => Ok(()),
        TestAssets::External(dir) => {
            println!(
                "the Kubernetes binaries come from {ASSETS_ENV}={}",
                dir.display()
            );
            Ok(())
        }
        TestAssets::Missing(missing) => {
            step(&format!(
                "Setting up the Kubernetes binaries first, as `cargo xtask setup --k8s` (missing: {}; several minutes the first time)",
                missing.join(", ")
            ));
            setup()
        }
    }
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

/// `cargo xtask setup --k8s`: builds the binaries that are missing and
/// copies kwok's stage configurations if they are missing.
pub fn setup() -> Result<()> {
    let dir = bin_dir();
    step(&format!(
        "Kubernetes {KUBERNETES_VERSION}, etcd {ETCD_VERSION} and kwok {KWOK_VERSION} binaries in {}",
        dir.display()
    ));
    let missing = missing();
    for binary in BINARIES {
        if !missing.contains(&binary.name) {
            println!("{}: present, skipped", binary.name);
        }
    }
    let missing_stages = missing_stages();
    if missing_stages.is_empty() {
        println!("kwok stages: present, skipped");
    }
    if missing.is_empty() && missing_stages.is_empty() {
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
    if !missing.is_empty() {
        println!(
            "building {} (several minutes from nothing; the build cache stays in Go's default cache)",
            missing.join(" ")
        );
    }
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
    if !todo.is_empty() {
        println!(
            "Kubernetes binaries built in {}s: {}",
            started.elapsed().as_secs(),
            dir.display()
        );
    }
    if !missing_stages.is_empty() {
        copy_kwok_stages(&modules.join("kwok"), &dir.join(KWOK_STAGES_DIR))?;
    }
    Ok(())
}

/// Copies kwok's stage configurations from its module (in Go's module
/// cache, where building kwok put it) into `target`.
fn copy_kwok_stages(module: &Path, target: &Path) -> Result<()> {
    // A no-op when building kwok fetched it; else from the Go module proxy.
    let mut download = Command::new("go");
    download
        .current_dir(module)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=readonly")
        .args(["mod", "download", KWOK_MODULE]);
    run_go(&mut download)
        .with_context(|| format!("downloading {KWOK_MODULE} {KWOK_VERSION} failed"))?;
    let mut list = Command::new("go");
    list.current_dir(module)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=readonly")
        .args(["list", "-m", "-f", "{{.Dir}}", KWOK_MODULE]);
    let output = command::output(&mut list)?;
    let source = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() || source.is_empty() {
        bail!(
            "could not find {KWOK_MODULE} {KWOK_VERSION} in Go's module cache (`go list -m` in {}): {}",
            module.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    std::fs::create_dir_all(target)
        .with_context(|| format!("could not create {}", target.display()))?;
    for (path, file) in KWOK_STAGES {
        let from = Path::new(&source).join(path);
        let to = target.join(file);
        let partial = target.join(format!(".{file}.partial"));
        std::fs::copy(&from, &partial).with_context(|| {
            format!("could not copy {} to {}", from.display(), partial.display())
        })?;
        std::fs::rename(&partial, &to)
            .with_context(|| format!("could not move the copy to {}", to.display()))?;
        println!("kwok stage {file} <- {}", from.display());
    }
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
    // Compiling kube-apiserver prints nothing for minutes: say it goes on.
    let started = Instant::now();
    let mut noted = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for `go`")? {
            break status;
        }
        thread::sleep(Duration::from_millis(250));
        if noted.elapsed() >= STILL_RUNNING_EVERY {
            println!("      ... still running ({}s)", started.elapsed().as_secs());
            noted = Instant::now();
        }
    };
    let mut lines = out.join().unwrap_or_default();
    lines.extend(err.join().unwrap_or_default());
    if !status.success() {
        bail!(
            "`{}` failed ({status}):\n{}",
            xdp_ingress_lab::describe(go),
            lines.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use xdp_ingress_lab::ScratchDir;

    use super::*;

    #[test]
    fn the_tests_build_what_the_cache_lacks_unless_kubebuilder_assets_is_set() {
        let dir = ScratchDir::new("xtask-k8s-assets").unwrap();
        // An empty cache: every binary, then every stage file.
        let TestAssets::Missing(missing) = test_assets_in(None, dir.path()) else {
            panic!("an empty cache is not built");
        };
        let binaries: Vec<&str> = BINARIES.iter().map(|binary| binary.name).collect();
        let stages: Vec<&str> = KWOK_STAGES.iter().map(|(_, file)| *file).collect();
        assert_eq!(missing, [binaries.clone(), stages.clone()].concat());

        // Every binary but kwok, and one stage file short.
        for name in &binaries[..binaries.len() - 1] {
            dir.write(name, "").unwrap();
        }
        for file in &stages[1..] {
            dir.write(Path::new(KWOK_STAGES_DIR).join(file), "")
                .unwrap();
        }
        assert_eq!(
            test_assets_in(Some(OsString::new()), dir.path()),
            TestAssets::Missing(vec!["kwok", stages[0]]),
            "an empty KUBEBUILDER_ASSETS means the cache, as in the lab"
        );
        dir.write("kwok", "").unwrap();
        dir.write(Path::new(KWOK_STAGES_DIR).join(stages[0]), "")
            .unwrap();
        assert_eq!(test_assets_in(None, dir.path()), TestAssets::Built);

        // The user's own directory wins and is not built into.
        let empty = ScratchDir::new("xtask-k8s-empty").unwrap();
        assert_eq!(
            test_assets_in(Some("/opt/envtest".into()), empty.path()),
            TestAssets::External(PathBuf::from("/opt/envtest"))
        );
    }
}
