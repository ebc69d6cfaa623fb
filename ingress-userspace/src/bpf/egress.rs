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

use std::{
    io,
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// `IFLA_XDP`'s nested attribute saying what is attached (0: nothing).
const IFLA_XDP_ATTACHED: u16 = 2;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct rtmsg)` and `sizeof(struct ifinfomsg)`.
const RTMSG_LEN: usize = 12;
const IFINFOMSG_LEN: usize = 16;

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

/// A `NETLINK_ROUTE` socket for one request at a time.
struct RouteSocket {
    fd: OwnedFd,
}

impl RouteSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: a plain socket(2) call; the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just opened and own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: setsockopt reads the timeval we pass, of the size we say.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&timeout).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(Self { fd })
    }

    /// Sends `message` (type `kind`, body `body`) and returns the body of
    /// the answer of type `answer`; `None` for an `ENETUNREACH`-like error.
    fn ask(&self, kind: u16, body: &[u8], answer: u16) -> io::Result<Option<Vec<u8>>> {
        let length = NLMSG_HDRLEN + body.len();
        let mut message = Vec::with_capacity(length);
        message.extend_from_slice(&(length as u32).to_ne_bytes());
        message.extend_from_slice(&kind.to_ne_bytes());
        message.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        message.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        message.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel
        message.extend_from_slice(body);
        // SAFETY: send(2) reads `message`, which outlives the call.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buffer = vec![0u8; 16 * 1024];
        // SAFETY: recv(2) writes at most `buffer.len()` bytes into it.
        let received = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        buffer.truncate(received as usize);
        let header = |at: usize| -> Option<(usize, u16)> {
            let length = u32::from_ne_bytes(buffer.get(at..at + 4)?.try_into().ok()?) as usize;
            let kind = u16::from_ne_bytes(buffer.get(at + 4..at + 6)?.try_into().ok()?);
            Some((length, kind))
        };
        let Some((length, kind)) = header(0) else {
            return Err(io::Error::other("a short netlink answer"));
        };
        let body = buffer
            .get(NLMSG_HDRLEN..length.min(buffer.len()))
            .unwrap_or_default();
        if kind == libc::NLMSG_ERROR as u16 {
            let errno = body
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, i32::from_ne_bytes);
            return match -errno {
                0 => Ok(None),
                libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENODEV => Ok(None),
                code => Err(io::Error::from_raw_os_error(code)),
            };
        }
        if kind != answer {
            return Err(io::Error::other(format!(
                "netlink answered message type {kind}, not {answer}"
            )));
        }
        Ok(Some(body.to_vec()))
    }

    /// The output interface of the route to `addr`.
    fn route_oif(&self, addr: IpAddr) -> io::Result<Option<u32>> {
        let (family, octets): (u8, Vec<u8>) = match addr {
            IpAddr::V4(v4) => (libc::AF_INET as u8, v4.octets().to_vec()),
            IpAddr::V6(v6) => (libc::AF_INET6 as u8, v6.octets().to_vec()),
        };
        let mut body = vec![0u8; RTMSG_LEN];
        body[0] = family;
        body[1] = (octets.len() * 8) as u8; // rtm_dst_len
        push_attribute(&mut body, libc::RTA_DST, &octets);
        let Some(answer) = self.ask(libc::RTM_GETROUTE, &body, libc::RTM_NEWROUTE)? else {
            return Ok(None);
        };
        Ok(attributes(answer.get(RTMSG_LEN..).unwrap_or_default())
            .find(|(kind, _)| *kind == libc::RTA_OIF)
            .and_then(|(_, value)| Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?))))
    }

    /// The name of interface `ifindex` and whether XDP is attached to it.
    fn link(&self, ifindex: u32) -> io::Result<(String, bool)> {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        let answer = self
            .ask(libc::RTM_GETLINK, &body, libc::RTM_NEWLINK)?
            .ok_or_else(|| io::Error::other(format!("no interface {ifindex}")))?;
        let mut name = ifindex.to_string();
        let mut has_xdp = false;
        for (kind, value) in attributes(answer.get(IFINFOMSG_LEN..).unwrap_or_default()) {
            if kind == libc::IFLA_IFNAME {
                name = String::from_utf8_lossy(value)
                    .trim_end_matches('\0')
                    .to_owned();
            } else if kind == libc::IFLA_XDP {
                has_xdp = attributes(value)
                    .any(|(inner, v)| inner == IFLA_XDP_ATTACHED && v.first() != Some(&0));
            }
        }
        Ok((name, has_xdp))
    }
}

/// Appends a route attribute (`struct rtattr` and the value, padded to 4).
fn push_attribute(body: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let length = 4 + value.len();
    body.extend_from_slice(&(length as u16).to_ne_bytes());
    body.extend_from_slice(&kind.to_ne_bytes());
    body.extend_from_slice(value);
    body.resize(body.len().next_multiple_of(4), 0);
}

/// The (type, value) attributes packed in `bytes` (nested flags masked off).
fn attributes(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let length = u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(bytes.get(at + 2..at + 4)?.try_into().ok()?) & 0x3fff;
        if length < 4 {
            return None;
        }
        let value = bytes.get(at + 4..at + length)?;
        at += length.next_multiple_of(4);
        Some((kind, value))
    })
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

    #[test]
    fn attributes_are_packed_and_read_back() {
        let mut body = Vec::new();
        push_attribute(&mut body, 1, &[198, 18, 0, 1]);
        push_attribute(&mut body, 3, b"eth0\0");
        assert_eq!(body.len(), 8 + 12);
        let read: Vec<(u16, &[u8])> = attributes(&body).collect();
        assert_eq!(read, vec![(1, &[198, 18, 0, 1][..]), (3, &b"eth0\0"[..])]);
    }
}
