//! Validation: from the raw [`CanarySpec`] a user wrote to the typed [`RolloutSpec`] the core runs.
//!
//! Every problem is reported at once, each naming its field path and what was expected. A spec
//! that validates is one the rollout core can run: the core never re-checks what is here.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{CanaryMetric, CanarySpec, CanaryWebhook, Duration};
use crate::routes::Provider;

/// Flagger's defaults, kept in one place.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
const MIN_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_METRIC_WINDOW: Duration = Duration::from_secs(60);
const DEFAULT_PROGRESS_DEADLINE_SECONDS: i64 = 600;
const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_ALPHA: f64 = 0.01;
const DEFAULT_MIN_REQUESTS: u64 = 100;

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

/// How traffic reaches the canary while it is analysed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Strategy {
    /// Progressive traffic shifting: each step's canary weight, increasing, ending at max weight.
    /// With `mirror`, a first step copies that percentage of traffic to the canary.
    Canary { steps: Vec<u8>, mirror: Option<u8> },
    /// Blue/green: `iterations` analyses with no live traffic on the canary (mirrored for the
    /// first half when `mirror` is set), then all traffic to the canary, then promotion.
    BlueGreen { iterations: u32, mirror: Option<u8> },
    /// A/B testing: requests matching `matches` (Istio HTTPMatchRequests) go to the canary for
    /// `iterations` analyses, then promotion.
    AbTesting {
        iterations: u32,
        matches: Vec<serde_json::Value>,
    },
}

/// An Istio HTTPMatchRequest as A/B testing uses it: at least one condition (one without any
/// matches every request), and string matches with exactly one of exact, prefix or regex.
fn check_match(p: &mut Problems, path: &str, m: &serde_json::Value) {
    let Some(object) = m.as_object() else {
        p.add(
            path,
            "must be an HTTP match (an object such as `headers:` or `uri:`)",
        );
        return;
    };
    if object.keys().all(|k| k == "name") {
        p.add(
            path,
            "has no condition, so it would match every request: give headers, queryParams, uri or method",
        );
    }
    let string_match = |p: &mut Problems, field: String, v: &serde_json::Value| {
        let kinds = ["exact", "prefix", "regex"];
        let ok = v.as_object().is_some_and(|o| {
            o.len() == 1
                && o.iter()
                    .all(|(k, v)| kinds.contains(&k.as_str()) && v.is_string())
        });
        if !ok {
            p.add(
                field,
                "must have exactly one of exact, prefix or regex (a string)",
            );
        }
    };
    for (key, value) in object {
        let field = format!("{path}.{key}");
        match key.as_str() {
            "headers" | "queryParams" => match value.as_object() {
                Some(pairs) => {
                    for (name, cond) in pairs {
                        string_match(p, format!("{field}.{name}"), cond);
                    }
                }
                None => p.add(field, "must map names to string matches"),
            },
            "uri" | "method" | "scheme" | "authority" => string_match(p, field, value),
            _ => {}
        }
    }
}

impl Strategy {
    /// What `provider` cannot route for this strategy (SMI can neither match nor mirror), as
    /// errors at the fields that ask for it. Validation checks an explicit `spec.provider`; a
    /// shell checks its default provider with the same function.
    pub fn unroutable_by(&self, provider: Provider) -> Vec<FieldError> {
        let refuse = |path: &str, feature: &str| FieldError {
            path: path.into(),
            message: format!(
                "{feature} is not supported by provider {provider} (a TrafficSplit can only \
                 weigh backends); use istio or gatewayapi"
            ),
        };
        let mut errors = Vec::new();
        let mirrors = matches!(
            self,
            Strategy::Canary {
                mirror: Some(_),
                ..
            } | Strategy::BlueGreen {
                mirror: Some(_),
                ..
            }
        );
        if mirrors && !provider.can_mirror() {
            errors.push(refuse("spec.analysis.mirror", "traffic mirroring"));
        }
        if matches!(self, Strategy::AbTesting { .. }) && !provider.can_match() {
            errors.push(refuse(
                "spec.analysis.match",
                "A/B routing on request matches",
            ));
        }
        errors
    }

