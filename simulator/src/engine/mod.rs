//! Discrete-event engine: a virtual clock, an event queue ordered by (time, sequence number) and
//! named random streams derived from one seed.
//!
//! Determinism rules: virtual time is integer nanoseconds, ties break by insertion order, nothing
//! reads the wall clock, and every random draw comes from a [`Stream`] whose seed depends only on
//! the run seed and the stream's name. Adding a component with a new stream name therefore does not
//! shift the draws of any other component.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

mod queue;
pub(crate) use queue::{EventQueue, Laned};

/// Virtual time in nanoseconds since the start of the run.
pub type SimTime = u64;

/// One microsecond of virtual time.
pub(crate) const MICROS: SimTime = 1_000;
/// One millisecond of virtual time.
pub const MILLIS: SimTime = 1_000_000;
/// One second of virtual time.
pub const SECONDS: SimTime = 1_000_000_000;

/// FNV-1a over the name, mixed with the seed through SplitMix64: stable across platforms and
/// Rust versions (unlike `DefaultHasher`).
fn stream_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix64(seed ^ splitmix64(h))
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A named, independently seeded random stream (PCG64-MCG).
#[derive(Clone, Debug)]
pub struct Stream {
    rng: Pcg64Mcg,
}

impl Stream {
    /// The stream called `name` under run seed `seed`.
    pub fn new(seed: u64, name: &str) -> Self {
        Self {
            rng: Pcg64Mcg::seed_from_u64(stream_seed(seed, name)),
        }
    }

    /// A raw 64-bit draw.
    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    #[inline]
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: safe to take a logarithm of.
    #[inline]
    pub(crate) fn uniform_open0(&mut self) -> f64 {
        1.0 - self.uniform()
    }

    /// True with probability `p`.
    #[inline]
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (p >= 1.0 || self.uniform() < p)
    }

    /// Uniform integer in [0, n); 0 when n is 0. Uses Lemire's multiply-shift (bias below 2^-32
    /// for the small n a mesh uses).
    #[inline]
    pub(crate) fn below(&mut self, n: u32) -> u32 {
        ((self.next_u64() >> 32).wrapping_mul(u64::from(n)) >> 32) as u32
    }

    /// Exponential with the given mean.
    #[inline]
    pub(crate) fn exp(&mut self, mean: f64) -> f64 {
        -mean * self.uniform_open0().ln()
    }

    /// Standard normal (Box-Muller; one of the pair is discarded to keep the stream stateless).
    #[inline]
    pub(crate) fn std_normal(&mut self) -> f64 {
        let u1 = self.uniform_open0();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_streams_do_not_depend_on_each_other() {
        let mut a1 = Stream::new(7, "arrivals");
        let _other = Stream::new(7, "a-new-component");
        let mut a2 = Stream::new(7, "arrivals");
        assert_eq!(a1.next_u64(), a2.next_u64());
        assert_ne!(
            Stream::new(7, "x").next_u64(),
            Stream::new(8, "x").next_u64()
        );
    }

    #[test]
    fn below_stays_in_range() {
        let mut s = Stream::new(1, "t");
        for n in 1..50 {
            for _ in 0..100 {
                assert!(s.below(n) < n);
            }
        }
    }
}
