//! The rollout core: a pure state machine that decides, tick by tick, what a rollout does.
//!
//! ```text
//! advance(state, spec, observation, now) -> (next_state, actions)
//! ```
//! It never awaits, reads a clock or does IO. A shell (the cluster reconciler or the simulator's
//! harness) asks [`wants`] what to observe, gathers it into an [`Observation`], calls
//! [`advance`], and carries out the returned [`Action`]s in order. The state serialises into the
//! Canary's status, so a shell that restarts resumes with exactly the decisions it would have made.
//!
//! # Lifecycle (Flagger's)
//! 1. `Initializing`: the primary is created from the target and must become ready; then traffic
//!    moves to it (`Initialized`) and, on a later tick, the target (the canary) is scaled to zero.
//! 2. A new revision of the target starts a rollout: `Waiting` while confirm-rollout hooks say no,
//!    then `Progressing`: the canary is scaled up and, once ready, analysed every `interval`.
//! 3. Each analysis tick checks metrics and rollout hooks. A failure is a failed check;
//!    `threshold` failed checks roll back (`Failed`: all traffic to primary, canary scaled to 0).
//! 4. A passing tick advances the strategy: the next weight (canary), the next iteration
//!    (blue/green, A/B). At the end, confirm-promotion hooks gate (`WaitingPromotion`), then the
//!    canary's template is copied to the primary (`Promoting`), traffic returns to the primary
//!    (at once, or `stepWeightPromotion` per interval), `Finalising` scales the canary to zero
//!    once those routes are in force, and the rollout has `Succeeded`.
//! 5. Deleting the Canary restores routing to the primary (`Terminating`, then `Terminated`).
//!
//! Every action and transition carries a reason naming the metric, value and bound, the hook,
//! or the readiness figures behind it.

mod action;
mod deadline;
mod forecast;
mod health;
mod judging;
mod observation;
mod plan;
mod record;
mod schedule;
mod state;
mod steps;
mod tick;

pub use action::{Action, EventReason, Severity};
pub use forecast::{Forecast, ForecastEnd, StepForecast, forecast, log_normal_latency, rate_text};
pub use judging::JUDGED_BY_THRESHOLDS;
pub use observation::{Command, HookOutcome, Observation, PodState, Readiness, Wants};
pub use plan::{PlanStep, RolloutPlan, plan};
pub use record::{StateError, StateVersion};
pub use schedule::{look_interval, next_analysis, wants};
pub use state::{ForecastStatus, Millis, Phase, RolloutState, SessionCookies};

use crate::spec::RolloutSpec;
use tick::Tick;

/// The next state and the actions for one tick. Pure: the same inputs give the same outputs.
#[must_use]
pub fn advance(
    state: &RolloutState,
    spec: &RolloutSpec,
    obs: &Observation,
    now: Millis,
) -> (RolloutState, Vec<Action>) {
    let mut tick = Tick {
        s: state.clone(),
        spec,
        obs,
        now,
        actions: Vec::new(),
    };
    tick.run();
    (tick.s, tick.actions)
}
