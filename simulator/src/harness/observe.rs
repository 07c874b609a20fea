//! The observation plan executed from simulated telemetry, as the cluster shell executes it
//! against Prometheus: the same plan ([`fledge_controller::observe::plan`]), the same ranges.
//!
//! Built-in measurements read what the destination sidecars reported (Flagger's Istio and
//! Linkerd queries read those): counts and histograms are exact over the range (the counters at
//! its end minus those at the last scrape at or before its start, which is its start whenever
//! the scrape interval divides the look interval). A user's query (inline or a
//! `MetricTemplate`) is rendered by the controller's renderer and evaluated by
//! [`crate::promql`] over the scraped series, as Prometheus would evaluate it.

use std::collections::BTreeMap;

use fledge_controller::analysis::{Counts, Histogram, MetricReading};
use fledge_controller::observe::{Measure, Measurement, QuerySource, Subject, plan, resolve_query};
use fledge_controller::rollout::Wants;
use fledge_controller::spec::{MetricTemplate, RolloutSpec};

use crate::engine::{MILLIS, SimTime};
use crate::mesh::{DataPlane, Mesh, VersionId};
use crate::promql::{self, Scraped};
use crate::scenario::Scenario;
use crate::telemetry::{DURATION_BUCKETS_MS, Naming, WindowStats};

/// The readings of every measurement the plan names for what `wants` asks at `now`.
pub fn metrics(
    mesh: &Mesh,
    scenario: &Scenario,
    spec: &RolloutSpec,
    wants: &Wants,
    sides: (VersionId, VersionId),
    now: SimTime,
) -> BTreeMap<String, MetricReading> {
    let subject = promql::subject(&scenario.canary_resource, &scenario.namespace);
    let naming = match scenario.data_plane {
        DataPlane::Istio => Naming::Istio,
        DataPlane::Linkerd => Naming::Linkerd,
    };
    plan(wants, spec, &subject, now / MILLIS)
        .into_iter()
        .map(|m| {
            let reading = read(
                mesh,
                &scenario.metric_templates,
                naming,
                &subject,
                &m,
                sides,
            );
            (m.metric, reading)
        })
        .collect()
}

/// One measurement: `templates` are the scenario's MetricTemplates, `naming` the names its
/// proxies give their series, `sides` the primary's and the canary's versions.
pub fn read(
    mesh: &Mesh,
    templates: &[MetricTemplate],
    naming: Naming,
    subject: &Subject,
    m: &Measurement,
    (primary, canary): (VersionId, VersionId),
) -> MetricReading {
    let (from, to) = (m.range.from * MILLIS, m.range.to * MILLIS);
    let stats = |v: VersionId| mesh.destination_stats(v, from, to);
    let no_requests = || MetricReading::NoData {
        reason: format!("the canary served no requests in {}", m.range),
    };
    match &m.measure {
        Measure::Counts => MetricReading::Counts {
            canary: counts(&stats(canary)),
            primary: counts(&stats(primary)),
        },
        Measure::Histograms => MetricReading::Histograms {
            canary: histogram(&stats(canary)),
            primary: histogram(&stats(primary)),
        },
        Measure::SuccessRate => match stats(canary).success_rate() {
            Some(rate) => MetricReading::Value {
                value: rate * 100.0,
            },
            None => no_requests(),
        },
        Measure::Latency => match stats(canary).quantile_ms(0.99) {
            Some(p99) => MetricReading::Value { value: p99 },
            None => no_requests(),
        },
        Measure::Query(source) => {
            let template = match source {
                QuerySource::Template {
                    namespace, name, ..
                } => promql::find_template(templates, &subject.namespace, namespace, name),
                QuerySource::Inline(_) => None,
            };
            match resolve_query(source, subject, m.range, template) {
                Err(reason) => MetricReading::Error { reason },
                Ok(q) => {
                    let storage = Scraped::new(mesh.telemetry(), naming);
                    promql::reading(promql::evaluate(&q.promql, &storage, m.range.to))
                }
            }
        }
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
