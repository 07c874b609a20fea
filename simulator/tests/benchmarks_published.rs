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
