//! The scenario's own doings over a run: its timeline of events (a deploy, faults, rates,
//! manifests applied mid-run), fired at their time or at a canary weight, and the rate shapes of
//! its clients, applied as a step function.

use super::objects::Writer;
use super::{Harness, NEW_REVISION, SHAPE_STEP};
use crate::engine::SimTime;
use crate::manifest::Manifest;
use crate::mesh::{self, MeshError};
use crate::scenario::{Event, RateShape, Side, TimelineEntry, Trigger};

impl Harness<'_> {
    pub(super) fn schedule_rate_shapes(&mut self) -> Result<(), MeshError> {
        for c in &self.scenario.clients {
            if c.shape == RateShape::Constant {
                continue;
            }
            let id = self
                .mesh
                .client_id(&c.name)
                .expect("clients are built from the scenario");
            let mut t = 0;
            while t < self.scenario.duration {
                let rps = shaped_rate(c.rate, &c.shape, t);
                self.mesh
                    .schedule(t, mesh::Action::SetRate { client: id, rps })?;
                t += SHAPE_STEP;
            }
        }
        Ok(())
    }

    /// Fires, in timeline order, the pending events whose trigger has come.
    pub(super) fn fire_pending(&mut self, now: SimTime) {
        self.fire_pending_at(now, self.state.canary_weight);
    }

    /// [`Self::fire_pending`] with the canary's weight given (the live mode reads it from the
    /// routing objects it was sent).
    pub(super) fn fire_pending_at(&mut self, now: SimTime, weight: u8) {
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|e| match e.when {
                Trigger::At(t) => t <= now,
                Trigger::Weight(w) => weight >= w,
            });
        self.pending = rest;
        for e in due {
            self.fire(now, &e);
        }
    }

    /// Carries out a timeline event and records it.
    pub(super) fn fire(&mut self, now: SimTime, entry: &TimelineEntry) {
        // Events naming the primary or the canary are refused without a Canary; names of
        // versions are checked by the scenario's loader.
        let target = self.target;
        let mesh = &self.mesh;
        let version = |side: &Side| match side {
            Side::Named { service, version } => mesh
                .version_id(service, version)
                .expect("versions are checked by the scenario loader"),
            Side::Primary | Side::Canary => {
                let t = target
                    .expect("a version of the rollout, which a scenario without a Canary has not");
                if *side == Side::Primary {
                    t.primary
                } else {
                    t.canary
                }
            }
        };
        let (message, result) = match &entry.event {
            Event::Deploy => {
                self.revision = NEW_REVISION;
                self.deployed_at.get_or_insert(now);
                ("scenario: new revision deployed".to_string(), Ok(()))
            }
            Event::Delete => {
                self.deleting = true;
                ("scenario: Canary deleted".to_string(), Ok(()))
            }
            Event::ApplyManifests(m) => {
                let kinds: Vec<String> = m.items.iter().map(manifest_label).collect();
                self.warnings.extend(m.warnings.iter().cloned());
                let result = self.apply_objects(m, Writer::Scenario).and_then(|()| {
                    // The controller owns its service's routes and writes them back on its
                    // next reconcile; the harness does so at once.
                    match self.routes {
                        Some(routes) => self.apply_routes(routes),
                        None => Ok(()),
                    }
                });
                (format!("scenario: applied {}", kinds.join(", ")), result)
            }
            Event::ErrorRate {
                version: side,
                rate,
            } => (
                format!(
                    "scenario: {} error rate set to {:.2}%",
                    side_name(side),
                    rate * 100.0
                ),
                self.mesh.apply(mesh::Action::SetErrorRate {
                    version: version(side),
                    rate: *rate,
                }),
            ),
            Event::Latency {
                version: side,
                service_time,
            } => (
                format!("scenario: {} latency changed", side_name(side)),
                self.mesh.apply(mesh::Action::SetServiceTime {
                    version: version(side),
                    service_time: service_time.clone(),
                }),
            ),
            Event::PodErrorRate {
                version: side,
                pod,
                rate,
            } => (
                format!(
                    "scenario: {} pod {pod} error rate {}",
                    side_name(side),
                    rate.map_or("cleared".into(), |r| format!("{:.2}%", r * 100.0))
                ),
                self.mesh.apply(mesh::Action::SetPodErrorRate {
                    version: version(side),
                    pod: *pod,
                    rate: *rate,
                }),
            ),
            Event::Crash {
                version: side,
                pods,
                restart_after,
            } => {
                let v = version(side);
                let pods: Vec<u32> = if pods.is_empty() {
                    (0..self.mesh.ready_pods(v)).collect()
                } else {
                    pods.clone()
                };
                let result = pods.iter().try_for_each(|&pod| {
                    self.mesh.apply(mesh::Action::CrashPod {
                        version: v,
                        pod,
                        restart_after: *restart_after,
                    })
                });
                (
                    format!("scenario: {} pods {pods:?} crash", side_name(side)),
                    result,
                )
            }
            Event::BlackHole {
                version: side,
                pod,
                on,
            } => (
                format!(
                    "scenario: {} pod {pod} {}",
                    side_name(side),
                    if *on {
                        "becomes a black hole"
                    } else {
                        "recovers"
                    }
                ),
                self.mesh.apply(mesh::Action::BlackHole {
                    version: version(side),
                    pod: *pod,
                    on: *on,
                }),
            ),
            Event::Rate { client, rps } => {
                let id = self
                    .mesh
                    .client_id(client)
                    .expect("clients are checked by the scenario loader");
                let mut send = Some(*rps);
                if let Some(lt) = self.load_testers.iter_mut().find(|l| l.0 == id) {
                    // A load tester keeps the new rate for when it is on.
                    lt.1 = *rps;
                    send = lt.2.then_some(*rps);
                }
                (
                    format!("scenario: {client} sends {rps} rps"),
                    send.map_or(Ok(()), |rps| {
                        self.mesh.apply(mesh::Action::SetRate { client: id, rps })
                    }),
                )
            }
            Event::Scale {
                version: side,
                pods,
            } => {
                let v = version(side);
                (
                    format!("scenario: {} scaled to {pods} pods", side_name(side)),
                    self.mesh.apply(mesh::Action::Scale {
                        version: v,
                        pods: *pods,
                    }),
                )
            }
            Event::CertRotation {
                version: side,
                enabled,
            } => (
                format!(
                    "scenario: certificate rotation of {} {}",
                    side_name(side),
                    if *enabled { "resumed" } else { "stopped" }
                ),
                self.mesh.apply(mesh::Action::CertRotation {
                    workload: mesh::Workload::Version(version(side)),
                    enabled: *enabled,
                }),
            ),
        };
        self.trace_action("timeline", &message, result.as_ref().err());
        let mut messages = vec![message];
        if let Err(e) = result {
            let warning = format!("line {}: event not applied: {e}", entry.line);
            self.warnings.push(warning.clone());
            messages.push(warning);
        }
        self.record(now, Vec::new(), messages, false, true);
    }
}

