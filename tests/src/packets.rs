//! Crafted packets for the kernel and end-to-end tests: Ethernet with up to
//! any number of VLAN tags, IPv4 (with options, fragments, bad IHL or
//! version on request), IPv6 (with extension headers), TCP, UDP, ICMP and
//! raw protocols, with correct lengths and checksums.
//!
//! ```
//! use xdp_ingress_tests::packets::Packet;
//! let syn = Packet::tcp_v4([198, 18, 0, 1], 80).vlan(0x8100, 7).build();
//! assert_eq!(syn.len(), 14 + 4 + 20 + 20);
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

/// EtherType of IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType of an 802.1Q (customer) VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType of an 802.1ad (service, outer) VLAN tag.
pub const ETH_P_8021AD: u16 = 0x88A8;
/// EtherType of LLDP.
pub const ETH_P_LLDP: u16 = 0x88CC;

/// IANA protocol numbers used by the builder.
pub mod ipproto {
    /// IPv6 hop-by-hop options.
    pub const HOPOPTS: u8 = 0;
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// GRE.
    pub const GRE: u8 = 47;
    /// Authentication header.
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header".
    pub const NONE: u8 = 59;
    /// IPv6 destination options.
    pub const DSTOPTS: u8 = 60;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// TCP flag bits.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Source MAC of crafted frames (locally administered).
pub const DEFAULT_SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// Destination MAC of crafted frames (locally administered).
pub const DEFAULT_DST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
/// Default IPv4 source (198.18.0.0/15, the benchmarking range).
pub const DEFAULT_SRC_V4: [u8; 4] = [198, 18, 0, 100];
/// Default IPv6 source (2001:db8::/32, the documentation range).
pub const DEFAULT_SRC_V6: [u16; 8] = [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100];
/// Default transport source port.
pub const DEFAULT_SPORT: u16 = 40_000;

/// An IPv6 extension header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtHeader {
    /// Hop-by-hop options; `len` is the header's length field (8-octet units after the first 8).
    HopByHop {
        /// Length field.
        len: u8,
    },
    /// Routing header (segments left 0, so a host ignores it).
    Routing {
        /// Length field.
        len: u8,
    },
    /// Destination options.
    DestOpts {
        /// Length field.
        len: u8,
    },
    /// Fragment header.
    Fragment {
        /// Fragment offset in 8-octet units (13 bits).
        offset: u16,
        /// More fragments follow.
        more: bool,
        /// Identification.
        id: u32,
    },
    /// Authentication header; `len` is its length field (4-octet units minus 2, at least 1).
    Ah {
        /// Length field.
        len: u8,
    },
}

impl ExtHeader {
    /// The protocol number that announces this header.
    pub const fn protocol(&self) -> u8 {
        match self {
            Self::HopByHop { .. } => ipproto::HOPOPTS,
            Self::Routing { .. } => ipproto::ROUTING,
            Self::DestOpts { .. } => ipproto::DSTOPTS,
            Self::Fragment { .. } => ipproto::FRAGMENT,
            Self::Ah { .. } => ipproto::AH,
        }
    }

    /// Size on the wire.
    pub const fn wire_len(&self) -> usize {
        match self {
            Self::HopByHop { len } | Self::Routing { len } | Self::DestOpts { len } => {
                (*len as usize + 1) * 8
            }
            Self::Fragment { .. } => 8,
            Self::Ah { len } => (*len as usize + 2) * 4,
        }
    }

    fn write(&self, next: u8, out: &mut Vec<u8>) {
        let start = out.len();
        match self {
            Self::HopByHop { len } | Self::DestOpts { len } => {
                // Zero bytes after the first two are Pad1 options: valid padding.
                out.extend_from_slice(&[next, *len]);
                out.resize(start + self.wire_len(), 0);
            }
            Self::Routing { len } => {
                // Routing type 4 (segment routing) with segments left 0.
                out.extend_from_slice(&[next, *len, 4, 0]);
                out.resize(start + self.wire_len(), 0);
            }
            Self::Fragment { offset, more, id } => {
                let frag = (offset << 3) | u16::from(*more);
                out.extend_from_slice(&[next, 0]);
                out.extend_from_slice(&frag.to_be_bytes());
                out.extend_from_slice(&id.to_be_bytes());
            }
            Self::Ah { len } => {
                out.extend_from_slice(&[next, *len, 0, 0]);
                out.extend_from_slice(&0x1000u32.to_be_bytes()); // SPI
                out.extend_from_slice(&1u32.to_be_bytes()); // sequence
                out.resize(start + self.wire_len(), 0xa5); // ICV
            }
        }
        debug_assert_eq!(out.len() - start, self.wire_len());
    }
}

