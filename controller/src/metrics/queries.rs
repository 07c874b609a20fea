//! The PromQL of an observation plan: Flagger's built-in queries per mesh for the threshold
//! judge, and the raw counter samples the statistical judge's counts are taken from.

use std::collections::BTreeMap;

use super::Mesh;
use crate::observe::{Measure, Range, Side, Subject, render_template};
use crate::rollout::Millis;

// Flagger's built-in queries (pkg/metrics/observers), whitespace collapsed. They are templates
// so that a built-in metric and a MetricTemplate render the same way.
const ISTIO_SUCCESS_RATE: &str = r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}",response_code!~"5.*"}[{{ interval }}])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) * 100"#;
const ISTIO_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) by (le))"#;
const LINKERD_SUCCESS_RATE: &str = r#"sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",classification!="failure",direction="inbound"}[{{ interval }}])) / sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) * 100"#;
const LINKERD_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) by (le))"#;
// Envoy (Contour, Envoy Gateway) names upstream clusters `<namespace>_<service>_<port>`; the
// canary's is `<ns>_<svc>-canary_<port>` where `<svc>` is the apex Service (`{{ service }}`, the
// name `routes::service_names` gives), not the target. These are Flagger's Contour queries:
// Flagger's own `gatewayapi` provider reads an app's `http_request_duration_seconds` instead
// (its `kubernetes`/HTTP observer), which a mesh-less Gateway API install rarely has; Fledge
// reads the gateway's Envoy, as Flagger's Gateway API guide does with a MetricTemplate.
// `rq_time` is in milliseconds already.
const ENVOY_SUCCESS_RATE: &str = r#"sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"{{ namespace }}_{{ service }}-canary_[0-9a-zA-Z-]+",envoy_response_code!~"5.*"}[{{ interval }}])) / sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"{{ namespace }}_{{ service }}-canary_[0-9a-zA-Z-]+"}[{{ interval }}])) * 100"#;
const ENVOY_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=~"{{ namespace }}_{{ service }}-canary_[0-9a-zA-Z-]+"}[{{ interval }}])) by (le))"#;

/// How far before a range the counter queries reach, to tell a series that existed when the
/// range began from one created in it: Prometheus' default lookback delta, the horizon within
/// which an instant query at the range's start would still have returned the series.
pub const SERIES_LOOKBACK: Millis = 5 * 60 * 1000;

/// Flagger's built-in query for a scalar measurement ([`Measure::SuccessRate`] or
/// [`Measure::Latency`]) of the canary over `range` (`[{{ interval }}]` is the range's length;
/// the query is evaluated at its end), or `None` for any other measurement.
pub fn builtin_query(
    mesh: Mesh,
    measure: &Measure,
    subject: &Subject,
    range: Range,
) -> Option<String> {
    let template = match (mesh, measure) {
        (Mesh::Istio, Measure::SuccessRate) => ISTIO_SUCCESS_RATE,
        (Mesh::Istio, Measure::Latency) => ISTIO_DURATION,
        (Mesh::Linkerd, Measure::SuccessRate) => LINKERD_SUCCESS_RATE,
        (Mesh::Linkerd, Measure::Latency) => LINKERD_DURATION,
        (Mesh::GatewayApi, Measure::SuccessRate) => ENVOY_SUCCESS_RATE,
        (Mesh::GatewayApi, Measure::Latency) => ENVOY_DURATION,
        (_, Measure::Counts | Measure::Histograms | Measure::Query(_)) => return None,
    };
    // The built-in templates use only known placeholders, so rendering cannot fail.
    render_template(template, subject, range.length(), &BTreeMap::new()).ok()
}

/// The queries behind one side's counts and histogram: each returns the raw samples of every
/// matching counter series (a matrix) from [`SERIES_LOOKBACK`] before the range to its end,
/// evaluated at the range's end. [`super::counters`] turns them into counts over the range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideQueries {
    /// Every request counter of the side.
    pub requests: String,
    /// The request counters of 5xx answers (Linkerd: `classification="failure"`).
    pub failures: String,
    /// Every bucket of the side's latency histogram (milliseconds, one series per `le`).
    pub histogram: String,
}

