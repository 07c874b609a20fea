//! `fledge-sim compare` on the benchmark suite: small comparisons (a few dozen seeds), so the
//! command keeps working; and the harness' run to the decision that it is built on.

mod support;

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
    let out = Command::new(support::sim_binary())
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
fn at_1_rps_the_thresholds_judge_from_the_first_look_and_decide_before_the_deadline() {
    // At 1 rps the forecast at the first look says the statistical judge cannot decide within
    // the progress deadline (10m), so the metrics' thresholds judge each interval from then on,
    // as Flagger's do: an A/A canary is promoted, none is held to the deadline.
    let v = compare_json(&[&benchmark("aa-1rps"), "--seeds", "12", "--json"]);
    assert_eq!(rate(&v, "scenario", "promoted"), 1.0, "{v}");
    assert_eq!(rate(&v, "scenario", "deadline"), 0.0, "{v}");
    assert_eq!(rate(&v, "scenario", "undecided"), 0.0, "{v}");
    assert!(rate(&v, "scenario", "median_decision_s") < 600.0, "{v}");
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

fn sim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(support::sim_binary())
        .args(args)
        .output()
        .expect("fledge-sim runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `command FILE --seeds 10 [extra] --shard I/3 --out DIR/NAME-I.json` for the three
/// shards; the files' paths.
fn shards(dir: &str, command: &str, file: &str, extra: &[&str]) -> Vec<String> {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir);
    std::fs::create_dir_all(&tmp).expect("the temporary directory is writable");
    (0..3)
        .map(|i| {
            let out = tmp
                .join(format!("{command}-{i}.json"))
                .display()
                .to_string();
            let shard = format!("{i}/3");
            let mut args = vec![command, file, "--seeds", "10"];
            args.extend(extra);
            args.extend(["--shard", &shard, "--out", &out]);
            let (code, _, err) = sim(&args);
            assert_eq!(code, 0, "{args:?}: {err}");
            out
        })
        .collect()
}

#[test]
fn shards_of_a_comparison_merged_print_the_json_of_one_run_byte_for_byte() {
    let file = benchmark("errors-2x-100rps");
    let files = shards("h18b-compare", "compare", &file, &[]);
    let (code, one, err) = sim(&["compare", &file, "--seeds", "10", "--json"]);
    assert_eq!(code, 0, "{err}");
    // In any order: the shards say where they belong.
    let (code, merged, err) = sim(&["merge", &files[2], &files[0], &files[1], "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(merged, one);
    // The Markdown table too, a row per policy.
    let (_, one, _) = sim(&["compare", &file, "--seeds", "10", "--markdown"]);
    let (_, merged, _) = sim(&["merge", &files[0], &files[1], &files[2], "--markdown"]);
    assert_eq!(merged, one);
    let rows: Vec<&str> = one.lines().collect();
    assert_eq!(rows.len(), 4, "{one}");
    assert!(
        rows[0].starts_with("| case | policy | promoted [95%] |"),
        "{one}"
    );
    assert!(
        rows[2].starts_with("| bench-errors-2x-100rps | scenario | "),
        "{one}"
    );
    assert!(
        rows[3].starts_with("| bench-errors-2x-100rps | flagger-default | "),
        "{one}"
    );
    let (_, text, _) = sim(&["merge", &files[0], &files[1], &files[2]]);
    assert!(
        text.starts_with("bench-errors-2x-100rps: 10 seeds from 1, each run to its decision, merged from 3 shards\n"),
        "{text}"
    );
}

#[test]
fn shards_of_a_sweep_merged_print_the_json_of_one_run_byte_for_byte() {
    // Two variants, so that each keeps its own runs.
    let file = format!(
        "{}/../scenarios/judges-compared.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let files = shards("h18b-sweep", "sweep", &file, &["--first-seed", "7"]);
    let (code, one, err) = sim(&[
        "sweep",
        &file,
        "--seeds",
        "10",
        "--first-seed",
        "7",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, merged, err) = sim(&["merge", &files[1], &files[2], &files[0], "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(merged, one);
}

#[test]
fn merge_refuses_shards_missing_repeated_or_of_another_run_naming_the_file() {
    let file = benchmark("aa-100rps");
    let files = shards("h18b-refused", "compare", &file, &[]);
    let refused = |args: &[&str], says: &[&str]| {
        let mut all = vec!["merge"];
        all.extend(args);
        let (code, out, err) = sim(&all);
        assert_eq!(code, 2, "{args:?}: {out}");
        for s in says {
            assert!(err.contains(s), "{args:?}: `{s}` not in: {err}");
        }
    };
    refused(&[&files[0], &files[2]], &["shard 1/3 missing", &files[2]]);
    refused(
        &[&files[0], &files[1], &files[1], &files[2]],
        &["shard 1/3 is also", &files[1]],
    );

    // Another scenario, other policies, other seeds: each an error naming the odd file.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("h18b-refused");
    let other = |name: &str, args: &[&str]| {
        let out = tmp.join(name).display().to_string();
        let mut all = vec!["compare"];
        all.extend(args);
        all.extend(["--shard", "1/3", "--out", &out]);
        let (code, _, err) = sim(&all);
        assert_eq!(code, 0, "{err}");
        out
    };
    let scenario = other("scenario.json", &[&benchmark("aa-10rps"), "--seeds", "10"]);
    refused(
        &[&files[0], &scenario, &files[2]],
        &[&scenario, "scenario or policy files"],
    );
    let canary = tmp.join("two-steps.yaml");
    std::fs::write(
        &canary,
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: two-steps}\nspec:\n  \
         targetRef: {kind: Deployment, name: x}\n  service: {port: 80}\n  analysis:\n    \
         interval: 1m\n    threshold: 5\n    stepWeight: 25\n    maxWeight: 50\n",
    )
    .expect("writable");
    let policy = format!("flagger-default={}", canary.display());
    let policies = other(
        "policies.json",
        &[&file, "--seeds", "10", "--policy", &policy],
    );
    refused(
        &[&files[0], &policies, &files[2]],
        &[&policies, "policy files"],
    );
    let seeds = other("seeds.json", &[&file, "--seeds", "12"]);
    refused(&[&files[0], &seeds, &files[2]], &[&seeds, "seeds"]);

    // Another version of the format or of fledge-sim, or not partial results at all.
    let edited = |name: &str, from: &str, to: &str| {
        let text = std::fs::read_to_string(&files[1]).expect("written");
        assert!(text.contains(from), "{from} in {text}");
        let out = tmp.join(name).display().to_string();
        std::fs::write(&out, text.replacen(from, to, 1)).expect("writable");
        out
    };
    let format = edited("format.json", "\"version\":1,", "\"version\":2,");
    refused(
        &[&files[0], &format, &files[2]],
        &[&format, "format version 2"],
    );
    let build = edited("build.json", "\"fledge_sim\":\"", "\"fledge_sim\":\"0.0.0-");
    refused(
        &[&files[0], &build, &files[2]],
        &[&build, "fledge-sim version"],
    );
    let seed = edited("seed.json", "{\"seed\":4,", "{\"seed\":5,");
    refused(
        &[&files[0], &seed, &files[2]],
        &[&seed, "not the 3 seeds of shard 1/3"],
    );
    refused(&[&files[0], &file, &files[2]], &[&file, "not JSON"]);
}

#[test]
fn the_example_indexed_job_runs_a_shard_as_written() {
    let manifest = format!(
        "{}/../charts/fledge/examples/sharded-sweep-job.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&manifest).expect("the example exists");
    let job: Value = serde_norway::from_str(&text).expect("the example is YAML");
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    let completions = job["spec"]["completions"].as_u64().expect("completions");
    let args: Vec<String> = job["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("a string").to_string())
        .collect();
    assert!(
        args.contains(&format!("$(JOB_COMPLETION_INDEX)/{completions}")),
        "one shard per completion index: {args:?}"
    );
    // The pod's command as the Job controller expands it for the last index, with the image's
    // /scenarios here and fewer seeds: it prints its partial results, which merge alone
    // refuses for the shards it lacks.
    let scenarios = format!("{}/../scenarios/", env!("CARGO_MANIFEST_DIR"));
    let mut run: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("$(JOB_COMPLETION_INDEX)", &(completions - 1).to_string())
                .replace("/scenarios/", &scenarios)
        })
        .collect();
    let seeds = run.iter().position(|a| a == "--seeds").expect("--seeds") + 1;
    run[seeds] = format!("{}", completions * 2);
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let (code, out, err) = sim(&run);
    assert_eq!(code, 0, "{run:?}: {err}");
    let partial: Value = serde_json::from_str(&out).expect("partial results on stdout");
    assert_eq!(partial["shard"]["index"], completions - 1, "{out}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("h18b-job-shard.json");
    std::fs::write(&path, &out).expect("writable");
    let (code, _, err) = sim(&["merge", &path.display().to_string()]);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("shard 0/{completions}")), "{err}");
}

#[test]
fn vary_compares_the_scenario_canary_with_each_value_named_path_equals_value() {
    let file = benchmark("errors-10x-100rps");
    let v = compare_json(&[
        &file,
        "--seeds",
        "3",
        "--json",
        "--vary",
        "analysis.stepWeight=20,25",
    ]);
    let policies: Vec<&String> = v.as_object().expect("an object").keys().collect();
    assert_eq!(
        policies,
        [
            "analysis.stepWeight=20",
            "analysis.stepWeight=25",
            "flagger-default",
            "scenario"
        ],
        "{v}"
    );
    // Larger steps reach the canary's failures sooner: the patch took effect.
    assert_ne!(
        v["analysis.stepWeight=25"]["median_canary_failures"],
        v["scenario"]["median_canary_failures"],
        "{v}"
    );
}

#[test]
fn a_bad_vary_path_or_value_is_refused_naming_the_flag_with_exit_2() {
    let file = benchmark("errors-10x-100rps");
    for (arg, says) in [
        ("analysis.nosuch=1", "`analysis.nosuch` is not a field"),
        (
            "analysis.stepWeight=abc",
            "abc: the patched Canary does not load",
        ),
        (
            "analysis.interval.x=1",
            "`x` is below a value that is not a mapping",
        ),
        ("analysis.stepWeight=", "give PATH=V1,V2,..."),
        ("analysis.stepWeight=5,,6", "an empty value"),
    ] {
        for command in ["compare", "sweep"] {
            let (code, out, err) = sim(&[command, &file, "--seeds", "1", "--vary", arg]);
            assert_eq!(code, 2, "{command} --vary {arg}: {out}");
            assert!(
                err.contains(&format!("--vary {arg}: ")) && err.contains(says),
                "{command} --vary {arg}: `{says}` not in: {err}"
            );
        }
    }
}

#[test]
fn merge_svg_plots_each_policy_of_the_comparison() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("h18-svg");
    std::fs::create_dir_all(&tmp).expect("writable");
    let (out, svg) = (tmp.join("all.json"), tmp.join("plot.svg"));
    let (code, _, err) = sim(&[
        "compare",
        &benchmark("errors-10x-100rps"),
        "--seeds",
        "3",
        "--out",
        &out.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    let _ = std::fs::remove_file(&svg);
    let (code, _, err) = sim(&[
        "merge",
        &out.display().to_string(),
        "--svg",
        &svg.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    let plot = std::fs::read_to_string(&svg).expect("the plot is written");
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    for name in ["scenario", "flagger-default", "bench-errors-10x-100rps"] {
        assert!(plot.contains(&format!(">{name}<")), "{name} in {plot}");
    }
}
