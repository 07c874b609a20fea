//! Onboarding and offboarding never hurt the app: traffic moves to the primary only once it is
//! ready, what the user owned before the Canary is never given an owner nor deleted and is given
//! back as it was, and `revertOnDeletion` moves traffic back only to a ready target.
#![cfg(feature = "cluster")]

mod cluster_support;

use cluster_support::*;
use serde_json::json;

const APEX: &str = "/api/v1/namespaces/test/services/podinfo";

/// The Service the user had before the Canary: the original pods, on a port named `web`.
fn user_service() -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "podinfo", "namespace": NS, "labels": {"team": "a"}},
        "spec": {"type": "LoadBalancer", "selector": {"app": "podinfo", "tier": "web"},
                 "ports": [{"name": "web", "port": 9898, "targetPort": 9898,
                            "protocol": "TCP", "nodePort": 31000}]}
    })
}

fn write_paths(c: &FakeCluster) -> Vec<String> {
    c.calls()
        .iter()
        .filter(|call| call.is_write())
        .map(|call| format!("{} {}", call.method, call.path))
        .collect()
}

fn delete_canary(c: &FakeCluster) {
    let mut obj = c.get(CANARY).unwrap();
    obj["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:20:00Z");
    c.put(CANARY, obj);
    c.clear_calls();
}

#[tokio::test]
async fn the_apex_service_and_the_routes_move_to_the_primary_only_once_it_is_ready() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    c.put(APEX, user_service());
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        write_paths(&c),
        [
            format!("PATCH {PRIMARY}"),
            format!("PATCH {SERVICES}/podinfo-primary"),
            format!("PATCH {SERVICES}/podinfo-canary"),
            format!("PATCH {CANARY}/status"),
        ]
    );
    assert_eq!(c.get(APEX).unwrap()["spec"]["selector"]["app"], "podinfo");
    // Not ready yet: still nothing moves.
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    assert!(
        write_paths(&c)
            .iter()
            .all(|w| !w.contains("ROUTER") && !w.ends_with(APEX))
    );
    c.settle();
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        write_paths(&c)[..4],
        [
            format!("PATCH {APEX}"),
            "ROUTER reconcile istio".into(),
            "ROUTER set_routes istio primary 100%, canary 0%".into(),
            format!("POST {EVENTS}"),
        ]
    );
    assert_eq!(
        c.get(APEX).unwrap()["spec"]["selector"]["app"],
        "podinfo-primary"
    );
}

/// The target stops serving only on a later tick than the one that moved the apex Service and
/// the routes to the primary: a reconcile that fails between the two writes leaves the target
/// serving, and the primary must still be ready when it is scaled down.
#[tokio::test]
async fn the_target_is_scaled_to_zero_only_on_a_later_tick_once_the_primary_serves() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    c.reconcile(&c.context()).await.unwrap();
    c.settle();
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.phase(), "Initialized");
    let onboarding = write_paths(&c);
    assert!(
        onboarding.contains(&"ROUTER set_routes istio primary 100%, canary 0%".to_string()),
        "{onboarding:#?}"
    );
    assert!(
        !onboarding.contains(&format!("PATCH {TARGET}")),
        "scaled in the tick that moved traffic: {onboarding:#?}"
    );
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], 2);
    // The primary stops being ready: the target keeps serving.
    let mut primary = c.get(PRIMARY).unwrap();
    primary["status"]["readyReplicas"] = json!(0);
    c.put(PRIMARY, primary);
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    assert!(!write_paths(&c).contains(&format!("PATCH {TARGET}")));
    c.settle();
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        write_paths(&c),
        [
            "ROUTER reconcile istio".to_string(),
            format!("PATCH {TARGET}"),
            format!("PATCH {CANARY}/status"),
        ]
    );
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], 0);
}

