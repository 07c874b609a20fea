//! The error-rate test's state and its answer at each look: what accumulates (the rollback
//! evidence, the counts of the step, the rollout and the window), how a look's counts are taken
//! in, and the reason a person reads. The maths it calls is in [`super::maths`].

use std::fmt;

use serde::{Deserialize, Serialize};

use super::maths::{REGRESSION_RATIOS, add_share_evidence, log_mixture, no_worse_bound};
use super::{ErrorRateConfig, InputError, LEANING_WORSE_ABOVE, RateMargin, margin_value};
use crate::analysis::Counts;

/// The test's answer at one look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Decision {
    /// The canary fails more often than primary: roll back.
    Regressed,
    /// The canary is not worse than primary by the margin: this step may advance.
    NoWorse,
    /// Not enough evidence either way: hold.
    Undecided,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Regressed => "regressed",
            Decision::NoWorse => "no worse",
            Decision::Undecided => "undecided",
        })
    }
}

/// What one look concluded, with the numbers behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRateJudgement {
    pub decision: Decision,
    /// Evidence that the canary fails more often than primary, accumulated over the rollout
    /// (an e-value: 1 is none, `1/alpha` rolls back).
    pub e_value: f64,
    /// The e-value at which the test rolls back, `1/alpha`.
    pub rollback_at: f64,
    /// Always-valid upper bound, at level `beta`, of `p_canary - p_primary` in percentage points
    /// (absolute margin) or of `p_canary / p_primary` (relative margin) over the rollout's
    /// traffic; `None` until the step has `min_requests` canary requests of its own. May be infinite for a relative
    /// margin while primary has had no failures.
    pub upper_bound: Option<f64>,
    /// Canary requests in this step, and the number needed before NoWorse.
    pub step_canary_requests: f64,
    pub min_requests: u64,
    /// The step's own evidence lets it give way to the next (not to promotion): nothing
    /// regressed, the step has `min_requests` canary requests of its own, and this look, with
    /// usable counts, saw canary requests. See [`super`], "Steps and promotion".
    #[serde(default)]
    pub step_clear: bool,
    /// Set when this look's input was unusable; the look added no evidence.
    pub input_error: Option<InputError>,
    /// One line for a person: the decision, the statistic and the bound.
    pub reason: String,
}

impl ErrorRateJudgement {
    /// Whether the step is held only because the canary has not yet served `min_requests` in it
    /// (the rollout core's "not enough traffic to judge").
    pub fn is_short_of_traffic(&self) -> bool {
        self.decision == Decision::Undecided
            && self.input_error.is_none()
            && self.step_canary_requests < self.min_requests as f64
    }
}

/// Everything the test needs to resume: serialises into the Canary's status.
///
/// Create one per rollout with [`ErrorRateEvidence::default`], call
/// [`begin_step`](Self::begin_step) whenever the canary's weight changes, and
/// [`observe`](Self::observe) (cumulative counts) or
/// [`observe_increment`](Self::observe_increment) (disjoint windows) at every look.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRateEvidence {
    /// Natural log of the likelihood ratio of each of [`REGRESSION_RATIOS`] against "canary no
    /// worse", over the rollout.
    log_lr: Vec<f64>,
    /// The last cumulative counts accepted by `observe` in this step (the baseline of the next
    /// look's increment).
    baseline: Side2,
    /// Counts used as evidence in this step, and in the whole rollout.
    step: Side2,
    rollout: Side2,
    /// Counts used as evidence since the last step check (or the step's start): one interval's
    /// window, as a threshold check reads it.
    #[serde(default, skip_serializing_if = "Side2::is_empty")]
    window: Side2,
    /// Looks that added evidence.
    looks: u64,
}

/// Canary and primary counts together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Side2 {
    pub(super) canary: Counts,
    pub(super) primary: Counts,
}

impl Side2 {
    fn is_empty(&self) -> bool {
        *self == Side2::default()
    }

    fn add(&mut self, other: Side2) {
        self.canary.requests += other.canary.requests;
        self.canary.failures += other.canary.failures;
        self.primary.requests += other.primary.requests;
        self.primary.failures += other.primary.failures;
    }
}

impl Default for ErrorRateEvidence {
    fn default() -> Self {
        ErrorRateEvidence {
            log_lr: vec![0.0; REGRESSION_RATIOS.len()],
            baseline: Side2::default(),
            step: Side2::default(),
            rollout: Side2::default(),
            window: Side2::default(),
            looks: 0,
        }
    }
}

impl ErrorRateEvidence {
    /// Starts a new step (the canary's weight changed): the step must serve `min_requests`
    /// canary requests of its own before NoWorse, and the counts given to
    /// [`observe`](Self::observe) must from now on be cumulative since this moment (they start
    /// again from zero). The rollback evidence and the NoWorse bounds carry on (see [`super`], "What accumulates").
    pub fn begin_step(&mut self) {
        self.baseline = Side2::default();
        self.step = Side2::default();
        self.window = Side2::default();
    }

