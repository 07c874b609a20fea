//! Flagger Canaries that Fledge onboards rather than takes over (Flagger left them before
//! `Initialized`, or Fledge's own record of them is gone), and those it must not touch yet.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use serde_json::json;

/// Reconciles the Flagger Canary `n` times, a fresh controller and an interval apart each time.
async fn reconcile_times(c: &FakeCluster, n: usize) {
    for _ in 0..n {
        c.reconcile_flagger(&c.context()).await.expect("reconcile");
        c.settle();
        c.advance_clock(Duration::from_secs(60));
    }
}

fn phases_written(c: &FakeCluster) -> Vec<String> {
    c.calls()
        .into_iter()
        .filter(|w| w.method == "PATCH" && w.path == format!("{FLAGGER_CANARY}/status"))
        .filter_map(|w| w.body["status"]["phase"].as_str().map(String::from))
        .collect()
}

/// Flagger built the primary from the target and stopped before it recorded `Initialized`
/// (or before it recorded any phase): the primary runs the target's template in Flagger's
/// shape (its `flagger-id`), so onboarding it rolls nothing out.
#[tokio::test]
async fn a_canary_flagger_left_initializing_with_the_targets_template_is_not_rolled_out() {
    for phase in ["Initializing", ""] {
        let c = flagger_cluster(phase, 0, flagger_owner("flagger.app/v1beta1", FLAGGER_UID));
        reconcile_times(&c, 6).await;
        let phases = phases_written(&c);
        assert!(
            !phases.iter().any(|p| p == "Progressing"),
            "{phase:?}: {phases:?}"
        );
        assert_eq!(c.flagger_status()["phase"], "Initialized", "{phase:?}");
        let primary = c.get(PRIMARY).unwrap();
        assert_eq!(
            primary["spec"]["template"]["spec"]["containers"][0]["image"],
            "podinfo:1"
        );
        assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], json!(0));
        // A target that changes afterwards is rolled out as any other.
        set_image(&c, "podinfo:2");
        c.clear_calls();
        reconcile_times(&c, 2).await;
        let phases = phases_written(&c);
        assert!(
            phases.iter().any(|p| p == "Progressing"),
            "{phase:?}: {phases:?}"
        );
    }
}

/// `managedFields` as the API server records Flagger's status writes: it owns the phase.
fn flagger_owns_the_phase(c: &FakeCluster) {
    let mut canary = c.get(FLAGGER_CANARY).unwrap();
    canary["metadata"]["managedFields"] = json!([
        {"manager": "flagger", "operation": "Update", "apiVersion": "flagger.app/v1beta1",
         "subresource": "status", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:status": {"f:phase": {}, "f:lastAppliedSpec": {}}}}
    ]);
    c.put(FLAGGER_CANARY, canary);
}

/// Reconciles until the canary gets traffic (at most `limit` times).
async fn until_canary_weight(c: &FakeCluster, limit: usize) {
    for _ in 0..limit {
        if c.routes().is_some_and(|r| r.canary > 0) {
            return;
        }
        reconcile_times(c, 1).await;
    }
    panic!("the canary got no traffic: {:?}", c.routes());
}

/// A rollout Fledge runs on a Flagger Canary loses its record (`kubectl replace` of the
/// Canary drops the annotation; the status stays, `Progressing`): the phase was set by Fledge,
/// not Flagger, so it is not refused as Flagger's rollout. As with a `fledge.dev` Canary whose
/// status is lost, traffic goes back to the primary and the target is analysed again.
#[tokio::test]
async fn fledges_own_rollout_whose_record_is_lost_returns_to_the_primary_and_starts_again() {
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    flagger_owns_the_phase(&c);
    reconcile_times(&c, 3).await;
    set_image(&c, "podinfo:2");
    until_canary_weight(&c, 10).await;
    assert_eq!(c.flagger_status()["phase"], "Progressing");
    let mut canary = c.get(FLAGGER_CANARY).unwrap();
    let annotations = canary["metadata"]["annotations"].as_object_mut().unwrap();
    annotations
        .remove("fledge.dev/state")
        .expect("Fledge's record");
    // The manifest has no finalizers either: the Canary is held again first.
    canary["metadata"]["finalizers"] = json!([]);
    c.put(FLAGGER_CANARY, canary);
    c.clear_calls();
    reconcile_times(&c, 3).await;
    let said = events(&c);
    assert!(
        !said.iter().any(|e| e.contains("TakeOverRefused")),
        "{said:#?}"
    );
    let lost = said.iter().filter(|e| e.contains("Warning RecordLost"));
    assert_eq!(lost.count(), 1, "said once: {said:#?}");
    assert_eq!(
        c.routes(),
        Some(fledge_controller::router::Routes::PRIMARY_ONLY)
    );
    let primary = c.get(PRIMARY).unwrap();
    assert_eq!(
        primary["spec"]["template"]["spec"]["containers"][0]["image"],
        "podinfo:1"
    );
    // The target's revision was never promoted: it is analysed from the start again.
    c.clear_calls();
    until_canary_weight(&c, 10).await;
    assert!(
        phases_written(&c).iter().any(|p| p == "Progressing"),
        "{:?}",
        phases_written(&c)
    );
}

/// Flagger's own rollout under way (Flagger set the phase) is still refused.
#[tokio::test]
async fn a_rollout_whose_phase_flagger_set_is_still_refused() {
    let c = flagger_cluster(
        "Progressing",
        20,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    flagger_owns_the_phase(&c);
    reconcile_times(&c, 2).await;
    let said = events(&c);
    assert!(
        said.iter().any(|e| e.contains("Warning TakeOverRefused")),
        "{said:#?}"
    );
    assert_eq!(c.flagger_status()["phase"], "Progressing");
}

/// Flagger skips a suspended Canary before it reads or writes anything: Fledge does not take
/// one over (nothing adopted, scaled or routed) until `spec.suspend` is false, and says so.
#[tokio::test]
async fn a_suspended_flagger_canary_is_not_taken_over_until_it_is_resumed() {
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    let mut canary = c.get(FLAGGER_CANARY).unwrap();
    canary["spec"]["suspend"] = json!(true);
    c.put(FLAGGER_CANARY, canary);
    set_image(&c, "podinfo:2");
    c.clear_calls();
    reconcile_times(&c, 3).await;
    let writes = c.writes();
    assert!(
        writes
            .iter()
            .all(|w| w.starts_with("EVENT") || w.contains(FLAGGER_CANARY)),
        "{writes:#?}"
    );
    let said = events(&c);
    assert_eq!(said.len(), 1, "said once: {said:#?}");
    assert!(said[0].contains("Warning TakeOverSuspended"), "{said:#?}");
    let status = c.flagger_status();
    assert_eq!(status["phase"], "Succeeded");
    let stalled = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Stalled")
        .cloned()
        .expect("a Stalled condition");
    assert_eq!(stalled["reason"], "TakeOverSuspended");
    // Resumed: taken over, and the changed target rolled out.
    let mut canary = c.get(FLAGGER_CANARY).unwrap();
    canary["spec"]["suspend"] = json!(false);
    c.put(FLAGGER_CANARY, canary);
    c.clear_calls();
    reconcile_times(&c, 3).await;
    let taken = events(&c);
    assert!(
        taken.iter().any(|e| e.contains("Normal TakenOver")),
        "{taken:#?}"
    );
}
