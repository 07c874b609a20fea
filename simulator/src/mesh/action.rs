//! The harness's levers: the changes a rollout or a scenario's timeline makes to a running mesh
//! (weights and header matches as Flagger writes them into a route, scaling a Deployment, promoting
//! the canary's spec to the primary, changing a client's rate, stopping a workload's certificate
//! rotation, and the faults a chaos tool injects into pods). Each is checked when it is given, so a
//! scheduled one cannot fail later.

use super::build::{MAX_PODS, RATE_RULE, Version, valid_rate, validate_behaviour};
use super::config::Behaviour;
use super::dist::ServiceTime;
use super::event::Ev;
use super::{CertId, ClientId, Mesh, MeshError, PodId, ServiceId, VersionId, Workload, invalid};
use crate::engine::SimTime;

/// A change to the mesh, applied now ([`Mesh::apply`]) or at a virtual time ([`Mesh::schedule`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Sets the error probability of every pod of a version.
    SetErrorRate {
        /// Version.
        version: VersionId,
        /// Probability.
        rate: f64,
    },
    /// Sets the service time of a version.
    SetServiceTime {
        /// Version.
        version: VersionId,
        /// Distribution.
        service_time: ServiceTime,
    },
    /// Replaces a version's behaviour (promotion copies the canary's to the primary).
    SetBehaviour {
        /// Version.
        version: VersionId,
        /// Behaviour.
        behaviour: Behaviour,
    },
    /// Overrides the error probability of one pod (`None` clears the override).
    SetPodErrorRate {
        /// Version.
        version: VersionId,
        /// Pod index within the version.
        pod: u32,
        /// Probability.
        rate: Option<f64>,
    },
    /// Multiplies one pod's service times by `factor` (a slow node); 1.0 restores it.
    SetPodSlowdown {
        /// Version.
        version: VersionId,
        /// Pod index within the version.
        pod: u32,
        /// Service-time multiplier.
        factor: f64,
    },
    /// Crashes a pod: its connections reset, in-flight requests fail; it restarts later if set.
    CrashPod {
        /// Version.
        version: VersionId,
        /// Pod index within the version.
        pod: u32,
        /// Restart after this long.
        restart_after: Option<SimTime>,
    },
    /// Makes a pod a black hole (new connections time out, requests are never answered) or heals it.
    BlackHole {
        /// Version.
        version: VersionId,
        /// Pod index within the version.
        pod: u32,
        /// On or off.
        on: bool,
    },
    /// Scales a version to `pods` pods.
    Scale {
        /// Version.
        version: VersionId,
        /// Pod count.
        pods: u32,
    },
    /// Sets a client's request rate.
    SetRate {
        /// Client.
        client: ClientId,
        /// Requests per second.
        rps: f64,
    },
    /// Stops (false) or resumes (true) certificate rotation of a workload; a stopped one expires.
    CertRotation {
        /// Workload.
        workload: Workload,
        /// Rotation enabled.
        enabled: bool,
    },
}

impl Mesh {
    /// Queues `action` at virtual time `at` (now if in the past). It is checked now.
    pub fn schedule(&mut self, at: SimTime, action: Action) -> Result<(), MeshError> {
        self.check_action(&action)?;
        let idx = self.actions.len() as u32;
        self.actions.push(Some(action));
        self.q.schedule_at(at, Ev::Action { index: idx });
        Ok(())
    }

    pub(super) fn version_check(&self, v: VersionId) -> Result<&Version, MeshError> {
        self.versions
            .get(v.0 as usize)
            .ok_or(MeshError::UnknownVersion {
                service: "?".into(),
                version: v.0.to_string(),
            })
    }

    pub(super) fn check_action(&self, a: &Action) -> Result<(), MeshError> {
        let prob = |p: f64| (0.0..=1.0).contains(&p);
        match a {
            Action::SetErrorRate { version, rate } => {
                self.version_check(*version)?;
                if !prob(*rate) {
                    return Err(invalid("error rate", "must be within [0, 1]"));
                }
            }
            Action::SetServiceTime {
                version,
                service_time,
            } => {
                self.version_check(*version)?;
                service_time
                    .validate()
                    .map_err(|r| invalid("service time", r))?;
            }
            Action::SetBehaviour { version, behaviour } => {
                self.version_check(*version)?;
                validate_behaviour(behaviour).map_err(|r| invalid("behaviour", r))?;
                self.resolve_calls(*version, &behaviour.calls)?;
            }
            Action::SetPodErrorRate { version, pod, rate } => {
                self.pod_check(*version, *pod)?;
                if rate.is_some_and(|r| !prob(r)) {
                    return Err(invalid("error rate", "must be within [0, 1]"));
                }
            }
            Action::SetPodSlowdown {
                version,
                pod,
                factor,
            } => {
                self.pod_check(*version, *pod)?;
                if !(factor.is_finite() && *factor > 0.0) {
                    return Err(invalid("slowdown", "must be a positive number"));
                }
            }
            Action::CrashPod { version, pod, .. } | Action::BlackHole { version, pod, .. } => {
                self.pod_check(*version, *pod)?;
            }
            Action::Scale { version, pods } => {
                self.version_check(*version)?;
                if *pods > MAX_PODS {
                    return Err(invalid(
                        "scale",
                        format!("at most {MAX_PODS} pods per version"),
                    ));
                }
            }
            Action::SetRate { client, rps } => {
                if client.0 as usize >= self.clients.len() {
                    return Err(MeshError::UnknownClient(client.0));
                }
                if !valid_rate(*rps) {
                    return Err(invalid("rate", RATE_RULE));
                }
            }
            Action::CertRotation { workload, .. } => {
                self.cert_index(*workload)?;
            }
        }
        Ok(())
    }

