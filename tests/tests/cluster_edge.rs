//! End-to-end tests of cluster mode: the daemon watches a real API server
//! (etcd + kube-apiserver v1.37.2, with kube-controller-manager,
//! kube-scheduler and kwok playing the pods, from `cargo xtask setup
//! --k8s`) as the ServiceAccount of deploy/, under deploy/'s RBAC, not as
//! an admin. The quick-start's Deployments, Services and Ingresses are
//! created with kubectl; each Running pod's IP gets a real `lab-backend` in
//! the backends namespace of an [`EdgeLab`], so traffic from the client
//! namespace goes through XDP and the proxy to the pods as in a cluster.
//!
//! ```text
//!  client 198.18.0.2 <-> 198.18.0.1 edge (XDP, proxy :80/:443, metrics :10254)
//!                        198.18.3.1 <-> backends: pod IPs 198.19.64.0/18 :8080
//!  edge's 127.0.0.1:<apiserver port> --LoopbackBridge--> host's API server
//! ```
//!
//! Needs root, the daemon and `lab-backend` (`cargo build -p
//! ingress-userspace -p xdp-ingress-lab --features xdp-ingress-lab/backend`),
//! the Kubernetes binaries (`cargo xtask setup --k8s`), curl and openssl.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use rcgen::{CertificateParams, DnType, KeyPair};
use xdp_ingress_lab::{
    CurlReply, Daemon, EDGE_ADDR, EdgeLab, LoopbackBridge, Netns, SliceEndpoint, k8s::TestCluster,
    poll_until, require_root, service_yaml,
};

/// The port the pods' containers listen on (the Services' targetPort).
const POD_PORT: u16 = 8080;
/// The quick-start's hosts.
const WEB_HOST: &str = "web.myingressplayroom.com";
const HTTPD_HOST: &str = "httpd.ingressplayroom.com";
/// The namespace of the quick-start's objects.
const APP_NAMESPACE: &str = "demo";
/// The controller's namespace and ServiceAccount (deploy/).
const CONTROLLER_NAMESPACE: &str = "xdp-ingress";
const CONTROLLER_ACCOUNT: &str = "xdp-ingress";
/// Bounds of the waits.
const PODS_TIMEOUT: Duration = Duration::from_secs(60);
const CHANGE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long leadership may take to settle after the API server's restart or
/// the leader's death: the old Lease has to expire (15 s), the replicas try
/// again every 2 s, and a restarted API server answers 403 until its RBAC
/// caches are filled again.
const LEADER_TIMEOUT: Duration = Duration::from_secs(60);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A Deployment of `replicas` pods labelled app=`name` and its Service
/// (port 80 -> 8080).
fn app_yaml(name: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {APP_NAMESPACE}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: {name}
        image: lab/{name}:1
        ports: [{{containerPort: {POD_PORT}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {APP_NAMESPACE}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: {POD_PORT}}}]
"#
    )
}

/// An Ingress of class `class` routing `host` to Service `service`:80,
/// with TLS from Secret `tls_secret` when given.
fn ingress_yaml(
    name: &str,
    class: &str,
    host: &str,
    service: &str,
    tls_secret: Option<&str>,
) -> String {
    let tls = tls_secret
        .map(|secret| format!("  tls: [{{hosts: [{host}], secretName: {secret}}}]\n"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: {APP_NAMESPACE}}}
spec:
  ingressClassName: {class}
{tls}  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}
"#
    )
}

/// A self-signed certificate for `host` whose common name is `name`, as a
/// `kubernetes.io/tls` Secret.
fn tls_secret_yaml(secret: &str, host: &str, name: &str) -> Result<String> {
    let mut params = CertificateParams::new(vec![host.to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let b64 = |text: String| {
        use std::io::Write;
        let mut child = std::process::Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("base64 stdin")?
            .write_all(text.as_bytes())?;
        let out = child.wait_with_output()?;
        Ok::<_, anyhow::Error>(String::from_utf8(out.stdout)?)
    };
    Ok(format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {secret}, namespace: {APP_NAMESPACE}}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(cert.pem())?,
        b64(key.serialize_pem())?
    ))
}

/// The API server's port, from its URL.
fn apiserver_port(cluster: &TestCluster) -> Result<u16> {
    let url = cluster.server_url();
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .with_context(|| format!("no port in {url}"))?;
    Ok(port)
}

