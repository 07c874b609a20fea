//! Restart safety for Flagger's Canaries, whose state Fledge keeps in an annotation (Flagger's
//! status schema is closed): a controller stopped before any single write of a take-over and
//! the rollout after it resumes from what the cluster records to the same outcome.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use serde_json::Value;

/// Takes the Flagger Canary over, then rolls `podinfo:2` out to promotion, one reconcile an
/// interval; with `restart`, every reconcile runs in a freshly built controller.
async fn take_over_and_roll_out(c: &FakeCluster, restart: bool) {
    let mut ctx = c.context();
    let mut drive = async |until: &dyn Fn(&FakeCluster) -> bool| {
        for _ in 0..30 {
            if restart {
                ctx = c.context();
            }
            // A reconcile that fails is retried, as error_policy would, by the next one.
            let _ = c.reconcile_flagger(&ctx).await;
            c.settle();
            c.advance_clock(Duration::from_secs(60));
            if until(c) {
                return;
            }
        }
        panic!("not reached; at {}", c.flagger_status());
    };
    drive(&|c| record(c).is_some_and(|r| r["status"]["state"]["phase"] == "Succeeded")).await;
    set_image(c, "podinfo:2");
    drive(&|c| {
        c.flagger_status()["phase"] == "Succeeded"
            && c.get(PRIMARY).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
                == "podinfo:2"
    })
    .await;
}

/// Fledge's record on the Flagger Canary.
fn record(c: &FakeCluster) -> Option<Value> {
    let canary = c.get(FLAGGER_CANARY)?;
    let raw = canary["metadata"]["annotations"]["fledge.dev/state"].as_str()?;
    serde_json::from_str(raw).ok()
}

/// What the take-over and the rollout leave: Flagger's status fields (times aside), the
/// primary's image, the recorded revisions, the target's size, the routes, the objects' UIDs.
fn outcome(c: &FakeCluster) -> Vec<String> {
    let status = c.flagger_status();
    let record = record(c).unwrap_or_default();
    let mut out = vec![
        status["phase"].to_string(),
        status["canaryWeight"].to_string(),
        status["lastAppliedSpec"].to_string(),
        status["lastPromotedSpec"].to_string(),
        record["flaggerLastAppliedSpec"].to_string(),
        record["status"]["state"]["revision"].to_string(),
        record["status"]["state"]["promotedRevision"].to_string(),
        c.get(PRIMARY).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"].to_string(),
        c.get(TARGET).unwrap()["spec"]["replicas"].to_string(),
        format!("{:?}", c.routes()),
    ];
    for path in flagger_objects() {
        let object = c.get(&path).unwrap_or_default();
        out.push(format!(
            "{path} {} {}",
            object["metadata"]["uid"], object["metadata"]["ownerReferences"]
        ));
    }
    out
}

fn cluster() -> FakeCluster {
    flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    )
}

#[tokio::test]
async fn a_flagger_canary_rebuilt_after_every_step_makes_the_same_writes_as_one_never_stopped() {
    let steady = cluster();
    take_over_and_roll_out(&steady, false).await;
    let restarted = cluster();
    take_over_and_roll_out(&restarted, true).await;
    let writes = steady.writes();
    assert!(writes.len() > 15, "{writes:#?}");
    assert_eq!(writes, restarted.writes());
}

#[tokio::test]
async fn a_flagger_canary_stopped_before_any_single_write_resumes_from_its_annotation() {
    let steady = cluster();
    take_over_and_roll_out(&steady, false).await;
    let expected = outcome(&steady);
    let total = steady.writes().len();
    for n in 1..=total {
        let c = cluster();
        c.crash_at_write(n);
        take_over_and_roll_out(&c, true).await;
        assert_eq!(outcome(&c), expected, "stopped before write {n}");
        // Traffic never went further than the healthy rollout sends it, and nothing Flagger
        // made was recreated.
        for w in c.writes() {
            assert!(!w.contains("canary 40%"), "stopped before write {n}: {w}");
            assert!(!w.starts_with("DELETE"), "stopped before write {n}: {w}");
        }
        assert!(
            c.calls().iter().all(|w| !w.created),
            "stopped before write {n}"
        );
    }
}

// Review r14a, finding 4: a record is taken as current while Flagger's `lastAppliedSpec` equals
// the one it was made against, but Flagger can return to the same hash after rollouts of its
// own (Fledge promoted podinfo:2; back on Flagger, podinfo:2 and then podinfo:1 were rolled
// out). Fledge, coming back, resumes from its old record (promoted podinfo:2) and rolls out
// podinfo:1, which the primary runs already. The README says such a record is ignored.
#[tokio::test]
async fn a_record_older_than_flaggers_rollouts_back_to_the_same_hash_is_not_resumed_from() {
    let c = cluster();
    let flaggers_primary_template = c.get(PRIMARY).unwrap()["spec"]["template"].clone();
    take_over_and_roll_out(&c, false).await;
    // Back on Flagger: it rolled podinfo:2 out, then podinfo:1 again; it leaves the target at
    // zero, the primary on its own template of podinfo:1, its status as in the fixture.
    set_image(&c, "podinfo:1");
    let mut target = c.get(TARGET).unwrap();
    target["spec"]["replicas"] = serde_json::json!(0);
    c.put(TARGET, target);
    // Flagger's promotions gave the primary a new flagger-id and its fields back to Flagger.
    let mut primary = c.get(PRIMARY).unwrap();
    primary["spec"]["template"] = flaggers_primary_template;
    primary["spec"]["template"]["metadata"]["annotations"]["flagger-id"] =
        serde_json::json!("9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b");
    primary["metadata"]["managedFields"] = flaggers_fields("apps/v1");
    c.put(PRIMARY, primary);
    let mut canary = c.get(FLAGGER_CANARY).unwrap();
    canary["status"] = flagger_canary("Succeeded", 0)["status"].clone();
    c.put(FLAGGER_CANARY, canary);
    c.edit_routes(fledge_controller::router::Routes::PRIMARY_ONLY);
    c.settle();
    c.clear_calls();
    for _ in 0..5 {
        c.reconcile_flagger(&c.context()).await.expect("reconcile");
        c.settle();
        c.advance_clock(Duration::from_secs(60));
    }
    let writes = c.writes();
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], 0, "{writes:#?}");
    assert_eq!(c.flagger_status()["phase"], "Succeeded", "{writes:#?}");
    assert_eq!(
        record(&c).unwrap()["status"]["state"]["promotedRevision"],
        record(&c).unwrap()["status"]["state"]["revision"],
        "{writes:#?}"
    );
}