/// The network layer of a [`Packet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    /// IPv4.
    V4 {
        /// Source.
        src: Ipv4Addr,
        /// Destination.
        dst: Ipv4Addr,
        /// Option bytes, padded with end-of-options to a multiple of 4 (at most 40).
        options: Vec<u8>,
        /// Flags and fragment offset field as on the wire (`0x4000` = don't fragment).
        frag: u16,
        /// Time to live.
        ttl: u8,
        /// Write this IHL instead of the real one.
        ihl_override: Option<u8>,
        /// Write this version instead of 4.
        version_override: Option<u8>,
    },
    /// IPv6.
    V6 {
        /// Source.
        src: Ipv6Addr,
        /// Destination.
        dst: Ipv6Addr,
        /// Extension headers, in order.
        ext: Vec<ExtHeader>,
        /// Hop limit.
        hop_limit: u8,
        /// Write this version instead of 6.
        version_override: Option<u8>,
    },
    /// No IP header: the payload follows the Ethernet header under `ether_type`.
    Raw {
        /// The EtherType.
        ether_type: u16,
    },
}

/// The transport layer of a [`Packet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A 20-byte TCP header.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flags ([`tcp_flags`]).
        flags: u8,
        /// Sequence number.
        seq: u32,
    },
    /// An 8-byte UDP header.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// An ICMP (IPv4) or ICMPv6 (IPv6) echo request.
    Echo {
        /// Identifier.
        id: u16,
        /// Sequence number.
        seq: u16,
    },
    /// No transport header: the payload follows the network layer under `protocol`.
    Raw {
        /// The IP protocol number.
        protocol: u8,
    },
}

impl Transport {
    /// The IP protocol number.
    pub const fn protocol(&self, v6: bool) -> u8 {
        match self {
            Self::Tcp { .. } => ipproto::TCP,
            Self::Udp { .. } => ipproto::UDP,
            Self::Echo { .. } if v6 => ipproto::ICMPV6,
            Self::Echo { .. } => ipproto::ICMP,
            Self::Raw { protocol } => *protocol,
        }
    }

    /// Length of the header the builder writes.
    pub const fn header_len(&self) -> usize {
        match self {
            Self::Tcp { .. } => 20,
            Self::Udp { .. } | Self::Echo { .. } => 8,
            Self::Raw { .. } => 0,
        }
    }
}

/// A frame to build: Ethernet, VLAN tags, network layer, transport layer, payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// VLAN tags, outermost first: (TPID, TCI).
    pub vlans: Vec<(u16, u16)>,
    /// Network layer.
    pub network: Network,
    /// Transport layer.
    pub transport: Transport,
    /// Bytes after the transport header.
    pub payload: Vec<u8>,
}

/// A built frame with the offsets of its layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    /// The frame.
    pub bytes: Vec<u8>,
    /// Offset of the network header (after Ethernet and VLAN tags).
    pub l3_offset: usize,
    /// Offset of the transport header (after IP options / extension headers).
    pub l4_offset: usize,
    /// Offset just past the transport header (where the payload starts).
    pub l4_end: usize,
}

fn v4(addr: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(addr)
}

fn v6(addr: [u16; 8]) -> Ipv6Addr {
    Ipv6Addr::from(addr)
}

impl Packet {
    fn with(network: Network, transport: Transport) -> Self {
        Self {
            dst_mac: DEFAULT_DST_MAC,
            src_mac: DEFAULT_SRC_MAC,
            vlans: Vec::new(),
            network,
            transport,
            payload: Vec::new(),
        }
    }

