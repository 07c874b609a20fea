//! Taking a Flagger Canary over: once, before Fledge has recorded any state of its own for it
//! (and again when the record is stale: Flagger promoted since, [`Tick::record_is_stale`]).
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
//!   Flagger's `lastAppliedSpec` (a hash Fledge cannot reproduce, left as found). The template
//!   recorded for the primary is in the target's shape ([`target_shaped`]), as Fledge records
//!   every template it promotes: a primary recreated from it is built as any other.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use serde_json::Value;
use tracing::{info, warn};

use super::super::config_copies;
use super::super::{Error, Result, flagger, status, workloads};
use super::problems::Problem;
use super::tick::Tick;
use crate::rollout::{Millis, Phase, RolloutState, SessionCookies};
use crate::spec::{CanaryStatus, unroutable_by, unused_autoscaler, validate};

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
        // Flagger skips a suspended Canary before it reads or writes anything (its scheduler's
        // `advanceCanary`): so does the take-over, until the Canary is resumed.
        if self.canary.spec.suspend {
            return self
                .report(Problem::SuspendedBeforeTakeOver)
                .await
                .map(Some);
        }
        // Taken over afresh: a stale record is written over as if there were none.
        let canary = &flagger::without_record(self.canary);
        let status = self.canary.status.as_ref();
        let phase = status.map(|s| s.phase.as_str()).unwrap_or_default();
        if MID_ROLLOUT.contains(&phase)
            && recorded.is_none()
            && flagger::phase_set_by_fledge(canary)
        {
            // Fledge's own rollout, its record gone (the annotation lost to a `kubectl
            // replace`): onboarded again as a `fledge.dev` Canary whose status was lost, traffic
            // back on the primary and the target analysed again.
            let message = format!(
                "Fledge's record of its rollout (annotation {}) is gone while status.phase is \
                 {phase}: traffic goes back to the primary and the target is analysed again",
                flagger::STATE_ANNOTATION
            );
            warn!(%message, "record lost");
            // Said once: a Canary replaced without Fledge's finalizer is only held this time.
            if self.held() {
                self.publish(EventType::Warning, "RecordLost", &message)
                    .await;
            }
            return Ok(None);
        }
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
        // Validation checks an explicit provider only: what the default one cannot route is
        // refused by the reconcile too, before anything of Flagger's is adopted.
        let Ok(provider) = self.provider() else {
            return Ok(None);
        };
        if !unroutable_by(&self.canary.spec, &spec, provider).is_empty() {
            return Ok(None);
        }
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
        let adopted = match self.adopt(&spec.target, &tracked.refs()).await {
            Ok(adopted) => adopted,
            Err(e) => {
                // Retried as any failure, but said on the Canary: a log line is not seen.
                let hint = if forbidden(&e) {
                    "; Fledge may not touch it: install the chart with the `provider` (and \
                     `extraProviders`) of the meshes Flagger's Canaries use"
                } else {
                    ""
                };
                let message = format!("cannot take over from Flagger yet: {e}{hint}");
                self.publish(EventType::Warning, "TakeOverFailed", &message)
                    .await;
                return Err(e);
            }
        };
        let since = ended.unwrap_or(self.now);
        // The configs' copies too: Flagger copies them at promotion.
        let same = same_template(&target, &primary) && self.configs.copies_current(tracked).await?;
        let revision = self.target_revision(&target).await?;
        let mut state = taken_over_state(phase, revision, &primary, same, since);
        state.cookies = flaggers_cookies(status);
        let template = if same {
            target.spec.as_ref().map(|s| s.template.clone())
        } else {
            target_shaped(&target, &primary)
        };
        let replicas = primary.spec.as_ref().and_then(|s| s.replicas);
        let kind = &canary.spec.target_ref.kind;
        let new = status::status_of(&state, kind, template.as_ref(), replicas);
        status::write(&self.api, canary, &new).await?;
        let mut message = format!(
            "Taken over from Flagger at phase {phase}: {}",
            state.message
        );
        if !adopted.is_empty() {
            message.push_str(&format!("; adopted {}", adopted.join(", ")));
        }
        if let Some(unused) = unused_autoscaler(&self.canary.spec) {
            message.push_str(&format!("; {unused}"));
        }
        info!(%message, "taken over");
        self.publish(EventType::Normal, "TakenOver", &message).await;
        Ok(Some(Requeue::requeue(self.ctx.config.poll)))
    }

    /// Whether Fledge's record on this Flagger Canary is older than the primary: between two of
    /// Fledge's rollouts, the primary carries a `flagger-id` other than the one recorded, so
    /// Flagger, run meanwhile, has promoted since (its `lastAppliedSpec` may have come back to
    /// the hash the record was made against: A, B, then A again), and owns the primary's fields
    /// again. During a rollout the record stands.
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
        let Some(record) = flagger::recorded(self.canary) else {
            return Ok(false);
        };
        let primary_name = workloads::primary_name(&self.canary.spec.target_ref.name);
        let Some(primary) = self.workloads.deployment(&primary_name).await? else {
            return Ok(false);
        };
        let stale = flagger::promoted_since(&record, &primary);
        if stale {
            warn!(%primary_name, "the primary carries a flagger-id other than Fledge recorded: \
                  Flagger has promoted since; taking over as found");
        }
        Ok(stale)
    }
}

