//! The reconciler against a fake API server: every request it makes, in order, for each stage
//! of a rollout, and what it does when the API server says no.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use fledge_controller::analysis::MetricReading;
use fledge_controller::cluster::{Error, error_policy};
use kube::runtime::controller::Action;
use serde_json::json;

/// Every reconcile of an initialised Canary first brings the routing objects up to date.
const ROUTER_RECONCILE: &str = "ROUTER reconcile istio";

/// The writes since the last `clear_calls`, as `METHOD path` (routers and hooks by their call).
fn write_paths(c: &FakeCluster) -> Vec<String> {
    c.calls()
        .iter()
        .filter(|call| call.is_write())
        .map(|call| format!("{} {}", call.method, call.path))
        .collect()
}

fn last_write_to(c: &FakeCluster, path: &str) -> serde_json::Value {
    c.calls()
        .into_iter()
        .rev()
        .find(|call| call.is_write() && call.path == path)
        .map(|call| call.body)
        .unwrap_or_else(|| panic!("no write to {path}"))
}

/// A cluster whose rollout of `podinfo:2` has reached `weight` percent on the canary.
async fn progressing_at(weight: i64) -> FakeCluster {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    run_until(&c, "Initialized", 5).await;
    set_image(&c, "podinfo:2");
    c.advance_clock(Duration::from_secs(60));
    for _ in 0..10 {
        let ctx = c.context();
        c.reconcile(&ctx).await.unwrap();
        c.settle();
        c.advance_clock(Duration::from_secs(60));
        let status = c.get(CANARY).unwrap()["status"].clone();
        if status["phase"] == "Progressing" && status["canaryWeight"] == weight {
            c.clear_calls();
            return c;
        }
    }
    panic!("weight {weight} not reached");
}

#[tokio::test]
async fn a_new_canary_gets_the_finalizer_before_anything_else() {
    let mut obj = canary(json!({}));
    obj["metadata"]["finalizers"] = json!(null);
    let c = cluster_with(obj, Some(deployment("podinfo:1")));
    let action = c.reconcile(&c.context()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(write_paths(&c), [format!("PATCH {CANARY}")]);
    assert_eq!(
        c.get(CANARY).unwrap()["metadata"]["finalizers"],
        json!(["fledge.dev/finalizer"])
    );
}

#[tokio::test]
async fn initialisation_clones_the_primary_then_moves_the_apex_service_and_routes_to_it() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    c.reconcile(&c.context()).await.unwrap();
    let reads: Vec<String> = c
        .calls()
        .iter()
        .filter(|call| !call.is_write())
        .map(|call| format!("{} {}", call.method, call.path))
        .collect();
    assert_eq!(reads, [format!("GET {TARGET}"), format!("GET {PRIMARY}")]);
    assert_eq!(
        write_paths(&c),
        [
            format!("PATCH {PRIMARY}"),
            format!("PATCH {SERVICES}/podinfo-primary"),
            format!("PATCH {SERVICES}/podinfo-canary"),
            format!("PATCH {CANARY}/status"),
        ]
    );
    let primary = last_write_to(&c, PRIMARY);
    // Server-side apply needs the type in the body.
    assert_eq!(
        (&primary["apiVersion"], &primary["kind"]),
        (&json!("apps/v1"), &json!("Deployment"))
    );
    assert!(primary.get("status").is_none());
    assert_eq!(
        primary["spec"]["selector"]["matchLabels"]["app"],
        "podinfo-primary"
    );
    assert_eq!(primary["spec"]["replicas"], 2);
    assert_eq!(primary["metadata"]["ownerReferences"][0]["kind"], "Canary");
    assert_eq!(
        primary["spec"]["template"]["spec"]["containers"][0]["image"],
        "podinfo:1"
    );
    let canary_svc = last_write_to(&c, &format!("{SERVICES}/podinfo-canary"));
    assert_eq!(canary_svc["spec"]["selector"]["app"], "podinfo");
    assert_eq!(c.phase(), "Initializing");

    // The primary becomes ready: the apex Service and the routes move to it; the target (now
    // the canary) is scaled to zero on the next tick.
    c.settle();
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        write_paths(&c),
        [
            format!("PATCH {SERVICES}/podinfo"),
            ROUTER_RECONCILE.into(),
            "ROUTER set_routes istio primary 100%, canary 0%".into(),
            format!("POST {EVENTS}"),
            format!("PATCH {CANARY}/status"),
        ]
    );
    let apex = last_write_to(&c, &format!("{SERVICES}/podinfo"));
    assert_eq!(apex["kind"], "Service");
    assert_eq!(apex["spec"]["selector"]["app"], "podinfo-primary");
    assert_eq!(
        apex["spec"]["ports"],
        json!([{"name": "http", "port": 9898, "protocol": "TCP", "targetPort": 9898}])
    );
    assert_eq!(
        events(&c),
        [
            "EVENT Normal Initialized: Initialization done! podinfo-primary is ready and serves all traffic"
        ]
    );
    let status = c.get(CANARY).unwrap()["status"].clone();
    assert_eq!(status["phase"], "Initialized");
    assert_eq!(status["conditions"][0]["type"], "Promoted");
    assert_eq!(status["conditions"][0]["status"], "True");

    // The next tick, traffic on the primary and the primary still ready: the target scales to 0.
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        write_paths(&c),
        [
            ROUTER_RECONCILE.into(),
            format!("PATCH {TARGET}"),
            format!("PATCH {CANARY}/status"),
        ]
    );
    assert_eq!(last_write_to(&c, TARGET), json!({"spec": {"replicas": 0}}));
    assert_eq!(c.get(CANARY).unwrap()["status"]["phase"], "Initialized");
}

