//! The established IPv4 path of the L4 tier, tried before any other
//! parsing: a plain IPv4 TCP or UDP packet (untagged, not a fragment) to a
//! service port looks up its flow in `L4_FLOWS4`, one from a backend port
//! its reply in `L4_REVERSE4`. The entry holds the whole translation,
//! worked out when the flow started (new addresses and ports, the checksum
//! changes they make, the next hop), so a hit costs one hash lookup of a
//! 16-byte key, the backend's generation (an array slot), a few stores and
//! the counters. A miss goes on to `l4` (a new flow, or not ours), which
//! does not look in these tables again: what is plain IPv4 here is exactly
//! what `parse::parse_flow` calls plain IPv4.

// Keys go to the map helpers by reference on purpose: clippy's "pass it by
// value" would copy them onto the 512-byte stack first.
#![allow(clippy::needless_borrows_for_generic_args)]

use core::{
    ffi::c_void,
    ptr::{addr_of, addr_of_mut},
};

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::generated::{bpf_jiffies64, bpf_map_lookup_percpu_elem},
    programs::XdpContext,
};
use ingress_common::{
    L4CachedFlow4, L4FlowKey4, L4Nat4, family, flow_cache_slot, l4, l4::port_flags, protocol,
    verdict,
};

use crate::{
    csum::apply_folded,
    fib::{self, FibQuery, Route},
    l4::{TCP_FIN, TCP_RST, ends_or_closes, port_bits, scratch},
    listener_key, listener_verdict,
    maps::{
        L4_BACKEND_STATS, L4_BACKENDS, L4_CONFIG, L4_FLOW_CACHE4, L4_FLOWS4, L4_REVERSE4,
        L4_SERVICE_STATS,
    },
    parse::{EthHdr, Ipv4Hdr, L4Ports, join, ptr_at, split},
    stats::bump_l4,
};

const PASS: u32 = xdp_action::XDP_PASS;
/// `ETH_P_IP` as the frame's two bytes read as one (little-endian) word.
const ETHER_TYPE_IPV4: u16 = u16::from_le_bytes([0x08, 0x00]);
/// Offset of the IPv4 header in an untagged frame.
const L3_OFFSET: usize = 14;
/// The fragment offset and "more fragments" bits of `frag_off` (host order).
const FRAGMENT_BITS: u16 = 0x3fff;
/// Offset of the TCP flags and of the checksums in their headers.
const TCP_FLAGS_OFFSET: usize = 13;
const TCP_CHECK_OFFSET: usize = 16;
const UDP_CHECK_OFFSET: usize = 6;

/// The Ethernet and IPv4 headers of an untagged frame, as they lie in it
/// (no padding: the IPv4 header's 2-byte alignment fits offset 14).
#[repr(C)]
struct EthIpv4 {
    eth: EthHdr,
    ip: Ipv4Hdr,
}

const _: () = assert!(core::mem::offset_of!(EthIpv4, ip) == L3_OFFSET);

/// Where the fields a translation touches lie in the packet.
struct Headers {
    /// The Ethernet header's MAC addresses, as six 16-bit words.
    eth: *mut u16,
    ip: *mut Ipv4Hdr,
    ports: *mut L4Ports,
    check: *mut u16,
    udp: bool,
    tcp_flags: u8,
}

/// The verdict (reason, XDP action) of a plain IPv4 packet of an
/// established flow or of a reply to one, or of one whose ports no L4
/// service or backend uses (by its listener); `None` for every other
/// packet.
///
/// Inlined into the entry point: the call chains under it still fit the
/// 512-byte stack because a new flow's FIB lookup is called from the entry
/// point's frame, not from under `l4::pick`'s.
#[inline(always)]
pub fn plain_ipv4(ctx: &XdpContext) -> Option<(u32, u32)> {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    decide(ctx, bytes)
}