/// A cluster with deploy/ applied and the quick-start's apps (web with
/// `web_replicas`, httpd with 1) whose pods have backends in the lab.
struct ClusterLab {
    /// Dropped first: the daemons (they hold connections over the bridges).
    daemons: Vec<Daemon>,
    bridges: Vec<LoopbackBridge>,
    lab: EdgeLab,
    controller_kubeconfig: PathBuf,
    cluster: TestCluster,
    /// Pod IPs that have a backend already.
    served: BTreeSet<IpAddr>,
}

impl ClusterLab {
    fn start(web_replicas: u32) -> Result<Self> {
        let mut this = Self::with(TestCluster::builder().workloads(true).start()?)?;
        this.cluster
            .kubectl(&["create", "namespace", APP_NAMESPACE])?;
        this.cluster.apply(&app_yaml("web", web_replicas))?;
        this.cluster.apply(&app_yaml("httpd", 1))?;
        this.serve_pods("web", web_replicas as usize)?;
        this.serve_pods("httpd", 1)?;
        Ok(this)
    }

    /// A cluster without workloads (etcd and the API server only): no
    /// kube-controller-manager, so a deleted namespace stays Terminating, as
    /// it does while the namespace controller works through it. Services
    /// get their EndpointSlices by hand.
    fn bare() -> Result<Self> {
        Self::with(TestCluster::start()?)
    }

    /// `cluster` with deploy/ applied, and the lab.
    fn with(cluster: TestCluster) -> Result<Self> {
        let deploy = deploy_dir().display().to_string();
        cluster
            .kubectl(&["apply", "-k", &deploy])
            .context("kubectl apply -k deploy/")?;
        let controller_kubeconfig =
            cluster.service_account_kubeconfig(CONTROLLER_NAMESPACE, CONTROLLER_ACCOUNT)?;
        let lab = EdgeLab::create()?;
        let bridges = vec![LoopbackBridge::new(&lab.edge, apiserver_port(&cluster)?)?];
        Ok(Self {
            daemons: Vec::new(),
            bridges,
            lab,
            controller_kubeconfig,
            cluster,
            served: BTreeSet::new(),
        })
    }

    /// Waits for `replicas` Running pods of Deployment `app` and starts a
    /// backend named `app` on each new pod IP; returns the pod IPs.
    fn serve_pods(&mut self, app: &str, replicas: usize) -> Result<Vec<IpAddr>> {
        let ips = self
            .cluster
            .wait_deployment_pods(APP_NAMESPACE, app, replicas, PODS_TIMEOUT)?;
        let new: Vec<SocketAddr> = ips
            .iter()
            .filter(|ip| !self.served.contains(ip))
            .map(|ip| SocketAddr::new(*ip, POD_PORT))
            .collect();
        if !new.is_empty() {
            self.lab.start_backend(app, &new)?;
            self.served.extend(new.iter().map(SocketAddr::ip));
        }
        Ok(ips)
    }

    /// Starts a controller as the ServiceAccount of deploy/, publishing
    /// `status_address`: in the edge with XDP on its veth, or proxy-only in
    /// `standby`.
    fn start_controller(&mut self, standby: Option<&Netns>, status_address: &str) -> Result<()> {
        self.start_controller_with(standby, status_address, &[])
    }

    /// [`ClusterLab::start_controller`] with `extra` arguments.
    fn start_controller_with(
        &mut self,
        standby: Option<&Netns>,
        status_address: &str,
        extra: &[&str],
    ) -> Result<()> {
        let kubeconfig = self.controller_kubeconfig.display().to_string();
        let xdp = standby.is_none();
        let ns = standby.unwrap_or(&self.lab.edge);
        let mut builder = Daemon::in_netns(ns)
            .args(&[
                "--kubeconfig",
                &kubeconfig,
                "--publish-status-address",
                status_address,
            ])
            .env("POD_NAMESPACE", CONTROLLER_NAMESPACE)
            .env("RUST_LOG", "info,xdp_ingress=debug")
            .args(extra);
        if xdp {
            builder = builder
                .interface(self.lab.edge_interface())
                .args(&["--xdp-mode", "native"]);
        }
        self.daemons.push(builder.start()?);
        Ok(())
    }

    /// `kubectl scale` of Deployment `app` to `replicas`.
    fn scale(&self, app: &str, replicas: u32) -> Result<()> {
        let replicas = format!("--replicas={replicas}");
        self.cluster
            .kubectl(&["-n", APP_NAMESPACE, "scale", "deployment", app, &replicas])?;
        Ok(())
    }

