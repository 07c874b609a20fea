//! The PromQL Fledge sends: Flagger's built-in queries per mesh, the count and histogram
//! queries of the statistical judge, and Flagger's template substitution.

use std::collections::BTreeMap;

use super::{Mesh, MetricsError, QueryContext};
use crate::spec::{Duration, MetricKind};

// Flagger's built-in queries (pkg/metrics/observers), whitespace collapsed. They are templates
// so that a built-in metric and a MetricTemplate render the same way.
const ISTIO_SUCCESS_RATE: &str = r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}",response_code!~"5.*"}[{{ interval }}])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) * 100"#;
const ISTIO_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) by (le))"#;
const LINKERD_SUCCESS_RATE: &str = r#"sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",classification!="failure",direction="inbound"}[{{ interval }}])) / sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) * 100"#;
const LINKERD_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) by (le))"#;
// Envoy (Contour, Envoy Gateway) names upstream clusters `<namespace>_<service>_<port>`; the
// canary's is `<ns>_<svc>-canary_<port>`, as in Flagger's Gateway API guide. `rq_time` is in
// milliseconds already.
const ENVOY_SUCCESS_RATE: &str = r#"sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"{{ namespace }}_{{ target }}-canary_[0-9a-zA-Z-]+",envoy_response_code!~"5.*"}[{{ interval }}])) / sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"{{ namespace }}_{{ target }}-canary_[0-9a-zA-Z-]+"}[{{ interval }}])) * 100"#;
const ENVOY_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=~"{{ namespace }}_{{ target }}-canary_[0-9a-zA-Z-]+"}[{{ interval }}])) by (le))"#;

/// Flagger's built-in query for a built-in metric of `target` (the canary workload), or
/// `None` for a metric that is not built in.
pub fn builtin_query(
    mesh: Mesh,
    kind: &MetricKind,
    namespace: &str,
    target: &str,
    window: Duration,
) -> Option<String> {
    let template = match (mesh, kind) {
        (Mesh::Istio, MetricKind::RequestSuccessRate) => ISTIO_SUCCESS_RATE,
        (Mesh::Istio, MetricKind::RequestDuration) => ISTIO_DURATION,
        (Mesh::Linkerd, MetricKind::RequestSuccessRate) => LINKERD_SUCCESS_RATE,
        (Mesh::Linkerd, MetricKind::RequestDuration) => LINKERD_DURATION,
        (Mesh::GatewayApi, MetricKind::RequestSuccessRate) => ENVOY_SUCCESS_RATE,
        (Mesh::GatewayApi, MetricKind::RequestDuration) => ENVOY_DURATION,
        (_, MetricKind::Query { .. } | MetricKind::Template { .. }) => return None,
    };
    let ctx = QueryContext {
        namespace: namespace.to_string(),
        target: target.to_string(),
        mesh,
        statistical: false,
    };
    // The built-in templates use only known placeholders, so rendering cannot fail.
    render_template(template, &ctx, window, &BTreeMap::new()).ok()
}

/// Which workload a statistical query reads.
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

/// The queries the statistical judge needs for one side: requests, 5xx failures and the
/// latency histogram (cumulative counts per `le`, milliseconds) over the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideQueries {
    pub requests: String,
    pub failures: String,
    pub histogram: String,
}

/// Counts and histogram queries for `side` of `target`. Counts use `increase`, not `rate`:
/// the tests need how many requests were served, not how fast.
pub fn side_queries(
    mesh: Mesh,
    namespace: &str,
    target: &str,
    side: Side,
    window: Duration,
) -> SideQueries {
    let (total, bucket, selector, failed) = match mesh {
        Mesh::Istio => (
            "istio_requests_total",
            "istio_request_duration_milliseconds_bucket",
            format!(
                r#"reporter="destination",destination_workload_namespace="{namespace}",destination_workload=~"{}""#,
                workload(target, side)
            ),
            r#"response_code=~"5.*""#,
        ),
        Mesh::Linkerd => (
            "response_total",
            "response_latency_ms_bucket",
            format!(
                r#"namespace="{namespace}",deployment=~"{}",direction="inbound""#,
                workload(target, side)
            ),
            r#"classification="failure""#,
        ),
        Mesh::GatewayApi => (
            "envoy_cluster_upstream_rq",
            "envoy_cluster_upstream_rq_time_bucket",
            format!(
                r#"envoy_cluster_name=~"{namespace}_{target}-{}_[0-9a-zA-Z-]+""#,
                side.as_str()
            ),
            r#"envoy_response_code=~"5.*""#,
        ),
    };
    SideQueries {
        requests: format!("sum(increase({total}{{{selector}}}[{window}]))"),
        failures: format!("sum(increase({total}{{{selector},{failed}}}[{window}]))"),
        histogram: format!("sum(increase({bucket}{{{selector}}}[{window}])) by (le)"),
    }
}

/// The workload whose pods serve one side: the target is the canary, `<target>-primary` the
/// primary.
fn workload(target: &str, side: Side) -> String {
    match side {
        Side::Canary => target.to_string(),
        Side::Primary => format!("{target}-primary"),
    }
}