/// The packed verdict of a packet of `key` by its listener.
#[inline(always)]
fn by_listener(key: &L4FlowKey4, bytes: u64) -> u32 {
    let listener = listener_key([key.dst, 0, 0, 0], key.dport, family::IPV4, key.protocol);
    listener_verdict(&listener, &[key.src, 0, 0, 0], bytes)
}

#[inline(always)]
fn decide(ctx: &XdpContext, bytes: u64) -> Option<(u32, u32)> {
    let (key, headers) = parse(ctx)?;
    // A client's packet in this CPU's flow cache needs no port check: the
    // copy was made behind one, and userspace clears the caches when a
    // service port closes.
    if let Some(decided) = cached(ctx, &key, &headers, bytes, false) {
        return Some(decided);
    }
    let (service_bit, backend_bit) = if key.protocol == protocol::TCP {
        (port_flags::SERVICE_TCP, port_flags::BACKEND_TCP)
    } else {
        (port_flags::SERVICE_UDP, port_flags::BACKEND_UDP)
    };
    let service_port = port_bits(key.dport) & service_bit != 0;
    if service_port && let Some(entry) = L4_FLOWS4.get_ptr_mut(&key) {
        // SAFETY: the entry stays valid for this run (the LRU may evict it
        // for later runs); only its FIN bytes and next hop are written.
        let (index, generation) = unsafe { ((*entry).backend, (*entry).generation) };
        let backend = L4_BACKENDS.get_ptr(index)?;
        // SAFETY: an array slot is valid for the whole run.
        let live = unsafe {
            (*backend).flags & l4::BACKEND_ACTIVE != 0 && (*backend).generation == generation
        };
        // A flow whose backend went away starts again (in `l4`).
        if !live {
            return None;
        }
        let route = next_hop(ctx, &key, &headers, entry);
        let decided = translate(ctx, &key, &headers, entry, bytes, false, route, true);
        remember(&key, &headers, entry, false);
        return Some(decided);
    }
    if port_bits(key.sport) & backend_bit == 0 {
        // Not the L4 tier's at all: its listener decides, without the
        // general parser.
        return if service_port {
            None
        } else {
            let packed = by_listener(&key, bytes);
            Some((packed >> 8, packed & 0xff))
        };
    }
    let config = L4_CONFIG.get_ptr(0)?;
    // SAFETY: an array slot is valid for the whole run; any version is a
    // consistent answer.
    let (nat_mode, port_min, port_max) =
        unsafe { ((*config).nat_mode, (*config).port_min, (*config).port_max) };
    // In full NAT, replies come back to our own source ports only.
    if nat_mode == l4::NAT_FULL && (key.dport < port_min || key.dport > port_max) {
        return None;
    }
    if let Some(decided) = cached(ctx, &key, &headers, bytes, true) {
        return Some(decided);
    }
    let entry = L4_REVERSE4.get_ptr_mut(&key)?;
    let route = next_hop(ctx, &key, &headers, entry);
    let decided = translate(ctx, &key, &headers, entry, bytes, true, route, true);
    remember(&key, &headers, entry, true);
    Some(decided)
}

/// The key words of `key` as this CPU's flow cache holds them for a
/// client's packet (`reply` false) or a reply.
#[inline(always)]
fn cache_words(key: &L4FlowKey4, reply: bool) -> [u32; 4] {
    let tagged = L4FlowKey4 {
        pad: u8::from(reply),
        ..*key
    };
    // SAFETY: 16 bytes of plain data (no implicit padding), align 4.
    unsafe { core::mem::transmute::<L4FlowKey4, [u32; 4]>(tagged) }
}

