//! The statistical judge: each metric of the canary against the primary's, on the traffic of the
//! current step, with tests that stay valid however often they look.
//!
//! - `request-success-rate` (counts): the sequential error-rate test ([`super::sequential`]).
//! - `request-duration` (histograms): the sequential test of slow requests at the primary's
//!   quantile ([`super::latency`]), p99 unless the metric's `quantile` says otherwise (Flagger's
//!   `request-duration` is the p99).
//!
//! Both answer the same way: a regression rolls back at once; NoWorse lets the step advance;
//! Undecided (too little evidence) and NoData hold. Each metric's rollback side gets a share
//! `alpha` of the rollout's false-rollback level (so the chance that any of them rolls back a
//! canary no worse than primary stays within the whole), one-sided since only a regression acts.
//! Its NoWorse side gets the whole `beta`: promotion needs every metric's NoWorse, so a canary
//! worse on one metric is advanced only if that metric's own test errs.
//! - Any other metric (a scalar from a query) is checked against its threshold range, as in
//!   threshold mode: a failure is a failed check.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::latency::{LatencyDecision, LatencyEvidence, LatencyTestConfig};
use super::sequential::{Decision, ErrorRateConfig, ErrorRateEvidence, RateMargin};
use super::{MetricReading, MetricResult, Verdict, check_threshold};
use crate::spec::{Margin, MetricCheck, MetricKind};

/// Default smallest latency regression the "no worse" side holds: the canary 50% slower at the
/// gated quantile. At p99 a finer margin needs far more traffic: a tenth of the requests are
/// slow, and the primary's tail is read on its own scale (analysis::latency, "The primary's
/// share above `x`"). With log-normal latency of a 20 ms median and an 80 ms p99, identical
/// versions are shown no worse after about 2,500 canary observations at 50%, 8,000 at 30% and
/// over 30,000 at 10%. The rollback side does not use the margin.
pub const DEFAULT_LATENCY_INCREASE: f64 = 0.5;
/// Default smallest error-rate regression: one percentage point, Flagger's usual 99% slack.
pub const DEFAULT_ERROR_MARGIN_PP: f64 = 1.0;
/// The latency quantile gated by default: Flagger's `request-duration` is the p99.
pub const DEFAULT_LATENCY_QUANTILE: f64 = 0.99;

/// The error levels of one metric's comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Levels {
    /// This metric's share of the rollout's false-rollback level (one-sided).
    pub alpha: f64,
    /// The chance of advancing a step in which the canary is worse than the margin allows.
    pub beta: f64,
}

/// What a step's analysis may lead to, which decides the evidence it needs to pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// A further step: nothing regressed after `min_requests` canary requests of the step's own
    /// (from a look that saw some) suffices; "no worse" is asked of the last step.
    Step,
    /// Promotion: every comparison must show the canary no worse than primary over the
    /// rollout's pooled evidence (the bound of `beta`).
    Promotion,
}

/// What the statistical judge keeps between looks; serialised in the rollout state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The error-rate test's evidence, by metric name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub error_rate: BTreeMap<String, ErrorRateEvidence>,
    /// The latency test's evidence, by metric name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub latency: BTreeMap<String, LatencyEvidence>,
    /// Written by the earlier latency judge (Mann-Whitney at a per-look level); read and written
    /// back unchanged so that a recorded state keeps every field, and not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_looks: Option<u32>,
}

/// One metric's verdict and what it means for the step.
#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    pub result: MetricResult,
    /// Held for lack of traffic: canary requests seen in the step and the number needed.
    pub short_of_traffic: Option<(f64, u64)>,
}

impl Evidence {
    pub fn is_empty(&self) -> bool {
        self.error_rate.is_empty() && self.latency.is_empty()
    }

    /// The canary's weight changed: the next looks judge the new step's traffic.
    pub fn begin_step(&mut self) {
        for e in self.error_rate.values_mut() {
            e.begin_step();
        }
        for e in self.latency.values_mut() {
            e.begin_step();
        }
    }

