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
    assert_eq!(forecast(&threshold, 100.0, 0.005, None), None);
    for rps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_eq!(forecast(&spec(""), rps, 0.005, None), None, "{rps}");
    }
}

#[test]
fn plenty_of_traffic_promotes_every_weight_with_each_step_at_its_floor() {
    let f = forecast(&spec(""), 10_000.0, 0.005, None).unwrap();
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
    let fast = forecast(&unlimited, 10.0, 0.005, None).unwrap();
    let slow = forecast(&unlimited, 1.0, 0.005, None).unwrap();
    // The judge's boundaries are in requests: each step below the top needs its own
    // `minRequests` (100), and the top step ends once the rollout's pooled canary requests
    // show the canary no worse, as many at either rate up to a look's worth (15s) of the
    // faster one; so a tenth of the rate takes about ten times as long.
    for (f, s) in fast.steps.iter().zip(&slow.steps).take(4) {
        assert!(
            f.canary_requests >= 100.0 && s.canary_requests >= 100.0,
            "{f:?} {s:?}"
        );
    }
    let pooled = |f: &Forecast| f.steps.iter().map(|s| s.canary_requests).sum::<f64>();
    let top = fast.steps.last().unwrap();
    assert!(pooled(&fast) > 2_000.0, "{fast:?}");
    assert!(
        (pooled(&slow) - pooled(&fast)).abs() <= top.canary_rps * 15.0,
        "{fast:?} {slow:?}"
    );
    let slow = forecast(&spec(""), 1.0, 0.005, None).unwrap();
    assert!(matches!(slow.end, ForecastEnd::Deadline { .. }), "{slow:?}");
    assert!(!slow.judge_decides());
    let warning = slow.warning(&spec("")).unwrap();
    assert!(
        warning.contains("spec.progressDeadlineSeconds")
            && warning.contains("thresholds over each interval's traffic"),
        "{warning}"
    );
    let needed = slow.deadline_needed.unwrap();
    let generous = spec(&format!("  progressDeadlineSeconds: {}", needed / 1000));
    let fixed = forecast(&generous, 1.0, 0.005, None).unwrap();
    assert_eq!(
        fixed.end,
        ForecastEnd::Promoted {
            after: slow.unbounded.unwrap()
        }
    );
    assert!(fixed.judge_decides());
    assert_eq!(fixed.warning(&generous), None);
}

#[test]
fn latency_is_forecast_from_a_given_shape_and_otherwise_named_as_not_forecast() {
    let with_latency = spec("      - name: request-duration\n        thresholdRange: {max: 500}");
    let blind = forecast(&with_latency, 10.0, 0.005, None).unwrap();
    assert_eq!(blind.not_forecast, ["request-duration"]);
    // The same as a spec without the latency metric.
    let errors_only = forecast(&spec(""), 10.0, 0.005, None).unwrap();
    assert_eq!(blind.steps, errors_only.steps);
    // A p99 of 80ms: the latency test needs more canary requests than the error rate's alone.
    let shape = log_normal_latency(20.0, 80.0).unwrap();
    let seen = forecast(&with_latency, 10.0, 0.005, Some(&shape)).unwrap();
    assert!(seen.not_forecast.is_empty(), "{seen:?}");
    assert!(
        seen.unbounded.unwrap() > blind.unbounded.unwrap(),
        "{seen:?} {blind:?}"
    );
    // A histogram without observations is no shape.
    let empty = Histogram {
        bounds: shape.bounds.clone(),
        cumulative: vec![0.0; shape.bounds.len()],
    };
    assert_eq!(forecast(&with_latency, 100.0, 0.005, Some(&empty)), None);
}

#[test]
fn a_log_normal_latency_has_its_median_and_p99_where_given() {
    let h = log_normal_latency(20.0, 80.0).unwrap();
    let at = |bound: f64| h.cumulative[h.bounds.iter().position(|b| *b == bound).unwrap()];
    // z = ln(25/20) / sigma with sigma = ln 4 / 2.326: 64.6% at or below 25ms.
    assert!((at(25.0) - 0.646).abs() < 0.001, "{h:?}");
    assert!(at(50.0) < 0.99 && at(100.0) > 0.99, "{h:?}");
    assert_eq!(*h.cumulative.last().unwrap(), 1.0);
    assert_eq!(log_normal_latency(80.0, 20.0), None);
    assert_eq!(log_normal_latency(0.0, 20.0), None);
}

#[test]
fn the_plans_shortest_promotion_is_no_longer_than_a_forecast_with_plenty_of_traffic() {
    // `fledge-sim plan` prints "shortest time to promotion" from `plan`: once it ticked once
    // per interval (8m for this spec), while the statistical judge ends a step at its 30s floor
    // and the forecast (and the simulated runs: bench-aa-1000rps, 2m45s) promote in about 3m.
    let s = spec("");
    let shortest = crate::rollout::plan(&s).shortest_promotion;
    let f = forecast(&s, 10_000.0, 0.005, None).unwrap();
    let ForecastEnd::Promoted { after } = f.end else {
        panic!("{f:?}")
    };
    assert!(
        shortest <= after,
        "plan's shortest promotion {shortest} ms, forecast {after} ms"
    );
}

#[test]
fn a_rate_prints_with_its_significant_figures_however_small() {
    for (rate, text) in [
        (0.001, "0.001"),
        (0.00123456, "0.00123"),
        (0.0101, "0.0101"),
        (0.5, "0.5"),
        (0.999, "0.999"),
        (1.0, "1"),
        (2.345, "2.35"),
        (10.2, "10.2"),
        (99.5, "99.5"),
        (1234.6, "1235"),
        (10_000_000.0, "10000000"),
    ] {
        assert_eq!(rate_text(rate), text, "{rate}");
    }
}

#[test]
fn the_recommended_deadline_covers_nearly_every_run_on_random_counts() {
    // The expected counts' hold is a typical run's; half the random runs need longer. The
    // recommendation must cover about 95% of runs drawn with seeds it was not computed from.
    let s = spec("");
    let f = forecast(&s, 2.0, 0.005, None).unwrap();
    let needed = f.deadline_needed.unwrap();
    assert!(needed > longest_hold(&s, &f.steps), "{f:?}");
    let mut lifted = s.clone();
    lifted.progress_deadline = Duration(HORIZON + 1);
    let load = Load {
        rps: 2.0,
        error_rate: 0.005,
        latency: None,
    };
    let held_longer = (1_000..1_060)
        .filter(|seed| {
            let (steps, _) = run(&lifted, &load, Some(&mut Draw::new(*seed)));
            longest_hold(&s, &steps) > needed
        })
        .count();
    assert!(
        held_longer <= 6,
        "{held_longer} of 60 runs held past {needed} ms"
    );
}

#[test]
fn random_counts_are_poisson_with_the_mean_asked() {
    let mut rng = draws::Rng::new(7);
    for mean in [0.05, 3.0, 400.0] {
        let n = 4_000;
        let draws: Vec<f64> = (0..n).map(|_| rng.poisson(mean)).collect();
        let avg = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|d| (d - avg).powi(2)).sum::<f64>() / n as f64;
        assert!(
            (avg - mean).abs() < 4.0 * (mean / n as f64).sqrt(),
            "{mean}: {avg}"
        );
        assert!((var / mean - 1.0).abs() < 0.15, "{mean}: {var}");
    }
}
