//! Bad input never panics the controller: each case gives a Warning Event and a status message
//! that say what is wrong, once, and leaves no traffic on a workload that is not there.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::sync::Arc;
use std::time::Duration;

use cluster_support::*;
use fledge_controller::analysis::MetricReading;
use fledge_controller::cluster::providers::LiveObserver;
use fledge_controller::metrics::Prometheus;
use fledge_controller::router::Routes;
use fledge_controller::webhook::Webhooks;
use serde_json::json;

fn status_message(c: &FakeCluster) -> String {
    c.get(CANARY).unwrap()["status"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// A rollout of `podinfo:2` at 10% on the canary.
async fn progressing(c: &FakeCluster) {
    run_until(c, "Initialized", 5).await;
    set_image(c, "podinfo:2");
    for _ in 0..5 {
        c.reconcile(&c.context()).await.unwrap();
        c.settle();
        c.advance_clock(Duration::from_secs(60));
        if c.routes().is_some_and(|w| w.canary == 10) {
            c.clear_calls();
            return;
        }
    }
    panic!("no 10% step");
}

#[tokio::test]
async fn a_missing_target_is_reported_once_with_an_event_and_a_status_message() {
    let c = cluster_with(canary(json!({})), None);
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        events(&c),
        ["EVENT Warning TargetNotFound: target Deployment podinfo not found (spec.targetRef.name)"]
    );
    assert_eq!(
        status_message(&c),
        "target Deployment podinfo not found (spec.targetRef.name)"
    );
    // Nothing was created for a target that is not there.
    assert!(c.get(PRIMARY).is_none());
    assert!(c.routes().is_none());
    // Looking again changes nothing and says nothing new.
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_target_deleted_mid_rollout_gets_its_traffic_back_on_the_primary() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    progressing(&c).await;
    // kubectl delete deployment podinfo
    c.delete(TARGET);
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.routes().unwrap().primary, 100);
    assert_eq!(
        c.writes()[0],
        "ROUTER set_routes istio primary 100%, canary 0%"
    );
    assert!(events(&c)[0].starts_with("EVENT Warning TargetNotFound"));
}

#[tokio::test]
async fn a_deployment_without_selector_is_reported_and_not_cloned() {
    let mut target = deployment("podinfo:1");
    target["spec"]["selector"] = json!({});
    let c = cluster_with(canary(json!({})), Some(target));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(events(&c).len(), 1);
    assert!(events(&c)[0].starts_with(
        "EVENT Warning TargetWithoutSelector: Deployment podinfo has no spec.selector.matchLabels"
    ));
    assert!(status_message(&c).contains("no spec.selector.matchLabels"));
    assert!(c.get(PRIMARY).is_none());
}

#[tokio::test]
async fn an_invalid_spec_is_reported_with_the_field_that_is_wrong() {
    let c = cluster_with(
        canary(json!({"analysis": {"stepWeight": 250}})),
        Some(deployment("podinfo:1")),
    );
    c.reconcile(&c.context()).await.unwrap();
    let message = status_message(&c);
    assert!(message.contains("spec.analysis.stepWeight"), "{message}");
    assert!(events(&c)[0].starts_with("EVENT Warning InvalidSpec"));
    assert!(c.get(PRIMARY).is_none());
}

#[tokio::test]
async fn a_status_state_that_is_not_a_rollout_state_stops_the_rollout_and_says_so() {
    let mut obj = canary(json!({}));
    obj["status"] = json!({"phase": "Progressing", "state": {"phase": "Sideways"}});
    let c = cluster_with(obj, Some(deployment("podinfo:1")));
    c.reconcile(&c.context()).await.unwrap();
    assert!(events(&c)[0].starts_with("EVENT Warning UnreadableStatus"));
    assert!(status_message(&c).contains("status.state is not a rollout state"));
    // The workloads were not touched: re-initialising could promote an unanalysed revision.
    assert!(c.get(PRIMARY).is_none());
    assert_eq!(c.get(CANARY).unwrap()["status"]["phase"], "Progressing");
}

#[tokio::test]
async fn routes_edited_by_hand_between_steps_are_restored_with_an_event() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    progressing(&c).await;
    c.edit_routes(Routes {
        primary: 50,
        canary: 50,
        mirror: None,
        matched: false,
    });
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        events(&c)[0],
        "EVENT Warning RoutesRestored: routes of podinfo differ from the recorded state (found \
         primary 50%, canary 50%: edited by hand, or left by an interrupted reconcile); restored \
         to primary 90%, canary 10%"
    );
    assert_eq!(
        c.writes()[..3],
        [
            "ROUTER reconcile istio".to_string(),
            events(&c)[0].clone(),
            "ROUTER set_routes istio primary 90%, canary 10%".into(),
        ]
    );
    // The step itself then goes ahead from the restored routes.
    assert_eq!(c.routes().unwrap().canary, 20);
}

