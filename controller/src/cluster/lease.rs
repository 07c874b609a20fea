//! Leader election with a `coordination.k8s.io/v1` Lease, so that two replicas never reconcile
//! at once.
//!
//! The rules are client-go's (`tools/leaderelection/leaderelection.go`):
//! - Timing: the lease duration is longer than the renew deadline, which is longer than the
//!   retry period (with client-go's jitter factor, 1.2). Kubernetes' own controllers use 15 s,
//!   10 s and 2 s.
//! - A candidate never trusts the times written in the Lease: they come from the holder's
//!   clock. It notes the local monotonic instant at which it first saw the current record (any
//!   change of holder, times or transitions counts as a renewal) and takes the Lease only when
//!   that record has not changed for a lease duration, or nobody holds it.
//! - The leader renews every retry period. When no renewal has succeeded within the renew
//!   deadline of the start of the last one that did, it stops leading. A candidate saw that
//!   renewal no earlier than it was sent, so it waits at least until the sender's start plus
//!   the lease duration: the old leader has stopped by then, with the difference between the
//!   two durations as margin for work in flight. This holds whatever the clocks read, as long
//!   as they run at about the same rate.
//! - Every call to the API server has a timeout (kube's client sets none for reads), and the
//!   leader's deadline is kept even while a call hangs.
//! - Writes carry the Lease's `resourceVersion`: of two candidates racing for an expired Lease,
//!   one gets a 409 and stays a candidate.
//!
//! Maintained crates were considered: kube-leader-election and kube-lease-manager both judge
//! expiry as the holder's `renewTime` plus the duration against the local wall clock (so a
//! skewed clock gives two leaders), and the crates built on older kube releases do not link
//! with this one.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::time::Instant;
use tracing::{info, warn};

/// client-go's `JitterFactor`: the renew deadline must leave room for a retry that runs late.
const JITTER_FACTOR: f64 = 1.2;

/// How long a Lease is held without renewal, how long the leader keeps trying to renew it, and
/// how often everyone retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
}

/// Timing that cannot keep two leaders apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error("the lease duration ({lease:?}) must be longer than the renew deadline ({renew:?})")]
    LeaseNotLongerThanDeadline { lease: Duration, renew: Duration },
    #[error(
        "the renew deadline ({renew:?}) must be longer than {JITTER_FACTOR} times the retry \
         period ({retry:?})"
    )]
    DeadlineTooShortForRetries { renew: Duration, retry: Duration },
    #[error("the retry period must be longer than zero")]
    NoRetryPeriod,
}

impl Timing {
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Result<Timing, TimingError> {
        if retry_period.is_zero() {
            return Err(TimingError::NoRetryPeriod);
        }
        if lease_duration <= renew_deadline {
            return Err(TimingError::LeaseNotLongerThanDeadline {
                lease: lease_duration,
                renew: renew_deadline,
            });
        }
        if renew_deadline <= retry_period.mul_f64(JITTER_FACTOR) {
            return Err(TimingError::DeadlineTooShortForRetries {
                renew: renew_deadline,
                retry: retry_period,
            });
        }
        Ok(Timing {
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }

    /// The proportions of Kubernetes' own controllers (15 s, 10 s, 2 s) for another lease
    /// duration.
    pub fn for_lease_duration(lease_duration: Duration) -> Result<Timing, TimingError> {
        Timing::new(
            lease_duration,
            lease_duration.mul_f64(2.0 / 3.0),
            lease_duration.mul_f64(2.0 / 15.0),
        )
    }

    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }

    pub fn renew_deadline(&self) -> Duration {
        self.renew_deadline
    }

    pub fn retry_period(&self) -> Duration {
        self.retry_period
    }

    /// The longest one API call may take: at least two tries fit in a renew deadline.
    pub fn call_timeout(&self) -> Duration {
        self.renew_deadline / 2
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Who competes for which Lease, and its timing.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica (its pod name).
    pub identity: String,
    pub timing: Timing,
}

/// The Lease record as last seen, and the local instant at which it was first seen so.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub record: LeaseSpec,
    pub since: Instant,
}

/// What a candidate does about a Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or its holder has not renewed it for a lease duration: take it.
    Take,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds it; it is theirs at least until `until`.
    Wait { holder: String, until: Instant },
}