#[tokio::test]
async fn a_passing_step_raises_the_weight_and_records_it() {
    let c = progressing_at(10).await;
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        write_paths(&c),
        [
            ROUTER_RECONCILE.to_string(),
            "ROUTER set_routes istio primary 80%, canary 20%".to_string(),
            format!("POST {EVENTS}"),
            format!("PATCH {CANARY}/status"),
        ]
    );
    assert_eq!(
        events(&c),
        ["EVENT Normal Progressing: Advance podinfo canary weight 20%"]
    );
    let patch = last_write_to(&c, &format!("{CANARY}/status"));
    assert_eq!(patch["status"]["canaryWeight"], 20);
    assert_eq!(patch["status"]["state"]["canaryWeight"], 20);
    assert!(patch["metadata"]["resourceVersion"].is_string());
}

#[tokio::test]
async fn promotion_copies_the_template_then_returns_traffic_then_scales_the_canary_down() {
    let c = progressing_at(30).await;
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        write_paths(&c),
        [
            ROUTER_RECONCILE.to_string(),
            format!("PATCH {PRIMARY}"),
            format!("POST {EVENTS}"),
            format!("PATCH {CANARY}/status"),
        ]
    );
    let primary = last_write_to(&c, PRIMARY);
    assert_eq!(
        primary["spec"]["template"]["spec"]["containers"][0]["image"],
        "podinfo:2"
    );
    assert_eq!(
        primary["spec"]["template"]["metadata"]["labels"]["app"],
        "podinfo-primary"
    );
    assert_eq!(c.phase(), "Promoting");

    // The primary's rollout of the new template completes: traffic goes back to it.
    c.settle();
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        write_paths(&c),
        [
            ROUTER_RECONCILE.to_string(),
            "ROUTER set_routes istio primary 100%, canary 0%".to_string(),
            format!("POST {EVENTS}"),
            format!("PATCH {CANARY}/status"),
        ]
    );
    assert_eq!(c.phase(), "Finalising");

    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        write_paths(&c),
        [
            ROUTER_RECONCILE.to_string(),
            format!("PATCH {TARGET}"),
            format!("POST {EVENTS}"),
            format!("PATCH {CANARY}/status"),
        ]
    );
    assert_eq!(last_write_to(&c, TARGET), json!({"spec": {"replicas": 0}}));
    let status = c.get(CANARY).unwrap()["status"].clone();
    assert_eq!(status["phase"], "Succeeded");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(status["lastPromotedSpec"], status["lastAppliedSpec"]);
}

#[tokio::test]
async fn a_failing_metric_halts_then_rolls_back_at_the_threshold() {
    let c = progressing_at(10).await;
    c.set_metric("request-success-rate", MetricReading::Value { value: 90.0 });
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        events(&c),
        [
            "EVENT Warning Halted: Halt podinfo advancement: request-success-rate 90.00% < 99% (min) (failed checks 1/2)"
        ]
    );
    assert_eq!(c.routes().unwrap().canary, 10);

    c.clear_calls();
    c.advance_clock(Duration::from_secs(60));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        write_paths(&c),
        [
            ROUTER_RECONCILE.to_string(),
            "ROUTER set_routes istio primary 100%, canary 0%".to_string(),
            format!("PATCH {TARGET}"),
            format!("POST {EVENTS}"),
            format!("PATCH {CANARY}/status"),
        ]
    );
    assert_eq!(
        events(&c),
        [
            "EVENT Warning RolledBack: Rolling back podinfo: failed checks threshold reached (2/2): request-success-rate 90.00% < 99% (min)"
        ]
    );
    let status = c.get(CANARY).unwrap()["status"].clone();
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["reason"], "Failed");
}

