//! What a target must have to be rolled out: selector labels, and an update strategy that
//! replaces its pods.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;

use super::WorkloadProblem;

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
