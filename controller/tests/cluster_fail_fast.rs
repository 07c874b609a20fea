//! Fail fast, with the reason (fluxcd/flagger#1533): a canary whose pods crash-loop, cannot pull
//! their image or fail readiness is rolled back within one interval, not at the progress
//! deadline, and the pod's reason is in the Event and the status condition.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/test/pods";

const REPLICA_SETS: &str = "/apis/apps/v1/namespaces/test/replicasets";
/// The `pod-template-hash` of the first revision (`podinfo:1`) and of the second.
const OLD: &str = "5d4b";
const NEW: &str = "7f9c";

/// A pod named `podinfo-<hash>-<id>`, of the ReplicaSet with that template hash.
fn pod(name: &str, container_status: Value) -> Value {
    let hash = name.split('-').nth(1).unwrap_or_default();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"app": "podinfo", "pod-template-hash": hash}},
        "status": {"containerStatuses": [container_status]}
    })
}

/// The target's ReplicaSet of template `hash`, numbered `revision` by the Deployment controller.
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
            "spec": {"selector": {"matchLabels": {"app": "podinfo", "pod-template-hash": hash}}}
        }),
    );
}

/// A rollout of `podinfo:2` that has just scaled the canary up; its pods have not started. The
/// Deployment controller has seen the new template and made its ReplicaSet; none is ready.
/// Returns the fake clock's time then, as the API server writes timestamps.
async fn scaled_up(c: &FakeCluster) -> String {
    run_until(c, "Initialized", 5).await;
    set_image(c, "podinfo:2");
    c.advance_clock(Duration::from_secs(60));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.phase(), "Progressing");
    replica_set(c, OLD, 1);
    replica_set(c, NEW, 2);
    let mut target = c.get(TARGET).unwrap();
    target["status"] = json!({"observedGeneration": target["metadata"]["generation"],
                              "replicas": 2, "readyReplicas": 0, "updatedReplicas": 0});
    c.put(TARGET, target);
    c.clear_calls();
    let now = c.clock.load(std::sync::atomic::Ordering::SeqCst);
    chrono::DateTime::from_timestamp_millis(now as i64)
        .expect("the fake clock is a valid time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn rolled_back_with(c: &FakeCluster, reason: &str) {
    let status = c.get(CANARY).unwrap()["status"].clone();
    assert_eq!(status["phase"], "Failed");
    let message = status["message"].as_str().unwrap().to_string();
    assert!(message.contains(reason), "{message}");
    let events = events(c);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("EVENT Warning RolledBack") && e.contains(reason)),
        "{events:?}"
    );
    assert_eq!(c.routes().map(|r| r.canary), Some(0));
}

#[tokio::test]
async fn a_crash_looping_canary_is_rolled_back_at_the_next_look_with_the_pods_reason() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    scaled_up(&c).await;
    c.put(
        &format!("{PODS}/podinfo-7f9c-abcde"),
        pod(
            "podinfo-7f9c-abcde",
            json!({"name": "podinfo", "ready": false, "restartCount": 3, "image": "podinfo:2",
                   "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff",
                   "message": "back-off 40s restarting failed container"}}}),
        ),
    );
    c.advance_clock(Duration::from_secs(10));
    c.reconcile(&c.context()).await.unwrap();
    rolled_back_with(
        &c,
        "canary pod podinfo-7f9c-abcde container podinfo: CrashLoopBackOff (back-off 40s \
         restarting failed container)",
    );
}

#[tokio::test]
async fn a_canary_whose_image_cannot_be_pulled_is_rolled_back_with_the_reason() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    let scaled_up_at = scaled_up(&c).await;
    let mut p = pod(
        "podinfo-7f9c-fghij",
        json!({"name": "podinfo", "ready": false, "restartCount": 0, "image": "podinfo:2",
               "imageID": "", "state": {"waiting": {"reason": "ImagePullBackOff"}}}),
    );
    // Created at the scale-up: past the grace two minutes later.
    p["metadata"]["creationTimestamp"] = json!(scaled_up_at);
    c.put(&format!("{PODS}/podinfo-7f9c-fghij"), p);
    c.advance_clock(Duration::from_secs(120));
    c.reconcile(&c.context()).await.unwrap();
    rolled_back_with(&c, "container podinfo: ImagePullBackOff");
}

