//! Carrying out the core's actions on the cluster: the primary, the Services, the HPA, the
//! routes, hooks and Events, and the clean-up when a Canary goes.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::super::Result;
use super::super::providers::Observer;
use super::super::{scaled_objects, workloads};
use super::observing::Asked;
use super::problems::event_reason;
use super::take_over::same_template;
use super::tick::Tick;
use crate::rollout::{Action, HookOutcome, Phase, RolloutState, Severity};
use crate::router::Routes;
use crate::routes;
use crate::spec::{HookGate, RolloutSpec, validate};
use crate::webhook::HookEvent;

impl Tick<'_> {
    pub(super) async fn set_routes(&self, weights: Routes) -> Result<()> {
        self.ctx
            .routing
            .set_routes(self.provider()?, self.canary, weights)
            .await
            .map_err(|m| self.route_error(m))
    }

    /// Calls every hook of `gate`; their answers change nothing (post-rollout, event).
    pub(super) async fn notify(
        &self,
        spec: &RolloutSpec,
        gate: HookGate,
        state: &RolloutState,
        event: Option<(Severity, &str)>,
    ) {
        let revision = state.revision.clone().unwrap_or_default();
        let asked = Asked {
            name: &self.name,
            namespace: &self.namespace,
            state,
            revision: &revision,
        };
        for (hook, why) in notify(&*self.ctx.observer, spec, gate, &asked, event).await {
            warn!(%hook, %gate, %why, "webhook failed");
        }
    }

    pub(super) async fn carry_out(
        &self,
        action: Action,
        spec: &RolloutSpec,
        next: &RolloutState,
        target: &Deployment,
        primary: Option<&Deployment>,
    ) -> Result<()> {
        info!(?action, "carrying out");
        match action {
            Action::InitializePrimary => self.initialize(target, primary).await,
            Action::ScaleCanary { up } => {
                let replicas = if up {
                    self.pause_target_scaler(false).await?;
                    self.canary_replicas(primary).await?
                } else {
                    0
                };
                self.workloads.scale(&spec.target, replicas).await?;
                if !up {
                    self.pause_target_scaler(true).await?;
                }
                Ok(())
            }
            Action::SetRoutes {
                primary: to_primary,
                canary,
                mirror,
                matched,
            } => {
                // Only onboarding ends in `Initialized`: the primary is ready, traffic moves.
                if next.phase == Phase::Initialized {
                    self.route_to_primary(target, primary).await?;
                }
                // The routes carry the session cookies of the state this tick records.
                let with_cookies = routes::with_cookies(self.canary, &next.cookies);
                let routes = Routes {
                    primary: to_primary,
                    canary,
                    mirror,
                    matched,
                };
                self.ctx
                    .routing
                    .set_routes(self.provider()?, &with_cookies, routes)
                    .await
                    .map_err(|m| self.route_error(m))
            }
            Action::PromotePrimary => {
                let replicas = primary
                    .and_then(|p| p.spec.as_ref())
                    .and_then(|s| s.replicas);
                self.apply_primary(target, primary, replicas).await?;
                self.sync_autoscaler().await
            }
            Action::RunHooks { gate } => {
                self.notify(spec, gate, next, None).await;
                Ok(())
            }
            Action::Event {
                severity,
                message,
                reason,
            } => {
                let (type_, reason) = event_reason(severity, next.phase, reason);
                self.publish_in(type_, reason, &message, Some(next)).await;
                self.notify(spec, HookGate::Event, next, Some((severity, &message)))
                    .await;
                Ok(())
            }
            // Only a deleted Canary is finalised; its cleanup carries this action out itself,
            // for it may have to wait for the target.
            Action::Finalize { revert } => {
                self.finalize(revert, Some(target), primary).await.map(drop)
            }
        }
    }

    /// Deletion when the target itself is gone: only routing and events remain to do.
    pub(super) async fn carry_out_without_target(
        &self,
        action: Action,
        next: &RolloutState,
    ) -> Result<()> {
        match action {
            Action::Event {
                severity,
                message,
                reason,
            } => {
                let (type_, reason) = event_reason(severity, next.phase, reason);
                self.publish(type_, reason, &message).await;
                Ok(())
            }
            Action::Finalize { revert } => self.finalize(revert, None, None).await.map(drop),
            Action::SetRoutes { .. } => self.set_routes(Routes::PRIMARY_ONLY).await,
            _ => Ok(()),
        }
    }

    /// The primary, its HPA and the `-primary` and `-canary` Services. The apex Service and the
    /// routes wait for the primary to be ready ([`Tick::keep_services`]), so that traffic keeps
    /// reaching the original pods until then. A primary that exists already (a Canary whose
    /// status was lost, onboarded again) serves all traffic and is left as it is, its size and
    /// its revision (the target's may be unanalysed), as Flagger builds the primary only when it
    /// is not found; the Services and the HPA are written as every tick's repairs write them.
    pub(super) async fn initialize(
        &self,
        target: &Deployment,
        primary: Option<&Deployment>,
    ) -> Result<()> {
        if primary.is_none() {
            let replicas = target
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .filter(|r| *r > 0)
                .or(Some(1));
            self.apply_primary(target, None, replicas).await?;
        }
        for svc in self.desired_services(target, primary).into_iter().skip(1) {
            self.workloads.apply_service(&svc).await?;
        }
        self.sync_autoscaler().await
    }

    /// The pod template to record as the primary's after onboarding: the target's, unless an
    /// existing primary kept by [`Tick::initialize`] runs another one (then its own, so that a
    /// repair never recreates it from the unanalysed target, and the target is rolled out
    /// next). Comparing keeps the record, and so the writes, of an onboarding resumed after a
    /// restart the same as of one that was not. A primary Flagger built (a Flagger Canary it
    /// left `Initializing`) runs the target's template in Flagger's shape: compared as
    /// take-over compares it ([`same_template`]), so that an unchanged target is not rolled out.
    pub(super) async fn onboarded_template<'t>(
        &self,
        target: &'t Deployment,
        primary: Option<&'t Deployment>,
    ) -> Result<Option<&'t PodTemplateSpec>> {
        let targets = target.spec.as_ref().map(|s| &s.template);
        let (Some(primary), Some(own)) = (
            primary,
            primary.and_then(|p| p.spec.as_ref()).map(|s| &s.template),
        ) else {
            return Ok(targets);
        };
        let tracked = self.target_configs(target).await?;
        let cloned =
            workloads::primary_deployment(self.canary, target, Some(primary), None, tracked)
                .ok()
                .and_then(|d| d.spec)
                .map(|s| s.template);
        if cloned.as_ref() == Some(own) {
            return Ok(targets);
        }
        // The configs' copies too: Flagger copies them with the template.
        let flaggers =
            same_template(target, primary) && self.configs.copies_current(tracked).await?;
        Ok(if flaggers { targets } else { Some(own) })
    }

    pub(super) async fn apply_primary(
        &self,
        target: &Deployment,
        live: Option<&Deployment>,
        replicas: Option<i32>,
    ) -> Result<()> {
        let tracked = self.target_configs(target).await?;
        match workloads::primary_deployment(self.canary, target, live, replicas, tracked) {
            Ok(dep) => {
                // The copies first: the primary's new pods read them.
                self.configs.write_copies(self.canary, tracked).await?;
                self.workloads.apply_deployment(&dep).await
            }
            // Checked before the core ran; a target edited since is caught on the next tick.
            Err(p) => {
                warn!(problem = %p, "primary not written");
                Ok(())
            }
        }
    }

    pub(super) async fn target_hpa(&self) -> Result<Option<HorizontalPodAutoscaler>> {
        match self.canary.spec.scaled_by() {
            Some(r) if r.kind != scaled_objects::KIND => self.workloads.hpa(&r.name).await,
            _ => Ok(None),
        }
    }

    /// The target's ScaledObject's name, when its autoscaler is one.
    fn target_scaled_object(&self) -> Option<&str> {
        let r = self.canary.spec.scaled_by()?;
        (r.kind == scaled_objects::KIND).then_some(r.name.as_str())
    }

    /// Pauses the target's ScaledObject at zero while the canary is scaled down (KEDA would
    /// scale it up again), or lifts the pause; nothing without a ScaledObject.
    pub(super) async fn pause_target_scaler(&self, paused: bool) -> Result<()> {
        match self.target_scaled_object() {
            Some(name) => self.scaled_objects.pause(name, paused).await,
            None => Ok(()),
        }
    }

    /// Keeps `<hpa>-primary` (or `<scaledobject>-primary`) in step with the target's
    /// autoscaler; writes only a difference.
    pub(super) async fn sync_autoscaler(&self) -> Result<()> {
        if let Some(name) = self.target_scaled_object() {
            return self.scaled_objects.sync(self.canary, name).await;
        }
        let Some(hpa) = self.target_hpa().await? else {
            return Ok(());
        };
        let desired = workloads::primary_hpa(self.canary, &hpa);
        let name = desired.metadata.name.clone().unwrap_or_default();
        if let Some(current) = self.workloads.hpa(&name).await?
            && current.spec == desired.spec
        {
            return Ok(());
        }
        self.workloads.apply_hpa(&desired).await
    }

    /// The canary's size while analysed: its HPA's minimum, else the primary's size.
    pub(super) async fn canary_replicas(&self, primary: Option<&Deployment>) -> Result<i32> {
        let from_hpa = match self.target_scaled_object() {
            Some(name) => self.scaled_objects.min_replicas(name).await?,
            None => self
                .target_hpa()
                .await?
                .and_then(|h| h.spec)
                .and_then(|s| s.min_replicas),
        };
        let from_primary = primary
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.replicas);
        Ok(from_hpa.or(from_primary).unwrap_or(1).max(1))
    }

    /// The Canary goes. Whatever `revert` says, the target (scaled to zero at onboarding) is
    /// scaled up and, only once it is ready, the routes and a user's apex Service move back:
    /// the primary goes with the Canary. With `revert`, Fledge's own apex Service and routing
    /// objects are handed to the user pointing at the target and the primary is deleted;
    /// without, they are left to the garbage collector (as Flagger does). Returns `Ok(false)`
    /// while waiting for the target.
    pub(super) async fn finalize(
        &self,
        revert: bool,
        target: Option<&Deployment>,
        primary: Option<&Deployment>,
    ) -> Result<bool> {
        if let Some(target) = target
            && !self.target_serves(target, primary).await?
        {
            let Some(waited) = self.waited_past_deadline() else {
                return Ok(false);
            };
            self.keep_primary_serving(waited).await?;
            return Ok(true);
        }
        // The apex Service first: a mesh route is then deleted only once the apex selects
        // the workload that serves.
        let revert = revert && target.is_some();
        self.give_back_apex(revert, target).await?;
        self.ctx
            .routing
            .finalize(self.provider()?, self.canary)
            .await
            .map_err(|m| self.route_error(m))?;
        if revert {
            if let Some(name) = self.target_scaled_object() {
                let primary = workloads::primary_name(name);
                self.scaled_objects.delete(&primary).await?;
            } else if let Some(r) = self.canary.spec.scaled_by() {
                self.workloads
                    .delete_hpa(&workloads::primary_name(&r.name))
                    .await?;
            }
            self.workloads
                .delete_deployment(&workloads::primary_name(&self.canary.spec.target_ref.name))
                .await?;
        }
        Ok(true)
    }

    /// Whether the target serves as the primary did: scaled to the primary's replicas (scaled
    /// here if not) and ready.
    async fn target_serves(
        &self,
        target: &Deployment,
        primary: Option<&Deployment>,
    ) -> Result<bool> {
        let replicas = primary
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(1);
        let current = target.spec.as_ref().and_then(|s| s.replicas);
        if current.is_none_or(|c| c < replicas) {
            // The target serves again: its ScaledObject scales it from now on.
            self.pause_target_scaler(false).await?;
            self.workloads
                .scale(&self.canary.spec.target_ref.name, replicas)
                .await?;
            return Ok(false);
        }
        let threshold = validate(&self.canary.spec)
            .map(|s| s.canary_ready_threshold)
            .unwrap_or(100);
        Ok(workloads::readiness(target).meets(threshold))
    }

    /// How long since the Canary was deleted, once that is past the progress deadline.
    fn waited_past_deadline(&self) -> Option<Duration> {
        let deleted = self.canary.metadata.deletion_timestamp.as_ref()?;
        let since = u64::try_from(deleted.0.as_millisecond()).ok()?;
        let deadline = validate(&self.canary.spec)
            .map(|s| s.progress_deadline.millis())
            .unwrap_or(600_000);
        let waited = self.now.saturating_sub(since);
        (waited >= deadline).then(|| Duration::from_millis(waited))
    }

    /// The target never became ready after the deletion: rather than wait forever (the
    /// Canary undeletable) or point traffic at it, the primary keeps serving on its own. It,
    /// its Service and the apex Service lose their owner reference (the garbage collector
    /// would take them with the Canary), the routes go back to the primary (a user's routing
    /// objects get their own spec back) and a user's apex Service keeps selecting the primary.
    async fn keep_primary_serving(&self, waited: Duration) -> Result<()> {
        let target = &self.canary.spec.target_ref.name;
        let primary = workloads::primary_name(target);
        let disown = serde_json::json!({"metadata": {"ownerReferences": null}});
        if self.workloads.deployment(&primary).await?.is_some() {
            self.workloads.merge_deployment(&primary, &disown).await?;
        }
        let names = crate::routes::service_names(self.canary);
        for name in [names.apex, names.primary] {
            let owned = self
                .workloads
                .service(&name)
                .await?
                .is_some_and(|s| !s.metadata.owner_references.unwrap_or_default().is_empty());
            if owned {
                self.workloads.merge_service(&name, &disown).await?;
            }
        }
        self.ctx
            .routing
            .finalize(self.provider()?, self.canary)
            .await
            .map_err(|m| self.route_error(m))?;
        let message = format!(
            "Canary deleted: {target} was not ready {}s after the deletion (progress deadline); \
             {primary} keeps serving and is no longer owned by the Canary: delete it (and its \
             Service) once {target} serves",
            waited.as_secs()
        );
        self.publish(EventType::Warning, "TargetNotReady", &message)
            .await;
        Ok(())
    }
}

/// Calls every hook of `gate` (post-rollout, event: their answers change nothing; an event
/// hook is told `event`) and returns those that failed, by name, with why. Shared with the
/// standalone controller, which reports the failures its own way.
pub(crate) async fn notify(
    observer: &dyn Observer,
    spec: &RolloutSpec,
    gate: HookGate,
    asked: &Asked<'_>,
    event: Option<(Severity, &str)>,
) -> Vec<(String, String)> {
    let event = event
        .filter(|_| gate == HookGate::Event)
        .map(|(severity, message)| HookEvent {
            message: message.to_string(),
            warning: severity == Severity::Warning,
        });
    let mut failed = Vec::new();
    for hook in spec.hooks(gate) {
        if let HookOutcome::Failed(why) = observer
            .call_hook(hook, &asked.call(gate, event.clone()))
            .await
        {
            failed.push((hook.name.clone(), why));
        }
    }
    failed
}
