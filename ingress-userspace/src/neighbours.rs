//! Keeps the next hop of every L4 backend resolved, so that the XDP
//! program's `bpf_fib_lookup` finds a MAC address for the first packet of a
//! flow. XDP bypasses the kernel's neighbour resolution: a packet it sends
//! out itself never makes the kernel ask who has the backend's address.
//!
//! - Every next hop of an active backend gets a kernel-managed neighbour
//!   entry (`NTF_EXT_MANAGED`, Linux 5.16+): the kernel resolves it at once,
//!   keeps it fresh and never ages it out. Entries are added when a backend
//!   appears and removed when the last backend behind them goes.
//! - The XDP program drops a packet whose next hop has no entry and reports
//!   the next hop on `L4_NEIGHBOUR_MISSES`: it is resolved now (managed when
//!   it is a backend's, once otherwise, e.g. a client's), so TCP's
//!   retransmission gets through; an entry removed by hand comes back.
//! - A TCP backend that gets packets but answers none for a while (its MAC
//!   address changed behind the same IP: a pod replaced) has its entry
//!   resolved again from scratch; the XDP program's cached next hops expire
//!   within `NEXT_HOP_TTL_JIFFIES`.
//! - A next hop that cannot be resolved (`FAILED`) is logged and counted
//!   (`xdp_ingress_l4_unresolved_next_hops`).
//!
//! The decisions ([`plan_entries`], [`ReplyWatch`]) are pure; the thread
//! that runs them talks netlink ([`crate::netlink`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use ingress_common::{L4Counters, L4NeighbourMiss, family};
use ingress_model::{ObjectKind, ObjectRef, Problem, ProblemReason};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::{
    bpf::{
        l4_plan::words_ip,
        l4_sync::{ActiveBackend, L4Sync},
    },
    metrics::Metrics,
    netlink::{Neighbour, NextHop, RouteSocket},
};

/// How often replies are compared with forwarded packets.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// How often the entries are compared with the kernel's table.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// How long a TCP backend may get packets without answering any before
/// its next hop is resolved again.
const UNANSWERED_FOR: Duration = Duration::from_millis(300);
/// How long after resolving a next hop again it is not resolved again.
const RERESOLVE_AFTER: Duration = Duration::from_secs(2);

/// `NUD_FAILED`: the kernel gave up resolving.
const NUD_FAILED: u16 = 0x20;
/// `NUD_INCOMPLETE` (resolving) and `NUD_NONE` (not tried yet).
const NUD_INCOMPLETE: u16 = 0x01;
const NUD_NONE: u16 = 0x00;

/// What to do to the kernel's neighbour table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryPlan {
    /// Next hops to create as managed entries.
    pub add: Vec<NextHop>,
    /// Existing entries (not managed) to make managed.
    pub make_managed: Vec<NextHop>,
    /// Managed entries of ours that no backend needs any more.
    pub remove: Vec<NextHop>,
    /// Wanted next hops the kernel failed to resolve.
    pub unresolved: Vec<NextHop>,
}

/// Compares the `wanted` next hops and those we `held` with the kernel's
/// `table`. A next hop is unresolved when the kernel gave up on it, or was
/// `unresolved` before and is being tried again (the kernel retries a
/// managed entry every few seconds: that is no recovery).
pub fn plan_entries(
    wanted: &BTreeSet<NextHop>,
    held: &BTreeSet<NextHop>,
    table: &[Neighbour],
    unresolved: &BTreeSet<NextHop>,
) -> EntryPlan {
    let present: BTreeMap<NextHop, &Neighbour> = table.iter().map(|n| (n.hop, n)).collect();
    let mut plan = EntryPlan::default();
    for hop in wanted {
        match present.get(hop) {
            None => plan.add.push(*hop),
            Some(entry) if !entry.managed => plan.make_managed.push(*hop),
            Some(entry) if entry.state & NUD_FAILED != 0 => plan.unresolved.push(*hop),
            Some(entry)
                if unresolved.contains(hop)
                    && (entry.state == NUD_NONE || entry.state & NUD_INCOMPLETE != 0) =>
            {
                plan.unresolved.push(*hop)
            }
            Some(_) => {}
        }
    }
    plan.remove = held.difference(wanted).copied().collect();
    plan
}