    /// GET https://`host`/ through the edge, from the client namespace
    /// (certificates not verified: the tests look at them with openssl).
    fn get(&self, host: &str) -> Result<CurlReply> {
        let url = format!("https://{host}/");
        let resolve = format!("{host}:443:{EDGE_ADDR}");
        self.lab
            .client
            .curl(&["-sS", "-k", "--max-time", "5", "--resolve", &resolve, &url])
    }

    /// GET http://`host`/ through the edge.
    fn get_plain(&self, host: &str) -> Result<CurlReply> {
        let url = format!("http://{EDGE_ADDR}/");
        let header = format!("Host: {host}");
        self.lab
            .client
            .curl(&["-sS", "--max-time", "5", "-H", &header, &url])
    }

    /// Which pod served a GET for `host` (fails on anything but a 200).
    fn served_by(&self, host: &str) -> Result<(String, IpAddr)> {
        let reply = self.get(host)?;
        ensure!(
            reply.status == 200,
            "{host}: {} {}",
            reply.status,
            reply.text()
        );
        let report = reply.report()?;
        let endpoint: SocketAddr = report
            .endpoint
            .parse()
            .with_context(|| format!("endpoint {:?}", report.endpoint))?;
        Ok((report.backend, endpoint.ip()))
    }

    /// Polls until the controller's /readyz answers 200 through the edge.
    fn wait_ready(&self) -> Result<()> {
        let url = format!("http://{EDGE_ADDR}:10254/readyz");
        poll_until("the controller's /readyz", CHANGE_TIMEOUT, || {
            let reply = self.lab.client.curl(&["-sS", "--max-time", "2", &url])?;
            Ok((reply.status == 200).then_some(()))
        })
        .with_context(|| self.logs())
    }

    /// `status.loadBalancer.ingress[*].ip` of Ingress `name`.
    fn status_ips(&self, name: &str) -> Result<String> {
        self.status_ips_in(APP_NAMESPACE, name)
    }

    /// `status.loadBalancer.ingress[*].ip` of Ingress `namespace/name`.
    fn status_ips_in(&self, namespace: &str, name: &str) -> Result<String> {
        self.cluster.kubectl(&[
            "-n",
            namespace,
            "get",
            "ingress",
            name,
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ])
    }

    fn wait_status(&self, name: &str, expected: &str, timeout: Duration) -> Result<()> {
        self.wait_status_in(APP_NAMESPACE, name, expected, timeout)
    }

    fn wait_status_in(
        &self,
        namespace: &str,
        name: &str,
        expected: &str,
        timeout: Duration,
    ) -> Result<()> {
        poll_until(
            &format!("Ingress {namespace}/{name} status {expected:?}"),
            timeout,
            || Ok((self.status_ips_in(namespace, name)?.trim() == expected).then_some(())),
        )
        .with_context(|| self.logs())
    }

    fn describe(&self, name: &str) -> Result<String> {
        self.describe_in(APP_NAMESPACE, name)
    }

    fn describe_in(&self, namespace: &str, name: &str) -> Result<String> {
        self.cluster
            .kubectl(&["-n", namespace, "describe", "ingress", name])
    }

    fn wait_described(&self, name: &str, needle: &str) -> Result<String> {
        self.wait_described_in(APP_NAMESPACE, name, needle)
    }

    fn wait_described_in(&self, namespace: &str, name: &str, needle: &str) -> Result<String> {
        poll_until(
            &format!("`kubectl describe ingress {namespace}/{name}` showing {needle:?}"),
            CHANGE_TIMEOUT,
            || {
                let text = self.describe_in(namespace, name)?;
                Ok(text.contains(needle).then_some(text))
            },
        )
        .with_context(|| self.logs())
    }

