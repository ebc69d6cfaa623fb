//! rtnetlink requests to the kernel of the daemon's network namespace,
//! written by hand (a few fixed layouts): routes (`RTM_GETROUTE`: the
//! output interface and gateway towards an address), links (`RTM_GETLINK`)
//! and neighbours (`RTM_NEWNEIGH`, `RTM_DELNEIGH`, `RTM_GETNEIGH` dumps).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// `IFLA_XDP`'s nested attribute saying what is attached (0: nothing).
const IFLA_XDP_ATTACHED: u16 = 2;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct rtmsg)` and `sizeof(struct ifinfomsg)`.
const RTMSG_LEN: usize = 12;
const IFINFOMSG_LEN: usize = 16;
/// `sizeof(struct ndmsg)`.
const NDMSG_LEN: usize = 12;
/// `NDA_FLAGS_EXT` and its `NTF_EXT_MANAGED` bit: the kernel resolves the
/// entry by itself, keeps it fresh and never garbage-collects it (5.16+).
const NDA_FLAGS_EXT: u16 = 15;
const NTF_EXT_MANAGED: u32 = 1;

/// Where packets to an address leave: the interface and the next hop (the
/// route's gateway, or the address itself on a link).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NextHop {
    /// The output interface.
    pub ifindex: u32,
    /// The neighbour to resolve.
    pub addr: IpAddr,
}

/// A neighbour entry as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// Interface and address.
    pub hop: NextHop,
    /// `NUD_*` state bits.
    pub state: u16,
    /// Whether it is kernel-managed (`NTF_EXT_MANAGED`).
    pub managed: bool,
    /// Its link-layer address, when known.
    pub lladdr: Option<Vec<u8>>,
}

/// A `NETLINK_ROUTE` socket for one request at a time.
pub struct RouteSocket {
    fd: OwnedFd,
}

impl RouteSocket {
    /// Opens a socket.
    pub fn open() -> io::Result<Self> {
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

    /// Sends one request (type `kind`, `flags` besides `NLM_F_REQUEST`).
    fn send(&self, kind: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        let length = NLMSG_HDRLEN + body.len();
        let mut message = Vec::with_capacity(length);
        message.extend_from_slice(&(length as u32).to_ne_bytes());
        message.extend_from_slice(&kind.to_ne_bytes());
        message.extend_from_slice(&(libc::NLM_F_REQUEST as u16 | flags).to_ne_bytes());
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
        Ok(())
    }

    /// Receives one datagram and splits it into (type, body) messages.
    fn receive(&self) -> io::Result<Vec<(u16, Vec<u8>)>> {
        let mut buffer = vec![0u8; 64 * 1024];
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
        Ok(messages(&buffer))
    }

    /// Sends `body` (type `kind`) and returns the body of the answer of
    /// type `answer`; `None` for an `ENETUNREACH`-like error.
    fn ask(&self, kind: u16, body: &[u8], answer: u16) -> io::Result<Option<Vec<u8>>> {
        self.send(kind, 0, body)?;
        let Some((kind, body)) = self.receive()?.into_iter().next() else {
            return Err(io::Error::other("a short netlink answer"));
        };
        if kind == libc::NLMSG_ERROR as u16 {
            return match -error_code(&body) {
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
        Ok(Some(body))
    }

    /// Sends a change and waits for the kernel's acknowledgement.
    fn change(&self, kind: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        self.send(kind, flags | libc::NLM_F_ACK as u16, body)?;
        for (kind, body) in self.receive()? {
            if kind == libc::NLMSG_ERROR as u16 {
                return match -error_code(&body) {
                    0 => Ok(()),
                    code => Err(io::Error::from_raw_os_error(code)),
                };
            }
        }
        Err(io::Error::other("no netlink acknowledgement"))
    }

    /// The next hop towards `addr`: the route's output interface and its
    /// gateway, or `addr` itself on a link; `None` without a route.
    pub fn next_hop(&self, addr: IpAddr) -> io::Result<Option<NextHop>> {
        let mut body = vec![0u8; RTMSG_LEN];
        let octets = ip_octets(addr);
        body[0] = family_of(addr);
        body[1] = (octets.len() * 8) as u8; // rtm_dst_len
        push_attribute(&mut body, libc::RTA_DST, &octets);
        let Some(answer) = self.ask(libc::RTM_GETROUTE, &body, libc::RTM_NEWROUTE)? else {
            return Ok(None);
        };
        let mut ifindex = None;
        let mut gateway = None;
        for (kind, value) in attributes(answer.get(RTMSG_LEN..).unwrap_or_default()) {
            if kind == libc::RTA_OIF {
                ifindex = value
                    .get(..4)
                    .map(|b| u32::from_ne_bytes(b.try_into().unwrap()));
            } else if kind == libc::RTA_GATEWAY {
                gateway = ip_of(value);
            }
        }
        Ok(ifindex.map(|ifindex| NextHop {
            ifindex,
            addr: gateway.unwrap_or(addr),
        }))
    }

    /// Makes `hop` a kernel-managed neighbour entry: created and resolved
    /// now if missing (`replace`: also an existing entry made managed,
    /// which the kernel then resolves again).
    pub fn add_managed(&self, hop: NextHop, replace: bool) -> io::Result<()> {
        let mut body = ndmsg(hop, 0, 0);
        push_attribute(&mut body, libc::NDA_DST, &ip_octets(hop.addr));
        push_attribute(&mut body, NDA_FLAGS_EXT, &NTF_EXT_MANAGED.to_ne_bytes());
        let flags = if replace {
            libc::NLM_F_CREATE | libc::NLM_F_REPLACE
        } else {
            libc::NLM_F_CREATE | libc::NLM_F_EXCL
        };
        self.change(libc::RTM_NEWNEIGH, flags as u16, &body)
    }

    /// Asks the kernel to resolve `hop` now, as a packet sent to it would
    /// (`NTF_USE`): an ordinary entry, aged out by the kernel as usual.
    pub fn resolve_once(&self, hop: NextHop) -> io::Result<()> {
        let mut body = ndmsg(hop, libc::NUD_NONE, libc::NTF_USE);
        push_attribute(&mut body, libc::NDA_DST, &ip_octets(hop.addr));
        let flags = libc::NLM_F_CREATE | libc::NLM_F_REPLACE;
        self.change(libc::RTM_NEWNEIGH, flags as u16, &body)
    }

    /// Removes the neighbour entry of `hop` (absent already is fine).
    pub fn delete_neighbour(&self, hop: NextHop) -> io::Result<()> {
        let mut body = ndmsg(hop, 0, 0);
        push_attribute(&mut body, libc::NDA_DST, &ip_octets(hop.addr));
        match self.change(libc::RTM_DELNEIGH, 0, &body) {
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }

    /// Every neighbour entry of both families.
    pub fn neighbours(&self) -> io::Result<Vec<Neighbour>> {
        self.send(
            libc::RTM_GETNEIGH,
            libc::NLM_F_DUMP as u16,
            &[0u8; NDMSG_LEN],
        )?;
        let mut found = Vec::new();
        loop {
            for (kind, body) in self.receive()? {
                if kind == libc::NLMSG_DONE as u16 {
                    return Ok(found);
                }
                if kind == libc::NLMSG_ERROR as u16 {
                    return Err(io::Error::from_raw_os_error(-error_code(&body)));
                }
                if kind == libc::RTM_NEWNEIGH {
                    found.extend(parse_neighbour(&body));
                }
            }
        }
    }

    /// The output interface of the route to `addr`.
    pub fn route_oif(&self, addr: IpAddr) -> io::Result<Option<u32>> {
        Ok(self.next_hop(addr)?.map(|hop| hop.ifindex))
    }

    /// The name of interface `ifindex` and whether XDP is attached to it.
    pub fn link(&self, ifindex: u32) -> io::Result<(String, bool)> {
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

/// A `struct ndmsg` for `hop`.
fn ndmsg(hop: NextHop, state: u16, flags: u8) -> Vec<u8> {
    let mut body = vec![0u8; NDMSG_LEN];
    body[0] = family_of(hop.addr);
    body[4..8].copy_from_slice(&(hop.ifindex as i32).to_ne_bytes());
    body[8..10].copy_from_slice(&state.to_ne_bytes());
    body[10] = flags;
    body
}

/// A neighbour from the body of an `RTM_NEWNEIGH` message.
fn parse_neighbour(body: &[u8]) -> Option<Neighbour> {
    let ifindex = i32::from_ne_bytes(body.get(4..8)?.try_into().ok()?) as u32;
    let state = u16::from_ne_bytes(body.get(8..10)?.try_into().ok()?);
    let mut addr = None;
    let mut lladdr = None;
    let mut managed = false;
    for (kind, value) in attributes(body.get(NDMSG_LEN..)?) {
        match kind {
            libc::NDA_DST => addr = ip_of(value),
            libc::NDA_LLADDR => lladdr = Some(value.to_vec()),
            NDA_FLAGS_EXT => {
                let flags = value
                    .get(..4)
                    .map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap()));
                managed = flags & NTF_EXT_MANAGED != 0;
            }
            _ => {}
        }
    }
    Some(Neighbour {
        hop: NextHop {
            ifindex,
            addr: addr?,
        },
        state,
        managed,
        lladdr,
    })
}

/// The (type, body) messages of a netlink datagram.
fn messages(buffer: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(header) = buffer.get(at..at + NLMSG_HDRLEN) {
        let length = u32::from_ne_bytes(header[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(header[4..6].try_into().unwrap());
        if length < NLMSG_HDRLEN {
            break;
        }
        let end = (at + length).min(buffer.len());
        found.push((kind, buffer[at + NLMSG_HDRLEN..end].to_vec()));
        at += length.next_multiple_of(4);
    }
    found
}

/// The error code of an `NLMSG_ERROR` body (0: an acknowledgement).
fn error_code(body: &[u8]) -> i32 {
    body.get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i32::from_ne_bytes)
}

fn family_of(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn ip_octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn ip_of(value: &[u8]) -> Option<IpAddr> {
    match value.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(value).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(value).ok()?,
        ))),
        _ => None,
    }
}

/// Appends a route attribute (`struct rtattr` and the value, padded to 4).
pub(crate) fn push_attribute(body: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let length = 4 + value.len();
    body.extend_from_slice(&(length as u16).to_ne_bytes());
    body.extend_from_slice(&kind.to_ne_bytes());
    body.extend_from_slice(value);
    body.resize(body.len().next_multiple_of(4), 0);
}

/// The (type, value) attributes packed in `bytes` (nested flags masked off).
pub(crate) fn attributes(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
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
    use super::*;

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