    fn ipv4(dst: [u8; 4]) -> Network {
        Network::V4 {
            src: v4(DEFAULT_SRC_V4),
            dst: v4(dst),
            options: Vec::new(),
            frag: 0x4000,
            ttl: 64,
            ihl_override: None,
            version_override: None,
        }
    }

    fn ipv6(dst: Ipv6Addr) -> Network {
        Network::V6 {
            src: v6(DEFAULT_SRC_V6),
            dst,
            ext: Vec::new(),
            hop_limit: 64,
            version_override: None,
        }
    }

    fn syn(dport: u16) -> Transport {
        Transport::Tcp {
            sport: DEFAULT_SPORT,
            dport,
            flags: tcp_flags::SYN,
            seq: 0x0102_0304,
        }
    }

    fn udp(dport: u16) -> Transport {
        Transport::Udp {
            sport: DEFAULT_SPORT,
            dport,
        }
    }

    /// A TCP SYN over IPv4.
    pub fn tcp_v4(dst: [u8; 4], dport: u16) -> Self {
        Self::with(Self::ipv4(dst), Self::syn(dport))
    }

    /// A UDP datagram over IPv4.
    pub fn udp_v4(dst: [u8; 4], dport: u16) -> Self {
        Self::with(Self::ipv4(dst), Self::udp(dport))
    }

    /// An ICMP echo request.
    pub fn icmp_v4(dst: [u8; 4]) -> Self {
        Self::with(Self::ipv4(dst), Transport::Echo { id: 1, seq: 1 })
    }

    /// A TCP SYN over IPv6.
    pub fn tcp_v6(dst: Ipv6Addr, dport: u16) -> Self {
        Self::with(Self::ipv6(dst), Self::syn(dport))
    }

    /// A UDP datagram over IPv6.
    pub fn udp_v6(dst: Ipv6Addr, dport: u16) -> Self {
        Self::with(Self::ipv6(dst), Self::udp(dport))
    }

    /// An ICMPv6 echo request.
    pub fn icmp_v6(dst: Ipv6Addr) -> Self {
        Self::with(Self::ipv6(dst), Transport::Echo { id: 1, seq: 1 })
    }

    /// Any EtherType with `payload` right after the Ethernet header.
    pub fn raw_ethernet(ether_type: u16, payload: &[u8]) -> Self {
        let mut packet = Self::with(Network::Raw { ether_type }, Transport::Raw { protocol: 0 });
        packet.payload = payload.to_vec();
        packet
    }

    /// Sets the MAC addresses.
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// Appends a VLAN tag (inside the ones already added).
    pub fn vlan(mut self, tpid: u16, vid: u16) -> Self {
        self.vlans.push((tpid, vid & 0x0fff));
        self
    }

    /// Sets the IPv4 source address.
    pub fn src_v4(mut self, addr: [u8; 4]) -> Self {
        if let Network::V4 { src, .. } = &mut self.network {
            *src = v4(addr);
        }
        self
    }

    /// Sets the IPv6 source address.
    pub fn src_v6(mut self, addr: Ipv6Addr) -> Self {
        if let Network::V6 { src, .. } = &mut self.network {
            *src = addr;
        }
        self
    }

    /// Sets IPv4 options (padded to a multiple of 4 with end-of-options).
    pub fn ipv4_options(mut self, bytes: &[u8]) -> Self {
        assert!(bytes.len() <= 40, "at most 40 bytes of IPv4 options");
        if let Network::V4 { options, .. } = &mut self.network {
            *options = bytes.to_vec();
            options.resize(bytes.len().div_ceil(4) * 4, 0);
        }
        self
    }

    /// Sets the IPv4 flags and fragment offset: `offset` in 8-byte units.
    pub fn ipv4_fragment(mut self, offset: u16, more: bool) -> Self {
        if let Network::V4 { frag, .. } = &mut self.network {
            *frag = (offset & 0x1fff) | if more { 0x2000 } else { 0 };
        }
        self
    }

    /// Writes `ihl` as the IPv4 header length (in 4-byte words) instead of the real one.
    pub fn ihl(mut self, ihl: u8) -> Self {
        if let Network::V4 { ihl_override, .. } = &mut self.network {
            *ihl_override = Some(ihl & 0x0f);
        }
        self
    }

