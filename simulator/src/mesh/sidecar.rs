//! The sidecars' cost: the latency each proxy adds to a request, the CPU it spends on it and on
//! TLS handshakes, and the Envoy worker threads that spend it, so that an undersized sidecar
//! queues requests and becomes its pod's bottleneck under load.
//!
//! A request crosses four proxy passes: out of the client's proxy and into the server's on the
//! way there, out of the server's and into the client's on the way back. A proxy whose cost is
//! modelled ([`ProxyCost`]: the mesh default for client workloads, a version's behaviour for
//! its pods) adds one draw of its latency per request, half each way, and counts
//! `cpu_per_request`. The server's sidecar takes each arriving request on one of its pod's
//! `concurrency` worker threads, which it holds for the request's CPU (longer when a CPU limit
//! below `concurrency` cores shares the threads); requests that find every thread busy wait in
//! order. That wait is latency the client's proxy reports (`reporter="source"`) but not the
//! destination's: Envoy starts a request's stream, and the clock its duration is measured
//! from, when a worker thread reads and decodes it. So a pod's sidecar
//! serves at most `min(concurrency, limit) / cpu_per_request` requests per second.
//!
//! Off by default (no cost anywhere): every pass adds the fixed
//! [`NetworkConfig::sidecar_latency`](super::NetworkConfig::sidecar_latency), nothing is
//! counted and no event or draw is added, so a run is the same as without this module.
//!
//! Simplifications (scenarios/README.md says so too): a pod's threads take requests from one
//! queue, where Envoy pins each connection to one thread; the worker limit applies to the
//! server side only (a workload's client
//! proxy is one for all its pods here, so its threads are not modelled, only its latency and
//! CPU); a request's whole CPU at the server's sidecar is spent on its way in; handshake CPU is
//! counted but takes no worker thread (its latency is the connection's setup); a CPU limit is
//! a fluid share, not CFS's periods of throttling.

use std::collections::VecDeque;

use super::build::Version;
use super::config::{MeshConfig, ProxyCost};
use super::dist::LogNormalMemo;
use super::event::Ev;
use super::{AttemptId, ClientId, Mesh, MeshError, PodId, VersionId, invalid};
use crate::engine::{SimTime, Stream};
use crate::telemetry::flags;

/// What one workload's sidecars did over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SidecarUsage {
    /// Attempts through them (a request and its response count once); at a server's sidecar
    /// whose threads are modelled, those a worker thread took.
    pub requests: u64,
    /// TLS handshakes they took part in, as client or server.
    pub handshakes: u64,
    /// CPU spent on requests and handshakes, in nanoseconds.
    pub cpu: SimTime,
    /// Latency they added, waits for a worker included, in nanoseconds.
    pub added: SimTime,
    /// Requests that waited for a worker thread.
    pub waited: u64,
    /// Time those requests waited, in nanoseconds.
    pub wait: SimTime,
    /// Requests still waiting for a worker thread (not counted above).
    pub backlog: u64,
}

impl ProxyCost {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("proxy concurrency must be at least 1".into());
        }
        if self.cpu_limit_millis == Some(0) {
            return Err("proxy CPU limit must be above 0".into());
        }
        self.latency.validate()
    }

    /// How long a request holds a worker thread: its CPU, stretched when the CPU limit gives
    /// each of the `concurrency` threads less than a core.
    pub fn hold(&self) -> SimTime {
        let threads = u128::from(self.concurrency) * 1000;
        match self.cpu_limit_millis.map(u128::from) {
            Some(limit) if limit < threads => {
                (u128::from(self.cpu_per_request) * threads / limit) as SimTime
            }
            _ => self.cpu_per_request,
        }
    }

    /// The most requests per second one pod's sidecar serves: its threads over the time each
    /// request holds one. None when a request costs no CPU (no limit).
    pub fn capacity(&self) -> Option<f64> {
        let hold = self.hold();
        (hold > 0).then(|| f64::from(self.concurrency) * 1e9 / hold as f64)
    }
}

/// The proxy at one end of an attempt.
enum Proxy<'a> {
    /// Not modelled: the fixed latency per pass, nothing counted.
    Fixed,
    /// The workload has no sidecar: nothing to pass, whether or not costs are modelled.
    Absent,
    /// Modelled; its usage is counted at this index.
    Cost(&'a ProxyCost, usize),
}

/// The draws and counts of the modelled proxies.
struct Draws {
    rng: Stream,
    memo: LogNormalMemo,
    /// Per workload holding a certificate, in [`CertId`](super::CertId)'s numbering: the
    /// configured clients, then the versions (a call leaves through its version's sidecar).
    usage: Vec<SidecarUsage>,
}

