//! Deleting a Canary whose recorded state cannot be read, or whose spec stopped validating
//! after onboarding: the cleanup runs from the raw spec and never cuts the app off, resumes to
//! the same end after a restart at any write, and holds (Stalled, with an Event saying what to
//! set) when even the target's name is gone.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use cluster_support::*;
use fledge_controller::cluster::status::rfc3339;
use serde_json::{Value, json};

const APEX: &str = "/api/v1/namespaces/test/services/podinfo";

/// The Service the user had before the Canary.
fn user_service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {"selector": {"app": "podinfo"},
                 "ports": [{"name": "http", "port": 9898, "targetPort": 9898, "protocol": "TCP"}]}
    })
}

/// A newer controller wrote the state (then the chart was rolled back).
fn unreadable_state(canary: &mut Value) {
    canary["status"]["state"]["version"] = json!(2);
}

/// An edit the validation refuses.
fn invalid_spec(canary: &mut Value) {
    canary["spec"]["analysis"]["stepWeight"] = json!(250);
}

/// An onboarded Canary (with the user's apex Service when `user_apex`), broken by `break_it`,
/// marked deleted now; the call log is cleared.
async fn deleted(spec: Value, user_apex: bool, break_it: impl Fn(&mut Value)) -> FakeCluster {
    let c = cluster_with(canary(spec), Some(deployment("podinfo:1")));
    if user_apex {
        c.put(APEX, user_service());
    }
    run_until(&c, "Initialized", 5).await;
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], json!(0));
    let mut obj = c.get(CANARY).unwrap();
    break_it(&mut obj);
    obj["metadata"]["deletionTimestamp"] = json!(rfc3339(c.clock.load(Ordering::SeqCst)));
    c.put(CANARY, obj);
    c.clear_calls();
    c
}

fn released(c: &FakeCluster) -> bool {
    c.get(CANARY).unwrap()["metadata"]["finalizers"] == json!([])
}

/// Reconciles, each in a freshly built controller, settling workloads a minute apart, until
/// the finalizer is released (a failed reconcile is retried by the next, as error_policy does).
async fn drive_to_release(c: &FakeCluster) {
    for _ in 0..30 {
        let _ = c.reconcile(&c.context()).await;
        c.settle();
        c.advance_clock(Duration::from_secs(60));
        if released(c) {
            return;
        }
    }
    panic!("not released: {}", settled(c));
}

/// What a deletion leaves: finalizers, the apex Service, the primary, the target's size, routes.
fn settled(c: &FakeCluster) -> Value {
    let apex = c.get(APEX);
    json!({
        "finalizers": c.get(CANARY).unwrap()["metadata"]["finalizers"],
        "apexSelector": apex.as_ref().map(|s| s["spec"]["selector"].clone()),
        "apexOwned": apex.as_ref().map(|s| s["metadata"]["ownerReferences"].is_array()),
        "primary": c.get(PRIMARY).map(|p| p["spec"]["replicas"].clone()),
        "targetReplicas": c.get(TARGET).unwrap()["spec"]["replicas"],
        "routes": c.routes().map(|r| r.to_string()),
    })
}

/// The deletion of a Canary broken by `break_it`, run without a stop and then stopped before
/// each of its writes in turn: every run ends as the one that never stopped, and that end
/// serves the app from the target through the apex Service. Returns that end.
async fn each_write_interrupted_ends_the_same(
    spec: Value,
    user_apex: bool,
    break_it: fn(&mut Value),
) -> Value {
    let steady = deleted(spec.clone(), user_apex, break_it).await;
    drive_to_release(&steady).await;
    let expected = settled(&steady);
    assert_eq!(expected["apexSelector"]["app"], "podinfo", "{expected}");
    assert_eq!(expected["targetReplicas"], json!(2), "{expected}");
    let total = steady.writes().len();
    assert!(total > 2, "{:#?}", steady.writes());
    for n in 1..=total {
        let c = deleted(spec.clone(), user_apex, break_it).await;
        c.crash_at_write(n);
        drive_to_release(&c).await;
        assert_eq!(settled(&c), expected, "stopped before write {n}");
    }
    expected
}

#[tokio::test]
async fn a_deletion_with_an_unreadable_state_interrupted_at_any_write_resumes_to_the_same_cleanup()
{
    let end = each_write_interrupted_ends_the_same(json!({}), true, unreadable_state).await;
    // The user's Service is given back; the primary is left to the garbage collector.
    assert_eq!(end["apexOwned"], json!(false), "{end}");
    assert_eq!(end["primary"], json!(2), "{end}");
}

#[tokio::test]
async fn a_revert_with_an_invalid_spec_interrupted_at_any_write_resumes_to_the_same_cleanup() {
    let spec = json!({"revertOnDeletion": true});
    let end = each_write_interrupted_ends_the_same(spec, false, invalid_spec).await;
    // The apex Service Fledge created is handed over, selecting the target; the primary goes.
    assert_eq!(end["apexOwned"], json!(false), "{end}");
    assert_eq!(end["primary"], Value::Null, "{end}");
}

