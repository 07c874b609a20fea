//! Validation: from the raw [`CanarySpec`] a user wrote to the typed [`RolloutSpec`] the core runs.
//!
//! Every problem is reported at once, each naming its field path and what was expected. A spec
//! that validates is one the rollout core can run: the core never re-checks what is here. This
//! module holds the entry point [`validate`], the error types and the top-level fields (target,
//! provider, interval, threshold, deadlines, readiness); each concern has its own file:
//! `strategy` (weights, iterations, matches, mirroring), `analysis` (judge, metrics, margins),
//! `webhooks` and `service` (the Services and routes Fledge generates).

mod analysis;
mod service;
mod strategy;
mod webhooks;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use analysis::{Judge, Margin, MetricCheck, MetricKind};
pub use strategy::Strategy;
pub use webhooks::{HookGate, WebhookRef};

use super::{CanarySpec, Duration};
use crate::routes::Provider;

/// Flagger's defaults for the top-level fields (each file keeps its own).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
const MIN_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_PROGRESS_DEADLINE_SECONDS: i64 = 600;

/// A Canary checked and normalised: what the rollout core needs, in its own units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutSpec {
    /// `spec.provider`; `None` takes the controller's default.
    pub provider: Option<Provider>,
    /// The target workload (the canary); the primary is `<target>-primary`.
    pub target: String,
    /// Time between analysis ticks.
    pub interval: Duration,
    /// Failed checks that roll the canary back.
    pub threshold: u32,
    pub strategy: Strategy,
    /// Percentage of traffic moved back to the primary per interval while promoting; `None`
    /// moves it all at once.
    pub step_weight_promotion: Option<u8>,
    pub primary_ready_threshold: u8,
    pub canary_ready_threshold: u8,
    pub progress_deadline: Duration,
    pub skip_analysis: bool,
    pub suspend: bool,
    pub revert_on_deletion: bool,
    pub judge: Judge,
    pub metrics: Vec<MetricCheck>,
    pub webhooks: Vec<WebhookRef>,
}

/// One problem with a spec: where, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects errors while validation reads the spec.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &str, text: Option<&str>, default: Duration) -> Duration {
        match text.map(str::parse::<Duration>) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.add(path, e.to_string());
                default
            }
        }
    }

    /// A percentage in `lo..=100`, or the default when absent.
    fn percent(&mut self, path: &str, value: Option<i64>, lo: i64, default: u8) -> u8 {
        match value {
            None => default,
            Some(v) if (lo..=100).contains(&v) => v as u8,
            Some(v) => {
                self.add(path, format!("must be between {lo} and 100, got {v}"));
                default
            }
        }
    }
}

/// Checks `spec` and returns the rollout it describes, or every problem found.
pub fn validate(spec: &CanarySpec) -> Result<RolloutSpec, ValidationErrors> {
    let mut p = Problems::default();
    let a = &spec.analysis;

    if spec.target_ref.name.trim().is_empty() {
        p.add("spec.targetRef.name", "must name the workload to roll out");
    }
    match spec.target_ref.kind.as_str() {
        "" | "Deployment" => {}
        // Flagger rolls DaemonSets out too; Fledge's cluster shell does not yet.
        "DaemonSet" => p.add(
            "spec.targetRef.kind",
            "DaemonSet targets are not supported yet; only Deployment",
        ),
        other => p.add(
            "spec.targetRef.kind",
            format!("must be Deployment, got `{other}`"),
        ),
    }
    let provider = match spec.provider.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(name) => match name.parse::<Provider>() {
            Ok(provider) => Some(provider),
            Err(e) => {
                p.add("spec.provider", e.to_string());
                None
            }
        },
    };
    service::service(&mut p, &spec.service, provider);

    let mut interval = p.duration(
        "spec.analysis.interval",
        a.interval.as_deref(),
        DEFAULT_INTERVAL,
    );
    // Flagger raises short intervals rather than rejecting them.
    interval = interval.max(MIN_INTERVAL);
    let threshold = a.threshold.unwrap_or(1).clamp(1, u32::MAX as i64) as u32;

    let progress_deadline_seconds = spec
        .progress_deadline_seconds
        .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS);
    if progress_deadline_seconds <= 0 {
        p.add(
            "spec.progressDeadlineSeconds",
            format!("must be a positive number of seconds, got {progress_deadline_seconds}"),
        );
    }
    let progress_deadline =
        Duration::from_secs(progress_deadline_seconds.clamp(1, 10 * 365 * 86_400) as u64);

    let step_weight_promotion = a.step_weight_promotion.map(|_| {
        p.percent(
            "spec.analysis.stepWeightPromotion",
            a.step_weight_promotion,
            1,
            100,
        )
    });
    let primary_ready_threshold = p.percent(
        "spec.analysis.primaryReadyThreshold",
        a.primary_ready_threshold,
        0,
        100,
    );
    let canary_ready_threshold = p.percent(
        "spec.analysis.canaryReadyThreshold",
        a.canary_ready_threshold,
        0,
        100,
    );
    let mirror_weight = p.percent("spec.analysis.mirrorWeight", a.mirror_weight, 1, 100);
    if a.mirror_weight.is_some() && !a.mirror {
        p.add(
            "spec.analysis.mirrorWeight",
            "has no effect unless `mirror: true`",
        );
    }
    let mirror = a.mirror.then_some(mirror_weight);

    let strategy = strategy::strategy(&mut p, spec, mirror);
    let judge = analysis::judge(&mut p, spec);
    let metrics = analysis::metrics(&mut p, a, &judge);
    let webhooks = webhooks::webhooks(&mut p, &a.webhooks);
    if let (Some(provider), Some(strategy)) = (provider, &strategy) {
        p.0.extend(strategy.unroutable_by(provider));
    }

    if !p.0.is_empty() {
        return Err(ValidationErrors(p.0));
    }
    Ok(RolloutSpec {
        provider,
        target: spec.target_ref.name.clone(),
        interval,
        threshold,
        strategy: strategy.expect("no strategy error was recorded"),
        step_weight_promotion,
        primary_ready_threshold,
        canary_ready_threshold,
        progress_deadline,
        skip_analysis: spec.skip_analysis,
        suspend: spec.suspend,
        revert_on_deletion: spec.revert_on_deletion,
        judge,
        metrics,
        webhooks,
    })
}

impl RolloutSpec {
    /// Webhooks of one type, in the order written.
    pub fn hooks(&self, gate: HookGate) -> impl Iterator<Item = &WebhookRef> {
        self.webhooks.iter().filter(move |h| h.gate == gate)
    }
}
