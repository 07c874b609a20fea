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
//! Which Prometheus, and how ([`Access`]): the controller's `--prometheus`, or the Canary's own
//! `metricsServer` (as Flagger: its built-ins, inline queries and, in Fledge, templates without
//! an address); a MetricTemplate's `address`, with its `headers`, its credentials ([`Credentials`]:
//! the Secret its `secretRef` names) and `insecureSkipVerify`.
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
//! (`response_total`), `gatewayapi:*` those of the implementation the controller setting
//! `--gateway-api-metrics` names: `contour` (the default: the gateway Envoy's clusters, Flagger's
//! Contour queries), `istio` (Istio's gateway or GAMMA: the sidecars' series) or `linkerd`
//! (Linkerd through Gateway API/GAMMA, as Flagger's current Linkerd guide routes). Flagger's own
//! `gatewayapi:*` observer reads the application's `http_request_duration_seconds` instead, and
//! its guides replace the built-ins with MetricTemplates of exactly these mesh queries.
//! Envoy Gateway is not offered: it names a cluster per route rule
//! (`httproute/<ns>/<route>/rule/<n>`) holding both backends, so its series cannot tell the
//! canary from the primary. Flagger differs for `smi:*`: it reads
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

#[cfg(feature = "cluster")]
mod auth;
pub mod counters;
#[cfg(feature = "cluster")]
mod prometheus;
mod queries;

#[cfg(feature = "cluster")]
pub use auth::Credentials;
#[cfg(feature = "cluster")]
pub use prometheus::{Access, Prometheus};
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
    /// Envoy that names upstream clusters `<namespace>_<service>_<port>` (Contour):
    /// `envoy_cluster_upstream_rq*`, Flagger's Contour queries.
    GatewayApi,
}

impl Mesh {
    /// The mesh of a traffic provider: SMI TrafficSplits are read by Linkerd, Gateway API
    /// routes by `gateway_api`, the implementation the controller is told serves them
    /// (`--gateway-api-metrics`): the gateway's Envoy, or the mesh behind it.
    pub fn for_provider(provider: Provider, gateway_api: Mesh) -> Mesh {
        match provider {
            Provider::Istio => Mesh::Istio,
            Provider::Smi(_) => Mesh::Linkerd,
            Provider::GatewayApi(_) => gateway_api,
        }
    }

    /// Its name as `--gateway-api-metrics` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mesh::Istio => "istio",
            Mesh::Linkerd => "linkerd",
            Mesh::GatewayApi => "contour",
        }
    }
}

impl std::fmt::Display for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mesh {
    type Err = String;

    fn from_str(s: &str) -> Result<Mesh, String> {
        match s {
            "istio" => Ok(Mesh::Istio),
            "linkerd" => Ok(Mesh::Linkerd),
            "contour" => Ok(Mesh::GatewayApi),
            other => Err(format!(
                "`{other}` is not an implementation whose metrics Fledge reads: use istio, linkerd or contour"
            )),
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
