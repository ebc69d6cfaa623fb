//! The established IPv6 path of the L4 tier, the IPv6 side of `l4_fast`:
//! a plain IPv6 TCP or UDP packet (untagged, the transport header right
//! after the fixed header) whose flow this CPU translated before finds the
//! translation in `L4_FLOW_CACHE6` (new addresses and ports, the checksum
//! change, the next hop) and is sent on with a few stores, without the
//! general parser, the 40-byte-key connection table or the backend's
//! address. Everything else, and every FIN or RST, goes on to the general
//! path (`l4`), which fills the cache after translating a packet
//! ([`remember`]) and clears it when a FIN or RST changes a flow
//! ([`forget`]).

// Keys go to the map helpers by reference on purpose: clippy's "pass it by
// value" would copy them onto the 512-byte stack first.
#![allow(clippy::needless_borrows_for_generic_args)]

use core::ptr::{addr_of, addr_of_mut};

use aya_ebpf::{bindings::xdp_md, helpers::generated::bpf_jiffies64, programs::XdpContext};
use ingress_common::{
    L4CachedFlow6, L4Flow, L4FlowKey, L4NextHop, L4ReverseNat, family, flow_cache_slot6, l4,
    l4::port_flags, protocol, verdict,
};

use crate::{
    csum::{CsumDiff, apply_folded},
    fib::{self, FibQuery},
    l4::{TCP_FIN, TCP_RST, ends_or_closes, port_bits, scratch},
    l4_fast::{Transport, clear_on_every_cpu, transport},
    maps::{L4_BACKEND_STATS, L4_BACKENDS, L4_CONFIG, L4_FLOW_CACHE6, L4_SERVICE_STATS},
    nat::write_ipv6_addresses,
    parse::{EthHdr, Ipv6Hdr, L4Ports, join, ptr_at},
    stats::bump_l4,
};

/// `ETH_P_IPV6` as the frame's two bytes read as one (little-endian) word.
const ETHER_TYPE_IPV6: u16 = u16::from_le_bytes([0x86, 0xdd]);
/// Offset of the transport header after an untagged IPv6 fixed header.
const L4_OFFSET: usize = 14 + 40;
/// What [`plain_ipv6`] returns for a packet it leaves to the general path.
pub const NOT_DECIDED: u32 = u32::MAX;

/// The Ethernet and IPv6 headers of an untagged frame, as they lie in it.
#[repr(C)]
struct EthIpv6 {
    eth: EthHdr,
    ip: Ipv6Hdr,
}

const _: () = assert!(core::mem::offset_of!(EthIpv6, ip) == 14);
const _: () = assert!(size_of::<EthIpv6>() == L4_OFFSET);

/// Where the fields a translation touches lie in the packet.
struct Headers {
    /// The Ethernet header's MAC addresses, as six 16-bit words.
    eth: *mut u16,
    ip: *mut Ipv6Hdr,
    ports: *mut L4Ports,
    check: *mut u16,
    udp: bool,
    tcp_flags: u8,
}

/// The verdict of a plain IPv6 packet of a flow in this CPU's cache, packed
/// as `reason << 8 | action`; [`NOT_DECIDED`] for every other packet. Not
/// inlined: its key lives in the scratch map and its frame beside the
/// general path's, not under it.
#[inline(never)]
pub fn plain_ipv6(ctx: *mut xdp_md) -> u32 {
    let ctx = &XdpContext::new(ctx);
    match decide(ctx) {
        Some((reason, action)) => (reason << 8) | action,
        None => NOT_DECIDED,
    }
}

