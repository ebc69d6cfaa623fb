//! The XDP program of xdp-ingress: plain IPv4 packets of established L4
//! flows, and those no L4 service or backend uses a port of, first
//! (`l4_fast`), then plain IPv6 packets of flows in this CPU's IPv6 flow
//! cache (`l4_fast6`); else parse, balance L4 services and translate their replies
//! (`l4`), else look up the listener; count; decide.
#![no_std]
#![no_main]

mod csum;
mod fib;
mod l4;
mod l4_fast;
mod l4_fast6;
mod maps;
mod nat;
mod parse;
mod stats;

use core::mem::{MaybeUninit, size_of};

use aya_ebpf::{bindings::xdp_action, btf_maps::lpm_trie::Key, macros::xdp, programs::XdpContext};
use ingress_common::{
    ListenerKey, SourcePrefix4, SourcePrefix6, action, family, source_range, verdict,
};

use crate::{
    maps::{
        LISTENER_DENIED_STATS, LISTENER_SOURCE_CHECKS, LISTENER_STATS, LISTENERS, SOURCE_RANGES4,
        SOURCE_RANGES6, VERDICT_STATS,
    },
    parse::parse_flow,
    stats::count,
};

/// Entry point, attached to every ingress interface of the node.
#[xdp]
pub fn xdp_ingress(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let (reason, xdp_verdict) = match l4_fast::plain_ipv4(&ctx) {
        Some(decided) => decided,
        None => match l4_fast6::plain_ipv6(ctx.ctx) {
            l4_fast6::NOT_DECIDED => decide(&ctx, bytes),
            packed => (packed >> 8, packed & 0xff),
        },
    };
    count(&VERDICT_STATS, reason, bytes);
    xdp_verdict
}

/// Returns the verdict reason (`ingress_common::verdict`) and the XDP action.
/// Anything the program cannot parse or does not own is passed.
#[inline(always)]
fn decide(ctx: &XdpContext, bytes: u64) -> (u32, u32) {
    let flow = match parse_flow(ctx) {
        Ok(flow) => flow,
        Err(reason) => return (reason, xdp_action::XDP_PASS),
    };
    if let Some(decided) = l4::steer(ctx, &flow, bytes) {
        return decided;
    }
    let key = listener_key(flow.daddr, flow.dport, flow.family, flow.protocol);
    let packed = listener_verdict(&key, &flow.saddr, bytes);
    (packed >> 8, packed & 0xff)
}

/// The listener key of a packet to `daddr` (words of `addr_words`) and `port`.
#[inline(always)]
pub fn listener_key(daddr: [u32; 4], port: u16, family: u8, protocol: u8) -> ListenerKey {
    ListenerKey {
        // SAFETY: four words and sixteen bytes are the same plain data.
        addr: unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(daddr) },
        port,
        family,
        protocol,
    }
}

/// The verdict of a packet from `saddr` (words of `addr_words`) by its
/// listener `key`, packed as `reason << 8 | action`. Not inlined: called
/// from the IPv4 fast path and from the general one, and its keys get a
/// stack frame of their own, beside the L4 tier's deepest call chain rather
/// than under it.
#[inline(never)]
pub fn listener_verdict(key: &ListenerKey, saddr: &[u32; 4], bytes: u64) -> u32 {
    let (reason, action) = listener_decide(key, saddr, bytes);
    (reason << 8) | action
}

#[inline(always)]
fn listener_decide(key: &ListenerKey, saddr: &[u32; 4], bytes: u64) -> (u32, u32) {
    let listener = match LISTENERS.get_ptr(key) {
        Some(listener) => listener,
        None => match LISTENERS.get_ptr(wildcard(key, &mut MaybeUninit::uninit())) {
            Some(listener) => listener,
            None => return (verdict::PASS_NO_LISTENER, xdp_action::XDP_PASS),
        },
    };
    // SAFETY: the value stays valid for this run; a concurrent update may
    // replace it, and either version is a consistent answer.
    let (listener_action, listener_id) = unsafe { ((*listener).action, (*listener).listener_id) };
    count(&LISTENER_STATS, listener_id, bytes);
    match listener_action {
        action::DROP => (verdict::DROP_LISTENER, xdp_action::XDP_DROP),
        _ if source_denied(key.family, listener_id, saddr) => {
            count(&LISTENER_DENIED_STATS, listener_id, bytes);
            (verdict::DROP_SOURCE_RANGE, xdp_action::XDP_DROP)
        }
        _ => (verdict::PASS_TO_PROXY, xdp_action::XDP_PASS),
    }
}

/// Whether the source ranges of listener `listener_id` deny `saddr` (of
/// `source_family`): the longest match in the family's trie says so. A
/// listener without ranges of that family costs one array load.
#[inline(always)]
fn source_denied(source_family: u8, listener_id: u32, saddr: &[u32; 4]) -> bool {
    let Some(checks) = LISTENER_SOURCE_CHECKS.get_ptr(listener_id) else {
        return false;
    };
    // SAFETY: an array slot is valid for the whole run.
    let checks = unsafe { *checks };
    let listener = listener_id.to_be_bytes();
    let rule = if source_family == family::IPV4 {
        if checks & source_range::CHECK_IPV4 == 0 {
            return false;
        }
        let key = Key::new(
            source_range::LISTENER_BITS + 32,
            SourcePrefix4 {
                listener,
                addr: saddr[0].to_ne_bytes(),
            },
        );
        SOURCE_RANGES4.get(&key).copied()
    } else {
        if checks & source_range::CHECK_IPV6 == 0 {
            return false;
        }
        // SAFETY: four words and sixteen bytes are the same plain data.
        let addr = unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(*saddr) };
        let key = Key::new(
            source_range::LISTENER_BITS + 128,
            SourcePrefix6 { listener, addr },
        );
        SOURCE_RANGES6.get(&key).copied()
    };
    rule == Some(source_range::DENY)
}

/// Writes `key.wildcard()` into `out` with five word stores, in place: a
/// zeroed array (or a copy of one) would become a call to `memset`, a byte
/// loop, since the BPF target does not inline it.
#[inline(always)]
fn wildcard<'a>(key: &ListenerKey, out: &'a mut MaybeUninit<ListenerKey>) -> &'a ListenerKey {
    const WORDS: usize = size_of::<ListenerKey>() / 4;
    let source: *const u32 = core::ptr::from_ref(key).cast();
    let words: *mut u32 = out.as_mut_ptr().cast();
    // SAFETY: `ListenerKey` is 20 bytes, align(4), plain data: five words,
    // the first four the address (zeroed), the last port, family, protocol.
    unsafe {
        for i in 0..4 {
            core::ptr::write_volatile(words.add(i), 0);
        }
        core::ptr::write_volatile(words.add(WORDS - 1), *source.add(WORDS - 1));
        out.assume_init_ref()
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The kernel refuses programs without a GPL-compatible licence to use GPL helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
