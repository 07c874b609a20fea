//! The sequential error-rate test of canary against primary, valid under continuous monitoring.
//!
//! Flagger compares the canary's success rate with a fixed threshold every interval; Kayenta runs
//! a fixed-horizon test. Both break when looked at again and again: with enough looks, noise alone
//! crosses any fixed threshold. This test is *always valid* (Johari, Koomen, Pekelis & Walsh,
//! "Always valid inference: continuous monitoring of A/B tests", Operations Research 2022): the
//! probability that it *ever* rolls back a canary that is no worse than primary stays at or below
//! `alpha`, however often it is evaluated and whenever the rollout stops.
//!
//! # Two one-sided questions
//!
//! - **Regressed** answers "is the canary's error rate higher than the primary's?" by a mixture
//!   sequential probability ratio test (mSPRT: Robbins 1970; Johari et al. 2022). We do not use
//!   the Gaussian approximation of the difference of proportions that Johari et al. use: with
//!   error rates of a fraction of a percent and a canary at 5% of the traffic, the counts are far
//!   too small for it (zero failures on both sides gives a zero variance, and a single early canary
//!   failure a huge z). Instead, within each look, we condition on the number of failures seen on
//!   both sides together and ask which side each came from, the way Lindon & Malek ("Anytime-valid
//!   inference for multinomial count data", NeurIPS 2022) compare Poisson counting processes. If
//!   the canary served a fraction `q` of the look's requests and fails `r` times as often as
//!   primary, each failure comes from the canary with probability `r q / (1 + (r - 1) q)`. The
//!   likelihood ratio of `r` against `r = 1`, mixed over a fixed prior on `r > 1`
//!   ([`REGRESSION_RATIOS`]), is a nonnegative supermartingale whenever the canary's error rate is
//!   at most the primary's: exactly under independent requests, because given the look's failure
//!   total the canary's share is hypergeometric, which Hoeffding (1963, Theorem 4) showed is
//!   dominated in convex order by the binomial the ratio is computed under, and a lower canary rate
//!   only shifts that share down. Ville's inequality then bounds the chance that it ever reaches
//!   `1/alpha` by `alpha`. Conditioning look by look keeps this exact while the canary's weight
//!   changes between steps, and the traffic volume itself carries no information.
//! - **NoWorse** answers "is the canary's error rate below primary's plus the margin?" with
//!   always-valid confidence sequences (Howard, Ramdas, McAuliffe & Sekhon, "Time-uniform,
//!   nonparametric, nonasymptotic confidence sequences", Annals of Statistics 2021): for each side
//!   the beta-binomial mixture martingale of Robbins (1970), exact for Bernoulli requests, gives a
//!   bound valid at every look at once; the canary's upper bound minus the primary's lower bound
//!   (each at level `beta / 2`) is an always-valid upper bound of `p_canary - p_primary` at level
//!   `beta`. A canary that is worse than primary by the margin or more is therefore declared
//!   NoWorse with probability at most `beta`, however often it is looked at. Zero failures are
//!   evidence here: 0 failures in 1,000 requests bounds the canary's rate below 0.7%.
//!
//! Between the two lies the indifference zone (worse than primary, but by less than the margin):
//! either answer is acceptable there, as in Wald's SPRT.
//!
//! # What accumulates, and since when
//!
//! Both sides accumulate over the whole rollout; only the canary's weight changes between
//! steps, not its version (nor the primary's), so each side's requests are one stream with one
//! failure probability whatever share of the traffic it gets.
//!
//! - The rollback evidence ([`ErrorRateEvidence::e_value`]) is a product of per-look factors,
//!   each computed with that look's own canary share `q_t`. Given the past, a look's factor has
//!   expectation at most 1 under "canary no worse" whatever `q_t` is (the hypergeometric
//!   argument above holds look by look), so the product is a supermartingale across weight
//!   changes and Ville bounds the chance of ever rolling back a canary no worse than primary by
//!   `alpha` over the rollout, not per step.
//! - The NoWorse bounds are computed on the counts pooled since the rollout began. The Robbins
//!   mixture `M_n(p)` of each side is a martingale in that side's own requests under its
//!   constant `p`; the weight decides only how fast requests arrive, which is a stopping-time
//!   question Ville's inequality already covers (it holds at every `n` at once, hence at any
//!   data-dependent time, including the looks at every step). So with probability at least
//!   `1 - beta`, at every look of every step the canary's upper bound lies above its true rate
//!   and the primary's lower bound below its own: a canary worse than primary by the margin is
//!   declared NoWorse at *any* look with probability at most `beta` over the whole rollout
//!   (before, each step spent its own `beta` and needed all of its evidence again: about 2,300
//!   canary requests per step at a 0.5% baseline and a 1-point margin).
//! - What pooling gives up: a canary that only fails under the load of a higher weight is no
//!   longer held at that weight for a fresh NoWorse. It is still caught by the rollback side,
//!   which reads every look's own traffic: the per-look factors of the heavier step carry the
//!   regression from its first failures on, undiluted by the lighter steps. And each step must
//!   serve `min_requests` canary requests of its own, at a look that saw canary traffic, before
//!   it may end.
//! - What pooling assumes: each side's failure probability is constant over the rollout. A
//!   failure spike that hits both versions at once (an incident in a shared dependency) weighs
//!   differently on the two pooled rates, the canary's leaning on the later, heavier steps and
//!   the primary's on the earlier ones: an incident early in the rollout raises the primary's
//!   pooled rate more and makes NoWorse easier for a canary that is worse in every window. The
//!   rollback side, conditioned look by look, is not affected.
//!
//! # Steps and promotion
//!
//! What each side guarantees does not depend on when the rollout moves on: alpha bounds the
//! chance of *ever* rolling back a canary no worse than primary, beta the chance of *ever*
//! declaring NoWorse for one worse by the margin, whatever the looks and the weights. So the
//! rollout may pace its steps by any rule, and only promotion needs NoWorse:
//!
//! - A step below the top weight gives way to the next on its own evidence
//!   ([`ErrorRateJudgement::step_clear`]): nothing regressed after `min_requests` canary
//!   requests of the step's own, from a look that saw canary requests, and the rollback
//!   evidence not leaning towards a regression (e-value at most [`LEANING_WORSE_ABOVE`], 1).
//! - The top step (promotion) needs NoWorse over the pooled counts, and the e-value at most 1
//!   as well. A canary worse than primary by the margin is therefore promoted with probability
//!   at most `beta` (the pooled bound), as before; requiring more of a step or of promotion only
//!   holds them longer, which costs time, never a guarantee.
//! - What it gives up: a canary worse than primary by the margin or more reaches the top weight
//!   without evidence that it is not; it is held there (NoWorse does not come, with probability
//!   at least `1 - beta`) until the rollback side or the progress deadline ends it. Its blast
//!   radius grows with the weight it reaches before the rollback side has seen enough. The
//!   e-value rule keeps a canary whose failures lean worse at the lower weight, where each of
//!   its failures is stronger evidence (in the simulator, a canary failing twice as often as
//!   primary at 100 requests/s was caught on evidence in 96% of 300 runs with it, 87% without).
//!
//! All state lives in [`ErrorRateEvidence`], which serialises into the Canary's status; a
//! controller that restarts resumes exactly.

