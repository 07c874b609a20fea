//! The workloads of a rollout, the way Flagger arranges them: the target Deployment is the canary;
//! its clone `<target>-primary` serves the stable version; the Services `<svc>`, `<svc>-primary`
//! and `<svc>-canary` select them (built in [`super::services`]); an HPA on the target is
//! mirrored by `<hpa>-primary`.
//!
//! The objects are built by pure functions (tested without a cluster) and written with
//! server-side apply under the field manager `fledge`, so a write repeated after a restart changes
//! nothing.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

use super::config_copies::{self, Tracked};
use super::daemonsets;
pub use super::selectors::{
    Selectors, primary_pod_spec, rewritten_keys, selectors, target_pod_spec,
};
pub use super::services::{discovered_ports, services};
use super::{Error, FIELD_MANAGER, Result};
use crate::rollout::{PodState, Readiness};
use crate::spec::Canary;

/// Annotations that belong to the target's own history and must not be copied to the primary.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
];

/// Something wrong with the user's workload: reported, never retried blindly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadProblem {
    /// The target Deployment has no `spec.selector.matchLabels`.
    NoSelector { target: String },
    /// The target kind is neither a Deployment nor a DaemonSet.
    UnsupportedKind { target: String, kind: String },
    /// A DaemonSet updated `OnDelete`: a promotion would leave the old pods running.
    NotRollingUpdate { target: String },
}

impl fmt::Display for WorkloadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkloadProblem::NoSelector { target } => write!(
                f,
                "Deployment {target} has no spec.selector.matchLabels; Fledge needs them to select \
                 the primary and canary pods apart"
            ),
            WorkloadProblem::UnsupportedKind { target, kind } => write!(
                f,
                "spec.targetRef {target} has kind {kind}; only Deployment and DaemonSet are \
                 supported"
            ),
            WorkloadProblem::NotRollingUpdate { target } => write!(
                f,
                "DaemonSet {target} has updateStrategy OnDelete; a canary DaemonSet must have the \
                 RollingUpdate strategy, or a promotion would leave its old pods running"
            ),
        }
    }
}

/// The kinds of workload a Canary can roll out (`spec.targetRef.kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TargetKind {
    #[default]
    Deployment,
    /// Read and written in the shape of a Deployment: see [`super::daemonsets`].
    DaemonSet,
}

impl TargetKind {
    /// The kind `spec.targetRef.kind` names (none is a Deployment), or `None` for another.
    pub fn of(kind: &str) -> Option<Self> {
        match kind {
            "" | "Deployment" => Some(TargetKind::Deployment),
            "DaemonSet" => Some(TargetKind::DaemonSet),
            _ => None,
        }
    }

    /// The kind's name, as in `kind:`.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Deployment => "Deployment",
            TargetKind::DaemonSet => "DaemonSet",
        }
    }
}

/// A target that can be rolled out as it is updated: Flagger refuses a DaemonSet updated
/// `OnDelete`, and so does Fledge.
pub fn rolls_on_update(target: &Deployment) -> Result<(), WorkloadProblem> {
    let strategy = target.spec.as_ref().and_then(|s| s.strategy.as_ref());
    match strategy.and_then(|s| s.type_.as_deref()) {
        Some("OnDelete") => Err(WorkloadProblem::NotRollingUpdate {
            target: target.metadata.name.clone().unwrap_or_default(),
        }),
        _ => Ok(()),
    }
}

/// The name of the primary clone of `target`.
pub fn primary_name(target: &str) -> String {
    format!("{target}-primary")
}

/// A stable hash of the Deployment's pod template: it changes exactly when the pods would.
pub fn revision(target: &Deployment) -> String {
    let template = target.spec.as_ref().map(|s| &s.template);
    // Struct fields serialise in declaration order and maps are ordered: the bytes are stable.
    let bytes = serde_json::to_vec(&template).unwrap_or_default();
    format!("{:016x}", fnv1a(&bytes))
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Ready replicas against desired ones, counting only pods of the current template: a
/// Deployment whose rollout has not finished is not ready, which is what promotion waits on.
pub fn readiness(dep: &Deployment) -> Readiness {
    let desired = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = dep.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0) >= dep.metadata.generation.unwrap_or(0);
    let ready = if observed {
        status
            .ready_replicas
            .unwrap_or(0)
            .min(status.updated_replicas.unwrap_or(0))
    } else {
        0
    };
    Readiness {
        ready: u32::try_from(ready).unwrap_or(0),
        desired: u32::try_from(desired).unwrap_or(0),
    }
}

