//! The statistical judge's forecast as a rollout reports it: unknown until the first look has
//! seen the traffic rate, then a status condition, and a Warning Event naming the setting to
//! change when the judge is not expected to decide within the progress deadline (the rollout
//! is then judged by thresholds).
// The condition is read back through the cluster shell's status.
#![cfg(feature = "cluster")]

mod support;

use fledge_controller::analysis::{Counts, MetricReading};
use fledge_controller::cluster::status::{FORECAST, status_of};
use fledge_controller::rollout::{Action, EventReason, ForecastStatus, Phase, Severity, wants};
use support::{Driver, canary_spec};

fn reading(d: &Driver, rps: f64) -> MetricReading {
    let since = wants(&d.state, &d.spec, d.now)
        .since
        .unwrap_or(d.state.step_since);
    let seconds = d.now.saturating_sub(since) as f64 / 1000.0;
    let share = f64::from(d.state.canary_weight) / 100.0;
    let side = |n: f64| Counts {
        requests: n.floor(),
        failures: (n * 0.005).floor(),
    };
    MetricReading::Counts {
        canary: side(rps * share * seconds),
        primary: side(rps * (1.0 - share) * seconds),
        covered: None,
    }
}

/// A rollout at `rps` ticked every 15s until its first look has been made; the warnings
/// raised on the way, each with the reason it is recorded under.
fn first_look(rps: f64) -> (Driver, Vec<(String, Option<EventReason>)>) {
    let spec = canary_spec("stepWeight: 10\n    maxWeight: 50\n    judge: statistical");
    let mut d = Driver::new(spec);
    d.tick_ms = 15_000;
    d.deploy("v2");
    let condition = status_of(&d.state, "Deployment", None, None)
        .conditions
        .into_iter()
        .find(|c| c.type_ == FORECAST)
        .expect("a Forecast condition from the rollout's start");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_deref()),
        ("Unknown", Some("RateUnknown"))
    );
    let mut warnings = Vec::new();
    for _ in 0..8 {
        d.reading = Some(reading(&d, rps));
        for a in d.tick() {
            if let Action::Event {
                severity: Severity::Warning,
                message,
                reason,
            } = a
            {
                warnings.push((message, reason));
            }
        }
    }
    assert_eq!(d.state.phase, Phase::Progressing, "{}", d.state.message);
    (d, warnings)
}

#[test]
fn a_deadline_too_short_for_the_rate_seen_gets_a_false_condition_and_one_warning_event() {
    let (d, warnings) = first_look(2.0);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let (warning, reason) = &warnings[0];
    // Recorded under the reason of the False condition, not as a halted step.
    assert_eq!(*reason, Some(EventReason::ProgressDeadlineTooShort));
    assert!(
        warning.starts_with("Forecast for app: at ")
            && warning.contains(
                "requests/s the statistical judge is not expected to decide at canary weight"
            )
            && warning.contains("judged by the metrics' thresholds over each interval's traffic")
            && warning.contains("raise spec.progressDeadlineSeconds to at least"),
        "{}",
        warning
    );
    let condition = status_of(&d.state, "Deployment", None, None)
        .conditions
        .into_iter()
        .find(|c| c.type_ == FORECAST)
        .unwrap();
    assert_eq!(condition.status, "False");
    assert_eq!(
        condition.reason.as_deref(),
        Some("ProgressDeadlineTooShort")
    );
    assert!(
        condition
            .message
            .unwrap()
            .contains("spec.progressDeadlineSeconds"),
        "the condition names the setting"
    );
}

#[test]
fn enough_traffic_gets_a_true_condition_with_each_steps_requests_and_no_warning() {
    let (d, warnings) = first_look(1000.0);
    assert!(warnings.is_empty(), "{warnings:?}");
    let Some(ForecastStatus::Known { forecast, warning }) = &d.state.forecast else {
        panic!("{:?}", d.state.forecast)
    };
    assert_eq!(warning, &None);
    assert_eq!(forecast.steps.len(), 5);
    let condition = status_of(&d.state, "Deployment", None, None)
        .conditions
        .into_iter()
        .find(|c| c.type_ == FORECAST)
        .unwrap();
    assert_eq!(condition.status, "True", "{condition:?}");
    let message = condition.message.unwrap();
    assert!(
        message.contains("promotion expected after")
            && message.contains("canary requests per step 10%:"),
        "{message}"
    );
}

#[test]
fn a_statistical_canary_comparing_no_metric_has_no_forecast_to_wait_for() {
    // Its steps last the interval whatever the traffic, and no look shows it a rate: a
    // Forecast condition "Unknown until the first look" would never be resolved.
    let text = "apiVersion: fledge.dev/v1alpha1\nkind: Canary\nmetadata: {name: app}\nspec:\n  targetRef: {kind: Deployment, name: app}\n  service: {port: 80}\n  analysis:\n    interval: 1m\n    stepWeight: 10\n    maxWeight: 50\n    judge: statistical\n";
    let loaded = fledge_controller::spec::load_manifests(text).expect("loads");
    let spec = fledge_controller::spec::validate(&loaded.canaries[0].spec).expect("valid");
    let mut d = Driver::new(spec);
    d.tick_ms = 15_000;
    d.deploy("v2");
    for _ in 0..8 {
        d.tick();
        assert_eq!(d.state.forecast, None, "{}", d.state.message);
        let conditions = status_of(&d.state, "Deployment", None, None).conditions;
        assert!(
            !conditions.iter().any(|c| c.type_ == FORECAST),
            "{conditions:?}"
        );
    }
    assert_eq!(d.state.phase, Phase::Progressing, "{}", d.state.message);
}
