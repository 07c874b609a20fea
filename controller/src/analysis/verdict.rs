//! The verdict on a step: from each metric's result, the rollout hooks and the judge's mode,
//! what the step does (pass, a failed check, a regression, a hold), and the gate a passing step
//! leads to. Pure: the rollout core gathers the results and acts on the verdict.

use super::statistical::Gate;
use super::{MetricResult, Verdict};
use crate::spec::{MetricCheck, Strategy};

/// How the metrics of a step were judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode<'a> {
    /// Flagger's: every metric against its threshold range.
    Thresholds,
    /// The statistical comparison of canary with primary; `by_threshold` names the comparisons
    /// judged on this look by their threshold instead (threshold mode), which fail as a
    /// threshold check does.
    Statistical { by_threshold: &'a [String] },
}

/// What a step's analysis decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StepVerdict {
    Pass,
    /// A failed check (a threshold, a hook, a scalar metric out of range): counted against
    /// `threshold`.
    FailedCheck(String),
    /// A comparison found the canary worse than primary: roll back now.
    Regressed(String),
    /// A comparison cannot decide yet, or has no data: hold the step.
    Hold(String),
}

/// The verdict on a step from its metrics' `results` (checks of `metrics`) and whether the
/// rollout hooks passed. A failed hook is a failed check whatever the metrics say; then a
/// regression rolls back before a scalar out of range counts, and either before a hold.
/// The reasons of the results that decide are joined with `; `.
pub(crate) fn step_verdict(
    metrics: &[MetricCheck],
    results: &[MetricResult],
    hooks: Result<(), String>,
    mode: Mode<'_>,
) -> StepVerdict {
    if let Err(why) = hooks {
        return StepVerdict::FailedCheck(why);
    }
    let reasons = |keep: &dyn Fn(&MetricResult) -> bool| -> String {
        let picked: Vec<&str> = results
            .iter()
            .filter(|r| keep(r))
            .map(|r| r.reason.as_str())
            .collect();
        picked.join("; ")
    };
    match mode {
        Mode::Thresholds => {
            let why = reasons(&|r| matches!(r.verdict, Verdict::Fail | Verdict::NoData));
            if why.is_empty() {
                StepVerdict::Pass
            } else {
                StepVerdict::FailedCheck(why)
            }
        }
        Mode::Statistical { by_threshold } => {
            let compared = |name: &str| {
                metrics
                    .iter()
                    .any(|m| m.name == name && m.kind.is_builtin())
                    && !by_threshold.iter().any(|f| f == name)
            };
            let failed = |r: &MetricResult| r.verdict == Verdict::Fail;
            let regressed = reasons(&|r| failed(r) && compared(&r.name));
            let out_of_range = reasons(&|r| failed(r) && !compared(&r.name));
            let waiting = reasons(&|r| matches!(r.verdict, Verdict::Undecided | Verdict::NoData));
            if !regressed.is_empty() {
                StepVerdict::Regressed(regressed)
            } else if !out_of_range.is_empty() {
                StepVerdict::FailedCheck(out_of_range)
            } else if !waiting.is_empty() {
                StepVerdict::Hold(waiting)
            } else {
                StepVerdict::Pass
            }
        }
    }
}

