//! `lab-redirect`: the benchmark lab's floor of XDP forwarding, not part of
//! xdp-ingress. It sends every IPv4 UDP frame out of one interface, with no
//! lookup and no rewrite (the backends' `lab-drop` drops it whatever MAC and
//! IP it carries), and passes everything else (ARP, TCP). What it costs the
//! edge in `cargo xtask bench l4` is the kernel's redirect path alone
//! (`xdp_do_redirect`, the per-CPU bulk queue, `veth_xdp_xmit`, the peer's
//! receive): the least any XDP forwarder pays in that lab.
//!
//! Two programs, one per way of naming the target, so the benchmark can show
//! whether a devmap changes the cost: `lab_redirect` calls `bpf_redirect`
//! with the ifindex at index 0 of `LAB_REDIRECT_IFINDEX`, and
//! `lab_redirect_devmap` calls `bpf_redirect_map` on slot 0 of
//! `LAB_REDIRECT_DEVMAP`. The bench fills both with `bpftool map update`;
//! until then the first passes everything, the second too (the devmap's
//! fallback action).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, DevMap},
    helpers::generated::bpf_redirect,
    macros::{btf_map, xdp},
    programs::XdpContext,
};

/// Ethernet header length; the EtherType sits in its last two bytes.
const ETH_HLEN: usize = 14;
/// IPv4's EtherType, as it lies in the packet (network order).
const ETH_P_IPV4_RAW: u16 = 0x0800u16.to_be();
/// Offset of the IPv4 protocol byte from the start of the frame.
const IPV4_PROTOCOL_AT: usize = ETH_HLEN + 9;
const IPPROTO_UDP: u8 = 17;

/// Index 0: the ifindex `lab_redirect` sends to (0: not set, pass).
#[btf_map]
static LAB_REDIRECT_IFINDEX: Array<u32, 1> = Array::new();

/// Slot 0: the interface `lab_redirect_devmap` sends to.
#[btf_map]
static LAB_REDIRECT_DEVMAP: DevMap<1> = DevMap::new();

/// True for an untagged IPv4 UDP frame.
#[inline(always)]
fn is_ipv4_udp(ctx: &XdpContext) -> bool {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + IPV4_PROTOCOL_AT + 1 > end {
        return false;
    }
    // SAFETY: both reads lie before `end`, checked above.
    let (ether_type, ip_protocol) = unsafe {
        (
            *((start + ETH_HLEN - 2) as *const u16),
            *((start + IPV4_PROTOCOL_AT) as *const u8),
        )
    };
    ether_type == ETH_P_IPV4_RAW && ip_protocol == IPPROTO_UDP
}

/// Redirects IPv4 UDP to the ifindex in `LAB_REDIRECT_IFINDEX`, passes the rest.
#[xdp]
pub fn lab_redirect(ctx: XdpContext) -> u32 {
    if !is_ipv4_udp(&ctx) {
        return xdp_action::XDP_PASS;
    }
    match LAB_REDIRECT_IFINDEX.get(0) {
        // SAFETY: a plain helper call; it returns XDP_REDIRECT (no flags).
        Some(&ifindex) if ifindex != 0 => unsafe { bpf_redirect(ifindex, 0) as u32 },
        _ => xdp_action::XDP_PASS,
    }
}

/// Redirects IPv4 UDP through slot 0 of `LAB_REDIRECT_DEVMAP`, passes the
/// rest (and everything while the slot is empty).
#[xdp]
pub fn lab_redirect_devmap(ctx: XdpContext) -> u32 {
    if !is_ipv4_udp(&ctx) {
        return xdp_action::XDP_PASS;
    }
    LAB_REDIRECT_DEVMAP
        .redirect(0, u64::from(xdp_action::XDP_PASS))
        .unwrap_or_else(|action| action)
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
