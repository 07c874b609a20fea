//! Canary analysis: what the metrics say about the canary, as values with reasons.
//!
//! The threshold judge is Flagger's: each metric's value against its range. The statistical
//! judge ([`statistical`]: [`sequential`] for error rates, [`latency`] for latency) compares
//! canary with primary. [`mann_whitney`] is Kayenta's latency test from histogram buckets, kept
//! for comparison (its normal approximation fails at the per-look levels a judge that looks
//! again and again needs; see `examples/judge_rates`).

pub mod latency;
pub mod mann_whitney;
pub mod sequential;
pub mod statistical;
pub(crate) mod verdict;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::spec::{MetricCheck, MetricKind};

/// What the metrics source returned for one metric on one tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum MetricReading {
    /// A scalar (threshold mode, and custom queries in any mode).
    Value { value: f64 },
    /// Request and failure counts over the window, for the error-rate test.
    Counts { canary: Counts, primary: Counts },
    /// Latency histograms over the window, for the Mann-Whitney test.
    Histograms {
        canary: Histogram,
        primary: Histogram,
    },
    /// The query returned no series or no samples.
    NoData { reason: String },
    /// The query failed (source unreachable, bad answer).
    Error { reason: String },
}

/// Requests and failures (5xx) served over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub requests: f64,
    pub failures: f64,
}

/// A latency histogram as Prometheus gives it: cumulative counts for each upper bound `le`
/// (milliseconds), the last bound being `+Inf`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    pub cumulative: Vec<f64>,
}

/// The verdict on one metric for one tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Within bounds, or no worse than primary.
    Pass,
    /// Out of bounds, or worse than primary (Kayenta's High).
    Fail,
    /// Better than primary in a way that is flagged but not failed (Kayenta's Low).
    Low,
    /// Not enough evidence yet: hold the step (statistical judge only).
    Undecided,
    /// No value: a failed check in threshold mode, a hold in statistical mode.
    NoData,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Low => "low",
            Verdict::Undecided => "undecided",
            Verdict::NoData => "no data",
        })
    }
}

/// One metric's result on one tick, with the reason a person can read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    pub name: String,
    /// The canary's value, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    pub verdict: Verdict,
    pub reason: String,
}

/// Flagger's check: the value must lie within `[min, max]`; no value is a failed check.
pub fn check_threshold(
    check: &MetricCheck,
    reading: Option<&MetricReading>,
    target: &str,
) -> MetricResult {
    let name = check.name.clone();
    let unit = unit(&check.kind);
    let value = match reading {
        Some(MetricReading::Value { value }) => *value,
        Some(MetricReading::Counts { canary, .. })
            if check.kind == MetricKind::RequestSuccessRate =>
        {
            if canary.requests > 0.0 {
                100.0 * (1.0 - canary.failures / canary.requests)
            } else {
                f64::NAN
            }
        }
        Some(MetricReading::Error { reason }) => {
            return MetricResult {
                name,
                value: None,
                verdict: Verdict::NoData,
                reason: format!("metric {} could not be read: {reason}", check.name),
            };
        }
        Some(
            MetricReading::NoData { .. }
            | MetricReading::Counts { .. }
            | MetricReading::Histograms { .. },
        )
        | None => f64::NAN,
    };
    if !value.is_finite() {
        return MetricResult {
            name,
            value: None,
            verdict: Verdict::NoData,
            reason: format!(
                "no values found for metric {}: probably {target} is not receiving traffic",
                check.name
            ),
        };
    }
    // Flagger reads the built-in latency as whole milliseconds and its bounds too
    // (`time.Duration(int64(value)) * time.Millisecond`), so 500.4 ms is within a max of 500.
    let (value, min, max) = if check.kind == MetricKind::RequestDuration {
        (
            value.trunc(),
            check.min.map(f64::trunc),
            check.max.map(f64::trunc),
        )
    } else {
        (value, check.min, check.max)
    };
    let (verdict, reason) = match (min, max) {
        (Some(min), _) if value < min => (
            Verdict::Fail,
            format!("{} {value:.2}{unit} < {min}{unit} (min)", check.name),
        ),
        (_, Some(max)) if value > max => (
            Verdict::Fail,
            format!("{} {value:.2}{unit} > {max}{unit} (max)", check.name),
        ),
        (min, max) => (
            Verdict::Pass,
            format!(
                "{} {value:.2}{unit} within {}",
                check.name,
                range(min, max, unit)
            ),
        ),
    };
    MetricResult {
        name,
        value: Some(value),
        verdict,
        reason,
    }
}

