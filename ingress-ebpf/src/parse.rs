//! Bounded, verifier-friendly packet parsing: Ethernet (up to two VLAN tags),
//! IPv4 (with options), IPv6 (a bounded number of extension headers), TCP and
//! UDP. Every header read goes through [`ptr_at`], the one bounds check.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use ingress_common::{family, protocol, verdict};

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

/// VLAN tags we look through (802.1ad outer + 802.1Q inner).
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers we skip before giving up (passing the packet).
const MAX_IPV6_EXT_HEADERS: usize = 6;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

// Every field documents the wire layout, even those the program never reads.
#[allow(dead_code)]
#[repr(C)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    ether_type: [u8; 2],
}

// Every field documents the wire layout, even those the program never reads.
#[allow(dead_code)]
#[repr(C)]
struct VlanHdr {
    tci: [u8; 2],
    ether_type: [u8; 2],
}

// Every field documents the wire layout, even those the program never reads.
#[allow(dead_code)]
#[repr(C)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    total_len: [u8; 2],
    id: [u8; 2],
    frag_off: [u8; 2],
    ttl: u8,
    protocol: u8,
    check: [u8; 2],
    saddr: [u8; 4],
    daddr: [u8; 4],
}

// Every field documents the wire layout, even those the program never reads.
#[allow(dead_code)]
#[repr(C)]
struct Ipv6Hdr {
    version_class_flow: [u8; 4],
    payload_len: [u8; 2],
    next_header: u8,
    hop_limit: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

/// The common start of hop-by-hop, routing, destination-options and AH headers.
// Every field documents the wire layout, even those the program never reads.
#[allow(dead_code)]
#[repr(C)]
struct Ipv6ExtHdr {
    next_header: u8,
    len: u8,
}

// Every field documents the wire layout, even those the program never reads.
#[allow(dead_code)]
#[repr(C)]
struct Ipv6FragHdr {
    next_header: u8,
    reserved: u8,
    frag_off: [u8; 2],
    id: [u8; 4],
}

/// The ports come first in both TCP and UDP headers.
// Every field documents the wire layout, even those the program never reads.
#[allow(dead_code)]
#[repr(C)]
struct L4Ports {
    source: [u8; 2],
    dest: [u8; 2],
}

const TCP_HDR_LEN: usize = 20;
const UDP_HDR_LEN: usize = 8;

/// What the program needs to know about a TCP or UDP packet.
pub struct Flow {
    /// `family::IPV4` or `family::IPV6`.
    pub family: u8,
    /// `protocol::TCP` or `protocol::UDP`.
    pub protocol: u8,
    /// Destination address, network order (IPv4 in the first four bytes).
    pub daddr: [u8; 16],
    /// Destination port, host order.
    pub dport: u16,
}

/// A pointer to a `T` at `offset` bytes into the packet, or `Err` when the
/// packet is too short. The only place that turns an offset into a pointer.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
fn be16(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

/// Parses the packet down to its TCP or UDP ports. `Err` carries the verdict
/// reason (`ingress_common::verdict`) for a packet the program does not own;
/// such packets are always passed.
#[inline(always)]
pub fn parse_flow(ctx: &XdpContext) -> Result<Flow, u32> {
    let malformed = |_| verdict::PASS_MALFORMED;

    let eth: *const EthHdr = ptr_at(ctx, 0).map_err(malformed)?;
    // SAFETY: `ptr_at` checked that the header lies inside the packet.
    let mut ether_type = be16(unsafe { (*eth).ether_type });
    let mut offset = size_of::<EthHdr>();
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let vlan: *const VlanHdr = ptr_at(ctx, offset).map_err(malformed)?;
        // SAFETY: bounds checked by `ptr_at`.
        ether_type = be16(unsafe { (*vlan).ether_type });
        offset += size_of::<VlanHdr>();
    }

    let mut daddr = [0u8; 16];
    let (family, l4_protocol, l4_offset) = match ether_type {
        ETH_P_IPV4 => {
            let ip: *const Ipv4Hdr = ptr_at(ctx, offset).map_err(malformed)?;
            // SAFETY: bounds checked by `ptr_at`.
            let (version_ihl, frag_off, proto, dst) = unsafe {
                (
                    (*ip).version_ihl,
                    be16((*ip).frag_off),
                    (*ip).protocol,
                    (*ip).daddr,
                )
            };
            let header_len = ((version_ihl & 0x0f) as usize) * 4;
            if version_ihl >> 4 != 4 || header_len < size_of::<Ipv4Hdr>() {
                return Err(verdict::PASS_MALFORMED);
            }
            // Options: the whole header must be present.
            ptr_at::<u8>(ctx, offset + header_len - 1).map_err(malformed)?;
            // A non-first fragment carries no L4 header.
            if frag_off & 0x1fff != 0 {
                return Err(verdict::PASS_OTHER_L4);
            }
            daddr[..4].copy_from_slice(&dst);
            (family::IPV4, proto, offset + header_len)
        }
        ETH_P_IPV6 => {
            let ip: *const Ipv6Hdr = ptr_at(ctx, offset).map_err(malformed)?;
            // SAFETY: bounds checked by `ptr_at`.
            let (first, mut next, dst) =
                unsafe { ((*ip).version_class_flow[0], (*ip).next_header, (*ip).daddr) };
            if first >> 4 != 6 {
                return Err(verdict::PASS_MALFORMED);
            }
            daddr = dst;
            offset += size_of::<Ipv6Hdr>();
            let mut skipped = 0;
            while skipped < MAX_IPV6_EXT_HEADERS {
                match next {
                    IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                        let ext: *const Ipv6ExtHdr = ptr_at(ctx, offset).map_err(malformed)?;
                        // SAFETY: bounds checked by `ptr_at`.
                        let (n, len) = unsafe { ((*ext).next_header, (*ext).len) };
                        next = n;
                        offset += (len as usize + 1) * 8;
                    }
                    IPPROTO_AH => {
                        let ext: *const Ipv6ExtHdr = ptr_at(ctx, offset).map_err(malformed)?;
                        // SAFETY: bounds checked by `ptr_at`.
                        let (n, len) = unsafe { ((*ext).next_header, (*ext).len) };
                        next = n;
                        offset += (len as usize + 2) * 4;
                    }
                    IPPROTO_FRAGMENT => {
                        let frag: *const Ipv6FragHdr = ptr_at(ctx, offset).map_err(malformed)?;
                        // SAFETY: bounds checked by `ptr_at`.
                        let (n, frag_off) =
                            unsafe { ((*frag).next_header, be16((*frag).frag_off)) };
                        if frag_off & 0xfff8 != 0 {
                            return Err(verdict::PASS_OTHER_L4);
                        }
                        next = n;
                        offset += size_of::<Ipv6FragHdr>();
                    }
                    _ => break,
                }
                skipped += 1;
            }
            (family::IPV6, next, offset)
        }
        _ => return Err(verdict::PASS_NOT_IP),
    };

    let header_len = match l4_protocol {
        protocol::TCP => TCP_HDR_LEN,
        protocol::UDP => UDP_HDR_LEN,
        _ => return Err(verdict::PASS_OTHER_L4),
    };
    // The whole fixed header must be present, not only the ports.
    ptr_at::<u8>(ctx, l4_offset + header_len - 1).map_err(malformed)?;
    let ports: *const L4Ports = ptr_at(ctx, l4_offset).map_err(malformed)?;
    // SAFETY: bounds checked by `ptr_at`.
    let dport = unsafe { be16((*ports).dest) };

    Ok(Flow {
        family,
        protocol: l4_protocol,
        daddr,
        dport,
    })
}
