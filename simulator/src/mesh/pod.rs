//! Pods: each serves with a fixed number of workers and a FIFO queue, draws service times and errors
//! from its version's behaviour, and moves in and out of its clients' endpoint sets after the
//! endpoint propagation delay, as the EndpointSlice controller and the mesh's control plane push them.
//! Crashes reset connections and fail requests in flight; a restarted pod comes back with a new
//! epoch; scaling a version adds pods or removes the newest first, as a ReplicaSet does.

use super::Mesh;
use super::cluster::new_host;
use super::event::Ev;
use super::request::Stage;
use crate::engine::SimTime;
use crate::telemetry::{Reporter, flags};
use std::collections::VecDeque;

pub(super) struct Pod {
    pub(super) version: u32,
    pub(super) alive: bool,
    pub(super) black_hole: bool,
    pub(super) in_lb: bool,
    pub(super) removed: bool,
    pub(super) busy: u32,
    pub(super) queue: VecDeque<u32>,
    pub(super) in_service: Vec<u32>,
    pub(super) epoch: u32,
    pub(super) error_rate: Option<f64>,
    pub(super) slowdown: f64,
    pub(super) served: u64,
}

impl Mesh {
    pub(super) fn on_at_pod(&mut self, a: u32) {
        let now = self.now();
        let p = self.atts[a as usize].pod;
        let pod = &mut self.pods[p as usize];
        if !pod.alive {
            let g = self.atts[a as usize].tag;
            self.q
                .schedule_in(self.net.one_way, Ev::Fail(a, g, flags::UC));
            return;
        }
        if pod.black_hole {
            let at = &mut self.atts[a as usize];
            at.stage = Stage::Dropped;
            if at.mirror {
                self.free_att(a);
                return;
            }
            let has_timeout = {
                let r = &self.reqs[at.req as usize];
                let rule = &self.rules[r.rule as usize];
                rule.timeout.is_some() || rule.retry.per_try_timeout.is_some()
            };
            if !has_timeout {
                let g = at.tag;
                self.q
                    .schedule_in(self.net.stream_idle_timeout, Ev::StreamIdle(a, g));
            }
            return;
        }
        let epoch = pod.epoch;
        let at = &mut self.atts[a as usize];
        at.stage = Stage::AtPod;
        at.at_pod = now;
        at.pod_epoch = epoch;
        let ver = &mut self.versions[pod.version as usize];
        ver.queue_stats.arrivals += 1;
        if pod.busy >= ver.behaviour.workers || !pod.queue.is_empty() {
            ver.queue_stats.queued += 1;
        }
        pod.queue.push_back(a);
        self.start_work(p);
    }

    pub(super) fn start_work(&mut self, p: u32) {
        let now = self.now();
        loop {
            let pod = &mut self.pods[p as usize];
            let ver = &mut self.versions[pod.version as usize];
            if !pod.alive || pod.busy >= ver.behaviour.workers {
                return;
            }
            let Some(a) = pod.queue.pop_front() else {
                return;
            };
            pod.busy += 1;
            pod.in_service.push(a);
            ver.queue_stats.started += 1;
            ver.queue_stats.total_wait += u128::from(now - self.atts[a as usize].at_pod);
            let mut st = ver.behaviour.service_time.sample(&mut ver.stream);
            if pod.slowdown != 1.0 {
                st = (st as f64 * pod.slowdown) as SimTime;
            }
            let g = self.atts[a as usize].tag;
            self.q.schedule_at(now.saturating_add(st), Ev::Done(a, g));
        }
    }

    pub(super) fn on_done(&mut self, a: u32) {
        let now = self.now();
        let at = self.atts[a as usize];
        let pod = &mut self.pods[at.pod as usize];
        if pod.epoch != at.pod_epoch {
            return; // the pod crashed meanwhile; the crash already failed this attempt
        }
        pod.busy -= 1;
        pod.served += 1;
        if let Some(i) = pod.in_service.iter().position(|&x| x == a) {
            pod.in_service.swap_remove(i);
        }
        let ver = &mut self.versions[pod.version as usize];
        let rate = pod.error_rate.unwrap_or(ver.behaviour.error_rate);
        let code = if ver.stream.chance(rate) {
            ver.behaviour.error_code
        } else {
            200
        };
        let source = if at.mirror {
            self.clusters[at.cluster as usize].client
        } else {
            self.reqs[at.req as usize].client
        };
        let version = pod.version;
        self.telemetry.record(
            Reporter::Destination,
            source,
            version,
            code,
            0,
            now - at.at_pod + self.net.sidecar_latency,
        );
        self.start_work(at.pod);
        if at.mirror {
            self.free_att(a);
            return;
        }
        let at = &mut self.atts[a as usize];
        at.code = code;
        at.stage = Stage::Returning;
        let g = at.tag;
        self.q.schedule_in(
            self.net.one_way + 2 * self.net.sidecar_latency,
            Ev::Response(a, g),
        );
    }