    /// Writes `version` in the IP header instead of the real one.
    pub fn ip_version(mut self, version: u8) -> Self {
        match &mut self.network {
            Network::V4 {
                version_override, ..
            }
            | Network::V6 {
                version_override, ..
            } => *version_override = Some(version & 0x0f),
            Network::Raw { .. } => {}
        }
        self
    }

    /// Appends an IPv6 extension header.
    pub fn ext(mut self, header: ExtHeader) -> Self {
        if let Network::V6 { ext, .. } = &mut self.network {
            ext.push(header);
        }
        self
    }

    /// Replaces the transport layer by `protocol` with no header of its own.
    pub fn raw_protocol(mut self, protocol: u8) -> Self {
        self.transport = Transport::Raw { protocol };
        self
    }

    /// Sets the TCP flags (no-op for other transports).
    pub fn tcp_flags(mut self, value: u8) -> Self {
        if let Transport::Tcp { flags, .. } = &mut self.transport {
            *flags = value;
        }
        self
    }

    /// Sets the transport source port (TCP, UDP).
    pub fn sport(mut self, port: u16) -> Self {
        if let Transport::Tcp { sport, .. } | Transport::Udp { sport, .. } = &mut self.transport {
            *sport = port;
        }
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, bytes: &[u8]) -> Self {
        self.payload = bytes.to_vec();
        self
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        self.build_with_layout().bytes
    }

    /// The frame and where each layer starts.
    pub fn build_with_layout(&self) -> Built {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        let ether_type = match &self.network {
            Network::V4 { .. } => ETH_P_IPV4,
            Network::V6 { .. } => ETH_P_IPV6,
            Network::Raw { ether_type } => *ether_type,
        };
        for (tpid, tci) in &self.vlans {
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&tci.to_be_bytes());
        }
        out.extend_from_slice(&ether_type.to_be_bytes());
        let l3_offset = out.len();

        let mut l4 = Vec::new();
        match &self.network {
            Network::Raw { .. } => {
                out.extend_from_slice(&self.payload);
                let end = out.len();
                return Built {
                    bytes: out,
                    l3_offset,
                    l4_offset: end,
                    l4_end: end,
                };
            }
            Network::V4 { src, dst, .. } => {
                self.write_transport(&mut l4, &pseudo_v4(*src, *dst), false);
            }
            Network::V6 { src, dst, .. } => {
                self.write_transport(&mut l4, &pseudo_v6(*src, *dst), true);
            }
        }
        let l4_header_len = self.transport.header_len();

