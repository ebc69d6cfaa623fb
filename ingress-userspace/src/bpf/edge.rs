//! The XDP program on the node: load the embedded object, pin its maps,
//! attach it to interfaces, keep the listener map in sync, and undo it all.
//!
//! With a pin directory, each attachment is a BPF link pinned there too
//! (`link_xdp_<interface>`): the program stays attached while the pin
//! exists, also after the daemon exits with its pins kept, and the next
//! daemon takes the link over by replacing the program in it (one atomic
//! `BPF_LINK_UPDATE`): no packet meets an interface without the program
//! during a restart. Removing the pins ([`XdpEdge::unpin`]) detaches.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
    util::nr_cpus,
};
use ingress_common::{ListenerKey, ListenerValue, TrafficCounters, XDP_PROGRAM_NAME, map_names};
use tracing::{info, warn};

use super::{
    l4_maps::{L4Maps, L4MapsError},
    listeners::{ListenerSyncPlan, TooManyListeners, plan_sync},
    source_ranges::{SourceRangeMapError, SourceRangeMaps},
};

/// The XDP object, built by `cargo xtask build-ebpf` and embedded at build time.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("XDP_INGRESS_EBPF_OBJECT"));

/// How to attach the program, as `--xdp-mode` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeChoice {
    /// In the driver (fastest); fails where the driver has no XDP support.
    Native,
    /// Generic XDP in the kernel stack; works on every interface.
    Skb,
    /// Native first, generic when the driver refuses.
    Auto,
}

/// The mode an interface ended up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    /// Native (driver) mode.
    Native,
    /// Generic (skb) mode.
    Skb,
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Skb => "skb",
        })
    }
}

