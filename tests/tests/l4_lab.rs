//! End-to-end tests of the kernel L4 tier: `xdp-ingress run` with
//! ingress-nginx's TCP and UDP services ConfigMaps in the edge namespace of
//! an [`EdgeLab`], three `lab-backend` processes as the endpoints of one
//! Service (TCP and UDP), and real clients in the client namespace:
//!
//! ```text
//!  client 198.18.0.2 <-> 198.18.0.1 edge (XDP; TCP :9000, UDP :9053 balanced in XDP)
//!                        198.18.3.1 <-> 198.18.3.2 backends, endpoints 198.19.0.x (:8080 TCP, :5353 UDP)
//! ```
//!
//! Full NAT (the default): the backends see the edge's address on their
//! link, so the replies come back into the edge on its backend-facing veth,
//! where the program must run too to translate them back: the daemon
//! attaches to both veths of the edge (with only the client-facing one, the
//! replies reach the edge's stack untranslated and the connections hang).
//! The lab is dual-stack: the same checks' essentials run over IPv6
//! (2001:db8::/32 inside the namespaces). `--l4-nat dnat` is tested too: the backends see the client's address and
//! route back through the edge (their default route). The edge forwards
//! (`ip_forward`), as `bpf_fib_lookup` requires.
//!
//! As the issue's lab facts say, native XDP on veth turns redirected
//! packets into frames: the outer ends (client's and backends') get
//! `ethtool -K DEV tx off gro on`, so they behave like real NICs (full
//! checksums out, GRO in). Generic (skb) mode needs neither, and is tested
//! without them.
//!
//! The backends answer HTTP (TCP) and UDP with a JSON report of which
//! endpoint served. Needs root, the daemon and `lab-backend`
//! (`cargo build -p ingress-userspace -p xdp-ingress-lab`), curl, ethtool
//! and nft. Every wait is bounded.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use xdp_ingress_lab::{
    self as lab, Backend, BackendReport, Daemon, EDGE_ADDR, EdgeLab, HttpConnection, ManifestDir,
    Netns, PinDir, poll_until,
};

/// The TCP service's port on the edge.
const TCP_PORT: u16 = 9000;
/// The UDP service's port on the edge.
const UDP_PORT: u16 = 9053;
/// The backends' TCP port (the Service's `targetPort`).
const BACKEND_TCP_PORT: u16 = 8080;
/// The backends' UDP port.
const BACKEND_UDP_PORT: u16 = 5353;
/// Connections of the spread check, in [`SPREAD_BATCHES`] batches of
/// connections open at once (under the usual 1024 descriptors). With 1200,
/// 15% off the even share is 3.7 standard deviations of a random spread.
const SPREAD_CONNECTIONS: usize = 1200;
/// Batches of the spread check.
const SPREAD_BATCHES: usize = 2;
/// How long the daemon may take to apply a manifest change.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Endpoint address `198.19.0.<host>`.
fn endpoint_ip(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 19, 0, host))
}

/// IPv6 endpoint address `2001:db8:19::<host>`.
fn endpoint_ip6(host: u8) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x19,
        0,
        0,
        0,
        0,
        u16::from(host),
    ))
}

/// The edge's IPv6 address on the client's link.
const EDGE_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// IPv6 of the links: client, edge (client side), edge (backend side), backends.
const CLIENT_LINK6: [&str; 2] = ["2001:db8::2/64", "2001:db8::1/64"];
const BACKEND_LINK6: [&str; 2] = ["2001:db8:3::1/64", "2001:db8:3::2/64"];

