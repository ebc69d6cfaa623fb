//! The L4 tier, as the life of a packet: a packet to a service port finds
//! its flow in the connection table, or (if its address is a service's)
//! picks a backend from the service's Maglev table and creates the flow
//! (with a source port of its own in full NAT, and a reverse-NAT entry for
//! the replies); it is then translated and sent on. A reply from a backend
//! finds its reverse-NAT entry, is translated back and sent to the client.
//! TCP RST ends a flow at once; after a FIN from each side, the last ACK
//! ends it.
//!
//! Values in map entries are read field by field through their pointers,
//! not copied whole: the BPF stack is 512 bytes for all frames together.

// Keys and values go to the map helpers by reference on purpose: clippy's
// "pass it by value" would copy them onto the 512-byte stack first.
#![allow(clippy::needless_borrows_for_generic_args)]

use core::ptr::{addr_of, addr_of_mut};

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST, xdp_action, xdp_md},
    programs::XdpContext,
};
use ingress_common::{
    L4Backend, L4Flow, L4FlowKey, L4FlowKey4, L4Nat4, L4NextHop, L4ReverseNat, L4Service,
    L4ServiceKey, family, l4, l4::port_flags, maglev_slot, protocol, verdict,
};

use crate::{
    csum::CsumDiff,
    fib::{self, FibQuery, Route},
    l4_fast6,
    maps::{
        L4_BACKEND_STATS, L4_BACKENDS, L4_CONFIG, L4_FLOWS, L4_FLOWS4, L4_MAGLEV, L4_PORT_FLAGS,
        L4_PORTS, L4_REVERSE, L4_REVERSE4, L4_SERVICE_STATS, L4_SERVICES, SCRATCH, Scratch,
    },
    nat::rewrite,
    parse::Flow,
    stats::bump_l4,
};

/// TCP flag bits.
pub const TCP_FIN: u8 = 0x01;
/// TCP flag bits.
pub const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

const PASS: u32 = xdp_action::XDP_PASS;

/// The verdict (reason, XDP action) for a packet of the L4 tier, `None`
/// for any other packet (the listeners decide those). The port flags keep
/// every other packet clear of the hash lookups.
#[inline(always)]
pub fn steer(ctx: &XdpContext, flow: &Flow, bytes: u64) -> Option<(u32, u32)> {
    let (service_bit, backend_bit) = if flow.protocol == protocol::TCP {
        (port_flags::SERVICE_TCP, port_flags::BACKEND_TCP)
    } else {
        (port_flags::SERVICE_UDP, port_flags::BACKEND_UDP)
    };
    if port_bits(flow.dport) & service_bit != 0
        && let Some(decided) = to_service(ctx, flow, bytes)
    {
        return Some(decided);
    }
    if port_bits(flow.sport) & backend_bit == 0 {
        return None;
    }
    let config = L4_CONFIG.get_ptr(0)?;
    // SAFETY: an array slot is valid for the whole run; userspace writes it
    // rarely and any version is a consistent answer.
    let (nat_mode, port_min, port_max) =
        unsafe { ((*config).nat_mode, (*config).port_min, (*config).port_max) };
    // In full NAT, replies come back to our own source ports only.
    if nat_mode == l4::NAT_FULL && (flow.dport < port_min || flow.dport > port_max) {
        return None;
    }
    let scratch = scratch()?;
    if flow.family == family::IPV4 {
        // Plain IPv4 replies were looked up by `l4_fast`; the others are
        // counted and passed.
        if flow.plain {
            return None;
        }
        scratch.key4 = flow_key4(flow);
        let reverse = L4_REVERSE4.get_ptr(&scratch.key4)?;
        // SAFETY: the value stays valid for this run.
        let (service, backend) = unsafe { ((*reverse).service, (*reverse).backend) };
        bump_l4(L4_SERVICE_STATS.get_ptr_mut(service), bytes, 0, 1);
        bump_l4(L4_BACKEND_STATS.get_ptr_mut(backend), bytes, 0, 1);
        return Some((verdict::L4_UNSUPPORTED, PASS));
    }
    scratch.key = flow_key(flow);
    let reverse = L4_REVERSE.get_ptr_mut(&scratch.key)?;
    let packed = reply(ctx.ctx, flow, reverse);
    l4_fast6::after_reply(reverse, packed, flow.tcp_flags);
    Some(unpack(packed))
}

