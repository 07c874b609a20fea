//! What a rollout remembers between ticks: the phase, the traffic it has given the canary, the
//! revisions it has seen and promoted, and the evidence so far. It decides nothing; it is what
//! the Canary's status records, so a shell that restarts resumes exactly where it was.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Forecast;
use super::StateVersion;
use crate::analysis::MetricResult;
use crate::analysis::statistical::Evidence;

/// Milliseconds on the shell's clock (Unix time in a cluster, virtual time in the simulator).
pub type Millis = u64;

/// Flagger's phases, with the same names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Creating the primary from the target and waiting for it to be ready.
    #[default]
    Initializing,
    /// The primary serves all traffic; the canary is scaled to zero (on the tick after traffic
    /// moved, see `RolloutState::scale_down_pending`); waiting for a new revision.
    Initialized,
    /// A new revision waits for confirm-rollout hooks.
    Waiting,
    /// The canary is being analysed and traffic shifted to it.
    Progressing,
    /// The analysis passed; waiting for confirm-promotion hooks.
    WaitingPromotion,
    /// The canary's template has been copied to the primary; traffic returns to the primary.
    Promoting,
    /// Traffic is back on the primary; the canary is being scaled to zero.
    Finalising,
    /// The last rollout was promoted.
    Succeeded,
    /// The last rollout was rolled back.
    Failed,
    /// The Canary is being deleted; routing is being restored.
    Terminating,
    /// The Canary has been deleted and routing restored.
    Terminated,
}

impl Phase {
    /// Phases in which a rollout is under way.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Phase::Waiting
                | Phase::Progressing
                | Phase::WaitingPromotion
                | Phase::Promoting
                | Phase::Finalising
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Everything needed to resume a rollout; stored in the Canary's status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    /// The format this state is recorded in; see [`RolloutState::restore`].
    #[serde(default = "unversioned")]
    pub version: StateVersion,
    pub phase: Phase,
    /// Percentage of live traffic on the canary; the primary has the rest.
    pub canary_weight: u8,
    /// Percentage of traffic mirrored to the canary, when mirroring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<u8>,
    /// A/B testing: requests matching the spec's rules go to the canary.
    #[serde(default)]
    pub matched: bool,
    /// Completed analysis iterations (blue/green, A/B).
    #[serde(default)]
    pub iterations: u32,
    #[serde(default)]
    pub failed_checks: u32,
    /// The target revision the state refers to (Flagger's `lastAppliedSpec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The revision last promoted (Flagger's `lastPromotedSpec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_revision: Option<String>,
    /// When the phase last changed.
    #[serde(default)]
    pub phase_since: Millis,
    /// When the last analysis step ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<Millis>,
    /// When the statistical judge last looked (at a step or between steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_look: Option<Millis>,
    /// Since when the rollout has been unable to progress (workloads not ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_since: Option<Millis>,
    /// When the current step began: the canary's weight or iteration last changed.
    #[serde(default)]
    pub step_since: Millis,
    /// Since when the statistical judge has held the current step undecided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_since: Option<Millis>,
    /// Judged by thresholds: the forecast at the first look said the statistical judge cannot
    /// decide within the progress deadline at the traffic seen, or it reached the deadline
    /// without a decision, its metrics readable. From then on each step lasts `interval` and
    /// is judged by the metrics' own thresholds over that interval's traffic, failed checks
    /// counted against `threshold`, as Flagger judges, except that a success rate under its
    /// minimum fails only when the interval's counts show it at `alpha` (a regression the
    /// statistical judge shows still rolls back at once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub threshold_fallback: bool,
    /// The statistical judge's evidence.
    #[serde(default, skip_serializing_if = "Evidence::is_empty")]
    pub evidence: Evidence,
    /// The statistical judge's forecast of this rollout: unknown from its start until its
    /// first look has seen the traffic rate; with a compared latency metric, provisional (the
    /// error rate's alone) until the judge has fixed its latency bound from enough of the
    /// primary's observations; then the forecast at the rate of that look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<ForecastStatus>,
    /// The pre-rollout hooks of this rollout have passed.
    #[serde(default)]
    pub pre_rollout_done: bool,
    /// The spec's `suspend` has been noticed (so it is reported once).
    #[serde(default)]
    pub suspended: bool,
    /// Onboarding moved traffic to the primary; the target is scaled to zero on a later tick,
    /// once the routes that point at the primary have been written and it is still ready.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scale_down_pending: bool,
    /// Session affinity's cookies (`analysis.sessionAffinity`), kept across restarts so that
    /// users pinned to the canary stay pinned.
    #[serde(default, skip_serializing_if = "SessionCookies::is_empty")]
    pub cookies: SessionCookies,
    /// The last reason given, for the status.
    #[serde(default)]
    pub message: String,
    /// The last analysis, metric by metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<MetricResult>,
}

fn unversioned() -> StateVersion {
    StateVersion::UNVERSIONED
}

impl RolloutState {
    pub fn primary_weight(&self) -> u8 {
        100 - self.canary_weight
    }
}

/// Session affinity's cookies, each `name=value` as Flagger records them in its status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCookies {
    /// Set by the canary's answers while it has traffic; requests carrying it go to the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// The canary cookie of the rollout that ended last: once traffic is back on the primary
    /// the routes answer requests carrying it with an expired copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// With `primaryCookieName`: set by the primary's answers during a rollout, requests
    /// carrying it stay on the primary. Chosen once, as Flagger does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
}

impl SessionCookies {
    pub fn is_empty(&self) -> bool {
        self.canary.is_none() && self.previous.is_none() && self.primary.is_none()
    }
}

/// What a rollout under the statistical judge expects, as its status reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ForecastStatus {
    /// The traffic rate is not known before the rollout's first look.
    Unknown,
    /// The forecast at the first look's rate without the latency metrics: the judge expects
    /// to decide on the error rate alone, and the latency's shape is not known until the judge
    /// has fixed its slow bound (`LatencyTestConfig::bound_observations` primary observations;
    /// a shape from fewer is noise in the tail the test reads). Forecast again then.
    Provisional { forecast: Forecast },
    /// The forecast at the rate seen at the first look, and its warning when the progress
    /// deadline is expected to roll a healthy canary back.
    Known {
        forecast: Forecast,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warning: Option<String>,
    },
}
