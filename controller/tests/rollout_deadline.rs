//! An undecided rollout at its progress deadline: rolled back, never promoted, saying whether
//! the metrics could not be read or the traffic was too little, and what would let it decide.

mod support;

use fledge_controller::analysis::{Counts, MetricReading};
use fledge_controller::rollout::{Phase, wants};
use support::{Driver, canary_spec};

fn statistical() -> Driver {
    let spec = canary_spec("stepWeight: 10\n    maxWeight: 50\n    judge: statistical");
    let mut d = Driver::new(spec);
    d.tick_ms = 15_000;
    d
}

/// Counts since the step began at `rps`, both sides failing 0.5% of requests.
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
    }
}

#[test]
fn a_metrics_provider_that_fails_never_promotes_and_the_rollback_says_so() {
    let mut d = statistical();
    d.deploy("v2");
    // Plenty of healthy traffic for two minutes, then every query fails.
    for _ in 0..8 {
        d.reading = Some(reading(&d, 1000.0));
        d.tick();
    }
    let weight = d.state.canary_weight;
    d.reading = Some(MetricReading::Error {
        reason: "connection refused".into(),
    });
    let mut held = None;
    for _ in 0..200 {
        if matches!(d.state.phase, Phase::Succeeded | Phase::Failed) {
            break;
        }
        d.tick();
        assert!(d.state.canary_weight <= weight, "advanced without metrics");
        if d.state.message.starts_with("holding") {
            held.get_or_insert(d.state.message.clone());
        }
    }
    assert_eq!(d.state.phase, Phase::Failed);
    let held = held.expect("a hold while the metrics fail");
    assert!(
        held.contains("the metrics query failed: connection refused")
            && held.contains("never promoted without its metrics"),
        "{held}"
    );
    let last = d.messages().last().unwrap().clone();
    assert!(
        last.contains("no data to judge within the progress deadline of 10m")
            && last.contains("the metrics query failed: connection refused")
            && last.contains("never promoted without its metrics"),
        "{last}"
    );
}

#[test]
fn too_little_traffic_at_the_deadline_names_the_deadline_that_would_let_it_decide() {
    let mut d = statistical();
    d.deploy("v2");
    for _ in 0..200 {
        if matches!(d.state.phase, Phase::Succeeded | Phase::Failed) {
            break;
        }
        d.reading = Some(reading(&d, 10.0));
        d.tick();
    }
    assert_eq!(d.state.phase, Phase::Failed);
    let last = d.messages().last().unwrap().clone();
    assert!(last.contains("progress deadline of 10m"), "{last}");
    assert!(last.contains("not promoted without evidence"), "{last}");
    assert!(
        last.contains("at the 10 requests/s seen, spec.progressDeadlineSeconds of at least"),
        "{last}"
    );
}