/// Decides what `me` does about `lease` at the local instant `now`, given what was `observed`
/// before; returns the decision and what is observed now. Pure: it reads no clock, and judges
/// expiry by when the record last changed here, never by the times written in it.
pub fn decide(
    lease: Option<&LeaseSpec>,
    me: &str,
    observed: Option<&Observed>,
    now: Instant,
    timing: &Timing,
) -> (Decision, Option<Observed>) {
    let Some(record) = lease else {
        return (Decision::Take, None);
    };
    let seen = match observed {
        Some(o) if o.record == *record => o.clone(),
        _ => Observed {
            record: record.clone(),
            since: now,
        },
    };
    let holder = record.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return (Decision::Renew, Some(seen));
    }
    if holder.is_empty() {
        return (Decision::Take, Some(seen));
    }
    // The holder's own duration, but never less than ours: a record with a short, negative or
    // missing duration must not let us in before our own timing allows.
    let written = record
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let duration = written.max(timing.lease_duration);
    match seen.since.checked_add(duration) {
        Some(until) if until <= now => (Decision::Take, Some(seen)),
        // Past the end of the clock's range: the holder keeps it.
        until => {
            let until = until
                .or_else(|| now.checked_add(timing.lease_duration))
                .unwrap_or(now);
            (Decision::Wait { holder, until }, Some(seen))
        }
    }
}

/// What went wrong talking to the API server about the Lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{what} Lease {name}: {source}")]
    Api {
        what: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what} Lease {name}: no answer within {after:?}")]
    Timeout {
        what: &'static str,
        name: String,
        after: Duration,
    },
}

/// The outcome of one attempt to take or renew the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the Lease.
    Holding,
    /// Another replica holds it.
    HeldBy(String),
    /// Another replica wrote it between our read and our write.
    Raced,
}

/// Why a leader stopped leading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lost {
    /// No renewal succeeded within the renew deadline.
    NotRenewed,
    /// The Lease names another holder.
    TakenBy(String),
}

/// One replica's part in the election.
pub struct LeaderElection {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: std::sync::Mutex<Option<Observed>>,
}

