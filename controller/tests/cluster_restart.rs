//! Restart safety: the reconciler keeps nothing between reconciles, so a controller stopped
//! at any point and rebuilt from what the cluster records makes the same decisions.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use serde_json::json;

/// Drives a full rollout (initialisation, then `podinfo:2` to promotion), one reconcile per
/// analysis interval; with `restart`, every reconcile runs in a freshly built controller.
async fn full_rollout(c: &FakeCluster, restart: bool) {
    rollout_to(c, restart, "Succeeded").await;
}

/// Like [`full_rollout`], until the rollout ends in `end`.
async fn rollout_to(c: &FakeCluster, restart: bool, end: &str) {
    let mut ctx = c.context();
    let mut drive = async |phase: &str| {
        for _ in 0..30 {
            if restart {
                ctx = c.context();
            }
            // A reconcile that fails is retried, as error_policy would, by the next one.
            let _ = c.reconcile(&ctx).await;
            c.settle();
            c.advance_clock(Duration::from_secs(60));
            if c.phase() == phase {
                return;
            }
        }
        panic!("{phase} not reached; at {}", c.phase());
    };
    drive("Initialized").await;
    set_image(c, "podinfo:2");
    drive(end).await;
}

#[tokio::test]
async fn a_controller_rebuilt_after_every_step_makes_the_same_writes_as_one_that_never_stopped() {
    let steady = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    full_rollout(&steady, false).await;
    let restarted = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    full_rollout(&restarted, true).await;
    let writes = steady.writes();
    assert!(writes.len() > 20, "{writes:#?}");
    assert_eq!(writes, restarted.writes());
    assert!(
        writes
            .iter()
            .any(|w| w.contains("set_routes istio primary 70%, canary 30%"))
    );
}

/// The object a logged write is to: the write without its body.
fn object(write: &str) -> &str {
    write.split_once(" {").map_or(write, |(object, _)| object)
}

