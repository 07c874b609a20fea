//! One reconcile of one Canary: read the recorded state, check the input, observe, call the pure
//! core, carry out its actions, record the new state.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;

use super::super::canaries::CanaryApi;
use super::super::config_copies::{self, Configs, Tracked};
use super::super::scaled_objects::ScaledObjects;
use super::super::workloads::{self, TargetKind, WorkloadProblem, Workloads};
use super::super::{COMMAND_ANNOTATION, Error, Result, status};
use super::Context;
use super::problems::Problem;
use crate::rollout::{
    Action, Command, Millis, Observation, Phase, RolloutState, advance, next_analysis,
};
use crate::router::Routes;
use crate::routes::{Provider, UnknownProvider};
use crate::spec::{
    Canary, RolloutSpec, ValidationErrors, unroutable_by, unused_autoscaler, validate,
};

/// One reconcile of one Canary.
pub(super) struct Tick<'a> {
    pub(super) canary: &'a Canary,
    pub(super) ctx: &'a Context,
    pub(super) namespace: String,
    pub(super) name: String,
    /// `spec.provider`, or the controller's default; unknown names fail every routing call.
    pub(super) provider: std::result::Result<Provider, UnknownProvider>,
    pub(super) api: CanaryApi,
    pub(super) workloads: Workloads,
    pub(super) scaled_objects: ScaledObjects,
    pub(super) configs: Configs,
    /// The tracked configs of the target's pod template, read once a tick.
    tracked: tokio::sync::OnceCell<Tracked>,
    pub(super) now: Millis,
    /// For `fledge_canary_duration_seconds`.
    started: std::time::Instant,
}

impl<'a> Tick<'a> {
    pub(super) fn new(canary: &'a Canary, ctx: &'a Context) -> Result<Self> {
        let namespace = canary.namespace().ok_or(Error::Unnamed("namespace"))?;
        let name = canary.metadata.name.clone().ok_or(Error::Unnamed("name"))?;
        let provider = match canary.spec.provider.as_deref().filter(|p| !p.is_empty()) {
            Some(name) => name.parse(),
            None => Ok(ctx.config.default_provider),
        };
        // Another kind is reported by `apply` before any workload is read.
        let kind = TargetKind::of(&canary.spec.target_ref.kind).unwrap_or_default();
        Ok(Tick {
            canary,
            ctx,
            api: CanaryApi::of(ctx.client.clone(), &namespace, canary),
            workloads: Workloads::new(ctx.client.clone(), &namespace, kind),
            scaled_objects: ScaledObjects::new(ctx.client.clone(), &namespace),
            configs: Configs::new(ctx.client.clone(), &namespace),
            tracked: tokio::sync::OnceCell::new(),
            now: (ctx.clock)(),
            started: std::time::Instant::now(),
            namespace,
            name,
            provider,
        })
    }

    /// The tracked configs of `target`'s pod template (the tick's one target), as read now.
    pub(super) async fn target_configs(&self, target: &Deployment) -> Result<&Tracked> {
        let spec = target.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        self.tracked
            .get_or_try_init(|| self.configs.tracked(spec))
            .await
    }

    /// The target's revision: its pod template's and its tracked configs' content.
    pub(super) async fn target_revision(&self, target: &Deployment) -> Result<String> {
        let tracked = self.target_configs(target).await?;
        Ok(config_copies::revision(target, tracked))
    }

