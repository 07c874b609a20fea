//! The `fledge-sim` command line.

mod plan;
mod run;
mod sweep;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for input that cannot be used (a scenario or Canary that does not load, a bad flag).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code for a run whose expectations failed.
pub const EXIT_EXPECTATION_FAILED: u8 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "fledge-sim",
    version,
    about = "Rehearse Fledge rollouts in a simulated service mesh"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scenario: print the timeline and check its expectations.
    Run {
        file: PathBuf,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Print the result as JSON instead of the timeline.
        #[arg(long)]
        json: bool,
        /// Write a self-contained HTML report to this file.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
    /// Check scenario files without running them.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run a scenario over many seeds on all cores and report the distribution of outcomes.
    Sweep {
        file: PathBuf,
        /// Number of seeds (1..=N, or from --first-seed).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        seeds: u64,
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        /// Worker threads (default: all cores).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
        threads: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Print the steps a Canary's rollout would take if everything went well.
    Plan {
        /// A YAML file with one or more Canary documents (fledge.dev or flagger.app).
        file: PathBuf,
    },
    /// Measure the simulator on the reference mesh (10 pods, retries, outlier detection, mTLS).
    Bench {
        /// Simulated duration, e.g. `1h`, `24h`.
        #[arg(long, default_value = "1h")]
        duration: String,
        /// Client requests per simulated second.
        #[arg(long, default_value_t = 1000.0)]
        rps: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_BAD_INPUT } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Run {
            file,
            seed,
            json,
            report,
        } => run::run(&file, seed, json, report.as_deref()),
        Command::Validate { files } => run::validate(&files),
        Command::Sweep {
            file,
            seeds,
            first_seed,
            threads,
            json,
        } => sweep::sweep(&file, first_seed, seeds, threads.map(|t| t as usize), json),
        Command::Plan { file } => plan::run(&file),
        Command::Bench {
            duration,
            rps,
            seed,
        } => bench(&duration, rps, seed),
    }
}

fn bench(duration: &str, rps: f64, seed: u64) -> ExitCode {
    let Some(duration) = crate::manifest::parse_duration(duration).filter(|d| *d > 0) else {
        eprintln!("error: --duration: `{duration}` is not a duration such as `1h` or `30m`");
        return ExitCode::from(EXIT_BAD_INPUT);
    };
    if !(rps.is_finite() && rps > 0.0) {
        eprintln!("error: --rps: must be a positive number, got {rps}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    eprintln!(
        "reference mesh: 1 client, primary + canary, 10 pods, LEAST_REQUEST, outlier detection, retries, mTLS; {rps} rps"
    );
    match crate::bench::bench(&crate::bench::BenchOptions {
        seed,
        rps,
        duration,
    }) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
