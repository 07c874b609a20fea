//! DaemonSet targets, as Flagger rolls them out: the primary is a DaemonSet cloned from the
//! target, and the target (the canary) is "scaled to zero" by a node selector no node carries.
//!
//! The reconciler reads every workload in the shape of a Deployment ([`as_deployment`]), so the
//! rollout logic is written once: a DaemonSet is seen as a Deployment whose replicas are the pods
//! it schedules (none while scaled to zero) and whose template is its own without the
//! scale-to-zero selector, which is therefore no part of the revision (as in Flagger, whose
//! `HasTargetChanged` drops it too). Writes go back through [`from_deployment`].

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    DeploymentStatus, DeploymentStrategy, RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use serde_json::{Value, json};

/// The node selector that keeps a DaemonSet's pods off every node: Flagger's, so that a
/// DaemonSet Flagger scaled down is recognised and one Fledge scaled down is Flagger's too.
pub(crate) const SCALE_TO_ZERO: (&str, &str) = ("flagger.app/scale-to-zero", "true");

/// Whether the DaemonSet's pods are kept off every node.
fn scaled_to_zero(ds: &DaemonSet) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.node_selector.as_ref())
        .is_some_and(|n| n.contains_key(SCALE_TO_ZERO.0))
}

/// The DaemonSet in the shape of a Deployment (see the module comment). Its `replicas` are the
/// pods the DaemonSet controller schedules, 0 while scaled to zero, at least 1 until the
/// controller has seen the latest generation (so that a DaemonSet just written is never ready
/// at once); ready pods are the available ones, updated ones those of the current template.
///
/// A DaemonSet whose node selector matches no node (the controller, having seen its latest
/// generation, schedules no pod) is ready, as Flagger reads it: nothing is left to roll out.
/// It reads as one pod, scheduled, updated and available, since a Deployment of no replicas
/// is one scaled down, never ready.
pub(crate) fn as_deployment(ds: DaemonSet) -> Deployment {
    let scaled_down = scaled_to_zero(&ds);
    let mut status = ds.status.unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0) >= ds.metadata.generation.unwrap_or(0);
    if !scaled_down && observed && status.desired_number_scheduled == 0 {
        status.desired_number_scheduled = 1;
        status.current_number_scheduled = 1;
        status.updated_number_scheduled = Some(1);
        status.number_available = Some(1);
    }
    let desired = status.desired_number_scheduled;
    let replicas = match (scaled_down, observed) {
        (true, _) => 0,
        (false, true) => desired,
        (false, false) => desired.max(1),
    };
    let spec = ds.spec.unwrap_or_default();
    let mut template = spec.template;
    if let Some(pod) = template.spec.as_mut()
        && let Some(nodes) = pod.node_selector.as_mut()
    {
        nodes.remove(SCALE_TO_ZERO.0);
        if nodes.is_empty() {
            pod.node_selector = None;
        }
    }
    let strategy = spec.update_strategy.map(|u| DeploymentStrategy {
        type_: u.type_,
        rolling_update: u.rolling_update.map(|r| RollingUpdateDeployment {
            max_surge: r.max_surge,
            max_unavailable: r.max_unavailable,
        }),
    });
    Deployment {
        metadata: ds.metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: spec.selector,
            template,
            min_ready_seconds: spec.min_ready_seconds,
            revision_history_limit: spec.revision_history_limit,
            strategy,
            ..DeploymentSpec::default()
        }),
        status: Some(DeploymentStatus {
            observed_generation: status.observed_generation,
            replicas: Some(status.current_number_scheduled),
            ready_replicas: Some(status.number_available.unwrap_or(0)),
            available_replicas: status.number_available,
            updated_replicas: status.updated_number_scheduled,
            ..DeploymentStatus::default()
        }),
    }
}

/// The DaemonSet a Deployment-shaped primary (built by [`super::workloads::primary_deployment`]
/// from a DaemonSet's [`as_deployment`]) stands for: the fields Flagger copies to a primary
/// DaemonSet (selector, template, `minReadySeconds`, `revisionHistoryLimit`, `updateStrategy`).
pub(crate) fn from_deployment(dep: &Deployment) -> DaemonSet {
    let spec = dep.spec.clone().unwrap_or_default();
    let update_strategy = spec.strategy.map(|s| DaemonSetUpdateStrategy {
        type_: s.type_,
        rolling_update: s.rolling_update.map(|r| RollingUpdateDaemonSet {
            max_surge: r.max_surge,
            max_unavailable: r.max_unavailable,
        }),
    });
    DaemonSet {
        metadata: dep.metadata.clone(),
        spec: Some(DaemonSetSpec {
            selector: spec.selector,
            template: spec.template,
            min_ready_seconds: spec.min_ready_seconds,
            revision_history_limit: spec.revision_history_limit,
            update_strategy,
        }),
        status: None,
    }
}

