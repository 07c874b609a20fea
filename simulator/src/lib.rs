//! Fledge's service-mesh simulator: a deterministic discrete-event model of sidecar proxies.
#![forbid(unsafe_code)]

pub mod bench;
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
pub(crate) mod serve;
pub mod telemetry;
