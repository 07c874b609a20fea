//! Latency: the Mann-Whitney U test computed from Prometheus histogram buckets.
//!
//! Kayenta judges latency with a Mann-Whitney U (Wilcoxon rank-sum) test on raw samples.
//! Prometheus has no samples, only cumulative counts per bucket (`le`). Treating every observation
//! in a bucket as tied at that bucket is exactly what the buckets let us know, and U then has a
//! closed form over the buckets (no expansion into samples, so the cost is the number of buckets
//! whatever the traffic):
//!
//! ```text
//! U = sum over buckets i of a_i * (B_<i + b_i / 2)
//! ```
//!
//! where `a_i` and `b_i` are the canary's and primary's counts in bucket `i` and `B_<i` the
//! primary's count below it: every canary observation beats every primary one in a lower bucket
//! and ties half with those in its own. Under "same distribution" U has mean `n1 n2 / 2` and the
//! tie-corrected variance `n1 n2 / 12 * (N + 1 - sum(t^3 - t) / (N (N - 1)))` with `t` the bucket
//! totals (Lehmann, "Nonparametrics", 1975, §1.4), and `(U - mean) / sd` is close to a standard
//! normal once both sides have a few tens of observations (continuity-corrected here). `U / (n1 n2)`
//! is the common-language effect size `P(X > Y) + P(X = Y) / 2` (McGraw & Wong 1992).
//!
//! Classification follows Kayenta's MannWhitneyClassifier: High when the test says the canary is
//! slower at the confidence level (0.98 two-sided, as Kayenta) *and* the effect size reaches the
//! allowed increase; Low the mirror image; Pass otherwise; NoData when there is nothing to compare.
//! statrs' own `mannwhitneyu` is not used: its exact p-value is wrong when the first sample is the
//! smaller (see shared/reference/stack.md), and it needs samples.
//!
//! The test is fixed-horizon, like Kayenta's: judged again at every tick, its false-High rate
//! grows with the number of looks. [`always_valid_level`] spends the level across looks so that
//! the chance of *any* false High over the whole rollout stays within the configured level.

use std::fmt;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};
use thiserror::Error;

use super::Histogram;

/// Largest decrease between consecutive cumulative counts, relative to the total, taken as
/// floating-point noise of `rate()`/`sum()` and clamped to zero (Prometheus' `histogram_quantile`
/// forces monotonicity the same way); anything larger is an error.
const MONOTONIC_TOLERANCE: f64 = 1e-6;

/// Most observations the test accepts (2^53: counts stay exact and the tie term finite).
const MAX_OBSERVATIONS: f64 = 9_007_199_254_740_992.0;

/// Why a histogram cannot be used.
#[derive(Clone, Debug, Error, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum HistogramError {
    #[error("{bounds} bucket bounds but {counts} counts")]
    LengthMismatch { bounds: usize, counts: usize },
    #[error("no buckets")]
    NoBuckets,
    #[error("bucket bound {bound} is not a number")]
    BoundNotANumber { bound: f64 },
    #[error("bucket bound {bound} appears twice")]
    DuplicateBound { bound: f64 },
    #[error("the last bucket bound is {bound}; expected +Inf")]
    NoInfBucket { bound: f64 },
    #[error("only the +Inf bucket; a latency histogram needs finite bounds too")]
    OnlyInfBucket,
    #[error("count {value} at le={le} is not a finite count at least 0")]
    NotACount { le: f64, value: f64 },
    #[error("cumulative count goes down from {before} to {after} at le={le}")]
    CumulativeDecreases { le: f64, before: f64, after: f64 },
}

/// Why two histograms cannot be compared.
#[derive(Clone, Debug, Error, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum CompareError {
    #[error("canary histogram: {0}")]
    Canary(HistogramError),
    #[error("primary histogram: {0}")]
    Primary(HistogramError),
    /// Different `le` sets usually mean different metrics or units (seconds against
    /// milliseconds), which no re-bucketing can repair.
    #[error("canary and primary have different bucket bounds ({canary:?} vs {primary:?})")]
    BoundsDiffer { canary: Vec<f64>, primary: Vec<f64> },
    #[error("no observations on the {side} side")]
    NoObservations { side: String },
    /// Beyond 2^53 observations counts are no longer exact in `f64`; no real window has that many.
    #[error("{total} observations in all; expected at most 2^53")]
    TooManyObservations { total: f64 },
}

/// A validated histogram: bucket upper bounds, increasing and ending at `+Inf`, with the count of
/// observations in each bucket (not cumulative).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Buckets {
    bounds: Vec<f64>,
    counts: Vec<f64>,
}

