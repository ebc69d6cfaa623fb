//! `xdp-ingress maps`: reads the pinned maps of a running daemon and shows
//! them as a table a person can read, or as JSON.

use std::{fmt::Write as _, path::Path};

use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use ingress_common::{ListenerKey, ListenerValue, TrafficCounters, action, map_names, verdict};
use serde::Serialize;

use super::{
    edge::sum_per_cpu,
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
    Ok(build_report(dir, &entries, &listener_stats, &verdict_stats))
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
                "ID", "FAMILY", "PROTO", "ADDRESS", "PORT", "ACTION", "PACKETS", "BYTES",
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
            ]);
        }
        if self.listeners.is_empty() {
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
        let report = build_report(Path::new("/pins"), &entries, &stats, &verdicts);
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
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["listeners"][1]["port"], 23);
    }
}
