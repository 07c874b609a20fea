//! A request's path through the client's proxy: the arrival process of a client workload, routing
//! (header profile, rule, weighted version), mirroring and fault injection, then attempts: each picks a
//! host, goes through the connection pool, crosses the network and both sidecars to the pod and
//! back. The end of an attempt feeds load balancing and outlier detection, then is retried or
//! completes the request, which the client-side telemetry reports as Istio's `reporter="source"`
//! metrics do.

use super::calls::NO_PARENT;
use super::config::ArrivalShape;
use super::event::Ev;
use super::retry::RetryBudget;
use super::routes::{RouteRule, Void};
use super::trace::trace;
use super::{AttemptId, ClientId, ClusterId, Mesh, PodId, RequestId, RuleId, ServiceId, VersionId};
use crate::engine::{SimTime, Stream};
use crate::telemetry::{ProxyCounters, Reporter, flags};

pub(super) struct Client {
    pub(super) service: ServiceId,
    /// Set when the client calls a version's own Service (`<service>-<version>`): no route of
    /// the service governs it, only this one (built with the mesh).
    pub(super) direct: Option<(VersionId, Option<RuleId>)>,
    /// Set for the client standing for a version's sidecar towards a service it calls.
    pub(super) caller: Option<VersionId>,
    pub(super) rate: f64,
    pub(super) shape: ArrivalShape,
    pub(super) profiles: Vec<(f64, Vec<(String, String)>)>,
    pub(super) profile_total: f64,
    /// The header set of each profile ([`Call::headers`]); none for a call's client, whose
    /// profiles are every set.
    pub(super) header_ids: Vec<u32>,
    pub(super) sidecar: bool,
    /// Without a sidecar: the cluster standing for the Service's kube-proxy rules (random
    /// ready pod, no DestinationRule) and a rule without timeout, retries, fault or mirror.
    pub(super) kube_proxy: Option<(ClusterId, RuleId)>,
    /// The first matching rule per header profile, for the routes of `cache_epoch`.
    pub(super) cache: Vec<Option<RuleId>>,
    pub(super) cache_epoch: Option<u32>,
    pub(super) clusters: Vec<ClusterId>,
    /// The cluster over every pod the Service selects (none for a direct client).
    pub(super) service_cluster: Option<ClusterId>,
    pub(super) arrivals: Stream,
    pub(super) routing: Stream,
    pub(super) retry: Stream,
    pub(super) budget: Option<RetryBudget>,
    pub(super) running: bool,
    /// Set for a client entering through an ingress gateway: the routes bound to it.
    pub(super) ingress: Option<super::gateway::Ingress>,
}

#[derive(Clone, Copy)]
pub(super) struct Request {
    pub(super) client: ClientId,
    /// None when the picked version has no cluster (answered 503 `UH`).
    pub(super) cluster: Option<ClusterId>,
    /// The destination version reported: the pod's of the latest attempt.
    pub(super) version: VersionId,
    pub(super) rule: RuleId,
    /// The arrival's number, from 1: the request's name in a trace (slots are reused).
    pub(super) number: u64,
    pub(super) start: SimTime,
    pub(super) retries_done: u32,
    /// The attempt in flight, if any (none while waiting for a retry).
    pub(super) attempt: Option<AttemptId>,
    pub(super) tag: u32,
    pub(super) flags: u16,
    /// Hosts of the last attempts (the first `ntried`, at most 4), to avoid on retries.
    pub(super) tried: [u32; 4],
    pub(super) ntried: u8,
    pub(super) holds_retry: bool,
    pub(super) live: bool,
    pub(super) call: Call,
}

/// Where a request comes from: the calls of a request at a pod ([`NO_PARENT`] for a client's
/// own), and the headers it carries.
#[derive(Clone, Copy)]
pub(super) struct Call {
    /// The [`Calling`](super::calls::Calling) it is a call of.
    pub(super) parent: u32,
    /// The header set ([`HeaderSets`](super::headers::HeaderSets)).
    pub(super) headers: u32,
    /// A failed optional call does not fail its caller.
    pub(super) optional: bool,
    /// The calling application gives up after this long ([`Ev::CallTimeout`]), 0 never.
    pub(super) timeout: SimTime,
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
    /// The request it serves; none for a mirrored copy, whose response nobody waits for.
    pub(super) req: Option<RequestId>,
    pub(super) cluster: ClusterId,
    /// The host: the pod's index within its version.
    pub(super) host: u32,
    pub(super) pod: PodId,
    /// The connection slot of the host it uses, once it has one.
    pub(super) conn: Option<u32>,
    pub(super) conn_gen: u32,
    pub(super) tag: u32,
    pub(super) sent: SimTime,
    pub(super) at_pod: SimTime,
    pub(super) code: u16,
    pub(super) stage: Stage,
    pub(super) cancelled: bool,
    pub(super) pod_epoch: u32,
    /// For the trace: the request's number (0 for a mirrored copy) and the try, from 1.
    pub(super) number: u64,
    pub(super) try_no: u32,
    /// The number of the request its trace began with (its own, unless it is a call).
    pub(super) root: u64,
    /// The request's header set ([`Call::headers`]), which calls made at the pod carry on.
    pub(super) headers: u32,
    /// What both sidecars add to the response on its way back (sidecar.rs).
    pub(super) back: SimTime,
    /// Its time in the server's sidecar on the way in, once a worker took it (the wait for
    /// one is not the destination's to report): the part of its reported duration before
    /// the pod.
    pub(super) inbound: SimTime,
}

