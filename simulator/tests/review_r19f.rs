//! Review r19f (issue 19, the statistical judge; final check): the README's claims about the
//! judge against the committed results, `fledge-sim plan` against `compare`, the
//! `latency-median-20pct-100rps` case's quantile, and bad input to `plan`. Each finding is a
//! test ignored until the behaviour is right: run them with `-- --ignored`.

use std::path::Path;

mod support;

use fledge_simulator::harness;
use fledge_simulator::scenario::Scenario;

fn benchmark(name: &str) -> Scenario {
    let path = format!(
        "{}/../scenarios/benchmarks/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    Scenario::load(Path::new(&path)).expect("the benchmark loads")
}

/// True when the run's rollout was handed to the metrics' thresholds at its first look (the
/// Forecast warning says the judge is not expected to decide within the progress deadline).
fn handed_to_thresholds(scenario: &Scenario, seed: u64) -> bool {
    let r = harness::run_to_decision(scenario, &scenario.variants[0], seed).expect("runs");
    r.decisions.iter().any(|d| {
        d.messages
            .iter()
            .any(|m| m.contains("is not expected to decide"))
    })
}

/// Finding 1. At 10 requests/s `fledge-sim plan --rps 10 --latency 20,80` on the A/A
/// benchmark's Canary forecasts the judge deciding within the Canary's 10m deadline (top step
/// 8m, promotion after 14m45s), and the judge, when it is let decide, does (seed 2 with a
/// longer deadline: longest step 7m30s, promoted 14m15s after the deploy). Yet the rollout's
/// own forecast at its first look, from the primary's histogram of a few hundred requests,
/// swings from 960 s to 3900 s of needed deadline (seed 2: "expected promotion after 51m30s")
/// and hands 434 of the 1,000 committed A/A runs to the thresholds (the 5m15s runs of
/// results/aa-10rps.json), where the benchmarks README says "about a third" and attributes it
/// to "the first look's rate estimate" (seed 5 is handed over at 10.2 requests/s, above the
/// ~8 requests/s the README gives). The forecast's latency shape from a small first look
/// should not make the handover a coin toss at a rate plan says is enough.
#[test]
#[ignore = "review r19f finding 1: at 10 rps the first look's forecast (noisy primary histogram) hands ~43% of A/A rollouts to thresholds and asks for up to 3900s, though plan says 14m45s and the judge decides within 10m steps"]
fn at_10_rps_the_first_looks_forecast_rarely_hands_the_rollout_to_thresholds() {
    let scenario = benchmark("aa-10rps");
    let handed: Vec<u64> = (1..=20)
        .filter(|&seed| handed_to_thresholds(&scenario, seed))
        .collect();
    assert!(
        handed.len() <= 2,
        "seeds handed to the thresholds at 10 requests/s: {handed:?} of 20"
    );
}
