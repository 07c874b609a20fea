//! `fledge-sim compare` on the benchmark suite: small comparisons (a few dozen seeds), so the
//! command keeps working; and the harness' run to the decision that it is built on.

use std::path::Path;
use std::process::Command;

use fledge_simulator::harness;
use fledge_simulator::result::Outcome;
use fledge_simulator::scenario::Scenario;
use serde_json::Value;

fn benchmark(name: &str) -> String {
    format!(
        "{}/../scenarios/benchmarks/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn compare(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fledge-sim"))
        .arg("compare")
        .args(args)
        .output()
        .expect("fledge-sim runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn compare_json(args: &[&str]) -> Value {
    let (code, out, err) = compare(args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn rate(v: &Value, policy: &str, key: &str) -> f64 {
    v[policy][key]
        .as_f64()
        .unwrap_or_else(|| panic!("{policy}.{key} in {v}"))
}

#[test]
fn compare_reports_every_policy_with_rates_that_sum_to_one_and_the_blast_radius() {
    let file = benchmark("errors-10x-100rps");
    let v = compare_json(&[&file, "--seeds", "24", "--json"]);
    let policies: Vec<&String> = v.as_object().expect("an object").keys().collect();
    assert_eq!(policies, ["flagger-default", "scenario"], "{v}");
    for p in ["flagger-default", "scenario"] {
        assert_eq!(v[p]["seeds"], 24, "{v}");
        let sum: f64 = ["promoted", "rolled_back", "deadline", "undecided"]
            .iter()
            .map(|k| rate(&v, p, k))
            .sum();
        assert!((sum - 1.0).abs() < 1e-9, "{p}: {v}");
        // A 10x error regression at 100 rps is caught on evidence by both.
        assert!(rate(&v, p, "rolled_back") >= 0.9, "{p}: {v}");
        let [lo, hi] = [0, 1].map(|i| v[p]["rolled_back_95"][i].as_f64().expect("interval"));
        assert!(lo <= rate(&v, p, "rolled_back") && rate(&v, p, "rolled_back") <= hi);
        for key in ["median_decision_s", "p95_decision_s", "p95_canary_failures"] {
            assert!(v[p][key].as_f64().is_some(), "{p}.{key}: {v}");
        }
    }
    // Flagger's five failed checks a minute apart serve far more failures than the
    // statistical judge's first look.
    assert!(
        rate(&v, "scenario", "median_canary_failures")
            < rate(&v, "flagger-default", "median_canary_failures") / 2.0,
        "{v}"
    );
    assert!(
        rate(&v, "flagger-default", "median_decision_s") >= 240.0,
        "{v}"
    );
}

#[test]
fn compare_prints_the_same_figures_on_one_thread_as_on_four() {
    let file = benchmark("errors-2x-100rps");
    let args = |threads| {
        [
            file.as_str(),
            "--seeds",
            "16",
            "--json",
            "--threads",
            threads,
        ]
    };
    assert_eq!(compare_json(&args("1")), compare_json(&args("4")));
}

#[test]
fn a_rollback_for_lack_of_traffic_counts_at_the_deadline_not_as_evidence() {
    // At 1 rps the statistical judge never sees enough canary requests and holds until the
    // progress deadline.
    let v = compare_json(&[&benchmark("aa-1rps"), "--seeds", "12", "--json"]);
    assert_eq!(rate(&v, "scenario", "deadline"), 1.0, "{v}");
    assert_eq!(rate(&v, "scenario", "rolled_back"), 0.0, "{v}");
}

#[test]
fn a_policy_file_replaces_the_analysis_under_its_name() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let policy = dir.join("h18-two-steps.yaml");
    std::fs::write(
        &policy,
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: two-steps}\nspec:\n  \
         targetRef: {kind: Deployment, name: x}\n  service: {port: 80}\n  analysis:\n    \
         interval: 1m\n    threshold: 5\n    stepWeight: 25\n    maxWeight: 50\n    metrics:\n      \
         - {name: request-success-rate, thresholdRange: {min: 99}, interval: 1m}\n",
    )
    .expect("the temporary directory is writable");
    let arg = format!("two-steps={}", policy.display());
    let v = compare_json(&[
        &benchmark("aa-100rps"),
        "--seeds",
        "12",
        "--json",
        "--policy",
        "flagger-default",
        "--policy",
        &arg,
    ]);
    // Two 25% steps a minute apart decide sooner than Flagger's five 10% steps.
    let two = rate(&v, "two-steps", "median_decision_s");
    let five = rate(&v, "flagger-default", "median_decision_s");
    assert!(
        two + 120.0 <= five,
        "two steps {two}s, five steps {five}s: {v}"
    );
}

#[test]
fn a_policy_that_cannot_be_used_is_refused_with_its_name_and_exit_2() {
    let file = benchmark("aa-10rps");
    let (code, out, err) = compare(&[&file, "--policy", "mine=/nonexistent/policy.yaml"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains("--policy mine") && err.contains("/nonexistent/policy.yaml"),
        "{err}"
    );
    let (code, _, err) = compare(&[&file, "--policy", "scenario=/nonexistent/policy.yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("the name `scenario` is taken"), "{err}");
    let (code, _, err) = compare(&[&file, "--policy", "flagger"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("only built-in policy is `flagger-default`"),
        "{err}"
    );
}

#[test]
fn a_run_to_its_decision_stops_simulating_at_the_decision() {
    let scenario = Scenario::load(Path::new(&benchmark("errors-10x-100rps"))).expect("loads");
    let variant = &scenario.variants[0];
    let full = harness::run(&scenario, variant, 3).expect("runs");
    let short = harness::run_to_decision(&scenario, variant, 3).expect("runs");
    assert_eq!(short.outcome, Outcome::RolledBack);
    assert_eq!(short.judged_at_ms, full.judged_at_ms);
    assert!(
        short.events_processed * 4 < full.events_processed,
        "{} events to the decision, {} in the full run",
        short.events_processed,
        full.events_processed
    );
    assert!(short.failed_requests_canary <= full.failed_requests_canary);
}
