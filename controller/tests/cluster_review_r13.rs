//! Reviewer r13's findings on issue 13, as failing tests (ignored so the branch builds green).
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use serde_json::json;

const APEX: &str = "/api/v1/namespaces/test/services/podinfo";

/// The Service the user had before the Canary.
fn user_service() -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {"selector": {"app": "podinfo"},
                 "ports": [{"name": "http", "port": 9898, "targetPort": 9898, "protocol": "TCP"}]}
    })
}

fn mark_deleted(c: &FakeCluster) {
    let mut obj = c.get(CANARY).unwrap();
    obj["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:20:00Z");
    c.put(CANARY, obj);
    c.clear_calls();
}

/// Finding 1. A Canary whose `status.state` this controller cannot read (written by a newer
/// controller before a downgrade, or edited by hand) is deleted. The cleanup released the
/// finalizer at once, without giving the user's apex Service back or scaling the target up:
/// the garbage collector then deleted the primary while the apex Service still selected
/// `app=podinfo-primary` (no endpoints; the target at zero). Now the cleanup runs from the raw
/// spec: the target is scaled up and ready before the apex is given back and the finalizer goes.
#[tokio::test]
async fn a_deletion_with_an_unreadable_state_never_releases_before_the_apex_is_given_back() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    c.put(APEX, user_service());
    run_until(&c, "Initialized", 5).await;
    assert_eq!(
        c.get(APEX).unwrap()["spec"]["selector"]["app"],
        "podinfo-primary"
    );
    // A newer controller wrote the state; then the chart was rolled back.
    let mut obj = c.get(CANARY).unwrap();
    obj["status"]["state"]["version"] = json!(2);
    c.put(CANARY, obj);
    mark_deleted(&c);
    for _ in 0..5 {
        let _ = c.reconcile(&c.context()).await;
        c.settle();
        c.advance_clock(Duration::from_secs(60));
    }
    let released = c.get(CANARY).unwrap()["metadata"]["finalizers"] == json!([]);
    let apex = c.get(APEX).unwrap()["spec"]["selector"]["app"].clone();
    let target = c.get(TARGET).unwrap()["spec"]["replicas"].clone();
    assert!(
        !released || (apex == "podinfo" && target != json!(0)),
        "finalizer released with the apex selecting {apex} (the primary goes with the Canary) \
         and the target at {target} replicas"
    );
}

const PODS: &str = "/api/v1/namespaces/test/pods";
const REPLICA_SETS: &str = "/apis/apps/v1/namespaces/test/replicasets";

/// The target's ReplicaSet of template `hash`, numbered `revision`.
fn replica_set(c: &FakeCluster, hash: &str, revision: u32) {
    let name = format!("podinfo-{hash}");
    c.put(
        &format!("{REPLICA_SETS}/{name}"),
        json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": NS,
                         "labels": {"app": "podinfo", "pod-template-hash": hash},
                         "annotations": {"deployment.kubernetes.io/revision": revision.to_string()},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": "podinfo", "uid": "", "controller": true}]},
        }),
    );
}

/// A rollout of `podinfo:2` whose canary has just been scaled up (as cluster_fail_fast.rs).
async fn scaled_up(c: &FakeCluster) {
    run_until(c, "Initialized", 5).await;
    set_image(c, "podinfo:2");
    c.advance_clock(Duration::from_secs(60));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.phase(), "Progressing");
    replica_set(c, "5d4b", 1);
    replica_set(c, "7f9c", 2);
    let mut target = c.get(TARGET).unwrap();
    target["status"] = json!({"observedGeneration": target["metadata"]["generation"],
                              "replicas": 2, "readyReplicas": 0, "updatedReplicas": 0});
    c.put(TARGET, target);
    c.clear_calls();
}

fn canary_pod(c: &FakeCluster, container_status: serde_json::Value) {
    let name = "podinfo-7f9c-abcde";
    c.put(
        &format!("{PODS}/{name}"),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS,
                         "creationTimestamp": "2023-11-14T22:15:20Z",
                         "labels": {"app": "podinfo", "pod-template-hash": "7f9c"}},
            "status": {"containerStatuses": [container_status]}
        }),
    );
}

