//! A request's path through the client's proxy: the arrival process of a client workload, routing
//! (header profile, rule, weighted version), mirroring and fault injection, then attempts: each picks a
//! host, goes through the connection pool, crosses the network and both sidecars to the pod and
//! back. The end of an attempt feeds load balancing and outlier detection, then is retried or
//! completes the request, which the client-side telemetry reports as Istio's `reporter="source"`
//! metrics do.

use super::config::ArrivalShape;
use super::event::Ev;
use super::retry::RetryBudget;
use super::{Mesh, NONE};
use crate::engine::{SimTime, Stream};
use crate::telemetry::{ProxyCounters, Reporter, flags};

pub(super) struct Client {
    pub(super) service: u32,
    pub(super) rate: f64,
    pub(super) shape: ArrivalShape,
    pub(super) profiles: Vec<(f64, Vec<(String, String)>)>,
    pub(super) profile_total: f64,
    pub(super) sidecar: bool,
    pub(super) cache: Vec<u32>,
    pub(super) cache_epoch: u32,
    pub(super) clusters: Vec<u32>,
    pub(super) arrivals: Stream,
    pub(super) routing: Stream,
    pub(super) retry: Stream,
    pub(super) budget: Option<RetryBudget>,
    pub(super) running: bool,
}

#[derive(Clone, Copy)]
pub(super) struct Request {
    pub(super) client: u32,
    pub(super) cluster: u32,
    pub(super) rule: u32,
    pub(super) start: SimTime,
    pub(super) retries_done: u32,
    pub(super) attempt: u32,
    pub(super) tag: u32,
    pub(super) flags: u16,
    pub(super) tried: [u32; 4],
    pub(super) ntried: u8,
    pub(super) holds_retry: bool,
    pub(super) live: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Pending,
    Wire,
    AtPod,
    Dropped,
    Returning,
}

#[derive(Clone, Copy)]
pub(super) struct Attempt {
    pub(super) req: u32,
    pub(super) cluster: u32,
    pub(super) host: u32,
    pub(super) pod: u32,
    pub(super) conn: u32,
    pub(super) conn_gen: u32,
    pub(super) tag: u32,
    pub(super) sent: SimTime,
    pub(super) at_pod: SimTime,
    pub(super) code: u16,
    pub(super) stage: Stage,
    pub(super) cancelled: bool,
    pub(super) mirror: bool,
    pub(super) pod_epoch: u32,
}

impl Attempt {
    /// An attempt that has just left the client's proxy for `pod` (no connection yet).
    fn on_wire(req: u32, cluster: u32, host: u32, pod: u32, sent: SimTime, mirror: bool) -> Self {
        Attempt {
            req,
            cluster,
            host,
            pod,
            conn: NONE,
            conn_gen: 0,
            tag: 0,
            sent,
            at_pod: 0,
            code: 0,
            stage: Stage::Wire,
            cancelled: false,
            mirror,
            pod_epoch: 0,
        }
    }
}

impl Mesh {
    pub(super) fn arm_client(&mut self, c: u32) {
        let cl = &mut self.clients[c as usize];
        if cl.rate > 0.0 && !cl.running {
            cl.running = true;
            let gap = next_gap(cl);
            self.q.schedule_in(gap, Ev::Arrival(c));
        }
    }

    pub(super) fn on_arrival(&mut self, c: u32) {
        let now = self.now();
        let cl = &mut self.clients[c as usize];
        if cl.rate <= 0.0 {
            cl.running = false;
            return;
        }
        let gap = next_gap(cl);
        self.q.schedule_at(now.saturating_add(gap), Ev::Arrival(c));
        self.stats.requests += 1;
        if let Some(b) = self.clients[c as usize].budget.as_mut() {
            b.deposit(now);
        }

        // Route: header profile -> rule (cached per route epoch) -> weighted version.
        let svc_idx = self.clients[c as usize].service as usize;
        let epoch = self.services[svc_idx].epoch;
        if self.clients[c as usize].cache_epoch != epoch {
            self.refresh_route_cache(c);
        }
        let cl = &mut self.clients[c as usize];
        let profile = if cl.profiles.len() == 1 {
            0
        } else {
            let mut x = cl.routing.uniform() * cl.profile_total;
            let mut pick = cl.profiles.len() - 1;
            for (i, p) in cl.profiles.iter().enumerate() {
                if x < p.0 {
                    pick = i;
                    break;
                }
                x -= p.0;
            }
            pick
        };
        let rule_id = cl.cache[profile];
        let req = self.alloc_req(c, now);
        if rule_id == NONE {
            self.complete_unrouted(req, 404, flags::NR);
            return;
        }
        let rule = &self.rules[rule_id as usize];
        let version = if rule.dests.len() == 1 {
            rule.dests[0].0
        } else if rule.total_weight == 0 {
            NONE
        } else {
            let mut x = self.clients[c as usize].routing.below(rule.total_weight);
            let mut pick = NONE;
            for &(v, w) in &rule.dests {
                if x < w {
                    pick = v;
                    break;
                }
                x -= w;
            }
            pick
        };
        if version == NONE {
            self.complete_unrouted(req, 503, flags::NR);
            return;
        }
        let cluster = self.cluster_of(c, version).unwrap_or(NONE);
        {
            let r = &mut self.reqs[req as usize];
            r.cluster = cluster;
            r.rule = rule_id;
        }
        if let Some((mv, pct)) = rule.mirror
            && self.mirror_rng.chance(pct / 100.0)
        {
            self.send_mirror(c, mv);
        }
        if self.inject_fault(req, rule_id) {
            return;
        }
        self.forward(req);
    }