#[tokio::test]
async fn a_service_that_existed_before_the_canary_gets_no_owner_and_is_given_back_when_it_goes() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    c.put(APEX, user_service());
    run_until(&c, "Initialized", 5).await;
    let apex = c.get(APEX).unwrap();
    assert_eq!(apex["metadata"].get("ownerReferences"), None);
    assert_eq!(apex["spec"]["type"], "LoadBalancer");
    assert_eq!(apex["metadata"]["labels"], json!({"team": "a"}));
    delete_canary(&c);
    // The target is scaled up first and the Service given back once it is ready.
    c.reconcile(&c.context()).await.unwrap();
    c.settle();
    c.reconcile(&c.context()).await.unwrap();
    let apex = c.get(APEX).expect("the user's Service stays");
    let original = user_service();
    assert_eq!(apex["spec"]["selector"], original["spec"]["selector"]);
    assert_eq!(apex["spec"]["ports"], original["spec"]["ports"]);
    assert_eq!(apex["metadata"].get("annotations"), Some(&json!({})));
    assert_eq!(c.get(CANARY).unwrap()["metadata"]["finalizers"], json!([]));
}

#[tokio::test]
async fn revert_on_deletion_moves_traffic_back_only_once_the_target_is_ready() {
    let c = cluster_with(
        canary(json!({"revertOnDeletion": true})),
        Some(deployment("podinfo:1")),
    );
    run_until(&c, "Initialized", 5).await;
    delete_canary(&c);
    c.reconcile(&c.context()).await.unwrap();
    // The target is scaled up; nothing else moves while its pods start.
    assert_eq!(write_paths(&c)[0], format!("PATCH {TARGET}"));
    assert!(
        write_paths(&c)
            .iter()
            .all(|w| !w.contains("ROUTER") && !w.ends_with(APEX) && !w.starts_with("DELETE")),
        "{:?}",
        write_paths(&c)
    );
    // Looked at again while its pods start: still waiting.
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(write_paths(&c), [format!("PATCH {CANARY}/status")]);
    assert!(c.get(PRIMARY).is_some());
    assert_eq!(
        c.get(CANARY).unwrap()["metadata"]["finalizers"],
        json!(["fledge.dev/finalizer"])
    );
    assert!(
        c.get(CANARY).unwrap()["status"]["message"]
            .as_str()
            .unwrap()
            .contains("waiting for podinfo to be ready (0/2 ready)")
    );
    c.settle();
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    let writes = write_paths(&c);
    let at = |w: &str| writes.iter().position(|x| x == w).unwrap_or(usize::MAX);
    assert!(
        at("ROUTER finalize istio") < at(&format!("DELETE {PRIMARY}")),
        "{writes:?}"
    );
    assert!(
        at(&format!("PATCH {APEX}")) < at(&format!("DELETE {PRIMARY}")),
        "{writes:?}"
    );
    assert_eq!(c.get(APEX).unwrap()["spec"]["selector"]["app"], "podinfo");
    // Left to the user, so that the app keeps its Service when the Canary goes.
    assert_eq!(
        c.get(APEX).unwrap()["metadata"].get("ownerReferences"),
        None
    );
    assert!(c.get(PRIMARY).is_none());
    assert_eq!(c.get(CANARY).unwrap()["metadata"]["finalizers"], json!([]));
}

#[tokio::test]
async fn a_canary_with_nothing_to_clean_up_gets_no_finalizer() {
    let mut obj = canary(json!({}));
    obj["metadata"]["finalizers"] = json!(null);
    let c = cluster_with(obj, None);
    c.reconcile(&c.context()).await.unwrap();
    assert!(!write_paths(&c).contains(&format!("PATCH {CANARY}")));
    assert!(c.get(CANARY).unwrap()["metadata"]["finalizers"].is_null());
    // Once there is something to clean up, the finalizer comes first.
    c.put(TARGET, deployment("podinfo:1"));
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(write_paths(&c), [format!("PATCH {CANARY}")]);
    assert_eq!(
        c.get(CANARY).unwrap()["metadata"]["finalizers"],
        json!(["fledge.dev/finalizer"])
    );
}

