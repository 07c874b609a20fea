//! Error rates of the sequential error-rate test, measured on simulated binomial traffic with a
//! fixed seed. The full table (with Flagger's threshold mode alongside) is the `judge_rates`
//! example; these are the properties the test must keep. The statistical latency test's A/A
//! false-High rate is measured here too, by an ignored test (it takes minutes).

#[path = "../examples/judge_rates/sim.rs"]
mod sim;

use fledge_controller::analysis::Histogram;
use fledge_controller::analysis::latency::{LatencyDecision, LatencyEvidence, LatencyTestConfig};
use fledge_controller::analysis::mann_whitney::{
    Classification, LatencyConfig, always_valid_level, judge_latency,
};
use fledge_controller::analysis::sequential::ErrorRateConfig;
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use sim::{
    Flagger, LATENCY_BOUNDS, Outcome, Scenario, binomial, cumulative, median_look, observe_latency,
    rate, run_rollout,
};

const ROLLOUTS: usize = 2000;
const PRIMARY_ERROR_RATE: f64 = 0.005;
const FLAGGER: Flagger = Flagger {
    min_success_rate: 99.0,
    threshold: 5,
};

fn run(scenario: &Scenario, seed: u64) -> Vec<Outcome> {
    let config = ErrorRateConfig::default();
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    (0..ROLLOUTS)
        .map(|_| run_rollout(&mut rng, scenario, &config, FLAGGER))
        .collect()
}

/// alpha plus three binomial standard errors at `ROLLOUTS` runs.
fn alpha_with_sampling_margin(alpha: f64) -> f64 {
    alpha + 3.0 * (alpha * (1.0 - alpha) / ROLLOUTS as f64).sqrt()
}

#[test]
fn identical_canary_and_primary_are_rolled_back_in_at_most_alpha_of_2000_rollouts_of_50_looks() {
    // The canary's weight climbs 10% to 50% in five steps of ten looks, 2,000 requests a look,
    // and every look is judged, even after NoWorse: the most looks a rollout could take.
    let scenario = Scenario {
        steps: [0.1, 0.2, 0.3, 0.4, 0.5]
            .iter()
            .map(|w| (2000.0 * w, 2000.0 * (1.0 - w)))
            .collect(),
        looks_per_step: 10,
        poisson_traffic: false,
        primary_error_rate: PRIMARY_ERROR_RATE,
        canary_error_rate: PRIMARY_ERROR_RATE,
    };
    let outcomes = run(&scenario, 11);
    let false_rollbacks = rate(&outcomes, |o| o.first_regressed.is_some());
    let bound = alpha_with_sampling_margin(ErrorRateConfig::default().alpha);
    assert!(
        false_rollbacks <= bound,
        "false rollbacks {false_rollbacks} > {bound}"
    );
}

#[test]
fn identical_canary_and_primary_at_low_traffic_are_rolled_back_in_at_most_alpha() {
    // 10 canary and 90 primary requests a look: a failure or two decides everything, where a
    // Gaussian approximation would misbehave.
    let scenario = Scenario::single_step(10.0, 90.0, 50, 0.02, 1.0);
    let outcomes = run(&scenario, 12);
    let false_rollbacks = rate(&outcomes, |o| o.first_regressed.is_some());
    let bound = alpha_with_sampling_margin(ErrorRateConfig::default().alpha);
    assert!(
        false_rollbacks <= bound,
        "false rollbacks {false_rollbacks} > {bound}"
    );
}

#[test]
fn a_canary_failing_three_times_as_often_at_1000_requests_a_look_is_rolled_back_in_over_99_percent()
{
    let scenario = Scenario::single_step(1000.0, 1000.0, 50, PRIMARY_ERROR_RATE, 3.0);
    let outcomes = run(&scenario, 13);
    // Detected means rolled back before the step was ever declared NoWorse.
    let detected = rate(&outcomes, |o| match (o.first_regressed, o.first_no_worse) {
        (Some(r), Some(n)) => r < n,
        (Some(_), None) => true,
        (None, _) => false,
    });
    assert!(detected > 0.99, "detected {detected}");
    // About 20 canary failures a look against 5 expected: a handful of looks is enough.
    let median = median_look(&outcomes, |o| o.first_regressed);
    assert!(
        median.is_some_and(|m| m <= 6),
        "median look of rollback {median:?}"
    );
}

#[test]
fn the_binomial_sampler_has_the_binomial_mean_and_variance() {
    let mut rng = Pcg64Mcg::seed_from_u64(3);
    let (n, p, draws) = (1000.0, 0.005, 20_000);
    let xs: Vec<f64> = (0..draws).map(|_| binomial(&mut rng, n, p)).collect();
    let mean = xs.iter().sum::<f64>() / draws as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (draws - 1) as f64;
    // Standard errors: sqrt(np(1-p)/draws) = 0.016 for the mean, about 0.05 for the variance.
    assert!((mean - n * p).abs() < 0.08, "mean {mean}");
    assert!((var - n * p * (1.0 - p)).abs() < 0.25, "variance {var}");
}

