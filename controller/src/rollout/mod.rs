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
//! 1. `Initializing`: the primary is created from the target and must become ready; then the
//!    target (the canary) is scaled to zero: `Initialized`.
//! 2. A new revision of the target starts a rollout: `Waiting` while confirm-rollout hooks say no,
//!    then `Progressing`: the canary is scaled up and, once ready, analysed every `interval`.
//! 3. Each analysis tick checks metrics and rollout hooks. A failure is a failed check;
//!    `threshold` failed checks roll back (`Failed`: all traffic to primary, canary scaled to 0).
//! 4. A passing tick advances the strategy: the next weight (canary), the next iteration
//!    (blue/green, A/B). At the end, confirm-promotion hooks gate (`WaitingPromotion`), then the
//!    canary's template is copied to the primary (`Promoting`), traffic returns to the primary
//!    (at once, or `stepWeightPromotion` per interval), `Finalising` scales the canary to zero and
//!    the rollout has `Succeeded`.
//! 5. Deleting the Canary restores routing to the primary (`Terminating`, then `Terminated`).
//!
//! Every action and transition carries a reason naming the metric, value and bound, the hook,
//! or the readiness figures behind it.

mod plan;
mod record;

pub use plan::{PlanStep, RolloutPlan, plan};
pub use record::{StateError, StateVersion};

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::analysis::statistical::Evidence;
use crate::analysis::{MetricReading, MetricResult, Verdict, check_threshold};
use crate::spec::{HookGate, Judge, MetricCheck, RolloutSpec, Strategy};

/// Milliseconds on the shell's clock (Unix time in a cluster, virtual time in the simulator).
pub type Millis = u64;

/// Flagger's phases, with the same names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Creating the primary from the target and waiting for it to be ready.
    #[default]
    Initializing,
    /// The primary serves all traffic; the canary is scaled to zero; waiting for a new revision.
    Initialized,
    /// A new revision waits for confirm-rollout hooks.
    Waiting,
    /// The canary is being analysed and traffic shifted to it.
    Progressing,
    /// The analysis passed; waiting for confirm-promotion hooks.
    WaitingPromotion,
    /// The canary's template has been copied to the primary; traffic returns to the primary.
    Promoting,
    /// Traffic is back on the primary; the canary is being scaled to zero.
    Finalising,
    /// The last rollout was promoted.
    Succeeded,
    /// The last rollout was rolled back.
    Failed,
    /// The Canary is being deleted; routing is being restored.
    Terminating,
    /// The Canary has been deleted and routing restored.
    Terminated,
}

impl Phase {
    /// Phases in which a rollout is under way.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Phase::Waiting
                | Phase::Progressing
                | Phase::WaitingPromotion
                | Phase::Promoting
                | Phase::Finalising
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Everything needed to resume a rollout; stored in the Canary's status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    /// The format this state is recorded in; see [`RolloutState::restore`].
    #[serde(default = "unversioned")]
    pub version: StateVersion,
    pub phase: Phase,
    /// Percentage of live traffic on the canary; the primary has the rest.
    pub canary_weight: u8,
    /// Percentage of traffic mirrored to the canary, when mirroring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<u8>,
    /// A/B testing: requests matching the spec's rules go to the canary.
    #[serde(default)]
    pub matched: bool,
    /// Completed analysis iterations (blue/green, A/B).
    #[serde(default)]
    pub iterations: u32,
    #[serde(default)]
    pub failed_checks: u32,
    /// The target revision the state refers to (Flagger's `lastAppliedSpec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The revision last promoted (Flagger's `lastPromotedSpec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_revision: Option<String>,
    /// When the phase last changed.
    #[serde(default)]
    pub phase_since: Millis,
    /// When the last analysis step ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<Millis>,
    /// When the statistical judge last looked (at a step or between steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_look: Option<Millis>,
    /// Since when the rollout has been unable to progress (workloads not ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_since: Option<Millis>,
    /// When the current step began: the canary's weight or iteration last changed.
    #[serde(default)]
    pub step_since: Millis,
    /// Since when the statistical judge has held the current step undecided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_since: Option<Millis>,
    /// The statistical judge's evidence.
    #[serde(default, skip_serializing_if = "Evidence::is_empty")]
    pub evidence: Evidence,
    /// The pre-rollout hooks of this rollout have passed.
    #[serde(default)]
    pub pre_rollout_done: bool,
    /// The spec's `suspend` has been noticed (so it is reported once).
    #[serde(default)]
    pub suspended: bool,
    /// The last reason given, for the status.
    #[serde(default)]
    pub message: String,
    /// The last analysis, metric by metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<MetricResult>,
}