    /// The canary weight at which promotion follows (100 for blue/green's switch-over).
    pub fn max_weight(&self) -> u8 {
        match self {
            Strategy::Canary { steps, .. } => steps.last().copied().unwrap_or(0),
            Strategy::BlueGreen { .. } => 100,
            Strategy::AbTesting { .. } => 0,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Canary { .. } => "canary",
            Strategy::BlueGreen { .. } => "blue/green",
            Strategy::AbTesting { .. } => "A/B testing",
        }
    }
}

/// Who decides whether the canary is good enough.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Judge {
    /// Flagger's: each metric against its threshold range, `threshold` failures roll back.
    Threshold,
    /// Canary against primary with always-valid sequential tests; holds while undecided.
    Statistical { alpha: f64, min_requests: u64 },
}

/// One metric the analysis checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricCheck {
    pub name: String,
    pub kind: MetricKind,
    /// The query window.
    pub window: Duration,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Statistical judge: the smallest regression worth catching.
    pub margin: Option<Margin>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum MetricKind {
    /// Built-in: percentage of non-5xx responses.
    RequestSuccessRate,
    /// Built-in: p99 latency in milliseconds.
    RequestDuration,
    /// An inline PromQL query.
    Query { query: String },
    /// A `MetricTemplate` by reference.
    Template {
        name: String,
        namespace: Option<String>,
        variables: BTreeMap<String, String>,
    },
}

impl MetricKind {
    pub fn is_builtin(&self) -> bool {
        matches!(
            self,
            MetricKind::RequestSuccessRate | MetricKind::RequestDuration
        )
    }
}

/// The smallest regression worth catching, for the statistical judge.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "value")]
pub enum Margin {
    /// In the metric's own unit (percentage points for success rate).
    Absolute(f64),
    /// A fraction of the primary's value: `0.2` means 20% worse.
    Relative(f64),
}

/// A webhook and when it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRef {
    pub name: String,
    pub gate: HookGate,
    pub url: String,
    pub timeout: Duration,
    pub retries: u32,
    pub metadata: BTreeMap<String, String>,
    pub mute_alert: bool,
}

/// Flagger's webhook types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookGate {
    /// Before traffic shifting starts; a failure is a failed check.
    PreRollout,
    /// Every analysis tick, like a metric; a failure is a failed check.
    Rollout,
    /// Gates the start of a rollout; the canary waits until it answers success.
    ConfirmRollout,
    /// Gates each weight increase.
    ConfirmTrafficIncrease,
    /// Gates promotion.
    ConfirmPromotion,
    /// After promotion or rollback; its result does not change the outcome.
    PostRollout,
    /// Polled during analysis; success rolls the canary back.
    Rollback,
    /// Notified of every event.
    Event,
}