/// What passing a step at `canary_weight` leads to: under the canary strategy, a step below the
/// top weight gives way to the next on its own evidence; the top step (and every blue/green or
/// A/B iteration) needs the canary shown no worse, as promotion does.
pub(crate) fn gate(strategy: &Strategy, canary_weight: u8) -> Gate {
    match strategy {
        Strategy::Canary { steps, .. } if steps.iter().any(|&w| w > canary_weight) => Gate::Step,
        _ => Gate::Promotion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::test_support::compared_and_custom;

    fn metrics() -> Vec<MetricCheck> {
        compared_and_custom("rate", "latency")
    }

    fn result(name: &str, verdict: Verdict) -> MetricResult {
        MetricResult {
            name: name.into(),
            value: None,
            verdict,
            reason: format!("{name} {verdict}"),
        }
    }

    /// A case: what it checks, the judge's mode, the hooks' answer, each metric's verdict, and
    /// the verdict on the step.
    type Case<'a> = (
        &'a str,
        Mode<'a>,
        Result<(), String>,
        Vec<(&'a str, Verdict)>,
        StepVerdict,
    );

    const STATISTICAL: Mode<'static> = Mode::Statistical { by_threshold: &[] };

    #[test]
    fn the_verdict_on_a_step_follows_the_results_hooks_and_mode() {
        use StepVerdict::{FailedCheck, Hold, Pass, Regressed};
        use Verdict::{Fail, Low, NoData, Undecided};
        let rate_by_threshold = ["rate".to_string()];
        let threshold_mode = Mode::Statistical {
            by_threshold: &rate_by_threshold,
        };
        let hook_failed = || Err("rollout hook smoke failed: 500".to_string());
        let cases: Vec<Case> = vec![
            (
                "thresholds: all within range pass",
                Mode::Thresholds,
                Ok(()),
                vec![("rate", Verdict::Pass), ("custom", Verdict::Pass)],
                Pass,
            ),
            (
                "thresholds: every failure and missing value is one failed check",
                Mode::Thresholds,
                Ok(()),
                vec![
                    ("rate", Fail),
                    ("latency", Verdict::Pass),
                    ("custom", NoData),
                ],
                FailedCheck("rate fail; custom no data".into()),
            ),
            (
                "thresholds: a failed hook is a failed check",
                Mode::Thresholds,
                hook_failed(),
                vec![("rate", Verdict::Pass)],
                FailedCheck("rollout hook smoke failed: 500".into()),
            ),
            (
                "statistical: no worse and low pass",
                STATISTICAL,
                Ok(()),
                vec![
                    ("rate", Verdict::Pass),
                    ("latency", Low),
                    ("custom", Verdict::Pass),
                ],
                Pass,
            ),
            (
                "statistical: a comparison that regressed rolls back before all else",
                STATISTICAL,
                Ok(()),
                vec![("rate", Undecided), ("latency", Fail), ("custom", Fail)],
                Regressed("latency fail".into()),
            ),
            (
                "statistical: a failed hook is a failed check even over a regression",
                STATISTICAL,
                hook_failed(),
                vec![("rate", Fail)],
                FailedCheck("rollout hook smoke failed: 500".into()),
            ),
            (
                "statistical: a scalar out of range is a failed check before a hold",
                STATISTICAL,
                Ok(()),
                vec![("rate", Undecided), ("custom", Fail)],
                FailedCheck("custom fail".into()),
            ),
            (
                "statistical: undecided and no data hold",
                STATISTICAL,
                Ok(()),
                vec![
                    ("rate", Undecided),
                    ("latency", NoData),
                    ("custom", Verdict::Pass),
                ],
                Hold("rate undecided; latency no data".into()),
            ),
            (
                "threshold mode: a comparison judged by its threshold fails as a check",
                threshold_mode,
                Ok(()),
                vec![("rate", Fail), ("latency", Verdict::Pass)],
                FailedCheck("rate fail".into()),
            ),
            (
                "threshold mode: a comparison still judged by the test regresses",
                threshold_mode,
                Ok(()),
                vec![("rate", Fail), ("latency", Fail)],
                Regressed("latency fail".into()),
            ),
        ];
        for (name, mode, hooks, results, expected) in cases {
            let results: Vec<MetricResult> = results
                .into_iter()
                .map(|(metric, verdict)| result(metric, verdict))
                .collect();
            assert_eq!(
                step_verdict(&metrics(), &results, hooks, mode),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn only_the_top_canary_step_and_other_strategies_need_promotions_evidence() {
        let canary = Strategy::Canary {
            steps: vec![10, 20, 50],
            mirror: None,
        };
        assert_eq!(gate(&canary, 0), Gate::Step);
        assert_eq!(gate(&canary, 20), Gate::Step);
        assert_eq!(gate(&canary, 50), Gate::Promotion);
        let blue_green = Strategy::BlueGreen {
            iterations: 3,
            mirror: None,
        };
        assert_eq!(gate(&blue_green, 0), Gate::Promotion);
    }
}