impl Buckets {
    /// Per-bucket counts from Prometheus' cumulative `le` buckets (in any order).
    pub fn from_cumulative(bounds: &[f64], cumulative: &[f64]) -> Result<Self, HistogramError> {
        if bounds.len() != cumulative.len() {
            return Err(HistogramError::LengthMismatch {
                bounds: bounds.len(),
                counts: cumulative.len(),
            });
        }
        let mut pairs: Vec<(f64, f64)> = bounds
            .iter()
            .copied()
            .zip(cumulative.iter().copied())
            .collect();
        if let Some(&(bound, _)) = pairs.iter().find(|(b, _)| b.is_nan()) {
            return Err(HistogramError::BoundNotANumber { bound });
        }
        if let Some(&(le, value)) = pairs.iter().find(|(_, c)| !(c.is_finite() && *c >= 0.0)) {
            return Err(HistogramError::NotACount { le, value });
        }
        pairs.sort_by(|x, y| x.0.total_cmp(&y.0));
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(HistogramError::DuplicateBound { bound: w[0].0 });
        }
        match pairs.last() {
            None => return Err(HistogramError::NoBuckets),
            Some(&(bound, _)) if bound != f64::INFINITY => {
                return Err(HistogramError::NoInfBucket { bound });
            }
            Some(_) if pairs.len() < 2 => return Err(HistogramError::OnlyInfBucket),
            Some(_) => {}
        }
        let total = pairs.last().map_or(0.0, |p| p.1);
        let tolerance = MONOTONIC_TOLERANCE * total.max(1.0);
        let mut counts = Vec::with_capacity(pairs.len());
        let mut below = 0.0;
        for &(le, cumulative) in &pairs {
            if cumulative < below - tolerance {
                return Err(HistogramError::CumulativeDecreases {
                    le,
                    before: below,
                    after: cumulative,
                });
            }
            let cumulative = cumulative.max(below);
            counts.push(cumulative - below);
            below = cumulative;
        }
        Ok(Buckets {
            bounds: pairs.into_iter().map(|p| p.0).collect(),
            counts,
        })
    }

    /// From the controller's [`Histogram`] reading.
    pub fn from_histogram(histogram: &Histogram) -> Result<Self, HistogramError> {
        Buckets::from_cumulative(&histogram.bounds, &histogram.cumulative)
    }

    /// Upper bounds (`le`), increasing, the last `+Inf`.
    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    /// Observations in each bucket.
    pub fn counts(&self) -> &[f64] {
        &self.counts
    }

    /// All observations.
    pub fn total(&self) -> f64 {
        self.counts.iter().sum()
    }

    /// The `q`-quantile interpolated as Prometheus' `histogram_quantile` does: linearly within
    /// the bucket holding rank `q * total`, the first bucket starting at 0 (unless its bound is
    /// not positive, then that bound is the answer), and the `+Inf` bucket answered by the
    /// highest finite bound. `None` where Prometheus gives NaN (no observations, fewer than two
    /// buckets, `q` not a number) or ±Inf (`q` outside [0, 1]).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if !(0.0..=1.0).contains(&q) || self.bounds.len() < 2 || total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let last = self.bounds.len() - 1;
        let mut below = 0.0;
        // First bucket whose cumulative count reaches the rank, as Prometheus' sort.Search over
        // all but the +Inf bucket.
        let mut found = last;
        for (i, &count) in self.counts[..last].iter().enumerate() {
            if below + count >= rank {
                found = i;
                break;
            }
            below += count;
        }
        if found == last {
            return Some(self.bounds[last - 1]);
        }
        if found == 0 && self.bounds[0] <= 0.0 {
            return Some(self.bounds[0]);
        }
        let start = if found == 0 {
            0.0
        } else {
            self.bounds[found - 1]
        };
        let end = self.bounds[found];
        let count = self.counts[found];
        if count <= 0.0 {
            // Rank 0 in an empty first bucket: Prometheus computes 0/0; the bucket's start is
            // the meaningful answer.
            return Some(start);
        }
        Some(start + (end - start) * ((rank - below) / count))
    }
}

/// The Mann-Whitney U test of canary against primary.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UTest {
    /// U of the canary: pairs (canary, primary) where the canary is slower, ties counting half.
    pub u: f64,
    pub n_canary: f64,
    pub n_primary: f64,
    /// Mean and tie-corrected standard deviation of U when both come from one distribution.
    pub mean: f64,
    pub sd: f64,
    /// Continuity-corrected normal score; positive when the canary is slower.
    pub z: f64,
    /// One-sided p-values (canary slower, canary faster) and the two-sided one.
    pub p_canary_higher: f64,
    pub p_canary_lower: f64,
    pub p_two_sided: f64,
    /// Common-language effect size `P(canary > primary) + P(equal) / 2`: 0.5 is no difference.
    pub cles: f64,
}