mod evidence;
mod maths;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub(super) use evidence::number;
pub use evidence::{Decision, ErrorRateEvidence, ErrorRateJudgement};
pub(super) use maths::{BetaBinomialSequence, add_share_evidence, log_mixture};
pub use maths::{REGRESSION_RATIOS, REGRESSION_WEIGHTS};

/// The highest rollback evidence (e-value) with which a step may end, on its own evidence or
/// on NoWorse (see the module, "Steps and promotion"): 1, no evidence either way. A canary
/// whose failures lean towards a regression holds its step, at the lower weight where each
/// failure weighs more, until the evidence goes either way.
pub const LEANING_WORSE_ABOVE: f64 = 1.0;

/// The smallest regression worth catching in an error rate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "value")]
pub enum RateMargin {
    /// Percentage points of error rate: 1.0 lets the canary fail on 1% more of its requests.
    Absolute(f64),
    /// A fraction of primary's error rate: 1.0 lets the canary fail twice as often.
    Relative(f64),
}

/// Settings of the sequential error-rate test.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRateConfig {
    /// Highest acceptable probability of ever rolling back a canary that is no worse than
    /// primary. Default 0.01.
    pub alpha: f64,
    /// Highest acceptable probability of declaring NoWorse (advancing) at a step when the
    /// canary is worse than primary by the margin or more. Default: `alpha`.
    pub beta: f64,
    /// The smallest regression worth catching. `Absolute` is in percentage points of error rate
    /// (1.0: the canary may fail on 1% more of its requests than primary); `Relative` is a
    /// fraction of primary's error rate (1.0: twice primary's error rate). Default
    /// `Absolute(1.0)`, the same slack as Flagger's usual "success rate at least 99%". A relative
    /// margin can only be shown with failures on the primary's side, so a very healthy primary
    /// holds a canary until its traffic gives enough of them.
    pub margin: RateMargin,
    /// Canary requests needed in a step before it can be declared NoWorse. Default 100. The
    /// rollback side does not wait for it: its error bound holds from the first request.
    pub min_requests: u64,
}