impl HookGate {
    pub const ALL: [HookGate; 8] = [
        HookGate::PreRollout,
        HookGate::Rollout,
        HookGate::ConfirmRollout,
        HookGate::ConfirmTrafficIncrease,
        HookGate::ConfirmPromotion,
        HookGate::PostRollout,
        HookGate::Rollback,
        HookGate::Event,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HookGate::PreRollout => "pre-rollout",
            HookGate::Rollout => "rollout",
            HookGate::ConfirmRollout => "confirm-rollout",
            HookGate::ConfirmTrafficIncrease => "confirm-traffic-increase",
            HookGate::ConfirmPromotion => "confirm-promotion",
            HookGate::PostRollout => "post-rollout",
            HookGate::Rollback => "rollback",
            HookGate::Event => "event",
        }
    }

    fn parse(s: &str) -> Option<HookGate> {
        HookGate::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

impl fmt::Display for HookGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
    if !(1..=65535).contains(&spec.service.port) {
        p.add(
            "spec.service.port",
            format!(
                "must be a port between 1 and 65535, got {}",
                spec.service.port
            ),
        );
    }

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

    let strategy = strategy(&mut p, spec, mirror);
    let judge = judge(&mut p, spec);
    let metrics = a
        .metrics
        .iter()
        .enumerate()
        .filter_map(|(i, m)| metric(&mut p, i, m))
        .collect::<Vec<_>>();
    let mut seen = BTreeSet::new();
    for (i, m) in a.metrics.iter().enumerate() {
        if !m.name.is_empty() && !seen.insert(m.name.as_str()) {
            p.add(
                format!("spec.analysis.metrics[{i}].name"),
                format!("`{}` is listed twice", m.name),
            );
        }
    }
    for (i, m) in metrics.iter().enumerate() {
        let path = format!("spec.analysis.metrics[{i}].margin");
        match (&judge, &m.kind, m.margin) {
            (Judge::Threshold, _, Some(_)) => p.add(
                path,
                "is only used by the statistical judge (`judge: statistical`)",
            ),
            (Judge::Statistical { .. }, MetricKind::RequestDuration, Some(Margin::Absolute(_))) => {
                p.add(
                    path,
                    "a latency margin is relative: write it as a percentage such as `20%`",
                )
            }
            _ => {}
        }
    }
    let webhooks = webhooks(&mut p, &a.webhooks);
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

/// Flagger's strategy choice: iterations with match is A/B, iterations alone blue/green,
/// otherwise a weight ladder from `stepWeights` or `stepWeight` up to `maxWeight`.
fn strategy(p: &mut Problems, spec: &CanarySpec, mirror: Option<u8>) -> Option<Strategy> {
    let a = &spec.analysis;
    let before = p.0.len();
    for (i, m) in a.match_.iter().enumerate() {
        check_match(p, &format!("spec.analysis.match[{i}]"), m);
    }
    if let Some(iterations) = a.iterations {
        if iterations < 1 {
            p.add(
                "spec.analysis.iterations",
                format!("must be at least 1, got {iterations}"),
            );
            return None;
        }
        if a.step_weight.is_some() || !a.step_weights.is_empty() {
            p.add("spec.analysis.iterations", "cannot be combined with stepWeight or stepWeights: choose iterations (blue/green, A/B) or weights (canary)");
        }
        let iterations = iterations.min(u32::MAX as i64) as u32;
        if !a.match_.is_empty() {
            if mirror.is_some() {
                p.add(
                    "spec.analysis.mirror",
                    "is not supported with A/B testing (match)",
                );
            }
            return (p.0.len() == before).then(|| Strategy::AbTesting {
                iterations,
                matches: a.match_.clone(),
            });
        }
        return (p.0.len() == before).then_some(Strategy::BlueGreen { iterations, mirror });
    }
    if !a.match_.is_empty() {
        p.add(
            "spec.analysis.match",
            "needs `iterations`: A/B testing runs a number of iterations, not weight steps",
        );
    }

    let max_weight = a
        .max_weight
        .map(|w| p.percent("spec.analysis.maxWeight", Some(w), 1, 100));
    let steps: Vec<u8> = if !a.step_weights.is_empty() {
        let mut steps = Vec::new();
        let mut previous = 0;
        for (i, &w) in a.step_weights.iter().enumerate() {
            let path = format!("spec.analysis.stepWeights[{i}]");
            // `previous` is the largest valid step so far, not always the one written before.
            let before = (i > 0).then(|| a.step_weights[i - 1]);
            if !(1..=100).contains(&w) {
                p.add(path, format!("must be between 1 and 100, got {w}"));
            } else if w <= previous && before == Some(previous) {
                p.add(
                    path,
                    format!("must be greater than the previous step ({previous})"),
                );
            } else if w <= previous {
                p.add(
                    path,
                    format!(
                        "must be greater than every step before it (the largest is {previous})"
                    ),
                );
            } else {
                previous = w;
                steps.push(w as u8);
            }
        }
        // Flagger: with stepWeights the ladder is the list itself; maxWeight is not used.
        steps
    } else if let Some(step) = a.step_weight {
        if !(1..=100).contains(&step) {
            p.add(
                "spec.analysis.stepWeight",
                format!("must be between 1 and 100, got {step}"),
            );
            Vec::new()
        } else {
            let max = max_weight.unwrap_or(100);
            let mut steps = Vec::new();
            let mut w = 0u8;
            while w < max {
                w = (w as i64 + step).min(max as i64) as u8;
                steps.push(w);
            }
            steps
        }
    } else if spec.skip_analysis {
        vec![max_weight.unwrap_or(100)]
    } else {
        p.add(
            "spec.analysis",
            "needs stepWeight, stepWeights (canary) or iterations (blue/green, A/B)",
        );
        Vec::new()
    };
    (p.0.len() == before).then_some(Strategy::Canary { steps, mirror })
}

fn judge(p: &mut Problems, spec: &CanarySpec) -> Judge {
    let a = &spec.analysis;
    match a.judge.as_deref().unwrap_or("threshold") {
        "threshold" => {
            if a.statistical.is_some() {
                p.add(
                    "spec.analysis.statistical",
                    "is only used with `judge: statistical`",
                );
            }
            Judge::Threshold
        }
        "statistical" => {
            let settings = a.statistical.clone().unwrap_or_default();
            let alpha = settings.alpha.unwrap_or(DEFAULT_ALPHA);
            if !(alpha > 0.0 && alpha <= 0.2) {
                p.add(
                    "spec.analysis.statistical.alpha",
                    format!("must be in (0, 0.2], got {alpha}"),
                );
            }
            let min_requests = settings.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS as i64);
            if min_requests < 0 {
                p.add(
                    "spec.analysis.statistical.minRequests",
                    format!("must not be negative, got {min_requests}"),
                );
            }
            Judge::Statistical {
                alpha,
                min_requests: min_requests.max(0) as u64,
            }
        }
        other => {
            p.add(
                "spec.analysis.judge",
                format!("must be `threshold` or `statistical`, got `{other}`"),
            );
            Judge::Threshold
        }
    }
}

