//! Simulated rollouts for measuring the error-rate judges: the sequential test and Flagger's
//! threshold mode see the same binomial traffic. Shared by the `judge_rates` example and the
//! `judge_rates` integration test.

use fledge_controller::analysis::Counts;
use fledge_controller::analysis::sequential::{Decision, ErrorRateConfig, ErrorRateEvidence};
use rand::RngExt;
use rand_pcg::Pcg64Mcg;

/// Traffic and error rates of one kind of rollout.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Mean canary and primary requests per look, for each step of the rollout in turn.
    pub steps: Vec<(f64, f64)>,
    /// Looks per step.
    pub looks_per_step: u32,
    /// Whether each look's request count is a Poisson draw around the mean (otherwise exact).
    pub poisson_traffic: bool,
    pub primary_error_rate: f64,
    pub canary_error_rate: f64,
}

impl Scenario {
    /// One step of `looks` looks at a fixed split.
    pub fn single_step(
        canary: f64,
        primary: f64,
        looks: u32,
        primary_rate: f64,
        ratio: f64,
    ) -> Self {
        Scenario {
            steps: vec![(canary, primary)],
            looks_per_step: looks,
            poisson_traffic: false,
            primary_error_rate: primary_rate,
            canary_error_rate: primary_rate * ratio,
        }
    }
}

/// When each judge first reached each answer (1-based look numbers).
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    pub first_regressed: Option<u32>,
    pub first_no_worse: Option<u32>,
    /// Look at which Flagger's failed checks reached its threshold.
    pub flagger_rollback: Option<u32>,
}

/// Flagger's threshold mode: a check fails when the canary's success rate over the interval is
/// below `min_success_rate` percent, or when the canary served no requests ("no values found").
#[derive(Clone, Copy, Debug)]
pub struct Flagger {
    pub min_success_rate: f64,
    pub threshold: u32,
}

/// Runs every look of one rollout through both judges, without stopping at the first decision, so
/// that "ever rolled back within the looks" is measured under the most looks.
pub fn run_rollout(
    rng: &mut Pcg64Mcg,
    scenario: &Scenario,
    config: &ErrorRateConfig,
    flagger: Flagger,
) -> Outcome {
    let mut evidence = ErrorRateEvidence::default();
    let mut outcome = Outcome::default();
    let mut failed_checks = 0;
    let mut look = 0;
    for &(canary_mean, primary_mean) in &scenario.steps {
        evidence.begin_step();
        let (mut canary, mut primary) = (Counts::default(), Counts::default());
        for _ in 0..scenario.looks_per_step {
            look += 1;
            let (n_c, n_p) = if scenario.poisson_traffic {
                (poisson(rng, canary_mean), poisson(rng, primary_mean))
            } else {
                (canary_mean.round(), primary_mean.round())
            };
            let f_c = binomial(rng, n_c, scenario.canary_error_rate);
            let f_p = binomial(rng, n_p, scenario.primary_error_rate);
            canary.requests += n_c;
            canary.failures += f_c;
            primary.requests += n_p;
            primary.failures += f_p;
            let judgement = evidence.observe(config, canary, primary);
            match judgement.decision {
                Decision::Regressed => {
                    outcome.first_regressed.get_or_insert(look);
                }
                Decision::NoWorse => {
                    outcome.first_no_worse.get_or_insert(look);
                }
                Decision::Undecided => {}
            }
            let check_failed = n_c == 0.0 || 100.0 * (1.0 - f_c / n_c) < flagger.min_success_rate;
            if check_failed {
                failed_checks += 1;
                if failed_checks >= flagger.threshold {
                    outcome.flagger_rollback.get_or_insert(look);
                }
            }
        }
    }
    outcome
}

/// Binomial(n, p) by skipping geometric gaps between failures: about `n p` uniform draws, cheap
/// for the small error rates of interest.
pub fn binomial(rng: &mut Pcg64Mcg, n: f64, p: f64) -> f64 {
    if p <= 0.0 || n <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return n;
    }
    let log_q = (-p).ln_1p();
    let (mut position, mut count) = (0.0, 0.0);
    loop {
        let u: f64 = 1.0 - rng.random::<f64>();
        position += (u.ln() / log_q).floor() + 1.0;
        if position > n {
            return count;
        }
        count += 1.0;
    }
}

/// Poisson(mean): exact (Knuth) for small means; rounded normal above 30, which is plenty for a
/// traffic volume (the judges condition on it).
pub fn poisson(rng: &mut Pcg64Mcg, mean: f64) -> f64 {
    if mean <= 0.0 {
        return 0.0;
    }
    if mean > 30.0 {
        let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        return (mean + mean.sqrt() * z).round().max(0.0);
    }
    let limit = (-mean).exp();
    let (mut k, mut product) = (0.0, rng.random::<f64>());
    while product > limit {
        k += 1.0;
        product *= rng.random::<f64>();
    }
    k
}

/// Share of outcomes for which `hit` holds.
pub fn rate(outcomes: &[Outcome], hit: impl Fn(&Outcome) -> bool) -> f64 {
    outcomes.iter().filter(|o| hit(o)).count() as f64 / outcomes.len().max(1) as f64
}

/// Median of the looks at which `at` happened, among the outcomes where it happened.
pub fn median_look(outcomes: &[Outcome], at: impl Fn(&Outcome) -> Option<u32>) -> Option<u32> {
    let mut looks: Vec<u32> = outcomes.iter().filter_map(at).collect();
    looks.sort_unstable();
    looks.get(looks.len() / 2).copied()
}

/// Istio's default latency buckets (ms).
pub use fledge_controller::analysis::ISTIO_DURATION_BOUNDS_MS as LATENCY_BOUNDS;

/// One latency observation, log-normal with the given median (ms) and log-scale spread, counted
/// into its `le` bucket.
pub fn observe_latency(rng: &mut Pcg64Mcg, counts: &mut [f64], median: f64, sigma: f64) {
    let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    let x = median * (sigma * z).exp();
    let bucket = LATENCY_BOUNDS
        .iter()
        .position(|&le| x <= le)
        .unwrap_or(LATENCY_BOUNDS.len() - 1);
    counts[bucket] += 1.0;
}

/// Cumulative counts, as Prometheus returns them.
pub fn cumulative(counts: &[f64]) -> Vec<f64> {
    counts
        .iter()
        .scan(0.0, |sum, c| {
            *sum += c;
            Some(*sum)
        })
        .collect()
}
