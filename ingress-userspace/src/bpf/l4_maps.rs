//! The L4 maps of the XDP program, held by the daemon (taken from the loaded
//! object, or opened from their pins): read what they hold
//! ([`PresentL4`]), apply an [`L4Plan`], give each CPU its share of the
//! full-NAT source ports, read the counters and the connection table.
//!
//! The Maglev array is memory-mapped (`BPF_F_MMAPABLE`): a table half of
//! 65537 slots is one copy, not 65537 system calls.

use std::{
    collections::BTreeMap,
    io,
    mem::size_of,
    os::fd::{AsFd, AsRawFd},
    path::Path,
    sync::atomic::{Ordering, fence},
};

use aya::{
    Pod,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use ingress_common::{
    L4Backend, L4CachedFlow4, L4CachedFlow6, L4Config, L4Counters, L4Flow, L4FlowKey, L4FlowKey4,
    L4Nat4, L4PortCursor, L4ReverseNat, L4Service, L4ServiceKey, MaglevLanes, family, l4,
    maglev_slot, map_names,
};

use super::l4_plan::{L4Plan, PresentL4};

/// Reading or writing the L4 maps failed.
#[derive(Debug, thiserror::Error)]
pub enum L4MapsError {
    /// A map is missing from the object or the pin directory.
    #[error("map {0} is missing: rebuild with `cargo xtask build-ebpf`, or is the daemon running?")]
    Missing(&'static str),
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// The map.
        map: &'static str,
        /// The error.
        #[source]
        source: MapError,
    },
    /// Mapping an array into memory failed.
    #[error("mapping {0} into memory: {1}")]
    Mmap(&'static str, #[source] io::Error),
    /// A map has another shape than this build needs.
    #[error("{map} has {entries} entries of another size than this build needs")]
    Shape {
        /// The map.
        map: &'static str,
        /// Its max_entries.
        entries: u32,
    },
}

fn map_error(map: &'static str) -> impl Fn(MapError) -> L4MapsError {
    move |source| L4MapsError::Map { map, source }
}

/// A `BPF_F_MMAPABLE` array mapped into memory as a sequence of `T` (the
/// elements' bytes, which have no padding: `T` divides the element size).
#[derive(Debug)]
struct Mapped<T> {
    _map: MapData,
    ptr: *mut T,
    len: usize,
    bytes: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; access
// goes through `&self`/`&mut self`.
unsafe impl<T: Send> Send for Mapped<T> {}

impl<T: Copy> Mapped<T> {
    fn new(map: MapData, name: &'static str, value_size: usize) -> Result<Self, L4MapsError> {
        let info = map.info().map_err(map_error(name))?;
        if info.value_size() as usize != value_size || !value_size.is_multiple_of(size_of::<T>()) {
            return Err(L4MapsError::Shape {
                map: name,
                entries: info.max_entries(),
            });
        }
        let len = info.max_entries() as usize * (value_size / size_of::<T>());
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let bytes = (len * size_of::<T>()).div_ceil(page) * page;
        // SAFETY: a shared mapping of a BPF_F_MMAPABLE array's fd, sized as
        // the kernel sizes it; unmapped on drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(L4MapsError::Mmap(name, io::Error::last_os_error()));
        }
        Ok(Self {
            _map: map,
            ptr: ptr.cast(),
            len,
            bytes,
        })
    }

    fn read(&self, start: usize, end: usize) -> Option<Vec<T>> {
        // SAFETY: bounds checked; the program only reads, and every `T`
        // here is a naturally aligned integer, written whole.
        (start <= end && end <= self.len).then(|| {
            unsafe { std::slice::from_raw_parts(self.ptr.add(start), end - start) }.to_vec()
        })
    }

    fn write(&mut self, start: usize, values: &[T]) -> bool {
        let end = start + values.len();
        if end > self.len {
            return false;
        }
        // SAFETY: bounds checked; see the callers for why nobody reads a
        // value half-written.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), values.len()) }
            .copy_from_slice(values);
        true
    }
}

impl<T> Drop for Mapped<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.bytes) };
    }
}

