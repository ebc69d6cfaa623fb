//! The `#[repr(C)]` keys and values of the maps that the XDP program and the
//! `xdp-ingress` daemon share. Every map type is defined here once; the eBPF
//! crate declares the maps with these types and userspace reads and writes
//! them through `aya` (the `user` feature implements `aya::Pod`).
//!
//! Layouts have no implicit padding, so that BTF, `bpftool map dump` and both
//! sides agree byte for byte.
#![no_std]

/// Map names as they appear in the object file, and the file names of their pins.
pub mod map_names {
    /// [`crate::ListenerKey`] -> [`crate::ListenerValue`].
    pub const LISTENERS: &str = "LISTENERS";
    /// Per-CPU [`crate::TrafficCounters`] indexed by [`crate::ListenerValue::listener_id`].
    pub const LISTENER_STATS: &str = "LISTENER_STATS";
    /// Per-CPU [`crate::TrafficCounters`] indexed by a [`crate::verdict`] reason.
    pub const VERDICT_STATS: &str = "VERDICT_STATS";
    /// Every map the daemon pins, with the file name of its pin.
    pub const PINNED: [(&str, &str); 3] = [
        (LISTENERS, "listeners"),
        (LISTENER_STATS, "listener_stats"),
        (VERDICT_STATS, "verdict_stats"),
    ];
}

/// The name of the XDP program in the object file.
pub const XDP_PROGRAM_NAME: &str = "xdp_ingress";

/// Capacity of the listener map and of its counters.
pub const MAX_LISTENERS: u32 = 1024;

/// IP family tags used in map keys (the IP version number, readable in a dump).
pub mod family {
    /// IPv4.
    pub const IPV4: u8 = 4;
    /// IPv6.
    pub const IPV6: u8 = 6;
}

/// IANA protocol numbers used in map keys.
pub mod protocol {
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

/// What the XDP program does with a packet that matches a listener.
pub mod action {
    /// Hand the packet to the kernel stack, where the local L7 proxy listens (`XDP_PASS`).
    pub const PASS_TO_PROXY: u32 = 1;
    /// Drop the packet in XDP (`XDP_DROP`).
    pub const DROP: u32 = 2;

    /// A short lower-case name for a dump or a log line.
    pub const fn name(action: u32) -> &'static str {
        match action {
            PASS_TO_PROXY => "pass-to-proxy",
            DROP => "drop",
            _ => "unknown",
        }
    }
}

/// Why the XDP program returned what it returned: the index into `VERDICT_STATS`.
pub mod verdict {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): passed.
    pub const PASS_NOT_IP: u32 = 0;
    /// Truncated or malformed headers: passed untouched, the stack decides.
    pub const PASS_MALFORMED: u32 = 1;
    /// IP but neither TCP nor UDP (ICMP, ...), or a non-first fragment: passed.
    pub const PASS_OTHER_L4: u32 = 2;
    /// TCP or UDP to an address and port without a listener: passed.
    pub const PASS_NO_LISTENER: u32 = 3;
    /// A listener with [`crate::action::PASS_TO_PROXY`]: passed to the proxy.
    pub const PASS_TO_PROXY: u32 = 4;
    /// A listener with [`crate::action::DROP`]: dropped.
    pub const DROP_LISTENER: u32 = 5;
    /// Number of verdict reasons (the size of `VERDICT_STATS`).
    pub const COUNT: u32 = 6;

    /// A short lower-case name for each reason, by index.
    pub const NAMES: [&str; COUNT as usize] = [
        "pass-not-ip",
        "pass-malformed",
        "pass-other-l4",
        "pass-no-listener",
        "pass-to-proxy",
        "drop-listener",
    ];
}

/// Key of the listener map: where a packet is going.
///
/// `addr` holds the destination address in network byte order: IPv4 in the
/// first four bytes and zeros after, IPv6 in all sixteen. An all-zero `addr`
/// is the wildcard for its family, looked up when no exact entry matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerKey {
    /// Destination address, network byte order.
    pub addr: [u8; 16],
    /// Destination port, host byte order.
    pub port: u16,
    /// [`family::IPV4`] or [`family::IPV6`].
    pub family: u8,
    /// [`protocol::TCP`] or [`protocol::UDP`].
    pub protocol: u8,
}

impl ListenerKey {
    /// The wildcard key for the same family, protocol and port.
    pub const fn wildcard(self) -> Self {
        Self {
            addr: [0; 16],
            ..self
        }
    }
}

/// Value of the listener map: what to do and which counters to bump.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerValue {
    /// One of [`action`].
    pub action: u32,
    /// Index into `LISTENER_STATS`, below [`MAX_LISTENERS`]; allocated by userspace.
    pub listener_id: u32,
}

/// Packet and byte counters; per CPU in the maps, summed by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TrafficCounters {
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen, from the Ethernet header on.
    pub bytes: u64,
}

impl TrafficCounters {
    /// The sum of two counters (wrapping, as the kernel side does).
    pub const fn plus(self, other: Self) -> Self {
        Self {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data without padding or pointers.
    unsafe impl aya::Pod for super::ListenerKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListenerValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TrafficCounters {}
}

// The layouts are part of the contract with the kernel side and with bpftool.
const _: () = assert!(core::mem::size_of::<ListenerKey>() == 20);
const _: () = assert!(core::mem::size_of::<ListenerValue>() == 8);
const _: () = assert!(core::mem::size_of::<TrafficCounters>() == 16);
