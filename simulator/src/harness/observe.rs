//! Metric readings from simulated telemetry, as the cluster shell reads them from Prometheus.

use std::collections::BTreeMap;

use fledge_controller::analysis::{Counts, Histogram, MetricReading};
use fledge_controller::spec::{Judge, MetricKind, RolloutSpec};

use crate::engine::{MILLIS, SimTime};
use crate::mesh::{Mesh, VersionId};
use crate::telemetry::{DURATION_BUCKETS_MS, WindowStats};

/// Readings for every metric of `spec` over each metric's window ending at `now`: scalars for
/// the threshold judge (Flagger's success rate in percent and p99 in milliseconds, from the
/// destination sidecars' reports), counts and histograms of canary and primary since `since`
/// for the statistical judge.
pub fn metrics(
    mesh: &Mesh,
    spec: &RolloutSpec,
    primary: VersionId,
    canary: VersionId,
    since: Option<SimTime>,
    now: SimTime,
) -> BTreeMap<String, MetricReading> {
    let statistical = matches!(spec.judge, Judge::Statistical { .. });
    spec.metrics
        .iter()
        .map(|m| {
            // The statistical judge compares everything since its step began.
            let from = since.unwrap_or_else(|| now.saturating_sub(m.window.millis() * MILLIS));
            let c = mesh.destination_stats(canary, from, now);
            let reading = match (&m.kind, statistical) {
                (MetricKind::RequestSuccessRate, true) => MetricReading::Counts {
                    canary: counts(&c),
                    primary: counts(&mesh.destination_stats(primary, from, now)),
                },
                (MetricKind::RequestDuration, true) => MetricReading::Histograms {
                    canary: histogram(&c),
                    primary: histogram(&mesh.destination_stats(primary, from, now)),
                },
                (MetricKind::RequestSuccessRate, false) => match c.success_rate() {
                    Some(rate) => MetricReading::Value {
                        value: rate * 100.0,
                    },
                    None => no_requests(m.window),
                },
                (MetricKind::RequestDuration, false) => match c.quantile_ms(0.99) {
                    Some(p99) => MetricReading::Value { value: p99 },
                    None => no_requests(m.window),
                },
                // The scenario loader rejects custom queries.
                (MetricKind::Query { .. } | MetricKind::Template { .. }, _) => {
                    MetricReading::Error {
                        reason: "custom queries are not simulated".into(),
                    }
                }
            };
            (m.name.clone(), reading)
        })
        .collect()
}

fn no_requests(window: fledge_controller::spec::Duration) -> MetricReading {
    MetricReading::NoData {
        reason: format!("the canary served no requests in the last {window}"),
    }
}

fn counts(s: &WindowStats) -> Counts {
    Counts {
        requests: s.requests as f64,
        failures: s.failures as f64,
    }
}

fn histogram(s: &WindowStats) -> Histogram {
    let mut bounds: Vec<f64> = DURATION_BUCKETS_MS.to_vec();
    bounds.push(f64::INFINITY);
    Histogram {
        bounds,
        cumulative: s.cumulative_buckets().iter().map(|&c| c as f64).collect(),
    }
}
