//! Request rates per client address (`limit-rps`, `limit-rpm`), counted as
//! nginx's `limit_req ... burst=B nodelay` counts them: a client's first
//! request starts its record; each later one adds one request to its
//! excess, less what the rate has drained since the client's last passing
//! request (never below zero); a request that would take the excess past
//! the burst is
//! refused (503) and not counted. So B + 1 requests pass at once, then one
//! per interval. Each route policy has its own records (keyed by the
//! policy, which a configuration change of its Ingress replaces).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ingress_model::policy::RateLimit;

/// Records kept before idle ones are dropped.
const PRUNE_ABOVE: usize = 65_536;
/// How long a record may sit idle before it can be dropped (a record idle
/// this long has drained to zero at any rate of at least one a minute).
const IDLE: Duration = Duration::from_secs(60);

/// One client's record for one rate.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Requests above the rate, in thousandths (as nginx keeps it).
    excess_milli: u64,
    last: Instant,
}

/// The records of every route's rates.
#[derive(Debug, Default)]
pub struct RateLimiter {
    records: Mutex<HashMap<(usize, usize, IpAddr), Record>>,
}

impl RateLimiter {
    /// Whether a request from `client` passes every rate of `limits` (the
    /// route policy `policy_id`'s), counting it where it passes all.
    pub fn admit(
        &self,
        policy_id: usize,
        limits: &[RateLimit],
        client: IpAddr,
        now: Instant,
    ) -> bool {
        let mut records = self.records.lock().expect("rate limiter lock");
        if records.len() > PRUNE_ABOVE {
            records.retain(|_, record| now.duration_since(record.last) < IDLE);
        }
        let mut next = Vec::with_capacity(limits.len());
        for (index, limit) in limits.iter().enumerate() {
            let key = (policy_id, index, client);
            let excess = match records.get(&key) {
                None => 0,
                Some(record) => {
                    let elapsed_ms = now.duration_since(record.last).as_millis() as u64;
                    // per_minute / 60 requests a second = per_minute / 60 000 a
                    // millisecond, in thousandths: per_minute / 60 each ms.
                    let drained = elapsed_ms.saturating_mul(u64::from(limit.per_minute)) / 60;
                    let excess = (record.excess_milli + 1000).saturating_sub(drained);
                    if excess > u64::from(limit.burst) * 1000 {
                        return false;
                    }
                    excess
                }
            };
            next.push((key, excess));
        }
        for (key, excess_milli) in next {
            records.insert(
                key,
                Record {
                    excess_milli,
                    last: now,
                },
            );
        }
        true
    }
}

/// Requests in progress per client and route policy (`limit-connections`,
/// nginx's `limit_conn` keyed by the client address).
#[derive(Debug, Default)]
pub struct ConnectionLimiter {
    counts: Mutex<HashMap<(usize, IpAddr), u32>>,
}

/// A request in progress, counted until dropped (when its response body
/// has been sent, or the request ended otherwise).
#[derive(Debug)]
pub struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
    key: (usize, IpAddr),
}

impl ConnectionLimiter {
    /// A slot for a request of `client` on the route policy `policy_id`,
    /// unless `limit` requests of it are in progress already.
    pub fn acquire(
        self: &Arc<Self>,
        policy_id: usize,
        client: IpAddr,
        limit: u32,
    ) -> Option<ConnectionSlot> {
        let key = (policy_id, client);
        let mut counts = self.counts.lock().expect("connection limiter lock");
        let count = counts.entry(key).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            limiter: self.clone(),
            key,
        })
    }

    /// Requests of `client` in progress on `policy_id`.
    pub fn in_progress(&self, policy_id: usize, client: IpAddr) -> u32 {
        let counts = self.counts.lock().expect("connection limiter lock");
        counts.get(&(policy_id, client)).copied().unwrap_or(0)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.limiter.counts.lock().expect("connection limiter lock");
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(last: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, last])
    }

    #[test]
    fn connection_slots_are_counted_until_dropped() {
        let limiter = Arc::new(ConnectionLimiter::default());
        let first = limiter.acquire(1, client(2), 2).unwrap();
        let second = limiter.acquire(1, client(2), 2).unwrap();
        assert!(limiter.acquire(1, client(2), 2).is_none());
        assert!(limiter.acquire(1, client(3), 2).is_some());
        assert!(limiter.acquire(2, client(2), 2).is_some());
        drop(first);
        assert_eq!(limiter.in_progress(1, client(2)), 1);
        let third = limiter.acquire(1, client(2), 2).unwrap();
        drop((second, third));
        assert_eq!(limiter.in_progress(1, client(2)), 0);
        assert!(limiter.counts.lock().unwrap().is_empty());
    }

    #[test]
    fn a_burst_then_the_rate_per_client() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // 2 a second, burst 3: 4 at once, then one every 500 ms.
        let limits = [RateLimit {
            per_minute: 120,
            burst: 3,
        }];
        let passed = (0..10)
            .filter(|_| limiter.admit(1, &limits, client(2), at(0)))
            .count();
        assert_eq!(passed, 4);
        assert!(!limiter.admit(1, &limits, client(2), at(400)));
        assert!(limiter.admit(1, &limits, client(2), at(500)));
        assert!(!limiter.admit(1, &limits, client(2), at(600)));
        // Another client, another policy: their own records.
        assert!(limiter.admit(1, &limits, client(3), at(600)));
        assert!(limiter.admit(2, &limits, client(2), at(600)));
        // After a long pause the burst is back.
        let passed = (0..10)
            .filter(|_| limiter.admit(1, &limits, client(2), at(60_000)))
            .count();
        assert_eq!(passed, 4);
    }

    #[test]
    fn every_rate_must_pass_and_only_passing_requests_count() {
        let limiter = RateLimiter::default();
        let now = Instant::now();
        // No burst per second, but 3 a minute: the minute rate refuses
        // the fourth even spaced by seconds.
        let limits = [
            RateLimit {
                per_minute: 60,
                burst: 0,
            },
            RateLimit {
                per_minute: 3,
                burst: 2,
            },
        ];
        let passed: Vec<bool> = (0..5)
            .map(|i| limiter.admit(7, &limits, client(2), now + Duration::from_secs(i)))
            .collect();
        assert_eq!(passed, [true, true, true, false, false]);
        // Refused at once by the first rate: nothing counted by the second.
        let limiter = RateLimiter::default();
        assert!(limiter.admit(7, &limits, client(2), now));
        assert!(!limiter.admit(7, &limits, client(2), now));
        assert!(limiter.admit(7, &limits, client(2), now + Duration::from_secs(1)));
        assert!(limiter.admit(7, &limits, client(2), now + Duration::from_secs(2)));
    }
}
