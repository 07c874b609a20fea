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
use crate::spec::{RolloutSpec, Strategy};

// Flagger's labels: `name` is the target's name (Flagger's `targetRef.name`), and a weight is
// labelled by `workload`, the primary's and the canary's.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CanaryLabels {
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WeightLabels {
    pub workload: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub name: String,
    pub namespace: String,
    /// `canary`, `blue-green` or `ab-testing`.
    pub deployment_strategy: String,
    /// `completed`, or `skipped` (`skipAnalysis`).
    pub analysis_status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub version: String,
    pub mesh_provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetricLabels {
    pub name: String,
    pub namespace: String,
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

/// Prometheus' default buckets, as Flagger's `canary_duration_seconds` has.
fn analysis_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    info: Family<InfoLabels, Gauge>,
    /// Flagger's `canary_status`: 0 progressing, 2 failed, 1 otherwise.
    status: Family<CanaryLabels, Gauge>,
    weight: Family<WeightLabels, Gauge>,
    failed_checks: Family<CanaryLabels, Gauge>,
    analysis: Family<MetricLabels, Gauge<f64, AtomicU64>>,
    analysis_duration: Family<CanaryLabels, Histogram>,
    total: Family<NamespaceLabels, Gauge>,
    /// The Canaries counted in `total`.
    canaries: std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
    successes: Family<OutcomeLabels, Counter>,
    failures: Family<OutcomeLabels, Counter>,
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
            info: Family::default(),
            status: Family::default(),
            weight: Family::default(),
            failed_checks: Family::default(),
            analysis: Family::default(),
            analysis_duration: Family::new_with_constructor(analysis_histogram),
            total: Family::default(),
            canaries: Default::default(),
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
            "info",
            "The controller's version and default traffic provider",
            m.info.clone(),
        );
        r.register(
            "canary_status",
            "Last canary analysis result: 0 progressing, 1 succeeded (or idle), 2 failed",
            m.status.clone(),
        );
        r.register(
            "canary_weight",
            "Percentage of traffic on each workload (the primary and the canary)",
            m.weight.clone(),
        );
        r.register(
            "canary_duration_seconds",
            "Seconds spent on a rollout's reconcile (Flagger's: performing canary analysis)",
            m.analysis_duration.clone(),
        );
        r.register(
            "canary_total",
            "Canaries reconciled, by namespace",
            m.total.clone(),
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

    /// The controller's version and default traffic provider (`fledge_info`, 1).
    pub fn set_info(&self, version: &str, mesh_provider: &str) {
        self.info
            .get_or_create(&InfoLabels {
                version: version.into(),
                mesh_provider: mesh_provider.into(),
            })
            .set(1);
    }

    /// Records the state of Canary `canary` (in `namespace`, rolling `spec` out) after a
    /// reconcile that took `took`; `before` tells a transition from a repeat. Series are named
    /// by the target, as Flagger's.
    pub fn record_canary(
        &self,
        (namespace, canary): (&str, &str),
        spec: &RolloutSpec,
        before: &RolloutState,
        after: &RolloutState,
        took: std::time::Duration,
    ) {
        let name = spec.target.as_str();
        let labels = CanaryLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.count(namespace, canary, after.phase);
        let status = match after.phase {
            Phase::Progressing => 0,
            Phase::Failed => 2,
            _ => 1,
        };
        self.status.get_or_create(&labels).set(status);
        let canary_weight = i64::from(after.canary_weight);
        for (workload, weight) in [
            (format!("{name}-primary"), 100 - canary_weight),
            (name.to_string(), canary_weight),
        ] {
            self.weight
                .get_or_create(&WeightLabels {
                    workload,
                    namespace: namespace.into(),
                })
                .set(weight);
        }
        if before.phase.is_active() {
            self.analysis_duration
                .get_or_create(&labels)
                .observe(took.as_secs_f64());
        }
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
            let outcome = OutcomeLabels {
                name: name.into(),
                namespace: namespace.into(),
                deployment_strategy: match spec.strategy {
                    Strategy::Canary { .. } => "canary",
                    Strategy::BlueGreen { .. } => "blue-green",
                    Strategy::AbTesting { .. } => "ab-testing",
                }
                .into(),
                analysis_status: if spec.skip_analysis {
                    "skipped"
                } else {
                    "completed"
                }
                .into(),
            };
            match after.phase {
                Phase::Succeeded => {
                    self.successes.get_or_create(&outcome).inc();
                }
                Phase::Failed => {
                    self.failures.get_or_create(&outcome).inc();
                }
                _ => {}
            }
        }
    }

    /// `canary_total`: the Canaries recorded and not seen going, per namespace.
    fn count(&self, namespace: &str, canary: &str, phase: Phase) {
        let mut seen = self.canaries.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_string(), canary.to_string());
        if matches!(phase, Phase::Terminating | Phase::Terminated) {
            seen.remove(&key);
        } else {
            seen.insert(key);
        }
        let n = seen.iter().filter(|(ns, _)| ns == namespace).count();
        self.total
            .get_or_create(&NamespaceLabels {
                namespace: namespace.into(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
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

    fn spec(analysis: &str) -> RolloutSpec {
        let text = format!(
            "targetRef: {{name: podinfo}}\nservice: {{port: 9898}}\nanalysis: {{{analysis}}}\n"
        );
        let canary: crate::spec::CanarySpec =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        crate::spec::validate(&canary).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn metrics_carry_the_fledge_prefix_and_flaggers_names_and_labels() {
        let m = Metrics::new();
        m.set_info("0.1.0", "istio");
        let progressing = RolloutState {
            phase: Phase::Progressing,
            canary_weight: 20,
            failed_checks: 2,
            ..RolloutState::default()
        };
        let failed = RolloutState {
            phase: Phase::Failed,
            ..RolloutState::default()
        };
        let took = std::time::Duration::from_millis(30);
        let blue_green = spec("iterations: 3");
        m.record_canary(
            ("test", "my-canary"),
            &blue_green,
            &failed,
            &progressing,
            took,
        );
        let text = m.encode();
        for line in [
            r#"fledge_info{version="0.1.0",mesh_provider="istio"} 1"#,
            r#"fledge_canary_status{name="podinfo",namespace="test"} 0"#,
            r#"fledge_canary_weight{workload="podinfo-primary",namespace="test"} 80"#,
            r#"fledge_canary_weight{workload="podinfo",namespace="test"} 20"#,
            r#"fledge_canary_failed_checks{name="podinfo",namespace="test"} 2"#,
            r#"fledge_canary_total{namespace="test"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        // Analysis time is recorded only for a rollout that was under way.
        assert!(
            !text.contains("fledge_canary_duration_seconds_count"),
            "{text}"
        );
        m.record_canary(
            ("test", "my-canary"),
            &blue_green,
            &progressing,
            &failed,
            took,
        );
        let text = m.encode();
        for line in [
            r#"fledge_canary_status{name="podinfo",namespace="test"} 2"#,
            r#"fledge_canary_failures_total{name="podinfo",namespace="test",deployment_strategy="blue-green",analysis_status="completed"} 1"#,
            r#"fledge_canary_duration_seconds_count{name="podinfo",namespace="test"} 1"#,
            r#"fledge_canary_total{namespace="test"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        let gone = RolloutState {
            phase: Phase::Terminating,
            ..RolloutState::default()
        };
        m.record_canary(("test", "my-canary"), &blue_green, &failed, &gone, took);
        assert!(
            m.encode()
                .contains(r#"fledge_canary_total{namespace="test"} 0"#)
        );
    }
}
