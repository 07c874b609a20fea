//! `fledge-sim compare`: one scenario under several Canary policies over the same seeds.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use super::EXIT_BAD_INPUT;
use super::merge::{self, Fingerprint, Header};
use super::run::emit;
use crate::compare::{self, Summary, Tally};
use crate::scenario::Scenario;
use crate::seeds::{Seeds, Shard};

pub(super) struct CompareArgs<'a> {
    pub(crate) file: &'a Path,
    pub(crate) policies: &'a [String],
    pub(crate) vary: &'a [String],
    pub(crate) seeds: u64,
    pub(crate) first_seed: u64,
    pub(crate) threads: Option<usize>,
    pub(crate) json: bool,
    pub(crate) markdown: bool,
    pub(crate) shard: Option<Shard>,
    pub(crate) out: Option<&'a Path>,
}

pub(super) fn run(args: &CompareArgs) -> ExitCode {
    let scenario = match Scenario::load(args.file) {
        Ok(s) => s,
        Err(e) => {
            sayln!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let policies = match compare::policies(&scenario, args.policies, args.vary) {
        Ok(p) => p,
        Err(e) => {
            sayln!("error: {}: {e}", args.file.display());
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    for policy in &policies {
        for w in &policy.variant.warnings {
            sayln!(
                "warning: {}: policy {}: {w}",
                args.file.display(),
                policy.name
            );
        }
    }
    let progress = !args.json && std::io::stderr().is_terminal();
    let whole = Seeds {
        first: args.first_seed,
        count: args.seeds,
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1),
        progress,
    };
    let shard = args.shard.unwrap_or(Shard::WHOLE);
    let seeds = shard.of(&whole);
    let started = Instant::now();
    let runs = match compare::compare(&scenario, &policies, &seeds) {
        Ok(s) => s,
        Err(e) => {
            sayln!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let wall = started.elapsed().as_secs_f64();
    if progress {
        say!("\r\x1b[K");
    }
    if let Some(out) = args.out {
        let header = Header::new(
            "compare",
            &scenario.name,
            &inputs(args.file, args.policies, args.vary),
            &whole,
            shard,
        );
        if let Err(e) = merge::write(out, header, &runs, &seeds) {
            sayln!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    }
    let tail = match args.shard {
        Some(shard) => format!("shard {shard} in {wall:.2} s of wall time"),
        None => format!("in {wall:.2} s of wall time"),
    };
    if !args.out.is_some_and(merge::to_stdout) {
        let format = if args.markdown {
            Format::Markdown
        } else if args.json {
            Format::Json
        } else {
            Format::Text
        };
        print(&scenario.name, &seeds, &runs, format, &tail);
    }
    ExitCode::SUCCESS
}

/// The fingerprint of a comparison's inputs: the scenario file, and each policy's name and
/// Canary (its file, not its path: shards on other machines see other paths; or the built-in
/// policy's text, so that changing the built-in changes the fingerprint too), and the
/// `--vary` arguments.
pub(super) fn inputs(file: &Path, policies: &[String], vary: &[String]) -> Fingerprint {
    let mut f = Fingerprint::new();
    f.add(&std::fs::read(file).unwrap_or_default());
    let default = [compare::FLAGGER_DEFAULT.to_string()];
    let policies = if policies.is_empty() {
        &default[..]
    } else {
        policies
    };
    for arg in policies {
        let (name, path) = arg.split_once('=').unwrap_or((arg, ""));
        f.add(name.as_bytes());
        if !path.is_empty() {
            f.add(&std::fs::read(PathBuf::from(path)).unwrap_or_default());
        } else if name == compare::FLAGGER_DEFAULT {
            f.add(compare::FLAGGER_DEFAULT_CANARY.as_bytes());
        }
    }
    for arg in vary {
        f.add(b"--vary").add(arg.as_bytes());
    }
    f
}

/// How `compare` and `merge` print the figures.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Text,
    /// An object keyed by policy name.
    Json,
    /// A Markdown table, a row per policy.
    Markdown,
}

/// Prints the figures of each policy's runs over `seeds`. `tail` ends the text's first line
/// (how the runs were made).
pub(super) fn print(
    scenario: &str,
    seeds: &Seeds,
    runs: &[(String, Vec<Tally>)],
    format: Format,
    tail: &str,
) {
    let summaries = compare::summaries(runs);
    if format == Format::Markdown {
        emit(&compare::render_markdown(scenario, &summaries));
    } else if format == Format::Json {
        let object: serde_json::Map<String, serde_json::Value> = summaries
            .iter()
            .map(|(name, s): &(String, Summary)| {
                (
                    name.clone(),
                    serde_json::to_value(s).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect();
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&object).unwrap_or_default()
        ));
    } else {
        emit(&format!(
            "{scenario}: {} seeds from {}, each run to its decision, {tail}\n{}",
            seeds.count,
            seeds.first,
            compare::render(&summaries)
        ));
    }
}