/// The Maglev array: one sequence of `u16` backend indices
/// (`ingress_common::MaglevLanes`, four to an element).
#[derive(Debug)]
struct MaglevMmap(Mapped<u16>);

impl MaglevMmap {
    fn new(map: MapData) -> Result<Self, L4MapsError> {
        Ok(Self(Mapped::new(
            map,
            map_names::L4_MAGLEV,
            size_of::<MaglevLanes>(),
        )?))
    }

    fn slots(&self) -> usize {
        self.0.len
    }

    fn range(&self, service: u32, half: u32, table_size: u32) -> Option<(usize, usize)> {
        let start = maglev_slot(service, half, table_size, 0) as usize;
        let end = start + table_size as usize;
        (service < l4::MAX_SERVICES && half < 2 && end <= self.slots()).then_some((start, end))
    }

    fn half(&self, service: u32, half: u32, table_size: u32) -> Option<Vec<u32>> {
        let (start, end) = self.range(service, half, table_size)?;
        Some(
            self.0
                .read(start, end)?
                .into_iter()
                .map(u32::from)
                .collect(),
        )
    }

    fn write_half(&mut self, service: u32, half: u32, slots: &[u32]) -> bool {
        let Some((start, _)) = self.range(service, half, slots.len() as u32) else {
            return false;
        };
        if slots.iter().any(|&slot| slot >= l4::MAX_BACKENDS) {
            return false;
        }
        let values: Vec<u16> = slots.iter().map(|&slot| slot as u16).collect();
        // This half is inactive: no lookup reads it (the planner flips
        // entries to it only afterwards).
        self.0.write(start, &values)
    }
}

/// The L4 maps.
pub struct L4Maps {
    config: Array<MapData, L4Config>,
    services: HashMap<MapData, L4ServiceKey, L4Service>,
    maglev: MaglevMmap,
    port_flags: Mapped<u64>,
    backends: Array<MapData, L4Backend>,
    flows: HashMap<MapData, L4FlowKey, L4Flow>,
    reverse: HashMap<MapData, L4FlowKey, L4ReverseNat>,
    flows4: HashMap<MapData, L4FlowKey4, L4Nat4>,
    reverse4: HashMap<MapData, L4FlowKey4, L4Nat4>,
    flow_cache4: PerCpuArray<MapData, L4CachedFlow4>,
    flow_cache6: PerCpuArray<MapData, L4CachedFlow6>,
    ports: PerCpuArray<MapData, L4PortCursor>,
    service_stats: PerCpuArray<MapData, L4Counters>,
    backend_stats: PerCpuArray<MapData, L4Counters>,
    table_size: u32,
}

impl std::fmt::Debug for L4Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L4Maps")
            .field("table_size", &self.table_size)
            .finish_non_exhaustive()
    }
}

