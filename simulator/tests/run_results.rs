//! What a run reports, checked for honesty: an expectation passes only for the reason it
//! names, a run without requests has no success rate, a canary that saw no traffic is called
//! out, the timeline keeps the analysis that decided, and the report shows what happened.

mod support;

use std::path::Path;

use support::*;

/// BASE with no traffic at all, rolled back for lack of data (threshold judge).
fn without_traffic(expect: &str) -> String {
    base_with("    rate: 50", "    rate: 0").replace("expect:\n  outcome: promoted\n", expect)
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn library(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn rolled_back_by_fails_when_the_rollback_was_for_lack_of_data() {
    let text = without_traffic(
        "expect:\n  outcome: rolled-back\n  rolled_back_by: request-success-rate\n",
    );
    let out = sim(&["run", path_str(&write("no-data-by.yaml", &text))]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("FAIL  rolled_back_by: expected a rollback because request-success-rate breached its bound or regressed, got a rollback on request-success-rate (no data)"),
        "{}",
        out.stdout
    );
}

#[test]
fn rolled_back_for_no_data_holds_when_no_request_reached_the_canary() {
    let text = without_traffic(
        "expect:\n  outcome: rolled-back\n  rolled_back_for_no_data: request-success-rate\n",
    );
    let out = sim(&["run", path_str(&write("no-data-for.yaml", &text))]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("pass  rolled_back_for_no_data"),
        "{}",
        out.stdout
    );
    // And not for a rollback on a value: the base canary with 20% errors.
    let failing = base_with(
        "    latency: {p50: 10ms, p99: 40ms}",
        "    latency: {p50: 10ms, p99: 40ms}\n  canary:\n    error_rate: 0.2",
    )
    .replace(
        "expect:\n  outcome: promoted\n",
        "expect:\n  rolled_back_for_no_data: request-success-rate\n",
    );
    let out = sim(&["run", path_str(&write("value-not-no-data.yaml", &failing))]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("FAIL  rolled_back_for_no_data"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_run_without_requests_reports_no_success_rate_in_text_and_json() {
    let text = without_traffic("expect:\n  min_success_rate: 99\n");
    let file = write("no-requests.yaml", &text);
    let out = sim(&["run", path_str(&file)]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("requests: 0 sent, 0 failed (no success rate: no requests)"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("100.000%"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("FAIL  min_success_rate: expected >= 99%, got no requests"),
        "{}",
        out.stdout
    );
    let run = &json(&sim(&["run", path_str(&file), "--json"]))[0];
    assert!(run["success_rate"].is_null(), "{run}");
    assert!(run["clients"][0]["success_rate"].is_null(), "{run}");
}

#[test]
fn a_canary_that_never_received_a_request_is_warned_about_in_the_summary_and_json() {
    let file = write(
        "canary-idle.yaml",
        &without_traffic("expect:\n  outcome: rolled-back\n"),
    );
    let warning = "the canary never received a request";
    let out = sim(&["run", path_str(&file)]);
    assert!(
        out.stdout.contains(&format!("warning: {warning}")),
        "{}",
        out.stdout
    );
    let run = &json(&sim(&["run", path_str(&file), "--json"]))[0];
    let warnings = run["warnings"].as_array().expect("warnings");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.starts_with(warning))),
        "{run}"
    );
    let healthy = sim(&["run", path_str(&write("canary-busy.yaml", BASE)), "--json"]);
    assert_eq!(json(&healthy)[0]["warnings"], serde_json::json!([]));
}

#[test]
fn a_regression_seen_between_steps_keeps_the_analysis_that_saw_it() {
    let out = sim(&["run", &library("judges-compared.yaml"), "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let runs = json(&out);
    let statistical = runs
        .as_array()
        .and_then(|r| r.iter().find(|r| r["variant"] == "statistical"))
        .expect("a statistical variant");
    let rollback = statistical["decisions"]
        .as_array()
        .and_then(|d| {
            d.iter().find(|d| {
                d["messages"][0]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Rolling back"))
            })
        })
        .expect("a rollback");
    let duration = rollback["metrics"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "request-duration"))
        .unwrap_or_else(|| panic!("no analysis at the rollback: {rollback}"));
    assert_eq!(duration["verdict"], "fail", "{rollback}");
}

#[test]
fn samples_are_taken_at_every_tick_so_a_step_shorter_than_the_interval_shows() {
    // The statistical judge rolls the canary back at a look, 15s after its 10% step (interval
    // 30s, a look every 7.5s).
    let out = sim(&["run", &library("judges-compared.yaml"), "--json"]);
    let runs = json(&out);
    let statistical = runs
        .as_array()
        .and_then(|r| r.iter().find(|r| r["variant"] == "statistical"))
        .expect("a statistical variant");
    let samples = statistical["samples"].as_array().expect("samples");
    let at = |i: usize| samples[i]["at_ms"].as_u64().expect("at_ms");
    assert_eq!(at(1) - at(0), 7_500, "a sample per look");
    assert!(
        samples.iter().any(|s| s["canary_weight"] == 10),
        "the 10% step is sampled"
    );
}

#[test]
fn the_report_draws_the_bounds_labels_the_decisions_and_says_what_it_leaves_out() {
    let file = write("report-parts.yaml", BASE);
    let report = file.with_extension("html");
    let out = sim(&["run", path_str(&file), "--report", path_str(&report)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let html = std::fs::read_to_string(&report).expect("report written");
    assert!(html.contains("class=\"bound\""), "a bound line");
    assert!(
        html.contains(">request-success-rate min 99</text>"),
        "its label"
    );
    for label in ["deploy, start", "10%", "30%", "promoted"] {
        assert!(
            html.contains(&format!("class=\"mark-label\">{label}<title>")),
            "decision label {label}"
        );
    }
    assert!(html.contains("windows with fewer than 20 requests are not drawn"));
    // Round time ticks: 8m of run, a tick every minute.
    assert!(html.contains(">1m</text>") && html.contains(">8m</text>"));
}

/// The run's requests and failures, and each sample's, are what the clients saw: the requests
/// no pod answered included (here about 5,400 pool overflows, `UO`, which Istio reports against
/// the destination `unknown`, as Envoy's pool fails the stream with no upstream host).
#[test]
fn the_runs_figures_and_samples_count_what_the_clients_saw_answered_or_not() {
    let out = sim(&["run", &library("load-spike-pool-overflow.yaml"), "--json"]);
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    let v = json(&out);
    let run = &v[0];
    let sum = |field: &str| -> u64 {
        let clients = run["clients"].as_array().expect("clients");
        clients
            .iter()
            .map(|c| c[field].as_u64().expect(field))
            .sum()
    };
    assert!(run["counters"]["pending_overflow"].as_u64().unwrap() > 1000);
    assert_eq!(run["requests"].as_u64(), Some(sum("requests")));
    assert_eq!(run["failed_requests"].as_u64(), Some(sum("failed")));
    // The 3x spikes overflow the pool far more than the run's 2.5% average: a sample shows it.
    let worst = (run["samples"].as_array().expect("samples").iter())
        .filter_map(|s| s["clients_success_rate"].as_f64())
        .fold(100.0_f64, f64::min);
    assert!(worst < 97.5, "the worst sampled success rate is {worst}%");
}
