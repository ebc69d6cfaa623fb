//! `xdp-ingress maps`: reads the pinned maps of a running daemon and shows
//! them as a table a person can read, or as JSON: the listeners with their
//! source ranges and denied counters, the verdict counters and, when the L4
//! maps are pinned, the L4 services and backends with their counters.

use std::{collections::BTreeSet, fmt::Write as _, net::IpAddr, path::Path};

use aya::maps::{HashMap, Map, MapData, PerCpuArray, lpm_trie::LpmTrie};
use ingress_common::{
    L4Config, L4Counters, ListenerKey, ListenerValue, SourcePrefix4, SourcePrefix6,
    TrafficCounters, action, family, l4, map_names, source_range, verdict, words_octets,
};
use serde::Serialize;

use super::{
    edge::sum_per_cpu,
    l4_maps::{L4Maps, L4MapsError},
    l4_plan::PresentL4,
    listeners::{key_ip, protocol_name},
};

/// Reading the pins failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// No pins where they should be.
    #[error(
        "no pinned map at {path}: is xdp-ingress running with --bpffs {dir}? (start it with `xdp-ingress run --interface IFACE`)"
    )]
    NotPinned {
        /// The pin that was looked for.
        path: String,
        /// The pin directory.
        dir: String,
    },
    /// The L4 maps are pinned but could not be read.
    #[error("reading the L4 maps in {dir}: {source}")]
    L4 {
        /// The pin directory.
        dir: String,
        /// The error.
        #[source]
        source: L4MapsError,
    },
    /// A pin exists but could not be read.
    #[error("reading {path}: {source}")]
    Map {
        /// The pin.
        path: String,
        /// The error.
        #[source]
        source: aya::maps::MapError,
    },
}

/// One listener with its counters.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ListenerRow {
    /// Counter slot.
    pub id: u32,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The address, `*` for the wildcard.
    pub address: String,
    /// Destination port.
    pub port: u16,
    /// What the program does.
    pub action: &'static str,
    /// Packets matched, summed over CPUs.
    pub packets: u64,
    /// Bytes matched, summed over CPUs.
    pub bytes: u64,
    /// Of those, packets dropped for their source address.
    pub denied_packets: u64,
    /// Their bytes.
    pub denied_bytes: u64,
    /// The source ranges in the kernel for this listener, most specific
    /// last; empty when none.
    pub source_ranges: Vec<SourceRangeRow>,
}

/// One source range of a listener in the kernel's tries.
#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceRangeRow {
    /// The range (`0.0.0.0/0` and `::/0`: the rest, with an allow list).
    pub range: String,
    /// `deny` or `allow`: what its longest-prefix match does.
    pub rule: &'static str,
}

/// One verdict reason with its counters.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct VerdictRow {
    /// The reason, as in `ingress_common::verdict::NAMES`.
    pub reason: &'static str,
    /// Packets, summed over CPUs.
    pub packets: u64,
    /// Bytes, summed over CPUs.
    pub bytes: u64,
}

/// What `xdp-ingress maps` shows.
#[derive(Debug, Serialize)]
pub struct MapsReport {
    /// The pin directory read.
    pub bpffs: String,
    /// Listeners, by id.
    pub listeners: Vec<ListenerRow>,
    /// Verdict counters, in reason order.
    pub verdicts: Vec<VerdictRow>,
    /// The L4 tier (`null` when its maps are not pinned).
    pub l4: Option<L4Report>,
}

/// One L4 service key (an address, protocol and port) with its counters.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct L4ServiceRow {
    /// Service index (Maglev table and counter slot; the keys of one
    /// protocol, port and family on several addresses share it, and so
    /// their counters).
    pub index: u32,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The address clients send to.
    pub address: String,
    /// The port clients send to.
    pub port: u16,
    /// Backends in the live table (0: packets go to the stack).
    pub backends: u32,
    /// The backend slots the live table half names, sorted.
    pub backend_slots: Vec<u32>,
    /// Maglev slots per table half.
    pub table_size: u32,
    /// The live half (0 or 1).
    pub active_half: u32,
    /// Packets, both directions, summed over CPUs.
    pub packets: u64,
    /// Bytes, both directions, summed over CPUs.
    pub bytes: u64,
    /// Flows that picked the service.
    pub new_flows: u64,
}