/// The target's selector labels, which Fledge rewrites to tell the primary apart.
pub fn selector_labels(target: &Deployment) -> Result<BTreeMap<String, String>, WorkloadProblem> {
    let labels = target
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    if labels.is_empty() {
        return Err(WorkloadProblem::NoSelector {
            target: target.metadata.name.clone().unwrap_or_default(),
        });
    }
    Ok(labels)
}

/// The containers of `pods` that are not ready, and why, for the core to judge: a waiting
/// container (init containers too: one that crash-loops keeps the pod from ever starting) by
/// the kubelet's reason, a running one whose readiness probe fails (its startup probe, if
/// any, passed) as `NotReady` since it started. A pod being deleted is no evidence: it stops
/// being ready as it drains.
pub fn pod_states(pods: &[Pod]) -> Vec<PodState> {
    let mut states = Vec::new();
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let created = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| u64::try_from(t.0.as_millisecond()).ok());
        let statuses = pod.status.iter().flat_map(|s| {
            let init = s.init_container_statuses.iter().flatten();
            init.map(|c| (c, true))
                .chain(s.container_statuses.iter().flatten().map(|c| (c, false)))
        });
        for (c, init) in statuses.filter(|(c, _)| !c.ready) {
            let state = c.state.clone().unwrap_or_default();
            let (reason, message, running_since) = if let Some(w) = state.waiting {
                (
                    w.reason.unwrap_or_default(),
                    w.message.unwrap_or_default(),
                    None,
                )
            } else if let Some(r) = state.running.filter(|_| !init && c.started != Some(false)) {
                let since = r
                    .started_at
                    .and_then(|t| u64::try_from(t.0.as_millisecond()).ok());
                (
                    "NotReady".to_string(),
                    "readiness probe failing".to_string(),
                    since,
                )
            } else {
                continue;
            };
            if reason.is_empty() {
                continue;
            }
            states.push(PodState {
                pod: name.clone(),
                container: c.name.clone(),
                reason,
                message,
                running_since,
                created,
                restarts: u32::try_from(c.restart_count).unwrap_or(0),
                // Read from the pod template by the caller.
                probe_budget: None,
            });
        }
    }
    states
}

/// The label the Deployment controller gives a ReplicaSet and its pods: a hash of the template.
const TEMPLATE_HASH: &str = "pod-template-hash";
/// The annotation in which the Deployment controller numbers its ReplicaSets, newest highest.
const REVISION: &str = "deployment.kubernetes.io/revision";

/// The `pod-template-hash` of the target's current revision: that of the newest ReplicaSet the
/// target owns, once the Deployment controller has seen the target's latest template (before
/// that, the newest ReplicaSet is the previous revision's). `None` when that is not known yet.
pub fn current_template_hash(target: &Deployment, sets: &[ReplicaSet]) -> Option<String> {
    let status = target.status.as_ref()?;
    if status.observed_generation.unwrap_or(0) < target.metadata.generation.unwrap_or(0) {
        return None;
    }
    let owned = |rs: &&ReplicaSet| {
        rs.metadata.owner_references.iter().flatten().any(|o| {
            o.kind == "Deployment"
                && Some(&o.name) == target.metadata.name.as_ref()
                && target.metadata.uid.as_ref().is_none_or(|uid| *uid == o.uid)
        })
    };
    let revision = |rs: &&ReplicaSet| {
        rs.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .and_then(|r| r.parse::<u64>().ok())
    };
    sets.iter()
        .filter(owned)
        .filter(|rs| revision(rs).is_some())
        .max_by_key(|rs| revision(rs))?
        .metadata
        .labels
        .as_ref()?
        .get(TEMPLATE_HASH)
        .cloned()
}