        match &self.network {
            Network::V4 {
                src,
                dst,
                options,
                frag,
                ttl,
                ihl_override,
                version_override,
            } => {
                let header_len = 20 + options.len();
                let ihl = ihl_override.unwrap_or((header_len / 4) as u8);
                let version = version_override.unwrap_or(4);
                let total_len = (header_len + l4.len()) as u16;
                let start = out.len();
                out.push((version << 4) | ihl);
                out.push(0); // DSCP/ECN
                out.extend_from_slice(&total_len.to_be_bytes());
                out.extend_from_slice(&0x1234u16.to_be_bytes()); // id
                out.extend_from_slice(&frag.to_be_bytes());
                out.push(*ttl);
                out.push(self.transport.protocol(false));
                out.extend_from_slice(&[0, 0]); // checksum, below
                out.extend_from_slice(&src.octets());
                out.extend_from_slice(&dst.octets());
                out.extend_from_slice(options);
                let check = checksum(&[&out[start..]]);
                out[start + 10..start + 12].copy_from_slice(&check.to_be_bytes());
            }
            Network::V6 {
                src,
                dst,
                ext,
                hop_limit,
                version_override,
            } => {
                let version = version_override.unwrap_or(6);
                let ext_len: usize = ext.iter().map(ExtHeader::wire_len).sum();
                let payload_len = (ext_len + l4.len()) as u16;
                out.extend_from_slice(&[version << 4, 0, 0, 0]);
                out.extend_from_slice(&payload_len.to_be_bytes());
                let first = ext
                    .first()
                    .map_or(self.transport.protocol(true), ExtHeader::protocol);
                out.push(first);
                out.push(*hop_limit);
                out.extend_from_slice(&src.octets());
                out.extend_from_slice(&dst.octets());
                for (index, header) in ext.iter().enumerate() {
                    let next = ext
                        .get(index + 1)
                        .map_or(self.transport.protocol(true), ExtHeader::protocol);
                    header.write(next, &mut out);
                }
            }
            Network::Raw { .. } => unreachable!("returned above"),
        }
        let l4_offset = out.len();
        out.extend_from_slice(&l4);
        Built {
            bytes: out,
            l3_offset,
            l4_offset,
            l4_end: l4_offset + l4_header_len,
        }
    }

    /// Writes the transport header and payload, with the checksum over `pseudo`.
    fn write_transport(&self, out: &mut Vec<u8>, pseudo: &PseudoHeader, v6: bool) {
        let len = self.transport.header_len() + self.payload.len();
        let protocol = self.transport.protocol(v6);
        let check_at = match &self.transport {
            Transport::Tcp {
                sport,
                dport,
                flags,
                seq,
            } => {
                out.extend_from_slice(&sport.to_be_bytes());
                out.extend_from_slice(&dport.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&0u32.to_be_bytes()); // ack
                out.push(5 << 4); // data offset
                out.push(*flags);
                out.extend_from_slice(&64240u16.to_be_bytes()); // window
                out.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
                Some(16)
            }
            Transport::Udp { sport, dport } => {
                out.extend_from_slice(&sport.to_be_bytes());
                out.extend_from_slice(&dport.to_be_bytes());
                out.extend_from_slice(&(len as u16).to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                Some(6)
            }
            Transport::Echo { id, seq } => {
                out.push(if v6 { 128 } else { 8 });
                out.push(0);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                Some(2)
            }
            Transport::Raw { .. } => None,
        };
        out.extend_from_slice(&self.payload);
        if let Some(at) = check_at {
            // ICMPv4 has no pseudo-header; TCP, UDP and ICMPv6 do.
            let check = if protocol == ipproto::ICMP {
                checksum(&[out])
            } else {
                checksum(&[&pseudo.bytes(protocol, len), out])
            };
            let check = if check == 0 && protocol == ipproto::UDP {
                0xffff
            } else {
                check
            };
            out[at..at + 2].copy_from_slice(&check.to_be_bytes());
        }
    }
}

/// The addresses of the transport checksum's pseudo-header.
enum PseudoHeader {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr) -> PseudoHeader {
    PseudoHeader::V4(src, dst)
}

fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr) -> PseudoHeader {
    PseudoHeader::V6(src, dst)
}

impl PseudoHeader {
    fn bytes(&self, protocol: u8, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::V4(src, dst) => {
                out.extend_from_slice(&src.octets());
                out.extend_from_slice(&dst.octets());
                out.extend_from_slice(&[0, protocol]);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            Self::V6(src, dst) => {
                out.extend_from_slice(&src.octets());
                out.extend_from_slice(&dst.octets());
                out.extend_from_slice(&(len as u32).to_be_bytes());
                out.extend_from_slice(&[0, 0, 0, protocol]);
            }
        }
        out
    }
}

pub use xdp_ingress_lab::checksum;

/// A frame read back: what the XDP program left in it, with its checksums
/// verified from scratch (not incrementally).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedFrame {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Source address.
    pub src: std::net::IpAddr,
    /// Destination address.
    pub dst: std::net::IpAddr,
    /// IP protocol.
    pub protocol: u8,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// The IPv4 header checksum verifies (always true for IPv6).
    pub ip_checksum_ok: bool,
    /// The TCP or UDP checksum verifies over the pseudo-header and the
    /// whole segment (a UDP checksum of 0 over IPv4, "none", counts as valid).
    pub l4_checksum_ok: bool,
    /// The raw UDP checksum field (0 for TCP).
    pub udp_checksum: u16,
    /// Bytes after the TCP or UDP header.
    pub payload: Vec<u8>,
}