    /// Who reported each `Sync` event on Ingress `name` (`kubectl get
    /// events`).
    fn sync_events(&self, name: &str) -> Result<Vec<String>> {
        let selector =
            format!("involvedObject.kind=Ingress,involvedObject.name={name},reason=Sync");
        let out = self.cluster.kubectl(&[
            "-n",
            APP_NAMESPACE,
            "get",
            "events",
            "--field-selector",
            &selector,
            "-o",
            "jsonpath={range .items[*]}{.reportingComponent}{\"\\n\"}{end}",
        ])?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    /// The daemons' logs, for failures.
    fn logs(&self) -> String {
        self.daemons
            .iter()
            .enumerate()
            .map(|(i, d)| format!("--- controller {i} log ---\n{}", d.log()))
            .collect()
    }
}

/// The pods that serve `count` GETs for `host`.
fn pods_serving(lab: &ClusterLab, host: &str, count: usize) -> Result<BTreeSet<IpAddr>> {
    let mut pods = BTreeSet::new();
    for _ in 0..count {
        pods.insert(lab.served_by(host)?.1);
    }
    Ok(pods)
}

fn s_client_subject(lab: &ClusterLab, host: &str) -> Result<String> {
    let script = format!(
        "echo | openssl s_client -connect {EDGE_ADDR}:443 -servername {host} 2>/dev/null | openssl x509 -noout -subject"
    );
    let out = lab
        .lab
        .client
        .exec_timeout(&["bash", "-c", &script], Duration::from_secs(15))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn quickstart_routes_writes_status_and_events_and_follows_changes() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut lab = ClusterLab::start(3)?;
    lab.cluster
        .apply(&tls_secret_yaml("web-tls", WEB_HOST, "web-cert-one")?)?;
    lab.cluster.apply(&ingress_yaml(
        "web",
        "xdp",
        WEB_HOST,
        "web",
        Some("web-tls"),
    ))?;
    lab.cluster
        .apply(&ingress_yaml("httpd", "xdp", HTTPD_HOST, "httpd", None))?;
    // Another controller's class: left alone entirely.
    lab.cluster.apply(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx}\nspec: {controller: k8s.io/ingress-nginx}\n",
    )?;
    lab.cluster.apply(&ingress_yaml(
        "theirs",
        "nginx",
        "theirs.example.com",
        "web",
        None,
    ))?;
    lab.start_controller(None, &EDGE_ADDR.to_string())?;
    lab.wait_ready()?;

    // Routing, to every pod of web and to httpd.
    let web_pods = lab
        .cluster
        .wait_deployment_pods(APP_NAMESPACE, "web", 3, PODS_TIMEOUT)?;
    let (name, _) = lab.served_by(HTTPD_HOST).with_context(|| lab.logs())?;
    assert_eq!(name, "httpd");
    let seen = pods_serving(&lab, WEB_HOST, 12)?;
    assert_eq!(
        seen,
        web_pods.iter().copied().collect::<BTreeSet<_>>(),
        "round-robin over the three pods"
    );
    assert_eq!(lab.get("theirs.example.com")?.status, 404);
    // Plain HTTP to a host with TLS goes to HTTPS, as with ingress-nginx.
    assert_eq!(lab.get_plain(WEB_HOST)?.status, 308);
    assert_eq!(lab.get_plain(HTTPD_HOST)?.status, 200);

    // Status: `kubectl get ingress` shows the address; not on theirs.
    lab.wait_status("web", &EDGE_ADDR.to_string(), CHANGE_TIMEOUT)?;
    lab.wait_status("httpd", &EDGE_ADDR.to_string(), CHANGE_TIMEOUT)?;
    let table = lab
        .cluster
        .kubectl(&["-n", APP_NAMESPACE, "get", "ingress"])?;
    let web_row = table
        .lines()
        .find(|l| l.starts_with("web "))
        .context("web row")?;
    assert!(web_row.contains(&EDGE_ADDR.to_string()), "{table}");
    assert_eq!(
        lab.status_ips("theirs")?.trim(),
        "",
        "another class's status"
    );
    // Both were created before the controller started: it announced each
    // once on taking the lead, as ingress-nginx's Sync for every Ingress
    // it serves.
    for name in ["web", "httpd"] {
        lab.wait_described(name, "Scheduled for sync")?;
        assert_eq!(lab.sync_events(name)?, ["xdp-ingress"], "{name}");
    }

    // Events: a Sync on ours, a Warning for a missing Service.
    lab.cluster.apply(&ingress_yaml(
        "broken",
        "xdp",
        "broken.example.com",
        "no-such-service",
        None,
    ))?;
    lab.wait_described("broken", "ServiceNotFound")?;
    let described = lab.wait_described("broken", "Sync")?;
    assert!(described.contains("Warning"), "{described}");
    assert_eq!(lab.get("broken.example.com")?.status, 503);
    assert_eq!(lab.served_by(WEB_HOST)?.0, "web", "the others keep serving");
    assert!(
        !lab.describe("theirs")?.contains("Sync"),
        "no events on theirs"
    );

