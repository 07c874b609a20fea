//! Whether a workload is ready, and why its pods are not.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;

use crate::rollout::{PodState, Readiness};

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
