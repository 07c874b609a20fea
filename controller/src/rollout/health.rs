//! Whether the workloads can be judged at all: a canary that will not become ready by waiting
//! (crash loops, images that cannot be pulled, readiness never passing) is rolled back at once;
//! workloads that are merely not ready yet hold the rollout until the progress deadline.

use super::PodState;
use super::tick::Tick;

/// Waiting reasons from which a container does not recover by waiting longer.
const FATAL_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

impl Tick<'_> {
    /// A canary that will not become ready by waiting (flagger#1533): a container that
    /// crash-loops or cannot be pulled or created, or one that has run an `interval` without
    /// passing its readiness probe. Rolled back at once rather than at the progress deadline.
    pub(super) fn failing_canary(&self) -> Option<String> {
        if self.obs.canary.meets(self.spec.canary_ready_threshold) {
            return None;
        }
        let interval = self.spec.interval.millis();
        let fatal = |p: &PodState| FATAL_REASONS.contains(&p.reason.as_str());
        let failing = |p: &&PodState| {
            fatal(p)
                || p.running_since
                    .is_some_and(|t| self.now.saturating_sub(t) >= interval)
        };
        let p = self.obs.canary_pods.iter().find(failing)?;
        let what = if fatal(p) {
            p.reason.clone()
        } else {
            format!(
                "not ready after running for the analysis interval of {}",
                self.spec.interval
            )
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