impl Attempt {
    /// An attempt that has just left the client's proxy for `pod` (no connection yet).
    fn on_wire(
        req: Option<RequestId>,
        cluster: ClusterId,
        host: u32,
        pod: PodId,
        sent: SimTime,
    ) -> Self {
        Attempt {
            req,
            cluster,
            host,
            pod,
            conn: None,
            conn_gen: 0,
            tag: 0,
            sent,
            at_pod: 0,
            code: 0,
            stage: Stage::Wire,
            cancelled: false,
            pod_epoch: 0,
            number: 0,
            try_no: 0,
            root: 0,
            headers: 0,
            back: 0,
            inbound: 0,
        }
    }

    /// A mirrored copy: nobody waits for its response.
    pub(super) fn is_mirror(&self) -> bool {
        self.req.is_none()
    }
}

impl Mesh {
    pub(super) fn arm_client(&mut self, c: ClientId) {
        let cl = &mut self.clients[c];
        if cl.rate > 0.0 && !cl.running {
            cl.running = true;
            let gap = next_gap(cl);
            self.q.schedule_in(gap, Ev::Arrival { client: c });
        }
    }

    pub(super) fn on_arrival(&mut self, c: ClientId) {
        let now = self.now();
        let cl = &mut self.clients[c];
        if cl.rate <= 0.0 {
            cl.running = false;
            return;
        }
        let gap = next_gap(cl);
        self.q
            .schedule_at(now.saturating_add(gap), Ev::Arrival { client: c });
        self.send(c, None);
    }

    /// Client `c` sends a request: a new one (`call` None: its header profile is drawn), or a
    /// call of a request at a pod, carrying that request's headers.
    pub(super) fn send(&mut self, c: ClientId, call: Option<Call>) {
        let now = self.now();
        self.stats.requests += 1;
        let cl = &mut self.clients[c];
        let profile = match call {
            Some(call) => call.headers as usize,
            None if cl.profiles.len() == 1 => 0,
            None => {
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
            }
        };
        let call = Call {
            headers: cl
                .header_ids
                .get(profile)
                .copied()
                .unwrap_or(profile as u32),
            ..call.unwrap_or(Call {
                parent: NO_PARENT,
                headers: 0,
                optional: false,
                timeout: 0,
            })
        };
        if let Some((ci, rule)) = self.clients[c].kube_proxy {
            // No sidecar: no route, fault or mirror applies; kube-proxy picks the pod.
            let req = self.alloc_req(c, now, Some(ci), rule, call);
            trace!(self, "request", "req" => self.req_no(req), "client" => self.client_name(c),
                "version" => "-");
            self.start_attempt(req);
            return;
        }
        // Route: header profile -> rule (cached per route epoch) -> weighted version.
        let epoch = self.route_epoch(c);
        if self.clients[c].cache_epoch != Some(epoch) {
            self.refresh_route_cache(c);
        }
        // No matching rule is a 404 `NR`; a rule whose weights are all zero a 503 `NR`.
        let Some(rule_id) = self.clients[c].cache[profile] else {
            trace!(self, "unrouted", "req" => self.stats.requests, "client" => self.client_name(c),
                "code" => 404, "flags" => "NR");
            self.complete_unrouted(c, 404, flags::NR, call, None);
            return;
        };
        let rule = &self.rules[rule_id];
        // A direct response or a redirect: the proxy answers, with no response flag. Envoy's
        // fault filter runs before the router answers (Istio sets a route's fault on
        // redirect and direct-response routes too): an abort replaces the answer, a delay
        // holds it.
        if let Some(code) = rule.answer {
            if rule.fault.is_none() {
                trace!(self, "answered", "req" => self.stats.requests,
                    "client" => self.client_name(c), "code" => code, "flags" => "-");
                self.complete_unrouted(c, code, 0, call, Some(rule_id));
            } else {
                let req = self.alloc_req(c, now, None, rule_id, call);
                if !self.inject_fault(req, rule_id) {
                    self.forward(req);
                }
            }
            return;
        }
        let Some(dest) = pick_weighted(rule, &mut self.clients[c].routing) else {
            trace!(self, "unrouted", "req" => self.stats.requests, "client" => self.client_name(c),
                "code" => 503, "flags" => "NR");
            self.complete_unrouted(c, 503, flags::NR, call, Some(rule_id));
            return;
        };
        let cluster = match dest {
            Dest::Version(v) => self.cluster_of(c, v),
            Dest::Group(g) => self.group_cluster(c, g),
            Dest::Service => self.clients[c].service_cluster,
            // No endpoints: the attempt finds no host, 503 `UH`.
            Dest::Void(Void::NoEndpoints) => None,
            Dest::Void(Void::NoCluster) => {
                trace!(self, "unrouted", "req" => self.stats.requests, "client" => self.client_name(c),
                    "code" => 503, "flags" => "NC");
                self.complete_unrouted(c, 503, flags::NC, call, Some(rule_id));
                return;
            }
        };
        let req = self.alloc_req(c, now, cluster, rule_id, call);
        trace!(self, "request", "req" => self.req_no(req), "client" => self.client_name(c),
        "version" => match dest {
            Dest::Version(v) => self.trace_version(v),
            Dest::Group(_) | Dest::Service | Dest::Void(_) => "-",
        });
        if self.inject_fault(req, rule_id) {
            return;
        }
        self.forward(req);
    }