    // TLS from the Secret, and a new certificate for new handshakes.
    let subject = poll_until("the web-tls certificate", CHANGE_TIMEOUT, || {
        let subject = s_client_subject(&lab, WEB_HOST)?;
        Ok(subject.contains("web-cert-one").then_some(subject))
    })
    .with_context(|| lab.logs())?;
    println!("served: {subject}");
    lab.cluster
        .apply(&tls_secret_yaml("web-tls", WEB_HOST, "web-cert-two")?)?;
    poll_until("the rotated certificate", CHANGE_TIMEOUT, || {
        Ok(s_client_subject(&lab, WEB_HOST)?
            .contains("web-cert-two")
            .then_some(()))
    })
    .with_context(|| lab.logs())?;

    // Scaling: to one pod, then back to two; traffic follows.
    let scaled = Instant::now();
    lab.scale("web", 1)?;
    let left = lab.serve_pods("web", 1)?;
    poll_until("web traffic on the one pod left", CHANGE_TIMEOUT, || {
        Ok((pods_serving(&lab, WEB_HOST, 6)? == left.iter().copied().collect()).then_some(()))
    })
    .with_context(|| lab.logs())?;
    println!(
        "scale to 1 followed {:?} after the kubectl scale",
        scaled.elapsed()
    );
    lab.scale("web", 2)?;
    let two: BTreeSet<IpAddr> = lab.serve_pods("web", 2)?.into_iter().collect();
    poll_until("web traffic on both pods", CHANGE_TIMEOUT, || {
        Ok((pods_serving(&lab, WEB_HOST, 8)? == two).then_some(()))
    })
    .with_context(|| lab.logs())?;

    // The metrics saw all of it.
    let metrics = lab.lab.client.curl(&[
        "-sS",
        "--max-time",
        "5",
        &format!("http://{EDGE_ADDR}:10254/metrics"),
    ])?;
    let text = metrics.text();
    assert!(
        text.contains(&format!(
            "xdp_ingress_request_duration_seconds_count{{ingress=\"{APP_NAMESPACE}/web\",host=\"{WEB_HOST}\",service=\"{APP_NAMESPACE}/web:80\",status=\"2xx\"}}"
        )),
        "{text}"
    );
    assert!(
        text.contains("xdp_ingress_xdp_listener_packets_total"),
        "{text}"
    );
    assert!(
        text.contains("xdp_ingress_tls_handshakes_total{result=\"ok\"}"),
        "{text}"
    );
    Ok(())
}

#[test]
fn serving_survives_an_api_server_outage_and_a_killed_leader_hands_over() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    // Declared first, dropped last: outlives the daemon inside it.
    let standby = Netns::new("standby")?;
    let mut lab = ClusterLab::start(1)?;
    lab.cluster
        .apply(&ingress_yaml("web", "xdp", WEB_HOST, "web", None))?;
    lab.start_controller(None, "198.18.0.1")?;
    lab.wait_ready()?;
    lab.wait_status("web", "198.18.0.1", CHANGE_TIMEOUT)?;
    // A second replica, proxy only, in a namespace of its own: it waits
    // for the Lease.
    lab.bridges.push(LoopbackBridge::new(
        &standby,
        apiserver_port(&lab.cluster)?,
    )?);
    lab.start_controller(Some(&standby), "198.18.0.9")?;

    // The API server goes away for 30 s: requests keep being served.
    lab.cluster.stop_apiserver()?;
    let outage = Instant::now();
    let mut served = 0;
    while outage.elapsed() < Duration::from_secs(30) && served < 200 {
        let (name, _) = lab.served_by(WEB_HOST).with_context(|| lab.logs())?;
        assert_eq!(name, "web");
        served += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    lab.cluster.start_apiserver()?;
    println!(
        "{served} requests served during a {:?} outage",
        outage.elapsed()
    );
    ensure!(served > 20, "too few requests during the outage: {served}");
    // The watches resume: a new Ingress is taken in.
    lab.cluster
        .apply(&ingress_yaml("httpd", "xdp", HTTPD_HOST, "httpd", None))?;
    poll_until(
        "httpd routed after the outage",
        Duration::from_secs(90),
        || Ok((lab.get(HTTPD_HOST)?.status == 200).then_some(())),
    )
    .with_context(|| lab.logs())?;
    // The Lease expired during the outage: either replica may lead now,
    // and the leader writes its address on both Ingresses.
    let addresses = ["198.18.0.1", "198.18.0.9"];
    let leader_address = poll_until("a leader writing the status", LEADER_TIMEOUT, || {
        let web = lab.status_ips("web")?.trim().to_owned();
        let httpd = lab.status_ips("httpd")?.trim().to_owned();
        Ok((web == httpd && addresses.contains(&web.as_str())).then_some(web))
    })
    .with_context(|| lab.logs())?;
    let leader_index = addresses
        .iter()
        .position(|a| *a == leader_address)
        .context("leader index")?;
    let other_address = addresses[1 - leader_index];

    // Kill the leader (no release): the other replica takes the Lease once
    // it expires and publishes its own address.
    let killed = Instant::now();
    let leader = lab.daemons.remove(leader_index);
    // SAFETY: kill(2) on the daemon's pid, a child of this test.
    let rc = unsafe { libc::kill(leader.pid() as i32, libc::SIGKILL) };
    ensure!(rc == 0, "kill -9 {}", leader.pid());
    drop(leader);
    lab.wait_status("web", other_address, LEADER_TIMEOUT)?;
    lab.wait_status("httpd", other_address, LEADER_TIMEOUT)?;
    // Each new leader found web's Sync event of the first: none again.
    // httpd, created while the lead was in question, got one too.
    assert_eq!(lab.sync_events("web")?, ["xdp-ingress"]);
    lab.wait_described("httpd", "Scheduled for sync")?;
    println!(
        "the replica at {other_address} took over from {leader_address} after {:?}",
        killed.elapsed()
    );
    ensure!(lab.daemons.len() == 1, "the other replica is gone");
    Ok(())
}