/// Parses an untagged Ethernet + IPv4/IPv6 (no extension headers) + TCP/UDP
/// frame, `None` for anything else or a truncated one.
pub fn parse_frame(frame: &[u8]) -> Option<ParsedFrame> {
    let be16 = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
    };
    let ether_type = be16(12)?;
    let (src, dst, protocol, l4, end, ip_checksum_ok, pseudo): (
        std::net::IpAddr,
        std::net::IpAddr,
        u8,
        usize,
        usize,
        bool,
        PseudoHeader,
    ) = match ether_type {
        ETH_P_IPV4 => {
            let ihl = usize::from(*frame.get(14)? & 0x0f) * 4;
            let total = usize::from(be16(16)?);
            if frame.len() < 14 + total || ihl < 20 {
                return None;
            }
            let src = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
            let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
            let ok = checksum(&[&frame[14..14 + ihl]]) == 0;
            (
                src.into(),
                dst.into(),
                frame[23],
                14 + ihl,
                14 + total,
                ok,
                pseudo_v4(src, dst),
            )
        }
        ETH_P_IPV6 => {
            let payload = usize::from(be16(18)?);
            if frame.len() < 54 + payload {
                return None;
            }
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[22..38]).ok()?);
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[38..54]).ok()?);
            (
                src.into(),
                dst.into(),
                frame[20],
                54,
                54 + payload,
                true,
                pseudo_v6(src, dst),
            )
        }
        _ => return None,
    };
    let header = match protocol {
        ipproto::TCP => 20,
        ipproto::UDP => 8,
        _ => return None,
    };
    if end < l4 + header {
        return None;
    }
    let segment = &frame[l4..end];
    let udp_checksum = if protocol == ipproto::UDP {
        be16(l4 + 6)?
    } else {
        0
    };
    let l4_checksum_ok = if protocol == ipproto::UDP && udp_checksum == 0 {
        matches!(pseudo, PseudoHeader::V4(..))
    } else {
        checksum(&[&pseudo.bytes(protocol, segment.len()), segment]) == 0
    };
    Some(ParsedFrame {
        dst_mac: frame[0..6].try_into().ok()?,
        src_mac: frame[6..12].try_into().ok()?,
        src,
        dst,
        protocol,
        sport: be16(l4)?,
        dport: be16(l4 + 2)?,
        tcp_flags: if protocol == ipproto::TCP {
            frame[l4 + 13]
        } else {
            0
        },
        ip_checksum_ok,
        l4_checksum_ok,
        udp_checksum,
        payload: frame[l4 + header..end].to_vec(),
    })
}

/// Sets the UDP checksum of a built IPv4 frame without options to 0 ("none").
pub fn without_udp_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    frame[40] = 0;
    frame[41] = 0;
    frame
}

/// An ARP request (42 bytes, unpadded) from `sender` asking for `target`.
pub fn arp_request(src_mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut body = Vec::with_capacity(28);
    body.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    body.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
    body.extend_from_slice(&[6, 4]);
    body.extend_from_slice(&1u16.to_be_bytes()); // request
    body.extend_from_slice(&src_mac);
    body.extend_from_slice(&sender);
    body.extend_from_slice(&[0; 6]);
    body.extend_from_slice(&target);
    Packet::raw_ethernet(ETH_P_ARP, &body)
        .macs(src_mac, [0xff; 6])
        .build()
}

/// The first `len` bytes of `frame` (all of it when shorter).
pub fn truncate(frame: &[u8], len: usize) -> &[u8] {
    &frame[..len.min(frame.len())]
}

/// Every prefix of `frame`, from empty to whole: `(len, prefix)`.
pub fn prefixes(frame: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    (0..=frame.len()).map(move |len| (len, &frame[..len]))
}

/// A small deterministic PRNG (xorshift64*), so random tests replay exactly.
#[derive(Clone, Debug)]
pub struct Prng(u64);

