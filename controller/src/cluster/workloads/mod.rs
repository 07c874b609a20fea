//! The workloads of a rollout, the way Flagger arranges them: the target Deployment is the canary;
//! its clone `<target>-primary` serves the stable version; the Services `<svc>`, `<svc>-primary`
//! and `<svc>-canary` select them (built in [`super::services`]); an HPA on the target is
//! mirrored by `<hpa>-primary`.
//!
//! The objects are built by pure functions (tested without a cluster) and written with
//! server-side apply under the field manager `fledge`, so a write repeated after a restart changes
//! nothing.

mod api;
mod primary;
mod readiness;
mod revision;
mod target;
#[cfg(test)]
mod tests;

use std::fmt;

pub use super::selectors::{
    Selectors, primary_pod_spec, rewritten_keys, selectors, target_pod_spec,
};
pub use super::services::{discovered_ports, services};
pub use api::Workloads;
pub use primary::{primary_deployment, primary_hpa, primary_name};
pub use readiness::{pod_states, readiness};
pub(crate) use revision::fnv1a;
pub use revision::{current_template_hash, pods_of_template, revision};
pub use target::{rolls_on_update, selector_labels};

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
