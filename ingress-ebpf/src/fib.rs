//! The next hop of a translated packet: `bpf_fib_lookup` in the kernel's
//! routing and neighbour tables, then new MAC addresses and `XDP_TX` (out
//! of the interface it came in on) or `bpf_redirect` (out of another one).

use core::mem::size_of;

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LOOKUP_SRC, bpf_fib_lookup, xdp_action, xdp_md},
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_jiffies64, bpf_redirect},
    programs::XdpContext,
};
use ingress_common::{L4NextHop, family, l4};

use crate::{
    maps::{L4_NEIGHBOUR_MISSES, SCRATCH},
    parse::ptr_at,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

const FIB_PARAMS_WORDS: usize = 8;

/// `struct bpf_fib_lookup` as eight words (in `SCRATCH`), written whole:
/// offsets 0 family, 1 protocol, 2 sport, 4 dport, 6 tot_len, 8 ifindex, 12
/// flowinfo, 16 source, 32 destination, 48 VLAN or table, 52 smac, 58 dmac.
const _: () = assert!(FIB_PARAMS_WORDS * 8 == size_of::<bpf_fib_lookup>());

/// What the FIB said.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A next hop with its MAC addresses (in the [`L4NextHop`] given): the
    /// packet can leave from XDP.
    Found,
    /// A route, but an answer the stack handles better (a packet bigger
    /// than the MTU, forwarding off): the stack forwards the packet. With
    /// `want_src` the source address is filled in.
    ToStack,
    /// No route: the packet cannot be forwarded.
    None,
    /// A route, but its next hop has no neighbour entry (no MAC address)
    /// yet: userspace was told (`L4_NEIGHBOUR_MISSES`) and resolves it; the
    /// packet is dropped untouched, and TCP's retransmission gets through.
    NoNeighbour,
}

/// How long a CPU does not report the same missing next hop again, in
/// jiffies (100 ms at HZ=250): one report wakes the daemon, a flood of
/// packets to the same next hop does not flood it.
const MISS_REPORT_JIFFIES: u64 = 25;

/// The addresses and ports of a lookup, and what the FIB needs to know of
/// the packet.
#[repr(C)]
pub struct FibQuery {
    /// Source address; with `want_src`, replaced by the route's preferred source.
    pub src: [u32; 4],
    /// Destination address.
    pub dst: [u32; 4],
    /// Source port, host order.
    pub sport: u16,
    /// Destination port, host order.
    pub dport: u16,
    /// The packet's length from the IP header on (for the MTU check).
    pub ip_len: u16,
    /// `family::IPV4` or `family::IPV6`.
    pub family: u8,
    /// `protocol::TCP` or `protocol::UDP`.
    pub protocol: u8,
    /// Non-zero: ask for the source address (for full NAT).
    pub want_src: u32,
}

/// Looks up the route of `query`; on [`Route::Found`] the egress
/// interface and MACs are written to `hop`. Not inlined: called from
/// several places, it is one copy of the code.
#[inline(never)]
pub fn lookup(ctx: *mut xdp_md, query: &mut FibQuery, hop: &mut L4NextHop) -> u32 {
    let ctx = XdpContext::new(ctx);
    let family_code = if query.family == family::IPV4 {
        AF_INET
    } else {
        AF_INET6
    };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Route::None as u32;
    };
    // SAFETY: this CPU's scratch slot, used by one program run at a time.
    let params: &mut [u64; FIB_PARAMS_WORDS] = unsafe { &mut (*scratch).fib };
    let word = |low: u32, high: u32| u64::from(low) | (u64::from(high) << 32);
    let ports = (u32::from(query.dport.to_be()) << 16) | u32::from(query.sport.to_be());
    let head = u32::from(family_code) | (u32::from(query.protocol) << 8);
    let tot_len = u32::from(query.ip_len);
    let (src, dst) = (&query.src, &query.dst);
    *params = [
        word(head | (ports << 16), (ports >> 16) | (tot_len << 16)),
        word(ctx.ingress_ifindex() as u32, 0),
        word(src[0], src[1]),
        word(src[2], src[3]),
        word(dst[0], dst[1]),
        word(dst[2], dst[3]),
        0,
        0,
    ];
    let want_src = query.want_src != 0;
    let flags = if want_src { BPF_FIB_LOOKUP_SRC } else { 0 };
    // SAFETY: the helper reads and writes `params`, which we own and which
    // has the size and layout of `struct bpf_fib_lookup`.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            params.as_mut_ptr().cast(),
            size_of::<bpf_fib_lookup>() as i32,
            flags,
        )
    };
    let src_known = rc == 0 || rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH);
    if want_src && src_known {
        let [w2, w3] = [params[2], params[3]];
        query.src = if query.family == family::IPV4 {
            [w2 as u32, 0, 0, 0]
        } else {
            [w2 as u32, (w2 >> 32) as u32, w3 as u32, (w3 >> 32) as u32]
        };
    }
    if rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        // The kernel filled in the route's interface and next hop (the
        // gateway, or the destination on a link) before it looked for the
        // neighbour.
        report_miss(query.family, params);
        return Route::NoNeighbour as u32;
    }
    if rc != 0 {
        // Negative: a bad call. Without the source full NAT needs: no route.
        return if rc < 0 || (want_src && !src_known) {
            Route::None as u32
        } else {
            Route::ToStack as u32
        };
    }
    // The MACs: smac at byte 52, dmac at byte 58 of the lookup, as 16-bit
    // words (both are 2-byte aligned there).
    let macs: *const [u16; 6] = params.as_ptr().cast::<u16>().wrapping_add(26).cast();
    // SAFETY: `macs` lies inside `params` (bytes 52..64, 2-byte aligned).
    let [s0, s1, s2, d0, d1, d2] = unsafe { *macs };
    hop.ifindex = params[1] as u32;
    hop.macs = [d0, d1, d2, s0, s1, s2];
    Route::Found as u32
}