/// A packet of a flow in this CPU's flow cache (see `L4CachedFlow4`):
/// translated by the copy there, without a hash-table lookup. `None` sends
/// it to the hash table: not there, a FIN or RST, a next hop to refresh,
/// or a backend that went away.
#[inline(always)]
fn cached(
    ctx: &XdpContext,
    key: &L4FlowKey4,
    headers: &Headers,
    bytes: u64,
    reply: bool,
) -> Option<(u32, u32)> {
    if headers.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        return None;
    }
    let slot = L4_FLOW_CACHE4.get_ptr_mut(flow_cache_slot(key))?;
    if !holds(slot, &cache_words(key, reply)) {
        return None;
    }
    // The slot's fields are read after the helper call, not kept across it
    // (the compiler would spill them to the stack).
    let now = jiffies();
    // SAFETY: this CPU's slot, valid for the whole run.
    if unsafe { (*slot).nat.hop.expires_jiffies } <= now {
        return None;
    }
    if !reply {
        // SAFETY: as above.
        let (index, generation) = unsafe { ((*slot).nat.backend, (*slot).nat.generation) };
        let backend = L4_BACKENDS.get_ptr(index)?;
        // SAFETY: an array slot is valid for the whole run.
        let live = unsafe {
            (*backend).flags & l4::BACKEND_ACTIVE != 0 && (*backend).generation == generation
        };
        if !live {
            return None;
        }
    }
    // SAFETY: a field of this CPU's slot.
    let entry = unsafe { addr_of_mut!((*slot).nat) };
    // The copy's next hop is fresh (checked above).
    Some(translate(
        ctx,
        key,
        headers,
        entry,
        bytes,
        reply,
        Route::Found,
        false,
    ))
}

/// Whether the flow cache slot `slot` holds the key words `want`: word by
/// word, each a load and a branch (compared whole, the compiler builds two
/// 64-bit values out of the halves first, twice the instructions).
#[inline(always)]
fn holds(slot: *const L4CachedFlow4, want: &[u32; 4]) -> bool {
    // SAFETY: this CPU's slot, valid for the whole run; other CPUs only
    // clear its protocol byte (a copy read half-cleared does not match).
    unsafe {
        let held: *const u32 = addr_of!((*slot).key).cast();
        core::ptr::read_volatile(held) == want[0]
            && core::ptr::read_volatile(held.add(1)) == want[1]
            && core::ptr::read_volatile(held.add(2)) == want[2]
            && core::ptr::read_volatile(held.add(3)) == want[3]
    }
}

/// Copies the hash-table entry `entry` of `key` into this CPU's flow cache
/// after its packet was sent: only with a fresh next hop, and not once a
/// FIN or RST was seen (their bookkeeping is in the hash tables).
#[inline(always)]
fn remember(key: &L4FlowKey4, headers: &Headers, entry: *const L4Nat4, reply: bool) {
    if headers.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        return;
    }
    let Some(slot) = L4_FLOW_CACHE4.get_ptr_mut(flow_cache_slot(key)) else {
        return;
    };
    // SAFETY: `entry` points into a map value valid for this run (an
    // `L4Nat4`, 8-aligned, seven words); `slot` is this CPU's.
    unsafe {
        if (*entry).client_fin != 0
            || (*entry).backend_fin != 0
            || (*entry).hop.expires_jiffies == 0
        {
            return;
        }
        let from = entry.cast::<u64>();
        let to = addr_of_mut!((*slot).nat).cast::<u64>();
        for i in 0..size_of::<L4Nat4>() / 8 {
            core::ptr::write_volatile(to.add(i), core::ptr::read_volatile(from.add(i)));
        }
        let words = addr_of_mut!((*slot).key).cast::<[u32; 4]>();
        core::ptr::write_volatile(words, cache_words(key, reply));
    }
}

/// Clears the flow cache slot of `key` on every CPU: the flow's entries
/// changed (a FIN) or went (RST, the last ACK). Clearing another flow's
/// copy that shares the slot costs it one hash-table lookup.
#[inline(always)]
fn forget_cached(key: &L4FlowKey4) {
    clear_on_every_cpu(
        core::ptr::from_ref(&L4_FLOW_CACHE4).cast_mut().cast(),
        flow_cache_slot(key),
        core::mem::offset_of!(L4CachedFlow4, key.protocol),
    );
}

