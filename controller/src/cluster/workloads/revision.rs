//! Which revision a workload is at: a hash of its pod template, and the Deployment
//! controller's `pod-template-hash` of its current ReplicaSet.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;

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
