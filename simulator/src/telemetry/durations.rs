//! The durations clients saw, kept finely enough to read their percentiles as seen rather than
//! off Istio's coarse buckets (a request of 3 s falls in the 2.5-5 s bucket, which
//! `histogram_quantile` reads as up to 4975 ms). Log-linear bins: exact below 128 ns, then 128
//! bins per power of two, so a percentile is within 0.4% of the duration it stands for; memory
//! grows with the longest duration's bin, not with the number of requests.

use super::Telemetry;
use crate::engine::{MILLIS, SimTime};

/// Bins per power of two (and the durations below it, in ns, binned exactly).
const SUB: u64 = 128;
const SUB_BITS: u32 = SUB.trailing_zeros();

/// Counts of durations by log-linear bin.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Durations {
    bins: Vec<u64>,
    count: u64,
}

/// The bin of `d` ns.
fn bin(d: SimTime) -> usize {
    if d < SUB {
        return d as usize;
    }
    let e = 63 - d.leading_zeros(); // >= SUB_BITS
    let shift = e - SUB_BITS;
    let sub = (d >> shift) - SUB; // the bits below the leading one, 0..SUB
    ((u64::from(shift) + 1) * SUB + sub) as usize
}

/// The duration (ns) bin `i` stands for: its exact value, or its midpoint.
fn value(i: usize) -> f64 {
    let i = i as u64;
    if i < SUB {
        return i as f64;
    }
    let shift = i / SUB - 1;
    let low = (SUB + i % SUB) << shift;
    low as f64 + ((1u64 << shift) as f64 - 1.0) / 2.0
}

impl Durations {
    /// Counts one duration of `d` ns.
    #[inline]
    pub(crate) fn record(&mut self, d: SimTime) {
        let b = bin(d);
        if b >= self.bins.len() {
            self.bins.resize(b + 1, 0);
        }
        self.bins[b] += 1;
        self.count += 1;
    }

    /// Adds `other`'s durations to these.
    pub(crate) fn merge(&mut self, other: &Durations) {
        if other.bins.len() > self.bins.len() {
            self.bins.resize(other.bins.len(), 0);
        }
        for (a, b) in self.bins.iter_mut().zip(&other.bins) {
            *a += b;
        }
        self.count += other.count;
    }

    /// The `q` quantile in milliseconds, nearest rank: the least duration at or above which
    /// lies a share `1 - q` of those counted. None when none are.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        let i = self.bins.iter().position(|&n| {
            seen += n;
            seen >= rank
        })?;
        Some(value(i) / MILLIS as f64)
    }
}

impl Telemetry {
    /// The durations reporter `source` recorded since the start for `source` (or every
    /// source) and `dest` (or every destination), as the clients saw them.
    pub(crate) fn seen(&self, source: Option<u32>, dest: Option<u32>) -> Durations {
        let mut all = Durations::default();
        let n = self.dests.len();
        for (i, d) in self.seen.iter().enumerate() {
            let (s, t) = ((i / n) as u32, (i % n) as u32);
            if source.is_none_or(|x| x == s) && dest.is_none_or(|x| x == t) {
                all.merge(d);
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SECONDS;

    #[test]
    fn every_duration_is_read_back_within_half_a_bin() {
        for d in [
            0,
            1,
            127,
            128,
            129,
            255,
            256,
            1_000,
            999_999,
            3 * SECONDS,
            7 * SECONDS + 1,
        ] {
            let v = value(bin(d));
            let err = (v - d as f64).abs() / (d as f64).max(1.0);
            assert!(err <= 0.004, "{d} reads {v}");
        }
        // Bins are in order and cover every duration once.
        let mut last = 0;
        for d in (0..100_000).chain([u64::MAX / 2, u64::MAX]) {
            let b = bin(d);
            assert!(b >= last, "{d}");
            last = b;
        }
    }

    #[test]
    fn a_percentile_is_the_nearest_rank_of_the_durations_counted() {
        let mut d = Durations::default();
        assert_eq!(d.quantile_ms(0.99), None);
        for i in 1..=100 {
            d.record(i * MILLIS);
        }
        let p99 = d.quantile_ms(0.99).unwrap();
        assert!((p99 - 99.0).abs() < 0.4, "{p99}");
        let p50 = d.quantile_ms(0.5).unwrap();
        assert!((p50 - 50.0).abs() < 0.2, "{p50}");
        let mut three = Durations::default();
        (0..10).for_each(|_| three.record(3 * SECONDS));
        three.merge(&d);
        assert_eq!(three.count, 110);
        let p99 = three.quantile_ms(0.99).unwrap();
        assert!((p99 - 3000.0).abs() < 12.0, "{p99}");
    }
}
