//! Simulated rollouts whose canary weight changes every step (10% to 50%): the guarantees of
//! the module hold across weight changes, with the NoWorse bounds pooled over the rollout.

use super::*;
use crate::analysis::Counts;
use crate::analysis::test_support::{WEIGHTS, binomial, each_look, weighted};
use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;

/// Counts of one rollout's looks: 5 steps at weights 10..50% of `per_look` requests, `looks`
/// looks each, readings cumulative since the step began. Stops at the first decision `stop`
/// picks and returns it.
fn rollout(
    seed: u64,
    config: &ErrorRateConfig,
    (p_canary, p_primary): (f64, f64),
    per_look: u64,
    looks: usize,
    stop: impl Fn(Decision) -> bool,
) -> Option<Decision> {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let mut evidence = ErrorRateEvidence::default();
    let (mut canary, mut primary) = (Counts::default(), Counts::default());
    each_look(&weighted(per_look, &WEIGHTS), looks, |look| {
        if look.step_begins {
            evidence.begin_step();
            (canary, primary) = (Counts::default(), Counts::default());
        }
        canary.requests += look.canary as f64;
        canary.failures += binomial(&mut rng, look.canary, p_canary) as f64;
        primary.requests += look.primary as f64;
        primary.failures += binomial(&mut rng, look.primary, p_primary) as f64;
        let decision = evidence.observe(config, canary, primary).decision;
        stop(decision).then_some(decision)
    })
}

/// `level` plus three standard errors of a share measured over `runs`.
fn within(level: f64, runs: usize) -> f64 {
    level + 3.0 * (level * (1.0 - level) / runs as f64).sqrt()
}

#[test]
fn identical_versions_roll_back_within_alpha_over_a_rollout_of_changing_weights() {
    // alpha 5%, large enough to measure in 1,000 rollouts; 5% errors on both sides so that
    // failures are plentiful at every weight.
    let config = ErrorRateConfig {
        beta: 0.05,
        ..ErrorRateConfig::new(0.05, RateMargin::Absolute(1.0), 100)
    };
    let runs = 1_000;
    let rolled_back = (0..runs)
        .filter(|&seed| {
            rollout(seed as u64, &config, (0.05, 0.05), 400, 8, |d| {
                d == Decision::Regressed
            })
            .is_some()
        })
        .count();
    let rate = rolled_back as f64 / runs as f64;
    assert!(
        rate <= within(0.05, runs),
        "false rollbacks in {rate} of rollouts"
    );
}

#[test]
fn a_canary_worse_by_the_margin_is_advanced_past_any_step_within_beta_with_pooled_bounds() {
    // The canary fails 1 point more often than primary, exactly the margin; beta 5%. A step
    // advances on NoWorse at any look of any step: the pooled bounds must keep the chance of
    // any such advance over the rollout within beta. The rollback side, at a tiny alpha, stays
    // out of the way.
    //
    // The two confidence sequences are conservative (each misses its side's rate far less
    // often than its level), so the share advanced sits well below beta: about 0.1% here.
    // The rates are where a laxer bound shows most (a primary failing 0.5% leaves its lower
    // bound little room): with each side at 10x `beta / 2`, about 6% of rollouts advance, so
    // the assertion is at beta itself, not beta plus sampling slack.
    let config = ErrorRateConfig {
        beta: 0.05,
        ..ErrorRateConfig::new(1e-9, RateMargin::Absolute(1.0), 100)
    };
    let runs = 1_000;
    let advanced = (0..runs)
        .filter(|&seed| {
            rollout(seed as u64, &config, (0.015, 0.005), 2_000, 8, |d| {
                d == Decision::NoWorse
            })
            .is_some()
        })
        .count();
    let rate = advanced as f64 / runs as f64;
    assert!(rate <= config.beta, "advanced in {rate} of rollouts");
}

#[test]
fn a_healthy_canary_advances_on_the_evidence_of_earlier_steps() {
    // 0.5% on both sides: the first step gathers the evidence; later steps need only their
    // own min_requests and a look with canary traffic.
    let mut evidence = ErrorRateEvidence::default();
    let config = ErrorRateConfig::default();
    let j = evidence.observe(
        &config,
        Counts {
            requests: 4_000.0,
            failures: 20.0,
        },
        Counts {
            requests: 36_000.0,
            failures: 180.0,
        },
    );
    assert_eq!(j.decision, Decision::NoWorse, "{}", j.reason);
    evidence.begin_step();
    let look = |evidence: &mut ErrorRateEvidence, canary: f64| {
        evidence.observe(
            &config,
            Counts {
                requests: canary,
                failures: 0.0,
            },
            Counts {
                requests: 4.0 * canary,
                failures: 0.0,
            },
        )
    };
    let j = look(&mut evidence, 50.0);
    assert!(j.is_short_of_traffic(), "{}", j.reason);
    let j = look(&mut evidence, 150.0);
    assert_eq!(j.decision, Decision::NoWorse, "{}", j.reason);
    assert!(j.reason.contains("over the rollout"), "{}", j.reason);
}

/// How a paced rollout ended.
#[derive(Debug, PartialEq)]
enum Ended {
    Promoted,
    RolledBack,
    /// Still held after the looks allowed, at the top weight or below it.
    Held {
        top: bool,
    },
}