#[tokio::test]
async fn deleting_a_canary_restores_routing_then_removes_the_finalizer() {
    let c = progressing_at(10).await;
    let mut obj = c.get(CANARY).unwrap();
    obj["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:20:00Z");
    c.put(CANARY, obj);
    let action = c.reconcile(&c.context()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(
        write_paths(&c),
        [
            "ROUTER finalize istio".to_string(),
            format!("POST {EVENTS}"),
            format!("PATCH {CANARY}/status"),
            format!("PATCH {CANARY}"),
        ]
    );
    assert_eq!(c.routes().unwrap().primary, 100);
    let obj = c.get(CANARY).unwrap();
    assert_eq!(obj["status"]["phase"], "Terminated");
    assert_eq!(obj["metadata"]["finalizers"], json!([]));
}

#[tokio::test]
async fn deleting_with_revert_on_deletion_restores_the_original_workload() {
    let c = cluster_with(
        canary(json!({"revertOnDeletion": true})),
        Some(deployment("podinfo:1")),
    );
    run_until(&c, "Initialized", 5).await;
    let mut obj = c.get(CANARY).unwrap();
    obj["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:20:00Z");
    c.put(CANARY, obj);
    c.clear_calls();
    // The target is scaled back up first; traffic moves once it is ready.
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        write_paths(&c),
        [format!("PATCH {TARGET}"), format!("PATCH {CANARY}/status")]
    );
    assert_eq!(last_write_to(&c, TARGET), json!({"spec": {"replicas": 2}}));
    c.settle();
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        write_paths(&c),
        [
            // The apex first: routing moves only once it selects what serves.
            format!("PATCH {SERVICES}/podinfo"),
            "ROUTER finalize istio".to_string(),
            format!("DELETE {PRIMARY}"),
            format!("POST {EVENTS}"),
            format!("PATCH {CANARY}/status"),
            format!("PATCH {CANARY}"),
        ]
    );
    let apex = last_write_to(&c, &format!("{SERVICES}/podinfo"));
    assert_eq!(apex["spec"]["selector"]["app"], "podinfo");
    assert!(c.get(PRIMARY).is_none());
}

/// Review of issue 15 (fails today): the apex Service that revertOnDeletion points back at
/// the target still carries the Canary as its controller owner, so the garbage collector
/// deletes it as soon as the finalizer lets the Canary go, and the restored app loses its
/// Service name. The chart README's "Uninstalling safely" relies on this path.
#[tokio::test]
async fn after_revert_on_deletion_the_apex_service_is_no_longer_owned_by_the_canary() {
    let c = cluster_with(
        canary(json!({"revertOnDeletion": true})),
        Some(deployment("podinfo:1")),
    );
    run_until(&c, "Initialized", 5).await;
    let mut obj = c.get(CANARY).unwrap();
    obj["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:20:00Z");
    c.put(CANARY, obj);
    c.reconcile(&c.context()).await.unwrap();
    // Since issue 13, revertOnDeletion waits for the target to be ready first.
    c.settle();
    c.reconcile(&c.context()).await.unwrap();
    let apex = c.get(&format!("{SERVICES}/podinfo")).unwrap();
    let owners = apex["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        owners.iter().all(|o| o["kind"] != "Canary"),
        "the reverted apex Service is still owned by the deleted Canary (garbage-collected): {owners:?}"
    );
}

#[tokio::test]
async fn a_status_write_that_conflicts_is_retried_on_a_fresh_read() {
    let c = progressing_at(10).await;
    c.fail("PATCH", &format!("{CANARY}/status"), 409, 1);
    c.reconcile(&c.context()).await.unwrap();
    let tail: Vec<String> = c
        .calls()
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(|call| format!("{} {}", call.method, call.path))
        .collect();
    assert_eq!(
        tail,
        [
            format!("PATCH {CANARY}/status"),
            format!("GET {CANARY}"),
            format!("PATCH {CANARY}/status"),
        ]
    );
    assert_eq!(c.get(CANARY).unwrap()["status"]["canaryWeight"], 20);
}

