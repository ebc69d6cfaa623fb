//! The lab's backends: `lab-backend` processes inside a namespace, and the
//! JSON report they answer every request with.

use std::{
    fs::File,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};

use crate::{
    netns::Netns,
    process::{Launch, describe, guard_process, poll_until, terminate, workspace_binary},
    reap::{log_path, reap_stale},
};

/// How long a backend may take to accept connections on every address.
pub const BACKEND_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a backend may take to exit after SIGTERM before it is killed.
const BACKEND_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What `lab-backend` answers (JSON), for the lab's users to decode.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct BackendReport {
    /// The backend's name (`--name`, usually the Service's).
    pub backend: String,
    /// The local address that accepted the connection: the endpoint.
    pub endpoint: String,
    /// The client as the backend saw it (the proxy's address).
    pub peer: String,
    /// The request method.
    pub method: String,
    /// The request path with its query.
    pub path: String,
    /// The `Host` header.
    pub host: String,
    /// Every header, lower-case names, in order; repeated names repeat.
    pub headers: Vec<(String, String)>,
    /// The number of body bytes received.
    pub body_bytes: u64,
}

impl BackendReport {
    /// Decodes a response body of `lab-backend`.
    pub fn parse(body: &[u8]) -> Result<Self> {
        serde_json::from_slice(body).context("decoding a lab-backend report")
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The `lab-backend` binary: `$LAB_BACKEND_BIN`, or `lab-backend` next to
/// the running executable's directory (`target/debug/lab-backend`).
pub fn backend_binary() -> Result<PathBuf> {
    workspace_binary(
        "lab-backend",
        "LAB_BACKEND_BIN",
        "cargo build -p xdp-ingress-lab",
    )
}

/// Builds a [`Backend`] with launch options:
/// `Backend::builder(&ns, "web", &addrs).cpus("0").start()`.
#[derive(Debug)]
pub struct BackendBuilder<'a> {
    ns: &'a Netns,
    name: String,
    addrs: Vec<SocketAddr>,
    udp_echoes: Vec<SocketAddr>,
    no_date: bool,
    tls: Option<(PathBuf, PathBuf)>,
    tls_client_ca: Option<PathBuf>,
    launch: Launch,
}

impl BackendBuilder<'_> {
    /// Speaks TLS on every listener with the chain and key of these PEM
    /// files (`--tls-cert`, `--tls-key`): an HTTPS upstream.
    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls = Some((cert.into(), key.into()));
        self
    }

    /// With [`Self::tls`], requires a client certificate signed by the CA
    /// of this PEM file (`--tls-client-ca`).
    pub fn tls_client_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.tls_client_ca = Some(ca.into());
        self
    }

    /// Also answers UDP datagrams to `addr` with a report (`--udp-echo`;
    /// repeat for several): method `UDP`, the endpoint that received it.
    pub fn udp_echo(mut self, addr: SocketAddr) -> Self {
        self.udp_echoes.push(addr);
        self
    }

    /// Sends no `Date` but on `/dated` (`--no-date`): an upstream like
    /// those that leave it to the proxy.
    pub fn no_date(mut self) -> Self {
        self.no_date = true;
        self
    }

    /// Runs this binary instead of [`backend_binary`] (a release build).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.launch.binary = Some(path.into());
        self
    }

    /// Restricts the backend to the CPUs of `list` (`taskset -c LIST`),
    /// from its start on.
    pub fn cpus(mut self, list: &str) -> Self {
        self.launch.cpus = Some(list.to_owned());
        self
    }

    /// Sets an environment variable of the backend (`TOKIO_WORKER_THREADS`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.launch.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Starts it; see [`Backend::start`].
    pub fn start(self) -> Result<Backend> {
        let (ns, name, addrs) = (self.ns, self.name.as_str(), self.addrs.as_slice());
        ensure!(!addrs.is_empty(), "a backend needs an address to listen on");
        reap_stale();
        let binary = match &self.launch.binary {
            Some(binary) => binary.clone(),
            None => backend_binary()?,
        };
        let log = log_path("backend");
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = self.launch.nsenter(ns);
        command.arg(binary).args(["--name", name]);
        for addr in addrs {
            command.arg("--listen").arg(addr.to_string());
        }
        for addr in &self.udp_echoes {
            command.arg("--udp-echo").arg(addr.to_string());
        }
        if self.no_date {
            command.arg("--no-date");
        }
        if let Some((cert, key)) = &self.tls {
            command
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        if let Some(ca) = &self.tls_client_ca {
            command.arg("--tls-client-ca").arg(ca);
        }
        let line = describe(&command);
        guard_process(&mut command);
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting `{line}`"))?;
        let mut backend = Backend {
            child,
            name: name.to_owned(),
            addrs: addrs.to_vec(),
            log,
        };
        backend
            .wait_ready(ns)
            .with_context(|| format!("`{line}` did not get ready:\n{}", backend.log()))?;
        Ok(backend)
    }
}

/// A `lab-backend` process inside a namespace, as a guard: SIGTERM (then
/// SIGKILL) on drop.
#[derive(Debug)]
pub struct Backend {
    child: Child,
    name: String,
    addrs: Vec<SocketAddr>,
    log: PathBuf,
}

impl Backend {
    /// Starts `lab-backend --name NAME --listen A...` in `ns` and returns
    /// once every address accepts connections from inside the namespace
    /// (bounded by [`BACKEND_READY_TIMEOUT`]). The addresses must exist in
    /// the namespace (see [`Netns::add_addrs`]).
    ///
    /// The backend gets SIGTERM if the starting thread dies, so keep the
    /// guard on the thread that created it.
    pub fn start(ns: &Netns, name: &str, addrs: &[SocketAddr]) -> Result<Self> {
        Self::builder(ns, name, addrs).start()
    }

    /// Starts describing a backend with options (binary, CPUs,
    /// environment); see [`BackendBuilder`].
    pub fn builder<'a>(ns: &'a Netns, name: &str, addrs: &[SocketAddr]) -> BackendBuilder<'a> {
        BackendBuilder {
            ns,
            name: name.to_owned(),
            addrs: addrs.to_vec(),
            udp_echoes: Vec::new(),
            no_date: false,
            tls: None,
            tls_client_ca: None,
            launch: Launch::default(),
        }
    }

    fn wait_ready(&mut self, ns: &Netns) -> Result<()> {
        for &addr in &self.addrs {
            poll_until(
                &format!("{} to accept connections on {addr}", self.name),
                BACKEND_READY_TIMEOUT,
                || {
                    if let Some(status) = self.child.try_wait()? {
                        bail!("it exited early ({status})");
                    }
                    Ok(ns.accepts_tcp(addr)?.then_some(()))
                },
            )?;
        }
        Ok(())
    }

    /// Its name (`--name`), which every report carries.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The addresses it listens on.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while it runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it with SIGTERM (bounded wait, then SIGKILL).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        terminate(&mut self.child, BACKEND_STOP_TIMEOUT)
            .with_context(|| format!("stopping backend {}", self.name))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("lab: {error:#}");
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
