//! Taking over from Flagger (`--flagger-canaries`): Flagger's own Canaries are reconciled in
//! place, the objects Flagger created adopted, never recreated, and no rollout started that
//! Flagger would not have started; a Canary mid-rollout is left alone until Flagger ends it.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use fledge_controller::router::Routes;
use serde_json::{Value, json};

fn uids(c: &FakeCluster) -> Vec<(String, Value)> {
    flagger_objects()
        .into_iter()
        .map(|p| {
            let uid = c.get(&p).map(|o| o["metadata"]["uid"].clone());
            (p, uid.unwrap_or(Value::Null))
        })
        .collect()
}

/// Reconciles the Flagger Canary `n` times, a fresh controller and an interval apart each time.
async fn reconcile_times(c: &FakeCluster, n: usize) {
    for _ in 0..n {
        c.reconcile_flagger(&c.context()).await.expect("reconcile");
        c.settle();
        c.advance_clock(Duration::from_secs(60));
    }
}

#[tokio::test]
async fn flagger_created_objects_are_taken_over_in_place_with_no_rollout_started() {
    let owner = flagger_owner("flagger.app/v1beta1", FLAGGER_UID);
    let c = flagger_cluster("Succeeded", 0, owner.clone());
    let before = uids(&c);
    reconcile_times(&c, 5).await;
    let writes = c.writes();
    // Nothing created, nothing deleted: every object Flagger made is the same object.
    assert_eq!(uids(&c), before);
    let calls = c.calls();
    assert!(
        calls
            .iter()
            .all(|w| w.method != "POST" || w.path.contains("/events")),
        "{writes:#?}"
    );
    assert!(calls.iter().all(|w| w.method != "DELETE"), "{writes:#?}");
    assert!(calls.iter().all(|w| !w.created), "{writes:#?}");
    // No rollout: the primary keeps its template, the target stays at zero, traffic stays.
    let primary = c.get(PRIMARY).unwrap();
    assert_eq!(
        primary["spec"]["template"]["spec"]["containers"][0]["image"],
        "podinfo:1"
    );
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], 0);
    assert_eq!(c.routes(), Some(Routes::PRIMARY_ONLY));
    assert!(
        !writes.iter().any(|w| w.contains("set_routes")),
        "{writes:#?}"
    );
    let status = c.flagger_status();
    assert_eq!(status["phase"], "Succeeded");
    assert_eq!(status["canaryWeight"], json!(0));
    // Flagger's hashes are left as found: going back to Flagger starts no rollout either.
    assert_eq!(status["lastAppliedSpec"], FLAGGER_HASH);
    assert_eq!(status["lastPromotedSpec"], FLAGGER_HASH);
    assert_eq!(status["conditions"][0]["type"], "Promoted");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(status["conditions"][0]["reason"], "Succeeded");
    // Fledge's own state is in the annotation, not the status.
    assert!(status.get("state").is_none(), "{status}");
    let canary = c.get(FLAGGER_CANARY).unwrap();
    let record = canary["metadata"]["annotations"]["fledge.dev/state"]
        .as_str()
        .expect("the record");
    let record: Value = serde_json::from_str(record).unwrap();
    assert_eq!(record["status"]["state"]["phase"], "Succeeded");
    assert_eq!(record["flaggerLastAppliedSpec"], FLAGGER_HASH);
    // Every object keeps one controller, Flagger's Canary, the same object Fledge reconciles.
    for path in flagger_objects() {
        let owners = &c.get(&path).unwrap()["metadata"]["ownerReferences"];
        assert_eq!(owners, &owner, "{path}");
    }
    let events = events(&c);
    assert!(
        events.iter().any(|e| e.contains("Normal TakenOver")),
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|e| e.contains("Progressing")),
        "{events:#?}"
    );
}

#[tokio::test]
async fn objects_owned_by_an_older_flagger_canary_get_their_controller_reference_replaced() {
    // Owned by Flagger's Canary of another API version and UID (the Canary applied again).
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1alpha3", "old-uid"),
    );
    let before = uids(&c);
    reconcile_times(&c, 1).await;
    assert_eq!(uids(&c), before);
    let ours = json!([{"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo",
                       "uid": FLAGGER_UID, "controller": true}]);
    for path in flagger_objects() {
        let owners = &c.get(&path).unwrap()["metadata"]["ownerReferences"];
        assert_eq!(owners, &ours, "{path}");
    }
    let events = events(&c);
    assert!(
        events
            .iter()
            .any(|e| e.contains("adopted Deployment podinfo-primary")),
        "{events:#?}"
    );
}

