//! The XDP program of xdp-ingress: parse, look up the listener, count, decide.
#![no_std]
#![no_main]

mod maps;
mod parse;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use ingress_common::{ListenerKey, action, verdict};

use crate::{
    maps::{LISTENER_STATS, LISTENERS, VERDICT_STATS},
    parse::parse_flow,
    stats::count,
};

/// Entry point, attached to every ingress interface of the node.
#[xdp]
pub fn xdp_ingress(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let (reason, xdp_verdict) = decide(&ctx);
    count(&VERDICT_STATS, reason, bytes);
    xdp_verdict
}

/// Returns the verdict reason (`ingress_common::verdict`) and the XDP action.
/// Anything the program cannot parse or does not own is passed.
#[inline(always)]
fn decide(ctx: &XdpContext) -> (u32, u32) {
    let flow = match parse_flow(ctx) {
        Ok(flow) => flow,
        Err(reason) => return (reason, xdp_action::XDP_PASS),
    };
    let key = ListenerKey {
        addr: flow.daddr,
        port: flow.dport,
        family: flow.family,
        protocol: flow.protocol,
    };
    let listener = match LISTENERS.get_ptr(key) {
        Some(listener) => listener,
        None => match LISTENERS.get_ptr(key.wildcard()) {
            Some(listener) => listener,
            None => return (verdict::PASS_NO_LISTENER, xdp_action::XDP_PASS),
        },
    };
    // SAFETY: the value stays valid for this run; a concurrent update may
    // replace it, and either version is a consistent answer.
    let (listener_action, listener_id) = unsafe { ((*listener).action, (*listener).listener_id) };
    count(
        &LISTENER_STATS,
        listener_id,
        (ctx.data_end() - ctx.data()) as u64,
    );
    match listener_action {
        action::DROP => (verdict::DROP_LISTENER, xdp_action::XDP_DROP),
        _ => (verdict::PASS_TO_PROXY, xdp_action::XDP_PASS),
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
