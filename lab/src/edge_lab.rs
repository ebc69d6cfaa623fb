//! The lab of the L7 edge: three namespaces, as a node sits between its
//! clients and its pods.
//!
//! ```text
//!  client                 edge                                    backends
//!  198.18.0.2/24 <-veth-> 198.18.0.1/24 (XDP, proxy on :80)
//!                         198.18.3.1/24                <-veth->   198.18.3.2/24
//!                         198.19.0.0/16 via 198.18.3.2            198.19.x.y/32: endpoints
//! ```
//!
//! Endpoints (pod IPs) are host addresses in 198.19.0.0/16 on the backends'
//! side, which the edge reaches through its route; the client reaches only
//! the edge (no forwarding: the proxy is the way in).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::{Context, Result};

use crate::{
    backend::{Backend, BackendBuilder},
    netns::Netns,
    veth::Veth,
};

/// The client's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The edge's address on the client's link: the "node" clients talk to.
pub const EDGE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The edge's address on the backends' link (the proxy's source address).
pub const EDGE_BACKEND_LINK_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 1);
/// The backends' address on their link with the edge.
pub const BACKENDS_LINK_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 2);
/// Where endpoint addresses come from (routed by the edge to the backends).
pub const ENDPOINT_SUBNET: &str = "198.19.0.0/16";

/// How long the edge may take to reach a new backend.
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

/// Client, edge and backends namespaces joined by two veth pairs (see the
/// module's picture), and the backends started in it. Dropped in order:
/// backends, links, namespaces.
#[derive(Debug)]
pub struct EdgeLab {
    backends: Vec<Backend>,
    /// Client (`a`) to edge (`b`).
    pub client_link: Veth,
    /// Edge (`a`) to backends (`b`).
    pub backend_link: Veth,
    /// Where clients run.
    pub client: Netns,
    /// Where the daemon runs.
    pub edge: Netns,
    /// Where the backends run.
    pub backend_ns: Netns,
    endpoint_addrs: Vec<IpAddr>,
}

impl EdgeLab {
    /// Creates the namespaces, links, addresses and the edge's route to the
    /// endpoints. Neighbours are resolved by ARP as on a node: no entry is
    /// made by hand.
    pub fn create() -> Result<Self> {
        Self::create_as(false)
    }

    /// [`EdgeLab::create`] with permanent neighbour entries on both links,
    /// for benchmarks that measure the steady state only (no ARP or ND
    /// crosses the links, so packet counts stay exact).
    pub fn create_with_static_neighbors() -> Result<Self> {
        Self::create_as(true)
    }

    fn create_as(static_neighbors: bool) -> Result<Self> {
        let client = Netns::new("l7cli")?;
        let edge = Netns::new("l7edge")?;
        let backend_ns = Netns::new("l7be")?;
        let link = |a: &Netns, b: &Netns, addr_a: String, addr_b: String| {
            let veth = Veth::between(Some(a), Some(b))
                .addrs_a(&[&addr_a])
                .addrs_b(&[&addr_b]);
            if static_neighbors {
                veth.static_neighbors().create()
            } else {
                veth.create()
            }
        };
        let client_link = link(
            &client,
            &edge,
            format!("{CLIENT_ADDR}/24"),
            format!("{EDGE_ADDR}/24"),
        )?;
        let backend_link = link(
            &edge,
            &backend_ns,
            format!("{EDGE_BACKEND_LINK_ADDR}/24"),
            format!("{BACKENDS_LINK_ADDR}/24"),
        )?;
        edge.add_route(ENDPOINT_SUBNET, &BACKENDS_LINK_ADDR.to_string())?;
        Ok(Self {
            backends: Vec::new(),
            client_link,
            backend_link,
            client,
            edge,
            backend_ns,
            endpoint_addrs: Vec::new(),
        })
    }

    /// The edge's interface on the client's link, where XDP goes.
    pub fn edge_interface(&self) -> &str {
        &self.client_link.b.name
    }

    /// The proxy's address as the client reaches it: `198.18.0.1:80`.
    pub fn proxy_addr(&self) -> SocketAddr {
        SocketAddr::from((EDGE_ADDR, 80))
    }

    /// Gives the backends' namespace the endpoint address `addr` (from
    /// [`ENDPOINT_SUBNET`]), unless it has it already. An address with no
    /// backend listening on it refuses connections (a dead pod).
    pub fn add_endpoint_addr(&mut self, addr: IpAddr) -> Result<()> {
        if !self.endpoint_addrs.contains(&addr) {
            self.backend_ns
                .add_addrs(&self.backend_link.b.name, &[&format!("{addr}/32")])?;
            self.endpoint_addrs.push(addr);
        }
        Ok(())
    }

    /// Starts a `lab-backend` named `name` (usually its Service's name) on
    /// `addrs` (endpoint addresses, added as needed) and waits until the
    /// edge reaches each of them.
    pub fn start_backend(&mut self, name: &str, addrs: &[SocketAddr]) -> Result<()> {
        self.start_backend_with(name, addrs, |builder| builder)
    }

    /// [`EdgeLab::start_backend`] with launch options set by `configure`
    /// (`|b| b.no_date()`).
    pub fn start_backend_with(
        &mut self,
        name: &str,
        addrs: &[SocketAddr],
        configure: impl FnOnce(BackendBuilder<'_>) -> BackendBuilder<'_>,
    ) -> Result<()> {
        for addr in addrs {
            self.add_endpoint_addr(addr.ip())?;
        }
        let backend = configure(Backend::builder(&self.backend_ns, name, addrs)).start()?;
        for &addr in addrs {
            self.edge
                .wait_tcp(addr, REACH_TIMEOUT)
                .with_context(|| format!("the edge cannot reach backend {name} at {addr}"))?;
        }
        self.backends.push(backend);
        Ok(())
    }

    /// The backends started so far.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }
}
