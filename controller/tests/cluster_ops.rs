//! Operations: the operator CLI and the ops HTTP server (leader election: `cluster_lease.rs`).
#![cfg(feature = "cluster")]

mod cluster_support;

use std::sync::Arc;
use std::time::Duration;

use cluster_support::*;
use fledge_controller::cluster::cli::{self, Request};
use fledge_controller::cluster::telemetry::{self, Metrics};
use serde_json::json;

#[tokio::test]
async fn promote_and_abort_leave_a_command_for_the_controller_and_resume_clears_suspend() {
    let c = cluster_with(canary(json!({"suspend": true})), None);
    let out = cli::send(c.client(), Some(NS), "podinfo", Request::Promote)
        .await
        .unwrap();
    assert_eq!(out, "test/podinfo: promotion requested (phase -)");
    assert_eq!(
        c.get(CANARY).unwrap()["metadata"]["annotations"]["fledge.dev/command"],
        "promote"
    );
    cli::send(c.client(), Some(NS), "podinfo", Request::Abort)
        .await
        .unwrap();
    assert_eq!(
        c.get(CANARY).unwrap()["metadata"]["annotations"]["fledge.dev/command"],
        "abort"
    );
    cli::send(c.client(), Some(NS), "podinfo", Request::Resume)
        .await
        .unwrap();
    assert_eq!(c.get(CANARY).unwrap()["spec"]["suspend"], false);
}

#[tokio::test]
async fn status_shows_the_phase_weight_and_last_decision_of_a_rollout() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    run_until(&c, "Initialized", 5).await;
    let out = cli::status(c.client(), Some(NS), Some("podinfo"), false)
        .await
        .unwrap();
    assert!(out.contains("Phase:          Initialized"), "{out}");
    assert!(
        out.contains("Last decision:  Initialization done! podinfo-primary is ready"),
        "{out}"
    );
}

#[tokio::test]
async fn a_missing_canary_is_an_error_naming_it_not_a_panic() {
    let c = FakeCluster::new();
    let err = cli::send(c.client(), Some(NS), "nope", Request::Abort)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Canary nope"), "{err}");
}

#[tokio::test]
async fn the_ops_server_serves_metrics_health_and_readiness() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let metrics = Arc::new(Metrics::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(telemetry::serve(address, metrics.clone(), async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let get = async |path: &str| {
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("http://{address}{path}")).send().await {
                return (r.status().as_u16(), r.text().await.unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("ops server not listening");
    };
    assert_eq!(get("/healthz").await, (200, "ok".into()));
    assert_eq!(get("/readyz").await.0, 503);
    metrics.set_ready(true);
    assert_eq!(get("/readyz").await.0, 200);
    let _timer = metrics.reconcile_started();
    let (code, body) = get("/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("fledge_reconcile_total 1"), "{body}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[test]
fn a_log_level_that_is_not_a_filter_is_an_error_naming_it() {
    let err = telemetry::init_logs("info,[", true).unwrap_err();
    assert!(err.to_string().contains("log level `info,[`"), "{err}");
}

#[tokio::test]
async fn the_controller_watches_its_objects_reconciles_and_stops_when_asked() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    let ctx = c.context();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(async move {
        fledge_controller::cluster::run(ctx, &[], async {
            let _ = stopped.await;
        })
        .await;
    });
    let mut phase = String::new();
    for _ in 0..500 {
        phase = c.phase_opt().unwrap_or_default();
        if !phase.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(phase, "Initializing");
    assert!(c.get(PRIMARY).is_some());
    stop.send(()).unwrap();
    // A guard against a hang, not a measure of speed.
    tokio::time::timeout(Duration::from_secs(60), controller)
        .await
        .expect("the controller stops")
        .unwrap();
    let lists: Vec<String> = c
        .calls()
        .iter()
        .filter(|call| call.method == "GET" && !call.path.contains("/namespaces/"))
        .map(|call| call.path.clone())
        .collect();
    for watched in [
        "/apis/fledge.dev/v1alpha1/canaries",
        "/apis/apps/v1/deployments",
        "/api/v1/services",
        "/apis/networking.istio.io/v1beta1/virtualservices",
    ] {
        assert!(
            lists.iter().any(|p| p == watched),
            "{watched} not listed: {lists:?}"
        );
    }
}
