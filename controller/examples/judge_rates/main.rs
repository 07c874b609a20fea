//! Measures the false-rollback and detection rates of the sequential error-rate test next to
//! Flagger's threshold mode, on the same simulated traffic, and prints the table.
//!
//! ```text
//! cargo run --release -p fledge-controller --no-default-features --example judge_rates [-- ROLLOUTS [SEED]]
//! ```

mod sim;

use fledge_controller::analysis::Histogram;
use fledge_controller::analysis::mann_whitney::{
    Classification, EffectMeasure, LatencyConfig, always_valid_level, judge_latency,
};
use fledge_controller::analysis::sequential::{ErrorRateConfig, RateMargin};
use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;
use sim::{
    Flagger, LATENCY_BOUNDS, Outcome, Scenario, cumulative, median_look, observe_latency, rate,
    run_rollout,
};

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
    println!();
    latency_table(rollouts, seed);
}

const LATENCY_MEDIAN_MS: f64 = 50.0;
const LATENCY_SIGMA: f64 = 0.6;
const SLOWDOWN: f64 = 1.25;

/// The Mann-Whitney judge looked at every interval on histograms cumulative over the rollout:
/// at Kayenta's fixed 98% level, and with the level spent over looks (`always_valid_level`).
fn latency_table(rollouts: usize, seed: u64) {
    // Kayenta's default effect-size gate (a ratio of at least 1), so the table shows the test's
    // own error rate.
    let config = LatencyConfig {
        effect: EffectMeasure::QuantileRatio { quantile: 0.5 },
        allowed_increase: 1.0,
        ..LatencyConfig::default()
    };
    println!(
        "Latency (Mann-Whitney on histogram buckets, Istio's default buckets to 10 s): log-normal latency, median {LATENCY_MEDIAN_MS} ms, sigma {LATENCY_SIGMA};"
    );
    println!(
        "regressed canary {SLOWDOWN}x slower. N canary and 9N primary observations per interval, histograms cumulative since the start, judged every interval ({LOOKS} looks), {rollouts} rollouts."
    );
    println!(
        "False High: any High on A/A within {LOOKS} looks. Detection: any High on the slow canary. Effect gate: p50 ratio >= 1 (Kayenta's default)."
    );
    println!();
    println!(
        "{:>12} | {:<28} | {:>10} | {:>9} | {:>16}",
        "N/interval", "level per look", "false High", "detection", "median to detect"
    );
    println!("{}", "-".repeat(88));
    for (i, n) in [5usize, 50, 500].into_iter().enumerate() {
        let mut results = [[0usize; 2]; 2];
        let mut detect_looks: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        for (scenario, slowdown) in [1.0, SLOWDOWN].into_iter().enumerate() {
            let mut rng =
                Pcg64Mcg::seed_from_u64(seed ^ ((100 + scenario as u64) << 32) ^ (i as u64) << 48);
            for _ in 0..rollouts {
                let mut canary = vec![0.0; LATENCY_BOUNDS.len()];
                let mut primary = vec![0.0; LATENCY_BOUNDS.len()];
                let mut first_high: [Option<u32>; 2] = [None, None];
                for look in 1..=LOOKS {
                    for _ in 0..n {
                        observe_latency(
                            &mut rng,
                            &mut canary,
                            LATENCY_MEDIAN_MS * slowdown,
                            LATENCY_SIGMA,
                        );
                    }
                    for _ in 0..9 * n {
                        observe_latency(&mut rng, &mut primary, LATENCY_MEDIAN_MS, LATENCY_SIGMA);
                    }
                    let c = Histogram {
                        bounds: LATENCY_BOUNDS.to_vec(),
                        cumulative: cumulative(&canary),
                    };
                    let p = Histogram {
                        bounds: LATENCY_BOUNDS.to_vec(),
                        cumulative: cumulative(&primary),
                    };
                    for (mode, level) in [
                        config.confidence_level,
                        always_valid_level(config.confidence_level, look),
                    ]
                    .into_iter()
                    .enumerate()
                    {
                        if first_high[mode].is_none() {
                            let cfg = LatencyConfig {
                                confidence_level: level,
                                ..config
                            };
                            if judge_latency(&cfg, &c, &p).classification == Classification::High {
                                first_high[mode] = Some(look);
                            }
                        }
                    }
                }
                for mode in 0..2 {
                    if let Some(look) = first_high[mode] {
                        results[scenario][mode] += 1;
                        if scenario == 1 {
                            detect_looks[mode].push(look);
                        }
                    }
                }
            }
        }
        for (mode, label) in ["0.98 at every look (Kayenta)", "spent: always_valid_level"]
            .into_iter()
            .enumerate()
        {
            detect_looks[mode].sort_unstable();
            let median = detect_looks[mode]
                .get(detect_looks[mode].len() / 2)
                .map_or("-".to_string(), |l| l.to_string());
            println!(
                "{:>12} | {:<28} | {:>9.2}% | {:>8.2}% | {:>16}",
                if mode == 0 {
                    n.to_string()
                } else {
                    String::new()
                },
                label,
                100.0 * results[0][mode] as f64 / rollouts as f64,
                100.0 * results[1][mode] as f64 / rollouts as f64,
                median,
            );
        }
    }
}