fn metric(p: &mut Problems, i: usize, m: &CanaryMetric) -> Option<MetricCheck> {
    let path = format!("spec.analysis.metrics[{i}]");
    let before = p.0.len();
    if m.name.trim().is_empty() {
        p.add(format!("{path}.name"), "must not be empty");
    }
    let window = p.duration(
        &format!("{path}.interval"),
        m.interval.as_deref(),
        DEFAULT_METRIC_WINDOW,
    );
    if window == Duration::ZERO {
        p.add(format!("{path}.interval"), "must be longer than 0s");
    }
    let kind = match (&m.query, &m.template_ref) {
        (Some(_), Some(_)) => {
            p.add(&path, "has both `query` and `templateRef`; keep one");
            None
        }
        (Some(q), None) if q.trim().is_empty() => {
            p.add(format!("{path}.query"), "must not be empty");
            None
        }
        (Some(q), None) => Some(MetricKind::Query { query: q.clone() }),
        (None, Some(t)) if t.name.trim().is_empty() => {
            p.add(
                format!("{path}.templateRef.name"),
                "must name a MetricTemplate",
            );
            None
        }
        (None, Some(t)) => Some(MetricKind::Template {
            name: t.name.clone(),
            namespace: t.namespace.clone(),
            variables: m.template_variables.clone(),
        }),
        (None, None) => match m.name.as_str() {
            "request-success-rate" | "istio_requests_total" => Some(MetricKind::RequestSuccessRate),
            "request-duration" | "istio_request_duration_seconds_bucket" => {
                Some(MetricKind::RequestDuration)
            }
            name => {
                p.add(format!("{path}.name"), format!("unknown metric `{name}`: built-in metrics are request-success-rate and request-duration; a custom metric needs `query` or `templateRef`"));
                None
            }
        },
    };
    let (mut min, mut max) = match &m.threshold_range {
        Some(r) => (r.min, r.max),
        None => (None, None),
    };
    // Flagger's legacy `threshold`: a floor for success rate, a ceiling for everything else.
    if let Some(t) = m.threshold {
        if m.threshold_range.is_some() {
            p.add(
                format!("{path}.threshold"),
                "cannot be combined with thresholdRange",
            );
        } else if kind == Some(MetricKind::RequestSuccessRate) {
            min = Some(t);
        } else {
            max = Some(t);
        }
    }
    for (field, v) in [("min", min), ("max", max)] {
        if let Some(v) = v
            && !v.is_finite()
        {
            p.add(
                format!("{path}.thresholdRange.{field}"),
                format!("must be a finite number, got {v}"),
            );
        }
    }
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        p.add(
            format!("{path}.thresholdRange"),
            format!("min ({lo}) is greater than max ({hi})"),
        );
    }
    if min.is_none() && max.is_none() && kind.as_ref().is_some_and(|k| !k.is_builtin()) {
        p.add(
            format!("{path}.thresholdRange"),
            "a custom metric needs `min`, `max` or both",
        );
    }
    if min.is_none() && max.is_none() {
        // Flagger's usual bounds for built-in metrics, so `- name: request-success-rate` alone works.
        match kind {
            Some(MetricKind::RequestSuccessRate) => min = Some(99.0),
            Some(MetricKind::RequestDuration) => max = Some(500.0),
            _ => {}
        }
    }
    let margin = m.margin.as_deref().and_then(|text| match parse_margin(text) {
        Some(margin) => Some(margin),
        None => {
            p.add(format!("{path}.margin"), format!("`{text}` is not a margin: expected a positive number (absolute) or a percentage such as `20%` (relative)"));
            None
        }
    });
    (p.0.len() == before).then(|| MetricCheck {
        name: m.name.clone(),
        kind: kind.expect("kind errors were recorded"),
        window,
        min,
        max,
        margin,
    })
}

