//! Fledge's service-mesh simulator: a deterministic discrete-event model of sidecar proxies.
#![forbid(unsafe_code)]
#![warn(clippy::iter_over_hash_type)]

// The bench measures wall-clock speed; the CLI reports elapsed time and progress to people.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
pub mod bench;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
pub mod cli;
pub mod compare;
pub mod engine;
pub mod expect;
pub mod harness;
pub mod manifest;
pub mod mesh;
pub mod promql;
pub mod report;
pub mod result;
pub mod scenario;
pub mod seeds;
// `serve` runs the mesh live against the wall clock, for a real Prometheus to scrape.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
pub(crate) mod serve;
pub mod telemetry;