/// A catch-all `defaultBackend` Ingress and its Service, in `namespace`,
/// the Service's one endpoint at `endpoint` (an EndpointSlice by hand).
fn fallback_yaml(namespace: &str, endpoint: SocketAddr) -> String {
    let service = service_yaml(
        namespace,
        "web",
        80,
        endpoint.port(),
        &[SliceEndpoint::ready(endpoint.ip())],
    );
    format!(
        r#"{service}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: fallback, namespace: {namespace}}}
spec:
  ingressClassName: xdp
  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}
"#
    )
}

/// Issue 16's sequence against the real API server: the namespace of the
/// oldest catch-all `defaultBackend` Ingress is deleted and its endpoints
/// go, while a newer namespace has its own: the newer one serves at once
/// rather than 503, and gets its address then, not before: while it lost
/// the conflict it had none and a NotServed Warning. The old one's address
/// goes. The same for an Ingress being deleted (held by a finalizer). No
/// kube-controller-manager runs: a deleted namespace stays Terminating.
#[test]
fn an_ingress_going_away_never_shadows_a_live_one() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut lab = ClusterLab::bare()?;
    let backends = [
        ("old", SocketAddr::from(([198, 19, 7, 1], POD_PORT))),
        ("new", SocketAddr::from(([198, 19, 7, 2], POD_PORT))),
        ("newer", SocketAddr::from(([198, 19, 7, 3], POD_PORT))),
    ];
    for (namespace, endpoint) in backends {
        lab.lab.start_backend(namespace, &[endpoint])?;
        lab.cluster.kubectl(&["create", "namespace", namespace])?;
    }
    lab.cluster.apply(&fallback_yaml("old", backends[0].1))?;
    let edge = EDGE_ADDR.to_string();
    lab.start_controller(None, &edge)?;
    lab.wait_ready()?;
    // Which namespace's backend answers a request for any host.
    let served = |lab: &ClusterLab| -> Result<String> {
        let reply = lab.get_plain("any.example.com")?;
        Ok(match reply.report() {
            Ok(report) if reply.status == 200 => report.backend,
            _ => format!("status {}", reply.status),
        })
    };
    let wait_served = |lab: &ClusterLab, by: &str| {
        poll_until(&format!("{by} to serve"), CHANGE_TIMEOUT, || {
            Ok((served(lab)? == by).then_some(()))
        })
        .with_context(|| lab.logs())
    };
    wait_served(&lab, "old")?;
    lab.wait_status_in("old", "fallback", &edge, CHANGE_TIMEOUT)?;

    // A newer namespace's catch-all loses to the old one: no address, and
    // a Warning that says why.
    lab.cluster.apply(&fallback_yaml("new", backends[1].1))?;
    let described = lab.wait_described_in("new", "fallback", "NotServed")?;
    assert!(described.contains("DefaultBackendConflict"), "{described}");
    assert_eq!(lab.status_ips_in("new", "fallback")?.trim(), "");
    assert_eq!(served(&lab)?, "old");

    // The old namespace is deleted; its endpoints go first.
    lab.cluster
        .kubectl(&["delete", "namespace", "old", "--wait=false"])?;
    lab.cluster
        .kubectl(&["-n", "old", "delete", "endpointslice", "web-lab"])?;
    let phase =
        lab.cluster
            .kubectl(&["get", "namespace", "old", "-o", "jsonpath={.status.phase}"])?;
    assert_eq!(phase.trim(), "Terminating");
    wait_served(&lab, "new")?;
    for _ in 0..5 {
        assert_eq!(served(&lab)?, "new", "no 503 from the old Ingress");
    }
    lab.wait_status_in("new", "fallback", &edge, CHANGE_TIMEOUT)?;
    lab.wait_status_in("old", "fallback", "", CHANGE_TIMEOUT)?;

    // An Ingress being deleted (a finalizer holds it) ranks after a live
    // one too: the newest namespace takes over from `new`.
    lab.cluster.apply(&fallback_yaml("newer", backends[2].1))?;
    lab.wait_described_in("newer", "fallback", "NotServed")?;
    assert_eq!(lab.status_ips_in("newer", "fallback")?.trim(), "");
    lab.cluster.kubectl(&[
        "-n",
        "new",
        "patch",
        "ingress",
        "fallback",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["lab.xdp-ingress.io/hold"]}}"#,
    ])?;
    lab.cluster
        .kubectl(&["-n", "new", "delete", "ingress", "fallback", "--wait=false"])?;
    wait_served(&lab, "newer")?;
    lab.wait_status_in("newer", "fallback", &edge, CHANGE_TIMEOUT)?;
    lab.wait_status_in("new", "fallback", "", CHANGE_TIMEOUT)?;
    // Let it go (the cluster goes with the test anyway).
    lab.cluster.kubectl(&[
        "-n",
        "new",
        "patch",
        "ingress",
        "fallback",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])?;
    // No event was attempted where the API server refuses new objects (the
    // Terminating namespace), and every call went through (RBAC included).
    let logs = lab.logs();
    for failure in [
        "publishing an event",
        "updating the Ingress status",
        "clearing the Ingress status",
        "listing our Sync events",
    ] {
        assert!(!logs.contains(failure), "{failure}:\n{logs}");
    }
    Ok(())
}