#[tokio::test]
async fn a_canary_failing_readiness_for_an_interval_is_rolled_back_but_not_before() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    // Running since the scale-up, never ready.
    let started = scaled_up(&c).await;
    c.put(
        &format!("{PODS}/podinfo-7f9c-klmno"),
        pod(
            "podinfo-7f9c-klmno",
            json!({"name": "podinfo", "ready": false, "started": true, "restartCount": 0,
                   "image": "podinfo:2", "imageID": "",
                   "state": {"running": {"startedAt": started}}}),
        ),
    );
    c.advance_clock(Duration::from_secs(30));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        c.phase(),
        "Progressing",
        "still starting within the interval"
    );
    c.advance_clock(Duration::from_secs(30));
    c.reconcile(&c.context()).await.unwrap();
    rolled_back_with(
        &c,
        "canary pod podinfo-7f9c-klmno container podinfo: not ready after running for the \
         analysis interval of 1m",
    );
}

/// Review of issue 13 item 6 (fails today): an init container that crash-loops (the pod shows
/// `Init:CrashLoopBackOff`) keeps the canary from ever starting, but only `containerStatuses`
/// are read (their state is `PodInitializing`), so the rollout waits for the progress deadline.
#[tokio::test]
async fn a_canary_whose_init_container_crash_loops_is_rolled_back_with_the_reason() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    scaled_up(&c).await;
    let mut p = pod(
        "podinfo-7f9c-klmno",
        json!({"name": "podinfo", "ready": false, "restartCount": 0, "image": "podinfo:2",
               "imageID": "", "state": {"waiting": {"reason": "PodInitializing"}}}),
    );
    p["status"]["initContainerStatuses"] = json!([{
        "name": "migrate", "ready": false, "restartCount": 4, "image": "migrate:2", "imageID": "",
        "state": {"waiting": {"reason": "CrashLoopBackOff",
                              "message": "back-off 1m20s restarting failed container"}}
    }]);
    c.put(&format!("{PODS}/podinfo-7f9c-klmno"), p);
    c.advance_clock(Duration::from_secs(10));
    c.reconcile(&c.context()).await.unwrap();
    rolled_back_with(&c, "container migrate: CrashLoopBackOff");
}

/// Review of issue 13 item 6 (fails today): a pod that is shutting down (an earlier revision's,
/// replaced while the canary starts) fails its readiness probe as it drains, after running
/// for hours; it is no evidence against the canary, yet it rolls the rollout back at once.
#[tokio::test]
async fn a_terminating_pod_that_stopped_being_ready_does_not_roll_the_canary_back() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    scaled_up(&c).await;
    let mut p = pod(
        "podinfo-5d4b-old01",
        json!({"name": "podinfo", "ready": false, "restartCount": 0, "image": "podinfo:1",
               "imageID": "", "started": true,
               "state": {"running": {"startedAt": "2023-11-14T20:00:00Z"}}}),
    );
    p["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:15:00Z");
    c.put(&format!("{PODS}/podinfo-5d4b-old01"), p);
    c.advance_clock(Duration::from_secs(10));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        c.phase(),
        "Progressing",
        "{}",
        c.get(CANARY).unwrap()["status"]["message"]
    );
}

/// Only the pods of the canary's current revision are judged: a pod of the old ReplicaSet that
/// crash-loops (and is not terminating) says nothing about the new revision, which may be its
/// fix.
#[tokio::test]
async fn a_crash_looping_pod_of_the_old_replica_set_does_not_roll_the_new_revision_back() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    scaled_up(&c).await;
    let name = format!("podinfo-{OLD}-old02");
    c.put(
        &format!("{PODS}/{name}"),
        pod(
            &name,
            json!({"name": "podinfo", "ready": false, "restartCount": 7, "image": "podinfo:1",
                   "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff",
                   "message": "back-off 5m0s restarting failed container"}}}),
        ),
    );
    c.advance_clock(Duration::from_secs(10));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        c.phase(),
        "Progressing",
        "{}",
        c.get(CANARY).unwrap()["status"]["message"]
    );
}

