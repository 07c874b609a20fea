use super::*;
use crate::spec::{load_manifests, validate};

fn spec(analysis: &str) -> RolloutSpec {
    let text = format!(
        "apiVersion: fledge.dev/v1alpha1\nkind: Canary\nmetadata: {{name: app}}\nspec:\n  targetRef: {{kind: Deployment, name: app}}\n  service: {{port: 80}}\n  analysis:\n    interval: 1m\n    stepWeight: 10\n    maxWeight: 50\n    judge: statistical\n    metrics:\n      - name: request-success-rate\n        thresholdRange: {{min: 99}}\n{analysis}\n"
    );
    validate(&load_manifests(&text).unwrap().canaries[0].spec).unwrap()
}

#[test]
fn a_threshold_judge_or_a_rate_that_is_not_positive_has_no_forecast() {
    let mut threshold = spec("");
    threshold.judge = Judge::Threshold;
    assert_eq!(forecast(&threshold, 100.0, 0.005), None);
    for rps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_eq!(forecast(&spec(""), rps, 0.005), None, "{rps}");
    }
}

#[test]
fn plenty_of_traffic_promotes_every_weight_with_each_step_at_its_floor() {
    let f = forecast(&spec(""), 10_000.0, 0.005).unwrap();
    assert!(matches!(f.end, ForecastEnd::Promoted { .. }), "{f:?}");
    let weights: Vec<u8> = f.steps.iter().map(|s| s.canary_weight).collect();
    assert_eq!(weights, [10, 20, 30, 40, 50]);
    // Looks every 15s, floor 30s: each step ends at its second look.
    assert!(
        f.steps.iter().all(|s| s.ended && s.duration == 30_000),
        "{f:?}"
    );
    assert_eq!(f.warning(&spec("")), None);
}

#[test]
fn less_traffic_needs_the_same_requests_for_longer_and_warns_past_the_deadline() {
    let unlimited = spec("  progressDeadlineSeconds: 86400");
    let fast = forecast(&unlimited, 100.0, 0.005).unwrap();
    let slow = forecast(&unlimited, 10.0, 0.005).unwrap();
    // The judge's boundary is in requests: the first step needs as many at either rate, up to
    // a look's worth (15s) of the faster one, so a tenth of the rate takes ten times as long.
    let (f1, s1) = (&fast.steps[0], &slow.steps[0]);
    assert!(f1.canary_requests > 1_000.0, "{f1:?}");
    assert!(
        (s1.canary_requests - f1.canary_requests).abs() <= f1.canary_rps * 15.0,
        "{f1:?} {s1:?}"
    );
    let slow = forecast(&spec(""), 10.0, 0.005).unwrap();
    assert!(matches!(slow.end, ForecastEnd::Deadline { .. }), "{slow:?}");
    let warning = slow.warning(&spec("")).unwrap();
    assert!(
        warning.contains("spec.progressDeadlineSeconds"),
        "{warning}"
    );
    let needed = slow.deadline_needed.unwrap();
    let generous = spec(&format!("  progressDeadlineSeconds: {}", needed / 1000));
    let fixed = forecast(&generous, 10.0, 0.005).unwrap();
    assert_eq!(
        fixed.end,
        ForecastEnd::Promoted {
            after: slow.unbounded.unwrap()
        }
    );
    assert_eq!(fixed.warning(&generous), None);
}