#[test]
fn latency_judged_at_every_look_with_the_spent_level_flags_identical_versions_within_the_level() {
    // 1,000 A/A rollouts of 20 looks, 10 canary and 90 primary observations a look, histograms
    // cumulative since the start. Kayenta's effect gate (ratio at least 1) leaves the test alone.
    let config = LatencyConfig {
        allowed_increase: 1.0,
        ..LatencyConfig::default()
    };
    let rollouts = 1000;
    let mut rng = Pcg64Mcg::seed_from_u64(14);
    let mut false_highs = 0;
    for _ in 0..rollouts {
        let mut canary = vec![0.0; LATENCY_BOUNDS.len()];
        let mut primary = vec![0.0; LATENCY_BOUNDS.len()];
        for look in 1..=20 {
            (0..10).for_each(|_| observe_latency(&mut rng, &mut canary, 50.0, 0.6));
            (0..90).for_each(|_| observe_latency(&mut rng, &mut primary, 50.0, 0.6));
            let c = Histogram {
                bounds: LATENCY_BOUNDS.to_vec(),
                cumulative: cumulative(&canary),
            };
            let p = Histogram {
                bounds: LATENCY_BOUNDS.to_vec(),
                cumulative: cumulative(&primary),
            };
            let level = always_valid_level(config.confidence_level, look);
            let cfg = LatencyConfig {
                confidence_level: level,
                ..config
            };
            if judge_latency(&cfg, &c, &p).classification == Classification::High {
                false_highs += 1;
                break;
            }
        }
    }
    // High is one side of the two-sided 2%: at most 1%, plus three standard errors.
    let rate = false_highs as f64 / rollouts as f64;
    let bound = 0.01 + 3.0 * (0.01f64 * 0.99 / rollouts as f64).sqrt();
    assert!(rate <= bound, "false highs {rate} > {bound}");
}

/// Istio-bucketed histogram of `counts`, cumulative as Prometheus returns it.
fn histogram(counts: &[f64]) -> Histogram {
    Histogram {
        bounds: LATENCY_BOUNDS.to_vec(),
        cumulative: cumulative(counts),
    }
}

/// One A/A rollout of the statistical latency test (`analysis::latency`): `weights` canary
/// weights, `looks` looks each with `per_look` observations in all, readings cumulative since
/// the step began. True if any look said High.
fn aa_latency_rollout(
    rng: &mut Pcg64Mcg,
    config: &LatencyTestConfig,
    (median, sigma): (f64, f64),
    weights: &[f64],
    looks: usize,
    per_look: usize,
) -> bool {
    let mut e = LatencyEvidence::default();
    for &w in weights {
        e.begin_step();
        let mut c = vec![0.0; LATENCY_BOUNDS.len()];
        let mut p = vec![0.0; LATENCY_BOUNDS.len()];
        for _ in 0..looks {
            for _ in 0..per_look {
                let side = if rng.random::<f64>() < w {
                    &mut c
                } else {
                    &mut p
                };
                observe_latency(rng, side, median, sigma);
            }
            if e.observe(config, &histogram(&c), &histogram(&p)).decision == LatencyDecision::High {
                return true;
            }
        }
    }
    false
}

/// An A/A case: the latency's shape (median, sigma), the canary's weights, looks a weight and
/// observations a look.
type Case<'a> = ((f64, f64), &'a [f64], usize, usize);

/// A measurement, not a test (about 2 minutes in a debug build): how often the statistical
/// latency test says High of identical versions (A/A) where its approximations are weakest:
/// nearly every observation in one bucket, unbalanced sides, many looks. Each case's rate must
/// stay within alpha (1%) plus three standard errors of 1,000 rollouts; it prints each rate.
/// Run it with `cargo test -p fledge-controller --test judge_rates -- --ignored --nocapture`.
/// (Review r19e's probe; measured 0% to 0.9%, the highest the wide p99 case at a 1-2% canary.)
#[test]
#[ignore = "a measurement of the latency test's A/A false-High rate; run with --ignored"]
fn latency_test_false_high_rate_of_identical_versions_stays_within_alpha() {
    let config = LatencyTestConfig {
        alpha: 0.01,
        beta: 0.01,
        quantile: 0.99,
        margin: 0.5,
        min_requests: 100,
    };
    let n = 1000;
    let allowed = 0.01 + 3.0 * (0.01 * 0.99 / n as f64).sqrt();
    // p99: nearly every observation in (10, 25] (median 15 ms, sigma 0.15 or 0.25), a canary at
    // 1% to 10% of the traffic over up to 240 looks; a canary swinging between 2% and 50%.
    let p99: [Case; 4] = [
        ((15.0, 0.15), &[0.02, 0.05, 0.1], 80, 40),
        ((15.0, 0.25), &[0.02, 0.05, 0.1, 0.2, 0.5], 60, 200),
        ((20.0, 0.6), &[0.01, 0.02], 150, 500),
        ((40.0, 0.05), &[0.02, 0.5, 0.02, 0.5], 60, 100),
    ];
    // The median: every observation in (10, 25] or spread over three buckets.
    let median: [Case; 2] = [
        ((20.0, 0.05), &[0.02, 0.1], 100, 40),
        ((24.0, 0.3), &[0.03, 0.5], 100, 60),
    ];
    for (q, cases) in [(0.99, &p99[..]), (0.5, &median[..])] {
        let config = LatencyTestConfig {
            quantile: q,
            ..config
        };
        for (i, &(shape, weights, looks, per_look)) in cases.iter().enumerate() {
            let mut rng = Pcg64Mcg::seed_from_u64(19 + i as u64);
            let highs = (0..n)
                .filter(|_| aa_latency_rollout(&mut rng, &config, shape, weights, looks, per_look))
                .count();
            let rate = highs as f64 / n as f64;
            println!("q {q} case {i}: false High in {highs} of {n} rollouts");
            assert!(
                rate <= allowed,
                "q {q} case {i}: false High in {highs} of {n} rollouts, alpha 1%"
            );
        }
    }
}
