//! Client-side proxy behaviour, one module per concern: connection pools, retries and timeouts,
//! mTLS, routing and faults, load balancing, telemetry and determinism. One test binary; the
//! helpers are the mesh tests' shared ones in `tests/support`.

#[path = "../support/mod.rs"]
mod support;

mod balancing;
mod pools;
mod retries;
mod routing;
mod telemetry;
mod tls;
