//! The L4 tier in the one configuration path: `ConfigApplier::apply` hands
//! every snapshot to [`L4Sync::apply`], which resolves the TCP and UDP
//! services ConfigMaps (`ingress_model::build_l4_services`), puts them on the
//! listening addresses, plans the map writes against what the maps hold
//! (`l4_plan`) and applies them (`l4_maps`). The L7 configuration applies
//! whatever happens here; an L4 failure is logged and the maps keep their
//! last good state.

use std::{
    ffi::CStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use ingress_common::{L4Counters, l4, protocol};
use ingress_model::{
    ClusterObjects, L4ConfigMaps, L4Protocol, L4ServiceSpec, ObjectKey, Problem, build_l4_services,
};
use tracing::{debug, error, info, warn};

use super::{
    egress::egress_of,
    l4_maps::{L4Maps, L4MapsError},
    l4_plan::{
        DesiredService, L4PlanError, L4Settings, PresentL4, apply_to, backend_addr, plan_l4,
    },
};

/// Where the L4 services listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4Addresses {
    /// `--l4-address` (repeatable).
    Fixed(Vec<IpAddr>),
    /// The addresses of these interfaces (the XDP ones), read at every apply.
    Interfaces(Vec<String>),
}

impl L4Addresses {
    /// The addresses now.
    pub fn resolve(&self) -> std::io::Result<Vec<IpAddr>> {
        match self {
            L4Addresses::Fixed(addrs) => Ok(addrs.clone()),
            L4Addresses::Interfaces(names) => interface_addresses(names),
        }
    }
}

