//! Whether the workloads can be judged at all: a canary that will not become ready by waiting
//! (crash loops, images that cannot be pulled, readiness never passing) is rolled back at once;
//! workloads that are merely not ready yet hold the rollout until the progress deadline.

use super::PodState;
use super::tick::Tick;

/// Waiting reasons from which a container does not recover by waiting longer.
const FATAL_REASONS: &[&str] = &["CrashLoopBackOff", "InvalidImageName", "RunContainerError"];

/// Waiting reasons that often pass by themselves: a registry hiccup (`ErrImagePull`, then the
/// kubelet's `ImagePullBackOff` between attempts), a Secret or ConfigMap that GitOps creates
/// seconds after the Deployment (`CreateContainerConfigError`), a runtime that has not yet
/// released a container name (`CreateContainerError`: containerd's "failed to reserve container
/// name", which clears on a later sync). Fatal only after [`GRACE`].
const TRANSIENT_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// How long a pod may wait for a transient reason to pass, from its creation. The kubelet
/// retries a failed pull after a back-off that starts at 10s and doubles (to at most 5m), and
/// a container whose config is missing on its next pod sync: two minutes hold four or five
/// attempts (at about 0, 10, 30 and 70s, plus the pulls themselves), enough to ride out a
/// hiccup; what is still failing then is not one. Flagger waits for the Deployment's
/// `progressDeadlineSeconds` (10 minutes by default) to report `ProgressDeadlineExceeded`,
/// the slow rollback of flagger#1533; the progress deadline still applies here when shorter.
pub(super) const GRACE: super::Millis = 120_000;

impl Tick<'_> {
    /// A canary that will not become ready by waiting (flagger#1533): a container that
    /// crash-loops or cannot be created, one whose image cannot be pulled or whose config is
    /// missing for longer than [`GRACE`] since its pod was created, or one that has run an
    /// `interval` without passing its readiness probe. Rolled back at once rather than at the
    /// progress deadline.
    pub(super) fn failing_canary(&self) -> Option<String> {
        if self.obs.canary.meets(self.spec.canary_ready_threshold) {
            return None;
        }
        let interval = self.spec.interval.millis();
        let elapsed = |since: Option<super::Millis>, limit| {
            since.is_some_and(|t| self.now.saturating_sub(t) >= limit)
        };
        let fatal = |p: &PodState| {
            FATAL_REASONS.contains(&p.reason.as_str())
                || (TRANSIENT_REASONS.contains(&p.reason.as_str()) && elapsed(p.created, GRACE))
        };
        let failing = |p: &&PodState| fatal(p) || elapsed(p.running_since, interval);
        let p = self.obs.canary_pods.iter().find(failing)?;
        let what = if !fatal(p) {
            format!(
                "not ready after running for the analysis interval of {}",
                self.spec.interval
            )
        } else if TRANSIENT_REASONS.contains(&p.reason.as_str()) {
            format!(
                "{} for over {}s since the pod was created",
                p.reason,
                GRACE / 1000
            )
        } else {
            p.reason.clone()
        };
        let detail = if p.message.is_empty() || !fatal(p) {
            String::new()
        } else {
            format!(" ({})", p.message)
        };
        Some(format!(
            "canary pod {} container {}: {what}{detail}",
            p.pod, p.container
        ))
    }

    /// Both workloads must be ready for the analysis to mean anything; a rollout that stays
    /// stalled past the progress deadline is rolled back.
    pub(super) fn workloads_ready(&mut self) -> bool {
        let (canary, primary) = (self.obs.canary, self.obs.primary);
        let problem = if !canary.meets(self.spec.canary_ready_threshold) {
            format!(
                "canary {} not ready: {canary}, need {}%",
                self.target(),
                self.spec.canary_ready_threshold
            )
        } else if !primary.meets(self.spec.primary_ready_threshold) {
            format!(
                "primary {}-primary not ready: {primary}, need {}%",
                self.target(),
                self.spec.primary_ready_threshold
            )
        } else {
            self.s.stalled_since = None;
            return true;
        };
        self.stalled(problem);
        false
    }

    /// The rollout cannot progress: wait, or roll back once the progress deadline has passed.
    pub(super) fn stalled(&mut self, problem: String) {
        let since = *self.s.stalled_since.get_or_insert(self.now);
        if self.now.saturating_sub(since) >= self.spec.progress_deadline.millis() {
            self.rollback(format!(
                "{problem}; progress deadline of {} exceeded",
                self.spec.progress_deadline
            ));
        } else {
            self.s.message = format!("waiting: {problem}");
        }
    }
}