/// Finding 2a. One container exit at start-up (the app started before the istio-proxy sidecar
/// was ready, a dependency was still starting) puts the container in `CrashLoopBackOff` for the
/// kubelet's first 10 s back-off, `restartCount` 1. It was rolled back at once, as a crash
/// loop (`restartCount` was not read). A crash loop is a container that keeps failing; one
/// restart is not evidence that it will: it is given the grace of the transient reasons.
#[tokio::test]
async fn a_single_restart_at_start_up_is_not_rolled_back_as_a_crash_loop() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    scaled_up(&c).await;
    canary_pod(
        &c,
        json!({"name": "podinfo", "ready": false, "restartCount": 1, "image": "podinfo:2",
               "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff",
               "message": "back-off 10s restarting failed container=podinfo"}},
               "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}),
    );
    c.advance_clock(Duration::from_secs(10));
    c.reconcile(&c.context()).await.unwrap();
    assert_ne!(c.phase(), "Failed", "{:?}", events(&c));
}

/// Finding 2b. The readiness grace was the analysis interval, whatever the pod's own probes
/// say: with `interval: 15s` (common in Flagger's examples), a healthy app that needs 30 s to
/// warm up (its readiness probe has `initialDelaySeconds: 30`) was rolled back 16 s after it
/// started, before the kubelet had even probed it. The grace is now the longer of the interval
/// and the probe's own budget (initialDelaySeconds + failureThreshold x periodSeconds).
#[tokio::test]
async fn a_canary_warming_up_within_its_readiness_probe_delay_is_not_rolled_back() {
    let spec = json!({"analysis": {"interval": "15s",
        "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99},
                     "interval": "1m"}]}});
    let c = cluster_with(canary(spec), Some(deployment("podinfo:1")));
    let mut t = c.get(TARGET).unwrap();
    t["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = json!({"httpGet": {"path": "/readyz", "port": 9898}, "initialDelaySeconds": 30,
               "periodSeconds": 10, "failureThreshold": 3});
    c.put(TARGET, t);
    c.settle();
    scaled_up(&c).await;
    // Started as the canary was scaled up (the fake clock's time, as the kubelet writes it).
    let now = c.clock.load(std::sync::atomic::Ordering::SeqCst);
    let started = chrono::DateTime::from_timestamp_millis(now as i64)
        .expect("the fake clock is a valid time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    canary_pod(
        &c,
        json!({"name": "podinfo", "ready": false, "started": true, "restartCount": 0,
               "image": "podinfo:2", "imageID": "",
               "state": {"running": {"startedAt": started}}}),
    );
    c.advance_clock(Duration::from_secs(16));
    c.reconcile(&c.context()).await.unwrap();
    assert_ne!(c.phase(), "Failed", "{:?}", events(&c));
}

/// Finding 4. Flagger's `Promoted` condition has `reason` set to the phase for every phase
/// (pkg/canary/status.go, `MakeStatusConditions`: `Reason: string(phase)`), so a user waiting
/// with `kubectl wait --for=condition=Promoted` or a dashboard keyed on the reason sees
/// `Waiting`, `WaitingPromotion`, `Promoting` and `Finalising`. Fledge reported all four as
/// `Progressing`.
#[test]
fn the_promoted_condition_reason_is_the_phase_as_flagger_sets_it() {
    use fledge_controller::cluster::status::promoted_condition;
    use fledge_controller::rollout::{Phase, RolloutState};
    for phase in [
        Phase::Waiting,
        Phase::WaitingPromotion,
        Phase::Promoting,
        Phase::Finalising,
    ] {
        let state = RolloutState {
            phase,
            ..RolloutState::default()
        };
        let c = promoted_condition(&state, "Deployment");
        assert_eq!(c.reason.as_deref(), Some(phase.to_string().as_str()));
        assert_eq!(c.status, "Unknown");
    }
}

/// Finding 3. A Canary whose spec was made invalid after onboarding (a typo in an edit) is
/// deleted. The cleanup took a `finalize(false, None, None)` path, which neither scaled the
/// target (at zero since onboarding) up nor waited for it, and gave the user's apex Service
/// back at once: the apex then selected the target's zero pods and the garbage collector took
/// the primary. The target's name is in the spec whether or not the rest of it validates; the
/// cleanup now scales the target up from it and waits before the apex goes back.
#[tokio::test]
async fn a_deletion_with_an_invalid_spec_scales_the_target_up_before_the_apex_goes_back() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    c.put(APEX, user_service());
    run_until(&c, "Initialized", 5).await;
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], json!(0));
    let mut obj = c.get(CANARY).unwrap();
    obj["spec"]["analysis"]["stepWeight"] = json!(250);
    c.put(CANARY, obj);
    mark_deleted(&c);
    c.reconcile(&c.context()).await.unwrap();
    let apex = c.get(APEX).unwrap()["spec"]["selector"]["app"].clone();
    let target = c.get(TARGET).unwrap()["spec"]["replicas"].clone();
    let released = c.get(CANARY).unwrap()["metadata"]["finalizers"] == json!([]);
    assert!(
        !((apex == "podinfo" && target == json!(0)) || (apex == "podinfo-primary" && released)),
        "the apex selects {apex} with the target at {target} replicas (released: {released})"
    );
}