#[inline(always)]
fn decide(ctx: &XdpContext) -> Option<(u32, u32)> {
    let headers = parse(ctx)?;
    if headers.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        return None;
    }
    // SAFETY: bounds checked by `parse`.
    let (sport, dport) = unsafe {
        (
            u16::from_be((*headers.ports).source),
            u16::from_be((*headers.ports).dest),
        )
    };
    // The key's words, as `L4FlowKey` lays them out, straight from the
    // packet: no key is built for a cache probe.
    // SAFETY: bounds checked by `parse`.
    let words = unsafe {
        let (s, d) = (&(*headers.ip).saddr, &(*headers.ip).daddr);
        [
            join([s[0], s[1]]),
            join([s[2], s[3]]),
            join([s[4], s[5]]),
            join([s[6], s[7]]),
            join([d[0], d[1]]),
            join([d[2], d[3]]),
            join([d[4], d[5]]),
            join([d[6], d[7]]),
            u32::from(sport) | (u32::from(dport) << 16),
            u32::from_ne_bytes([family::IPV6, (*headers.ip).next_header, 0, 0]),
        ]
    };
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    // A client's packet in this CPU's cache needs no port check: the copy
    // was made behind one, and userspace clears the caches when a service
    // port closes.
    if let Some(decided) = cached(ctx, &words, &headers, bytes, false) {
        return Some(decided);
    }
    // A reply only from a backend's port (and, in full NAT, to one of our
    // source ports), as the general path looks for one.
    let backend_bit = if headers.udp {
        port_flags::BACKEND_UDP
    } else {
        port_flags::BACKEND_TCP
    };
    if port_bits(sport) & backend_bit == 0 {
        return None;
    }
    let config = L4_CONFIG.get_ptr(0)?;
    // SAFETY: an array slot is valid for the whole run.
    let (nat_mode, port_min, port_max) =
        unsafe { ((*config).nat_mode, (*config).port_min, (*config).port_max) };
    if nat_mode == l4::NAT_FULL && (dport < port_min || dport > port_max) {
        return None;
    }
    cached(ctx, &words, &headers, bytes, true)
}

/// A plain IPv6 TCP or UDP packet whose headers are all there, else `None`.
#[inline(always)]
fn parse(ctx: &XdpContext) -> Option<Headers> {
    let frame: *mut EthIpv6 = ptr_at(ctx, 0).ok()?;
    // SAFETY: bounds checked by `ptr_at`; 2-byte aligned like the headers.
    let (eth, ip, ether_type, version, next_header) = unsafe {
        let (eth, ip) = (addr_of_mut!((*frame).eth), addr_of_mut!((*frame).ip));
        (
            eth,
            ip,
            *addr_of!((*eth).ether_type).cast::<u16>(),
            (*ip).version_class_flow[0] >> 4,
            (*ip).next_header,
        )
    };
    if ether_type != ETHER_TYPE_IPV6 || version != 6 {
        return None;
    }
    let Transport {
        ports,
        check,
        udp,
        tcp_flags,
    } = transport(ctx, L4_OFFSET, next_header)?;
    Some(Headers {
        eth: eth.cast(),
        ip,
        ports,
        check,
        udp,
        tcp_flags,
    })
}

/// The translation of a packet of `key` from this CPU's cache (a client's
/// packet, or a reply if `reply`), counted and sent on; `None` when the
/// slot holds another flow, its next hop is stale, or (a client's packet)
/// its backend went away.
#[inline(always)]
fn cached(
    ctx: &XdpContext,
    words: &[u32; 10],
    headers: &Headers,
    bytes: u64,
    reply: bool,
) -> Option<(u32, u32)> {
    let slot = L4_FLOW_CACHE6.get_ptr_mut(flow_cache_slot6(words))?;
    if !holds(slot, words, reply) {
        return None;
    }
    // SAFETY: a plain helper call (inlined by the verifier as one load).
    let now = unsafe { bpf_jiffies64() };
    // SAFETY: this CPU's slot, valid for the whole run.
    if unsafe { (*slot).nat.hop.expires_jiffies } <= now {
        return None;
    }
    // SAFETY: as above.
    let (service, index, generation) = unsafe {
        (
            (*slot).nat.service,
            (*slot).nat.backend,
            (*slot).nat.generation,
        )
    };
    if !reply {
        let backend = L4_BACKENDS.get_ptr(index)?;
        // SAFETY: an array slot is valid for the whole run.
        let live = unsafe {
            (*backend).flags & l4::BACKEND_ACTIVE != 0 && (*backend).generation == generation
        };
        if !live {
            return None;
        }
    }
    bump_l4(
        L4_SERVICE_STATS.get_ptr_mut(service),
        bytes,
        0,
        u64::from(reply),
    );
    bump_l4(
        L4_BACKEND_STATS.get_ptr_mut(index),
        bytes,
        0,
        u64::from(reply),
    );
    // SAFETY: this CPU's slot; the headers were bounds checked by `parse`.
    let ifindex = unsafe {
        fib::write_macs(headers.eth, addr_of!((*slot).nat.hop.macs));
        rewrite(headers, slot);
        (*slot).nat.hop.ifindex
    };
    let reason = if reply {
        verdict::L4_REPLY
    } else {
        verdict::L4_FORWARD
    };
    Some((reason, fib::transmit(ctx, ifindex)))
}

