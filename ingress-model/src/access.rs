//! Which client addresses may use a route: ingress-nginx's
//! `allowlist-source-range` (alias `whitelist-source-range`) and
//! `denylist-source-range`, comma-separated addresses and CIDR ranges of
//! either family. A client in the deny list is refused; with an allow list,
//! a client outside it is refused too (nginx's `deny ...; allow ...; deny
//! all;`). The proxy answers a refused client 403.

use std::{fmt, net::IpAddr};

use crate::object::ObjectKey;

/// An address range: `addr` with its first `prefix` bits significant (the
/// rest zeroed when parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpRange {
    addr: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Parses `198.18.0.0/15`, `2001:db8::/32` or a single address. Host
    /// bits after the prefix are cleared, as Go's `net.ParseCIDR` (which
    /// ingress-nginx uses) does.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(bits) => bits
                .parse::<u8>()
                .ok()
                .filter(|bits| *bits <= max)
                .ok_or_else(|| format!("{text:?} has an invalid prefix length"))?,
        };
        Ok(Self {
            addr: masked(addr, prefix),
            prefix,
        })
    }

    /// The first address of the range (the bits after the prefix are zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `other` lies wholly inside this range (the same family, a
    /// prefix as long or longer).
    pub fn covers(&self, other: &IpRange) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address counts as IPv4) is in the
    /// range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && masked(ip, self.prefix) == self.addr
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// Parses a comma-separated list of ranges; an empty list, or any entry
/// that is not an address or a range, is an error (the Ingress then fails
/// closed).
pub fn parse_ranges(value: &str) -> Result<Vec<IpRange>, String> {
    let ranges = value
        .split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(IpRange::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if ranges.is_empty() {
        return Err("no address or range".to_owned());
    }
    Ok(ranges)
}

/// The source ranges of a route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SourceRanges {
    /// Only these clients, when not empty.
    pub allow: Vec<IpRange>,
    /// Never these clients.
    pub deny: Vec<IpRange>,
}

impl SourceRanges {
    /// Whether a client at `ip` may use the route.
    pub fn admits(&self, ip: IpAddr) -> bool {
        !self.deny.iter().any(|range| range.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|range| range.contains(ip)))
    }
}

/// What our Ingresses say about source ranges that matters beyond their
/// own routes: the listener-wide `xdp-ingress.io/xdp-drop-source-range`
/// lists, and which Ingresses set their own allow or deny list (which then
/// replaces the ConfigMap's for their routes, so the ConfigMap's list
/// cannot be dropped for every host in the kernel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngressSourceRanges {
    /// Every `xdp-drop-source-range` range of our Ingresses, sorted, once each.
    pub xdp_drop: Vec<IpRange>,
    /// Our Ingresses with their own allow list.
    pub own_allow: Vec<ObjectKey>,
    /// Our Ingresses with their own deny list.
    pub own_deny: Vec<ObjectKey>,
    /// Our Ingresses with `satisfy: any` and authentication: a client
    /// outside the source ranges may still pass by authenticating.
    pub satisfy_any: Vec<ObjectKey>,
}

/// The source ranges the kernel can enforce exactly, for every listener of
/// the proxy: what is dropped there never reaches the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelSourceRanges {
    /// Sources dropped.
    pub deny: Vec<IpRange>,
    /// When not empty, sources outside these ranges (and not in `deny`)
    /// are dropped too.
    pub allow: Vec<IpRange>,
    /// Why a global list stays in the proxy only (for the log), if one does.
    pub proxy_only: Vec<String>,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_parse_like_go_cidrs() {
        let cases = [
            ("198.18.0.0/15", "198.18.0.0/15"),
            ("198.18.3.77/24", "198.18.3.0/24"),
            (" 198.18.0.2 ", "198.18.0.2/32"),
            ("2001:db8::1/32", "2001:db8::/32"),
            ("2001:db8::1", "2001:db8::1/128"),
            ("0.0.0.0/0", "0.0.0.0/0"),
        ];
        for (text, parsed) in cases {
            assert_eq!(IpRange::parse(text).unwrap().to_string(), parsed, "{text}");
        }
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "nope",
            "2001:db8::/129",
            "10.0.0.0/-1",
            "",
        ] {
            assert!(IpRange::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_ranges("198.18.0.0/24, 2001:db8::/32").unwrap().len(),
            2
        );
        assert!(parse_ranges("198.18.0.0/24,10.0.0.0/33").is_err());
        assert!(parse_ranges(" , ").is_err());
    }

    #[test]
    fn deny_wins_and_allow_excludes_the_rest() {
        let ranges = SourceRanges {
            allow: parse_ranges("198.18.0.0/16,2001:db8::/32").unwrap(),
            deny: parse_ranges("198.18.0.66").unwrap(),
        };
        assert!(ranges.admits(ip("198.18.0.2")));
        assert!(ranges.admits(ip("::ffff:198.18.0.2")));
        assert!(ranges.admits(ip("2001:db8::2")));
        assert!(!ranges.admits(ip("198.18.0.66")));
        assert!(!ranges.admits(ip("198.19.0.2")));
        assert!(!ranges.admits(ip("2001:db9::2")));
        let deny_only = SourceRanges {
            allow: Vec::new(),
            deny: parse_ranges("198.19.0.0/16").unwrap(),
        };
        assert!(deny_only.admits(ip("198.18.0.2")));
        assert!(!deny_only.admits(ip("198.19.7.7")));
    }

    proptest! {
        #[test]
        fn a_range_holds_exactly_the_addresses_sharing_its_prefix(
            base in any::<u32>(), prefix in 0u8..=32, probe in any::<u32>()
        ) {
            let range = IpRange::parse(&format!("{}/{prefix}", std::net::Ipv4Addr::from(base))).unwrap();
            let shift = 32 - u32::from(prefix);
            let same = prefix == 0 || (base >> shift) == (probe >> shift);
            prop_assert_eq!(range.contains(IpAddr::V4(probe.into())), same);
        }
    }
}
