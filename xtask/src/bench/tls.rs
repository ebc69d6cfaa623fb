//! `cargo xtask bench tls`: xdp-ingress against nginx (configured as
//! ingress-nginx configures TLS) as HTTPS terminators, in the same lab as
//! `bench l7` (one copy per proxy, the proxy alone on CPU 1, clients and
//! backend on CPU 0), with the same certificate and key.
//!
//! For each key type (ECDSA P-256, RSA-2048) a self-signed certificate for
//! `h0.bench.example` is made with the openssl CLI in a scratch directory;
//! xdp-ingress gets it as a `kubernetes.io/tls` Secret of a TLS Ingress for
//! that host and as its `--default-ssl-certificate`, nginx as the
//! `ssl_certificate` of every server (the Ingress's and the default one),
//! so handshakes with and without SNI get the same certificate from both.
//!
//! Measured, in alternating rounds (medians reported):
//! - full handshakes per second: a rustls (aws-lc-rs) client of threads
//!   on the load CPU, each making a new TCP connection and a full
//!   handshake (SNI [`HOST`], no session resumption) back to back; it skips
//!   checking the certificate and signature, which would make the one
//!   client core the bottleneck (`openssl s_time -new` is: OpenSSL 3.0's
//!   client tops out near 550 handshakes/s on a core, below both proxies);
//! - HTTPS requests per second on kept-alive connections: wrk over
//!   `https://h0.bench.example/` (SNI and Host), the name resolved through
//!   a hosts file bind-mounted over `/etc/hosts` in a private mount
//!   namespace of wrk's alone.
//!
//! Prints one table with the ratios and the targets, also written to
//! `target/bench/tls.md`.

use std::{
    fmt::Write as _,
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use xdp_ingress_lab::{
    Netns, ScratchDir, SliceEndpoint, XDP_INGRESS_CLASS, run_with_timeout, service_yaml,
};

use super::{
    Binaries, Progress, catch_interrupts, check_interrupted, interrupted,
    lab::{BenchLab, ENDPOINTS, LOAD_CPU, PROXY_CPU},
    measure::{
        CpuSample, DISTURBED_THRESHOLD, all_disturbed, counted_rounds, median_of, spread_of,
    },
    nginx::{self, Nginx, UpstreamLayout},
    prepare, raise_open_file_limit,
    report::{self, Table},
    side_by_side::{PROXIES, ProxyLabs, RoundCpu, account_round, alternate_rounds},
    target_dir,
    under_test::{Proxy, UnderTest},
    wrk::{HOSTS_SCRIPT, WrkLoad},
    xdp::{self, XdpIngress, XdpMode},
};

/// Options of `cargo xtask bench tls`.
#[derive(Debug, clap::Args)]
pub struct TlsArgs {
    /// Seconds of measured load per round, proxy and row.
    #[arg(long, default_value_t = 4)]
    pub seconds: u64,
    /// Measurements per proxy and row, alternating between the proxies;
    /// the medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds of load before the first round of each row.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// wrk's open (kept-alive) connections, one wrk thread.
    #[arg(long, default_value_t = 50)]
    pub connections: u32,
    /// Threads of the handshake client (all on the load CPU), each making
    /// full handshakes back to back.
    #[arg(long, default_value_t = 16)]
    pub handshake_clients: u32,
    /// Where xdp-ingress's XDP program runs: native (as deployed), skb, or
    /// off.
    #[arg(long, value_enum, default_value = "native")]
    pub xdp_mode: XdpMode,
    /// Use the release binaries as they are (no setup, no build).
    #[arg(long)]
    pub no_build: bool,
}

/// The TLS host of both proxies.
const HOST: &str = "h0.bench.example";
/// The Secret (namespace `bench`) holding the certificate for xdp-ingress.
const SECRET: &str = "bench-tls";
/// The HTTPS port.
const HTTPS_PORT: u16 = 443;
/// ingress-nginx's default `ssl-ciphers` (TLS 1.2; TLS 1.3 uses OpenSSL's).
const INGRESS_NGINX_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:\
ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384";

/// The key types compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    P256,
    Rsa2048,
}

impl KeyType {
    const ALL: [KeyType; 2] = [KeyType::P256, KeyType::Rsa2048];

