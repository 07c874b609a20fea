//! The primary: the target cloned as `<target>-primary`, and its HPA, owned by the Canary.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use super::WorkloadProblem;
use crate::cluster::config_copies::{self, Tracked};
use crate::cluster::selectors::{primary_pod_spec, rewritten_keys, selectors};
use crate::spec::Canary;

/// Annotations that belong to the target's own history and must not be copied to the primary.
pub(super) const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
];

/// The name of the primary clone of `target`.
pub fn primary_name(target: &str) -> String {
    format!("{target}-primary")
}

fn owner(canary: &Canary) -> Vec<OwnerReference> {
    crate::cluster::flagger::owner_reference(canary)
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
