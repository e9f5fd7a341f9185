//! A small deterministic PRNG for generated corpora and workloads.
//!
//! xorshift64*: no `rand` dependency, and the same seed gives the same corpus on every machine
//! and toolchain, which golden and consistency tests rely on. Not for anything secret.

/// xorshift64* generator. The seed must not be 0.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant at our sizes).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Zipf-like rank in `0..n` (`n > 0`): a heavy head and a long tail, like word frequencies.
    pub fn zipf(&mut self, n: usize) -> usize {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (((n as f64 + 1.0).powf(u) - 1.0) as usize).min(n - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let (mut a, mut b) = (Rng(42), Rng(42));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let (x, y) = (a.below(7), b.below(7));
            assert!(x < 7 && x == y);
            let (x, y) = (a.zipf(100), b.zipf(100));
            assert!(x < 100 && x == y);
        }
        let mut r = Rng(1);
        let head = (0..10_000).filter(|_| r.zipf(1000) < 10).count();
        assert!(head > 2_000, "the head of a Zipf draw is heavy: {head}");
    }
}
