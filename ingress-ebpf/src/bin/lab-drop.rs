//! `lab-drop`: the benchmark lab's sink, not part of xdp-ingress. It drops
//! every IPv4 UDP packet at XDP and passes everything else (ARP, TCP), so
//! the backends of `cargo xtask bench l4` discard the UDP load at the same
//! small cost in every row, and the edge of the baseline row drops it as
//! early as possible. Built into its own object (no maps) so `ip link set
//! ... xdp obj` loads it without the daemon.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// Ethernet header length; the EtherType sits in its last two bytes.
const ETH_HLEN: usize = 14;
/// IPv4's EtherType, as it lies in the packet (network order).
const ETH_P_IPV4_RAW: u16 = 0x0800u16.to_be();
/// Offset of the IPv4 protocol byte from the start of the frame.
const IPV4_PROTOCOL_AT: usize = ETH_HLEN + 9;
const IPPROTO_UDP: u8 = 17;

/// Drops IPv4 UDP (untagged frames), passes the rest.
#[xdp]
pub fn lab_drop_udp(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + IPV4_PROTOCOL_AT + 1 > end {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: both reads lie before `end`, checked above.
    let (ether_type, ip_protocol) = unsafe {
        (
            *((start + ETH_HLEN - 2) as *const u16),
            *((start + IPV4_PROTOCOL_AT) as *const u8),
        )
    };
    if ether_type == ETH_P_IPV4_RAW && ip_protocol == IPPROTO_UDP {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
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
