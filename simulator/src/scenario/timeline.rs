//! The timeline section: events at a time or at a canary weight (deploys, faults, crashes,
//! rates, manifests applied mid-run, certificate rotation) and the webhooks' answers.

use std::collections::BTreeMap;

use fledge_controller::spec::{HookGate, RolloutSpec};

use super::traffic::rate_out_of_range;
use super::{Client, Context, ScenarioError, raw};
use crate::engine::SimTime;
use crate::manifest::Manifests;
use crate::mesh::dist::ServiceTime;

/// When a timeline entry fires.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Trigger {
    At(SimTime),
    /// The first time the canary's weight reaches this percentage.
    Weight(u8),
}

#[derive(Clone, Debug)]
pub struct TimelineEntry {
    pub(crate) when: Trigger,
    pub event: Event,
    /// Where it was written, for messages.
    pub(crate) line: usize,
}

/// What the timeline can do to the world.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A new revision of the target: the canary takes the scenario's `canary` behaviour.
    Deploy,
    ErrorRate {
        version: Side,
        rate: f64,
    },
    Latency {
        version: Side,
        service_time: ServiceTime,
    },
    PodErrorRate {
        version: Side,
        pod: u32,
        rate: Option<f64>,
    },
    Crash {
        version: Side,
        pods: Vec<u32>,
        restart_after: Option<SimTime>,
    },
    BlackHole {
        version: Side,
        pod: u32,
        on: bool,
    },
    Rate {
        client: String,
        rps: f64,
    },
    CertRotation {
        version: Side,
        enabled: bool,
    },
    /// A service's version scaled to `pods` (the rollout's are the controller's to scale).
    Scale {
        version: Side,
        pods: u32,
    },
    /// Mesh manifests applied mid-run (a PeerAuthentication switched to STRICT, a new
    /// DestinationRule). The controller keeps owning its service's routes.
    ApplyManifests(Manifests),
    /// The Canary is deleted.
    Delete,
}

/// The version a timeline event acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// The rollout's primary.
    Primary,
    /// The rollout's canary.
    Canary,
    /// A version of a service of `services:` by name (`service` and `version` given).
    Named { service: String, version: String },
}

/// How the scenario answers a webhook.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum HookAnswer {
    Pass,
    Fail,
    Timeout,
    /// Fails until this time, passes after.
    OpenAt(SimTime),
}

impl Context {
    pub(super) fn timeline_entry(
        &mut self,
        field: &str,
        e: &raw::TimelineEntry,
        clients: &[Client],
    ) -> Result<TimelineEntry, ScenarioError> {
        let when = match (&e.at, e.when_weight) {
            (Some(at), None) => Trigger::At(self.duration(&format!("{field}.at"), at)?),
            (None, Some(w)) if (1..=100).contains(&w) => Trigger::Weight(w as u8),
            (None, Some(w)) => {
                return Err(self.error(
                    &format!("{field}.when_weight"),
                    format!("must be a weight between 1 and 100, got {w}"),
                ));
            }
            _ => {
                return Err(self.error(
                    field,
                    "give exactly one of `at` (a time) or `when_weight` (a canary weight)",
                ));
            }
        };
        let side = |path: &str, service: &Option<String>, s: &str| {
            match (service, s) {
            (Some(service), _) if *service != self.service => {
                self.named_version(&path.replace(".version", ".service"), path, service, s)
            }
            (_, "primary") => Ok(Side::Primary),
            (_, "canary") => Ok(Side::Canary),
            (_, other) => Err(self.error(
                path,
                format!(
                    "must be `primary` or `canary` (the rollout's), or a version of the service `service` names, got `{other}`"
                ),
            )),
        }
        };
        let mut events = Vec::new();
        if e.deploy.is_some() {
            events.push(Event::Deploy);
        }
        if e.delete.is_some() {
            events.push(Event::Delete);
        }
        if let Some(f) = &e.error_rate {
            events.push(Event::ErrorRate {
                version: side(
                    &format!("{field}.error_rate.version"),
                    &f.service,
                    &f.version,
                )?,
                rate: self.probability(&format!("{field}.error_rate.rate"), f.rate)?,
            });
        }
        if let Some(f) = &e.latency {
            events.push(Event::Latency {
                version: side(&format!("{field}.latency.version"), &f.service, &f.version)?,
                service_time: self.latency(&format!("{field}.latency"), &f.latency)?,
            });
        }
        if let Some(f) = &e.pod_error_rate {
            let rate = f
                .rate
                .map(|r| self.probability(&format!("{field}.pod_error_rate.rate"), r))
                .transpose()?;
            events.push(Event::PodErrorRate {
                version: side(
                    &format!("{field}.pod_error_rate.version"),
                    &f.service,
                    &f.version,
                )?,
                pod: f.pod,
                rate,
            });
        }
        if let Some(f) = &e.crash {
            let restart_after = f
                .restart_after
                .as_deref()
                .map(|t| self.duration(&format!("{field}.crash.restart_after"), t))
                .transpose()?;
            let pods = match (&f.pod, &f.pods) {
                (Some(p), None) => vec![*p],
                (None, Some(ps)) => ps.clone(),
                (None, None) => Vec::new(), // every pod
                _ => {
                    return Err(
                        self.error(&format!("{field}.crash"), "give `pod` or `pods`, not both")
                    );
                }
            };
            events.push(Event::Crash {
                version: side(&format!("{field}.crash.version"), &f.service, &f.version)?,
                pods,
                restart_after,
            });
        }
        if let Some(f) = &e.black_hole {
            events.push(Event::BlackHole {
                version: side(
                    &format!("{field}.black_hole.version"),
                    &f.service,
                    &f.version,
                )?,
                pod: f.pod,
                on: f.on.unwrap_or(true),
            });
        }
        if let Some(f) = &e.rate {
            if !clients.iter().any(|c| c.name == f.client) {
                return Err(self.error(
                    &format!("{field}.rate.client"),
                    format!("no client named `{}` in `traffic`", f.client),
                ));
            }
            if !(f.rps.is_finite() && (0.0..=1_000_000.0).contains(&f.rps)) {
                return Err(self.error(&format!("{field}.rate.rps"), rate_out_of_range(f.rps)));
            }
            events.push(Event::Rate {
                client: f.client.clone(),
                rps: f.rps,
            });
        }
        if let Some(f) = &e.cert_rotation {
            events.push(Event::CertRotation {
                version: side(
                    &format!("{field}.cert_rotation.version"),
                    &f.service,
                    &f.version,
                )?,
                enabled: f.enabled,
            });
        }
        if let Some(f) = &e.scale {
            let path = format!("{field}.scale.version");
            if f.service == self.service {
                return Err(self.error(
                    &format!("{field}.scale.service"),
                    "the controller scales the rollout's primary and canary; scale a version of another service",
                ));
            }
            // The bound of a version's `pods`.
            if f.pods > 1000 {
                return Err(self.error(
                    &format!("{field}.scale.pods"),
                    format!("must be between 0 and 1000, got {}", f.pods),
                ));
            }
            events.push(Event::Scale {
                version: self.named_version(
                    &format!("{field}.scale.service"),
                    &path,
                    &f.service,
                    &f.version,
                )?,
                pods: f.pods,
            });
        }
        if let Some(text) = &e.apply_manifests {
            let m =
                self.manifest_text(&self.embedded(&format!("{field}.apply_manifests"), text))?;
            events.push(Event::ApplyManifests(m));
        }
        match <[Event; 1]>::try_from(events) {
            Ok([event]) => Ok(TimelineEntry { when, event, line: self.outline.line(0, field).unwrap_or(0) }),
            Err(v) => Err(self.error(field, format!("needs exactly one event (deploy, delete, error_rate, latency, pod_error_rate, crash, black_hole, rate, cert_rotation, scale, apply_manifests), found {}", v.len()))),
        }
    }

