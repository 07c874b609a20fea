//! Measures the false-rollback and detection rates of the sequential error-rate test next to
//! Flagger's threshold mode, on the same simulated traffic, and prints the table.
//!
//! ```text
//! cargo run --release -p fledge-controller --no-default-features --example judge_rates [-- ROLLOUTS [SEED]]
//! ```

mod sim;

use fledge_controller::analysis::sequential::{ErrorRateConfig, RateMargin};
use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;
use sim::{Flagger, Outcome, Scenario, median_look, rate, run_rollout};

const LOOKS: u32 = 50;
const PRIMARY_ERROR_RATE: f64 = 0.005;
const REGRESSION: f64 = 3.0;
const CANARY_SHARE: f64 = 0.1;

fn main() {
    let mut args = std::env::args().skip(1);
    let rollouts: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let config = ErrorRateConfig::new(0.01, RateMargin::Absolute(1.0), 100);
    let flagger = Flagger {
        min_success_rate: 99.0,
        threshold: 5,
    };

    println!(
        "Error-rate judges on simulated rollouts: {rollouts} rollouts x {LOOKS} intervals per cell, seed {seed}."
    );
    println!(
        "Each interval: Poisson(N) canary requests and Poisson({}N) primary requests (canary at {:.0}% weight),",
        (1.0 - CANARY_SHARE) / CANARY_SHARE,
        100.0 * CANARY_SHARE
    );
    println!(
        "each request failing independently: primary {:.2}%, healthy canary (A/A) {:.2}%, regressed canary {REGRESSION}x = {:.2}%.",
        100.0 * PRIMARY_ERROR_RATE,
        100.0 * PRIMARY_ERROR_RATE,
        100.0 * PRIMARY_ERROR_RATE * REGRESSION
    );
    println!(
        "Sequential: alpha {}, beta {}, margin {:?}, min {} canary requests per step (one step). Flagger: success rate >= {}%, threshold {}, no requests = failed check.",
        config.alpha,
        config.beta,
        config.margin,
        config.min_requests,
        flagger.min_success_rate,
        flagger.threshold
    );
    println!(
        "False rollback: rolled back within {LOOKS} intervals on A/A (every interval judged, even after NoWorse). Detection: rolled back within {LOOKS} intervals on {REGRESSION}x."
    );
    println!();
    println!(
        "{:>12} | {:<10} | {:>14} | {:>9} | {:>17} | {:>22} | {:>17}",
        "N/interval",
        "judge",
        "false rollback",
        "detection",
        "median to detect",
        "A/A NoWorse (median)",
        "3x NoWorse first"
    );
    println!("{}", "-".repeat(120));
    for (i, n) in [5.0, 50.0, 500.0].into_iter().enumerate() {
        let primary = n * (1.0 - CANARY_SHARE) / CANARY_SHARE;
        let run = |ratio: f64, stream: u64| -> Vec<Outcome> {
            let mut rng = Pcg64Mcg::seed_from_u64(seed ^ (stream << 32) ^ (i as u64) << 48);
            let scenario = Scenario {
                poisson_traffic: true,
                ..Scenario::single_step(n, primary, LOOKS, PRIMARY_ERROR_RATE, ratio)
            };
            (0..rollouts)
                .map(|_| run_rollout(&mut rng, &scenario, &config, flagger))
                .collect()
        };
        let healthy = run(1.0, 1);
        let regressed = run(REGRESSION, 2);
        let looks = |l: Option<u32>| l.map_or("-".to_string(), |l| l.to_string());
        println!(
            "{:>12} | {:<10} | {:>13.2}% | {:>8.2}% | {:>17} | {:>14.1}% ({:>4}) | {:>16.2}%",
            n,
            "sequential",
            100.0 * rate(&healthy, |o| o.first_regressed.is_some()),
            100.0 * rate(&regressed, |o| o.first_regressed.is_some()),
            looks(median_look(&regressed, |o| o.first_regressed)),
            100.0 * rate(&healthy, |o| o.first_no_worse.is_some()),
            looks(median_look(&healthy, |o| o.first_no_worse)),
            100.0
                * rate(&regressed, |o| {
                    match (o.first_no_worse, o.first_regressed) {
                        (Some(nw), Some(r)) => nw < r,
                        (Some(_), None) => true,
                        _ => false,
                    }
                }),
        );
        println!(
            "{:>12} | {:<10} | {:>13.2}% | {:>8.2}% | {:>17} | {:>22} | {:>17}",
            "",
            "flagger",
            100.0 * rate(&healthy, |o| o.flagger_rollback.is_some()),
            100.0 * rate(&regressed, |o| o.flagger_rollback.is_some()),
            looks(median_look(&regressed, |o| o.flagger_rollback)),
            "",
            "",
        );
    }
}
