//! Fledge's controller: the Canary API, the pure rollout core and its statistics, and (with the
//! default feature `cluster`) the Kubernetes shell that carries the core's decisions out.
#![forbid(unsafe_code)]
#![warn(clippy::iter_over_hash_type)]

pub mod alerts;
pub mod analysis;
// The shell talks to a real cluster: lease deadlines, timestamps and timings need the clock.
#[cfg(feature = "cluster")]
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
pub mod cluster;
#[cfg(feature = "cluster")]
mod http_errors;
// The standalone controller (`fledge-controller local`) paces its ticks by the wall clock.
#[cfg(feature = "cluster")]
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
pub mod local;
pub mod metrics;
pub mod observe;
pub mod rollout;
#[cfg(feature = "cluster")]
pub mod router;
pub mod routes;
pub mod spec;
#[cfg(feature = "cluster")]
pub mod webhook;
