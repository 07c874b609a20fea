//! Routes not in force yet (a Gateway API parent that has not accepted the HTTPRoute's current
//! generation): read from the HTTPRoute as Flagger's router reads it, and held on by the
//! rollout core against the progress deadline. Pure: no cluster needed.

mod support;

use fledge_controller::rollout::{Action, Phase};
use fledge_controller::routes::gateway_api::not_accepted;
use serde_json::{Value, json};
use support::{Driver, SpecExt, canary_spec};

fn route(parent_refs: Value, parents: Value) -> Value {
    json!({
        "metadata": {"name": "podinfo", "namespace": "test", "generation": 4},
        "spec": {"parentRefs": parent_refs},
        "status": {"parents": parents},
    })
}

fn accepted(parent: Value, status: &str, observed: i64) -> Value {
    json!({"parentRef": parent, "conditions": [
        {"type": "ResolvedRefs", "status": "False", "observedGeneration": 1},
        {"type": "Accepted", "status": status, "observedGeneration": observed,
         "reason": "NoMatchingParent", "message": "no listener"}]})
}

#[test]
fn a_route_is_in_force_when_every_parent_accepted_its_current_generation() {
    // The spec leaves the defaults out; the status names them.
    let spec_ref = json!({"name": "public"});
    let status_ref = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway",
                            "namespace": "test", "name": "public"});
    let mesh_ref = json!({"group": "", "kind": "Service", "name": "podinfo", "port": 9898});
    let both = route(
        json!([spec_ref, mesh_ref]),
        json!([
            accepted(status_ref.clone(), "True", 4),
            accepted(mesh_ref.clone(), "True", 5)
        ]),
    );
    assert_eq!(not_accepted(&both), None);
    let refused = route(
        json!([spec_ref]),
        json!([accepted(status_ref.clone(), "False", 4)]),
    );
    assert_eq!(
        not_accepted(&refused).as_deref(),
        Some(
            "HTTPRoute test/podinfo: parent Gateway test/public does not accept it (Accepted \
             False: NoMatchingParent no listener)"
        )
    );
    let behind = route(json!([spec_ref]), json!([accepted(status_ref, "True", 3)]));
    assert!(
        not_accepted(&behind)
            .is_some_and(|m| m.contains("accepted generation 3, not the current 4")),
        "{behind}"
    );
}

#[test]
fn a_parent_that_reports_nothing_is_not_waited_on_and_another_parents_answer_is_not_its() {
    // As Flagger: an implementation that never reports status must not stall every rollout.
    let no_status = route(json!([{"name": "public"}]), Value::Null);
    assert_eq!(not_accepted(&no_status), None);
    let other = json!({"name": "internal"});
    let both = route(
        json!([{"name": "public"}, other]),
        json!([accepted(other.clone(), "False", 4)]),
    );
    assert!(
        not_accepted(&both).is_some_and(|m| m.contains("parent Gateway test/internal does not")),
        "{both}"
    );
}

#[test]
fn a_rollout_holds_while_its_routes_are_not_in_force_and_moves_on_once_they_are() {
    let mut d = Driver::new(canary_spec("stepWeight: 10\n    maxWeight: 30"));
    d.deploy("v2");
    while d.state.canary_weight == 0 {
        d.tick();
    }
    d.routes_not_accepted = Some("parent Gateway test/public does not accept it".into());
    let held: Vec<Action> = (0..3).flat_map(|_| d.tick()).collect();
    assert_eq!(d.state.canary_weight, 10);
    assert_eq!(d.state.phase, Phase::Progressing);
    assert_eq!(
        d.state.message,
        "waiting: routes not in force: parent Gateway test/public does not accept it"
    );
    assert!(
        matches!(held.as_slice(), [Action::Event { message, .. }] if message.starts_with("Holding app: routes not in force")),
        "one Event when the hold begins: {held:?}"
    );
    d.routes_not_accepted = None;
    d.tick();
    assert_eq!(d.state.canary_weight, 20, "{}", d.state.message);
}

#[test]
fn routes_never_in_force_roll_back_at_the_progress_deadline() {
    let mut d =
        Driver::new(canary_spec("stepWeight: 10\n    maxWeight: 30").with_deadline_seconds(300));
    d.deploy("v2");
    while d.state.canary_weight == 0 {
        d.tick();
    }
    d.routes_not_accepted = Some("parent Gateway test/public has not reported".into());
    for _ in 0..10 {
        d.tick();
        if d.state.phase == Phase::Failed {
            break;
        }
    }
    assert_eq!(d.state.phase, Phase::Failed);
    assert!(
        d.state.message.contains("routes not in force")
            && d.state.message.contains("progress deadline"),
        "{}",
        d.state.message
    );
    assert_eq!(d.state.canary_weight, 0);
}

/// An HTTPRoute's `status.parents` has one entry per parent and controller (`controllerName`):
/// as in Flagger, every controller's entry for a parent must accept the route.
#[test]
fn every_controllers_entry_for_a_parent_must_accept_the_route() {
    let parent = json!({"group": "", "kind": "Service", "name": "podinfo", "port": 9898});
    let entry = |controller: &str, status: &str| {
        let mut e = accepted(parent.clone(), status, 4);
        e["controllerName"] = json!(controller);
        e
    };
    let refused = route(
        json!([parent]),
        json!([
            entry("a.example/mesh", "True"),
            entry("b.example/mesh", "False")
        ]),
    );
    assert!(
        not_accepted(&refused).is_some_and(|m| m.contains("(controller b.example/mesh) does not")),
        "{refused}"
    );
    let both = route(
        json!([parent]),
        json!([
            entry("a.example/mesh", "True"),
            entry("b.example/mesh", "True")
        ]),
    );
    assert_eq!(not_accepted(&both), None);
}

/// After a promotion the canary is scaled down only once the routes back to the primary are in
/// force (Flagger reads its routes before each phase's work), and no deadline rolls the
/// promoted revision back meanwhile.
#[test]
fn the_canary_is_scaled_down_only_once_the_routes_back_to_the_primary_are_in_force() {
    let mut d =
        Driver::new(canary_spec("stepWeight: 50\n    maxWeight: 50").with_deadline_seconds(60));
    d.deploy("v2");
    for _ in 0..200 {
        if d.state.phase == Phase::Finalising {
            break;
        }
        d.tick();
    }
    assert_eq!(d.state.phase, Phase::Finalising, "{}", d.state.message);
    d.routes_not_accepted = Some("parent Gateway test/public accepted generation 3".into());
    let held: Vec<Action> = (0..10).flat_map(|_| d.tick()).collect();
    assert!(
        !held.contains(&Action::ScaleCanary { up: false }),
        "scaled down under routes not in force: {held:?}"
    );
    assert_eq!(d.state.phase, Phase::Finalising, "{}", d.state.message);
    assert!(
        d.state.message.contains("routes not in force"),
        "{}",
        d.state.message
    );
    d.routes_not_accepted = None;
    assert!(d.tick().contains(&Action::ScaleCanary { up: false }));
    assert_eq!(d.state.phase, Phase::Succeeded);
}
