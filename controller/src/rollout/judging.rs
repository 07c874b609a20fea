//! The analysis of one step: the metrics by the spec's judge (Flagger's threshold checks, or the
//! statistical comparison of canary with primary, re-judged by thresholds in threshold mode) and
//! the rollout hooks, gathered for `analysis::verdict`, whose verdict (pass, a failed check, a
//! regression, a hold) the rollout acts on: failed checks are counted against `threshold`.

use super::Severity;
use super::tick::Tick;
use crate::analysis::statistical::Levels;
use crate::analysis::verdict::{Mode, StepVerdict, gate, step_verdict};
use crate::analysis::{MetricResult, Verdict, check_threshold, check_threshold_shown};
use crate::spec::{HookGate, Judge, MetricCheck};

/// What a rollback by failed checks says once the statistical judge has handed the rollout
/// over to the metrics' thresholds (see `RolloutState::threshold_fallback`), and no other.
pub const JUDGED_BY_THRESHOLDS: &str =
    "judged by the metrics' thresholds (the statistical judge's threshold mode)";

/// The error levels of each comparison: `alpha` is shared between the compared metrics
/// (Bonferroni), so the chance that any of them rolls back a canary no worse than primary stays
/// within `alpha`; each gets the whole `beta` (= `alpha`), since advancing needs them all.
fn comparison_levels(metrics: &[MetricCheck], alpha: f64) -> Levels {
    let compared = metrics.iter().filter(|m| m.kind.is_builtin()).count();
    Levels {
        alpha: alpha / compared.max(1) as f64,
        beta: alpha,
    }
}

/// How a tick's analysis came out.
pub(super) enum Analysis {
    Passed,
    /// A failed check (threshold mode, hooks, scalar metrics).
    Failed(String),
    /// The statistical judge found the canary worse than primary: roll back now.
    Regressed(String),
    /// The statistical judge cannot decide yet: hold the step.
    Held {
        why: String,
        short_of_traffic: Option<(f64, u64)>,
    },
}