impl Draws {
    /// One request through proxy `p`: the latency it adds there and back.
    fn pass(&mut self, p: &Proxy, fixed: SimTime) -> (SimTime, SimTime) {
        match *p {
            Proxy::Fixed => (fixed, fixed),
            Proxy::Absent => (0, 0),
            Proxy::Cost(cost, i) => {
                let d = cost.latency.sample_with(&mut self.rng, &mut self.memo);
                let u = &mut self.usage[i];
                u.requests += 1;
                u.cpu += cost.cpu_per_request;
                u.added += d;
                (d / 2, d - d / 2)
            }
        }
    }
}

/// The sidecars' cost model of a mesh.
pub(super) struct Sidecars {
    /// Whether any proxy's cost is modelled.
    pub(super) active: bool,
    /// The client workloads' proxies.
    clients: Option<ProxyCost>,
    draws: Draws,
}

impl Sidecars {
    pub(super) fn new(cfg: &MeshConfig, workloads: usize) -> Result<Self, MeshError> {
        if let Some(p) = &cfg.proxy {
            p.validate().map_err(|r| invalid("proxy", r))?;
        }
        let mut versions = cfg.services.iter().flat_map(|s| &s.versions);
        Ok(Self {
            active: cfg.proxy.is_some() || versions.any(|v| v.behaviour.proxy.is_some()),
            clients: cfg.proxy.clone(),
            draws: Draws {
                rng: Stream::new(cfg.seed, "sidecars"),
                memo: LogNormalMemo::default(),
                usage: vec![SidecarUsage::default(); workloads],
            },
        })
    }
}

/// A version's sidecar, its usage at index `i`.
fn version_proxy(v: &Version, i: usize) -> Proxy<'_> {
    match (&v.behaviour.proxy, v.sidecar) {
        (_, false) => Proxy::Absent,
        (None, true) => Proxy::Fixed,
        (Some(cost), true) => Proxy::Cost(cost, i),
    }
}

/// A pod's sidecar: its worker threads and the requests waiting for one.
#[derive(Default)]
pub(super) struct PodProxy {
    busy: u32,
    queue: VecDeque<AttemptId>,
}

impl Mesh {
    /// Sends attempt `a` from its client's proxy across the network towards its pod: it
    /// arrives at the pod (`AtPod`), or at the server's sidecar first when that one's threads
    /// are modelled (`AtSidecar`); with `resets`, the server resets the connection when the
    /// request's bytes reach its sidecar. Sets what the sidecars add on the way back.
    pub(super) fn send_to_pod(&mut self, a: AttemptId, resets: bool) {
        let tag = self.atts[a].tag;
        let fixed = self.net.sidecar_latency;
        let reset = Ev::Fail {
            attempt: a,
            tag,
            flags: flags::UC,
        };
        if !self.sidecars.active {
            // A workload without a sidecar passes no proxy.
            let at = self.atts[a];
            let has = |yes: bool| if yes { fixed } else { 0 };
            let from = has(self.clients[self.clusters[at.cluster].client].sidecar);
            let to = has(self.versions[self.pods[at.pod].version].sidecar);
            let at = &mut self.atts[a];
            (at.back, at.inbound) = (from + to, to);
            let ev = if resets {
                reset
            } else {
                Ev::AtPod { attempt: a, tag }
            };
            self.q.schedule_in(self.net.one_way + from + to, ev);
            return;
        }
        let at = self.atts[a];
        let client = self.clusters[at.cluster].client;
        let v = self.pods[at.pod].version;
        let own = self.own_certs as usize;
        let sc = &mut *self.sidecars;
        let from = match self.clients[client].caller {
            Some(cv) => version_proxy(&self.versions[cv], own + cv.0 as usize),
            None => match (&sc.clients, self.clients[client].sidecar) {
                (_, false) => Proxy::Absent,
                (None, true) => Proxy::Fixed,
                (Some(cost), true) => Proxy::Cost(cost, client.0 as usize),
            },
        };
        let (out_there, out_back) = sc.draws.pass(&from, fixed);
        let there = self.net.one_way + out_there;
        if resets {
            self.atts[a].back = out_back;
            self.q.schedule_in(there, reset);
            return;
        }
        let to = version_proxy(&self.versions[v], own + v.0 as usize);
        if matches!(to, Proxy::Cost(cost, _) if cost.cpu_per_request > 0) {
            // The server's sidecar draws and counts it when a worker thread takes it.
            (self.atts[a].back, self.atts[a].inbound) = (out_back, 0);
            self.q.schedule_in(there, Ev::AtSidecar { attempt: a, tag });
            return;
        }
        let (in_there, in_back) = sc.draws.pass(&to, fixed);
        let at = &mut self.atts[a];
        (at.back, at.inbound) = (out_back + in_back, in_there);
        self.q
            .schedule_in(there + in_there, Ev::AtPod { attempt: a, tag });
    }