impl Default for ErrorRateConfig {
    fn default() -> Self {
        ErrorRateConfig::new(0.01, RateMargin::Absolute(1.0), 100)
    }
}

impl ErrorRateConfig {
    /// A configuration with `beta` equal to `alpha`.
    pub fn new(alpha: f64, margin: RateMargin, min_requests: u64) -> Self {
        ErrorRateConfig {
            alpha,
            beta: alpha,
            margin,
            min_requests,
        }
    }

    /// Checks the settings; [`ErrorRateEvidence::observe`] refuses to judge with invalid ones.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [("alpha", self.alpha), ("beta", self.beta)] {
            if !(value > 0.0 && value < 1.0) {
                return Err(ConfigError::Level {
                    field: field.to_string(),
                    value,
                });
            }
        }
        match self.margin {
            RateMargin::Absolute(m) if !(m > 0.0 && m < 100.0) => Err(ConfigError::Margin {
                value: m,
                expected: "between 0 and 100 percentage points".to_string(),
            }),
            RateMargin::Relative(m) if !(m > 0.0 && m.is_finite()) => Err(ConfigError::Margin {
                value: m,
                expected: "a positive finite fraction".to_string(),
            }),
            _ => Ok(()),
        }
    }
}

/// An invalid [`ErrorRateConfig`].
#[derive(Clone, Debug, Error, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ConfigError {
    #[error("{field} is {value}; expected a probability strictly between 0 and 1")]
    Level { field: String, value: f64 },
    #[error("margin is {value}; expected {expected}")]
    Margin { value: f64, expected: String },
}

/// Why a look's counts could not be used.
#[derive(Clone, Debug, Error, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum InputError {
    #[error("{what} is {value}; expected a finite count at least 0")]
    NotACount { what: String, value: f64 },
    #[error("{side} failures ({failures}) exceed its requests ({requests})")]
    MoreFailuresThanRequests {
        side: String,
        failures: f64,
        requests: f64,
    },
    #[error(
        "{what} went down from {before} to {after} (counter reset?); the counts since then are the new baseline"
    )]
    CounterDecreased {
        what: String,
        before: f64,
        after: f64,
    },
    #[error(
        "the stored evidence has {found} alternatives, expected {expected}; rollback evidence restarts"
    )]
    CorruptEvidence { found: usize, expected: usize },
    #[error("invalid settings: {0}")]
    Config(ConfigError),
}

/// The margin in the unit of [`ErrorRateJudgement::upper_bound`].
fn margin_value(margin: RateMargin) -> f64 {
    match margin {
        RateMargin::Absolute(m) => m,
        RateMargin::Relative(m) => 1.0 + m,
    }
}

#[cfg(test)]
mod pooling;
#[cfg(test)]
mod tests;
