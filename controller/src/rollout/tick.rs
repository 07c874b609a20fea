//! One tick of the state machine: the phase decides what happens next. Deletion and `suspend`
//! come first; then initialisation, a new revision starting (or restarting) a rollout, the
//! confirm-rollout gate, and the progressing loop that hands over to the health checks, the
//! judge and the strategy's steps in the sibling modules.

use super::judging::Analysis;
use super::schedule::{analysing, early_end_due, look_due, step_due};
use super::state::ForecastStatus;
use super::{
    Action, Command, EventReason, HookOutcome, Millis, Observation, Phase, RolloutState, Severity,
};
use crate::analysis::statistical::Evidence;
use crate::spec::{HookGate, Judge, RolloutSpec, Strategy};

pub(super) struct Tick<'a> {
    pub(super) s: RolloutState,
    pub(super) spec: &'a RolloutSpec,
    pub(super) obs: &'a Observation,
    pub(super) now: Millis,
    pub(super) actions: Vec<Action>,
}

impl Tick<'_> {
    pub(super) fn run(&mut self) {
        if self.obs.deleting {
            return self.terminate();
        }
        if self.spec.suspend {
            if !self.s.suspended {
                self.s.suspended = true;
                self.event(
                    Severity::Normal,
                    "rollout suspended: spec.suspend is true; nothing changes until it is cleared"
                        .into(),
                );
            }
            return;
        }
        if self.s.suspended {
            self.s.suspended = false;
            self.event(Severity::Normal, "rollout resumed".into());
        }
        match self.s.phase {
            Phase::Initializing => self.initialize(),
            Phase::Initialized | Phase::Succeeded | Phase::Failed => self.idle(),
            Phase::Waiting => self.waiting(),
            Phase::Progressing | Phase::WaitingPromotion => self.progressing(),
            Phase::Promoting => self.promoting(),
            Phase::Finalising => self.finalising(),
            Phase::Terminating | Phase::Terminated => self.terminate(),
        }
        // A step check's window closes with its tick (which may analyse twice, see
        // `fall_back_to_thresholds`): a threshold check reads each interval's own traffic.
        if self.s.last_step == Some(self.now) {
            self.s.evidence.begin_window();
        }
    }

    pub(super) fn target(&self) -> &str {
        &self.spec.target
    }

    pub(super) fn event(&mut self, severity: Severity, message: String) {
        self.event_for(severity, None, message);
    }

    /// An Event with a reason of its own (see [`Action::Event`]).
    pub(super) fn event_for(
        &mut self,
        severity: Severity,
        reason: Option<EventReason>,
        message: String,
    ) {
        self.s.message = message.clone();
        self.actions.push(Action::Event {
            severity,
            message,
            reason,
        });
    }

    pub(super) fn set_phase(&mut self, phase: Phase) {
        if self.s.phase != phase {
            self.s.phase = phase;
            self.s.phase_since = self.now;
        }
    }

    pub(super) fn set_routes(&mut self, canary: u8, mirror: Option<u8>, matched: bool) {
        self.new_step();
        self.keep_session_cookies(canary);
        self.s.canary_weight = canary;
        self.s.mirror = mirror;
        self.s.matched = matched;
        self.actions.push(Action::SetRoutes {
            primary: 100 - canary,
            canary,
            mirror,
            matched,
        });
    }

    /// The traffic the canary gets changes: the statistical judge starts judging afresh.
    pub(super) fn new_step(&mut self) {
        self.s.step_since = self.now;
        self.s.held_since = None;
        self.s.evidence.begin_step();
    }

    pub(super) fn new_revision(&self) -> bool {
        self.s.revision.as_deref() != Some(self.obs.revision.as_str())
    }

    pub(super) fn initialize(&mut self) {
        if self.s.revision.is_none() {
            self.s.revision = Some(self.obs.revision.clone());
            self.s.phase_since = self.now;
            // The primary alone: traffic keeps reaching the original pods until it is ready.
            self.actions.push(Action::InitializePrimary);
        }
        let primary = self.obs.primary;
        if !primary.meets(self.spec.primary_ready_threshold) {
            self.s.message = format!(
                "waiting for {}-primary to be ready: {primary}, need {}%",
                self.target(),
                self.spec.primary_ready_threshold
            );
            return;
        }
        // The primary runs the revision it was cloned from: that revision counts as promoted.
        self.s.revision = Some(self.obs.revision.clone());
        self.s.promoted_revision = self.s.revision.clone();
        // Traffic moves to the ready primary first; the target stops serving only on a later
        // tick, after the shell has carried the routes out (see `idle`).
        self.set_routes(0, None, false);
        self.s.scale_down_pending = true;
        self.set_phase(Phase::Initialized);
        self.event(
            Severity::Normal,
            format!(
                "Initialization done! {}-primary is ready and serves all traffic",
                self.target()
            ),
        );
    }

    pub(super) fn idle(&mut self) {
        if self.new_revision() {
            // A rollout scales the target up itself: no scale-down in between.
            self.s.scale_down_pending = false;
            return self.start_rollout();
        }
        if self.s.scale_down_pending && self.obs.primary.meets(self.spec.primary_ready_threshold) {
            self.s.scale_down_pending = false;
            self.actions.push(Action::ScaleCanary { up: false });
        }
    }

    /// A new revision of the target: reset the analysis and start over from weight 0.
    pub(super) fn start_rollout(&mut self) {
        let restarting = self.s.phase.is_active();
        self.s.revision = Some(self.obs.revision.clone());
        self.s.failed_checks = 0;
        self.s.iterations = 0;
        self.s.last_step = None;
        self.s.last_look = None;
        self.s.stalled_since = None;
        self.s.pre_rollout_done = false;
        self.s.analysis.clear();
        self.s.evidence = Evidence::default();
        self.s.threshold_fallback = false;
        // Only a rollout whose judge compares a metric has a pace the traffic sets: one that
        // compares none steps once per interval, and no look will show it a rate.
        let compared = self.spec.metrics.iter().any(|m| m.kind.is_builtin());
        self.s.forecast = (matches!(self.spec.judge, Judge::Statistical { .. }) && compared)
            .then_some(ForecastStatus::Unknown);
        self.new_step();
        if restarting {
            self.set_routes(0, None, false);
            self.event(
                Severity::Normal,
                format!(
                    "New revision detected! Restarting analysis for {}",
                    self.target()
                ),
            );
        } else {
            self.event(
                Severity::Normal,
                format!(
                    "New revision detected! Starting {} rollout of {}",
                    self.spec.strategy.name(),
                    self.target()
                ),
            );
        }
        if self.spec.hooks(HookGate::ConfirmRollout).next().is_some() {
            self.set_phase(Phase::Waiting);
            self.s.message = format!(
                "waiting for approval: confirm-rollout hooks of {}",
                self.target()
            );
        } else {
            self.begin_progressing();
        }
    }

    pub(super) fn begin_progressing(&mut self) {
        self.set_phase(Phase::Progressing);
        self.actions.push(Action::ScaleCanary { up: true });
        self.event(Severity::Normal, format!("Scaling up {}", self.target()));
    }

    pub(super) fn waiting(&mut self) {
        if self.new_revision() {
            return self.start_rollout();
        }
        match self.gate(HookGate::ConfirmRollout) {
            Ok(()) => {
                self.event(
                    Severity::Normal,
                    format!("Confirm-rollout passed for {}", self.target()),
                );
                self.begin_progressing();
            }
            Err(why) => self.s.message = why,
        }
    }

    /// Whether every hook of a confirm gate passed (or an operator approved).
    pub(super) fn gate(&self, gate: HookGate) -> Result<(), String> {
        if self.obs.command == Some(Command::Approve) {
            return Ok(());
        }
        match self.refusal(gate) {
            None => Ok(()),
            Some((hook, Some(why))) => Err(format!(
                "waiting for approval: {gate} hook {hook} said no: {why}"
            )),
            Some((hook, None)) => Err(format!(
                "waiting for approval: {gate} hook {hook} has not answered"
            )),
        }
    }

    /// The first hook of a type that did not answer success: its name, and its reason when it
    /// answered at all.
    pub(super) fn refusal(&self, gate: HookGate) -> Option<(&str, Option<&str>)> {
        self.spec
            .hooks(gate)
            .find_map(|hook| match self.obs.hooks.get(&hook.name) {
                Some(HookOutcome::Passed) => None,
                Some(HookOutcome::Failed(why)) => Some((hook.name.as_str(), Some(why.as_str()))),
                None => Some((hook.name.as_str(), None)),
            })
    }

    pub(super) fn progressing(&mut self) {
        if self.new_revision() {
            return self.start_rollout();
        }
        if self.obs.command == Some(Command::Abort) {
            return self.rollback("aborted by an operator".into());
        }
        let triggered = self
            .spec
            .hooks(HookGate::Rollback)
            .find(|h| self.obs.hooks.get(&h.name) == Some(&HookOutcome::Passed));
        if let Some(hook) = triggered {
            return self.rollback(format!("rollback hook {} asked for a rollback", hook.name));
        }
        if let Some(why) = self.failing_canary() {
            return self.rollback(why);
        }
        // Before the workloads' check, which clears the time stalled that this one counts.
        if !self.routes_accepted() || !self.workloads_ready() {
            return;
        }
        if self.spec.skip_analysis {
            self.event(
                Severity::Normal,
                "Analysis skipped (spec.skipAnalysis): promoting at once".into(),
            );
            return self.promote();
        }
        // An operator's approval does not wait for the next analysis; the gate's hooks do,
        // and the analysis keeps running while they say no (a regression still rolls back).
        if self.s.phase == Phase::WaitingPromotion && self.obs.command == Some(Command::Approve) {
            return self.promote();
        }
        if !step_due(&self.s, self.spec, self.now) {
            if early_end_due(&self.s, self.spec, self.now) {
                self.forecast_once();
                self.look_to_end_step();
            } else if look_due(&self.s, self.spec, self.now) {
                self.look_between_steps();
                self.forecast_once();
            }
            return;
        }
        self.s.last_step = Some(self.now);
        self.s.last_look = Some(self.now);
        if !self.s.pre_rollout_done {
            return self.first_step();
        }
        if !analysing(&self.s, self.spec) {
            return self.canary_step();
        }
        let analysis = self.analyse();
        self.forecast_once();
        match analysis {
            Analysis::Passed => self.s.held_since = None,
            Analysis::Regressed(why) => return self.rollback(format!("canary regressed: {why}")),
            Analysis::Held {
                why,
                short_of_traffic,
            } => {
                let since = *self.s.held_since.get_or_insert(self.now);
                if self.now.saturating_sub(since) >= self.spec.progress_deadline.millis() {
                    if self.metrics_unavailable().is_none() && !self.s.threshold_fallback {
                        return self.fall_back_to_thresholds(&why, short_of_traffic);
                    }
                    return self.rollback(self.deadline_reason(&why, short_of_traffic));
                }
                self.s.message = match self.metrics_unavailable() {
                    Some(failed) => {
                        format!("holding: {failed}; a canary is never promoted without its metrics")
                    }
                    None => why,
                };
                return;
            }
            Analysis::Failed(why) => return self.failed_check(why),
        }
        self.next_step();
    }

    /// A look after the step's `minStepDuration`, with everything a step checks: it ends the
    /// step if the analysis passes and rolls back on a regression. A hold or a failed check
    /// waits for the step at `interval`, which counts it as Flagger does.
    fn look_to_end_step(&mut self) {
        self.s.last_look = Some(self.now);
        match self.analyse() {
            Analysis::Passed => {
                self.s.last_step = Some(self.now);
                self.s.held_since = None;
                self.next_step();
            }
            Analysis::Regressed(why) => self.rollback(format!("canary regressed: {why}")),
            Analysis::Held { .. } | Analysis::Failed(_) => {}
        }
    }

    /// The analysis passed: the strategy's next step.
    pub(super) fn next_step(&mut self) {
        match self.spec.strategy.clone() {
            Strategy::Canary { .. } => self.canary_step(),
            Strategy::BlueGreen { iterations, mirror } => self.blue_green_step(iterations, mirror),
            Strategy::AbTesting { iterations, .. } => self.ab_step(iterations),
        }
    }
}