    /// A step check has read the window: the next window starts now.
    pub fn begin_window(&mut self) {
        self.window = Side2::default();
    }

    /// Canary and primary counts used as evidence since the window began.
    pub fn window_counts(&self) -> (Counts, Counts) {
        (self.window.canary, self.window.primary)
    }

    /// Evidence that the canary fails more often than primary, over the rollout so far.
    pub fn e_value(&self) -> f64 {
        log_mixture(&self.log_lr).exp()
    }

    /// Canary and primary counts used as evidence in the current step.
    pub fn step_counts(&self) -> (Counts, Counts) {
        (self.step.canary, self.step.primary)
    }

    /// Canary and primary counts used as evidence since the rollout began.
    pub fn rollout_counts(&self) -> (Counts, Counts) {
        (self.rollout.canary, self.rollout.primary)
    }

    /// Looks that added evidence.
    pub fn looks(&self) -> u64 {
        self.looks
    }

    /// Judges after a look, given counts *cumulative since the current step began* (for
    /// Prometheus, `increase(...)` over the time since [`begin_step`](Self::begin_step); for the
    /// simulator, counters minus their value at the step's start). Cumulative counts cannot
    /// count a request twice however the looks are timed, which windows can.
    ///
    /// A count that goes down is taken as a counter reset: the look adds no evidence and its
    /// counts become the baseline for the next.
    pub fn observe(
        &mut self,
        config: &ErrorRateConfig,
        canary: Counts,
        primary: Counts,
    ) -> ErrorRateJudgement {
        if config.validate().is_err() {
            // Leave the baseline alone: the counts are judged once the settings are fixed.
            return self.judge(config, Ok(Side2::default()));
        }
        let now = Side2 { canary, primary };
        let increment = validate_counts(&now).and_then(|()| {
            let b = self.baseline;
            let pairs = [
                ("canary requests", b.canary.requests, now.canary.requests),
                ("canary failures", b.canary.failures, now.canary.failures),
                ("primary requests", b.primary.requests, now.primary.requests),
                ("primary failures", b.primary.failures, now.primary.failures),
            ];
            if let Some((what, before, after)) = pairs.into_iter().find(|(_, b, a)| a < b) {
                self.baseline = now;
                return Err(InputError::CounterDecreased {
                    what: what.to_string(),
                    before,
                    after,
                });
            }
            let increment = Side2 {
                canary: Counts {
                    requests: now.canary.requests - b.canary.requests,
                    failures: now.canary.failures - b.canary.failures,
                },
                primary: Counts {
                    requests: now.primary.requests - b.primary.requests,
                    failures: now.primary.failures - b.primary.failures,
                },
            };
            validate_counts(&increment)?;
            Ok(increment)
        });
        match increment {
            Ok(increment) => {
                self.baseline = now;
                self.judge(config, Ok(increment))
            }
            Err(e) => self.judge(config, Err(e)),
        }
    }

    /// Judges after a look, given the counts of a window that does not overlap any window given
    /// before (the simulator's per-interval counters). Overlapping windows would count requests
    /// twice and void the error bound; prefer [`observe`](Self::observe) for Prometheus.
    pub fn observe_increment(
        &mut self,
        config: &ErrorRateConfig,
        canary: Counts,
        primary: Counts,
    ) -> ErrorRateJudgement {
        let increment = Side2 { canary, primary };
        let checked = validate_counts(&increment).map(|()| increment);
        self.judge(config, checked)
    }

    fn judge(
        &mut self,
        config: &ErrorRateConfig,
        increment: Result<Side2, InputError>,
    ) -> ErrorRateJudgement {
        let rollback_at = 1.0 / config.alpha;
        if let Err(e) = config.validate() {
            return self.verdict(
                config,
                Decision::Undecided,
                None,
                Some(InputError::Config(e)),
            );
        }
        let mut input_error = increment.as_ref().err().cloned();
        let look_canary_requests = increment.as_ref().map_or(0.0, |i| i.canary.requests);
        if self.log_lr.len() != REGRESSION_RATIOS.len() {
            input_error = Some(InputError::CorruptEvidence {
                found: self.log_lr.len(),
                expected: REGRESSION_RATIOS.len(),
            });
            self.log_lr = vec![0.0; REGRESSION_RATIOS.len()];
        } else if let Ok(increment) = increment {
            self.add_evidence(increment);
        }
        if self.e_value() >= rollback_at {
            return self.verdict(config, Decision::Regressed, None, input_error);
        }
        if input_error.is_some() || self.step.canary.requests < config.min_requests as f64 {
            return self.verdict(config, Decision::Undecided, None, input_error);
        }
        let bound = no_worse_bound(config, self.rollout.canary, self.rollout.primary);
        // Only a look that saw canary requests may advance: one without any has nothing new to
        // say, and re-reading the step's earlier counts would advance a canary that stopped
        // serving.
        let leaning_worse = self.e_value() > LEANING_WORSE_ABOVE;
        let decision = if bound < margin_value(config.margin)
            && look_canary_requests > 0.0
            && !leaning_worse
        {
            Decision::NoWorse
        } else {
            Decision::Undecided
        };
        ErrorRateJudgement {
            step_clear: look_canary_requests > 0.0 && !leaning_worse,
            ..self.verdict(config, decision, Some(bound), None)
        }
    }