fn parse_margin(text: &str) -> Option<Margin> {
    let text = text.trim();
    let (number, relative) = match text.strip_suffix('%') {
        Some(n) => (n.trim(), true),
        None => (text, false),
    };
    let v: f64 = number.parse().ok()?;
    if !(v.is_finite() && v > 0.0) {
        return None;
    }
    Some(if relative {
        Margin::Relative(v / 100.0)
    } else {
        Margin::Absolute(v)
    })
}

fn webhooks(p: &mut Problems, hooks: &[CanaryWebhook]) -> Vec<WebhookRef> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, h) in hooks.iter().enumerate() {
        let path = format!("spec.analysis.webhooks[{i}]");
        let before = p.0.len();
        if h.name.trim().is_empty() {
            p.add(format!("{path}.name"), "must not be empty");
        } else if !seen.insert(h.name.as_str()) {
            p.add(
                format!("{path}.name"),
                format!("`{}` is listed twice", h.name),
            );
        }
        let type_ = h.type_.as_deref().unwrap_or("rollout");
        let gate = HookGate::parse(type_);
        if gate.is_none() {
            let known: Vec<_> = HookGate::ALL.iter().map(|g| g.as_str()).collect();
            p.add(
                format!("{path}.type"),
                format!(
                    "unknown webhook type `{type_}`; expected one of {}",
                    known.join(", ")
                ),
            );
        }
        if !(h.url.starts_with("http://") || h.url.starts_with("https://")) || h.url.len() < 10 {
            p.add(
                format!("{path}.url"),
                format!("must be an http:// or https:// URL, got `{}`", h.url),
            );
        }
        let timeout = p.duration(
            &format!("{path}.timeout"),
            h.timeout.as_deref(),
            DEFAULT_WEBHOOK_TIMEOUT,
        );
        if timeout == Duration::ZERO {
            p.add(format!("{path}.timeout"), "must be longer than 0s");
        }
        let retries = match h.retries {
            None => 0,
            Some(r) if (0..=10).contains(&r) => r as u32,
            Some(r) => {
                p.add(
                    format!("{path}.retries"),
                    format!("must be between 0 and 10, got {r}"),
                );
                0
            }
        };
        if p.0.len() == before
            && let Some(gate) = gate
        {
            out.push(WebhookRef {
                name: h.name.clone(),
                gate,
                url: h.url.clone(),
                timeout,
                retries,
                metadata: h.metadata.clone(),
                mute_alert: h.mute_alert.unwrap_or(false),
            });
        }
    }
    out
}

impl RolloutSpec {
    /// Webhooks of one type, in the order written.
    pub fn hooks(&self, gate: HookGate) -> impl Iterator<Item = &WebhookRef> {
        self.webhooks.iter().filter(move |h| h.gate == gate)
    }
}
