//! A KEDA ScaledObject as the target's autoscaler (`autoscalerRef.kind: ScaledObject`), as
//! Flagger handles it: a `-primary` copy scaling the primary, its queries rewritten, kept in
//! step; the target's paused at zero while the canary is scaled down.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use serde_json::{Value, json};

const TARGET_SO: &str = "/apis/keda.sh/v1alpha1/namespaces/test/scaledobjects/podinfo-so";
const PRIMARY_SO: &str = "/apis/keda.sh/v1alpha1/namespaces/test/scaledobjects/podinfo-so-primary";
const PAUSED: &str = "autoscaling.keda.sh/paused-replicas";

fn target_so() -> Value {
    json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "podinfo-so", "namespace": NS},
        "spec": {
            "scaleTargetRef": {"name": "podinfo"},
            "minReplicaCount": 3, "maxReplicaCount": 6,
            "triggers": [{"type": "prometheus", "name": "rps", "metadata": {
                "serverAddress": "http://prometheus:9090", "threshold": "100",
                "query": "sum(rate(http_requests_total{deployment=\"podinfo\"}[1m]))"}}]
        }
    })
}

fn paused(c: &FakeCluster) -> Value {
    c.get(TARGET_SO).unwrap()["metadata"]["annotations"][PAUSED].clone()
}

#[tokio::test]
async fn a_scaled_object_is_copied_for_the_primary_and_the_targets_paused_while_idle() {
    let c = cluster_with(
        canary(json!({"autoscalerRef": {"apiVersion": "keda.sh/v1alpha1",
                                        "kind": "ScaledObject", "name": "podinfo-so",
                                        "primaryScalerReplicas": {"maxReplicas": 12}}})),
        Some(deployment("podinfo:1")),
    );
    c.put(TARGET_SO, target_so());
    run_until(&c, "Initialized", 6).await;
    let primary = c.get(PRIMARY_SO).expect("podinfo-so-primary");
    let spec = &primary["spec"];
    assert_eq!(spec["scaleTargetRef"]["name"], "podinfo-primary");
    assert_eq!(
        spec["triggers"][0]["metadata"]["query"],
        "sum(rate(http_requests_total{deployment=\"podinfo-primary\"}[1m]))"
    );
    assert_eq!(
        (
            spec["minReplicaCount"].clone(),
            spec["maxReplicaCount"].clone()
        ),
        (json!(3), json!(12))
    );
    assert_eq!(primary["metadata"]["ownerReferences"][0]["kind"], "Canary");
    // The target is scaled to zero and KEDA held there.
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], 0);
    assert_eq!(paused(&c), "0");

    // A new revision: the pause is lifted and the canary gets the ScaledObject's minimum.
    set_image(&c, "podinfo:2");
    c.advance_clock(Duration::from_secs(60));
    c.reconcile(&c.context()).await.expect("reconcile");
    c.settle();
    assert_eq!(paused(&c), Value::Null, "{}", c.get(TARGET_SO).unwrap());
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], 3);

    // The target's ScaledObject changes: the primary's follows.
    let mut so = c.get(TARGET_SO).unwrap();
    so["spec"]["minReplicaCount"] = json!(4);
    c.put(TARGET_SO, so);
    run_until(&c, "Succeeded", 15).await;
    assert_eq!(c.get(PRIMARY_SO).unwrap()["spec"]["minReplicaCount"], 4);
    // Idle again: the canary at zero, its ScaledObject paused.
    for _ in 0..2 {
        c.advance_clock(Duration::from_secs(60));
        c.reconcile(&c.context()).await.expect("reconcile");
        c.settle();
    }
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], 0);
    assert_eq!(paused(&c), "0");
}

// Flagger's `<scaledobject>-primary` (pkg/canary/scaled_object_reconciler.go) is adopted at
// take-over like the other objects it made: the same object, Fledge's Canary its controller and
// Flagger's field manager dropped; not recreated, not mistaken for an HPA.
#[tokio::test]
async fn flaggers_primary_scaled_object_is_adopted_at_take_over_in_place() {
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    let mut canary = c.get(FLAGGER_CANARY).unwrap();
    canary["spec"]["autoscalerRef"] = json!({"apiVersion": "keda.sh/v1alpha1",
                                             "kind": "ScaledObject", "name": "podinfo-so"});
    c.put(FLAGGER_CANARY, canary);
    c.put(TARGET_SO, target_so());
    let mut copy = target_so();
    copy["metadata"] = json!({"name": "podinfo-so-primary", "namespace": NS, "uid": "so-uid",
                              "ownerReferences": flagger_owner("flagger.app/v1alpha3", "old-uid"),
                              "managedFields": flaggers_fields("keda.sh/v1alpha1")});
    copy["spec"]["scaleTargetRef"]["name"] = json!("podinfo-primary");
    copy["spec"]["triggers"][0]["metadata"]["query"] =
        json!("sum(rate(http_requests_total{deployment=\"podinfo-primary\"}[1m]))");
    c.put(PRIMARY_SO, copy);
    c.settle();
    for _ in 0..3 {
        c.reconcile_flagger(&c.context()).await.expect("reconcile");
        c.settle();
        c.advance_clock(Duration::from_secs(60));
    }
    let events = events(&c);
    assert!(
        events
            .iter()
            .any(|e| e.contains("adopted") && e.contains("ScaledObject podinfo-so-primary")),
        "{events:#?}"
    );
    let adopted = c.get(PRIMARY_SO).unwrap();
    assert_eq!(adopted["metadata"]["uid"], "so-uid");
    assert_eq!(
        adopted["metadata"]["ownerReferences"][0]["uid"],
        FLAGGER_UID
    );
    let managers: Vec<&Value> = adopted["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["manager"])
        .collect();
    assert!(!managers.contains(&&json!("flagger")), "{managers:?}");
    assert!(c.calls().iter().all(|w| !w.created), "{:#?}", c.writes());
}