#[tokio::test]
async fn a_conflict_with_another_writer_of_the_status_is_left_to_the_next_reconcile() {
    let c = progressing_at(10).await;
    c.fail("PATCH", &format!("{CANARY}/status"), 409, 1);
    // Another writer records a different status before the retry reads it.
    let ctx = c.context();
    let stale = c.canary();
    let mut obj = c.get(CANARY).unwrap();
    obj["status"]["message"] = json!("written by someone else");
    c.put(CANARY, obj);
    let err = fledge_controller::cluster::reconcile(std::sync::Arc::new(stale), ctx)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StatusConflict { .. }), "{err}");
}

#[tokio::test]
async fn a_server_error_fails_the_reconcile_which_backs_off_and_then_succeeds() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    c.fail("PATCH", PRIMARY, 500, 1);
    let ctx = c.context();
    let err = c.reconcile(&ctx).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Write {
                kind: "Deployment",
                ..
            }
        ),
        "{err}"
    );
    // Nothing after the failed write was attempted, and no state was recorded.
    assert_eq!(write_paths(&c), [format!("PATCH {PRIMARY}")]);
    assert!(c.get(CANARY).unwrap()["status"].is_null());
    let action = error_policy(std::sync::Arc::new(c.canary()), &err, ctx.clone());
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    // A second failure in a row waits twice as long.
    c.fail("PATCH", PRIMARY, 500, 1);
    let err = c.reconcile(&ctx).await.unwrap_err();
    let action = error_policy(std::sync::Arc::new(c.canary()), &err, ctx.clone());
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    assert!(
        ctx.metrics
            .encode()
            .contains(r#"fledge_reconcile_errors_total{error="write"} 2"#)
    );
    c.reconcile(&ctx).await.unwrap();
    assert_eq!(c.phase(), "Initializing");
    assert!(c.get(PRIMARY).is_some());
    // Success resets the backoff.
    c.fail("PATCH", &format!("{CANARY}/status"), 500, 1);
    c.settle();
    let err = c.reconcile(&ctx).await.unwrap_err();
    let action = error_policy(std::sync::Arc::new(c.canary()), &err, ctx.clone());
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn an_operator_abort_rolls_back_at_once_and_clears_the_command() {
    let c = progressing_at(20).await;
    let mut obj = c.get(CANARY).unwrap();
    obj["metadata"]["annotations"] = json!({"fledge.dev/command": "abort"});
    c.put(CANARY, obj);
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.phase(), "Failed");
    assert_eq!(c.routes().unwrap().canary, 0);
    assert_eq!(
        last_write_to(&c, CANARY),
        json!({"metadata": {"annotations": {"fledge.dev/command": null}}})
    );
    assert!(
        c.get(CANARY).unwrap()["metadata"]["annotations"]
            .get("fledge.dev/command")
            .is_none()
    );
}

#[tokio::test]
async fn an_operator_promote_opens_a_confirm_promotion_gate() {
    let spec = json!({"analysis": {"webhooks": [
        {"name": "gate", "type": "confirm-promotion", "url": "http://gate/approve"}
    ]}});
    let c = cluster_with(canary(spec), Some(deployment("podinfo:1")));
    c.set_hook(
        "gate",
        fledge_controller::rollout::HookOutcome::Failed("closed".into()),
    );
    run_until(&c, "Initialized", 5).await;
    set_image(&c, "podinfo:2");
    run_until(&c, "WaitingPromotion", 10).await;
    let mut obj = c.get(CANARY).unwrap();
    obj["metadata"]["annotations"] = json!({"fledge.dev/command": "promote"});
    c.put(CANARY, obj);
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.phase(), "Promoting");
}

#[tokio::test]
async fn the_requeue_is_shorter_while_waiting_on_workloads_than_between_steps() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    let ctx = c.context();
    let waiting = c.reconcile(&ctx).await.unwrap();
    assert_eq!(waiting, Action::requeue(Duration::from_secs(10)));
    c.settle();
    let scale_down_next = c.reconcile(&ctx).await.unwrap();
    assert_eq!(scale_down_next, Action::requeue(Duration::from_secs(10)));
    let idle = c.reconcile(&ctx).await.unwrap();
    assert_eq!(idle, Action::requeue(Duration::from_secs(60)));
}