/// One L4 backend slot with its counters.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct L4BackendRow {
    /// Backend slot.
    pub slot: u32,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// The endpoint's address.
    pub address: String,
    /// The endpoint's port.
    pub port: u16,
    /// True while the slot holds a live backend (false: released; its
    /// counters stay until the slot is reused).
    pub active: bool,
    /// Bumped each time the slot gets a new backend.
    pub generation: u32,
    /// Packets, both directions, summed over CPUs.
    pub packets: u64,
    /// Bytes, both directions, summed over CPUs.
    pub bytes: u64,
    /// Flows that picked the backend.
    pub new_flows: u64,
}

/// The L4 tier as its pinned maps hold it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct L4Report {
    /// `full` or `dnat`.
    pub nat: &'static str,
    /// The source ports of full NAT, inclusive.
    pub nat_ports: (u16, u16),
    /// Service keys, by protocol, port, family and address.
    pub services: Vec<L4ServiceRow>,
    /// Backend slots ever used, by slot.
    pub backends: Vec<L4BackendRow>,
    /// Entries of the connection table.
    pub flows: usize,
    /// Copies of IPv4 flows in the CPUs' flow caches (a flow forwarded on
    /// two CPUs counts twice; replies count apart from their flows).
    pub cached_flows: usize,
}

fn family_name(value: u8) -> &'static str {
    if value == family::IPV6 {
        "ipv6"
    } else {
        "ipv4"
    }
}

fn words_ip(addr: [u32; 4], value: u8) -> IpAddr {
    let octets = words_octets(addr);
    if value == family::IPV6 {
        IpAddr::from(octets)
    } else {
        IpAddr::from([octets[0], octets[1], octets[2], octets[3]])
    }
}

/// Joins the L4 maps' entries with their counters (pure, for the tests).
pub fn build_l4_report(
    config: &L4Config,
    present: &PresentL4,
    service_stats: &[L4Counters],
    backend_stats: &[L4Counters],
    flows: usize,
    cached_flows: usize,
) -> L4Report {
    let mut services: Vec<L4ServiceRow> = present
        .services
        .iter()
        .map(|(key, value)| {
            let counters = service_stats
                .get(value.index as usize)
                .copied()
                .unwrap_or_default();
            let slots: BTreeSet<u32> = present
                .tables
                .get(&value.index)
                .into_iter()
                .flatten()
                .copied()
                .collect();
            L4ServiceRow {
                index: value.index,
                family: family_name(key.family),
                protocol: protocol_name(key.protocol),
                address: words_ip(key.addr, key.family).to_string(),
                port: key.port,
                backends: value.backends,
                backend_slots: slots.into_iter().collect(),
                table_size: value.table_size,
                active_half: value.active_half,
                packets: counters.packets,
                bytes: counters.bytes,
                new_flows: counters.new_flows,
            }
        })
        .collect();
    services.sort_by(|a, b| {
        (&a.protocol, a.port, a.family, &a.address).cmp(&(
            &b.protocol,
            b.port,
            b.family,
            &b.address,
        ))
    });
    let backends = present
        .backends
        .iter()
        .map(|(slot, backend)| {
            let counters = backend_stats
                .get(*slot as usize)
                .copied()
                .unwrap_or_default();
            L4BackendRow {
                slot: *slot,
                family: family_name(backend.family),
                address: words_ip(backend.addr, backend.family).to_string(),
                port: backend.port,
                active: backend.flags & l4::BACKEND_ACTIVE != 0,
                generation: backend.generation,
                packets: counters.packets,
                bytes: counters.bytes,
                new_flows: counters.new_flows,
            }
        })
        .collect();
    L4Report {
        nat: if config.nat_mode == l4::NAT_DNAT {
            "dnat"
        } else {
            "full"
        },
        nat_ports: (config.port_min, config.port_max),
        services,
        backends,
        flows,
        cached_flows,
    }
}