/// The four flag bits of `port` in `L4_PORT_FLAGS`.
#[inline(always)]
pub fn port_bits(port: u16) -> u64 {
    match L4_PORT_FLAGS.get_ptr(u32::from(port) / port_flags::PORTS_PER_WORD) {
        // SAFETY: an array slot is valid for the whole run.
        Some(word) => port_flags::of(unsafe { *word }, port),
        None => 0,
    }
}

/// This CPU's scratch space (see `maps::SCRATCH`).
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: this CPU's slot, used by one program run at a time (XDP runs
    // do not nest); the program never holds two references to one field.
    SCRATCH.get_ptr_mut(0).map(|slot| unsafe { &mut *slot })
}

#[inline(always)]
fn flow_key(flow: &Flow) -> L4FlowKey {
    L4FlowKey {
        src: flow.saddr,
        dst: flow.daddr,
        sport: flow.sport,
        dport: flow.dport,
        family: flow.family,
        protocol: flow.protocol,
        pad: [0; 2],
    }
}

/// The IPv4 key of `flow`.
#[inline(always)]
fn flow_key4(flow: &Flow) -> L4FlowKey4 {
    L4FlowKey4 {
        src: flow.saddr[0],
        dst: flow.daddr[0],
        sport: flow.sport,
        dport: flow.dport,
        protocol: flow.protocol,
        pad: 0,
        reserved: 0,
    }
}

/// The key of the packet going the other way from a translated `to`.
#[inline(always)]
fn opposite(flow: &Flow, to: &FibQuery) -> L4FlowKey {
    L4FlowKey {
        src: to.dst,
        dst: to.src,
        sport: to.dport,
        dport: to.sport,
        family: flow.family,
        protocol: flow.protocol,
        pad: [0; 2],
    }
}

/// A packet to a port of an L4 service: an established flow, or a new one
/// if the address is a service's, else not ours (`None`).
#[inline(always)]
fn to_service(ctx: &XdpContext, flow: &Flow, bytes: u64) -> Option<(u32, u32)> {
    // Plain IPv4 packets found no flow in `l4_fast` (or one whose backend
    // went away): they go on to the service, for a new flow.
    if flow.plain && flow.family == family::IPV6 {
        let scratch = scratch()?;
        scratch.key = flow_key(flow);
        if let Some(entry) = L4_FLOWS.get_ptr_mut(&scratch.key) {
            // SAFETY: the entry stays valid for this run (the LRU may evict
            // it for later runs); only its FIN bytes and next hop are written.
            let (index, generation) = unsafe { ((*entry).backend, (*entry).generation) };
            if let Some(backend) = L4_BACKENDS.get_ptr(index) {
                // SAFETY: an array slot is valid for the whole run.
                let live = unsafe {
                    (*backend).flags & l4::BACKEND_ACTIVE != 0
                        && (*backend).generation == generation
                };
                if live {
                    let packed = established(ctx.ctx, flow, entry, backend);
                    l4_fast6::after_forward(entry, packed, flow.tcp_flags);
                    return Some(unpack(packed));
                }
            }
        }
    }
    let service_key = L4ServiceKey {
        addr: flow.daddr,
        port: flow.dport,
        family: flow.family,
        protocol: flow.protocol,
    };
    let service = L4_SERVICES.get_ptr(&service_key)?;
    // SAFETY: the value stays valid for this run; an update replaces it whole.
    let service: L4Service = unsafe { *service };
    if !flow.plain {
        bump_l4(L4_SERVICE_STATS.get_ptr_mut(service.index), bytes, 0, 0);
        return Some((verdict::L4_UNSUPPORTED, PASS));
    }
    if service.backends == 0 {
        bump_l4(L4_SERVICE_STATS.get_ptr_mut(service.index), bytes, 0, 0);
        return Some((verdict::L4_NO_BACKEND, PASS));
    }
    let picked = pick(flow, &service, bytes);
    if picked & PICKED == 0 {
        return Some(unpack(picked));
    }
    let picked = route_new_flow(ctx, flow, picked);
    if picked & PICKED == 0 {
        return Some(unpack(picked));
    }
    // Called from here, not from `pick`: each call chain from the entry
    // point has to fit the 512-byte stack.
    let packed = if flow.family == family::IPV4 {
        start4(ctx.ctx, flow, picked)
    } else {
        start6(ctx.ctx, flow, picked)
    };
    Some(unpack(packed))
}