#[tokio::test]
async fn an_hpa_on_the_target_is_mirrored_for_the_primary_and_sizes_the_canary() {
    const HPA: &str = "/apis/autoscaling/v2/namespaces/test/horizontalpodautoscalers/podinfo";
    let spec = json!({"autoscalerRef": {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"
    }});
    let c = cluster_with(canary(spec), Some(deployment("podinfo:1")));
    c.put(
        HPA,
        json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "podinfo", "namespace": NS},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "minReplicas": 3,
                "maxReplicas": 6
            }
        }),
    );
    run_until(&c, "Initialized", 5).await;
    let primary_hpa = c.get(&format!("{HPA}-primary")).expect("primary HPA");
    assert_eq!(
        primary_hpa["spec"]["scaleTargetRef"]["name"],
        "podinfo-primary"
    );
    assert_eq!(primary_hpa["spec"]["minReplicas"], 3);
    assert_eq!(
        primary_hpa["metadata"]["ownerReferences"][0]["kind"],
        "Canary"
    );

    set_image(&c, "podinfo:2");
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(last_write_to(&c, TARGET), json!({"spec": {"replicas": 3}}));
    // An unchanged HPA is not written again; a change to the target's is carried over.
    assert!(
        c.calls()
            .iter()
            .all(|call| !(call.is_write() && call.path.contains("horizontal")))
    );
    let mut hpa = c.get(HPA).unwrap();
    hpa["spec"]["maxReplicas"] = json!(10);
    c.put(HPA, hpa);
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        c.get(&format!("{HPA}-primary")).unwrap()["spec"]["maxReplicas"],
        10
    );
}

#[tokio::test]
async fn an_approval_sent_between_steps_waits_for_the_gate_it_opens() {
    let spec = json!({"analysis": {"webhooks": [
        {"name": "more", "type": "confirm-traffic-increase", "url": "http://gate/more"}
    ]}});
    let c = cluster_with(canary(spec), Some(deployment("podinfo:1")));
    c.set_hook(
        "more",
        fledge_controller::rollout::HookOutcome::Failed("closed".into()),
    );
    run_until(&c, "Initialized", 5).await;
    set_image(&c, "podinfo:2");
    for _ in 0..3 {
        c.reconcile(&c.context()).await.unwrap();
        c.settle();
        c.advance_clock(Duration::from_secs(60));
    }
    assert_eq!(
        c.routes().unwrap().canary,
        0,
        "the gate holds the first step"
    );
    // The approval arrives while no step is due: it is kept.
    c.reconcile(&c.context()).await.unwrap();
    let mut obj = c.get(CANARY).unwrap();
    obj["metadata"]["annotations"] = json!({"fledge.dev/command": "promote"});
    c.put(CANARY, obj);
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        c.get(CANARY).unwrap()["metadata"]["annotations"]["fledge.dev/command"],
        "promote"
    );
    // At the next step it opens the gate once, and is cleared.
    c.advance_clock(Duration::from_secs(60));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.routes().unwrap().canary, 10);
    assert!(
        c.get(CANARY).unwrap()["metadata"]["annotations"]
            .get("fledge.dev/command")
            .is_none()
    );
}

#[tokio::test]
async fn event_hooks_hear_every_decision_and_post_rollout_hooks_run_after_promotion() {
    let spec = json!({"analysis": {"webhooks": [
        {"name": "notify", "type": "event", "url": "http://hooks/event"},
        {"name": "after", "type": "post-rollout", "url": "http://hooks/after"}
    ]}});
    let c = cluster_with(canary(spec), Some(deployment("podinfo:1")));
    run_until(&c, "Initialized", 5).await;
    set_image(&c, "podinfo:2");
    run_until(&c, "Succeeded", 20).await;
    let hooks: Vec<(String, serde_json::Value)> = c
        .calls()
        .into_iter()
        .filter(|call| call.method == "HOOK")
        .map(|call| (call.path, call.body))
        .collect();
    let calls = c.calls();
    let events: Vec<&str> = calls
        .iter()
        .filter(|call| call.path == EVENTS)
        .map(|call| call.body["note"].as_str().unwrap_or(""))
        .collect();
    let notified: Vec<&str> = hooks
        .iter()
        .filter(|(path, _)| path.starts_with("event notify"))
        .map(|(_, body)| body.as_str().unwrap_or(""))
        .collect();
    assert_eq!(notified, events);
    assert_eq!(
        hooks
            .iter()
            .filter(|(path, _)| path == "post-rollout after Succeeded")
            .count(),
        1
    );
}