/// Tells userspace that the next hop in `params` (a lookup's answer) has
/// no neighbour entry, unless this CPU told it so in the last
/// [`MISS_REPORT_JIFFIES`]. A full ring buffer loses the report; the next
/// packet's tries again.
#[inline(always)]
fn report_miss(addr_family: u8, params: &[u64; FIB_PARAMS_WORDS]) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let [w4, w5] = [params[4], params[5]];
    let addr = if addr_family == family::IPV4 {
        [w4 as u32, 0, 0, 0]
    } else {
        [w4 as u32, (w4 >> 32) as u32, w5 as u32, (w5 >> 32) as u32]
    };
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_jiffies64() };
    // SAFETY: this CPU's scratch slot, used by one program run at a time;
    // the report is built there, not on the stack (the call chain's 512
    // bytes are spent).
    unsafe {
        let miss = &mut (*scratch).miss;
        if miss.addr == addr && now < (*scratch).missed_at + MISS_REPORT_JIFFIES {
            return;
        }
        (*scratch).missed_at = now;
        miss.addr = addr;
        miss.ifindex = params[1] as u32;
        miss.family = addr_family;
        miss.pad = [0; 3];
        // A reference, not a copy: the copy would go on the stack.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let _ = L4_NEIGHBOUR_MISSES.output(&*miss, 0);
    }
}

/// The route's code from [`lookup`] as a [`Route`].
#[inline(always)]
pub fn route_of(code: u32) -> Route {
    match code {
        0 => Route::Found,
        1 => Route::ToStack,
        3 => Route::NoNeighbour,
        _ => Route::None,
    }
}

/// The route of an established flow from its cached next hop `hop`, or from
/// the FIB when the cache expired (and then cached again).
#[inline(always)]
pub fn cached_route(ctx: &XdpContext, hop: *mut L4NextHop, query: &mut FibQuery) -> Route {
    // SAFETY: a plain helper call (inlined by the verifier as one load).
    let now = unsafe { bpf_jiffies64() };
    // SAFETY: `hop` points into a map value valid for this run; a
    // concurrent refresh writes the same answer.
    unsafe {
        if (*hop).expires_jiffies > now {
            return Route::Found;
        }
        let route = route_of(lookup(ctx.ctx, query, &mut *hop));
        if route == Route::Found {
            (*hop).expires_jiffies = now + l4::NEXT_HOP_TTL_JIFFIES;
        }
        route
    }
}

/// Writes the MAC addresses of a found route (read from `macs`, a map
/// value or the stack) into the packet, as six 16-bit stores: a copy of the
/// whole array would become a call to `memmove`, a byte loop.
#[inline(always)]
pub fn set_macs(ctx: &XdpContext, macs: *const [u16; 6]) -> Result<(), ()> {
    write_macs(ptr_at::<[u16; 6]>(ctx, 0)?.cast(), macs);
    Ok(())
}

/// [`set_macs`] into a frame whose Ethernet header `eth` (as 16-bit words)
/// was bounds checked already: no second check of the packet's length.
#[inline(always)]
pub fn write_macs(eth: *mut u16, macs: *const [u16; 6]) {
    let from: *const u16 = macs.cast();
    // SAFETY: the caller checked the 12 bytes at `eth`; packet data is
    // 2-byte aligned; `macs` points at six words valid for this run.
    unsafe {
        for i in 0..6 {
            core::ptr::write_volatile(eth.add(i), core::ptr::read_volatile(from.add(i)));
        }
    }
}

/// The XDP action that sends the packet out of `ifindex`.
#[inline(always)]
pub fn transmit(ctx: &XdpContext, ifindex: u32) -> u32 {
    if ifindex == ctx.ingress_ifindex() as u32 {
        return xdp_action::XDP_TX;
    }
    // SAFETY: a plain helper call; it returns XDP_REDIRECT, or XDP_ABORTED
    // for bad flags (we pass none).
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}