fn unversioned() -> StateVersion {
    StateVersion::UNVERSIONED
}

impl RolloutState {
    pub fn primary_weight(&self) -> u8 {
        100 - self.canary_weight
    }
}

/// Ready replicas of a workload against those desired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: u32,
    pub desired: u32,
}

impl Readiness {
    pub fn all(replicas: u32) -> Self {
        Readiness {
            ready: replicas,
            desired: replicas,
        }
    }

    /// At least `threshold` percent of the desired replicas are ready (and there are some).
    pub fn meets(self, threshold: u8) -> bool {
        self.desired > 0 && self.ready as u64 * 100 >= threshold as u64 * self.desired as u64
    }
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ready", self.ready, self.desired)
    }
}

/// A container of a canary pod that is not ready.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub pod: String,
    pub container: String,
    /// The kubelet's reason: why the container waits (`CrashLoopBackOff`, `ImagePullBackOff`,
    /// ...), or `NotReady` for one that runs and fails its readiness probe.
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// For `NotReady`: since when it has been running (its startup probe, if any, passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<Millis>,
}

/// Waiting reasons from which a container does not recover by waiting longer.
const FATAL_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// A webhook's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome", content = "reason")]
pub enum HookOutcome {
    /// HTTP 2xx.
    Passed,
    /// Anything else, with why (status, timeout, connection refused).
    Failed(String),
}

/// An operator's command (from `fledge-controller promote|abort`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Command {
    /// Open whichever confirm gate the rollout waits at.
    Approve,
    /// Roll back now.
    Abort,
}

/// What the shell gathered for one tick.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// The target's current revision (a hash of its pod template).
    pub revision: String,
    pub canary: Readiness,
    /// The primary's readiness; after a promotion, ready means its rollout has completed.
    pub primary: Readiness,
    /// Readings by metric name, for the metrics [`wants`] asked for.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricReading>,
    /// Answers by webhook name, for the hooks [`wants`] asked for.
    #[serde(default)]
    pub hooks: BTreeMap<String, HookOutcome>,
    /// The canary's containers that are not ready and why, as the shell saw them (only asked
    /// for while a rollout waits on the canary): the core decides which ones fail the rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canary_pods: Vec<PodState>,
    /// The Canary is being deleted.
    #[serde(default)]
    pub deleting: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Command>,
}

/// What the shell must gather before calling [`advance`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wants {
    /// Query every metric of the spec.
    pub metrics: bool,
    /// Statistical judge: read counts and histograms over `[since, now]` (the current step)
    /// rather than each metric's own window.
    pub since: Option<Millis>,
    /// Call every hook of these types and report each answer by name.
    pub hooks: Vec<HookGate>,
}

/// Whether an event is routine or needs attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Severity {
    Normal,
    Warning,
}

/// What the shell must do, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Action {
    /// Clone the target into the primary (and its Services); the apex Service and the routes
    /// move to it with the `SetRoutes` that follows once it is ready.
    InitializePrimary,
    /// Scale the canary up to its desired replicas, or down to zero.
    ScaleCanary { up: bool },
    /// Route `primary`/`canary` percent of traffic; mirror a percentage to the canary; with
    /// `matched`, requests matching the A/B rules go to the canary.
    SetRoutes {
        primary: u8,
        canary: u8,
        mirror: Option<u8>,
        matched: bool,
    },
    /// Copy the canary's template to the primary.
    PromotePrimary,
    /// Call these hooks without waiting on their answer (post-rollout).
    RunHooks { gate: HookGate },
    /// Record a Kubernetes Event (and notify `event` hooks).
    Event { severity: Severity, message: String },
    /// The Canary is going away: routes back to the primary; with `revert`, the original
    /// workload is restored (scaled up, primary removed).
    Finalize { revert: bool },
}