/// A verdict packed by a subprogram (`reason << 8 | action`: one register).
#[inline(always)]
fn unpack(packed: u32) -> (u32, u32) {
    (packed >> 8, packed & 0xff)
}

/// The packet's length, for the counters.
#[inline(always)]
fn packet_bytes(ctx: &XdpContext) -> u64 {
    (ctx.data_end() - ctx.data()) as u64
}

/// A packet of a flow that has its backend. Not inlined, like the other
/// paths of the L4 tier: each gets a stack frame of its own (all frames of a
/// call chain share 512 bytes).
#[inline(never)]
fn established(
    ctx: *mut xdp_md,
    flow: &Flow,
    entry: *mut L4Flow,
    backend: *const L4Backend,
) -> u32 {
    let ctx = &XdpContext::new(ctx);
    let bytes = packet_bytes(ctx);
    let Some(scratch) = scratch() else {
        return (verdict::L4_NO_ROUTE << 8) | PASS;
    };
    // `scratch.key` is this packet's flow key (`to_service` set it).
    let Scratch { key, other, to, .. } = scratch;
    // SAFETY: `entry` and `backend` point into map values valid for this run.
    let (hop, service, backend_index, fins) = unsafe {
        *to = FibQuery {
            src: (*entry).nat_addr,
            dst: (*backend).addr,
            sport: (*entry).nat_port,
            dport: (*backend).port,
            ip_len: flow.ip_len,
            family: flow.family,
            protocol: flow.protocol,
            want_src: 0,
        };
        (
            addr_of_mut!((*entry).hop),
            (*entry).service,
            (*entry).backend,
            (*entry).client_fin != 0 && (*entry).backend_fin != 0,
        )
    };
    let route = fib::cached_route(ctx, hop, to);
    let result = deliver(ctx, flow, to, route, hop, verdict::L4_FORWARD);
    bump_l4(L4_SERVICE_STATS.get_ptr_mut(service), bytes, 0, 0);
    bump_l4(L4_BACKEND_STATS.get_ptr_mut(backend_index), bytes, 0, 0);
    let flags = flow.tcp_flags;
    if flow.protocol == protocol::TCP && ends_or_closes(flags, fins) {
        *other = opposite(flow, to);
        if flags & TCP_RST != 0 || (flags & TCP_FIN == 0 && fins) {
            let _ = L4_FLOWS.remove(&*key);
            let _ = L4_REVERSE.remove(&*other);
        } else if flags & TCP_FIN != 0 {
            // SAFETY: see `to_service`; a byte store races with nothing but
            // the same store on another CPU.
            unsafe { (*entry).client_fin = 1 };
            if let Some(reply_state) = L4_REVERSE.get_ptr_mut(&*other) {
                // SAFETY: as above.
                unsafe { (*reply_state).client_fin = 1 };
            }
        }
    }
    (result.0 << 8) | result.1
}

/// [`pick`]'s answer when it picked a backend: this bit, full NAT in bit
/// 2 (and the route in bits 0-1, added by [`route_new_flow`]); else a
/// verdict packed as `reason << 8 | action`.
const PICKED: u32 = 1 << 31;
const PICKED_FULL_NAT: u32 = 1 << 2;

/// The first packet of a flow (or one whose backend went away): picks a
/// backend, for [`route_new_flow`] to find its next hop and [`start4`] or
/// [`start6`] to set up the translation both ways and send the packet. The
/// pick is left in the scratch entry of the flow's family (service,
/// backend, generation) and `to` (the translation). Not inlined: it is the
/// slow path, and its keys and values get a stack frame of their own.
#[inline(never)]
fn pick(flow: &Flow, service: &L4Service, bytes: u64) -> u32 {
    match pick_backend(flow, service, bytes) {
        Ok(picked) => picked,
        Err((reason, action)) => (reason << 8) | action,
    }
}