/// Reads the pinned L4 maps under `dir`; `None` when they are not pinned.
pub fn read_l4(dir: &Path) -> Result<Option<L4Report>, InspectError> {
    if !dir.join(pin_file(map_names::L4_CONFIG)).exists() {
        return Ok(None);
    }
    let error = |source| InspectError::L4 {
        dir: dir.display().to_string(),
        source,
    };
    let maps = L4Maps::from_pins(dir).map_err(error)?;
    let config = maps.config().map_err(error)?;
    let present = maps.present().map_err(error)?;
    let service_stats = maps.service_counters().map_err(error)?;
    let backend_stats = maps.backend_counters().map_err(error)?;
    let flows = maps.flows().map_err(error)?.len();
    let cached_flows = maps.cached_flows().map_err(error)?;
    Ok(Some(build_l4_report(
        &config,
        &present,
        &service_stats,
        &backend_stats,
        flows,
        cached_flows,
    )))
}

fn open_pin(dir: &Path, file: &str) -> Result<MapData, InspectError> {
    let path = dir.join(file);
    if !path.exists() {
        return Err(InspectError::NotPinned {
            path: path.display().to_string(),
            dir: dir.display().to_string(),
        });
    }
    MapData::from_pin(&path).map_err(|source| InspectError::Map {
        path: path.display().to_string(),
        source,
    })
}

fn pin_file(name: &str) -> &'static str {
    map_names::PINNED
        .iter()
        .find(|(map, _)| *map == name)
        .map(|(_, file)| *file)
        .expect("every map name has a pin file")
}

fn counters_from_pin(dir: &Path, name: &str) -> Result<Vec<TrafficCounters>, InspectError> {
    let file = pin_file(name);
    let error = |source| InspectError::Map {
        path: dir.join(file).display().to_string(),
        source,
    };
    let map = PerCpuArray::<_, TrafficCounters>::try_from(Map::PerCpuArray(open_pin(dir, file)?))
        .map_err(error)?;
    sum_per_cpu(&map).map_err(error)
}

/// Reads every pinned map under `dir`.
pub fn read_pinned(dir: &Path) -> Result<MapsReport, InspectError> {
    let listeners_file = pin_file(map_names::LISTENERS);
    let listeners_error = |source| InspectError::Map {
        path: dir.join(listeners_file).display().to_string(),
        source,
    };
    let listeners = HashMap::<_, ListenerKey, ListenerValue>::try_from(Map::HashMap(open_pin(
        dir,
        listeners_file,
    )?))
    .map_err(listeners_error)?;
    let entries: Vec<(ListenerKey, ListenerValue)> = listeners
        .iter()
        .collect::<Result<_, _>>()
        .map_err(listeners_error)?;
    let listener_stats = counters_from_pin(dir, map_names::LISTENER_STATS)?;
    let verdict_stats = counters_from_pin(dir, map_names::VERDICT_STATS)?;
    let mut report = build_report(dir, &entries, &listener_stats, &verdict_stats);
    read_source_ranges(dir, &mut report)?;
    report.l4 = read_l4(dir)?;
    Ok(report)
}

