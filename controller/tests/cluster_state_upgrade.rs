//! Upgrades and downgrades mid-rollout, through the API: a controller reads the `status.state`
//! an older controller recorded (no `version`) and resumes it; a state recorded by a newer
//! controller holds the rollout, with the version named in the status and an Event.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use serde_json::json;

/// A cluster whose rollout of `podinfo:2` is under way at 10%.
async fn mid_rollout() -> FakeCluster {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    run_until(&c, "Initialized", 10).await;
    c.advance_clock(Duration::from_secs(60));
    set_image(&c, "podinfo:2");
    let weight = |c: &FakeCluster| c.get(CANARY).unwrap()["status"]["canaryWeight"].clone();
    for _ in 0..10 {
        if weight(&c) == json!(10) {
            return c;
        }
        c.advance_clock(Duration::from_secs(60));
        c.reconcile(&c.context()).await.expect("reconcile");
        c.settle();
    }
    panic!("the rollout did not reach 10%; at {}", weight(&c));
}

/// Rewrites the recorded state with `edit`, as another controller version would have left it.
fn edit_state(c: &FakeCluster, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let mut canary = c.get(CANARY).unwrap();
    edit(
        canary["status"]["state"]
            .as_object_mut()
            .expect("a recorded state"),
    );
    c.put(CANARY, canary);
}

/// The writes of the rest of the rollout, one reconcile per interval, from `c` as it stands.
async fn finish(c: &FakeCluster) -> Vec<String> {
    c.clear_calls();
    c.advance_clock(Duration::from_secs(60));
    run_until(c, "Succeeded", 20).await;
    c.writes()
}

#[tokio::test]
async fn a_controller_upgraded_mid_rollout_resumes_the_state_an_older_one_recorded() {
    let steady = mid_rollout().await;
    assert_eq!(
        steady.get(CANARY).unwrap()["status"]["state"]["version"],
        json!(1)
    );
    // Rewritten unchanged, so that both clusters count the same resourceVersions.
    edit_state(&steady, |_| {});
    let expected = finish(&steady).await;

    let upgraded = mid_rollout().await;
    edit_state(&upgraded, |state| {
        state.remove("version");
    });
    assert_eq!(finish(&upgraded).await, expected);
}

#[tokio::test]
async fn a_state_recorded_by_a_newer_controller_holds_the_rollout_and_names_its_version() {
    let c = mid_rollout().await;
    edit_state(&c, |state| {
        state.insert("version".into(), json!(2));
        state.insert(
            "canaryWeight".into(),
            json!("a shape this controller cannot read"),
        );
    });
    let routes = c.routes();
    c.clear_calls();
    c.advance_clock(Duration::from_secs(60));
    let ctx = c.context();
    c.reconcile(&ctx)
        .await
        .expect("a held rollout is not an error");

    let writes = c.writes();
    assert!(
        writes
            .iter()
            .all(|w| w.starts_with("EVENT") || w.starts_with(&format!("PATCH {CANARY}/status"))),
        "{writes:#?}"
    );
    assert!(
        writes
            .iter()
            .any(|w| w.starts_with("EVENT Warning UnreadableStatus")
                && w.contains("format version 2, written by a newer controller")),
        "{writes:#?}"
    );
    assert_eq!(c.routes(), routes);
    let status = c.get(CANARY).unwrap()["status"].clone();
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("format version 2, written by a newer controller")),
        "{status:#}"
    );
    // The newer controller's record is kept for it, not overwritten.
    assert_eq!(status["state"]["version"], json!(2));
}