/// The counter queries of `side` over `range`. Names are matched exactly (`=`), not as
/// Flagger's regular expressions, so that `podinfo` never also reads `podinfo-primary`.
pub fn side_queries(mesh: Mesh, subject: &Subject, side: Side, range: Range) -> SideQueries {
    let ns = &subject.namespace;
    let workload = subject.side(side);
    let (total, bucket, selector, failed) = match mesh {
        Mesh::Istio => (
            "istio_requests_total",
            "istio_request_duration_milliseconds_bucket",
            format!(
                r#"reporter="destination",destination_workload_namespace="{ns}",destination_workload="{}""#,
                workload.deployment
            ),
            r#"response_code=~"5.*""#,
        ),
        Mesh::Linkerd => (
            "response_total",
            "response_latency_ms_bucket",
            format!(
                r#"namespace="{ns}",deployment="{}",direction="inbound""#,
                workload.deployment
            ),
            r#"classification="failure""#,
        ),
        Mesh::GatewayApi => (
            "envoy_cluster_upstream_rq",
            "envoy_cluster_upstream_rq_time_bucket",
            format!(
                r#"envoy_cluster_name=~"{ns}_{}_[0-9a-zA-Z-]+""#,
                workload.service
            ),
            r#"envoy_response_code=~"5.*""#,
        ),
    };
    let reach = range.to.saturating_sub(range.from) + SERIES_LOOKBACK;
    SideQueries {
        requests: format!("{total}{{{selector}}}[{reach}ms]"),
        failures: format!("{total}{{{selector},{failed}}}[{reach}ms]"),
        histogram: format!("{bucket}{{{selector}}}[{reach}ms]"),
    }
}