/// Why the L4 maps were not brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum L4SyncError {
    /// The desired state does not fit.
    #[error(transparent)]
    Plan(#[from] L4PlanError),
    /// The maps could not be read or written.
    #[error(transparent)]
    Maps(#[from] L4MapsError),
    /// The interface addresses could not be read.
    #[error("reading the interfaces' addresses: {0}")]
    Addresses(#[from] std::io::Error),
}

/// What one L4 apply did.
#[derive(Debug, Default)]
pub struct L4Outcome {
    /// L4 services (ConfigMap entries served).
    pub services: usize,
    /// Service keys (services x addresses) in the map.
    pub keys: usize,
    /// Problems of the ConfigMaps' entries.
    pub problems: Vec<Problem>,
    /// The error that kept the maps from being updated, if any.
    pub error: Option<String>,
}

/// A backend the L4 maps send to, as the neighbour keeper sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveBackend {
    /// Its slot in `L4_BACKENDS` (and `L4_BACKEND_STATS`).
    pub slot: u32,
    /// Its address.
    pub addr: IpAddr,
    /// Whether a TCP service sends to it (TCP always answers: silence means
    /// the packets go nowhere).
    pub tcp: bool,
    /// The Services (named by the ConfigMaps) it is an endpoint of, with
    /// their uids when known: what a problem with it is reported on.
    pub services: Vec<(ObjectKey, Option<String>)>,
}

/// The L4 maps and their settings, shared with the configuration path.
#[derive(Debug)]
pub struct L4Sync {
    maps: Mutex<L4Maps>,
    settings: L4Settings,
    config_maps: L4ConfigMaps,
    addresses: L4Addresses,
    active: Mutex<Vec<ActiveBackend>>,
    /// Bumped whenever `active` is replaced.
    active_version: AtomicU64,
}

impl L4Sync {
    /// Takes over `maps` (already holding a previous daemon's state after a
    /// restart: it is diffed, not wiped) and gives each CPU its ports.
    pub fn new(
        mut maps: L4Maps,
        settings: L4Settings,
        config_maps: L4ConfigMaps,
        addresses: L4Addresses,
    ) -> Result<Self, L4SyncError> {
        maps.configure_ports(settings.ports)?;
        Ok(Self {
            maps: Mutex::new(maps),
            settings,
            config_maps,
            addresses,
            active: Mutex::new(Vec::new()),
            active_version: AtomicU64::new(0),
        })
    }

    /// Brings the maps to what `objects` say.
    pub fn apply(&self, objects: &ClusterObjects) -> L4Outcome {
        let (specs, problems) = build_l4_services(objects, &self.config_maps);
        let mut outcome = L4Outcome {
            services: specs.len(),
            problems,
            ..L4Outcome::default()
        };
        match self.sync(&specs, objects) {
            Ok(keys) => outcome.keys = keys,
            Err(error) => {
                error!("L4 services not applied, the maps keep their previous state: {error}");
                outcome.error = Some(error.to_string());
            }
        }
        outcome
    }

    fn sync(
        &self,
        specs: &[L4ServiceSpec],
        objects: &ClusterObjects,
    ) -> Result<usize, L4SyncError> {
        let addrs = self.addresses.resolve()?;
        let desired = desired_services(specs, &addrs);
        let mut maps = self.maps.lock().expect("L4 maps lock");
        let present = maps.present()?;
        let plan = plan_l4(&present, &desired, &self.settings)?;
        if !plan.is_noop() {
            info!(
                new_backends = plan.backend_writes.len(),
                released_backends = plan.backend_releases.len(),
                tables_written = plan.table_writes.len(),
                entries_written = plan.service_upserts.len(),
                entries_removed = plan.service_removals.len(),
                "L4 maps updated"
            );
        } else {
            debug!("L4 maps already up to date");
        }
        maps.apply(&plan)?;
        for (_, backend) in &plan.backend_writes {
            check_egress(backend_addr(backend).ip());
        }
        let mut active = active_backends(&apply_to(&present, &plan), &desired);
        for backend in &mut active {
            backend.services = services_of(backend.addr, specs, objects);
        }
        *self.active.lock().expect("L4 backends lock") = active;
        self.active_version.fetch_add(1, Ordering::Release);
        Ok(plan.config.services as usize)
    }

    /// How many times the active backends were replaced: a reader that saw
    /// another number reads them again.
    pub fn active_version(&self) -> u64 {
        self.active_version.load(Ordering::Acquire)
    }

    /// The backends the maps send to, as of the last apply.
    pub fn active_backends(&self) -> Vec<ActiveBackend> {
        self.active.lock().expect("L4 backends lock").clone()
    }

    /// The counters of backend `slot`, summed over the CPUs.
    pub fn backend_counter(&self, slot: u32) -> Option<L4Counters> {
        self.with_maps(|maps| maps.backend_counter(slot).ok())
    }

    /// Runs `f` with the maps (for counters and tests).
    pub fn with_maps<T>(&self, f: impl FnOnce(&mut L4Maps) -> T) -> T {
        f(&mut self.maps.lock().expect("L4 maps lock"))
    }
}

/// Warns when the route to backend `addr` leaves through an interface
/// without an XDP program: the program redirects translated packets there,
/// and in native mode an interface without XDP support (a veth whose peer
/// has no XDP program) drops them silently.
fn check_egress(addr: IpAddr) {
    match egress_of(addr) {
        Ok(Some(egress)) if !egress.has_xdp => warn!(
            backend = %addr,
            interface = %egress.name,
            "the backend's route leaves through an interface without an XDP program: in native mode, packets redirected there may be lost (attach xdp-ingress there too with --interface)"
        ),
        Ok(Some(_)) => {}
        Ok(None) => {
            warn!(backend = %addr, "no route to the backend: its packets are passed to the stack untranslated")
        }
        Err(error) => debug!(backend = %addr, %error, "could not look up the backend's route"),
    }
}

/// The active backends of `present` (the maps after an apply), each marked
/// TCP when a TCP service of `desired` sends to it.
pub fn active_backends(present: &PresentL4, desired: &[DesiredService]) -> Vec<ActiveBackend> {
    present
        .backends
        .iter()
        .filter(|(_, backend)| backend.flags & l4::BACKEND_ACTIVE != 0)
        .map(|(slot, backend)| {
            let addr = backend_addr(backend);
            ActiveBackend {
                slot: *slot,
                addr: addr.ip(),
                tcp: desired
                    .iter()
                    .any(|d| d.protocol == protocol::TCP && d.backends.contains(&addr)),
                services: Vec::new(),
            }
        })
        .collect()
}

/// The Services of `specs` that have an endpoint at `addr`, with their uids.
fn services_of(
    addr: IpAddr,
    specs: &[L4ServiceSpec],
    objects: &ClusterObjects,
) -> Vec<(ObjectKey, Option<String>)> {
    let mut services: Vec<(ObjectKey, Option<String>)> = specs
        .iter()
        .filter(|spec| spec.endpoints.iter().any(|e| e.ip() == addr))
        .map(|spec| {
            let key = spec.backend.service.clone();
            let uid = objects
                .services
                .get(&key)
                .and_then(|service| service.metadata.uid.clone());
            (key, uid)
        })
        .collect();
    services.sort();
    services.dedup();
    services
}

/// The desired services: every spec on every address.
pub fn desired_services(specs: &[L4ServiceSpec], addrs: &[IpAddr]) -> Vec<DesiredService> {
    specs
        .iter()
        .map(|spec| DesiredService {
            protocol: match spec.protocol {
                L4Protocol::Tcp => protocol::TCP,
                L4Protocol::Udp => protocol::UDP,
            },
            port: spec.port,
            addrs: addrs.to_vec(),
            backends: spec.endpoints.to_vec(),
        })
        .collect()
}

/// The addresses of the interfaces `names`, without link-local IPv6 ones
/// (clients do not reach a service there), sorted and deduplicated.
pub fn interface_addresses(names: &[String]) -> std::io::Result<Vec<IpAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut addrs = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: entries of the list getifaddrs returned, alive until freed.
        let ifa = unsafe { &*entry };
        entry = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name from getifaddrs.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
        if !names.iter().any(|n| *n == name) {
            continue;
        }
        // SAFETY: the family says which sockaddr it is.
        let ip = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        if let IpAddr::V6(v6) = ip
            && v6.is_unicast_link_local()
        {
            continue;
        }
        addrs.push(ip);
    }
    // SAFETY: the list getifaddrs allocated.
    unsafe { libc::freeifaddrs(list) };
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use ingress_model::{BackendId, EndpointSet, ObjectKey, ObjectKind, ObjectRef};

    use super::*;

    #[test]
    fn every_service_listens_on_every_address() {
        let spec = L4ServiceSpec {
            protocol: L4Protocol::Udp,
            port: 53,
            backend: BackendId {
                service: ObjectKey::new("ns", "dns"),
                port: 53,
            },
            endpoints: EndpointSet::new(["198.19.0.1:53".parse().unwrap()]),
            source: ObjectRef::new(ObjectKind::ConfigMap, ObjectKey::new("ns", "udp")),
        };
        let addrs: Vec<IpAddr> = vec![
            "198.18.0.1".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ];
        let desired = desired_services(&[spec], &addrs);
        assert_eq!(desired.len(), 1);
        assert_eq!(desired[0].protocol, protocol::UDP);
        assert_eq!(desired[0].addrs, addrs);
        assert_eq!(desired[0].backends, vec!["198.19.0.1:53".parse().unwrap()]);
    }

    #[test]
    fn loopback_has_its_address() {
        let addrs = interface_addresses(&["lo".to_owned()]).unwrap();
        assert!(
            addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
        assert!(
            interface_addresses(&["no-such-if".to_owned()])
                .unwrap()
                .is_empty()
        );
    }
}
