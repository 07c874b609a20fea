//! Pods: each serves with a fixed number of workers and a FIFO queue, draws service times and errors
//! from its version's behaviour, and moves in and out of its clients' endpoint sets after the
//! endpoint propagation delay, as the EndpointSlice controller and the mesh's control plane push them.
//! Crashes reset connections and fail requests in flight; a restarted pod comes back with a new
//! epoch; scaling a version adds pods or removes the newest first, as a ReplicaSet does.

use super::cluster::new_host;
use super::event::Ev;
use super::request::Stage;
use super::trace::trace;
use super::{AttemptId, Mesh, PodId, VersionId};
use crate::engine::SimTime;
use crate::telemetry::{Reporter, flags};
use std::collections::VecDeque;

pub(super) struct Pod {
    pub(super) version: VersionId,
    pub(super) alive: bool,
    pub(super) black_hole: bool,
    pub(super) in_lb: bool,
    pub(super) removed: bool,
    pub(super) busy: u32,
    pub(super) queue: VecDeque<AttemptId>,
    pub(super) in_service: Vec<AttemptId>,
    pub(super) epoch: u32,
    pub(super) error_rate: Option<f64>,
    pub(super) slowdown: f64,
    pub(super) served: u64,
    /// Its sidecar's worker threads, when they are modelled (sidecar.rs).
    pub(super) proxy: super::sidecar::PodProxy,
}

impl Mesh {
    pub(super) fn on_endpoint_in(&mut self, p: PodId, epoch: u32) {
        let pod = &mut self.pods[p];
        if pod.epoch == epoch && pod.alive && !pod.removed && !pod.in_lb {
            pod.in_lb = true;
            let v = pod.version;
            trace!(self, "endpoint-in", "pod" => self.pod_name(p));
            self.endpoint_joined(p);
            self.endpoints_changed(v);
        }
    }

    pub(super) fn on_endpoint_out(&mut self, p: PodId, epoch: u32) {
        let pod = &mut self.pods[p];
        if pod.epoch == epoch && pod.in_lb {
            pod.in_lb = false;
            let v = pod.version;
            trace!(self, "endpoint-out", "pod" => self.pod_name(p));
            self.endpoints_changed(v);
        }
    }

    pub(super) fn on_restart(&mut self, p: PodId, epoch: u32) {
        let pod = &mut self.pods[p];
        if pod.epoch == epoch && !pod.alive {
            pod.alive = true;
            pod.epoch += 1;
            let epoch = pod.epoch;
            trace!(self, "pod-restart", "pod" => self.pod_name(p));
            self.q
                .schedule_in(self.net.endpoint_delay, Ev::EndpointIn { pod: p, epoch });
        }
    }

    /// The client's proxy gave up on attempt `a` (per-try or route timeout) and resets its
    /// stream. One at the pod is reported now by the server sidecar, which sees its downstream
    /// close before the app answered: code 0, flag DC (envoy access-log docs: `%RESPONSE_CODE%`
    /// 0 means no response was sent, the downstream disconnected; `DC` downstream connection
    /// termination; Istio's stats filter labels its series with both). The app is not told and
    /// keeps its worker until done, as a server does with a request it already read. One still
    /// on its way or on its way back is kept until it arrives; anything else is freed.
    pub(super) fn abandon(&mut self, a: AttemptId) {
        match self.atts[a].stage {
            Stage::Wire | Stage::Returning => self.atts[a].cancelled = true,
            Stage::AtPod => {
                self.atts[a].cancelled = true;
                self.report_downstream_closed(a);
            }
            Stage::Pending | Stage::Dropped => self.free_att(a),
        }
    }

    /// The destination reporter's sample for an attempt reset while at the pod.
    fn report_downstream_closed(&mut self, a: AttemptId) {
        let now = self.now();
        let at = self.atts[a];
        let source = self.clusters[at.cluster].client;
        let version = self.pods[at.pod].version;
        if !self.versions[version].sidecar {
            return;
        }
        self.telemetry.record(
            Reporter::Destination,
            source.0,
            version.0,
            0,
            flags::DC,
            now - at.at_pod + at.inbound,
        );
    }