/// Word `i` of the key at `key`, read now: a raw pointer's target is read
/// again after each helper call, where a reference's would be kept across
/// it (spilled to the stack, which the general path's frames cannot spare).
#[inline(always)]
fn key_word(key: *const L4FlowKey, i: usize) -> u32 {
    // SAFETY: `key` points at ten words of plain data valid for this run.
    unsafe { core::ptr::read_volatile(key.cast::<u32>().add(i)) }
}

/// The cache slot of the key at `key`.
#[inline(always)]
fn slot_of(key: *const L4FlowKey) -> u32 {
    let mut words = [0u32; 10];
    for (i, word) in words.iter_mut().enumerate() {
        *word = key_word(key, i);
    }
    flow_cache_slot6(&words)
}

/// Whether `slot` holds the translation of `key` (a client's packet, or a
/// reply if `reply`): word by word.
#[inline(always)]
fn holds(slot: *const L4CachedFlow6, words: &[u32; 10], reply: bool) -> bool {
    // SAFETY: this CPU's slot, valid for the whole run (other CPUs only
    // clear its protocol byte).
    let held: *const u32 = unsafe { addr_of!((*slot).key).cast() };
    for (i, word) in words.iter().enumerate().take(9) {
        // SAFETY: as above; ten words.
        if unsafe { core::ptr::read_volatile(held.add(i)) } != *word {
            return false;
        }
    }
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(held.add(9)) == tagged(words[9], reply) }
}

/// A key's last word (family, protocol, pad) as the cache holds it: the
/// first pad byte says a reply (the key's own pad bytes are zero).
#[inline(always)]
fn tagged(last: u32, reply: bool) -> u32 {
    last | (u32::from(reply) << 16)
}

const _: () = assert!(core::mem::offset_of!(L4FlowKey, family) == 36);
const _: () = assert!(core::mem::offset_of!(L4FlowKey, pad) == 38);

/// Writes the translation into the packet: addresses, ports, the TCP or
/// UDP checksum patched (an IPv6 UDP checksum is never "none"; a computed
/// zero is sent as 0xffff).
///
/// # Safety
/// The headers were bounds checked by `parse`; `slot` is this CPU's.
#[inline(always)]
unsafe fn rewrite(headers: &Headers, slot: *const L4CachedFlow6) {
    // SAFETY: per the contract.
    unsafe {
        write_ipv6_addresses(headers.ip, &(*slot).nat.src, &(*slot).nat.dst);
        (*headers.ports).source = (*slot).nat.sport.to_be();
        (*headers.ports).dest = (*slot).nat.dport.to_be();
        let new = apply_folded(*headers.check, (*slot).nat.l4_delta);
        *headers.check = if new == 0 && headers.udp { 0xffff } else { new };
    }
}

/// After the general path sent a client's IPv6 packet (its verdict
/// `packed`, its TCP flags `flags`) by the connection-table entry `entry`,
/// with `scratch.key` its key and `scratch.to` its translation: keeps the
/// translation in this CPU's cache, or clears the flow's copies on every
/// CPU when the packet changed the flow. Not inlined: the general path's
/// frames have no room for it (all frames of a call chain share 512 bytes).
#[inline(never)]
pub fn after_forward(entry: *const L4Flow, packed: u32, flags: u8) {
    // SAFETY: the entry stays valid for this run (even if the packet ended
    // the flow and removed it).
    let (hop, counted, fins) = unsafe {
        (
            addr_of!((*entry).hop),
            ((*entry).service, (*entry).backend, (*entry).generation),
            [(*entry).client_fin, (*entry).backend_fin],
        )
    };
    after(hop, counted, fins, packed, flags, false);
}

/// [`after_forward`] for a reply sent by its reverse-NAT entry `entry`.
#[inline(never)]
pub fn after_reply(entry: *const L4ReverseNat, packed: u32, flags: u8) {
    // SAFETY: as in `after_forward`.
    let (hop, counted, fins) = unsafe {
        (
            addr_of!((*entry).hop),
            ((*entry).service, (*entry).backend, 0),
            [(*entry).client_fin, (*entry).backend_fin],
        )
    };
    after(hop, counted, fins, packed, flags, true);
}

