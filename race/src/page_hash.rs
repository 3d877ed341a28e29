//! The hasher for maps keyed by page number. Keys are small consecutive integers that an attacker does not
//! choose, so std's SipHash (DoS-resistant, ~20 ns) buys nothing here; a folded 128-bit multiply mixes
//! every key bit into both halves, which matters because a shard's keys all share their low bits (the
//! shard is chosen by them) and the map indexes buckets by the low bits of the hash.

use std::hash::{BuildHasherDefault, Hasher};

pub(crate) type PageHasher = BuildHasherDefault<FoldedMultiply>;

#[derive(Default)]
pub(crate) struct FoldedMultiply(u64);

/// An odd constant with well-spread bits (2^64 / φ), as in Fibonacci hashing.
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for FoldedMultiply {
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; this keeps any other key type correct, if slower.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, key: u64) {
        let wide = u128::from(self.0 ^ key) * u128::from(MULTIPLIER);
        self.0 = (wide as u64) ^ ((wide >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_sharing_low_bits_spread_over_buckets() {
        let buckets: HashSet<u64> = (0..1024u64)
            .map(|i| {
                let mut h = FoldedMultiply::default();
                h.write_u64(i * 128 + 5);
                h.finish() % 1024
            })
            .collect();
        assert!(buckets.len() > 500, "{} of 1024 buckets used", buckets.len());
    }
}