#[tokio::test]
async fn an_unknown_operator_command_is_reported_and_cleared() {
    let mut obj = canary(json!({}));
    obj["metadata"]["annotations"] = json!({"fledge.dev/command": "yolo"});
    let c = cluster_with(obj, Some(deployment("podinfo:1")));
    c.reconcile(&c.context()).await.unwrap();
    assert!(events(&c)[0].starts_with("EVENT Warning UnknownCommand"));
    assert!(
        c.get(CANARY).unwrap()["metadata"]["annotations"]
            .get("fledge.dev/command")
            .is_none()
    );
}

#[tokio::test]
async fn a_missing_metric_template_is_a_failed_check_naming_it() {
    let spec = json!({"analysis": {"metrics": [
        {"name": "errors", "templateRef": {"name": "not-there"}, "thresholdRange": {"max": 1}}
    ]}});
    let c = cluster_with(canary(spec), Some(deployment("podinfo:1")));
    progressing(&c).await;
    c.reconcile(&c.context()).await.unwrap();
    let message = status_message(&c);
    assert!(
        message.contains("MetricTemplate test/not-there not found"),
        "{message}"
    );
    assert!(events(&c)[0].starts_with("EVENT Warning Halted"));
}

/// Prometheus answering a query with a result of the wrong type (a string).
async fn wrong_typed_prometheus() -> String {
    let app = axum::Router::new().route(
        "/api/v1/query",
        axum::routing::any(|| async {
            axum::Json(json!({
                "status": "success",
                "data": {"resultType": "string", "result": [1700000000, "ninety-nine"]}
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

#[tokio::test]
async fn a_prometheus_answer_of_the_wrong_type_is_a_failed_check_with_an_event() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    progressing(&c).await;
    let address = wrong_typed_prometheus().await;
    let prometheus = Prometheus::new(&address, Duration::from_secs(2), 0).unwrap();
    let ctx = c.context_with(Arc::new(LiveObserver::new(prometheus, Webhooks::new())));
    c.reconcile(&ctx).await.unwrap();
    let events = events(&c);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].starts_with("EVENT Warning Halted"),
        "{}",
        events[0]
    );
    assert!(events[0].contains("wrong result type"), "{}", events[0]);
    assert!(status_message(&c).contains("request-success-rate"));
    assert_eq!(c.get(CANARY).unwrap()["status"]["failedChecks"], 1);
    // The canary keeps its weight: a failed check halts, it does not advance.
    assert_eq!(c.routes().unwrap().canary, 10);
}

#[tokio::test]
async fn an_unreachable_metric_source_is_a_failed_check_not_a_crash() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    progressing(&c).await;
    c.set_metric(
        "request-success-rate",
        MetricReading::Error {
            reason: "Prometheus unreachable: connection refused".into(),
        },
    );
    c.reconcile(&c.context()).await.unwrap();
    assert!(events(&c)[0].contains("Prometheus unreachable"));
}

#[tokio::test]
async fn a_canary_deleted_after_its_spec_was_broken_still_gets_its_routing_restored() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    progressing(&c).await;
    let mut obj = c.get(CANARY).unwrap();
    obj["spec"]["analysis"]["stepWeight"] = json!(500);
    obj["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:20:00Z");
    c.put(CANARY, obj);
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(c.routes().unwrap().primary, 100);
    assert_eq!(
        c.writes(),
        ["ROUTER finalize istio".to_string(), c.writes()[1].clone()]
    );
    assert!(c.writes()[1].starts_with(&format!("PATCH {CANARY}")));
    assert_eq!(c.get(CANARY).unwrap()["metadata"]["finalizers"], json!([]));
}

fn stalled(c: &FakeCluster) -> Option<serde_json::Value> {
    let status = c.get(CANARY).unwrap()["status"].clone();
    status["conditions"]
        .as_array()?
        .iter()
        .find(|cond| cond["type"] == "Stalled")
        .cloned()
}

#[tokio::test]
async fn bad_input_is_a_stalled_condition_naming_the_object_and_field_until_it_is_fixed() {
    let c = cluster_with(canary(json!({})), None);
    c.reconcile(&c.context()).await.unwrap();
    let cond = stalled(&c).expect("a Stalled condition");
    assert_eq!(
        (&cond["status"], &cond["reason"], &cond["message"]),
        (
            &json!("True"),
            &json!("TargetNotFound"),
            &json!("target Deployment podinfo not found (spec.targetRef.name)")
        )
    );
    // A target without a selector: named with its field; nothing is written for it.
    let mut target = deployment("podinfo:1");
    target["spec"]["selector"] = json!({});
    c.put(TARGET, target);
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    let cond = stalled(&c).expect("a Stalled condition");
    assert_eq!(cond["reason"], "TargetWithoutSelector");
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .contains("Deployment podinfo has no spec.selector.matchLabels")
    );
    assert!(c.get(PRIMARY).is_none());
    assert!(c.routes().is_none());
    // Fixed: the rollout starts and the condition goes.
    c.put(TARGET, deployment("podinfo:1"));
    c.settle();
    run_until(&c, "Initialized", 5).await;
    assert_eq!(stalled(&c), None);
}
