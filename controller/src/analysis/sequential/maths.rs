//! The maths of the error-rate test (why each piece is valid is in [`super`]): the
//! mixture likelihood ratio of the canary's share of a look's failures, and the beta-binomial
//! confidence sequences behind "no worse".

use statrs::function::beta::checked_ln_beta;

use super::{ErrorRateConfig, RateMargin};
use crate::analysis::Counts;

/// The alternatives of the rollback test's mixture: canary-to-primary failure-rate ratios, with
/// the prior weights of [`REGRESSION_WEIGHTS`].
///
/// A fixed grid (not fitted to the data) keeps the mixture a supermartingale. It spans the
/// regressions worth a rollback from the barely visible (1.5x, caught only with plenty of traffic)
/// to outright breakage (25x and beyond, caught from a handful of failures); a ratio of weight `w`
/// costs `ln(1/w)` nats of evidence against a test tuned to it alone.
/// In the `judge_rates` example, grids from `[2, 3, 5, 10]` to `[1.25 .. 100]` moved detection
/// rates by one or two percentage points, so the grid is not tuned to the margin.
pub const REGRESSION_RATIOS: [f64; 7] = [1.5, 2.0, 3.0, 4.0, 6.0, 10.0, 25.0];

/// The prior weight of each of [`REGRESSION_RATIOS`] (summing to 1), leaning towards large
/// ratios: a canary failing ten times as often harms users ten times as fast, so its failures
/// before a rollback (the blast radius) are what the prior spends its weight on, while a small
/// ratio needs plenty of traffic whatever its weight. Against equal weights (1/7 each), 10x
/// costs 0.74 nats less (about one canary failure fewer at a 10% canary share) and 2x 0.36
/// nats more.
pub const REGRESSION_WEIGHTS: [f64; 7] = [0.05, 0.10, 0.10, 0.10, 0.15, 0.30, 0.20];

/// Shape parameters of the Beta prior of the NoWorse confidence sequences.
///
/// Beta(0.5, 50) has its mean at 1% and most of its mass below 5%, where services' error rates
/// live; this tightens the bounds of a healthy canary by about a third compared with the uniform
/// or Jeffreys prior, and any fixed prior keeps the sequences valid.
const PRIOR_A: f64 = 0.5;
const PRIOR_B: f64 = 50.0;

/// Lowest value a stored log likelihood ratio may take: keeps the status JSON finite (JSON has no
/// infinities) while being, for any practical purpose, zero evidence.
pub(super) const LOG_LR_FLOOR: f64 = -1.0e6;

/// Adds one look's evidence that the canary's failures (any per-request event: a 5xx, a request
/// slower than a bound) are more frequent than the primary's, to the log likelihood ratios of
/// [`REGRESSION_RATIOS`] (see [`super`]: the canary's share of the look's events, conditioned
/// on their total).
pub(in crate::analysis) fn add_share_evidence(log_lr: &mut [f64], canary: Counts, primary: Counts) {
    let failures = canary.failures + primary.failures;
    let traffic = canary.requests + primary.requests;
    // A look with no failures, or with traffic on one side only, says nothing about which
    // side fails more.
    if failures <= 0.0 || canary.requests <= 0.0 || primary.requests <= 0.0 {
        return;
    }
    let share = canary.requests / traffic;
    for (log_lr, &ratio) in log_lr.iter_mut().zip(REGRESSION_RATIOS.iter()) {
        // Binomial log likelihood ratio of the canary's share of the failures: each failure is
        // the canary's with probability r q / (1 + (r - 1) q) instead of q.
        let step = canary.failures * ratio.ln() - failures * ((ratio - 1.0) * share).ln_1p();
        *log_lr = (*log_lr + step).max(LOG_LR_FLOOR);
        if !log_lr.is_finite() {
            *log_lr = LOG_LR_FLOOR;
        }
    }
}

/// Always-valid upper bound at level `beta` of the difference (percentage points) or ratio of the
/// error rates, from the two sides' confidence sequences at `beta / 2` each.
pub(super) fn no_worse_bound(config: &ErrorRateConfig, canary: Counts, primary: Counts) -> f64 {
    let level = config.beta / 2.0;
    let canary_upper = BetaBinomialSequence::new(canary).upper(level);
    let primary_lower = BetaBinomialSequence::new(primary).lower(level);
    match config.margin {
        RateMargin::Absolute(_) => 100.0 * (canary_upper - primary_lower),
        RateMargin::Relative(_) if primary_lower > 0.0 => canary_upper / primary_lower,
        RateMargin::Relative(_) => f64::INFINITY,
    }
}

