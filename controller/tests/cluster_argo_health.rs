//! Argo CD reads a Canary's health with its own check for `flagger.app` Canaries
//! (`resource_customizations/flagger.app/Canary/health.lua` in argoproj/argo-cd): it compares
//! `tonumber(status.canaryWeight)` with 0, walks `status.conditions` and joins each condition's
//! `message`, and maps Flagger's phases to a health; a status it cannot read that way is an
//! error in Argo CD, not a health. Every status Fledge writes, for `fledge.dev` and for
//! `flagger.app` Canaries, must read; Fledge's own states are conditions, never new phases.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use serde_json::{Value, json};

/// Flagger's phases (pkg/apis/flagger/v1beta1/status.go), the only ones the check knows.
const FLAGGER_PHASES: &[&str] = &[
    "Initializing",
    "Initialized",
    "Waiting",
    "Progressing",
    "WaitingPromotion",
    "Promoting",
    "Finalising",
    "Succeeded",
    "Failed",
    "Terminating",
    "Terminated",
];

/// The health Argo CD's check gives `status`, or why the check fails on it (where the Lua
/// would raise an error: `nil` compared, iterated or concatenated).
fn argo_health(status: &Value) -> Result<(&'static str, String), String> {
    if status.is_null() {
        return Ok(("Unknown", "No status".into()));
    }
    let weight = match &status["canaryWeight"] {
        Value::Number(n) => n.as_f64().unwrap_or_default(),
        Value::String(s) => s
            .parse::<f64>()
            .map_err(|_| format!("canaryWeight {s:?} is not a number"))?,
        other => return Err(format!("canaryWeight is {other}, not a number")),
    };
    let mut message = if weight > 0.0 {
        format!("Canary Weight: {weight} %")
    } else {
        String::new()
    };
    let conditions = status["conditions"]
        .as_array()
        .ok_or_else(|| format!("conditions is {}, not a list", status["conditions"]))?;
    for c in conditions {
        let text = c["message"]
            .as_str()
            .ok_or_else(|| format!("a condition without a message: {c}"))?;
        if !message.is_empty() {
            message.push_str(" --- ");
        }
        message.push_str(text);
    }
    let phase = status["phase"]
        .as_str()
        .ok_or_else(|| format!("phase is {}, not a string", status["phase"]))?;
    let health = match phase {
        "Failed" => "Degraded",
        "Progressing" | "Finalising" | "Promoting" => "Progressing",
        "Succeeded" | "Initialized" => "Healthy",
        _ => "Unknown",
    };
    Ok((health, format!("{phase} --- {message}")))
}

/// The status reads for Argo CD and its phase is one of Flagger's; returns the health.
fn readable(status: &Value, when: &str) -> &'static str {
    let phase = status["phase"].as_str().unwrap_or_default();
    assert!(
        FLAGGER_PHASES.contains(&phase),
        "{when}: phase {phase:?} is not Flagger's: {status}"
    );
    match argo_health(status) {
        Ok((health, _)) => health,
        Err(e) => panic!("{when}: Argo CD's health check fails: {e}\n{status}"),
    }
}

#[test]
fn the_model_of_argo_cds_check_fails_where_its_lua_does() {
    let good = json!({"phase": "Progressing", "canaryWeight": 20,
                      "conditions": [{"message": "Advance"}]});
    assert_eq!(
        argo_health(&good),
        Ok((
            "Progressing",
            "Progressing --- Canary Weight: 20 % --- Advance".into()
        ))
    );
    for (broken, field) in [
        ("canaryWeight", "canaryWeight"),
        ("conditions", "conditions"),
        ("phase", "phase"),
    ] {
        let mut s = good.clone();
        s.as_object_mut().unwrap().remove(broken);
        let e = argo_health(&s).unwrap_err();
        assert!(e.contains(field), "{e}");
    }
    let mut s = good.clone();
    s["conditions"][0] = json!({"type": "Promoted"});
    assert!(argo_health(&s).is_err());
}

#[tokio::test]
async fn every_status_of_a_fledge_canary_through_a_rollout_reads_for_argo_cd() {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    let mut healths = Vec::new();
    let mut step = |c: &FakeCluster, when: &str| {
        let status = c.get(CANARY).unwrap()["status"].clone();
        let health = readable(&status, when);
        if healths.last() != Some(&health) {
            healths.push(health);
        }
    };
    for i in 0..4 {
        c.reconcile(&c.context()).await.expect("reconcile");
        c.settle();
        step(&c, &format!("onboarding {i}"));
        c.advance_clock(Duration::from_secs(60));
    }
    set_image(&c, "podinfo:2");
    for i in 0..12 {
        c.reconcile(&c.context()).await.expect("reconcile");
        c.settle();
        step(&c, &format!("rollout {i}"));
        c.advance_clock(Duration::from_secs(60));
    }
    assert_eq!(c.phase(), "Succeeded");
    assert!(
        healths.contains(&"Progressing") && healths.last() == Some(&"Healthy"),
        "{healths:?}"
    );
}

/// A Canary Fledge cannot act on from the start (its target is missing) has no state and no
/// `Promoted` condition of its own: its status still reads.
#[tokio::test]
async fn the_status_of_a_canary_fledge_cannot_act_on_reads_for_argo_cd() {
    let c = cluster_with(canary(json!({})), None);
    c.reconcile(&c.context()).await.expect("reconcile");
    let status = c.get(CANARY).unwrap()["status"].clone();
    assert_eq!(readable(&status, "target missing"), "Unknown");
    assert_eq!(status["canaryWeight"], json!(0));
    let types: Vec<&str> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert!(types.contains(&"Stalled"), "{status}");
}

/// A Flagger Canary whose take-over is refused keeps Flagger's phase and weight; the refusal
/// is a condition.
#[tokio::test]
async fn a_refused_take_over_is_a_condition_and_the_flagger_status_still_reads() {
    let owner = flagger_owner("flagger.app/v1beta1", FLAGGER_UID);
    let c = flagger_cluster("Progressing", 20, owner);
    c.reconcile_flagger(&c.context()).await.expect("reconcile");
    let status = c.flagger_status();
    assert_eq!(readable(&status, "refused"), "Progressing");
    assert_eq!(status["phase"], "Progressing");
    assert_eq!(status["canaryWeight"], json!(20));
    let stalled = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Stalled")
        .cloned()
        .unwrap_or_default();
    assert_eq!(stalled["reason"], "TakeOverRefused", "{status}");
}

/// Taken over and idle, a Flagger Canary's status reads as Flagger's would: `Healthy`, with a
/// numeric weight of 0.
#[tokio::test]
async fn a_taken_over_flagger_canary_reads_healthy_with_a_numeric_zero_weight() {
    let owner = flagger_owner("flagger.app/v1beta1", FLAGGER_UID);
    let c = flagger_cluster("Succeeded", 0, owner);
    for _ in 0..3 {
        c.reconcile_flagger(&c.context()).await.expect("reconcile");
        c.settle();
        c.advance_clock(Duration::from_secs(60));
    }
    let status = c.flagger_status();
    assert_eq!(readable(&status, "taken over"), "Healthy");
    assert!(status["canaryWeight"].is_number(), "{status}");
}