    pub(super) fn alloc_req(&mut self, client: u32, now: SimTime) -> u32 {
        let fresh = Request {
            client,
            cluster: NONE,
            rule: NONE,
            start: now,
            retries_done: 0,
            attempt: NONE,
            tag: 0,
            flags: 0,
            tried: [NONE; 4],
            ntried: 0,
            holds_retry: false,
            live: true,
        };
        match self.free_reqs.pop() {
            Some(i) => {
                let tag = self.reqs[i as usize].tag;
                self.reqs[i as usize] = Request { tag, ..fresh };
                i
            }
            None => {
                self.reqs.push(fresh);
                (self.reqs.len() - 1) as u32
            }
        }
    }

    pub(super) fn alloc_att(&mut self, a: Attempt) -> u32 {
        match self.free_atts.pop() {
            Some(i) => {
                let tag = self.atts[i as usize].tag;
                self.atts[i as usize] = Attempt { tag, ..a };
                i
            }
            None => {
                self.atts.push(a);
                (self.atts.len() - 1) as u32
            }
        }
    }

    pub(super) fn free_att(&mut self, a: u32) {
        let at = &mut self.atts[a as usize];
        at.tag = at.tag.wrapping_add(1);
        self.free_atts.push(a);
    }

    pub(super) fn forward(&mut self, req: u32) {
        let r = self.reqs[req as usize];
        if let Some(t) = self.rules[r.rule as usize].timeout {
            self.q.schedule_in(t, Ev::RouteTimeout(req, r.tag));
        }
        self.start_attempt(req);
    }

    pub(super) fn send_mirror(&mut self, client: u32, version: u32) {
        let Some(ci) = self.cluster_of(client, version) else {
            return;
        };
        let Some(h) = self.pick_host(ci, &[NONE; 4], 0) else {
            return;
        };
        let pod = self.versions[version as usize].pods[h as usize];
        let now = self.now();
        let a = self.alloc_att(Attempt::on_wire(NONE, ci, h, pod, now, true));
        self.stats.attempts += 1;
        self.telemetry.proxy_mut(client, version).mirrored += 1;
        let g = self.atts[a as usize].tag;
        self.q.schedule_in(
            self.net.one_way + 2 * self.net.sidecar_latency,
            Ev::AtPod(a, g),
        );
    }

    pub(super) fn start_attempt(&mut self, req: u32) {
        let now = self.now();
        let r = self.reqs[req as usize];
        let ci = r.cluster;
        if ci == NONE {
            self.complete(req, 503, flags::UH);
            return;
        }
        let Some(h) = self.pick_host(ci, &r.tried, r.ntried) else {
            self.release_retry_hold(req);
            self.complete(req, 503, flags::UH);
            return;
        };
        let (client, version) = (
            self.clusters[ci as usize].client,
            self.clusters[ci as usize].version,
        );
        if self.clusters[ci as usize].active_requests
            >= self.clusters[ci as usize].policy.max_requests
        {
            self.telemetry.proxy_mut(client, version).pending_overflow += 1;
            self.release_retry_hold(req);
            self.complete(req, 503, flags::UO);
            return;
        }
        let pod = self.versions[version as usize].pods[h as usize];
        let a = self.alloc_att(Attempt::on_wire(req, ci, h, pod, now, false));
        self.stats.attempts += 1;
        {
            let rr = &mut self.reqs[req as usize];
            rr.attempt = a;
            let slot = usize::from(rr.ntried % 4);
            rr.tried[slot] = h;
            rr.ntried = rr.ntried.saturating_add(1);
        }
        let cl = &mut self.clusters[ci as usize];
        cl.active_requests += 1;
        cl.hosts[h as usize].active += 1;
        cl.hosts[h as usize].accrual.on_dispatch();
        let rule = &self.rules[r.rule as usize];
        if let Some(t) = rule.retry.per_try_timeout {
            let g = self.atts[a as usize].tag;
            self.q.schedule_in(t, Ev::PerTry(a, g));
        }
        if !self.try_dispatch(a) {
            let cl = &mut self.clusters[ci as usize];
            if cl.pending < cl.policy.max_pending {
                cl.pending += 1;
                cl.hosts[h as usize].pending.push_back(a);
                self.atts[a as usize].stage = Stage::Pending;
            } else {
                cl.active_requests -= 1;
                cl.hosts[h as usize].active -= 1;
                self.telemetry.proxy_mut(client, version).pending_overflow += 1;
                self.free_att(a);
                self.reqs[req as usize].attempt = NONE;
                self.release_retry_hold(req);
                self.complete(req, 503, flags::UO);
            }
        }
    }

