//! Calls between services: once a pod has done its own work for a request, the request makes its
//! version's calls ([`Call`](super::Call)), step by step, the calls of one step in parallel,
//! while the pod's worker waits. Each call leaves through the calling version's sidecar as a
//! request of its own: the caller's workload is a client of the called service with its own
//! Envoy clusters, so the called service's routes, pools, outlier detection, faults and
//! telemetry (reporter `source` naming the caller's workload) apply as to any client. A call
//! carries its caller's headers (as an application propagates `end-user` or a trace context).
//! When every call of a step is answered the next step starts; a failed call that is not
//! optional ends the calls, and the pod answers with its version's error code.

use super::{AttemptId, ClientId, Mesh, ServiceId, VersionId, invalid};
use super::{MeshError, config::Call};

/// A version's call to one service, resolved to the client that stands for the version's
/// sidecar as a client of that service.
#[derive(Clone, Copy, Debug)]
pub(super) struct CallSite {
    pub(super) client: ClientId,
    pub(super) probability: f64,
    pub(super) optional: bool,
}

/// The calls in flight of one request at a pod (a slot reused once they end).
#[derive(Clone, Copy, Debug)]
pub(super) struct Calling {
    /// The attempt being served, and its slot's generation when the calls began.
    attempt: AttemptId,
    tag: u32,
    /// The step running, and how many of its calls are unanswered.
    step: u32,
    outstanding: u32,
    /// A call that is not optional failed.
    failed: bool,
}

/// A request that is no call.
pub(super) const NO_PARENT: u32 = u32::MAX;

/// Whether a call's answer counts as failed for its caller: no answer, or a status from 400.
fn call_failed(code: u16) -> bool {
    code == 0 || code >= 400
}

impl Mesh {
    /// The call sites of `calls` for version `v`: each service must be one the version's proxy
    /// was built to call.
    pub(super) fn resolve_calls(
        &self,
        v: VersionId,
        calls: &[Vec<Call>],
    ) -> Result<Vec<Vec<CallSite>>, MeshError> {
        let ver = &self.versions[v];
        calls
            .iter()
            .map(|step| {
                step.iter()
                    .map(|c| {
                        let client = ver
                            .call_clients
                            .iter()
                            .find(|(s, _)| self.services[*s].name == c.service)
                            .map(|&(_, client)| client)
                            .ok_or_else(|| {
                                invalid(
                                    format!(
                                        "service {} version {} calls",
                                        self.services[ver.service].name, ver.name
                                    ),
                                    format!(
                                        "`{}` is not a service its proxy can call (a simulated service named in the behaviour of one of its service's versions or in `may_call`)",
                                        c.service
                                    ),
                                )
                            })?;
                        if !(0.0..=1.0).contains(&c.probability) {
                            return Err(invalid(
                                format!("call to {}", c.service),
                                "probability must be within [0, 1]",
                            ));
                        }
                        Ok(CallSite {
                            client,
                            probability: c.probability,
                            optional: c.optional,
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// Whether a request served by attempt `a` makes calls (a mirrored copy makes none).
    pub(super) fn makes_calls(&self, a: AttemptId) -> bool {
        let at = &self.atts[a];
        !at.is_mirror() && !self.versions[self.pods[at.pod].version].calls.is_empty()
    }

    /// The pod's work for attempt `a` is done: its calls begin; the worker stays busy.
    pub(super) fn begin_calls(&mut self, a: AttemptId) {
        let c = Calling {
            attempt: a,
            tag: self.atts[a].tag,
            step: 0,
            outstanding: 0,
            failed: false,
        };
        let id = match self.free_callings.pop() {
            Some(i) => {
                self.callings[i as usize] = c;
                i
            }
            None => {
                self.callings.push(c);
                (self.callings.len() - 1) as u32
            }
        };
        self.run_step(id);
    }

    /// Starts the calls of the current step (each drawn with its probability); a step that
    /// makes none is skipped; after the last, or after a failed call, the pod answers.
    fn run_step(&mut self, id: u32) {
        loop {
            let c = self.callings[id as usize];
            let at = self.atts[c.attempt];
            // The pod crashed meanwhile (the crash failed the attempt) or the slot was reused.
            if at.tag != c.tag || self.pods[at.pod].epoch != at.pod_epoch {
                self.free_callings.push(id);
                return;
            }
            let v = self.pods[at.pod].version;
            if c.failed || c.step as usize >= self.versions[v].calls.len() {
                self.free_callings.push(id);
                self.respond(c.attempt, c.failed);
                return;
            }
            let ver = &mut self.versions[v];
            let rng = &mut ver.call_rng;
            let sites: Vec<CallSite> = ver.calls[c.step as usize]
                .iter()
                .filter(|site| site.probability >= 1.0 || rng.chance(site.probability))
                .copied()
                .collect();
            let cc = &mut self.callings[id as usize];
            cc.step += 1;
            if sites.is_empty() {
                continue;
            }
            // Counted before any is sent: a call answered at once (no route, an injected
            // abort) must not end the step while others are still to be sent.
            cc.outstanding = sites.len() as u32;
            for site in sites {
                self.send(site.client, Some(at.headers), id, site.optional);
            }
            return;
        }
    }

    /// A call of `id` was answered with `code`.
    pub(super) fn call_done(&mut self, id: u32, code: u16, optional: bool) {
        let c = &mut self.callings[id as usize];
        if !optional && call_failed(code) {
            c.failed = true;
        }
        c.outstanding -= 1;
        if c.outstanding == 0 {
            self.run_step(id);
        }
    }

    /// Every service some version of `s` calls, and those `may_call` names.
    pub(super) fn callees(
        service_names: &[String],
        calls: impl Iterator<Item = String>,
    ) -> Result<Vec<ServiceId>, String> {
        let mut out: Vec<ServiceId> = Vec::new();
        for name in calls {
            let s = service_names
                .iter()
                .position(|n| *n == name)
                .ok_or_else(|| format!("calls `{name}`, which is not a simulated service"))?;
            let s = ServiceId(s as u32);
            if !out.contains(&s) {
                out.push(s);
            }
        }
        Ok(out)
    }
}