/// Adds the source ranges and denied counters of each listener (none when
/// their maps are not pinned, as by an older daemon).
fn read_source_ranges(dir: &Path, report: &mut MapsReport) -> Result<(), InspectError> {
    if !dir
        .join(pin_file(map_names::LISTENER_DENIED_STATS))
        .exists()
    {
        return Ok(());
    }
    let denied = counters_from_pin(dir, map_names::LISTENER_DENIED_STATS)?;
    let mut ranges: Vec<(u32, SourceRangeRow)> = Vec::new();
    let error = |name: &'static str| {
        move |source| InspectError::Map {
            path: dir.join(pin_file(name)).display().to_string(),
            source,
        }
    };
    let row = |prefix_len: u32, addr: IpAddr, rule: u32| SourceRangeRow {
        range: format!("{addr}/{}", prefix_len - source_range::LISTENER_BITS),
        rule: source_range::name(rule),
    };
    let name = map_names::SOURCE_RANGES4;
    let v4 =
        LpmTrie::<_, SourcePrefix4, u32>::try_from(Map::LpmTrie(open_pin(dir, pin_file(name))?))
            .map_err(error(name))?;
    for entry in v4.iter() {
        let (key, rule) = entry.map_err(error(name))?;
        let data = key.data();
        let id = u32::from_be_bytes(data.listener);
        ranges.push((id, row(key.prefix_len(), IpAddr::from(data.addr), rule)));
    }
    let name = map_names::SOURCE_RANGES6;
    let v6 =
        LpmTrie::<_, SourcePrefix6, u32>::try_from(Map::LpmTrie(open_pin(dir, pin_file(name))?))
            .map_err(error(name))?;
    for entry in v6.iter() {
        let (key, rule) = entry.map_err(error(name))?;
        let data = key.data();
        let id = u32::from_be_bytes(data.listener);
        ranges.push((id, row(key.prefix_len(), IpAddr::from(data.addr), rule)));
    }
    join_source_ranges(report, &denied, ranges);
    Ok(())
}

/// Joins the denied counters and the ranges (by listener id) with the
/// report's listeners (pure, for the tests).
pub fn join_source_ranges(
    report: &mut MapsReport,
    denied: &[TrafficCounters],
    mut ranges: Vec<(u32, SourceRangeRow)>,
) {
    // The rest (`/0`) first, then by family and prefix: the most specific last.
    ranges.sort_by_key(|(id, row)| {
        let (addr, bits) = row.range.split_once('/').unwrap_or((&row.range, "0"));
        (
            *id,
            bits != "0",
            addr.contains(':'),
            bits.parse::<u8>().unwrap_or(0),
            row.range.clone(),
        )
    });
    for listener in &mut report.listeners {
        let counters = denied
            .get(listener.id as usize)
            .copied()
            .unwrap_or_default();
        listener.denied_packets = counters.packets;
        listener.denied_bytes = counters.bytes;
    }
    for (id, row) in ranges {
        if let Some(listener) = report.listeners.iter_mut().find(|l| l.id == id) {
            listener.source_ranges.push(row);
        }
    }
}

/// Joins listener entries with their counters (pure, for the tests).
pub fn build_report(
    dir: &Path,
    entries: &[(ListenerKey, ListenerValue)],
    listener_stats: &[TrafficCounters],
    verdict_stats: &[TrafficCounters],
) -> MapsReport {
    let mut listeners: Vec<ListenerRow> = entries
        .iter()
        .map(|(key, value)| {
            let counters = listener_stats
                .get(value.listener_id as usize)
                .copied()
                .unwrap_or_default();
            ListenerRow {
                id: value.listener_id,
                family: if key.family == ingress_common::family::IPV6 {
                    "ipv6"
                } else {
                    "ipv4"
                },
                protocol: protocol_name(key.protocol),
                address: key_ip(key).map_or_else(|| "*".to_owned(), |ip| ip.to_string()),
                port: key.port,
                action: action::name(value.action),
                packets: counters.packets,
                bytes: counters.bytes,
                denied_packets: 0,
                denied_bytes: 0,
                source_ranges: Vec::new(),
            }
        })
        .collect();
    listeners.sort_by_key(|row| row.id);
    let verdicts = verdict::NAMES
        .iter()
        .enumerate()
        .map(|(index, reason)| {
            let counters = verdict_stats.get(index).copied().unwrap_or_default();
            VerdictRow {
                reason,
                packets: counters.packets,
                bytes: counters.bytes,
            }
        })
        .collect();
    MapsReport {
        bpffs: dir.display().to_string(),
        listeners,
        verdicts,
        l4: None,
    }
}

