//! `fledge-sim sweep`: one scenario over many seeds, in parallel.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::EXIT_BAD_INPUT;
use super::merge::{self, Fingerprint, Header};
use super::run::emit;
use crate::scenario::{Outcome, Scenario, Variant};
use crate::seeds::{Seeds, Shard};
use crate::{expect, harness};

/// The distribution of outcomes of one variant over the seeds.
#[derive(Debug, Serialize)]
pub(super) struct SweepSummary {
    pub(crate) variant: String,
    pub(crate) runs: u64,
    pub(crate) promoted: u64,
    pub(crate) rolled_back: u64,
    pub(crate) undecided: u64,
    /// Runs whose expectations all held.
    pub(crate) passed: u64,
    /// Time from deploy to decision, in seconds: median and 95th percentile.
    pub(crate) decision_p50_s: Option<f64>,
    pub(crate) decision_p95_s: Option<f64>,
    /// Failed requests served by the canary: mean and maximum.
    pub(crate) blast_radius_mean: f64,
    pub(crate) blast_radius_max: u64,
    /// Rollbacks of a canary the scenario says must not be rolled back.
    pub(crate) false_rollbacks: u64,
}

/// What `sweep` keeps of a run (and writes, per seed, in a shard's partial results).
#[derive(Serialize, Deserialize)]
pub(super) struct Tally {
    outcome: Outcome,
    passed: bool,
    decision_ms: Option<u64>,
    canary_failures: u64,
    false_rollback: bool,
}

/// `--shard` and `--out`: which part of the seeds to run, and where to write its runs.
pub(super) struct Sharding<'a> {
    pub(crate) shard: Option<Shard>,
    pub(crate) out: Option<&'a Path>,
}