impl L4Maps {
    /// Takes the maps by name through `take` (from a loaded object, or
    /// opened from pins).
    pub fn from_maps(
        mut take: impl FnMut(&'static str) -> Option<Map>,
    ) -> Result<Self, L4MapsError> {
        let mut get = |name: &'static str| take(name).ok_or(L4MapsError::Missing(name));
        let config =
            Array::try_from(get(map_names::L4_CONFIG)?).map_err(map_error(map_names::L4_CONFIG))?;
        let services = HashMap::try_from(get(map_names::L4_SERVICES)?)
            .map_err(map_error(map_names::L4_SERVICES))?;
        let maglev_map = match get(map_names::L4_MAGLEV)? {
            Map::Array(data) => data,
            _ => {
                return Err(L4MapsError::Map {
                    map: map_names::L4_MAGLEV,
                    source: MapError::InvalidMapType { map_type: 0 },
                });
            }
        };
        let maglev = MaglevMmap::new(maglev_map)?;
        let per_table = 2 * l4::MAX_SERVICES as usize;
        if !maglev.slots().is_multiple_of(per_table) || maglev.slots() == 0 {
            return Err(L4MapsError::Shape {
                map: map_names::L4_MAGLEV,
                entries: (maglev.slots() / 4) as u32,
            });
        }
        let table_size = (maglev.slots() / per_table) as u32;
        let port_flags = match get(map_names::L4_PORT_FLAGS)? {
            Map::Array(data) => Mapped::new(data, map_names::L4_PORT_FLAGS, 8)?,
            _ => {
                return Err(L4MapsError::Map {
                    map: map_names::L4_PORT_FLAGS,
                    source: MapError::InvalidMapType { map_type: 0 },
                });
            }
        };
        let backends = Array::try_from(get(map_names::L4_BACKENDS)?)
            .map_err(map_error(map_names::L4_BACKENDS))?;
        let flows =
            HashMap::try_from(get(map_names::L4_FLOWS)?).map_err(map_error(map_names::L4_FLOWS))?;
        let reverse = HashMap::try_from(get(map_names::L4_REVERSE)?)
            .map_err(map_error(map_names::L4_REVERSE))?;
        let flows4 = HashMap::try_from(get(map_names::L4_FLOWS4)?)
            .map_err(map_error(map_names::L4_FLOWS4))?;
        let reverse4 = HashMap::try_from(get(map_names::L4_REVERSE4)?)
            .map_err(map_error(map_names::L4_REVERSE4))?;
        let flow_cache4 = PerCpuArray::try_from(get(map_names::L4_FLOW_CACHE4)?)
            .map_err(map_error(map_names::L4_FLOW_CACHE4))?;
        let flow_cache6 = PerCpuArray::try_from(get(map_names::L4_FLOW_CACHE6)?)
            .map_err(map_error(map_names::L4_FLOW_CACHE6))?;
        let ports = PerCpuArray::try_from(get(map_names::L4_PORTS)?)
            .map_err(map_error(map_names::L4_PORTS))?;
        let service_stats = PerCpuArray::try_from(get(map_names::L4_SERVICE_STATS)?)
            .map_err(map_error(map_names::L4_SERVICE_STATS))?;
        let backend_stats = PerCpuArray::try_from(get(map_names::L4_BACKEND_STATS)?)
            .map_err(map_error(map_names::L4_BACKEND_STATS))?;
        Ok(Self {
            config,
            services,
            maglev,
            port_flags,
            backends,
            flows,
            reverse,
            flows4,
            reverse4,
            flow_cache4,
            flow_cache6,
            ports,
            service_stats,
            backend_stats,
            table_size,
        })
    }

    /// Opens the pins of a running (or stopped, pins kept) daemon in `dir`.
    pub fn from_pins(dir: &Path) -> Result<Self, L4MapsError> {
        Self::from_maps(|name| {
            let file = map_names::L4_PINNED
                .iter()
                .find(|(map, _)| *map == name)
                .map(|(_, file)| *file)?;
            let data = MapData::from_pin(dir.join(file)).ok()?;
            Map::from_map_data(data).ok()
        })
    }

    /// The Maglev table size the array was sized for.
    pub fn table_size(&self) -> u32 {
        self.table_size
    }

    /// What the maps hold.
    pub fn present(&self) -> Result<PresentL4, L4MapsError> {
        let services: BTreeMap<L4ServiceKey, L4Service> = self
            .services
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_error(map_names::L4_SERVICES))?;
        let mut backends = BTreeMap::new();
        for (slot, backend) in self.backends.iter().enumerate() {
            let backend = backend.map_err(map_error(map_names::L4_BACKENDS))?;
            if backend.flags != 0 || backend.generation != 0 {
                backends.insert(slot as u32, backend);
            }
        }
        let mut tables = BTreeMap::new();
        for value in services.values() {
            if value.backends == 0 || value.table_size != self.table_size {
                continue;
            }
            if let Some(slots) =
                self.maglev
                    .half(value.index, value.active_half & 1, value.table_size)
            {
                tables.insert(value.index, slots);
            }
        }
        Ok(PresentL4 {
            services,
            backends,
            tables,
            port_flags: self
                .port_flags
                .read(0, self.port_flags.len)
                .unwrap_or_default(),
        })
    }

