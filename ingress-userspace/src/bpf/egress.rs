//! Where a backend's packets leave the node, and whether an XDP program
//! runs there: the L4 tier sends a translated packet out with
//! `bpf_redirect` to the interface of its route, and in native mode a
//! redirect into an interface without XDP support (a veth whose peer has
//! no XDP program) loses the packet without a trace. The daemon warns when
//! a backend's route leaves through an interface with no XDP program.
//!
//! Two rtnetlink requests, answered by the kernel of the daemon's network
//! namespace: `RTM_GETROUTE` (the route to an address: its output
//! interface) and `RTM_GETLINK` (an interface: its name and `IFLA_XDP`).

use std::{io, net::IpAddr};

use crate::netlink::RouteSocket;

/// An interface a route leaves through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Egress {
    /// Its index.
    pub ifindex: u32,
    /// Its name.
    pub name: String,
    /// Whether an XDP program (in any mode) is attached to it.
    pub has_xdp: bool,
}

/// The interface the route to `addr` leaves through, with its XDP state;
/// `None` when there is no route.
pub fn egress_of(addr: IpAddr) -> io::Result<Option<Egress>> {
    let socket = RouteSocket::open()?;
    let Some(ifindex) = socket.route_oif(addr)? else {
        return Ok(None);
    };
    let (name, has_xdp) = socket.link(ifindex)?;
    Ok(Some(Egress {
        ifindex,
        name,
        has_xdp,
    }))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn loopback_routes_leave_through_lo_without_xdp() {
        let egress = egress_of(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .unwrap()
            .expect("a route to 127.0.0.1");
        assert_eq!(egress.name, "lo");
        assert_eq!(egress.ifindex, 1);
        assert!(!egress.has_xdp);
    }
}
