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
#[cfg(test)]
pub(crate) mod test_support;
pub(crate) mod verdict;

use std::fmt;

use serde::{Deserialize, Serialize};
use statrs::function::beta::checked_beta_reg;

use crate::spec::{MetricCheck, MetricKind};

/// What the metrics source returned for one metric on one tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum MetricReading {
    /// A scalar (threshold mode, and custom queries in any mode).
    Value { value: f64 },
    /// Request and failure counts over the window, for the error-rate test.
    Counts {
        canary: Counts,
        primary: Counts,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        covered: Option<Box<Covered>>,
    },
    /// Latency histograms over the window, for the latency test.
    Histograms {
        canary: Histogram,
        primary: Histogram,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        covered: Option<Box<Covered>>,
    },
    /// The query returned no series or no samples.
    NoData { reason: String },
    /// The query failed (source unreachable, bad answer).
    Error { reason: String },
}

/// How long each side's counts of a reading took to accumulate, in seconds, when the reader
/// knows it (`None` in the reading: the whole window). Counters diffed between scrapes count
/// from a scrape after the window began to the last one before it ended (see
/// `metrics::counters`), which can be far less than the window: the request rate is the count
/// over this span. A side is `None` when none of its series has covered any time yet. Boxed in
/// a reading, which stays small.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Covered {
    pub canary: Option<f64>,
    pub primary: Option<f64>,
}

/// Istio's default bucket bounds of `istio_request_duration_milliseconds` (ms), `+Inf` last: the
/// shape [`crate::rollout::log_normal_latency`] fills, and the buckets tests draw latencies into.
pub const ISTIO_DURATION_BOUNDS_MS: [f64; 20] = [
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
    30000.0,
    60000.0,
    300000.0,
    600000.0,
    1800000.0,
    3600000.0,
    f64::INFINITY,
];

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

/// Flagger's check of a success rate over a window's counts, as the statistical judge's threshold
/// mode reads it (see `rollout::RolloutState::threshold_fallback`): a rate under `min` fails only
/// when the counts show it, that is when a canary failing exactly `100 - min` percent of its
/// requests would show as many failures or more with probability below `level`.
///
/// Why: the mode judges the low traffic the statistical judge cannot decide in time, where a
/// window holds a few dozen canary requests and one 5xx puts it under the minimum (1 in 60 is
/// 98.3% against 99%). A canary failing 0.5%, half the slack, shows one in 26% of such windows,
/// and `threshold` such checks rolled back about 1.5% of the healthy canaries judged so at 10
/// requests/s. Under this rule a canary no worse than the threshold fails a check with
/// probability at most `level`. Any other metric or reading is [`check_threshold`]'s.
pub fn check_threshold_shown(
    check: &MetricCheck,
    reading: Option<&MetricReading>,
    target: &str,
    level: f64,
) -> MetricResult {
    let plain = check_threshold(check, reading, target);
    let (Verdict::Fail, Some(min), Some(value), Some(MetricReading::Counts { canary, .. })) =
        (plain.verdict, check.min, plain.value, reading)
    else {
        return plain;
    };
    if check.kind != MetricKind::RequestSuccessRate || value >= min {
        return plain;
    }
    let tail = failures_at_least(canary.failures, canary.requests, 1.0 - min / 100.0);
    let shown = format!(
        "{} of {} canary requests failed, as many or more in {} of windows at {min}%",
        canary.failures,
        canary.requests,
        percent(tail)
    );
    if tail < level {
        MetricResult {
            reason: format!("{}: {shown}, below {}", plain.reason, percent(level)),
            ..plain
        }
    } else {
        MetricResult {
            verdict: Verdict::Pass,
            reason: format!(
                "{}, not shown over this window's traffic ({shown}, at least {}): passes",
                plain.reason,
                percent(level)
            ),
            ..plain
        }
    }
}

