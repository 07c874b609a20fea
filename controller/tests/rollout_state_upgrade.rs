//! A controller upgraded mid-rollout reads the state an older one recorded and resumes it with
//! the decisions the older one would have made.
//!
//! Fixtures in `controller/tests/fixtures/`: `state-v1-<case>.json` is a `RolloutState` as the
//! rollout core of commit ce94249 serialised it, before `status.state` carried a version (so it
//! is version 1). `state-v1-<case>.resumed.json` holds the clock at which that core resumed the
//! state and every action it took from there to the end of the rollout, driven by the `support`
//! driver with the observations below. The state files are the old format: never regenerate
//! them with a newer core.

mod support;

use fledge_controller::analysis::{Counts, MetricReading};
use fledge_controller::rollout::{Action, Millis, Phase, RolloutState, StateVersion, wants};
use fledge_controller::spec::RolloutSpec;
use serde::Deserialize;
use serde_json::Value;
use support::{Driver, SpecExt, canary_spec};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn read(file: &str) -> Value {
    let path = format!("{FIXTURES}/{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Resumed {
    resumed_at: Millis,
    actions: Vec<Action>,
}

/// The recorded state of `case`, checked to be in the unversioned format.
fn recorded(case: &str) -> Value {
    let recorded = read(&format!("state-v1-{case}.json"));
    assert!(
        recorded.get("version").is_none(),
        "not an unversioned record"
    );
    recorded
}

/// Resumes the recorded state of `case` under `spec`, with `reading` (when given) answering
/// every metric before each tick; returns the actions taken to the end of the rollout and those
/// the older core took.
fn resume(
    case: &str,
    spec: RolloutSpec,
    reading: impl Fn(&Driver) -> Option<MetricReading>,
) -> (Vec<Action>, Vec<Action>) {
    let state = RolloutState::restore(&recorded(case)).expect("an older record restores");
    let then: Resumed = serde_json::from_value(read(&format!("state-v1-{case}.resumed.json")))
        .expect("the recorded decisions");
    let mut d = Driver::new(spec);
    d.state = state;
    d.now = then.resumed_at;
    d.revision = "v2".into();
    d.canary_replicas = 2;
    let start = d.log.len();
    for _ in 0..100 {
        if matches!(d.state.phase, Phase::Succeeded | Phase::Failed) {
            break;
        }
        if let Some(r) = reading(&d) {
            d.reading = Some(r);
        }
        d.tick();
    }
    (d.log[start..].to_vec(), then.actions)
}

fn threshold_spec() -> RolloutSpec {
    canary_spec("stepWeight: 20\n    threshold: 3").with_hook("load", "pre-rollout")
}

fn statistical_spec() -> RolloutSpec {
    canary_spec(
        "stepWeight: 20\n    judge: statistical\n    statistical: {minRequests: 200}\n    maxWeight: 60",
    )
}

/// 100 requests per second split by weight since the step began, 1% failing on both sides.
fn equal_error_rates(d: &Driver) -> Option<MetricReading> {
    let since = wants(&d.state, &d.spec, d.now)
        .since
        .unwrap_or(d.state.step_since);
    let seconds = d.now.saturating_sub(since) as f64 / 1000.0;
    let share = f64::from(d.state.canary_weight) / 100.0;
    let counts = |requests: f64| Counts {
        requests: requests.floor(),
        failures: (requests * 0.01).floor(),
    };
    Some(MetricReading::Counts {
        canary: counts(100.0 * share * seconds),
        primary: counts(100.0 * (1.0 - share) * seconds),
        covered: None,
    })
}

#[test]
fn a_threshold_rollout_recorded_before_versioning_resumes_with_the_same_decisions() {
    let (now, then) = resume("threshold-progressing", threshold_spec(), |_| None);
    assert!(then.contains(&Action::PromotePrimary));
    assert_eq!(now, then);
}

#[test]
fn a_statistical_rollout_recorded_before_versioning_resumes_with_its_evidence_and_decisions() {
    let state = RolloutState::restore(&recorded("statistical-progressing")).unwrap();
    assert!(
        state
            .evidence
            .error_rate
            .contains_key("request-success-rate")
    );
    let (now, then) = resume(
        "statistical-progressing",
        statistical_spec(),
        equal_error_rates,
    );
    assert!(then.contains(&Action::PromotePrimary));
    assert_eq!(now, then);
}

#[test]
fn a_state_recorded_before_versioning_keeps_every_field_and_is_rewritten_as_the_current_version() {
    for case in ["threshold-progressing", "statistical-progressing"] {
        let old = recorded(case);
        let state = RolloutState::restore(&old).unwrap();
        assert_eq!(state.version, StateVersion::CURRENT);
        let mut rewritten = serde_json::to_value(&state).unwrap();
        let version = rewritten
            .as_object_mut()
            .unwrap()
            .remove("version")
            .expect("the record carries its version");
        assert_eq!(version, serde_json::json!(StateVersion::CURRENT.0));
        // Nothing was dropped or reinterpreted on the way.
        assert_eq!(rewritten, old, "{case}");
    }
}