/// A rollout paced as the rollout core paces it: a step below the top weight ends at its first
/// look with `step_clear`, the top step at its first NoWorse; any look may roll back. At most
/// `max_looks` looks in all, of `per_look` requests each.
fn paced_rollout(
    seed: u64,
    config: &ErrorRateConfig,
    (p_canary, p_primary): (f64, f64),
    per_look: u64,
    max_looks: usize,
) -> (Ended, usize) {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let mut evidence = ErrorRateEvidence::default();
    let weights = WEIGHTS;
    let (mut step, mut looks) = (0, 0);
    let (mut canary, mut primary) = (Counts::default(), Counts::default());
    while looks < max_looks {
        looks += 1;
        let c = per_look * weights[step] / 100;
        let p = per_look - c;
        canary.requests += c as f64;
        canary.failures += binomial(&mut rng, c, p_canary) as f64;
        primary.requests += p as f64;
        primary.failures += binomial(&mut rng, p, p_primary) as f64;
        let j = evidence.observe(config, canary, primary);
        let top = step + 1 == weights.len();
        match j.decision {
            Decision::Regressed => return (Ended::RolledBack, looks),
            Decision::NoWorse if top => return (Ended::Promoted, looks),
            _ if !top && (j.step_clear || j.decision == Decision::NoWorse) => {
                step += 1;
                evidence.begin_step();
                (canary, primary) = (Counts::default(), Counts::default());
            }
            _ => {}
        }
    }
    (
        Ended::Held {
            top: step + 1 == weights.len(),
        },
        looks,
    )
}

#[test]
fn paced_by_step_clear_identical_versions_roll_back_within_alpha_and_are_promoted() {
    let config = ErrorRateConfig {
        beta: 0.05,
        ..ErrorRateConfig::new(0.05, RateMargin::Absolute(1.0), 100)
    };
    let runs = 1_000;
    let ends: Vec<(Ended, usize)> = (0..runs)
        .map(|seed| paced_rollout(seed as u64, &config, (0.05, 0.05), 400, 400))
        .collect();
    let count = |e: Ended| ends.iter().filter(|(x, _)| *x == e).count();
    let rate = count(Ended::RolledBack) as f64 / runs as f64;
    assert!(
        rate <= within(0.05, runs),
        "false rollbacks in {rate} of rollouts"
    );
    // The pacing is what it claims: the steps below the top end on their own evidence, so
    // most rollouts are promoted, and quickly.
    assert!(count(Ended::Promoted) >= runs * 9 / 10, "{ends:?}");
}

#[test]
fn paced_by_step_clear_a_canary_worse_by_the_margin_is_promoted_within_beta() {
    // The canary fails 1 point more often than primary (21% against 20%), exactly the margin;
    // beta 5%. Its failures barely lean worse (a ratio of 1.05, below the rollback side's
    // alternatives), so steps below the top end without NoWorse and the canary reaches the top
    // weight; promotion there needs NoWorse over the pooled counts, within beta.
    let config = ErrorRateConfig {
        beta: 0.05,
        ..ErrorRateConfig::new(1e-9, RateMargin::Absolute(1.0), 100)
    };
    let runs = 1_000;
    let ends: Vec<(Ended, usize)> = (0..runs)
        .map(|seed| paced_rollout(seed as u64, &config, (0.21, 0.20), 2_000, 60))
        .collect();
    let promoted = ends.iter().filter(|(e, _)| *e == Ended::Promoted).count();
    let at_top = ends
        .iter()
        .filter(|(e, _)| *e == Ended::Held { top: true })
        .count();
    assert!(promoted + at_top >= runs * 9 / 10, "{ends:?}");
    let rate = promoted as f64 / runs as f64;
    assert!(rate <= within(0.05, runs), "promoted in {rate} of rollouts");
}

#[test]
fn a_step_is_clear_on_its_own_evidence_before_the_canary_is_shown_no_worse() {
    let config = ErrorRateConfig::default();
    let counts = |requests: f64, failures: f64| Counts { requests, failures };
    let mut evidence = ErrorRateEvidence::default();
    // 150 canary requests, none failed: far too few for NoWorse at a 1-point margin, enough
    // for the step's own minimum (100).
    let j = evidence.observe(&config, counts(150.0, 0.0), counts(1_350.0, 7.0));
    assert_eq!(j.decision, Decision::Undecided, "{}", j.reason);
    assert!(j.step_clear, "{}", j.reason);
    // Fewer than the minimum in a new step: not clear.
    evidence.begin_step();
    let j = evidence.observe(&config, counts(50.0, 0.0), counts(450.0, 2.0));
    assert!(!j.step_clear && j.is_short_of_traffic(), "{}", j.reason);
    // Failures leaning towards the canary (e-value above 1): not clear, though not regressed.
    let j = evidence.observe(&config, counts(200.0, 5.0), counts(1_800.0, 9.0));
    assert_eq!(j.decision, Decision::Undecided, "{}", j.reason);
    assert!(j.e_value > 1.0, "{}", j.reason);
    assert!(!j.step_clear, "{}", j.reason);
}