/// Everything that can go wrong on the XDP side.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The object did not load (maps or program).
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    /// The kernel refused the program.
    #[error("the kernel refused the XDP program: {0}")]
    Program(#[source] ProgramError),
    /// The interface does not exist.
    #[error("interface {interface} does not exist (see `ip link`)")]
    UnknownInterface {
        /// The name given.
        interface: String,
    },
    /// Another XDP program is attached to the interface.
    #[error(
        "interface {interface} already has an XDP program attached (is another xdp-ingress running?): stop it, or detach it with `ip link set dev {interface} xdp off`"
    )]
    AlreadyAttached {
        /// The interface.
        interface: String,
    },
    /// Attaching failed otherwise.
    #[error("attaching XDP to {interface} in {mode} mode: {source}")]
    Attach {
        /// The interface.
        interface: String,
        /// The mode tried.
        mode: &'static str,
        /// The kernel's answer.
        #[source]
        source: ProgramError,
    },
    /// A map is missing from the object (a build mismatch).
    #[error("map {0} is missing from the XDP object: rebuild with `cargo xtask build-ebpf`")]
    MissingMap(&'static str),
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// The map.
        map: &'static str,
        /// The error.
        #[source]
        source: aya::maps::MapError,
    },
    /// Unpinning failed.
    #[error("removing pin {path}: {source}")]
    Unpin {
        /// The pin.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The listener map is full.
    #[error(transparent)]
    TooManyListeners(#[from] TooManyListeners),
    /// The attachment's link could not be pinned or taken over.
    #[error("the pinned XDP link of {interface} ({path}): {reason}")]
    Link {
        /// The interface.
        interface: String,
        /// The link's pin.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// The prefix of a pinned XDP link's file in the pin directory; the
/// interface's name follows.
pub const LINK_PIN_PREFIX: &str = "link_xdp_";

/// Load-time settings of the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeOptions {
    /// Slots of one Maglev table half (`--maglev-table-size`): sizes the
    /// Maglev array at `2 x l4::MAX_SERVICES x` this slots.
    pub maglev_table_size: u32,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        Self {
            maglev_table_size: ingress_common::l4::DEFAULT_TABLE_SIZE,
        }
    }
}

impl EdgeOptions {
    /// The entries (elements of four slots) of the Maglev array.
    pub fn maglev_entries(&self) -> u32 {
        ingress_common::maglev_elements(self.maglev_table_size)
    }
}

/// The (key size, value size, max entries) a map must have.
fn expected_shape(name: &str, maglev_entries: u32) -> Option<(u32, u32, u32)> {
    use std::mem::size_of;

    use ingress_common::{
        L4Backend, L4CachedFlow4, L4CachedFlow6, L4Config, L4Counters, L4Flow, L4FlowKey,
        L4FlowKey4, L4Nat4, L4PortCursor, L4ReverseNat, L4Service, L4ServiceKey, MAX_LISTENERS,
        SourcePrefix4, SourcePrefix6, l4, source_range, verdict,
    };
    let size = |bytes: usize| bytes as u32;
    Some(match name {
        map_names::LISTENERS => (
            size(size_of::<ListenerKey>()),
            size(size_of::<ListenerValue>()),
            MAX_LISTENERS,
        ),
        map_names::LISTENER_STATS => (4, size(size_of::<TrafficCounters>()), MAX_LISTENERS),
        map_names::VERDICT_STATS => (4, size(size_of::<TrafficCounters>()), verdict::COUNT),
        map_names::SOURCE_RANGES4 => (
            size(4 + size_of::<SourcePrefix4>()),
            4,
            source_range::MAX_ENTRIES,
        ),
        map_names::SOURCE_RANGES6 => (
            size(4 + size_of::<SourcePrefix6>()),
            4,
            source_range::MAX_ENTRIES,
        ),
        map_names::LISTENER_SOURCE_CHECKS => (4, 4, MAX_LISTENERS),
        map_names::LISTENER_DENIED_STATS => (4, size(size_of::<TrafficCounters>()), MAX_LISTENERS),
        map_names::L4_CONFIG => (4, size(size_of::<L4Config>()), 1),
        map_names::L4_SERVICES => (
            size(size_of::<L4ServiceKey>()),
            size(size_of::<L4Service>()),
            l4::MAX_SERVICE_KEYS,
        ),
        map_names::L4_MAGLEV => (4, 8, maglev_entries),
        map_names::L4_BACKENDS => (4, size(size_of::<L4Backend>()), l4::MAX_BACKENDS),
        map_names::L4_FLOWS => (
            size(size_of::<L4FlowKey>()),
            size(size_of::<L4Flow>()),
            l4::MAX_FLOWS,
        ),
        map_names::L4_REVERSE => (
            size(size_of::<L4FlowKey>()),
            size(size_of::<L4ReverseNat>()),
            l4::MAX_FLOWS,
        ),
        map_names::L4_FLOWS4 | map_names::L4_REVERSE4 => (
            size(size_of::<L4FlowKey4>()),
            size(size_of::<L4Nat4>()),
            l4::MAX_FLOWS,
        ),
        map_names::L4_FLOW_CACHE4 => (4, size(size_of::<L4CachedFlow4>()), l4::FLOW_CACHE_SLOTS),
        map_names::L4_FLOW_CACHE6 => (4, size(size_of::<L4CachedFlow6>()), l4::FLOW_CACHE6_SLOTS),
        map_names::L4_PORTS => (4, size(size_of::<L4PortCursor>()), 1),
        map_names::L4_SERVICE_STATS => (4, size(size_of::<L4Counters>()), l4::MAX_SERVICES),
        map_names::L4_BACKEND_STATS => (4, size(size_of::<L4Counters>()), l4::MAX_BACKENDS),
        map_names::L4_PORT_FLAGS => (4, 8, l4::port_flags::WORDS),
        _ => return None,
    })
}

/// Removes every pin in `dir` whose map has another shape than this build
/// needs (a restart keeps the pins that fit, and with them the flows).
fn remove_stale_pins(dir: &Path, maglev_entries: u32) -> Result<(), EdgeError> {
    for (name, file) in map_names::PINNED {
        let path = dir.join(file);
        if !path.exists() {
            continue;
        }
        let Some(wanted) = expected_shape(name, maglev_entries) else {
            continue;
        };
        let shape = MapData::from_pin(&path)
            .and_then(|map| map.info())
            .map(|info| (info.key_size(), info.value_size(), info.max_entries()));
        if shape.as_ref().ok() == Some(&wanted) {
            continue;
        }
        warn!(
            pin = %path.display(),
            found = ?shape.ok(),
            ?wanted,
            "a pinned map has another shape than this build needs: removing it (its state starts afresh)"
        );
        std::fs::remove_file(&path).map_err(|source| EdgeError::Unpin { path, source })?;
    }
    Ok(())
}

/// One interface the program is attached to.
#[derive(Debug)]
struct Attachment {
    interface: String,
    link: AttachmentLink,
}

/// How an attachment is held.
#[derive(Debug)]
enum AttachmentLink {
    /// Owned by the program (no pin directory): detached on exit.
    Owned(XdpLinkId),
    /// A link pinned in the pin directory: closing it leaves the program
    /// attached; removing the pin detaches it.
    Pinned(FdLink),
}

/// The loaded XDP program with its maps, pinned or not.
#[derive(Debug)]
pub struct XdpEdge {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    attachments: Vec<Attachment>,
}

impl XdpEdge {
    /// Loads the embedded object. With `pin_dir`, the maps are pinned there
    /// (and reused when pins of the same shape exist, as after a restart).
    pub fn load(pin_dir: Option<&Path>) -> Result<Self, EdgeError> {
        Self::load_with(pin_dir, &EdgeOptions::default())
    }

    /// Loads the embedded object with `options`.
    pub fn load_with(pin_dir: Option<&Path>, options: &EdgeOptions) -> Result<Self, EdgeError> {
        Self::load_object(XDP_OBJECT, pin_dir, options)
    }

    /// Loads `object` (an XDP object built from `ingress-ebpf`). Pins in
    /// `pin_dir` whose shape differs from what this object and `options`
    /// need (another build, another table size) are removed first, with a
    /// warning: the kernel would otherwise hand the program maps it
    /// misreads.
    pub fn load_object(
        object: &[u8],
        pin_dir: Option<&Path>,
        options: &EdgeOptions,
    ) -> Result<Self, EdgeError> {
        let maglev_entries = options.maglev_entries();
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(map_names::L4_MAGLEV, maglev_entries);
        if let Some(dir) = pin_dir {
            remove_stale_pins(dir, maglev_entries)?;
            for (name, file) in map_names::PINNED {
                loader.map_pin_path(name, dir.join(file));
            }
        }
        let mut ebpf = loader.load(object)?;
        let program = Self::program_in(&mut ebpf)?;
        program.load().map_err(EdgeError::Program)?;
        Ok(Self {
            ebpf,
            pin_dir: pin_dir.map(Path::to_path_buf),
            attachments: Vec::new(),
        })
    }

    fn program_in(ebpf: &mut Ebpf) -> Result<&mut Xdp, EdgeError> {
        let program = ebpf
            .program_mut(XDP_PROGRAM_NAME)
            .ok_or(EdgeError::MissingMap(XDP_PROGRAM_NAME))?;
        program
            .try_into()
            .map_err(|error: ProgramError| EdgeError::Program(error))
    }

    /// The loaded program, for attaching or for `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self) -> Result<&mut Xdp, EdgeError> {
        Self::program_in(&mut self.ebpf)
    }

    /// Attaches to `interface`; in [`XdpModeChoice::Auto`] falls back to skb
    /// mode when the driver refuses native mode, and says so.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: XdpModeChoice,
    ) -> Result<AttachedMode, EdgeError> {
        let attempts: &[(XdpMode, AttachedMode)] = match mode {
            XdpModeChoice::Native => &[(XdpMode::Driver, AttachedMode::Native)],
            XdpModeChoice::Skb => &[(XdpMode::Skb, AttachedMode::Skb)],
            XdpModeChoice::Auto => &[
                (XdpMode::Driver, AttachedMode::Native),
                (XdpMode::Skb, AttachedMode::Skb),
            ],
        };
        let link_pin = self
            .pin_dir
            .as_ref()
            .map(|dir| dir.join(format!("{LINK_PIN_PREFIX}{interface}")));
        if let Some(path) = &link_pin
            && path.exists()
            && let Some(link) = self.take_over(interface, path)?
        {
            self.attachments.push(Attachment {
                interface: interface.to_owned(),
                link: AttachmentLink::Pinned(link),
            });
            // The link keeps the mode it was created in.
            info!(%interface, "took over the pinned XDP link: the program was replaced in place");
            return Ok(attempts[0].1);
        }
        let program = self.program()?;
        let mut last_error = None;
        for (index, &(xdp_mode, attached)) in attempts.iter().enumerate() {
            match program.attach(interface, xdp_mode) {
                Ok(link_id) => {
                    let link = match &link_pin {
                        Some(path) => {
                            AttachmentLink::Pinned(self.pin_link(interface, link_id, path)?)
                        }
                        None => AttachmentLink::Owned(link_id),
                    };
                    self.attachments.push(Attachment {
                        interface: interface.to_owned(),
                        link,
                    });
                    return Ok(attached);
                }
                Err(ProgramError::UnknownInterface { .. }) => {
                    return Err(EdgeError::UnknownInterface {
                        interface: interface.to_owned(),
                    });
                }
                Err(error) if is_busy(&error) => {
                    return Err(EdgeError::AlreadyAttached {
                        interface: interface.to_owned(),
                    });
                }
                Err(error) => {
                    if index + 1 < attempts.len() {
                        warn!(%interface, %error, "native XDP refused, falling back to skb (generic) mode");
                    }
                    last_error = Some((attached, error));
                }
            }
        }
        let (attached, source) = last_error.expect("at least one attempt");
        Err(EdgeError::Attach {
            interface: interface.to_owned(),
            mode: match attached {
                AttachedMode::Native => "native",
                AttachedMode::Skb => "skb",
            },
            source,
        })
    }

    /// Replaces the program in the link pinned at `path` (left by a daemon
    /// that kept its pins) with ours. `None` when the link is no longer
    /// attached (its interface went away): its pin is removed and the
    /// caller attaches afresh.
    fn take_over(&mut self, interface: &str, path: &Path) -> Result<Option<FdLink>, EdgeError> {
        let link_error = |reason: String| EdgeError::Link {
            interface: interface.to_owned(),
            path: path.to_path_buf(),
            reason,
        };
        let pinned = PinnedLink::from_pin(path).map_err(|e| link_error(e.to_string()))?;
        let xdp_link = XdpLink::try_from(FdLink::from(pinned))
            .map_err(|e| link_error(format!("not an XDP link: {e}")))?;
        let program = self.program()?;
        let link_id = match program.attach_to_link(xdp_link) {
            Ok(link_id) => link_id,
            Err(error) => {
                warn!(%interface, %error, pin = %path.display(), "the pinned XDP link is no longer attached: removing it");
                std::fs::remove_file(path).map_err(|source| EdgeError::Unpin {
                    path: path.to_path_buf(),
                    source,
                })?;
                return Ok(None);
            }
        };
        let link = program.take_link(link_id).map_err(EdgeError::Program)?;
        FdLink::try_from(link)
            .map(Some)
            .map_err(|e| link_error(e.to_string()))
    }

    /// Pins the new attachment `link_id` at `path`.
    fn pin_link(
        &mut self,
        interface: &str,
        link_id: XdpLinkId,
        path: &Path,
    ) -> Result<FdLink, EdgeError> {
        let link_error = |reason: String| EdgeError::Link {
            interface: interface.to_owned(),
            path: path.to_path_buf(),
            reason,
        };
        let program = self.program()?;
        let link = program.take_link(link_id).map_err(EdgeError::Program)?;
        // A netlink attachment (kernels before 5.9) has no link to pin.
        let fd_link = FdLink::try_from(link).map_err(|e| link_error(e.to_string()))?;
        let pinned = fd_link.pin(path).map_err(|e| link_error(e.to_string()))?;
        Ok(FdLink::from(pinned))
    }

    /// Interfaces the program is attached to, in attach order.
    pub fn attached_interfaces(&self) -> Vec<&str> {
        self.attachments
            .iter()
            .map(|a| a.interface.as_str())
            .collect()
    }

    /// Lets go of every interface (the reverse of attach order): owned
    /// attachments are detached; pinned links stay attached until their
    /// pins are removed ([`XdpEdge::unpin`]), so a daemon that keeps its
    /// pins leaves the program running for the next one.
    pub fn detach_all(&mut self) {
        while let Some(attachment) = self.attachments.pop() {
            let interface = attachment.interface;
            match attachment.link {
                AttachmentLink::Pinned(link) => {
                    drop(link);
                    info!(%interface, "XDP stays attached while its link's pin exists");
                }
                AttachmentLink::Owned(link_id) => {
                    let result = self
                        .program()
                        .and_then(|p| p.detach(link_id).map_err(EdgeError::Program));
                    match result {
                        Ok(()) => info!(%interface, "detached XDP"),
                        Err(error) => warn!(%interface, %error, "detaching XDP failed"),
                    }
                }
            }
        }
    }

    /// Removes the pins (the kernel frees the maps once nothing uses them)
    /// and the pinned links (which detaches the program from their
    /// interfaces once [`XdpEdge::detach_all`] has closed them).
    pub fn unpin(&mut self) -> Result<(), EdgeError> {
        let Some(dir) = self.pin_dir.take() else {
            return Ok(());
        };
        let links: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(LINK_PIN_PREFIX))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        let maps = map_names::PINNED.iter().map(|(_, file)| dir.join(file));
        for path in maps.chain(links) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(EdgeError::Unpin { path, source }),
            }
        }
        // Only our own pins were there; a directory that others use stays.
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }

    /// Takes the L4 maps out of the object, for the daemon's L4 sync (the
    /// program keeps using them; their pins stay).
    pub fn take_l4_maps(&mut self) -> Result<L4Maps, L4MapsError> {
        L4Maps::from_maps(|name| self.ebpf.take_map(name))
    }

    /// Takes the source-range maps out of the object, for the daemon's
    /// source-range sync (the program keeps using them; their pins stay).
    pub fn take_source_range_maps(&mut self) -> Result<SourceRangeMaps, SourceRangeMapError> {
        SourceRangeMaps::from_maps(|name| self.ebpf.take_map(name))
    }

    /// Takes the ring buffer of next hops the program found no neighbour
    /// entry for.
    pub fn take_neighbour_misses(&mut self) -> Result<RingBuf<MapData>, EdgeError> {
        let map = self
            .ebpf
            .take_map(map_names::L4_NEIGHBOUR_MISSES)
            .ok_or(EdgeError::MissingMap(map_names::L4_NEIGHBOUR_MISSES))?;
        RingBuf::try_from(map).map_err(|source| EdgeError::Map {
            map: map_names::L4_NEIGHBOUR_MISSES,
            source,
        })
    }

    fn listeners_map(
        &mut self,
    ) -> Result<HashMap<&mut MapData, ListenerKey, ListenerValue>, EdgeError> {
        let map = self
            .ebpf
            .map_mut(map_names::LISTENERS)
            .ok_or(EdgeError::MissingMap(map_names::LISTENERS))?;
        HashMap::try_from(map).map_err(|source| EdgeError::Map {
            map: map_names::LISTENERS,
            source,
        })
    }

    /// The listener map's contents.
    pub fn listeners(&mut self) -> Result<BTreeMap<ListenerKey, ListenerValue>, EdgeError> {
        let map = self.listeners_map()?;
        map.iter()
            .collect::<Result<_, _>>()
            .map_err(|source| EdgeError::Map {
                map: map_names::LISTENERS,
                source,
            })
    }

    /// Makes the listener map hold exactly `desired` (key -> action), keeping
    /// the ids and counters of listeners that stay. Returns what it changed.
    pub fn sync_listeners(
        &mut self,
        desired: &BTreeMap<ListenerKey, u32>,
    ) -> Result<ListenerSyncPlan, EdgeError> {
        let present = self.listeners()?;
        let plan = plan_sync(&present, desired)?;
        if !plan.fresh_slots.is_empty() {
            let mut stats = self.per_cpu_counters(map_names::LISTENER_STATS)?;
            for &slot in &plan.fresh_slots {
                let zero =
                    PerCpuValues::try_from(vec![TrafficCounters::default(); possible_cpus()])
                        .expect("at least one CPU");
                stats.set(slot, zero, 0).map_err(|source| EdgeError::Map {
                    map: map_names::LISTENER_STATS,
                    source,
                })?;
            }
        }
        let mut map = self.listeners_map()?;
        for (key, value) in &plan.upserts {
            map.insert(key, value, 0).map_err(|source| EdgeError::Map {
                map: map_names::LISTENERS,
                source,
            })?;
        }
        for key in &plan.removals {
            map.remove(key).map_err(|source| EdgeError::Map {
                map: map_names::LISTENERS,
                source,
            })?;
        }
        Ok(plan)
    }

    fn per_cpu_counters(
        &mut self,
        name: &'static str,
    ) -> Result<PerCpuArray<&mut MapData, TrafficCounters>, EdgeError> {
        let map = self.ebpf.map_mut(name).ok_or(EdgeError::MissingMap(name))?;
        PerCpuArray::try_from(map).map_err(|source| EdgeError::Map { map: name, source })
    }

    /// Per-CPU counters summed over CPUs, slot by slot.
    pub fn counters(&mut self, name: &'static str) -> Result<Vec<TrafficCounters>, EdgeError> {
        let map = self.per_cpu_counters(name)?;
        sum_per_cpu(&map).map_err(|source| EdgeError::Map { map: name, source })
    }
}

impl Drop for XdpEdge {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// Sums every slot of a per-CPU counter array over the CPUs.
pub fn sum_per_cpu<T: std::borrow::Borrow<MapData>>(
    map: &PerCpuArray<T, TrafficCounters>,
) -> Result<Vec<TrafficCounters>, aya::maps::MapError> {
    map.iter()
        .map(|slot| {
            slot.map(|per_cpu| {
                per_cpu
                    .iter()
                    .fold(TrafficCounters::default(), |sum, c| sum.plus(*c))
            })
        })
        .collect()
}

fn possible_cpus() -> usize {
    nr_cpus().unwrap_or(1)
}

/// EBUSY/EEXIST: another program owns the interface's XDP hook.
fn is_busy(error: &ProgramError) -> bool {
    let errno = match error {
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        ProgramError::XdpError(aya::programs::xdp::XdpError::NetlinkError(e)) => e.raw_os_error(),
        _ => None,
    };
    matches!(errno, Some(libc::EBUSY) | Some(libc::EEXIST))
}