    fn add_evidence(&mut self, inc: Side2) {
        self.step.add(inc);
        self.rollout.add(inc);
        self.window.add(inc);
        self.looks += 1;
        add_share_evidence(&mut self.log_lr, inc.canary, inc.primary);
    }

    fn verdict(
        &self,
        config: &ErrorRateConfig,
        decision: Decision,
        upper_bound: Option<f64>,
        input_error: Option<InputError>,
    ) -> ErrorRateJudgement {
        let e_value = self.e_value();
        let rollback_at = 1.0 / config.alpha;
        let step_canary_requests = self.step.canary.requests;
        let evidence = format!(
            "canary {} vs primary {} in the rollout, e-value {} (rolls back at {})",
            rate(self.rollout.canary),
            rate(self.rollout.primary),
            number(e_value),
            number(rollback_at),
        );
        let reason = match (&input_error, decision) {
            (Some(e @ InputError::Config(_)), _) => format!("cannot judge the error rate: {e}"),
            (Some(e), Decision::Regressed) => {
                format!(
                    "canary fails more often than primary: {evidence}; this look's counts are unusable: {e}"
                )
            }
            (Some(e), _) => format!("this look's counts are unusable: {e}; holding; {evidence}"),
            (None, Decision::Regressed) => {
                format!("canary fails more often than primary: {evidence}")
            }
            (None, _) if upper_bound.is_none() => format!(
                "not enough traffic to judge: {} canary requests in this step, need {}; {evidence}",
                number(step_canary_requests),
                config.min_requests,
            ),
            (None, decision) => {
                let below = upper_bound.is_some_and(|b| b < margin_value(config.margin));
                let comparison = if below { "<" } else { "≥" };
                let (bound, margin) = match config.margin {
                    RateMargin::Absolute(m) => (
                        format!(
                            "p_canary - p_primary ≤ {} pp",
                            number(upper_bound.unwrap_or(f64::NAN))
                        ),
                        format!("{} pp", number(m)),
                    ),
                    RateMargin::Relative(m) => (
                        format!(
                            "p_canary / p_primary ≤ {}",
                            number(upper_bound.unwrap_or(f64::NAN))
                        ),
                        number(1.0 + m),
                    ),
                };
                let verb = match decision {
                    Decision::NoWorse => "no worse than primary",
                    _ if below && e_value > LEANING_WORSE_ABOVE => {
                        "undecided, the rollback evidence leans towards a regression (e-value above 1)"
                    }
                    _ if below => "undecided, no canary requests in this look",
                    _ => "undecided",
                };
                format!(
                    "canary {verb}: over the rollout, {bound} ({}% always-valid bound) {comparison} margin {margin} ({} canary requests in this step); {evidence}",
                    number(100.0 * (1.0 - config.beta)),
                    number(step_canary_requests),
                )
            }
        };
        ErrorRateJudgement {
            decision,
            e_value,
            rollback_at,
            upper_bound,
            step_canary_requests,
            min_requests: config.min_requests,
            step_clear: false,
            input_error,
            reason,
        }
    }
}

fn validate_counts(counts: &Side2) -> Result<(), InputError> {
    let fields = [
        ("canary requests", counts.canary.requests),
        ("canary failures", counts.canary.failures),
        ("primary requests", counts.primary.requests),
        ("primary failures", counts.primary.failures),
    ];
    if let Some((what, value)) = fields
        .into_iter()
        .find(|(_, v)| !(v.is_finite() && *v >= 0.0))
    {
        return Err(InputError::NotACount {
            what: what.to_string(),
            value,
        });
    }
    for (side, c) in [("canary", counts.canary), ("primary", counts.primary)] {
        if c.failures > c.requests {
            return Err(InputError::MoreFailuresThanRequests {
                side: side.to_string(),
                failures: c.failures,
                requests: c.requests,
            });
        }
    }
    Ok(())
}

/// `1.52% (46/3021)`.
pub(super) fn rate(c: Counts) -> String {
    if c.requests > 0.0 {
        format!(
            "{:.2}% ({}/{})",
            100.0 * c.failures / c.requests,
            number(c.failures),
            number(c.requests)
        )
    } else {
        "no requests".to_string()
    }
}

/// Three significant digits, without trailing noise; integers as integers; huge and tiny values
/// in scientific notation.
pub(in crate::analysis) fn number(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN".into()
        } else if x > 0.0 {
            "∞".into()
        } else {
            "-∞".into()
        };
    }
    if x.abs() >= 1e7 || (x != 0.0 && x.abs() < 1e-3) {
        return format!("{x:.2e}");
    }
    if x == x.trunc() {
        return format!("{x:.0}");
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).clamp(0, 12) as usize;
    format!("{x:.decimals$}")
}