/// `Kind name` of a manifest, for the timeline.
fn manifest_label(m: &Manifest) -> String {
    let (kind, name) = m.kind_name();
    format!("{kind} {name}")
}

fn side_name(side: &Side) -> String {
    match side {
        Side::Primary => "primary".into(),
        Side::Canary => "canary".into(),
        Side::Named { service, version } => format!("{service} {version}"),
    }
}

/// A client's rate at time `t` under its shape.
pub(crate) fn shaped_rate(base: f64, shape: &RateShape, t: SimTime) -> f64 {
    match *shape {
        RateShape::Constant => base,
        RateShape::Ramp { from, to, over } => {
            if t <= from {
                base
            } else if over == 0 || t >= from + over {
                to
            } else {
                base + (to - base) * (t - from) as f64 / over as f64
            }
        }
        RateShape::Diurnal { amplitude, period } => {
            let phase = (t % period) as f64 / period as f64;
            (base * (1.0 + amplitude * (2.0 * std::f64::consts::PI * phase).sin())).max(0.0)
        }
        RateShape::Bursts {
            every,
            length,
            factor,
        } => {
            if t % every < length {
                base * factor
            } else {
                base
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SECONDS;

    #[test]
    fn rate_shapes_follow_their_definitions() {
        let ramp = RateShape::Ramp {
            from: 10 * SECONDS,
            to: 300.0,
            over: 100 * SECONDS,
        };
        assert_eq!(shaped_rate(100.0, &ramp, 0), 100.0);
        assert_eq!(shaped_rate(100.0, &ramp, 60 * SECONDS), 200.0);
        assert_eq!(shaped_rate(100.0, &ramp, 500 * SECONDS), 300.0);
        let diurnal = RateShape::Diurnal {
            amplitude: 0.5,
            period: 400 * SECONDS,
        };
        assert!((shaped_rate(100.0, &diurnal, 100 * SECONDS) - 150.0).abs() < 1e-9);
        let bursts = RateShape::Bursts {
            every: 60 * SECONDS,
            length: 10 * SECONDS,
            factor: 4.0,
        };
        assert_eq!(shaped_rate(50.0, &bursts, 65 * SECONDS), 200.0);
        assert_eq!(shaped_rate(50.0, &bursts, 75 * SECONDS), 50.0);
    }
}