    /// Version `version` of service `service` (one of `services:` other than the rollout's),
    /// or an error at `service_path` or `version_path`.
    fn named_version(
        &self,
        service_path: &str,
        version_path: &str,
        service: &str,
        version: &str,
    ) -> Result<Side, ScenarioError> {
        let names = |v: Vec<&str>| super::services::quoted(&v);
        let Some(s) = self.others.iter().find(|s| s.name == service) else {
            return Err(self.error(
                service_path,
                format!(
                    "no service named `{service}`; the scenario's services are {}",
                    names(self.others.iter().map(|s| s.name.as_str()).collect())
                ),
            ));
        };
        if !s.versions.iter().any(|(n, _)| n == version) {
            return Err(self.error(
                version_path,
                format!(
                    "service `{service}` has no version `{version}`; its versions are {}",
                    names(s.versions.iter().map(|(n, _)| n.as_str()).collect())
                ),
            ));
        }
        Ok(Side::Named {
            service: service.to_string(),
            version: version.to_string(),
        })
    }

    pub(super) fn hooks(
        &self,
        raw: &raw::Scenario,
        spec: &RolloutSpec,
    ) -> Result<BTreeMap<String, HookAnswer>, ScenarioError> {
        let mut out = BTreeMap::new();
        for (name, answer) in &raw.webhooks {
            let field = format!("webhooks.{name}");
            let Some(hook) = spec.webhooks.iter().find(|h| &h.name == name) else {
                return Err(self.error(&field, format!("the Canary has no webhook named `{name}`")));
            };
            let answer =
                match answer {
                    raw::HookAnswer::Word(w) => match w.as_str() {
                        "pass" => HookAnswer::Pass,
                        "fail" => HookAnswer::Fail,
                        "timeout" => HookAnswer::Timeout,
                        other => return Err(self.error(
                            &field,
                            format!(
                                "must be pass, fail, timeout or {{open_at: TIME}}, got `{other}`"
                            ),
                        )),
                    },
                    raw::HookAnswer::Gate { open_at } => {
                        HookAnswer::OpenAt(self.duration(&format!("{field}.open_at"), open_at)?)
                    }
                };
            if hook.gate == HookGate::Event && answer != HookAnswer::Pass {
                return Err(self.error(
                    &field,
                    "event hooks are notifications; their answer changes nothing",
                ));
            }
            out.insert(name.clone(), answer);
        }
        Ok(out)
    }
}