/// [`pick`]'s work: `Ok` with the answer for [`route_new_flow`], or `Err`
/// with the verdict.
#[inline(always)]
fn pick_backend(flow: &Flow, service: &L4Service, bytes: u64) -> Result<u32, (u32, u32)> {
    bump_l4(L4_SERVICE_STATS.get_ptr_mut(service.index), bytes, 1, 0);
    let Some(scratch) = scratch() else {
        return Err((verdict::L4_NO_BACKEND, PASS));
    };
    scratch.key = flow_key(flow);
    let Scratch {
        key,
        to,
        flow: state,
        flow4,
        ..
    } = scratch;
    let Some(slot) = flow_hash(key).checked_rem(service.table_size) else {
        return Err((verdict::L4_NO_BACKEND, PASS));
    };
    let index = maglev_slot(
        service.index,
        service.active_half & 1,
        service.table_size,
        slot,
    );
    let Some(lanes) = L4_MAGLEV.get_ptr(index / 4) else {
        return Err((verdict::L4_NO_BACKEND, PASS));
    };
    // SAFETY: an array slot is valid for the whole run; the lane is below 4.
    let backend_index = u32::from(unsafe { (*lanes)[(index % 4) as usize] });
    let Some(backend) = L4_BACKENDS.get_ptr(backend_index) else {
        return Err((verdict::L4_NO_BACKEND, PASS));
    };
    // SAFETY: as above.
    let (backend_addr, backend_port, flags, generation) = unsafe {
        (
            (*backend).addr,
            (*backend).port,
            (*backend).flags,
            (*backend).generation,
        )
    };
    if flags & l4::BACKEND_ACTIVE == 0 {
        return Err((verdict::L4_NO_BACKEND, PASS));
    }
    let Some(config) = L4_CONFIG.get_ptr(0) else {
        return Err((verdict::L4_NO_BACKEND, PASS));
    };
    // SAFETY: as in `steer`.
    let full_nat = unsafe { (*config).nat_mode } == l4::NAT_FULL;
    // Full NAT: the route's preferred source address (the lookup fills it
    // in) and a port of our own; DNAT: the client's.
    *to = FibQuery {
        src: if full_nat { flow.daddr } else { flow.saddr },
        dst: backend_addr,
        sport: flow.sport,
        dport: backend_port,
        ip_len: flow.ip_len,
        family: flow.family,
        protocol: flow.protocol,
        want_src: u32::from(full_nat),
    };
    let ipv4 = flow.family == family::IPV4;
    if ipv4 {
        flow4.service = service.index;
        flow4.backend = backend_index;
        flow4.generation = generation;
    } else {
        state.service = service.index;
        state.backend = backend_index;
        state.generation = generation;
    }
    let full_nat_bit = if full_nat { PICKED_FULL_NAT } else { 0 };
    Ok(PICKED | full_nat_bit)
}

/// The next hop of a new flow's translation (`to` in the scratch space),
/// written into its entry there; adds the route to [`pick`]'s answer, or
/// returns the verdict packed when full NAT has no route (no source
/// address). Called by `to_service` between [`pick`] and [`start4`] or
/// [`start6`], not by `pick`: the lookup's frame under `pick`'s would not
/// fit the stack.
#[inline(always)]
fn route_new_flow(ctx: &XdpContext, flow: &Flow, picked: u32) -> u32 {
    let Some(scratch) = scratch() else {
        return (verdict::L4_NO_ROUTE << 8) | PASS;
    };
    let Scratch {
        to,
        flow: state,
        flow4,
        ..
    } = scratch;
    // The next hop goes straight into the entry that keeps it.
    let hop = if flow.family == family::IPV4 {
        &mut flow4.hop
    } else {
        &mut state.hop
    };
    hop.expires_jiffies = 0;
    let route = fib::lookup(ctx.ctx, to, hop);
    if picked & PICKED_FULL_NAT != 0 && fib::route_of(route) == Route::None {
        return (verdict::L4_NO_ROUTE << 8) | PASS;
    }
    picked | route
}

