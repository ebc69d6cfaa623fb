//! Veth pairs between namespaces, with addresses and, optionally, static
//! neighbor entries.

use std::{net::Ipv4Addr, process::Command};

use anyhow::{Context, Result, anyhow};

use crate::{
    netns::{Netns, add_addrs_in, ip_in, link_json, write_sysctl},
    process::{next_counter, run_ok},
    reap::VETH_PREFIX,
};

/// One end of a [`Veth`] pair.
#[derive(Clone, Debug)]
pub struct VethEnd {
    /// The namespace it lives in (`None`: the root namespace).
    pub ns: Option<String>,
    /// Interface name.
    pub name: String,
    /// MAC address.
    pub mac: [u8; 6],
    /// Addresses with prefix length (`198.18.1.1/24`).
    pub addrs: Vec<String>,
}

impl VethEnd {
    /// The addresses without prefix length, IPv4 ones only.
    pub fn ipv4(&self) -> Vec<Ipv4Addr> {
        self.addrs
            .iter()
            .filter_map(|a| a.split('/').next()?.parse().ok())
            .collect()
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        ip_in(self.ns.as_deref(), args)
    }
}

/// Builds a [`Veth`]: `Veth::between(Some(&client), Some(&edge))`.
#[derive(Debug)]
pub struct VethBuilder<'a> {
    ends: [(Option<&'a Netns>, Vec<String>); 2],
    static_neighbors: bool,
}

impl VethBuilder<'_> {
    /// Addresses of the first end (`198.18.1.1/24`, `2001:db8:1::1/64`).
    pub fn addrs_a(mut self, addrs: &[&str]) -> Self {
        self.ends[0].1 = addrs.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Addresses of the second end.
    pub fn addrs_b(mut self, addrs: &[&str]) -> Self {
        self.ends[1].1 = addrs.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Adds permanent neighbor entries for each other's addresses, so no
    /// ARP (or ND) ever crosses the link: packet counts stay exact.
    pub fn static_neighbors(mut self) -> Self {
        self.static_neighbors = true;
        self
    }

    /// Creates the pair. An end without an IPv6 address gets IPv6 disabled
    /// (no link-local address, no ND or MLD noise); IPv6 addresses skip DAD.
    pub fn create(self) -> Result<Veth> {
        let suffix = format!("{:x}-{:x}", std::process::id(), next_counter() % 0xfff);
        let names = [
            format!("{VETH_PREFIX}{suffix}a"),
            format!("{VETH_PREFIX}{suffix}b"),
        ];
        let mut command = Command::new("ip");
        command.args(["link", "add", &names[0]]);
        if let Some(ns) = self.ends[0].0 {
            command.args(["netns", ns.name()]);
        }
        command.args(["type", "veth", "peer", "name", &names[1]]);
        if let Some(ns) = self.ends[1].0 {
            command.args(["netns", ns.name()]);
        }
        run_ok(&mut command)?;
        // From here on the guard deletes the pair, also when setup fails.
        let mut veth = Veth {
            a: VethEnd {
                ns: self.ends[0].0.map(|ns| ns.name().to_owned()),
                name: names[0].clone(),
                mac: [0; 6],
                addrs: self.ends[0].1.clone(),
            },
            b: VethEnd {
                ns: self.ends[1].0.map(|ns| ns.name().to_owned()),
                name: names[1].clone(),
                mac: [0; 6],
                addrs: self.ends[1].1.clone(),
            },
        };
        for (end, (netns, _)) in [&mut veth.a, &mut veth.b].into_iter().zip(&self.ends) {
            let has_v6 = end.addrs.iter().any(|a| a.contains(':'));
            if !has_v6 {
                write_sysctl(
                    netns.map(Netns::path).as_deref(),
                    &format!("net.ipv6.conf.{}.disable_ipv6", end.name),
                    "1",
                )?;
            }
            let addrs: Vec<&str> = end.addrs.iter().map(String::as_str).collect();
            add_addrs_in(end.ns.as_deref(), &end.name, &addrs)?;
            let link = link_json(end.ns.as_deref(), &end.name)?;
            end.mac = parse_mac(link["address"].as_str().unwrap_or_default())?;
        }
        if self.static_neighbors {
            for (end, other) in [(&veth.a, &veth.b), (&veth.b, &veth.a)] {
                let mac = other
                    .mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":");
                for addr in &other.addrs {
                    let ip = addr.split('/').next().unwrap_or(addr);
                    end.ip(&[
                        "neigh",
                        "replace",
                        ip,
                        "lladdr",
                        &mac,
                        "dev",
                        &end.name,
                        "nud",
                        "permanent",
                    ])?;
                }
            }
        }
        for end in [&veth.a, &veth.b] {
            end.ip(&["link", "set", &end.name, "up"])?;
        }
        Ok(veth)
    }
}

/// A veth pair between two namespaces (or a namespace and the root
/// namespace), deleted on drop.
#[derive(Debug)]
pub struct Veth {
    /// The first end.
    pub a: VethEnd,
    /// The second end.
    pub b: VethEnd,
}

impl Veth {
    /// Starts a pair between `a` and `b` (`None`: the root namespace).
    pub fn between<'a>(a: Option<&'a Netns>, b: Option<&'a Netns>) -> VethBuilder<'a> {
        VethBuilder {
            ends: [(a, Vec::new()), (b, Vec::new())],
            static_neighbors: false,
        }
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting either end deletes the pair; the root end first, since a
        // namespace may be gone already.
        let mut ends = [&self.a, &self.b];
        ends.sort_by_key(|end| end.ns.is_some());
        for end in ends {
            if end.ip(&["link", "del", &end.name]).is_ok() {
                return;
            }
        }
    }
}

fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|part| u8::from_str_radix(part, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC address {text}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow!("MAC address {text} is not 6 bytes"))
}