    /// The pod of a checked action: `pod` is its index within `version`.
    fn pod_at(&self, version: VersionId, pod: u32) -> PodId {
        self.versions[version].pods[pod as usize]
    }

    pub(super) fn pod_check(&self, v: VersionId, pod: u32) -> Result<PodId, MeshError> {
        let ver = self.version_check(v)?;
        ver.pods
            .get(pod as usize)
            .copied()
            .ok_or(MeshError::UnknownPod {
                version: ver.name.clone(),
                pod,
            })
    }

    pub(super) fn cert_index(&self, w: Workload) -> Result<CertId, MeshError> {
        match w {
            Workload::Client(c) if (c.0 as usize) < self.clients.len() => Ok(self.client_cert(c)),
            Workload::Client(c) => Err(MeshError::UnknownClient(c.0)),
            Workload::Version(v) => {
                self.version_check(v)?;
                Ok(self.version_cert(v))
            }
        }
    }

    /// Promotion: the primary's pods take the canary's current behaviour.
    pub fn promote(&mut self, service: ServiceId) -> Result<(), MeshError> {
        let (p, c) = self.primary_canary(service).ok_or_else(|| {
            invalid(
                "promote",
                "the service needs versions named as its primary and canary",
            )
        })?;
        let behaviour = self.versions[c].behaviour.clone();
        self.apply(Action::SetBehaviour {
            version: p,
            behaviour,
        })
    }

    /// Performs `action` now.
    pub fn apply(&mut self, action: Action) -> Result<(), MeshError> {
        self.check_action(&action)?;
        self.do_action(action);
        Ok(())
    }

    pub(super) fn do_action(&mut self, action: Action) {
        let now = self.now();
        match action {
            Action::SetErrorRate { version, rate } => {
                self.versions[version].behaviour.error_rate = rate
            }
            Action::SetServiceTime {
                version,
                service_time,
            } => {
                self.versions[version].behaviour.service_time = service_time;
            }
            Action::SetBehaviour { version, behaviour } => {
                // Resolved when the action was checked.
                self.versions[version].calls = self
                    .resolve_calls(version, &behaviour.calls)
                    .unwrap_or_default();
                self.note_proxy_cost(behaviour.proxy.as_ref());
                self.versions[version].behaviour = behaviour;
                let pods = self.versions[version].pods.clone();
                for p in pods {
                    self.start_work(p);
                }
            }
            Action::SetPodErrorRate { version, pod, rate } => {
                let p = self.pod_at(version, pod);
                self.pods[p].error_rate = rate;
            }
            Action::SetPodSlowdown {
                version,
                pod,
                factor,
            } => {
                let p = self.pod_at(version, pod);
                self.pods[p].slowdown = factor;
            }
            Action::CrashPod {
                version,
                pod,
                restart_after,
            } => {
                let p = self.pod_at(version, pod);
                self.crash(p);
                if let Some(d) = restart_after {
                    let epoch = self.pods[p].epoch;
                    self.q
                        .schedule_at(now.saturating_add(d), Ev::Restart { pod: p, epoch });
                }
            }
            Action::BlackHole { version, pod, on } => {
                let p = self.pod_at(version, pod);
                self.pods[p].black_hole = on;
            }
            Action::Scale { version, pods } => self.scale(version, pods),
            Action::SetRate { client, rps } => {
                self.clients[client].rate = rps;
                self.arm_client(client);
            }
            Action::CertRotation { workload, enabled } => {
                if let Ok(i) = self.cert_index(workload) {
                    let was = self.certs[i].rotating;
                    self.certs[i].rotating = enabled;
                    if enabled && !was {
                        // A resumed agent fetches a fresh certificate at once.
                        self.certs[i].expires_at = now.saturating_add(self.certs_cfg.ttl);
                        self.schedule_rotation(i);
                    }
                }
            }
        }
    }
}
