//! Source ranges in the kernel: the LPM tries `SOURCE_RANGES4` and
//! `SOURCE_RANGES6`, keyed by (listener id, source prefix), and the
//! per-listener bits saying which tries a listener's packets are looked up
//! in (see `ingress_common::source_range`). The ranges come from the
//! controller ConfigMap and the Ingresses
//! ([`ingress_model::controller_config::ControllerConfig::kernel_source_ranges`]);
//! [`plan_entries`] turns them into trie entries (pure), [`SourceRangeMaps`]
//! diff-syncs the maps, and [`SourceRangeSync`] holds the latest ranges
//! until the maps exist (the program may still be loading when the first
//! configuration is applied).

use std::{collections::BTreeMap, net::IpAddr, sync::Mutex};

use aya::maps::{
    Array, MapData, PerCpuArray, PerCpuValues,
    lpm_trie::{Key, LpmTrie},
};
use ingress_common::{SourcePrefix4, SourcePrefix6, TrafficCounters, map_names, source_range};
use ingress_model::access::{IpRange, KernelSourceRanges};
use tracing::{info, warn};

use super::edge::sum_per_cpu;

/// The entries the maps must hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TrieEntries {
    /// (prefix length, data) -> rule, for `SOURCE_RANGES4`.
    pub v4: BTreeMap<(u32, SourcePrefix4), u32>,
    /// (prefix length, data) -> rule, for `SOURCE_RANGES6`.
    pub v6: BTreeMap<(u32, SourcePrefix6), u32>,
    /// Listener id -> `source_range::CHECK_*` bits (listeners without
    /// entries are absent: 0).
    pub checks: BTreeMap<u32, u32>,
}

impl TrieEntries {
    fn put(&mut self, listener: u32, range: &IpRange, rule: u32) {
        let id = listener.to_be_bytes();
        let prefix_len = source_range::LISTENER_BITS + u32::from(range.prefix());
        match range.addr() {
            IpAddr::V4(addr) => {
                let data = SourcePrefix4 {
                    listener: id,
                    addr: addr.octets(),
                };
                self.v4.insert((prefix_len, data), rule);
                *self.checks.entry(listener).or_default() |= source_range::CHECK_IPV4;
            }
            IpAddr::V6(addr) => {
                let data = SourcePrefix6 {
                    listener: id,
                    addr: addr.octets(),
                };
                self.v6.insert((prefix_len, data), rule);
                *self.checks.entry(listener).or_default() |= source_range::CHECK_IPV6;
            }
        }
    }
}

/// The trie entries that make every listener of `listeners` drop what
/// `ranges` denies. The longest match decides in the kernel, so each entry
/// carries the answer for the sources whose longest match it is: a deny
/// range, and an allowed range inside a deny range, deny; the other allowed
/// ranges allow; with an allow list, the bare listener id (both families)
/// denies whatever no longer entry matches.
pub fn plan_entries(listeners: &[u32], ranges: &KernelSourceRanges) -> TrieEntries {
    let mut entries = TrieEntries::default();
    for &listener in listeners {
        if !ranges.allow.is_empty() {
            for everything in ["0.0.0.0/0", "::/0"] {
                let range = IpRange::parse(everything).expect("a valid range");
                entries.put(listener, &range, source_range::DENY);
            }
            for allowed in &ranges.allow {
                let denied = ranges.deny.iter().any(|deny| deny.covers(allowed));
                let rule = if denied {
                    source_range::DENY
                } else {
                    source_range::ALLOW
                };
                entries.put(listener, allowed, rule);
            }
        }
        for denied in &ranges.deny {
            entries.put(listener, denied, source_range::DENY);
        }
    }
    entries
}

/// A map operation on the source-range maps failed.
#[derive(Debug, thiserror::Error)]
#[error("map {map}: {source}")]
pub struct SourceRangeMapError {
    /// The map.
    pub map: &'static str,
    /// The error.
    #[source]
    pub source: aya::maps::MapError,
}

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> SourceRangeMapError {
    move |source| SourceRangeMapError { map, source }
}

/// The source-range maps, taken out of the loaded object.
pub struct SourceRangeMaps {
    v4: LpmTrie<MapData, SourcePrefix4, u32>,
    v6: LpmTrie<MapData, SourcePrefix6, u32>,
    checks: Array<MapData, u32>,
    denied: PerCpuArray<MapData, TrafficCounters>,
}

