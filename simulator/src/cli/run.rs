//! `fledge-sim run` and `fledge-sim validate`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{EXIT_BAD_INPUT, EXIT_EXPECTATION_FAILED};
use crate::harness::{self, RunResult};
use crate::report;
use crate::scenario::Scenario;

pub fn run(file: &Path, seed: Option<u64>, json: bool, report_file: Option<&Path>) -> ExitCode {
    let scenario = match Scenario::load(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    warn(file, &scenario);
    let seed = seed.unwrap_or(scenario.seed);
    let progress = std::io::stderr().is_terminal() && !json;
    let mut runs: Vec<RunResult> = Vec::new();
    let mut walls: Vec<Duration> = Vec::new();
    for variant in &scenario.variants {
        if progress {
            eprint!(
                "running {}{} ...\r",
                scenario.name,
                if variant.name.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", variant.name)
                }
            );
        }
        let started = Instant::now();
        match harness::run(&scenario, variant, seed) {
            Ok(r) => {
                walls.push(started.elapsed());
                runs.push(r);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_BAD_INPUT);
            }
        }
    }
    if progress {
        // Clear the progress line before the timeline.
        eprint!("\r\x1b[K");
    }
    if json {
        match serde_json::to_string_pretty(&runs) {
            Ok(text) => emit(&format!("{text}\n")),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        for (r, wall) in runs.iter().zip(&walls) {
            emit(&format!(
                "{}simulated {} ({} events) in {:.3} s of wall time\n\n",
                report::timeline(r, &scenario.description),
                fledge_controller::spec::Duration(scenario.duration / crate::engine::MILLIS),
                r.events_processed,
                wall.as_secs_f64()
            ));
        }
        if runs.len() > 1 {
            emit(&format!("{}\n", compare(&runs)));
        }
    }
    if let Some(path) = report_file {
        if let Err(e) = std::fs::write(path, report::html(&runs, &scenario.description)) {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(EXIT_BAD_INPUT);
        }
        eprintln!("report written to {}", path.display());
    }
    if runs.iter().all(RunResult::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_EXPECTATION_FAILED)
    }
}

/// The scenario's questionable input, once, on stderr (as `plan` shows a Canary's).
fn warn(file: &Path, scenario: &Scenario) {
    for w in &scenario.warnings {
        eprintln!("warning: {}: {w}", file.display());
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error worth a panic.
pub(super) fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Variants side by side.
fn compare(runs: &[RunResult]) -> String {
    let mut out = format!(
        "{:<14} {:<12} {:>10} {:>12} {:>16}\n",
        "variant", "outcome", "decided", "max weight", "canary failures"
    );
    for r in runs {
        let decided = match (r.deployed_at_ms, r.decided_at_ms) {
            (Some(d), Some(t)) => fledge_controller::spec::Duration(t - d).to_string(),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<14} {:<12} {:>10} {:>11}% {:>16}\n",
            r.variant,
            crate::expect::outcome_name(r.outcome),
            decided,
            r.max_canary_weight,
            r.failed_requests_canary
        ));
    }
    out
}

pub fn validate(files: &[PathBuf]) -> ExitCode {
    let mut bad = false;
    for file in files {
        match Scenario::load(file) {
            Ok(s) => {
                warn(file, &s);
                emit(&format!(
                    "{}: ok ({}, {} variant{})\n",
                    file.display(),
                    s.name,
                    s.variants.len(),
                    if s.variants.len() == 1 { "" } else { "s" }
                ));
            }
            Err(e) => {
                bad = true;
                eprintln!("error: {e}");
            }
        }
    }
    if bad {
        ExitCode::from(EXIT_BAD_INPUT)
    } else {
        ExitCode::SUCCESS
    }
}
