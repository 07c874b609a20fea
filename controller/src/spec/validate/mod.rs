//! Validation: from the raw [`CanarySpec`] a user wrote to the typed [`RolloutSpec`] the core runs.
//!
//! Every problem is reported at once, each naming its field path and what was expected. A spec
//! that validates is one the rollout core can run: the core never re-checks what is here. This
//! module holds the entry point [`validate`], the error types and the top-level fields (target,
//! provider, interval, threshold, deadlines, readiness); each concern has its own file:
//! `strategy` (weights, iterations, matches, mirroring), `analysis` (judge, metrics, margins),
//! `webhooks`, `alerts` and `service` (the Services and routes Fledge generates).

mod affinity;
mod alerts;
mod analysis;
mod service;
mod strategy;
mod templates;
mod webhooks;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use alerts::AlertSeverity;
pub use analysis::{Judge, Margin, MetricCheck, MetricKind};
pub use service::{DurationRule, TRAFFIC_POLICY_DURATIONS};
pub use strategy::Strategy;
pub use templates::{FLAGGER_ONLY_METRIC_PROVIDERS, metric_template};
pub use webhooks::{HookGate, WebhookRef};

use super::{CanaryMetric, CanarySpec, Duration};
use crate::routes::Provider;

/// Flagger's defaults for the top-level fields (each file keeps its own).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
const MIN_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_PROGRESS_DEADLINE_SECONDS: i64 = 600;
/// Ten years: longer deadlines are read as this (see [`warnings`]).
const MAX_PROGRESS_DEADLINE_SECONDS: i64 = 10 * 365 * 86_400;

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
    /// Statistical judge, canary strategy: the shortest step, ended early once the evidence
    /// suffices; `None`: every step lasts `interval` (threshold judge, blue/green, A/B).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_step: Option<Duration>,
    pub skip_analysis: bool,
    pub suspend: bool,
    pub revert_on_deletion: bool,
    pub judge: Judge,
    pub metrics: Vec<MetricCheck>,
    pub webhooks: Vec<WebhookRef>,
    /// Cookie-based session affinity, when the rollout keeps cookies (not with A/B testing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<super::SessionAffinity>,
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

/// What `provider`'s objects cannot carry of a Canary that validated as `rollout`: its strategy
/// (SMI can neither match nor mirror) and the durations its service block copies into routes.
/// [`validate`] checks an explicit `spec.provider`; a shell checks its default provider here.
pub fn unroutable_by(
    canary: &CanarySpec,
    rollout: &RolloutSpec,
    provider: Provider,
) -> Vec<FieldError> {
    let mut errors = rollout.strategy.unroutable_by(provider);
    errors.extend(canary.service.unroutable_by(provider));
    errors
}

/// `analysis.interval` as the rollout reads it (the primary's session cookie lasts one); one
/// that does not parse reads as the default, and validation refuses it.
pub fn analysis_interval(spec: &CanarySpec) -> Duration {
    spec.analysis
        .interval
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or(DEFAULT_INTERVAL)
        .max(MIN_INTERVAL)
}