    pub(super) fn alloc_req(
        &mut self,
        client: ClientId,
        now: SimTime,
        cluster: Option<ClusterId>,
        rule: RuleId,
        call: Call,
    ) -> RequestId {
        let version = match cluster {
            Some(ci) => self.clusters[ci].version,
            None => VersionId(0),
        };
        let fresh = Request {
            client,
            cluster,
            version,
            rule,
            number: self.stats.requests,
            start: now,
            retries_done: 0,
            attempt: None,
            tag: 0,
            flags: 0,
            tried: [0; 4],
            ntried: 0,
            holds_retry: false,
            live: true,
            call,
        };
        let req = match self.free_reqs.pop() {
            Some(i) => {
                let tag = self.reqs[i].tag;
                self.reqs[i] = Request { tag, ..fresh };
                i
            }
            None => {
                self.reqs.push(fresh);
                RequestId((self.reqs.len() - 1) as u32)
            }
        };
        if call.timeout > 0 {
            let tag = self.reqs[req].tag;
            self.q
                .schedule_in(call.timeout, Ev::CallTimeout { request: req, tag });
        }
        req
    }

    pub(super) fn alloc_att(&mut self, a: Attempt) -> AttemptId {
        match self.free_atts.pop() {
            Some(i) => {
                let tag = self.atts[i].tag;
                self.atts[i] = Attempt { tag, ..a };
                i
            }
            None => {
                self.atts.push(a);
                AttemptId((self.atts.len() - 1) as u32)
            }
        }
    }

    pub(super) fn free_att(&mut self, a: AttemptId) {
        let at = &mut self.atts[a];
        at.tag = at.tag.wrapping_add(1);
        self.free_atts.push(a);
    }

    /// Sends the request upstream once faults are applied. Mirroring is the router's work, and
    /// Envoy's fault filter runs before the router: an aborted request is never mirrored and a
    /// delayed one is mirrored after its delay (envoy `docs/root/configuration/http/http_filters/
    /// fault_filter.rst`; Istio puts the fault filter ahead of the router).
    pub(super) fn forward(&mut self, req: RequestId) {
        let r = self.reqs[req];
        // A direct response or a redirect after its fault's delay.
        if let Some(code) = self.rules[r.rule].answer {
            trace!(self, "answered", "req" => r.number, "client" => self.client_name(r.client),
                "code" => code, "flags" => flags::render(r.flags));
            self.complete_as(req, code, 0, false);
            return;
        }
        if let Some((to, pct)) = self.rules[r.rule].mirror
            && self.mirror_rng.chance(pct / 100.0)
        {
            self.send_mirror(r.client, to);
        }
        // Envoy: a route timeout of 0 disables it (Gateway API: a zero duration disables).
        if let Some(t) = self.rules[r.rule].timeout
            && t > 0
        {
            self.q.schedule_in(
                t,
                Ev::RouteTimeout {
                    request: req,
                    tag: r.tag,
                },
            );
        }
        self.start_attempt(req);
    }