    pub(super) async fn apply(&self) -> Result<Requeue> {
        let spec = match validate(&self.canary.spec) {
            Ok(spec) => spec,
            Err(e) => return self.report(Problem::InvalidSpec(e.to_string())).await,
        };
        // Validation checked an explicit provider; the default one is checked here.
        let unroutable = unroutable_by(&self.canary.spec, &spec, self.provider()?);
        if !unroutable.is_empty() {
            let e = ValidationErrors(unroutable).to_string();
            return self.report(Problem::InvalidSpec(e)).await;
        }
        let state = match status::recorded_state(self.canary.status.as_ref()) {
            Ok(state) => state.unwrap_or_default(),
            Err(e) => return self.report(Problem::UnreadableState(e)).await,
        };
        // Said once more than needed at worst (the first reconcile only holds the Canary).
        if state.revision.is_none()
            && let Some(unused) = unused_autoscaler(&self.canary.spec)
        {
            let message = unused.to_string();
            self.publish(EventType::Warning, "AutoscalerNotUsed", &message)
                .await;
        }
        let kind = &self.canary.spec.target_ref.kind;
        if TargetKind::of(kind).is_none() {
            let problem = WorkloadProblem::UnsupportedKind {
                target: spec.target.clone(),
                kind: kind.clone(),
            };
            return self.report(Problem::Workload(problem)).await;
        }
        let Some(target) = self.workloads.deployment(&spec.target).await? else {
            // Never leave traffic on a canary that has gone.
            if state.canary_weight > 0 || state.mirror.is_some() || state.matched {
                self.set_routes(Routes::PRIMARY_ONLY).await?;
            }
            return self
                .report(Problem::TargetNotFound(format!(
                    "{} {}",
                    self.workloads.kind().name(),
                    spec.target
                )))
                .await;
        };
        if let Err(p) = workloads::selector_labels(&target).and(workloads::rolls_on_update(&target))
        {
            return self.report(Problem::Workload(p)).await;
        }
        let command = match self.command() {
            Ok(c) => c,
            Err(p) => {
                self.clear_command().await?;
                return self.report(p).await;
            }
        };
        if !self.held() {
            // Before the first write a deletion would have to undo; the update wakes us again.
            self.hold().await?;
            return Ok(Requeue::await_change());
        }
        let primary_name = workloads::primary_name(&spec.target);
        let mut primary = self.workloads.deployment(&primary_name).await?;
        // Repairs, once initialisation has begun; none while the rollout is suspended.
        if state.revision.is_some() && !spec.suspend {
            let (kept, recreated) = match self.keep_primary(&state, &target, primary).await? {
                Ok(kept) => kept,
                Err(problem) => return self.report(problem).await,
            };
            primary = kept;
            // The apex Service and the routes move to the primary once it is ready, with the
            // core's first `SetRoutes` (see `carry_out`).
            let routed = state.phase != Phase::Initializing;
            let mut put_back: Vec<String> = recreated.into_iter().collect();
            put_back.extend(
                self.keep_services(&target, primary.as_ref(), routed)
                    .await?,
            );
            if !put_back.is_empty() {
                return self.report(Problem::PutBack(put_back)).await;
            }
            if routed {
                self.reconcile_routing().await?;
                self.restore_drifted_routes(&state, &spec).await?;
            }
            self.sync_autoscaler().await?;
        }
        let obs = self
            .observe(&state, &spec, &target, primary.as_ref(), command)
            .await?;
        let (mut next, actions) = decide(&state, &spec, &obs, self.now).await;
        let alerts = crate::alerts::decided(self.canary, &spec, &state, &next, &obs);
        let mut template = self.primary_template();
        let targets = target.spec.as_ref().map(|s| &s.template);
        for action in actions {
            template = match action {
                Action::InitializePrimary => {
                    self.onboarded_template(&target, primary.as_ref()).await?
                }
                Action::PromotePrimary => targets,
                _ => template,
            };
            self.carry_out(action, &spec, &next, &target, primary.as_ref())
                .await?;
        }
        // Onboarding kept a primary running another template than the target's (a status lost
        // mid-rollout): the target's revision was never analysed, so the one recorded is the
        // primary's, which no target revision equals, and the next tick rolls the target out.
        if next.phase == Phase::Initialized
            && state.phase != Phase::Initialized
            && template != targets
            && let Some(primary) = &primary
        {
            let kept = Some(format!("{}-primary", workloads::revision(primary)));
            next.promoted_revision.clone_from(&kept);
            next.revision = kept;
        }
        let kind = &self.canary.spec.target_ref.kind;
        let replicas = self.primary_replicas(primary.as_ref());
        let new = status::status_of(&next, kind, template, replicas);
        status::write(&self.api, self.canary, &new).await?;
        // Once the decision is recorded: a failed write retries the tick, not the alert.
        self.ctx.alerts.send(self.canary, &next, self.now, alerts);
        if command.is_some_and(|c| command_used(c, &state, &next)) {
            self.clear_command().await?;
        }
        let key = (self.namespace.as_str(), self.name.as_str());
        let took = self.started.elapsed();
        (self.ctx.metrics).record_canary(key, &spec, &state, &next, took);
        Ok(Requeue::requeue(self.requeue_after(&next, &spec)))
    }

