//! The controller's metrics as Flagger exports them, scraped from the ops server's `/metrics`
//! after reconciles against the fake API server.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use fledge_controller::cluster::telemetry;
use serde_json::json;

/// `/metrics` of an ops server serving `ctx`'s metrics.
async fn scrape(ctx: &std::sync::Arc<fledge_controller::cluster::Context>) -> String {
    let listener = telemetry::bind(([127, 0, 0, 1], 0).into())
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(telemetry::serve_on(listener, ctx.metrics.clone(), async {
        let _ = stopped.await;
    }));
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        reqwest::get(format!("http://{address}/metrics")),
    )
    .await
    .expect("answered")
    .expect("scraped");
    let body = response.text().await.unwrap_or_default();
    let _ = stop.send(());
    let _ = server.await;
    body
}

#[tokio::test]
async fn a_progressing_rollout_is_scraped_with_flaggers_series_and_labels() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    progressing_at(&c, 10).await;
    let ctx = c.context();
    c.advance_clock(Duration::from_secs(60));
    c.reconcile(&ctx).await.expect("reconcile");
    assert_eq!(c.phase(), "Progressing");
    let body = scrape(&ctx).await;
    for line in [
        r#"fledge_canary_status{name="podinfo",namespace="test"} 0"#,
        r#"fledge_canary_weight{workload="podinfo-primary",namespace="test"} 80"#,
        r#"fledge_canary_weight{workload="podinfo",namespace="test"} 20"#,
        r#"fledge_canary_total{namespace="test"} 1"#,
        r#"fledge_canary_duration_seconds_count{name="podinfo",namespace="test"} 1"#,
        r#"fledge_canary_metric_analysis{name="podinfo",namespace="test",metric="request-success-rate"}"#,
    ] {
        assert!(body.contains(line), "{line} in\n{body}");
    }
}

#[tokio::test]
async fn a_rollback_is_counted_by_strategy_and_analysis_status() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    progressing_at(&c, 10).await;
    let mut canary = c.get(CANARY).unwrap();
    canary["metadata"]["annotations"] = json!({"fledge.dev/command": "abort"});
    c.put(CANARY, canary);
    let ctx = c.context();
    c.reconcile(&ctx).await.expect("reconcile");
    assert_eq!(c.phase(), "Failed");
    let body = scrape(&ctx).await;
    for line in [
        r#"fledge_canary_status{name="podinfo",namespace="test"} 2"#,
        r#"fledge_canary_failures_total{name="podinfo",namespace="test",deployment_strategy="canary",analysis_status="completed"} 1"#,
        r#"fledge_canary_weight{workload="podinfo",namespace="test"} 0"#,
    ] {
        assert!(body.contains(line), "{line} in\n{body}");
    }
}