/// Runs the test on two validated histograms with the same bucket bounds.
pub fn u_test(canary: &Buckets, primary: &Buckets) -> Result<UTest, CompareError> {
    if canary.bounds != primary.bounds {
        return Err(CompareError::BoundsDiffer {
            canary: canary.bounds.clone(),
            primary: primary.bounds.clone(),
        });
    }
    let (n1, n2) = (canary.total(), primary.total());
    for (side, n) in [("canary", n1), ("primary", n2)] {
        if n <= 0.0 {
            return Err(CompareError::NoObservations {
                side: side.to_string(),
            });
        }
    }
    if n1 + n2 > MAX_OBSERVATIONS {
        return Err(CompareError::TooManyObservations { total: n1 + n2 });
    }
    let mut u = 0.0;
    let mut primary_below = 0.0;
    let mut ties = 0.0;
    for (&a, &b) in canary.counts.iter().zip(&primary.counts) {
        u += a * (primary_below + 0.5 * b);
        primary_below += b;
        let t = a + b;
        ties += t * t * t - t;
    }
    let big_n = n1 + n2;
    let mean = 0.5 * n1 * n2;
    let variance = if big_n > 1.0 {
        n1 * n2 / 12.0 * ((big_n + 1.0) - ties / (big_n * (big_n - 1.0)))
    } else {
        0.0
    };
    let sd = variance.max(0.0).sqrt();
    let normal = Normal::standard();
    let diff = u - mean;
    // With every observation tied (one bucket), U is its mean and nothing can be concluded.
    let (z, p_higher, p_lower) = if sd > 0.0 && sd.is_finite() {
        let z = diff.signum() * (diff.abs() - 0.5).max(0.0) / sd;
        (
            z,
            normal.sf((diff - 0.5) / sd),
            normal.cdf((diff + 0.5) / sd),
        )
    } else {
        (0.0, 1.0, 1.0)
    };
    Ok(UTest {
        u,
        n_canary: n1,
        n_primary: n2,
        mean,
        sd,
        z,
        p_canary_higher: p_higher.min(1.0),
        p_canary_lower: p_lower.min(1.0),
        p_two_sided: (2.0 * p_higher.min(p_lower)).min(1.0),
        cles: u / (n1 * n2),
    })
}

/// The per-look confidence level that keeps the chance of any false High or Low over *all*
/// looks within `1 - confidence_level`: look `k` (from 1) is tested at level
/// `(1 - confidence_level) * 6 / (pi^2 k^2)`, whose sum over all looks is
/// `1 - confidence_level` (a union bound, valid however the looks' windows overlap).
pub fn always_valid_level(confidence_level: f64, look: u32) -> f64 {
    let k = f64::from(look.max(1));
    let alpha = (1.0 - confidence_level) * 6.0 / (std::f64::consts::PI.powi(2) * k * k);
    1.0 - alpha
}

/// What to measure the size of a difference with.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum EffectMeasure {
    /// The common-language effect size (Kayenta's `cles`); no difference is 0.5.
    Cles,
    /// Canary's interpolated quantile over primary's (Kayenta's `meanRatio`, on a quantile
    /// because histograms have no exact mean); no difference is 1.
    QuantileRatio { quantile: f64 },
}

/// Which direction of change is a regression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Slower is a regression; a faster canary passes (latency).
    Increase,
    /// Lower is a regression; a higher canary passes (throughput-like metrics).
    Decrease,
    /// Both are flagged (Kayenta's default).
    Either,
}

/// Settings of the latency judge.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyConfig {
    /// Two-sided confidence level of the test. Default 0.98, Kayenta's.
    pub confidence_level: f64,
    pub effect: EffectMeasure,
    /// The smallest increase worth flagging, in the effect measure's unit. Default 1.1 (a
    /// median 10% slower).
    pub allowed_increase: f64,
    /// The largest decrease not worth flagging. Default 1/1.1.
    pub allowed_decrease: f64,
    /// Default `Increase`: a faster canary is not a failure (Kayenta's default is `Either`).
    pub direction: Direction,
    /// Observations each side needs before judging (the normal approximation needs a few tens).
    /// Default 20.
    pub min_count: f64,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        LatencyConfig {
            confidence_level: 0.98,
            effect: EffectMeasure::QuantileRatio { quantile: 0.5 },
            allowed_increase: 1.1,
            allowed_decrease: 1.0 / 1.1,
            direction: Direction::Increase,
            min_count: 20.0,
        }
    }
}

impl LatencyConfig {
    fn problem(&self) -> Option<String> {
        if !(self.confidence_level > 0.0 && self.confidence_level < 1.0) {
            return Some(format!(
                "confidence level {} is not strictly between 0 and 1",
                self.confidence_level
            ));
        }
        if let EffectMeasure::QuantileRatio { quantile } = self.effect
            && !(0.0..=1.0).contains(&quantile)
        {
            return Some(format!("effect quantile {quantile} is not within [0, 1]"));
        }
        if !(self.allowed_increase.is_finite() && self.allowed_decrease.is_finite()) {
            return Some("allowed increase and decrease must be finite".to_string());
        }
        if self.min_count.is_nan() || self.min_count < 1.0 {
            return Some(format!("min count {} is less than 1", self.min_count));
        }
        None
    }
}

/// Kayenta's classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Classification {
    /// The canary is slower, significantly and by at least the allowed increase.
    High,
    /// The canary is faster, significantly and by at least the allowed decrease.
    Low,
    Pass,
    /// Nothing to compare: missing, empty, malformed or mismatched histograms, or too few
    /// observations. Never a reason to promote.
    NoData,
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Classification::High => "high",
            Classification::Low => "low",
            Classification::Pass => "pass",
            Classification::NoData => "no data",
        })
    }
}