pub(super) fn sweep(
    file: &Path,
    first: u64,
    count: u64,
    threads: Option<usize>,
    json: bool,
    sharding: &Sharding,
    vary: &[String],
) -> ExitCode {
    let mut scenario = match Scenario::load(file) {
        Ok(s) => s,
        Err(e) => {
            sayln!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    for arg in vary {
        match scenario.vary(arg) {
            Ok(variants) => {
                for v in &variants {
                    for w in &v.warnings {
                        sayln!("warning: {}: {}: {w}", file.display(), v.name);
                    }
                }
                scenario.variants.extend(variants);
            }
            Err(e) => {
                sayln!("error: {}: {e}", file.display());
                return ExitCode::from(EXIT_BAD_INPUT);
            }
        }
    }
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let whole = Seeds {
        first,
        count,
        threads,
        progress: !json && std::io::stderr().is_terminal(),
    };
    let shard = sharding.shard.unwrap_or(Shard::WHOLE);
    let seeds = shard.of(&whole);
    let started = Instant::now();
    let mut runs = Vec::new();
    for variant in &scenario.variants {
        match sweep_variant(&scenario, variant, &seeds) {
            Ok(tallies) => runs.push((variant.name.clone(), tallies)),
            Err(e) => {
                sayln!("error: {e}");
                return ExitCode::from(EXIT_BAD_INPUT);
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    if seeds.progress {
        say!("\r\x1b[K");
    }
    if let Some(out) = sharding.out {
        let mut inputs = Fingerprint::new();
        inputs.add(&std::fs::read(file).unwrap_or_default());
        for arg in vary {
            inputs.add(b"--vary").add(arg.as_bytes());
        }
        let header = Header::new("sweep", &scenario.name, &inputs, &whole, shard);
        if let Err(e) = merge::write(out, header, &runs, &seeds) {
            sayln!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    }
    let shard = sharding
        .shard
        .map_or(String::new(), |s| format!("shard {s} "));
    let tail = format!(
        "{shard}on {threads} thread{} in {wall:.2} s",
        if threads == 1 { "" } else { "s" }
    );
    if !sharding.out.is_some_and(merge::to_stdout) {
        print(&scenario.name, &seeds, runs, json, &tail);
    }
    ExitCode::SUCCESS
}

/// Prints the figures of each variant's runs over `seeds`; `tail` ends the first line of the
/// text (how the runs were made).
pub(super) fn print(
    scenario: &str,
    seeds: &Seeds,
    runs: Vec<(String, Vec<Tally>)>,
    json: bool,
    tail: &str,
) {
    let summaries: Vec<SweepSummary> = runs
        .into_iter()
        .map(|(variant, tallies)| summarise(&variant, tallies))
        .collect();
    if json {
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&summaries).unwrap_or_default()
        ));
    } else {
        let mut text = format!(
            "{scenario}: {} seeds from {} {tail}\n",
            seeds.count, seeds.first
        );
        for s in &summaries {
            text.push_str(&render(s));
        }
        emit(&text);
    }
}

fn sweep_variant(
    scenario: &Scenario,
    variant: &Variant,
    seeds: &Seeds,
) -> Result<Vec<Tally>, harness::HarnessError> {
    seeds.run(|seed| {
        harness::run(scenario, variant, seed).map(|r| {
            let r = expect::checked(r, &variant.expect);
            Tally {
                outcome: r.outcome,
                passed: r.passed(),
                decision_ms: r.deployed_at_ms.zip(r.decided_at_ms).map(|(d, t)| t - d),
                canary_failures: r.failed_requests_canary,
                false_rollback: variant.expect.no_false_rollback
                    && r.outcome == Outcome::RolledBack,
            }
        })
    })
}

fn summarise(variant: &str, tallies: Vec<Tally>) -> SweepSummary {
    let runs = tallies.len() as u64;
    let count = |o: Outcome| tallies.iter().filter(|t| t.outcome == o).count() as u64;
    let mut decisions: Vec<u64> = tallies.iter().filter_map(|t| t.decision_ms).collect();
    decisions.sort_unstable();
    let quantile = |q: f64| -> Option<f64> {
        (!decisions.is_empty())
            .then(|| decisions[((decisions.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0)
    };
    SweepSummary {
        variant: variant.to_string(),
        runs,
        promoted: count(Outcome::Promoted),
        rolled_back: count(Outcome::RolledBack),
        undecided: count(Outcome::Undecided),
        passed: tallies.iter().filter(|t| t.passed).count() as u64,
        decision_p50_s: quantile(0.5),
        decision_p95_s: quantile(0.95),
        blast_radius_mean: if runs == 0 {
            0.0
        } else {
            tallies.iter().map(|t| t.canary_failures).sum::<u64>() as f64 / runs as f64
        },
        blast_radius_max: tallies.iter().map(|t| t.canary_failures).max().unwrap_or(0),
        false_rollbacks: tallies.iter().filter(|t| t.false_rollback).count() as u64,
    }
}

fn render(s: &SweepSummary) -> String {
    let pct = |n: u64| {
        if s.runs == 0 {
            0.0
        } else {
            100.0 * n as f64 / s.runs as f64
        }
    };
    let secs = |v: Option<f64>| {
        v.map_or("-".to_string(), |v| {
            fledge_controller::spec::Duration((v * 1000.0) as u64).to_string()
        })
    };
    let name = if s.variant.is_empty() {
        String::new()
    } else {
        format!("[{}] ", s.variant)
    };
    format!(
        "  {name}promoted {:.1}%, rolled back {:.1}%, undecided {:.1}%; expectations met in {:.1}%\n  {name}time to decision p50 {}, p95 {}; failed requests served by the canary: mean {:.1}, max {}; false rollbacks {} ({:.1}%)\n",
        pct(s.promoted),
        pct(s.rolled_back),
        pct(s.undecided),
        pct(s.passed),
        secs(s.decision_p50_s),
        secs(s.decision_p95_s),
        s.blast_radius_mean,
        s.blast_radius_max,
        s.false_rollbacks,
        pct(s.false_rollbacks)
    )
}
