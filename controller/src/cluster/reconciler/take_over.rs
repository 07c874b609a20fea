//! Taking a Flagger Canary over: once, before Fledge has recorded any state of its own for it
//! (and again when the record is stale: Flagger ran a rollout since, [`Tick::record_is_stale`]).
//!
//! - Mid-rollout (Flagger's phase is one of [`MID_ROLLOUT`]) nothing is touched: the Canary is
//!   reported `Stalled` with a Warning Event, and looked at again every reconcile, so that it is
//!   taken over once Flagger has finished the rollout.
//! - Just ended (Flagger's phase changed less than [`QUIET_INTERVALS`] intervals ago): left
//!   alone the same way, in case Flagger, still running, starts the next rollout.
//! - Not yet onboarded by Flagger (no phase, or `Initializing`): Fledge onboards it as a new
//!   Canary, which keeps a primary that exists already.
//! - Otherwise the objects Flagger created are adopted ([`Tick::adopt`]) and the state Fledge
//!   would have recorded is written: the revision the primary runs counts as promoted. Whether a
//!   rollout is due is decided by comparing the target's pod template with the primary's, not by
//!   Flagger's `lastAppliedSpec` (a hash Fledge cannot reproduce, left as found).

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::super::config_copies::{self, ConfigKind, ConfigRef};
use super::super::{Error, Result, flagger, status, workloads};
use super::problems::Problem;
use super::tick::Tick;
use crate::rollout::{Millis, Phase, RolloutState};
use crate::router::api_resource;
use crate::routes::service_names;
use crate::spec::validate;

/// Flagger's phases in which a rollout is under way: traffic may be on the canary, or the
/// primary half updated.
pub(super) const MID_ROLLOUT: &[&str] = &[
    "Progressing",
    "WaitingPromotion",
    "Promoting",
    "Finalising",
    "Terminating",
];

/// How many of the Canary's intervals Flagger's last phase must have held before the Canary is
/// taken over: a rollout Flagger has just ended may be followed by another one if Flagger still
/// runs (scaled down late), and two controllers must never drive one Canary.
const QUIET_INTERVALS: u64 = 3;

/// The annotation Flagger gives the primary's pods (a random id, to restart them on promotion).
const FLAGGER_ID: &str = "flagger-id";
/// Annotations Flagger does not copy to the primary.
const TOOLKIT_MARKER: &str = "toolkit.fluxcd.io";