    /// A step check has read each metric's window: the next window starts now.
    pub fn begin_window(&mut self) {
        for e in self.error_rate.values_mut() {
            e.begin_window();
        }
        for e in self.latency.values_mut() {
            e.begin_window();
        }
    }

    /// What the canary has shown for `check` over the window (the traffic since the last step
    /// check, or since the step began), as a reading for Flagger's threshold check, which reads
    /// each interval's own traffic: its request counts, or its latency at the metric's
    /// quantile. `None` when the window has no evidence.
    pub fn window_reading(&self, check: &MetricCheck) -> Option<MetricReading> {
        match check.kind {
            MetricKind::RequestSuccessRate => {
                let (canary, primary) = self.error_rate.get(&check.name)?.window_counts();
                Some(MetricReading::Counts {
                    canary,
                    primary,
                    covered: None,
                })
            }
            MetricKind::RequestDuration => {
                let q = check.quantile.unwrap_or(DEFAULT_LATENCY_QUANTILE);
                let value = self.latency.get(&check.name)?.window_canary_quantile(q)?;
                Some(MetricReading::Value { value })
            }
            _ => None,
        }
    }

    /// Judges one metric on a reading taken over the current step.
    pub fn judge(
        &mut self,
        check: &MetricCheck,
        reading: Option<&MetricReading>,
        levels: Levels,
        min_requests: u64,
        gate: Gate,
        target: &str,
    ) -> Judged {
        let judged = |verdict, value, reason: String| Judged {
            result: MetricResult {
                name: check.name.clone(),
                value,
                verdict,
                reason,
            },
            short_of_traffic: None,
        };
        match (&check.kind, reading) {
            (
                MetricKind::RequestSuccessRate,
                Some(MetricReading::Counts {
                    canary, primary, ..
                }),
            ) => {
                let margin = match check.margin {
                    Some(Margin::Relative(m)) => RateMargin::Relative(m),
                    Some(Margin::Absolute(m)) => RateMargin::Absolute(m),
                    None => RateMargin::Absolute(DEFAULT_ERROR_MARGIN_PP),
                };
                let config = ErrorRateConfig {
                    beta: levels.beta,
                    ..ErrorRateConfig::new(levels.alpha, margin, min_requests)
                };
                let j = self
                    .error_rate
                    .entry(check.name.clone())
                    .or_default()
                    .observe(&config, *canary, *primary);
                let value = (canary.requests > 0.0)
                    .then(|| 100.0 * (1.0 - canary.failures / canary.requests));
                let verdict = match j.decision {
                    Decision::Regressed => Verdict::Fail,
                    Decision::NoWorse => Verdict::Pass,
                    Decision::Undecided if canary.requests <= 0.0 || j.input_error.is_some() => {
                        Verdict::NoData
                    }
                    Decision::Undecided if gate == Gate::Step && j.step_clear => Verdict::Pass,
                    Decision::Undecided => Verdict::Undecided,
                };
                let reason = step_clear_reason(
                    gate,
                    j.decision == Decision::Undecided && j.step_clear,
                    &j.reason,
                );
                let mut out = judged(verdict, value, format!("{}: {reason}", check.name));
                if j.is_short_of_traffic() {
                    out.short_of_traffic = Some((j.step_canary_requests, j.min_requests));
                }
                out
            }
            (
                MetricKind::RequestDuration,
                Some(MetricReading::Histograms {
                    canary, primary, ..
                }),
            ) => {
                let config = LatencyTestConfig {
                    alpha: levels.alpha,
                    beta: levels.beta,
                    quantile: check.quantile.unwrap_or(DEFAULT_LATENCY_QUANTILE),
                    margin: match check.margin {
                        Some(Margin::Relative(m)) => m,
                        _ => DEFAULT_LATENCY_INCREASE,
                    },
                    min_requests,
                };
                let j = self
                    .latency
                    .entry(check.name.clone())
                    .or_default()
                    .observe(&config, canary, primary);
                let clear = gate == Gate::Step && j.step_clear;
                let verdict = match j.decision {
                    LatencyDecision::High => Verdict::Fail,
                    LatencyDecision::NoWorse => Verdict::Pass,
                    LatencyDecision::Undecided if clear => Verdict::Pass,
                    LatencyDecision::Undecided => Verdict::Undecided,
                    LatencyDecision::NoData => Verdict::NoData,
                };
                let reason = step_clear_reason(
                    gate,
                    j.decision == LatencyDecision::Undecided && j.step_clear,
                    &j.reason,
                );
                Judged {
                    short_of_traffic: j.short_of_traffic,
                    ..judged(
                        verdict,
                        j.canary_quantile,
                        format!("{}: {reason}", check.name),
                    )
                }
            }
            (
                MetricKind::RequestSuccessRate | MetricKind::RequestDuration,
                Some(MetricReading::NoData { reason } | MetricReading::Error { reason }),
            ) => judged(
                Verdict::NoData,
                None,
                format!("{}: holding, no data to compare: {reason}", check.name),
            ),
            (MetricKind::RequestSuccessRate | MetricKind::RequestDuration, None) => judged(
                Verdict::NoData,
                None,
                format!(
                    "{}: holding, no data to compare: {target} and its primary were not measured",
                    check.name
                ),
            ),
            // Scalars (custom queries, or a shell that sent a value) keep Flagger's check.
            _ => Judged {
                result: check_threshold(check, reading, target),
                short_of_traffic: None,
            },
        }
    }
}