/// The route and NAT mode of [`pick`]'s answer `picked`.
#[inline(always)]
fn picked_route(picked: u32) -> (Route, bool) {
    (fib::route_of(picked & 0b11), picked & PICKED_FULL_NAT != 0)
}

/// When a next hop found now expires (0 if none was found).
#[inline(always)]
fn hop_expiry(route: Route) -> u64 {
    if route == Route::Found {
        // SAFETY: a plain helper call.
        let now = unsafe { aya_ebpf::helpers::generated::bpf_jiffies64() };
        now + l4::NEXT_HOP_TTL_JIFFIES
    } else {
        0
    }
}

/// Sets up a new IPv4 flow both ways in `L4_FLOWS4` and `L4_REVERSE4`
/// (the next hop is already in the scratch entry) and sends its first
/// packet. Returns the verdict packed. Not inlined, like [`start6`]: with
/// the backend's pick in one frame, the call chain of a new flow would not
/// fit the 512-byte stack.
#[inline(never)]
fn start4(ctx: *mut xdp_md, flow: &Flow, picked: u32) -> u32 {
    let ctx = &XdpContext::new(ctx);
    let bytes = packet_bytes(ctx);
    let Some(scratch) = scratch() else {
        return (verdict::L4_NO_BACKEND << 8) | PASS;
    };
    let Scratch {
        to,
        flow4,
        reverse4,
        key4,
        other4,
        ..
    } = scratch;
    let (route, full_nat) = picked_route(picked);
    let (service, backend, generation) = (flow4.service, flow4.backend, flow4.generation);
    *reverse4 = L4Nat4 {
        hop: L4NextHop::default(),
        src: flow.daddr[0],
        dst: flow.saddr[0],
        sport: flow.dport,
        dport: flow.sport,
        ip_delta: 0,
        l4_delta: 0,
        service,
        backend,
        generation,
        client_fin: 0,
        backend_fin: 0,
        reserved: 0,
    };
    *other4 = L4FlowKey4 {
        src: to.dst[0],
        dst: to.src[0],
        sport: to.dport,
        dport: to.sport,
        protocol: flow.protocol,
        pad: 0,
        reserved: 0,
    };
    if full_nat {
        let Some(port) = allocate_port(|port| {
            other4.dport = port;
            set_deltas(other4, reverse4);
            L4_REVERSE4
                .insert(&*other4, &*reverse4, u64::from(BPF_NOEXIST))
                .is_ok()
        }) else {
            return (verdict::L4_NO_PORT << 8) | PASS;
        };
        to.sport = port;
    } else {
        set_deltas(other4, reverse4);
        let _ = L4_REVERSE4.insert(&*other4, &*reverse4, u64::from(BPF_ANY));
    }
    flow4.hop.expires_jiffies = hop_expiry(route);
    flow4.src = to.src[0];
    flow4.dst = to.dst[0];
    flow4.sport = to.sport;
    flow4.dport = to.dport;
    flow4.client_fin = 0;
    flow4.backend_fin = 0;
    flow4.reserved = 0;
    *key4 = flow_key4(flow);
    set_deltas(key4, flow4);
    let _ = L4_FLOWS4.insert(&*key4, &*flow4, u64::from(BPF_ANY));
    bump_l4(L4_BACKEND_STATS.get_ptr_mut(backend), bytes, 1, 0);
    let (reason, action) = deliver(
        ctx,
        flow,
        to,
        route,
        addr_of_mut!(flow4.hop),
        verdict::L4_FORWARD,
    );
    (reason << 8) | action
}

