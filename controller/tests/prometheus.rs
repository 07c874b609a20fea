//! The Prometheus client against a fake query API on 127.0.0.1: the exact PromQL sent and the
//! time it is evaluated at, and what empty results, NaN, error answers, wrong result types,
//! timeouts and a closed port become.
#![cfg(feature = "cluster")]
// A fake HTTP server looking answers up by query; nothing iterates the maps.
#![allow(clippy::disallowed_types)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fledge_controller::analysis::{Counts, Covered, Histogram, MetricReading};
use fledge_controller::metrics::{Mesh, Prometheus};
use fledge_controller::observe::{Measure, Measurement, QuerySource, Range, Subject, Workload};
use fledge_controller::rollout::Millis;
use fledge_controller::spec::{MetricProvider, MetricTemplateSpec};
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
    times: Arc<Mutex<Vec<String>>>,
    /// Every request's `x-` headers, `(name, value)`.
    headers: Arc<Mutex<Vec<(String, String)>>>,
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

    /// The `time` each query was evaluated at.
    fn times(&self) -> Vec<String> {
        lock(&self.times).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn answer(
    State(fake): State<Fake>,
    headers: axum::http::HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    for (name, value) in &headers {
        if name.as_str().starts_with("x-") {
            let value = value.to_str().unwrap_or_default().to_string();
            lock(&fake.headers).push((name.to_string(), value));
        }
    }
    let query = params.get("query").cloned().unwrap_or_default();
    lock(&fake.received).push(query.clone());
    lock(&fake.times).push(params.get("time").cloned().unwrap_or_default());
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

fn subject() -> Subject {
    Subject {
        name: "podinfo".into(),
        namespace: "test".into(),
        target: "podinfo".into(),
        service: "podinfo".into(),
        canary: Workload {
            deployment: "podinfo".into(),
            service: "podinfo-canary".into(),
        },
        primary: Workload {
            deployment: "podinfo-primary".into(),
            service: "podinfo-primary".into(),
        },
    }
}

/// The end of every measured range: 2023-11-14T22:13:20.250Z.
const NOW: Millis = 1_700_000_000_250;

fn measure(name: &str, measure: Measure) -> Measurement {
    Measurement {
        metric: name.into(),
        measure,
        range: Range {
            from: NOW - 60_000,
            to: NOW,
        },
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
    let (reading, received, _) = read_success_rate_at(answer).await;
    (reading, received)
}

async fn read_success_rate_at(answer: Answer) -> (MetricReading, Vec<String>, Vec<String>) {
    let fake = Fake::answering(vec![(ISTIO_SUCCESS_RATE.to_string(), answer)]);
    let address = fake.serve().await;
    let reading = read(
        &prometheus(&address, 2_000, 0),
        Mesh::Istio,
        measure("request-success-rate", Measure::SuccessRate),
        None,
    )
    .await;
    (reading, fake.received(), fake.times())
}

/// Reads one measurement at [`NOW`], within bounded time.
async fn read(
    prometheus: &Prometheus,
    mesh: Mesh,
    measurement: Measurement,
    template: Option<&MetricTemplateSpec>,
) -> MetricReading {
    bounded(prometheus.read(mesh, &subject(), &measurement, template)).await
}

fn reason(reading: &MetricReading) -> &str {
    match reading {
        MetricReading::NoData { reason } | MetricReading::Error { reason } => reason,
        _ => "",
    }
}

fn assert_no_data(reading: &MetricReading, says: &str) {
    assert!(
        matches!(reading, MetricReading::NoData { .. }) && reason(reading).contains(says),
        "no data saying {says:?} expected: {reading:?}"
    );
}

fn assert_error(reading: &MetricReading, says: &str) {
    assert!(
        matches!(reading, MetricReading::Error { .. }) && reason(reading).contains(says),
        "an error saying {says:?} expected: {reading:?}"
    );
}

#[tokio::test]
async fn the_istio_success_rate_sends_flaggers_query_at_the_ranges_end_and_returns_its_value() {
    let (reading, received, times) = read_success_rate_at(one("99.5")).await;
    assert_eq!(reading, MetricReading::Value { value: 99.5 });
    assert_eq!(received, vec![ISTIO_SUCCESS_RATE.to_string()]);
    assert_eq!(times, vec!["1700000000.250".to_string()]);
}

#[tokio::test]
async fn an_empty_result_is_no_data() {
    let (reading, _) = read_success_rate(Answer::Json(200, vector(&[]))).await;
    assert_no_data(&reading, "no values found");
}

#[tokio::test]
async fn nan_is_no_data_and_says_nan() {
    let (reading, _) = read_success_rate(one("NaN")).await;
    assert_no_data(&reading, "NaN");
}

#[tokio::test]
async fn an_error_answer_is_an_error_with_prometheus_message() {
    let (reading, received) = read_success_rate(Answer::Json(
        400,
        json!({ "status": "error", "errorType": "bad_data", "error": "parse error at char 4" }),
    ))
    .await;
    assert_error(
        &reading,
        "rejected the query (bad_data: parse error at char 4)",
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
        assert_error(&reading, "wrong result type");
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
    let reading = read(
        &prometheus(&address, 200, 0),
        Mesh::Istio,
        measure("request-success-rate", Measure::SuccessRate),
        None,
    )
    .await;
    assert_error(&reading, "timed out");
}

#[tokio::test]
async fn a_closed_port_is_prometheus_unreachable() {
    let address = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        Err(e) => panic!("{e}"),
    };
    let reading = read(
        &prometheus(&format!("http://{address}"), 1_000, 0),
        Mesh::Istio,
        measure("request-success-rate", Measure::SuccessRate),
        None,
    )
    .await;
    assert_error(&reading, "Prometheus unreachable");
    // The address once, without the URL-encoded query (an Event's note is cut at 1 KB).
    let reason = reason(&reading);
    assert_eq!(reason.matches(&address).count(), 1, "{reason}");
    assert!(!reason.contains("query="), "{reason}");
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
    let reading = read(
        &prometheus(&address, 2_000, 2),
        Mesh::Istio,
        measure("request-success-rate", Measure::SuccessRate),
        None,
    )
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

/// A matrix answer: one series per `(labels, [(seconds, value)])`.
fn matrix(series: &[(Value, &[(f64, &str)])]) -> Answer {
    let result: Vec<Value> = series
        .iter()
        .map(|(labels, values)| {
            let values: Vec<Value> = values.iter().map(|(t, v)| json!([t, v])).collect();
            json!({ "metric": labels, "values": values })
        })
        .collect();
    Answer::Json(
        200,
        json!({ "status": "success", "data": { "resultType": "matrix", "result": result } }),
    )
}

/// Seconds on the fake's clock, relative to the start of the measured range.
fn at(offset_s: f64) -> f64 {
    (NOW - 60_000) as f64 / 1000.0 + offset_s
}

fn istio_counters(workload: &str, failures: bool) -> String {
    let code = if failures {
        r#",response_code=~"5.*""#
    } else {
        ""
    };
    // The range (60 s) and the 5 minutes before it.
    format!(
        r#"istio_requests_total{{reporter="destination",destination_workload_namespace="test",destination_workload="{workload}"{code}}}[360000ms]"#
    )
}

async fn read_counts(answers: Vec<(String, Answer)>) -> (MetricReading, Fake) {
    let fake = Fake::answering(answers);
    let address = fake.serve().await;
    let reading = read(
        &prometheus(&address, 2_000, 0),
        Mesh::Istio,
        measure("request-success-rate", Measure::Counts),
        None,
    )
    .await;
    (reading, fake)
}

#[tokio::test]
async fn statistical_counts_are_each_series_diffed_from_its_first_sample_in_the_range() {
    let pod = |p: &str| json!({ "destination_workload": "podinfo", "pod": p });
    let (reading, fake) = read_counts(vec![
        // Two pods scraped every 15 s; the first scrape after the range began is the baseline,
        // so the 40 requests of pod a before it do not leak in.
        (
            istio_counters("podinfo", false),
            matrix(&[
                (
                    pod("a"),
                    &[
                        (at(-10.0), "100"),
                        (at(5.0), "140"),
                        (at(20.0), "540"),
                        (at(35.0), "940"),
                    ],
                ),
                (
                    pod("b"),
                    &[(at(-5.0), "7"), (at(10.0), "7"), (at(25.0), "107")],
                ),
            ]),
        ),
        // The 5xx series was created in the range: its first sample counts in full.
        (
            istio_counters("podinfo", true),
            matrix(&[(pod("a"), &[(at(20.0), "3"), (at(35.0), "5")])]),
        ),
        (
            istio_counters("podinfo-primary", false),
            // A counter reset (a restarted proxy): counting goes on from zero.
            matrix(&[(
                json!({}),
                &[
                    (at(-1.0), "50"),
                    (at(14.0), "1050"),
                    (at(29.0), "30"),
                    (at(44.0), "530"),
                ],
            )]),
        ),
        // The primary had no 5xx: no series at all.
        (istio_counters("podinfo-primary", true), matrix(&[])),
    ])
    .await;
    let MetricReading::Counts {
        canary,
        primary,
        covered: Some(covered),
    } = reading
    else {
        panic!("{reading:?}")
    };
    assert_eq!(
        (canary, primary),
        (
            Counts {
                requests: 900.0,
                failures: 5.0
            },
            Counts {
                requests: 530.0,
                failures: 0.0
            }
        )
    );
    // The spans the counts cover, for the rate: pod a's 800 requests over 30s and pod b's 100
    // over 15s are 900 at 100/3 per second, 27s of it; the primary's 30s.
    let near = |x: Option<f64>, want: f64| x.is_some_and(|x| (x - want).abs() < 1e-6);
    assert!(
        near(covered.canary, 27.0) && near(covered.primary, 30.0),
        "{covered:?}"
    );
    assert_eq!(fake.received().len(), 4);
    assert!(fake.times().iter().all(|t| t == "1700000000.250"));
}

#[tokio::test]
async fn no_canary_request_series_is_no_data_naming_the_canary() {
    let mut answers: Vec<(String, Answer)> = ["podinfo", "podinfo-primary"]
        .iter()
        .flat_map(|w| {
            [
                (istio_counters(w, false), matrix(&[])),
                (istio_counters(w, true), matrix(&[])),
            ]
        })
        .collect();
    answers[2].1 = matrix(&[(json!({}), &[(at(1.0), "10")])]);
    let (reading, _) = read_counts(answers).await;
    assert_no_data(&reading, "for the canary");
}

#[tokio::test]
async fn more_failures_than_requests_is_an_error_that_says_so() {
    let one_series = |v: &'static str| matrix(&[(json!({}), &[(at(1.0), v)])]);
    let (reading, _) = read_counts(vec![
        (istio_counters("podinfo", false), one_series("10")),
        (istio_counters("podinfo", true), one_series("12")),
        (istio_counters("podinfo-primary", false), one_series("10")),
        (istio_counters("podinfo-primary", true), matrix(&[])),
    ])
    .await;
    assert_error(&reading, "12 5xx answers but 10 requests");
}

#[tokio::test]
async fn statistical_duration_reads_both_histograms_summed_per_bucket() {
    let query = |w: &str| {
        format!(
            r#"envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=~"test_podinfo-{w}_[0-9a-zA-Z-]+"}}[360000ms]"#
        )
    };
    let buckets = |values: [&'static str; 3]| {
        let le = |b: &str| json!({ "le": b });
        matrix(&[
            (le("+Inf"), &[(at(1.0), values[2])]),
            (le("5"), &[(at(1.0), values[0])]),
            (le("25"), &[(at(1.0), values[1])]),
        ])
    };
    let fake = Fake::answering(vec![
        (query("canary"), buckets(["10", "80", "100"])),
        (query("primary"), buckets(["50", "900", "1000"])),
    ]);
    let address = fake.serve().await;
    let reading = read(
        &prometheus(&address, 2_000, 0),
        Mesh::GatewayApi,
        measure("request-duration", Measure::Histograms),
        None,
    )
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
            // New series, one sample 1s into the range: counted from its start.
            covered: Some(Box::new(Covered {
                canary: Some(1.0),
                primary: Some(1.0)
            })),
        }
    );
}

fn template(query: &str, address: Option<String>) -> MetricTemplateSpec {
    MetricTemplateSpec {
        provider: MetricProvider {
            type_: "prometheus".into(),
            address,
            ..MetricProvider::default()
        },
        query: query.into(),
    }
}

fn by_template(variables: &[(&str, &str)]) -> Measure {
    Measure::Query(QuerySource::Template {
        namespace: "flagger-system".into(),
        name: "errors".into(),
        variables: variables
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        interval: None,
    })
}

#[tokio::test]
async fn a_metric_template_is_rendered_with_variables_and_sent_to_its_own_prometheus() {
    let rendered = r#"sum(rate(http_errors{ns="test",app="podinfo",code="503"}[1m]))"#;
    let fake = Fake::answering(vec![(rendered.to_string(), one("0.5"))]);
    let template_address = fake.serve().await;
    let spec = template(
        r#"sum(rate(http_errors{ns="{{ namespace }}",app="{{target}}",code="{{ variables.code }}"}[{{ interval }}]))"#,
        Some(template_address),
    );
    // The controller-wide Prometheus is a closed port: the template's own address is used.
    let reading = read(
        &prometheus("http://127.0.0.1:9", 2_000, 0),
        Mesh::Istio,
        measure("errors", by_template(&[("code", "503")])),
        Some(&spec),
    )
    .await;
    assert_eq!(reading, MetricReading::Value { value: 0.5 });
    assert_eq!(fake.received(), vec![rendered.to_string()]);
}

/// Flagger 1.44's `provider.headers` (e.g. a tenant for Cortex or Mimir), each value sent.
#[tokio::test]
async fn a_metric_templates_headers_are_sent_with_its_query() {
    let fake = Fake::answering(vec![("up".to_string(), one("1"))]);
    let address = fake.serve().await;
    let mut spec = template("up", None);
    spec.provider.headers = BTreeMap::from([
        ("X-Scope-OrgID".to_string(), vec!["tenant-a".to_string()]),
        (
            "X-Multi".to_string(),
            vec!["a".to_string(), "b".to_string()],
        ),
    ]);
    let reading = read(
        &prometheus(&address, 2_000, 0),
        Mesh::Istio,
        measure("errors", by_template(&[])),
        Some(&spec),
    )
    .await;
    assert_eq!(reading, MetricReading::Value { value: 1.0 });
    let mut sent = lock(&fake.headers).clone();
    sent.sort();
    let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
    assert_eq!(
        sent,
        [
            pair("x-multi", "a"),
            pair("x-multi", "b"),
            pair("x-scope-orgid", "tenant-a")
        ]
    );
}

#[tokio::test]
async fn a_template_header_that_is_not_http_is_an_error_naming_it_and_sends_nothing() {
    let fake = Fake::default();
    let address = fake.serve().await;
    for (name, value, says) in [
        ("X Tenant", "a", "`X Tenant` is not an HTTP header name"),
        ("X-Tenant", "a\nb", "provider.headers.X-Tenant: `a\\nb`"),
    ] {
        let mut spec = template("up", None);
        spec.provider.headers = BTreeMap::from([(name.to_string(), vec![value.to_string()])]);
        let reading = read(
            &prometheus(&address, 2_000, 0),
            Mesh::Istio,
            measure("errors", by_template(&[])),
            Some(&spec),
        )
        .await;
        assert_error(&reading, says);
    }
    assert!(fake.received().is_empty());
}

#[tokio::test]
async fn a_template_with_an_unknown_variable_is_an_error_naming_it_and_sends_nothing() {
    let fake = Fake::default();
    let address = fake.serve().await;
    let spec = template(r#"up{job="{{ variables.job }}"}"#, None);
    let reading = read(
        &prometheus(&address, 2_000, 0),
        Mesh::Istio,
        measure("errors", by_template(&[])),
        Some(&spec),
    )
    .await;
    assert_error(&reading, "`job`");
    assert!(fake.received().is_empty());
}

#[tokio::test]
async fn a_missing_template_is_an_error_naming_it() {
    let reading = read(
        &prometheus("http://127.0.0.1:9", 1_000, 0),
        Mesh::Istio,
        measure("errors", by_template(&[])),
        None,
    )
    .await;
    assert_eq!(
        reading,
        MetricReading::Error {
            reason: "MetricTemplate flagger-system/errors not found".into()
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
    let query = r#"avg(cpu{namespace="{{ namespace }}",pod=~"{{ target }}-.*"})"#;
    let cpu = measure(
        "cpu",
        Measure::Query(QuerySource::Inline {
            query: query.into(),
            variables: Default::default(),
            interval: None,
        }),
    );
    let reading = read(&prometheus(&address, 2_000, 0), Mesh::Linkerd, cpu, None).await;
    assert_eq!(reading, MetricReading::Value { value: 0.25 });
}

#[test]
fn an_address_that_is_not_a_url_is_refused() {
    assert!(Prometheus::new("not a url", StdDuration::from_secs(1), 0).is_err());
}

/// Garbage from Prometheus is no evidence that the canary is healthy: a NaN failure count is no
/// data, as a NaN request count is.
#[tokio::test]
async fn a_nan_failure_count_is_no_data_not_zero_failures() {
    let one_series = |v: &'static str| matrix(&[(json!({}), &[(at(1.0), v)])]);
    let (reading, _) = read_counts(vec![
        (istio_counters("podinfo", false), one_series("10")),
        (istio_counters("podinfo", true), one_series("NaN")),
        (istio_counters("podinfo-primary", false), one_series("10")),
        (istio_counters("podinfo-primary", true), matrix(&[])),
    ])
    .await;
    assert_no_data(&reading, "NaN");
}

/// A Prometheus (or the auth proxy in front of it) answering 200 with something that is not a
/// query result (a login page) is reported with its address, as every other failure is: with a
/// controller Prometheus, a Canary's `metricsServer` and templates' own `address`es, the reader
/// must tell which server answered (review r14c, finding 8).
#[tokio::test]
async fn an_answer_that_is_not_a_query_result_names_the_prometheus_that_gave_it() {
    let fake = Fake::answering(vec![(
        ISTIO_SUCCESS_RATE.to_string(),
        Answer::Text(200, "<html>Sign in</html>"),
    )]);
    let address = fake.serve().await;
    let reading = read(
        &prometheus(&address, 2_000, 0),
        Mesh::Istio,
        measure("request-success-rate", Measure::SuccessRate),
        None,
    )
    .await;
    assert_error(&reading, "<html>Sign in</html>");
    assert!(reason(&reading).contains(&address), "{reading:?}");
}
