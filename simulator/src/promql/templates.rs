//! A Canary's own queries in the simulator: its `MetricTemplate`s looked up among the scenario's,
//! rendered by the controller's renderer (the cluster's code), checked when the scenario loads
//! and evaluated at each look.

use fledge_controller::analysis::MetricReading;
use fledge_controller::metrics::{RANGE_VECTOR_FOR_A_SCALAR, scalar_reading};
use fledge_controller::observe::{Measure, QuerySource, Subject, plan, resolve_query};
use fledge_controller::rollout::Wants;
use fledge_controller::spec::{Canary, MetricTemplate, MetricTemplateSpec, RolloutSpec};

use super::{PromqlError, Value, check};

/// The subject of the scenario's Canary, in the scenario's namespace: the simulator runs the
/// Canary there whatever namespace it names (loading warns when they differ), so that is where
/// its series are labelled and where its queries must look.
pub fn subject(canary: &Canary, namespace: &str) -> Subject {
    Subject {
        namespace: namespace.to_string(),
        ..Subject::of(canary)
    }
}

/// The `MetricTemplate` `namespace/name` among `templates`; a template that names no namespace
/// is in `default_namespace` (the scenario's), as `kubectl apply` would put it.
pub(crate) fn find_template<'a>(
    templates: &'a [MetricTemplate],
    default_namespace: &str,
    namespace: &str,
    name: &str,
) -> Option<&'a MetricTemplateSpec> {
    templates
        .iter()
        .find(|t| {
            let ns = t.metadata.namespace.as_deref().unwrap_or(default_namespace);
            t.metadata.name.as_deref() == Some(name) && ns == namespace
        })
        .map(|t| &t.spec)
}

/// A metric of the Canary the simulator cannot measure: its index in the spec and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MetricProblem {
    pub(crate) index: usize,
    pub(crate) message: String,
}

/// Checks every custom metric of `spec` before a run: the template it names is among
/// `templates`, its placeholders render, and the rendered query uses only the forms the
/// simulator evaluates. The message names the metric and the part.
pub(crate) fn check_metrics(
    spec: &RolloutSpec,
    subject: &Subject,
    templates: &[MetricTemplate],
) -> Result<(), MetricProblem> {
    // Any time after the longest window: only the range's length shows in a query.
    let now = 24 * 3600 * 1000
        + spec
            .metrics
            .iter()
            .map(|m| m.window.millis())
            .max()
            .unwrap_or(0);
    let wants = Wants {
        metrics: true,
        ..Wants::default()
    };
    for (index, m) in plan(&wants, spec, subject, now).iter().enumerate() {
        let Measure::Query(source) = &m.measure else {
            continue;
        };
        let problem = |message: String| MetricProblem {
            index,
            message: format!("metric `{}`: {message}", m.metric),
        };
        let template = match source {
            QuerySource::Template {
                namespace, name, ..
            } => find_template(templates, &subject.namespace, namespace, name),
            _ => None,
        };
        let query = resolve_query(source, subject, m.range, template).map_err(|e| {
            problem(if template.is_none() && e.ends_with("not found") {
                format!("{e}; give the MetricTemplate in the Canary's file, beside the Canary")
            } else {
                e
            })
        })?;
        check(&query.promql)
            .map_err(|e| problem(format!("{e}; the query is `{}`", query.promql)))?;
    }
    Ok(())
}

/// A query's result as the reading of a scalar metric, with the cluster's rules
/// ([`scalar_reading`]).
pub fn reading(result: Result<Value, PromqlError>) -> MetricReading {
    match result {
        Err(e) => MetricReading::Error {
            reason: e.to_string(),
        },
        Ok(Value::Scalar(v)) => scalar_reading(&[v]),
        Ok(Value::Vector(series)) => {
            scalar_reading(&series.iter().map(|(_, v)| *v).collect::<Vec<_>>())
        }
        Ok(Value::Matrix(_)) => MetricReading::Error {
            reason: RANGE_VECTOR_FOR_A_SCALAR.into(),
        },
    }
}