/// [`start4`] for IPv6, in `L4_FLOWS` and `L4_REVERSE`.
#[inline(never)]
fn start6(ctx: *mut xdp_md, flow: &Flow, picked: u32) -> u32 {
    let ctx = &XdpContext::new(ctx);
    let bytes = packet_bytes(ctx);
    let Some(scratch) = scratch() else {
        return (verdict::L4_NO_BACKEND << 8) | PASS;
    };
    let Scratch {
        key,
        other: reply_key,
        to,
        flow: state,
        reverse,
        ..
    } = scratch;
    let (route, full_nat) = picked_route(picked);
    let (service, backend) = (state.service, state.backend);
    reverse.client = flow.saddr;
    reverse.service_addr = flow.daddr;
    reverse.client_port = flow.sport;
    reverse.service_port = flow.dport;
    reverse.service = service;
    reverse.backend = backend;
    reverse.client_fin = 0;
    reverse.backend_fin = 0;
    reverse.reserved = 0;
    reverse.hop.expires_jiffies = 0;
    *reply_key = opposite(flow, to);
    if full_nat {
        let Some(port) = allocate_port(|port| {
            reply_key.dport = port;
            L4_REVERSE
                .insert(&*reply_key, &*reverse, u64::from(BPF_NOEXIST))
                .is_ok()
        }) else {
            return (verdict::L4_NO_PORT << 8) | PASS;
        };
        to.sport = port;
    } else {
        let _ = L4_REVERSE.insert(&*reply_key, &*reverse, u64::from(BPF_ANY));
    }
    state.nat_addr = to.src;
    state.nat_port = to.sport;
    state.client_fin = 0;
    state.backend_fin = 0;
    state.hop.expires_jiffies = hop_expiry(route);
    *key = flow_key(flow);
    let _ = L4_FLOWS.insert(&*key, &*state, u64::from(BPF_ANY));
    bump_l4(L4_BACKEND_STATS.get_ptr_mut(backend), bytes, 1, 0);
    let (reason, action) = deliver(
        ctx,
        flow,
        to,
        route,
        addr_of_mut!(state.hop),
        verdict::L4_FORWARD,
    );
    (reason << 8) | action
}

/// Sets the checksum changes of `value` for a packet with the 5-tuple
/// `key`: what the rewrite to `value`'s addresses and ports changes.
#[inline(always)]
pub fn set_deltas(key: &L4FlowKey4, value: &mut L4Nat4) {
    let ip = CsumDiff::new()
        .word(key.src, value.src)
        .word(key.dst, value.dst);
    value.ip_delta = ip.folded();
    value.l4_delta = ip
        .half(key.sport.to_be(), value.sport.to_be())
        .half(key.dport.to_be(), value.dport.to_be())
        .folded();
}

/// Takes a source port from this CPU's share: `try_port` inserts the
/// reverse-NAT entry for a port with `BPF_NOEXIST` (the collision check, so
/// a port still used by a live flow is skipped) and says whether it did.
#[inline(always)]
fn allocate_port(mut try_port: impl FnMut(u16) -> bool) -> Option<u16> {
    let cursor = L4_PORTS.get_ptr_mut(0)?;
    // SAFETY: a per-CPU slot, written only by this CPU.
    let (mut next, min, max) = unsafe { ((*cursor).next, (*cursor).min, (*cursor).max) };
    if min == 0 || max < min {
        return None;
    }
    let mut found = None;
    for _ in 0..l4::PORT_TRIES {
        let port = if next < min || next > max { min } else { next };
        next = if port >= max { min } else { port + 1 };
        if try_port(port) {
            found = Some(port);
            break;
        }
    }
    // SAFETY: as above.
    unsafe { (*cursor).next = next };
    found
}