    /// Attempt `a` reaches its pod's sidecar, which takes it on a worker thread when one is
    /// free; it waits in order otherwise.
    pub(super) fn on_at_sidecar(&mut self, a: AttemptId) {
        let p = self.atts[a].pod;
        if !self.pods[p].alive {
            // Nothing listens: fails as at the pod.
            self.on_at_pod(a);
            return;
        }
        // Until it reaches the pod, `at_pod` holds when it reached the sidecar.
        self.atts[a].at_pod = self.now();
        self.pods[p].proxy.queue.push_back(a);
        self.run_proxy(p);
    }

    /// A worker thread of pod `p`'s sidecar is done with a request.
    pub(super) fn on_proxy_free(&mut self, p: PodId, epoch: u32) {
        let pod = &mut self.pods[p];
        if pod.epoch == epoch && pod.proxy.busy > 0 {
            pod.proxy.busy -= 1;
            self.run_proxy(p);
        }
    }

    /// Hands waiting requests to free worker threads of pod `p`'s sidecar.
    fn run_proxy(&mut self, p: PodId) {
        let now = self.now();
        let v = self.pods[p].version;
        let i = self.own_certs as usize + v.0 as usize;
        let fixed = self.net.sidecar_latency;
        let to = version_proxy(&self.versions[v], i);
        // A behaviour changed meanwhile to no modelled cost lets the queue through.
        let (threads, hold) = match to {
            Proxy::Cost(cost, _) if cost.cpu_per_request > 0 => (cost.concurrency, cost.hold()),
            _ => (u32::MAX, 0),
        };
        let pod = &mut self.pods[p];
        while pod.proxy.busy < threads {
            let Some(a) = pod.proxy.queue.pop_front() else {
                return;
            };
            let at = &mut self.atts[a];
            // Envoy's stream (and the destination's clock) starts when a worker decodes the
            // request: the wait is latency only the client sees.
            let wait = now - at.at_pod;
            // Its requests, CPU and latency count from here: a thread spends them.
            let (there, back) = self.sidecars.draws.pass(&to, fixed);
            (at.inbound, at.back) = (there, at.back + back);
            let u = &mut self.sidecars.draws.usage[i];
            u.added += wait;
            if wait > 0 {
                u.waited += 1;
                u.wait += wait;
            }
            let tag = at.tag;
            self.q.schedule_in(there, Ev::AtPod { attempt: a, tag });
            if hold > 0 {
                pod.proxy.busy += 1;
                let epoch = pod.epoch;
                self.q.schedule_in(hold, Ev::ProxyFree { pod: p, epoch });
            }
        }
    }

    /// Requests waiting for pod `p`'s sidecar, taken away by a crash (its threads free).
    pub(super) fn drain_proxy(&mut self, p: PodId) -> VecDeque<AttemptId> {
        let proxy = &mut self.pods[p].proxy;
        proxy.busy = 0;
        std::mem::take(&mut proxy.queue)
    }

    /// A behaviour that brings a sidecar cost turns the model on.
    pub(super) fn note_proxy_cost(&mut self, cost: Option<&ProxyCost>) {
        self.sidecars.active |= cost.is_some();
    }

    /// What each workload's sidecars did so far, for those whose cost is modelled: client
    /// workloads in order, then versions, by workload name. Handshakes are the clients'
    /// proxies' count, made by both ends.
    pub fn sidecar_usage(&self) -> Vec<(String, SidecarUsage)> {
        let sc = &self.sidecars;
        if !sc.active {
            return Vec::new();
        }
        let own = self.own_certs as usize;
        let mut usage = sc.draws.usage.clone();
        for pod in &self.pods {
            usage[own + pod.version.0 as usize].backlog += pod.proxy.queue.len() as u64;
        }
        for c in (0..self.clients.len() as u32).map(ClientId) {
            let from = self.client_cert(c).0 as usize;
            for v in 0..self.versions.len() {
                let h = self.telemetry.proxy(c.0, v as u32).handshakes;
                usage[from].handshakes += h;
                usage[own + v].handshakes += h;
            }
        }
        let modelled = |i: usize| match i.checked_sub(own) {
            None => sc.clients.is_some() && self.clients[ClientId(i as u32)].sidecar,
            Some(v) => {
                let ver = &self.versions[VersionId(v as u32)];
                ver.sidecar && (ver.behaviour.proxy.is_some() || usage[i].requests > 0)
            }
        };
        let names = self.telemetry.sources().iter().map(|s| &s.workload);
        let names = names
            .take(own)
            .chain(self.telemetry.dests().iter().map(|d| &d.workload));
        names
            .zip(usage.iter())
            .enumerate()
            .filter(|&(i, _)| modelled(i))
            .map(|(_, (name, u))| {
                let cpu = u.cpu + u.handshakes * self.net.handshake_cpu;
                (name.clone(), SidecarUsage { cpu, ..*u })
            })
            .collect()
    }
}