impl MapsReport {
    /// The report as aligned text tables.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Pinned maps in {}\n", self.bpffs);
        let _ = writeln!(out, "LISTENERS");
        let mut rows = vec![
            [
                "ID",
                "FAMILY",
                "PROTO",
                "ADDRESS",
                "PORT",
                "ACTION",
                "PACKETS",
                "BYTES",
                "DENIED",
                "DENIED-BYTES",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for row in &self.listeners {
            rows.push(vec![
                row.id.to_string(),
                row.family.to_owned(),
                row.protocol.clone(),
                row.address.clone(),
                row.port.to_string(),
                row.action.to_owned(),
                row.packets.to_string(),
                row.bytes.to_string(),
                row.denied_packets.to_string(),
                row.denied_bytes.to_string(),
            ]);
        }
        if self.listeners.is_empty() {
            rows.push(vec!["(none)".into()]);
        }
        out.push_str(&align(&rows));
        let _ = writeln!(out, "\nSOURCE RANGES (dropped at XDP; longest prefix wins)");
        let mut rows = vec![["LISTENER", "RANGE", "RULE"].map(String::from).to_vec()];
        for listener in &self.listeners {
            for range in &listener.source_ranges {
                rows.push(vec![
                    listener.id.to_string(),
                    range.range.clone(),
                    range.rule.to_owned(),
                ]);
            }
        }
        if rows.len() == 1 {
            rows.push(vec!["(none)".into()]);
        }
        out.push_str(&align(&rows));
        let _ = writeln!(out, "\nVERDICTS");
        let mut rows = vec![["REASON", "PACKETS", "BYTES"].map(String::from).to_vec()];
        for row in &self.verdicts {
            rows.push(vec![
                row.reason.to_owned(),
                row.packets.to_string(),
                row.bytes.to_string(),
            ]);
        }
        out.push_str(&align(&rows));
        if let Some(l4) = &self.l4 {
            out.push_str(&l4.to_table());
        }
        out
    }
}

impl L4Report {
    /// False when no daemon configured the L4 tier (no TCP/UDP services
    /// ConfigMap): its maps are pinned but hold nothing, not even the
    /// source ports of full NAT.
    pub fn configured(&self) -> bool {
        self.nat_ports != (0, 0) || !self.services.is_empty() || !self.backends.is_empty()
    }

