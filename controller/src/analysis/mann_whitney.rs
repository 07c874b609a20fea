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

    /// From per-bucket counts already validated against `bounds` (same length, finite, at
    /// least 0), such as sums and differences of validated buckets.
    pub(crate) fn from_counts(bounds: &[f64], counts: &[f64]) -> Self {
        Buckets {
            bounds: bounds.to_vec(),
            counts: counts.to_vec(),
        }
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

    /// Observations above `x`: whole buckets above it, and the share of the bucket holding `x`
    /// that lies above it, linearly within the bucket as `histogram_quantile` reads it (the
    /// first bucket starting at 0). Above the highest finite bound, the `+Inf` bucket's count.
    pub fn count_above(&self, x: f64) -> f64 {
        let mut above = 0.0;
        for (i, (&bound, &count)) in self.bounds.iter().zip(&self.counts).enumerate() {
            let lower = if i == 0 {
                bound.min(0.0)
            } else {
                self.bounds[i - 1]
            };
            above += if bound == f64::INFINITY || x <= lower {
                count
            } else if x >= bound {
                0.0
            } else {
                count * (bound - x) / (bound - lower)
            };
        }
        above
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
mod tests;
