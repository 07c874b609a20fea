//! Fledge's service-mesh simulator: a deterministic discrete-event model of sidecar proxies.
//!
//! The API is what the integration tests (`simulator/tests`), the benches and the binary use;
//! everything else is `pub(crate)`:
//! - a rollout: [`scenario::Scenario::load`] reads a scenario file, [`harness::run`] runs one of
//!   its variants with a seed into a [`result::RunResult`], [`expect::checked`] checks it against
//!   the variant's expectations and [`report::summary`] sums it up;
//! - the mesh alone: [`mesh::Mesh`] (see its module for a worked example) with the routing
//!   objects [`manifest::parse`] reads, what it records in [`telemetry`], and the virtual time of
//!   [`engine`];
//! - [`promql`]: Flagger's metric templates evaluated over the recorded series;
//! - the benches' entry points ([`bench()`], [`bench_mmc`], [`mmc_mesh`]) and the binary's
//!   [`run_cli`].
//!
//! The CLI, the policy comparison, seed sweeps and `fledge-sim serve` are not API.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]
// Every public type can be named by its path, so the API reads from the modules' re-exports.
#![warn(unnameable_types)]
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
mod observability;
pub mod promql;
pub mod report;
pub mod result;
pub mod scenario;
mod seeds;
// `serve` runs the mesh live against the wall clock, for a real Prometheus to scrape.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod serve;
pub mod telemetry;
mod trace;

pub use bench::{BenchOptions, BenchReport, Written, bench, bench_mmc, mmc_mesh};

/// Runs `fledge-sim` with the process's arguments and returns its exit code.
pub fn run_cli() -> std::process::ExitCode {
    cli::main()
}