/// The pods of the template whose hash is `hash`: the old revision's pods (still running while
/// the canary rolls out) are no evidence about the new one.
pub fn pods_of_template(pods: Vec<Pod>, hash: &str) -> Vec<Pod> {
    pods.into_iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(TEMPLATE_HASH))
                .is_some_and(|h| h == hash)
        })
        .collect()
}

fn owner(canary: &Canary) -> Vec<OwnerReference> {
    super::flagger::owner_reference(canary)
        .into_iter()
        .collect()
}

fn relabel(
    labels: Option<&BTreeMap<String, String>>,
    primary: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = labels.cloned().unwrap_or_default();
    out.extend(primary.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// The primary Deployment: the target's spec with its selector, pod labels and pod spec
/// rewritten ([`selectors`], [`primary_pod_spec`]) and its `tracked` configs replaced by their
/// `-primary` copies, owned by the Canary. `live` is the primary as it is (its selector is
/// kept); `replicas` is its own count (the target's when created).
pub fn primary_deployment(
    canary: &Canary,
    target: &Deployment,
    live: Option<&Deployment>,
    replicas: Option<i32>,
    tracked: &Tracked,
) -> Result<Deployment, WorkloadProblem> {
    let selectors = selectors(target, live)?;
    let mut pod_spec = primary_pod_spec(target, &rewritten_keys(&selectors));
    if let Some(s) = pod_spec.as_mut() {
        config_copies::rename(s, &tracked.refs());
    }
    let primary = selectors.primary;
    let name = primary_name(&canary.spec.target_ref.name);
    let mut spec = target.spec.clone().unwrap_or_default();
    spec.replicas = replicas;
    spec.template.spec = pod_spec;
    spec.selector = LabelSelector {
        match_labels: Some(primary.clone()),
        match_expressions: None,
    };
    let mut template_meta = spec.template.metadata.take().unwrap_or_default();
    template_meta.labels = Some(relabel(template_meta.labels.as_ref(), &primary));
    if let Some(sum) = tracked.checksum() {
        let annotations = template_meta.annotations.get_or_insert_default();
        annotations.insert(config_copies::CONFIGS_ANNOTATION.into(), sum);
    }
    spec.template.metadata = Some(template_meta);
    let annotations: BTreeMap<String, String> = target
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: canary.metadata.namespace.clone(),
            labels: Some(relabel(target.metadata.labels.as_ref(), &primary)),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(owner(canary)),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// The primary's HPA: the target's, pointed at the primary Deployment, with the bounds of
/// `autoscalerRef.primaryScalerReplicas` where given (as Flagger's `reconcilePrimaryHpaV2`
/// does, so that the primary can be sized apart from the canary).
pub fn primary_hpa(canary: &Canary, hpa: &HorizontalPodAutoscaler) -> HorizontalPodAutoscaler {
    let mut spec = hpa.spec.clone().unwrap_or_default();
    spec.scale_target_ref.name = primary_name(&canary.spec.target_ref.name);
    let bounds = canary
        .spec
        .autoscaler_ref
        .as_ref()
        .and_then(|r| r.primary_scaler_replicas.as_ref());
    if let Some(bounds) = bounds {
        if let Some(min) = bounds.min_replicas {
            spec.min_replicas = Some(min);
        }
        if let Some(max) = bounds.max_replicas {
            spec.max_replicas = max;
        }
    }
    HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: Some(primary_name(
                hpa.metadata.name.as_deref().unwrap_or_default(),
            )),
            namespace: canary.metadata.namespace.clone(),
            labels: hpa.metadata.labels.clone(),
            owner_references: Some(owner(canary)),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Reads and writes the workloads of one namespace; the target and its primary are of `kind`.
pub struct Workloads {
    kind: TargetKind,
    deployments: Api<Deployment>,
    daemon_sets: Api<DaemonSet>,
    pods: Api<Pod>,
    replica_sets: Api<ReplicaSet>,
    services: Api<Service>,
    hpas: Api<HorizontalPodAutoscaler>,
}

fn read(kind: &'static str, name: &str) -> impl FnOnce(kube::Error) -> Error {
    let name = name.to_string();
    move |source| Error::Read { kind, name, source }
}

fn write(kind: &'static str, name: &str) -> impl FnOnce(kube::Error) -> Error {
    let name = name.to_string();
    move |source| Error::Write { kind, name, source }
}

impl Workloads {
    pub fn new(client: Client, namespace: &str, kind: TargetKind) -> Self {
        Workloads {
            kind,
            deployments: Api::namespaced(client.clone(), namespace),
            daemon_sets: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client.clone(), namespace),
            replica_sets: Api::namespaced(client.clone(), namespace),
            services: Api::namespaced(client.clone(), namespace),
            hpas: Api::namespaced(client, namespace),
        }
    }

    /// The kind of the target and its primary.
    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// The workload (a DaemonSet in the shape of a Deployment), or `None` when it does not
    /// exist.
    pub async fn deployment(&self, name: &str) -> Result<Option<Deployment>> {
        match self.kind {
            TargetKind::Deployment => self
                .deployments
                .get_opt(name)
                .await
                .map_err(read("Deployment", name)),
            TargetKind::DaemonSet => Ok(self
                .daemon_sets
                .get_opt(name)
                .await
                .map_err(read("DaemonSet", name))?
                .map(daemonsets::as_deployment)),
        }
    }

    /// The pods a Deployment's selector labels select.
    pub async fn pods(&self, selector: &BTreeMap<String, String>) -> Result<Vec<Pod>> {
        let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let params = ListParams::default().labels(&labels.join(","));
        let list = self
            .pods
            .list(&params)
            .await
            .map_err(read("Pod", &labels.join(",")))?;
        Ok(list.items)
    }

    /// The ReplicaSets a Deployment's selector labels select (its own among them). A DaemonSet
    /// has none (its revisions are ControllerRevisions, not read yet): its pods are not judged
    /// one by one, and a canary that never becomes ready fails at its progress deadline.
    pub async fn replica_sets(
        &self,
        selector: &BTreeMap<String, String>,
    ) -> Result<Vec<ReplicaSet>> {
        if self.kind == TargetKind::DaemonSet {
            return Ok(Vec::new());
        }
        let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let params = ListParams::default().labels(&labels.join(","));
        let list = self
            .replica_sets
            .list(&params)
            .await
            .map_err(read("ReplicaSet", &labels.join(",")))?;
        Ok(list.items)
    }

    /// A Service, or `None` when it does not exist.
    pub async fn service(&self, name: &str) -> Result<Option<Service>> {
        self.services
            .get_opt(name)
            .await
            .map_err(read("Service", name))
    }

    /// A JSON merge patch of a Service: for fields other managers own as well (a user's
    /// Service), where an apply would leave their values in place.
    pub async fn merge_service(&self, name: &str, body: &serde_json::Value) -> Result<()> {
        self.services
            .patch(name, &PatchParams::default(), &Patch::Merge(body))
            .await
            .map_err(write("Service", name))?;
        Ok(())
    }

    pub async fn hpa(&self, name: &str) -> Result<Option<HorizontalPodAutoscaler>> {
        self.hpas
            .get_opt(name)
            .await
            .map_err(read("HorizontalPodAutoscaler", name))
    }

    /// Applies a workload built in the shape of a Deployment, as the target's kind.
    pub async fn apply_deployment(&self, dep: &Deployment) -> Result<()> {
        let name = dep.metadata.name.clone().unwrap_or_default();
        if self.kind == TargetKind::DaemonSet {
            let ds = daemonsets::from_deployment(dep);
            self.daemon_sets
                .patch(&name, &apply(), &Patch::Apply(&ds))
                .await
                .map_err(write("DaemonSet", &name))?;
            return Ok(());
        }
        self.deployments
            .patch(&name, &apply(), &Patch::Apply(dep))
            .await
            .map_err(write("Deployment", &name))?;
        Ok(())
    }

    pub async fn apply_service(&self, svc: &Service) -> Result<()> {
        let name = svc.metadata.name.clone().unwrap_or_default();
        self.services
            .patch(&name, &apply(), &Patch::Apply(svc))
            .await
            .map_err(write("Service", &name))?;
        Ok(())
    }

    pub async fn apply_hpa(&self, hpa: &HorizontalPodAutoscaler) -> Result<()> {
        let name = hpa.metadata.name.clone().unwrap_or_default();
        self.hpas
            .patch(&name, &apply(), &Patch::Apply(hpa))
            .await
            .map_err(write("HorizontalPodAutoscaler", &name))?;
        Ok(())
    }

    /// A JSON merge patch of a workload (the user keeps ownership of the rest).
    pub async fn merge_deployment(&self, name: &str, body: &serde_json::Value) -> Result<()> {
        let params = PatchParams::default();
        let kind = self.kind.name();
        let patched = match self.kind {
            TargetKind::Deployment => self
                .deployments
                .patch(name, &params, &Patch::Merge(body))
                .await
                .map(drop),
            TargetKind::DaemonSet => self
                .daemon_sets
                .patch(name, &params, &Patch::Merge(body))
                .await
                .map(drop),
        };
        patched.map_err(write(kind, name))
    }

    /// Sets a Deployment's replicas; a DaemonSet has none, and is scaled to zero (any other
    /// count: back) by Flagger's node selector ([`daemonsets::scale_patch`]).
    pub async fn scale(&self, name: &str, replicas: i32) -> Result<()> {
        let patch = match self.kind {
            TargetKind::Deployment => serde_json::json!({ "spec": { "replicas": replicas } }),
            TargetKind::DaemonSet => daemonsets::scale_patch(replicas > 0),
        };
        self.merge_deployment(name, &patch).await
    }

    /// Deletes a workload; one already gone is fine.
    pub async fn delete_deployment(&self, name: &str) -> Result<()> {
        let params = DeleteParams::default();
        let deleted = match self.kind {
            TargetKind::Deployment => self.deployments.delete(name, &params).await.map(drop),
            TargetKind::DaemonSet => self.daemon_sets.delete(name, &params).await.map(drop),
        };
        match deleted {
            Ok(()) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(source) => Err(Error::Write {
                kind: self.kind.name(),
                name: name.into(),
                source,
            }),
        }
    }

    /// Deletes an HPA; one already gone is fine.
    pub async fn delete_hpa(&self, name: &str) -> Result<()> {
        match self.hpas.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(source) => Err(Error::Write {
                kind: "HorizontalPodAutoscaler",
                name: name.into(),
                source,
            }),
        }
    }
}

fn apply() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{CanarySpec, LocalObjectReference};
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};

    fn target(image: &str) -> Deployment {
        let labels = BTreeMap::from([("app".to_string(), "podinfo".to_string())]);
        Deployment {
            metadata: ObjectMeta {
                name: Some("podinfo".into()),
                namespace: Some("test".into()),
                labels: Some(labels.clone()),
                annotations: Some(BTreeMap::from([
                    (NOT_COPIED[0].to_string(), "{}".to_string()),
                    ("team".to_string(), "a".to_string()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    match_expressions: None,
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "app".into(),
                            image: Some(image.into()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            status: None,
        }
    }

    fn canary() -> Canary {
        let mut c = Canary::new(
            "podinfo",
            CanarySpec {
                target_ref: LocalObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name: "podinfo".into(),
                },
                ..CanarySpec::default()
            },
        );
        c.metadata.namespace = Some("test".into());
        c.metadata.uid = Some("uid-1".into());
        c
    }

    #[test]
    fn the_revision_changes_with_the_pod_template_and_only_with_it() {
        let a = target("podinfo:1");
        let mut scaled = a.clone();
        scaled.spec.as_mut().unwrap().replicas = Some(7);
        assert_eq!(revision(&a), revision(&scaled));
        assert_ne!(revision(&a), revision(&target("podinfo:2")));
        assert_eq!(revision(&a), revision(&target("podinfo:1")));
    }

    #[test]
    fn the_primary_selects_its_own_pods_and_is_owned_by_the_canary() {
        let p = primary_deployment(
            &canary(),
            &target("podinfo:1"),
            None,
            Some(2),
            &Tracked::default(),
        )
        .unwrap();
        let spec = p.spec.unwrap();
        let want = BTreeMap::from([("app".to_string(), "podinfo-primary".to_string())]);
        assert_eq!(spec.selector.match_labels, Some(want.clone()));
        assert_eq!(spec.template.metadata.unwrap().labels, Some(want));
        assert_eq!(p.metadata.name.as_deref(), Some("podinfo-primary"));
        let owners = p.metadata.owner_references.unwrap();
        assert_eq!(owners[0].kind, "Canary");
        assert_eq!(owners[0].controller, Some(true));
        let annotations = p.metadata.annotations.unwrap();
        assert!(!annotations.contains_key(NOT_COPIED[0]));
        assert_eq!(annotations.get("team").map(String::as_str), Some("a"));
    }

    fn selecting(mut d: Deployment, labels: &[(&str, &str)]) -> Deployment {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let spec = d.spec.as_mut().unwrap();
        spec.selector.match_labels = Some(labels.clone());
        spec.template.metadata.as_mut().unwrap().labels = Some(labels);
        d
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_primary_selects_on_flaggers_one_label_and_copies_the_other_selector_labels() {
        let t = selecting(target("podinfo:1"), &[("team", "a"), ("app", "podinfo")]);
        let s = selectors(&t, None).unwrap();
        assert_eq!(s.primary, map(&[("app", "podinfo-primary")]));
        assert_eq!(s.canary, map(&[("app", "podinfo")]));
        let p = primary_deployment(&canary(), &t, None, Some(2), &Tracked::default()).unwrap();
        let spec = p.spec.unwrap();
        assert_eq!(spec.selector.match_labels, Some(s.primary.clone()));
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels, map(&[("app", "podinfo-primary"), ("team", "a")]));
        // `name` before `app.kubernetes.io/name`; none of Flagger's: every label suffixed.
        let t2 = selecting(
            target("podinfo:1"),
            &[("app.kubernetes.io/name", "x"), ("name", "y")],
        );
        assert_eq!(
            selectors(&t2, None).unwrap().primary,
            map(&[("name", "y-primary")])
        );
        let t3 = selecting(target("podinfo:1"), &[("tier", "web"), ("role", "api")]);
        assert_eq!(
            selectors(&t3, None).unwrap().primary,
            map(&[("role", "api-primary"), ("tier", "web-primary")])
        );
    }

    #[test]
    fn an_existing_primarys_selector_is_kept_as_found() {
        let t = selecting(target("podinfo:1"), &[("app", "podinfo"), ("team", "a")]);
        // An older Fledge suffixed every selector label; the selector is immutable.
        let old = map(&[("app", "podinfo-primary"), ("team", "a-primary")]);
        let live = selecting(
            target("podinfo:0"),
            &[("app", "podinfo-primary"), ("team", "a-primary")],
        );
        let s = selectors(&t, Some(&live)).unwrap();
        assert_eq!(s.primary, old);
        assert_eq!(s.canary, map(&[("app", "podinfo"), ("team", "a")]));
        let p = primary_deployment(&canary(), &t, Some(&live), None, &Tracked::default()).unwrap();
        let spec = p.spec.unwrap();
        assert_eq!(spec.selector.match_labels, Some(old.clone()));
        assert_eq!(spec.template.metadata.unwrap().labels, Some(old));
        // A selector on keys the target does not select on is not read back.
        let foreign = selecting(target("podinfo:0"), &[("other", "x")]);
        assert_eq!(
            selectors(&t, Some(&foreign)).unwrap().primary,
            map(&[("app", "podinfo-primary")])
        );
    }

    #[test]
    fn a_deployment_without_match_labels_is_reported_not_cloned() {
        let mut t = target("podinfo:1");
        t.spec.as_mut().unwrap().selector = LabelSelector::default();
        assert_eq!(
            primary_deployment(&canary(), &t, None, None, &Tracked::default()),
            Err(WorkloadProblem::NoSelector {
                target: "podinfo".into()
            })
        );
    }

    #[test]
    fn readiness_counts_only_pods_of_a_finished_rollout() {
        let mut d = target("podinfo:1");
        d.metadata.generation = Some(3);
        d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            observed_generation: Some(2),
            ready_replicas: Some(2),
            updated_replicas: Some(2),
            ..Default::default()
        });
        assert_eq!(
            readiness(&d),
            Readiness {
                ready: 0,
                desired: 2
            }
        );
        let status = d.status.as_mut().unwrap();
        status.observed_generation = Some(3);
        status.updated_replicas = Some(1);
        assert_eq!(
            readiness(&d),
            Readiness {
                ready: 1,
                desired: 2
            }
        );
    }
}
