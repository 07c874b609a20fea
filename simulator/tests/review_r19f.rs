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

/// A benchmark's own Canary (a scenario holds it under `canary:`), as a file `plan` takes.
fn canary_of(name: &str, metrics: Option<&str>) -> std::path::PathBuf {
    let scenario = std::fs::read_to_string(format!(
        "{}/../scenarios/benchmarks/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let start = scenario.find("canary:\n").expect("a canary") + "canary:\n".len();
    let mut body: String = scenario[start..]
        .lines()
        .take_while(|l| l.starts_with("  ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    if let Some(metrics) = metrics {
        let at = body.find("    metrics:\n").expect("metrics");
        body.truncate(at);
        body.push_str(metrics);
    }
    let path = std::env::temp_dir().join(format!(
        "review-r19f-{name}-{}-{}.yaml",
        if metrics.is_some() {
            "metrics"
        } else {
            "as-is"
        },
        std::process::id()
    ));
    std::fs::write(&path, body).unwrap();
    path
}

/// `fledge-sim plan FILE ARGS`: exit code, stdout and stderr.
fn plan(file: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(support::sim_binary())
        .arg("plan")
        .arg(file)
        .args(args)
        .output()
        .expect("fledge-sim runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Finding 3. A statistical Canary with no compared metric (no metrics at all here; the same
/// with only an inline query): `plan --rps 1` forecasts a step a minute and then says "with
/// the judge, a step below the top weight ends once it has its own minRequests and nothing
/// leans worse, the top step once the rollout's canary requests show the canary no worse",
/// a rule that does not apply (no metric is compared, each step lasts `interval`), under a
/// header claiming "canary and primary both failing 0.5% of requests (margins: none)". It
/// should say the judge compares nothing here, not describe evidence it will never gather.
#[test]
#[ignore = "review r19f finding 3: plan --rps on a statistical Canary without a compared metric describes the judge's minRequests/no-worse step rule that does not apply, and never says nothing is compared"]
fn plan_on_a_statistical_canary_without_compared_metrics_does_not_describe_the_judges_evidence() {
    let file = canary_of("aa-1rps", Some(""));
    let (code, out, err) = plan(&file, &["--rps", "1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !out.contains("show the canary no worse") && !out.contains("its own minRequests"),
        "{out}"
    );
}

/// Finding 4. At very low rates `plan` states the evidence wrongly. At `--rps 0.001` (the
/// smallest it accepts) the forecast never leaves the 10% step (9 canary requests in a day),
/// yet it says "it needs more than a day for its evidence (9 canary requests, 9 of them at the
/// top weight ...)": none is at the top weight, and 9 is what a day serves, not what the
/// evidence needs (about 3,056, as at 1 requests/s). The warning then says "at 0 requests/s"
/// (the rate rounded away).
#[test]
#[ignore = "review r19f finding 4: plan --rps 0.001 says '9 canary requests, 9 of them at the top weight' (none reach it; ~3,056 are needed) and warns 'at 0 requests/s'"]
fn plan_at_a_tiny_rate_states_the_evidence_needed_and_the_rate_given() {
    let file = canary_of("aa-1rps", None);
    let (code, out, err) = plan(&file, &["--rps", "0.001", "--latency", "20,80"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains("9 of them at the top weight"), "{out}");
    assert!(!err.contains("at 0 requests/s"), "{err}");
}

/// Finding 5. `latency-median-20pct-100rps` does gate the median (the judge's reason says "at
/// p50", plan says "gates the median"), but `fledge-sim run`'s timeline labels the value
/// `p99ms` ("p99ms 25.38 ok" at 20%, where the canary's p99 is about 120ms): a user reading
/// the case's timeline is told its p99 is 25ms.
#[test]
#[ignore = "review r19f finding 5: fledge-sim run labels a median-gated request-duration 'p99ms' in the timeline (p99ms 25.38 is the canary's median)"]
fn the_timeline_names_the_quantile_a_median_gated_latency_metric_shows() {
    let path = format!(
        "{}/../scenarios/benchmarks/latency-median-20pct-100rps.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = support::sim(&["run", &path]);
    let text = &out.stdout;
    assert!(text.contains("Rolling back app"), "{text}");
    assert!(!text.contains("p99ms"), "{text}");
}

/// Finding 6. The benchmarks README says that at 10 requests/s the judge cannot decide in time
/// "whenever the first look's rate estimate says so (about a third of the runs)". The committed
/// results say 434 of the 1,000 A/A runs (43%) were handed to the thresholds (decided at 5m15s,
/// the thresholds' pace; every other run took at least 6m30s), and the runs' Forecast warnings
/// give rates above the README's own "about 8 requests/s" (10.2 at seed 5, 9.8 at seed 6): it
/// is the first look's latency histogram, not the rate, that hands most of them over.
#[test]
fn the_benchmarks_readme_states_the_share_of_10_rps_runs_handed_to_thresholds() {
    let dir = format!("{}/../scenarios/benchmarks", env!("CARGO_MANIFEST_DIR"));
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{dir}/results/aa-10rps.json")).unwrap(),
    )
    .unwrap();
    let runs = results["runs"][0]
        .as_array()
        .expect("the scenario policy's runs");
    let handed = runs
        .iter()
        .filter(|r| r["decision_ms"].as_u64().is_some_and(|ms| ms <= 330_000))
        .count() as f64
        / runs.len() as f64;
    let readme = std::fs::read_to_string(format!("{dir}/README.md")).unwrap();
    let says_a_third = readme.contains("about a third of the runs");
    assert!(
        !says_a_third || (0.28..=0.38).contains(&handed),
        "README: about a third; results: {:.1}% handed to thresholds",
        handed * 100.0
    );
    assert!(
        !readme.contains("whenever\nthe first look's rate estimate says so")
            && !readme.contains("whenever the first look's rate estimate says so"),
        "the README attributes the handover to the rate estimate"
    );
}

/// Finding 7. The README's judge section says '"No worse" at a 0.5% baseline and a 1-point
/// margin needs about 2,300 canary requests over the rollout.' `fledge-sim plan --rps 10` on a
/// benchmark Canary with only `request-success-rate` (the same baseline and default margin)
/// forecasts 2,805 canary requests over the rollout (2,325 at the top weight), and at 1
/// requests/s "2816 canary requests" for its evidence; 2,300 is the figure the sequential
/// module's docs give for the old per-step test.
#[test]
fn the_readmes_canary_requests_for_no_worse_match_plan() {
    let metrics = "    metrics:\n      - name: request-success-rate\n        thresholdRange:\n          min: 99\n        interval: 1m\n";
    let file = canary_of("aa-10rps", Some(metrics));
    let (code, out, err) = plan(&file, &["--rps", "10"]);
    assert_eq!(code, Some(0), "{err}");
    let total: f64 = out
        .lines()
        .skip_while(|l| !l.contains("canary requests"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().nth(3)?.parse::<f64>().ok())
        .sum();
    let readme = std::fs::read_to_string(format!("{}/../README.md", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .replace('\n', " ");
    let said: f64 = readme
        .split("margin needs about ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse().ok())
        .expect("the README's figure");
    assert!(
        (said - total).abs() <= 0.1 * total,
        "README {said}, plan {total}: {out}"
    );
}

/// Finding 8. Issue 19 is done when "targets met and missed are stated". The README states two
/// missed targets (the 10x blast radius at 10 rps, the judge at 1 rps within 30 minutes) and
/// one met (that blast radius at 100 and 1,000 rps), but not the others against the table: A/A
/// false rollbacks <= 1% at 10/100/1000 rps (0.5%, 0.7%, 0.0%, yet the 95% upper bounds are
/// 1.2% and 1.4%, so 1,000 seeds do not show it), 10x errors rolled back >= 99.9% (1,000 of
/// 1,000, whose lower bound is 99.6%: not shown either), 2x at 100 rps caught on evidence >= 90%
/// (93.7%), healthy at 100 rps in at most half Flagger's time (2m45s against 6m), p99 +50%
/// caught >= 90% (100%). A reader cannot tell which targets the table meets, nor that two are
/// met only in point estimate.
#[test]
fn the_readme_states_each_issue_19_target_met_or_missed() {
    let readme = std::fs::read_to_string(format!("{}/../README.md", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .replace('\n', " ");
    let section = readme
        .split("## Decision quality: the benchmarks")
        .nth(1)
        .and_then(|s| s.split("## Architecture").next())
        .expect("the benchmarks section");
    let stated = |words: &[&str]| words.iter().any(|w| section.contains(w));
    assert!(
        stated(&["targets met", "Targets met", "target met", "A target met"]),
        "no target is stated met apart from the 10x blast radius at 100 and 1,000 rps"
    );
    assert!(
        stated(&["99.9%"]) && stated(&["90%"]),
        "the 10x (>= 99.9%) and 2x/p99 (>= 90%) targets are not named"
    );
}
