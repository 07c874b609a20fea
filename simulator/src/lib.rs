//! Fledge's service-mesh simulator: a deterministic discrete-event model of sidecar proxies.
//!
//! The public modules are what the integration tests (`simulator/tests`) drive; the CLI and the
//! bench are not API: the binary calls [`run_cli`], the benches the few bench entry points
//! re-exported here.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]
#![warn(clippy::iter_over_hash_type)]

// The bench measures wall-clock speed; the CLI reports elapsed time and progress to people.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod bench;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod cli;
mod compare;
pub mod engine;
pub mod expect;
pub mod harness;
pub mod manifest;
pub mod mesh;
pub mod promql;
pub mod report;
pub mod result;
pub mod scenario;
mod seeds;
// `serve` runs the mesh live against the wall clock, for a real Prometheus to scrape.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod serve;
pub mod telemetry;

pub use bench::{BenchOptions, BenchReport, bench, bench_mmc, mmc_mesh};

/// Runs `fledge-sim` with the process's arguments and returns its exit code.
pub fn run_cli() -> std::process::ExitCode {
    cli::main()
}