#[tokio::test]
async fn a_flagger_canary_mid_rollout_is_refused_until_flagger_has_ended_the_rollout() {
    for phase in ["Progressing", "Promoting", "Finalising", "WaitingPromotion"] {
        let c = flagger_cluster(phase, 20, flagger_owner("flagger.app/v1beta1", FLAGGER_UID));
        c.edit_routes(Routes {
            primary: 80,
            canary: 20,
            mirror: None,
            matched: false,
        });
        reconcile_times(&c, 2).await;
        let writes = c.writes();
        // Only the Canary itself is written: its condition and Fledge's record of the message.
        assert!(
            writes
                .iter()
                .all(|w| w.starts_with("EVENT") || w.contains(FLAGGER_CANARY)),
            "{phase}: {writes:#?}"
        );
        let refused = events(&c);
        assert_eq!(refused.len(), 1, "said once: {refused:#?}");
        assert!(
            refused[0].contains("Warning TakeOverRefused"),
            "{refused:#?}"
        );
        assert!(refused[0].contains(phase), "{refused:#?}");
        let status = c.flagger_status();
        assert_eq!(status["phase"], phase);
        assert_eq!(status["canaryWeight"], json!(20));
        let stalled = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Stalled")
            .cloned()
            .expect("a Stalled condition");
        assert_eq!(stalled["reason"], "TakeOverRefused");
        // Flagger, scaled back up, ends the rollout: the next reconcile takes the Canary over.
        let mut canary = c.get(FLAGGER_CANARY).unwrap();
        canary["status"] = flagger_canary("Succeeded", 0)["status"].clone();
        canary["status"]["lastAppliedSpec"] = json!("7a8b9c0d1");
        canary["status"]["lastPromotedSpec"] = json!("7a8b9c0d1");
        c.put(FLAGGER_CANARY, canary);
        c.edit_routes(Routes::PRIMARY_ONLY);
        c.clear_calls();
        reconcile_times(&c, 1).await;
        let taken = events(&c);
        assert!(
            taken.iter().any(|e| e.contains("Normal TakenOver")),
            "{phase}: {taken:#?}"
        );
        let status = c.flagger_status();
        assert_eq!(status["phase"], "Succeeded");
        let conditions: Vec<&str> = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["type"].as_str())
            .collect();
        assert_eq!(conditions, ["Promoted"]);
    }
}

#[tokio::test]
async fn deleting_a_taken_over_canary_undoes_it_and_releases_flaggers_finalizer_too() {
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    reconcile_times(&c, 3).await;
    // Flagger added its finalizer for revertOnDeletion; Fledge added its own at take-over.
    let mut canary = c.get(FLAGGER_CANARY).unwrap();
    let finalizers = canary["metadata"]["finalizers"].as_array().unwrap().clone();
    assert_eq!(finalizers, [json!("fledge.dev/finalizer")]);
    canary["metadata"]["finalizers"] = json!(["finalizer.flagger.app", "fledge.dev/finalizer"]);
    canary["spec"]["revertOnDeletion"] = json!(true);
    canary["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:20:00Z");
    c.put(FLAGGER_CANARY, canary);
    c.clear_calls();
    reconcile_times(&c, 5).await;
    let canary = c.get(FLAGGER_CANARY).unwrap();
    assert_eq!(canary["metadata"]["finalizers"], json!([]), "{canary}");
    // The target serves again and the primary is gone (revertOnDeletion), as Flagger would do.
    assert!(c.get(PRIMARY).is_none());
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], 2);
    assert_eq!(c.routes(), Some(Routes::PRIMARY_ONLY));
}

