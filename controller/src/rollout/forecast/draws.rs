//! Random counts for a forecast's recommended deadline: the same rollout on Poisson arrivals
//! (failures, successes and each latency bucket are independent Poisson counts, as thinned
//! arrivals are), so the deadline covers the spread of the evidence's arrival and not only its
//! average. A fixed seed per draw keeps the forecast deterministic.

use crate::analysis::{Counts, Histogram};

/// Random runs behind `Forecast::deadline_needed`, and the share of them it must cover.
pub(super) const DRAWS: u64 = 40;
pub(super) const COVERED: f64 = 0.95;

/// A small deterministic generator (splitmix64): the forecast must not depend on the process.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A Poisson count of this mean: exact below 30, a rounded normal above (close enough
    /// for a forecast's spread, and bounded in cost).
    pub(super) fn poisson(&mut self, mean: f64) -> f64 {
        if mean.is_nan() || mean <= 0.0 {
            return 0.0;
        }
        if mean < 30.0 {
            let limit = (-mean).exp();
            let (mut k, mut p) = (0.0, self.uniform());
            while p > limit {
                k += 1.0;
                p *= self.uniform();
            }
            return k;
        }
        let z = (-2.0 * self.uniform().ln()).sqrt()
            * (2.0 * std::f64::consts::PI * self.uniform()).cos();
        (mean + mean.sqrt() * z + 0.5).floor().max(0.0)
    }
}

/// One side's counts since its step began, drawn look by look.
#[derive(Default)]
pub(super) struct Side {
    pub(super) counts: Counts,
    /// Per-bucket (not cumulative) latency observations.
    buckets: Vec<f64>,
}

impl Side {
    /// Adds `mean` requests' worth of Poisson arrivals failing at `error_rate`, spread over
    /// the latency buckets by `shares` (each bucket's share of requests) if given.
    pub(super) fn add(&mut self, rng: &mut Rng, mean: f64, error_rate: f64, shares: &[f64]) {
        let failures = rng.poisson(mean * error_rate);
        let successes = rng.poisson(mean * (1.0 - error_rate));
        self.counts.failures += failures;
        self.counts.requests += failures + successes;
        self.buckets.resize(shares.len(), 0.0);
        for (b, s) in self.buckets.iter_mut().zip(shares) {
            *b += rng.poisson(mean * s);
        }
    }

    pub(super) fn histogram(&self, bounds: &[f64]) -> Histogram {
        let cumulative = self
            .buckets
            .iter()
            .scan(0.0, |sum, b| {
                *sum += b;
                Some(*sum)
            })
            .collect();
        Histogram {
            bounds: bounds.to_vec(),
            cumulative,
        }
    }
}

/// The value at or above `share` of `values` (the nearest rank).
pub(super) fn percentile(mut values: Vec<u64>, share: f64) -> Option<u64> {
    values.sort_unstable();
    let rank = ((share * values.len() as f64).ceil() as usize).max(1);
    values.get(rank - 1).copied()
}