    pub(super) fn command(&self) -> Result<Option<Command>, Problem> {
        match self
            .canary
            .annotations()
            .get(COMMAND_ANNOTATION)
            .map(|s| s.trim())
        {
            None | Some("") => Ok(None),
            Some("promote" | "approve") => Ok(Some(Command::Approve)),
            Some("abort") => Ok(Some(Command::Abort)),
            Some(other) => Err(Problem::UnknownCommand(other.to_string())),
        }
    }

    pub(super) async fn clear_command(&self) -> Result<()> {
        self.merge_into_canary(
            &serde_json::json!({"metadata": {"annotations": {COMMAND_ANNOTATION: null}}}),
        )
        .await
    }

    /// A JSON merge patch of the Canary itself (metadata the controller keeps there).
    pub(super) async fn merge_into_canary(&self, body: &serde_json::Value) -> Result<()> {
        self.api.merge(&self.name, body).await
    }

    pub(super) fn route_error(&self, message: String) -> Error {
        let provider = match &self.provider {
            Ok(p) => p.to_string(),
            Err(e) => e.0.clone(),
        };
        Error::Route { provider, message }
    }

    pub(super) fn provider(&self) -> Result<Provider> {
        self.provider
            .clone()
            .map_err(|e| self.route_error(e.to_string()))
    }

    pub(super) fn requeue_after(&self, state: &RolloutState, spec: &RolloutSpec) -> Duration {
        requeue_after(state, spec, self.now, self.ctx.config.poll)
    }
}

/// When to look at a rollout again after a tick at `now`: the next step or look while it
/// progresses, `poll` (at most the interval) while it waits on workloads or gates. Shared with
/// the standalone controller ([`crate::local`]), which paces its ticks the same way.
pub(crate) fn requeue_after(
    state: &RolloutState,
    spec: &RolloutSpec,
    now: Millis,
    poll: Duration,
) -> Duration {
    let interval = Duration::from_millis(spec.interval.millis());
    let poll = poll.min(interval);
    let waiting = state.message.starts_with("waiting");
    match state.phase {
        // The next step, or the statistical judge's next look in between.
        Phase::Progressing if !waiting => match next_analysis(state, spec) {
            Some(due) => Duration::from_millis(due.saturating_sub(now))
                .clamp(poll.min(Duration::from_secs(1)), interval),
            None => poll,
        },
        // Onboarding scales the target down on the next tick.
        Phase::Initialized if state.scale_down_pending => poll,
        Phase::Initialized | Phase::Succeeded | Phase::Failed => interval,
        _ => poll,
    }
}

/// Whether a command has done its work and can be cleared. An approval sent between two steps
/// waits for the gate it opens; one sent when no rollout is under way is dropped.
fn command_used(command: Command, before: &RolloutState, after: &RolloutState) -> bool {
    let changed = before.phase != after.phase
        || before.canary_weight != after.canary_weight
        || before.mirror != after.mirror
        || before.iterations != after.iterations;
    command == Command::Abort || changed || !before.phase.is_active()
}

/// The core's decision, on a blocking thread: the forecast a rollout makes of itself at low
/// traffic runs dozens of modelled rollouts (up to a second or more), which must not hold an
/// async worker that other Canaries' reconciles and the lease renewal share. A panic in the
/// core is carried on as it would be inline; a task the runtime cancelled (at shutdown) is
/// decided inline.
async fn decide(
    state: &RolloutState,
    spec: &RolloutSpec,
    obs: &Observation,
    now: Millis,
) -> (RolloutState, Vec<Action>) {
    let (s, sp, o) = (state.clone(), spec.clone(), obs.clone());
    match tokio::task::spawn_blocking(move || advance(&s, &sp, &o, now)).await {
        Ok(decided) => decided,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => advance(state, spec, obs, now),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn an_approval_is_kept_until_the_rollout_moves_and_an_abort_is_used_at_once() {
        let at = |phase, canary_weight| RolloutState {
            phase,
            canary_weight,
            ..RolloutState::default()
        };
        let waiting = at(Phase::Progressing, 10);
        assert!(!command_used(Command::Approve, &waiting, &waiting));
        assert!(command_used(
            Command::Approve,
            &waiting,
            &at(Phase::Progressing, 20)
        ));
        assert!(command_used(Command::Abort, &waiting, &waiting));
        let idle = at(Phase::Succeeded, 0);
        assert!(command_used(Command::Approve, &idle, &idle));
    }
}
