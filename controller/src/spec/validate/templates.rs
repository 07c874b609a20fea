//! MetricTemplates: what of one Fledge can query. Only Prometheus (with credentials from a
//! Secret and skipped TLS verification, as in Flagger); Flagger's other metric providers are
//! named as such.

use super::FieldError;
use crate::spec::MetricTemplateSpec;

/// Flagger's metric providers other than Prometheus (Flagger's pkg/metrics/providers), each
/// with what it queries.
pub const FLAGGER_ONLY_METRIC_PROVIDERS: &[(&str, &str)] = &[
    ("cloudwatch", "Amazon CloudWatch"),
    ("datadog", "Datadog"),
    ("dynatrace", "Dynatrace"),
    ("externalmetrics", "the Kubernetes external metrics API"),
    ("graphite", "Graphite"),
    ("influxdb", "InfluxDB"),
    ("keptn", "Keptn"),
    ("newrelic", "New Relic"),
    ("splunk", "Splunk Observability"),
    ("stackdriver", "Google Cloud Monitoring (Stackdriver)"),
];

/// Why Fledge cannot query `spec`, at its fields (`spec.provider...`); empty when it can.
pub fn metric_template(spec: &MetricTemplateSpec) -> Vec<FieldError> {
    let mut out = Vec::new();
    let provider = &spec.provider;
    let kind = provider.type_.as_str();
    if !(kind.is_empty() || kind == "prometheus") {
        let message = match FLAGGER_ONLY_METRIC_PROVIDERS
            .iter()
            .find(|(k, _)| *k == kind)
        {
            Some((_, what)) => format!(
                "`{kind}` ({what}) is one of Flagger's metric providers that Fledge does not \
                 support; only prometheus"
            ),
            None => format!("unknown metric provider `{kind}`; only prometheus is supported"),
        };
        out.push(FieldError {
            path: "spec.provider.type".into(),
            message,
        });
    }
    // The Secret's keys are checked where it is read, at every query (it may change).
    if provider
        .secret_ref
        .as_ref()
        .is_some_and(|r| r.name.is_empty())
    {
        out.push(FieldError {
            path: "spec.provider.secretRef.name".into(),
            message: "empty: name the Secret (in the template's namespace) with the credentials"
                .into(),
        });
    }
    out
}