    pub(super) fn on_response(&mut self, a: u32) {
        let at = self.atts[a as usize];
        if at.cancelled {
            self.free_att(a);
            return;
        }
        self.finish_attempt(a, at.code, 0, false);
    }

    pub(super) fn on_fail(&mut self, a: u32, f: u16) {
        let at = self.atts[a as usize];
        if at.cancelled || at.mirror {
            self.free_att(a);
            return;
        }
        self.finish_attempt(a, 503, f, true);
    }

    pub(super) fn telemetry_proxy(&mut self, a: u32) -> &mut ProxyCounters {
        let at = self.atts[a as usize];
        let cl = &self.clusters[at.cluster as usize];
        self.telemetry.proxy_mut(cl.client, cl.version)
    }

    /// A per-try or stream timeout: the attempt is abandoned (the pod may still work on it).
    pub(super) fn cancel_attempt(&mut self, a: u32, code: u16, f: u16) {
        let stage = self.atts[a as usize].stage;
        if stage == Stage::Pending {
            let at = self.atts[a as usize];
            let cl = &mut self.clusters[at.cluster as usize];
            let q = &mut cl.hosts[at.host as usize].pending;
            if let Some(i) = q.iter().position(|&x| x == a) {
                q.remove(i);
                cl.pending -= 1;
            }
        }
        self.finish_attempt(a, code, f, true);
    }

    /// Client-side end of an attempt: frees its resources, tells the balancer (latency, outlier
    /// detection), then retries or completes the request.
    pub(super) fn finish_attempt(&mut self, a: u32, code: u16, f: u16, local: bool) {
        let at = self.atts[a as usize];
        let reset = local && f & flags::UT != 0;
        self.release_conn(a, reset || f & flags::UC != 0);
        let ci = at.cluster as usize;
        let cl = &mut self.clusters[ci];
        cl.active_requests -= 1;
        cl.hosts[at.host as usize].active -= 1;
        self.record_response(ci, at.host, at.sent, code);
        let stage = self.atts[a as usize].stage;
        // An abandoned attempt still on the wire or at the pod is freed when it comes back.
        if local
            && matches!(stage, Stage::Wire | Stage::AtPod | Stage::Returning)
            && f & (flags::UT) != 0
        {
            self.atts[a as usize].cancelled = true;
        } else {
            self.free_att(a);
        }
        let req = at.req;
        self.reqs[req as usize].attempt = NONE;
        self.release_retry_hold(req);
        self.retry_or_complete(req, ci, code, f);
    }

    pub(super) fn complete_unrouted(&mut self, req: u32, code: u16, f: u16) {
        // Without a destination there is no version label to report under; count it only.
        let _ = (code, f);
        self.stats.completed += 1;
        let r = &mut self.reqs[req as usize];
        r.live = false;
        r.tag = r.tag.wrapping_add(1);
        self.free_reqs.push(req);
    }

    pub(super) fn complete(&mut self, req: u32, code: u16, f: u16) {
        let now = self.now();
        let r = self.reqs[req as usize];
        if !r.live {
            return;
        }
        if r.cluster != NONE {
            let version = self.clusters[r.cluster as usize].version;
            self.telemetry.record(
                Reporter::Source,
                r.client,
                version,
                code,
                f | r.flags,
                now - r.start,
            );
        }
        self.stats.completed += 1;
        let rr = &mut self.reqs[req as usize];
        rr.live = false;
        rr.tag = rr.tag.wrapping_add(1);
        self.free_reqs.push(req);
    }
}

pub(super) fn next_gap(cl: &mut Client) -> SimTime {
    let mean = 1e9 / cl.rate;
    match cl.shape {
        ArrivalShape::Poisson => (cl.arrivals.exp(mean) as SimTime).max(1),
        ArrivalShape::Constant => (mean as SimTime).max(1),
    }
}
