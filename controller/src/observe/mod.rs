//! The observation plan, pure: what [`Wants`] means as measurements.
//!
//! For each metric of the spec the plan names *what* is measured (counts of requests and 5xx
//! failures, latency histograms, Flagger's scalar success rate or p99, or a user's PromQL), of
//! *which* workloads (the canary and the primary, by the names the target and
//! [`service_names`] give), and over *exactly which* time range. Both shells execute the same
//! plan: the cluster as PromQL ([`crate::metrics`]), the simulator from its telemetry. A change of
//! range (for example pooling a canary's evidence across steps) is made here, once.
//!
//! Ranges:
//! - the statistical judge's built-in metrics: `[since, now]`, the current step, as counts
//!   cumulative since the step began (what the sequential test needs);
//! - everything else (the threshold judge, custom queries under either judge): the metric's
//!   window ending now, `[now - window, now]`, which Flagger's queries read as `[{{ interval }}]`.

mod template;

pub use template::{
    RenderError, ResolvedQuery, check_placeholders, render_template, resolve_query,
    template_not_found,
};

use std::collections::BTreeMap;
use std::fmt;

use crate::rollout::{Millis, Wants};
use crate::routes::service_names;
use crate::spec::{Canary, Duration, Judge, MetricKind, RolloutSpec};

/// One side of the comparison: a Deployment and the Service that selects its pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The Deployment whose pods serve this side (`<target>` or `<target>-primary`); Istio and
    /// Linkerd label their series by it.
    pub deployment: String,
    /// The Service in front of it (`<svc>-canary` or `<svc>-primary`); Envoy-based gateways name
    /// their upstream clusters by it.
    pub service: String,
}

/// What the measurements are about: the Canary's namespace, target and both sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// The Canary's own name (Flagger's `{{ name }}`).
    pub name: String,
    pub namespace: String,
    /// The target Deployment (Flagger's `{{ target }}`).
    pub target: String,
    /// The apex Service (Flagger's `{{ service }}`).
    pub service: String,
    pub canary: Workload,
    pub primary: Workload,
}

impl Subject {
    /// The subject of a Canary: its namespace, its target, and the names Flagger gives the
    /// primary and the Services.
    pub fn of(canary: &Canary) -> Subject {
        let names = service_names(canary);
        let target = canary.spec.target_ref.name.clone();
        Subject {
            name: canary.metadata.name.clone().unwrap_or_default(),
            namespace: canary.metadata.namespace.clone().unwrap_or_default(),
            canary: Workload {
                deployment: target.clone(),
                service: names.canary,
            },
            primary: Workload {
                deployment: format!("{target}-primary"),
                service: names.primary,
            },
            service: names.apex,
            target,
        }
    }

    /// The workload of one side.
    pub fn side(&self, side: Side) -> &Workload {
        match side {
            Side::Canary => &self.canary,
            Side::Primary => &self.primary,
        }
    }
}

/// Which side of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Canary,
    Primary,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Canary => "canary",
            Side::Primary => "primary",
        }
    }
}

/// A closed time range `[from, to]` on the shell's clock, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub from: Millis,
    pub to: Millis,
}

impl Range {
    /// Its length, as a query's `{{ interval }}` names it.
    pub fn length(self) -> Duration {
        Duration(self.to.saturating_sub(self.from))
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the {} up to {} ms", self.length(), self.to)
    }
}

/// What one measurement reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Measure {
    /// Requests and 5xx failures served by the canary and by the primary, cumulative over the
    /// range (the statistical success rate).
    Counts,
    /// Latency histograms (milliseconds, cumulative per bucket) of the canary and the primary over
    /// the range (the statistical request duration).
    Histograms,
    /// Flagger's success rate of the canary over the range, in percent.
    SuccessRate,
    /// Flagger's p99 latency of the canary over the range, in milliseconds.
    Latency,
    /// A user's PromQL: one scalar, evaluated at the range's end with `{{ interval }}` set to
    /// the range's length.
    Query(QuerySource),
}

/// Where a user's query comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuerySource {
    /// The metric's own `query`, with its `templateVariables`.
    Inline {
        query: String,
        variables: BTreeMap<String, String>,
        /// The metric's `interval` as written, Flagger's `{{ interval }}` (see
        /// [`resolve_query`]).
        interval: Option<String>,
    },
    /// A `MetricTemplate`, by namespace and name, with the metric's `templateVariables`.
    Template {
        namespace: String,
        name: String,
        variables: BTreeMap<String, String>,
        /// As [`QuerySource::Inline`]'s.
        interval: Option<String>,
    },
}

/// One metric's measurement: its reading is filed under `metric` in the observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measurement {
    pub metric: String,
    pub measure: Measure,
    pub range: Range,
}

/// The measurements for one tick: one per metric of the spec, or none when the core wants no
/// metrics.
pub fn plan(wants: &Wants, spec: &RolloutSpec, subject: &Subject, now: Millis) -> Vec<Measurement> {
    if !wants.metrics {
        return Vec::new();
    }
    let statistical = matches!(spec.judge, Judge::Statistical { .. });
    spec.metrics
        .iter()
        .map(|m| {
            let window = Range {
                from: now.saturating_sub(m.window.millis()),
                to: now,
            };
            let step = Range {
                from: wants.since.unwrap_or(window.from).min(now),
                to: now,
            };
            // Flagger's `{{ interval }}`: as written, else its default (the window's, `1m`).
            let written = |interval: &Option<String>| {
                interval.clone().unwrap_or_else(|| m.window.to_string())
            };
            let (measure, range) = match &m.kind {
                MetricKind::RequestSuccessRate if statistical => (Measure::Counts, step),
                MetricKind::RequestDuration if statistical => (Measure::Histograms, step),
                MetricKind::RequestSuccessRate => (Measure::SuccessRate, window),
                MetricKind::RequestDuration => (Measure::Latency, window),
                MetricKind::Query {
                    query,
                    variables,
                    interval,
                } => (
                    Measure::Query(QuerySource::Inline {
                        query: query.clone(),
                        variables: variables.clone(),
                        interval: Some(written(interval)),
                    }),
                    window,
                ),
                MetricKind::Template {
                    name,
                    namespace,
                    variables,
                    interval,
                } => (
                    Measure::Query(QuerySource::Template {
                        namespace: namespace
                            .clone()
                            .filter(|n| !n.is_empty())
                            .unwrap_or_else(|| subject.namespace.clone()),
                        name: name.clone(),
                        variables: variables.clone(),
                        interval: Some(written(interval)),
                    }),
                    window,
                ),
            };
            Measurement {
                metric: m.name.clone(),
                measure,
                range,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