    /// Applies `plan` in its order: counters, backends, table halves, the
    /// service entries that flip to them, removals, releases, config.
    pub fn apply(&mut self, plan: &L4Plan) -> Result<(), L4MapsError> {
        let zero = || {
            PerCpuValues::try_from(vec![L4Counters::default(); possible_cpus()])
                .expect("at least one CPU")
        };
        for &slot in &plan.fresh_services {
            self.service_stats
                .set(slot, zero(), 0)
                .map_err(map_error(map_names::L4_SERVICE_STATS))?;
        }
        for &slot in &plan.fresh_backends {
            self.backend_stats
                .set(slot, zero(), 0)
                .map_err(map_error(map_names::L4_BACKEND_STATS))?;
        }
        for (slot, backend) in &plan.backend_writes {
            self.backends
                .set(*slot, backend, 0)
                .map_err(map_error(map_names::L4_BACKENDS))?;
        }
        for write in &plan.table_writes {
            if !self
                .maglev
                .write_half(write.service, write.half, &write.slots)
            {
                return Err(L4MapsError::Shape {
                    map: map_names::L4_MAGLEV,
                    entries: (self.maglev.slots() / 4) as u32,
                });
            }
        }
        // New ports open before the entries that use them (a port flag only
        // lets a packet reach the lookups); the bitmap shrinks at the end.
        let present_flags = self
            .port_flags
            .read(0, self.port_flags.len)
            .unwrap_or_default();
        let union: Vec<u64> = plan
            .port_flags
            .iter()
            .zip(present_flags.iter().chain(std::iter::repeat(&0)))
            .map(|(new, old)| new | old)
            .collect();
        self.write_port_flags(&union)?;
        // The halves and flags are complete before any entry points at them.
        fence(Ordering::SeqCst);
        for (key, value) in &plan.service_upserts {
            self.services
                .insert(key, value, 0)
                .map_err(map_error(map_names::L4_SERVICES))?;
        }
        for key in &plan.service_removals {
            match self.services.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(source) => return Err(map_error(map_names::L4_SERVICES)(source)),
            }
        }
        for (slot, backend) in &plan.backend_releases {
            self.backends
                .set(*slot, backend, 0)
                .map_err(map_error(map_names::L4_BACKENDS))?;
        }
        self.write_port_flags(&plan.port_flags)?;
        if !plan.freed_services.is_empty() {
            self.forget_flows(&plan.freed_services)?;
        } else if closes_a_service_port(&present_flags, &plan.port_flags) {
            // The flow caches skip the port check: a closed port's flows
            // must leave them as they leave the tables' path.
            self.clear_flow_cache()?;
        }
        self.config
            .set(0, plan.config, 0)
            .map_err(map_error(map_names::L4_CONFIG))?;
        Ok(())
    }

    fn write_port_flags(&mut self, words: &[u64]) -> Result<(), L4MapsError> {
        // Each word is one aligned 8-byte store: a lookup sees it whole.
        if words.len() != self.port_flags.len || !self.port_flags.write(0, words) {
            return Err(L4MapsError::Shape {
                map: map_names::L4_PORT_FLAGS,
                entries: self.port_flags.len as u32,
            });
        }
        Ok(())
    }

    /// Deletes the flows (and reverse-NAT entries) of service indices no
    /// entry uses any more: no new flow can start for them, and these would
    /// keep going to their backends until they end.
    fn forget_flows(&mut self, services: &[u32]) -> Result<(), L4MapsError> {
        let flows: Vec<L4FlowKey> = self
            .flows
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, flow)| services.contains(&flow.service))
            .map(|(key, _)| key)
            .collect();
        for key in &flows {
            let _ = self.flows.remove(key);
        }
        let replies: Vec<L4FlowKey> = self
            .reverse
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, reverse)| services.contains(&reverse.service))
            .map(|(key, _)| key)
            .collect();
        for key in &replies {
            let _ = self.reverse.remove(key);
        }
        for table in [&mut self.flows4, &mut self.reverse4] {
            let keys: Vec<L4FlowKey4> = table
                .iter()
                .filter_map(Result::ok)
                .filter(|(_, nat)| services.contains(&nat.service))
                .map(|(key, _)| key)
                .collect();
            for key in &keys {
                let _ = table.remove(key);
            }
        }
        self.clear_flow_cache()
    }

    /// Empties every CPU's IPv4 and IPv6 flow caches, so no copy of a
    /// forgotten flow outlives it (the program fills the caches again from
    /// the tables).
    fn clear_flow_cache(&mut self) -> Result<(), L4MapsError> {
        clear_per_cpu::<L4CachedFlow4>(
            &mut self.flow_cache4,
            l4::FLOW_CACHE_SLOTS,
            map_names::L4_FLOW_CACHE4,
        )?;
        clear_per_cpu::<L4CachedFlow6>(
            &mut self.flow_cache6,
            l4::FLOW_CACHE6_SLOTS,
            map_names::L4_FLOW_CACHE6,
        )
    }

    /// Slots of the CPUs' IPv4 and IPv6 flow caches that hold a flow.
    pub fn cached_flows(&self) -> Result<usize, L4MapsError> {
        let ipv4 = count_per_cpu(
            &self.flow_cache4,
            l4::FLOW_CACHE_SLOTS,
            map_names::L4_FLOW_CACHE4,
            |cached| cached.key.protocol != 0,
        )?;
        let ipv6 = count_per_cpu(
            &self.flow_cache6,
            l4::FLOW_CACHE6_SLOTS,
            map_names::L4_FLOW_CACHE6,
            |cached| cached.key.protocol != 0,
        )?;
        Ok(ipv4 + ipv6)
    }

    /// Gives each possible CPU an equal share of `ports` (inclusive) for
    /// full NAT. A CPU whose share is unchanged keeps its cursor (after a
    /// restart, flows keep their ports and new ones continue after them).
    pub fn configure_ports(&mut self, ports: (u16, u16)) -> Result<(), L4MapsError> {
        let cpus = possible_cpus();
        let shares = port_shares(ports, cpus);
        let present = self
            .ports
            .get(&0, 0)
            .map_err(map_error(map_names::L4_PORTS))?;
        let cursors: Vec<L4PortCursor> = shares
            .iter()
            .zip(present.iter())
            .map(|(&(min, max), old)| {
                if old.min == min && old.max == max && (min..=max).contains(&old.next) {
                    *old
                } else {
                    L4PortCursor {
                        next: min,
                        min,
                        max,
                        reserved: 0,
                    }
                }
            })
            .collect();
        let values = PerCpuValues::try_from(cursors).expect("at least one CPU");
        self.ports
            .set(0, values, 0)
            .map_err(map_error(map_names::L4_PORTS))
    }

    /// Per-service counters summed over CPUs, by service index.
    pub fn service_counters(&self) -> Result<Vec<L4Counters>, L4MapsError> {
        sum_l4(&self.service_stats).map_err(map_error(map_names::L4_SERVICE_STATS))
    }

    /// The counters of backend `slot`, summed over CPUs.
    pub fn backend_counter(&self, slot: u32) -> Result<L4Counters, L4MapsError> {
        let per_cpu = self
            .backend_stats
            .get(&slot, 0)
            .map_err(map_error(map_names::L4_BACKEND_STATS))?;
        Ok(per_cpu
            .iter()
            .fold(L4Counters::default(), |sum, c| sum.plus(*c)))
    }

    /// Per-backend counters summed over CPUs, by backend slot.
    pub fn backend_counters(&self) -> Result<Vec<L4Counters>, L4MapsError> {
        sum_l4(&self.backend_stats).map_err(map_error(map_names::L4_BACKEND_STATS))
    }

    /// The connection table, both families (IPv4 entries in the IPv6
    /// table's shape: the key's words 1-3 zero, the NAT address and port
    /// the translation's source).
    pub fn flows(&self) -> Result<Vec<(L4FlowKey, L4Flow)>, L4MapsError> {
        let mut flows: Vec<(L4FlowKey, L4Flow)> = self
            .flows
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_error(map_names::L4_FLOWS))?;
        for entry in self.flows4.iter() {
            let (key, nat) = entry.map_err(map_error(map_names::L4_FLOWS4))?;
            flows.push((wide_key(&key), wide_flow(&nat)));
        }
        Ok(flows)
    }

    /// The reverse-NAT table, both families (IPv4 entries as in [`Self::flows`]).
    pub fn reverse_nat(&self) -> Result<Vec<(L4FlowKey, L4ReverseNat)>, L4MapsError> {
        let mut replies: Vec<(L4FlowKey, L4ReverseNat)> = self
            .reverse
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_error(map_names::L4_REVERSE))?;
        for entry in self.reverse4.iter() {
            let (key, nat) = entry.map_err(map_error(map_names::L4_REVERSE4))?;
            replies.push((wide_key(&key), wide_reverse(&nat)));
        }
        Ok(replies)
    }

    /// The config entry.
    pub fn config(&self) -> Result<L4Config, L4MapsError> {
        self.config
            .get(&0, 0)
            .map_err(map_error(map_names::L4_CONFIG))
    }
}

