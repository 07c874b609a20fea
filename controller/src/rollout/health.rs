//! Whether the workloads can be judged at all: a canary that will not become ready by waiting
//! (crash loops, images that cannot be pulled, readiness never passing) is rolled back at once;
//! workloads that are merely not ready yet hold the rollout until the progress deadline.

use super::PodState;
use super::tick::Tick;

/// Waiting reasons from which a container does not recover by waiting longer.
const FATAL_REASONS: &[&str] = &["InvalidImageName", "RunContainerError"];

/// The kubelet's reason for a container it is backing off from restarting.
const CRASH_LOOP: &str = "CrashLoopBackOff";

/// From how many restarts `CrashLoopBackOff` is a crash loop. The kubelet restarts a container
/// that exits at once and backs off (10s, doubling up to 5m) only from its second exit
/// (Kubernetes' pod lifecycle, "Container restarts"): `CrashLoopBackOff` with `restartCount` 1
/// is two exits, which one start-up race explains (the app up before its mesh sidecar, a
/// dependency still starting); with 2, the container has also failed after the first back-off.
/// Fewer restarts are given the [`GRACE`], as a transient reason. Flagger has no such rule to
/// follow: it reads no pods and judges only the Deployment's conditions, rolling back at
/// `ProgressDeadlineExceeded` (pkg/canary/deployment_ready.go, `isDeploymentReady`).
const CRASH_LOOP_RESTARTS: u32 = 2;

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

/// How a not-ready container is judged.
enum Judgement {
    /// It will not become ready by waiting.
    Fatal,
    /// It may, for [`GRACE`] from its pod's creation.
    Transient,
    /// It runs and fails its readiness probe.
    NotReady,
    /// It is starting (`ContainerCreating`, `PodInitializing`, ...): only the progress deadline
    /// applies.
    Starting,
}

fn judge(p: &PodState) -> Judgement {
    let reason = p.reason.as_str();
    if FATAL_REASONS.contains(&reason)
        || (reason == CRASH_LOOP && p.restarts >= CRASH_LOOP_RESTARTS)
    {
        Judgement::Fatal
    } else if TRANSIENT_REASONS.contains(&reason) || reason == CRASH_LOOP {
        Judgement::Transient
    } else if p.running_since.is_some() {
        Judgement::NotReady
    } else {
        Judgement::Starting
    }
}

impl Tick<'_> {
    /// A canary that will not become ready by waiting (flagger#1533): a container in a crash
    /// loop or that cannot be created, one whose image cannot be pulled, whose config is
    /// missing or that restarted once at start-up for longer than [`GRACE`] since its pod was
    /// created, or one that has run without passing its readiness probe for the analysis
    /// `interval` or, when longer, its probes' own budget (the startup probe's time counts, for
    /// `running_since` is the container's start). Rolled back at once rather than at
    /// the progress deadline.
    pub(super) fn failing_canary(&self) -> Option<String> {
        if self.obs.canary.meets(self.spec.canary_ready_threshold) {
            return None;
        }
        let interval = self.spec.interval.millis();
        let elapsed = |since: Option<super::Millis>, limit| {
            since.is_some_and(|t| self.now.saturating_sub(t) >= limit)
        };
        self.obs.canary_pods.iter().find_map(|p| {
            let with_message = |what: String| match p.message.as_str() {
                "" => what,
                m => format!("{what} ({m})"),
            };
            let what = match judge(p) {
                Judgement::Fatal => with_message(p.reason.clone()),
                Judgement::Transient if elapsed(p.created, GRACE) => with_message(format!(
                    "{} for over {}s since the pod was created",
                    p.reason,
                    GRACE / 1000
                )),
                Judgement::NotReady => {
                    let budget = p.probe_budget.unwrap_or(0);
                    if !elapsed(p.running_since, interval.max(budget)) {
                        return None;
                    }
                    if budget > interval {
                        format!(
                            "not ready after running for {}s, its startup and readiness \
                             probes' initialDelaySeconds + failureThreshold x periodSeconds",
                            budget / 1000
                        )
                    } else {
                        format!(
                            "not ready after running for the analysis interval of {}",
                            self.spec.interval
                        )
                    }
                }
                Judgement::Transient | Judgement::Starting => return None,
            };
            Some(format!(
                "canary pod {} container {}: {what}",
                p.pod, p.container
            ))
        })
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