/// Tells a backend that stopped answering from one that answers, from its
/// counters sampled every [`WATCH_EVERY`]: a new flow, or at least
/// [`UNANSWERED_PACKETS`] packets, sent to it since its last reply, the
/// first of them [`UNANSWERED_FOR`] ago. (One unanswered packet of an open
/// flow is normal: a client's last ACK. A SYN without an answer, or
/// retransmissions, are not.)
#[derive(Clone, Debug)]
pub struct ReplyWatch {
    forwarded: u64,
    replies: u64,
    new_flows: u64,
    unanswered: u64,
    unanswered_flows: u64,
    waiting_since: Option<Instant>,
    last_resolved: Option<Instant>,
}

/// How many packets sent since a backend's last reply make it suspect.
const UNANSWERED_PACKETS: u64 = 3;

impl ReplyWatch {
    /// A watch that starts from these counters.
    pub fn new(counters: &L4Counters) -> Self {
        Self {
            forwarded: counters.packets.wrapping_sub(counters.replies),
            replies: counters.replies,
            new_flows: counters.new_flows,
            unanswered: 0,
            unanswered_flows: 0,
            waiting_since: None,
            last_resolved: None,
        }
    }

    /// Takes a new sample at `now`; true when the backend has stopped
    /// answering and was not resolved again in the last
    /// [`RERESOLVE_AFTER`] (the evidence then starts over).
    pub fn sample(&mut self, counters: &L4Counters, now: Instant) -> bool {
        let forwarded = counters.packets.wrapping_sub(counters.replies);
        let sent = forwarded.wrapping_sub(self.forwarded);
        let flows = counters.new_flows.wrapping_sub(self.new_flows);
        if counters.replies != self.replies {
            self.unanswered = 0;
            self.unanswered_flows = 0;
            self.waiting_since = None;
        } else if sent > 0 {
            self.unanswered += sent;
            self.unanswered_flows += flows;
            self.waiting_since.get_or_insert(now);
        }
        self.forwarded = forwarded;
        self.replies = counters.replies;
        self.new_flows = counters.new_flows;
        let suspect = (self.unanswered >= UNANSWERED_PACKETS || self.unanswered_flows > 0)
            && self
                .waiting_since
                .is_some_and(|since| now.duration_since(since) >= UNANSWERED_FOR);
        let rested = self
            .last_resolved
            .is_none_or(|at| now.duration_since(at) >= RERESOLVE_AFTER);
        if suspect && rested {
            self.last_resolved = Some(now);
            self.unanswered = 0;
            self.unanswered_flows = 0;
            self.waiting_since = None;
            return true;
        }
        false
    }
}

/// A problem the daemon found at run time, with the uid of its object when
/// known (so `kubectl describe` finds the event).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReportedProblem {
    /// The problem.
    pub problem: Problem,
    /// The uid of `problem.object`.
    pub uid: Option<String>,
}

/// The problems of the `unresolved` next hops, one per Service with an
/// endpoint behind one of them (`hops`: each backend's next hop).
pub fn unresolved_problems(
    unresolved: &BTreeSet<NextHop>,
    hops: &BTreeMap<IpAddr, Option<NextHop>>,
    backends: &[ActiveBackend],
) -> Vec<ReportedProblem> {
    let mut found = BTreeMap::new();
    for backend in backends {
        let Some(Some(hop)) = hops.get(&backend.addr) else {
            continue;
        };
        if !unresolved.contains(hop) {
            continue;
        }
        for (service, uid) in &backend.services {
            let message = format!(
                "the next hop {} (interface {}) of endpoint {} does not answer ARP/ND: the L4 \
                 service's packets to it are dropped until it does",
                hop.addr, hop.ifindex, backend.addr
            );
            let object = ObjectRef::new(ObjectKind::Service, service.clone());
            found.entry(object.clone()).or_insert(ReportedProblem {
                problem: Problem::new(object, ProblemReason::NextHopUnresolved, message),
                uid: uid.clone(),
            });
        }
    }
    found.into_values().collect()
}