/// An L4 service of the tcp-services ConfigMap whose endpoint sits on the
/// edge's backend link where no host answers ARP: the controller keeps
/// trying to resolve it and says so on the Service, as a
/// `NextHopUnresolved` Warning that `kubectl describe service` shows. In
/// the same cluster, an Ingress guarded by access control xdp-ingress does
/// not enforce yet (global auth, from a ConfigMap not read yet) answers
/// 503, with an `UnsupportedAnnotation` Warning.
#[test]
fn an_unresolvable_l4_next_hop_and_an_unenforced_auth_are_warnings() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut lab = ClusterLab::bare()?;
    lab.cluster.kubectl(&["create", "namespace", "l4"])?;
    // 198.18.3.77: on the edge's backend link (198.18.3.0/24), nobody there.
    let ghost = SliceEndpoint::ready("198.18.3.77".parse()?);
    let config_map = format!(
        r#"---
apiVersion: v1
kind: ConfigMap
metadata: {{name: tcp-services, namespace: {CONTROLLER_NAMESPACE}}}
data: {{"9000": "l4/ghost:9000"}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: guarded
  namespace: l4
  annotations: {{nginx.ingress.kubernetes.io/auth-proxy-set-headers: "l4/headers"}}
spec:
  ingressClassName: xdp
  rules:
  - host: guarded.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: ghost, port: {{number: 9000}}}}}}}}
