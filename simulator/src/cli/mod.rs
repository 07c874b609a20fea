//! The `fledge-sim` command line.

mod plan;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for input that cannot be used (a scenario or Canary that does not load).
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
    /// Print the steps a Canary's rollout would take if everything went well.
    Plan {
        /// A YAML file with one or more Canary documents (fledge.dev or flagger.app).
        file: PathBuf,
    },
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Plan { file } => plan::run(&file),
    }
}