/// Checks `spec` and returns the rollout it describes, or every problem found.
pub fn validate(spec: &CanarySpec) -> Result<RolloutSpec, ValidationErrors> {
    let mut p = Problems::default();
    let a = &spec.analysis;

    if spec.target_ref.name.trim().is_empty() {
        p.add("spec.targetRef.name", "must name the workload to roll out");
    }
    match spec.target_ref.kind.as_str() {
        // A DaemonSet's `autoscalerRef` is accepted, as Flagger accepts it, and left unused
        // (see `CanarySpec::scaled_by`; `warnings` says so).
        "" | "Deployment" | "DaemonSet" => {}
        other => p.add(
            "spec.targetRef.kind",
            format!("must be Deployment or DaemonSet, got `{other}`"),
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
    if spec.provider.as_deref().is_none_or(str::is_empty) {
        for (path, what) in provider_references(spec) {
            p.add(
                path,
                format!(
                    "names {what}, which only Flagger's providers of that name route through; \
                     Fledge does not support them. Set spec.provider if this Canary routes \
                     through a mesh Fledge supports"
                ),
            );
        }
    }
    service::service(&mut p, &spec.service, provider);
    autoscaler(&mut p, spec);

    let mut interval = p.duration(
        "spec.analysis.interval",
        a.interval.as_deref(),
        DEFAULT_INTERVAL,
    );
    // Flagger raises short intervals rather than rejecting them.
    interval = interval.max(MIN_INTERVAL);
    // Flagger reads a threshold below 1 as 1 (`GetAnalysisThreshold`) and its CRD takes any
    // number, so `threshold: 0` is a valid Flagger Canary: refusing it would refuse Flagger's
    // own manifests. It is read as Flagger reads it, and [`warnings`] says so wherever a Canary
    // is loaded or patched, so the changed meaning is never silent.
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
    let progress_deadline = Duration::from_secs(
        progress_deadline_seconds.clamp(1, MAX_PROGRESS_DEADLINE_SECONDS) as u64,
    );

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
    let compared = metrics.iter().any(|m| m.kind.is_builtin());
    let min_step = strategy
        .as_ref()
        .and_then(|s| analysis::min_step(&mut p, a, &judge, s, interval, compared));
    let webhooks = webhooks::webhooks(&mut p, &a.webhooks);
    alerts::alerts(&mut p, &a.alerts);
    let session_affinity = affinity::session_affinity(&mut p, spec);
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
        min_step,
        skip_analysis: spec.skip_analysis,
        suspend: spec.suspend,
        revert_on_deletion: spec.revert_on_deletion,
        judge,
        metrics,
        webhooks,
        session_affinity,
    })
}

/// `autoscalerRef`: an HPA or a KEDA ScaledObject, whose primary bounds make sense.
fn autoscaler(p: &mut Problems, spec: &CanarySpec) {
    let Some(r) = &spec.autoscaler_ref else {
        return;
    };
    match r.kind.as_str() {
        "" | "HorizontalPodAutoscaler" | "ScaledObject" => {}
        other => p.add(
            "spec.autoscalerRef.kind",
            format!("must be HorizontalPodAutoscaler or ScaledObject, got `{other}`"),
        ),
    }
    if let Some(bounds) = &r.primary_scaler_replicas {
        let path = "spec.autoscalerRef.primaryScalerReplicas";
        if bounds.min_replicas.is_some_and(|m| m < 0) {
            p.add(format!("{path}.minReplicas"), "must not be negative");
        }
        if let (Some(min), Some(max)) = (bounds.min_replicas, bounds.max_replicas)
            && min > max
        {
            p.add(
                format!("{path}.maxReplicas"),
                format!("{max} is below minReplicas ({min})"),
            );
        }
    }
}

/// The references to routing objects of Flagger's providers that Fledge does not support:
/// `(field, what it names)`.
fn provider_references(spec: &CanarySpec) -> Vec<(&'static str, &'static str)> {
    [
        (
            "spec.ingressRef",
            "an Ingress (providers nginx, skipper)",
            &spec.ingress_ref,
        ),
        (
            "spec.routeRef",
            "an APISIX route (provider apisix)",
            &spec.route_ref,
        ),
        (
            "spec.upstreamRef",
            "a Gloo upstream (provider gloo)",
            &spec.upstream_ref,
        ),
    ]
    .into_iter()
    .filter(|(_, _, set)| set.is_some())
    .map(|(path, what, _)| (path, what))
    .collect()
}

/// A DaemonSet target's `autoscalerRef`, accepted and left unused (see
/// [`CanarySpec::scaled_by`]): the cluster says so in an Event as well as [`warnings`] here.
pub fn unused_autoscaler(spec: &CanarySpec) -> Option<FieldError> {
    (spec.autoscaler_ref.is_some() && spec.scaled_by().is_none()).then(|| FieldError {
        path: "spec.autoscalerRef".into(),
        message: "not used: a DaemonSet has no replicas to scale, so no autoscaler is copied \
                  for the primary nor paused (Flagger copies it for the primary, where \
                  Kubernetes cannot scale a DaemonSet either); remove it"
            .into(),
    })
}