#[tokio::test]
async fn the_status_fledge_writes_on_a_flagger_canary_fits_flaggers_status_schema() {
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    reconcile_times(&c, 3).await;
    set_image(&c, "podinfo:2");
    for _ in 0..30 {
        c.reconcile_flagger(&c.context()).await.expect("reconcile");
        c.settle();
        c.advance_clock(Duration::from_secs(60));
        if c.flagger_status()["phase"] == "Succeeded" {
            break;
        }
    }
    assert_eq!(c.flagger_status()["phase"], "Succeeded");
    let schema = flagger_status_schema();
    let status_writes: Vec<Value> = c
        .calls()
        .into_iter()
        .filter(|w| w.method == "PATCH" && w.path == format!("{FLAGGER_CANARY}/status"))
        .map(|w| w.body["status"].clone())
        .collect();
    assert!(status_writes.len() > 5, "{status_writes:#?}");
    // Through a whole rollout, at every weight: canaryWeight is a number, even at 0.
    assert!(
        status_writes
            .iter()
            .any(|s| s["phase"] == "Progressing" && s["canaryWeight"].is_number())
    );
    for status in &status_writes {
        let violations = schema_violations(&schema, status, "status");
        assert!(violations.is_empty(), "{violations:#?}\nin {status}");
    }
    let stored = c.flagger_status();
    assert_eq!(
        schema_violations(&schema, &stored, "status"),
        Vec::<String>::new()
    );
    assert_eq!(stored["canaryWeight"], json!(0));
    // Still Flagger's: the rollout Fledge ran leaves its hashes alone.
    assert_eq!(stored["lastAppliedSpec"], FLAGGER_HASH);
    let primary = c.get(PRIMARY).unwrap();
    assert_eq!(
        primary["spec"]["template"]["spec"]["containers"][0]["image"],
        "podinfo:2"
    );
}

/// A controller with the real traffic routers over the fake API server.
fn live_context(c: &FakeCluster) -> std::sync::Arc<fledge_controller::cluster::Context> {
    use fledge_controller::cluster::providers::LiveRouting;
    let mut ctx = c.context();
    let client = ctx.client.clone();
    std::sync::Arc::get_mut(&mut ctx)
        .expect("a fresh context")
        .routing = std::sync::Arc::new(LiveRouting::new(client));
    ctx
}

#[tokio::test]
async fn the_real_router_keeps_flaggers_routing_objects_in_place_through_a_rollout() {
    let owner = flagger_owner("flagger.app/v1beta1", FLAGGER_UID);
    let c = flagger_cluster("Succeeded", 0, owner.clone());
    let before = uids(&c);
    for _ in 0..3 {
        c.reconcile_flagger(&live_context(&c))
            .await
            .expect("reconcile");
        c.settle();
        c.advance_clock(Duration::from_secs(60));
    }
    let events = events(&c);
    // Flagger's VirtualService is read as all traffic on the primary: nothing to restore.
    assert!(
        !events.iter().any(|e| e.contains("RoutesRestored")),
        "{events:#?}"
    );
    set_image(&c, "podinfo:2");
    for _ in 0..30 {
        c.reconcile_flagger(&live_context(&c))
            .await
            .expect("reconcile");
        c.settle();
        c.advance_clock(Duration::from_secs(60));
        if c.flagger_status()["phase"] == "Succeeded" {
            break;
        }
    }
    assert_eq!(c.flagger_status()["phase"], "Succeeded");
    assert_eq!(uids(&c), before);
    let calls = c.calls();
    assert!(calls.iter().all(|w| !w.created && w.method != "DELETE"));
    for path in flagger_objects() {
        let owners = &c.get(&path).unwrap()["metadata"]["ownerReferences"];
        let controllers: Vec<&Value> = owners
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["controller"] == true)
            .collect();
        assert_eq!(controllers.len(), 1, "{path}: {owners}");
        assert_eq!(controllers[0]["uid"], FLAGGER_UID, "{path}: {owners}");
        assert_eq!(controllers[0]["apiVersion"], "flagger.app/v1beta1");
    }
    // The rollout went through the VirtualService Flagger created.
    let vs = c.get(VIRTUAL_SERVICE).unwrap();
    assert!(
        calls
            .iter()
            .any(|w| w.method == "PATCH" && w.path == VIRTUAL_SERVICE),
        "{vs}"
    );
}

/// Edits the stored target's and primary's pod templates with `edit(template, is_primary)`.
fn edit_templates(c: &FakeCluster, edit: impl Fn(&mut Value, bool)) {
    for (path, primary) in [(TARGET, false), (PRIMARY, true)] {
        let mut d = c.get(path).unwrap();
        edit(&mut d["spec"]["template"], primary);
        c.put(path, d);
    }
    c.settle();
}

