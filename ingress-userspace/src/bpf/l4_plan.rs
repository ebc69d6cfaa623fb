//! The L4 tier's maps as a diff, pure: what the maps hold ([`PresentL4`])
//! and what the configuration wants ([`DesiredService`]s) give the writes
//! that turn one into the other ([`L4Plan`]), which `l4_maps` applies.
//!
//! Indices connect the maps, and this planner owns them: a service table
//! (one per protocol, port and address family) keeps its index while it
//! exists, a backend (an endpoint address) keeps its slot while any service
//! uses it, so established flows keep theirs. New ones take indices that no
//! present entry uses, never one freed by the same plan, so no packet sees a
//! table or a slot change owner under it. A table changes by writing its
//! inactive half whole and then flipping the service entries to it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use ingress_common::{
    L4Backend, L4Config, L4Service, L4ServiceKey, addr_words, family, l4, words_octets,
};
use ingress_model::{MaglevError, MaglevTable};

/// How the L4 tier translates, as `--l4-nat` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NatMode {
    /// Destination to the backend, source to the edge (works whatever route
    /// the backends use back).
    Full,
    /// Destination only: backends see the client's address and must route
    /// their replies through the edge.
    Dnat,
}

/// Settings of the L4 tier that do not come from the objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4Settings {
    /// The NAT mode.
    pub nat: NatMode,
    /// Maglev slots per table half (a prime).
    pub table_size: u32,
    /// Source ports of full NAT, inclusive; replies to other ports are not ours.
    pub ports: (u16, u16),
}

/// The default full-NAT source ports: above Linux's default ephemeral range
/// (32768-60999), so they never collide with the edge's own connections.
pub const DEFAULT_NAT_PORTS: (u16, u16) = (61_000, 65_535);

impl L4Settings {
    /// The `L4_CONFIG` entry for `service_keys` keys.
    pub fn config(&self, service_keys: usize) -> L4Config {
        L4Config {
            services: service_keys as u32,
            nat_mode: match self.nat {
                NatMode::Full => l4::NAT_FULL,
                NatMode::Dnat => l4::NAT_DNAT,
            },
            port_min: self.ports.0,
            port_max: self.ports.1,
            reserved: 0,
        }
    }
}

/// One service as the maps should hold it: a protocol and port on some
/// addresses, balanced over some backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredService {
    /// `ingress_common::protocol::TCP` or `UDP`.
    pub protocol: u8,
    /// The port clients connect to.
    pub port: u16,
    /// The addresses it listens on.
    pub addrs: Vec<IpAddr>,
    /// The endpoints (sorted by the model); those of an address's family
    /// serve that address.
    pub backends: Vec<SocketAddr>,
}

/// What the L4 maps hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PresentL4 {
    /// `L4_SERVICES`.
    pub services: BTreeMap<L4ServiceKey, L4Service>,
    /// `L4_BACKENDS`, the slots ever used (active or with a generation).
    pub backends: BTreeMap<u32, L4Backend>,
    /// The active half of the table of each service index in `services`.
    pub tables: BTreeMap<u32, Vec<u32>>,
    /// `L4_PORT_FLAGS` (empty: not read).
    pub port_flags: Vec<u64>,
}

/// A whole table half to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableWrite {
    /// Service index.
    pub service: u32,
    /// The half (the inactive one).
    pub half: u32,
    /// Backend slot of each Maglev slot.
    pub slots: Vec<u32>,
}

/// The writes that make the maps hold the desired state, in the order they
/// must be applied (fields top to bottom).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct L4Plan {
    /// Counter slots of new services, to zero first.
    pub fresh_services: Vec<u32>,
    /// Counter slots of new backends, to zero first.
    pub fresh_backends: Vec<u32>,
    /// New backends, written before any table names them.
    pub backend_writes: Vec<(u32, L4Backend)>,
    /// Table halves, written before any service entry flips to them.
    pub table_writes: Vec<TableWrite>,
    /// Service entries, new or changed.
    pub service_upserts: Vec<(L4ServiceKey, L4Service)>,
    /// Service entries to delete.
    pub service_removals: Vec<L4ServiceKey>,
    /// Backends no table names any more: inactive, generation kept.
    pub backend_releases: Vec<(u32, L4Backend)>,
    /// Service indices no entry uses any more: their flows are forgotten
    /// (the connection table would keep them to their backends otherwise).
    pub freed_services: Vec<u32>,
    /// The whole `L4_PORT_FLAGS` bitmap wanted (`port_flags::WORDS` words).
    pub port_flags: Vec<u64>,
    /// `L4_CONFIG`, written last.
    pub config: L4Config,
}

