//! The daemon's maps as the tools print them: `xdp-ingress maps --json` and
//! `bpftool map dump`.

use std::{collections::BTreeMap, path::Path, process::Command};

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

use crate::{daemon::daemon_binary, process::run_ok};

/// Packet and byte counters as the tools print them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Counts {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One listener of `xdp-ingress maps --json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerJson {
    /// Counter slot.
    pub id: u64,
    /// `ipv4` / `ipv6`.
    pub family: String,
    /// `tcp` / `udp`.
    pub protocol: String,
    /// Address or `*`.
    pub address: String,
    /// Port.
    pub port: u64,
    /// `pass-to-proxy` / `drop`.
    pub action: String,
    /// Counters.
    pub counts: Counts,
}

/// `xdp-ingress maps --json`, parsed.
#[derive(Clone, Debug)]
pub struct MapsJson {
    /// The raw JSON.
    pub raw: Value,
    /// Listeners in id order.
    pub listeners: Vec<ListenerJson>,
    /// Verdict counters by reason name (`pass-to-proxy`, ...).
    pub verdicts: BTreeMap<String, Counts>,
}

fn counts(value: &Value) -> Counts {
    Counts {
        packets: value["packets"].as_u64().unwrap_or(0),
        bytes: value["bytes"].as_u64().unwrap_or(0),
    }
}

/// Runs `xdp-ingress maps --bpffs DIR --json` in the root namespace and parses it.
pub fn read_maps(bpffs: &Path) -> Result<MapsJson> {
    let out = run_ok(
        Command::new(daemon_binary()?)
            .args(["maps", "--json", "--bpffs"])
            .arg(bpffs),
    )?;
    let raw: Value = serde_json::from_str(&out).context("parsing `xdp-ingress maps --json`")?;
    let string = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let listeners = raw["listeners"]
        .as_array()
        .ok_or_else(|| anyhow!("no listeners array in {raw}"))?
        .iter()
        .map(|l| ListenerJson {
            id: l["id"].as_u64().unwrap_or(u64::MAX),
            family: string(&l["family"]),
            protocol: string(&l["protocol"]),
            address: string(&l["address"]),
            port: l["port"].as_u64().unwrap_or(0),
            action: string(&l["action"]),
            counts: counts(l),
        })
        .collect();
    let verdicts = raw["verdicts"]
        .as_array()
        .ok_or_else(|| anyhow!("no verdicts array in {raw}"))?
        .iter()
        .map(|v| (string(&v["reason"]), counts(v)))
        .collect();
    Ok(MapsJson {
        raw,
        listeners,
        verdicts,
    })
}

/// `bpftool -j map dump pinned PIN` of a per-CPU array of
/// `{packets, bytes}` (u64 each), summed over CPUs, by key.
pub fn bpftool_counters(pin: &Path) -> Result<BTreeMap<u32, Counts>> {
    let out = run_ok(
        Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(pin),
    )?;
    let entries: Value = serde_json::from_str(&out).context("parsing bpftool's JSON")?;
    let mut sums = BTreeMap::new();
    for entry in entries.as_array().into_iter().flatten() {
        let (key, values) = if let Some(formatted) = entry.get("formatted") {
            (formatted["key"].as_u64(), &formatted["values"])
        } else {
            (hex_le(&entry["key"]), &entry["values"])
        };
        let key = key.ok_or_else(|| anyhow!("bpftool entry without a key: {entry}"))? as u32;
        let mut sum = Counts::default();
        for per_cpu in values.as_array().into_iter().flatten() {
            let value = &per_cpu["value"];
            let (packets, bytes) = if value.is_object() {
                (value["packets"].as_u64(), value["bytes"].as_u64())
            } else {
                let raw = value.as_array().cloned().unwrap_or_default();
                let half = raw.len() / 2;
                (
                    hex_le(&Value::Array(raw[..half].to_vec())),
                    hex_le(&Value::Array(raw[half..].to_vec())),
                )
            };
            sum.packets += packets.ok_or_else(|| anyhow!("bad bpftool value {value}"))?;
            sum.bytes += bytes.ok_or_else(|| anyhow!("bad bpftool value {value}"))?;
        }
        sums.insert(key, sum);
    }
    Ok(sums)
}

/// `["0x01", "0x00", ...]` (little endian) as a number.
fn hex_le(bytes: &Value) -> Option<u64> {
    let bytes = bytes.as_array()?;
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(8) {
        let byte = u64::from_str_radix(byte.as_str()?.trim_start_matches("0x"), 16).ok()?;
        value |= byte << (8 * i);
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_le_reads_bpftool_bytes() {
        let v: Value = serde_json::from_str(r#"["0x02","0x01","0x00"]"#).unwrap();
        assert_eq!(hex_le(&v), Some(0x0102));
    }
}