/// Asserts that taking over started no rollout: primary, target and traffic unchanged.
async fn assert_taken_over_with_no_rollout(c: &FakeCluster) {
    let primary_before = c.get(PRIMARY).unwrap()["spec"]["template"].clone();
    reconcile_times(c, 5).await;
    let writes = c.writes();
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], 0, "{writes:#?}");
    assert_eq!(
        c.get(PRIMARY).unwrap()["spec"]["template"],
        primary_before,
        "{writes:#?}"
    );
    assert_eq!(c.routes(), Some(Routes::PRIMARY_ONLY), "{writes:#?}");
    assert_eq!(c.flagger_status()["phase"], "Succeeded", "{writes:#?}");
}

// Review r14a, finding 2: Flagger builds the primary's pod spec with the selector-label values
// of `topologySpreadConstraints` and pod anti-affinity selectors that equal the target's name
// suffixed `-primary` (pkg/canary/deployment_controller.go, getPrimaryDeploymentTemplateSpec,
// appendPrimarySuffixToValuesIfNeeded). `same_template` does not undo that, so such a target
// (common in production) is rolled out at take-over though Flagger would start nothing.
#[tokio::test]
async fn a_primary_with_flaggers_primary_topology_and_anti_affinity_selectors_needs_no_rollout() {
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    edit_templates(&c, |t, primary| {
        let app = if primary {
            "podinfo-primary"
        } else {
            "podinfo"
        };
        t["spec"]["topologySpreadConstraints"] = json!([{
            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app": app}}}]);
        t["spec"]["affinity"] = json!({"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchExpressions": [
                    {"key": "app", "operator": "In", "values": [app]}]}}]}});
    });
    assert_taken_over_with_no_rollout(&c).await;
}