    pub(super) fn send_mirror(&mut self, client: ClientId, to: Dest) {
        let cluster = match to {
            Dest::Version(v) => self.cluster_of(client, v),
            Dest::Group(g) => self.group_cluster(client, g),
            Dest::Service => self.clients[client].service_cluster,
            Dest::Void(_) => None,
        };
        let Some(ci) = cluster else {
            return;
        };
        let Some(h) = self.pick_host(ci, &[0; 4], 0) else {
            return;
        };
        let pod = self.clusters[ci].pods[h as usize];
        let version = self.pods[pod].version;
        let now = self.now();
        let a = self.alloc_att(Attempt::on_wire(None, ci, h, pod, now));
        self.stats.attempts += 1;
        trace!(self, "mirror-sent", "client" => self.client_name(client),
            "pod" => self.pod_name(pod), "version" => self.trace_version(version));
        self.telemetry.proxy_mut(client.0, version.0).mirrored += 1;
        self.send_to_pod(a, false);
    }

    pub(super) fn start_attempt(&mut self, req: RequestId) {
        let now = self.now();
        let r = self.reqs[req];
        let Some(ci) = r.cluster else {
            self.complete(req, 503, flags::UH);
            return;
        };
        let avoid = self.rules[r.rule].retry.avoid_tried;
        let Some(h) = self.pick_host(ci, &r.tried, if avoid { r.ntried } else { 0 }) else {
            self.release_retry_hold(req);
            self.complete(req, 503, flags::UH);
            return;
        };
        let pod = self.clusters[ci].pods[h as usize];
        let a = self.alloc_att(Attempt::on_wire(Some(req), ci, h, pod, now));
        self.stats.attempts += 1;
        let root = self.trace_root(r.number, r.call.parent);
        {
            let rr = &mut self.reqs[req];
            rr.version = self.pods[pod].version;
            rr.attempt = Some(a);
            let slot = usize::from(rr.ntried % 4);
            rr.tried[slot] = h;
            rr.ntried = rr.ntried.saturating_add(1);
            let at = &mut self.atts[a];
            (at.number, at.try_no, at.headers) = (rr.number, rr.retries_done + 1, rr.call.headers);
            at.root = root;
        }
        // The pool sends it on a ready connection, queues it or overflows it (pool.rs).
        self.dispatch(a);
    }

    pub(super) fn on_response(&mut self, a: AttemptId) {
        let at = self.atts[a];
        if at.cancelled {
            self.free_att(a);
            return;
        }
        self.finish_attempt(a, at.code, 0, false);
    }

    pub(super) fn on_fail(&mut self, a: AttemptId, f: u16) {
        let at = self.atts[a];
        if at.cancelled || at.is_mirror() {
            self.free_att(a);
            return;
        }
        self.finish_attempt(a, 503, f, true);
    }

    pub(super) fn telemetry_proxy(&mut self, a: AttemptId) -> &mut ProxyCounters {
        let at = self.atts[a];
        let client = self.clusters[at.cluster].client;
        self.telemetry
            .proxy_mut(client.0, self.pods[at.pod].version.0)
    }

    /// A per-try or stream timeout: the attempt is abandoned (the pod may still work on it).
    pub(super) fn cancel_attempt(&mut self, a: AttemptId, code: u16, f: u16) {
        self.unqueue_pending(a);
        self.finish_attempt(a, code, f, true);
    }

    /// Client-side end of an attempt: frees its resources, tells the balancer (latency, outlier
    /// detection), then retries or completes the request.
    pub(super) fn finish_attempt(&mut self, a: AttemptId, code: u16, f: u16, local: bool) {
        let at = self.atts[a];
        if self.outputs.is_some() {
            self.output_attempt(a, code, f);
        }
        trace!(self, "attempt-end", "req" => at.number, "try" => at.try_no,
            "pod" => self.pod_name(at.pod), "code" => code, "flags" => flags::render(f));
        let reset = local && f & flags::UT != 0;
        self.release_conn(a, reset || f & flags::UC != 0);
        let ci = at.cluster;
        // Envoy's local-origin errors: no connection, a reset, a timeout.
        let local_failure = f & (flags::UF | flags::UC | flags::UT) != 0;
        self.record_response(ci, at.host, at.sent, code, local_failure);
        if local && f & flags::UT != 0 {
            self.abandon(a);
        } else {
            self.free_att(a);
        }
        // Mirrored copies end in on_done or on_fail and never get here.
        let Some(req) = at.req else {
            return;
        };
        self.reqs[req].attempt = None;
        self.release_retry_hold(req);
        self.retry_or_complete(req, ci, code, f);
    }