/// Before the Deployment controller has seen the new template, its newest ReplicaSet is the old
/// revision's: no pod is judged then, rather than the old pods taken for the new.
#[tokio::test]
async fn no_pod_is_judged_before_the_deployment_controller_has_seen_the_new_template() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    scaled_up(&c).await;
    c.delete(&format!("{REPLICA_SETS}/podinfo-{NEW}"));
    let mut target = c.get(TARGET).unwrap();
    target["status"]["observedGeneration"] = json!(1);
    c.put(TARGET, target);
    let name = format!("podinfo-{OLD}-old03");
    c.put(
        &format!("{PODS}/{name}"),
        pod(
            &name,
            json!({"name": "podinfo", "ready": false, "restartCount": 7, "image": "podinfo:1",
                   "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}),
        ),
    );
    c.advance_clock(Duration::from_secs(10));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.phase(), "Progressing");
}

/// A pod that waits for its image or its config.
fn waiting_pod(name: &str, reason: &str, message: &str, created: &str) -> Value {
    let mut p = pod(
        name,
        json!({"name": "podinfo", "ready": false, "restartCount": 0, "image": "podinfo:2",
               "imageID": "", "state": {"waiting": {"reason": reason, "message": message}}}),
    );
    p["metadata"]["creationTimestamp"] = json!(created);
    p
}

/// One failed pull (a registry hiccup) is not a verdict: the kubelet retries it, and the
/// rollout holds for the grace, measured from the pod's creation.
#[tokio::test]
async fn an_image_pull_error_within_the_grace_holds_the_rollout_and_past_it_rolls_back() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    let created = scaled_up(&c).await;
    let name = format!("podinfo-{NEW}-pull1");
    let message = "failed to pull image podinfo:2: 502 Bad Gateway";
    c.put(
        &format!("{PODS}/{name}"),
        waiting_pod(&name, "ErrImagePull", message, &created),
    );
    c.advance_clock(Duration::from_secs(10));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.phase(), "Progressing", "within the grace");
    c.advance_clock(Duration::from_secs(100));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.phase(), "Progressing", "still within the grace");
    c.advance_clock(Duration::from_secs(10));
    c.reconcile(&c.context()).await.unwrap();
    rolled_back_with(
        &c,
        &format!(
            "container podinfo: ErrImagePull for over 120s since the pod was created ({message})"
        ),
    );
}

/// A Secret that GitOps creates seconds after the Deployment: the grace counts from the pod's
/// own creation, so a controller restarted in between does not begin it again.
#[tokio::test]
async fn a_missing_secret_is_given_the_grace_from_the_pods_creation_not_from_first_sight() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    let created = scaled_up(&c).await;
    let name = format!("podinfo-{NEW}-conf1");
    c.put(
        &format!("{PODS}/{name}"),
        waiting_pod(
            &name,
            "CreateContainerConfigError",
            "secret \"db\" not found",
            &created,
        ),
    );
    c.advance_clock(Duration::from_secs(30));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.phase(), "Progressing", "within the grace");
    // First seen by a fresh controller past the grace: the pod's age decides.
    c.advance_clock(Duration::from_secs(90));
    c.reconcile(&c.context()).await.unwrap();
    rolled_back_with(&c, "container podinfo: CreateContainerConfigError");
}

/// A crash loop after restarts stays a fast signal: no grace. Two restarts: the container
/// also failed after the kubelet's first back-off (10s), and now waits for the second (20s).
#[tokio::test]
async fn a_crash_loop_is_rolled_back_at_once_even_within_the_grace() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    let created = scaled_up(&c).await;
    let name = format!("podinfo-{NEW}-crash");
    let mut pod = waiting_pod(
        &name,
        "CrashLoopBackOff",
        "back-off 20s restarting failed container",
        &created,
    );
    pod["status"]["containerStatuses"][0]["restartCount"] = json!(2);
    c.put(&format!("{PODS}/{name}"), pod);
    c.advance_clock(Duration::from_secs(10));
    c.reconcile(&c.context()).await.unwrap();
    rolled_back_with(&c, "container podinfo: CrashLoopBackOff");
}