/// The primary's pod template in the target's shape, as Fledge records the templates it gives
/// the primary: what Flagger changed undone (its selector label values with `-primary`, in the
/// pod labels and in the spreading and anti-affinity selectors; the ConfigMaps and Secrets it
/// renamed to their copies; its `flagger-id`), so that a primary built from it (recreated if
/// deleted) reads the copies, not copies of them.
pub(super) fn target_shaped(target: &Deployment, primary: &Deployment) -> Option<PodTemplateSpec> {
    let mut t = primary.spec.as_ref()?.template.clone();
    let target_template = &target.spec.as_ref()?.template;
    let selectors = workloads::selectors(target, Some(primary)).ok()?;
    let name = target.metadata.name.as_deref().unwrap_or_default();
    if let (Some(ps), Some(ts)) = (t.spec.as_mut(), target_template.spec.as_ref()) {
        let renamed = config_copies::renamed_by_flagger(ts, ps);
        config_copies::unrename(ps, &renamed);
        workloads::target_pod_spec(ps, name, &workloads::rewritten_keys(&selectors));
    }
    let target_labels = target_template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let meta = t.metadata.get_or_insert_default();
    unsuffix_labels(meta.labels.iter_mut().flatten(), &target_labels);
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(flagger::FLAGGER_ID);
        a.remove(config_copies::CONFIGS_ANNOTATION);
        if a.is_empty() {
            meta.annotations = None;
        }
    }
    Some(t)
}

/// Each label whose value is the target's value of it with `-primary` gets the target's value.
fn unsuffix_labels<'a>(
    labels: impl Iterator<Item = (&'a String, &'a mut String)>,
    target: &BTreeMap<String, String>,
) {
    for (k, v) in labels {
        if target
            .get(k)
            .is_some_and(|tv| *v == format!("{tv}-primary"))
        {
            v.clone_from(&target[k]);
        }
    }
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
    unsuffix_labels(meta.labels.iter_mut().flatten(), &target_labels);
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
                k != flagger::FLAGGER_ID
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

/// The session affinity cookies Flagger recorded in its status, kept by the taken-over state:
/// without them Fledge's first status write would clear them, the routes would stop expiring
/// the last rollout's cookie, and the primary's users would get a new primary cookie.
pub(super) fn flaggers_cookies(status: Option<&CanaryStatus>) -> SessionCookies {
    let found = |c: Option<&String>| c.filter(|c| !c.is_empty()).cloned();
    let Some(status) = status else {
        return SessionCookies::default();
    };
    SessionCookies {
        canary: found(status.session_affinity_cookie.as_ref()),
        previous: found(status.previous_session_affinity_cookie.as_ref()),
        primary: found(status.primary_session_affinity_cookie.as_ref()),
    }
}

/// Whether the API server refused `e` for want of a grant.
fn forbidden(e: &Error) -> bool {
    matches!(e, Error::Read { source: kube::Error::Api(s), .. }
        | Error::Write { source: kube::Error::Api(s), .. } if s.code == 403)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn a_primary_recorded_in_the_targets_shape_names_the_targets_labels_and_configs() {
        let with_config = |mut d: Deployment, name: &str| {
            let pod = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
            pod.volumes = Some(vec![
                serde_json::from_value(json!({"name": "c", "configMap": {"name": name}})).unwrap(),
            ]);
            d
        };
        let t = with_config(target(), "podinfo-config");
        let p = with_config(flaggers_primary("podinfo:2"), "podinfo-config-primary");
        let shaped = target_shaped(&t, &p).unwrap();
        let mut want = with_config(flaggers_primary("podinfo:2"), "podinfo-config")
            .spec
            .unwrap()
            .template;
        want.metadata = Some(
            serde_json::from_value(json!({"labels": {"app": "podinfo", "team": "a"}})).unwrap(),
        );
        assert_eq!(shaped, want);
        // Built as a primary again, it is Flagger's (but for its flagger-id).
        let mut source = t.clone();
        source.spec.as_mut().unwrap().template = shaped;
        assert!(same_template(&source, &p));
    }
}