/// What a sync changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncCounts {
    /// Entries written (new or changed).
    pub written: usize,
    /// Entries removed.
    pub removed: usize,
}

impl std::fmt::Debug for SourceRangeMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceRangeMaps").finish_non_exhaustive()
    }
}

impl SourceRangeMaps {
    /// Takes the maps with `take(name)` (as `aya::Ebpf::take_map`).
    pub fn from_maps(
        mut take: impl FnMut(&str) -> Option<aya::maps::Map>,
    ) -> Result<Self, SourceRangeMapError> {
        let mut get = |name: &'static str| {
            take(name).ok_or(SourceRangeMapError {
                map: name,
                source: aya::maps::MapError::InvalidName {
                    name: name.to_owned(),
                },
            })
        };
        Ok(Self {
            v4: LpmTrie::try_from(get(map_names::SOURCE_RANGES4)?)
                .map_err(map_error(map_names::SOURCE_RANGES4))?,
            v6: LpmTrie::try_from(get(map_names::SOURCE_RANGES6)?)
                .map_err(map_error(map_names::SOURCE_RANGES6))?,
            checks: Array::try_from(get(map_names::LISTENER_SOURCE_CHECKS)?)
                .map_err(map_error(map_names::LISTENER_SOURCE_CHECKS))?,
            denied: PerCpuArray::try_from(get(map_names::LISTENER_DENIED_STATS)?)
                .map_err(map_error(map_names::LISTENER_DENIED_STATS))?,
        })
    }

    /// What the maps hold (a restart with kept pins finds a previous
    /// daemon's entries).
    pub fn present(&self) -> Result<TrieEntries, SourceRangeMapError> {
        let mut present = TrieEntries::default();
        for entry in self.v4.iter() {
            let (key, rule) = entry.map_err(map_error(map_names::SOURCE_RANGES4))?;
            present.v4.insert((key.prefix_len(), key.data()), rule);
        }
        for entry in self.v6.iter() {
            let (key, rule) = entry.map_err(map_error(map_names::SOURCE_RANGES6))?;
            present.v6.insert((key.prefix_len(), key.data()), rule);
        }
        for (id, checks) in self.checks.iter().enumerate() {
            let checks = checks.map_err(map_error(map_names::LISTENER_SOURCE_CHECKS))?;
            if checks != 0 {
                present.checks.insert(id as u32, checks);
            }
        }
        Ok(present)
    }

    /// Makes the maps hold exactly `desired`. A listener's check bits are
    /// set after its entries are written and cleared before they are
    /// removed; entries are written deny first, and removed last, so a
    /// change lets through at most what the old and the new lists both do
    /// while it is under way (entries go in one at a time).
    pub fn sync(&mut self, desired: &TrieEntries) -> Result<SyncCounts, SourceRangeMapError> {
        let present = self.present()?;
        let mut counts = SyncCounts::default();
        // Listeners whose checks go away: off first.
        for (&id, &bits) in &present.checks {
            let wanted = desired.checks.get(&id).copied().unwrap_or(0);
            if bits & !wanted != 0 {
                self.checks
                    .set(id, bits & wanted, 0)
                    .map_err(map_error(map_names::LISTENER_SOURCE_CHECKS))?;
            }
        }
        // Deny entries first, then the rest, then removals.
        let mut order: Vec<(&(u32, SourcePrefix4), &u32)> = desired.v4.iter().collect();
        order.sort_by_key(|(_, rule)| **rule != source_range::DENY);
        for (key, rule) in order {
            if present.v4.get(key) != Some(rule) {
                self.v4
                    .insert(&Key::new(key.0, key.1), rule, 0)
                    .map_err(map_error(map_names::SOURCE_RANGES4))?;
                counts.written += 1;
            }
        }
        let mut order: Vec<(&(u32, SourcePrefix6), &u32)> = desired.v6.iter().collect();
        order.sort_by_key(|(_, rule)| **rule != source_range::DENY);
        for (key, rule) in order {
            if present.v6.get(key) != Some(rule) {
                self.v6
                    .insert(&Key::new(key.0, key.1), rule, 0)
                    .map_err(map_error(map_names::SOURCE_RANGES6))?;
                counts.written += 1;
            }
        }
        for key in present.v4.keys().filter(|k| !desired.v4.contains_key(k)) {
            self.v4
                .remove(&Key::new(key.0, key.1))
                .map_err(map_error(map_names::SOURCE_RANGES4))?;
            counts.removed += 1;
        }
        for key in present.v6.keys().filter(|k| !desired.v6.contains_key(k)) {
            self.v6
                .remove(&Key::new(key.0, key.1))
                .map_err(map_error(map_names::SOURCE_RANGES6))?;
            counts.removed += 1;
        }
        for (&id, &bits) in &desired.checks {
            let before = present.checks.get(&id).copied().unwrap_or(0);
            if before & bits != bits {
                self.checks
                    .set(id, bits, 0)
                    .map_err(map_error(map_names::LISTENER_SOURCE_CHECKS))?;
            }
        }
        Ok(counts)
    }

    /// Zeroes the denied counters of listener `id` (a new listener's slot).
    pub fn zero_denied(&mut self, id: u32) -> Result<(), SourceRangeMapError> {
        let cpus = aya::util::nr_cpus().unwrap_or(1);
        let zero = PerCpuValues::try_from(vec![TrafficCounters::default(); cpus])
            .expect("at least one CPU");
        self.denied
            .set(id, zero, 0)
            .map_err(map_error(map_names::LISTENER_DENIED_STATS))
    }

    /// The denied counters by listener id, summed over CPUs.
    pub fn denied(&self) -> Result<Vec<TrafficCounters>, SourceRangeMapError> {
        sum_per_cpu(&self.denied).map_err(map_error(map_names::LISTENER_DENIED_STATS))
    }
}