/// Finding 2c. `CreateContainerError` is fatal at once, but the kubelet reports it for
/// container-runtime hiccups that pass by themselves on the next pod sync, such as
/// containerd's "failed to reserve container name" after a slow create, or a runtime
/// deadline under load. It belongs with the transient reasons (rolled back only after the
/// grace), as `CreateContainerConfigError` already is.
#[tokio::test]
async fn a_transient_create_container_error_is_given_the_grace() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    scaled_up(&c).await;
    canary_pod(
        &c,
        json!({"name": "podinfo", "ready": false, "restartCount": 0, "image": "podinfo:2",
               "imageID": "", "state": {"waiting": {"reason": "CreateContainerError",
               "message": "failed to reserve container name \"podinfo_podinfo-7f9c-abcde\": \
               name is reserved"}}}),
    );
    c.advance_clock(Duration::from_secs(10));
    c.reconcile(&c.context()).await.unwrap();
    assert_ne!(c.phase(), "Failed", "{:?}", events(&c));
}

/// What a deletion leaves: finalizers, the apex selector, the primary, the target's size, routes.
fn settled(c: &FakeCluster) -> serde_json::Value {
    let canary = c.get(CANARY).unwrap();
    let apex = c.get(APEX);
    json!({
        "finalizers": canary["metadata"]["finalizers"],
        "apexSelector": apex.as_ref().map(|s| s["spec"]["selector"].clone()),
        "primary": c.get(PRIMARY).map(|p| p["spec"]["replicas"].clone()),
        "targetReplicas": c.get(TARGET).unwrap()["spec"]["replicas"],
        "routes": c.routes().map(|r| r.to_string()),
    })
}

/// Not a finding (checked and right): a deletion in the middle of a rollout (canary at 20%),
/// with a user's apex Service and `revertOnDeletion`, interrupted before any one of its writes
/// and resumed by a fresh controller, ends as an uninterrupted one does. The restart tests in
/// cluster_restart.rs delete only an Initialized Canary.
#[tokio::test]
async fn r13_a_deletion_mid_rollout_interrupted_at_any_write_resumes_to_the_same_cleanup() {
    let run = async |crash: Option<usize>| {
        let c = cluster_with(
            canary(json!({"revertOnDeletion": true})),
            Some(deployment("podinfo:1")),
        );
        c.put(APEX, user_service());
        progressing_at(&c, 20).await;
        mark_deleted(&c);
        if let Some(n) = crash {
            c.crash_at_write(n);
        }
        for _ in 0..30 {
            let _ = c.reconcile(&c.context()).await;
            c.settle();
            c.advance_clock(Duration::from_secs(60));
            if c.get(CANARY).unwrap()["metadata"]["finalizers"] == json!([]) {
                break;
            }
        }
        c
    };
    let steady = run(None).await;
    let expected = settled(&steady);
    assert_eq!(expected["finalizers"], json!([]), "{expected}");
    assert_eq!(expected["apexSelector"]["app"], "podinfo", "{expected}");
    let total = steady.writes().len();
    for n in 1..=total {
        let c = run(Some(n)).await;
        assert_eq!(settled(&c), expected, "stopped before write {n}");
    }
}

/// Finding 4 (second part). A condition's `lastTransitionTime` is when its `status` last
/// changed (Kubernetes API conventions; Flagger keeps the old one when the status is unchanged,
/// pkg/canary/status.go `MakeStatusConditions`). Fledge set it to when the phase began, so it
/// moved at every phase of a rollout while `Promoted` stayed `Unknown`.
#[tokio::test]
async fn the_promoted_condition_keeps_its_transition_time_while_its_status_is_unchanged() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    progressing_at(&c, 10).await;
    let condition = |c: &FakeCluster| c.get(CANARY).unwrap()["status"]["conditions"][0].clone();
    let first = condition(&c);
    assert_eq!(first["status"], "Unknown");
    for _ in 0..10 {
        c.advance_clock(Duration::from_secs(60));
        c.reconcile(&c.context()).await.unwrap();
        c.settle();
        let now = condition(&c);
        if now["status"] != "Unknown" {
            break;
        }
        assert_eq!(
            now["lastTransitionTime"],
            first["lastTransitionTime"],
            "phase {}",
            c.phase()
        );
    }
}
