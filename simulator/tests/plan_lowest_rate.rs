//! `fledge-sim plan`'s "from about X requests/s a progress deadline of 30m lets it decide": true
//! of the rates above X as well (review r19g finding 2).

mod support;

use std::process::Command;

/// The Canary of scenarios/benchmarks/aa-1rps.yaml (`canary:`), progress deadline 10m.
const AA_CANARY: &str = "apiVersion: fledge.dev/v1alpha1
kind: Canary
metadata: {name: app, namespace: bench}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: app}
  service: {port: 80}
  analysis:
    judge: statistical
    interval: 1m
    threshold: 5
    stepWeight: 10
    maxWeight: 50
    metrics:
      - name: request-success-rate
        thresholdRange: {min: 99}
        interval: 1m
      - name: request-duration
        thresholdRange: {max: 500}
        interval: 1m
";

fn plan_at(file: &str, rps: f64) -> String {
    let out = Command::new(support::sim_binary())
        .args(["plan", file, "--rps", &rps.to_string()])
        .output()
        .expect("fledge-sim runs");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The number after `prefix` in `text`.
fn number_after(text: &str, prefix: &str) -> Option<f64> {
    let at = text.find(prefix)? + prefix.len();
    let digits: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits.trim_end_matches('.').parse().ok()
}

/// Finding 2: plan's "from about X requests/s a progress deadline of 30m or less lets it
/// decide" is not true of the rates above X, and X depends on the `--rps` asked about.
/// `lowest_rate` (simulator/src/cli/plan.rs) bisects on `deadline_needed <= 30m` as if it were
/// monotone in the rate, but `deadline_needed` is the 3rd-largest hold of 41 seeded random runs,
/// which jumps up and down with the rate. Evidence (`fledge-sim plan` on aa-1rps's Canary, no
/// --latency): at --rps 1 "from about 4.5 requests/s"; at --rps 0.01 "from about 3.9"; at
/// --rps 0.001 and 4.4 "from about 4.8"; yet `--rps 4.5` itself recommends 1860 s (31m), `--rps 4.7` 2040 s (34m),
/// `--rps 3.9` 2340 s, `--rps 4.0` 2460 s. Right: a rate from which every higher rate's
/// recommendation is within 30m (scan upwards, or make the draws' holds monotone in the rate,
/// e.g. common random numbers with more draws), the same whatever --rps is asked about.
#[test]
fn the_rate_from_which_30m_suffices_holds_for_the_rates_above_it() {
    let file = std::env::temp_dir().join(format!("review_r19g_aa_{}.yaml", std::process::id()));
    std::fs::write(&file, AA_CANARY).unwrap();
    let file = file.to_str().unwrap().to_string();
    let out = plan_at(&file, 1.0);
    let from = number_after(&out, "from about ").unwrap_or_else(|| panic!("{out}"));
    let mut wrong = Vec::new();
    for k in 0..=10 {
        let rps = ((from * (1.0 + 0.03 * f64::from(k))) * 100.0).round() / 100.0;
        let out = plan_at(&file, rps);
        if let Some(needed) = number_after(&out, "progressDeadlineSeconds to at least ")
            && needed > 1800.0
        {
            wrong.push(format!("--rps {rps}: at least {needed} s"));
        }
    }
    assert!(
        wrong.is_empty(),
        "at --rps 1 plan says from about {from} requests/s 30m (1800 s) suffices, but {wrong:?}"
    );
}
