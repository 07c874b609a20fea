//! A Canary whose status is gone while its finalizer and objects stay (a backup restored
//! without status, as Velero does by default; a status reset by hand) is onboarded again onto
//! the primary it has: the serving primary keeps its size and the revision it runs (Flagger's
//! `createPrimaryDeployment` creates it only when missing), the target's unanalysed revision is
//! never recorded as promoted nor put on the primary, and it is rolled out again as any other.
//! (From reviews r13b, finding 2, and r13c; a deletion with a lost status is in
//! cluster_deletion_fallback.rs.)
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use serde_json::{Value, json};

/// A rollout of `podinfo:2` under way, then the Canary's status is lost. Returns the revision
/// the status recorded for the target (`lastAppliedSpec`).
async fn status_lost_mid_rollout(c: &FakeCluster) -> Value {
    run_until(c, "Initialized", 5).await;
    set_image(c, "podinfo:2");
    c.advance_clock(Duration::from_secs(60));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.phase(), "Progressing");
    let mut obj = c.get(CANARY).unwrap();
    let target_revision = obj["status"]["lastAppliedSpec"].clone();
    assert!(target_revision.is_string(), "{}", obj["status"]);
    obj.as_object_mut().unwrap().remove("status");
    c.put(CANARY, obj);
    target_revision
}

/// The target is at 0 after onboarding; re-onboarding must not apply the primary with the
/// target's replicas (it once scaled the primary serving all traffic from 4 to 1).
#[tokio::test]
async fn a_status_lost_after_onboarding_never_shrinks_the_serving_primary() {
    let mut d = deployment("podinfo:1");
    d["spec"]["replicas"] = json!(4);
    let c = cluster_with(canary(json!({})), Some(d));
    run_until(&c, "Initialized", 5).await;
    assert_eq!(c.get(PRIMARY).unwrap()["spec"]["replicas"], 4);
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], 0);
    let mut obj = c.get(CANARY).unwrap();
    obj.as_object_mut().unwrap().remove("status");
    c.put(CANARY, obj);
    for _ in 0..3 {
        c.advance_clock(Duration::from_secs(60));
        c.reconcile(&c.context()).await.unwrap();
        assert_eq!(
            c.get(PRIMARY).unwrap()["spec"]["replicas"],
            4,
            "the serving primary was resized at {}",
            c.phase()
        );
        c.settle();
    }
}

/// Lost mid-rollout, the target runs an unanalysed revision: the primary keeps the revision it
/// serves, and the template recorded for its repair is the one it runs, not the target's.
#[tokio::test]
async fn a_status_lost_mid_rollout_never_promotes_the_unanalysed_target() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    status_lost_mid_rollout(&c).await;
    let image = |v: &Value| v["spec"]["containers"][0]["image"].clone();
    for _ in 0..3 {
        c.advance_clock(Duration::from_secs(60));
        c.reconcile(&c.context()).await.unwrap();
        c.settle();
        let primary = c.get(PRIMARY).unwrap();
        assert_eq!(image(&primary["spec"]["template"]), "podinfo:1");
        let recorded = &c.get(CANARY).unwrap()["status"]["primaryTemplate"];
        assert!(
            recorded.is_null() || image(recorded) == "podinfo:1",
            "recorded for the primary's repair: {recorded}"
        );
    }
}

/// After the re-onboarding a rollout of the target begins, analysed as any other, and only its
/// promotion puts `podinfo:2` on the primary.
#[tokio::test]
async fn a_status_lost_mid_rollout_rolls_the_target_out_again_after_onboarding() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    status_lost_mid_rollout(&c).await;
    run_until(&c, "Initialized", 5).await;
    run_until(&c, "Progressing", 5).await;
    assert_eq!(
        c.phase(),
        "Progressing",
        "no rollout of the unanalysed target"
    );
    run_until(&c, "Succeeded", 30).await;
    let primary = c.get(PRIMARY).unwrap();
    assert_eq!(
        primary["spec"]["template"]["spec"]["containers"][0]["image"],
        "podinfo:2"
    );
}

/// What was promoted is what the primary runs: after re-onboarding onto the kept `podinfo:1`,
/// neither `lastPromotedSpec` nor the state's promoted revision is the unanalysed target's
/// (the core's `initialize` once set it to the target's, with `Promoted=True`).
#[tokio::test]
async fn a_status_lost_mid_rollout_never_records_the_unanalysed_revision_as_promoted() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    let unanalysed = status_lost_mid_rollout(&c).await;
    run_until(&c, "Initialized", 5).await;
    let status = c.get(CANARY).unwrap()["status"].clone();
    assert_ne!(
        status["lastPromotedSpec"], unanalysed,
        "the unanalysed target recorded as promoted while the primary runs podinfo:1: {status}"
    );
    assert_ne!(status["state"]["promoted_revision"], unanalysed, "{status}");
}

/// While the re-onboarding waits for the kept primary to be ready, a deleted primary is
/// recreated from the template recorded for it (`podinfo:1`), not from the unanalysed target.
#[tokio::test]
async fn a_primary_deleted_while_re_onboarding_is_recreated_from_the_template_it_ran() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    status_lost_mid_rollout(&c).await;
    // The kept primary is rolling (not ready): onboarding waits for it.
    let mut primary = c.get(PRIMARY).unwrap();
    primary["status"]["readyReplicas"] = json!(0);
    c.put(PRIMARY, primary);
    c.advance_clock(Duration::from_secs(60));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.phase(), "Initializing");
    let recorded = c.get(CANARY).unwrap()["status"]["primaryTemplate"].clone();
    assert_eq!(recorded["spec"]["containers"][0]["image"], "podinfo:1");
    c.delete(PRIMARY);
    c.advance_clock(Duration::from_secs(60));
    let _ = c.reconcile(&c.context()).await;
    let primary = c.get(PRIMARY).expect("primary recreated");
    assert_eq!(
        primary["spec"]["template"]["spec"]["containers"][0]["image"], "podinfo:1",
        "the primary, which serves all traffic, recreated from the unanalysed target"
    );
}