    pub(super) fn on_at_pod(&mut self, a: AttemptId) {
        let now = self.now();
        let p = self.atts[a].pod;
        let pod = &mut self.pods[p];
        if !pod.alive {
            let g = self.atts[a].tag;
            self.q.schedule_in(
                self.net.one_way,
                Ev::Fail {
                    attempt: a,
                    tag: g,
                    flags: flags::UC,
                },
            );
            return;
        }
        if pod.black_hole {
            trace!(self, "dropped", "req" => self.atts[a].number, "try" => self.atts[a].try_no,
                "pod" => self.pod_name(p));
            let at = &mut self.atts[a];
            at.stage = Stage::Dropped;
            let Some(req) = at.req.filter(|_| !at.cancelled) else {
                // A mirrored copy, or an abandoned attempt: nobody waits for it.
                self.free_att(a);
                return;
            };
            let has_timeout = {
                let r = &self.reqs[req];
                let rule = &self.rules[r.rule];
                rule.timeout.is_some() || rule.retry.per_try_timeout.is_some()
            };
            if !has_timeout {
                let g = at.tag;
                self.q.schedule_in(
                    self.net.stream_idle_timeout,
                    Ev::StreamIdle { attempt: a, tag: g },
                );
            }
            return;
        }
        // The server's sidecar authorizes before the application sees anything (authz.rs).
        if self.authz.active
            && !self.atts[a].cancelled
            && let Some(code) = self.refused(a)
        {
            self.deny_at_sidecar(a, code);
            return;
        }
        trace!(self, "at-pod", "req" => self.atts[a].number, "try" => self.atts[a].try_no,
            "pod" => self.pod_name(p), "queue" => self.pods[p].queue.len());
        let pod = &mut self.pods[p];
        let epoch = pod.epoch;
        let at = &mut self.atts[a];
        at.stage = Stage::AtPod;
        at.at_pod = now;
        at.pod_epoch = epoch;
        let ver = &mut self.versions[pod.version];
        ver.queue_stats.arrivals += 1;
        if pod.busy >= ver.behaviour.workers || !pod.queue.is_empty() {
            ver.queue_stats.queued += 1;
        }
        pod.queue.push_back(a);
        if at.cancelled {
            // Reset on its way: the reset follows the request to the server sidecar.
            self.report_downstream_closed(a);
        }
        self.start_work(p);
    }

    pub(super) fn start_work(&mut self, p: PodId) {
        let now = self.now();
        loop {
            let pod = &mut self.pods[p];
            let ver = &mut self.versions[pod.version];
            if !pod.alive || pod.busy >= ver.behaviour.workers {
                return;
            }
            let Some(a) = pod.queue.pop_front() else {
                return;
            };
            pod.busy += 1;
            pod.in_service.push(a);
            ver.queue_stats.started += 1;
            ver.queue_stats.total_wait += u128::from(now - self.atts[a].at_pod);
            let mut st = ver
                .behaviour
                .service_time
                .sample_with(&mut ver.stream, &mut ver.ln_memo);
            if pod.slowdown != 1.0 {
                st = (st as f64 * pod.slowdown) as SimTime;
            }
            let g = self.atts[a].tag;
            self.q
                .schedule_at(now.saturating_add(st), Ev::Done { attempt: a, tag: g });
        }
    }

    pub(super) fn on_done(&mut self, a: AttemptId) {
        let at = &self.atts[a];
        if self.pods[at.pod].epoch != at.pod_epoch {
            return; // the pod crashed meanwhile; the crash already failed this attempt
        }
        if self.makes_calls(a) {
            // The worker waits for the calls (calls.rs), then answers.
            self.begin_calls(a);
        } else {
            self.respond(a, false);
        }
    }

    /// The pod answers attempt `a` and frees its worker: with the version's error code when a
    /// call failed it, else as its behaviour draws.
    pub(super) fn respond(&mut self, a: AttemptId, call_failed: bool) {
        let now = self.now();
        let at = self.atts[a];
        let pod = &mut self.pods[at.pod];
        pod.busy -= 1;
        pod.served += 1;
        if let Some(i) = pod.in_service.iter().position(|&x| x == a) {
            pod.in_service.swap_remove(i);
        }
        let ver = &mut self.versions[pod.version];
        let rate = pod.error_rate.unwrap_or(ver.behaviour.error_rate);
        let code = if call_failed || ver.stream.chance(rate) {
            ver.behaviour.error_code
        } else {
            200
        };
        let source = match at.req {
            Some(req) => self.reqs[req].client,
            None => self.clusters[at.cluster].client,
        };
        let version = pod.version;
        trace!(self, "pod-done", "req" => at.number, "try" => at.try_no,
            "pod" => self.pod_name(at.pod), "code" => code);
        // An abandoned attempt was reported when its stream was reset; a pod without a
        // sidecar has no proxy to report anything.
        if !at.cancelled && self.versions[version].sidecar {
            self.telemetry.record(
                Reporter::Destination,
                source.0,
                version.0,
                code,
                0,
                now - at.at_pod + at.inbound,
            );
        }
        self.start_work(at.pod);
        if at.is_mirror() || at.cancelled {
            self.free_att(a);
            return;
        }
        let at = &mut self.atts[a];
        at.code = code;
        at.stage = Stage::Returning;
        let g = at.tag;
        let back = self.net.one_way + at.back;
        if back == 0 && self.q.nothing_due_now() {
            // The response would be the next event: handle it now, in the same order.
            self.q.count_handled();
            self.on_response(a);
            return;
        }
        self.q
            .schedule_in(back, Ev::Response { attempt: a, tag: g });
    }