/// Settings that validate but do not do what they seem to, each at its field with what happens
/// instead: Flagger raises a short interval and a threshold below 1; with `stepWeights` the
/// ladder is the list and `maxWeight` unused; and counts past what a rollout can hold are read
/// as the largest it can. Empty when `spec` does not validate (its errors say more).
pub fn warnings(spec: &CanarySpec) -> Vec<FieldError> {
    let Ok(rollout) = validate(spec) else {
        return Vec::new();
    };
    let a = &spec.analysis;
    let mut out = Vec::new();
    let mut warn = |path: &str, message: String| {
        out.push(FieldError {
            path: path.into(),
            message,
        })
    };
    if let Some(provider) = rollout.provider {
        for w in service::unused_by(&spec.service, provider) {
            warn(&w.path, w.message);
        }
        for (path, what) in provider_references(spec) {
            warn(
                path,
                format!("not used: names {what}; provider {provider} does not route through it"),
            );
        }
    }
    if let Some(w) = unused_autoscaler(spec) {
        warn(&w.path, w.message);
    }
    if let Some(r) = &spec.autoscaler_ref
        && r.kind != "ScaledObject"
        && (!r.primary_scaler_queries.is_empty() || r.primary_scaler_replicas.is_some())
    {
        warn(
            "spec.autoscalerRef",
            "not used: primaryScalerQueries and primaryScalerReplicas apply to a ScaledObject only"
                .into(),
        );
    }
    if let Some(w) = affinity::unused(spec, rollout.provider) {
        warn(&w.path, w.message);
    }
    if let Some(Ok(written)) = a.interval.as_deref().map(str::parse::<Duration>)
        && written < rollout.interval
    {
        warn(
            "spec.analysis.interval",
            format!(
                "{written} is shorter than the shortest interval; raised to {}",
                rollout.interval
            ),
        );
    }
    match a.threshold {
        Some(t) if t < 1 => warn(
            "spec.analysis.threshold",
            format!("{t} is below 1; raised to 1 (the first failed check rolls back)"),
        ),
        Some(t) if t > i64::from(u32::MAX) => warn(
            "spec.analysis.threshold",
            format!(
                "{t} is more failed checks than Fledge counts; read as {}",
                u32::MAX
            ),
        ),
        _ => {}
    }
    if let Some(i) = a.iterations
        && i > i64::from(u32::MAX)
    {
        warn(
            "spec.analysis.iterations",
            format!(
                "{i} is more iterations than Fledge counts; read as {}",
                u32::MAX
            ),
        );
    }
    if let Some(s) = spec.progress_deadline_seconds
        && s > MAX_PROGRESS_DEADLINE_SECONDS
    {
        warn(
            "spec.progressDeadlineSeconds",
            format!(
                "{s} is more than ten years; read as {MAX_PROGRESS_DEADLINE_SECONDS} ({})",
                rollout.progress_deadline
            ),
        );
    }
    for (i, m) in a.metrics.iter().enumerate() {
        if let Some(bound) = unbounded_builtin(m) {
            warn(&format!("spec.analysis.metrics[{i}]"), bound);
        }
    }
    if a.min_step_duration.is_some() && rollout.min_step.is_none() {
        let early = matches!(rollout.judge, Judge::Statistical { .. })
            && matches!(rollout.strategy, Strategy::Canary { .. });
        let why = if early {
            "a step ends early only on the evidence of a compared metric (request-success-rate or request-duration), and this Canary has none"
        } else {
            "only the statistical judge ends canary weight steps early"
        };
        warn(
            "spec.analysis.minStepDuration",
            format!("not used: {why}; every step lasts analysis.interval"),
        );
    }
    if let (Some(max), Some(&top)) = (a.max_weight, a.step_weights.iter().max())
        && top > max
    {
        warn(
            "spec.analysis.stepWeights",
            format!(
                "go up to {top}%, above maxWeight ({max}%); with stepWeights the ladder is the list and maxWeight is not used"
            ),
        );
    }
    out
}

