//! The analysis' judgement: who decides (Flagger's threshold judge, or the statistical judge
//! comparing canary with primary), the metrics it checks (built-in, inline PromQL or a
//! MetricTemplate, with Flagger's legacy `threshold` and `thresholdRange`), and the margins the
//! statistical judge reads.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::Problems;
use super::Strategy;
use crate::spec::{CanaryAnalysis, CanaryMetric, CanarySpec, Duration};

const DEFAULT_METRIC_WINDOW: Duration = Duration::from_secs(60);
const DEFAULT_ALPHA: f64 = 0.01;
const DEFAULT_MIN_REQUESTS: u64 = 100;
/// The default shortest canary step of the statistical judge; see [`min_step`] for why.
pub(crate) const DEFAULT_MIN_STEP: Duration = Duration::from_secs(30);

/// Who decides whether the canary is good enough.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Judge {
    /// Flagger's: each metric against its threshold range, `threshold` failures roll back.
    Threshold,
    /// Canary against primary with always-valid sequential tests; holds while undecided.
    Statistical { alpha: f64, min_requests: u64 },
}

/// One metric the analysis checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricCheck {
    pub name: String,
    pub kind: MetricKind,
    /// The query window.
    pub window: Duration,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Statistical judge: the smallest regression worth catching.
    pub margin: Option<Margin>,
    /// Statistical judge, `request-duration`: the latency quantile compared (default p99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum MetricKind {
    /// Built-in: percentage of non-5xx responses.
    RequestSuccessRate,
    /// Built-in: p99 latency in milliseconds.
    RequestDuration,
    /// An inline PromQL query, its placeholders filled as a MetricTemplate's (Flagger renders
    /// both with the metric's `templateVariables`).
    Query {
        query: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        variables: BTreeMap<String, String>,
        /// The metric's `interval` as written: Flagger's `{{ interval }}` (absent: `1m`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interval: Option<String>,
    },
    /// A `MetricTemplate` by reference.
    Template {
        name: String,
        namespace: Option<String>,
        variables: BTreeMap<String, String>,
        /// The metric's `interval` as written: Flagger's `{{ interval }}` (absent: `1m`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interval: Option<String>,
    },
}

impl MetricKind {
    pub fn is_builtin(&self) -> bool {
        matches!(
            self,
            MetricKind::RequestSuccessRate | MetricKind::RequestDuration
        )
    }
}

/// The smallest regression worth catching, for the statistical judge.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "value")]
pub enum Margin {
    /// In the metric's own unit (percentage points for success rate).
    Absolute(f64),
    /// A fraction of the primary's value: `0.2` means 20% worse.
    Relative(f64),
}

/// Every metric of the analysis, checked: each alone, then names listed twice, then margins
/// against the judge.
pub(super) fn metrics(p: &mut Problems, a: &CanaryAnalysis, judge: &Judge) -> Vec<MetricCheck> {
    let metrics = a
        .metrics
        .iter()
        .enumerate()
        .filter_map(|(i, m)| metric(p, i, m))
        .collect::<Vec<_>>();
    let mut seen = BTreeSet::new();
    for (i, m) in a.metrics.iter().enumerate() {
        if !m.name.is_empty() && !seen.insert(m.name.as_str()) {
            p.add(
                format!("spec.analysis.metrics[{i}].name"),
                format!("`{}` is listed twice", m.name),
            );
        }
    }
    for (i, m) in metrics.iter().enumerate() {
        if m.quantile.is_some() {
            let path = format!("spec.analysis.metrics[{i}].quantile");
            match (judge, &m.kind) {
                (Judge::Statistical { .. }, MetricKind::RequestDuration) => {}
                (Judge::Statistical { .. }, _) => p.add(
                    path,
                    "is only read for `request-duration` (the latency quantile compared)",
                ),
                (Judge::Threshold, _) => p.add(
                    path,
                    "is only used by the statistical judge (`judge: statistical`); Flagger's `request-duration` is the p99",
                ),
            }
        }
        let path = format!("spec.analysis.metrics[{i}].margin");
        match (judge, &m.kind, m.margin) {
            (Judge::Threshold, _, Some(_)) => p.add(
                path,
                "is only used by the statistical judge (`judge: statistical`)",
            ),
            (Judge::Statistical { .. }, MetricKind::RequestDuration, Some(Margin::Absolute(_))) => {
                p.add(
                    path,
                    "a latency margin is relative: write it as a percentage such as `20%`",
                )
            }
            _ => {}
        }
    }
    metrics
}