/// True when a service port bit set in `before` is clear in `after`.
fn closes_a_service_port(before: &[u64], after: &[u64]) -> bool {
    let service_bits = (0..l4::port_flags::PORTS_PER_WORD).fold(0u64, |bits, port| {
        bits | ((l4::port_flags::SERVICE_TCP | l4::port_flags::SERVICE_UDP) << (port * 4))
    });
    before
        .iter()
        .zip(after.iter().chain(std::iter::repeat(&0)))
        .any(|(old, new)| old & !new & service_bits != 0)
}

/// An IPv4 flow key in the shape of [`L4FlowKey`].
pub fn wide_key(key: &L4FlowKey4) -> L4FlowKey {
    L4FlowKey {
        src: [key.src, 0, 0, 0],
        dst: [key.dst, 0, 0, 0],
        sport: key.sport,
        dport: key.dport,
        family: family::IPV4,
        protocol: key.protocol,
        pad: [0; 2],
    }
}

/// An `L4_FLOWS4` entry in the shape of [`L4Flow`].
pub fn wide_flow(nat: &L4Nat4) -> L4Flow {
    L4Flow {
        nat_addr: [nat.src, 0, 0, 0],
        backend: nat.backend,
        generation: nat.generation,
        service: nat.service,
        nat_port: nat.sport,
        client_fin: nat.client_fin,
        backend_fin: nat.backend_fin,
        hop: nat.hop,
    }
}