impl Tick<'_> {
    /// Takes a Flagger Canary over when it needs to be; `None` when the reconcile goes on as
    /// for any Canary (a Fledge Canary, one with Fledge's state, or one to onboard afresh).
    pub(super) async fn take_over(&self) -> Result<Option<Requeue>> {
        if !flagger::is_flagger(self.canary) {
            return Ok(None);
        }
        let recorded = self.canary.status.as_ref().and_then(|s| s.state.as_ref());
        if recorded.is_some() && !self.record_is_stale().await? {
            return Ok(None);
        }
        let status = self.canary.status.as_ref();
        let phase = status.map(|s| s.phase.as_str()).unwrap_or_default();
        if MID_ROLLOUT.contains(&phase) {
            let problem = Problem::MidRollout(phase.to_string());
            return self.report(problem).await.map(Some);
        }
        if matches!(phase, "" | "Initializing") {
            return Ok(None);
        }
        // An invalid spec or a missing workload is reported by the reconcile as for any Canary.
        let Ok(spec) = validate(&self.canary.spec) else {
            return Ok(None);
        };
        let ended = status
            .and_then(|s| s.last_transition_time.as_deref())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| u64::try_from(t.timestamp_millis()).ok());
        let quiet = spec.interval.millis().saturating_mul(QUIET_INTERVALS);
        if let Some(ended) = ended
            && self.now < ended.saturating_add(quiet)
        {
            let problem = Problem::JustEnded {
                phase: phase.to_string(),
                ended: status::rfc3339(ended),
                until: status::rfc3339(ended.saturating_add(quiet)),
            };
            return self.report(problem).await.map(Some);
        }
        let Some(target) = self.workloads.deployment(&spec.target).await? else {
            return Ok(None);
        };
        let primary_name = workloads::primary_name(&spec.target);
        let Some(primary) = self.workloads.deployment(&primary_name).await? else {
            return Ok(None);
        };
        if workloads::selector_labels(&target).is_err() {
            return Ok(None);
        }
        let tracked = self.target_configs(&target).await?;
        let adopted = self.adopt(&spec.target, &tracked.refs()).await?;
        let since = ended.unwrap_or(self.now);
        // The configs' copies too: Flagger copies them at promotion.
        let same = same_template(&target, &primary) && self.configs.copies_current(tracked).await?;
        let revision = self.target_revision(&target).await?;
        let state = taken_over_state(phase, revision, &primary, same, since);
        let template: Option<&PodTemplateSpec> = if same {
            target.spec.as_ref().map(|s| &s.template)
        } else {
            primary.spec.as_ref().map(|s| &s.template)
        };
        let replicas = primary.spec.as_ref().and_then(|s| s.replicas);
        let new = status::status_of(&state, template, replicas);
        status::write(&self.api, self.canary, &new).await?;
        let mut message = format!(
            "Taken over from Flagger at phase {phase}: {}",
            state.message
        );
        if !adopted.is_empty() {
            message.push_str(&format!("; adopted {}", adopted.join(", ")));
        }
        info!(%message, "taken over");
        self.publish(EventType::Normal, "TakenOver", &message).await;
        Ok(Some(Requeue::requeue(self.ctx.config.poll)))
    }

    /// Whether Fledge's record on this Flagger Canary is older than the primary: between two of
    /// Fledge's rollouts, the primary runs another pod template than the one recorded as given
    /// to it, so Flagger, run meanwhile, has promoted since (its `lastAppliedSpec` may have come
    /// back to the hash the record was made against: A, B, then A again). During a rollout the
    /// primary may be ahead of the record (a promotion whose status write was cut off), and
    /// the record stands.
    pub(super) async fn record_is_stale(&self) -> Result<bool> {
        let Ok(Some(state)) = status::recorded_state(self.canary.status.as_ref()) else {
            return Ok(false);
        };
        if !matches!(
            state.phase,
            Phase::Initialized | Phase::Succeeded | Phase::Failed
        ) {
            return Ok(false);
        }
        let Some(recorded) = self.primary_template() else {
            return Ok(false);
        };
        let name = &self.canary.spec.target_ref.name;
        let Some(mut source) = self.workloads.deployment(name).await? else {
            return Ok(false);
        };
        let primary_name = workloads::primary_name(name);
        let Some(primary) = self.workloads.deployment(&primary_name).await? else {
            return Ok(false);
        };
        source.spec.get_or_insert_default().template = recorded.clone();
        let stale = !same_template(&source, &primary);
        if stale {
            warn!(%primary_name, "the primary runs another template than Fledge recorded: \
                  Flagger has promoted since; taking over as found");
        }
        Ok(stale)
    }

    /// Makes the Canary the controller of the objects Flagger created for it: an object whose
    /// controlling owner reference is to a Flagger Canary of this name but not to this very
    /// object (another API version, or a Canary deleted and applied again) gets it replaced, in
    /// place (the API server refuses two controllers; nothing is recreated). An object with
    /// another controller or none (a user's) is left as it is. Returns what was adopted.
    pub(super) async fn adopt(
        &self,
        target: &str,
        configs: &BTreeSet<ConfigRef>,
    ) -> Result<Vec<String>> {
        let Some(ours) = flagger::owner_reference(self.canary) else {
            return Ok(Vec::new());
        };
        let names = service_names(self.canary);
        let mut objects: Vec<(ApiResource, String)> = vec![(
            ApiResource::erase::<Deployment>(&()),
            workloads::primary_name(target),
        )];
        let service = ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&());
        for name in [&names.apex, &names.primary, &names.canary] {
            objects.push((service.clone(), name.clone()));
        }
        if let Some(r) = &self.canary.spec.autoscaler_ref {
            let hpa = ApiResource::erase::<
                k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
            >(&());
            objects.push((hpa, workloads::primary_name(&r.name)));
        }
        for r in configs {
            let resource = match r.kind {
                ConfigKind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
                ConfigKind::Secret => ApiResource::erase::<Secret>(&()),
            };
            objects.push((resource, workloads::primary_name(&r.name)));
        }
        let provider = self.provider()?;
        objects.push((api_resource(provider.routing_kind()), names.apex.clone()));
        for companion in provider.companion_objects(self.canary) {
            let kind = companion["kind"].as_str().unwrap_or_default();
            let api_version = companion["apiVersion"].as_str().unwrap_or_default();
            let Some((group, version)) = api_version.split_once('/') else {
                continue;
            };
            let resource = ApiResource {
                group: group.into(),
                version: version.into(),
                api_version: api_version.into(),
                kind: kind.into(),
                plural: format!("{}s", kind.to_ascii_lowercase()),
            };
            let name = companion["metadata"]["name"].as_str().unwrap_or_default();
            objects.push((resource, name.to_string()));
        }
        let mut adopted = Vec::new();
        for (resource, name) in objects {
            if self.adopt_one(&resource, &name, &ours).await? {
                adopted.push(format!("{} {name}", resource.kind));
            }
        }
        Ok(adopted)
    }

    async fn adopt_one(
        &self,
        resource: &ApiResource,
        name: &str,
        ours: &OwnerReference,
    ) -> Result<bool> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.ctx.client.clone(), &self.namespace, resource);
        let named = format!("{} {name}", resource.kind);
        let object = api.get_opt(name).await.map_err(|source| Error::Read {
            kind: "object to adopt",
            name: named.clone(),
            source,
        })?;
        let Some(object) = object else {
            return Ok(false);
        };
        let Some(owners) = adopted_owners(object.owner_references(), ours) else {
            return Ok(false);
        };
        let body = json!({"metadata": {
            "ownerReferences": owners,
            "resourceVersion": object.resource_version(),
        }});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map_err(|source| Error::Write {
                kind: "object to adopt",
                name: named,
                source,
            })?;
        Ok(true)
    }
}