/// The TCP and UDP services ConfigMaps, the Service `default/echo` (TCP 80
/// -> 8080 named `tcp`, UDP 53 -> 5353 named `udp`) and its EndpointSlice
/// with `hosts` (all ready).
fn manifests(hosts: &[u8]) -> String {
    let mut yaml = format!(
        "\
apiVersion: v1
kind: ConfigMap
metadata: {{name: tcp-services, namespace: default}}
data: {{\"{TCP_PORT}\": \"default/echo:80\"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: udp-services, namespace: default}}
data: {{\"{UDP_PORT}\": \"default/echo:53\"}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  ports:
  - {{name: tcp, port: 80, targetPort: {BACKEND_TCP_PORT}, protocol: TCP}}
  - {{name: udp, port: 53, targetPort: {BACKEND_UDP_PORT}, protocol: UDP}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-lab
  namespace: default
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
ports:
- {{name: tcp, port: {BACKEND_TCP_PORT}, protocol: TCP}}
- {{name: udp, port: {BACKEND_UDP_PORT}, protocol: UDP}}
endpoints:
"
    );
    for host in hosts {
        yaml.push_str(&format!(
            "- {{addresses: [\"{}\"], conditions: {{ready: true}}}}\n",
            endpoint_ip(*host)
        ));
    }
    yaml.push_str(&format!(
        "\
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-lab6
  namespace: default
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv6
ports:
- {{name: tcp, port: {BACKEND_TCP_PORT}, protocol: TCP}}
- {{name: udp, port: {BACKEND_UDP_PORT}, protocol: UDP}}
endpoints:
"
    ));
    for host in hosts {
        yaml.push_str(&format!(
            "- {{addresses: [\"{}\"], conditions: {{ready: true}}}}\n",
            endpoint_ip6(*host)
        ));
    }
    yaml
}

/// Gives the lab's links IPv6 (the lab creates them IPv4-only): addresses
/// (neighbours are resolved by ND, as on a node), the edge's route to the
/// endpoints, the backends' default route back through the edge,
/// forwarding on the edge.
fn add_ipv6(lab: &EdgeLab) -> Result<()> {
    for (link, addrs) in [
        (&lab.client_link, CLIENT_LINK6),
        (&lab.backend_link, BACKEND_LINK6),
    ] {
        for (end, addr) in [(&link.a, addrs[0]), (&link.b, addrs[1])] {
            let ns = [&lab.client, &lab.edge, &lab.backend_ns]
                .into_iter()
                .find(|ns| Some(ns.name()) == end.ns.as_deref())
                .context("a link end outside the lab")?;
            ns.sysctl(&format!("net.ipv6.conf.{}.disable_ipv6", end.name), "0")?;
            ns.add_addrs(&end.name, &[addr])?;
        }
    }
    lab.edge.sysctl("net.ipv6.conf.all.forwarding", "1")?;
    lab.edge.add_route("2001:db8:19::/64", "2001:db8:3::2")?;
    lab.backend_ns
        .ip(&["-6", "route", "replace", "default", "via", "2001:db8:3::1"])?;
    Ok(())
}

/// The lab, its backends (one process per endpoint, named `be<host>`), the
/// manifests and the daemon; dropped daemon first, then backends, then the
/// lab.
struct L4Lab {
    daemon: Daemon,
    manifests: ManifestDir,
    backends: Vec<Backend>,
    lab: EdgeLab,
}

impl L4Lab {
    /// Builds the lab with endpoints `hosts` and starts the daemon in XDP
    /// `mode` with `--l4-nat nat`.
    fn start(mode: &str, nat: &str, hosts: &[u8]) -> Result<Self> {
        Self::start_with(mode, nat, hosts, None, &[])
    }

    /// [`L4Lab::start`] with the daemon's pin directory `bpffs` (a unique
    /// one when `None`) and `extra` arguments.
    fn start_with(
        mode: &str,
        nat: &str,
        hosts: &[u8],
        bpffs: Option<&Path>,
        extra: &[&str],
    ) -> Result<Self> {
        let lab = EdgeLab::create()?;
        lab.edge.sysctl("net.ipv4.ip_forward", "1")?;
        // The backends' replies to anything else than their link go back
        // through the edge (for dnat mode; full NAT needs only the link).
        lab.backend_ns
            .ip(&["route", "replace", "default", "via", "198.18.3.1"])?;
        add_ipv6(&lab)?;
        if mode == "native" {
            for (ns, dev) in [
                (&lab.client, &lab.client_link.a.name),
                (&lab.backend_ns, &lab.backend_link.b.name),
            ] {
                ns.exec_ok(&["ethtool", "-K", dev, "tx", "off", "gro", "on"])?;
            }
        }
        let manifest_dir = ManifestDir::new()?;
        manifest_dir.write("l4.yaml", &manifests(hosts))?;
        let mut this = Self {
            daemon: Self::daemon(&lab, &manifest_dir, mode, nat, bpffs, extra)?,
            manifests: manifest_dir,
            backends: Vec::new(),
            lab,
        };
        for &host in hosts {
            this.start_backend(host)?;
        }
        Ok(this)
    }

    /// Starts `xdp-ingress run` on both edge veths with the manifests of
    /// `manifest_dir` (see [`L4Lab::start_with`]).
    fn daemon(
        lab: &EdgeLab,
        manifest_dir: &ManifestDir,
        mode: &str,
        nat: &str,
        bpffs: Option<&Path>,
        extra: &[&str],
    ) -> Result<Daemon> {
        let mut builder = Daemon::in_netns(&lab.edge)
            .interface(&lab.client_link.b.name)
            .interface(&lab.backend_link.a.name)
            .args(&[
                "--xdp-mode",
                mode,
                "--l4-nat",
                nat,
                "--manifests",
                &manifest_dir.arg(),
                "--tcp-services-configmap",
                "default/tcp-services",
                "--udp-services-configmap",
                "default/udp-services",
                "--l4-address",
                &EDGE_ADDR.to_string(),
                "--l4-address",
                &EDGE_ADDR6.to_string(),
            ])
            .args(extra);
        if let Some(dir) = bpffs {
            builder = builder.bpffs(dir);
        }
        builder.start()
    }

    /// Starts the backend of endpoints `198.19.0.<host>` and
    /// `2001:db8:19::<host>` (TCP and UDP).
    fn start_backend(&mut self, host: u8) -> Result<()> {
        let (ip, ip6) = (endpoint_ip(host), endpoint_ip6(host));
        self.lab.add_endpoint_addr(ip)?;
        self.lab
            .backend_ns
            .add_addrs(&self.lab.backend_link.b.name, &[&format!("{ip6}/128")])?;
        let backend = Backend::builder(
            &self.lab.backend_ns,
            &format!("be{host}"),
            &[
                SocketAddr::new(ip, BACKEND_TCP_PORT),
                SocketAddr::new(ip6, BACKEND_TCP_PORT),
            ],
        )
        .udp_echo(SocketAddr::new(ip, BACKEND_UDP_PORT))
        .udp_echo(SocketAddr::new(ip6, BACKEND_UDP_PORT))
        .start()?;
        self.backends.push(backend);
        Ok(())
    }

    fn tcp_service(&self) -> SocketAddr {
        SocketAddr::from((EDGE_ADDR, TCP_PORT))
    }

    fn udp_service(&self) -> SocketAddr {
        SocketAddr::from((EDGE_ADDR, UDP_PORT))
    }

    /// What went wrong, with the daemon's log and the maps' state.
    fn diagnose(&self) -> String {
        let maps = lab::run_ok(
            std::process::Command::new("bpftool").args([
                "map",
                "dump",
                "pinned",
                &self
                    .daemon
                    .bpffs()
                    .join("verdict_stats")
                    .display()
                    .to_string(),
            ]),
        )
        .unwrap_or_default();
        format!("daemon log:\n{}\nverdict_stats:\n{maps}", self.daemon.log())
    }
}

/// What [`parallel_requests`] saw.
#[derive(Debug, Default)]
struct Spread {
    /// Requests served, by backend name.
    served: BTreeMap<String, usize>,
    /// Connections refused, reset or unanswered, and the first error.
    failed: usize,
    first_error: Option<String>,
}

/// Opens `count` connections to `addr` from `ns` at once (all open before
/// any request), then sends one request on each and reads its report.
fn parallel_requests(ns: &Netns, addr: SocketAddr, count: usize) -> Result<Spread> {
    let mut spread = Spread::default();
    let fail = |spread: &mut Spread, error: anyhow::Error| {
        spread.failed += 1;
        spread.first_error.get_or_insert(format!("{error:#}"));
    };
    let streams: Vec<Result<TcpStream>> = ns.enter(|| {
        (0..count)
            .map(|i| -> Result<TcpStream> {
                let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                    .with_context(|| format!("connection {i} to {addr}"))?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.set_write_timeout(Some(Duration::from_secs(5)))?;
                Ok(stream)
            })
            .collect()
    })?;
    let mut open = Vec::new();
    for stream in streams {
        match stream.and_then(|mut stream| {
            stream.write_all(b"GET / HTTP/1.1\r\nHost: l4.example\r\nConnection: close\r\n\r\n")?;
            Ok(stream)
        }) {
            Ok(stream) => open.push(stream),
            Err(error) => fail(&mut spread, error),
        }
    }
    for mut stream in open {
        let mut response = Vec::new();
        let report = stream
            .read_to_end(&mut response)
            .context("reading a response")
            .and_then(|_| {
                let at = response
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .context("no response head")?;
                BackendReport::parse(&response[at + 4..])
            });
        match report {
            Ok(report) => *spread.served.entry(report.backend).or_insert(0) += 1,
            Err(error) => fail(&mut spread, error),
        }
    }
    Ok(spread)
}

/// One UDP request from `ns` to `addr`, retried a few times (a datagram may
/// be lost while a backend binds); the backend's report.
fn udp_request(ns: &Netns, addr: SocketAddr) -> Result<BackendReport> {
    ns.enter(|| -> Result<BackendReport> {
        let socket = UdpSocket::bind(if addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        })?;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = vec![0u8; 65_536];
        for _ in 0..6 {
            socket.send_to(b"who are you?", addr)?;
            match socket.recv_from(&mut buf) {
                Ok((len, from)) => {
                    ensure!(from == addr, "the reply came from {from}, not {addr}");
                    return BackendReport::parse(&buf[..len]);
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(error) => return Err(error).context("receiving the UDP reply"),
            }
        }
        bail!("no UDP reply from {addr}")
    })?
}

fn check_l4(l4: &mut L4Lab, nat: &str) -> Result<()> {
    let tcp = l4.tcp_service();
    let udp = l4.udp_service();

    // TCP with curl.
    let reply = l4
        .lab
        .client
        .http_get(&format!("http://{tcp}/"), &[])
        .context("curl through the L4 service")?;
    ensure!(reply.status == 200, "curl got {}", reply.status);
    let report = reply.report()?;
    ensure!(
        report.endpoint.ends_with(":8080") && report.backend.starts_with("be"),
        "{report:?}"
    );
    // Full NAT: the backend saw the edge's backend-link address; dnat: the
    // client's.
    let peer = if nat == "full" {
        "198.18.3.1:"
    } else {
        "198.18.0.2:"
    };
    ensure!(
        report.peer.starts_with(peer),
        "{nat} NAT, peer {}",
        report.peer
    );

    // Many parallel connections, spread within 15%.
    let mut served = BTreeMap::new();
    for _ in 0..SPREAD_BATCHES {
        let spread = parallel_requests(&l4.lab.client, tcp, SPREAD_CONNECTIONS / SPREAD_BATCHES)?;
        ensure!(spread.failed == 0, "{spread:?}");
        for (backend, count) in spread.served {
            *served.entry(backend).or_insert(0) += count;
        }
    }
    let expected = SPREAD_CONNECTIONS as f64 / 3.0;
    ensure!(served.len() == 3, "served by {served:?}");
    for (backend, count) in &served {
        let off = (*count as f64 - expected).abs() / expected;
        ensure!(
            off <= 0.15,
            "{backend} served {count} of {SPREAD_CONNECTIONS}: {served:?}"
        );
    }

    // UDP request/response; different source ports reach every backend.
    let mut udp_backends = BTreeMap::new();
    for _ in 0..30 {
        let report = udp_request(&l4.lab.client, udp)?;
        ensure!(
            report.method == "UDP" && report.endpoint.ends_with(":5353"),
            "{report:?}"
        );
        *udp_backends.entry(report.backend).or_insert(0) += 1;
    }
    ensure!(udp_backends.len() == 3, "UDP served by {udp_backends:?}");

    // IPv6: curl, a batch of connections reaching every backend, UDP.
    let tcp6 = SocketAddr::from((EDGE_ADDR6, TCP_PORT));
    let reply = l4
        .lab
        .client
        .curl(&["-g", &format!("http://{tcp6}/")])
        .context("curl through the IPv6 L4 service")?;
    ensure!(reply.status == 200, "curl over IPv6 got {}", reply.status);
    let report = BackendReport::parse(&reply.body)?;
    ensure!(report.endpoint.starts_with("[2001:db8:19::"), "{report:?}");
    let peer6 = if nat == "full" {
        "[2001:db8:3::1]:"
    } else {
        "[2001:db8::2]:"
    };
    ensure!(
        report.peer.starts_with(peer6),
        "{nat} NAT over IPv6, peer {}",
        report.peer
    );
    let spread = parallel_requests(&l4.lab.client, tcp6, 90)?;
    ensure!(
        spread.failed == 0 && spread.served.len() == 3,
        "IPv6: {spread:?}"
    );
    let report = udp_request(&l4.lab.client, SocketAddr::from((EDGE_ADDR6, UDP_PORT)))?;
    ensure!(report.endpoint.starts_with("[2001:db8:19::"), "{report:?}");

    // A backend removed while a connection to another one stays open.
    let mut kept = HttpConnection::open(&l4.lab.client, tcp)?;
    let first = kept.request("GET", "/", "l4.example", &[], b"")?.report()?;
    let kept_host: u8 = first.backend.trim_start_matches("be").parse()?;
    let removed = if kept_host == 1 { 2 } else { 1 };
    let remaining: Vec<u8> = [1, 2, 3].into_iter().filter(|h| *h != removed).collect();
    l4.manifests.write("l4.yaml", &manifests(&remaining))?;
    let removed_name = format!("be{removed}");
    // Flows to the removed backend that were open when it went (none here
    // but those of a round in progress) are reset: a round must be clean.
    poll_until(
        "new flows to avoid the removed backend",
        APPLY_TIMEOUT,
        || {
            let spread = parallel_requests(&l4.lab.client, tcp, 60)?;
            Ok((spread.failed == 0
                && !spread.served.contains_key(&removed_name)
                && spread.served.len() == 2)
                .then_some(()))
        },
    )?;
    let again = kept.request("GET", "/", "l4.example", &[], b"")?.report()?;
    ensure!(
        again.backend == first.backend && again.peer == first.peer,
        "the open connection moved: {first:?} then {again:?}"
    );
    for _ in 0..20 {
        let report = udp_request(&l4.lab.client, udp)?;
        ensure!(
            report.backend != removed_name,
            "UDP still reaches {removed_name}"
        );
    }

    // A backend added.
    l4.start_backend(4)?;
    let mut hosts = remaining.clone();
    hosts.push(4);
    l4.manifests.write("l4.yaml", &manifests(&hosts))?;
    poll_until(
        "new flows to reach the added backend",
        APPLY_TIMEOUT,
        || {
            let spread = parallel_requests(&l4.lab.client, tcp, 60)?;
            Ok((spread.failed == 0 && spread.served.contains_key("be4")).then_some(()))
        },
    )?;
    let again = kept.request("GET", "/", "l4.example", &[], b"")?.report()?;
    ensure!(
        again.backend == first.backend,
        "the open connection moved to {}",
        again.backend
    );

    check_neighbours(l4, &mut kept, &first, tcp, udp)?;

    // It was XDP: forwards and replies counted, nothing left to the stack.
    let maps = l4.daemon.maps()?;
    let count = |name: &str| maps.verdicts.get(name).map_or(0, |c| c.packets);
    ensure!(
        count("l4-forward") >= SPREAD_CONNECTIONS as u64 * 3
            && count("l4-reply") >= SPREAD_CONNECTIONS as u64 * 3,
        "verdicts {:?}",
        maps.verdicts
    );
    // (`l4-no-neigh` counts the packets dropped while a next hop resolved.)
    for reason in ["l4-fib-pass", "l4-no-port", "l4-unsupported", "l4-no-route"] {
        ensure!(count(reason) == 0, "verdicts {:?}", maps.verdicts);
    }

    // `xdp-ingress maps --json` shows the services and backends, counted.
    let l4_json = &maps.raw["l4"];
    let services = l4_json["services"].as_array().context("no L4 services")?;
    let addresses = [EDGE_ADDR.to_string(), EDGE_ADDR6.to_string()];
    for (protocol, port, address) in [
        ("tcp", TCP_PORT, &addresses[0]),
        ("udp", UDP_PORT, &addresses[0]),
        ("tcp", TCP_PORT, &addresses[1]),
        ("udp", UDP_PORT, &addresses[1]),
    ] {
        let service = services
            .iter()
            .find(|s| s["protocol"] == protocol && s["port"] == port && s["address"] == **address)
            .with_context(|| format!("no {protocol} {address} {port} in {l4_json}"))?;
        ensure!(
            service["backends"] == 3
                && service["packets"].as_u64() > Some(0)
                && service["new_flows"].as_u64() > Some(0),
            "{service}"
        );
    }
    // The IPv4 backends (the IPv6 ones were checked by their traffic).
    let backends = l4_json["backends"].as_array().context("no L4 backends")?;
    for host in hosts {
        for port in [BACKEND_TCP_PORT, BACKEND_UDP_PORT] {
            let address = endpoint_ip(host).to_string();
            let backend = backends
                .iter()
                .find(|b| b["address"] == address.as_str() && b["port"] == port)
                .with_context(|| format!("no backend {address}:{port} in {l4_json}"))?;
            ensure!(backend["active"] == true, "{backend}");
            if host != 4 {
                ensure!(backend["new_flows"].as_u64() > Some(0), "{backend}");
            }
        }
    }
    let removed_address = endpoint_ip(removed).to_string();
    ensure!(
        backends
            .iter()
            .filter(|b| b["address"] == removed_address.as_str())
            .all(|b| b["active"] == false),
        "the removed backend is still active: {l4_json}"
    );
    if std::env::var_os("L4_LAB_PRINT_MAPS").is_some() {
        let table = lab::run_ok(
            std::process::Command::new(lab::daemon_binary()?)
                .args(["maps", "--bpffs"])
                .arg(l4.daemon.bpffs()),
        )?;
        eprintln!("{table}");
    }

    // Every backend's route leaves through the backend link, which has
    // the program: no warning about it.
    ensure!(
        !l4.daemon.log().contains("without an XDP program"),
        "a route warning although both links have XDP:\n{}",
        l4.daemon.log()
    );

    // No help from nftables (and so none from kube-proxy-style DNAT).
    let ruleset = l4.lab.edge.exec_ok(&["nft", "list", "ruleset"])?;
    ensure!(
        ruleset.trim().is_empty(),
        "the edge has nftables rules:\n{ruleset}"
    );
    Ok(())
}

/// The edge keeps its backends' next hops resolved by itself: the
/// neighbour table flushed in the middle of a flow, then the backends'
/// MAC address changed behind the same IPs (a pod replaced), and the open
/// connection, new connections over both families and UDP all get through.
fn check_neighbours(
    l4: &mut L4Lab,
    kept: &mut HttpConnection,
    first: &BackendReport,
    tcp: SocketAddr,
    udp: SocketAddr,
) -> Result<()> {
    let tcp6 = SocketAddr::from((EDGE_ADDR6, TCP_PORT));
    let all_through = |what: &str| -> Result<()> {
        let spread = parallel_requests(&l4.lab.client, tcp, 30)?;
        ensure!(spread.failed == 0, "{what}: {spread:?}");
        let spread = parallel_requests(&l4.lab.client, tcp6, 30)?;
        ensure!(spread.failed == 0, "{what}, IPv6: {spread:?}");
        udp_request(&l4.lab.client, udp).with_context(|| format!("{what}: UDP"))?;
        Ok(())
    };
    // The daemon made its backends' next hops kernel-managed entries.
    let table = l4
        .lab
        .edge
        .ip(&["-d", "neigh", "show", "dev", &l4.lab.backend_link.a.name])?;
    ensure!(
        table
            .lines()
            .any(|l| l.starts_with("198.18.3.2 ") && l.contains("managed")),
        "no managed entry for the backends' next hop:\n{table}"
    );

    l4.lab.edge.ip(&["neigh", "flush", "all"])?;
    l4.lab.edge.ip(&["-6", "neigh", "flush", "all"])?;
    let again = kept.request("GET", "/", "l4.example", &[], b"")?.report()?;
    ensure!(
        again.backend == first.backend,
        "after the flush the open connection moved to {}",
        again.backend
    );
    all_through("after the neighbour table was flushed")?;

    let link = l4.lab.backend_link.b.name.clone();
    l4.lab
        .backend_ns
        .ip(&["link", "set", "dev", &link, "address", "02:00:5e:10:00:19"])?;
    let changed = std::time::Instant::now();
    let again = kept.request("GET", "/", "l4.example", &[], b"")?.report()?;
    ensure!(
        again.backend == first.backend,
        "after the MAC change the open connection moved to {}",
        again.backend
    );
    eprintln!(
        "the open connection was answered {:?} after the backends' MAC changed",
        changed.elapsed()
    );
    all_through("after the backends' MAC address changed")?;
    let table = l4.lab.edge.ip(&["neigh", "show", "198.18.3.2"])?;
    ensure!(
        table.contains("02:00:5e:10:00:19"),
        "the edge kept the old MAC: {table}"
    );
    Ok(())
}

fn run_mode(mode: &str, nat: &str) -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let mut l4 = L4Lab::start(mode, nat, &[1, 2, 3])?;
    let result = check_l4(&mut l4, nat);
    if let Err(error) = result {
        bail!("{error:#}\n{}", l4.diagnose());
    }
    Ok(())
}

#[test]
fn l4_services_native() -> Result<()> {
    run_mode("native", "full")
}

#[test]
fn l4_services_native_dnat() -> Result<()> {
    run_mode("native", "dnat")
}

#[test]
fn l4_services_skb() -> Result<()> {
    run_mode("skb", "full")
}

#[test]
fn l4_services_skb_dnat() -> Result<()> {
    run_mode("skb", "dnat")
}

/// A daemon restart with `--keep-pins-on-exit`: the XDP program stays
/// attached through its pinned links while no daemon runs (a request on an
/// open TCP connection is still served then), and the next daemon takes
/// the links and maps over: the same connection keeps its backend and
/// every request on it is answered, before, during and after the restart.
fn restart_keeps_flows(mode: &str) -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let pins = PinDir::new();
    let keep = ["--keep-pins-on-exit"];
    let mut l4 = L4Lab::start_with(mode, "full", &[1, 2, 3], Some(pins.path()), &keep)?;
    let result = (|| -> Result<()> {
        let tcp = l4.tcp_service();
        let mut kept = HttpConnection::open(&l4.lab.client, tcp)?;
        let first = kept.request("GET", "/", "l4.example", &[], b"")?.report()?;
        let prog_before = attached_prog(&l4)?;

        l4.daemon.stop()?;
        ensure!(
            attached_prog(&l4)? == prog_before,
            "the program did not stay attached when the daemon exited with its pins kept"
        );
        // The program goes on forwarding: the next hops it needs stay.
        let table = l4
            .lab
            .edge
            .ip(&["-d", "neigh", "show", "dev", &l4.lab.backend_link.a.name])?;
        ensure!(
            table
                .lines()
                .any(|l| l.starts_with("198.18.3.2 ") && l.contains("managed")),
            "the managed next hop went with the daemon:\n{table}"
        );
        let between = kept.request("GET", "/", "l4.example", &[], b"")?.report()?;

        let restarted =
            L4Lab::daemon(&l4.lab, &l4.manifests, mode, "full", Some(pins.path()), &[])?;
        let old = std::mem::replace(&mut l4.daemon, restarted);
        drop(old);
        let prog_after = attached_prog(&l4)?;
        ensure!(
            prog_after != prog_before,
            "the restarted daemon did not replace the program ({prog_after:?})"
        );
        let after = kept.request("GET", "/", "l4.example", &[], b"")?.report()?;
        for report in [&between, &after] {
            ensure!(
                report.backend == first.backend && report.peer == first.peer,
                "the connection moved across the restart: {first:?} then {report:?}"
            );
        }
        ensure!(
            l4.daemon.log().contains("took over the pinned XDP link"),
            "the restarted daemon attached afresh:\n{}",
            l4.daemon.log()
        );
        // New flows work through the new program too.
        let spread = parallel_requests(&l4.lab.client, tcp, 30)?;
        ensure!(spread.failed == 0, "{spread:?}");
        Ok(())
    })();
    if let Err(error) = result {
        bail!("{error:#}\n{}", l4.diagnose());
    }
    // The last daemon ran without --keep-pins-on-exit: leaving, it detaches.
    l4.daemon.stop()?;
    ensure!(
        l4.lab.edge.xdp(&l4.lab.client_link.b.name)?.is_none(),
        "XDP is still attached after a daemon without --keep-pins-on-exit left"
    );
    Ok(())
}

/// The program id attached to each edge veth.
fn attached_prog(l4: &L4Lab) -> Result<Vec<u64>> {
    [&l4.lab.client_link.b.name, &l4.lab.backend_link.a.name]
        .into_iter()
        .map(|iface| {
            Ok(l4
                .lab
                .edge
                .xdp(iface)?
                .with_context(|| format!("no XDP program on {iface}"))?
                .prog_id)
        })
        .collect()
}

#[test]
fn restart_keeps_flows_native() -> Result<()> {
    restart_keeps_flows("native")
}

#[test]
fn restart_keeps_flows_skb() -> Result<()> {
    restart_keeps_flows("skb")
}

/// With the program on the client link only, the daemon warns that the
/// backends' route leaves through an interface without XDP (where a native
/// redirect may lose packets), naming the interface.
#[test]
fn warns_when_a_backend_route_has_no_xdp() -> Result<()> {
    if !lab::require_root() {
        return Ok(());
    }
    let lab = EdgeLab::create()?;
    lab.edge.sysctl("net.ipv4.ip_forward", "1")?;
    let manifest_dir = ManifestDir::new()?;
    manifest_dir.write("l4.yaml", &manifests(&[1]))?;
    let daemon = Daemon::in_netns(&lab.edge)
        .interface(&lab.client_link.b.name)
        .args(&[
            "--xdp-mode",
            "skb",
            "--manifests",
            &manifest_dir.arg(),
            "--tcp-services-configmap",
            "default/tcp-services",
            "--l4-address",
            &EDGE_ADDR.to_string(),
        ])
        .start()?;
    let backend_link = lab.backend_link.a.name.clone();
    poll_until("the route warning", APPLY_TIMEOUT, || {
        let log = daemon.log();
        Ok(log
            .lines()
            .any(|line| {
                line.contains("without an XDP program")
                    && line.contains(&backend_link)
                    && line.contains("198.19.0.1")
            })
            .then_some(()))
    })
    .with_context(|| format!("daemon log:\n{}", daemon.log()))?;
    Ok(())
}
