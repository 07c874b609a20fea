//! The Canary's `Promoted` condition as Flagger writes it (pkg/canary/status.go,
//! `MakeStatusConditions`): its `reason` is the phase, and its `lastTransitionTime` moves only
//! when its `status` changes (Kubernetes API conventions), so `kubectl wait` and dashboards read
//! Fledge's as they read Flagger's. (From review r13, finding 4.)
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use serde_json::json;

/// A user waiting with `kubectl wait --for=condition=Promoted`, or a dashboard keyed on the
/// reason, sees `Waiting`, `WaitingPromotion`, `Promoting` and `Finalising`, not `Progressing`.
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

/// Through a rollout's phases `Promoted` stays `Unknown`, and its `lastTransitionTime` stays
/// when that status began (it once moved at every phase).
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