/// The owner references an object gets when adopted, `None` when it is not to be adopted: it
/// is controlled by `ours` already, by something other than a Flagger Canary of the same name,
/// or by nothing.
pub(super) fn adopted_owners(
    owners: &[OwnerReference],
    ours: &OwnerReference,
) -> Option<Vec<OwnerReference>> {
    let controller = owners.iter().find(|o| o.controller == Some(true))?;
    let same = |o: &OwnerReference| {
        o.api_version == ours.api_version
            && o.kind == ours.kind
            && o.name == ours.name
            && o.uid == ours.uid
    };
    let flaggers = controller.kind == "Canary"
        && controller.name == ours.name
        && controller
            .api_version
            .starts_with(&format!("{}/", flagger::GROUP));
    if same(controller) || !flaggers {
        return None;
    }
    let mut out: Vec<OwnerReference> = owners
        .iter()
        .filter(|o| o.controller != Some(true) && o.uid != ours.uid)
        .cloned()
        .collect();
    out.push(ours.clone());
    Some(out)
}

/// Whether the primary runs the target's pod template, as Flagger builds it: its selector
/// labels' values with `-primary` (in the pod labels, and in the spreading and anti-affinity
/// selectors that name the target), the ConfigMaps and Secrets it references renamed to their
/// `-primary` copies where the primary's are, Flagger's `flagger-id` annotation added and Flux's
/// labels and annotations left out. The copies' content is not compared.
pub(super) fn same_template(target: &Deployment, primary: &Deployment) -> bool {
    let template = |d: &Deployment| d.spec.as_ref().map(|s| s.template.clone());
    let (Some(mut t), Some(mut p)) = (template(target), template(primary)) else {
        return false;
    };
    let Ok(selectors) = workloads::selectors(target, Some(primary)) else {
        return false;
    };
    // The pod spec as Flagger gives it to the primary (spreading and anti-affinity selectors).
    t.spec = workloads::primary_pod_spec(target, &workloads::rewritten_keys(&selectors));
    // The ConfigMaps and Secrets Flagger copied to `-primary` versions, as it renames them.
    if let (Some(ts), Some(ps)) = (t.spec.as_mut(), p.spec.as_ref()) {
        let renamed = config_copies::renamed_by_flagger(ts, ps);
        config_copies::rename(ts, &renamed);
    }
    let target_labels = t
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let meta = p.metadata.get_or_insert_default();
    for (k, v) in meta.labels.iter_mut().flatten() {
        if target_labels
            .get(k)
            .is_some_and(|tv| *v == format!("{tv}-primary"))
        {
            v.clone_from(&target_labels[k]);
        }
    }
    for m in [t.metadata.get_or_insert_default(), meta] {
        // Flagger leaves Flux's labels out of the primary's pod labels too (`makePrimaryLabels`).
        if let Some(l) = m.labels.as_mut() {
            l.retain(|k, _| !k.contains(TOOLKIT_MARKER));
            if l.is_empty() {
                m.labels = None;
            }
        }
        if let Some(a) = m.annotations.as_mut() {
            a.retain(|k, _| {
                k != FLAGGER_ID
                    && k != config_copies::CONFIGS_ANNOTATION
                    && !k.contains(TOOLKIT_MARKER)
            });
            if a.is_empty() {
                m.annotations = None;
            }
        }
    }
    let normal = |x: &PodTemplateSpec| serde_json::to_value(x).unwrap_or(Value::Null);
    normal(&t) == normal(&p)
}

