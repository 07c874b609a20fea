//! ConfigMaps and Secrets as Flagger tracks them: those the target's pod template references are
//! copied to `-primary` versions that the primary reads, and their content is part of the
//! revision, so that a change to a config alone is a rollout, analysed on the canary's pods
//! before promotion copies it for the primary.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use serde_json::{Value, json};

const CONFIG_MAPS: &str = "/api/v1/namespaces/test/configmaps";
const SECRETS: &str = "/api/v1/namespaces/test/secrets";

fn config_map(name: &str, data: Value, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": NS, "annotations": annotations},
           "data": data})
}

fn secret(name: &str, type_: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": type_,
           "metadata": {"name": name, "namespace": NS}, "data": {"token": "czNjcjN0"}})
}

/// The target, its pods reading the ConfigMap `podinfo-config` (a volume) and the Secret
/// `podinfo-secret` (`envFrom`), and whatever `extra` adds to the pod spec.
fn target_reading_configs(extra: Value) -> Value {
    let mut t = deployment("podinfo:1");
    let spec = &mut t["spec"]["template"]["spec"];
    spec["volumes"] = json!([{"name": "config", "configMap": {"name": "podinfo-config"}}]);
    spec["containers"][0]["envFrom"] = json!([{"secretRef": {"name": "podinfo-secret"}}]);
    merge(spec, &extra);
    t
}

fn set_data(c: &FakeCluster, path: &str, data: Value) {
    let mut o = c.get(path).unwrap();
    o["data"] = data;
    c.put(path, o);
}

/// Reconciles an interval apart until `done` holds (at most 30 times).
async fn reconcile_until(c: &FakeCluster, done: impl Fn(&FakeCluster) -> bool) {
    for _ in 0..30 {
        c.reconcile(&c.context()).await.expect("reconcile");
        c.settle();
        if done(c) {
            return;
        }
        c.advance_clock(Duration::from_secs(60));
    }
    panic!("not reached; at {}", c.phase());
}

#[tokio::test]
async fn a_config_only_change_is_a_rollout_analysed_before_it_reaches_the_primary() {
    let c = cluster_with(canary(json!({})), Some(target_reading_configs(json!({}))));
    c.put(
        &format!("{CONFIG_MAPS}/podinfo-config"),
        config_map("podinfo-config", json!({"a": "1"}), json!({})),
    );
    c.put(
        &format!("{SECRETS}/podinfo-secret"),
        secret("podinfo-secret", "Opaque"),
    );
    c.settle();
    run_until(&c, "Initialized", 8).await;
    let copy = |c: &FakeCluster| c.get(&format!("{CONFIG_MAPS}/podinfo-config-primary"));
    let first = copy(&c).expect("the ConfigMap's copy");
    assert_eq!(first["data"], json!({"a": "1"}));
    assert_eq!(first["metadata"]["ownerReferences"][0]["uid"], "c-uid-1");
    let secret_copy = c.get(&format!("{SECRETS}/podinfo-secret-primary")).unwrap();
    assert_eq!(secret_copy["data"], json!({"token": "czNjcjN0"}));
    assert_eq!(secret_copy["type"], "Opaque");
    // The primary reads the copies; the target, the configs themselves.
    let primary = c.get(PRIMARY).unwrap()["spec"]["template"].clone();
    assert_eq!(
        primary["spec"]["volumes"][0]["configMap"]["name"],
        "podinfo-config-primary"
    );
    assert_eq!(
        primary["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"],
        "podinfo-secret-primary"
    );
    let target = c.get(TARGET).unwrap()["spec"]["template"].clone();
    assert_eq!(
        target["spec"]["volumes"][0]["configMap"]["name"],
        "podinfo-config"
    );
    let sum = primary["metadata"]["annotations"]["fledge.dev/configs"].clone();
    assert!(sum.is_string(), "{primary}");

    // Only the ConfigMap changes: a new revision, rolled out with analysis.
    set_data(
        &c,
        &format!("{CONFIG_MAPS}/podinfo-config"),
        json!({"a": "2"}),
    );
    c.advance_clock(Duration::from_secs(60));
    reconcile_until(&c, |c| c.phase() == "Progressing").await;
    reconcile_until(&c, |c| c.routes().is_some_and(|r| r.canary > 0)).await;
    // Until promotion, the primary's pods keep reading the copy of the analysed content.
    assert_eq!(copy(&c).unwrap()["data"], json!({"a": "1"}));
    reconcile_until(&c, |c| c.phase() == "Succeeded").await;
    assert_eq!(copy(&c).unwrap()["data"], json!({"a": "2"}));
    let promoted = c.get(PRIMARY).unwrap()["spec"]["template"].clone();
    // A new checksum on the pod template restarts the primary's pods.
    assert_ne!(
        promoted["metadata"]["annotations"]["fledge.dev/configs"],
        sum
    );
    assert_eq!(
        promoted["spec"]["containers"][0]["image"],
        primary["spec"]["containers"][0]["image"]
    );
}