/// The merge patch that scales a DaemonSet to zero (`up` false: the selector added) or back
/// (the selector removed); the user's own node selectors are left alone.
pub(crate) fn scale_patch(up: bool) -> Value {
    let value = if up {
        Value::Null
    } else {
        json!(SCALE_TO_ZERO.1)
    };
    json!({"spec": {"template": {"spec": {"nodeSelector": {SCALE_TO_ZERO.0: value}}}}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::workloads::{WorkloadProblem, readiness, revision, rolls_on_update};
    use crate::rollout::Readiness;
    use k8s_openapi::api::apps::v1::DaemonSetStatus;
    use std::collections::BTreeMap;

    fn daemon_set(node_selector: &[(&str, &str)]) -> DaemonSet {
        let nodes: BTreeMap<String, String> = node_selector
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "generation": 2},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "minReadySeconds": 5,
                "updateStrategy": {"type": "RollingUpdate",
                                   "rollingUpdate": {"maxUnavailable": 2}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "agent", "image": "agent:1"}],
                             "nodeSelector": nodes}
                }
            },
            "status": {"observedGeneration": 2, "desiredNumberScheduled": 3,
                       "currentNumberScheduled": 3, "numberReady": 3,
                       "numberMisscheduled": 0, "updatedNumberScheduled": 2,
                       "numberAvailable": 3}
        }))
        .unwrap()
    }

    #[test]
    fn the_scale_to_zero_selector_is_no_part_of_the_revision_and_reads_as_no_replicas() {
        let up = as_deployment(daemon_set(&[("disk", "ssd")]));
        let down = as_deployment(daemon_set(&[("disk", "ssd"), SCALE_TO_ZERO]));
        assert_eq!(revision(&up), revision(&down));
        assert_eq!(down.spec.as_ref().unwrap().replicas, Some(0));
        let nodes = down.spec.unwrap().template.spec.unwrap().node_selector;
        assert_eq!(nodes, Some(BTreeMap::from([("disk".into(), "ssd".into())])));
        // Only the added selector goes: none left is no selector at all.
        let alone = as_deployment(daemon_set(&[SCALE_TO_ZERO]));
        assert_eq!(revision(&alone), revision(&as_deployment(daemon_set(&[]))));
    }

    #[test]
    fn readiness_is_the_updated_and_available_pods_of_the_observed_generation() {
        let mut ds = daemon_set(&[]);
        assert_eq!(
            readiness(&as_deployment(ds.clone())),
            Readiness {
                ready: 2,
                desired: 3
            }
        );
        ds.metadata.generation = Some(3);
        assert_eq!(
            readiness(&as_deployment(ds.clone())),
            Readiness {
                ready: 0,
                desired: 3
            }
        );
        // A DaemonSet not yet seen by its controller is not ready, even with nothing scheduled.
        ds.status = Some(DaemonSetStatus::default());
        assert!(!readiness(&as_deployment(ds)).meets(100));
    }

    /// A DaemonSet whose node selector matches no node schedules no pod
    /// (`desiredNumberScheduled` 0, everything updated and available): Flagger's
    /// `isDaemonSetReady` finds it ready, so its initialisation or rollout does not wait for the
    /// progress deadline. Scaled to zero, the same DaemonSet has no replicas.
    #[test]
    fn a_daemon_set_that_schedules_no_pod_on_any_node_is_ready() {
        let mut ds = daemon_set(&[("gpu", "true")]);
        ds.status = Some(
            serde_json::from_value(json!({"observedGeneration": 2, "desiredNumberScheduled": 0,
                "currentNumberScheduled": 0, "numberReady": 0, "numberMisscheduled": 0,
                "updatedNumberScheduled": 0, "numberAvailable": 0}))
            .unwrap(),
        );
        assert!(readiness(&as_deployment(ds.clone())).meets(100));
        let pod = ds
            .spec
            .as_mut()
            .and_then(|s| s.template.spec.as_mut())
            .unwrap();
        pod.node_selector = Some(BTreeMap::from([(
            SCALE_TO_ZERO.0.to_string(),
            SCALE_TO_ZERO.1.to_string(),
        )]));
        assert_eq!(as_deployment(ds).spec.unwrap().replicas, Some(0));
    }

    #[test]
    fn the_primary_written_back_keeps_the_fields_flagger_copies() {
        let ds = daemon_set(&[("disk", "ssd")]);
        let back = from_deployment(&as_deployment(ds.clone()));
        let (want, got) = (ds.spec.unwrap(), back.spec.unwrap());
        assert_eq!(got.update_strategy, want.update_strategy);
        assert_eq!(got.min_ready_seconds, Some(5));
        assert_eq!(got.selector, want.selector);
        assert_eq!(got.template, want.template);
        assert!(back.status.is_none());
    }

    #[test]
    fn scaling_adds_or_removes_only_the_scale_to_zero_selector() {
        let key = SCALE_TO_ZERO.0;
        let down = scale_patch(false);
        assert_eq!(
            down["spec"]["template"]["spec"]["nodeSelector"],
            json!({key: "true"})
        );
        let up = scale_patch(true);
        assert_eq!(
            up["spec"]["template"]["spec"]["nodeSelector"],
            json!({key: null})
        );
    }

    #[test]
    fn a_daemon_set_updated_on_delete_is_refused() {
        let mut ds = daemon_set(&[]);
        assert_eq!(rolls_on_update(&as_deployment(ds.clone())), Ok(()));
        ds.spec.as_mut().unwrap().update_strategy = Some(DaemonSetUpdateStrategy {
            type_: Some("OnDelete".into()),
            rolling_update: None,
        });
        assert_eq!(
            rolls_on_update(&as_deployment(ds)),
            Err(WorkloadProblem::NotRollingUpdate {
                target: "agent".into()
            })
        );
    }
}
