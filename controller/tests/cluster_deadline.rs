//! Every API call of a reconcile has a deadline: kube's client sets no read timeout (for the
//! sake of watches), and a call the API server never answers would otherwise hold its Canary
//! forever while the Lease keeps being renewed. Time is tokio's paused clock: no real waiting.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::sync::Arc;
use std::time::Duration;

use cluster_support::*;
use fledge_controller::cluster::error_policy;
use kube::runtime::controller::Action;
use serde_json::json;

/// A read the API server takes and never answers ends the reconcile with an error naming the
/// call, counted and retried after the backoff like any failed read; the next reconcile
/// proceeds.
#[tokio::test(start_paused = true)]
async fn a_call_never_answered_ends_the_reconcile_with_an_error_naming_it_and_the_next_proceeds() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    run_until(&c, "Initialized", 5).await;
    set_image(&c, "podinfo:2");
    c.advance_clock(Duration::from_secs(60));
    c.hang("GET", TARGET, 1);
    let ctx = c.context();
    // An hour of the paused clock: a reconcile that never ends fails the test, not hangs it.
    let err = tokio::time::timeout(Duration::from_secs(3600), c.reconcile(&ctx))
        .await
        .expect("the reconcile ended")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("no answer to GET {TARGET} within 30s")),
        "{err}"
    );
    assert_eq!(err.metric_label(), "read");
    let action = error_policy(Arc::new(c.canary()), &err, ctx.clone());
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    assert!(
        ctx.metrics
            .encode()
            .contains(r#"fledge_reconcile_errors_total{error="read"} 1"#),
        "{}",
        ctx.metrics.encode()
    );
    c.reconcile(&ctx).await.unwrap();
    assert_eq!(c.phase(), "Progressing");
}