/// One restart at start-up is given the grace (review r13, finding 2a), not forever: still
/// backing off past it, the canary is rolled back with the reason.
#[tokio::test]
async fn a_crash_loop_after_one_restart_is_rolled_back_once_the_grace_has_passed() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    let created = scaled_up(&c).await;
    let name = format!("podinfo-{NEW}-once1");
    let message = "back-off 10s restarting failed container";
    let mut pod = waiting_pod(&name, "CrashLoopBackOff", message, &created);
    pod["status"]["containerStatuses"][0]["restartCount"] = json!(1);
    c.put(&format!("{PODS}/{name}"), pod);
    c.advance_clock(Duration::from_secs(10));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.phase(), "Progressing", "within the grace");
    c.advance_clock(Duration::from_secs(110));
    c.reconcile(&c.context()).await.unwrap();
    rolled_back_with(
        &c,
        &format!(
            "container podinfo: CrashLoopBackOff for over 120s since the pod was created \
             ({message})"
        ),
    );
}

/// The readiness grace is the pod's own probe budget when that is longer than the interval
/// (review r13, finding 2b), and no longer: past it, the canary is rolled back, naming it.
#[tokio::test]
async fn a_canary_failing_readiness_past_its_probe_budget_is_rolled_back_naming_it() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    let mut t = c.get(TARGET).unwrap();
    // 20 + 5 x 10 = 70s, longer than the interval of 1m.
    t["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = json!({
        "httpGet": {"path": "/readyz", "port": 9898},
        "initialDelaySeconds": 20, "failureThreshold": 5});
    c.put(TARGET, t);
    c.settle();
    let started = scaled_up(&c).await;
    c.put(
        &format!("{PODS}/podinfo-{NEW}-slow1"),
        pod(
            &format!("podinfo-{NEW}-slow1"),
            json!({"name": "podinfo", "ready": false, "started": true, "restartCount": 0,
                   "image": "podinfo:2", "imageID": "",
                   "state": {"running": {"startedAt": started}}}),
        ),
    );
    c.advance_clock(Duration::from_secs(65));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.phase(), "Progressing", "within the probe's budget");
    c.advance_clock(Duration::from_secs(5));
    c.reconcile(&c.context()).await.unwrap();
    rolled_back_with(
        &c,
        &format!(
            "canary pod podinfo-{NEW}-slow1 container podinfo: not ready after running for \
             70s, its startup and readiness probes' initialDelaySeconds + failureThreshold x \
             periodSeconds"
        ),
    );
}

/// The readiness grace is the longer of the interval and the probe's own budget: with
/// `interval: 15s`, an app whose readiness probe waits 30 s (`initialDelaySeconds`) is not
/// rolled back 16 s after it started, before the kubelet has even probed it (review r13,
/// finding 2b).
#[tokio::test]
async fn a_canary_warming_up_within_its_readiness_probe_delay_is_not_rolled_back() {
    let spec = json!({"analysis": {"interval": "15s",
        "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99},
                     "interval": "1m"}]}});
    let c = cluster_with(canary(spec), Some(deployment("podinfo:1")));
    let mut t = c.get(TARGET).unwrap();
    t["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = json!({
        "httpGet": {"path": "/readyz", "port": 9898}, "initialDelaySeconds": 30,
        "periodSeconds": 10, "failureThreshold": 3});
    c.put(TARGET, t);
    c.settle();
    let started = scaled_up(&c).await;
    let name = format!("podinfo-{NEW}-warm1");
    c.put(
        &format!("{PODS}/{name}"),
        pod(
            &name,
            json!({"name": "podinfo", "ready": false, "started": true, "restartCount": 0,
                   "image": "podinfo:2", "imageID": "",
                   "state": {"running": {"startedAt": started}}}),
        ),
    );
    c.advance_clock(Duration::from_secs(16));
    c.reconcile(&c.context()).await.unwrap();
    assert_ne!(c.phase(), "Failed", "{:?}", events(&c));
}