fn unit(kind: &MetricKind) -> &'static str {
    match kind {
        MetricKind::RequestSuccessRate => "%",
        MetricKind::RequestDuration => "ms",
        _ => "",
    }
}

fn range(min: Option<f64>, max: Option<f64>, unit: &str) -> String {
    match (min, max) {
        (Some(lo), Some(hi)) => format!("[{lo}{unit}, {hi}{unit}]"),
        (Some(lo), None) => format!("[{lo}{unit}, ∞)"),
        (None, Some(hi)) => format!("(-∞, {hi}{unit}]"),
        (None, None) => "(any)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Duration;

    fn success_rate(min: f64) -> MetricCheck {
        MetricCheck {
            name: "request-success-rate".into(),
            kind: MetricKind::RequestSuccessRate,
            window: Duration::from_secs(60),
            min: Some(min),
            max: None,
            margin: None,
            quantile: None,
        }
    }

    #[test]
    fn a_value_below_min_fails_and_names_value_and_bound() {
        let r = check_threshold(
            &success_rate(99.0),
            Some(&MetricReading::Value { value: 97.5 }),
            "app",
        );
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.reason, "request-success-rate 97.50% < 99% (min)");
    }

    #[test]
    fn request_duration_and_its_bounds_are_whole_milliseconds_as_in_flagger() {
        let check = |min: Option<f64>, max: Option<f64>, value: f64| {
            let check = MetricCheck {
                name: "request-duration".into(),
                kind: MetricKind::RequestDuration,
                min,
                max,
                ..success_rate(0.0)
            };
            check_threshold(&check, Some(&MetricReading::Value { value }), "app").verdict
        };
        assert_eq!(check(None, Some(500.0), 500.9), Verdict::Pass);
        assert_eq!(check(None, Some(500.0), 501.0), Verdict::Fail);
        assert_eq!(check(None, Some(500.7), 500.9), Verdict::Pass);
        assert_eq!(check(Some(10.0), None, 9.9), Verdict::Fail);
        assert_eq!(check(Some(10.4), None, 10.2), Verdict::Pass);
    }

    #[test]
    fn a_query_value_is_compared_exactly() {
        let check = MetricCheck {
            name: "errors".into(),
            kind: MetricKind::Query {
                query: "q".into(),
                variables: Default::default(),
                interval: None,
            },
            min: None,
            max: Some(500.0),
            ..success_rate(0.0)
        };
        let r = check_threshold(&check, Some(&MetricReading::Value { value: 500.4 }), "app");
        assert_eq!(r.verdict, Verdict::Fail);
    }

    #[test]
    fn a_value_within_range_passes() {
        let r = check_threshold(
            &success_rate(99.0),
            Some(&MetricReading::Value { value: 99.5 }),
            "app",
        );
        assert_eq!(r.verdict, Verdict::Pass);
    }

    #[test]
    fn a_missing_or_nan_value_is_no_values_found() {
        for reading in [None, Some(MetricReading::Value { value: f64::NAN })] {
            let r = check_threshold(&success_rate(99.0), reading.as_ref(), "app");
            assert_eq!(r.verdict, Verdict::NoData);
            assert!(
                r.reason
                    .starts_with("no values found for metric request-success-rate")
            );
        }
    }

    #[test]
    fn a_source_error_is_reported_as_such() {
        let reading = MetricReading::Error {
            reason: "prometheus unreachable".into(),
        };
        let r = check_threshold(&success_rate(99.0), Some(&reading), "app");
        assert_eq!(r.verdict, Verdict::NoData);
        assert!(r.reason.contains("prometheus unreachable"));
    }

    #[test]
    fn counts_give_the_canary_success_rate() {
        let reading = MetricReading::Counts {
            canary: Counts {
                requests: 200.0,
                failures: 4.0,
            },
            primary: Counts {
                requests: 800.0,
                failures: 0.0,
            },
        };
        let r = check_threshold(&success_rate(99.0), Some(&reading), "app");
        assert_eq!(r.value, Some(98.0));
        assert_eq!(r.verdict, Verdict::Fail);
    }
}
