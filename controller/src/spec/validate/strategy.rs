//! The strategy of a rollout, as Flagger chooses it from the `analysis` block: a ladder of
//! canary weights (`stepWeight`/`stepWeights` up to `maxWeight`), blue/green (`iterations`), or
//! A/B testing (`iterations` with Istio HTTP `match`es), each optionally mirroring traffic. Also
//! what a provider cannot route for a strategy (SMI can neither match nor mirror).

use serde::{Deserialize, Serialize};

use super::{FieldError, Problems};
use crate::routes::Provider;
use crate::spec::CanarySpec;

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

/// Flagger's strategy choice: iterations with match is A/B, iterations alone blue/green,
/// otherwise a weight ladder from `stepWeights` or `stepWeight` up to `maxWeight`.
pub(super) fn strategy(
    p: &mut Problems,
    spec: &CanarySpec,
    mirror: Option<u8>,
) -> Option<Strategy> {
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