pub(super) fn judge(p: &mut Problems, spec: &CanarySpec) -> Judge {
    let a = &spec.analysis;
    match a.judge.as_deref().unwrap_or("threshold") {
        "threshold" => {
            if a.statistical.is_some() {
                p.add(
                    "spec.analysis.statistical",
                    "is only used with `judge: statistical`",
                );
            }
            Judge::Threshold
        }
        "statistical" => {
            let settings = a.statistical.clone().unwrap_or_default();
            let alpha = settings.alpha.unwrap_or(DEFAULT_ALPHA);
            if !(alpha > 0.0 && alpha <= 0.2) {
                p.add(
                    "spec.analysis.statistical.alpha",
                    format!("must be in (0, 0.2], got {alpha}"),
                );
            }
            let min_requests = settings.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS as i64);
            if min_requests < 0 {
                p.add(
                    "spec.analysis.statistical.minRequests",
                    format!("must not be negative, got {min_requests}"),
                );
            }
            Judge::Statistical {
                alpha,
                min_requests: min_requests.max(0) as u64,
            }
        }
        other => {
            p.add(
                "spec.analysis.judge",
                format!("must be `threshold` or `statistical`, got `{other}`"),
            );
            Judge::Threshold
        }
    }
}

/// `analysis.minStepDuration`: how soon a canary weight step may end once the statistical
/// judge's evidence suffices. Only the statistical judge ends steps early, and only the canary
/// strategy's weight steps (blue/green and A/B iterations are a count of intervals the user asked
/// for), and only on the evidence of a compared metric (`request-success-rate`,
/// `request-duration`): without one a step's analysis is scalar checks of a window that mostly
/// holds the previous weight's traffic, so each step lasts `interval` as under Flagger's judge.
/// Elsewhere the field is ignored and [`super::warnings`] says so.
///
/// The default, 30s (or `interval` if shorter), from `fledge-sim compare` over 200 seeds of the
/// benchmarks with floors of 15s, 30s and 1m: false rollbacks (A/A at 10, 100 and 1,000 rps),
/// 10x regressions caught and the late regression's catch rate did not move beyond noise; only
/// time did, and only where a step's evidence suffices within an interval (A/A at 1,000 rps:
/// 1m45s, 2m45s, 5m15s; at 100 rps the steps need more than an interval of traffic and all
/// three took 10m30s-10m45s). 30s keeps at least two looks of a 1m interval at each weight, so
/// a failure that needs the step's load to show has two chances before the next step.
pub(super) fn min_step(
    p: &mut Problems,
    a: &CanaryAnalysis,
    judge: &Judge,
    strategy: &Strategy,
    interval: Duration,
    compared: bool,
) -> Option<Duration> {
    const PATH: &str = "spec.analysis.minStepDuration";
    let written = p.duration(PATH, a.min_step_duration.as_deref(), DEFAULT_MIN_STEP);
    if a.min_step_duration.is_some() {
        if written == Duration::ZERO {
            p.add(PATH, "must be longer than 0s");
        } else if written > interval {
            p.add(
                PATH,
                format!("must be at most analysis.interval ({interval}), got {written}"),
            );
        }
    }
    let applies = compared
        && matches!(judge, Judge::Statistical { .. })
        && matches!(strategy, Strategy::Canary { .. });
    applies.then(|| written.min(interval))
}