#[tokio::test]
async fn configs_flagger_does_not_track_are_neither_copied_nor_part_of_the_revision() {
    let extra = json!({
        "volumes": [
            {"name": "config", "configMap": {"name": "podinfo-config"}},
            {"name": "off", "configMap": {"name": "untracked"}},
            {"name": "missing", "configMap": {"name": "absent", "optional": true}},
            {"name": "pull", "secret": {"secretName": "registry"}}
        ]
    });
    let c = cluster_with(canary(json!({})), Some(target_reading_configs(extra)));
    c.put(
        &format!("{CONFIG_MAPS}/podinfo-config"),
        config_map("podinfo-config", json!({"a": "1"}), json!({})),
    );
    c.put(
        &format!("{CONFIG_MAPS}/untracked"),
        config_map(
            "untracked",
            json!({"b": "1"}),
            json!({"flagger.app/config-tracking": "disabled"}),
        ),
    );
    c.put(
        &format!("{SECRETS}/podinfo-secret"),
        secret("podinfo-secret", "Opaque"),
    );
    c.put(
        &format!("{SECRETS}/registry"),
        secret("registry", "kubernetes.io/dockerconfigjson"),
    );
    c.settle();
    run_until(&c, "Initialized", 8).await;
    for (path, copied) in [
        (format!("{CONFIG_MAPS}/podinfo-config-primary"), true),
        (format!("{SECRETS}/podinfo-secret-primary"), true),
        (format!("{CONFIG_MAPS}/untracked-primary"), false),
        (format!("{CONFIG_MAPS}/absent-primary"), false),
        (format!("{SECRETS}/registry-primary"), false),
    ] {
        assert_eq!(c.get(&path).is_some(), copied, "{path}");
    }
    let volumes = c.get(PRIMARY).unwrap()["spec"]["template"]["spec"]["volumes"].clone();
    let names: Vec<&str> = volumes
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v["configMap"]["name"]
                .as_str()
                .or(v["secret"]["secretName"].as_str())
                .unwrap()
        })
        .collect();
    assert_eq!(
        names,
        ["podinfo-config-primary", "untracked", "absent", "registry"]
    );
    // A change to an untracked config is no new revision.
    set_data(&c, &format!("{CONFIG_MAPS}/untracked"), json!({"b": "2"}));
    c.clear_calls();
    for _ in 0..3 {
        c.advance_clock(Duration::from_secs(60));
        c.reconcile(&c.context()).await.expect("reconcile");
        c.settle();
    }
    assert_eq!(c.phase(), "Initialized");
    assert_eq!(c.get(TARGET).unwrap()["spec"]["replicas"], 0);
}