/// The chance of at least `failures` failures among `requests` failing with probability `p`
/// each (the binomial upper tail, as the regularised incomplete beta function, which also
/// takes counts that are not whole, as Prometheus' `increase` gives).
fn failures_at_least(failures: f64, requests: f64, p: f64) -> f64 {
    if failures <= 0.0 || p >= 1.0 {
        return 1.0;
    }
    if p <= 0.0 {
        return 0.0;
    }
    // Unreachable with counts a reading holds (0 < failures <= requests); an error fails the
    // check as Flagger's would.
    checked_beta_reg(failures, requests - failures + 1.0, p).unwrap_or(0.0)
}

fn percent(x: f64) -> String {
    let p = 100.0 * x;
    if p >= 1.0 || p == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.2}%")
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
    use crate::analysis::test_support::metric;

    fn success_rate(min: f64) -> MetricCheck {
        MetricCheck {
            min: Some(min),
            ..metric("request-success-rate", MetricKind::RequestSuccessRate)
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
            covered: None,
        };
        let r = check_threshold(&success_rate(99.0), Some(&reading), "app");
        assert_eq!(r.value, Some(98.0));
        assert_eq!(r.verdict, Verdict::Fail);
    }

    fn window(requests: f64, failures: f64) -> MetricReading {
        MetricReading::Counts {
            canary: Counts { requests, failures },
            primary: Counts::default(),
            covered: None,
        }
    }

    #[test]
    fn threshold_mode_does_not_fail_a_99_percent_minimum_on_one_failure_in_60_requests() {
        let r = check_threshold_shown(&success_rate(99.0), Some(&window(60.0, 1.0)), "app", 0.01);
        assert_eq!(r.verdict, Verdict::Pass, "{}", r.reason);
        assert_eq!(r.value, Some(100.0 * 59.0 / 60.0));
        assert!(r.reason.contains("not shown"), "{}", r.reason);
        // Flagger's own check fails it.
        let plain = check_threshold(&success_rate(99.0), Some(&window(60.0, 1.0)), "app");
        assert_eq!(plain.verdict, Verdict::Fail);
    }

    #[test]
    fn threshold_mode_fails_a_minimum_the_window_shows_is_not_met() {
        // 6 of 60: a canary at 99% shows 6 failures or more in about 0.002% of windows.
        let r = check_threshold_shown(&success_rate(99.0), Some(&window(60.0, 6.0)), "app", 0.01);
        assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
        // Plenty of traffic: 1.5% of 10,000 is shown below 99%.
        let r = check_threshold_shown(
            &success_rate(99.0),
            Some(&window(10_000.0, 150.0)),
            "app",
            0.01,
        );
        assert_eq!(r.verdict, Verdict::Fail, "{}", r.reason);
        // A scalar has no counts to weigh: Flagger's check.
        let r = check_threshold_shown(
            &success_rate(99.0),
            Some(&MetricReading::Value { value: 98.0 }),
            "app",
            0.01,
        );
        assert_eq!(r.verdict, Verdict::Fail);
    }

    #[test]
    fn threshold_mode_fails_a_canary_exactly_at_the_minimum_within_the_level() {
        // Every window size of a low-traffic rollout: the chance that a canary failing exactly
        // 1% of its requests fails a 99% check, summed exactly over the binomial.
        for n in [6_u64, 30, 60, 120, 300, 1_000] {
            let p = 0.01_f64;
            let failed: f64 = (0..=n)
                .filter(|&f| {
                    let r = check_threshold_shown(
                        &success_rate(99.0),
                        Some(&window(n as f64, f as f64)),
                        "app",
                        0.01,
                    );
                    r.verdict == Verdict::Fail
                })
                .map(|f| {
                    let ln_choose = statrs::function::factorial::ln_binomial(n, f);
                    (ln_choose + f as f64 * p.ln() + (n - f) as f64 * (-p).ln_1p()).exp()
                })
                .sum();
            assert!(failed <= 0.01, "{n} requests: failed checks {failed}");
        }
    }
}
