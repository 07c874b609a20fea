//! What the shell tells the core on each tick (the workloads' readiness, the canary's pods that
//! are not ready, metric readings, hook answers, a deletion or an operator's command), and what
//! the core asks it to gather first. It decides nothing; the judgements live in the tick.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Millis;
use crate::analysis::MetricReading;
use crate::spec::HookGate;

/// Ready replicas of a workload against those desired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: u32,
    pub desired: u32,
}

impl Readiness {
    pub fn all(replicas: u32) -> Self {
        Readiness {
            ready: replicas,
            desired: replicas,
        }
    }

    /// At least `threshold` percent of the desired replicas are ready (and there are some).
    pub fn meets(self, threshold: u8) -> bool {
        self.desired > 0 && self.ready as u64 * 100 >= threshold as u64 * self.desired as u64
    }
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ready", self.ready, self.desired)
    }
}

/// A container of a canary pod that is not ready.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub pod: String,
    pub container: String,
    /// The kubelet's reason: why the container waits (`CrashLoopBackOff`, `ImagePullBackOff`,
    /// ...), or `NotReady` for one that runs and fails its readiness probe.
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// For `NotReady`: since when it has been running (its startup probe, if any, passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<Millis>,
    /// When the pod was created: the grace of a reason that may pass by itself (an image
    /// pull, a missing Secret) is measured from it, so a restarted controller does not
    /// restart the grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Millis>,
    /// The container's `restartCount`: a crash loop is told from one restart at start-up by it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// How long the container may run before its readiness probe passes: its startup and
    /// readiness probes' `initialDelaySeconds + failureThreshold x periodSeconds`, from its pod's
    /// spec; `None` without either probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_budget: Option<Millis>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A webhook's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome", content = "reason")]
pub enum HookOutcome {
    /// HTTP 2xx.
    Passed,
    /// Anything else, with why (status, timeout, connection refused).
    Failed(String),
}

/// An operator's command (from `fledge-controller promote|abort`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Command {
    /// Open whichever confirm gate the rollout waits at.
    Approve,
    /// Roll back now.
    Abort,
}

/// What the shell gathered for one tick.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// The target's current revision (a hash of its pod template).
    pub revision: String,
    pub canary: Readiness,
    /// The primary's readiness; after a promotion, ready means its rollout has completed.
    pub primary: Readiness,
    /// Readings by metric name, for the metrics [`wants`] asked for.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricReading>,
    /// Answers by webhook name, for the hooks [`wants`] asked for.
    #[serde(default)]
    pub hooks: BTreeMap<String, HookOutcome>,
    /// The canary's containers that are not ready and why, as the shell saw them (only asked
    /// for while a rollout waits on the canary): the core decides which ones fail the rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canary_pods: Vec<PodState>,
    /// The Canary is being deleted.
    #[serde(default)]
    pub deleting: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Command>,
    /// Why the routing object is not yet in force, when the shell found it so: a Gateway API
    /// parent that has not accepted the HTTPRoute's current generation. The rollout holds
    /// (counted against the progress deadline) rather than shift traffic its parent ignores,
    /// and scales the canary down after a promotion only once the routes are in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes_not_accepted: Option<String>,
}

/// What the shell must gather before calling [`advance`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wants {
    /// Query every metric of the spec.
    pub metrics: bool,
    /// Statistical judge: read counts and histograms over `[since, now]` (the current step)
    /// rather than each metric's own window.
    pub since: Option<Millis>,
    /// Call every hook of these types and report each answer by name.
    pub hooks: Vec<HookGate>,
}
