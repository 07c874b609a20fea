//! Repairs never raise risk: what the reconciler puts back on its own (routes, the primary, the
//! Services) never gives the canary more traffic than it had, never acts while the rollout is
//! suspended, and a failed Event never undoes a reconcile whose routes were written.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use fledge_controller::router::Routes;
use serde_json::{Value, json};

fn route_writes(c: &FakeCluster) -> Vec<String> {
    c.writes()
        .into_iter()
        .filter(|w| w.starts_with("ROUTER set_routes"))
        .collect()
}

#[tokio::test]
async fn the_route_drift_repair_is_skipped_while_the_rollout_is_suspended() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    progressing_at(&c, 10).await;
    let mut obj = c.get(CANARY).unwrap();
    obj["spec"]["suspend"] = json!(true);
    c.put(CANARY, obj);
    // More than recorded: a repair would bring it down; suspended, it is left alone.
    let edited = Routes {
        primary: 50,
        canary: 50,
        mirror: None,
        matched: false,
    };
    c.edit_routes(edited);
    c.advance_clock(Duration::from_secs(60));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(route_writes(&c), Vec::<String>::new());
    assert_eq!(c.routes(), Some(edited));
}

#[tokio::test]
async fn the_route_drift_repair_never_gives_the_canary_more_traffic_than_it_has() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    progressing_at(&c, 20).await;
    // As an interrupted rollback leaves them: back on the primary, the state still at 20%.
    c.edit_routes(Routes::PRIMARY_ONLY);
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(route_writes(&c), Vec::<String>::new());
    assert_eq!(c.routes(), Some(Routes::PRIMARY_ONLY));
    // More than recorded is brought down to the record.
    c.edit_routes(Routes {
        primary: 40,
        canary: 60,
        mirror: None,
        matched: false,
    });
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        route_writes(&c),
        ["ROUTER set_routes istio primary 80%, canary 20%"]
    );
}

#[tokio::test]
async fn a_failed_event_publish_after_routes_were_written_does_not_abort_the_reconcile() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    progressing_at(&c, 10).await;
    c.fail("POST", EVENTS, 500, 10);
    c.advance_clock(Duration::from_secs(60));
    let ctx = c.context();
    c.reconcile(&ctx).await.expect("the reconcile goes on");
    assert_eq!(c.routes().map(|r| r.canary), Some(20));
    assert_eq!(c.get(CANARY).unwrap()["status"]["canaryWeight"], 20);
    assert!(
        ctx.metrics
            .encode()
            .contains(r#"fledge_reconcile_errors_total{error="event"} 1"#),
        "{}",
        ctx.metrics.encode()
    );
}

#[tokio::test]
async fn a_deleted_primary_and_a_deleted_service_are_recreated_with_an_event() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    run_until(&c, "Initialized", 5).await;
    c.delete(PRIMARY);
    c.delete(&format!("{SERVICES}/podinfo-canary"));
    c.clear_calls();
    c.reconcile(&c.context()).await.unwrap();
    let primary = c.get(PRIMARY).expect("the primary is back");
    assert_eq!(
        primary["spec"]["template"]["spec"]["containers"][0]["image"],
        "podinfo:1"
    );
    assert!(c.get(&format!("{SERVICES}/podinfo-canary")).is_some());
    assert_eq!(
        events(&c),
        [
            "EVENT Warning PutBack: Deployment podinfo-primary was deleted; recreated from the \
          last promoted pod template (revision 8f281579eeca2bfd); Service podinfo-canary was \
          deleted; recreated; the rollout holds for this tick"
        ]
    );
}

#[tokio::test]
async fn a_hand_edited_service_is_put_back_naming_the_field_and_the_rollout_holds() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    progressing_at(&c, 10).await;
    let path = format!("{SERVICES}/podinfo");
    let mut apex = c.get(&path).unwrap();
    apex["spec"]["selector"] = json!({"app": "podinfo"});
    c.put(&path, apex);
    c.advance_clock(Duration::from_secs(60));
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(
        c.get(&path).unwrap()["spec"]["selector"],
        json!({"app": "podinfo-primary"})
    );
    assert_eq!(
        events(&c),
        [
            "EVENT Warning PutBack: Service podinfo: spec.selector was {app=podinfo}, put back to \
          {app=podinfo-primary}; the rollout holds for this tick"
        ]
    );
    let status = c.get(CANARY).unwrap()["status"].clone();
    assert_eq!(status["canaryWeight"], 10, "held, not advanced");
    let stalled = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|cond| cond["type"] == "Stalled")
        .expect("a Stalled condition");
    assert_eq!(stalled["reason"], "PutBack");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("Service podinfo: spec.selector")
    );
    assert_eq!(route_writes(&c), Vec::<String>::new());
}

#[tokio::test]
async fn port_discovery_adds_the_targets_other_container_ports_to_the_services() {
    let mut target = deployment("podinfo:1");
    target["spec"]["template"]["spec"]["containers"] = json!([
        {"name": "podinfo", "image": "podinfo:1",
         "ports": [{"name": "http", "containerPort": 9898}, {"containerPort": 8080}]},
        {"name": "exporter", "image": "exporter:1",
         "ports": [{"name": "metrics", "containerPort": 9797}]},
        {"name": "istio-proxy", "image": "proxy:1",
         "ports": [{"name": "http-envoy-prom", "containerPort": 15090}]}
    ]);
    let c = cluster_with(
        canary(json!({"service": {"portDiscovery": true}})),
        Some(target),
    );
    run_until(&c, "Initialized", 5).await;
    let ports = |name: &str| c.get(&format!("{SERVICES}/{name}")).unwrap()["spec"]["ports"].clone();
    let want = json!([
        {"name": "http", "port": 9898, "protocol": "TCP", "targetPort": 9898},
        {"name": "metrics", "port": 9797, "protocol": "TCP", "targetPort": 9797},
        {"name": "tcp-podinfo-1", "port": 8080, "protocol": "TCP", "targetPort": 8080}
    ]);
    for name in ["podinfo", "podinfo-primary", "podinfo-canary"] {
        assert_eq!(ports(name), want, "{name}");
    }
}

