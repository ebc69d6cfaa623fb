//! Rewriting a packet's addresses and ports in place, with incremental
//! checksum updates: the IPv4 header checksum, and the TCP or UDP checksum
//! over the pseudo-header (a UDP checksum of zero over IPv4 means "none" and
//! stays zero; a computed zero is sent as 0xffff).

use aya_ebpf::programs::XdpContext;
use ingress_common::{family, protocol};

use crate::{
    csum::CsumDiff,
    fib::FibQuery as Translation,
    parse::{Flow, Ipv4Hdr, Ipv6Hdr, L4Ports, TcpHdr, UdpHdr, join, ptr_at, split},
};

/// Rewrites the packet parsed as `flow` to the addresses and ports of `to`. `Err` only when the headers
/// moved out of reach, which parsing already ruled out.
#[inline(always)]
pub fn rewrite(ctx: &XdpContext, flow: &Flow, to: &Translation) -> Result<(), ()> {
    let mut diff = CsumDiff::new();
    if flow.family == family::IPV4 {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, flow.l3_offset)?;
        // SAFETY: bounds checked by `ptr_at`; only this program run writes the packet.
        unsafe {
            let (old_s, old_d) = (join((*ip).saddr), join((*ip).daddr));
            (*ip).saddr = split(to.src[0]);
            (*ip).daddr = split(to.dst[0]);
            diff = diff.word(old_s, to.src[0]).word(old_d, to.dst[0]);
            (*ip).check = diff.apply((*ip).check);
        }
    } else {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, flow.l3_offset)?;
        diff = diff.words(&flow.saddr, &to.src).words(&flow.daddr, &to.dst);
        // SAFETY: as above.
        unsafe { write_ipv6_addresses(ip, &to.src, &to.dst) };
    }
    let ports: *mut L4Ports = ptr_at(ctx, flow.l4_offset)?;
    let (sport, dport) = (to.sport.to_be(), to.dport.to_be());
    // SAFETY: bounds checked by `ptr_at`.
    unsafe {
        diff = diff.half((*ports).source, sport).half((*ports).dest, dport);
        (*ports).source = sport;
        (*ports).dest = dport;
    }
    if flow.protocol == protocol::TCP {
        let tcp: *mut TcpHdr = ptr_at(ctx, flow.l4_offset)?;
        // SAFETY: bounds checked by `ptr_at`.
        unsafe { (*tcp).check = diff.apply((*tcp).check) };
    } else {
        let udp: *mut UdpHdr = ptr_at(ctx, flow.l4_offset)?;
        // SAFETY: bounds checked by `ptr_at`.
        unsafe {
            let check = (*udp).check;
            if check != 0 || flow.family == family::IPV6 {
                let new = diff.apply(check);
                (*udp).check = if new == 0 { 0xffff } else { new };
            }
        }
    }
    Ok(())
}

/// Writes `src` and `dst` (as the words of `ingress_common::addr_words`)
/// into an IPv6 header's addresses, as 16-bit stores (the header is 2-byte
/// aligned in the packet).
///
/// # Safety
/// `ip` points at a bounds-checked IPv6 header that only this run writes.
#[inline(always)]
pub unsafe fn write_ipv6_addresses(ip: *mut Ipv6Hdr, src: &[u32; 4], dst: &[u32; 4]) {
    // SAFETY: per the contract.
    let (s, d) = unsafe { (&mut (*ip).saddr, &mut (*ip).daddr) };
    for i in 0..4 {
        let [low, high] = split(src[i]);
        s[2 * i] = low;
        s[2 * i + 1] = high;
        let [low, high] = split(dst[i]);
        d[2 * i] = low;
        d[2 * i + 1] = high;
    }
}
