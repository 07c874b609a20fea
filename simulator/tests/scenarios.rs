//! Every scenario in `scenarios/` and its subfolders (`benchmarks/`, `examples/`) is a test case:
//! it must load, tell its story in `description`, and every variant must meet its `expect:`
//! checks at the file's own seed. The files are found at run time, so a new scenario is a new
//! test with no code change (`cargo test --test scenarios -- low-traffic` runs one).

use std::path::{Path, PathBuf};

use fledge_simulator::scenario::Scenario;
use fledge_simulator::{expect, harness};
use libtest_mimic::{Arguments, Failed, Trial};

/// The repository root, which holds the scenario library.
fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn scenario_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    yaml_files_under(&root().join("scenarios"), &mut files);
    files.sort();
    files
}

/// The YAML files in `dir` and, at any depth, in its subfolders.
fn yaml_files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for path in entries.filter_map(|entry| entry.ok().map(|e| e.path())) {
        if path.is_dir() {
            yaml_files_under(&path, out);
        } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(path);
        }
    }
}

/// Runs every variant of the file; on failure, says which checks failed and what happened.
fn meets_its_expectations(file: &Path) -> Result<(), Failed> {
    let shown = file
        .strip_prefix(root())
        .unwrap_or(file)
        .display()
        .to_string();
    let scenario = Scenario::load(file).map_err(|e| format!("{shown} does not load: {e}"))?;
    if scenario.description.trim().is_empty() {
        return Err(format!("{shown}: a library scenario tells its story in `description`").into());
    }
    let mut failures = Vec::new();
    for variant in &scenario.variants {
        let run = harness::run(&scenario, variant, scenario.seed)
            .map(|r| expect::checked(r, &variant.expect))
            .map_err(|e| format!("{shown} does not run: {e}"))?;
        let label = if variant.name.is_empty() {
            String::new()
        } else {
            format!(" [{}]", variant.name)
        };
        // What the controller would write on a cluster is what the mesh routed by.
        for w in run
            .warnings
            .iter()
            .filter(|w| w.starts_with(harness::ROUTES_NOT_UNDERSTOOD))
        {
            failures.push(format!("{shown}{label}: {w}"));
        }
        for check in run.checks.iter().filter(|c| !c.passed) {
            failures.push(format!(
                "{shown}{label}: {} expected {}, got {}",
                check.name, check.expected, check.actual
            ));
        }
        if !run.passed() {
            failures.push(format!(
                "{shown}{label}: outcome {:?}; last decision: {}{}",
                run.outcome,
                run.final_message,
                run.warnings
                    .iter()
                    .map(|w| format!("\n  warning: {w}"))
                    .collect::<String>()
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n").into())
    }
}

fn main() {
    let args = Arguments::from_args();
    let files = scenario_files();
    assert!(
        !files.is_empty(),
        "no scenario files found in scenarios/: the library is part of the test suite"
    );
    let top = root().join("scenarios");
    assert!(
        files.iter().any(|f| f.parent() != Some(top.as_path())),
        "no scenario files found in the subfolders of scenarios/ (benchmarks/, examples/)"
    );
    let trials = files
        .into_iter()
        .map(|file| {
            let shown = file
                .strip_prefix(root())
                .unwrap_or(&file)
                .display()
                .to_string();
            let name = format!("{shown} meets its expectations");
            Trial::test(name, move || meets_its_expectations(&file))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
