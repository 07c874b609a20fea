//! Tests of the sequential error-rate test: worked cases, margins, evidence kept across looks
//! and restarts, and bad counts over generated input.

use super::maths::no_worse_bound;
use super::*;
use crate::analysis::Counts;
use proptest::prelude::*;

fn counts(requests: f64, failures: f64) -> Counts {
    Counts { requests, failures }
}

fn config() -> ErrorRateConfig {
    ErrorRateConfig::default()
}

#[test]
fn defaults_are_alpha_one_percent_one_point_margin_and_100_requests() {
    let c = ErrorRateConfig::default();
    assert_eq!((c.alpha, c.beta, c.min_requests), (0.01, 0.01, 100));
    assert_eq!(c.margin, RateMargin::Absolute(1.0));
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn the_e_value_is_the_weighted_mean_over_the_grid_of_binomial_likelihood_ratios() {
    // Equal traffic (q = 1/2), 3 canary and 1 primary failures. Under ratio r each failure is
    // the canary's with probability r/(1+r) instead of 1/2, so the likelihood ratio is
    // (2r/(1+r))^3 * (2/(1+r)) = 16 r^3 / (1+r)^4; for r = 3: 16 * 27 / 256 = 1.6875.
    let mut evidence = ErrorRateEvidence::default();
    let j = evidence.observe(&config(), counts(1000.0, 3.0), counts(1000.0, 1.0));
    let lr = |r: f64| 16.0 * r.powi(3) / (1.0 + r).powi(4);
    assert!((lr(3.0) - 1.6875).abs() < 1e-12);
    let expected: f64 = REGRESSION_RATIOS
        .iter()
        .zip(REGRESSION_WEIGHTS)
        .map(|(&r, w)| w * lr(r))
        .sum();
    assert!(
        (j.e_value - expected).abs() < 1e-9,
        "{} vs {expected}",
        j.e_value
    );
    assert_eq!(j.decision, Decision::Undecided);
}

#[test]
fn the_mixtures_weights_sum_to_one() {
    // More than 1 would void the alpha bound (the mixture's expectation under "no worse" is
    // the weights' sum); less would waste evidence.
    let sum: f64 = REGRESSION_WEIGHTS.iter().sum();
    assert!((sum - 1.0).abs() < 1e-12, "{sum}");
    assert!(REGRESSION_WEIGHTS.iter().all(|&w| w > 0.0));
}

#[test]
fn unequal_traffic_enters_through_the_canarys_share_of_requests() {
    // Canary 100 of 1000 requests (q = 0.1) and the only failure is the canary's: under r it
    // is the canary's with probability r q / (1 + (r-1) q) = r / (r + 9), so LR = 10 r / (r + 9).
    // For r = 25: 250 / 34 = 7.35.
    let mut evidence = ErrorRateEvidence::default();
    let j = evidence.observe(&config(), counts(100.0, 1.0), counts(900.0, 0.0));
    let expected: f64 = REGRESSION_RATIOS
        .iter()
        .zip(REGRESSION_WEIGHTS)
        .map(|(&r, w)| w * 10.0 * r / (r + 9.0))
        .sum();
    assert!((j.e_value - expected).abs() < 1e-9);
}

#[test]
fn a_clear_regression_rolls_back_with_the_evidence_in_the_reason() {
    let mut evidence = ErrorRateEvidence::default();
    let j = evidence.observe(&config(), counts(1000.0, 40.0), counts(9000.0, 45.0));
    assert_eq!(j.decision, Decision::Regressed);
    assert!(j.e_value >= 100.0);
    assert!(
        j.reason.starts_with("canary fails more often than primary"),
        "{}",
        j.reason
    );
    assert!(j.reason.contains("4.00% (40/1000)"), "{}", j.reason);
    assert!(j.reason.contains("rolls back at 100"), "{}", j.reason);
}

#[test]
fn zero_failures_on_both_sides_give_no_rollback_evidence_and_no_nan() {
    let mut evidence = ErrorRateEvidence::default();
    let j = evidence.observe(&config(), counts(50.0, 0.0), counts(450.0, 0.0));
    assert_eq!(j.e_value, 1.0);
    assert_eq!(j.decision, Decision::Undecided);
    assert!(j.is_short_of_traffic());
    assert!(
        j.reason
            .starts_with("not enough traffic to judge: 50 canary requests in this step, need 100"),
        "{}",
        j.reason
    );
}

#[test]
fn zero_failures_in_enough_canary_requests_is_no_worse_under_an_absolute_margin() {
    let mut evidence = ErrorRateEvidence::default();
    let j = evidence.observe(&config(), counts(1500.0, 0.0), counts(13500.0, 0.0));
    assert_eq!(j.decision, Decision::NoWorse, "{}", j.reason);
    let bound = j.upper_bound.unwrap();
    assert!(bound > 0.0 && bound < 1.0, "{bound}");
    assert!(
        j.reason.starts_with("canary no worse than primary"),
        "{}",
        j.reason
    );
}

#[test]
fn a_look_without_canary_requests_never_advances_on_the_steps_earlier_counts() {
    let mut evidence = ErrorRateEvidence::default();
    let j = evidence.observe(&config(), counts(1500.0, 0.0), counts(13500.0, 0.0));
    assert_eq!(j.decision, Decision::NoWorse, "{}", j.reason);
    // The canary stopped serving: the next look has primary traffic only.
    let j = evidence.observe(&config(), counts(1500.0, 0.0), counts(14000.0, 0.0));
    assert_eq!(j.decision, Decision::Undecided, "{}", j.reason);
    assert!(
        j.reason
            .starts_with("canary undecided, no canary requests in this look"),
        "{}",
        j.reason
    );
    // A look with canary requests may advance again.
    let j = evidence.observe(&config(), counts(1510.0, 0.0), counts(14100.0, 0.0));
    assert_eq!(j.decision, Decision::NoWorse, "{}", j.reason);
}

#[test]
fn a_relative_margin_needs_primary_failures_before_no_worse() {
    let cfg = ErrorRateConfig::new(0.01, RateMargin::Relative(1.0), 100);
    let mut evidence = ErrorRateEvidence::default();
    let j = evidence.observe(&cfg, counts(100_000.0, 0.0), counts(900_000.0, 0.0));
    assert_eq!(j.decision, Decision::Undecided);
    assert_eq!(j.upper_bound, Some(f64::INFINITY));
    let j = evidence.observe(&cfg, counts(200_000.0, 400.0), counts(1_800_000.0, 3600.0));
    assert_eq!(j.decision, Decision::NoWorse, "{}", j.reason);
    assert!(j.upper_bound.unwrap() < 2.0);
}

#[test]
fn no_worse_is_withheld_when_the_canary_is_clearly_worse_by_the_margin() {
    // Canary 2.5%, primary 0.5%: 2 points worse, beyond the 1-point margin; the rollback side
    // fires long before, so check the bound directly.
    let bound = no_worse_bound(
        &config(),
        counts(100_000.0, 2500.0),
        counts(900_000.0, 4500.0),
    );
    assert!(bound > 2.0 && bound < 2.5, "{bound}");
}

#[test]
fn the_confidence_sequence_brackets_the_estimate_and_is_tight_at_its_ends() {
    for (n, f) in [
        (1.0, 0.0),
        (10.0, 1.0),
        (1000.0, 5.0),
        (1e6, 5000.0),
        (50.0, 50.0),
    ] {
        let cs = BetaBinomialSequence::new(counts(n, f));
        let (lo, hi) = (cs.lower(0.005), cs.upper(0.005));
        let estimate = f / n;
        assert!(
            lo <= estimate && estimate <= hi,
            "{n} {f}: {lo} {estimate} {hi}"
        );
        if hi < 1.0 {
            assert!(cs.excess(hi, 0.005).abs() < 1e-6, "{n} {f}");
        }
        if lo > 0.0 {
            assert!(cs.excess(lo, 0.005).abs() < 1e-6, "{n} {f}");
        }
    }
    // No requests: nothing is excluded.
    let empty = BetaBinomialSequence::new(counts(0.0, 0.0));
    assert_eq!((empty.lower(0.005), empty.upper(0.005)), (0.0, 1.0));
}

#[test]
fn a_decreasing_counter_adds_no_evidence_and_becomes_the_new_baseline() {
    let mut evidence = ErrorRateEvidence::default();
    evidence.observe(&config(), counts(500.0, 2.0), counts(4500.0, 20.0));
    let j = evidence.observe(&config(), counts(300.0, 2.0), counts(4600.0, 21.0));
    assert_eq!(j.decision, Decision::Undecided);
    assert!(matches!(
        j.input_error,
        Some(InputError::CounterDecreased { .. })
    ));
    assert!(
        j.reason
            .contains("canary requests went down from 500 to 300"),
        "{}",
        j.reason
    );
    assert_eq!(evidence.step_counts().0, counts(500.0, 2.0));
    // The next look counts from the reset value.
    evidence.observe(&config(), counts(400.0, 2.0), counts(4700.0, 21.0));
    assert_eq!(evidence.step_counts().0, counts(600.0, 2.0));
    assert_eq!(evidence.step_counts().1, counts(4600.0, 20.0));
}

#[test]
fn unusable_counts_hold_and_never_advance() {
    let bad = [
        (counts(f64::NAN, 0.0), counts(1e6, 0.0)),
        (counts(1e6, -1.0), counts(1e6, 0.0)),
        (counts(1e6, 0.0), counts(f64::INFINITY, 0.0)),
        (counts(1e6, 0.0), counts(1e6, 2e6)),
    ];
    for (canary, primary) in bad {
        let mut evidence = ErrorRateEvidence::default();
        let j = evidence.observe(&config(), canary, primary);
        assert_eq!(j.decision, Decision::Undecided, "{canary:?} {primary:?}");
        assert!(j.input_error.is_some());
        assert!(
            j.reason.starts_with("this look's counts are unusable"),
            "{}",
            j.reason
        );
        assert_eq!(evidence.looks(), 0);
    }
}

#[test]
fn invalid_settings_never_judge() {
    for cfg in [
        ErrorRateConfig {
            alpha: 0.0,
            ..config()
        },
        ErrorRateConfig {
            beta: f64::NAN,
            ..config()
        },
        ErrorRateConfig {
            margin: RateMargin::Absolute(-1.0),
            ..config()
        },
        ErrorRateConfig {
            margin: RateMargin::Relative(f64::INFINITY),
            ..config()
        },
    ] {
        let mut evidence = ErrorRateEvidence::default();
        let j = evidence.observe(&cfg, counts(1e5, 0.0), counts(1e5, 0.0));
        assert_eq!(j.decision, Decision::Undecided);
        assert!(
            j.reason
                .starts_with("cannot judge the error rate: invalid settings"),
            "{}",
            j.reason
        );
    }
}

#[test]
fn counts_seen_under_invalid_settings_are_judged_once_the_settings_are_fixed() {
    let mut evidence = ErrorRateEvidence::default();
    let bad = ErrorRateConfig {
        alpha: 2.0,
        ..config()
    };
    evidence.observe(&bad, counts(1000.0, 40.0), counts(9000.0, 45.0));
    let j = evidence.observe(&config(), counts(1000.0, 40.0), counts(9000.0, 45.0));
    assert_eq!(j.decision, Decision::Regressed);
}

#[test]
fn rollback_evidence_and_pooled_counts_carry_across_steps_but_min_requests_is_per_step() {
    let mut evidence = ErrorRateEvidence::default();
    evidence.observe(&config(), counts(2000.0, 10.0), counts(18000.0, 90.0));
    let e = evidence.e_value();
    evidence.begin_step();
    assert_eq!(evidence.e_value(), e);
    assert_eq!(evidence.step_counts().0, Counts::default());
    assert_eq!(evidence.rollout_counts().0, counts(2000.0, 10.0));
    let j = evidence.observe(&config(), counts(50.0, 0.0), counts(450.0, 2.0));
    assert!(j.is_short_of_traffic());
    assert_eq!(evidence.rollout_counts().0, counts(2050.0, 10.0));
}

#[test]
fn cumulative_and_incremental_looks_accumulate_the_same_evidence() {
    let looks = [
        (100.0, 1.0, 900.0, 3.0),
        (150.0, 0.0, 800.0, 5.0),
        (120.0, 4.0, 1000.0, 2.0),
    ];
    let (mut cumulative, mut incremental) =
        (ErrorRateEvidence::default(), ErrorRateEvidence::default());
    let (mut canary, mut primary) = (Counts::default(), Counts::default());
    for (n_c, f_c, n_p, f_p) in looks {
        canary = counts(canary.requests + n_c, canary.failures + f_c);
        primary = counts(primary.requests + n_p, primary.failures + f_p);
        let a = cumulative.observe(&config(), canary, primary);
        let b = incremental.observe_increment(&config(), counts(n_c, f_c), counts(n_p, f_p));
        assert_eq!(a.decision, b.decision);
        assert!((a.e_value - b.e_value).abs() < 1e-12);
    }
}

#[test]
fn evidence_resumes_exactly_from_its_serialised_form() {
    let mut evidence = ErrorRateEvidence::default();
    evidence.observe(&config(), counts(700.0, 9.0), counts(6300.0, 30.0));
    let json = serde_json::to_string(&evidence).unwrap();
    let mut resumed: ErrorRateEvidence = serde_json::from_str(&json).unwrap();
    assert_eq!(resumed, evidence);
    let a = evidence.observe(&config(), counts(1400.0, 15.0), counts(12600.0, 61.0));
    let b = resumed.observe(&config(), counts(1400.0, 15.0), counts(12600.0, 61.0));
    assert_eq!(a, b);
}

#[test]
fn corrupt_stored_evidence_is_reported_and_restarted_without_panic() {
    let json = r#"{"logLr":[1.0],"baseline":{"canary":{"requests":0.0,"failures":0.0},"primary":{"requests":0.0,"failures":0.0}},"step":{"canary":{"requests":0.0,"failures":0.0},"primary":{"requests":0.0,"failures":0.0}},"rollout":{"canary":{"requests":0.0,"failures":0.0},"primary":{"requests":0.0,"failures":0.0}},"looks":0}"#;
    let mut evidence: ErrorRateEvidence = serde_json::from_str(json).unwrap();
    let j = evidence.observe(&config(), counts(1e4, 0.0), counts(1e4, 0.0));
    assert_eq!(j.decision, Decision::Undecided);
    assert!(matches!(
        j.input_error,
        Some(InputError::CorruptEvidence { found: 1, .. })
    ));
}

#[test]
fn numbers_print_with_three_significant_digits() {
    assert_eq!(number(100.0), "100");
    assert_eq!(number(1.6875), "1.69");
    assert_eq!(number(0.012345), "0.0123");
    assert_eq!(number(1234.5), "1234");
    assert_eq!(number(f64::INFINITY), "∞");
    assert_eq!(number(4982453655196670.0), "4.98e15");
    assert_eq!(number(0.0000376), "3.76e-5");
}

fn any_count() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0..1e4f64,
        1 => (0u32..50).prop_map(f64::from),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => -1e3..0.0f64,
        1 => 1e250..1e300f64,
    ]
}

proptest! {
    #[test]
    fn any_counts_give_a_finite_judgement_and_bad_ones_never_advance(
        looks in prop::collection::vec((any_count(), any_count(), any_count(), any_count()), 1..8)
    ) {
        let mut evidence = ErrorRateEvidence::default();
        for (n_c, f_c, n_p, f_p) in looks {
            let j = evidence.observe(&config(), counts(n_c, f_c), counts(n_p, f_p));
            prop_assert!(!j.e_value.is_nan());
            prop_assert!(j.upper_bound.is_none_or(|b| !b.is_nan()));
            if j.input_error.is_some() {
                prop_assert_ne!(j.decision, Decision::NoWorse);
            }
            // Whatever came in, the stored evidence serialises to JSON and back unchanged.
            let json = serde_json::to_string(&evidence).unwrap();
            let back: ErrorRateEvidence = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, evidence.clone());
        }
    }
}