/// An `L4_REVERSE4` entry in the shape of [`L4ReverseNat`]: the reply's new
/// source is the service, its new destination the client.
pub fn wide_reverse(nat: &L4Nat4) -> L4ReverseNat {
    L4ReverseNat {
        client: [nat.dst, 0, 0, 0],
        service_addr: [nat.src, 0, 0, 0],
        client_port: nat.dport,
        service_port: nat.sport,
        service: nat.service,
        backend: nat.backend,
        client_fin: nat.client_fin,
        backend_fin: nat.backend_fin,
        reserved: 0,
        hop: nat.hop,
    }
}

/// Splits `ports` (inclusive) into `cpus` contiguous shares; with fewer
/// ports than CPUs, CPUs share the last port (their allocations then only
/// collide, and the reverse-NAT insert refuses a collision).
pub fn port_shares(ports: (u16, u16), cpus: usize) -> Vec<(u16, u16)> {
    let (low, high) = (
        u32::from(ports.0.max(1)),
        u32::from(ports.1.max(ports.0.max(1))),
    );
    let total = high - low + 1;
    let cpus = cpus.max(1) as u32;
    (0..cpus)
        .map(|cpu| {
            let start = (low + cpu * total / cpus).min(high);
            let end = (low + (cpu + 1) * total / cpus)
                .saturating_sub(1)
                .clamp(start, high);
            (start as u16, end as u16)
        })
        .collect()
}