/// Writes a zero byte at `protocol_at` into slot `index` of the per-CPU
/// array `map` (a flow cache) on every CPU: that slot's copy is gone.
#[inline(always)]
pub fn clear_on_every_cpu(map: *mut c_void, index: u32, protocol_at: usize) {
    for cpu in 0..l4::MAX_CPUS {
        // SAFETY: a plain helper call with a map of ours and a key on the
        // stack; it returns null past the last possible CPU.
        let slot =
            unsafe { bpf_map_lookup_percpu_elem(map, core::ptr::from_ref(&index).cast(), cpu) };
        if slot.is_null() {
            break;
        }
        // SAFETY: a slot of the map, valid for this run; the caller names
        // the offset of a byte inside it.
        unsafe { core::ptr::write_volatile(slot.cast::<u8>().add(protocol_at), 0) };
    }
}

/// The 5-tuple and headers of a plain IPv4 TCP or UDP packet whose headers
/// are all there, else `None` (such packets go to `parse::parse_flow`).
#[inline(always)]
fn parse(ctx: &XdpContext) -> Option<(L4FlowKey4, Headers)> {
    // Both headers by one bounds check.
    let frame: *mut EthIpv4 = ptr_at(ctx, 0).ok()?;
    // SAFETY: bounds checked by `ptr_at`; the type is 2-byte aligned like
    // the rest of the headers, and read as one word, not byte by byte.
    let (eth, ip, ether_type, version_ihl, frag_off, l4_protocol) = unsafe {
        let (eth, ip) = (addr_of_mut!((*frame).eth), addr_of_mut!((*frame).ip));
        (
            eth,
            ip,
            *addr_of!((*eth).ether_type).cast::<u16>(),
            (*ip).version_ihl,
            u16::from_be((*ip).frag_off),
            (*ip).protocol,
        )
    };
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if ether_type != ETHER_TYPE_IPV4
        || version_ihl >> 4 != 4
        || header_len < size_of::<Ipv4Hdr>()
        || frag_off & FRAGMENT_BITS != 0
    {
        return None;
    }
    let l4_offset = L3_OFFSET + header_len;
    let Transport {
        ports,
        check,
        udp,
        tcp_flags,
    } = transport(ctx, l4_offset, l4_protocol)?;
    // SAFETY: bounds checked by `ptr_at`.
    let key = unsafe {
        L4FlowKey4 {
            src: join((*ip).saddr),
            dst: join((*ip).daddr),
            sport: u16::from_be((*ports).source),
            dport: u16::from_be((*ports).dest),
            protocol: l4_protocol,
            pad: 0,
            reserved: 0,
        }
    };
    Some((
        key,
        Headers {
            eth: eth.cast(),
            ip,
            ports,
            check,
            udp,
            tcp_flags,
        },
    ))
}

/// A TCP or UDP header's fields a translation touches, in the packet.
pub struct Transport {
    /// The ports (the first four bytes of either header).
    pub ports: *mut L4Ports,
    /// The checksum.
    pub check: *mut u16,
    /// UDP (else TCP).
    pub udp: bool,
    /// The TCP flags (zero for UDP).
    pub tcp_flags: u8,
}

/// The TCP or UDP header of protocol `l4_protocol` at `l4_offset`, whole
/// (TCP's 20 fixed bytes, as `parse_flow` wants them), else `None`. The
/// ports and checksum lie in the header checked here: no check of their own.
#[inline(always)]
pub fn transport(ctx: &XdpContext, l4_offset: usize, l4_protocol: u8) -> Option<Transport> {
    match l4_protocol {
        protocol::TCP => {
            let tcp: *mut [u8; 20] = ptr_at(ctx, l4_offset).ok()?;
            let tcp: *mut u8 = tcp.cast();
            // SAFETY: bounds checked by `ptr_at`; the checksum is 2-byte
            // aligned like the rest of the headers.
            unsafe {
                Some(Transport {
                    ports: tcp.cast::<L4Ports>(),
                    check: tcp.add(TCP_CHECK_OFFSET).cast::<u16>(),
                    udp: false,
                    tcp_flags: *tcp.add(TCP_FLAGS_OFFSET),
                })
            }
        }
        protocol::UDP => {
            let udp: *mut [u8; 8] = ptr_at(ctx, l4_offset).ok()?;
            // SAFETY: as above.
            let check = unsafe { udp.cast::<u8>().add(UDP_CHECK_OFFSET).cast::<u16>() };
            Some(Transport {
                ports: udp.cast::<L4Ports>(),
                check,
                udp: true,
                tcp_flags: 0,
            })
        }
        _ => None,
    }
}

