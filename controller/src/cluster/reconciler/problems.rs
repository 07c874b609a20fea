//! Problem reporting: what cannot be acted on becomes a Warning Event and a status message,
//! and decisions become Events.

use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use tracing::warn;

use super::super::workloads::WorkloadProblem;
use super::super::{COMMAND_ANNOTATION, Error, Result, flagger, status};
use super::tick::Tick;
use crate::rollout::{EventReason, Phase, RolloutState, Severity};

/// Why a Canary cannot be acted on; reported, not retried as an error.
#[derive(Debug)]
pub(super) enum Problem {
    InvalidSpec(String),
    UnreadableState(String),
    TargetNotFound(String),
    Workload(WorkloadProblem),
    UnknownCommand(String),
    /// Objects of the rollout deleted or edited by hand, and put back (one line each).
    PutBack(Vec<String>),
    /// The primary was deleted during a rollout and the pod template last promoted to it is not
    /// recorded: recreating it from the target would run the unanalysed revision as primary.
    PrimaryLost {
        primary: String,
        target: String,
        promoted: String,
    },
    /// A Flagger Canary in this phase of a rollout: it is not taken over until Flagger ends it.
    MidRollout(String),
    /// MetricTemplates Fledge cannot query (one line each, naming the field and the value).
    UnsupportedMetricSource(Vec<String>),
    /// A Flagger Canary not taken over yet whose `spec.suspend` is true: left as Flagger leaves
    /// it, untouched.
    SuspendedBeforeTakeOver,
    /// A Flagger Canary whose phase changed less than a few intervals ago: Flagger may still run.
    JustEnded {
        phase: String,
        ended: String,
        until: String,
    },
}

impl Problem {
    fn reason(&self) -> &'static str {
        match self {
            Problem::InvalidSpec(_) => "InvalidSpec",
            Problem::UnreadableState(_) => "UnreadableStatus",
            Problem::TargetNotFound(_) => "TargetNotFound",
            Problem::Workload(WorkloadProblem::NoSelector { .. }) => "TargetWithoutSelector",
            Problem::Workload(WorkloadProblem::UnsupportedKind { .. }) => "UnsupportedTarget",
            Problem::Workload(WorkloadProblem::NotRollingUpdate { .. }) => "TargetNotRollingUpdate",
            Problem::UnknownCommand(_) => "UnknownCommand",
            Problem::PutBack(_) => "PutBack",
            Problem::PrimaryLost { .. } => "PrimaryTemplateUnknown",
            Problem::MidRollout(_) => "TakeOverRefused",
            Problem::UnsupportedMetricSource(_) => "UnsupportedMetricSource",
            Problem::JustEnded { .. } => "TakeOverPending",
            Problem::SuspendedBeforeTakeOver => "TakeOverSuspended",
        }
    }

    fn message(&self) -> String {
        match self {
            Problem::InvalidSpec(e) => format!("the Canary's spec is invalid:\n{e}"),
            Problem::UnreadableState(e) => format!(
                "status.state is not a rollout state ({e}); nothing is changed until it is \
                 cleared or fixed"
            ),
            Problem::TargetNotFound(target) => {
                format!("target {target} not found (spec.targetRef.name)")
            }
            Problem::Workload(p) => p.to_string(),
            Problem::UnknownCommand(c) => format!(
                "annotation {COMMAND_ANNOTATION}: unknown command `{c}`; expected promote or abort"
            ),
            Problem::PutBack(what) => {
                format!("{}; the rollout holds for this tick", what.join("; "))
            }
            Problem::PrimaryLost {
                primary,
                target,
                promoted,
            } => format!(
                "the primary Deployment {primary} was deleted during a rollout and its last \
                 promoted pod template is unknown (status.primaryTemplate was not recorded); the \
                 rollout holds: recreate {primary} from the promoted revision {promoted}, or set \
                 the target Deployment {target} back to that revision"
            ),
            Problem::UnsupportedMetricSource(what) => format!(
                "{}; nothing is changed until the Canary's metrics name only templates Fledge \
                 can query",
                what.join("; ")
            ),
            Problem::MidRollout(phase) => format!(
                "Flagger's rollout of this Canary is under way (status.phase {phase}): Fledge \
                 takes it over only between rollouts, and changes nothing until then. Let \
                 Flagger finish it with Fledge not reconciling Flagger's Canaries (run Fledge \
                 without --flagger-canaries, scale Flagger up until the phase is Succeeded or \
                 Failed, scale it down, then set the flag again)"
            ),
            Problem::SuspendedBeforeTakeOver => "spec.suspend is true: Flagger skips a suspended \
                 Canary before reading or writing anything, and Fledge does not take it over \
                 (nor change anything of it) until spec.suspend is false"
                .to_string(),
            Problem::JustEnded {
                phase,
                ended,
                until,
            } => format!(
                "Flagger's status.phase became {phase} at {ended}: Fledge takes the Canary over \
                 once it has stayed so for three intervals (at {until}), and changes nothing \
                 until then, in case Flagger still runs; make sure Flagger is scaled down"
            ),
        }
    }
}