    /// A request no route takes (`NR`), or whose route names no cluster (`NC`, `rule` the
    /// route): the client's proxy answers at once, reported against the service's `unknown`
    /// destination.
    fn complete_unrouted(
        &mut self,
        c: ClientId,
        code: u16,
        flag: u16,
        call: Call,
        rule: Option<RuleId>,
    ) {
        if self.outputs.is_some() {
            self.output_unrouted(c, code, flag, call, rule);
        }
        let dest = self.unknown_dest(self.clients[c].service);
        self.telemetry
            .record(Reporter::Source, c.0, dest, code, flag, 0);
        self.stats.completed += 1;
        if call.parent != NO_PARENT {
            self.call_done(call.parent, code, call.optional);
        }
    }

    /// The telemetry destination of requests of service `s` that reached no pod.
    pub(super) fn unknown_dest(&self, s: ServiceId) -> u32 {
        (self.versions.len() + s.0 as usize) as u32
    }

    pub(super) fn complete(&mut self, req: RequestId, code: u16, f: u16) {
        // Answered by the client's proxy before any attempt reached a pod (fault abort, no
        // healthy upstream): Istio's stats filter has no upstream peer and labels the
        // destination workload `unknown`.
        let r = &self.reqs[req];
        let peerless = r.ntried == 0 && f & (flags::UH | flags::FI) != 0;
        self.complete_as(req, code, f, !peerless && r.cluster.is_some());
    }

    /// Completes the request; `peer`: its last attempt had an upstream host, which names the
    /// destination reported (else the service's `unknown` destination).
    pub(super) fn complete_as(&mut self, req: RequestId, code: u16, f: u16, peer: bool) {
        let now = self.now();
        let r = self.reqs[req];
        if !r.live {
            return;
        }
        if self.outputs.is_some() {
            self.output_request(req, code, f | r.flags, peer);
        }
        trace!(self, "request-done", "req" => r.number, "client" => self.client_name(r.client),
            "version" => if peer { self.trace_version(r.version) } else { "-" },
            "code" => code, "flags" => flags::render(f | r.flags),
            "ms" => crate::trace::ms(now - r.start));
        let dest = if peer {
            r.version.0
        } else {
            self.unknown_dest(self.clients[r.client].service)
        };
        self.telemetry.record(
            Reporter::Source,
            r.client.0,
            dest,
            code,
            f | r.flags,
            now - r.start,
        );
        self.stats.completed += 1;
        let rr = &mut self.reqs[req];
        rr.live = false;
        rr.tag = rr.tag.wrapping_add(1);
        self.free_reqs.push(req);
        if r.call.parent != NO_PARENT {
            self.call_done(r.call.parent, code, r.call.optional);
        }
    }
}

/// Where a route sends a request: a subset's (or a version's own Service's) cluster, or the
/// cluster over every pod of the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dest {
    Version(VersionId),
    /// A subset over several versions: its cluster spans their pods.
    Group(u32),
    Service,
    /// A subset that leads to no pod.
    Void(Void),
}

/// Envoy's weighted cluster pick: a uniform draw over the total weight, walked in order (the
/// whole-service destination last). None when every weight is zero.
pub(super) fn pick_weighted(rule: &RouteRule, rng: &mut Stream) -> Option<Dest> {
    let only_versions = rule.void.is_empty() && rule.groups.is_empty();
    match (rule.dests.len(), rule.whole, only_versions) {
        (1, 0, true) => return Some(Dest::Version(rule.dests[0].0)),
        (0, w, true) if w > 0 => return Some(Dest::Service),
        _ => {}
    }
    if rule.total_weight == 0 {
        return None;
    }
    let mut x = rng.below(rule.total_weight);
    for &(v, w) in &rule.dests {
        if x < w {
            return Some(Dest::Version(v));
        }
        x -= w;
    }
    for &(g, w) in &rule.groups {
        if x < w {
            return Some(Dest::Group(g));
        }
        x -= w;
    }
    for &(v, w) in &rule.void {
        if x < w {
            return Some(Dest::Void(v));
        }
        x -= w;
    }
    (rule.whole > 0).then_some(Dest::Service)
}

pub(super) fn next_gap(cl: &mut Client) -> SimTime {
    let mean = 1e9 / cl.rate;
    match cl.shape {
        ArrivalShape::Poisson => (cl.arrivals.exp(mean) as SimTime).max(1),
        ArrivalShape::Constant => (mean as SimTime).max(1),
    }
}