/// The route of a packet of `key` by its hash-table entry `entry`: its
/// cached next hop while fresh, else the FIB's answer, cached.
#[inline(always)]
fn next_hop(ctx: &XdpContext, key: &L4FlowKey4, headers: &Headers, entry: *mut L4Nat4) -> Route {
    // SAFETY: `entry` is valid for this run; a concurrent refresh of the
    // next hop writes the same answer.
    if unsafe { (*entry).hop.expires_jiffies } > jiffies() {
        return Route::Found;
    }
    // SAFETY: bounds checked when parsed.
    let ip_len = u16::from_be(unsafe { (*headers.ip).total_len });
    fib::route_of(refresh(ctx.ctx, entry, key.protocol, ip_len))
}

/// Translates a packet of `key` by its entry (of `L4_REVERSE4` if `reply`,
/// else of `L4_FLOWS4`, or a cached copy) along `route`, counts it and
/// sends it on. `may_close` is false for a cached copy: `cached` lets no
/// FIN or RST through and `remember` copies no entry with a FIN noted, so
/// such a packet never ends its flow and skips that check.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn translate(
    ctx: &XdpContext,
    key: &L4FlowKey4,
    headers: &Headers,
    entry: *mut L4Nat4,
    bytes: u64,
    reply: bool,
    route: Route,
    may_close: bool,
) -> (u32, u32) {
    // SAFETY: `entry` is valid for this run.
    let (service, backend) = unsafe { ((*entry).service, (*entry).backend) };
    bump_l4(
        L4_SERVICE_STATS.get_ptr_mut(service),
        bytes,
        0,
        u64::from(reply),
    );
    bump_l4(
        L4_BACKEND_STATS.get_ptr_mut(backend),
        bytes,
        0,
        u64::from(reply),
    );
    let result = match route {
        Route::Found => {
            // SAFETY: `entry` points into a map value valid for this run.
            let (ifindex, macs) =
                unsafe { ((*entry).hop.ifindex, core::ptr::addr_of!((*entry).hop.macs)) };
            fib::write_macs(headers.eth, macs);
            rewrite(headers, entry);
            let reason = if reply {
                verdict::L4_REPLY
            } else {
                verdict::L4_FORWARD
            };
            (reason, fib::transmit(ctx, ifindex))
        }
        Route::ToStack => {
            rewrite(headers, entry);
            (verdict::L4_FIB_PASS, PASS)
        }
        Route::None => (verdict::L4_NO_ROUTE, PASS),
        Route::NoNeighbour => (verdict::L4_NO_NEIGH, xdp_action::XDP_DROP),
    };
    if may_close && !headers.udp {
        // SAFETY: as above.
        let fins = unsafe { (*entry).client_fin != 0 && (*entry).backend_fin != 0 };
        let flags = headers.tcp_flags;
        if ends_or_closes(flags, fins) {
            close(key, entry, flags, reply);
        }
    }
    result
}

/// `bpf_jiffies64`. Read once per packet and passed on: the compiler
/// does not merge two helper calls.
#[inline(always)]
fn jiffies() -> u64 {
    // SAFETY: a plain helper call (inlined by the verifier as one load).
    unsafe { bpf_jiffies64() }
}