// Review r14a, finding 3: Flagger leaves out of the primary's pod template labels, not only
// its annotations, every key containing `toolkit.fluxcd.io` (pkg/canary/util.go,
// makePrimaryLabels), so such labels on the target alone are no new revision.
#[tokio::test]
async fn a_target_with_flux_pod_labels_flagger_left_out_of_the_primary_needs_no_rollout() {
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    edit_templates(&c, |t, primary| {
        if !primary {
            t["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] = json!("apps");
        }
    });
    assert_taken_over_with_no_rollout(&c).await;
}

// Review r14a, finding 1: Flagger's primary, and the Services it made, select on ONE label
// (the first of its selector labels the target's selector has, `app` by default:
// pkg/canary/deployment_controller.go, createPrimaryDeployment and getSelectorLabel); other
// selector labels of the target are copied unchanged. Fledge rewrites every selector label
// to `-primary`, so on such a target it rewrites the Services' selectors to match no pod of
// Flagger's primary (traffic to the primary is lost) and applies a primary with another
// selector (immutable: the API server refuses it at the first promotion).
#[tokio::test]
async fn flaggers_single_label_selectors_are_kept_for_a_target_selecting_on_two_labels() {
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    let mut target = c.get(TARGET).unwrap();
    target["spec"]["selector"]["matchLabels"]["team"] = json!("a");
    target["spec"]["template"]["metadata"]["labels"]["team"] = json!("a");
    c.put(TARGET, target);
    let mut primary = c.get(PRIMARY).unwrap();
    primary["spec"]["template"]["metadata"]["labels"]["team"] = json!("a");
    c.put(PRIMARY, primary);
    c.settle();
    let selectors = |c: &FakeCluster| {
        let mut out = vec![c.get(PRIMARY).unwrap()["spec"]["selector"].clone()];
        for name in ["podinfo", "podinfo-primary", "podinfo-canary"] {
            out.push(c.get(&format!("{SERVICES}/{name}")).unwrap()["spec"]["selector"].clone());
        }
        out
    };
    let before = selectors(&c);
    reconcile_times(&c, 3).await;
    assert_eq!(selectors(&c), before, "at take-over: {:#?}", c.writes());
    set_image(&c, "podinfo:2");
    for _ in 0..30 {
        reconcile_times(&c, 1).await;
        if c.flagger_status()["phase"] == "Succeeded"
            && c.get(PRIMARY).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
                == "podinfo:2"
        {
            break;
        }
    }
    assert_eq!(selectors(&c), before, "after a rollout: {:#?}", c.writes());
}

// Review r14a, finding 5: a Canary whose rollout Flagger has just ended may be followed by
// another rollout if Flagger still runs (scaled down late). Fledge takes it over only once
// Flagger's phase has held for three intervals, and leaves it alone while Flagger moves on.
#[tokio::test]
async fn a_canary_flagger_has_just_ended_is_taken_over_only_once_its_phase_has_held() {
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    // Flagger ended its rollout just now (the fake clock reads 2023-11-14T22:13:20Z).
    let set_status = |phase: &str, weight: i64, at: &str| {
        let mut canary = c.get(FLAGGER_CANARY).unwrap();
        canary["status"] = flagger_canary(phase, weight)["status"].clone();
        canary["status"]["lastTransitionTime"] = json!(at);
        c.put(FLAGGER_CANARY, canary);
    };
    set_status("Succeeded", 0, "2023-11-14T22:13:20Z");
    let only_the_canary_written = |c: &FakeCluster| {
        let writes = c.writes();
        assert!(
            writes
                .iter()
                .all(|w| w.starts_with("EVENT") || w.contains(FLAGGER_CANARY)),
            "{writes:#?}"
        );
        assert!(
            !events(c).iter().any(|e| e.contains("TakenOver")),
            "{:#?}",
            events(c)
        );
    };
    reconcile_times(&c, 2).await;
    only_the_canary_written(&c);
    let pending = events(&c);
    assert_eq!(pending.len(), 1, "said once: {pending:#?}");
    assert!(
        pending[0].contains("Warning TakeOverPending"),
        "{pending:#?}"
    );
    // Flagger still runs and starts the next rollout: refused, as any rollout under way.
    set_status("Progressing", 10, "2023-11-14T22:15:20Z");
    reconcile_times(&c, 1).await;
    only_the_canary_written(&c);
    assert!(
        events(&c)
            .iter()
            .any(|e| e.contains("Warning TakeOverRefused"))
    );
    // It ends that one (Flagger now scaled down): three intervals later, taken over.
    set_status("Succeeded", 0, "2023-11-14T22:16:20Z");
    reconcile_times(&c, 2).await;
    only_the_canary_written(&c);
    assert_eq!(c.flagger_status()["phase"], "Succeeded");
    reconcile_times(&c, 2).await;
    let taken = events(&c);
    assert!(
        taken.iter().any(|e| e.contains("Normal TakenOver")),
        "{taken:#?}"
    );
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], 0);
    assert_eq!(c.routes(), Some(Routes::PRIMARY_ONLY));
}

/// Flagger's cluster with the target's and primary's pods reading the ConfigMap
/// `podinfo-config` and Flagger's copy `podinfo-config-primary` (owned as `copy_owner` says),
/// holding `data` and `copied` respectively.
fn with_config_copies(data: Value, copied: Value, copy_owner: Value) -> FakeCluster {
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    for (name, data, owner, fields) in [
        ("podinfo-config", data, Value::Null, Value::Null),
        (
            "podinfo-config-primary",
            copied,
            copy_owner,
            flaggers_fields("v1"),
        ),
    ] {
        c.put(
            &format!("{CONFIG_MAPS}/{name}"),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
                                "ownerReferences": owner, "managedFields": fields},
                   "data": data}),
        );
    }
    edit_templates(&c, |t, primary| {
        let suffix = if primary { "-primary" } else { "" };
        t["spec"]["volumes"] = json!([{"name": "config",
            "configMap": {"name": format!("podinfo-config{suffix}")}}]);
        t["spec"]["containers"][0]["envFrom"] =
            json!([{"configMapRef": {"name": format!("podinfo-config{suffix}")}}]);
    });
    c
}

const CONFIG_MAPS: &str = "/api/v1/namespaces/test/configmaps";