impl Tick<'_> {
    /// All hooks of a blocking type answered success.
    pub(super) fn hooks_pass(&self, gate: HookGate) -> Result<(), String> {
        match self.refusal(gate) {
            None => Ok(()),
            Some((hook, Some(why))) => Err(format!("{gate} hook {hook} failed: {why}")),
            Some((hook, None)) => Err(format!("{gate} hook {hook} did not answer")),
        }
    }

    /// Metrics and rollout hooks for this tick: the results are kept for the status, the
    /// verdict is [`step_verdict`]'s.
    pub(super) fn analyse(&mut self) -> Analysis {
        let (spec, obs) = (self.spec, self.obs);
        let (results, short_of_traffic) = match spec.judge {
            Judge::Threshold => (
                spec.metrics
                    .iter()
                    .map(|m| check_threshold(m, obs.metrics.get(&m.name), &spec.target))
                    .collect(),
                None,
            ),
            Judge::Statistical { .. } => self.compare(|_| true),
        };
        let (results, fell_back) = self.thresholds_in_threshold_mode(results);
        self.s.analysis = results;
        let mode = match spec.judge {
            Judge::Threshold => Mode::Thresholds,
            Judge::Statistical { .. } => Mode::Statistical {
                by_threshold: &fell_back,
            },
        };
        let hooks = self.hooks_pass(HookGate::Rollout);
        match step_verdict(&spec.metrics, &self.s.analysis, hooks, mode) {
            StepVerdict::Pass => Analysis::Passed,
            StepVerdict::FailedCheck(why) => Analysis::Failed(why),
            StepVerdict::Regressed(why) => Analysis::Regressed(why),
            StepVerdict::Hold(why) => Analysis::Held {
                why,
                short_of_traffic,
            },
        }
    }

    /// Judged by thresholds (see `RolloutState::threshold_fallback`): each comparison that has
    /// not regressed is checked against its metric's threshold range over the window since the
    /// last step check, one interval's traffic, as Flagger checks it, except that a success
    /// rate under its minimum must be shown by the counts at `alpha`
    /// ([`check_threshold_shown`]: one 5xx in a few dozen requests shows nothing, yet failed
    /// 26% of a healthy canary's checks at 10 requests/s). Returns the results and
    /// the metrics so judged. A window without data keeps the judge's own result: no threshold
    /// passes without a value. Neither does one whose look had no data (a failed query, or no
    /// canary traffic yet): the window still holds the earlier looks' traffic, and passing on it
    /// would let a canary advance, even be promoted, while its metrics cannot be read.
    fn thresholds_in_threshold_mode(
        &self,
        mut results: Vec<MetricResult>,
    ) -> (Vec<MetricResult>, Vec<String>) {
        let mut fell_back = Vec::new();
        let Judge::Statistical { alpha, .. } = self.spec.judge else {
            return (results, fell_back);
        };
        if !self.s.threshold_fallback {
            return (results, fell_back);
        }
        let judged_this_look = |r: &&mut MetricResult| {
            matches!(r.verdict, Verdict::Pass | Verdict::Low | Verdict::Undecided)
        };
        for r in results.iter_mut().filter(judged_this_look) {
            let Some(m) = self
                .spec
                .metrics
                .iter()
                .find(|m| m.name == r.name && m.kind.is_builtin())
            else {
                continue;
            };
            let window = self.s.evidence.window_reading(m);
            let checked = check_threshold_shown(m, window.as_ref(), &self.spec.target, alpha);
            if checked.verdict == Verdict::NoData {
                continue;
            }
            *r = MetricResult {
                reason: format!(
                    "{} (threshold over this interval's traffic; the statistical judge: {})",
                    checked.reason, r.reason
                ),
                ..checked
            };
            fell_back.push(m.name.clone());
        }
        (results, fell_back)
    }

    /// The statistical judge on the metrics `include` picks: their results, and whether a hold is
    /// for lack of traffic (canary requests seen, requests needed).
    pub(super) fn compare(
        &mut self,
        include: impl Fn(&MetricCheck) -> bool,
    ) -> (Vec<MetricResult>, Option<(f64, u64)>) {
        let Judge::Statistical {
            alpha,
            min_requests,
        } = self.spec.judge
        else {
            return (Vec::new(), None);
        };
        let (spec, obs) = (self.spec, self.obs);
        let gate = gate(&spec.strategy, self.s.canary_weight);
        let mut short_of_traffic = None;
        let results = spec
            .metrics
            .iter()
            .filter(|m| include(m))
            .map(|m| {
                let judged = self.s.evidence.judge(
                    m,
                    obs.metrics.get(&m.name),
                    comparison_levels(&spec.metrics, alpha),
                    min_requests,
                    gate,
                    &spec.target,
                );
                short_of_traffic = short_of_traffic.or(judged.short_of_traffic);
                judged.result
            })
            .collect();
        (results, short_of_traffic)
    }

    /// The statistical judge's look between steps: the comparisons only (hooks and scalar
    /// metrics keep their once-per-interval checks), acting only on a regression.
    pub(super) fn look_between_steps(&mut self) {
        self.s.last_look = Some(self.now);
        let (looked, _) = self.compare(|m| m.kind.is_builtin());
        let verdict = step_verdict(
            &self.spec.metrics,
            &looked,
            Ok(()),
            Mode::Statistical { by_threshold: &[] },
        );
        // Only a regression acts between steps; a step's other outcomes wait for its check.
        if let StepVerdict::Regressed(why) = verdict {
            self.s.analysis = looked;
            self.rollback(format!("canary regressed: {why}"));
        }
    }

    pub(super) fn failed_check(&mut self, why: String) {
        self.s.failed_checks += 1;
        let (n, threshold) = (self.s.failed_checks, self.spec.threshold);
        if n >= threshold {
            // A rollback in threshold mode says so: it is not the statistical judge's evidence.
            let mode = if self.s.threshold_fallback {
                format!(", {JUDGED_BY_THRESHOLDS}")
            } else {
                String::new()
            };
            self.rollback(format!(
                "failed checks threshold reached ({n}/{threshold}){mode}: {why}"
            ));
        } else {
            self.event(
                Severity::Warning,
                format!(
                    "Halt {} advancement: {why} (failed checks {n}/{threshold})",
                    self.target()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::test_support::compared_and_custom;

    #[test]
    fn each_comparison_gets_its_share_of_alpha_and_the_whole_beta() {
        let metrics = compared_and_custom("request-success-rate", "request-duration");
        let levels = comparison_levels(&metrics, 0.01);
        assert_eq!(levels.alpha, 0.005);
        assert_eq!(levels.beta, 0.01);
    }
}