/// The running keeper: stopped (and its entries removed) by [`Self::stop`].
#[derive(Debug)]
pub struct NeighbourKeeper {
    stop: Arc<AtomicBool>,
    /// Leave the managed entries when stopping.
    keep: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NeighbourKeeper {
    /// Starts keeping the next hops of `l4`'s backends, reading the XDP
    /// program's reports from `misses`.
    pub fn spawn(
        l4: Arc<L4Sync>,
        misses: RingBuf<MapData>,
        metrics: Option<Arc<Metrics>>,
        reported: watch::Sender<Vec<ReportedProblem>>,
    ) -> std::io::Result<Self> {
        let socket = RouteSocket::open()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let keep = Arc::new(AtomicBool::new(false));
        let keeping = keep.clone();
        let thread = std::thread::Builder::new()
            .name("neighbours".into())
            .spawn(move || {
                let mut keeper = Keeper {
                    socket,
                    l4,
                    misses,
                    metrics,
                    reported,
                    wanted: BTreeMap::new(),
                    held: BTreeSet::new(),
                    watches: BTreeMap::new(),
                    unresolved: BTreeSet::new(),
                };
                keeper.run(&stopping);
                if !keeping.load(Ordering::Relaxed) {
                    keeper.release();
                }
            })?;
        Ok(Self {
            stop,
            keep,
            thread: Some(thread),
        })
    }

    /// Stops the keeper and removes the managed entries it made, unless
    /// `keep_entries`: the XDP program goes on forwarding after the daemon
    /// (`--keep-pins-on-exit`) and needs its next hops resolved; the next
    /// daemon takes them over.
    pub fn stop(mut self, keep_entries: bool) {
        self.keep.store(keep_entries, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Keeper {
    socket: RouteSocket,
    l4: Arc<L4Sync>,
    misses: RingBuf<MapData>,
    metrics: Option<Arc<Metrics>>,
    reported: watch::Sender<Vec<ReportedProblem>>,
    /// Each active backend's address and its next hop.
    wanted: BTreeMap<IpAddr, Option<NextHop>>,
    /// The managed entries we made.
    held: BTreeSet<NextHop>,
    watches: BTreeMap<u32, ReplyWatch>,
    unresolved: BTreeSet<NextHop>,
}

impl Keeper {
    fn run(&mut self, stop: &AtomicBool) {
        let mut next_watch = Instant::now();
        let mut next_reconcile = Instant::now();
        let mut version = None;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            // New backends get their entries at once, not at the next tick.
            let current = self.l4.active_version();
            if now >= next_reconcile || version != Some(current) {
                version = Some(current);
                self.reconcile();
                next_reconcile = now + RECONCILE_EVERY;
            }
            if now >= next_watch {
                self.watch_replies(now);
                next_watch = now + WATCH_EVERY;
            }
            let wait = next_watch
                .min(next_reconcile)
                .saturating_duration_since(now);
            if self.wait_for_misses(wait) {
                let mut missed = BTreeSet::new();
                while let Some(item) = self.misses.next() {
                    if let Some(miss) = read_miss(&item) {
                        missed.insert(words_ip(miss.addr, miss.family));
                    }
                }
                for addr in missed {
                    self.on_miss(addr);
                }
            }
        }
    }

    /// Waits up to `wait` for a report on the ring buffer.
    fn wait_for_misses(&self, wait: Duration) -> bool {
        let mut poll = libc::pollfd {
            fd: self.misses.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = wait.as_millis().clamp(1, 1000) as i32;
        // SAFETY: poll(2) on one descriptor we own, for a bounded time.
        unsafe { libc::poll(&mut poll, 1, millis) > 0 }
    }

    /// The XDP program found no neighbour entry for `addr` (a next hop).
    fn on_miss(&mut self, addr: IpAddr) {
        let Ok(Some(hop)) = self.socket.next_hop(addr) else {
            debug!(%addr, "no route to a next hop the XDP program missed");
            return;
        };
        let ours = self.wanted.values().any(|wanted| *wanted == Some(hop));
        let result = if ours {
            info!(next_hop = %hop.addr, "resolving a backend's next hop the XDP program found missing");
            let added = self.socket.add_managed(hop, true);
            if added.is_ok() {
                self.held.insert(hop);
            }
            added
        } else {
            debug!(next_hop = %hop.addr, "resolving a next hop the XDP program found missing");
            self.socket.resolve_once(hop)
        };
        if let Err(error) = result {
            warn!(next_hop = %hop.addr, %error, "could not ask the kernel to resolve a next hop");
        }
    }

    /// Brings the managed entries to the active backends' next hops.
    fn reconcile(&mut self) {
        let backends = self.l4.active_backends();
        let addrs: BTreeSet<IpAddr> = backends.iter().map(|b| b.addr).collect();
        self.wanted.retain(|addr, _| addrs.contains(addr));
        for addr in &addrs {
            // A backend's route is looked up again each time: it may change.
            let hop = self.socket.next_hop(*addr).unwrap_or(None);
            if hop.is_none() {
                warn!(backend = %addr, "no route to an L4 backend");
            }
            self.wanted.insert(*addr, hop);
        }
        let slots: BTreeSet<u32> = backends.iter().filter(|b| b.tcp).map(|b| b.slot).collect();
        self.watches.retain(|slot, _| slots.contains(slot));
        let wanted: BTreeSet<NextHop> = self.wanted.values().flatten().copied().collect();
        let table = match self.socket.neighbours() {
            Ok(table) => table,
            Err(error) => {
                warn!(%error, "could not list the neighbour table");
                return;
            }
        };
        let plan = plan_entries(&wanted, &self.held, &table, &self.unresolved);
        for hop in plan.add.iter().chain(&plan.make_managed) {
            match self.socket.add_managed(*hop, true) {
                Ok(()) => {
                    self.held.insert(*hop);
                    debug!(next_hop = %hop.addr, ifindex = hop.ifindex, "managed neighbour entry");
                }
                Err(error) => {
                    warn!(next_hop = %hop.addr, %error, "could not add a managed neighbour entry")
                }
            }
        }
        for hop in &plan.remove {
            if let Err(error) = self.socket.delete_neighbour(*hop) {
                debug!(next_hop = %hop.addr, %error, "could not remove a neighbour entry");
            }
            self.held.remove(hop);
        }
        let unresolved: BTreeSet<NextHop> = plan.unresolved.into_iter().collect();
        for hop in unresolved.difference(&self.unresolved) {
            let behind: Vec<String> = self
                .wanted
                .iter()
                .filter(|(_, wanted)| **wanted == Some(*hop))
                .map(|(addr, _)| addr.to_string())
                .collect();
            warn!(
                next_hop = %hop.addr,
                ifindex = hop.ifindex,
                backends = %behind.join(","),
                "the next hop of L4 backends cannot be resolved: their packets are dropped until it answers"
            );
        }
        for hop in self.unresolved.difference(&unresolved) {
            info!(next_hop = %hop.addr, "the next hop of L4 backends is resolved again");
        }
        if unresolved != self.unresolved {
            let problems = unresolved_problems(&unresolved, &self.wanted, &backends);
            self.reported.send_replace(problems);
        }
        self.unresolved = unresolved;
        if let Some(metrics) = &self.metrics {
            metrics.set_unresolved_next_hops(self.unresolved.len());
        }
    }

    /// Resolves again the next hop of every TCP backend that stopped
    /// answering.
    fn watch_replies(&mut self, now: Instant) {
        let backends = self.l4.active_backends();
        for backend in backends.iter().filter(|b| b.tcp) {
            let Some(counters) = self.l4.backend_counter(backend.slot) else {
                continue;
            };
            let watch = self
                .watches
                .entry(backend.slot)
                .or_insert_with(|| ReplyWatch::new(&counters));
            if !watch.sample(&counters, now) {
                continue;
            }
            let Some(Some(hop)) = self.wanted.get(&backend.addr).copied() else {
                continue;
            };
            info!(
                backend = %backend.addr,
                next_hop = %hop.addr,
                "an L4 backend gets packets but answers none: resolving its next hop again"
            );
            let _ = self.socket.delete_neighbour(hop);
            if let Err(error) = self.socket.add_managed(hop, false) {
                warn!(next_hop = %hop.addr, %error, "could not resolve a next hop again");
            }
            self.held.insert(hop);
        }
    }

    /// Removes the managed entries we made.
    fn release(&mut self) {
        for hop in std::mem::take(&mut self.held) {
            let _ = self.socket.delete_neighbour(hop);
        }
    }
}

/// A report from the ring buffer.
fn read_miss(bytes: &[u8]) -> Option<L4NeighbourMiss> {
    if bytes.len() < size_of::<L4NeighbourMiss>() {
        return None;
    }
    // SAFETY: the bytes hold an `L4NeighbourMiss` written by the program
    // (plain data); read unaligned.
    let miss = unsafe { bytes.as_ptr().cast::<L4NeighbourMiss>().read_unaligned() };
    (miss.family == family::IPV4 || miss.family == family::IPV6).then_some(miss)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn hop(last: u8) -> NextHop {
        NextHop {
            ifindex: 2,
            addr: IpAddr::V4(Ipv4Addr::new(198, 18, 3, last)),
        }
    }

    fn entry(last: u8, state: u16, managed: bool) -> Neighbour {
        Neighbour {
            hop: hop(last),
            state,
            managed,
            lladdr: None,
        }
    }

    #[test]
    fn entries_follow_the_wanted_next_hops() {
        let wanted: BTreeSet<NextHop> = [hop(2), hop(3), hop(4), hop(5)].into();
        let held: BTreeSet<NextHop> = [hop(3), hop(9)].into();
        let table = [
            entry(3, 0x02, true),       // reachable, ours
            entry(4, 0x04, false),      // stale, the kernel's own
            entry(5, NUD_FAILED, true), // managed but unanswered
            entry(9, 0x02, true),       // ours, no backend behind it now
            entry(1, 0x02, false),      // somebody else's: left alone
        ];
        let plan = plan_entries(&wanted, &held, &table, &BTreeSet::new());
        assert_eq!(
            plan,
            EntryPlan {
                add: vec![hop(2)],
                make_managed: vec![hop(4)],
                remove: vec![hop(9)],
                unresolved: vec![hop(5)],
            }
        );
        let settled = [
            entry(2, 0x02, true),
            entry(3, 0x02, true),
            entry(4, 0x02, true),
        ];
        let plan = plan_entries(
            &[hop(2), hop(3), hop(4)].into(),
            &wanted,
            &settled,
            &BTreeSet::new(),
        );
        assert_eq!(plan.add, []);
        assert_eq!(plan.remove, [hop(5)]);
        // Resolving: unresolved only if it was before (the kernel retrying).
        let retrying = [
            entry(5, NUD_INCOMPLETE, true),
            entry(6, NUD_INCOMPLETE, true),
        ];
        let wanted: BTreeSet<NextHop> = [hop(5), hop(6)].into();
        let plan = plan_entries(&wanted, &wanted, &retrying, &[hop(5)].into());
        assert_eq!(plan.unresolved, [hop(5)]);
    }

    #[test]
    fn silence_after_packets_calls_for_resolving_again_once_in_a_while() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // (packets, replies, new flows), as the counters say.
        let counters = |packets, replies, new_flows| L4Counters {
            packets,
            bytes: packets * 60,
            new_flows,
            replies,
        };
        let mut watch = ReplyWatch::new(&counters(10, 5, 1));
        let mut sample = |packets, replies, new_flows, ms| {
            watch.sample(&counters(packets, replies, new_flows), at(ms))
        };
        // Answered traffic: packets both ways.
        assert!(!sample(14, 7, 1, 100));
        assert!(!sample(18, 9, 1, 400));
        // A client's last ACK: one packet without an answer, however long.
        assert!(!sample(19, 9, 1, 500));
        assert!(!sample(19, 9, 1, 2000));
        // Then an answered packet, then retransmissions without an answer:
        // not before the first of them is 0.3 s old...
        assert!(!sample(21, 10, 1, 2100));
        assert!(!sample(23, 10, 1, 2200));
        assert!(!sample(24, 10, 1, 2300));
        // ...then once.
        assert!(sample(24, 10, 1, 2500));
        // The evidence starts over, and not again before a rest.
        assert!(!sample(27, 10, 1, 2600));
        assert!(!sample(27, 10, 1, 3000));
        assert!(sample(28, 10, 1, 4600));
        // An answer clears the suspicion.
        assert!(!sample(31, 10, 1, 4800));
        assert!(!sample(32, 11, 1, 5000));
        assert!(!sample(33, 11, 1, 7000));
        // One new flow (a SYN) without an answer is enough, after 0.3 s.
        assert!(!sample(34, 12, 1, 7100));
        assert!(!sample(35, 12, 2, 7200));
        assert!(!sample(35, 12, 2, 7400));
        assert!(sample(35, 12, 2, 7500));
    }

    #[test]
    fn unresolved_next_hops_are_reported_on_the_services_behind_them() {
        let backend = |last: u8, services: &[&str]| ActiveBackend {
            slot: u32::from(last),
            addr: IpAddr::V4(Ipv4Addr::new(198, 19, 0, last)),
            tcp: true,
            services: services
                .iter()
                .map(|name| {
                    (
                        ingress_model::ObjectKey::new("ns", *name),
                        Some(format!("uid-{name}")),
                    )
                })
                .collect(),
        };
        let backends = [
            backend(1, &["tcp-a", "udp-a"]),
            backend(2, &["tcp-a"]),
            backend(3, &["tcp-b"]),
        ];
        let hops: BTreeMap<IpAddr, Option<NextHop>> = [
            (backends[0].addr, Some(hop(2))),
            (backends[1].addr, Some(hop(2))),
            (backends[2].addr, Some(hop(3))),
        ]
        .into();
        let reported = unresolved_problems(&[hop(2)].into(), &hops, &backends);
        let named: Vec<(String, Option<String>)> = reported
            .iter()
            .map(|r| (r.problem.object.to_string(), r.uid.clone()))
            .collect();
        assert_eq!(
            named,
            [
                ("Service ns/tcp-a".to_owned(), Some("uid-tcp-a".to_owned())),
                ("Service ns/udp-a".to_owned(), Some("uid-udp-a".to_owned())),
            ]
        );
        assert!(
            reported
                .iter()
                .all(|r| r.problem.reason == ProblemReason::NextHopUnresolved)
        );
        assert!(reported[0].problem.message.contains("198.18.3.2"));
        assert_eq!(unresolved_problems(&BTreeSet::new(), &hops, &backends), []);
    }

    #[test]
    fn a_report_reads_back() {
        let miss = L4NeighbourMiss {
            addr: [u32::from_ne_bytes([198, 18, 3, 2]), 0, 0, 0],
            ifindex: 7,
            family: family::IPV4,
            pad: [0; 3],
        };
        // SAFETY: plain data viewed as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                std::ptr::from_ref(&miss).cast::<u8>(),
                size_of::<L4NeighbourMiss>(),
            )
        };
        let read = read_miss(bytes).unwrap();
        assert_eq!(
            words_ip(read.addr, read.family),
            IpAddr::V4(Ipv4Addr::new(198, 18, 3, 2))
        );
        assert_eq!(read.ifindex, 7);
        assert_eq!(read_miss(&bytes[..8]), None);
    }
}