impl L4Plan {
    /// True when nothing but the config (which is rewritten anyway) changes.
    pub fn is_noop(&self) -> bool {
        self.backend_writes.is_empty()
            && self.table_writes.is_empty()
            && self.service_upserts.is_empty()
            && self.service_removals.is_empty()
            && self.backend_releases.is_empty()
            && self.freed_services.is_empty()
    }
}

/// Why a desired state does not fit the maps.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum L4PlanError {
    /// More tables than `l4::MAX_SERVICES`.
    #[error(
        "{wanted} L4 service tables (protocol, port and address family) wanted, at most {} fit",
        l4::MAX_SERVICES
    )]
    TooManyServices {
        /// Tables wanted (with those still in use).
        wanted: usize,
    },
    /// More keys than `l4::MAX_SERVICE_KEYS`.
    #[error(
        "{wanted} L4 service addresses wanted, at most {} fit",
        l4::MAX_SERVICE_KEYS
    )]
    TooManyServiceKeys {
        /// Keys wanted.
        wanted: usize,
    },
    /// More backends than `l4::MAX_BACKENDS`.
    #[error("{wanted} L4 backends wanted, at most {} fit", l4::MAX_BACKENDS)]
    TooManyBackends {
        /// Backends wanted (with those still in use).
        wanted: usize,
    },
    /// The Maglev table cannot be built.
    #[error(transparent)]
    Maglev(#[from] MaglevError),
}

/// A table's identity: protocol, port, family.
type TableId = (u8, u16, u8);

fn family_of(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => family::IPV4,
        IpAddr::V6(_) => family::IPV6,
    }
}

fn ip_words(ip: &IpAddr) -> [u32; 4] {
    match ip.to_canonical() {
        IpAddr::V4(v4) => addr_words(&v4.octets()),
        IpAddr::V6(v6) => addr_words(&v6.octets()),
    }
}

/// The service key of `addr` for (protocol, port).
pub fn service_key(addr: IpAddr, port: u16, l4_protocol: u8) -> L4ServiceKey {
    let addr = addr.to_canonical();
    L4ServiceKey {
        addr: ip_words(&addr),
        port,
        family: family_of(&addr),
        protocol: l4_protocol,
    }
}

/// The address of L4 words of `family`.
pub fn words_ip(words: [u32; 4], addr_family: u8) -> IpAddr {
    let octets = words_octets(words);
    if addr_family == family::IPV6 {
        IpAddr::from(octets)
    } else {
        IpAddr::from([octets[0], octets[1], octets[2], octets[3]])
    }
}

/// The backend entry for `addr` with `generation`.
pub fn backend_entry(addr: SocketAddr, generation: u32) -> L4Backend {
    let ip = addr.ip().to_canonical();
    L4Backend {
        addr: ip_words(&ip),
        port: addr.port(),
        family: family_of(&ip),
        flags: l4::BACKEND_ACTIVE,
        generation,
    }
}

/// The address of a backend entry.
pub fn backend_addr(backend: &L4Backend) -> SocketAddr {
    SocketAddr::new(words_ip(backend.addr, backend.family), backend.port)
}