    fn name(self) -> &'static str {
        match self {
            KeyType::P256 => "ECDSA P-256",
            KeyType::Rsa2048 => "RSA-2048",
        }
    }

    fn file_stem(self) -> &'static str {
        match self {
            KeyType::P256 => "p256",
            KeyType::Rsa2048 => "rsa2048",
        }
    }

    /// `openssl req -newkey` arguments.
    fn newkey(self) -> &'static [&'static str] {
        match self {
            KeyType::P256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyType::Rsa2048 => &["-newkey", "rsa:2048"],
        }
    }
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    /// Full handshakes per second (the rustls client of [`run_handshakes`]).
    Handshakes,
    /// HTTPS requests per second on kept-alive connections (wrk).
    Requests,
}

impl Metric {
    const ALL: [Metric; 2] = [Metric::Handshakes, Metric::Requests];

    fn name(self) -> &'static str {
        match self {
            Metric::Handshakes => "full handshakes/s",
            Metric::Requests => "kept-alive HTTPS requests/s",
        }
    }
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    /// `openssl x509 -fingerprint -sha256` of it.
    fingerprint: String,
}

/// One measured round of one proxy.
#[derive(Debug, Clone)]
struct Sample {
    /// Handshakes or requests per second.
    rate: f64,
    /// Failed handshakes or requests.
    failures: u64,
    cpu: RoundCpu,
}

/// The rounds of one proxy, key type and metric.
#[derive(Debug, Clone)]
struct Run {
    proxy: Proxy,
    key: KeyType,
    metric: Metric,
    samples: Vec<Sample>,
}

impl Run {
    fn counted(&self) -> Vec<&Sample> {
        counted_rounds(&self.samples, |s| s.cpu.proxy_waited)
    }

    fn median(&self, metric: impl Fn(&Sample) -> f64) -> f64 {
        median_of(&self.counted(), metric)
    }

    fn rate(&self) -> f64 {
        self.median(|s| s.rate)
    }

    fn spread(&self) -> (f64, f64) {
        spread_of(&self.counted(), |s| s.rate)
    }

    fn failures(&self) -> u64 {
        self.samples.iter().map(|s| s.failures).sum()
    }

    fn disturbed(&self) -> bool {
        all_disturbed(&self.samples, |s| s.cpu.proxy_waited)
    }
}

/// Everything one invocation shares.
struct Bench<'a> {
    args: &'a TlsArgs,
    binaries: &'a Binaries,
    progress: Progress,
    scratch: &'a ScratchDir,
    labs: ProxyLabs,
}

/// `cargo xtask bench tls`.
pub fn run(args: &TlsArgs) -> Result<()> {
    if args.seconds == 0 || args.rounds == 0 || args.connections == 0 || args.handshake_clients == 0
    {
        bail!("--seconds, --rounds, --connections and --handshake-clients must be at least 1");
    }
    let binaries = prepare(!args.no_build)?;
    for tool in ["openssl", "wrk", "nginx", "unshare", "curl"] {
        ensure!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool} >/dev/null")])
                .status()?
                .success(),
            "{tool} is missing (cargo xtask setup installs it)"
        );
    }
    raise_open_file_limit(1 << 16).context("raising the open-file limit")?;
    catch_interrupts();
    let progress = Progress::start();

    progress.phase("Checking that the machine is otherwise idle (1 s)");
    let before = CpuSample::now()?;
    std::thread::sleep(Duration::from_secs(1));
    let background = CpuSample::now()?.machine_busy_since(&before);
    progress.detail(&format!(
        "CPUs busy {} before the labs start",
        report::percent(background)
    ));

    progress.phase("Making the certificates (openssl, P-256 and RSA-2048)");
    let scratch = ScratchDir::new("bench-tls")?;
    scratch.write("hosts.lua", HOSTS_SCRIPT)?;
    scratch.write(
        "hosts",
        format!(
            "127.0.0.1 localhost\n{} {HOST}\n",
            xdp_ingress_lab::EDGE_ADDR
        ),
    )?;
    let mut certificates = Vec::new();
    for key in KeyType::ALL {
        let certificate = make_certificate(&scratch, key)?;
        progress.detail(&format!(
            "{}: {} (SHA-256 {})",
            key.name(),
            certificate.cert.display(),
            certificate.fingerprint
        ));
        certificates.push((key, certificate));
    }

    let labs = ProxyLabs::create(&binaries, &progress)?;
    let bench = Bench {
        args,
        binaries: &binaries,
        progress,
        scratch: &scratch,
        labs,
    };

    let mut runs = Vec::new();
    for (key, certificate) in &certificates {
        check_interrupted()?;
        runs.extend(bench.row(*key, certificate)?);
    }

    bench.progress.phase("Results");
    let text = render(args, &runs, background);
    println!("\n{text}");
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("tls.md");
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("(also in {})", out.display());
    bench.progress.phase("Done: removing the labs");
    Ok(())
}