/// The state Fledge records for a Canary taken over at Flagger's `phase` (not mid-rollout),
/// as if Fledge had run it: the primary's revision promoted. When the target runs the same
/// template, that is the target's revision and no rollout is due. When it does not, a
/// failed revision stays failed (Flagger does not retry it either); any other difference is a
/// revision Flagger had not rolled out yet, recorded as the primary's (which no target revision
/// equals), so that the next tick rolls it out.
pub(super) fn taken_over_state(
    phase: &str,
    target_revision: String,
    primary: &Deployment,
    same: bool,
    since: Millis,
) -> RolloutState {
    let primary_revision = format!("{}-primary", workloads::revision(primary));
    let (phase, revision, promoted, message) = match (phase, same) {
        ("Failed", _) => (
            Phase::Failed,
            target_revision.clone(),
            if same {
                target_revision
            } else {
                primary_revision
            },
            "the failed revision stays rolled back until the target changes".to_string(),
        ),
        (p, true) => (
            if p == "Initialized" {
                Phase::Initialized
            } else {
                Phase::Succeeded
            },
            target_revision.clone(),
            target_revision,
            "the primary runs the target's pod template; no rollout is due".to_string(),
        ),
        (_, false) => (
            Phase::Succeeded,
            primary_revision.clone(),
            primary_revision,
            "the target's pod template differs from the primary's; it is rolled out next"
                .to_string(),
        ),
    };
    if phase == Phase::Failed {
        warn!("taken over after a failed rollout");
    }
    RolloutState {
        phase,
        revision: Some(revision),
        promoted_revision: Some(promoted),
        phase_since: since,
        step_since: since,
        message,
        ..RolloutState::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(value: Value) -> Deployment {
        serde_json::from_value(value).unwrap()
    }

    fn target() -> Deployment {
        deployment(json!({
            "metadata": {"name": "podinfo"},
            "spec": {"selector": {"matchLabels": {"app": "podinfo"}},
                     "template": {"metadata": {"labels": {"app": "podinfo", "team": "a"},
                                               "annotations": {"kustomize.toolkit.fluxcd.io/x": "y"}},
                                  "spec": {"containers": [{"name": "app", "image": "podinfo:1"}]}}}
        }))
    }

    fn flaggers_primary(image: &str) -> Deployment {
        deployment(json!({
            "metadata": {"name": "podinfo-primary"},
            "spec": {"selector": {"matchLabels": {"app": "podinfo-primary"}},
                     "template": {"metadata": {"labels": {"app": "podinfo-primary", "team": "a"},
                                               "annotations": {"flagger-id": "0b1c"}},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}}
        }))
    }

    #[test]
    fn flaggers_primary_of_the_same_template_needs_no_rollout_and_another_one_does() {
        let t = target();
        assert!(same_template(&t, &flaggers_primary("podinfo:1")));
        assert!(!same_template(&t, &flaggers_primary("podinfo:2")));
        let rev = || workloads::revision(&t);
        let same = taken_over_state("Succeeded", rev(), &flaggers_primary("podinfo:1"), true, 5);
        assert_eq!(same.phase, Phase::Succeeded);
        assert_eq!(same.revision, Some(workloads::revision(&t)));
        assert_eq!(same.revision, same.promoted_revision);
        let other = taken_over_state("Succeeded", rev(), &flaggers_primary("podinfo:2"), false, 5);
        assert_ne!(other.revision, Some(workloads::revision(&t)));
        let failed = taken_over_state("Failed", rev(), &flaggers_primary("podinfo:2"), false, 5);
        assert_eq!(
            (failed.phase, failed.revision),
            (Phase::Failed, Some(workloads::revision(&t)))
        );
    }

    fn owner(api_version: &str, uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: "Canary".into(),
            name: "podinfo".into(),
            uid: uid.into(),
            controller: Some(controller),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn only_a_flagger_canary_of_the_same_name_is_replaced_as_controller() {
        let ours = owner(flagger::API_VERSION, "u1", true);
        assert_eq!(adopted_owners(std::slice::from_ref(&ours), &ours), None);
        assert_eq!(adopted_owners(&[], &ours), None);
        let old = owner("flagger.app/v1alpha3", "u0", true);
        let other = OwnerReference {
            kind: "Rollout".into(),
            ..owner("argoproj.io/v1alpha1", "u9", false)
        };
        assert_eq!(
            adopted_owners(&[old, other.clone()], &ours),
            Some(vec![other.clone(), ours.clone()])
        );
        let foreign = OwnerReference {
            controller: Some(true),
            ..other
        };
        assert_eq!(adopted_owners(&[foreign], &ours), None);
    }
}
