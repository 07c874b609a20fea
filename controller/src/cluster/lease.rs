//! Leader election with a `coordination.k8s.io/v1` Lease, so that two replicas never reconcile
//! at once.
//!
//! # Expected flow
//! 1. Each replica tries to take the Lease every `renew` interval: it takes a Lease that does
//!    not exist, that it already holds, or whose holder has not renewed it for `duration`.
//! 2. The leader renews it every `renew` interval and starts reconciling.
//! 3. A leader that fails to renew for `duration` (or sees another holder) stops: the process
//!    exits and restarts as a candidate. On SIGTERM it releases the Lease so a standby takes
//!    over at once.
//!
//! # Guarantees
//! Writes carry the Lease's `resourceVersion`: of two candidates racing for an expired Lease,
//! one gets a 409 and stays a candidate.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::{info, warn};

use super::{Error, Result};

/// Who competes for which Lease, and its timing.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica (its pod name).
    pub identity: String,
    /// How long a Lease not renewed stays with its holder.
    pub duration: Duration,
    /// How often the holder renews and candidates retry.
    pub renew: Duration,
}

/// What a candidate does about a Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or its holder let it expire: take it.
    Take,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds it and renews it.
    Wait { holder: String },
}

/// Decides what `me` does about `lease` at `now`. Pure.
pub fn decide(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Take;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Take;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(t) if t + duration > now => Decision::Wait { holder },
        _ => Decision::Take,
    }
}

/// One replica's part in the election.
pub struct LeaderElection {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElection {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        LeaderElection {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    fn error(&self, source: kube::Error) -> Error {
        Error::Lease {
            name: self.config.name.clone(),
            source,
        }
    }

    /// One attempt to take or renew the Lease at `now`; whether this replica holds it after.
    pub async fn try_hold(&self, now: Timestamp) -> Result<bool> {
        let current = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.error(e))?;
        let me = &self.config.identity;
        let decision = decide(current.as_ref().and_then(|l| l.spec.as_ref()), me, now);
        let seconds = i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX);
        let result = match (&decision, current) {
            (Decision::Wait { .. }, _) => return Ok(false),
            (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(me.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if *decision == Decision::Take {
                    spec.holder_identity = Some(me.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(MicroTime(now));
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            // Another candidate wrote first.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_hold(Timestamp::now()).await {
                Ok(true) => {
                    info!(lease = %self.config.name, "became the leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.config.renew).await;
        }
    }

    /// Renews the Lease until it is lost: returns when this replica must stop leading.
    pub async fn keep(&self) {
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.renew).await;
            match self.try_hold(Timestamp::now()).await {
                Ok(true) => last = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(lease = %self.config.name, "leadership lost to another replica");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "renewing the lease");
                    if last.elapsed() >= self.config.duration {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the Lease up (on shutdown) so a standby replica takes over without waiting.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.error(e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            ..LeaseSpec::default()
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn a_missing_or_released_lease_is_taken() {
        assert_eq!(decide(None, "a", at(0)), Decision::Take);
        let released = LeaseSpec::default();
        assert_eq!(decide(Some(&released), "a", at(0)), Decision::Take);
    }

    #[test]
    fn a_lease_renewed_by_another_replica_is_waited_on_until_it_expires() {
        let lease = held_by("b", at(0));
        assert_eq!(
            decide(Some(&lease), "a", at(14)),
            Decision::Wait { holder: "b".into() }
        );
        assert_eq!(decide(Some(&lease), "a", at(15)), Decision::Take);
    }

    #[test]
    fn the_holder_renews_its_own_lease() {
        let lease = held_by("a", at(0));
        assert_eq!(decide(Some(&lease), "a", at(100)), Decision::Renew);
    }
}