/// A self-signed certificate for [`HOST`] with a `key` key, in `scratch`.
fn make_certificate(scratch: &ScratchDir, key: KeyType) -> Result<Certificate> {
    let cert = scratch.join(format!("{}.crt", key.file_stem()));
    let key_file = scratch.join(format!("{}.key", key.file_stem()));
    let mut command = Command::new("openssl");
    command
        .args(["req", "-x509", "-nodes", "-days", "30"])
        .args(key.newkey())
        .arg("-keyout")
        .arg(&key_file)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            &format!("/CN={HOST}"),
            "-addext",
            &format!("subjectAltName=DNS:{HOST}"),
        ]);
    let out = run_with_timeout(&mut command, Duration::from_secs(60))?;
    if !out.status.success() {
        bail!(
            "openssl req failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let fingerprint = fingerprint_of_file(&cert)?;
    Ok(Certificate {
        cert,
        key: key_file,
        fingerprint,
    })
}

/// `AB:CD:...` of a PEM certificate file.
fn fingerprint_of_file(cert: &Path) -> Result<String> {
    let out = run_with_timeout(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(cert),
        Duration::from_secs(30),
    )?;
    parse_fingerprint(&String::from_utf8_lossy(&out.stdout))
}

/// The value of `sha256 Fingerprint=AB:CD:...`.
fn parse_fingerprint(text: &str) -> Result<String> {
    text.lines()
        .find_map(|line| line.split_once("Fingerprint=").map(|(_, f)| f.trim()))
        .map(str::to_owned)
        .with_context(|| format!("no fingerprint in {text:?}"))
}

/// The manifests of xdp-ingress: the IngressClass, Service `svc-0` on the
/// lab's endpoints, the Secret and a TLS Ingress for [`HOST`].
fn manifests(certificate: &Certificate) -> Result<String> {
    let slice: Vec<SliceEndpoint> = ENDPOINTS
        .iter()
        .map(|e| SliceEndpoint::ready(e.ip()))
        .collect();
    let cert = std::fs::read(&certificate.cert)?;
    let key = std::fs::read(&certificate.key)?;
    let namespace = xdp::NAMESPACE;
    let service = xdp::service(0);
    Ok(format!(
        "{XDP_INGRESS_CLASS}---\n{}---
apiVersion: v1
kind: Secret
metadata: {{name: {SECRET}, namespace: {namespace}}}
type: kubernetes.io/tls
data:
  tls.crt: {}
  tls.key: {}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: ing-0, namespace: {namespace}}}
spec:
  ingressClassName: xdp
  tls: [{{hosts: [\"{HOST}\"], secretName: {SECRET}}}]
  rules:
  - host: {HOST}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}
",
        service_yaml(namespace, &service, 80, ENDPOINTS[0].port(), &slice),
        base64(&cert),
        base64(&key),
    ))
}

/// nginx's configuration: `bench l7`'s (one Ingress, as ingress-nginx
/// renders it), listening with `ssl http2` on the HTTPS address, with
/// ingress-nginx's TLS defaults and the certificate for every server.
fn nginx_config(prefix: &Path, listen: SocketAddr, certificate: &Certificate) -> String {
    let conf = nginx::config(prefix, listen, 1, &ENDPOINTS, UpstreamLayout::Shared);
    let tls = format!(
        "http {{
  # TLS as ingress-nginx configures it (its defaults), one certificate.
  ssl_certificate {cert};
  ssl_certificate_key {key};
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_ciphers '{INGRESS_NGINX_CIPHERS}';
  ssl_prefer_server_ciphers on;
  ssl_ecdh_curve auto;
  ssl_session_cache shared:SSL:10m;
  ssl_session_timeout 10m;
  ssl_session_tickets on;
  ssl_buffer_size 4k;
  http2_max_concurrent_streams 128;
  add_header Strict-Transport-Security \"max-age=31536000; includeSubDomains\" always;
",
        cert = certificate.cert.display(),
        key = certificate.key.display(),
    );
    conf.replacen("http {\n", &tls, 1)
        .replace(
            &format!("listen {listen} default_server"),
            &format!("listen {listen} ssl http2 default_server"),
        )
        .replace(
            &format!("listen {listen};"),
            &format!("listen {listen} ssl http2;"),
        )
}

impl Bench<'_> {
    fn lab(&self, proxy: Proxy) -> &BenchLab {
        self.labs.of(proxy)
    }

    fn https_addr(&self, proxy: Proxy) -> SocketAddr {
        SocketAddr::new(self.lab(proxy).proxy_addr().ip(), HTTPS_PORT)
    }

    /// Starts `proxy` terminating TLS with `certificate`.
    fn start(&self, proxy: Proxy, certificate: &Certificate) -> Result<UnderTest> {
        let lab = self.lab(proxy);
        let https = self.https_addr(proxy);
        Ok(match proxy {
            Proxy::XdpIngress => {
                let https_arg = https.to_string();
                let default_certificate = format!("{}/{SECRET}", xdp::NAMESPACE);
                let daemon = XdpIngress::start_with(
                    lab,
                    self.binaries,
                    &manifests(certificate)?,
                    self.args.xdp_mode,
                    &[
                        "--https-addr",
                        &https_arg,
                        "--default-ssl-certificate",
                        &default_certificate,
                    ],
                )?;
                xdp_ingress_lab::poll_until(
                    "xdp-ingress to accept HTTPS connections",
                    Duration::from_secs(10),
                    || Ok(lab.edge().accepts_tcp(https)?.then_some(())),
                )?;
                UnderTest::XdpIngress(daemon)
            }
            Proxy::Nginx => UnderTest::Nginx(Nginx::start_with_config(
                lab.edge(),
                PROXY_CPU,
                https,
                UpstreamLayout::Shared,
                |prefix| nginx_config(prefix, https, certificate),
            )?),
        })
    }

    /// Checks that `proxy` serves [`HOST`] over HTTPS (200) and presents
    /// `certificate` with and without SNI.
    fn check(&self, proxy: Proxy, certificate: &Certificate) -> Result<()> {
        let client = self.lab(proxy).client();
        let https = self.https_addr(proxy);
        let resolve = format!("{HOST}:{HTTPS_PORT}:{}", https.ip());
        let url = format!("https://{HOST}/");
        let cacert = certificate.cert.display().to_string();
        for version in ["--http1.1", "--http2"] {
            let out = client.exec_timeout(
                &[
                    "curl",
                    "-sS",
                    version,
                    "--cacert",
                    &cacert,
                    "--resolve",
                    &resolve,
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &url,
                ],
                Duration::from_secs(15),
            )?;
            let status = String::from_utf8_lossy(&out.stdout);
            ensure!(
                status.trim() == "200",
                "{} answered {status:?} over HTTPS ({version}): {}",
                proxy.name(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for sni in [format!("-servername {HOST}"), "-noservername".to_owned()] {
            let script = format!(
                "echo | openssl s_client -connect {https} {sni} 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
            );
            let out = client.exec_timeout(&["sh", "-c", &script], Duration::from_secs(15))?;
            let served = parse_fingerprint(&String::from_utf8_lossy(&out.stdout))
                .with_context(|| format!("{} ({sni}): no certificate", proxy.name()))?;
            ensure!(
                served == certificate.fingerprint,
                "{} ({sni}) served another certificate ({served})",
                proxy.name()
            );
        }
        Ok(())
    }

    /// One key type: both proxies started side by side, checked, then each
    /// metric measured in alternating rounds.
    fn row(&self, key: KeyType, certificate: &Certificate) -> Result<Vec<Run>> {
        let label = key.name();
        let mut started = Vec::new();
        for proxy in PROXIES {
            check_interrupted()?;
            self.progress
                .phase(&format!("{label}: starting {}", proxy.name()));
            let under_test = self.start(proxy, certificate)?;
            self.check(proxy, certificate)?;
            self.progress.detail(&format!(
                "serves https://{HOST}/ with the certificate, with and without SNI ({}, pids {:?})",
                under_test.workers(),
                under_test.pids()
            ));
            started.push((proxy, under_test));
        }
        let mut runs = Vec::new();
        for metric in Metric::ALL {
            if self.args.warmup > 0 {
                for (proxy, _) in &started {
                    check_interrupted()?;
                    self.progress.phase(&format!(
                        "{label}: {}, warming up {} ({} s)",
                        metric.name(),
                        proxy.name(),
                        self.args.warmup
                    ));
                    self.load(*proxy, metric, self.args.warmup)?;
                }
            }
            let samples = alternate_rounds(
                self.args.rounds,
                &mut started,
                |round, (proxy, under_test)| {
                    self.progress.phase(&format!(
                        "{label}: {}, round {round}/{}, {} ({} s)",
                        metric.name(),
                        self.args.rounds,
                        proxy.name(),
                        self.args.seconds
                    ));
                    let sample = self.sample(*proxy, under_test, metric)?;
                    self.progress.detail(&format!(
                        "{} {}, {} failed, proxy CPU {} (waited {}), core {} busy {} / core {} {}",
                        report::thousands(sample.rate),
                        metric.name(),
                        sample.failures,
                        report::percent(sample.cpu.proxy_cpu),
                        report::percent(sample.cpu.proxy_waited),
                        PROXY_CPU,
                        report::percent(sample.cpu.proxy_core_busy),
                        LOAD_CPU,
                        report::percent(sample.cpu.load_core_busy),
                    ));
                    Ok(sample)
                },
            )?;
            for ((proxy, under_test), samples) in started.iter().zip(samples) {
                if samples.iter().any(|s| s.failures > 0) {
                    self.progress
                        .detail(&format!("{} had failures; its log says:", proxy.name()));
                    for line in under_test.log_summary(5) {
                        self.progress.detail(&format!("  {line}"));
                    }
                }
                runs.push(Run {
                    proxy: *proxy,
                    key,
                    metric,
                    samples,
                });
            }
        }
        Ok(runs)
    }

    /// One round with the CPU accounting.
    fn sample(&self, proxy: Proxy, under_test: &mut UnderTest, metric: Metric) -> Result<Sample> {
        let ((rate, failures), cpu) =
            account_round(under_test, || self.load(proxy, metric, self.args.seconds))?;
        Ok(Sample {
            rate,
            failures,
            cpu,
        })
    }

    /// `seconds` of `metric`'s load against `proxy`: (rate, failures).
    fn load(&self, proxy: Proxy, metric: Metric, seconds: u64) -> Result<(f64, u64)> {
        match metric {
            Metric::Handshakes => self.handshakes(proxy, seconds),
            Metric::Requests => {
                let script = self.scratch.join("hosts.lua");
                let hosts = self.scratch.join("hosts").display().to_string();
                let report = WrkLoad {
                    client: self.lab(proxy).client(),
                    cpus: LOAD_CPU,
                    url: format!("https://{HOST}/"),
                    script: &script,
                    hosts: 1,
                    connections: self.args.connections,
                    duration: Duration::from_secs(seconds),
                }
                .run_wrapped(&[
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
                    &hosts,
                ])?;
                Ok((report.requests_per_second, report.failures()))
            }
        }
    }

    /// `--handshake-clients` threads making full handshakes for `seconds`:
    /// (handshakes per second, failed handshakes).
    fn handshakes(&self, proxy: Proxy, seconds: u64) -> Result<(f64, u64)> {
        let clock = Instant::now();
        let (done, failed) = run_handshakes(
            self.lab(proxy).client(),
            self.https_addr(proxy),
            self.args.handshake_clients,
            Duration::from_secs(seconds),
        )?;
        Ok((done as f64 / clock.elapsed().as_secs_f64(), failed))
    }
}

/// Accepts any certificate and signature: the handshake client leaves out
/// the checks (they cost the one client core as much as signing costs the
/// proxy); the proxy's work is that of any full handshake.
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The handshake client's configuration: TLS 1.3 and 1.2 (rustls's
/// defaults, aws-lc-rs), no session resumption, no tickets, no checks.
fn handshake_config() -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.enable_sni = true;
    Ok(Arc::new(config))
}

/// Pins the calling thread to CPU `cpu`.
fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity
    // only touch the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(())
}

/// Closes with a reset (SO_LINGER 0): no TIME_WAIT on the client, whose
/// ports would otherwise run out at thousands of connections a second.
fn close_with_reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads the linger struct we own for the socket we own.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

/// One full handshake with `addr` for [`HOST`] on a new connection, then
/// close_notify and a reset.
fn one_handshake(config: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(HOST)?;
    let mut connection = rustls::ClientConnection::new(config.clone(), name)?;
    while connection.is_handshaking() {
        connection.complete_io(&mut stream)?;
    }
    // The client's Finished, then close_notify.
    connection.send_close_notify();
    while connection.wants_write() {
        connection.write_tls(&mut stream)?;
    }
    close_with_reset(stream);
    Ok(())
}

/// `threads` client threads in `client`, each pinned to [`LOAD_CPU`],
/// making full handshakes with `addr` back to back for `duration`:
/// (handshakes completed, failed).
fn run_handshakes(
    client: &Netns,
    addr: SocketAddr,
    threads: u32,
    duration: Duration,
) -> Result<(u64, u64)> {
    let config = handshake_config()?;
    let cpu: usize = LOAD_CPU.parse().context("LOAD_CPU")?;
    let done = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let first_error = std::sync::Mutex::new(None::<String>);
    client.enter(|| {
        let deadline = Instant::now() + duration;
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    if let Err(error) = pin_to_cpu(cpu) {
                        failed.fetch_add(1, Ordering::Relaxed);
                        *first_error.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(format!("pinning: {error}"));
                        return;
                    }
                    while Instant::now() < deadline && !interrupted() {
                        match one_handshake(&config, addr) {
                            Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                            Err(error) => {
                                let mut first =
                                    first_error.lock().unwrap_or_else(|e| e.into_inner());
                                first.get_or_insert_with(|| format!("{error:#}"));
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                });
            }
        });
    })?;
    let (done, failed) = (done.into_inner(), failed.into_inner());
    if done == 0 {
        bail!(
            "no handshake with {addr} succeeded: {}",
            first_error
                .into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_default()
        );
    }
    Ok((done, failed))
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The results table with the ratios and the target, and how it was
/// measured.
fn render(args: &TlsArgs, runs: &[Run], background: f64) -> String {
    let find = |proxy: Proxy, key: KeyType, metric: Metric| {
        runs.iter()
            .find(|r| r.proxy == proxy && r.key == key && r.metric == metric)
    };
    let mut table = Table::new(&[
        "",
        "xdp-ingress",
        "nginx",
        "xdp-ingress / nginx",
        "target",
        "proxy core time per op (x / n)",
        "cores busy, proxy / client: xdp-ingress; nginx",
        "failed (x / n)",
    ]);
    for metric in Metric::ALL {
        for key in KeyType::ALL {
            let (Some(x), Some(n)) = (
                find(Proxy::XdpIngress, key, metric),
                find(Proxy::Nginx, key, metric),
            ) else {
                continue;
            };
            let per_op = |run: &Run| run.median(|s| s.cpu.proxy_core_busy / s.rate.max(1.0));
            let cores = |run: &Run| {
                format!(
                    "{} / {}",
                    report::percent(run.median(|s| s.cpu.proxy_core_busy)),
                    report::percent(run.median(|s| s.cpu.load_core_busy))
                )
            };
            let show = |run: &Run| {
                let (lo, hi) = run.spread();
                format!(
                    "{} ({}-{})",
                    report::thousands(run.rate()),
                    report::thousands(lo),
                    report::thousands(hi)
                )
            };
            table.row(vec![
                format!("{}, {}", metric.name(), key.name()),
                show(x),
                show(n),
                report::ratio(x.rate(), n.rate()),
                report::verdict(">= 1.00x", x.rate() >= n.rate()),
                format!("{} / {}", micros(per_op(x)), micros(per_op(n))),
                format!("{}; {}", cores(x), cores(n)),
                format!("{} / {}", x.failures(), n.failures()),
            ]);
        }
    }
    let mut text = String::from("# cargo xtask bench tls\n\n");
    text.push_str(&table.render());
    let disturbed: Vec<String> = runs
        .iter()
        .filter(|run| run.disturbed())
        .map(|run| {
            format!(
                "{}, {}, {}",
                run.proxy.name(),
                run.metric.name(),
                run.key.name()
            )
        })
        .collect();
    if !disturbed.is_empty() {
        let _ = write!(
            text,
            "\n**Disturbed:** other processes took the proxy's core for more than {} of every \
             round ({}): run again on an idle machine before trusting the ratios.\n",
            report::percent(DISTURBED_THRESHOLD),
            disturbed.join("; ")
        );
    }
    let load_bound = runs.iter().any(|run| {
        run.median(|s| s.cpu.load_core_busy) > 0.9 && run.median(|s| s.cpu.proxy_core_busy) < 0.9
    });
    if load_bound {
        text.push_str(
            "\n**Load-bound:** in some row a proxy's core was not saturated while the client's \
             core was: that figure is the client's ceiling, not the proxy's.\n",
        );
    }
    let _ = write!(
        text,
        "\nSame certificate and key for both (self-signed for {HOST}, made by `openssl req` per \
         run; xdp-ingress: a kubernetes.io/tls Secret of a TLS Ingress and \
         --default-ssl-certificate; nginx {version}: ssl_certificate of every server, \
         `listen 443 ssl http2`, ssl_protocols TLSv1.2 TLSv1.3, ingress-nginx's ssl_ciphers, \
         ssl_session_cache shared:SSL:10m, ssl_session_tickets on, HSTS). Full handshakes: \
         a rustls client (aws-lc-rs, in xtask) with {clients} threads on CPU {LOAD_CPU}, each \
         making a new connection and a full TLS 1.3 handshake (X25519, SNI {HOST}, no \
         resumption; the client checks no certificate or signature, to stay cheaper than the \
         proxy; close_notify, then a reset) back to back for {seconds} s, handshakes completed \
         per second. Proxy core time per op: the proxy's whole core (its process, softirqs, \
         XDP) busy time per handshake or request, which a load-bound row does not distort. Kept-alive requests: \
         `wrk -t1 -c{connections} -d{seconds}s https://{HOST}/` (SNI and Host {HOST}, \
         HTTP/1.1, TLS 1.3; the name from a hosts file bind-mounted in wrk's own mount \
         namespace), through to lab-backend. {rounds} round(s) per proxy and row alternating \
         between them after {warmup} s of warm-up, medians (range) over the rounds in which the \
         proxy waited for its core less than {threshold} of the time. Each proxy in its own copy \
         of the lab; clients and lab-backend on CPU {LOAD_CPU}, the proxy on CPU {PROXY_CPU} \
         (xdp-ingress: 1 tokio worker, {xdp}; nginx: worker_processes 1). CPUs busy before the \
         run: {background}.\n\nReproduce: `sudo cargo xtask bench tls` (options: \
         `cargo xtask bench tls --help`).\n",
        version = nginx_version(),
        clients = args.handshake_clients,
        seconds = args.seconds,
        connections = args.connections,
        rounds = args.rounds,
        warmup = args.warmup,
        threshold = report::percent(DISTURBED_THRESHOLD),
        xdp = args.xdp_mode.describe(),
        background = report::percent(background),
    );
    text
}

/// Seconds as `12.3 µs`.
fn micros(seconds: f64) -> String {
    format!("{:.1} µs", seconds * 1e6)
}

/// `1.22.1`, from `nginx -v`.
fn nginx_version() -> String {
    Command::new("nginx")
        .arg("-v")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .rsplit_once('/')
                .map(|(_, version)| version.to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn nginx_listens_with_tls() {
        let listen: SocketAddr = "198.18.0.1:443".parse().unwrap();
        let certificate = Certificate {
            cert: "/x/c.crt".into(),
            key: "/x/c.key".into(),
            fingerprint: String::new(),
        };
        let conf = nginx_config(Path::new("/x"), listen, &certificate);
        assert!(conf.contains("listen 198.18.0.1:443 ssl http2 default_server"));
        assert!(conf.contains("listen 198.18.0.1:443 ssl http2;"));
        assert!(conf.contains("ssl_certificate /x/c.crt;"));
        assert!(conf.contains("ssl_session_tickets on;"));
    }
}