/// What [`after_forward`] and [`after_reply`] share, given the entry's next
/// hop, what its packets count to, and its FIN bytes (client, backend).
#[inline(always)]
fn after(
    hop: *const L4NextHop,
    counted: (u32, u32, u32),
    [client_fin, backend_fin]: [u8; 2],
    packed: u32,
    flags: u8,
    reply: bool,
) {
    let Some(scratch) = scratch() else {
        return;
    };
    let sent = if reply {
        verdict::L4_REPLY
    } else {
        verdict::L4_FORWARD
    };
    if packed >> 8 == sent && client_fin == 0 && backend_fin == 0 {
        remember(&scratch.key, &scratch.to, hop, flags, counted, reply);
    }
    let fins = client_fin != 0 && backend_fin != 0;
    if scratch.key.protocol == protocol::TCP && ends_or_closes(flags, fins) {
        forget_both();
    }
}

/// Clears the copies of both directions of the flow of `scratch.key`
/// (translated to `scratch.to`) on every CPU. Not inlined: its loops get a
/// frame of their own.
#[inline(never)]
fn forget_both() {
    let Some(scratch) = scratch() else {
        return;
    };
    let to = &scratch.to;
    scratch.other = L4FlowKey {
        src: to.dst,
        dst: to.src,
        sport: to.dport,
        dport: to.sport,
        family: scratch.key.family,
        protocol: scratch.key.protocol,
        pad: [0; 2],
    };
    forget(&scratch.key);
    forget(&scratch.other);
}

/// Keeps the translation of a packet of `key` (a client's packet, or a
/// reply if `reply`) that the general path just sent to `to` on the fresh
/// next hop `hop`, for the flow's next packets on this CPU, with its
/// service, backend and the backend's generation (`counted`). Only for a
/// packet without FIN or RST (`flags`), of a flow with no FIN noted (the
/// callers check).
#[inline(always)]
fn remember(
    key: *const L4FlowKey,
    to: *const FibQuery,
    hop: *const L4NextHop,
    flags: u8,
    (service, backend, generation): (u32, u32, u32),
    reply: bool,
) {
    if flags & (TCP_FIN | TCP_RST) != 0 {
        return;
    }
    let Some(slot) = L4_FLOW_CACHE6.get_ptr_mut(slot_of(key)) else {
        return;
    };
    // SAFETY: `to` points at the scratch map's translation, valid for this
    // run; read after the lookup, not kept across it.
    let to = unsafe { &*to };
    let word = |i| key_word(key, i);
    let (old_src, old_dst) = (
        [word(0), word(1), word(2), word(3)],
        [word(4), word(5), word(6), word(7)],
    );
    // Word 8 holds the ports (host order, little-endian: source low).
    let ports = word(8);
    let l4_delta = CsumDiff::new()
        .words(&old_src, &to.src)
        .words(&old_dst, &to.dst)
        .half((ports as u16).to_be(), to.sport.to_be())
        .half(((ports >> 16) as u16).to_be(), to.dport.to_be())
        .folded();
    // SAFETY: `hop` points into a map value valid for this run; `slot` is
    // this CPU's. The key goes last: a half-written slot holds no key.
    unsafe {
        if (*hop).expires_jiffies == 0 {
            return;
        }
        let words: *mut u32 = addr_of_mut!((*slot).key).cast();
        core::ptr::write_volatile(words.add(9), 0);
        let nat = &mut (*slot).nat;
        nat.hop.expires_jiffies = (*hop).expires_jiffies;
        nat.hop.ifindex = (*hop).ifindex;
        fib::write_macs(addr_of_mut!(nat.hop.macs).cast(), addr_of!((*hop).macs));
        // Word by word: an array assignment becomes a call to `memmove`.
        for i in 0..4 {
            core::ptr::write_volatile(&mut nat.src[i], core::ptr::read_volatile(&to.src[i]));
            core::ptr::write_volatile(&mut nat.dst[i], core::ptr::read_volatile(&to.dst[i]));
        }
        nat.sport = to.sport;
        nat.dport = to.dport;
        nat.l4_delta = l4_delta;
        nat.reserved = 0;
        nat.service = service;
        nat.backend = backend;
        nat.generation = generation;
        nat.pad = 0;
        for i in 0..9 {
            core::ptr::write_volatile(words.add(i), key_word(key, i));
        }
        core::ptr::write_volatile(words.add(9), tagged(key_word(key, 9), reply));
    }
}

/// Clears the cache slot of `key` on every CPU: the flow's entries changed
/// (a FIN) or went (RST, the last ACK). Clearing another flow's copy that
/// shares the slot costs it one trip through the general path.
#[inline(always)]
fn forget(key: *const L4FlowKey) {
    clear_on_every_cpu(
        core::ptr::from_ref(&L4_FLOW_CACHE6).cast_mut().cast(),
        slot_of(key),
        core::mem::offset_of!(L4CachedFlow6, key.protocol),
    );
}