impl LeaderElection {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        LeaderElection {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: std::sync::Mutex::new(None),
        }
    }

    /// Runs one API call under the call timeout.
    async fn call<T>(
        &self,
        what: &'static str,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LeaseError> {
        let after = self.config.timing.call_timeout();
        let name = self.config.name.clone();
        match tokio::time::timeout(after, request).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(source)) => Err(LeaseError::Api { what, name, source }),
            Err(_) => Err(LeaseError::Timeout { what, name, after }),
        }
    }

    fn observed(&self) -> Option<Observed> {
        self.observed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_observed(&self, observed: Option<Observed>) {
        *self
            .observed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = observed;
    }

    /// One attempt to take or renew the Lease.
    pub async fn try_hold(&self) -> Result<Attempt, LeaseError> {
        let current = self
            .call("reading", self.api.get_opt(&self.config.name))
            .await?;
        let now = Instant::now();
        let spec = current.as_ref().map(|l| l.spec.clone().unwrap_or_default());
        let observed = self.observed();
        let (decision, seen) = decide(
            spec.as_ref(),
            &self.config.identity,
            observed.as_ref(),
            now,
            &self.config.timing,
        );
        self.set_observed(seen);
        if let Decision::Wait { holder, .. } = decision {
            return Ok(Attempt::HeldBy(holder));
        }
        self.write(current, decision == Decision::Take).await
    }

    /// Creates the Lease, or replaces it (at the resourceVersion read) with this replica as
    /// holder and a fresh renewal.
    async fn write(&self, current: Option<Lease>, take: bool) -> Result<Attempt, LeaseError> {
        let me = &self.config.identity;
        let now = MicroTime(Timestamp::now());
        let seconds =
            i32::try_from(self.config.timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(me.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.call("creating", self.api.create(&PostParams::default(), &lease))
                    .await
            }
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if take {
                    spec.holder_identity = Some(me.clone());
                    spec.acquire_time = Some(now.clone());
                    let transitions = spec.lease_transitions.unwrap_or(0);
                    spec.lease_transitions = Some(transitions.saturating_add(1));
                }
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(now);
                let params = PostParams::default();
                self.call(
                    "renewing",
                    self.api.replace(&self.config.name, &params, &lease),
                )
                .await
            }
        };
        match result {
            Ok(_) => Ok(Attempt::Holding),
            Err(LeaseError::Api {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 409 => Ok(Attempt::Raced),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the Lease; returns the instant the successful attempt
    /// started, from which the renew deadline runs.
    pub async fn acquire(&self) -> Instant {
        loop {
            let started = Instant::now();
            match self.try_hold().await {
                Ok(Attempt::Holding) => {
                    info!(lease = %self.config.name, "became the leader");
                    return started;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.config.timing.retry_period).await;
        }
    }

    /// Renews the Lease every retry period, from a renewal that started at `renewed`; returns
    /// when this replica must stop leading.
    pub async fn keep(&self, mut renewed: Instant) -> Lost {
        let timing = self.config.timing;
        loop {
            // A deadline past the clock's range cannot happen with validated timing; stopping
            // at once is the safe reading of it.
            let deadline = renewed
                .checked_add(timing.renew_deadline)
                .unwrap_or(renewed);
            let attempt = async {
                tokio::time::sleep(timing.retry_period).await;
                let started = Instant::now();
                (started, self.renew().await)
            };
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(lease = %self.config.name, "not renewed within the renew deadline");
                    return Lost::NotRenewed;
                }
                (started, result) = attempt => match result {
                    Ok(Attempt::Holding) => renewed = started,
                    Ok(Attempt::HeldBy(holder)) => {
                        warn!(lease = %self.config.name, %holder, "the Lease names another holder");
                        return Lost::TakenBy(holder);
                    }
                    Ok(Attempt::Raced) => warn!(lease = %self.config.name, "renewal raced; retrying"),
                    Err(e) => warn!(error = %e, "renewing the lease; retrying"),
                },
            }
        }
    }

    /// One renewal by the leader: any other holder means the leadership is gone, however
    /// long ago this replica last saw the Lease change.
    async fn renew(&self) -> Result<Attempt, LeaseError> {
        let current = self
            .call("reading", self.api.get_opt(&self.config.name))
            .await?;
        let holder = current
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        if holder != self.config.identity {
            return Ok(Attempt::HeldBy(holder));
        }
        self.write(current, false).await
    }

    /// Gives the Lease up (on shutdown, once nothing it guards is running) so a standby
    /// replica takes over without waiting.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let Some(mut lease) = self
            .call("reading", self.api.get_opt(&self.config.name))
            .await?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        let params = PostParams::default();
        self.call(
            "releasing",
            self.api.replace(&self.config.name, &params, &lease),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn held_by(holder: &str, renewed: Timestamp, seconds: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: seconds,
            renew_time: Some(MicroTime(renewed)),
            ..LeaseSpec::default()
        }
    }

    fn wall(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    /// Runs `decide` over a sequence of (local second, lease) looks, carrying the observation.
    fn looks(me: &str, seq: &[(u64, Option<LeaseSpec>)]) -> Vec<Decision> {
        let start = Instant::now();
        let timing = Timing::default();
        let mut observed = None;
        seq.iter()
            .map(|(t, lease)| {
                let now = start + S * (*t as u32);
                let (d, seen) = decide(lease.as_ref(), me, observed.as_ref(), now, &timing);
                observed = seen;
                d
            })
            .collect()
    }

    fn is_wait(d: &Decision) -> bool {
        matches!(d, Decision::Wait { .. })
    }

    #[test]
    fn timing_needs_a_lease_longer_than_the_renew_deadline_and_that_longer_than_retries() {
        assert!(Timing::new(15 * S, 10 * S, 2 * S).is_ok());
        assert!(matches!(
            Timing::new(10 * S, 10 * S, 2 * S),
            Err(TimingError::LeaseNotLongerThanDeadline { .. })
        ));
        assert!(matches!(
            Timing::new(15 * S, 10 * S, 9 * S),
            Err(TimingError::DeadlineTooShortForRetries { .. })
        ));
        assert_eq!(
            Timing::new(15 * S, 10 * S, Duration::ZERO),
            Err(TimingError::NoRetryPeriod)
        );
        assert_eq!(Timing::for_lease_duration(15 * S), Ok(Timing::default()));
    }

    #[test]
    fn a_missing_or_released_lease_is_taken() {
        let released = LeaseSpec::default();
        assert_eq!(
            looks("a", &[(0, None), (1, Some(released))]),
            [Decision::Take, Decision::Take]
        );
    }

    #[test]
    fn the_holder_renews_its_own_lease() {
        let lease = held_by("a", wall(0), Some(15));
        assert_eq!(looks("a", &[(100, Some(lease))]), [Decision::Renew]);
    }

    #[test]
    fn a_lease_whose_holder_clock_is_behind_is_waited_on_for_a_full_lease_duration() {
        // Written an hour ago by the holder's clock; first seen here now.
        let lease = held_by("b", wall(-3600), Some(15));
        let d = looks(
            "a",
            &[
                (0, Some(lease.clone())),
                (14, Some(lease.clone())),
                (15, Some(lease)),
            ],
        );
        assert!(is_wait(&d[0]) && is_wait(&d[1]), "{d:?}");
        assert_eq!(d[2], Decision::Take);
    }

    #[test]
    fn a_lease_whose_holder_clock_is_ahead_expires_a_lease_duration_after_its_last_change() {
        let lease = held_by("b", Timestamp::MAX, Some(15));
        let d = looks("a", &[(0, Some(lease.clone())), (15, Some(lease))]);
        assert!(is_wait(&d[0]), "{d:?}");
        assert_eq!(d[1], Decision::Take);
    }

    #[test]
    fn every_change_of_the_record_restarts_the_wait() {
        let first = held_by("b", wall(0), Some(15));
        let renewed = held_by("b", wall(10), Some(15));
        let d = looks(
            "a",
            &[
                (0, Some(first)),
                (10, Some(renewed.clone())),
                (24, Some(renewed.clone())),
                (25, Some(renewed)),
            ],
        );
        assert!(d[..3].iter().all(is_wait), "{d:?}");
        assert_eq!(d[3], Decision::Take);
    }

    #[test]
    fn a_short_negative_or_missing_duration_in_the_lease_never_shortens_our_wait() {
        for seconds in [Some(1), Some(0), Some(-5), Some(i32::MIN), None] {
            let lease = held_by("b", wall(0), seconds);
            let d = looks("a", &[(0, Some(lease.clone())), (14, Some(lease))]);
            assert!(d.iter().all(is_wait), "{seconds:?}: {d:?}");
        }
    }

    #[test]
    fn an_absurdly_long_duration_keeps_the_holder_without_overflowing() {
        let lease = held_by("b", wall(0), Some(i32::MAX));
        let d = looks("a", &[(0, Some(lease.clone())), (1_000_000, Some(lease))]);
        assert!(d.iter().all(is_wait), "{d:?}");
    }
}