    pub(super) fn crash(&mut self, p: PodId) {
        let now = self.now();
        let pod = &mut self.pods[p];
        if !pod.alive {
            return;
        }
        trace!(self, "pod-crash", "pod" => self.pod_name(p));
        let pod = &mut self.pods[p];
        pod.alive = false;
        pod.busy = 0;
        let mut victims: Vec<AttemptId> = pod.queue.drain(..).collect();
        victims.append(&mut pod.in_service);
        victims.extend(self.drain_proxy(p));
        let pod = &mut self.pods[p];
        pod.epoch += 1;
        let epoch = pod.epoch;
        let v = pod.version;
        // In-flight requests see the connection reset.
        for a in victims {
            let at = &mut self.atts[a];
            if at.is_mirror() {
                self.free_att(a);
                continue;
            }
            at.pod_epoch = u32::MAX;
            let g = at.tag;
            self.q.schedule_at(
                now + self.net.one_way,
                Ev::Fail {
                    attempt: a,
                    tag: g,
                    flags: flags::UC,
                },
            );
        }
        for ci in self.cluster_ids() {
            if !self.cluster_holds(ci, v) {
                continue;
            }
            let Some(h) = self.clusters[ci].pods.iter().position(|&x| x == p) else {
                continue;
            };
            let cl = &mut self.clusters[ci];
            let mut closed = 0;
            let host = &mut cl.hosts[h];
            for i in 0..host.conns.len() {
                if host.conns[i].open {
                    host.conns[i].open = false;
                    host.sync_idle(i);
                    closed += 1;
                }
            }
            self.count_closed(ci, closed);
            self.fail_pending(ci, h, flags::UF);
        }
        self.q
            .schedule_in(self.net.endpoint_delay, Ev::EndpointOut { pod: p, epoch });
    }

    pub(super) fn scale(&mut self, v: VersionId, target: u32) {
        let live: Vec<PodId> = self.versions[v]
            .pods
            .iter()
            .copied()
            .filter(|&p| !self.pods[p].removed)
            .collect();
        let n = live.len() as u32;
        if target > n {
            for _ in n..target {
                let p = PodId(self.pods.len() as u32);
                self.pods.push(Pod {
                    in_lb: false,
                    ..new_pod(v)
                });
                self.versions[v].pods.push(p);
                for ci in self.cluster_ids() {
                    if self.cluster_holds(ci, v) {
                        self.clusters[ci].pods.push(p);
                        // Not in the balancer until its endpoint is in (`on_endpoint_in`).
                        self.clusters[ci].hosts.push(new_host(self.q.now()));
                        if let Some(od) = self.clusters[ci].od.as_mut() {
                            od.add_host();
                        }
                    }
                }
                self.q
                    .schedule_in(self.net.endpoint_delay, Ev::EndpointIn { pod: p, epoch: 0 });
            }
            // The new pods count for outlier detection once they are in EDS.
            self.endpoints_changed(v);
        } else {
            // Remove the newest pods first, as a ReplicaSet scale-down usually does.
            for &p in live.iter().rev().take((n - target) as usize) {
                self.pods[p].removed = true;
                self.pods[p].in_lb = false;
                for ci in self.cluster_ids() {
                    if !self.cluster_holds(ci, v) {
                        continue;
                    }
                    let cl = &mut self.clusters[ci];
                    if let (Some(h), Some(od)) =
                        (cl.pods.iter().position(|&x| x == p), cl.od.as_mut())
                    {
                        od.remove_host(h);
                    }
                }
            }
            self.endpoints_changed(v);
        }
        let s = self.versions[v].service;
        if !self.services[s].explicit_route {
            self.reset_default_route(s);
        }
    }
}

pub(super) fn new_pod(version: VersionId) -> Pod {
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
        proxy: Default::default(),
    }
}