/// A cluster whose target reads `podinfo-config` and `podinfo-secret`.
fn cluster_reading_configs() -> FakeCluster {
    let c = cluster_with(canary(json!({})), Some(target_reading_configs(json!({}))));
    c.put(
        &format!("{CONFIG_MAPS}/podinfo-config"),
        config_map("podinfo-config", json!({"a": "1"}), json!({})),
    );
    c.put(
        &format!("{SECRETS}/podinfo-secret"),
        secret("podinfo-secret", "Opaque"),
    );
    c.settle();
    c
}

/// Onboards, then rolls a change of the ConfigMap alone out to promotion, one reconcile an
/// interval, each in a freshly built controller; a failed reconcile is retried by the next.
async fn config_rollout(c: &FakeCluster) {
    let drive = async |phase: &str| {
        for _ in 0..30 {
            let _ = c.reconcile(&c.context()).await;
            c.settle();
            c.advance_clock(Duration::from_secs(60));
            if c.phase() == phase {
                return;
            }
        }
        panic!("{phase} not reached; at {}", c.phase());
    };
    drive("Initialized").await;
    set_data(
        c,
        &format!("{CONFIG_MAPS}/podinfo-config"),
        json!({"a": "2"}),
    );
    drive("Succeeded").await;
}

/// What the rollout leaves: the phase, the copies, the primary's pod template.
fn outcome(c: &FakeCluster) -> Vec<Value> {
    vec![
        c.get(CANARY).unwrap()["status"]["phase"].clone(),
        c.get(&format!("{CONFIG_MAPS}/podinfo-config-primary"))
            .unwrap()["data"]
            .clone(),
        c.get(&format!("{SECRETS}/podinfo-secret-primary")).unwrap()["data"].clone(),
        c.get(PRIMARY).unwrap()["spec"]["template"].clone(),
    ]
}

#[tokio::test]
async fn a_config_rollout_stopped_before_any_single_write_ends_as_one_never_stopped() {
    let steady = cluster_reading_configs();
    config_rollout(&steady).await;
    let expected = outcome(&steady);
    assert_eq!(expected[1], json!({"a": "2"}));
    let total = steady.writes().len();
    for n in 1..=total {
        let c = cluster_reading_configs();
        c.crash_at_write(n);
        config_rollout(&c).await;
        assert_eq!(outcome(&c), expected, "stopped before write {n}");
    }
}

/// The checksum on the primary's pod template, which restarts its pods when it changes.
fn primary_checksum(c: &FakeCluster) -> Value {
    c.get(PRIMARY).unwrap()["spec"]["template"]["metadata"]["annotations"]["fledge.dev/configs"]
        .clone()
}

#[tokio::test]
async fn a_primary_recreated_while_a_config_change_is_pending_is_restarted_by_its_promotion() {
    let c = cluster_reading_configs();
    run_until(&c, "Initialized", 8).await;
    let analysed = primary_checksum(&c);
    set_data(
        &c,
        &format!("{CONFIG_MAPS}/podinfo-config"),
        json!({"a": "2"}),
    );
    c.advance_clock(Duration::from_secs(60));
    reconcile_until(&c, |c| c.routes().is_some_and(|r| r.canary > 0)).await;
    c.delete(PRIMARY);
    reconcile_until(&c, |c| c.get(PRIMARY).is_some()).await;
    // Recreated reading the copies of the last promotion: its checksum is theirs, not the
    // pending change's.
    assert_eq!(
        c.get(&format!("{CONFIG_MAPS}/podinfo-config-primary"))
            .unwrap()["data"],
        json!({"a": "1"})
    );
    assert_eq!(primary_checksum(&c), analysed);
    reconcile_until(&c, |c| c.phase() == "Succeeded").await;
    assert_eq!(
        c.get(&format!("{CONFIG_MAPS}/podinfo-config-primary"))
            .unwrap()["data"],
        json!({"a": "2"})
    );
    assert_ne!(
        primary_checksum(&c),
        analysed,
        "the promotion changes the checksum, restarting the primary's pods on the new copies"
    );
}