/// Diffs `desired` against `present`; see the module documentation.
pub fn plan_l4(
    present: &PresentL4,
    desired: &[DesiredService],
    settings: &L4Settings,
) -> Result<L4Plan, L4PlanError> {
    let mut plan = L4Plan::default();

    // Desired keys by table, and each table's backends.
    let mut keys: BTreeMap<L4ServiceKey, TableId> = BTreeMap::new();
    let mut tables: BTreeMap<TableId, Vec<SocketAddr>> = BTreeMap::new();
    for service in desired {
        for addr in &service.addrs {
            let key = service_key(*addr, service.port, service.protocol);
            let id = (service.protocol, service.port, key.family);
            keys.insert(key, id);
            let backends: Vec<SocketAddr> = service
                .backends
                .iter()
                .map(|b| SocketAddr::new(b.ip().to_canonical(), b.port()))
                .filter(|b| family_of(&b.ip()) == key.family)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            tables.insert(id, backends);
        }
    }
    if keys.len() > l4::MAX_SERVICE_KEYS as usize {
        return Err(L4PlanError::TooManyServiceKeys { wanted: keys.len() });
    }
    plan.config = settings.config(keys.len());
    plan.port_flags = port_flag_words(&tables);

    // Service indices: kept by table identity, new ones from indices no
    // present key uses.
    let mut present_index: BTreeMap<TableId, u32> = BTreeMap::new();
    for (key, value) in &present.services {
        present_index
            .entry((key.protocol, key.port, key.family))
            .or_insert(value.index);
    }
    let used_indices: BTreeSet<u32> = present.services.values().map(|v| v.index).collect();
    let mut free_indices = (0..l4::MAX_SERVICES).filter(|i| !used_indices.contains(i));
    let mut index_of: BTreeMap<TableId, u32> = BTreeMap::new();
    let mut new_tables = 0usize;
    for id in tables.keys() {
        let index = match present_index.get(id) {
            Some(&index) => index,
            None => {
                new_tables += 1;
                let index = free_indices.next().ok_or(L4PlanError::TooManyServices {
                    wanted: used_indices.len() + new_tables,
                })?;
                plan.fresh_services.push(index);
                index
            }
        };
        index_of.insert(*id, index);
    }

    // Backend slots: kept by address while active, new ones from slots
    // that are inactive now.
    let mut present_slot: BTreeMap<SocketAddr, u32> = BTreeMap::new();
    for (&slot, backend) in &present.backends {
        if backend.flags & l4::BACKEND_ACTIVE != 0 {
            present_slot.entry(backend_addr(backend)).or_insert(slot);
        }
    }
    let wanted_backends: BTreeSet<SocketAddr> = tables.values().flatten().copied().collect();
    let active_slots: BTreeSet<u32> = present_slot.values().copied().collect();
    let mut free_slots = (0..l4::MAX_BACKENDS).filter(|slot| !active_slots.contains(slot));
    let mut slot_of: BTreeMap<SocketAddr, u32> = BTreeMap::new();
    let mut new_backends = 0usize;
    for addr in &wanted_backends {
        let slot = match present_slot.get(addr) {
            Some(&slot) => slot,
            None => {
                new_backends += 1;
                let slot = free_slots.next().ok_or(L4PlanError::TooManyBackends {
                    wanted: active_slots.len() + new_backends,
                })?;
                let generation = present
                    .backends
                    .get(&slot)
                    .map_or(0, |b| b.generation)
                    .wrapping_add(1);
                plan.fresh_backends.push(slot);
                plan.backend_writes
                    .push((slot, backend_entry(*addr, generation)));
                slot
            }
        };
        slot_of.insert(*addr, slot);
    }

    // Tables and service entries.
    let mut value_of: BTreeMap<TableId, L4Service> = BTreeMap::new();
    for (id, backends) in &tables {
        let index = index_of[id];
        let slots: Vec<u32> = if backends.is_empty() {
            Vec::new()
        } else {
            MaglevTable::build(backends, settings.table_size)?
                .slots()
                .iter()
                .map(|&i| slot_of[&backends[i as usize]])
                .collect()
        };
        let current = present
            .services
            .values()
            .find(|value| value.index == index)
            .copied();
        let unchanged = current.is_some_and(|value| {
            value.table_size == settings.table_size
                && value.backends as usize == backends.len()
                && (backends.is_empty() || present.tables.get(&index) == Some(&slots))
        });
        let value = match current {
            Some(value) if unchanged => value,
            _ => {
                let half = current.map_or(0, |value| (value.active_half & 1) ^ 1);
                if !slots.is_empty() {
                    plan.table_writes.push(TableWrite {
                        service: index,
                        half,
                        slots,
                    });
                }
                L4Service {
                    index,
                    active_half: half,
                    table_size: settings.table_size,
                    backends: backends.len() as u32,
                }
            }
        };
        value_of.insert(*id, value);
    }
    for (key, id) in &keys {
        let value = value_of[id];
        if present.services.get(key) != Some(&value) {
            plan.service_upserts.push((*key, value));
        }
    }
    plan.service_removals = present
        .services
        .keys()
        .filter(|key| !keys.contains_key(key))
        .copied()
        .collect();
    let kept_indices: BTreeSet<u32> = index_of.values().copied().collect();
    plan.freed_services = used_indices
        .iter()
        .copied()
        .filter(|index| !kept_indices.contains(index))
        .collect();
    for (addr, &slot) in &present_slot {
        if !wanted_backends.contains(addr) {
            let mut released = present.backends[&slot];
            released.flags &= !l4::BACKEND_ACTIVE;
            plan.backend_releases.push((slot, released));
        }
    }
    Ok(plan)
}

