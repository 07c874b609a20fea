//! Pacing under the statistical judge: a canary weight step ends at the first look at which the
//! evidence suffices, but never before `analysis.minStepDuration`; the field's validation.

mod support;

use fledge_controller::analysis::{Counts, MetricReading};
use fledge_controller::rollout::{Phase, look_interval, wants};
use fledge_controller::spec::{Duration, load_manifests, validate, warnings};
use support::{Driver, canary_spec};

/// Counts since the step began at `rps`, split by the canary's weight, with no errors.
fn healthy_reading(d: &Driver, rps: f64) -> MetricReading {
    let since = wants(&d.state, &d.spec, d.now)
        .since
        .unwrap_or(d.state.step_since);
    let seconds = d.now.saturating_sub(since) as f64 / 1000.0;
    let share = d.state.canary_weight as f64 / 100.0;
    MetricReading::Counts {
        canary: Counts {
            requests: (rps * share * seconds).floor(),
            failures: 0.0,
        },
        primary: Counts {
            requests: (rps * (1.0 - share) * seconds).floor(),
            failures: 0.0,
        },
        covered: None,
    }
}

/// Runs a healthy rollout ticking every `tick_ms`; returns when each canary weight began.
fn step_starts(analysis: &str, rps: f64, tick_ms: u64) -> (Driver, Vec<u64>) {
    let spec = canary_spec(&format!(
        "stepWeight: 20\n    judge: statistical\n    statistical: {{minRequests: 200}}{analysis}"
    ));
    let mut d = Driver::new(spec);
    d.tick_ms = tick_ms;
    d.deploy("v2");
    let mut starts = Vec::new();
    for _ in 0..500 {
        if matches!(d.state.phase, Phase::Succeeded | Phase::Failed) {
            break;
        }
        let before = d.state.canary_weight;
        d.reading = Some(healthy_reading(&d, rps));
        let now = d.now;
        d.tick();
        if d.state.canary_weight != before {
            starts.push(now);
        }
    }
    (d, starts)
}

#[test]
fn a_step_ends_early_once_the_evidence_suffices_but_never_before_its_floor() {
    // 1m interval, looks every 15s, floor 40s: plenty of healthy traffic makes every step's
    // evidence suffice at its first look, so each step ends at the first look after 40s.
    let (d, starts) = step_starts("\n    minStepDuration: 40s", 1000.0, 5_000);
    assert_eq!(d.state.phase, Phase::Succeeded, "{}", d.state.message);
    assert_eq!(look_interval(&d.spec), 15_000);
    let gaps: Vec<u64> = starts.windows(2).take(4).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps.len(), 4, "{starts:?}");
    assert!(
        gaps.iter().all(|&g| g >= 40_000),
        "a step ended before its floor: {gaps:?}"
    );
    assert!(
        gaps.iter().all(|&g| g < 60_000),
        "no step ended before the interval: {gaps:?}"
    );
}

#[test]
fn a_step_whose_evidence_does_not_suffice_waits_past_its_floor() {
    // 10 rps, 20% on the canary: the judge needs more than the 200 minimum requests (100s)
    // before its bound is under the margin, past the floor and the interval; the step then ends
    // at a look (every 15s), not at the next interval's step.
    let (d, starts) = step_starts("\n    minStepDuration: 20s", 10.0, 5_000);
    assert_eq!(d.state.phase, Phase::Succeeded, "{}", d.state.message);
    let first = starts[1] - starts[0];
    assert!(first > 100_000, "first step lasted {first}ms");
    assert_eq!(first % 15_000, 0, "first step lasted {first}ms");
    assert_ne!(
        first % 60_000,
        0,
        "the step waited for an interval: {first}ms"
    );
}

fn canary(analysis: &str) -> fledge_controller::spec::CanarySpec {
    let text = format!(
        "apiVersion: fledge.dev/v1alpha1\nkind: Canary\nmetadata: {{name: app}}\nspec:\n  targetRef: {{kind: Deployment, name: app}}\n  service: {{port: 80}}\n  analysis:\n    interval: 1m\n{analysis}\n"
    );
    load_manifests(&text).unwrap().canaries.remove(0).spec
}

/// A compared metric, on which a step may end early.
const SUCCESS_RATE: &str =
    "    metrics:\n      - {name: request-success-rate, thresholdRange: {min: 99}, interval: 1m}";

#[test]
fn min_step_duration_defaults_to_30s_under_the_statistical_judge_and_is_bounded_by_the_interval() {
    let spec = validate(&canary(&format!(
        "    judge: statistical\n    stepWeight: 10\n{SUCCESS_RATE}"
    )))
    .unwrap();
    assert_eq!(spec.min_step, Some(Duration::from_secs(30)));
    let errors = validate(&canary(
        "    judge: statistical\n    stepWeight: 10\n    minStepDuration: 2m",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains(
            "spec.analysis.minStepDuration: must be at most analysis.interval (1m), got 2m"
        ),
        "{errors}"
    );
    let errors = validate(&canary(
        "    judge: statistical\n    stepWeight: 10\n    minStepDuration: 0s",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("spec.analysis.minStepDuration: must be longer than 0s"),
        "{errors}"
    );
    let errors = validate(&canary(
        "    judge: statistical\n    stepWeight: 10\n    minStepDuration: soon",
    ))
    .unwrap_err();
    assert_eq!(
        errors.0[0].path, "spec.analysis.minStepDuration",
        "{errors}"
    );
}

#[test]
fn min_step_duration_is_ignored_with_a_warning_by_the_threshold_judge_and_by_iterations() {
    for analysis in [
        "    stepWeight: 10\n    minStepDuration: 20s",
        "    judge: statistical\n    iterations: 5\n    minStepDuration: 20s",
        "    judge: statistical\n    stepWeight: 10\n    minStepDuration: 20s",
    ] {
        let c = canary(analysis);
        assert_eq!(validate(&c).unwrap().min_step, None, "{analysis}");
        let w = warnings(&c);
        assert!(
            w.iter()
                .any(|w| w.path == "spec.analysis.minStepDuration"
                    && w.message.starts_with("not used")),
            "{analysis}: {w:?}"
        );
    }
}

#[test]
fn without_a_compared_metric_a_step_lasts_its_interval() {
    // Only a custom query: its scalar checks read a 1m window that mostly holds the previous
    // weight's traffic, which is no step's own evidence, so the steps keep Flagger's pacing.
    use fledge_controller::rollout::plan;
    let spec = validate(&canary(
        "    judge: statistical\n    threshold: 5\n    stepWeight: 10\n    maxWeight: 50\n    metrics:\n      - name: error-rate\n        query: sum(rate(http_errors_total[1m]))\n        thresholdRange: {max: 1}\n        interval: 1m",
    ))
    .unwrap();
    assert_eq!(spec.min_step, None);
    let p = plan(&spec);
    // Five weights, each checked over its own interval's traffic as Flagger checks it.
    assert!(
        p.shortest_promotion >= 5 * 60_000,
        "promotion after {}ms with {} analyses",
        p.shortest_promotion,
        p.analyses
    );
    // With a compared metric beside it, a step may end at minStepDuration.
    let spec = validate(&canary(&format!(
        "    judge: statistical\n    stepWeight: 10\n    maxWeight: 50\n{SUCCESS_RATE}"
    )))
    .unwrap();
    assert!(plan(&spec).shortest_promotion < 5 * 60_000);
}