#[tokio::test]
async fn a_deletion_with_an_invalid_spec_interrupted_at_any_write_resumes_to_the_same_cleanup() {
    each_write_interrupted_ends_the_same(json!({}), true, invalid_spec).await;
}

/// The cleanup of a Canary whose spec stopped validating after onboarding scales the target
/// (at zero since onboarding) up from the spec's target name before it gives the user's apex
/// Service back: at no step does the apex select the target's zero pods, nor is the finalizer
/// released with the apex on the primary (review r13, finding 3).
#[tokio::test]
async fn a_deletion_with_an_invalid_spec_scales_the_target_up_before_the_apex_goes_back() {
    let c = deleted(json!({}), true, invalid_spec).await;
    c.reconcile(&c.context()).await.unwrap();
    let apex = c.get(APEX).unwrap()["spec"]["selector"]["app"].clone();
    let target = c.get(TARGET).unwrap()["spec"]["replicas"].clone();
    let released = released(&c);
    assert!(
        !((apex == "podinfo" && target == json!(0)) || (apex == "podinfo-primary" && released)),
        "the apex selects {apex} with the target at {target} replicas (released: {released})"
    );
}

/// A held finalizer with no status at all (a backup restored without it) is the unreadable
/// case, not "never initialised": the cleanup runs from `spec.targetRef.name` and the finalizer
/// goes only once the user's apex Service is given back with the target up (review r13b,
/// finding 3).
#[tokio::test]
async fn a_deletion_with_a_lost_status_never_releases_before_the_apex_is_given_back() {
    let lost_status = |canary: &mut Value| {
        canary.as_object_mut().unwrap().remove("status");
    };
    let c = deleted(json!({}), true, lost_status).await;
    for _ in 0..5 {
        let _ = c.reconcile(&c.context()).await;
        c.settle();
        c.advance_clock(Duration::from_secs(60));
    }
    let apex = c.get(APEX).unwrap()["spec"]["selector"]["app"].clone();
    let target = c.get(TARGET).unwrap()["spec"]["replicas"].clone();
    assert!(
        !released(&c) || (apex == "podinfo" && target != json!(0)),
        "finalizer released with the apex selecting {apex} (the primary goes with the Canary) \
         and the target at {target} replicas"
    );
}

/// The Stalled condition's reason, if the Canary has one.
fn stalled_reason(c: &FakeCluster) -> Option<String> {
    let conditions = c.get(CANARY).unwrap()["status"]["conditions"].clone();
    conditions
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Stalled" && c["status"] == "True")
        .and_then(|c| c["reason"].as_str().map(String::from))
}

/// With neither the state nor the target's name readable, nothing can be scaled up before the
/// apex goes back: the finalizer stays, the Canary is Stalled and an Event says which field to
/// set; once it is set back, the deletion completes as a normal one does.
#[tokio::test]
async fn a_deletion_that_cannot_name_its_target_keeps_the_finalizer_and_says_what_to_set() {
    let c = deleted(json!({"service": {"name": "podinfo"}}), true, |obj| {
        unreadable_state(obj);
        obj["spec"]["targetRef"]["name"] = json!("");
    })
    .await;
    for _ in 0..3 {
        c.reconcile(&c.context()).await.unwrap();
        c.settle();
        c.advance_clock(Duration::from_secs(60));
    }
    assert!(!released(&c), "{}", settled(&c));
    assert_eq!(
        c.get(APEX).unwrap()["spec"]["selector"]["app"],
        "podinfo-primary"
    );
    assert_eq!(stalled_reason(&c).as_deref(), Some("InvalidSpec"));
    let warnings: Vec<String> = events(&c)
        .into_iter()
        .filter(|e| e.starts_with("EVENT Warning InvalidSpec"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("spec.targetRef.name is empty")
            && warnings[0].contains("finalizer fledge.dev/finalizer stays")
            && warnings[0].contains("kubectl edit canary podinfo -n test"),
        "{}",
        warnings[0]
    );
    // Done as the Event says.
    let mut obj = c.get(CANARY).unwrap();
    obj["spec"]["targetRef"]["name"] = json!("podinfo");
    c.put(CANARY, obj);
    drive_to_release(&c).await;
    let end = settled(&c);
    assert_eq!(end["apexSelector"]["app"], "podinfo", "{end}");
    assert_eq!(end["targetReplicas"], json!(2), "{end}");
}

/// An unknown provider leaves no way to give the routes back: the same hold, naming the field.
#[tokio::test]
async fn a_deletion_with_an_unknown_provider_keeps_the_finalizer_and_names_the_field() {
    let c = deleted(json!({}), true, |obj| {
        obj["spec"]["provider"] = json!("nginx-typo");
    })
    .await;
    c.reconcile(&c.context()).await.unwrap();
    assert!(!released(&c));
    assert_eq!(stalled_reason(&c).as_deref(), Some("InvalidSpec"));
    assert!(
        events(&c)
            .iter()
            .any(|e| e.contains("spec.provider: unknown provider `nginx-typo`")),
        "{:#?}",
        events(&c)
    );
}
