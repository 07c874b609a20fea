//! The finalizer, only where cleanup needs it: a Canary gets it just before the first write its
//! deletion would have to undo (a Canary with a broken spec or a missing target never does, so
//! it can be deleted with no controller running), and loses it once the cleanup is done.
//!
//! The cleanup never cuts the app off: the primary goes with the Canary, so the target is
//! scaled up and ready before anything points at it again. When the recorded state is missing
//! or cannot be read, or the spec no longer validates, the same cleanup runs from what the raw
//! spec still says (the target's name); when even that is missing, the finalizer stays and the Canary is
//! reported `Stalled`, with an Event that says what to fix.

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;
use tracing::info;

use super::super::workloads;
use super::super::{FINALIZER, Result, flagger, status};
use super::problems::Problem;
use super::tick::Tick;
use crate::rollout::{Action, Observation, Phase, advance};
use crate::spec::{Canary, validate};

impl Tick<'_> {
    pub(super) fn held(&self) -> bool {
        self.canary.finalizers().iter().any(|f| f == FINALIZER)
    }

    pub(super) async fn hold(&self) -> Result<()> {
        let mut finalizers = self.canary.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        self.set_finalizers(self.canary, finalizers).await
    }

    /// Removes the finalizer from the Canary as it is now (the cleanup has written its status).
    /// On a Flagger Canary taken over, Flagger's own finalizer (`revertOnDeletion`) goes too:
    /// its cleanup is the one just done, and Flagger, scaled down, would hold the Canary forever.
    pub(super) async fn release(&self) -> Result<()> {
        let fresh = self.api.get(&self.name).await?;
        let flaggers = flagger::is_flagger(self.canary).then_some(flagger::FINALIZER);
        let finalizers: Vec<String> = fresh
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER && Some(f.as_str()) != flaggers)
            .cloned()
            .collect();
        self.set_finalizers(&fresh, finalizers).await
    }

    /// The list is written whole with the Canary's `resourceVersion`: a write racing another
    /// one fails with a conflict (and is retried) rather than drop someone else's finalizer.
    async fn set_finalizers(&self, canary: &Canary, finalizers: Vec<String>) -> Result<()> {
        let body = serde_json::json!({
            "metadata": {
                "finalizers": finalizers,
                "resourceVersion": canary.metadata.resource_version,
            }
        });
        self.merge_into_canary(&body).await
    }

    /// The Canary is being deleted: routing goes back to the primary, a user's apex Service is
    /// given back (and, with `revertOnDeletion`, the target restored) before the finalizer is
    /// removed. Returns when to look again while the restored target is not ready yet (or the
    /// cleanup cannot be done), `None` once the finalizer can go.
    pub(super) async fn cleanup(&self) -> Result<Option<Requeue>> {
        let mut state = match status::recorded_state(self.canary.status.as_ref()) {
            Ok(Some(state)) if state.revision.is_some() => state,
            // The finalizer is held only from just before the first write a deletion must
            // undo, so a missing state (a status lost, or an onboarding interrupted before it
            // was recorded) says nothing: as when it is unreadable, what is to undo is read
            // from the cluster, and nothing is found for a Canary that never began.
            Ok(_) => {
                info!("no status.state; cleaning up from the spec");
                return self.cleanup_from_raw_spec().await;
            }
            // Written by another version, or edited: what it recorded is read from the cluster.
            Err(e) => {
                info!(error = %e, "status.state unreadable; cleaning up from the spec");
                return self.cleanup_from_raw_spec().await;
            }
        };
        let Ok(spec) = validate(&self.canary.spec) else {
            // Broken after initialisation: the target's name is all the cleanup needs.
            return self.cleanup_from_raw_spec().await;
        };
        let target = self.workloads.deployment(&spec.target).await?;
        let primary = self
            .workloads
            .deployment(&workloads::primary_name(&spec.target))
            .await?;
        let obs = Observation {
            revision: state.revision.clone().unwrap_or_default(),
            deleting: true,
            ..Observation::default()
        };
        // Terminating carries out the finalisation; the next step records it as Terminated.
        for _ in 0..2 {
            if state.phase == Phase::Terminated {
                break;
            }
            let (next, actions) = advance(&state, &spec, &obs, self.now);
            for action in actions {
                if let Action::Finalize { revert } = action {
                    if !self
                        .finalize(revert, target.as_ref(), primary.as_ref())
                        .await?
                    {
                        return self.wait_for_target(&spec.target, target.as_ref()).await;
                    }
                    continue;
                }
                match &target {
                    Some(t) => {
                        self.carry_out(action, &spec, &next, t, primary.as_ref())
                            .await?
                    }
                    None => self.carry_out_without_target(action, &next).await?,
                }
            }
            state = next;
        }
        let replicas = self.primary_replicas(primary.as_ref());
        let kind = &self.canary.spec.target_ref.kind;
        let new = status::status_of(&state, kind, self.primary_template(), replicas);
        status::write(&self.api, self.canary, &new).await?;
        Ok(None)
    }

    /// The cleanup without a recorded state or a valid spec: the same finalisation as a normal
    /// deletion (the target named in `spec.targetRef.name` scaled up to the primary's size and
    /// waited for, then the apex Service and the routes given back, and with
    /// `revertOnDeletion` the primary removed), each step read from the cluster, so it is
    /// idempotent and a restart resumes it. Without the target's name or a known provider it
    /// cannot be done: the finalizer stays and the Canary is reported stalled.
    async fn cleanup_from_raw_spec(&self) -> Result<Option<Requeue>> {
        let target_name = &self.canary.spec.target_ref.name;
        let mut missing = Vec::new();
        if target_name.trim().is_empty() {
            missing.push("spec.targetRef.name is empty".to_string());
        }
        if let Err(e) = &self.provider {
            missing.push(format!("spec.provider: {e}"));
        }
        if !missing.is_empty() {
            let message = format!(
                "{}\nThe Canary is being deleted and its cleanup needs these fields: the target \
                 is scaled back up before the apex Service and the routes move back to it, for \
                 the primary goes with the Canary. The finalizer {FINALIZER} stays until they \
                 are set back to the Deployment under rollout and its provider (kubectl edit \
                 canary {} -n {}); removing the finalizer by hand instead leaves the app \
                 without pods once the primary is gone.",
                missing.join("\n"),
                self.name,
                self.namespace
            );
            return self.report(Problem::InvalidSpec(message)).await.map(Some);
        }
        let target = self.workloads.deployment(target_name).await?;
        let primary = self
            .workloads
            .deployment(&workloads::primary_name(target_name))
            .await?;
        let revert = self.canary.spec.revert_on_deletion;
        if !self
            .finalize(revert, target.as_ref(), primary.as_ref())
            .await?
        {
            return self.wait_for_target(target_name, target.as_ref()).await;
        }
        Ok(None)
    }

    /// A deletion waits for the target before traffic moves back: said in the status
    /// (the recorded state is left as it is, so the finalisation is asked for again).
    async fn wait_for_target(
        &self,
        target_name: &str,
        target: Option<&Deployment>,
    ) -> Result<Option<Requeue>> {
        let readiness = target.map(workloads::readiness).unwrap_or_default();
        let message = format!(
            "Canary deleted: waiting for {target_name} to be ready ({readiness}) before traffic \
             moves back to it"
        );
        let current = self.canary.status.as_ref();
        status::write(
            &self.api,
            self.canary,
            &status::with_message(current, &message),
        )
        .await?;
        Ok(Some(Requeue::requeue(self.ctx.config.poll)))
    }
}