/// The `time` of the query API for an instant `at` (Unix milliseconds): seconds with the
/// milliseconds kept.
pub fn evaluation_time(at: Millis) -> String {
    format!("{}.{:03}", at / 1000, at % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{QuerySource, Workload};

    fn subject() -> Subject {
        Subject {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo".into(),
            service: "frontend".into(),
            canary: Workload {
                deployment: "podinfo".into(),
                service: "frontend-canary".into(),
            },
            primary: Workload {
                deployment: "podinfo-primary".into(),
                service: "frontend-primary".into(),
            },
        }
    }

    fn last(secs: u64) -> Range {
        Range {
            from: 1_000_000 - secs * 1000,
            to: 1_000_000,
        }
    }

    #[test]
    fn the_istio_success_rate_is_flaggers_query_over_the_range() {
        let q = builtin_query(Mesh::Istio, &Measure::SuccessRate, &subject(), last(60));
        assert_eq!(
            q.as_deref(),
            Some(
                r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo",response_code!~"5.*"}[1m])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo"}[1m])) * 100"#
            )
        );
    }

    #[test]
    fn the_linkerd_duration_is_flaggers_query() {
        let q = builtin_query(Mesh::Linkerd, &Measure::Latency, &subject(), last(30));
        assert_eq!(
            q.as_deref(),
            Some(
                r#"histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{namespace="test",deployment=~"podinfo",direction="inbound"}[30s])) by (le))"#
            )
        );
    }

    #[test]
    fn counter_queries_read_raw_samples_from_before_the_range_to_its_end() {
        let step = Range {
            from: 1_000_000,
            to: 1_045_500,
        };
        let canary = side_queries(Mesh::Istio, &subject(), Side::Canary, step);
        let primary = side_queries(Mesh::Istio, &subject(), Side::Primary, step);
        // 45.5 s of range and 5 minutes before it.
        assert_eq!(
            canary.requests,
            r#"istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload="podinfo"}[345500ms]"#
        );
        assert_eq!(
            canary.failures,
            r#"istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload="podinfo",response_code=~"5.*"}[345500ms]"#
        );
        assert_eq!(
            primary.histogram,
            r#"istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace="test",destination_workload="podinfo-primary"}[345500ms]"#
        );
        assert_eq!(evaluation_time(step.to), "1045.500");
    }

    #[test]
    fn gateway_api_counters_are_the_envoy_clusters_of_each_sides_service() {
        let q = side_queries(Mesh::GatewayApi, &subject(), Side::Primary, last(60));
        assert_eq!(
            q.failures,
            r#"envoy_cluster_upstream_rq{envoy_cluster_name=~"test_frontend-primary_[0-9a-zA-Z-]+",envoy_response_code=~"5.*"}[360000ms]"#
        );
        let linkerd = side_queries(Mesh::Linkerd, &subject(), Side::Canary, last(60));
        assert_eq!(
            linkerd.failures,
            r#"response_total{namespace="test",deployment="podinfo",direction="inbound",classification="failure"}[360000ms]"#
        );
    }

    #[test]
    fn gateway_api_built_ins_read_the_envoy_cluster_of_the_canarys_service_not_the_target() {
        // The Service is `frontend`, the target `podinfo`: Envoy names the canary's cluster
        // after the Service.
        for measure in [Measure::SuccessRate, Measure::Latency] {
            let q =
                builtin_query(Mesh::GatewayApi, &measure, &subject(), last(60)).unwrap_or_default();
            assert!(
                q.contains(r#"envoy_cluster_name=~"test_frontend-canary_"#),
                "{q}"
            );
            assert!(!q.contains("podinfo"), "{q}");
        }
    }

    #[test]
    fn the_contour_queries_are_flaggers_contour_observer_with_the_apex_service() {
        let sr = builtin_query(
            Mesh::GatewayApi,
            &Measure::SuccessRate,
            &subject(),
            last(60),
        );
        assert_eq!(
            sr.as_deref(),
            Some(
                r#"sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"test_frontend-canary_[0-9a-zA-Z-]+",envoy_response_code!~"5.*"}[1m])) / sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"test_frontend-canary_[0-9a-zA-Z-]+"}[1m])) * 100"#
            )
        );
        let p99 = builtin_query(Mesh::GatewayApi, &Measure::Latency, &subject(), last(60));
        assert_eq!(
            p99.as_deref(),
            Some(
                r#"histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=~"test_frontend-canary_[0-9a-zA-Z-]+"}[1m])) by (le))"#
            )
        );
    }

    #[test]
    fn the_istio_duration_and_the_linkerd_success_rate_are_flaggers_queries() {
        let p99 = builtin_query(Mesh::Istio, &Measure::Latency, &subject(), last(60));
        assert_eq!(
            p99.as_deref(),
            Some(
                r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo"}[1m])) by (le))"#
            )
        );
        let sr = builtin_query(Mesh::Linkerd, &Measure::SuccessRate, &subject(), last(60));
        assert_eq!(
            sr.as_deref(),
            Some(
                r#"sum(rate(response_total{namespace="test",deployment=~"podinfo",classification!="failure",direction="inbound"}[1m])) / sum(rate(response_total{namespace="test",deployment=~"podinfo",direction="inbound"}[1m])) * 100"#
            )
        );
    }

    #[test]
    fn gateway_api_canaries_read_the_implementation_the_setting_names_and_others_ignore_it() {
        use crate::routes::{GatewayVersion, Provider, SmiVersion};
        for mesh in [Mesh::Istio, Mesh::Linkerd, Mesh::GatewayApi] {
            let gateway = Provider::GatewayApi(GatewayVersion::V1);
            assert_eq!(Mesh::for_provider(gateway, mesh), mesh);
            assert_eq!(Mesh::for_provider(Provider::Istio, mesh), Mesh::Istio);
            let smi = Provider::Smi(SmiVersion::V1Alpha2);
            assert_eq!(Mesh::for_provider(smi, mesh), Mesh::Linkerd);
            assert_eq!(mesh.as_str().parse::<Mesh>(), Ok(mesh));
        }
        let err = "envoy-gateway".parse::<Mesh>().unwrap_err();
        assert!(
            err.contains("`envoy-gateway`") && err.contains("contour"),
            "{err}"
        );
    }

    #[test]
    fn only_flaggers_scalars_have_a_builtin_query() {
        for measure in [
            Measure::Counts,
            Measure::Histograms,
            Measure::Query(QuerySource::Inline {
                query: "up".into(),
                variables: Default::default(),
                interval: None,
            }),
        ] {
            assert_eq!(
                builtin_query(Mesh::Istio, &measure, &subject(), last(60)),
                None
            );
        }
    }
}
