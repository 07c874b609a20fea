//! `fledge-sim compare`: one scenario under several Canary policies over the same seeds.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use super::EXIT_BAD_INPUT;
use super::run::emit;
use crate::compare::{self, Summary};
use crate::scenario::Scenario;
use crate::seeds::Seeds;

pub(super) struct CompareArgs<'a> {
    pub file: &'a Path,
    pub policies: &'a [String],
    pub seeds: u64,
    pub first_seed: u64,
    pub threads: Option<usize>,
    pub json: bool,
}

pub(super) fn run(args: &CompareArgs) -> ExitCode {
    let scenario = match Scenario::load(args.file) {
        Ok(s) => s,
        Err(e) => {
            sayln!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let policies = match compare::policies(&scenario, args.policies) {
        Ok(p) => p,
        Err(e) => {
            sayln!("error: {}: {e}", args.file.display());
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let progress = !args.json && std::io::stderr().is_terminal();
    let seeds = Seeds {
        first: args.first_seed,
        count: args.seeds,
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1),
        progress,
    };
    let started = Instant::now();
    let summaries = match compare::compare(&scenario, &policies, &seeds) {
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
    if args.json {
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
            "{}: {} seeds from {}, each run to its decision, in {wall:.2} s of wall time\n{}",
            scenario.name,
            seeds.count,
            seeds.first,
            compare::render(&summaries)
        ));
    }
    ExitCode::SUCCESS
}