/// The beta-binomial mixture confidence sequence for one side's failure probability.
///
/// For a fixed `p`, `M(p) = B(a + f, b + n - f) / B(a, b) / (p^f (1 - p)^(n - f))` is the
/// Beta(a, b) mixture of likelihood ratios against `p`: a martingale under `p` (Robbins 1970),
/// so `{p : M(p) < 1/level}` contains the true `p` at every `n` at once with probability at
/// least `1 - level` (Ville). `ln M` is convex in `p` with its minimum at `f / n`, so the set is
/// an interval found by bisection on each side.
pub(in crate::analysis) struct BetaBinomialSequence {
    requests: f64,
    failures: f64,
    /// `ln B(a + f, b + n - f) - ln B(a, b)`.
    log_marginal: f64,
}

impl BetaBinomialSequence {
    pub(in crate::analysis) fn new(counts: Counts) -> Self {
        Self::with_prior(counts, (PRIOR_A, PRIOR_B))
    }

    /// With a Beta(a, b) prior of the caller's (any fixed prior keeps the sequence valid).
    pub(in crate::analysis) fn with_prior(counts: Counts, (a, b): (f64, f64)) -> Self {
        let (n, f) = (counts.requests, counts.failures.min(counts.requests));
        let log_marginal = match (checked_ln_beta(a + f, b + n - f), checked_ln_beta(a, b)) {
            (Ok(mixed), Ok(prior)) => mixed - prior,
            // Unreachable with validated counts; no evidence is the safe answer.
            _ => 0.0,
        };
        BetaBinomialSequence {
            requests: n,
            failures: f,
            log_marginal,
        }
    }

    /// `ln M(p) - ln(1/level)`: negative inside the confidence sequence.
    pub(super) fn excess(&self, p: f64, level: f64) -> f64 {
        let ok = self.requests - self.failures;
        let mut log_likelihood = 0.0;
        if self.failures > 0.0 {
            log_likelihood += self.failures * p.ln();
        }
        if ok > 0.0 {
            log_likelihood += ok * (-p).ln_1p();
        }
        self.log_marginal - log_likelihood + level.ln()
    }

    fn estimate(&self) -> f64 {
        if self.requests > 0.0 {
            self.failures / self.requests
        } else {
            0.0
        }
    }

    /// Upper end of the interval (1 when nothing excludes high rates).
    pub(in crate::analysis) fn upper(&self, level: f64) -> f64 {
        let inside = self.estimate();
        if self.excess(inside, level) >= 0.0 {
            return 1.0;
        }
        self.boundary(inside, 1.0, level)
    }

    /// Lower end of the interval (0 when nothing excludes low rates).
    pub(in crate::analysis) fn lower(&self, level: f64) -> f64 {
        let inside = self.estimate();
        if self.failures <= 0.0 || self.excess(inside, level) >= 0.0 {
            return 0.0;
        }
        // ln M(p) grows without bound as p -> 0 when f > 0, so 0 is outside.
        self.boundary(inside, 0.0, level)
    }

    /// Bisects between a rate inside the interval and one outside it, and returns the end on
    /// the outside: rounding outwards keeps the bound conservative.
    fn boundary(&self, mut inside: f64, mut outside: f64, level: f64) -> f64 {
        for _ in 0..60 {
            let mid = 0.5 * (inside + outside);
            if self.excess(mid, level) < 0.0 {
                inside = mid;
            } else {
                outside = mid;
            }
        }
        outside
    }
}

/// `ln(sum(w exp(x)))` over [`REGRESSION_WEIGHTS`], without overflow: the log of the mixture's
/// likelihood ratio from those of its alternatives.
pub(in crate::analysis) fn log_mixture(xs: &[f64]) -> f64 {
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return 0.0;
    }
    let sum: f64 = xs
        .iter()
        .zip(REGRESSION_WEIGHTS)
        .map(|(x, w)| w * (x - max).exp())
        .sum();
    max + sum.ln()
}