impl Tick<'_> {
    /// A Warning Event and a status message, the first time this problem is seen.
    pub(super) async fn report(&self, problem: Problem) -> Result<Requeue> {
        let message = problem.message();
        warn!(reason = problem.reason(), %message, "cannot act on canary");
        let current = self.canary.status.as_ref();
        if current.and_then(|s| s.message.as_deref()) != Some(message.as_str()) {
            self.publish(EventType::Warning, problem.reason(), &message)
                .await;
            status::write(
                &self.api,
                self.canary,
                &status::stalled(current, problem.reason(), &message, self.now),
            )
            .await?;
        }
        Ok(Requeue::requeue(self.ctx.config.poll * 6))
    }

    /// Publishes an Event, and queues it for the event webhook with the Canary's phase and
    /// revision as recorded (see [`Self::publish_in`]).
    pub(super) async fn publish(&self, type_: EventType, reason: &str, message: &str) {
        self.publish_in(type_, reason, message, None).await;
    }

    /// Publishes an Event, and queues it for the event webhook (Flagger's `-event-webhook`,
    /// which is told of every Event) as of `state`, a decision's (else as recorded). A failure
    /// to publish is logged and counted (`fledge_reconcile_errors_total` with
    /// `error="event"`), never returned: by the time an Event is due, routes may have been
    /// written, and aborting would leave them unrecorded in the status.
    pub(super) async fn publish_in(
        &self,
        type_: EventType,
        reason: &str,
        message: &str,
        state: Option<&RolloutState>,
    ) {
        let warning = matches!(type_, EventType::Warning);
        let (phase, revision) = match state {
            Some(s) => (s.phase.to_string(), s.revision.clone()),
            None => {
                let status = self.canary.status.as_ref();
                let recorded = status::recorded_state(status).ok().flatten();
                let phase = status.map(|s| s.phase.clone()).unwrap_or_default();
                (phase, recorded.and_then(|s| s.revision))
            }
        };
        let revision = revision.unwrap_or_default();
        (self.ctx.alerts).event(self.canary, &phase, &revision, self.now, warning, message);
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note_of(message).to_string()),
            action: "Reconcile".into(),
            secondary: None,
        };
        // A recorder per Event: a recorder merges Events of the same reason into a series and
        // drops the later note, and two decisions of one reconcile often share a reason.
        let published = Recorder::new(self.ctx.client.clone(), self.ctx.reporter.clone())
            .publish(&event, &flagger::object_ref(self.canary))
            .await;
        if let Err(e) = published {
            let error = Error::PublishEvent(e);
            warn!(%error, reason, message, "event not published");
            self.ctx.metrics.reconcile_failed(&error);
        }
    }
}

/// The Events API refuses a note longer than 1024 bytes (not characters).
const NOTE_LIMIT: usize = 1024;

/// `message` cut to at most [`NOTE_LIMIT`] bytes, at a character boundary.
pub(crate) fn note_of(message: &str) -> &str {
    let mut end = message.len().min(NOTE_LIMIT);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// The Event reason for a decision: its own when it has one, else the phase it led to, or why
/// it halted.
pub(crate) fn event_reason(
    severity: Severity,
    phase: Phase,
    reason: Option<EventReason>,
) -> (EventType, &'static str) {
    if let Some(reason) = reason {
        let type_ = match severity {
            Severity::Warning => EventType::Warning,
            Severity::Normal => EventType::Normal,
        };
        return (type_, reason.as_str());
    }
    match (severity, phase) {
        (Severity::Warning, Phase::Failed) => (EventType::Warning, "RolledBack"),
        (Severity::Warning, _) => (EventType::Warning, "Halted"),
        (Severity::Normal, Phase::Initializing) => (EventType::Normal, "Initializing"),
        (Severity::Normal, Phase::Initialized) => (EventType::Normal, "Initialized"),
        (Severity::Normal, Phase::Waiting) => (EventType::Normal, "Waiting"),
        (Severity::Normal, Phase::Progressing) => (EventType::Normal, "Progressing"),
        (Severity::Normal, Phase::WaitingPromotion) => (EventType::Normal, "WaitingPromotion"),
        (Severity::Normal, Phase::Promoting) => (EventType::Normal, "Promoting"),
        (Severity::Normal, Phase::Finalising) => (EventType::Normal, "Finalising"),
        (Severity::Normal, Phase::Succeeded) => (EventType::Normal, "Succeeded"),
        (Severity::Normal, Phase::Failed) => (EventType::Normal, "Failed"),
        (Severity::Normal, Phase::Terminating | Phase::Terminated) => {
            (EventType::Normal, "Terminating")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_note_is_cut_to_1024_bytes_at_a_character_boundary() {
        // Three bytes a character: 1000 characters are 3000 bytes.
        let long = "é€".repeat(500);
        let note = note_of(&long);
        assert!(note.len() <= NOTE_LIMIT, "{} bytes", note.len());
        assert!(
            note.len() > NOTE_LIMIT - 4,
            "cut no more than needed: {}",
            note.len()
        );
        assert!(long.starts_with(note));
        assert_eq!(note_of("short"), "short");
    }

    #[test]
    fn a_rollback_is_reported_as_a_warning_named_rolled_back() {
        assert_eq!(
            event_reason(Severity::Warning, Phase::Failed, None),
            (EventType::Warning, "RolledBack")
        );
        assert_eq!(
            event_reason(Severity::Warning, Phase::Progressing, None),
            (EventType::Warning, "Halted")
        );
    }

    #[test]
    fn an_event_with_a_reason_of_its_own_is_recorded_under_it() {
        assert_eq!(
            event_reason(
                Severity::Warning,
                Phase::Progressing,
                Some(EventReason::ProgressDeadlineTooShort)
            ),
            (EventType::Warning, "ProgressDeadlineTooShort")
        );
    }
}
