//! The statistical judge: each metric of the canary against the primary's, on the traffic of the
//! current step, with tests that stay valid however often they look.
//!
//! - `request-success-rate` (counts): the sequential error-rate test ([`super::sequential`]).
//!   Regressed rolls back at once; NoWorse lets the step advance; Undecided holds.
//! - `request-duration` (histograms): Mann-Whitney U from the buckets
//!   ([`super::mann_whitney`]), at a per-look confidence level that keeps the chance of any
//!   false High over the rollout within `alpha`. High rolls back; Pass and Low advance;
//!   NoData holds.
//!
//! `alpha` here is each metric's share of the rollout's false-rollback level.
//! - Any other metric (a scalar from a query) is checked against its threshold range, as in
//!   threshold mode: a failure is a failed check.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::mann_whitney::{
    Classification, EffectMeasure, LatencyConfig, always_valid_level, judge_latency,
};
use super::sequential::{Decision, ErrorRateConfig, ErrorRateEvidence, RateMargin};
use super::{MetricReading, MetricResult, Verdict, check_threshold};
use crate::spec::{Margin, MetricCheck, MetricKind};

/// Default smallest latency regression worth a rollback: the canary's median 10% slower.
const DEFAULT_LATENCY_INCREASE: f64 = 0.1;
/// Default smallest error-rate regression: one percentage point, Flagger's usual 99% slack.
const DEFAULT_ERROR_MARGIN_PP: f64 = 1.0;

/// What the statistical judge keeps between looks; serialised in the rollout state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The error-rate test's evidence, by metric name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub error_rate: BTreeMap<String, ErrorRateEvidence>,
    /// Latency looks so far in the rollout (for the per-look confidence level).
    #[serde(default)]
    pub latency_looks: u32,
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
        self.error_rate.is_empty() && self.latency_looks == 0
    }

    /// The canary's weight changed: the next looks judge the new step's traffic.
    pub fn begin_step(&mut self) {
        for e in self.error_rate.values_mut() {
            e.begin_step();
        }
    }

    /// Judges one metric on a reading taken over the current step.
    pub fn judge(
        &mut self,
        check: &MetricCheck,
        reading: Option<&MetricReading>,
        alpha: f64,
        min_requests: u64,
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
            (MetricKind::RequestSuccessRate, Some(MetricReading::Counts { canary, primary })) => {
                let margin = match check.margin {
                    Some(Margin::Relative(m)) => RateMargin::Relative(m),
                    Some(Margin::Absolute(m)) => RateMargin::Absolute(m),
                    None => RateMargin::Absolute(DEFAULT_ERROR_MARGIN_PP),
                };
                let config = ErrorRateConfig::new(alpha, margin, min_requests);
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
                    Decision::Undecided => Verdict::Undecided,
                };
                let mut out = judged(verdict, value, format!("{}: {}", check.name, j.reason));
                if j.is_short_of_traffic() {
                    out.short_of_traffic = Some((j.step_canary_requests, j.min_requests));
                }
                out
            }
            (MetricKind::RequestDuration, Some(MetricReading::Histograms { canary, primary })) => {
                self.latency_looks += 1;
                let allowed = 1.0
                    + match check.margin {
                        Some(Margin::Relative(m)) => m,
                        _ => DEFAULT_LATENCY_INCREASE,
                    };
                let config = LatencyConfig {
                    confidence_level: always_valid_level(1.0 - alpha, self.latency_looks),
                    effect: EffectMeasure::QuantileRatio { quantile: 0.5 },
                    allowed_increase: allowed,
                    allowed_decrease: 1.0 / allowed,
                    ..LatencyConfig::default()
                };
                let j = judge_latency(&config, canary, primary);
                let verdict = match j.classification {
                    Classification::High => Verdict::Fail,
                    Classification::Low => Verdict::Low,
                    Classification::Pass => Verdict::Pass,
                    Classification::NoData => Verdict::NoData,
                };
                judged(
                    verdict,
                    j.canary_p99,
                    format!("{}: {}", check.name, j.reason),
                )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{Counts, Histogram};
    use crate::spec::Duration;

    fn check(kind: MetricKind) -> MetricCheck {
        MetricCheck {
            name: "m".into(),
            kind,
            window: Duration::from_secs(60),
            min: None,
            max: None,
            margin: None,
        }
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
        }
    }

    #[test]
    fn a_canary_failing_far_more_than_primary_fails_at_once() {
        let mut e = Evidence::default();
        let j = e.judge(
            &check(MetricKind::RequestSuccessRate),
            Some(&counts(1000.0, 100.0, 9000.0, 9.0)),
            0.01,
            100,
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
            0.01,
            100,
            "app",
        );
        assert_eq!(j.result.verdict, Verdict::Undecided);
        assert_eq!(j.short_of_traffic, Some((20.0, 100)));
        let j = e.judge(
            &check(MetricKind::RequestSuccessRate),
            Some(&counts(2000.0, 1.0, 18000.0, 10.0)),
            0.01,
            100,
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
                0.01,
                100,
                "app",
            );
            assert_eq!(j.result.verdict, Verdict::NoData, "{}", j.result.reason);
        }
        let empty = MetricReading::Histograms {
            canary: Histogram::default(),
            primary: Histogram::default(),
        };
        let j = e.judge(
            &check(MetricKind::RequestDuration),
            Some(&empty),
            0.01,
            100,
            "app",
        );
        assert_eq!(j.result.verdict, Verdict::NoData);
    }

    #[test]
    fn a_clearly_slower_canary_is_high_and_fails() {
        let bounds = vec![10.0, 25.0, 50.0, 100.0, 250.0, f64::INFINITY];
        let h = |c: Vec<f64>| Histogram {
            bounds: bounds.clone(),
            cumulative: c,
        };
        let reading = MetricReading::Histograms {
            canary: h(vec![0.0, 10.0, 50.0, 300.0, 500.0, 500.0]),
            primary: h(vec![200.0, 1500.0, 2400.0, 2500.0, 2500.0, 2500.0]),
        };
        let mut e = Evidence::default();
        let j = e.judge(
            &check(MetricKind::RequestDuration),
            Some(&reading),
            0.01,
            100,
            "app",
        );
        assert_eq!(j.result.verdict, Verdict::Fail, "{}", j.result.reason);
    }
}