/// Keeps the kernel's source ranges at what the last applied configuration
/// asks. The ranges may arrive before the maps (the program loads while the
/// proxy already serves): they are written when the maps come.
#[derive(Debug, Default)]
pub struct SourceRangeSync {
    state: Mutex<SyncState>,
}

#[derive(Debug, Default)]
struct SyncState {
    ranges: KernelSourceRanges,
    kernel: Option<(SourceRangeMaps, Vec<u32>)>,
}

impl SourceRangeSync {
    /// A sync without maps yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands over the maps and the ids of the listeners that pass to the
    /// proxy (the ones the ranges apply to), and writes the ranges.
    pub fn attach(
        &self,
        maps: SourceRangeMaps,
        proxy_listeners: Vec<u32>,
    ) -> Result<SyncCounts, SourceRangeMapError> {
        let mut state = self.state.lock().expect("source range lock");
        let (mut maps, listeners) = (maps, proxy_listeners);
        let counts = maps.sync(&plan_entries(&listeners, &state.ranges))?;
        state.kernel = Some((maps, listeners));
        Ok(counts)
    }

    /// Makes the kernel drop what `ranges` asks (once the maps are there).
    /// Logs what changed, and why a global list stays in the proxy.
    pub fn set(&self, ranges: KernelSourceRanges) {
        let mut state = self.state.lock().expect("source range lock");
        if state.ranges == ranges {
            return;
        }
        for why in ranges
            .proxy_only
            .iter()
            .filter(|why| !state.ranges.proxy_only.contains(why))
        {
            info!("{why}: the kernel cannot drop it for every host");
        }
        let deny: Vec<String> = ranges.deny.iter().map(ToString::to_string).collect();
        let allow: Vec<String> = ranges.allow.iter().map(ToString::to_string).collect();
        info!(?deny, ?allow, "source ranges dropped in XDP");
        state.ranges = ranges;
        let SyncState { ranges, kernel } = &mut *state;
        if let Some((maps, listeners)) = kernel
            && let Err(error) = maps.sync(&plan_entries(listeners, ranges))
        {
            warn!(%error, "writing the source ranges into the XDP maps failed: the proxy still refuses them (403)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(deny: &[&str], allow: &[&str]) -> KernelSourceRanges {
        let parse = |list: &[&str]| list.iter().map(|r| IpRange::parse(r).unwrap()).collect();
        KernelSourceRanges {
            deny: parse(deny),
            allow: parse(allow),
            proxy_only: Vec::new(),
        }
    }

    /// The rule the kernel's longest-prefix match gives `ip` on `listener`.
    fn lookup(entries: &TrieEntries, listener: u32, ip: &str) -> Option<u32> {
        let ip: IpAddr = ip.parse().unwrap();
        let id = listener.to_be_bytes();
        let bits_match = |data: &[u8], addr: &[u8], bits: u32| {
            let full = [&id[..], addr].concat();
            (0..bits as usize).all(|bit| {
                let mask = 0x80u8 >> (bit % 8);
                data[bit / 8] & mask == full[bit / 8] & mask
            })
        };
        match ip {
            IpAddr::V4(v4) => entries
                .v4
                .iter()
                .filter(|((len, data), _)| {
                    bits_match(
                        &[&data.listener[..], &data.addr[..]].concat(),
                        &v4.octets(),
                        *len,
                    )
                })
                .max_by_key(|((len, _), _)| *len)
                .map(|(_, rule)| *rule),
            IpAddr::V6(v6) => entries
                .v6
                .iter()
                .filter(|((len, data), _)| {
                    bits_match(
                        &[&data.listener[..], &data.addr[..]].concat(),
                        &v6.octets(),
                        *len,
                    )
                })
                .max_by_key(|((len, _), _)| *len)
                .map(|(_, rule)| *rule),
        }
    }

    fn denied(entries: &TrieEntries, listener: u32, ip: &str) -> bool {
        lookup(entries, listener, ip) == Some(source_range::DENY)
    }

    #[test]
    fn deny_ranges_per_listener() {
        let entries = plan_entries(&[0, 1], &ranges(&["198.18.0.0/24", "2001:db8::/48"], &[]));
        assert_eq!(entries.v4.len(), 2);
        assert_eq!(entries.v6.len(), 2);
        assert_eq!(
            entries.checks,
            BTreeMap::from([(0, 3), (1, 3)]),
            "both families checked on both listeners"
        );
        for listener in [0, 1] {
            assert!(denied(&entries, listener, "198.18.0.7"));
            assert!(!denied(&entries, listener, "198.18.1.7"));
            assert!(denied(&entries, listener, "2001:db8::1"));
            assert!(!denied(&entries, listener, "2001:db8:1::1"));
        }
        assert!(!denied(&entries, 2, "198.18.0.7"), "another listener");
        let v4_only = plan_entries(&[4], &ranges(&["198.18.0.0/24"], &[]));
        assert_eq!(
            v4_only.checks,
            BTreeMap::from([(4, source_range::CHECK_IPV4)])
        );
    }

    #[test]
    fn allow_lists_deny_the_rest_and_deny_wins_inside_them() {
        let entries = plan_entries(
            &[3],
            &ranges(
                &["198.18.0.66", "198.18.0.0/16"],
                &["198.18.0.0/24", "198.19.0.0/16", "2001:db8::/32"],
            ),
        );
        assert!(denied(&entries, 3, "198.18.0.66"), "in the deny list");
        assert!(
            denied(&entries, 3, "198.18.0.5"),
            "allowed, but inside a shorter deny range"
        );
        assert!(!denied(&entries, 3, "198.19.3.3"), "allowed");
        assert!(denied(&entries, 3, "203.0.113.1"), "outside the allow list");
        assert!(!denied(&entries, 3, "2001:db8::9"), "allowed IPv6");
        assert!(
            denied(&entries, 3, "2001:db9::9"),
            "IPv6 outside the allow list"
        );
        // An IPv4-only allow list denies IPv6 clients too (nginx's `deny all`).
        let v4_only = plan_entries(&[3], &ranges(&[], &["198.18.0.0/15"]));
        assert!(denied(&v4_only, 3, "2001:db8::1"));
        assert!(!denied(&v4_only, 3, "198.19.0.1"));
        // 0.0.0.0/0 allowed: all of IPv4, none of IPv6.
        let all_v4 = plan_entries(&[3], &ranges(&[], &["0.0.0.0/0"]));
        assert!(!denied(&all_v4, 3, "203.0.113.1"));
        assert!(denied(&all_v4, 3, "2001:db8::1"));
    }

    #[test]
    fn nothing_asked_is_nothing_written() {
        assert_eq!(
            plan_entries(&[0, 1], &ranges(&[], &[])),
            TrieEntries::default()
        );
        assert_eq!(
            plan_entries(&[], &ranges(&["198.18.0.0/15"], &[])),
            TrieEntries::default()
        );
    }
}