/// The latency judge's answer for one tick, with its numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyJudgement {
    pub classification: Classification,
    /// `None` with NoData.
    pub test: Option<UTest>,
    /// The effect size in the configured measure (`None` when it cannot be computed).
    pub effect: Option<f64>,
    /// Interpolated p50 and p99 of canary and primary (as `histogram_quantile`).
    pub canary_p50: Option<f64>,
    pub primary_p50: Option<f64>,
    pub canary_p99: Option<f64>,
    pub primary_p99: Option<f64>,
    pub reason: String,
}

/// Judges the canary's latency histogram against primary's. Never fails: anything that cannot be
/// compared is NoData with the reason.
///
/// Give counts over the window (Prometheus `increase(..._bucket[w])`), not per-second rates: the
/// test's variance depends on the number of observations.
pub fn judge_latency(
    config: &LatencyConfig,
    canary: &Histogram,
    primary: &Histogram,
) -> LatencyJudgement {
    let no_data = |reason: String| LatencyJudgement {
        classification: Classification::NoData,
        test: None,
        effect: None,
        canary_p50: None,
        primary_p50: None,
        canary_p99: None,
        primary_p99: None,
        reason,
    };
    if let Some(problem) = config.problem() {
        return no_data(format!("cannot judge latency: {problem}"));
    }
    let buckets = Buckets::from_histogram(canary)
        .map_err(CompareError::Canary)
        .and_then(|c| {
            Ok((
                c,
                Buckets::from_histogram(primary).map_err(CompareError::Primary)?,
            ))
        });
    let (canary, primary) = match buckets {
        Ok(pair) => pair,
        Err(e) => return no_data(format!("cannot compare latency: {e}")),
    };
    let test = match u_test(&canary, &primary) {
        Ok(test) => test,
        Err(e) => return no_data(format!("cannot compare latency: {e}")),
    };
    let last = canary.counts.len() - 1;
    if canary.counts[last] == test.n_canary && primary.counts[last] == test.n_primary {
        return no_data(format!(
            "cannot compare latency: every observation is above the largest finite bucket bound {}",
            canary.bounds[last - 1]
        ));
    }
    let quantiles = |q: f64| (canary.quantile(q), primary.quantile(q));
    let (canary_p50, primary_p50) = quantiles(0.5);
    let (canary_p99, primary_p99) = quantiles(0.99);
    if test.n_canary < config.min_count || test.n_primary < config.min_count {
        return LatencyJudgement {
            test: Some(test),
            canary_p50,
            primary_p50,
            canary_p99,
            primary_p99,
            ..no_data(format!(
                "not enough observations to judge latency: canary {}, primary {}, need {} each",
                count(test.n_canary),
                count(test.n_primary),
                count(config.min_count)
            ))
        };
    }
    let effect = match config.effect {
        EffectMeasure::Cles => Some(test.cles),
        EffectMeasure::QuantileRatio { quantile } => {
            let (c, p) = quantiles(quantile);
            c.zip(p).map(|(c, p)| ratio(c, p))
        }
    };
    let alpha = 1.0 - config.confidence_level;
    let significant = test.p_two_sided < alpha;
    let slower = test.u > test.mean;
    let raw = match effect {
        Some(e) if significant && slower && e >= config.allowed_increase => Classification::High,
        Some(e) if significant && !slower && e <= config.allowed_decrease => Classification::Low,
        _ => Classification::Pass,
    };
    let classification = match (raw, config.direction) {
        (Classification::Low, Direction::Increase)
        | (Classification::High, Direction::Decrease) => Classification::Pass,
        (c, _) => c,
    };
    let effect_text = match (config.effect, effect) {
        (EffectMeasure::Cles, Some(e)) => format!("CLES {e:.3}"),
        (EffectMeasure::QuantileRatio { quantile }, Some(e)) => {
            format!("p{} ratio {e:.3}", quantile_name(quantile))
        }
        (_, None) => "effect size unavailable".to_string(),
    };
    let verdict = match (classification, raw) {
        (Classification::High, _) => "canary slower than primary",
        (Classification::Low, _) => "canary faster than primary",
        (_, Classification::Low) => "canary faster than primary (not a regression)",
        (_, Classification::High) => "canary higher than primary (not a regression)",
        _ => "no significant difference worth flagging",
    };
    let reason = format!(
        "{verdict}: Mann-Whitney U {} of {} pairs, z {:.2}, two-sided p {} (flags below {}), CLES {:.3}, {effect_text} (flags from {:.3} up or {:.3} down); p50 canary {} vs primary {}, p99 canary {} vs primary {}",
        count(test.u),
        count(test.n_canary * test.n_primary),
        test.z,
        probability(test.p_two_sided),
        probability(alpha),
        test.cles,
        config.allowed_increase,
        config.allowed_decrease,
        value(canary_p50),
        value(primary_p50),
        value(canary_p99),
        value(primary_p99),
    );
    LatencyJudgement {
        classification,
        test: Some(test),
        effect,
        canary_p50,
        primary_p50,
        canary_p99,
        primary_p99,
        reason,
    }
}