// Flagger copies the ConfigMaps and Secrets the target's pods reference to `-primary` versions
// and points the primary's pod spec at them (pkg/canary/config_tracker.go): a primary whose
// references Flagger renamed so, to copies of the same content, runs the target's template, and
// no rollout is due; the copies are adopted like the other objects Flagger made.
#[tokio::test]
async fn a_primary_on_flaggers_primary_config_copies_needs_no_rollout() {
    let old = flagger_owner("flagger.app/v1alpha3", "old-uid");
    let c = with_config_copies(json!({"a": "1"}), json!({"a": "1"}), old);
    assert_taken_over_with_no_rollout(&c).await;
    let copy = c
        .get(&format!("{CONFIG_MAPS}/podinfo-config-primary"))
        .unwrap();
    assert_eq!(copy["metadata"]["uid"], "uid-podinfo-config-primary");
    assert_eq!(copy["metadata"]["ownerReferences"][0]["uid"], FLAGGER_UID);
    assert_eq!(copy["data"], json!({"a": "1"}));
}

// A config changed since Flagger last promoted (its copy holds the old content): Flagger would
// see the checksum in `trackedConfigs` change and roll it out, and so does Fledge.
#[tokio::test]
async fn a_config_changed_since_flaggers_last_promotion_is_rolled_out_at_take_over() {
    let owner = flagger_owner("flagger.app/v1beta1", FLAGGER_UID);
    let c = with_config_copies(json!({"a": "2"}), json!({"a": "1"}), owner);
    let copy = |c: &FakeCluster| {
        c.get(&format!("{CONFIG_MAPS}/podinfo-config-primary"))
            .unwrap()
    };
    reconcile_times(&c, 3).await;
    assert!(
        events(&c).iter().any(|e| e.contains("Normal TakenOver")),
        "{:#?}",
        events(&c)
    );
    assert_eq!(
        copy(&c)["data"],
        json!({"a": "1"}),
        "copied only at promotion"
    );
    for _ in 0..30 {
        reconcile_times(&c, 1).await;
        if c.flagger_status()["phase"] == "Succeeded" && copy(&c)["data"] == json!({"a": "2"}) {
            break;
        }
    }
    assert_eq!(copy(&c)["data"], json!({"a": "2"}), "{:#?}", c.writes());
    assert!(
        c.writes().iter().any(|w| w.contains("canary 10%")),
        "analysed: {:#?}",
        c.writes()
    );
}

// Review r14b, finding 1: Flagger writes its primary and its config copies with Update
// (pkg/canary/deployment_controller.go, config_tracker.go), so its field manager owns every
// field of them. Fledge writes them by server-side apply: a field Fledge leaves out is removed
// only if no other manager owns it (Kubernetes' server-side apply, "merge strategy";
// kubernetes/kubernetes#99003), so a key dropped from the target's ConfigMap since Flagger's
// last promotion stays in the `-primary` copy after Fledge's promotion. (The mock API merges
// maps on apply, which gives the same result here for that reason.)
#[tokio::test]
async fn a_key_dropped_from_a_config_leaves_flaggers_primary_copy_at_fledges_promotion() {
    let owner = flagger_owner("flagger.app/v1beta1", FLAGGER_UID);
    let c = with_config_copies(json!({"a": "1"}), json!({"a": "1", "b": "2"}), owner);
    let copy = |c: &FakeCluster| {
        c.get(&format!("{CONFIG_MAPS}/podinfo-config-primary"))
            .unwrap()
    };
    reconcile_times(&c, 3).await;
    for _ in 0..30 {
        reconcile_times(&c, 1).await;
        if c.writes().iter().any(|w| w.contains("canary 10%"))
            && c.flagger_status()["phase"] == "Succeeded"
        {
            break;
        }
    }
    assert_eq!(copy(&c)["data"], json!({"a": "1"}), "{:#?}", c.writes());
}