/// Fills Flagger's placeholders in `query`: `{{ namespace }}`, `{{ target }}`,
/// `{{ interval }}` (the metric's window) and `{{ variables.NAME }}`. Spaces inside the braces
/// are optional. Any other placeholder, or a variable the Canary does not set, is an error
/// that names it.
pub fn render_template(
    query: &str,
    ctx: &QueryContext,
    window: Duration,
    variables: &BTreeMap<String, String>,
) -> Result<String, MetricsError> {
    let mut out = String::with_capacity(query.len() + 32);
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(MetricsError::UnclosedPlaceholder {
                at: query.len() - rest.len() + start,
            });
        };
        let name = after[..end].trim();
        match name {
            "namespace" => out.push_str(&ctx.namespace),
            "target" => out.push_str(&ctx.target),
            "interval" => out.push_str(&window.to_string()),
            _ => match name.strip_prefix("variables.") {
                Some(var) => match variables.get(var.trim()) {
                    Some(value) => out.push_str(value),
                    None => {
                        return Err(MetricsError::UnknownVariable {
                            name: var.trim().to_string(),
                        });
                    }
                },
                None => {
                    return Err(MetricsError::UnknownPlaceholder {
                        name: name.to_string(),
                    });
                }
            },
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> QueryContext {
        QueryContext {
            namespace: "test".into(),
            target: "podinfo".into(),
            mesh: Mesh::Istio,
            statistical: false,
        }
    }

    #[test]
    fn placeholders_are_filled_with_or_without_spaces() {
        let vars = BTreeMap::from([("direction".to_string(), "inbound".to_string())]);
        let q = render_template(
            r#"rate(x{ns="{{ namespace }}",w="{{target}}",d="{{  variables.direction }}"}[{{interval }}])"#,
            &ctx(),
            Duration::from_secs(90),
            &vars,
        );
        assert_eq!(
            q.as_deref().ok(),
            Some(r#"rate(x{ns="test",w="podinfo",d="inbound"}[1m30s])"#)
        );
    }

    #[test]
    fn an_unknown_variable_is_an_error_that_names_it() {
        let e = render_template(
            "{{ variables.missing }}",
            &ctx(),
            Duration(1000),
            &BTreeMap::new(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("`missing`"), "{e}");
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_errors() {
        let empty = BTreeMap::new();
        assert!(matches!(
            render_template("{{ ingress }}", &ctx(), Duration(1000), &empty),
            Err(MetricsError::UnknownPlaceholder { name }) if name == "ingress"
        ));
        assert!(matches!(
            render_template("up{a=\"{{ target \"}", &ctx(), Duration(1000), &empty),
            Err(MetricsError::UnclosedPlaceholder { at: 6 })
        ));
    }

    #[test]
    fn the_istio_success_rate_is_flaggers_query() {
        let q = builtin_query(
            Mesh::Istio,
            &MetricKind::RequestSuccessRate,
            "test",
            "podinfo",
            Duration::from_secs(60),
        );
        assert_eq!(
            q.as_deref(),
            Some(
                r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo",response_code!~"5.*"}[1m])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo"}[1m])) * 100"#
            )
        );
    }

    #[test]
    fn the_linkerd_duration_is_flaggers_query() {
        let q = builtin_query(
            Mesh::Linkerd,
            &MetricKind::RequestDuration,
            "test",
            "podinfo",
            Duration::from_secs(30),
        );
        assert_eq!(
            q.as_deref(),
            Some(
                r#"histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{namespace="test",deployment=~"podinfo",direction="inbound"}[30s])) by (le))"#
            )
        );
    }

    #[test]
    fn gateway_api_queries_read_the_envoy_clusters_of_each_side() {
        let q = side_queries(
            Mesh::GatewayApi,
            "test",
            "podinfo",
            Side::Primary,
            Duration::from_secs(60),
        );
        assert_eq!(
            q.failures,
            r#"sum(increase(envoy_cluster_upstream_rq{envoy_cluster_name=~"test_podinfo-primary_[0-9a-zA-Z-]+",envoy_response_code=~"5.*"}[1m]))"#
        );
        let scalar = builtin_query(
            Mesh::GatewayApi,
            &MetricKind::RequestDuration,
            "test",
            "podinfo",
            Duration::from_secs(60),
        );
        assert_eq!(
            scalar.as_deref(),
            Some(
                r#"histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=~"test_podinfo-canary_[0-9a-zA-Z-]+"}[1m])) by (le))"#
            )
        );
    }

    #[test]
    fn statistical_queries_count_each_side_of_istio() {
        let canary = side_queries(
            Mesh::Istio,
            "test",
            "podinfo",
            Side::Canary,
            Duration::from_secs(60),
        );
        let primary = side_queries(
            Mesh::Istio,
            "test",
            "podinfo",
            Side::Primary,
            Duration::from_secs(60),
        );
        assert_eq!(
            canary.requests,
            r#"sum(increase(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo"}[1m]))"#
        );
        assert_eq!(
            primary.histogram,
            r#"sum(increase(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo-primary"}[1m])) by (le)"#
        );
    }

    #[test]
    fn custom_metrics_have_no_builtin_query() {
        let kind = MetricKind::Query { query: "up".into() };
        assert_eq!(
            builtin_query(Mesh::Istio, &kind, "a", "b", Duration(1000)),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn rendering_any_text_never_panics(query in ".{0,64}", name in "[a-z{} .]{0,12}") {
            let vars = BTreeMap::from([(name, "v".to_string())]);
            let _ = render_template(&query, &ctx(), Duration(1000), &vars);
        }
    }
}