/// Canary over primary; equal values (0 and 0 included) are a ratio of 1.
fn ratio(canary: f64, primary: f64) -> f64 {
    if canary == primary {
        1.0
    } else if primary > 0.0 {
        canary / primary
    } else if canary > primary {
        f64::INFINITY
    } else {
        0.0
    }
}

fn quantile_name(q: f64) -> String {
    let percent = 100.0 * q;
    if percent == percent.round() {
        format!("{percent:.0}")
    } else {
        format!("{percent}")
    }
}

fn count(x: f64) -> String {
    if x == x.round() {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn probability(p: f64) -> String {
    if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}

fn value(x: Option<f64>) -> String {
    x.map_or_else(
        || "n/a".to_string(),
        |x| {
            format!("{x:.4}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const INF: f64 = f64::INFINITY;

    fn histogram(bounds: &[f64], per_bucket: &[f64]) -> Histogram {
        let mut running = 0.0;
        let cumulative = per_bucket
            .iter()
            .map(|c| {
                running += c;
                running
            })
            .collect();
        Histogram {
            bounds: bounds.to_vec(),
            cumulative,
        }
    }

    fn buckets(bounds: &[f64], per_bucket: &[f64]) -> Buckets {
        Buckets::from_histogram(&histogram(bounds, per_bucket)).unwrap()
    }

    /// U by comparing every expanded pair: bucket index stands for the value.
    fn brute_force_u(canary: &[u32], primary: &[u32]) -> f64 {
        let expand = |counts: &[u32]| -> Vec<usize> {
            counts
                .iter()
                .enumerate()
                .flat_map(|(i, &c)| std::iter::repeat_n(i, c as usize))
                .collect()
        };
        let (xs, ys) = (expand(canary), expand(primary));
        let mut u = 0.0;
        for x in &xs {
            for y in &ys {
                u += if x > y {
                    1.0
                } else if x == y {
                    0.5
                } else {
                    0.0
                };
            }
        }
        u
    }

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn hand_worked_three_against_three_with_ties() {
        // le:        10   20  +Inf
        // canary:     0    2    1      n1 = 3
        // primary:    2    1    0      n2 = 3
        // U = 0*(0 + 2/2) + 2*(2 + 1/2) + 1*(3 + 0/2) = 5 + 3 = 8       (of n1 n2 = 9 pairs)
        // mean = 9/2 = 4.5; bucket totals t = 2, 3, 1:
        // sum(t^3 - t) = 6 + 24 + 0 = 30; N = 6, N(N-1) = 30
        // var = 9/12 * (7 - 30/30) = 0.75 * 6 = 4.5, sd = 2.1213
        // z = (8 - 4.5 - 0.5) / 2.1213 = 1.4142; one-sided p = 1 - Phi(1.4142) = 0.0786
        // CLES = 8/9 = 0.8889
        let t = u_test(
            &buckets(&[10.0, 20.0, INF], &[0.0, 2.0, 1.0]),
            &buckets(&[10.0, 20.0, INF], &[2.0, 1.0, 0.0]),
        )
        .unwrap();
        assert_eq!(t.u, 8.0);
        assert_eq!(t.u, brute_force_u(&[0, 2, 1], &[2, 1, 0]));
        assert_eq!(t.mean, 4.5);
        assert!(close(t.sd, 4.5f64.sqrt(), 1e-12));
        assert!(close(t.z, 2.0f64.sqrt(), 1e-12));
        assert!(
            close(t.p_canary_higher, 0.0786, 1e-4),
            "{}",
            t.p_canary_higher
        );
        assert!(close(t.p_two_sided, 0.1573, 1e-4), "{}", t.p_two_sided);
        assert!(close(t.cles, 8.0 / 9.0, 1e-12));
    }

    #[test]
    fn hand_worked_complete_separation_is_high() {
        // le:       1    2    4    8  +Inf
        // canary:   0    0    0   10    0     all between 4 and 8 ms
        // primary:  0   10    0    0    0     all between 1 and 2 ms
        // U = 10 * (10 + 0) = 100 = n1 n2, mean 50, CLES 1
        // ties: 2 * (10^3 - 10) = 1980; N = 20, N(N-1) = 380
        // var = 100/12 * (21 - 1980/380) = 8.3333 * 15.7895 = 131.58, sd = 11.471
        // z = (100 - 50 - 0.5) / 11.471 = 4.3153, two-sided p = 1.6e-5
        // p50: canary 4 + 4 * (5/10) = 6, primary 1 + 1 * (5/10) = 1.5, ratio 4
        let bounds = [1.0, 2.0, 4.0, 8.0, INF];
        let canary = histogram(&bounds, &[0.0, 0.0, 0.0, 10.0, 0.0]);
        let primary = histogram(&bounds, &[0.0, 10.0, 0.0, 0.0, 0.0]);
        let config = LatencyConfig {
            min_count: 10.0,
            ..LatencyConfig::default()
        };
        let j = judge_latency(&config, &canary, &primary);
        let t = j.test.unwrap();
        assert_eq!((t.u, t.mean, t.cles), (100.0, 50.0, 1.0));
        assert!(close(
            t.sd,
            (100.0 / 12.0 * (21.0 - 1980.0 / 380.0f64)).sqrt(),
            1e-12
        ));
        assert!(close(t.z, 4.3153, 1e-4), "{}", t.z);
        assert!(close(t.p_two_sided, 1.6e-5, 0.1e-5), "{}", t.p_two_sided);
        assert_eq!(
            (j.canary_p50, j.primary_p50, j.effect),
            (Some(6.0), Some(1.5), Some(4.0))
        );
        assert_eq!(j.classification, Classification::High);
        assert!(
            j.reason
                .starts_with("canary slower than primary: Mann-Whitney U 100 of 100 pairs, z 4.32"),
            "{}",
            j.reason
        );
    }

    #[test]
    fn hand_worked_identical_histograms_pass_with_u_at_its_mean() {
        // le:       100  200  +Inf
        // both:       3    5    2        n1 = n2 = 10
        // U = 3*(0 + 3/2) + 5*(3 + 5/2) + 2*(8 + 2/2) = 4.5 + 27.5 + 18 = 50 = 10*10/2
        // |U - mean| = 0 < 0.5, so z = 0; each one-sided p is Phi(0.5/sd) > 1/2, two-sided p = 1
        // p99: rank 9.9 > 8 (cumulative below +Inf), so it is the +Inf bucket: 200, Prometheus' answer.
        let bounds = [100.0, 200.0, INF];
        let h = histogram(&bounds, &[3.0, 5.0, 2.0]);
        let config = LatencyConfig {
            min_count: 10.0,
            ..LatencyConfig::default()
        };
        let j = judge_latency(&config, &h, &h);
        let t = j.test.unwrap();
        assert_eq!((t.u, t.mean, t.z, t.cles), (50.0, 50.0, 0.0, 0.5));
        assert_eq!(t.p_two_sided, 1.0);
        assert_eq!((j.canary_p99, j.effect), (Some(200.0), Some(1.0)));
        assert_eq!(j.classification, Classification::Pass);
    }

    #[test]
    fn hand_worked_quantiles_match_histogram_quantile() {
        // Prometheus' own test histogram: le 0.1, 0.2, 1, +Inf with cumulative 50, 70, 110, 120.
        // p50: rank 60 falls in (0.1, 0.2] holding 20, 10 past its start: 0.1 + 0.1 * 10/20 = 0.15
        // p90: rank 108 falls in (0.2, 1] holding 40, 38 past: 0.2 + 0.8 * 38/40 = 0.96
        // p95: rank 114 > 110, the +Inf bucket: the highest finite bound, 1
        // p10: rank 12 in the first bucket, starting at 0: 0.1 * 12/50 = 0.024
        let b =
            Buckets::from_cumulative(&[0.1, 0.2, 1.0, INF], &[50.0, 70.0, 110.0, 120.0]).unwrap();
        assert!(close(b.quantile(0.5).unwrap(), 0.15, 1e-12));
        assert!(close(b.quantile(0.9).unwrap(), 0.96, 1e-12));
        assert_eq!(b.quantile(0.95), Some(1.0));
        assert!(close(b.quantile(0.1).unwrap(), 0.024, 1e-12));
        assert_eq!(b.quantile(1.5), None);
        assert_eq!(b.quantile(f64::NAN), None);
        // A first bound at or below zero is its own answer, as in Prometheus.
        let negative =
            Buckets::from_cumulative(&[-0.2, -0.1, 0.3, INF], &[10.0, 20.0, 20.0, 30.0]).unwrap();
        assert_eq!(negative.quantile(0.2), Some(-0.2));
    }

    #[test]
    fn buckets_arrive_in_any_order_and_become_per_bucket_counts() {
        let b = Buckets::from_cumulative(&[INF, 0.2, 0.1], &[120.0, 70.0, 50.0]).unwrap();
        assert_eq!(b.bounds(), &[0.1, 0.2, INF]);
        assert_eq!(b.counts(), &[50.0, 20.0, 50.0]);
        assert_eq!(b.total(), 120.0);
    }

    #[test]
    fn malformed_histograms_are_errors_not_panics() {
        let cases: [(&[f64], &[f64]); 8] = [
            (&[1.0, INF], &[1.0]),
            (&[INF], &[5.0]),
            (&[], &[]),
            (&[1.0, 2.0], &[1.0, 2.0]),
            (&[f64::NAN, INF], &[1.0, 2.0]),
            (&[1.0, 1.0, INF], &[1.0, 1.0, 2.0]),
            (&[1.0, INF], &[-1.0, 2.0]),
            (&[1.0, 2.0, INF], &[5.0, 3.0, 6.0]),
        ];
        for (bounds, cumulative) in cases {
            assert!(
                Buckets::from_cumulative(bounds, cumulative).is_err(),
                "{bounds:?} {cumulative:?}"
            );
        }
    }

    #[test]
    fn floating_point_noise_in_cumulative_counts_is_clamped() {
        let b = Buckets::from_cumulative(&[1.0, 2.0, INF], &[100.0, 99.99999999, 150.0]).unwrap();
        assert_eq!(b.counts(), &[100.0, 0.0, 50.0]);
    }

    #[test]
    fn bad_inputs_are_no_data_with_the_reason() {
        let good = histogram(&[1.0, 2.0, INF], &[30.0, 30.0, 0.0]);
        let config = LatencyConfig::default();
        let cases = [
            (
                histogram(&[1.0, 2.0, INF], &[0.0, 0.0, 0.0]),
                "no observations on the canary side",
            ),
            (Histogram::default(), "canary histogram: no buckets"),
            (
                histogram(&[0.001, 0.002, INF], &[30.0, 30.0, 0.0]),
                "different bucket bounds",
            ),
            (
                histogram(&[1.0, 2.0, INF], &[f64::NAN, 1.0, 1.0]),
                "is not a finite count",
            ),
            (
                histogram(&[1.0, 2.0, INF], &[5.0, 5.0, 0.0]),
                "not enough observations to judge latency: canary 10",
            ),
        ];
        for (canary, expected) in cases {
            let j = judge_latency(&config, &canary, &good);
            assert_eq!(j.classification, Classification::NoData);
            assert!(
                j.reason.contains(expected),
                "{} does not contain {expected}",
                j.reason
            );
        }
        let beyond = histogram(&[1.0, 2.0, INF], &[0.0, 0.0, 60.0]);
        let j = judge_latency(&config, &beyond, &beyond);
        assert_eq!(j.classification, Classification::NoData);
        assert!(
            j.reason.contains("above the largest finite bucket bound 2"),
            "{}",
            j.reason
        );
        let j = judge_latency(&config, &good, &Histogram::default());
        assert!(
            j.reason.contains("primary histogram: no buckets"),
            "{}",
            j.reason
        );
        let bad_config = LatencyConfig {
            confidence_level: 1.0,
            ..config
        };
        assert_eq!(
            judge_latency(&bad_config, &good, &good).classification,
            Classification::NoData
        );
    }

    #[test]
    fn a_faster_canary_is_low_only_when_decreases_matter() {
        let bounds = [10.0, 20.0, 40.0, INF];
        let canary = histogram(&bounds, &[80.0, 20.0, 0.0, 0.0]);
        let primary = histogram(&bounds, &[10.0, 30.0, 60.0, 0.0]);
        let increase = judge_latency(&LatencyConfig::default(), &canary, &primary);
        assert_eq!(increase.classification, Classification::Pass);
        assert!(
            increase
                .reason
                .starts_with("canary faster than primary (not a regression)"),
            "{}",
            increase.reason
        );
        let either = LatencyConfig {
            direction: Direction::Either,
            ..LatencyConfig::default()
        };
        assert_eq!(
            judge_latency(&either, &canary, &primary).classification,
            Classification::Low
        );
    }

    #[test]
    fn a_significant_shift_smaller_than_the_allowed_increase_passes() {
        // Thousands of observations make a small shift significant; the effect size gate (p50
        // ratio at least 1.1) keeps it from failing the canary.
        let bounds = [10.0, 20.0, 30.0, INF];
        let canary = histogram(&bounds, &[4800.0, 5200.0, 0.0, 0.0]);
        let primary = histogram(&bounds, &[5200.0, 4800.0, 0.0, 0.0]);
        let j = judge_latency(&LatencyConfig::default(), &canary, &primary);
        assert!(j.test.unwrap().p_two_sided < 0.02);
        assert!(j.effect.unwrap() < 1.1);
        assert_eq!(j.classification, Classification::Pass);
        let cles = LatencyConfig {
            effect: EffectMeasure::Cles,
            allowed_increase: 0.5,
            ..LatencyConfig::default()
        };
        assert_eq!(
            judge_latency(&cles, &canary, &primary).classification,
            Classification::High
        );
    }

    #[test]
    fn absurdly_large_counts_are_no_data_not_nan() {
        let good = histogram(&[1.0, 2.0, INF], &[30.0, 30.0, 0.0]);
        let huge = histogram(&[1.0, 2.0, INF], &[1e200, 1e200, 0.0]);
        let j = judge_latency(&LatencyConfig::default(), &huge, &good);
        assert_eq!(j.classification, Classification::NoData);
        assert!(
            j.reason
                .contains("observations in all; expected at most 2^53"),
            "{}",
            j.reason
        );
    }

    #[test]
    fn all_observations_in_one_bucket_cannot_differ() {
        let bounds = [10.0, INF];
        let h = histogram(&bounds, &[50.0, 0.0]);
        let t = u_test(
            &Buckets::from_histogram(&h).unwrap(),
            &Buckets::from_histogram(&h).unwrap(),
        )
        .unwrap();
        assert_eq!((t.sd, t.z, t.p_two_sided), (0.0, 0.0, 1.0));
    }

    #[test]
    fn the_always_valid_level_spends_the_error_over_looks() {
        let total: f64 = (1..=100_000)
            .map(|k| 1.0 - always_valid_level(0.98, k))
            .sum();
        assert!(total < 0.02 && total > 0.0199, "{total}");
        assert!(close(
            always_valid_level(0.98, 1),
            1.0 - 0.02 * 6.0 / std::f64::consts::PI.powi(2),
            1e-15
        ));
        assert_eq!(always_valid_level(0.98, 0), always_valid_level(0.98, 1));
    }

    /// Exact permutation distribution of U for tiny pooled samples: its mean and variance.
    fn permutation_moments(canary: &[u32], primary: &[u32]) -> (f64, f64) {
        let pooled: Vec<usize> = canary
            .iter()
            .zip(primary)
            .enumerate()
            .flat_map(|(i, (&a, &b))| std::iter::repeat_n(i, (a + b) as usize))
            .collect();
        let n1: usize = canary.iter().map(|&c| c as usize).sum();
        let n = pooled.len();
        let (mut sum, mut sum_sq, mut ways) = (0.0, 0.0, 0.0);
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize != n1 {
                continue;
            }
            let mut u = 0.0;
            for i in (0..n).filter(|i| mask & (1 << i) != 0) {
                for j in (0..n).filter(|j| mask & (1 << j) == 0) {
                    u += if pooled[i] > pooled[j] {
                        1.0
                    } else if pooled[i] == pooled[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
            sum += u;
            sum_sq += u * u;
            ways += 1.0;
        }
        let mean = sum / ways;
        (mean, sum_sq / ways - mean * mean)
    }

    fn two_histograms(max: u32) -> impl Strategy<Value = (Vec<u32>, Vec<u32>)> {
        (2usize..8).prop_flat_map(move |k| {
            (
                prop::collection::vec(0..max, k),
                prop::collection::vec(0..max, k),
            )
        })
    }

    fn as_buckets(counts: &[u32]) -> Buckets {
        let mut bounds: Vec<f64> = (1..counts.len()).map(|i| i as f64 * 5.0).collect();
        bounds.push(INF);
        let per_bucket: Vec<f64> = counts.iter().map(|&c| f64::from(c)).collect();
        buckets(&bounds, &per_bucket)
    }

    proptest! {
        #[test]
        fn u_from_buckets_equals_u_from_expanded_samples((canary, primary) in two_histograms(12)) {
            prop_assume!(canary.iter().sum::<u32>() > 0 && primary.iter().sum::<u32>() > 0);
            let t = u_test(&as_buckets(&canary), &as_buckets(&primary)).unwrap();
            prop_assert_eq!(t.u, brute_force_u(&canary, &primary));
            let swapped = u_test(&as_buckets(&primary), &as_buckets(&canary)).unwrap();
            prop_assert_eq!(t.u + swapped.u, t.n_canary * t.n_primary);
            prop_assert!((t.cles - t.u / (t.n_canary * t.n_primary)).abs() < 1e-12);
            prop_assert!(t.p_two_sided >= 0.0 && t.p_two_sided <= 1.0);
        }

        #[test]
        fn the_tie_corrected_variance_is_the_exact_permutation_variance((canary, primary) in two_histograms(3)) {
            let (n1, n2) = (canary.iter().sum::<u32>(), primary.iter().sum::<u32>());
            prop_assume!(n1 > 0 && n2 > 0 && n1 + n2 <= 12);
            let t = u_test(&as_buckets(&canary), &as_buckets(&primary)).unwrap();
            let (mean, variance) = permutation_moments(&canary, &primary);
            prop_assert!((t.mean - mean).abs() < 1e-9);
            prop_assert!((t.sd * t.sd - variance).abs() < 1e-9, "{} vs {}", t.sd * t.sd, variance);
        }

        #[test]
        fn any_input_is_judged_without_panic_and_bad_input_is_no_data(
            bounds in prop::collection::vec(prop_oneof![Just(INF), Just(f64::NAN), -10.0..100.0f64], 0..6),
            canary in prop::collection::vec(
                prop_oneof![Just(f64::NAN), Just(-1.0), 0.0..1e6f64, 1e100..1e300f64],
                0..6,
            ),
            primary in prop::collection::vec(0.0..1e6f64, 0..6),
        ) {
            let c = Histogram { bounds: bounds.clone(), cumulative: canary };
            let p = Histogram { bounds, cumulative: primary };
            let j = judge_latency(&LatencyConfig::default(), &c, &p);
            if Buckets::from_histogram(&c).is_err() || Buckets::from_histogram(&p).is_err() {
                prop_assert_eq!(j.classification, Classification::NoData);
            }
            if let Some(t) = j.test {
                prop_assert!(!t.u.is_nan() && !t.z.is_nan() && !t.p_two_sided.is_nan());
                prop_assert!(!t.cles.is_nan());
            }
        }
    }
}
