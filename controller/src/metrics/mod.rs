//! Metrics from Prometheus: an observation plan ([`crate::observe`]) executed as PromQL.
//!
//! The PromQL ([`queries`]) and the arithmetic on raw counter samples ([`counters`]) are pure,
//! so the simulator and the tests use the very same builders. The client ([`Prometheus`],
//! feature `cluster`) sends them:
//!
//! - Flagger's scalar queries (threshold judge, custom queries and `MetricTemplate`s) as instant
//!   queries at the measured range's end, with `{{ interval }}` the range's length;
//! - the statistical judge's counts and histograms as the raw samples of every matching counter
//!   series over the range (and [`SERIES_LOOKBACK`] before it), diffed per series with
//!   counter-reset handling ([`counters`] says why not `increase()`, and its known error).
//!
//! [`Prometheus::read`] never fails: whatever happens becomes a [`MetricReading`], with
//! `NoData` when Prometheus answered but had nothing to say (no request series, NaN) and `Error`
//! when it could not be asked or answered nonsense (unreachable, timed out, rejected the query, a
//! result of the wrong type, more failures than requests). The reason says which, for the
//! Canary's events and status. No failure series while requests exist is 0 failures: Istio and
//! Linkerd create a 5xx series only at the first failure.
//!
//! The mesh whose series the built-in queries read follows the traffic provider
//! ([`Mesh::for_provider`]): `istio` reads Istio's, `linkerd` and every `smi:*` read Linkerd's
//! (`response_total`), `gatewayapi:*` the gateway Envoy's. Flagger differs for `smi:*`: it reads
//! Linkerd's only when its controller-wide mesh provider is Linkerd and falls back to Istio's
//! queries otherwise (its observer factory's default). Fledge routes SMI TrafficSplits for
//! Linkerd only (the simulator's Linkerd data plane reads them), so it reads Linkerd's series
//! whatever the default provider is.
//!
//! A scalar metric must come back as one value: a vector of several series is an error
//! ("aggregate the query, e.g. with sum()") where Flagger silently takes the last series.
//! Failures that may pass (unreachable, timed out, HTTP 5xx or 429, Prometheus' own
//! `timeout`/`unavailable`/`internal`) are retried with exponential backoff from 100 ms;
//! a rejected query or an answer of the wrong type is not.
//!
//! [`MetricReading`]: crate::analysis::MetricReading

pub mod counters;
#[cfg(feature = "cluster")]
mod prometheus;
mod queries;

#[cfg(feature = "cluster")]
pub use prometheus::Prometheus;
pub use queries::{SERIES_LOOKBACK, SideQueries, builtin_query, evaluation_time, side_queries};

use crate::analysis::MetricReading;
use crate::routes::Provider;

/// Why a range vector cannot be a scalar metric's value.
pub const RANGE_VECTOR_FOR_A_SCALAR: &str = "wrong result type: a range vector (matrix) where one value was expected; apply e.g. rate() and sum()";

/// What a scalar query's answer means, wherever it was evaluated: `values` holds one value per
/// series of the answer (a scalar answer is one). No series or NaN is no data; several series
/// are an error, where Flagger silently takes the last.
pub fn scalar_reading(values: &[f64]) -> MetricReading {
    match values {
        [] => MetricReading::NoData {
            reason: "no values found: the query returned no series".into(),
        },
        [v] if v.is_nan() => MetricReading::NoData {
            reason: "the query returned NaN (a division by zero: no requests in the window)".into(),
        },
        [value] => MetricReading::Value { value: *value },
        more => MetricReading::Error {
            reason: format!(
                "wrong result type: {} series where one value was expected; aggregate the query, e.g. with sum()",
                more.len()
            ),
        },
    }
}

/// The mesh whose telemetry the built-in queries read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mesh {
    /// `istio_requests_total`, `istio_request_duration_milliseconds_bucket`.
    Istio,
    /// Linkerd proxy metrics: `response_total`, `response_latency_ms_bucket`.
    Linkerd,
    /// Envoy-based Gateway API implementations: `envoy_cluster_upstream_rq*`.
    GatewayApi,
}

impl Mesh {
    /// The mesh of a traffic provider: SMI TrafficSplits are read by Linkerd.
    pub fn for_provider(provider: Provider) -> Mesh {
        match provider {
            Provider::Istio => Mesh::Istio,
            Provider::Smi(_) => Mesh::Linkerd,
            Provider::GatewayApi(_) => Mesh::GatewayApi,
        }
    }
}

/// A problem with the Prometheus client before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// The Prometheus address is not a URL, or the HTTP client could not be built.
    #[error("Prometheus address `{address}` cannot be used: {reason}")]
    InvalidAddress { address: String, reason: String },
}
