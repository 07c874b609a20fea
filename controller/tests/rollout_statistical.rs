//! The rollout core under the statistical judge: adaptive pacing, holds, and rollbacks.

mod support;

use fledge_controller::analysis::{Counts, MetricReading};
use fledge_controller::rollout::{Phase, wants};
use support::{Driver, SpecExt, canary_spec};

/// Requests per second reaching the service, split by the current weight, and error rates.
struct Traffic {
    rps: f64,
    canary_errors: f64,
    primary_errors: f64,
}

impl Traffic {
    /// Counts since the current step began, as the shell reads them for the statistical judge.
    fn reading(&self, d: &Driver) -> MetricReading {
        let since = wants(&d.state, &d.spec, d.now)
            .since
            .unwrap_or(d.state.step_since);
        let seconds = d.now.saturating_sub(since) as f64 / 1000.0;
        let share = d.state.canary_weight as f64 / 100.0;
        let canary = self.rps * share * seconds;
        let primary = self.rps * (1.0 - share) * seconds;
        MetricReading::Counts {
            canary: Counts {
                requests: canary.floor(),
                failures: (canary * self.canary_errors).floor(),
            },
            primary: Counts {
                requests: primary.floor(),
                failures: (primary * self.primary_errors).floor(),
            },
            covered: None,
        }
    }

    fn run(&self, d: &mut Driver) {
        for _ in 0..500 {
            if matches!(d.state.phase, Phase::Succeeded | Phase::Failed) {
                break;
            }
            d.reading = Some(self.reading(d));
            d.tick();
        }
    }
}

fn statistical(extra: &str) -> fledge_controller::spec::RolloutSpec {
    canary_spec(&format!(
        "stepWeight: 20\n    judge: statistical\n    statistical: {{minRequests: 200}}{extra}"
    ))
}

#[test]
fn a_canary_as_good_as_primary_is_promoted_step_by_step() {
    let mut d = Driver::new(statistical(""));
    d.deploy("v2");
    Traffic {
        rps: 100.0,
        canary_errors: 0.001,
        primary_errors: 0.001,
    }
    .run(&mut d);
    assert_eq!(d.state.phase, Phase::Succeeded, "{}", d.state.message);
    assert_eq!(d.state.failed_checks, 0);
    assert_eq!(d.route_weights(), [20, 40, 60, 80, 100, 0]);
}

#[test]
fn a_canary_failing_ten_times_as_often_is_rolled_back_at_once_without_waiting_for_threshold() {
    let mut d = Driver::new(statistical("\n    threshold: 10"));
    d.deploy("v2");
    Traffic {
        rps: 100.0,
        canary_errors: 0.05,
        primary_errors: 0.005,
    }
    .run(&mut d);
    assert_eq!(d.state.phase, Phase::Failed);
    assert_eq!(d.state.failed_checks, 0);
    let last = d.messages().last().unwrap().clone();
    assert!(last.starts_with("Rolling back app: canary regressed: request-success-rate: canary fails more often than primary"), "{last}");
    assert_eq!(d.route_weights(), [20, 0]);
}

#[test]
fn too_little_traffic_forecast_is_judged_by_thresholds_from_the_first_look_without_a_hold() {
    let mut d = Driver::new(statistical("").with_deadline_seconds(600));
    d.deploy("v2");
    Traffic {
        rps: 0.5,
        canary_errors: 0.0,
        primary_errors: 0.0,
    }
    .run(&mut d);
    // The forecast at the first look says the judge cannot decide within the deadline: each
    // step is judged by the thresholds over its interval's traffic, which a canary with no
    // failures passes, a step per interval (the hold at the deadline is rollout_deadline's).
    assert_eq!(d.state.phase, Phase::Succeeded, "{:?}", d.messages());
    assert_eq!(d.state.failed_checks, 0);
    assert_eq!(d.route_weights(), [20, 40, 60, 80, 100, 0]);
    let messages = d.messages();
    let forecast = messages
        .iter()
        .find(|m| m.starts_with("Forecast for app"))
        .expect("the forecast is said");
    assert!(
        forecast.contains("judged by the metrics' thresholds over each interval's traffic"),
        "{forecast}"
    );
}

#[test]
fn unusable_counts_hold_the_step_and_never_promote() {
    let mut d = Driver::new(statistical(""));
    d.deploy("v2");
    d.tick();
    for _ in 0..5 {
        d.reading = Some(MetricReading::Counts {
            canary: Counts {
                requests: f64::NAN,
                failures: 0.0,
            },
            primary: Counts {
                requests: -3.0,
                failures: 0.0,
            },
            covered: None,
        });
        d.tick();
    }
    assert_eq!(
        (d.state.phase, d.state.canary_weight),
        (Phase::Progressing, 20)
    );
    assert!(d.state.message.contains("unusable"), "{}", d.state.message);
}

#[test]
fn the_judges_evidence_survives_a_restart_through_json() {
    let mut d = Driver::new(statistical(""));
    d.deploy("v2");
    let traffic = Traffic {
        rps: 100.0,
        canary_errors: 0.02,
        primary_errors: 0.002,
    };
    d.reading = Some(traffic.reading(&d));
    d.tick();
    d.reading = Some(traffic.reading(&d));
    d.tick();
    let json = serde_json::to_string(&d.state).unwrap();
    assert!(json.contains("evidence"));
    let restored = serde_json::from_str(&json).unwrap();
    assert_eq!(d.state, restored);
}

#[test]
fn looks_between_steps_roll_a_regression_back_before_the_interval_ends() {
    let mut spec = statistical("");
    spec.interval = fledge_controller::spec::Duration::from_secs(120);
    let look = fledge_controller::rollout::look_interval(&spec);
    assert_eq!(look, 30_000);
    let mut d = Driver::new(spec);
    d.tick_ms = look;
    d.deploy("v2");
    let traffic = Traffic {
        rps: 100.0,
        canary_errors: 0.05,
        primary_errors: 0.005,
    };
    traffic.run(&mut d);
    assert_eq!(d.state.phase, Phase::Failed);
    assert_eq!(d.route_weights(), [20, 0]);
    let step = d.state.step_since;
    let rolled_back = d.state.phase_since;
    assert!(
        rolled_back - step < 120_000,
        "rolled back {}s into a 2m step",
        (rolled_back - step) / 1000
    );
}

#[test]
fn looks_between_steps_never_advance_a_step_early_when_the_floor_is_the_interval() {
    let mut spec = statistical("");
    spec.interval = fledge_controller::spec::Duration::from_secs(120);
    spec.min_step = Some(spec.interval);
    let mut d = Driver::new(spec);
    d.tick_ms = 10_000;
    d.deploy("v2");
    let traffic = Traffic {
        rps: 100.0,
        canary_errors: 0.0,
        primary_errors: 0.0,
    };
    let mut changes = Vec::new();
    for _ in 0..200 {
        if d.state.phase == Phase::Succeeded {
            break;
        }
        let before = d.state.canary_weight;
        d.reading = Some(traffic.reading(&d));
        d.tick();
        if d.state.canary_weight != before {
            changes.push(d.now);
        }
    }
    assert_eq!(d.state.phase, Phase::Succeeded);
    assert!(
        changes.windows(2).take(4).all(|w| w[1] - w[0] >= 120_000),
        "{changes:?}"
    );
}
