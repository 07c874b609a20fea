//! When the core looks: which observations the next tick needs ([`wants`]), when a step or a look
//! between steps is due, and when a shell should tick next. Threshold analysis looks once per
//! `interval`; the statistical judge also looks between steps.

use super::{Millis, Phase, RolloutState, Wants};
use crate::spec::{HookGate, Judge, RolloutSpec, Strategy};

/// The observations the next [`advance`] at `now` will look at.
#[must_use]
pub fn wants(state: &RolloutState, spec: &RolloutSpec, now: Millis) -> Wants {
    let mut w = Wants::default();
    if spec.suspend {
        return w;
    }
    match state.phase {
        Phase::Waiting => w.hooks.push(HookGate::ConfirmRollout),
        Phase::Progressing | Phase::WaitingPromotion => {
            w.hooks.push(HookGate::Rollback);
            // A look that may end the step early needs what a step needs.
            let step = step_due(state, spec, now) || early_end_due(state, spec, now);
            if !spec.skip_analysis && !step {
                if look_due(state, spec, now) {
                    w.metrics = !spec.metrics.is_empty();
                    w.since = Some(state.step_since);
                }
            } else if !spec.skip_analysis {
                if !state.pre_rollout_done {
                    w.hooks.push(HookGate::PreRollout);
                } else if analysing(state, spec) {
                    w.metrics = !spec.metrics.is_empty();
                    if matches!(spec.judge, Judge::Statistical { .. }) {
                        w.since = Some(state.step_since);
                    }
                    w.hooks.push(HookGate::Rollout);
                }
                let top = state.canary_weight >= spec.strategy.max_weight();
                match &spec.strategy {
                    Strategy::Canary { .. } if !top => {
                        w.hooks.push(HookGate::ConfirmTrafficIncrease)
                    }
                    Strategy::Canary { .. } => w.hooks.push(HookGate::ConfirmPromotion),
                    Strategy::BlueGreen { iterations, .. }
                    | Strategy::AbTesting { iterations, .. } => {
                        if state.iterations >= *iterations && top {
                            w.hooks.push(HookGate::ConfirmPromotion);
                        }
                    }
                }
            }
        }
        _ => {}
    }
    w.hooks.retain(|g| spec.hooks(*g).next().is_some());
    w
}

/// Whether the canary gets traffic to analyse: not so for a canary at weight 0 that is not
/// mirroring (it is about to get its first step).
pub(super) fn analysing(state: &RolloutState, spec: &RolloutSpec) -> bool {
    !matches!(spec.strategy, Strategy::Canary { .. })
        || state.canary_weight > 0
        || state.mirror.is_some()
}

/// The shortest time between two looks of the statistical judge.
const MIN_LOOK: Millis = 5_000;

/// How often the judge looks at the canary. The threshold judge looks once per `interval`, as
/// Flagger does. The statistical judge's tests stay valid however often they look, so it also
/// looks between steps (four times per interval, at least 5s apart) and rolls back at the first
/// look that shows a regression; a step still lasts at least `interval`.
pub fn look_interval(spec: &RolloutSpec) -> Millis {
    match spec.judge {
        Judge::Threshold => spec.interval.millis(),
        Judge::Statistical { .. } => (spec.interval.millis() / 4).max(MIN_LOOK),
    }
}

/// When the core next wants to analyse, once a rollout has taken its first step: the next step,
/// or the statistical judge's next look if that comes first. Shells schedule their ticks by it.
pub fn next_analysis(state: &RolloutState, spec: &RolloutSpec) -> Option<Millis> {
    let step = state.last_step? + spec.interval.millis();
    let look = state.last_look.map_or(step, |l| l + look_interval(spec));
    Some(step.min(look))
}

/// A look between steps is due (statistical judge, once the canary gets traffic).
pub(super) fn look_due(state: &RolloutState, spec: &RolloutSpec, now: Millis) -> bool {
    matches!(spec.judge, Judge::Statistical { .. })
        && state.pre_rollout_done
        && analysing(state, spec)
        && state
            .last_look
            .is_some_and(|l| now.saturating_sub(l) >= look_interval(spec))
}

/// A look that ends the canary's weight step if every comparison shows the canary no worse:
/// the statistical judge with a `minStepDuration` (canary strategy only), the step has lasted
/// at least that long, and a look is due. Otherwise a step lasts `interval`.
pub(super) fn early_end_due(state: &RolloutState, spec: &RolloutSpec, now: Millis) -> bool {
    // Fallen back to thresholds: a step lasts `interval`, as under Flagger's judge.
    !state.threshold_fallback
        && spec.min_step.is_some_and(|floor| {
            now.saturating_sub(state.step_since) >= floor.millis() && look_due(state, spec, now)
        })
}

pub(super) fn step_due(state: &RolloutState, spec: &RolloutSpec, now: Millis) -> bool {
    state
        .last_step
        .is_none_or(|last| now.saturating_sub(last) >= spec.interval.millis())
}