/// A built-in metric written with no bound gets Flagger's usual one, which is not what Flagger
/// itself does (its missing `threshold` is 0): say so at the metric.
fn unbounded_builtin(m: &CanaryMetric) -> Option<String> {
    if m.threshold.is_some()
        || m.threshold_range.is_some()
        || m.query.is_some()
        || m.template_ref.is_some()
    {
        return None;
    }
    match m.name.as_str() {
        "request-success-rate" | "istio_requests_total" => Some(
            "no threshold or thresholdRange: checked with min 99 (%); Flagger reads a missing threshold as 0 and never fails this check".into(),
        ),
        "request-duration" | "istio_request_duration_seconds_bucket" => Some(
            "no threshold or thresholdRange: checked with max 500 (ms); Flagger reads a missing threshold as 0 ms and fails every check".into(),
        ),
        _ => None,
    }
}

impl RolloutSpec {
    /// Webhooks of one type, in the order written.
    pub fn hooks(&self, gate: HookGate) -> impl Iterator<Item = &WebhookRef> {
        self.webhooks.iter().filter(move |h| h.gate == gate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(analysis: &str, extra: &str) -> CanarySpec {
        let text = format!(
            "targetRef: {{name: podinfo}}\nservice: {{port: 9898}}\n{extra}analysis: {{stepWeight: 10, {analysis}}}\n"
        );
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn warned(spec: &CanarySpec) -> Vec<String> {
        warnings(spec).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_builtin_metric_without_bounds_is_warned_about_with_the_bound_used() {
        let bounded = canary(
            "metrics: [{name: request-success-rate, threshold: 98}, {name: request-duration, thresholdRange: {max: 300}}]",
            "",
        );
        assert_eq!(warned(&bounded), Vec::<String>::new());
        let spec = canary(
            "metrics: [{name: request-success-rate}, {name: request-duration}]",
            "",
        );
        let warned = warned(&spec);
        assert_eq!(warned.len(), 2, "{warned:?}");
        assert!(
            warned[0].starts_with("spec.analysis.metrics[0]: ") && warned[0].contains("min 99")
        );
        assert!(
            warned[1].starts_with("spec.analysis.metrics[1]: ") && warned[1].contains("max 500")
        );
    }

    #[test]
    fn a_threshold_below_one_is_read_as_flagger_reads_it_and_warned_about() {
        for t in [0, -3] {
            let spec = canary(&format!("threshold: {t}"), "");
            assert_eq!(validate(&spec).map(|r| r.threshold), Ok(1), "{t}");
            assert_eq!(
                warned(&spec),
                [format!(
                    "spec.analysis.threshold: {t} is below 1; raised to 1 (the first failed check rolls back)"
                )]
            );
        }
        assert_eq!(warned(&canary("threshold: 1", "")), Vec::<String>::new());
    }

    #[test]
    fn counts_past_what_a_rollout_holds_are_warned_about_not_clamped_silently() {
        let huge = i64::from(u32::MAX) + 1;
        let spec = canary(&format!("threshold: {huge}"), "");
        assert_eq!(validate(&spec).map(|r| r.threshold), Ok(u32::MAX));
        assert_eq!(warned(&spec).len(), 1, "{:?}", warned(&spec));
        assert!(warned(&spec)[0].starts_with("spec.analysis.threshold: "));

        let mut spec = canary("threshold: 2", "progressDeadlineSeconds: 999999999999\n");
        assert_eq!(
            validate(&spec).map(|r| r.progress_deadline),
            Ok(Duration::from_secs(MAX_PROGRESS_DEADLINE_SECONDS as u64))
        );
        assert!(
            warned(&spec)
                .iter()
                .any(|w| w.starts_with("spec.progressDeadlineSeconds: 999999999999 ")),
            "{:?}",
            warned(&spec)
        );

        spec.analysis.step_weight = None;
        spec.analysis.iterations = Some(huge);
        assert!(
            warned(&spec)
                .iter()
                .any(|w| w.starts_with(&format!("spec.analysis.iterations: {huge} "))),
            "{:?}",
            warned(&spec)
        );
    }
}
