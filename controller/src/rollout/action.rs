//! What the core asks the shell to do, in order: routes, scaling, promotion, hooks, Events and the
//! finalisation of a deleted Canary. The shell carries them out; it does not second-guess them.

use serde::{Deserialize, Serialize};

use crate::spec::HookGate;

/// Whether an event is routine or needs attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Severity {
    Normal,
    Warning,
}

/// Why an Event is recorded, when the phase it leads to does not say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventReason {
    /// The forecast at the first look: the statistical judge is not expected to decide within
    /// the progress deadline (the `Forecast` condition's reason when `False`).
    ProgressDeadlineTooShort,
}

impl EventReason {
    /// The reason as Kubernetes records it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::ProgressDeadlineTooShort => "ProgressDeadlineTooShort",
        }
    }
}

/// What the shell must do, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Action {
    /// Clone the target into the primary (and its Services); the apex Service and the routes
    /// move to it with the `SetRoutes` that follows once it is ready.
    InitializePrimary,
    /// Scale the canary up to its desired replicas, or down to zero.
    ScaleCanary { up: bool },
    /// Route `primary`/`canary` percent of traffic; mirror a percentage to the canary; with
    /// `matched`, requests matching the A/B rules go to the canary.
    SetRoutes {
        primary: u8,
        canary: u8,
        mirror: Option<u8>,
        matched: bool,
    },
    /// Copy the canary's template to the primary.
    PromotePrimary,
    /// Call these hooks without waiting on their answer (post-rollout).
    RunHooks { gate: HookGate },
    /// Record a Kubernetes Event (and notify `event` hooks); its reason is `reason` when given,
    /// else the shell names it from the severity and the phase.
    Event {
        severity: Severity,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<EventReason>,
    },
    /// The Canary is going away: routes back to the primary; with `revert`, the original
    /// workload is restored (scaled up, primary removed).
    Finalize { revert: bool },
}