/// Writes the entry's addresses and ports into the packet and patches the
/// checksums with the entry's changes.
#[inline(always)]
fn rewrite(headers: &Headers, entry: *const L4Nat4) {
    let Headers {
        ip,
        ports,
        check,
        udp,
        ..
    } = *headers;
    // SAFETY: the headers were bounds checked when parsed and only this
    // run writes the packet; `entry` is valid for this run.
    unsafe {
        (*ip).saddr = split((*entry).src);
        (*ip).daddr = split((*entry).dst);
        (*ip).check = apply_folded((*ip).check, (*entry).ip_delta);
        (*ports).source = (*entry).sport.to_be();
        (*ports).dest = (*entry).dport.to_be();
        let old = *check;
        // A UDP checksum of zero means "none" and stays zero; a computed
        // zero is sent as 0xffff.
        if !udp {
            *check = apply_folded(old, (*entry).l4_delta);
        } else if old != 0 {
            let new = apply_folded(old, (*entry).l4_delta);
            *check = if new == 0 { 0xffff } else { new };
        }
    }
}

/// Asks the FIB again for the next hop of `entry` and caches it. Not
/// inlined: once a second per flow, and it needs the scratch space.
#[inline(never)]
fn refresh(ctx: *mut xdp_md, entry: *mut L4Nat4, l4_protocol: u8, ip_len: u16) -> u32 {
    let Some(scratch) = scratch() else {
        return Route::None as u32;
    };
    let to = &mut scratch.to;
    // SAFETY: `entry` points into a map value valid for this run.
    let hop = unsafe {
        *to = FibQuery {
            src: [(*entry).src, 0, 0, 0],
            dst: [(*entry).dst, 0, 0, 0],
            sport: (*entry).sport,
            dport: (*entry).dport,
            ip_len,
            family: family::IPV4,
            protocol: l4_protocol,
            want_src: 0,
        };
        &mut (*entry).hop
    };
    let route = fib::lookup(ctx, to, hop);
    if route == Route::Found as u32 {
        // SAFETY: a plain helper call.
        hop.expires_jiffies = unsafe { bpf_jiffies64() } + l4::NEXT_HOP_TTL_JIFFIES;
    }
    route
}

/// A TCP RST, FIN or last ACK of the flow of `key` (its entry `entry`):
/// an RST or the last ACK after a FIN from each side ends the flow both
/// ways; a FIN is noted in both entries. The other direction's key is the
/// translated packet's 5-tuple, swapped. Not inlined: rare.
#[inline(never)]
fn close(key: &L4FlowKey4, entry: *mut L4Nat4, flags: u8, reply: bool) {
    let Some(scratch) = scratch() else {
        return;
    };
    let other = &mut scratch.other4;
    // SAFETY: `entry` points into a map value valid for this run.
    unsafe {
        *other = L4FlowKey4 {
            src: (*entry).dst,
            dst: (*entry).src,
            sport: (*entry).dport,
            dport: (*entry).sport,
            protocol: key.protocol,
            pad: 0,
            reserved: 0,
        };
    }
    // SAFETY: as above.
    let fins = unsafe { (*entry).client_fin != 0 && (*entry).backend_fin != 0 };
    // Each table by its own name: one map per helper call site lets the
    // verifier inline the lookups.
    forget_cached(key);
    forget_cached(&*other);
    if flags & TCP_RST != 0 || (flags & TCP_FIN == 0 && fins) {
        if reply {
            let _ = L4_REVERSE4.remove(key);
            let _ = L4_FLOWS4.remove(&*other);
        } else {
            let _ = L4_FLOWS4.remove(key);
            let _ = L4_REVERSE4.remove(&*other);
        }
    } else if flags & TCP_FIN != 0 {
        // SAFETY: byte stores into map values valid for this run; they race
        // with nothing but the same stores on another CPU.
        unsafe {
            if reply {
                (*entry).backend_fin = 1;
                if let Some(forward) = L4_FLOWS4.get_ptr_mut(&*other) {
                    (*forward).backend_fin = 1;
                }
            } else {
                (*entry).client_fin = 1;
                if let Some(reverse) = L4_REVERSE4.get_ptr_mut(&*other) {
                    (*reverse).client_fin = 1;
                }
            }
        }
    }
}
