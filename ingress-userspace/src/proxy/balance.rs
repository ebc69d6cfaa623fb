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
}
