//! `targetRef.kind: DaemonSet`, as Flagger rolls DaemonSets out: a primary DaemonSet cloned
//! from the target, the target (the canary) kept off every node by Flagger's scale-to-zero node
//! selector while no rollout runs, readiness read from the DaemonSet's status.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use fledge_controller::analysis::MetricReading;
use serde_json::{Value, json};

fn daemon_set_canary() -> Value {
    canary(json!({"targetRef": {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "podinfo"}}))
}

fn cluster() -> FakeCluster {
    let c = cluster_with(daemon_set_canary(), None);
    c.put(DS_TARGET, daemon_set("podinfo:1"));
    c.settle();
    c
}

async fn tick(c: &FakeCluster) {
    c.reconcile(&c.context()).await.expect("reconcile");
}

/// Reconciles an interval apart, the DaemonSets settling after each, until `phase`.
async fn run_to(c: &FakeCluster, phase: &str, limit: usize) {
    for _ in 0..limit {
        tick(c).await;
        c.settle();
        c.advance_clock(Duration::from_secs(60));
        if c.phase() == phase && !(phase == "Initialized" && canary_on_nodes(c)) {
            return;
        }
    }
    panic!("{phase} not reached; at {}", c.phase());
}

fn canary_on_nodes(c: &FakeCluster) -> bool {
    let ds = c.get(DS_TARGET).unwrap();
    ds["spec"]["template"]["spec"]["nodeSelector"][SCALE_TO_ZERO].is_null()
}

fn image(c: &FakeCluster, path: &str) -> Value {
    c.get(path).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"].clone()
}