/// What a finished rollout leaves on the cluster.
fn outcome(
    c: &FakeCluster,
) -> (
    String,
    String,
    Option<String>,
    i64,
    Option<fledge_controller::router::Routes>,
) {
    let status = c.get(CANARY).unwrap()["status"].clone();
    let primary = c.get(PRIMARY).unwrap();
    (
        status["phase"].as_str().unwrap_or("").to_string(),
        primary["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        status["lastPromotedSpec"].as_str().map(String::from),
        c.get(TARGET).unwrap()["spec"]["replicas"]
            .as_i64()
            .unwrap_or(-1),
        c.routes(),
    )
}

#[tokio::test]
async fn a_controller_stopped_before_any_single_write_resumes_to_the_same_promotion() {
    let steady = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    full_rollout(&steady, false).await;
    let expected = outcome(&steady);
    let total = steady.writes().len();
    for n in 1..=total {
        let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
        c.crash_at_write(n);
        full_rollout(&c, true).await;
        assert_eq!(outcome(&c), expected, "stopped before write {n}");
        // The interrupted write was made again after the restart; but an Event that failed is
        // logged and counted, not retried (it must not undo the writes before it).
        // (The same object written again: a status is written with a later time, and a write
        // may also be skipped after the restart, as onboarding does an existing primary's.)
        let writes = c.writes();
        let interrupted = object(&writes[n - 1]);
        if !interrupted.starts_with("EVENT") {
            assert!(
                writes[n..].iter().any(|w| object(w) == interrupted),
                "stopped before write {n}: {interrupted} not made again"
            );
        }
        // Traffic never went further than the healthy rollout sends it.
        for w in c.writes() {
            assert!(!w.contains("canary 40%"), "stopped before write {n}: {w}");
        }
    }
}

#[tokio::test]
async fn every_strategy_and_a_rollback_make_the_same_writes_across_restarts() {
    // (strategy, spec, the phase it ends in, a write it must have made on the way)
    let cases = [
        (
            "blue/green",
            json!({"analysis": {"iterations": 3, "stepWeight": null, "maxWeight": null}}),
            "Succeeded",
            "primary 0%, canary 100%",
        ),
        (
            "A/B",
            json!({"analysis": {"iterations": 2, "stepWeight": null, "maxWeight": null,
                                "match": [{"headers": {"x-canary": {"exact": "insider"}}}]}}),
            "Succeeded",
            "A/B matches to the canary",
        ),
        (
            "mirroring",
            json!({"analysis": {"mirror": true, "mirrorWeight": 50}}),
            "Succeeded",
            "mirror 50%",
        ),
        (
            "progressive promotion",
            json!({"analysis": {"stepWeightPromotion": 10}}),
            "Succeeded",
            "Promoting podinfo: primary weight 80%",
        ),
        ("rollback", json!({}), "Failed", "primary 90%, canary 10%"),
    ];
    for (name, spec, end, route) in cases {
        let run = async |restart: bool| {
            let c = cluster_with(canary(spec.clone()), Some(deployment("podinfo:1")));
            if end == "Failed" {
                c.set_metric(
                    "request-success-rate",
                    fledge_controller::analysis::MetricReading::Value { value: 50.0 },
                );
            }
            rollout_to(&c, restart, end).await;
            c.writes()
        };
        let steady = run(false).await;
        assert_eq!(steady, run(true).await, "{name}");
        assert!(
            steady.iter().any(|w| w.contains(route)),
            "{name}: {steady:#?}"
        );
    }
}

/// What onboarding or a deletion leaves on the cluster: the Canary's phase and finalizers, the
/// apex Service's selector and owners, the primary, the target's size and the routes.
fn settled_state(c: &FakeCluster) -> serde_json::Value {
    let canary = c.get(CANARY).unwrap();
    let apex = c.get(&format!("{SERVICES}/podinfo"));
    json!({
        "phase": canary["status"]["phase"],
        "finalizers": canary["metadata"]["finalizers"],
        "apexSelector": apex.as_ref().map(|s| s["spec"]["selector"].clone()),
        "apexOwned": apex.as_ref().map(|s| s["metadata"]["ownerReferences"].is_array()),
        "primary": c.get(PRIMARY).map(|p| p["spec"]["replicas"].clone()),
        "targetReplicas": c.get(TARGET).unwrap()["spec"]["replicas"],
        "routes": c.routes().map(|r| r.to_string()),
    })
}

/// Reconciles (settling workloads, a minute apart) until `done`; with `restart`, each
/// reconcile runs in a freshly built controller, and a failed one is retried by the next.
async fn drive_until(c: &FakeCluster, restart: bool, done: impl Fn(&FakeCluster) -> bool) {
    let mut ctx = c.context();
    for _ in 0..30 {
        if restart {
            ctx = c.context();
        }
        let _ = c.reconcile(&ctx).await;
        c.settle();
        c.advance_clock(Duration::from_secs(60));
        if done(c) {
            return;
        }
    }
    panic!("not done; at {}", settled_state(c));
}

/// Onboarding is done: traffic on the primary and the target scaled to zero.
fn initialized(c: &FakeCluster) -> bool {
    c.phase_opt().as_deref() == Some("Initialized")
        && c.get(TARGET).unwrap()["spec"]["replicas"] == 0
}

fn released(c: &FakeCluster) -> bool {
    c.get(CANARY).unwrap()["metadata"]["finalizers"] == json!([])
}

fn mark_deleted(c: &FakeCluster) {
    let mut obj = c.get(CANARY).unwrap();
    obj["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:20:00Z");
    c.put(CANARY, obj);
}

/// The controller stopped before each write of a phase in turn (onboarding, the cleanup of a
/// deleted Canary, with and without `revertOnDeletion`) resumes after a restart and leaves
/// the cluster as a controller that never stopped does.
async fn each_write_interrupted_ends_the_same(
    spec: serde_json::Value,
    prepare: impl AsyncFn(&FakeCluster),
    start: impl Fn(&FakeCluster),
    done: impl Fn(&FakeCluster) -> bool,
) -> serde_json::Value {
    let steady = cluster_with(canary(spec.clone()), Some(deployment("podinfo:1")));
    prepare(&steady).await;
    start(&steady);
    let before = steady.writes().len();
    drive_until(&steady, false, &done).await;
    let expected = settled_state(&steady);
    let total = steady.writes().len() - before;
    assert!(total > 2, "{:#?}", steady.writes());
    for n in 1..=total {
        let c = cluster_with(canary(spec.clone()), Some(deployment("podinfo:1")));
        prepare(&c).await;
        start(&c);
        c.crash_at_write(n);
        drive_until(&c, true, &done).await;
        assert_eq!(settled_state(&c), expected, "stopped before write {n}");
    }
    expected
}

#[tokio::test]
async fn onboarding_interrupted_at_any_write_resumes_to_the_same_initialized_state() {
    each_write_interrupted_ends_the_same(json!({}), async |_| {}, |_| {}, initialized).await;
}

#[tokio::test]
async fn a_deletion_interrupted_at_any_write_resumes_to_the_same_cleanup() {
    let onboard = async |c: &FakeCluster| drive_until(c, false, initialized).await;
    each_write_interrupted_ends_the_same(json!({}), onboard, mark_deleted, released).await;
}

#[tokio::test]
async fn a_revert_interrupted_at_any_write_resumes_to_the_same_original_workload() {
    let onboard = async |c: &FakeCluster| drive_until(c, false, initialized).await;
    let spec = json!({"revertOnDeletion": true});
    each_write_interrupted_ends_the_same(spec, onboard, mark_deleted, released).await;
}

/// A deletion in the middle of a rollout (canary at 20%), with a user's apex Service and
/// `revertOnDeletion`, stopped before any one of its writes and resumed by a fresh controller,
/// ends as an uninterrupted one does: the user's Service given back, selecting the target.
/// (Checked and right in review r13; the tests above delete only an Initialized Canary.)
#[tokio::test]
async fn a_deletion_mid_rollout_interrupted_at_any_write_resumes_to_the_same_cleanup() {
    let mid_rollout = async |c: &FakeCluster| {
        c.put(
            &format!("{SERVICES}/podinfo"),
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "podinfo", "namespace": NS},
                "spec": {"selector": {"app": "podinfo"},
                         "ports": [{"name": "http", "port": 9898, "targetPort": 9898,
                                    "protocol": "TCP"}]}
            }),
        );
        progressing_at(c, 20).await;
    };
    let spec = json!({"revertOnDeletion": true});
    let end = each_write_interrupted_ends_the_same(spec, mid_rollout, mark_deleted, released).await;
    assert_eq!(end["apexSelector"]["app"], "podinfo", "{end}");
}