/// The next state and the actions for one tick. Pure: the same inputs give the same outputs.
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

/// The observations the next [`advance`] at `now` will look at.
pub fn wants(state: &RolloutState, spec: &RolloutSpec, now: Millis) -> Wants {
    let mut w = Wants::default();
    if spec.suspend {
        return w;
    }
    match state.phase {
        Phase::Waiting => w.hooks.push(HookGate::ConfirmRollout),
        Phase::Progressing | Phase::WaitingPromotion => {
            w.hooks.push(HookGate::Rollback);
            if !spec.skip_analysis && !step_due(state, spec, now) {
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
fn analysing(state: &RolloutState, spec: &RolloutSpec) -> bool {
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

/// The false-rollback level of each comparison: `alpha` is shared between the compared metrics
/// (Bonferroni), so the chance that any of them rolls back a canary no worse than primary stays
/// within `alpha`.
fn comparison_alpha(spec: &RolloutSpec, alpha: f64) -> f64 {
    let compared = spec.metrics.iter().filter(|m| m.kind.is_builtin()).count();
    alpha / compared.max(1) as f64
}

/// A look between steps is due (statistical judge, once the canary gets traffic).
fn look_due(state: &RolloutState, spec: &RolloutSpec, now: Millis) -> bool {
    matches!(spec.judge, Judge::Statistical { .. })
        && state.pre_rollout_done
        && analysing(state, spec)
        && state
            .last_look
            .is_some_and(|l| now.saturating_sub(l) >= look_interval(spec))
}

fn step_due(state: &RolloutState, spec: &RolloutSpec, now: Millis) -> bool {
    state
        .last_step
        .is_none_or(|last| now.saturating_sub(last) >= spec.interval.millis())
}

/// How a tick's analysis came out.
enum Analysis {
    Passed,
    /// A failed check (threshold mode, hooks, scalar metrics).
    Failed(String),
    /// The statistical judge found the canary worse than primary: roll back now.
    Regressed(String),
    /// The statistical judge cannot decide yet: hold the step.
    Held {
        why: String,
        short_of_traffic: Option<(f64, u64)>,
    },
}

struct Tick<'a> {
    s: RolloutState,
    spec: &'a RolloutSpec,
    obs: &'a Observation,
    now: Millis,
    actions: Vec<Action>,
}

impl Tick<'_> {
    fn run(&mut self) {
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
    }

    fn target(&self) -> &str {
        &self.spec.target
    }

    fn event(&mut self, severity: Severity, message: String) {
        self.s.message = message.clone();
        self.actions.push(Action::Event { severity, message });
    }

    fn set_phase(&mut self, phase: Phase) {
        if self.s.phase != phase {
            self.s.phase = phase;
            self.s.phase_since = self.now;
        }
    }

    fn set_routes(&mut self, canary: u8, mirror: Option<u8>, matched: bool) {
        self.new_step();
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
    fn new_step(&mut self) {
        self.s.step_since = self.now;
        self.s.held_since = None;
        self.s.evidence.begin_step();
    }

    fn new_revision(&self) -> bool {
        self.s.revision.as_deref() != Some(self.obs.revision.as_str())
    }

    fn initialize(&mut self) {
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
        // Traffic moves to the ready primary first; only then does the target stop serving.
        self.set_routes(0, None, false);
        self.actions.push(Action::ScaleCanary { up: false });
        self.set_phase(Phase::Initialized);
        self.event(
            Severity::Normal,
            format!(
                "Initialization done! {}-primary is ready and serves all traffic",
                self.target()
            ),
        );
    }

    fn idle(&mut self) {
        if self.new_revision() {
            self.start_rollout();
        }
    }

    /// A new revision of the target: reset the analysis and start over from weight 0.
    fn start_rollout(&mut self) {
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

    fn begin_progressing(&mut self) {
        self.set_phase(Phase::Progressing);
        self.actions.push(Action::ScaleCanary { up: true });
        self.event(Severity::Normal, format!("Scaling up {}", self.target()));
    }

    fn waiting(&mut self) {
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
    fn gate(&self, gate: HookGate) -> Result<(), String> {
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
    fn refusal(&self, gate: HookGate) -> Option<(&str, Option<&str>)> {
        self.spec
            .hooks(gate)
            .find_map(|hook| match self.obs.hooks.get(&hook.name) {
                Some(HookOutcome::Passed) => None,
                Some(HookOutcome::Failed(why)) => Some((hook.name.as_str(), Some(why.as_str()))),
                None => Some((hook.name.as_str(), None)),
            })
    }

    fn progressing(&mut self) {
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
        if !self.workloads_ready() {
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
            if look_due(&self.s, self.spec, self.now) {
                self.look_between_steps();
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
        match self.analyse() {
            Analysis::Passed => self.s.held_since = None,
            Analysis::Regressed(why) => return self.rollback(format!("canary regressed: {why}")),
            Analysis::Held {
                why,
                short_of_traffic,
            } => {
                let since = *self.s.held_since.get_or_insert(self.now);
                if self.now.saturating_sub(since) >= self.spec.progress_deadline.millis() {
                    let deadline = self.spec.progress_deadline;
                    return self.rollback(match short_of_traffic {
                        Some((seen, need)) => format!(
                            "not enough traffic to judge: {seen:.0} requests, need {need}; held for the progress deadline of {deadline}"
                        ),
                        None => format!("no decision within the progress deadline of {deadline}: {why}"),
                    });
                }
                self.s.message = why;
                return;
            }
            Analysis::Failed(why) => return self.failed_check(why),
        }
        match self.spec.strategy.clone() {
            Strategy::Canary { .. } => self.canary_step(),
            Strategy::BlueGreen { iterations, mirror } => self.blue_green_step(iterations, mirror),
            Strategy::AbTesting { iterations, .. } => self.ab_step(iterations),
        }
    }

    /// A canary that will not become ready by waiting (flagger#1533): a container that
    /// crash-loops or cannot be pulled or created, or one that has run an `interval` without
    /// passing its readiness probe. Rolled back at once rather than at the progress deadline.
    fn failing_canary(&self) -> Option<String> {
        if self.obs.canary.meets(self.spec.canary_ready_threshold) {
            return None;
        }
        let interval = self.spec.interval.millis();
        let fatal = |p: &PodState| FATAL_REASONS.contains(&p.reason.as_str());
        let failing = |p: &&PodState| {
            fatal(p)
                || p.running_since
                    .is_some_and(|t| self.now.saturating_sub(t) >= interval)
        };
        let p = self.obs.canary_pods.iter().find(failing)?;
        let what = if fatal(p) {
            p.reason.clone()
        } else {
            format!(
                "not ready after running for the analysis interval of {}",
                self.spec.interval
            )
        };
        let detail = if p.message.is_empty() || !fatal(p) {
            String::new()
        } else {
            format!(" ({})", p.message)
        };
        Some(format!(
            "canary pod {} container {}: {what}{detail}",
            p.pod, p.container
        ))
    }

    /// Both workloads must be ready for the analysis to mean anything; a rollout that stays
    /// stalled past the progress deadline is rolled back.
    fn workloads_ready(&mut self) -> bool {
        let (canary, primary) = (self.obs.canary, self.obs.primary);
        let problem = if !canary.meets(self.spec.canary_ready_threshold) {
            format!(
                "canary {} not ready: {canary}, need {}%",
                self.target(),
                self.spec.canary_ready_threshold
            )
        } else if !primary.meets(self.spec.primary_ready_threshold) {
            format!(
                "primary {}-primary not ready: {primary}, need {}%",
                self.target(),
                self.spec.primary_ready_threshold
            )
        } else {
            self.s.stalled_since = None;
            return true;
        };
        self.stalled(problem);
        false
    }

    /// The rollout cannot progress: wait, or roll back once the progress deadline has passed.
    fn stalled(&mut self, problem: String) {
        let since = *self.s.stalled_since.get_or_insert(self.now);
        if self.now.saturating_sub(since) >= self.spec.progress_deadline.millis() {
            self.rollback(format!(
                "{problem}; progress deadline of {} exceeded",
                self.spec.progress_deadline
            ));
        } else {
            self.s.message = format!("waiting: {problem}");
        }
    }

    /// Weight 0: pre-rollout hooks, then the strategy's first routing.
    fn first_step(&mut self) {
        if let Err(why) = self.hooks_pass(HookGate::PreRollout) {
            return self.failed_check(why);
        }
        self.s.pre_rollout_done = true;
        match self.spec.strategy.clone() {
            Strategy::Canary {
                mirror: Some(percent),
                ..
            } => {
                self.set_routes(0, Some(percent), false);
                self.event(
                    Severity::Normal,
                    format!(
                        "Starting canary analysis for {} with {percent}% of traffic mirrored",
                        self.target()
                    ),
                );
            }
            Strategy::Canary { mirror: None, .. } => self.canary_step(),
            Strategy::BlueGreen { iterations, mirror } => {
                self.set_routes(0, mirror, false);
                let mirrored = mirror
                    .map(|p| format!(", {p}% of traffic mirrored"))
                    .unwrap_or_default();
                self.event(
                    Severity::Normal,
                    format!(
                        "Starting blue/green analysis of {}: {iterations} iterations{mirrored}",
                        self.target()
                    ),
                );
            }
            Strategy::AbTesting { iterations, .. } => {
                self.set_routes(0, None, true);
                self.event(Severity::Normal, format!("Starting A/B testing of {}: matching requests go to the canary for {iterations} iterations", self.target()));
            }
        }
    }

    /// All hooks of a blocking type answered success.
    fn hooks_pass(&self, gate: HookGate) -> Result<(), String> {
        match self.refusal(gate) {
            None => Ok(()),
            Some((hook, Some(why))) => Err(format!("{gate} hook {hook} failed: {why}")),
            Some((hook, None)) => Err(format!("{gate} hook {hook} did not answer")),
        }
    }

    /// Metrics and rollout hooks for this tick.
    fn analyse(&mut self) -> Analysis {
        let (spec, obs) = (self.spec, self.obs);
        let (results, short_of_traffic) = match spec.judge {
            Judge::Threshold => (
                spec.metrics
                    .iter()
                    .map(|m| check_threshold(m, obs.metrics.get(&m.name), &spec.target))
                    .collect(),
                None,
            ),
            Judge::Statistical { .. } => self.compare(|_| true),
        };
        self.s.analysis = results;
        if let Err(why) = self.hooks_pass(HookGate::Rollout) {
            return Analysis::Failed(why);
        }
        let reasons = |keep: &dyn Fn(&MetricResult) -> bool| -> String {
            let picked: Vec<&str> = self
                .s
                .analysis
                .iter()
                .filter(|r| keep(r))
                .map(|r| r.reason.as_str())
                .collect();
            picked.join("; ")
        };
        let failed = |r: &MetricResult| r.verdict == Verdict::Fail;
        let builtin = |name: &str| {
            spec.metrics
                .iter()
                .any(|m| m.name == name && m.kind.is_builtin())
        };
        match spec.judge {
            Judge::Threshold => {
                let why = reasons(&|r| matches!(r.verdict, Verdict::Fail | Verdict::NoData));
                if why.is_empty() {
                    Analysis::Passed
                } else {
                    Analysis::Failed(why)
                }
            }
            Judge::Statistical { .. } => {
                // A comparison that regressed rolls back at once; a scalar out of range is a
                // failed check, as in threshold mode.
                let regressed = reasons(&|r| failed(r) && builtin(&r.name));
                let out_of_range = reasons(&|r| failed(r) && !builtin(&r.name));
                let waiting =
                    reasons(&|r| matches!(r.verdict, Verdict::Undecided | Verdict::NoData));
                if !regressed.is_empty() {
                    Analysis::Regressed(regressed)
                } else if !out_of_range.is_empty() {
                    Analysis::Failed(out_of_range)
                } else if !waiting.is_empty() {
                    Analysis::Held {
                        why: waiting,
                        short_of_traffic,
                    }
                } else {
                    Analysis::Passed
                }
            }
        }
    }

    /// The statistical judge on the metrics `include` picks: their results, and whether a hold is
    /// for lack of traffic (canary requests seen, requests needed).
    fn compare(
        &mut self,
        include: impl Fn(&MetricCheck) -> bool,
    ) -> (Vec<MetricResult>, Option<(f64, u64)>) {
        let Judge::Statistical {
            alpha,
            min_requests,
        } = self.spec.judge
        else {
            return (Vec::new(), None);
        };
        let (spec, obs) = (self.spec, self.obs);
        let mut short_of_traffic = None;
        let results = spec
            .metrics
            .iter()
            .filter(|m| include(m))
            .map(|m| {
                let judged = self.s.evidence.judge(
                    m,
                    obs.metrics.get(&m.name),
                    comparison_alpha(spec, alpha),
                    min_requests,
                    &spec.target,
                );
                short_of_traffic = short_of_traffic.or(judged.short_of_traffic);
                judged.result
            })
            .collect();
        (results, short_of_traffic)
    }

    /// The statistical judge's look between steps: the comparisons only (hooks and scalar
    /// metrics keep their once-per-interval checks), acting only on a regression.
    fn look_between_steps(&mut self) {
        self.s.last_look = Some(self.now);
        let (looked, _) = self.compare(|m| m.kind.is_builtin());
        let regressed: Vec<&str> = looked
            .iter()
            .filter(|r| r.verdict == Verdict::Fail)
            .map(|r| r.reason.as_str())
            .collect();
        if !regressed.is_empty() {
            let why = regressed.join("; ");
            self.s.analysis = looked;
            self.rollback(format!("canary regressed: {why}"));
        }
    }

    fn failed_check(&mut self, why: String) {
        self.s.failed_checks += 1;
        let (n, threshold) = (self.s.failed_checks, self.spec.threshold);
        if n >= threshold {
            self.rollback(format!(
                "failed checks threshold reached ({n}/{threshold}): {why}"
            ));
        } else {
            self.event(
                Severity::Warning,
                format!(
                    "Halt {} advancement: {why} (failed checks {n}/{threshold})",
                    self.target()
                ),
            );
        }
    }

    /// Raise the canary's weight to the next step (ending any mirroring), or promote at the top.
    fn canary_step(&mut self) {
        let spec = self.spec;
        let steps: &[u8] = match &spec.strategy {
            Strategy::Canary { steps, .. } => steps,
            _ => &[],
        };
        let current = self.s.canary_weight;
        let Some(next) = steps.iter().copied().find(|&w| w > current) else {
            return self.await_promotion();
        };
        if let Err(why) = self.gate(HookGate::ConfirmTrafficIncrease) {
            self.s.message = why;
            return;
        }
        self.set_routes(next, None, false);
        self.event(
            Severity::Normal,
            format!("Advance {} canary weight {next}%", self.target()),
        );
    }

    fn blue_green_step(&mut self, iterations: u32, mirror: Option<u8>) {
        if self.s.iterations < iterations {
            self.s.iterations += 1;
            self.new_step();
            // Like Flagger: mirrored during the whole blue/green test (its scheduler's "mirror
            // requests during the entire B/G canary test").
            if mirror != self.s.mirror {
                self.set_routes(0, mirror, false);
            }
            let n = self.s.iterations;
            return self.event(
                Severity::Normal,
                format!("Advance {} iteration {n}/{iterations}", self.target()),
            );
        }
        if self.s.canary_weight < 100 {
            // Like Flagger: one more analysed interval with all traffic on the canary.
            self.set_routes(100, None, false);
            return self.event(
                Severity::Normal,
                format!("Routing all traffic to canary {}", self.target()),
            );
        }
        self.await_promotion();
    }

    fn ab_step(&mut self, iterations: u32) {
        if self.s.iterations < iterations {
            self.s.iterations += 1;
            self.new_step();
            let n = self.s.iterations;
            return self.event(
                Severity::Normal,
                format!("Advance {} iteration {n}/{iterations}", self.target()),
            );
        }
        self.await_promotion();
    }

    fn await_promotion(&mut self) {
        match self.gate(HookGate::ConfirmPromotion) {
            Ok(()) => self.promote(),
            Err(why) => {
                if self.s.phase != Phase::WaitingPromotion {
                    self.set_phase(Phase::WaitingPromotion);
                    self.event(
                        Severity::Normal,
                        format!("Analysis of {} passed; {why}", self.target()),
                    );
                } else {
                    self.s.message = why;
                }
            }
        }
    }

    fn promote(&mut self) {
        self.actions.push(Action::PromotePrimary);
        self.set_phase(Phase::Promoting);
        self.s.stalled_since = None;
        self.s.last_step = Some(self.now);
        self.event(
            Severity::Normal,
            format!("Copying {0} template to {0}-primary", self.target()),
        );
    }

    /// Wait for the primary's rollout, then move traffic back to it.
    fn promoting(&mut self) {
        let primary = self.obs.primary;
        if !primary.meets(self.spec.primary_ready_threshold) {
            return self.stalled(format!(
                "{}-primary rollout not finished: {primary}",
                self.target()
            ));
        }
        self.s.stalled_since = None;
        let step = self.spec.step_weight_promotion.unwrap_or(100);
        if step < self.s.canary_weight {
            // Progressive promotion: one step back to the primary per interval.
            if !step_due(&self.s, self.spec, self.now) {
                return;
            }
            self.s.last_step = Some(self.now);
        }
        let canary = self.s.canary_weight.saturating_sub(step);
        self.set_routes(canary, None, false);
        if canary == 0 {
            self.set_phase(Phase::Finalising);
            self.event(
                Severity::Normal,
                format!("Routing all traffic to {}-primary", self.target()),
            );
        } else {
            self.event(
                Severity::Normal,
                format!(
                    "Promoting {}: primary weight {}%",
                    self.target(),
                    100 - canary
                ),
            );
        }
    }

    fn finalising(&mut self) {
        self.actions.push(Action::ScaleCanary { up: false });
        self.actions.push(Action::RunHooks {
            gate: HookGate::PostRollout,
        });
        self.s.promoted_revision = self.s.revision.clone();
        self.set_phase(Phase::Succeeded);
        self.event(
            Severity::Normal,
            format!("Promotion completed! Scaling down {}", self.target()),
        );
    }

    fn rollback(&mut self, why: String) {
        self.set_routes(0, None, false);
        self.actions.push(Action::ScaleCanary { up: false });
        self.actions.push(Action::RunHooks {
            gate: HookGate::PostRollout,
        });
        self.set_phase(Phase::Failed);
        self.s.stalled_since = None;
        self.event(
            Severity::Warning,
            format!("Rolling back {}: {why}", self.target()),
        );
    }

    fn terminate(&mut self) {
        match self.s.phase {
            Phase::Terminated => {}
            // The shell has carried out the finalisation asked for on the previous tick.
            Phase::Terminating => self.set_phase(Phase::Terminated),
            _ => {
                self.s.canary_weight = 0;
                self.s.mirror = None;
                self.s.matched = false;
                self.actions.push(Action::Finalize {
                    revert: self.spec.revert_on_deletion,
                });
                self.set_phase(Phase::Terminating);
                let restored = if self.spec.revert_on_deletion {
                    " and the original workload restored"
                } else {
                    ""
                };
                self.event(
                    Severity::Normal,
                    format!(
                        "Canary deleted: routing restored to {}-primary{restored}",
                        self.target()
                    ),
                );
            }
        }
    }
}