fn set_daemon_set_image(c: &FakeCluster, image: &str) {
    let mut ds = c.get(DS_TARGET).unwrap();
    ds["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
    let g = ds["metadata"]["generation"].as_i64().unwrap_or(1);
    ds["metadata"]["generation"] = json!(g + 1);
    c.put(DS_TARGET, ds);
}

#[tokio::test]
async fn a_daemonset_canary_initialises_a_primary_daemonset_and_keeps_the_target_off_every_node() {
    let c = cluster();
    run_to(&c, "Initialized", 8).await;
    let primary = c.get(DS_PRIMARY).expect("podinfo-primary DaemonSet");
    assert_eq!(primary["kind"], "DaemonSet");
    let spec = &primary["spec"];
    assert_eq!(
        spec["selector"]["matchLabels"],
        json!({"app": "podinfo-primary"})
    );
    assert_eq!(
        spec["template"]["metadata"]["labels"]["app"],
        "podinfo-primary"
    );
    assert_eq!(spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1);
    // The user's node selector is kept; Flagger's scale-to-zero one never reaches the primary.
    assert_eq!(
        spec["template"]["spec"]["nodeSelector"],
        json!({"disk": "ssd"})
    );
    assert_eq!(primary["metadata"]["ownerReferences"][0]["kind"], "Canary");
    assert_eq!(image(&c, DS_PRIMARY), "podinfo:1");
    let target = c.get(DS_TARGET).unwrap();
    assert_eq!(
        target["spec"]["template"]["spec"]["nodeSelector"],
        json!({"disk": "ssd", SCALE_TO_ZERO: "true"})
    );
    let writes = c.writes();
    assert!(
        !writes
            .iter()
            .any(|w| w.contains("/deployments/") || w.contains("horizontalpodautoscalers")),
        "{writes:#?}"
    );
}

#[tokio::test]
async fn a_new_daemonset_revision_is_analysed_on_the_canary_and_promoted_to_the_primary() {
    let c = cluster();
    run_to(&c, "Initialized", 8).await;
    set_daemon_set_image(&c, "podinfo:2");
    run_to(&c, "Progressing", 4).await;
    assert!(canary_on_nodes(&c), "the canary runs while analysed");
    assert_eq!(image(&c, DS_PRIMARY), "podinfo:1");
    run_to(&c, "Succeeded", 12).await;
    assert_eq!(image(&c, DS_PRIMARY), "podinfo:2");
    let primary = c.get(DS_PRIMARY).unwrap();
    assert_eq!(
        primary["spec"]["template"]["spec"]["nodeSelector"],
        json!({"disk": "ssd"})
    );
    assert!(
        !canary_on_nodes(&c),
        "the canary is kept off every node again"
    );
}

#[tokio::test]
async fn a_failing_daemonset_canary_is_rolled_back_and_kept_off_every_node_again() {
    let c = cluster();
    run_to(&c, "Initialized", 8).await;
    set_daemon_set_image(&c, "podinfo:2");
    run_to(&c, "Progressing", 4).await;
    c.set_metric("request-success-rate", MetricReading::Value { value: 90.0 });
    run_to(&c, "Failed", 6).await;
    assert_eq!(image(&c, DS_PRIMARY), "podinfo:1");
    assert!(!canary_on_nodes(&c));
    assert_eq!(c.routes().map(|r| r.canary), Some(0));
}

#[tokio::test]
async fn traffic_waits_until_the_canary_daemonset_has_updated_and_available_pods() {
    let c = cluster();
    run_to(&c, "Initialized", 8).await;
    set_daemon_set_image(&c, "podinfo:2");
    // The canary's pods, not yet scheduled: the DaemonSet's status is left as it is.
    for _ in 0..3 {
        tick(&c).await;
        c.advance_clock(Duration::from_secs(60));
    }
    assert!(canary_on_nodes(&c));
    assert_eq!(c.routes().map(|r| r.canary), Some(0));
    let status = c.get(CANARY).unwrap()["status"].clone();
    assert!(
        status["conditions"].to_string().contains("waiting")
            || status.to_string().contains("ready"),
        "{status}"
    );
    // Two of three pods updated: still waiting.
    let mut ds = c.get(DS_TARGET).unwrap();
    ds["status"] = json!({
        "observedGeneration": ds["metadata"]["generation"].clone(),
        "desiredNumberScheduled": NODES, "currentNumberScheduled": NODES, "numberReady": NODES,
        "updatedNumberScheduled": NODES - 1, "numberAvailable": NODES, "numberMisscheduled": 0,
    });
    c.put(DS_TARGET, ds);
    tick(&c).await;
    c.advance_clock(Duration::from_secs(60));
    assert_eq!(c.routes().map(|r| r.canary), Some(0));
    c.settle();
    tick(&c).await;
    assert_eq!(c.routes().map(|r| r.canary), Some(10));
}

#[tokio::test]
async fn a_daemonset_updated_on_delete_is_refused_and_nothing_is_written() {
    let c = cluster();
    let mut ds = c.get(DS_TARGET).unwrap();
    ds["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    c.put(DS_TARGET, ds);
    c.clear_calls();
    tick(&c).await;
    tick(&c).await;
    let writes = c.writes();
    assert!(
        writes
            .iter()
            .all(|w| w.starts_with("EVENT") || w.contains("/canaries/")),
        "{writes:#?}"
    );
    assert!(c.get(DS_PRIMARY).is_none());
    assert!(
        events(&c)
            .iter()
            .any(|e| e.contains("TargetNotRollingUpdate")),
        "{:#?}",
        events(&c)
    );
}

/// Flagger's objects for a DaemonSet target: the target kept off every node, its primary a
/// DaemonSet (both as `flagger_cluster` writes the Deployments otherwise).
fn flagger_daemon_set_cluster() -> FakeCluster {
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    let mut canary = c.get(FLAGGER_CANARY).unwrap();
    canary["spec"]["targetRef"]["kind"] = json!("DaemonSet");
    c.put(FLAGGER_CANARY, canary);
    for (from, to) in [(TARGET, DS_TARGET), (PRIMARY, DS_PRIMARY)] {
        let mut ds = c.get(from).unwrap();
        c.delete(from);
        ds["kind"] = json!("DaemonSet");
        let spec = ds["spec"].as_object_mut().unwrap();
        spec.remove("replicas");
        spec.insert("updateStrategy".into(), json!({"type": "RollingUpdate"}));
        if to == DS_TARGET {
            ds["spec"]["template"]["spec"]["nodeSelector"] = json!({SCALE_TO_ZERO: "true"});
        }
        c.put(to, ds);
    }
    c.settle();
    c
}

#[tokio::test]
async fn flaggers_primary_daemonset_is_adopted_in_place_with_no_rollout_started() {
    let c = flagger_daemon_set_cluster();
    let uid = c.get(DS_PRIMARY).unwrap()["metadata"]["uid"].clone();
    for _ in 0..4 {
        c.reconcile_flagger(&c.context()).await.expect("reconcile");
        c.settle();
        c.advance_clock(Duration::from_secs(60));
    }
    let calls = c.calls();
    let writes = c.writes();
    assert!(
        calls.iter().all(|w| w.method != "DELETE" && !w.created),
        "{writes:#?}"
    );
    let primary = c.get(DS_PRIMARY).unwrap();
    assert_eq!(primary["metadata"]["uid"], uid, "the same object");
    assert_eq!(image(&c, DS_PRIMARY), "podinfo:1");
    assert!(!canary_on_nodes(&c), "the target stays off every node");
    assert!(c.get(TARGET).is_none() && c.get(PRIMARY).is_none());
    assert_eq!(c.flagger_status()["phase"], "Succeeded");
    let managers: Vec<Value> = primary["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["manager"].clone())
        .collect();
    assert!(!managers.contains(&json!("flagger")), "{managers:?}");
    // Flagger's fields on the primary DaemonSet were taken over by a write to it.
    assert!(
        calls
            .iter()
            .any(|w| w.method == "PATCH" && w.path == DS_PRIMARY),
        "{writes:#?}"
    );
    let events = events(&c);
    assert!(
        events.iter().any(|e| e.contains("Normal TakenOver")),
        "{events:#?}"
    );
}

/// Flagger accepts an `autoscalerRef` on a DaemonSet target and copies it for the primary,
/// where Kubernetes cannot scale a DaemonSet either: Fledge accepts the Canary too, rolls it
/// out, makes no autoscaler, and says the reference is not used in a Warning Event.
#[tokio::test]
async fn a_daemonsets_autoscaler_ref_is_accepted_left_unused_and_said_to_be() {
    let mut canary = daemon_set_canary();
    canary["spec"]["autoscalerRef"] = json!({"apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler", "name": "podinfo"});
    let c = cluster_with(canary, None);
    c.put(DS_TARGET, daemon_set("podinfo:1"));
    c.settle();
    run_to(&c, "Initialized", 8).await;
    let writes = c.writes();
    assert!(
        !writes
            .iter()
            .any(|w| w.contains("horizontalpodautoscalers")),
        "{writes:#?}"
    );
    let unused: Vec<String> = events(&c)
        .into_iter()
        .filter(|e| e.contains("AutoscalerNotUsed"))
        .collect();
    assert!(
        !unused.is_empty()
            && unused
                .iter()
                .all(|e| e.contains("spec.autoscalerRef: not used")),
        "{writes:#?}"
    );
}
