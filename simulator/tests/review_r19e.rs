//! Review r19e (issue 19, the statistical judge): findings as failing tests, each ignored with
//! its label, so the suite stays green. Run with `-- --ignored`.

mod support;

use std::process::Command;

use fledge_controller::analysis::latency::{LatencyDecision, LatencyEvidence, LatencyTestConfig};
use fledge_controller::analysis::{Histogram, ISTIO_DURATION_BOUNDS_MS as ISTIO};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

fn cumulative(counts: &[f64]) -> Histogram {
    let mut sum = 0.0;
    Histogram {
        bounds: ISTIO.to_vec(),
        cumulative: counts
            .iter()
            .map(|c| {
                sum += c;
                sum
            })
            .collect(),
    }
}

/// A log-normal observation's bucket.
fn bucket(rng: &mut Pcg64Mcg, median: f64, sigma: f64) -> usize {
    let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    let x = median * (sigma * z).exp();
    ISTIO
        .iter()
        .position(|&le| x <= le)
        .unwrap_or(ISTIO.len() - 1)
}

/// One A/A rollout of the latency test: `steps` canary weights, `looks` looks each with
/// `per_look` observations in all, readings cumulative since the step began. True if any look
/// said High.
fn aa_rollout(
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
        let mut c = vec![0.0; ISTIO.len()];
        let mut p = vec![0.0; ISTIO.len()];
        for _ in 0..looks {
            for _ in 0..per_look {
                let b = bucket(rng, median, sigma);
                if rng.random::<f64>() < w {
                    c[b] += 1.0;
                } else {
                    p[b] += 1.0;
                }
            }
            if e.observe(config, &cumulative(&c), &cumulative(&p)).decision == LatencyDecision::High
            {
                return true;
            }
        }
    }
    false
}

/// An A/A case: the latency's shape (median, sigma), the canary's weights, looks a weight and
/// observations a look.
type Case<'a> = ((f64, f64), &'a [f64], usize, usize);

#[test]
#[ignore = "review r19e check, not a finding (the latency High side's A/A size with one dominant bucket, unbalanced sides, many looks)"]
fn review_r19e_probe_latency_false_high_rate() {
    // Measured (1,000 rollouts a case, alpha 1%): 0.1%, 0.3%, ... (see the review's report).
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
                .filter(|_| aa_rollout(&mut rng, &config, shape, weights, looks, per_look))
                .count();
            let rate = highs as f64 / n as f64;
            assert!(
                rate <= allowed,
                "q {q} case {i}: false High in {highs} of {n} rollouts, alpha 1%"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The forecast's rate at the first look, from counters scraped as Prometheus scrapes them.

#[test]
#[ignore = "review r19e finding 7: issue 19's target 'at 1 rps ... with the deadline plan recommends, which must be at most 30 minutes' is missed and not said: plan recommends progressDeadlineSeconds 7560 (2h6m) for the benchmark's Canary at 1 rps"]
fn review_r19e_finding_7_the_deadline_plan_recommends_at_1_rps_is_at_most_30_minutes() {
    let canary = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/benchmarks/aa-1rps.yaml"
    ))
    .unwrap();
    // The benchmark's own Canary, as a Canary file.
    let start = canary.find("canary:\n").expect("a canary") + "canary:\n".len();
    let body: String = canary[start..]
        .lines()
        .take_while(|l| l.starts_with("  ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    let path = std::env::temp_dir().join(format!("review-r19e-7-{}.yaml", std::process::id()));
    std::fs::write(&path, body).unwrap();
    let out = Command::new(support::sim_binary())
        .arg("plan")
        .arg(&path)
        .args(["--rps", "1", "--latency", "20,80"])
        .output()
        .expect("fledge-sim runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let recommended: u64 = text
        .split("raise spec.progressDeadlineSeconds to at least ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no recommended deadline: {text}"));
    assert!(
        recommended <= 1800,
        "plan recommends {recommended}s at 1 rps"
    );
}
