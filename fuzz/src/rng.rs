//! The fuzzer's random numbers: SplitMix64, written out so that a seed printed today reproduces the same
//! module with any future version of any crate (a library RNG may change its stream between releases).

/// SplitMix64 (Steele, Lea, Flood 2014): 64 bits of state, passes BigCrush, one multiply-xorshift per draw.
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// The generator for iteration `i` of a run with `seed`: iterations are independent, so one can be
    /// replayed alone (`--seed S --skip I --iterations 1`).
    pub fn for_iteration(seed: u64, i: u64) -> SplitMix64 {
        let mut mix = SplitMix64(seed ^ i.wrapping_mul(0xA076_1D64_78BD_642F));
        SplitMix64(mix.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`); the modulo bias is irrelevant for fuzzing.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}