/// A reply from a backend, found in the reverse-NAT table. Not inlined
/// (see `established`).
#[inline(never)]
fn reply(ctx: *mut xdp_md, flow: &Flow, entry: *mut L4ReverseNat) -> u32 {
    let ctx = &XdpContext::new(ctx);
    let bytes = packet_bytes(ctx);
    let Some(scratch) = scratch() else {
        return (verdict::L4_NO_ROUTE << 8) | PASS;
    };
    // `scratch.key` is this packet's flow key (`steer` set it).
    let Scratch { key, other, to, .. } = scratch;
    // SAFETY: the entry stays valid for this run; only its FIN bytes and
    // next hop are written.
    let (hop, service, backend, fins) = unsafe {
        *to = FibQuery {
            src: (*entry).service_addr,
            dst: (*entry).client,
            sport: (*entry).service_port,
            dport: (*entry).client_port,
            ip_len: flow.ip_len,
            family: flow.family,
            protocol: flow.protocol,
            want_src: 0,
        };
        (
            addr_of_mut!((*entry).hop),
            (*entry).service,
            (*entry).backend,
            (*entry).client_fin != 0 && (*entry).backend_fin != 0,
        )
    };
    bump_l4(L4_SERVICE_STATS.get_ptr_mut(service), bytes, 0, 1);
    bump_l4(L4_BACKEND_STATS.get_ptr_mut(backend), bytes, 0, 1);
    if !flow.plain {
        return (verdict::L4_UNSUPPORTED << 8) | PASS;
    }
    let route = fib::cached_route(ctx, hop, to);
    let result = deliver(ctx, flow, to, route, hop, verdict::L4_REPLY);
    let flags = flow.tcp_flags;
    if flow.protocol == protocol::TCP && ends_or_closes(flags, fins) {
        *other = opposite(flow, to);
        let forward_key = &*other;
        if flags & TCP_RST != 0 || (flags & TCP_FIN == 0 && fins) {
            let _ = L4_REVERSE.remove(&*key);
            let _ = L4_FLOWS.remove(forward_key);
        } else if flags & TCP_FIN != 0 {
            // SAFETY: see `established`.
            unsafe { (*entry).backend_fin = 1 };
            if let Some(forward_state) = L4_FLOWS.get_ptr_mut(forward_key) {
                // SAFETY: as above.
                unsafe { (*forward_state).backend_fin = 1 };
            }
        }
    }
    (result.0 << 8) | result.1
}

/// True for a TCP packet that changes its flow's state: an RST, a FIN, or
/// the last ACK after a FIN from each side (`fins`). Every other packet
/// (most of them: plain ACKs) skips building the other direction's key.
#[inline(always)]
pub fn ends_or_closes(flags: u8, fins: bool) -> bool {
    flags & (TCP_RST | TCP_FIN) != 0 || (fins && flags & TCP_ACK != 0)
}

/// Translates the packet to `to` and sends it where `route` says: out of
/// an interface with the MACs of `hop` (counted as `reason`), or to the stack.
#[inline(always)]
fn deliver(
    ctx: &XdpContext,
    flow: &Flow,
    to: &FibQuery,
    route: Route,
    hop: *const L4NextHop,
    reason: u32,
) -> (u32, u32) {
    match route {
        Route::Found => {
            // SAFETY: `hop` points into a map value or our stack, valid now.
            let (ifindex, macs) = unsafe { ((*hop).ifindex, addr_of!((*hop).macs)) };
            if fib::set_macs(ctx, macs).is_err() || rewrite(ctx, flow, to).is_err() {
                return (verdict::L4_NO_ROUTE, PASS);
            }
            (reason, fib::transmit(ctx, ifindex))
        }
        Route::ToStack => {
            if rewrite(ctx, flow, to).is_err() {
                return (verdict::L4_NO_ROUTE, PASS);
            }
            (verdict::L4_FIB_PASS, PASS)
        }
        Route::None => (verdict::L4_NO_ROUTE, PASS),
        Route::NoNeighbour => (verdict::L4_NO_NEIGH, xdp_action::XDP_DROP),
    }
}

/// The flow's hash for its Maglev slot (murmur3's mixing over the 5-tuple):
/// the same flow always lands on the same slot.
#[inline(always)]
fn flow_hash(key: &L4FlowKey) -> u32 {
    let mut h = 0x9e37_79b9u32 ^ u32::from(key.protocol);
    let words = [
        key.src[0],
        key.src[1],
        key.src[2],
        key.src[3],
        key.dst[0],
        key.dst[1],
        key.dst[2],
        key.dst[3],
        (u32::from(key.sport) << 16) | u32::from(key.dport),
    ];
    for word in words {
        let k = word
            .wrapping_mul(0xcc9e_2d51)
            .rotate_left(15)
            .wrapping_mul(0x1b87_3593);
        h = (h ^ k)
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64);
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}
