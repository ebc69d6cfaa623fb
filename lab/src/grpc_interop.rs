//! grpc-go's interop programs, real gRPC servers and clients for the tests
//! of `backend-protocol: GRPC` and `GRPCS`: the server
//! (`google.golang.org/grpc/interop/server`, `--port`, `--use_tls` with
//! `--tls_cert_file`/`--tls_key_file`) and the client (`--server_host`,
//! `--server_port`, `--test_case`, `--use_tls` with `--ca_file` and
//! `--server_host_override`, which is also the `:authority` it sends).
//!
//! They are built from the Go module `lab/go/grpc-interop` (its `go.sum`
//! pins every dependency) into the Cargo profile directory of the running
//! test (`target/debug/grpc-interop-*`), once, as `cargo xtask setup --k8s`
//! builds the Kubernetes binaries: `CGO_ENABLED=0`, `GOTOOLCHAIN=local`,
//! `-mod=readonly`, the module proxy as Go's environment has it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, ensure};

use crate::process::{describe, run_with_timeout};

/// How long building both programs may take (about a minute from a warm
/// module cache on two cores).
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// The two programs.
#[derive(Debug, Clone)]
pub struct GrpcInterop {
    /// `grpc-interop-server`.
    pub server: PathBuf,
    /// `grpc-interop-client`.
    pub client: PathBuf,
}

/// The interop programs, built first when missing or older than the Go
/// module; `None` (and a message saying so) when Go is not installed.
pub fn grpc_interop() -> Result<Option<GrpcInterop>> {
    let Ok(version) = Command::new("go").arg("version").output() else {
        eprintln!("skipping: Go is not installed (needed to build grpc-go's interop programs)");
        return Ok(None);
    };
    ensure!(
        version.status.success(),
        "`go version` failed: {}",
        String::from_utf8_lossy(&version.stderr).trim()
    );
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/grpc-interop");
    let dir = profile_dir()?;
    let programs = GrpcInterop {
        server: dir.join("grpc-interop-server"),
        client: dir.join("grpc-interop-client"),
    };
    for (path, package) in [
        (&programs.server, "google.golang.org/grpc/interop/server"),
        (&programs.client, "google.golang.org/grpc/interop/client"),
    ] {
        if is_current(path, &module) {
            continue;
        }
        // Built beside, then renamed: tests running at once never see half
        // a binary.
        let partial = path.with_extension(format!("partial-{}", std::process::id()));
        let mut go = Command::new("go");
        go.current_dir(&module)
            .env("CGO_ENABLED", "0")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=readonly")
            .args(["build", "-trimpath", "-o"])
            .arg(&partial)
            .arg(package);
        let line = describe(&go);
        let output = run_with_timeout(&mut go, BUILD_TIMEOUT)?;
        ensure!(
            output.status.success(),
            "`{line}` failed (is the Go module proxy reachable?):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::rename(&partial, path)
            .with_context(|| format!("moving the build to {}", path.display()))?;
    }
    Ok(Some(programs))
}

/// Whether `binary` exists and is newer than the module's `go.mod` and
/// `go.sum`.
fn is_current(binary: &Path, module: &Path) -> bool {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let Some(built) = modified(binary) else {
        return false;
    };
    ["go.mod", "go.sum"]
        .iter()
        .all(|file| modified(&module.join(file)).is_some_and(|changed| changed <= built))
}

/// The Cargo profile directory of the running executable
/// (`target/debug` for `target/debug/deps/test-...`).
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let dir = exe.parent().context("the executable has no directory")?;
    Ok(match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().unwrap_or(dir).to_path_buf(),
        _ => dir.to_path_buf(),
    })
}