// Review r14b, finding 1, the primary: an annotation removed from the target's pod template
// since Flagger's last promotion is owned by Flagger's manager on the primary, so Fledge's
// apply at promotion leaves it there; the primary then runs another template than Fledge
// recorded, the record reads as stale (Flagger promoted since), and the Canary is taken over
// afresh and rolled out again, without end.
#[tokio::test]
async fn a_pod_annotation_removed_from_the_target_leaves_flaggers_primary_at_fledges_promotion() {
    let owner = flagger_owner("flagger.app/v1beta1", FLAGGER_UID);
    let c = flagger_cluster("Succeeded", 0, owner);
    edit_templates(&c, |t, primary| {
        if primary {
            t["metadata"]["annotations"]["prometheus.io/scrape"] = json!("true");
        }
    });
    reconcile_times(&c, 3).await;
    for _ in 0..30 {
        reconcile_times(&c, 1).await;
        if c.writes().iter().any(|w| w.contains("canary 10%"))
            && c.flagger_status()["phase"] == "Succeeded"
        {
            break;
        }
    }
    let primary = c.get(PRIMARY).unwrap();
    assert!(
        primary["spec"]["template"]["metadata"]["annotations"]
            .get("prometheus.io/scrape")
            .is_none(),
        "{:#?}",
        c.writes()
    );
    // And no second rollout of the same revision.
    let rollouts = |c: &FakeCluster| {
        c.writes()
            .iter()
            .filter(|w| w.contains("Normal TakenOver"))
            .count()
    };
    let before = rollouts(&c);
    reconcile_times(&c, 10).await;
    assert_eq!(rollouts(&c), before, "{:#?}", c.writes());
}

// Review r14b, finding 3: taken over with a change pending, the record holds the primary's
// own template (references already on Flagger's `-primary` copies). A primary deleted before
// that change is promoted is recreated from the record, and its references renamed again:
// `podinfo-config-primary-primary`, which does not exist, so the recreated primary's pods
// cannot start (CreateContainerConfigError) while it serves all traffic.
#[tokio::test]
async fn a_primary_recreated_from_a_taken_over_record_reads_flaggers_copies_not_copies_of_them() {
    let owner = flagger_owner("flagger.app/v1beta1", FLAGGER_UID);
    let c = with_config_copies(json!({"a": "2"}), json!({"a": "1"}), owner);
    reconcile_times(&c, 3).await;
    assert!(
        events(&c).iter().any(|e| e.contains("Normal TakenOver")),
        "{:#?}",
        events(&c)
    );
    c.delete(PRIMARY);
    reconcile_times(&c, 1).await;
    let primary = c.get(PRIMARY).expect("recreated");
    let spec = &primary["spec"]["template"]["spec"];
    assert_eq!(
        spec["volumes"][0]["configMap"]["name"],
        "podinfo-config-primary",
        "{:#?}",
        c.writes()
    );
    assert_eq!(
        spec["containers"][0]["envFrom"][0]["configMapRef"]["name"],
        "podinfo-config-primary"
    );
}

/// A take-over that cannot read the routing objects it adopts (a chart installed without the
/// `provider`/`extraProviders` of Flagger's Canaries: 403) is retried, and a Warning Event on
/// the Canary names the object refused and the setting to change: a log line alone leaves the
/// user waiting for a `TakenOver` Event that never comes (review r14c, finding 2).
#[tokio::test]
async fn a_routing_object_take_over_cannot_read_is_a_warning_event_naming_it() {
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    c.fail("GET", VIRTUAL_SERVICE, 403, 100);
    for _ in 0..3 {
        let _ = c.reconcile_flagger(&c.context()).await;
        c.settle();
        c.advance_clock(Duration::from_secs(60));
    }
    let events = events(&c);
    assert!(
        events.iter().any(|e| e.starts_with("EVENT Warning")
            && e.contains("VirtualService")
            && e.contains("extraProviders")),
        "nothing on the Canary says why take-over does not happen: {events:#?}"
    );
}

#[tokio::test]
async fn the_session_cookies_flagger_recorded_are_kept_at_take_over() {
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    let cookies = json!({
        "previousSessionAffinityCookie": "flagger-cookie=AbCdEfGhIj",
        "primarySessionAffinityCookie": "primary-cookie=PqRsTuVwXy",
    });
    let mut canary = c.get(FLAGGER_CANARY).unwrap();
    for (k, v) in cookies.as_object().unwrap() {
        canary["status"][k] = v.clone();
    }
    c.put(FLAGGER_CANARY, canary);
    reconcile_times(&c, 3).await;
    let status = c.flagger_status();
    assert_eq!(status["phase"], "Succeeded", "{status:#}");
    for (k, v) in cookies.as_object().unwrap() {
        assert_eq!(&status[k], v, "{k} in {status:#}");
    }
    assert_eq!(status["sessionAffinityCookie"], Value::Null);
}