/// The `L4_PORT_FLAGS` bitmap of `tables`: the service port and the
/// backends' ports of each, by protocol.
fn port_flag_words(tables: &BTreeMap<TableId, Vec<SocketAddr>>) -> Vec<u64> {
    use ingress_common::l4::port_flags;
    let mut words = vec![0u64; port_flags::WORDS as usize];
    let mut set = |port: u16, bit: u64| {
        let shift = (u32::from(port) % port_flags::PORTS_PER_WORD) * 4;
        words[(u32::from(port) / port_flags::PORTS_PER_WORD) as usize] |= bit << shift;
    };
    for (&(l4_protocol, port, _), backends) in tables {
        let (service_bit, backend_bit) = if l4_protocol == ingress_common::protocol::TCP {
            (port_flags::SERVICE_TCP, port_flags::BACKEND_TCP)
        } else {
            (port_flags::SERVICE_UDP, port_flags::BACKEND_UDP)
        };
        set(port, service_bit);
        for backend in backends {
            set(backend.port(), backend_bit);
        }
    }
    words
}

/// Applies `plan` to `present` as the maps would (for tests and for
/// checking a plan): the state the maps hold afterwards.
pub fn apply_to(present: &PresentL4, plan: &L4Plan) -> PresentL4 {
    let mut next = present.clone();
    for (slot, backend) in plan.backend_writes.iter().chain(&plan.backend_releases) {
        next.backends.insert(*slot, *backend);
    }
    let mut halves: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
    for write in &plan.table_writes {
        halves.insert((write.service, write.half), write.slots.clone());
    }
    for (key, value) in &plan.service_upserts {
        next.services.insert(*key, *value);
        if let Some(slots) = halves.get(&(value.index, value.active_half)) {
            next.tables.insert(value.index, slots.clone());
        }
    }
    for key in &plan.service_removals {
        next.services.remove(key);
    }
    let live: BTreeSet<u32> = next.services.values().map(|v| v.index).collect();
    next.tables.retain(|index, _| live.contains(index));
    next.port_flags = plan.port_flags.clone();
    next
}

#[cfg(test)]
mod tests {
    use ingress_common::protocol;

    use super::*;

    const SIZE: u32 = 251;

