//! Reviewer r13c's findings on the last fixes of issue 13 (the status lost and re-onboarded), as
//! tests that failed before their fixes.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use serde_json::{Value, json};

/// A rollout of `podinfo:2` under way, then the Canary's status is lost (a backup restored
/// without it). Returns the revision the status recorded for the target (`lastAppliedSpec`).
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

/// Finding 1. The re-onboarding onto the kept primary (`podinfo:1`) replaces the recorded
/// revision by the primary's (tick.rs, after `advance`), but not the promoted one: the core's
/// `initialize` already set `promoted_revision` to the target's revision, so the status says
/// `lastPromotedSpec` = the unanalysed `podinfo:2`, with `Promoted=True` and "Initialization
/// done", and keeps saying so through the rollout of `podinfo:2` (and after it fails). What
/// was promoted is what the primary runs.
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

/// Finding 2. While the re-onboarding waits for the kept primary to be ready, a deleted primary
/// is recreated from the target (`keep_primary` ignores the recorded template while
/// `Initializing`), that is from the unanalysed `podinfo:2`, though the status records
/// `podinfo:1` as the primary's template. The next tick takes `podinfo:2` for a new revision and
/// "analyses" it against a primary that already serves it to all traffic. While onboarding, a
/// recorded template is the one to recreate from (it is what onboarding gave or kept).
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
