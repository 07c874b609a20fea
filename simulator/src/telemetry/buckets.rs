//! Istio's request-duration buckets and what is read off them: the window aggregates and
//! Prometheus' `histogram_quantile`.

use fledge_controller::analysis::ISTIO_DURATION_BOUNDS_MS;

use crate::engine::MILLIS;

/// Istio's default buckets for `istio_request_duration_milliseconds`, in milliseconds: the
/// controller's bounds without their `+Inf`.
pub const DURATION_BUCKETS_MS: [f64; NUM_BUCKETS - 1] = finite_bounds();
/// Number of buckets including `+Inf`.
pub const NUM_BUCKETS: usize = ISTIO_DURATION_BOUNDS_MS.len();

// The controller's last bound is `+Inf`: the store counts it as its overflow bucket.
const _: () = assert!(ISTIO_DURATION_BOUNDS_MS[NUM_BUCKETS - 1] == f64::INFINITY);

/// The controller's bounds but the last.
const fn finite_bounds() -> [f64; NUM_BUCKETS - 1] {
    let mut b = [0.0; NUM_BUCKETS - 1];
    let mut i = 0;
    while i < b.len() {
        b[i] = ISTIO_DURATION_BOUNDS_MS[i];
        i += 1;
    }
    b
}

/// Bucket bounds in nanoseconds, for a branch-light bucket search.
pub(super) fn bucket_bounds_ns() -> [u64; DURATION_BUCKETS_MS.len()] {
    let mut b = [0u64; DURATION_BUCKETS_MS.len()];
    for (i, ms) in DURATION_BUCKETS_MS.iter().enumerate() {
        b[i] = (ms * MILLIS as f64) as u64;
    }
    b
}

/// Aggregated request metrics over a window (or since the start).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowStats {
    /// Requests (`istio_requests_total` increase).
    pub requests: u64,
    /// Requests answered with a 5xx code.
    pub failures: u64,
    /// Requests answered with a 4xx code (the client's error: Flagger's success rate counts
    /// them as successes, Kiali's edges as errors).
    pub client_errors: u64,
    /// Sum of durations in milliseconds.
    pub duration_sum_ms: f64,
    /// Non-cumulative bucket counts; the last is `+Inf`.
    pub buckets: [u64; NUM_BUCKETS],
}

impl WindowStats {
    /// Fraction of non-5xx responses, `None` without traffic.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| 1.0 - self.failures as f64 / self.requests as f64)
    }

    /// Quantile in milliseconds interpolated within buckets like Prometheus `histogram_quantile`.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        histogram_quantile(q, &self.buckets)
    }

    /// Mean duration in milliseconds.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.duration_sum_ms / self.requests as f64)
    }
}

/// Prometheus `histogram_quantile` on non-cumulative buckets with Istio's bounds.
pub fn histogram_quantile(q: f64, buckets: &[u64; NUM_BUCKETS]) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total as f64;
    let mut cum = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        let prev = cum;
        cum += n;
        if cum as f64 >= rank && n > 0 {
            if i == NUM_BUCKETS - 1 {
                // Like Prometheus: a quantile in the +Inf bucket is the highest finite bound.
                return Some(DURATION_BUCKETS_MS[NUM_BUCKETS - 2]);
            }
            let upper = DURATION_BUCKETS_MS[i];
            let lower = if i == 0 {
                0.0
            } else {
                DURATION_BUCKETS_MS[i - 1]
            };
            return Some(lower + (upper - lower) * (rank - prev as f64) / n as f64);
        }
    }
    Some(DURATION_BUCKETS_MS[NUM_BUCKETS - 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_inside_the_bucket_like_prometheus() {
        let mut b = [0u64; NUM_BUCKETS];
        b[3] = 100; // (5, 10] ms
        assert_eq!(histogram_quantile(0.5, &b), Some(7.5));
        assert_eq!(histogram_quantile(1.0, &b), Some(10.0));
        let empty = [0u64; NUM_BUCKETS];
        assert_eq!(histogram_quantile(0.99, &empty), None);
    }
}
