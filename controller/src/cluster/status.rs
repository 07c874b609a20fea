//! The Canary's status: the rollout core's state as JSON in `status.state`, mirrored into the
//! fields Flagger users read (`phase`, `canaryWeight`, `failedChecks`, ...) and a `Promoted`
//! condition.
//!
//! Every timestamp comes from the state or from the status already written, not from the clock,
//! so the same state always gives the same status and a reconcile that changes nothing writes
//! nothing.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Map, Value};

use super::canaries::CanaryApi;
use super::{Error, Result};
use crate::rollout::{EventReason, ForecastStatus, Millis, Phase, RolloutState};
use crate::spec::{Canary, CanaryCondition, CanaryStatus};

/// The condition type Flagger users watch.
pub const PROMOTED: &str = "Promoted";

/// RFC 3339 time of a millisecond timestamp.
pub fn rfc3339(ms: Millis) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The rollout state recorded in a status, `Ok(None)` when there is none yet.
pub fn recorded_state(status: Option<&CanaryStatus>) -> Result<Option<RolloutState>, String> {
    match status.and_then(|s| s.state.as_ref()) {
        None => Ok(None),
        Some(v) => RolloutState::restore(v)
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

/// The `Promoted` condition for a state: `True` once promoted (or initialised), `False` after a
/// rollback, `Unknown` while a rollout is under way; its reason is the phase, whatever the
/// phase, and its message Flagger's fixed one for the phase, as Flagger sets them
/// (pkg/canary/status.go, `MakeStatusConditions`): tools and runbooks written for Flagger show
/// or match it. (The last decision's own message is the status's `message`.) `target_kind` is
/// `spec.targetRef.kind`, which Flagger's messages name. Its `lastTransitionTime` is when the
/// phase began; [`write`] keeps the one already written while the condition's status is
/// unchanged.
pub fn promoted_condition(state: &RolloutState, target_kind: &str) -> CanaryCondition {
    let status = match state.phase {
        Phase::Initialized | Phase::Succeeded => "True",
        Phase::Failed => "False",
        _ => "Unknown",
    };
    let at = rfc3339(state.phase_since);
    CanaryCondition {
        type_: PROMOTED.into(),
        status: status.into(),
        last_update_time: Some(at.clone()),
        last_transition_time: Some(at),
        reason: Some(state.phase.to_string()),
        message: Some(flaggers_message(state.phase, target_kind)),
    }
}

/// Flagger's message of the `Promoted` condition in `phase`. Flagger has none of its own for
/// `Terminating` and `Terminated`, and writes its initial one for them: so does Fledge.
fn flaggers_message(phase: Phase, target_kind: &str) -> String {
    let kind = if target_kind.is_empty() {
        "Deployment"
    } else {
        target_kind
    };
    match phase {
        Phase::Initializing | Phase::Terminating | Phase::Terminated => {
            format!("New {kind} detected, starting initialization.")
        }
        Phase::Initialized => format!("{kind} initialization completed."),
        Phase::Waiting | Phase::WaitingPromotion => "Waiting for approval.".into(),
        Phase::Progressing => "New revision detected, progressing canary analysis.".into(),
        Phase::Promoting => "Canary analysis completed, starting primary rolling update.".into(),
        Phase::Finalising => "Canary analysis completed, routing all traffic to primary.".into(),
        Phase::Succeeded => "Canary analysis completed successfully, promotion finished.".into(),
        Phase::Failed => format!("Canary analysis failed, {kind} scaled to zero."),
    }
}

/// The condition type of the statistical judge's forecast.
pub const FORECAST: &str = "Forecast";

/// The `Forecast` condition of a rollout under the statistical judge: `Unknown` until its first
/// look has seen the traffic rate (and, with a compared latency metric whose error rate alone
/// lets the judge decide, until the judge's latency bound is fixed), then `True` when a healthy canary is expected to be promoted
/// within the progress deadline and `False` (with the warning, naming the setting to change)
/// when not. The forecast itself (each step's canary requests and length) is in `status.state`.
pub fn forecast_condition(state: &RolloutState) -> Option<CanaryCondition> {
    let (status, reason, message) = match state.forecast.as_ref()? {
        ForecastStatus::Unknown => (
            "Unknown",
            "RateUnknown",
            "the traffic rate is known at the rollout's first look".to_string(),
        ),
        ForecastStatus::Provisional { forecast } => (
            "Unknown",
            "LatencyShapeUnknown",
            format!(
                "at {} requests/s the error rate alone does not rule out a decision by the statistical judge within the progress deadline; the latency forecast waits for the judge's slow bound (enough of the primary's observations)",
                crate::rollout::rate_text(forecast.rps)
            ),
        ),
        ForecastStatus::Known {
            warning: Some(w), ..
        } => (
            "False",
            EventReason::ProgressDeadlineTooShort.as_str(),
            w.clone(),
        ),
        ForecastStatus::Known {
            forecast,
            warning: None,
        } => {
            let needed: Vec<String> = forecast
                .steps
                .iter()
                .map(|s| format!("{}%: {:.0}", s.canary_weight, s.canary_requests))
                .collect();
            let after = forecast
                .unbounded
                .map(|t| crate::spec::Duration(t).to_string())
                .unwrap_or_else(|| "?".into());
            (
                "True",
                "WithinDeadline",
                format!(
                    "at {} requests/s (primary errors {:.2}%): promotion expected after {after}; canary requests per step {}",
                    crate::rollout::rate_text(forecast.rps),
                    100.0 * forecast.error_rate,
                    needed.join(", ")
                ),
            )
        }
    };
    let at = rfc3339(state.phase_since);
    Some(CanaryCondition {
        type_: FORECAST.into(),
        status: status.into(),
        last_update_time: Some(at.clone()),
        last_transition_time: Some(at),
        reason: Some(reason.into()),
        message: Some(message),
    })
}

/// `new` with the `lastTransitionTime` of each condition whose status is the same in `old`
/// taken from `old`: a condition's transition time is when its status last changed (the
/// Kubernetes API conventions; Flagger keeps it the same way in `MakeStatusConditions`), not
/// when the phase or the reason did.
fn with_kept_transitions(old: Option<&CanaryStatus>, new: &CanaryStatus) -> CanaryStatus {
    let mut out = new.clone();
    let old = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    for c in &mut out.conditions {
        let same = old
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status);
        if let Some(at) = same.and_then(|o| o.last_transition_time.clone()) {
            c.last_transition_time = Some(at);
        }
    }
    out
}

/// The condition of a rollout whose step the statistical judge holds, with too little evidence
/// to decide: a condition and not a phase, because tools that read Flagger's status (Argo CD's
/// health check among them) know only Flagger's phases. The phase stays `Progressing`.
pub const HELD: &str = "Held";

/// The `Held` condition while the judge holds the step, set when the hold began.
fn held_condition(state: &RolloutState) -> Option<CanaryCondition> {
    let since = state
        .held_since
        .filter(|_| state.phase == Phase::Progressing)?;
    let at = rfc3339(since);
    Some(CanaryCondition {
        type_: HELD.into(),
        status: "True".into(),
        last_update_time: Some(at.clone()),
        last_transition_time: Some(at),
        reason: Some("TooLittleEvidence".into()),
        message: Some(state.message.clone()),
    })
}

/// The status a state is recorded as, for a target of `target_kind`, with the pod template last
/// given to the primary and the primary's size as last seen.
pub fn status_of(
    state: &RolloutState,
    target_kind: &str,
    primary_template: Option<&PodTemplateSpec>,
    primary_replicas: Option<i32>,
) -> CanaryStatus {
    CanaryStatus {
        phase: state.phase.to_string(),
        canary_weight: i64::from(state.canary_weight),
        failed_checks: i64::from(state.failed_checks),
        iterations: i64::from(state.iterations),
        last_applied_spec: state.revision.clone(),
        last_promoted_spec: state.promoted_revision.clone(),
        last_transition_time: Some(rfc3339(state.phase_since)),
        message: (!state.message.is_empty()).then(|| state.message.clone()),
        conditions: std::iter::once(promoted_condition(state, target_kind))
            .chain(held_condition(state))
            .chain(forecast_condition(state))
            .collect(),
        state: serde_json::to_value(state).ok(),
        primary_template: primary_template.cloned(),
        primary_replicas,
        session_affinity_cookie: state.cookies.canary.clone(),
        previous_session_affinity_cookie: state.cookies.previous.clone(),
        primary_session_affinity_cookie: state.cookies.primary.clone(),
    }
}

/// The condition of a Canary the controller cannot act on (kstatus's `Stalled`): why, naming
/// the object and field. The next status recorded from a state no longer has it.
pub const STALLED: &str = "Stalled";

/// A status carrying only a message, for a Canary the controller cannot act on or waits on
/// (its previous state, if any, is kept).
pub fn with_message(status: Option<&CanaryStatus>, message: &str) -> CanaryStatus {
    let mut s = status.cloned().unwrap_or_default();
    if s.phase.is_empty() {
        s.phase = Phase::Initializing.to_string();
    }
    s.message = Some(message.to_string());
    s
}

/// [`with_message`] and a `Stalled` condition with `reason`, set at `now`.
pub fn stalled(
    status: Option<&CanaryStatus>,
    reason: &str,
    message: &str,
    now: Millis,
) -> CanaryStatus {
    let mut s = with_message(status, message);
    s.conditions.retain(|c| c.type_ != STALLED);
    let at = rfc3339(now);
    s.conditions.push(CanaryCondition {
        type_: STALLED.into(),
        status: "True".into(),
        last_update_time: Some(at.clone()),
        last_transition_time: Some(at),
        reason: Some(reason.into()),
        message: Some(message.into()),
    });
    s
}

/// `new` as a JSON merge patch over `old`: keys `old` has and `new` lacks become `null`, so
/// that optional fields cleared in the state are cleared in the status too.
pub fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = Map::new();
            for (k, v) in n {
                let patched = match o.get(k) {
                    Some(ov) => merge_patch(ov, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), patched);
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

/// `status` as tools written for Flagger read it. Argo CD's health check for a Canary
/// (`resource_customizations/flagger.app/Canary/health.lua`) fails on a status without a phase,
/// a numeric `canaryWeight` or a `conditions` list, or with a condition without a message:
/// the phase is never empty (`Initializing` until there is one), a status without conditions
/// gets Flagger's `Promoted` condition (`Unknown`, the phase as its reason), and a condition
/// without a message gets an empty one. (`canaryWeight` is a number, always serialised.)
pub fn for_health_checks(mut status: CanaryStatus) -> CanaryStatus {
    if status.phase.is_empty() {
        status.phase = Phase::Initializing.to_string();
    }
    if status.conditions.is_empty() {
        // No clock: the same status is always written the same way.
        let at = status.last_transition_time.clone();
        status.conditions.push(CanaryCondition {
            type_: PROMOTED.into(),
            status: "Unknown".into(),
            last_update_time: at.clone(),
            last_transition_time: at,
            reason: Some(status.phase.clone()),
            message: status.message.clone(),
        });
    }
    for c in &mut status.conditions {
        c.message.get_or_insert_default();
    }
    status
}

/// Writes `new` as the Canary's status when it differs from what the Canary holds, each
/// condition's `lastTransitionTime` kept while its status is unchanged.
///
/// The patch carries the Canary's `resourceVersion`, so a write racing another one gets a 409.
/// On a conflict the Canary is read again: if its status is still the one this reconcile started
/// from (someone changed its spec or metadata), the write is retried once on the fresh version;
/// otherwise another writer has moved the rollout on and the reconcile is retried from scratch.
/// (On a Flagger Canary the first of the two writes may have landed: the status is then this
/// reconcile's record with the old Flagger fields, and the write is retried too.)
/// Returns whether anything was written.
pub(crate) async fn write(api: &CanaryApi, canary: &Canary, new: &CanaryStatus) -> Result<bool> {
    let name = canary.metadata.name.clone().ok_or(Error::Unnamed("name"))?;
    let new = &with_kept_transitions(canary.status.as_ref(), &for_health_checks(new.clone()));
    if canary.status.as_ref() == Some(new) {
        return Ok(false);
    }
    match api.write_status(canary, new).await {
        Err(Error::Write {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 409 => {
            let fresh = api.get(&name).await?;
            if fresh.status != canary.status && !api.part_written(canary, &fresh, new)? {
                return Err(Error::StatusConflict { name });
            }
            match api.write_status(&fresh, new).await {
                Err(Error::Write {
                    source: kube::Error::Api(s),
                    ..
                }) if s.code == 409 => Err(Error::StatusConflict { name }),
                other => other.map(|()| true),
            }
        }
        other => other.map(|()| true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_cleared_in_the_state_are_nulled_in_the_patch() {
        let old = json!({"phase": "Progressing", "state": {"mirror": 10, "canaryWeight": 0}});
        let new = json!({"phase": "Progressing", "state": {"canaryWeight": 10}});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"phase": "Progressing", "state": {"mirror": null, "canaryWeight": 10}})
        );
    }

    #[test]
    fn the_status_mirrors_the_state_in_flagger_field_names() {
        let state = RolloutState {
            phase: Phase::Progressing,
            canary_weight: 20,
            failed_checks: 1,
            revision: Some("abc".into()),
            phase_since: 1_700_000_000_000,
            message: "Advance podinfo canary weight 20%".into(),
            ..RolloutState::default()
        };
        let s = status_of(&state, "Deployment", None, None);
        assert_eq!(s.phase, "Progressing");
        assert_eq!(s.canary_weight, 20);
        assert_eq!(s.failed_checks, 1);
        assert_eq!(s.last_applied_spec.as_deref(), Some("abc"));
        assert_eq!(
            s.last_transition_time.as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        let c = &s.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("Unknown", Some("Progressing"))
        );
        let back = recorded_state(Some(&s)).unwrap().unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn the_session_cookies_are_recorded_in_flaggers_status_fields() {
        let state = RolloutState {
            cookies: crate::rollout::SessionCookies {
                canary: Some("c=new".into()),
                previous: Some("c=old".into()),
                primary: Some("p=kept".into()),
            },
            ..RolloutState::default()
        };
        let s = serde_json::to_value(status_of(&state, "Deployment", None, None)).unwrap();
        assert_eq!(s["sessionAffinityCookie"], json!("c=new"));
        assert_eq!(s["previousSessionAffinityCookie"], json!("c=old"));
        assert_eq!(s["primarySessionAffinityCookie"], json!("p=kept"));
        // A Flagger Canary gets them in its own status, not in Fledge's record.
        for key in [
            "sessionAffinityCookie",
            "previousSessionAffinityCookie",
            "primarySessionAffinityCookie",
        ] {
            assert!(super::super::flagger::MIRRORED.contains(&key), "{key}");
        }
    }

    /// Argo CD's check knows Flagger's phases only: a step the statistical judge holds stays
    /// `Progressing`, and the hold is a condition, gone once the judge decides.
    #[test]
    fn a_held_step_is_a_condition_not_a_phase() {
        let mut state = RolloutState {
            phase: Phase::Progressing,
            canary_weight: 10,
            held_since: Some(1_700_000_000_000),
            message: "too few requests to judge: 40 of 100".into(),
            ..RolloutState::default()
        };
        let s = status_of(&state, "Deployment", None, None);
        assert_eq!(s.phase, "Progressing");
        let held = s.conditions.iter().find(|c| c.type_ == HELD).cloned();
        let held = held.expect("a Held condition");
        assert_eq!(
            (held.status.as_str(), held.reason.as_deref()),
            ("True", Some("TooLittleEvidence"))
        );
        assert_eq!(held.message.as_deref(), Some(state.message.as_str()));
        assert_eq!(
            held.last_transition_time.as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        state.held_since = None;
        let s = status_of(&state, "Deployment", None, None);
        assert!(s.conditions.iter().all(|c| c.type_ != HELD), "{s:?}");
        // A rollback leaves no hold behind.
        state.held_since = Some(1);
        state.phase = Phase::Failed;
        assert!(
            status_of(&state, "Deployment", None, None)
                .conditions
                .iter()
                .all(|c| c.type_ != HELD)
        );
    }

    #[test]
    fn a_status_is_written_with_a_phase_conditions_and_messages_argo_cd_can_read() {
        let bare = for_health_checks(CanaryStatus::default());
        assert_eq!(bare.phase, "Initializing");
        assert_eq!(bare.canary_weight, 0);
        let c = &bare.conditions[..];
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(
            (
                c[0].type_.as_str(),
                c[0].status.as_str(),
                c[0].reason.as_deref()
            ),
            (PROMOTED, "Unknown", Some("Initializing"))
        );
        assert_eq!(c[0].message.as_deref(), Some(""));
        let json = serde_json::to_value(&bare).unwrap();
        assert!(json["canaryWeight"].is_number(), "{json}");
        // What is there already is kept; only a missing message is filled.
        let mut s = stalled(None, "InvalidSpec", "bad", 0);
        s.conditions[0].message = None;
        let out = for_health_checks(s.clone());
        assert_eq!(out.conditions.len(), 1);
        assert_eq!(out.conditions[0].type_, STALLED);
        assert_eq!(out.conditions[0].message.as_deref(), Some(""));
        let full = status_of(&RolloutState::default(), "Deployment", None, None);
        assert_eq!(for_health_checks(full.clone()), full);
    }

    #[test]
    fn a_rolled_back_canary_is_not_promoted() {
        let state = RolloutState {
            phase: Phase::Failed,
            message: "Rolling back podinfo: failed checks threshold reached".into(),
            ..RolloutState::default()
        };
        let c = promoted_condition(&state, "DaemonSet");
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some("Failed"))
        );
        assert_eq!(
            c.message.as_deref(),
            Some("Canary analysis failed, DaemonSet scaled to zero.")
        );
    }

    #[test]
    fn a_state_that_is_not_a_rollout_state_is_reported_not_panicked_on() {
        let status = CanaryStatus {
            state: Some(json!({"phase": 42})),
            ..CanaryStatus::default()
        };
        assert!(recorded_state(Some(&status)).is_err());
        assert_eq!(recorded_state(None), Ok(None));
    }
}