    pub(super) fn crash(&mut self, p: u32) {
        let now = self.now();
        let pod = &mut self.pods[p as usize];
        if !pod.alive {
            return;
        }
        pod.alive = false;
        pod.busy = 0;
        let mut victims: Vec<u32> = pod.queue.drain(..).collect();
        victims.append(&mut pod.in_service);
        pod.epoch += 1;
        let epoch = pod.epoch;
        let v = pod.version;
        // In-flight requests see the connection reset.
        for a in victims {
            let at = &mut self.atts[a as usize];
            if at.mirror {
                self.free_att(a);
                continue;
            }
            at.pod_epoch = u32::MAX;
            let g = at.tag;
            self.q
                .schedule_at(now + self.net.one_way, Ev::Fail(a, g, flags::UC));
        }
        let h = self.versions[v as usize]
            .pods
            .iter()
            .position(|&x| x == p)
            .unwrap_or(0);
        for ci in 0..self.clusters.len() {
            if self.clusters[ci].version != v {
                continue;
            }
            let (client, version) = (self.clusters[ci].client, self.clusters[ci].version);
            let cl = &mut self.clusters[ci];
            let mut closed = 0;
            for c in cl.hosts[h].conns.iter_mut().filter(|c| c.open) {
                c.open = false;
                closed += 1;
            }
            cl.open_conns -= closed;
            let waiting: Vec<u32> = cl.hosts[h].pending.drain(..).collect();
            cl.pending -= waiting.len() as u32;
            self.telemetry.proxy_mut(client, version).connections_closed += u64::from(closed);
            for a in waiting {
                let g = self.atts[a as usize].tag;
                self.atts[a as usize].stage = Stage::Wire;
                self.q.schedule_at(now, Ev::Fail(a, g, flags::UF));
            }
        }
        self.q
            .schedule_in(self.net.endpoint_delay, Ev::EndpointOut(p, epoch));
    }

    pub(super) fn scale(&mut self, v: u32, target: u32) {
        let live: Vec<u32> = self.versions[v as usize]
            .pods
            .iter()
            .copied()
            .filter(|&p| !self.pods[p as usize].removed)
            .collect();
        let n = live.len() as u32;
        if target > n {
            for _ in n..target {
                let p = self.pods.len() as u32;
                self.pods.push(Pod {
                    in_lb: false,
                    ..new_pod(v)
                });
                self.versions[v as usize].pods.push(p);
                for ci in 0..self.clusters.len() {
                    if self.clusters[ci].version == v {
                        self.clusters[ci].hosts.push(new_host());
                        if let Some(od) = self.clusters[ci].od.as_mut() {
                            od.add_host();
                        }
                    }
                }
                self.q
                    .schedule_in(self.net.endpoint_delay, Ev::EndpointIn(p, 0));
            }
        } else {
            // Remove the newest pods first, as a ReplicaSet scale-down usually does.
            for &p in live.iter().rev().take((n - target) as usize) {
                self.pods[p as usize].removed = true;
                self.pods[p as usize].in_lb = false;
                let h = self.versions[v as usize]
                    .pods
                    .iter()
                    .position(|&x| x == p)
                    .unwrap_or(0);
                for ci in 0..self.clusters.len() {
                    if self.clusters[ci].version == v
                        && let Some(od) = self.clusters[ci].od.as_mut()
                    {
                        od.remove_host(h);
                    }
                }
            }
            self.endpoints_changed(v);
        }
        let s = self.versions[v as usize].service;
        if !self.services[s as usize].explicit_route {
            self.reset_default_route(s);
        }
    }
}

pub(super) fn new_pod(version: u32) -> Pod {
    Pod {
        version,
        alive: true,
        black_hole: false,
        in_lb: true,
        removed: false,
        busy: 0,
        queue: VecDeque::new(),
        in_service: Vec::new(),
        epoch: 0,
        error_rate: None,
        slowdown: 1.0,
        served: 0,
    }
}