fn primary_image(c: &FakeCluster) -> Option<Value> {
    c.get(PRIMARY)
        .map(|p| p["spec"]["template"]["spec"]["containers"][0]["image"].clone())
}

/// Reconciles, each time in a freshly built controller, until the canary gets traffic.
async fn until_canary_traffic(c: &FakeCluster) {
    for _ in 0..10 {
        c.advance_clock(Duration::from_secs(60));
        c.reconcile(&c.context()).await.expect("reconcile");
        c.settle();
        if c.phase() == "Progressing" && c.routes().is_some_and(|r| r.canary > 0) {
            return;
        }
    }
    panic!("the canary got no traffic; at {}", c.phase());
}

#[tokio::test]
async fn a_primary_deleted_mid_rollout_is_recreated_from_the_last_promoted_template() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    progressing_at(&c, 10).await;
    c.delete(PRIMARY);
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(primary_image(&c), Some(json!("podinfo:1")), "not podinfo:2");
    assert_eq!(
        events(&c),
        [
            "EVENT Warning PutBack: Deployment podinfo-primary was deleted; recreated from the \
          last promoted pod template (revision 8f281579eeca2bfd); the rollout holds for this tick"
        ]
    );
    assert_eq!(c.routes().map(|r| r.canary), Some(10));
}

#[tokio::test]
async fn a_primary_deleted_mid_rollout_with_no_recorded_template_holds_the_rollout_stalled() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    progressing_at(&c, 10).await;
    // As a status written before the template was recorded.
    let mut obj = c.get(CANARY).unwrap();
    obj["status"]
        .as_object_mut()
        .unwrap()
        .remove("primaryTemplate");
    c.put(CANARY, obj);
    c.delete(PRIMARY);
    for _ in 0..2 {
        c.advance_clock(Duration::from_secs(60));
        c.reconcile(&c.context()).await.unwrap();
        assert_eq!(primary_image(&c), None, "never the unanalysed podinfo:2");
    }
    let message = "the primary Deployment podinfo-primary was deleted during a rollout and its \
        last promoted pod template is unknown (status.primaryTemplate was not recorded); the \
        rollout holds: recreate podinfo-primary from the promoted revision 8f281579eeca2bfd, or \
        set the target Deployment podinfo back to that revision";
    assert_eq!(
        events(&c),
        [format!("EVENT Warning PrimaryTemplateUnknown: {message}")],
        "one Event"
    );
    let status = c.get(CANARY).unwrap()["status"].clone();
    let stalled = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Stalled")
        .expect("a Stalled condition")
        .clone();
    assert_eq!(stalled["reason"], "PrimaryTemplateUnknown");
    assert_eq!(stalled["message"], message);
    assert_eq!(status["canaryWeight"], 10);
    assert_eq!(c.routes().map(|r| r.canary), Some(10));
    // The target set back to the promoted revision: the primary is that revision again.
    set_image(&c, "podinfo:1");
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(primary_image(&c), Some(json!("podinfo:1")));
}

#[tokio::test]
async fn the_template_recorded_at_promotion_survives_a_restart_and_recreates_the_primary() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    progressing_at(&c, 10).await;
    run_until(&c, "Succeeded", 30).await;
    let recorded = &c.get(CANARY).unwrap()["status"]["primaryTemplate"];
    assert_eq!(recorded["spec"]["containers"][0]["image"], "podinfo:2");
    set_image(&c, "podinfo:3");
    until_canary_traffic(&c).await;
    c.delete(PRIMARY);
    c.clear_calls();
    // A controller built afresh knows only what the cluster records.
    c.reconcile(&c.context()).await.unwrap();
    assert_eq!(primary_image(&c), Some(json!("podinfo:2")), "not podinfo:3");
}

/// A primary deleted after onboarding is recreated at the size it last had, as recorded in
/// `status.primaryReplicas` (here scaled by hand to 6 after onboarding at 4), not at the
/// canary's size (1 with the target at 0 and no HPA), though it serves all traffic (noticed in
/// review r13b).
#[tokio::test]
async fn a_deleted_primary_is_recreated_at_the_size_it_last_had() {
    let mut d = deployment("podinfo:1");
    d["spec"]["replicas"] = json!(4);
    let c = cluster_with(canary(json!({})), Some(d));
    run_until(&c, "Initialized", 5).await;
    for _ in 0..2 {
        c.advance_clock(Duration::from_secs(60));
        c.reconcile(&c.context()).await.unwrap();
        c.settle();
    }
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], 0);
    let mut primary = c.get(PRIMARY).unwrap();
    primary["spec"]["replicas"] = json!(6);
    c.put(PRIMARY, primary);
    c.settle();
    c.advance_clock(Duration::from_secs(60));
    c.reconcile(&c.context()).await.unwrap();
    c.delete(PRIMARY);
    c.advance_clock(Duration::from_secs(60));
    let _ = c.reconcile(&c.context()).await;
    assert_eq!(c.get(PRIMARY).unwrap()["spec"]["replicas"], 6);
}