/// `CreateContainerError` is also reported for container-runtime hiccups that pass on the next
/// pod sync (containerd's "failed to reserve container name" after a slow create): it is given
/// the grace of the transient reasons, as `CreateContainerConfigError` is (review r13, 2c).
#[tokio::test]
async fn a_transient_create_container_error_is_given_the_grace() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    let created = scaled_up(&c).await;
    let name = format!("podinfo-{NEW}-abcde");
    let message =
        "failed to reserve container name \"podinfo_podinfo-7f9c-abcde\": name is reserved";
    c.put(
        &format!("{PODS}/{name}"),
        waiting_pod(&name, "CreateContainerError", message, &created),
    );
    c.advance_clock(Duration::from_secs(10));
    c.reconcile(&c.context()).await.unwrap();
    assert_ne!(c.phase(), "Failed", "{:?}", events(&c));
}

/// A slow starter guarded by a startup probe (`failureThreshold: 30, periodSeconds: 10`, up to
/// 300 s) that takes 90 s to start: the grace is the startup probe's budget plus the readiness
/// probe's, so it is not rolled back in the seconds between its startup probe passing and its
/// first readiness probe (review r13b, finding 1).
#[tokio::test]
async fn a_slow_starter_whose_startup_probe_just_passed_is_not_rolled_back() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    let mut t = c.get(TARGET).unwrap();
    t["spec"]["template"]["spec"]["containers"][0]["startupProbe"] = json!({
        "httpGet": {"path": "/healthz", "port": 9898},
        "failureThreshold": 30, "periodSeconds": 10});
    t["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = json!({
        "httpGet": {"path": "/readyz", "port": 9898}});
    c.put(TARGET, t);
    c.settle();
    let started = scaled_up(&c).await;
    let name = format!("podinfo-{NEW}-slow1");
    let slow = |started_flag: bool| {
        let mut p = pod(
            &name,
            json!({"name": "podinfo", "ready": false, "started": started_flag,
                   "restartCount": 0, "image": "podinfo:2", "imageID": "",
                   "state": {"running": {"startedAt": started}}}),
        );
        p["metadata"]["creationTimestamp"] = json!(started);
        p
    };
    // Still starting (the startup probe has not passed yet): held, as it should be.
    c.put(&format!("{PODS}/{name}"), slow(false));
    c.advance_clock(Duration::from_secs(80));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.phase(), "Progressing", "while the startup probe runs");
    // 90 s in, the startup probe passed; the readiness probe has not run yet.
    c.put(&format!("{PODS}/{name}"), slow(true));
    c.advance_clock(Duration::from_secs(10));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        c.phase(),
        "Progressing",
        "rolled back seconds after its startup probe passed: {}",
        c.get(CANARY).unwrap()["status"]["message"]
    );
}

/// The probe budgets are read from the pod's own spec: a mesh injects its proxy at admission
/// (istio-proxy, here with a slow readiness probe), so it is in the pod, not the Deployment's
/// template, and its budget counts, not the interval's (review r13b, finding 1).
#[tokio::test]
async fn an_injected_sidecar_is_judged_by_its_own_probes_from_the_pod_spec() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    let started = scaled_up(&c).await;
    let status = |name: &str, ready: bool| {
        json!({"name": name, "ready": ready, "started": true, "restartCount": 0,
               "image": name, "imageID": "", "state": {"running": {"startedAt": started}}})
    };
    let name = format!("podinfo-{NEW}-mesh1");
    let mut p = pod(&name, json!(null));
    p["metadata"]["creationTimestamp"] = json!(started);
    p["spec"] = json!({"containers": [
        {"name": "podinfo", "image": "podinfo:2"},
        // 30 + 4 x 15 = 90 s, longer than the 1m interval.
        {"name": "istio-proxy", "image": "proxyv2",
         "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021},
                            "initialDelaySeconds": 30, "failureThreshold": 4,
                            "periodSeconds": 15}}]});
    p["status"]["containerStatuses"] =
        json!([status("podinfo", true), status("istio-proxy", false)]);
    c.put(&format!("{PODS}/{name}"), p);
    c.advance_clock(Duration::from_secs(75));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        c.phase(),
        "Progressing",
        "rolled back within the sidecar's probe budget: {}",
        c.get(CANARY).unwrap()["status"]["message"]
    );
    c.advance_clock(Duration::from_secs(15));
    c.reconcile(&c.context()).await.unwrap();
    let message = c.get(CANARY).unwrap()["status"]["message"].clone();
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.contains("container istio-proxy: not ready after running for 90s")),
        "past the sidecar's probe budget: {message}"
    );
}
