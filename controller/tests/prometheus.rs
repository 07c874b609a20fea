//! The Prometheus client against a fake query API on 127.0.0.1: the exact PromQL sent, and
//! what empty results, NaN, error answers, wrong result types, timeouts and a closed port
//! become.
#![cfg(feature = "cluster")]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fledge_controller::analysis::{Counts, Histogram, MetricReading};
use fledge_controller::metrics::{Mesh, Prometheus, QueryContext};
use fledge_controller::spec::{
    Duration, MetricCheck, MetricKind, MetricProvider, MetricTemplateSpec,
};
use serde_json::{Value, json};

/// How the fake answers one query.
#[derive(Clone)]
enum Answer {
    /// HTTP status and JSON body.
    Json(u16, Value),
    /// HTTP status and a body that is not JSON.
    Text(u16, &'static str),
    /// No answer for this long, then an empty vector.
    Slow(StdDuration),
    /// The first answer, then the second for every later call.
    Then(Box<Answer>, Box<Answer>),
}

#[derive(Clone, Default)]
struct Fake {
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    received: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn answering(pairs: Vec<(String, Answer)>) -> Self {
        let fake = Fake::default();
        lock(&fake.answers).extend(pairs);
        fake
    }

    /// Serves the fake on a free loopback port; returns its address.
    async fn serve(&self) -> String {
        let app = axum::Router::new()
            .route("/api/v1/query", get(answer))
            .with_state(self.clone());
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("cannot bind a loopback port: {e}"),
        };
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    fn received(&self) -> Vec<String> {
        lock(&self.received).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn answer(
    State(fake): State<Fake>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let query = params.get("query").cloned().unwrap_or_default();
    lock(&fake.received).push(query.clone());
    let found = lock(&fake.answers).get(&query).cloned();
    let answer = match found {
        Some(Answer::Then(first, rest)) => {
            lock(&fake.answers).insert(query.clone(), *rest);
            *first
        }
        Some(a) => a,
        None => Answer::Json(
            400,
            json!({ "status": "error", "errorType": "bad_data", "error": format!("unexpected query {query}") }),
        ),
    };
    match answer {
        Answer::Json(code, body) => (status(code), axum::Json(body)).into_response(),
        Answer::Text(code, body) => (status(code), body).into_response(),
        Answer::Slow(delay) => {
            tokio::time::sleep(delay).await;
            axum::Json(vector(&[])).into_response()
        }
        Answer::Then(first, _) => match *first {
            Answer::Json(code, body) => (status(code), axum::Json(body)).into_response(),
            _ => status(500).into_response(),
        },
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A successful vector answer with one series per `(labels, value)`.
fn vector(series: &[(Value, &str)]) -> Value {
    let result: Vec<Value> = series
        .iter()
        .map(|(labels, v)| json!({ "metric": labels, "value": [1_700_000_000.0, v] }))
        .collect();
    json!({ "status": "success", "data": { "resultType": "vector", "result": result } })
}

fn one(value: &str) -> Answer {
    Answer::Json(200, vector(&[(json!({}), value)]))
}

fn ctx(mesh: Mesh, statistical: bool) -> QueryContext {
    QueryContext {
        namespace: "test".into(),
        target: "podinfo".into(),
        mesh,
        statistical,
    }
}

fn check(name: &str, kind: MetricKind) -> MetricCheck {
    MetricCheck {
        name: name.into(),
        kind,
        window: Duration::from_secs(60),
        min: None,
        max: None,
        margin: None,
    }
}

fn prometheus(address: &str, timeout_ms: u64, retries: u32) -> Prometheus {
    match Prometheus::new(address, StdDuration::from_millis(timeout_ms), retries) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(StdDuration::from_secs(10), f).await {
        Ok(v) => v,
        Err(_) => panic!("the query did not finish within 10s"),
    }
}

const ISTIO_SUCCESS_RATE: &str = r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo",response_code!~"5.*"}[1m])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo"}[1m])) * 100"#;

async fn read_success_rate(answer: Answer) -> (MetricReading, Vec<String>) {
    let fake = Fake::answering(vec![(ISTIO_SUCCESS_RATE.to_string(), answer)]);
    let address = fake.serve().await;
    let reading = bounded(prometheus(&address, 2_000, 0).read(
        &ctx(Mesh::Istio, false),
        &check("request-success-rate", MetricKind::RequestSuccessRate),
        None,
    ))
    .await;
    (reading, fake.received())
}

fn reason(reading: &MetricReading) -> &str {
    match reading {
        MetricReading::NoData { reason } | MetricReading::Error { reason } => reason,
        _ => "",
    }
}

#[tokio::test]
async fn the_istio_success_rate_sends_flaggers_query_and_returns_its_value() {
    let (reading, received) = read_success_rate(one("99.5")).await;
    assert_eq!(reading, MetricReading::Value { value: 99.5 });
    assert_eq!(received, vec![ISTIO_SUCCESS_RATE.to_string()]);
}

#[tokio::test]
async fn an_empty_result_is_no_data() {
    let (reading, _) = read_success_rate(Answer::Json(200, vector(&[]))).await;
    assert!(
        matches!(reading, MetricReading::NoData { .. }),
        "{reading:?}"
    );
    assert!(reason(&reading).contains("no values found"), "{reading:?}");
}

#[tokio::test]
async fn nan_is_no_data_and_says_nan() {
    let (reading, _) = read_success_rate(one("NaN")).await;
    assert!(
        matches!(reading, MetricReading::NoData { .. }),
        "{reading:?}"
    );
    assert!(reason(&reading).contains("NaN"), "{reading:?}");
}

#[tokio::test]
async fn an_error_answer_is_an_error_with_prometheus_message() {
    let (reading, received) = read_success_rate(Answer::Json(
        400,
        json!({ "status": "error", "errorType": "bad_data", "error": "parse error at char 4" }),
    ))
    .await;
    assert!(
        matches!(reading, MetricReading::Error { .. }),
        "{reading:?}"
    );
    assert!(
        reason(&reading).contains("rejected the query (bad_data: parse error at char 4)"),
        "{reading:?}"
    );
    // A bad query does not get better by asking again.
    assert_eq!(received.len(), 1);
}

#[tokio::test]
async fn a_matrix_a_string_or_several_series_are_the_wrong_result_type() {
    let matrix = json!({ "status": "success", "data": { "resultType": "matrix", "result": [] } });
    let string =
        json!({ "status": "success", "data": { "resultType": "string", "result": [1.0, "x"] } });
    let several = vector(&[(json!({ "pod": "a" }), "1"), (json!({ "pod": "b" }), "2")]);
    for body in [matrix, string, several] {
        let (reading, _) = read_success_rate(Answer::Json(200, body.clone())).await;
        assert!(
            matches!(reading, MetricReading::Error { .. }),
            "{body}: {reading:?}"
        );
        assert!(
            reason(&reading).contains("wrong result type"),
            "{body}: {reading:?}"
        );
    }
}

#[tokio::test]
async fn a_scalar_result_is_a_value() {
    let scalar =
        json!({ "status": "success", "data": { "resultType": "scalar", "result": [1.0, "42"] } });
    let (reading, _) = read_success_rate(Answer::Json(200, scalar)).await;
    assert_eq!(reading, MetricReading::Value { value: 42.0 });
}

#[tokio::test]
async fn a_slow_prometheus_times_out_with_a_reason_that_says_so() {
    let fake = Fake::answering(vec![(
        ISTIO_SUCCESS_RATE.to_string(),
        Answer::Slow(StdDuration::from_secs(5)),
    )]);
    let address = fake.serve().await;
    let reading = bounded(prometheus(&address, 200, 0).read(
        &ctx(Mesh::Istio, false),
        &check("request-success-rate", MetricKind::RequestSuccessRate),
        None,
    ))
    .await;
    assert!(
        matches!(reading, MetricReading::Error { .. }),
        "{reading:?}"
    );
    assert!(reason(&reading).contains("timed out"), "{reading:?}");
}

#[tokio::test]
async fn a_closed_port_is_prometheus_unreachable() {
    let address = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        Err(e) => panic!("{e}"),
    };
    let reading = bounded(prometheus(&format!("http://{address}"), 1_000, 0).read(
        &ctx(Mesh::Istio, false),
        &check("request-success-rate", MetricKind::RequestSuccessRate),
        None,
    ))
    .await;
    assert!(
        matches!(reading, MetricReading::Error { .. }),
        "{reading:?}"
    );
    assert!(
        reason(&reading).contains("Prometheus unreachable"),
        "{reading:?}"
    );
}

#[tokio::test]
async fn a_passing_failure_is_retried_with_backoff() {
    let fake = Fake::answering(vec![(
        ISTIO_SUCCESS_RATE.to_string(),
        Answer::Then(
            Box::new(Answer::Text(503, "upstream connect error")),
            Box::new(one("98")),
        ),
    )]);
    let address = fake.serve().await;
    let reading = bounded(prometheus(&address, 2_000, 2).read(
        &ctx(Mesh::Istio, false),
        &check("request-success-rate", MetricKind::RequestSuccessRate),
        None,
    ))
    .await;
    assert_eq!(reading, MetricReading::Value { value: 98.0 });
    assert_eq!(fake.received().len(), 2);
}

#[tokio::test]
async fn a_proxy_error_page_is_reported_with_its_status_and_an_excerpt() {
    let (reading, _) = read_success_rate(Answer::Text(502, "<html>Bad Gateway</html>")).await;
    assert!(
        reason(&reading).contains("answered HTTP 502: <html>Bad Gateway</html>"),
        "{reading:?}"
    );
}

#[tokio::test]
async fn statistical_success_rate_reads_request_and_failure_counts_of_both_sides() {
    let sel = |w: &str| {
        format!(
            r#"reporter="destination",destination_workload_namespace="test",destination_workload=~"{w}""#
        )
    };
    let fake = Fake::answering(vec![
        (
            format!(
                "sum(increase(istio_requests_total{{{}}}[1m]))",
                sel("podinfo")
            ),
            one("1000"),
        ),
        (
            format!(
                r#"sum(increase(istio_requests_total{{{},response_code=~"5.*"}}[1m]))"#,
                sel("podinfo")
            ),
            one("5"),
        ),
        (
            format!(
                "sum(increase(istio_requests_total{{{}}}[1m]))",
                sel("podinfo-primary")
            ),
            one("9000"),
        ),
        // The primary had no 5xx: no series at all.
        (
            format!(
                r#"sum(increase(istio_requests_total{{{},response_code=~"5.*"}}[1m]))"#,
                sel("podinfo-primary")
            ),
            Answer::Json(200, vector(&[])),
        ),
    ]);
    let address = fake.serve().await;
    let reading = bounded(prometheus(&address, 2_000, 0).read(
        &ctx(Mesh::Istio, true),
        &check("request-success-rate", MetricKind::RequestSuccessRate),
        None,
    ))
    .await;
    assert_eq!(
        reading,
        MetricReading::Counts {
            canary: Counts {
                requests: 1000.0,
                failures: 5.0
            },
            primary: Counts {
                requests: 9000.0,
                failures: 0.0
            },
        }
    );
    assert_eq!(fake.received().len(), 4);
}

#[tokio::test]
async fn statistical_success_rate_without_canary_traffic_is_no_data() {
    let fake = Fake::default();
    // Every query unknown to the fake gets a 400; give the requests queries empty vectors.
    for w in ["podinfo", "podinfo-primary"] {
        lock(&fake.answers).insert(
            format!(
                r#"sum(increase(response_total{{namespace="test",deployment=~"{w}",direction="inbound"}}[1m]))"#
            ),
            Answer::Json(200, vector(&[])),
        );
        lock(&fake.answers).insert(
            format!(
                r#"sum(increase(response_total{{namespace="test",deployment=~"{w}",direction="inbound",classification="failure"}}[1m]))"#
            ),
            Answer::Json(200, vector(&[])),
        );
    }
    let address = fake.serve().await;
    let reading = bounded(prometheus(&address, 2_000, 0).read(
        &ctx(Mesh::Linkerd, true),
        &check("request-success-rate", MetricKind::RequestSuccessRate),
        None,
    ))
    .await;
    assert!(
        matches!(reading, MetricReading::NoData { .. }),
        "{reading:?}"
    );
    assert!(reason(&reading).contains("canary"), "{reading:?}");
}

#[tokio::test]
async fn statistical_duration_reads_both_histograms_sorted_by_bucket() {
    let query = |w: &str| {
        format!(
            r#"sum(increase(envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=~"test_podinfo-{w}_[0-9a-zA-Z-]+"}}[1m])) by (le)"#
        )
    };
    let buckets = |values: [&'static str; 3]| {
        Answer::Json(
            200,
            vector(&[
                (json!({ "le": "+Inf" }), values[2]),
                (json!({ "le": "5" }), values[0]),
                (json!({ "le": "25" }), values[1]),
            ]),
        )
    };
    let fake = Fake::answering(vec![
        (query("canary"), buckets(["10", "80", "100"])),
        (query("primary"), buckets(["50", "900", "1000"])),
    ]);
    let address = fake.serve().await;
    let reading = bounded(prometheus(&address, 2_000, 0).read(
        &ctx(Mesh::GatewayApi, true),
        &check("request-duration", MetricKind::RequestDuration),
        None,
    ))
    .await;
    assert_eq!(
        reading,
        MetricReading::Histograms {
            canary: Histogram {
                bounds: vec![5.0, 25.0, f64::INFINITY],
                cumulative: vec![10.0, 80.0, 100.0],
            },
            primary: Histogram {
                bounds: vec![5.0, 25.0, f64::INFINITY],
                cumulative: vec![50.0, 900.0, 1000.0],
            },
        }
    );
}

fn template(query: &str, address: Option<String>) -> MetricTemplateSpec {
    MetricTemplateSpec {
        provider: MetricProvider {
            type_: "prometheus".into(),
            address,
            secret_ref: None,
            insecure_skip_verify: false,
        },
        query: query.into(),
    }
}

#[tokio::test]
async fn a_metric_template_is_rendered_with_variables_and_sent_to_its_own_prometheus() {
    let rendered = r#"sum(rate(http_errors{ns="test",app="podinfo",code="503"}[1m]))"#;
    let fake = Fake::answering(vec![(rendered.to_string(), one("0.5"))]);
    let template_address = fake.serve().await;
    let kind = MetricKind::Template {
        name: "errors".into(),
        namespace: Some("flagger-system".into()),
        variables: BTreeMap::from([("code".to_string(), "503".to_string())]),
    };
    let spec = template(
        r#"sum(rate(http_errors{ns="{{ namespace }}",app="{{target}}",code="{{ variables.code }}"}[{{ interval }}]))"#,
        Some(template_address),
    );
    // The controller-wide Prometheus is a closed port: the template's own address is used.
    let reading = bounded(prometheus("http://127.0.0.1:9", 2_000, 0).read(
        &ctx(Mesh::Istio, false),
        &check("errors", kind),
        Some(&spec),
    ))
    .await;
    assert_eq!(reading, MetricReading::Value { value: 0.5 });
    assert_eq!(fake.received(), vec![rendered.to_string()]);
}

#[tokio::test]
async fn a_template_with_an_unknown_variable_is_an_error_naming_it_and_sends_nothing() {
    let fake = Fake::default();
    let address = fake.serve().await;
    let kind = MetricKind::Template {
        name: "errors".into(),
        namespace: None,
        variables: BTreeMap::new(),
    };
    let spec = template(r#"up{job="{{ variables.job }}"}"#, None);
    let reading = bounded(prometheus(&address, 2_000, 0).read(
        &ctx(Mesh::Istio, false),
        &check("errors", kind),
        Some(&spec),
    ))
    .await;
    assert!(
        matches!(reading, MetricReading::Error { .. }),
        "{reading:?}"
    );
    assert!(reason(&reading).contains("`job`"), "{reading:?}");
    assert!(fake.received().is_empty());
}

#[tokio::test]
async fn a_missing_template_is_an_error_naming_it() {
    let kind = MetricKind::Template {
        name: "errors".into(),
        namespace: Some("flagger-system".into()),
        variables: BTreeMap::new(),
    };
    let reading = bounded(prometheus("http://127.0.0.1:9", 1_000, 0).read(
        &ctx(Mesh::Istio, false),
        &check("errors", kind),
        None,
    ))
    .await;
    assert_eq!(
        reading,
        MetricReading::Error {
            reason: "MetricTemplate flagger-system/errors was not found".into()
        }
    );
}

#[tokio::test]
async fn an_inline_query_is_rendered_and_sent_as_is() {
    let fake = Fake::answering(vec![(
        r#"avg(cpu{namespace="test",pod=~"podinfo-.*"})"#.to_string(),
        one("0.25"),
    )]);
    let address = fake.serve().await;
    let kind = MetricKind::Query {
        query: r#"avg(cpu{namespace="{{ namespace }}",pod=~"{{ target }}-.*"})"#.into(),
    };
    let reading = bounded(prometheus(&address, 2_000, 0).read(
        &ctx(Mesh::Linkerd, true),
        &check("cpu", kind),
        None,
    ))
    .await;
    assert_eq!(reading, MetricReading::Value { value: 0.25 });
}

#[test]
fn an_address_that_is_not_a_url_is_refused() {
    assert!(Prometheus::new("not a url", StdDuration::from_secs(1), 0).is_err());
}
