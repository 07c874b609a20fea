//! The observation plan executed from simulated telemetry by the cluster's own code: the same
//! plan ([`fledge_controller::observe::plan`]), the same PromQL, the same arithmetic. Only the data
//! source differs: the cluster asks Prometheus, the simulator evaluates the very same query
//! with [`crate::promql`] over its scraped series (the labelled view a Prometheus scraping the
//! proxies would hold).
//!
//! - Counts and histograms (the statistical judge): the raw counter samples the cluster's
//!   [`side_queries`] select, diffed per series by the cluster's [`counts_reading`] and
//!   [`histograms_reading`]. So both count a step from the same scrapes, with the same known
//!   error against the exact counters (see `fledge_controller::metrics::counters`).
//! - Flagger's built-in success rate and p99 (the threshold judge): Flagger's query
//!   ([`builtin_query`]), `rate()` extrapolation and all.
//! - A user's query (inline or a `MetricTemplate`): rendered by the controller's renderer and
//!   evaluated the same way.
//!
//! The queries are those of the simulated data plane's mesh (Istio or Linkerd). A Canary whose
//! provider is a Gateway API gateway reads Envoy's cluster series on a cluster; the simulator
//! has no gateway Envoy, so it rehearses the data plane's series for the same traffic instead.

use std::collections::BTreeMap;

use fledge_controller::analysis::MetricReading;
use fledge_controller::metrics::counters::{self, counts_reading, histograms_reading};
use fledge_controller::metrics::{self, builtin_query, side_queries};
use fledge_controller::observe::{
    Measure, Measurement, QuerySource, Side, Subject, plan, resolve_query,
};
use fledge_controller::rollout::Wants;
use fledge_controller::spec::{MetricTemplate, RolloutSpec};

use crate::engine::{MILLIS, SimTime};
use crate::mesh::{DataPlane, Mesh};
use crate::promql::{self, Scraped, Value};
use crate::scenario::Scenario;
use crate::telemetry::Naming;

/// The readings of every measurement the plan names for what `wants` asks at `now`.
pub(crate) fn metrics(
    mesh: &Mesh,
    scenario: &Scenario,
    spec: &RolloutSpec,
    wants: &Wants,
    now: SimTime,
) -> BTreeMap<String, MetricReading> {
    // Only a rollout measures: without a Canary there is nothing to ask.
    let Some(canary) = &scenario.canary_resource else {
        return BTreeMap::new();
    };
    let subject = promql::subject(canary, &scenario.namespace);
    let naming = match scenario.data_plane {
        DataPlane::Istio => Naming::Istio,
        DataPlane::Linkerd => Naming::Linkerd,
    };
    let measurements = plan(wants, spec, &subject, now / MILLIS);
    if measurements.is_empty() {
        return BTreeMap::new();
    }
    let storage = Scraped::new(mesh.telemetry(), naming);
    measurements
        .into_iter()
        .map(|m| {
            let reading = read(&storage, &scenario.metric_templates, &subject, &m);
            (m.metric, reading)
        })
        .collect()
}

/// One measurement over `storage` (the scraped series, named as one mesh names them):
/// `templates` are the scenario's MetricTemplates.
pub fn read(
    storage: &Scraped<'_>,
    templates: &[MetricTemplate],
    subject: &Subject,
    m: &Measurement,
) -> MetricReading {
    let mesh = match storage.naming() {
        Naming::Istio => metrics::Mesh::Istio,
        Naming::Linkerd => metrics::Mesh::Linkerd,
    };
    let at = m.range.to;
    let samples = |query: &str| -> Result<Vec<counters::Series>, MetricReading> {
        match promql::evaluate(query, storage, at) {
            Ok(Value::Matrix(series)) => Ok(series
                .into_iter()
                .map(|(labels, samples)| counters::Series { labels, samples })
                .collect()),
            Ok(Value::Vector(v)) if v.is_empty() => Ok(Vec::new()),
            Ok(_) => Err(MetricReading::Error {
                reason: format!("expected the raw samples of a range selector for {query}"),
            }),
            Err(e) => Err(MetricReading::Error {
                reason: e.to_string(),
            }),
        }
    };
    let sides = || {
        (
            side_queries(mesh, subject, Side::Canary, m.range),
            side_queries(mesh, subject, Side::Primary, m.range),
        )
    };
    match &m.measure {
        Measure::Counts => {
            let (c, p) = sides();
            counts_reading(
                [
                    samples(&c.requests),
                    samples(&c.failures),
                    samples(&p.requests),
                    samples(&p.failures),
                ],
                m.range,
            )
        }
        Measure::Histograms => {
            let (c, p) = sides();
            histograms_reading(samples(&c.histogram), samples(&p.histogram), m.range)
        }
        measure @ (Measure::SuccessRate | Measure::Latency) => {
            match builtin_query(mesh, measure, subject, m.range) {
                Some(query) => promql::reading(promql::evaluate(&query, storage, at)),
                None => MetricReading::Error {
                    reason: format!("no built-in query for {}", m.metric),
                },
            }
        }
        Measure::Query(source) => {
            let template = match source {
                QuerySource::Template {
                    namespace, name, ..
                } => promql::find_template(templates, &subject.namespace, namespace, name),
                QuerySource::Inline { .. } => None,
            };
            match resolve_query(source, subject, m.range, template) {
                Err(reason) => MetricReading::Error { reason },
                Ok(q) => promql::reading(promql::evaluate(&q.promql, storage, at)),
            }
        }
    }
}
