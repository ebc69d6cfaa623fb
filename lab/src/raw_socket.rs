//! Raw sockets: crafted frames out of an interface, ICMP echo requests, and
//! the Internet checksum they need.

use std::{
    ffi::CString,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Result, ensure};

/// The Internet checksum (RFC 1071) over the concatenation of `parts`
/// (each part but the last must have an even length).
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for pair in &mut chunks {
            sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `frames` out of `iface` of the calling thread's namespace.
pub(crate) fn inject_frames(iface: &str, frames: &[Vec<u8>]) -> Result<()> {
    let c_iface = CString::new(iface)?;
    // SAFETY: valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(c_iface.as_ptr()) };
    ensure!(ifindex != 0, "no interface {iface} in this namespace");
    // SAFETY: plain socket call; the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    ensure!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    for frame in frames {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        let dst = frame.len().min(6);
        addr.sll_addr[..dst].copy_from_slice(&frame[..dst]);
        // SAFETY: the buffer and address are valid for the call.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        ensure!(
            sent == frame.len() as isize,
            "sending a {}-byte frame on {iface}: {}",
            frame.len(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Sends `count` ICMP echo requests to `to` from the calling thread's namespace.
pub(crate) fn send_icmp_echo(to: Ipv4Addr, count: u16, payload_len: usize) -> Result<()> {
    // SAFETY: plain socket call; the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    ensure!(
        fd >= 0,
        "raw ICMP socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as u16;
    addr.sin_addr.s_addr = u32::from_ne_bytes(to.octets());
    for seq in 0..count {
        let mut message = vec![8, 0, 0, 0, 0x12, 0x34];
        message.extend_from_slice(&seq.to_be_bytes());
        message.extend((0..payload_len).map(|i| i as u8));
        let check = checksum(&[&message]);
        message[2..4].copy_from_slice(&check.to_be_bytes());
        // SAFETY: the buffer and address are valid for the call.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        ensure!(
            sent == message.len() as isize,
            "sending ICMP echo to {to}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