/// Review of issue 13 item 3 (fails today): without `revertOnDeletion`, deleting the Canary
/// gives the user's apex Service its old selector back at once, while the target it selects
/// was scaled to zero at onboarding (and the primary, owned by the Canary, is about to be
/// garbage-collected): the app has no endpoints. The README's uninstall order deletes every
/// Canary this way.
#[tokio::test]
async fn a_deleted_canary_never_points_the_apex_service_at_a_workload_scaled_to_zero() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    c.put(APEX, user_service());
    run_until(&c, "Initialized", 5).await;
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], 0);
    delete_canary(&c);
    c.reconcile(&c.context()).await.unwrap();
    let apex = c.get(APEX).unwrap();
    let target_replicas = c.get(TARGET).unwrap()["spec"]["replicas"].as_i64();
    assert!(
        apex["spec"]["selector"]["app"] != "podinfo" || target_replicas > Some(0),
        "the apex Service selects the target's pods, scaled to {target_replicas:?}: {}",
        apex["spec"]["selector"]
    );
}

/// `spec.ports` is a list-map keyed by port and protocol: the apply that takes a user's Service
/// over keeps a port the Canary does not declare, and that port is no drift to put back (which
/// would hold the rollout on every tick).
#[tokio::test]
async fn a_user_service_with_a_port_the_canary_does_not_declare_onboards_and_the_rollout_advances()
{
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    let mut user = user_service();
    user["spec"]["ports"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "metrics", "port": 9797, "targetPort": 9797, "protocol": "TCP"}));
    c.put(APEX, user.clone());
    progressing_at(&c, 20).await;
    let ports = c.get(APEX).unwrap()["spec"]["ports"].clone();
    assert!(
        ports.as_array().unwrap().iter().any(|p| p["port"] == 9797),
        "the user's port stays: {ports}"
    );
    assert!(
        events(&c).iter().all(|e| !e.contains("put back")),
        "{:?}",
        events(&c)
    );
    delete_canary(&c);
    c.reconcile(&c.context()).await.unwrap();
    c.settle();
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.get(APEX).unwrap()["spec"]["ports"], user["spec"]["ports"]);
}

/// A target that never becomes ready after the deletion is not waited for forever (the Canary
/// could never be deleted): past the progress deadline, counted from the deletion, the primary
/// keeps serving, no longer owned by the Canary, and a Warning says what to do.
#[tokio::test]
async fn a_target_never_ready_after_the_deletion_leaves_the_primary_serving_after_the_deadline() {
    let c = cluster_with(
        canary(json!({"revertOnDeletion": true, "progressDeadlineSeconds": 600})),
        Some(deployment("podinfo:1")),
    );
    c.put(APEX, user_service());
    run_until(&c, "Initialized", 5).await;
    // Deleted at 2023-11-14T22:20:00Z (the clock started at 22:13:20Z).
    let deleted_at = 1_700_000_400_000;
    assert!(c.clock.load(std::sync::atomic::Ordering::SeqCst) < deleted_at);
    c.clock
        .store(deleted_at, std::sync::atomic::Ordering::SeqCst);
    delete_canary(&c);
    c.reconcile(&c.context()).await.unwrap();
    // Never ready: the target's pods crash. Before the deadline, it still waits.
    c.advance_clock(std::time::Duration::from_secs(599));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        c.get(CANARY).unwrap()["metadata"]["finalizers"],
        json!(["fledge.dev/finalizer"])
    );
    c.advance_clock(std::time::Duration::from_secs(2));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.get(CANARY).unwrap()["metadata"]["finalizers"], json!([]));
    let primary = c.get(PRIMARY).expect("the primary stays");
    assert_eq!(primary["metadata"].get("ownerReferences"), None);
    assert_eq!(
        c.get(APEX).unwrap()["spec"]["selector"]["app"],
        "podinfo-primary",
        "the apex Service keeps selecting the pods that serve"
    );
    let primary_svc = c.get(&format!("{SERVICES}/podinfo-primary")).unwrap();
    assert_eq!(primary_svc["metadata"].get("ownerReferences"), None);
    assert!(
        events(&c)
            .iter()
            .any(|e| e.starts_with("EVENT Warning TargetNotReady")),
        "{:?}",
        events(&c)
    );
}
