//! Carrying out the core's actions on the cluster: the primary, the Services, the HPA, the
//! routes, hooks and Events, and the clean-up when a Canary goes.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::super::Result;
use super::super::workloads;
use super::problems::event_reason;
use super::tick::Tick;
use crate::rollout::{Action, HookOutcome, Phase, RolloutState};
use crate::router::Routes;
use crate::routes::service_names;
use crate::spec::{HookGate, RolloutSpec};

impl Tick<'_> {
    /// Puts routes edited by hand (or deleted) back to what the state says they are.
    pub(super) async fn restore_drifted_routes(&self, state: &RolloutState) -> Result<()> {
        if matches!(state.phase, Phase::Terminating | Phase::Terminated) {
            return Ok(());
        }
        let want = Routes {
            primary: state.primary_weight(),
            canary: state.canary_weight,
            mirror: state.mirror,
            matched: state.matched,
        };
        let found = self
            .ctx
            .routing
            .get_routes(self.provider()?, self.canary)
            .await;
        let found = match found {
            Ok(found) if found == want => return Ok(()),
            Ok(found) => found.to_string(),
            Err(e) => format!("unreadable ({e})"),
        };
        let message = format!(
            "routes of {} differ from the recorded state (found {found}: edited by hand, or left \
             by an interrupted reconcile); restored to {want}",
            service_names(self.canary).apex
        );
        self.publish(EventType::Warning, "RoutesRestored", &message)
            .await?;
        self.set_routes(want).await
    }

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
        msg: &str,
    ) {
        let revision = state.revision.clone().unwrap_or_default();
        let message = (gate == HookGate::Event).then(|| msg.to_string());
        for hook in spec.hooks(gate) {
            let call = self.hook_call(gate, state, &revision, message.clone());
            if let HookOutcome::Failed(why) = self.ctx.observer.call_hook(hook, &call).await {
                warn!(hook = %hook.name, %gate, %why, "webhook failed");
            }
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
            Action::InitializePrimary => self.initialize(target).await,
            Action::ScaleCanary { up } => {
                let replicas = if up {
                    self.canary_replicas(primary).await?
                } else {
                    0
                };
                self.workloads.scale(&spec.target, replicas).await
            }
            Action::SetRoutes {
                primary,
                canary,
                mirror,
                matched,
            } => {
                self.set_routes(Routes {
                    primary,
                    canary,
                    mirror,
                    matched,
                })
                .await
            }
            Action::PromotePrimary => {
                let replicas = primary
                    .and_then(|p| p.spec.as_ref())
                    .and_then(|s| s.replicas);
                self.apply_primary(target, replicas).await?;
                self.sync_autoscaler().await
            }
            Action::RunHooks { gate } => {
                self.notify(spec, gate, next, "").await;
                Ok(())
            }
            Action::Event { severity, message } => {
                let (type_, reason) = event_reason(severity, next.phase);
                self.publish(type_, reason, &message).await?;
                self.notify(spec, HookGate::Event, next, &message).await;
                Ok(())
            }
            Action::Finalize { revert } => self.finalize(revert, Some(target), primary).await,
        }
    }

    /// Deletion when the target itself is gone: only routing and events remain to do.
    pub(super) async fn carry_out_without_target(
        &self,
        action: Action,
        next: &RolloutState,
    ) -> Result<()> {
        match action {
            Action::Event { severity, message } => {
                let (type_, reason) = event_reason(severity, next.phase);
                self.publish(type_, reason, &message).await
            }
            Action::Finalize { revert } => self.finalize(revert, None, None).await,
            Action::SetRoutes { .. } => self.set_routes(Routes::PRIMARY_ONLY).await,
            _ => Ok(()),
        }
    }

    /// The primary, the Services, the primary's HPA and the routes (all to the primary).
    pub(super) async fn initialize(&self, target: &Deployment) -> Result<()> {
        let replicas = target
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .filter(|r| *r > 0)
            .or(Some(1));
        self.apply_primary(target, replicas).await?;
        // The selector was checked before the core ran.
        let selector = workloads::selector_labels(target).unwrap_or_default();
        for svc in workloads::services(self.canary, &selector) {
            self.workloads.apply_service(&svc).await?;
        }
        self.sync_autoscaler().await?;
        self.ctx
            .routing
            .reconcile(self.provider()?, self.canary)
            .await
            .map_err(|m| self.route_error(m))
    }

    pub(super) async fn apply_primary(
        &self,
        target: &Deployment,
        replicas: Option<i32>,
    ) -> Result<()> {
        match workloads::primary_deployment(self.canary, target, replicas) {
            Ok(dep) => self.workloads.apply_deployment(&dep).await,
            // Checked before the core ran; a target edited since is caught on the next tick.
            Err(p) => {
                warn!(problem = %p, "primary not written");
                Ok(())
            }
        }
    }

    pub(super) async fn target_hpa(&self) -> Result<Option<HorizontalPodAutoscaler>> {
        match &self.canary.spec.autoscaler_ref {
            Some(r) => self.workloads.hpa(&r.name).await,
            None => Ok(None),
        }
    }

    /// Keeps `<hpa>-primary` in step with the HPA on the target; writes only a difference.
    pub(super) async fn sync_autoscaler(&self) -> Result<()> {
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
        let from_hpa = self
            .target_hpa()
            .await?
            .and_then(|h| h.spec)
            .and_then(|s| s.min_replicas);
        let from_primary = primary
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.replicas);
        Ok(from_hpa.or(from_primary).unwrap_or(1).max(1))
    }

    pub(super) async fn finalize(
        &self,
        revert: bool,
        target: Option<&Deployment>,
        primary: Option<&Deployment>,
    ) -> Result<()> {
        self.ctx
            .routing
            .finalize(self.provider()?, self.canary)
            .await
            .map_err(|m| self.route_error(m))?;
        let Some(target) = target.filter(|_| revert) else {
            return Ok(());
        };
        // Restore the original workload: the target serves again, the apex Service selects it,
        // and the primary goes.
        let replicas = primary
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(1);
        self.workloads
            .scale(&self.canary.spec.target_ref.name, replicas)
            .await?;
        if let Ok(selector) = workloads::selector_labels(target) {
            let mut apex = workloads::services(self.canary, &selector).remove(0);
            if let Some(spec) = apex.spec.as_mut() {
                spec.selector = Some(selector);
            }
            self.workloads.apply_service(&apex).await?;
        }
        if let Some(r) = &self.canary.spec.autoscaler_ref {
            self.workloads
                .delete_hpa(&workloads::primary_name(&r.name))
                .await?;
        }
        self.workloads
            .delete_deployment(&workloads::primary_name(&self.canary.spec.target_ref.name))
            .await
    }
}
