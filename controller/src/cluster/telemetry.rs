//! Observability: Prometheus metrics under the `fledge_` prefix (Flagger's names where Flagger
//! has one), the ops HTTP server (`/metrics`, `/healthz`, `/readyz`) and JSON logs.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::Error;
use crate::rollout::{Phase, RolloutState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CanaryLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetricLabels {
    pub namespace: String,
    pub name: String,
    pub metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

fn reconcile_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 12))
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    /// Flagger's `canary_status`: 0 running, 1 succeeded, 2 failed.
    status: Family<CanaryLabels, Gauge>,
    weight: Family<CanaryLabels, Gauge>,
    failed_checks: Family<CanaryLabels, Gauge>,
    analysis: Family<MetricLabels, Gauge<f64, AtomicU64>>,
    successes: Family<CanaryLabels, Counter>,
    failures: Family<CanaryLabels, Counter>,
    alerts: Family<AlertLabels, Counter>,
    reconciles: Counter,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("fledge"),
            status: Family::default(),
            weight: Family::default(),
            failed_checks: Family::default(),
            analysis: Family::default(),
            successes: Family::default(),
            failures: Family::default(),
            alerts: Family::default(),
            reconciles: Counter::default(),
            errors: Family::default(),
            duration: reconcile_histogram(),
            ready: AtomicBool::new(false),
        };
        let r = &mut m.registry;
        r.register(
            "canary_status",
            "Last canary analysis result: 0 running, 1 succeeded, 2 failed",
            m.status.clone(),
        );
        r.register(
            "canary_weight",
            "Percentage of traffic on the canary",
            m.weight.clone(),
        );
        r.register(
            "canary_failed_checks",
            "Failed checks of the current rollout",
            m.failed_checks.clone(),
        );
        r.register(
            "canary_metric_analysis",
            "The canary's value of each metric at the last analysis",
            m.analysis.clone(),
        );
        r.register("canary_successes", "Rollouts promoted", m.successes.clone());
        r.register(
            "canary_failures",
            "Rollouts rolled back",
            m.failures.clone(),
        );
        r.register(
            "alerts",
            "Alerts by outcome: sent, failed (after its retries), dropped (queue full)",
            m.alerts.clone(),
        );
        r.register("reconcile", "Reconciles started", m.reconciles.clone());
        r.register(
            "reconcile_errors",
            "Reconciles failed, by what failed",
            m.errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time spent in a reconcile",
            m.duration.clone(),
        );
        m
    }

    /// Counts a reconcile; the guard records its duration when dropped.
    #[must_use]
    pub fn reconcile_started(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer {
            histogram: &self.duration,
            start: Instant::now(),
        }
    }

    pub fn reconcile_failed(&self, error: &Error) {
        self.errors
            .get_or_create(&ErrorLabels {
                error: error.metric_label().into(),
            })
            .inc();
    }

    /// Counts an alert's `outcome`.
    pub fn alert(&self, outcome: &str) {
        self.alerts
            .get_or_create(&AlertLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Records a Canary's state after a reconcile; `before` tells a transition from a repeat.
    pub fn record_canary(
        &self,
        namespace: &str,
        name: &str,
        before: &RolloutState,
        after: &RolloutState,
    ) {
        let labels = CanaryLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        let status = match after.phase {
            Phase::Succeeded | Phase::Initialized => 1,
            Phase::Failed => 2,
            _ => 0,
        };
        self.status.get_or_create(&labels).set(status);
        self.weight
            .get_or_create(&labels)
            .set(i64::from(after.canary_weight));
        self.failed_checks
            .get_or_create(&labels)
            .set(i64::from(after.failed_checks));
        for result in &after.analysis {
            if let Some(value) = result.value {
                self.analysis
                    .get_or_create(&MetricLabels {
                        namespace: namespace.into(),
                        name: name.into(),
                        metric: result.name.clone(),
                    })
                    .set(value);
            }
        }
        if before.phase != after.phase {
            match after.phase {
                Phase::Succeeded => {
                    self.successes.get_or_create(&labels).inc();
                }
                Phase::Failed => {
                    self.failures.get_or_create(&labels).inc();
                }
                _ => {}
            }
        }
    }

    /// Marks the controller ready (it leads and its Canary watches have their first complete
    /// list, or it stands by for the Lease).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records a reconcile's duration when dropped, however the reconcile ends.
pub struct ReconcileTimer<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// The ops HTTP routes.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(serve_ready))
        .with_state(metrics)
}

async fn serve_metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn serve_ready(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Binds the ops server's address. The controller does so before anything else: a port in use
/// must stop it at start, not leave it running without health checks or metrics.
pub async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| Error::Serve {
            address: address.to_string(),
            source,
        })
}

/// Serves the ops routes on a bound `listener` until `shutdown` resolves.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let address = listener
        .local_addr()
        .map_or_else(|_| "the ops address".to_string(), |a| a.to_string());
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Serve { address, source })
}

/// Binds `address` and serves the ops routes there until `shutdown` resolves.
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    serve_on(bind(address).await?, metrics, shutdown).await
}

/// The JSON log format: one object per line, with the fields of the current span (the
/// reconcile span carries the Canary's `namespace` and `canary`).
pub fn json_logs<W>(
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(writer)
        .finish()
}

/// The text log format, coloured only for a terminal: escape codes in a log file or a log
/// collector are noise.
fn text_logs<W>(
    filter: tracing_subscriber::EnvFilter,
    writer: W,
    colour: bool,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(writer)
        .finish()
}

/// Logs on stdout, as JSON lines or as text; `filter` is an `EnvFilter` directive such as
/// `info` or `fledge_controller=debug,kube=info`.
pub fn init_logs(filter: &str, json: bool) -> Result<(), Error> {
    let parsed = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| Error::LogFilter {
        filter: filter.to_string(),
        message: e.to_string(),
    })?;
    // A subscriber already installed (by an embedding program) is kept.
    let _ = if json {
        tracing::subscriber::set_global_default(json_logs(parsed, std::io::stdout))
    } else {
        tracing::subscriber::set_global_default(text_logs(
            parsed,
            std::io::stdout,
            std::io::stdout().is_terminal(),
        ))
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_carry_the_fledge_prefix_and_the_canary_labels() {
        let m = Metrics::new();
        let before = RolloutState::default();
        let after = RolloutState {
            phase: Phase::Failed,
            canary_weight: 0,
            failed_checks: 2,
            ..RolloutState::default()
        };
        m.record_canary("test", "podinfo", &before, &after);
        let text = m.encode();
        assert!(text.contains(r#"fledge_canary_status{namespace="test",name="podinfo"} 2"#));
        assert!(
            text.contains(r#"fledge_canary_failures_total{namespace="test",name="podinfo"} 1"#)
        );
        assert!(text.contains(r#"fledge_canary_failed_checks{namespace="test",name="podinfo"} 2"#));
    }
}
