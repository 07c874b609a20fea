//! `fledge-sim sweep`: one scenario over many seeds, in parallel, and with `--vary` each
//! combination of values of its Canary's or manifests' fields, so that settings (outlier
//! detection, pools, retries, the analysis) are picked on the figures of many runs.

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
    /// Runs of a scenario without a Canary (outcome `no-rollout`): no rollout rate counts them.
    pub(crate) no_rollout: u64,
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
    /// Percentage of the clients' requests over all runs that succeeded (after retries).
    pub(crate) success_rate: Option<f64>,
    /// The runs' p99 of the durations clients saw, in milliseconds: median and worst.
    pub(crate) p99_ms_median: Option<f64>,
    pub(crate) p99_ms_max: Option<f64>,
    /// Outlier ejections enforced, and requests refused by a full connection pool
    /// (`pending_overflow`), per run.
    pub(crate) ejections_mean: f64,
    pub(crate) overflow_mean: f64,
}

/// What `sweep` keeps of a run (and writes, per seed, in a shard's partial results).
#[derive(Serialize, Deserialize)]
pub(super) struct Tally {
    outcome: Outcome,
    passed: bool,
    decision_ms: Option<u64>,
    canary_failures: u64,
    false_rollback: bool,
    requests: u64,
    failed_requests: u64,
    p99_ms: Option<f64>,
    ejections: u64,
    overflow: u64,
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
    match scenario.vary_product(vary) {
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
        text.push_str(&table(&summaries));
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
                requests: r.requests,
                failed_requests: r.failed_requests,
                p99_ms: r.p99_ms,
                ejections: r.counters.get("ejections_enforced").copied().unwrap_or(0),
                overflow: r.counters.get("pending_overflow").copied().unwrap_or(0),
            }
        })
    })
}

fn summarise(variant: &str, tallies: Vec<Tally>) -> SweepSummary {
    let runs = tallies.len() as u64;
    let count = |o: Outcome| tallies.iter().filter(|t| t.outcome == o).count() as u64;
    let decisions: Vec<f64> = tallies
        .iter()
        .filter_map(|t| t.decision_ms)
        .map(|ms| ms as f64 / 1000.0)
        .collect();
    let p99s: Vec<f64> = tallies.iter().filter_map(|t| t.p99_ms).collect();
    let (requests, failed) = tallies
        .iter()
        .fold((0, 0), |(r, f), t| (r + t.requests, f + t.failed_requests));
    let mean = |of: fn(&Tally) -> u64| {
        if runs == 0 {
            0.0
        } else {
            tallies.iter().map(of).sum::<u64>() as f64 / runs as f64
        }
    };
    SweepSummary {
        variant: variant.to_string(),
        runs,
        promoted: count(Outcome::Promoted),
        rolled_back: count(Outcome::RolledBack),
        undecided: count(Outcome::Undecided),
        no_rollout: count(Outcome::NoRollout),
        passed: tallies.iter().filter(|t| t.passed).count() as u64,
        decision_p50_s: nearest_rank(decisions.clone(), 0.5),
        decision_p95_s: nearest_rank(decisions, 0.95),
        blast_radius_mean: mean(|t| t.canary_failures),
        blast_radius_max: tallies.iter().map(|t| t.canary_failures).max().unwrap_or(0),
        false_rollbacks: tallies.iter().filter(|t| t.false_rollback).count() as u64,
        success_rate: (requests > 0).then(|| 100.0 * (1.0 - failed as f64 / requests as f64)),
        p99_ms_median: nearest_rank(p99s.clone(), 0.5),
        p99_ms_max: nearest_rank(p99s, 1.0),
        ejections_mean: mean(|t| t.ejections),
        overflow_mean: mean(|t| t.overflow),
    }
}

/// The value at rank `round((n - 1) q)` of the sorted values; none of none.
fn nearest_rank(mut values: Vec<f64>, q: f64) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    (!values.is_empty()).then(|| values[((values.len() - 1) as f64 * q).round() as usize])
}

/// A row per variant of what its runs served: the figures to pick a setting by.
fn table(summaries: &[SweepSummary]) -> String {
    let name = |s: &SweepSummary| {
        if s.variant.is_empty() {
            "(scenario)".to_string()
        } else {
            s.variant.clone()
        }
    };
    let width = summaries.iter().map(|s| name(s).len()).max().unwrap_or(0);
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let mut out = format!(
        "  {:width$}  {:>8}  {:>9}  {:>9}  {:>10}  {:>8}\n",
        "", "success", "p99 ms", "worst p99", "ejections", "overflow"
    );
    for s in summaries {
        out.push_str(&format!(
            "  {:width$}  {:>8}  {:>9}  {:>9}  {:>10.1}  {:>8.1}\n",
            name(s),
            s.success_rate
                .map_or("-".to_string(), |r| format!("{r:.2}%")),
            ms(s.p99_ms_median),
            ms(s.p99_ms_max),
            s.ejections_mean,
            s.overflow_mean,
        ));
    }
    out
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
    if s.runs > 0 && s.no_rollout == s.runs {
        // The mesh alone: what its clients were served, no rollout's rates.
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
        return format!(
            "  {name}no rollout (the mesh alone); expectations met in {:.1}%\n  {name}clients' success {}, p99 median {}, worst {}; per run {:.1} ejections, {:.1} pool overflows\n",
            pct(s.passed),
            s.success_rate
                .map_or("-".to_string(), |r| format!("{r:.2}%")),
            ms(s.p99_ms_median),
            ms(s.p99_ms_max),
            s.ejections_mean,
            s.overflow_mean,
        );
    }
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
