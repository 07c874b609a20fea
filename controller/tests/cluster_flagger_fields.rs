//! The fields of what Flagger created, taken over with the objects: Flagger writes its copies
//! by update, so its field manager owns every field; at take-over Fledge applies each copy as
//! found and then drops Flagger's `managedFields` entry, so that its own later applies replace
//! the copy whole, as Flagger's updates did. And "Flagger promoted since Fledge's record" is
//! read from the primary's `flagger-id`, which Flagger renews at every promotion.
//!
//! The fake API server records field managers only as entries (not the fields each owns): these
//! tests check the requests Fledge makes.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use serde_json::{Value, json};

async fn reconcile_times(c: &FakeCluster, n: usize) {
    for _ in 0..n {
        c.reconcile_flagger(&c.context()).await.expect("reconcile");
        c.settle();
        c.advance_clock(Duration::from_secs(60));
    }
}

fn managers(object: &Value) -> Vec<String> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let sub = e["subresource"].as_str().map(|s| format!("/{s}"));
            format!(
                "{} {}{}",
                e["manager"].as_str().unwrap_or(""),
                e["operation"].as_str().unwrap_or(""),
                sub.unwrap_or_default()
            )
        })
        .collect()
}

fn record(c: &FakeCluster) -> Value {
    let canary = c.get(FLAGGER_CANARY).unwrap();
    let raw = canary["metadata"]["annotations"]["fledge.dev/state"]
        .as_str()
        .expect("a record");
    serde_json::from_str(raw).unwrap()
}

const FLAGGER_ID: &str = "4f1c2a9e-7d3b-4c5e-9a8f-0b1c2d3e4f5a";

#[tokio::test]
async fn taking_over_applies_each_copy_as_found_and_then_drops_flaggers_field_manager() {
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    let copies: Vec<String> = std::iter::once(PRIMARY.to_string())
        .chain(
            ["podinfo", "podinfo-primary", "podinfo-canary"]
                .iter()
                .map(|n| format!("{SERVICES}/{n}")),
        )
        .collect();
    let before: Vec<Value> = copies.iter().map(|p| c.get(p).unwrap()).collect();
    reconcile_times(&c, 1).await;
    let calls = c.calls();
    for (path, found) in copies.iter().zip(&before) {
        let writes: Vec<_> = calls
            .iter()
            .filter(|w| &w.path == path && w.method == "PATCH")
            .collect();
        assert_eq!(writes.len(), 2, "{path}: {writes:#?}");
        // First an apply of the object as Flagger left it: every field shared with Flagger.
        let applied = &writes[0].body;
        assert_eq!(applied["spec"], found["spec"], "{path}");
        assert_eq!(applied["metadata"]["labels"], found["metadata"]["labels"]);
        assert_eq!(
            applied["metadata"]["ownerReferences"],
            found["metadata"]["ownerReferences"]
        );
        for server_kept in ["uid", "resourceVersion", "managedFields"] {
            assert!(applied["metadata"].get(server_kept).is_none(), "{path}");
        }
        // Then Flagger's entry dropped, Fledge's and the status writer's kept, guarded by the
        // resourceVersion the apply returned.
        let dropped = &writes[1].body["metadata"];
        assert!(dropped["resourceVersion"].is_string(), "{path}: {dropped}");
        let left = managers(&json!({"metadata": dropped}));
        assert_eq!(
            left,
            ["kube-controller-manager Update/status", "fledge Apply"],
            "{path}"
        );
        assert_eq!(managers(&c.get(path).unwrap()), left, "{path}");
        // The same object: nothing recreated.
        assert_eq!(
            c.get(path).unwrap()["metadata"]["uid"],
            found["metadata"]["uid"]
        );
    }
    // Once Flagger's entry is gone there is nothing more to take.
    c.clear_calls();
    reconcile_times(&c, 3).await;
    let again: Vec<_> = c
        .calls()
        .into_iter()
        .filter(|w| copies.contains(&w.path) && w.method == "PATCH")
        .collect();
    assert!(again.is_empty(), "{again:#?}");
    // The record names the primary's flagger-id seen at take-over.
    assert_eq!(record(&c)["primaryFlaggerId"], FLAGGER_ID);
}

#[tokio::test]
async fn a_copy_someone_else_owns_keeps_its_field_managers() {
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    // The canary Service is a user's own: no controller, so not Fledge's to take.
    let path = format!("{SERVICES}/podinfo-canary");
    let mut svc = c.get(&path).unwrap();
    svc["metadata"]["ownerReferences"] = Value::Null;
    c.put(&path, svc);
    reconcile_times(&c, 2).await;
    assert!(
        managers(&c.get(&path).unwrap()).contains(&"flagger Update".to_string()),
        "{:#?}",
        c.writes()
    );
}

/// Flagger, run again, promotes: a new flagger-id on the primary, its fields Flagger's again.
fn flagger_promotes(c: &FakeCluster, id: &str) {
    let mut primary = c.get(PRIMARY).unwrap();
    primary["spec"]["template"]["metadata"]["annotations"]["flagger-id"] = json!(id);
    primary["metadata"]["managedFields"] = flaggers_fields("apps/v1");
    c.put(PRIMARY, primary);
    c.settle();
}

fn taken_over(c: &FakeCluster) -> usize {
    events(c)
        .iter()
        .filter(|e| e.contains("Normal TakenOver"))
        .count()
}

#[tokio::test]
async fn a_new_flagger_id_on_the_primary_is_a_flagger_promotion_and_the_canary_is_taken_over_again()
{
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    reconcile_times(&c, 3).await;
    assert_eq!(taken_over(&c), 1);
    // The same template, Flagger's lastAppliedSpec unchanged: only the flagger-id tells.
    let id = "0a9b8c7d-6e5f-4a3b-9c2d-1e0f2a3b4c5d";
    flagger_promotes(&c, id);
    c.clear_calls();
    reconcile_times(&c, 5).await;
    assert_eq!(taken_over(&c), 1, "once: {:#?}", events(&c));
    assert_eq!(record(&c)["primaryFlaggerId"], id);
    // Flagger's fields taken again, and no rollout: the primary runs the target's template.
    assert!(!managers(&c.get(PRIMARY).unwrap()).contains(&"flagger Update".to_string()));
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], 0);
    assert_eq!(c.flagger_status()["phase"], "Succeeded");
}

#[tokio::test]
async fn fledges_own_promotion_is_not_read_as_flaggers() {
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    reconcile_times(&c, 3).await;
    set_image(&c, "podinfo:2");
    for _ in 0..30 {
        reconcile_times(&c, 1).await;
        let primary = c.get(PRIMARY).unwrap();
        if c.flagger_status()["phase"] == "Succeeded"
            && primary["spec"]["template"]["spec"]["containers"][0]["image"] == "podinfo:2"
        {
            break;
        }
    }
    let primary = c.get(PRIMARY).unwrap();
    assert_eq!(
        primary["spec"]["template"]["spec"]["containers"][0]["image"],
        "podinfo:2"
    );
    // Fledge, the only owner, applied no flagger-id: Flagger's went with its promotion.
    assert!(
        primary["spec"]["template"]["metadata"]["annotations"]
            .get("flagger-id")
            .is_none(),
        "{primary}"
    );
    reconcile_times(&c, 5).await;
    assert_eq!(taken_over(&c), 1, "{:#?}", events(&c));
}
