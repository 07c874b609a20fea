//! Webhooks against a local HTTP server on 127.0.0.1 answering 200, 500, slowly, 503 then
//! 200, and a closed port.
#![cfg(feature = "cluster")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use fledge_controller::rollout::HookOutcome;
use fledge_controller::spec::{Duration, HookGate, WebhookRef};
use fledge_controller::webhook::{HookEvent, Payload, Webhooks};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Hooks {
    received: Arc<Mutex<Vec<(String, Value)>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hooks {
    async fn serve(&self) -> String {
        let app = axum::Router::new()
            .route("/ok", post(ok))
            .route("/fail", post(fail))
            .route("/slow", post(slow))
            .route("/flaky", post(flaky))
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

    /// Records a call; returns how many calls this path has had.
    fn record(&self, path: &str, body: Value) -> usize {
        let mut received = lock(&self.received);
        received.push((path.to_string(), body));
        received.iter().filter(|(p, _)| p == path).count()
    }

    fn calls(&self, path: &str) -> usize {
        lock(&self.received)
            .iter()
            .filter(|(p, _)| p == path)
            .count()
    }
}

async fn ok(State(hooks): State<Hooks>, Json(body): Json<Value>) -> StatusCode {
    hooks.record("/ok", body);
    StatusCode::OK
}

async fn fail(State(hooks): State<Hooks>, Json(body): Json<Value>) -> (StatusCode, &'static str) {
    hooks.record("/fail", body);
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "load test failed: 12 errors",
    )
}

async fn slow(State(hooks): State<Hooks>, Json(body): Json<Value>) -> StatusCode {
    hooks.record("/slow", body);
    tokio::time::sleep(StdDuration::from_secs(5)).await;
    StatusCode::OK
}

async fn flaky(State(hooks): State<Hooks>, Json(body): Json<Value>) -> StatusCode {
    if hooks.record("/flaky", body) == 1 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

fn hook(url: String, gate: HookGate, timeout_ms: u64, retries: u32) -> WebhookRef {
    WebhookRef {
        name: "acceptance-test".into(),
        gate,
        url,
        timeout: Duration(timeout_ms),
        retries,
        metadata: BTreeMap::from([(
            "cmd".to_string(),
            "curl -s http://podinfo-canary/".to_string(),
        )]),
        mute_alert: false,
    }
}

fn payload(gate: HookGate) -> Payload {
    Payload {
        name: "podinfo".into(),
        namespace: "test".into(),
        phase: "Progressing".into(),
        checksum: "7d4f9c".into(),
        gate,
        metadata: BTreeMap::new(),
        event: None,
    }
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(StdDuration::from_secs(10), f).await {
        Ok(v) => v,
        Err(_) => panic!("the webhook call did not finish within 10s"),
    }
}

fn failure(outcome: &HookOutcome) -> &str {
    match outcome {
        HookOutcome::Failed(why) => why,
        HookOutcome::Passed => "",
    }
}

#[tokio::test]
async fn a_200_passes_and_the_hook_receives_flaggers_payload() {
    let hooks = Hooks::default();
    let base = hooks.serve().await;
    let outcome = bounded(Webhooks::new().call(
        &hook(format!("{base}/ok"), HookGate::PreRollout, 2_000, 0),
        &payload(HookGate::PreRollout),
    ))
    .await;
    assert_eq!(outcome, HookOutcome::Passed);
    assert_eq!(
        lock(&hooks.received).clone(),
        vec![(
            "/ok".to_string(),
            json!({
                "name": "podinfo",
                "namespace": "test",
                "phase": "Progressing",
                "checksum": "7d4f9c",
                "type": "pre-rollout",
                "metadata": { "cmd": "curl -s http://podinfo-canary/" },
            })
        )]
    );
}

#[tokio::test]
async fn a_500_fails_with_the_hook_name_status_and_body() {
    let hooks = Hooks::default();
    let base = hooks.serve().await;
    let outcome = bounded(Webhooks::new().call(
        &hook(format!("{base}/fail"), HookGate::Rollout, 2_000, 3),
        &payload(HookGate::Rollout),
    ))
    .await;
    let why = failure(&outcome);
    assert!(why.starts_with("rollout hook acceptance-test at "), "{why}");
    assert!(
        why.ends_with("answered HTTP 500 Internal Server Error: load test failed: 12 errors"),
        "{why}"
    );
    // A rollout hook may have run its test: a server error is not retried.
    assert_eq!(hooks.calls("/fail"), 1);
}

#[tokio::test]
async fn a_slow_hook_times_out_at_its_own_timeout() {
    let hooks = Hooks::default();
    let base = hooks.serve().await;
    let outcome = bounded(Webhooks::new().call(
        &hook(format!("{base}/slow"), HookGate::ConfirmPromotion, 300, 0),
        &payload(HookGate::ConfirmPromotion),
    ))
    .await;
    assert!(
        failure(&outcome).ends_with("timed out after 300ms"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_closed_port_fails_as_a_connection_error_and_is_retried() {
    let address = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        Err(e) => panic!("{e}"),
    };
    let outcome = bounded(Webhooks::new().call(
        &hook(format!("http://{address}/"), HookGate::Rollout, 1_000, 1),
        &payload(HookGate::Rollout),
    ))
    .await;
    let why = failure(&outcome);
    assert!(why.contains("cannot connect"), "{why}");
    // Nothing reached the hook, so even a rollout hook is tried again.
    assert!(why.ends_with("(after 2 attempts)"), "{why}");
}

#[tokio::test]
async fn a_gate_that_answers_503_then_200_passes_after_a_retry() {
    let hooks = Hooks::default();
    let base = hooks.serve().await;
    let outcome = bounded(Webhooks::new().call(
        &hook(
            format!("{base}/flaky"),
            HookGate::ConfirmTrafficIncrease,
            2_000,
            2,
        ),
        &payload(HookGate::ConfirmTrafficIncrease),
    ))
    .await;
    assert_eq!(outcome, HookOutcome::Passed);
    assert_eq!(hooks.calls("/flaky"), 2);
}

#[tokio::test]
async fn an_event_hook_gets_the_event_message() {
    let hooks = Hooks::default();
    let base = hooks.serve().await;
    let mut event = payload(HookGate::Event);
    event.event = Some(HookEvent {
        message: "Advance podinfo.test canary weight 20".into(),
        warning: false,
    });
    let outcome = bounded(Webhooks::new().call(
        &hook(format!("{base}/ok"), HookGate::Event, 2_000, 0),
        &event,
    ))
    .await;
    assert_eq!(outcome, HookOutcome::Passed);
    let received = lock(&hooks.received).clone();
    assert_eq!(
        received
            .first()
            .map(|(_, body)| body["metadata"]["eventMessage"].clone()),
        Some(json!("Advance podinfo.test canary weight 20"))
    );
    assert_eq!(
        received
            .first()
            .map(|(_, body)| body["metadata"]["eventType"].clone()),
        Some(json!("Normal"))
    );
    // Flagger's event payload has no `type`.
    assert_eq!(
        received.first().map(|(_, body)| body.get("type").cloned()),
        Some(None)
    );
}

#[tokio::test]
async fn an_https_hook_on_a_plain_http_port_fails_without_a_panic() {
    let hooks = Hooks::default();
    let base = hooks.serve().await.replace("http://", "https://");
    let outcome = bounded(Webhooks::new().call(
        &hook(format!("{base}/ok"), HookGate::ConfirmRollout, 2_000, 0),
        &payload(HookGate::ConfirmRollout),
    ))
    .await;
    assert!(
        failure(&outcome).starts_with("confirm-rollout hook acceptance-test at https://"),
        "{outcome:?}"
    );
}
