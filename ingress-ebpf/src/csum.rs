//! Incremental Internet checksum updates (RFC 1624, eqn. 3): a checksum is
//! patched with the difference of the words that changed, never recomputed
//! over the packet.
//!
//! Every value is taken as it lies in memory (a raw 16- or 32-bit load of
//! network-order bytes): the one's complement sum does not depend on byte
//! order, so no value is swapped.

/// A running difference: the sum of `!old + new` over the changed words.
#[derive(Clone, Copy)]
pub struct CsumDiff(u64);

impl CsumDiff {
    /// No change.
    #[inline(always)]
    pub const fn new() -> Self {
        Self(0)
    }

    /// Adds the change of a 32-bit word.
    #[inline(always)]
    pub const fn word(self, old: u32, new: u32) -> Self {
        Self(self.0 + (!old) as u64 + new as u64)
    }

    /// Adds the change of four 32-bit words (an IPv6 address, or an IPv4
    /// one with three zero words).
    #[inline(always)]
    pub const fn words(self, old: &[u32; 4], new: &[u32; 4]) -> Self {
        self.word(old[0], new[0])
            .word(old[1], new[1])
            .word(old[2], new[2])
            .word(old[3], new[3])
    }

    /// Adds the change of a 16-bit word.
    #[inline(always)]
    pub const fn half(self, old: u16, new: u16) -> Self {
        Self(self.0 + (!old) as u64 + new as u64)
    }

    /// `check` (a raw checksum field) patched with this difference.
    #[inline(always)]
    pub const fn apply(self, check: u16) -> u16 {
        !fold((!check) as u64 + self.0)
    }

    /// This difference folded to 16 bits, to be stored and applied later
    /// with [`apply_folded`].
    #[inline(always)]
    pub const fn folded(self) -> u16 {
        fold(self.0)
    }
}

/// `check` patched with a difference from [`CsumDiff::folded`]: the sum of
/// two 16-bit values folds in two steps.
#[inline(always)]
pub const fn apply_folded(check: u16, delta: u16) -> u16 {
    let sum = (!check) as u32 + delta as u32;
    let sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Folds a 64-bit one's complement sum to 16 bits.
#[inline(always)]
const fn fold(sum: u64) -> u16 {
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}