    fn settings() -> L4Settings {
        L4Settings {
            nat: NatMode::Full,
            table_size: SIZE,
            ports: DEFAULT_NAT_PORTS,
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn tcp(port: u16, addrs: &[&str], backends: &[&str]) -> DesiredService {
        DesiredService {
            protocol: protocol::TCP,
            port,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            backends: backends.iter().map(|b| addr(b)).collect(),
        }
    }

    /// Plans, checks the plan against the invariants, applies it.
    fn step(present: &PresentL4, desired: &[DesiredService]) -> (L4Plan, PresentL4) {
        let plan = plan_l4(present, desired, &settings()).unwrap();
        let next = apply_to(present, &plan);
        // Every table slot names an active backend of the table's family.
        for value in next.services.values() {
            let slots = next.tables.get(&value.index);
            if value.backends == 0 {
                continue;
            }
            let slots = slots.expect("a table for every service with backends");
            assert_eq!(slots.len(), SIZE as usize);
            for slot in slots {
                let backend = next.backends[slot];
                assert_ne!(backend.flags & l4::BACKEND_ACTIVE, 0);
            }
        }
        // No index freed by this plan is reused by it.
        let removed: BTreeSet<u32> = plan
            .service_removals
            .iter()
            .map(|k| present.services[k].index)
            .collect();
        for index in &plan.fresh_services {
            assert!(!removed.contains(index));
        }
        let released: BTreeSet<u32> = plan.backend_releases.iter().map(|(s, _)| *s).collect();
        for (slot, _) in &plan.backend_writes {
            assert!(!released.contains(slot));
        }
        // Writing the same desired state again changes nothing.
        let again = plan_l4(&next, desired, &settings()).unwrap();
        assert!(again.is_noop(), "{again:?}");
        (plan, next)
    }

    fn owners(state: &PresentL4, index: u32) -> BTreeMap<SocketAddr, usize> {
        let mut counts = BTreeMap::new();
        for slot in &state.tables[&index] {
            *counts
                .entry(backend_addr(&state.backends[slot]))
                .or_default() += 1;
        }
        counts
    }

    #[test]
    fn first_plan_allocates_from_zero_and_fills_half_zero() {
        let desired = [tcp(
            9000,
            &["198.18.0.1", "198.18.0.9"],
            &["198.19.0.1:80", "198.19.0.2:80", "198.19.0.3:80"],
        )];
        let (plan, state) = step(&PresentL4::default(), &desired);
        assert_eq!(plan.fresh_services, vec![0]);
        assert_eq!(plan.fresh_backends, vec![0, 1, 2]);
        assert_eq!(plan.table_writes.len(), 1);
        assert_eq!(plan.table_writes[0].half, 0);
        assert_eq!(plan.service_upserts.len(), 2);
        assert_eq!(plan.config.services, 2);
        assert_eq!(plan.config.port_min, 61_000);
        let value = plan.service_upserts[0].1;
        assert_eq!(
            value,
            L4Service {
                index: 0,
                active_half: 0,
                table_size: SIZE,
                backends: 3
            }
        );
        assert_eq!(state.backends[&1].generation, 1);
        use ingress_common::l4::port_flags;
        let bits = |port: u16| port_flags::of(plan.port_flags[usize::from(port / 16)], port);
        assert_eq!(bits(9000), port_flags::SERVICE_TCP);
        assert_eq!(bits(80), port_flags::BACKEND_TCP);
        assert_eq!(bits(9001), 0);
        let counts = owners(&state, 0);
        assert_eq!(counts.len(), 3);
        for count in counts.values() {
            assert!((80..=88).contains(count), "{counts:?}");
        }
    }

    #[test]
    fn removing_a_backend_flips_to_the_other_half_and_releases_its_slot() {
        let three = [tcp(
            9000,
            &["198.18.0.1"],
            &["198.19.0.1:80", "198.19.0.2:80", "198.19.0.3:80"],
        )];
        let (_, state) = step(&PresentL4::default(), &three);
        let two = [tcp(
            9000,
            &["198.18.0.1"],
            &["198.19.0.1:80", "198.19.0.3:80"],
        )];
        let (plan, after) = step(&state, &two);
        assert!(plan.fresh_services.is_empty());
        assert!(plan.backend_writes.is_empty());
        assert_eq!(plan.table_writes.len(), 1);
        assert_eq!(plan.table_writes[0].half, 1);
        assert_eq!(plan.service_upserts[0].1.active_half, 1);
        assert_eq!(plan.backend_releases.len(), 1);
        let (slot, released) = plan.backend_releases[0];
        assert_eq!(slot, 1);
        assert_eq!(released.flags & l4::BACKEND_ACTIVE, 0);
        assert_eq!(released.generation, 1);
        // The backends that stay keep their slots and their share grows.
        assert_eq!(after.backends[&0].flags, l4::BACKEND_ACTIVE);
        assert_eq!(owners(&after, 0).len(), 2);
        // Maglev: slots of the backends that stay mostly keep their owner.
        let before = &state.tables[&0];
        let now = &after.tables[&0];
        let kept = before
            .iter()
            .zip(now)
            .filter(|(old, new)| **old != 1 && old == new)
            .count();
        let stayed = before.iter().filter(|old| **old != 1).count();
        assert!(kept * 100 >= stayed * 95, "{kept} of {stayed} kept");

        // Adding a backend takes the released slot with a new generation
        // (a flow pinned to the old one must not follow it).
        let back = [tcp(
            9000,
            &["198.18.0.1"],
            &["198.19.0.1:80", "198.19.0.3:80", "198.19.0.7:80"],
        )];
        let (plan, _) = step(&after, &back);
        assert_eq!(plan.backend_writes.len(), 1);
        assert_eq!(plan.backend_writes[0].0, 1);
        assert_eq!(plan.backend_writes[0].1.generation, 2);
        assert_eq!(plan.fresh_backends, vec![1]);
        assert_eq!(plan.table_writes[0].half, 0);
    }

    #[test]
    fn removed_services_free_their_index_for_later_plans_only() {
        let a = tcp(9000, &["198.18.0.1"], &["198.19.0.1:80"]);
        let b = tcp(9001, &["198.18.0.1"], &["198.19.0.2:80"]);
        let (_, state) = step(&PresentL4::default(), std::slice::from_ref(&a));
        // a goes, b comes in the same plan: b must not take a's index 0.
        let (plan, state) = step(&state, std::slice::from_ref(&b));
        assert_eq!(plan.fresh_services, vec![1]);
        assert_eq!(plan.freed_services, vec![0]);
        assert_eq!(plan.service_removals.len(), 1);
        assert_eq!(plan.backend_releases.len(), 1);
        assert_eq!(plan.fresh_backends, vec![1]);
        // Later, index 0 is free again.
        let c = tcp(9002, &["198.18.0.1"], &["198.19.0.2:80"]);
        let (plan, _) = step(&state, &[b, c]);
        assert_eq!(plan.fresh_services, vec![0]);
        assert!(plan.backend_writes.is_empty(), "the backend is shared");
    }

    #[test]
    fn families_get_their_own_tables_and_backends() {
        let desired = [tcp(
            53,
            &["198.18.0.1", "2001:db8::1"],
            &["198.19.0.1:53", "[2001:db8:1::1]:53"],
        )];
        let (plan, state) = step(&PresentL4::default(), &desired);
        assert_eq!(plan.fresh_services.len(), 2);
        for value in state.services.values() {
            assert_eq!(value.backends, 1);
            let only: Vec<_> = owners(&state, value.index).into_keys().collect();
            assert_eq!(only.len(), 1);
        }
        // A family without backends still listens (and passes to the stack).
        let v4_only = [tcp(53, &["198.18.0.1", "2001:db8::1"], &["198.19.0.1:53"])];
        let (plan, state) = step(&state, &v4_only);
        assert!(plan.table_writes.is_empty());
        let v6 = state
            .services
            .iter()
            .find(|(k, _)| k.family == family::IPV6)
            .unwrap()
            .1;
        assert_eq!(v6.backends, 0);
    }

    #[test]
    fn no_backends_means_no_table_and_a_table_size_change_rewrites() {
        let (plan, state) = step(&PresentL4::default(), &[tcp(80, &["198.18.0.1"], &[])]);
        assert!(plan.table_writes.is_empty());
        assert_eq!(plan.service_upserts[0].1.backends, 0);
        let desired = [tcp(80, &["198.18.0.1"], &["198.19.0.1:80"])];
        let (_, state) = step(&state, &desired);
        let bigger = L4Settings {
            table_size: 509,
            ..settings()
        };
        let plan = plan_l4(&state, &desired, &bigger).unwrap();
        assert_eq!(plan.table_writes[0].slots.len(), 509);
        assert_eq!(plan.service_upserts[0].1.table_size, 509);
    }

    #[test]
    fn limits_are_errors() {
        let many: Vec<DesiredService> = (0..=l4::MAX_SERVICES)
            .map(|i| tcp(1000 + i as u16, &["198.18.0.1"], &[]))
            .collect();
        assert!(matches!(
            plan_l4(&PresentL4::default(), &many, &settings()),
            Err(L4PlanError::TooManyServices { .. })
        ));
        let bad_size = L4Settings {
            table_size: 100,
            ..settings()
        };
        assert_eq!(
            plan_l4(
                &PresentL4::default(),
                &[tcp(80, &["198.18.0.1"], &["198.19.0.1:80"])],
                &bad_size
            ),
            Err(L4PlanError::Maglev(MaglevError::NotPrime(100)))
        );
    }

    #[test]
    fn keys_and_entries_round_trip() {
        let key = service_key("198.18.0.1".parse().unwrap(), 80, protocol::UDP);
        assert_eq!(key.family, family::IPV4);
        assert_eq!(
            words_ip(key.addr, key.family),
            "198.18.0.1".parse::<IpAddr>().unwrap()
        );
        let mapped: IpAddr = "::ffff:198.18.0.1".parse().unwrap();
        assert_eq!(service_key(mapped, 80, protocol::UDP), key);
        let entry = backend_entry(addr("[2001:db8::5]:8080"), 3);
        assert_eq!(backend_addr(&entry), addr("[2001:db8::5]:8080"));
    }
}