    /// The L4 sections of the table: services, then backends; one line
    /// when the tier is not configured.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        if !self.configured() {
            let _ = writeln!(out, "\nL4: none (no TCP or UDP services ConfigMap)");
            return out;
        }
        let _ = writeln!(
            out,
            "\nL4 SERVICES (NAT {}, source ports {}-{}, {} flows, {} cached)",
            self.nat, self.nat_ports.0, self.nat_ports.1, self.flows, self.cached_flows
        );
        let mut rows = vec![
            [
                "INDEX",
                "FAMILY",
                "PROTO",
                "ADDRESS",
                "PORT",
                "BACKENDS",
                "SLOTS",
                "PACKETS",
                "BYTES",
                "NEW-FLOWS",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for row in &self.services {
            let slots: Vec<String> = row.backend_slots.iter().map(u32::to_string).collect();
            rows.push(vec![
                row.index.to_string(),
                row.family.to_owned(),
                row.protocol.clone(),
                row.address.clone(),
                row.port.to_string(),
                row.backends.to_string(),
                if slots.is_empty() {
                    "-".to_owned()
                } else {
                    slots.join(",")
                },
                row.packets.to_string(),
                row.bytes.to_string(),
                row.new_flows.to_string(),
            ]);
        }
        if self.services.is_empty() {
            rows.push(vec!["(none)".into()]);
        }
        out.push_str(&align(&rows));
        let _ = writeln!(out, "\nL4 BACKENDS");
        let mut rows = vec![
            [
                "SLOT",
                "FAMILY",
                "ADDRESS",
                "PORT",
                "STATE",
                "GEN",
                "PACKETS",
                "BYTES",
                "NEW-FLOWS",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for row in &self.backends {
            rows.push(vec![
                row.slot.to_string(),
                row.family.to_owned(),
                row.address.clone(),
                row.port.to_string(),
                if row.active { "active" } else { "released" }.to_owned(),
                row.generation.to_string(),
                row.packets.to_string(),
                row.bytes.to_string(),
                row.new_flows.to_string(),
            ]);
        }
        if self.backends.is_empty() {
            rows.push(vec!["(none)".into()]);
        }
        out.push_str(&align(&rows));
        out
    }
}

/// Left-aligns columns with two spaces between them.
fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use ingress_common::protocol;

    use super::*;
    use crate::bpf::listeners::keys_for_socket;

    #[test]
    fn report_joins_listeners_with_their_counters() {
        let http = keys_for_socket("0.0.0.0:80".parse().unwrap(), protocol::TCP)[0];
        let dropped = keys_for_socket("198.18.0.1:23".parse().unwrap(), protocol::TCP)[0];
        let entries = [
            (
                dropped,
                ListenerValue {
                    action: action::DROP,
                    listener_id: 1,
                },
            ),
            (
                http,
                ListenerValue {
                    action: action::PASS_TO_PROXY,
                    listener_id: 0,
                },
            ),
        ];
        let stats = [
            TrafficCounters {
                packets: 3,
                bytes: 180,
            },
            TrafficCounters {
                packets: 2,
                bytes: 120,
            },
        ];
        let verdicts = [TrafficCounters {
            packets: 9,
            bytes: 900,
        }];
        let mut report = build_report(Path::new("/pins"), &entries, &stats, &verdicts);
        let row = |range: &str, rule| SourceRangeRow {
            range: range.to_owned(),
            rule,
        };
        join_source_ranges(
            &mut report,
            &[TrafficCounters {
                packets: 2,
                bytes: 128,
            }],
            vec![
                (0, row("198.18.5.0/24", "deny")),
                (0, row("::/0", "deny")),
                (0, row("198.18.0.0/15", "allow")),
                (0, row("0.0.0.0/0", "deny")),
            ],
        );
        assert_eq!(report.listeners[0].denied_packets, 2);
        assert_eq!(report.listeners[0].denied_bytes, 128);
        assert_eq!(report.listeners[1].denied_packets, 0);
        let ranges: Vec<&str> = report.listeners[0]
            .source_ranges
            .iter()
            .map(|r| r.range.as_str())
            .collect();
        assert_eq!(
            ranges,
            ["0.0.0.0/0", "::/0", "198.18.0.0/15", "198.18.5.0/24"]
        );
        assert!(report.listeners[1].source_ranges.is_empty());
        assert_eq!(report.listeners[0].address, "*");
        assert_eq!(report.listeners[0].action, "pass-to-proxy");
        assert_eq!(report.listeners[0].packets, 3);
        assert_eq!(report.listeners[1].address, "198.18.0.1");
        assert_eq!(report.listeners[1].action, "drop");
        assert_eq!(report.listeners[1].bytes, 120);
        assert_eq!(report.verdicts.len(), verdict::NAMES.len());
        assert_eq!(report.verdicts[0].packets, 9);
        assert_eq!(report.verdicts[1].packets, 0);
        let table = report.to_table();
        assert!(table.contains("pass-to-proxy"), "{table}");
        assert!(table.contains("pass-not-ip"), "{table}");
        assert!(table.contains("198.18.5.0/24  deny"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["listeners"][1]["port"], 23);
        assert_eq!(json["listeners"][0]["denied_packets"], 2);
        assert_eq!(json["listeners"][0]["source_ranges"][2]["rule"], "allow");
        assert!(json["l4"].is_null());
    }

    #[test]
    fn l4_report_joins_services_and_backends_with_their_counters() {
        use ingress_common::{L4Backend, L4Service, L4ServiceKey, addr_words};

        let key = |addr: &[u8], family: u8, protocol: u8, port: u16| L4ServiceKey {
            addr: addr_words(addr),
            port,
            family,
            protocol,
        };
        let service = |index: u32, backends: u32| L4Service {
            index,
            active_half: 1,
            table_size: 7,
            backends,
        };
        let backend = |last: u8, flags: u8| L4Backend {
            addr: addr_words(&[198, 19, 0, last]),
            port: 8080,
            family: family::IPV4,
            flags,
            generation: 1,
        };
        let mut present = PresentL4::default();
        present.services.insert(
            key(&[198, 18, 0, 1], family::IPV4, protocol::UDP, 53),
            service(1, 0),
        );
        present.services.insert(
            key(&[198, 18, 0, 1], family::IPV4, protocol::TCP, 9000),
            service(0, 2),
        );
        let v6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        present.services.insert(
            key(&v6.octets(), family::IPV6, protocol::TCP, 9000),
            service(2, 0),
        );
        present.backends.insert(0, backend(1, l4::BACKEND_ACTIVE));
        present.backends.insert(1, backend(2, l4::BACKEND_ACTIVE));
        present.backends.insert(2, backend(3, 0));
        present.tables.insert(0, vec![1, 0, 1, 0, 0, 1, 1]);
        let counters = |packets: u64| L4Counters {
            packets,
            bytes: packets * 100,
            new_flows: packets / 2,
            replies: packets / 3,
        };
        let config = L4Config {
            services: 3,
            nat_mode: l4::NAT_FULL,
            port_min: 61_000,
            port_max: 65_535,
            reserved: 0,
        };
        let report = build_l4_report(
            &config,
            &present,
            &[counters(10), counters(4)],
            &[counters(6), counters(4), counters(2)],
            5,
            2,
        );
        assert_eq!(report.nat, "full");
        assert_eq!(report.nat_ports, (61_000, 65_535));
        assert_eq!(report.flows, 5);
        let services: Vec<(&str, u16, &str)> = report
            .services
            .iter()
            .map(|s| (s.protocol.as_str(), s.port, s.address.as_str()))
            .collect();
        assert_eq!(
            services,
            [
                ("tcp", 9000, "198.18.0.1"),
                ("tcp", 9000, "2001:db8::1"),
                ("udp", 53, "198.18.0.1")
            ]
        );
        let tcp = &report.services[0];
        assert_eq!(tcp.backend_slots, vec![0, 1]);
        assert_eq!((tcp.packets, tcp.bytes, tcp.new_flows), (10, 1000, 5));
        assert_eq!(report.services[1].packets, 0, "no counter slot: zero");
        assert_eq!(report.services[2].backends, 0);
        assert!(report.services[2].backend_slots.is_empty());
        assert_eq!(report.backends.len(), 3);
        assert_eq!(report.backends[1].address, "198.19.0.2");
        assert!(report.backends[1].active && !report.backends[2].active);
        assert_eq!(report.backends[2].new_flows, 1);

        let table = report.to_table();
        assert!(
            table.contains("L4 SERVICES (NAT full, source ports 61000-65535, 5 flows, 2 cached)")
        );
        assert!(table.contains("198.19.0.3"), "{table}");
        assert!(table.contains("released"), "{table}");
        assert!(table.contains("0,1"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["services"][0]["backend_slots"][1], 1);
        assert_eq!(json["backends"][0]["port"], 8080);

        let unconfigured =
            build_l4_report(&L4Config::default(), &PresentL4::default(), &[], &[], 0, 0);
        assert!(!unconfigured.configured());
        assert_eq!(
            unconfigured.to_table(),
            "\nL4: none (no TCP or UDP services ConfigMap)\n"
        );
    }
}
