//! Calls between services: once a pod has done its own work for a request, the request makes its
//! version's calls ([`Call`](super::Call)), step by step, the calls of one step in parallel,
//! while the pod's worker waits. Each call leaves through the calling version's sidecar as a
//! request of its own: the caller's workload is a client of the called service with its own
//! Envoy clusters, so the called service's routes, pools, outlier detection, faults and
//! telemetry (reporter `source` naming the caller's workload) apply as to any client. A call
//! carries its caller's headers (as an application propagates `end-user` or a trace context).
//! When every call of a step is answered the next step starts; a failed call that is not
//! optional ends the calls, and the pod answers with its version's error code.

use super::build::{Service, Version};
use super::config::{Call, MeshConfig};
use super::headers::HeaderSets;
use super::request::{self, Client};
use super::{AttemptId, ClientId, Mesh, MeshError, ServiceId, VersionId, invalid};
use crate::engine::{SimTime, Stream};
use crate::telemetry::{DestLabels, SourceLabels};

/// A version's call to one service, resolved to the client that stands for the version's
/// sidecar as a client of that service.
#[derive(Clone, Copy, Debug)]
pub(super) struct CallSite {
    pub(super) client: ClientId,
    pub(super) probability: f64,
    pub(super) optional: bool,
    /// The method and path it sets in place of its caller's ([`HeaderSets`]).
    pub(super) rewrite: Option<u32>,
    /// The application's own timeout of the call, 0 for none.
    pub(super) timeout: SimTime,
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
    /// For the spans: the number of the request the trace began with, and the caller's
    /// attempt (request number and try), whose server span is each call's parent.
    pub(super) root: u64,
    pub(super) caller: (u64, u32),
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
                        let rewrite = self.header_sets.rewrite(&c.method, &c.path);
                        if rewrite.is_none() && (c.method.is_some() || c.path.is_some()) {
                            return Err(invalid(
                                format!("call to {}", c.service),
                                "its method and path are not among those the mesh was built with (give the call in `may_call`)",
                            ));
                        }
                        Ok(CallSite {
                            client,
                            probability: c.probability,
                            optional: c.optional,
                            rewrite,
                            timeout: c.timeout.unwrap_or(0),
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// The clients that stand for a version's sidecar calling another service.
    pub(crate) fn call_clients(&self) -> impl Iterator<Item = ClientId> + '_ {
        (0..self.clients.len() as u32)
            .map(ClientId)
            .filter(|&c| self.clients[c].caller.is_some())
    }

    /// The service and version whose sidecar call client `c` stands for.
    pub(crate) fn caller_version(&self, c: ClientId) -> Option<(&str, &str)> {
        let v = &self.versions[self.clients[c].caller?];
        Some((&self.services[v.service].name, &v.name))
    }

    /// Whether a request served by attempt `a` makes calls (a mirrored copy makes none).
    pub(super) fn makes_calls(&self, a: AttemptId) -> bool {
        let at = &self.atts[a];
        !at.is_mirror() && !self.versions[self.pods[at.pod].version].calls.is_empty()
    }

    /// The pod's work for attempt `a` is done: its calls begin; the worker stays busy.
    pub(super) fn begin_calls(&mut self, a: AttemptId) {
        let at = &self.atts[a];
        let c = Calling {
            attempt: a,
            tag: at.tag,
            step: 0,
            outstanding: 0,
            failed: false,
            root: at.root,
            caller: (at.number, at.try_no),
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
                let headers = match site.rewrite {
                    Some(r) => self.header_sets.rewritten(r, at.headers),
                    None => at.headers,
                };
                let call = request::Call {
                    parent: id,
                    headers,
                    optional: site.optional,
                    timeout: site.timeout,
                };
                self.send(site.client, Some(call));
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

    /// The number of the request the trace of request `number` began with: its own, or for a
    /// call (`parent` its caller's calls) its caller's. A caller's calls outlive each of
    /// their requests, so `parent` is valid while one is in flight.
    pub(super) fn trace_root(&self, number: u64, parent: u32) -> u64 {
        if parent == NO_PARENT {
            number
        } else {
            self.callings[parent as usize].root
        }
    }

    /// The caller's span of a call (`parent` its caller's calls): its request number and try.
    pub(super) fn caller_span(&self, parent: u32) -> Option<(u64, u32)> {
        (parent != NO_PARENT).then(|| self.callings[parent as usize].caller)
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

/// One client per (version, service its service's versions call or may call), standing for the
/// version's sidecar as a client of that service: reporter `source` names the version's workload,
/// and the client carries every client's header profiles, since a call carries its caller's.
/// Refuses a call to a service that is not simulated and calls that loop.
pub(super) fn add_call_clients(
    cfg: &MeshConfig,
    services: &[Service],
    versions: &mut [Version],
    dest_labels: &[DestLabels],
    header_sets: &mut HeaderSets,
    clients: &mut Vec<Client>,
    source_labels: &mut Vec<SourceLabels>,
) -> Result<(), MeshError> {
    let names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
    let mut callees = Vec::with_capacity(cfg.services.len());
    let mut rewrites = Vec::new();
    for sc in &cfg.services {
        let calls = sc
            .versions
            .iter()
            .flat_map(|vc| vc.behaviour.calls.iter().flatten())
            .chain(sc.may_call.iter());
        for c in calls.clone() {
            let r = (c.method.clone(), c.path.clone());
            if (r.0.is_some() || r.1.is_some()) && !rewrites.contains(&r) {
                rewrites.push(r);
            }
        }
        let called = calls.map(|c| c.service.clone());
        callees.push(
            Mesh::callees(&names, called)
                .map_err(|r| invalid(format!("service {}", sc.name), r))?,
        );
    }
    if let Some(cycle) = call_cycle(&callees) {
        let path: Vec<&str> = cycle.iter().map(|s| names[s.0 as usize].as_str()).collect();
        return Err(invalid(
            "calls",
            format!("services call each other in a loop: {}", path.join(" -> ")),
        ));
    }
    header_sets.close(rewrites);
    // A call's client matches routes on any set: its profiles are all of them.
    let profiles: Vec<(f64, Vec<(String, String)>)> =
        header_sets.sets.iter().map(|s| (1.0, s.clone())).collect();
    for v in 0..versions.len() {
        let si = versions[v].service;
        for &callee in &callees[si.0 as usize] {
            let id = ClientId(clients.len() as u32);
            let dest = &dest_labels[v];
            let tag = format!("{}->{}", dest.workload, services[callee.0 as usize].name);
            source_labels.push(SourceLabels {
                workload: dest.workload.clone(),
                namespace: dest.namespace.clone(),
                sidecar: versions[v].sidecar,
            });
            clients.push(Client {
                service: callee,
                direct: None,
                caller: Some(VersionId(v as u32)),
                rate: 0.0,
                shape: Default::default(),
                cache: vec![None; profiles.len()],
                profiles: profiles.clone(),
                profile_total: profiles.len() as f64,
                header_ids: Vec::new(),
                sidecar: versions[v].sidecar,
                kube_proxy: None,
                cache_epoch: None,
                clusters: Vec::new(),
                service_cluster: None,
                arrivals: Stream::new(cfg.seed, &format!("arrivals/{tag}")),
                routing: Stream::new(cfg.seed, &format!("routing/{tag}")),
                retry: Stream::new(cfg.seed, &format!("retry/{tag}")),
                budget: None,
                running: false,
                ingress: None,
            });
            versions[v].call_clients.push((callee, id));
        }
    }
    Ok(())
}

/// A loop in the graph of which service calls which, as the services on it (the first again
/// at the end), if there is one.
fn call_cycle(callees: &[Vec<ServiceId>]) -> Option<Vec<ServiceId>> {
    // 0: not visited, 1: on the current path, 2: done.
    fn visit(s: usize, g: &[Vec<ServiceId>], state: &mut [u8], path: &mut Vec<ServiceId>) -> bool {
        state[s] = 1;
        path.push(ServiceId(s as u32));
        for &n in &g[s] {
            let n = n.0 as usize;
            if state[n] == 1 {
                path.push(ServiceId(n as u32));
                return true;
            }
            if state[n] == 0 && visit(n, g, state, path) {
                return true;
            }
        }
        path.pop();
        state[s] = 2;
        false
    }
    let mut state = vec![0u8; callees.len()];
    for s in 0..callees.len() {
        let mut path = Vec::new();
        if state[s] == 0 && visit(s, callees, &mut state, &mut path) {
            let start = path
                .iter()
                .position(|x| Some(x) == path.last())
                .unwrap_or(0);
            return Some(path[start..].to_vec());
        }
    }
    None
}