impl Prng {
    /// A generator from `seed` (0 is replaced by a fixed non-zero seed).
    pub const fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_tcp_layout_and_checksums() {
        let built = Packet::tcp_v4([198, 18, 0, 1], 80).build_with_layout();
        let b = &built.bytes;
        assert_eq!(b.len(), 54);
        assert_eq!(
            (built.l3_offset, built.l4_offset, built.l4_end),
            (14, 34, 54)
        );
        assert_eq!(&b[12..14], &[0x08, 0x00]);
        assert_eq!(b[14], 0x45);
        assert_eq!(u16::from_be_bytes([b[16], b[17]]), 40);
        assert_eq!(b[23], ipproto::TCP);
        // A correct header checksums to zero.
        assert_eq!(checksum(&[&b[14..34]]), 0);
        assert_eq!(u16::from_be_bytes([b[36], b[37]]), 80);
        assert_eq!(b[47], tcp_flags::SYN);
        // TCP checksum over pseudo-header + segment verifies to zero.
        let pseudo = pseudo_v4(Ipv4Addr::from(DEFAULT_SRC_V4), Ipv4Addr::new(198, 18, 0, 1))
            .bytes(ipproto::TCP, 20);
        assert_eq!(checksum(&[&pseudo, &b[34..]]), 0);
    }

    #[test]
    fn ipv4_options_set_ihl_and_vlans_shift_offsets() {
        let built = Packet::udp_v4([198, 18, 0, 1], 53)
            .vlan(ETH_P_8021AD, 100)
            .vlan(ETH_P_8021Q, 200)
            .ipv4_options(&[148, 4, 0, 0, 1])
            .payload(b"abc")
            .build_with_layout();
        let b = &built.bytes;
        assert_eq!(&b[12..14], &[0x88, 0xa8]);
        assert_eq!(&b[16..18], &[0x81, 0x00]);
        assert_eq!(&b[20..22], &[0x08, 0x00]);
        assert_eq!(built.l3_offset, 22);
        assert_eq!(b[22], 0x47); // 8 bytes of options
        assert_eq!(built.l4_offset, 22 + 28);
        assert_eq!(b.len(), 22 + 28 + 8 + 3);
        assert_eq!(u16::from_be_bytes([b[24], b[25]]), 28 + 8 + 3);
        assert_eq!(checksum(&[&b[22..50]]), 0);
        assert_eq!(u16::from_be_bytes([b[54], b[55]]), 11);
    }

    #[test]
    fn ipv6_extension_headers_chain() {
        let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let built = Packet::tcp_v6(dst, 443)
            .ext(ExtHeader::HopByHop { len: 0 })
            .ext(ExtHeader::Routing { len: 2 })
            .ext(ExtHeader::Fragment {
                offset: 0,
                more: true,
                id: 7,
            })
            .ext(ExtHeader::Ah { len: 4 })
            .ext(ExtHeader::DestOpts { len: 1 })
            .build_with_layout();
        let b = &built.bytes;
        assert_eq!(b[14] >> 4, 6);
        assert_eq!(b[20], ipproto::HOPOPTS);
        let mut at = 54;
        let expected = [
            (ipproto::ROUTING, 8),
            (ipproto::FRAGMENT, 24),
            (ipproto::AH, 8),
            (ipproto::DSTOPTS, 24),
            (ipproto::TCP, 16),
        ];
        for (next, len) in expected {
            assert_eq!(b[at], next, "at {at}");
            at += len;
        }
        assert_eq!(at, built.l4_offset);
        assert_eq!(u16::from_be_bytes([b[18], b[19]]) as usize, b.len() - 54);
        assert_eq!(u16::from_be_bytes([b[at + 2], b[at + 3]]), 443);
    }

    #[test]
    fn arp_and_prefixes() {
        let arp = arp_request(DEFAULT_SRC_MAC, [198, 18, 0, 1], [198, 18, 0, 2]);
        assert_eq!(arp.len(), 42);
        assert_eq!(&arp[12..14], &[0x08, 0x06]);
        assert_eq!(prefixes(&arp).count(), 43);
        assert_eq!(truncate(&arp, 10).len(), 10);
        assert_eq!(truncate(&arp, 100).len(), 42);
    }

    #[test]
    fn prng_is_deterministic() {
        let mut a = Prng::new(42);
        let mut b = Prng::new(42);
        assert_eq!(a.bytes(32), b.bytes(32));
        assert!(a.below(10) < 10);
    }
}
