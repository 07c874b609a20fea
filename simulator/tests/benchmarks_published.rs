//! The README's benchmark table and plot are what the command as committed produces: they are
//! rendered from the committed results (`scenarios/benchmarks/results/`), those results are of
//! the current scenario files and policies, and a few seeds of each case still give the
//! committed outcomes, so a change to a case, the simulator or a judge that moves a figure
//! fails here until the suite is run again.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// What to run when a check below fails: the whole suite, about 10 minutes on 2 cores.
const REFRESH: &str = "scripts/benchmarks.sh";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(support::sim_binary())
        .current_dir(root())
        .args(args)
        .output()
        .expect("fledge-sim runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The cases (the benchmark files' names without `.yaml`), sorted as the shell sorts them.
fn cases() -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(root().join("scenarios/benchmarks"))
        .expect("the benchmarks folder")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".yaml").map(str::to_string)
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "{cases:?}");
    cases
}

fn results(case: &str) -> String {
    format!("scenarios/benchmarks/results/{case}.json")
}

#[test]
fn the_readme_table_and_the_plot_are_what_publish_renders_from_the_committed_results() {
    let files: Vec<String> = cases().iter().map(|c| results(c)).collect();
    for f in &files {
        assert!(
            root().join(f).exists(),
            "{f}: no committed results for this case; run `{REFRESH}` and commit them"
        );
    }
    let mut args = vec!["publish"];
    args.extend(files.iter().map(String::as_str));
    args.extend([
        "--readme",
        "README.md",
        "--svg",
        "scenarios/benchmarks/results/benchmarks.svg",
        "--check",
    ]);
    let (code, _, err) = sim(&args);
    assert_eq!(code, 0, "{err}");
}

/// Each case's committed results against a few seeds run now: the first and the last shard of
/// 500 (seeds 1, 2, 999 and 1000 of 1,000), under every policy.
#[test]
fn the_committed_results_are_of_the_current_files_and_a_few_seeds_still_give_them() {
    for case in cases() {
        let file = results(&case);
        let text = std::fs::read_to_string(root().join(&file))
            .unwrap_or_else(|e| panic!("{file}: {e}; run `{REFRESH}` and commit the results"));
        let committed: Value = serde_json::from_str(&text).expect("JSON");
        let seeds = committed["seeds"].as_u64().expect("seeds");
        let scenario = format!("scenarios/benchmarks/{case}.yaml");
        let shards = 500.min(seeds);
        for shard in [0, shards - 1] {
            let (code, out, err) = sim(&[
                "compare",
                &scenario,
                "--seeds",
                &seeds.to_string(),
                "--first-seed",
                &committed["first_seed"].to_string(),
                "--shard",
                &format!("{shard}/{shards}"),
                "--out",
                "-",
            ]);
            assert_eq!(code, 0, "{case}: {err}");
            let now: Value = serde_json::from_str(&out).expect("partial results");
            assert_eq!(
                now["inputs"], committed["inputs"],
                "{file}: its fingerprint is not that of {scenario} and the policies now: \
                 the case or a policy changed since; run `{REFRESH}` and commit the results"
            );
            assert_eq!(now["names"], committed["names"], "{file}: the policies");
            let first = now["runs"][0][0]["seed"].as_u64().expect("a seed");
            let at = (first - committed["first_seed"].as_u64().expect("first seed")) as usize;
            for (p, runs) in now["runs"].as_array().expect("runs").iter().enumerate() {
                for (i, run) in runs.as_array().expect("a policy's runs").iter().enumerate() {
                    assert_eq!(
                        run,
                        &committed["runs"][p][at + i],
                        "{case}, policy {}: the outcome at this seed differs from the committed \
                         one: the simulator or a judge changed the figures; run `{REFRESH}` and \
                         commit the results",
                        now["names"][p]
                    );
                }
            }
        }
    }
}

/// A benchmark's own Canary (a scenario holds it under `canary:`) as a file `plan` takes, its
/// metrics replaced by `metrics` (YAML at the Canary's `analysis:` indentation).
fn canary_of(case: &str, metrics: &str) -> PathBuf {
    let scenario =
        std::fs::read_to_string(root().join(format!("scenarios/benchmarks/{case}.yaml"))).unwrap();
    let start = scenario.find("canary:\n").expect("a canary") + "canary:\n".len();
    let mut body: String = scenario[start..]
        .lines()
        .take_while(|l| l.starts_with("  ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    let at = body.find("    metrics:\n").expect("metrics");
    body.truncate(at);
    body.push_str(metrics);
    let path = std::env::temp_dir().join(format!(
        "benchmarks-published-{case}-{}.yaml",
        std::process::id()
    ));
    std::fs::write(&path, body).unwrap();
    path
}

/// The benchmarks README's share of 10 rps A/A runs the judge hands to the thresholds is the
/// committed results' (runs decided by 5m15s, the thresholds' pace; the judge's own take at
/// least 6m30s), and it does not put the handover down to the first look's rate estimate: the
/// handed-over runs' forecasts saw rates above the README's "about 8 requests/s".
#[test]
fn the_benchmarks_readme_states_the_share_of_10_rps_runs_handed_to_thresholds() {
    let dir = root().join("scenarios/benchmarks");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results/aa-10rps.json")).unwrap())
            .unwrap();
    let runs = results["runs"][0]
        .as_array()
        .expect("the scenario policy's runs");
    let handed = runs
        .iter()
        .filter(|r| r["decision_ms"].as_u64().is_some_and(|ms| ms <= 330_000))
        .count() as f64
        / runs.len() as f64;
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
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

/// The README's canary requests for "no worse" at a 0.5% baseline and a 1-point margin are
/// what `fledge-sim plan --rps 10` forecasts over the rollout for a benchmark Canary with only
/// `request-success-rate` (within 10%).
#[test]
fn the_readmes_canary_requests_for_no_worse_match_plan() {
    let metrics = "    metrics:\n      - name: request-success-rate\n        thresholdRange:\n          min: 99\n        interval: 1m\n";
    let file = canary_of("aa-10rps", metrics);
    let (code, out, err) = sim(&["plan", file.to_str().unwrap(), "--rps", "10"]);
    assert_eq!(code, 0, "{err}");
    let total: f64 = out
        .lines()
        .skip_while(|l| !l.contains("canary requests"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().nth(3)?.parse::<f64>().ok())
        .sum();
    let readme = std::fs::read_to_string(root().join("README.md"))
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

/// Issue 19 is done when "targets met and missed are stated": the README's benchmarks section
/// says which targets the table meets, naming the 10x (>= 99.9%) and 2x/p99 (>= 90%) ones.
#[test]
fn the_readme_states_each_issue_19_target_met_or_missed() {
    let readme = std::fs::read_to_string(root().join("README.md"))
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