/// Sums every slot of a per-CPU L4 counter array over the CPUs.
pub fn sum_l4<T: std::borrow::Borrow<MapData>>(
    map: &PerCpuArray<T, L4Counters>,
) -> Result<Vec<L4Counters>, MapError> {
    map.iter()
        .map(|slot| {
            slot.map(|per_cpu| {
                per_cpu
                    .iter()
                    .fold(L4Counters::default(), |sum, c| sum.plus(*c))
            })
        })
        .collect()
}

fn possible_cpus() -> usize {
    nr_cpus().unwrap_or(1)
}

/// Sets the first `slots` slots of a per-CPU array to the default value on
/// every CPU.
fn clear_per_cpu<T: Pod + Default + Clone>(
    map: &mut PerCpuArray<MapData, T>,
    slots: u32,
    name: &'static str,
) -> Result<(), L4MapsError> {
    for slot in 0..slots {
        let empty =
            PerCpuValues::try_from(vec![T::default(); possible_cpus()]).expect("at least one CPU");
        map.set(slot, empty, 0).map_err(map_error(name))?;
    }
    Ok(())
}

/// How many of the first `slots` slots of a per-CPU array, over all CPUs,
/// `holds` something.
fn count_per_cpu<T: Pod>(
    map: &PerCpuArray<MapData, T>,
    slots: u32,
    name: &'static str,
    holds: impl Fn(&T) -> bool,
) -> Result<usize, L4MapsError> {
    let mut held = 0;
    for slot in 0..slots {
        let values = map.get(&slot, 0).map_err(map_error(name))?;
        held += values.iter().filter(|value| holds(value)).count();
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_service_port_clears_the_flow_caches() {
        use l4::port_flags::{BACKEND_TCP, SERVICE_TCP, SERVICE_UDP};
        // Port 17 is bit group 1 of word 1.
        let tcp_17 = [0, SERVICE_TCP << 4];
        assert!(!closes_a_service_port(&[0, 0], &tcp_17), "opened");
        assert!(closes_a_service_port(&tcp_17, &[0, 0]), "closed");
        assert!(closes_a_service_port(&tcp_17, &[0]), "shorter");
        let both = [0, (SERVICE_TCP | SERVICE_UDP) << 4];
        assert!(closes_a_service_port(&both, &tcp_17), "UDP closed");
        let backend = [BACKEND_TCP, SERVICE_TCP << 4];
        assert!(!closes_a_service_port(&backend, &tcp_17), "a backend port");
    }

    #[test]
    fn port_shares_cover_the_range_without_overlap() {
        assert_eq!(
            port_shares((61_000, 65_535), 2),
            vec![(61_000, 63_267), (63_268, 65_535)]
        );
        assert_eq!(port_shares((1000, 1000), 1), vec![(1000, 1000)]);
        let shares = port_shares((61_000, 61_002), 4);
        assert_eq!(shares.len(), 4);
        for (min, max) in shares {
            assert!(min <= max && (61_000..=61_002).contains(&min));
        }
        let shares = port_shares((40_000, 49_999), 7);
        let covered: u32 = shares.iter().map(|(a, b)| u32::from(b - a) + 1).sum();
        assert_eq!(covered, 10_000);
    }
}
