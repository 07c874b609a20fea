//! Alerts on a rollout's decisions, as Flagger sends them: which decisions alert and how
//! seriously ([`decided`], pure), the body each provider expects ([`payload`], pure), and (with
//! the `cluster` feature) the sender that delivers them off the reconcile path ([`Alerts`]).
//!
//! Flagger alerts when a Canary is initialised and when a new revision's analysis starts, once
//! any confirm-rollout gate has opened (both `info`, with the Canary's settings as fields), when a confirm gate starts holding the rollout
//! (`warn`, unless the hook has `muteAlert`), when a rollout is promoted (`info`) and when it is
//! rolled back (`error`; `warn` when a rollback hook or an operator asked for it). It does not
//! alert on each step, nor on a failed check below the threshold: Events and `event` hooks do.

#[cfg(feature = "cluster")]
mod flags;
mod payload;
#[cfg(feature = "cluster")]
mod sender;

#[cfg(feature = "cluster")]
pub use flags::{AlertFlags, FlagError};
pub use payload::{Message, ProviderType, UnknownProviderType, payload};
#[cfg(feature = "cluster")]
pub use sender::{Alerts, Destination, Settings};

use crate::rollout::{Command, HookOutcome, Observation, Phase, RolloutState};
use crate::spec::{AlertSeverity, Canary, HookGate, RolloutSpec};

/// One alert to send to every alert of the spec whose severity admits it.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub severity: AlertSeverity,
    pub message: String,
    /// Named values shown with the message (Slack's fields, Teams' facts).
    pub fields: Vec<(String, String)>,
}

/// The alerts of one tick of `canary`'s rollout, from `before` to `after` with `obs`.
pub fn decided(
    canary: &Canary,
    spec: &RolloutSpec,
    before: &RolloutState,
    after: &RolloutState,
    obs: &Observation,
) -> Vec<Alert> {
    let mut out = Vec::new();
    let mut alert = |severity, message: String, fields| {
        out.push(Alert {
            severity,
            message,
            fields,
        })
    };
    let moved = before.phase != after.phase;
    if moved && before.phase == Phase::Initializing && after.phase == Phase::Initialized {
        let kind = canary.spec.target_ref.kind.as_str();
        let kind = if kind.is_empty() { "Deployment" } else { kind };
        alert(
            AlertSeverity::Info,
            format!("New {kind} detected, initialization completed."),
            settings(canary, spec),
        );
    }
    // As Flagger: once the confirm-rollout gate (if any) has opened, and not when a revision
    // changed mid-analysis restarts it (an Event says that).
    let started = moved
        && after.phase == Phase::Progressing
        && matches!(
            before.phase,
            Phase::Initialized | Phase::Waiting | Phase::Succeeded | Phase::Failed
        );
    if started {
        alert(
            AlertSeverity::Info,
            "New revision detected, progressing canary analysis.".into(),
            settings(canary, spec),
        );
    }
    for (gate, message) in [
        (HookGate::ConfirmRollout, "Canary is waiting for approval."),
        (
            HookGate::ConfirmTrafficIncrease,
            "Canary traffic increase is waiting for approval.",
        ),
        (
            HookGate::ConfirmPromotion,
            "Canary promotion is waiting for approval.",
        ),
    ] {
        // The core says which gate holds the rollout in its message; once per hold.
        let holding = |s: &RolloutState| {
            s.message
                .contains(&format!("waiting for approval: {gate} hook "))
        };
        if holding(after) && !holding(before) && !muted(spec, gate, obs) {
            alert(AlertSeverity::Warn, message.into(), Vec::new());
        }
    }
    if moved && after.phase == Phase::Succeeded {
        let message = if spec.skip_analysis {
            "Canary analysis was skipped, promotion finished."
        } else {
            "Canary analysis completed successfully, promotion finished."
        };
        alert(AlertSeverity::Info, message.into(), Vec::new());
    }
    if moved && after.phase == Phase::Failed {
        let asked = obs.command == Some(Command::Abort)
            || spec
                .hooks(HookGate::Rollback)
                .any(|h| obs.hooks.get(&h.name) == Some(&HookOutcome::Passed));
        let severity = if asked {
            AlertSeverity::Warn
        } else {
            AlertSeverity::Error
        };
        alert(severity, after.message.clone(), Vec::new());
    }
    out
}

/// Whether the hook holding `gate` (the first that did not pass) has `muteAlert`.
fn muted(spec: &RolloutSpec, gate: HookGate, obs: &Observation) -> bool {
    spec.hooks(gate)
        .find(|h| obs.hooks.get(&h.name) != Some(&HookOutcome::Passed))
        .is_some_and(|h| h.mute_alert)
}

/// The Canary's settings, as Flagger lists them with a new rollout.
fn settings(canary: &Canary, spec: &RolloutSpec) -> Vec<(String, String)> {
    let kind = canary.spec.target_ref.kind.as_str();
    let kind = if kind.is_empty() { "Deployment" } else { kind };
    let namespace = canary.metadata.namespace.as_deref().unwrap_or_default();
    let mut fields = vec![
        (
            "Target".to_string(),
            format!("{kind}/{}.{namespace}", spec.target),
        ),
        (
            "Failed checks threshold".to_string(),
            spec.threshold.to_string(),
        ),
        (
            "Progress deadline".to_string(),
            format!("{}s", spec.progress_deadline.millis() / 1000),
        ),
    ];
    let a = &canary.spec.analysis;
    let routing = match &spec.strategy {
        crate::spec::Strategy::AbTesting { .. } => Some("A/B Testing".to_string()),
        crate::spec::Strategy::BlueGreen { .. } => Some("Blue/Green".to_string()),
        crate::spec::Strategy::Canary { .. } => {
            let max = a.max_weight.unwrap_or(0);
            match a.step_weight.filter(|w| *w > 0) {
                Some(step) => Some(format!("Weight step: {step} max: {max}")),
                None if !a.step_weights.is_empty() => {
                    let steps: Vec<String> = a.step_weights.iter().map(i64::to_string).collect();
                    Some(format!("Weight steps: {} max: {max}", steps.join(",")))
                }
                None => None,
            }
        }
    };
    if let Some(routing) = routing {
        fields.push(("Traffic routing".to_string(), routing));
    }
    fields
}

#[cfg(test)]
mod tests;
