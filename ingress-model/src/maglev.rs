//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table
//! of prime size in which every backend owns an almost equal share of the
//! slots, and removing one of N backends moves little more than its own
//! 1/N of them. The XDP program hashes a flow's 5-tuple to a slot; userspace
//! builds the table here and writes it to the kernel maps.
//!
//! Backends are identified by their address, hashed with fixed seeds, so
//! the table is the same after a restart of the daemon and on every node.

use std::net::SocketAddr;

/// The default table size: a prime well above 100 x the backends a
/// Service usually has, as the paper recommends.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

/// Why a table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    /// The size is not a prime (the permutations would not cover the table).
    #[error("Maglev table size {0} is not a prime")]
    NotPrime(u32),
    /// More backends than slots.
    #[error("{backends} backends do not fit a Maglev table of {size} slots")]
    TooManyBackends {
        /// Backends given.
        backends: usize,
        /// Table size.
        size: u32,
    },
}

/// A built table: `slots[i]` is the index (into the backend list given to
/// [`MaglevTable::build`]) of the backend that owns slot `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevTable {
    slots: Vec<u32>,
}

impl MaglevTable {
    /// Builds the table for `backends` (empty backends give an empty table).
    pub fn build(backends: &[SocketAddr], size: u32) -> Result<Self, MaglevError> {
        if !is_prime(size) {
            return Err(MaglevError::NotPrime(size));
        }
        if backends.len() > size as usize {
            return Err(MaglevError::TooManyBackends {
                backends: backends.len(),
                size,
            });
        }
        if backends.is_empty() {
            return Ok(Self { slots: Vec::new() });
        }
        let m = u64::from(size);
        let permutations: Vec<(u64, u64)> = backends
            .iter()
            .map(|backend| {
                let name = backend.to_string();
                let offset = hash(name.as_bytes(), 0x6d61_676c_6576_3031) % m;
                let skip = hash(name.as_bytes(), 0x6d61_676c_6576_3032) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        const EMPTY: u32 = u32::MAX;
        let mut slots = vec![EMPTY; size as usize];
        let mut next = vec![0u64; backends.len()];
        let mut filled = 0u64;
        'fill: loop {
            for (index, &(offset, skip)) in permutations.iter().enumerate() {
                let mut slot = (offset + next[index] * skip) % m;
                while slots[slot as usize] != EMPTY {
                    next[index] += 1;
                    slot = (offset + next[index] * skip) % m;
                }
                slots[slot as usize] = index as u32;
                next[index] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        Ok(Self { slots })
    }

    /// The slots, each a backend index.
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// The backend index for a flow hash, `None` for an empty table.
    pub fn lookup(&self, flow_hash: u64) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        Some(self.slots[(flow_hash % self.slots.len() as u64) as usize])
    }
}

/// FNV-1a with a seed, finished with splitmix64 for good high bits.
fn hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    let mut d = 2u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn backends(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([198, 18, (i / 250) as u8, (i % 250 + 1) as u8], 8080)))
            .collect()
    }

    fn shares(table: &MaglevTable, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for &slot in table.slots() {
            counts[slot as usize] += 1;
        }
        counts
    }

    #[test]
    fn sizes_must_be_prime() {
        assert_eq!(
            MaglevTable::build(&backends(3), 65_536),
            Err(MaglevError::NotPrime(65_536))
        );
        assert!(MaglevTable::build(&backends(3), 65_537).is_ok());
        assert!(MaglevTable::build(&backends(3), 251).is_ok());
        assert_eq!(
            MaglevTable::build(&backends(8), 7),
            Err(MaglevError::TooManyBackends {
                backends: 8,
                size: 7
            })
        );
    }

    #[test]
    fn no_backends_no_slots() {
        let table = MaglevTable::build(&[], DEFAULT_TABLE_SIZE).unwrap();
        assert!(table.slots().is_empty());
        assert_eq!(table.lookup(42), None);
    }

    #[test]
    fn every_slot_is_filled_and_spread_is_even() {
        for n in [1, 2, 3, 7, 10, 100] {
            let table = MaglevTable::build(&backends(n), DEFAULT_TABLE_SIZE).unwrap();
            assert_eq!(table.slots().len(), DEFAULT_TABLE_SIZE as usize);
            let counts = shares(&table, n);
            let ideal = DEFAULT_TABLE_SIZE as f64 / n as f64;
            for (i, &count) in counts.iter().enumerate() {
                let deviation = (count as f64 - ideal).abs() / ideal;
                assert!(
                    deviation < 0.02,
                    "n={n}: backend {i} owns {count}, ideal {ideal:.0}"
                );
            }
        }
    }

    #[test]
    fn the_table_is_deterministic() {
        let a = MaglevTable::build(&backends(5), 1009).unwrap();
        let b = MaglevTable::build(&backends(5), 1009).unwrap();
        assert_eq!(a, b);
    }

    /// Slots that change owner when backend `removed` of `n` goes away,
    /// beyond those it owned, as a fraction of the table.
    fn extra_disruption(n: usize, removed: usize) -> (f64, f64) {
        let all = backends(n);
        let mut fewer = all.clone();
        fewer.remove(removed);
        let before = MaglevTable::build(&all, DEFAULT_TABLE_SIZE).unwrap();
        let after = MaglevTable::build(&fewer, DEFAULT_TABLE_SIZE).unwrap();
        let mut moved = 0usize;
        let mut owned_by_removed = 0usize;
        for (old, new) in before.slots().iter().zip(after.slots()) {
            let old_addr = all[*old as usize];
            let new_addr = fewer[*new as usize];
            if old_addr != new_addr {
                moved += 1;
            }
            if *old as usize == removed {
                owned_by_removed += 1;
            }
        }
        let size = DEFAULT_TABLE_SIZE as f64;
        (moved as f64 / size, owned_by_removed as f64 / size)
    }

    #[test]
    fn removing_one_backend_moves_about_its_share() {
        for n in [3, 5, 10, 20] {
            let (moved, own_share) = extra_disruption(n, n / 2);
            // At least its own slots move; the rest of the table barely does.
            assert!(moved >= own_share);
            assert!(
                moved - own_share < 0.03,
                "n={n}: moved {moved:.3}, own {own_share:.3}"
            );
            assert!((own_share - 1.0 / n as f64).abs() < 0.01);
        }
    }

    proptest! {
        #[test]
        fn lookups_always_name_a_backend(n in 1usize..40, hash in any::<u64>()) {
            let table = MaglevTable::build(&backends(n), 1009).unwrap();
            let index = table.lookup(hash).unwrap();
            prop_assert!((index as usize) < n);
        }
    }
}