fn metric(p: &mut Problems, i: usize, m: &CanaryMetric) -> Option<MetricCheck> {
    let path = format!("spec.analysis.metrics[{i}]");
    let before = p.0.len();
    if m.name.trim().is_empty() {
        p.add(format!("{path}.name"), "must not be empty");
    }
    let window = p.duration(
        &format!("{path}.interval"),
        m.interval.as_deref(),
        DEFAULT_METRIC_WINDOW,
    );
    if window == Duration::ZERO {
        p.add(format!("{path}.interval"), "must be longer than 0s");
    }
    let kind = match (&m.query, &m.template_ref) {
        (Some(_), Some(_)) => {
            p.add(&path, "has both `query` and `templateRef`; keep one");
            None
        }
        (Some(q), None) if q.trim().is_empty() => {
            p.add(format!("{path}.query"), "must not be empty");
            None
        }
        (Some(q), None) => {
            // A placeholder that cannot be filled is known now: say so at load, not at the
            // first analysis.
            if let Err(e) = crate::observe::check_placeholders(q, &m.template_variables) {
                p.add(format!("{path}.query"), format!("metric `{}`: {e}", m.name));
            }
            Some(MetricKind::Query {
                query: q.clone(),
                variables: m.template_variables.clone(),
                interval: m.interval.clone(),
            })
        }
        (None, Some(t)) if t.name.trim().is_empty() => {
            p.add(
                format!("{path}.templateRef.name"),
                "must name a MetricTemplate",
            );
            None
        }
        (None, Some(t)) => Some(MetricKind::Template {
            name: t.name.clone(),
            namespace: t.namespace.clone(),
            variables: m.template_variables.clone(),
            interval: m.interval.clone(),
        }),
        (None, None) => match m.name.as_str() {
            "request-success-rate" | "istio_requests_total" => Some(MetricKind::RequestSuccessRate),
            "request-duration" | "istio_request_duration_seconds_bucket" => {
                Some(MetricKind::RequestDuration)
            }
            name => {
                p.add(format!("{path}.name"), format!("unknown metric `{name}`: built-in metrics are request-success-rate and request-duration; a custom metric needs `query` or `templateRef`"));
                None
            }
        },
    };
    let (mut min, mut max) = match &m.threshold_range {
        Some(r) => (r.min, r.max),
        None => (None, None),
    };
    // Flagger's legacy `threshold`: a floor for success rate, a ceiling for everything else.
    if let Some(t) = m.threshold {
        if m.threshold_range.is_some() {
            p.add(
                format!("{path}.threshold"),
                "cannot be combined with thresholdRange",
            );
        } else if kind == Some(MetricKind::RequestSuccessRate) {
            min = Some(t);
        } else {
            max = Some(t);
        }
    }
    for (field, v) in [("min", min), ("max", max)] {
        if let Some(v) = v
            && !v.is_finite()
        {
            p.add(
                format!("{path}.thresholdRange.{field}"),
                format!("must be a finite number, got {v}"),
            );
        }
    }
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        p.add(
            format!("{path}.thresholdRange"),
            format!("min ({lo}) is greater than max ({hi})"),
        );
    }
    if min.is_none() && max.is_none() && kind.as_ref().is_some_and(|k| !k.is_builtin()) {
        p.add(
            format!("{path}.thresholdRange"),
            "a custom metric needs `min`, `max` or both",
        );
    }
    if min.is_none() && max.is_none() {
        // Flagger's usual bounds for built-in metrics, so `- name: request-success-rate` alone works.
        match kind {
            Some(MetricKind::RequestSuccessRate) => min = Some(99.0),
            Some(MetricKind::RequestDuration) => max = Some(500.0),
            _ => {}
        }
    }
    let margin = m.margin.as_deref().and_then(|text| match parse_margin(text) {
        Some(margin) => Some(margin),
        None => {
            p.add(format!("{path}.margin"), format!("`{text}` is not a margin: expected a positive number (absolute) or a percentage such as `20%` (relative)"));
            None
        }
    });
    if let Some(q) = m.quantile
        && !(q > 0.0 && q < 1.0)
    {
        p.add(
            format!("{path}.quantile"),
            format!("must be strictly between 0 and 1 (0.99 for the p99), got {q}"),
        );
    }
    (p.0.len() == before).then(|| MetricCheck {
        name: m.name.clone(),
        kind: kind.expect("kind errors were recorded"),
        window,
        min,
        max,
        margin,
        quantile: m.quantile,
    })
}

fn parse_margin(text: &str) -> Option<Margin> {
    let text = text.trim();
    let (number, relative) = match text.strip_suffix('%') {
        Some(n) => (n.trim(), true),
        None => (text, false),
    };
    let v: f64 = number.parse().ok()?;
    if !(v.is_finite() && v > 0.0) {
        return None;
    }
    Some(if relative {
        Margin::Relative(v / 100.0)
    } else {
        Margin::Absolute(v)
    })
}