"#
    );
    lab.cluster
        .apply(&(service_yaml("l4", "ghost", 9000, 9000, &[ghost]) + &config_map))?;
    let edge = EDGE_ADDR.to_string();
    let tcp_services = format!("{CONTROLLER_NAMESPACE}/tcp-services");
    let backend_link = lab.lab.backend_link.a.name.clone();
    lab.start_controller_with(
        None,
        &edge,
        &[
            "--tcp-services-configmap",
            &tcp_services,
            "--interface",
            &backend_link,
            "--l4-address",
            &edge,
        ],
    )?;
    lab.wait_ready()?;
    let described = poll_until(
        "`kubectl describe service l4/ghost` showing NextHopUnresolved",
        CHANGE_TIMEOUT,
        || {
            let text = lab
                .cluster
                .kubectl(&["-n", "l4", "describe", "service", "ghost"])?;
            Ok(text.contains("NextHopUnresolved").then_some(text))
        },
    )
    .with_context(|| lab.logs())?;
    ensure!(
        described.contains("Warning") && described.contains("198.18.3.77"),
        "{described}"
    );
    // The daemon made the next hop a kernel-managed entry, which failed.
    let table = lab.lab.edge.ip(&["-d", "neigh", "show", "198.18.3.77"])?;
    ensure!(table.contains("managed"), "{table}");

    let described = lab.wait_described_in("l4", "guarded", "UnsupportedAnnotation")?;
    ensure!(
        described.contains("auth-proxy-set-headers") && described.contains("503"),
        "{described}"
    );
    let reply = lab.get_plain("guarded.example.com")?;
    ensure!(
        reply.status == 503 && reply.text().contains("xdp-ingress"),
        "the guarded Ingress answered {} {:?}",
        reply.status,
        reply.text()
    );
    Ok(())
}

/// An `auth` Secret with the htpasswd line of user `foo` and `password`
/// (`openssl passwd -apr1`), in namespace `auth`.
fn htpasswd_secret_yaml(password: &str) -> Result<String> {
    let out = std::process::Command::new("openssl")
        .args(["passwd", "-apr1", password])
        .output()
        .context("running openssl passwd")?;
    ensure!(out.status.success(), "openssl passwd: {out:?}");
    let hash = String::from_utf8(out.stdout)?.trim().to_owned();
    Ok(format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: basic-auth, namespace: auth}}\ntype: Opaque\nstringData:\n  auth: \"foo:{hash}\\n\"\n"
    ))
}

/// Basic auth in a cluster: the Opaque Secret comes through the watch
/// (under deploy/'s RBAC), a new password in it applies without touching
/// the Ingress, and a deleted Secret fails closed.
#[test]
fn basic_auth_follows_its_secret() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut lab = ClusterLab::bare()?;
    let web = SocketAddr::from(([198, 19, 7, 1], POD_PORT));
    lab.lab.start_backend("web", &[web])?;
    lab.cluster.kubectl(&["create", "namespace", "auth"])?;
    let ingress = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: guarded
  namespace: auth
  annotations:
    nginx.ingress.kubernetes.io/auth-type: basic
    nginx.ingress.kubernetes.io/auth-secret: basic-auth
    nginx.ingress.kubernetes.io/auth-realm: "Authentication Required - foo"
spec:
  ingressClassName: xdp
  rules:
  - host: guarded.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;
    lab.cluster.apply(
        &(service_yaml(
            "auth",
            "web",
            80,
            POD_PORT,
            &[SliceEndpoint::ready(web.ip())],
        ) + "---\n"
            + &htpasswd_secret_yaml("bar")?
            + "---\n"
            + ingress),
    )?;
    let edge = EDGE_ADDR.to_string();
    lab.start_controller(None, &edge)?;
    lab.wait_ready()?;
    let status = |lab: &ClusterLab, user: &str| -> Result<u16> {
        let url = format!("http://{EDGE_ADDR}/");
        Ok(lab
            .lab
            .client
            .curl(&[
                "-sS",
                "--max-time",
                "5",
                "-H",
                "Host: guarded.example.com",
                "-u",
                user,
                &url,
            ])?
            .status)
    };
    let wait = |lab: &ClusterLab, what: &str, expected: &[(&str, u16)]| {
        poll_until(what, CHANGE_TIMEOUT, || {
            for (user, code) in expected {
                if status(lab, user)? != *code {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        })
        .with_context(|| lab.logs())
    };
    wait(
        &lab,
        "foo:bar to get in",
        &[("foo:bar", 200), ("foo:baz", 401)],
    )?;
    lab.cluster.apply(&htpasswd_secret_yaml("newpass")?)?;
    wait(
        &lab,
        "the new password to replace the old",
        &[("foo:newpass", 200), ("foo:bar", 401)],
    )?;
    lab.cluster
        .kubectl(&["-n", "auth", "delete", "secret", "basic-auth"])?;
    wait(&lab, "the Ingress to fail closed", &[("foo:newpass", 503)])?;
    let described = lab.wait_described_in("auth", "guarded", "InvalidAnnotation")?;
    ensure!(described.contains("not found"), "{described}");
    Ok(())
}
