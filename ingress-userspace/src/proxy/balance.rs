//! Choosing an endpoint for a request: a pure decision over the endpoint
//! list of a route, with fallbacks for the retry. Round-robin by default; a
//! consistent hash on a key (header, cookie or client address) when the
//! route asks for one.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

/// How a route spreads requests over its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BalancePolicy {
    /// Each request takes the next endpoint.
    #[default]
    RoundRobin,
    /// Requests with the same key go to the same endpoint while it exists.
    ConsistentHash,
}

/// Round-robin cursor shared by the requests of one route.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// The endpoints in the order this request should try them: first
    /// choice, then the others as fallbacks (for the one retry).
    pub fn order<'a>(&self, endpoints: &'a [SocketAddr]) -> impl Iterator<Item = &'a SocketAddr> {
        let start = if endpoints.is_empty() {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % endpoints.len()
        };
        endpoints[start..].iter().chain(endpoints[..start].iter())
    }
}

/// Rendezvous (highest random weight) hashing: the endpoint with the highest
/// hash of (key, endpoint) wins, so removing one endpoint moves only its keys.
pub fn consistent_order(endpoints: &[SocketAddr], key: &[u8]) -> Vec<SocketAddr> {
    let mut scored: Vec<(u64, SocketAddr)> = endpoints
        .iter()
        .map(|endpoint| (score(key, endpoint), *endpoint))
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, endpoint)| endpoint).collect()
}

/// FNV-1a over the key and the endpoint, then a final mix (splitmix64).
fn score(key: &[u8], endpoint: &SocketAddr) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let endpoint = endpoint.to_string();
    for byte in key.iter().chain([0u8].iter()).chain(endpoint.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// ingress-nginx's `load-balance: ewma` (its `balancer/ewma.lua`): each
/// endpoint's response time as an exponentially weighted moving average
/// that decays over 10 s, kept per endpoint address for every route; a
/// request takes the better of two endpoints drawn at random ("power of
/// two choices"), an endpoint not measured yet scoring as the mean of
/// those that are (slow start).
#[derive(Debug, Default)]
pub struct Ewma {
    scores: std::sync::Mutex<foldhash::HashMap<SocketAddr, (f64, std::time::Instant)>>,
}

/// How many endpoints' measures are kept before old ones are dropped.
const EWMA_ENDPOINTS: usize = 16_384;

/// How fast a measure fades, in seconds.
const EWMA_DECAY_SECONDS: f64 = 10.0;

impl Ewma {
    /// The endpoint of `endpoints` to try first.
    pub fn pick(&self, endpoints: &[SocketAddr]) -> Option<SocketAddr> {
        match endpoints.len() {
            0 => None,
            1 => Some(endpoints[0]),
            n => {
                let first = fastrand::usize(..n);
                let second = (first + 1 + fastrand::usize(..n - 1)) % n;
                let (a, b) = (endpoints[first], endpoints[second]);
                let now = std::time::Instant::now();
                let scores = self.scores.lock().expect("ewma lock");
                let score = |endpoint: &SocketAddr| match scores.get(endpoint) {
                    Some(&(ewma, at)) => decayed(ewma, at, 0.0, now),
                    None => {
                        let known: Vec<f64> = endpoints
                            .iter()
                            .filter_map(|e| {
                                scores.get(e).map(|&(ewma, at)| decayed(ewma, at, 0.0, now))
                            })
                            .collect();
                        if known.is_empty() {
                            0.0
                        } else {
                            known.iter().sum::<f64>() / known.len() as f64
                        }
                    }
                };
                Some(if score(&b) < score(&a) { b } else { a })
            }
        }
    }

    /// Counts a response of `endpoint` that took `took` (connect and
    /// response, as ingress-nginx's `upstream_connect_time` plus
    /// `upstream_response_time`).
    pub fn record(&self, endpoint: SocketAddr, took: std::time::Duration) {
        let now = std::time::Instant::now();
        let mut scores = self.scores.lock().expect("ewma lock");
        // Endpoints come and go: measures a minute old have faded to
        // nothing (e^-6) and are dropped once there are many.
        if scores.len() >= EWMA_ENDPOINTS {
            scores.retain(|_, (_, at)| now.saturating_duration_since(*at).as_secs() < 60);
        }
        let entry = scores.entry(endpoint).or_insert((took.as_secs_f64(), now));
        *entry = (decayed(entry.0, entry.1, took.as_secs_f64(), now), now);
    }
}

/// `ewma` last updated at `at`, moved toward `sample` by the time since.
fn decayed(ewma: f64, at: std::time::Instant, sample: f64, now: std::time::Instant) -> f64 {
    let elapsed = now.saturating_duration_since(at).as_secs_f64();
    let weight = (-elapsed / EWMA_DECAY_SECONDS).exp();
    ewma * weight + sample * (1.0 - weight)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn endpoints(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([198, 18, 1, i], 8080)))
            .collect()
    }

    #[test]
    fn round_robin_cycles_and_offers_every_fallback() {
        let rr = RoundRobin::default();
        let eps = endpoints(3);
        let firsts: Vec<SocketAddr> = (0..6).map(|_| *rr.order(&eps).next().unwrap()).collect();
        assert_eq!(firsts, [eps[0], eps[1], eps[2], eps[0], eps[1], eps[2]]);
        let all: Vec<&SocketAddr> = rr.order(&eps).collect();
        assert_eq!(all.len(), 3);
        assert!(eps.iter().all(|e| all.contains(&e)));
    }

    #[test]
    fn round_robin_with_no_endpoints_yields_nothing() {
        assert_eq!(RoundRobin::default().order(&[]).count(), 0);
    }

    #[test]
    fn consistent_hash_is_stable_and_spreads() {
        let eps = endpoints(3);
        let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
        for i in 0..3000 {
            let key = format!("client-{i}");
            let first = consistent_order(&eps, key.as_bytes())[0];
            assert_eq!(first, consistent_order(&eps, key.as_bytes())[0]);
            *counts.entry(first).or_default() += 1;
        }
        for ep in &eps {
            let share = counts[ep];
            assert!((800..=1200).contains(&share), "{ep}: {share} of 3000");
        }
    }

    #[test]
    fn removing_an_endpoint_moves_only_its_keys() {
        let eps = endpoints(4);
        let fewer: Vec<SocketAddr> = eps[..3].to_vec();
        for i in 0..2000 {
            let key = format!("k{i}");
            let before = consistent_order(&eps, key.as_bytes())[0];
            let after = consistent_order(&fewer, key.as_bytes())[0];
            if before != eps[3] {
                assert_eq!(before, after, "key {key} moved without cause");
            }
        }
    }

    #[test]
    fn ewma_prefers_the_faster_endpoint_and_tries_the_new_one() {
        let eps = endpoints(2);
        let ewma = Ewma::default();
        ewma.record(eps[0], std::time::Duration::from_millis(200));
        ewma.record(eps[1], std::time::Duration::from_millis(5));
        for _ in 0..50 {
            assert_eq!(ewma.pick(&eps), Some(eps[1]));
        }
        // A third endpoint, not measured: the mean of the others, so it
        // wins against the slow one and loses against the fast one.
        let three = endpoints(3);
        let picks: Vec<SocketAddr> = (0..300).filter_map(|_| ewma.pick(&three)).collect();
        assert!(
            picks.contains(&three[2]) && !picks.contains(&three[0]),
            "{picks:?}"
        );
        assert_eq!(ewma.pick(&[]), None);
        assert_eq!(ewma.pick(&eps[..1]), Some(eps[0]));
    }
}