/// A comparison's reason, saying so when it passes a step on the step's own evidence.
fn step_clear_reason(gate: Gate, undecided_but_clear: bool, reason: &str) -> String {
    if gate == Gate::Step && undecided_but_clear {
        format!(
            "step clear, nothing regressed after the step's minimum of canary requests (promotion needs the canary shown no worse); {reason}"
        )
    } else {
        reason.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::test_support::metric;
    use crate::analysis::{Counts, Histogram};

    const LEVELS: Levels = Levels {
        alpha: 0.01,
        beta: 0.01,
    };

    fn check(kind: MetricKind) -> MetricCheck {
        metric("m", kind)
    }

    fn counts(cr: f64, cf: f64, pr: f64, pf: f64) -> MetricReading {
        MetricReading::Counts {
            canary: Counts {
                requests: cr,
                failures: cf,
            },
            primary: Counts {
                requests: pr,
                failures: pf,
            },
            covered: None,
        }
    }

    #[test]
    fn a_canary_failing_far_more_than_primary_fails_at_once() {
        let mut e = Evidence::default();
        let j = e.judge(
            &check(MetricKind::RequestSuccessRate),
            Some(&counts(1000.0, 100.0, 9000.0, 9.0)),
            LEVELS,
            100,
            Gate::Promotion,
            "app",
        );
        assert_eq!(j.result.verdict, Verdict::Fail);
        assert!(j.result.reason.contains("e-value"), "{}", j.result.reason);
    }

    #[test]
    fn a_healthy_canary_with_enough_traffic_passes_and_without_is_short_of_traffic() {
        let mut e = Evidence::default();
        let j = e.judge(
            &check(MetricKind::RequestSuccessRate),
            Some(&counts(20.0, 0.0, 180.0, 0.0)),
            LEVELS,
            100,
            Gate::Promotion,
            "app",
        );
        assert_eq!(j.result.verdict, Verdict::Undecided);
        assert_eq!(j.short_of_traffic, Some((20.0, 100)));
        let j = e.judge(
            &check(MetricKind::RequestSuccessRate),
            Some(&counts(2000.0, 1.0, 18000.0, 10.0)),
            LEVELS,
            100,
            Gate::Promotion,
            "app",
        );
        assert_eq!(j.result.verdict, Verdict::Pass, "{}", j.result.reason);
    }

    #[test]
    fn bad_counts_and_missing_readings_hold_and_never_pass() {
        let mut e = Evidence::default();
        for reading in [
            Some(counts(f64::NAN, 0.0, 10.0, 0.0)),
            Some(counts(-5.0, 0.0, 10.0, 0.0)),
            None,
        ] {
            let j = e.judge(
                &check(MetricKind::RequestSuccessRate),
                reading.as_ref(),
                LEVELS,
                100,
                Gate::Promotion,
                "app",
            );
            assert_eq!(j.result.verdict, Verdict::NoData, "{}", j.result.reason);
        }
        let empty = MetricReading::Histograms {
            canary: Histogram::default(),
            primary: Histogram::default(),
            covered: None,
        };
        let j = e.judge(
            &check(MetricKind::RequestDuration),
            Some(&empty),
            LEVELS,
            100,
            Gate::Promotion,
            "app",
        );
        assert_eq!(j.result.verdict, Verdict::NoData);
    }

    #[test]
    fn a_clearly_slower_canary_holds_while_the_bound_is_chosen_then_is_high_and_fails() {
        let bounds = vec![10.0, 25.0, 50.0, 100.0, 250.0, f64::INFINITY];
        let h = |c: Vec<f64>| Histogram {
            bounds: bounds.clone(),
            cumulative: c,
        };
        let look = |k: f64| MetricReading::Histograms {
            canary: h([0.0, 10.0, 50.0, 300.0, 500.0, 500.0]
                .iter()
                .map(|c| k * c)
                .collect()),
            primary: h([200.0, 1500.0, 2400.0, 2500.0, 2500.0, 2500.0]
                .iter()
                .map(|c| k * c)
                .collect()),
            covered: None,
        };
        let mut e = Evidence::default();
        let mut judge = |reading| {
            e.judge(
                &check(MetricKind::RequestDuration),
                Some(&reading),
                LEVELS,
                100,
                Gate::Promotion,
                "app",
            )
        };
        let j = judge(look(1.0));
        assert_eq!(j.result.verdict, Verdict::Undecided, "{}", j.result.reason);
        let j = judge(look(2.0));
        assert_eq!(j.result.verdict, Verdict::Fail, "{}", j.result.reason);
        assert!(j.result.reason.contains("at p99"), "{}", j.result.reason);
    }

    /// Canary observations after which identical versions are first shown no worse at p99 with
    /// `margin`, reading the expected counts of bench-aa-100rps' shape (p50 20 ms, p99 80 ms)
    /// at a 30% canary weight, 1,500 requests a look.
    fn observations_to_no_worse(margin: f64) -> Option<f64> {
        let shape = crate::rollout::log_normal_latency(20.0, 80.0).unwrap();
        let config = LatencyTestConfig {
            alpha: 0.005,
            beta: 0.01,
            quantile: DEFAULT_LATENCY_QUANTILE,
            margin,
            min_requests: 100,
        };
        let scaled = |n: f64| Histogram {
            bounds: shape.bounds.clone(),
            cumulative: shape.cumulative.iter().map(|f| f * n).collect(),
        };
        let mut e = LatencyEvidence::default();
        (1..=1_000).map(f64::from).find_map(|look| {
            let (canary, primary) = (450.0 * look, 1_050.0 * look);
            let j = e.observe(&config, &scaled(canary), &scaled(primary));
            (j.decision == LatencyDecision::NoWorse).then_some(canary)
        })
    }

    #[test]
    fn the_default_latency_margin_is_50_percent_because_10_percent_at_p99_needs_ten_times_the_traffic()
     {
        assert_eq!(DEFAULT_LATENCY_INCREASE, 0.5);
        let at_50 = observations_to_no_worse(0.5).expect("shown no worse at 50%");
        let at_10 = observations_to_no_worse(0.1).unwrap_or(f64::INFINITY);
        eprintln!("no worse at p99 after {at_50} canary observations at 50%, {at_10} at 10%");
        assert!(at_10 > 10.0 * at_50, "50%: {at_50}, 10%: {at_10}");
    }
}
