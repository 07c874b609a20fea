//! Metrics from Prometheus: Flagger's built-in queries per mesh, the counts and histograms of
//! the statistical judge (canary and primary side by side), and `MetricTemplate` queries.
//!
//! [`Prometheus::read`] never fails: whatever happens becomes a [`MetricReading`], with
//! `NoData` when Prometheus answered but had nothing to say (no series, NaN) and `Error` when
//! it could not be asked or answered nonsense (unreachable, timed out, rejected the query, a
//! result of the wrong type). The reason says which, for the Canary's events and status.
//!
//! A scalar metric must come back as one value: a vector of several series is an error
//! ("aggregate the query, e.g. with sum()") where Flagger silently takes the last series.
//! Failures that may pass (unreachable, timed out, HTTP 5xx or 429, Prometheus' own
//! `timeout`/`unavailable`/`internal`) are retried with exponential backoff from 100 ms;
//! a rejected query or an answer of the wrong type is not.
//!
//! [`MetricReading`]: crate::analysis::MetricReading

mod prometheus;
mod queries;

pub use prometheus::Prometheus;
pub use queries::{Side, SideQueries, builtin_query, render_template, side_queries};

use crate::routes::Provider;

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

/// What a query is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryContext {
    pub namespace: String,
    /// The canary workload (the Canary's target); the primary is `<target>-primary`.
    pub target: String,
    pub mesh: Mesh,
    /// Read counts and histograms of canary and primary instead of the canary's scalar.
    pub statistical: bool,
}

/// A problem with a query before it is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// The Prometheus address is not a URL, or the HTTP client could not be built.
    #[error("Prometheus address `{address}` cannot be used: {reason}")]
    InvalidAddress { address: String, reason: String },
    /// A template uses `{{ variables.NAME }}` and the Canary sets no such variable.
    #[error("the query uses variable `{name}`, which the metric's templateVariables do not set")]
    UnknownVariable { name: String },
    /// A template uses a placeholder Fledge does not know.
    #[error(
        "the query uses placeholder `{{{{ {name} }}}}`; known are namespace, target, interval and variables.NAME"
    )]
    UnknownPlaceholder { name: String },
    /// `{{` without a matching `}}`.
    #[error("the query opens a placeholder with `{{{{` at byte {at} and never closes it")]
    UnclosedPlaceholder { at: usize },
}
