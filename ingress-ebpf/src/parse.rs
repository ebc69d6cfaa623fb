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
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: [u8; 2],
}

// Every field documents the wire layout, even those the program never reads.
#[allow(dead_code)]
#[repr(C)]
struct VlanHdr {
    tci: [u8; 2],
    ether_type: [u8; 2],
}

/// The IPv4 header, as 16-bit words where the program reads or rewrites
/// them: packet data is 2-byte aligned (Ethernet is 14 bytes), so these
/// are plain loads and stores rather than byte by byte.
// Every field documents the wire layout, even those the program never reads.
#[allow(dead_code)]
#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub saddr: [u16; 2],
    pub daddr: [u16; 2],
}

/// The IPv6 header; addresses as 16-bit words (see [`Ipv4Hdr`]).
// Every field documents the wire layout, even those the program never reads.
#[allow(dead_code)]
#[repr(C)]
pub struct Ipv6Hdr {
    pub version_class_flow: [u8; 4],
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub saddr: [u16; 8],
    pub daddr: [u16; 8],
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

/// The ports come first in both TCP and UDP headers (network order).
#[repr(C)]
pub struct L4Ports {
    pub source: u16,
    pub dest: u16,
}

/// The TCP header up to its checksum.
// Every field documents the wire layout, even those the program never reads.
#[allow(dead_code)]
#[repr(C)]
pub struct TcpHdr {
    pub source: u16,
    pub dest: u16,
    pub seq: [u16; 2],
    pub ack_seq: [u16; 2],
    pub offset_reserved: u8,
    pub flags: u8,
    pub window: u16,
    pub check: u16,
    pub urg_ptr: u16,
}

/// The UDP header.
// Every field documents the wire layout, even those the program never reads.
#[allow(dead_code)]
#[repr(C)]
pub struct UdpHdr {
    pub source: u16,
    pub dest: u16,
    pub len: u16,
    pub check: u16,
}

const TCP_HDR_LEN: usize = 20;
const UDP_HDR_LEN: usize = 8;

/// What the program needs to know about a TCP or UDP packet.
pub struct Flow {
    /// `family::IPV4` or `family::IPV6`.
    pub family: u8,
    /// `protocol::TCP` or `protocol::UDP`.
    pub protocol: u8,
    /// TCP flags (zero for UDP).
    pub tcp_flags: u8,
    /// Untagged, not a fragment, no IPv6 extension header: a packet the L4
    /// tier can translate in place.
    pub plain: bool,
    /// Length from the IP header on, as the IP header says.
    pub ip_len: u16,
    /// Offset of the IP header.
    pub l3_offset: usize,
    /// Offset of the TCP or UDP header.
    pub l4_offset: usize,
    /// Source address, as the words of `ingress_common::addr_words`.
    pub saddr: [u32; 4],
    /// Destination address, likewise.
    pub daddr: [u32; 4],
    /// Source port, host order.
    pub sport: u16,
    /// Destination port, host order.
    pub dport: u16,
}

/// A pointer to a `T` at `offset` bytes into the packet, or `Err` when the
/// packet is too short. The only place that turns an offset into a pointer.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *mut T)
}

#[inline(always)]
fn be16(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

/// Two 16-bit words of an address as one word of `addr_words` (memory order).
#[inline(always)]
pub fn join(words: [u16; 2]) -> u32 {
    let (low, high) = if cfg!(target_endian = "little") {
        (words[0], words[1])
    } else {
        (words[1], words[0])
    };
    u32::from(low) | (u32::from(high) << 16)
}

/// One word of `addr_words` as the two 16-bit words of the packet.
#[inline(always)]
pub fn split(word: u32) -> [u16; 2] {
    let (low, high) = (word as u16, (word >> 16) as u16);
    if cfg!(target_endian = "little") {
        [low, high]
    } else {
        [high, low]
    }
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
    let mut plain = true;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let vlan: *const VlanHdr = ptr_at(ctx, offset).map_err(malformed)?;
        // SAFETY: bounds checked by `ptr_at`.
        ether_type = be16(unsafe { (*vlan).ether_type });
        offset += size_of::<VlanHdr>();
        plain = false;
    }
    let l3_offset = offset;

    let mut saddr = [0u32; 4];
    let mut daddr = [0u32; 4];
    let ip_len;
    let (family, l4_protocol, l4_offset) = match ether_type {
        ETH_P_IPV4 => {
            let ip: *const Ipv4Hdr = ptr_at(ctx, offset).map_err(malformed)?;
            // SAFETY: bounds checked by `ptr_at`.
            let (version_ihl, frag_off, proto, total_len) = unsafe {
                (
                    (*ip).version_ihl,
                    u16::from_be((*ip).frag_off),
                    (*ip).protocol,
                    u16::from_be((*ip).total_len),
                )
            };
            ip_len = total_len;
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
            // A first fragment has one, but the datagram goes on without it.
            if frag_off & 0x2000 != 0 {
                plain = false;
            }
            // SAFETY: bounds checked by `ptr_at`.
            unsafe {
                saddr[0] = join((*ip).saddr);
                daddr[0] = join((*ip).daddr);
            }
            (family::IPV4, proto, offset + header_len)
        }
        ETH_P_IPV6 => {
            let ip: *const Ipv6Hdr = ptr_at(ctx, offset).map_err(malformed)?;
            // SAFETY: bounds checked by `ptr_at`.
            let (first, mut next, payload_len) = unsafe {
                (
                    (*ip).version_class_flow[0],
                    (*ip).next_header,
                    u16::from_be((*ip).payload_len),
                )
            };
            ip_len = payload_len.saturating_add(size_of::<Ipv6Hdr>() as u16);
            if first >> 4 != 6 {
                return Err(verdict::PASS_MALFORMED);
            }
            // SAFETY: bounds checked by `ptr_at`.
            unsafe {
                let (s, d) = (&(*ip).saddr, &(*ip).daddr);
                saddr = [
                    join([s[0], s[1]]),
                    join([s[2], s[3]]),
                    join([s[4], s[5]]),
                    join([s[6], s[7]]),
                ];
                daddr = [
                    join([d[0], d[1]]),
                    join([d[2], d[3]]),
                    join([d[4], d[5]]),
                    join([d[6], d[7]]),
                ];
            }
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
                plain = false;
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
    let (sport, dport) = unsafe { (u16::from_be((*ports).source), u16::from_be((*ports).dest)) };
    let tcp_flags = if l4_protocol == protocol::TCP {
        let tcp: *const TcpHdr = ptr_at(ctx, l4_offset).map_err(malformed)?;
        // SAFETY: bounds checked by `ptr_at`.
        unsafe { (*tcp).flags }
    } else {
        0
    };

    Ok(Flow {
        family,
        protocol: l4_protocol,
        tcp_flags,
        plain,
        ip_len,
        l3_offset,
        l4_offset,
        saddr,
        daddr,
        sport,
        dport,
    })
}
