//! The connection pool and its circuit breakers, per Envoy cluster, as Envoy's HTTP connection
//! pool keeps them (envoy `source/common/conn_pool/conn_pool_base.cc`; the limits are Istio's
//! `connectionPool` fields, translated in istio `pilot/pkg/networking/core/
//! cluster_traffic_policy.go`: `maxConnections`, `http1MaxPendingRequests`, `http2MaxRequests`,
//! `maxRequestsPerConnection`). Connections are per host, one stream each (HTTP/1.1) or
//! multiplexed (HTTP/2), and reused while idle.
//!
//! An attempt that finds no ready connection is *pending* (also while the connection it waits
//! for is being set up) and counts against `http1MaxPendingRequests`; past it the attempt
//! overflows with 503 `UO` (`upstream_rq_pending_overflow`). A pending attempt starts a new
//! connection when the host's connecting ones cannot carry it, within `maxConnections`, except
//! that a host with no connection at all may always open one (envoy `docs/root/intro/
//! arch_overview/upstream/circuit_breaking.rst`). Only an attempt put on a ready connection is
//! sent: it then counts as an active request (`http2MaxRequests`, overflowing with `UO` as
//! well), and its per-try timer starts (envoy issue 4903). A failed connection attempt fails
//! every pending attempt of its host. A mode change on the server's sidecar drains connections.

use super::cluster::Host;
use super::event::Ev;
use super::request::Stage;
use super::tls::{Handshake, Peers, handshake};
use super::trace::trace;
use super::{AttemptId, ClusterId, Mesh, VersionId};
use crate::engine::SimTime;
use crate::telemetry::flags;

#[derive(Clone, Copy, Debug)]
pub(super) struct Conn {
    pub(super) open: bool,
    /// Being set up (TCP, TLS): it carries no stream yet.
    pub(super) connecting: bool,
    /// How the setup ends: 0 ready, else the response flags of the failure.
    pub(super) fail: u16,
    /// Unique within the host (it grows with every connection), so a stale setup event or a
    /// stream of an earlier connection in the same slot is recognised.
    pub(super) tag: u32,
    pub(super) streams: u32,
    pub(super) served: u32,
    pub(super) last_used: SimTime,
    pub(super) closing: bool,
    /// The server resets it on the first bytes of a request (a STRICT server, a plaintext
    /// client): connected, but every stream sent on it fails `UC`.
    pub(super) resets: bool,
}

impl Conn {
    /// Open, set up and carrying no stream: an HTTP/1.1 request may take it (unless closing), or
    /// the idle timeout may close it.
    fn idle(&self) -> bool {
        self.open && !self.connecting && self.streams == 0
    }
}

/// One bit per connection slot of a host, set while the connection is [idle](Conn::idle), so
/// that an HTTP/1.1 request finds the first idle connection without walking the busy ones.
#[derive(Clone, Debug, Default)]
pub(super) struct IdleConns(Vec<u64>);

impl IdleConns {
    fn set(&mut self, slot: usize, idle: bool) {
        let (word, bit) = (slot / 64, slot % 64);
        if word >= self.0.len() {
            if !idle {
                return;
            }
            self.0.resize(word + 1, 0);
        }
        if idle {
            self.0[word] |= 1 << bit;
        } else {
            self.0[word] &= !(1 << bit);
        }
    }

    /// The first idle slot at or after `from`.
    fn first_from(&self, from: usize) -> Option<usize> {
        let mut word = from / 64;
        let mut bits = self.0.get(word)? & (u64::MAX << (from % 64));
        loop {
            if bits != 0 {
                return Some(word * 64 + bits.trailing_zeros() as usize);
            }
            word += 1;
            bits = *self.0.get(word)?;
        }
    }
}

impl Host {
    /// Brings slot `i`'s idle bit in line with its connection: called after every change to one.
    pub(super) fn sync_idle(&mut self, i: usize) {
        let idle = self.conns[i].idle();
        self.idle.set(i, idle);
    }

    /// Every slot's idle bit matches its connection (checked in debug builds, so the tests'
    /// runs catch a change to a connection that forgot [`Host::sync_idle`]).
    fn idle_in_line(&self) -> bool {
        let bits = self.conns.len().div_ceil(64).max(self.idle.0.len());
        (0..bits * 64).all(|i| {
            let bit = self
                .idle
                .0
                .get(i / 64)
                .is_some_and(|w| w >> (i % 64) & 1 == 1);
            bit == self.conns.get(i).is_some_and(Conn::idle)
        })
    }
}

impl Mesh {
    /// Takes a waiting attempt out of its host's pending queue (it timed out there). The
    /// connection it caused stays to finish its setup for later attempts, as with the policy
    /// Envoy's router cancels with (`CancelPolicy::Default`, not `CloseExcess`).
    pub(super) fn unqueue_pending(&mut self, a: AttemptId) {
        let at = self.atts[a];
        if at.stage != Stage::Pending {
            return;
        }
        let cl = &mut self.clusters[at.cluster];
        let q = &mut cl.hosts[at.host as usize].pending;
        if let Some(i) = q.iter().position(|&x| x == a) {
            q.remove(i);
            cl.pending -= 1;
        }
    }

    /// Puts attempt `a` on a ready connection of its host, or queues it as pending (opening
    /// connections as the limits allow), or overflows it with 503 `UO`.
    pub(super) fn dispatch(&mut self, a: AttemptId) {
        let at = self.atts[a];
        let (ci, h) = (at.cluster, at.host);
        if let Some(slot) = self.ready_conn(ci, h) {
            self.attach(a, slot);
            return;
        }
        let cl = &mut self.clusters[ci];
        if cl.pending >= cl.policy.max_pending {
            self.overflow(a, "pending");
            return;
        }
        cl.pending += 1;
        cl.hosts[h as usize].pending.push_back(a);
        let waiting = cl.pending;
        self.atts[a].stage = Stage::Pending;
        trace!(self, "pool-wait", "req" => at.number, "try" => at.try_no,
            "pod" => self.pod_name(at.pod), "pending" => waiting);
        self.grow_pool(ci, h);
    }

    /// Streams one connection carries at once (before `maxRequestsPerConnection` closes it).
    fn streams_per_conn(&self, ci: ClusterId) -> u32 {
        let p = &self.clusters[ci].policy;
        match (p.http2, p.max_requests_per_connection) {
            (false, _) => 1,
            (true, 0) => u32::MAX,
            (true, n) => n,
        }
    }

    /// A ready connection of host `h` with room for a stream; closes the idle ones past the
    /// idle timeout on the way.
    fn ready_conn(&mut self, ci: ClusterId, h: u32) -> Option<u32> {
        let now = self.now();
        let cap = self.streams_per_conn(ci);
        let cl = &mut self.clusters[ci];
        let idle = cl.policy.idle_timeout;
        let mut closed = 0;
        let mut found = None;
        let host = &mut cl.hosts[h as usize];
        debug_assert!(
            host.idle_in_line(),
            "idle bits out of line with the connections"
        );
        if cap == 1 {
            // HTTP/1.1: the walk below, visiting only the connections it could act on (an
            // idle one is taken or, past the idle timeout, closed).
            let mut from = 0;
            while let Some(i) = host.idle.first_from(from) {
                from = i + 1;
                let c = &mut host.conns[i];
                if now.saturating_sub(c.last_used) > idle {
                    c.open = false;
                    host.idle.set(i, false);
                    closed += 1;
                    continue;
                }
                if !c.closing {
                    found = Some(i as u32);
                    break;
                }
            }
        } else {
            for i in 0..host.conns.len() {
                let c = &mut host.conns[i];
                if !c.open || c.connecting {
                    continue;
                }
                if c.streams == 0 && now.saturating_sub(c.last_used) > idle {
                    c.open = false;
                    host.sync_idle(i);
                    closed += 1;
                    continue;
                }
                if !c.closing && c.streams < cap {
                    found = Some(i as u32);
                    break;
                }
            }
        }
        if closed > 0 {
            self.count_closed(ci, closed);
        }
        found
    }

    /// Sends attempt `a` on connection `slot` of its host, if `http2MaxRequests` allows: from
    /// here it is an active request and its per-try timer runs.
    fn attach(&mut self, a: AttemptId, slot: u32) {
        let now = self.now();
        let at = self.atts[a];
        let ci = at.cluster;
        let per_conn = self.clusters[ci].policy.max_requests_per_connection;
        let cl = &mut self.clusters[ci];
        if cl.active_requests >= cl.policy.max_requests {
            self.overflow(a, "requests");
            return;
        }
        cl.active_requests += 1;
        let host = &mut cl.hosts[at.host as usize];
        host.active += 1;
        host.accrual.on_dispatch();
        let c = &mut host.conns[slot as usize];
        c.streams += 1;
        c.served += 1;
        if per_conn > 0 && c.served >= per_conn {
            c.closing = true;
        }
        let (tag, resets) = (c.tag, c.resets);
        host.sync_idle(slot as usize);
        let client = cl.client;
        let att = &mut self.atts[a];
        (att.conn, att.conn_gen, att.stage, att.sent) = (Some(slot), tag, Stage::Wire, now);
        trace!(self, "attempt-sent", "req" => at.number, "try" => at.try_no,
            "client" => self.client_name(client), "pod" => self.pod_name(at.pod),
            "version" => self.trace_version(self.pods[at.pod].version));
        // Envoy's router arms the per-try timer, for a timeout above 0, once the pool hands it
        // a ready connection (`onPoolReady`), not while the request waits for one.
        if let Some(req) = at.req
            && let Some(t) = self.rules[self.reqs[req].rule].retry.per_try_timeout
            && t > 0
        {
            self.q.schedule_in(
                t,
                Ev::PerTry {
                    attempt: a,
                    tag: at.tag,
                },
            );
        }
        // Across the network and both sidecars (sidecar.rs); a server that resets the
        // connection does so when the request's bytes reach its sidecar.
        self.send_to_pod(a, resets);
    }

    /// The pool refuses attempt `a` (`limit`: which circuit breaker): 503 `UO`, counted as
    /// Envoy's `upstream_rq_pending_overflow`, never retried. A pending overflow fails the
    /// stream with no host (conn_pool_base.cc `newStreamImpl`: `onPoolFailure(nullptr, ...)`),
    /// so the router records no upstream host and Istio reports the destination `unknown`; an
    /// overflow of the active requests at attach time names the connection's host.
    fn overflow(&mut self, a: AttemptId, limit: &'static str) {
        let at = self.atts[a];
        let cl = &self.clusters[at.cluster];
        let (client, version) = (cl.client, cl.version);
        self.telemetry
            .proxy_mut(client.0, version.0)
            .pending_overflow += 1;
        trace!(self, "pool-overflow", "req" => at.number, "try" => at.try_no,
            "pod" => self.pod_name(at.pod), "limit" => limit);
        self.free_att(a);
        if let Some(req) = at.req {
            self.reqs[req].attempt = None;
            self.release_retry_hold(req);
            self.complete_as(req, 503, flags::UO, limit != "pending");
        }
    }

    /// Opens connections to host `h` while its pending attempts outnumber what its connecting
    /// connections will carry, within `maxConnections`; a host without any connection opens
    /// one regardless, so its requests cannot wait forever on other hosts' connections.
    fn grow_pool(&mut self, ci: ClusterId, h: u32) {
        if self.clusters[ci].hosts[h as usize].pending.is_empty() {
            return; // the common case, after every response
        }
        let cap = u64::from(self.streams_per_conn(ci));
        loop {
            let cl = &self.clusters[ci];
            let host = &cl.hosts[h as usize];
            let connecting = host.conns.iter().filter(|c| c.open && c.connecting).count();
            if host.pending.len() as u64 <= connecting as u64 * cap {
                return;
            }
            let none_open = !host.conns.iter().any(|c| c.open);
            if cl.open_conns >= cl.policy.max_connections && !none_open {
                return;
            }
            self.open_conn(ci, h);
        }
    }

    /// Starts a connection to host `h`; its setup ends (ready or failed: refused, timed out,
    /// mTLS mismatch, expired certificate) with a [`Ev::ConnSetUp`].
    fn open_conn(&mut self, ci: ClusterId, h: u32) {
        let now = self.now();
        let client = self.clusters[ci].client;
        let pod = &self.pods[self.clusters[ci].pods[h as usize]];
        let version = pod.version;
        let ver = &self.versions[version];
        let peers = Peers {
            data_plane: self.data_plane,
            client_sidecar: self.clients[client].sidecar,
            client_tls: self.clusters[ci].policy.tls,
            server_sidecar: ver.sidecar,
            server_mode: ver.server_mode,
            certs_valid: self.certs[self.client_cert(client)].expires_at > now
                && self.certs[self.version_cert(version)].expires_at > now,
        };
        // (after how long, flags of a failure, whether TLS was negotiated, whether the server
        // resets what is sent)
        let (after, fail, tls, resets) =
            match (pod.alive, pod.black_hole, handshake(&peers, &self.net)) {
                (false, _, _) => (2 * self.net.one_way, flags::UF, false, false),
                (true, true, _) => (
                    self.clusters[ci].policy.connect_timeout,
                    flags::UF,
                    false,
                    false,
                ),
                (true, false, Handshake::Fails { after, flags }) => (after, flags, true, false),
                (true, false, Handshake::Ready { after, mutual }) => (after, 0, mutual, false),
                (true, false, Handshake::Resets { after }) => (after, 0, false, true),
            };
        let counters = self.telemetry.proxy_mut(client.0, version.0);
        counters.connections_opened += 1;
        match (fail, tls) {
            (0, true) => counters.handshakes += 1,
            (0, false) => {}
            (_, tls) => {
                counters.connect_failures += 1;
                counters.handshake_failures += u64::from(tls);
            }
        }
        let cl = &mut self.clusters[ci];
        cl.open_conns += 1;
        let host = &mut cl.hosts[h as usize];
        let tag = host.conns.iter().map(|c| c.tag).max().unwrap_or(0) + 1;
        let fresh = Conn {
            open: true,
            connecting: true,
            fail,
            tag,
            streams: 0,
            served: 0,
            last_used: now,
            closing: false,
            resets,
        };
        let slot = match host.conns.iter().position(|c| !c.open) {
            Some(i) => {
                host.conns[i] = fresh;
                i
            }
            None => {
                host.conns.push(fresh);
                host.conns.len() - 1
            }
        };
        host.sync_idle(slot);
        trace!(self, "conn-open", "pod" => self.pod_name(self.clusters[ci].pods[h as usize]),
            "ms" => crate::trace::ms(after));
        self.q.schedule_at(
            now + after,
            Ev::ConnSetUp {
                cluster: ci,
                host: h,
                tag,
            },
        );
    }

    /// The setup of connection `tag` of host `h` is over: a ready one takes the host's pending
    /// attempts; a failed one fails all of them, as Envoy purges a pool's pending streams when a
    /// connection closes while still connecting (conn_pool_base.cc `onConnectionEvent`); one
    /// closed after connecting (a server resetting plaintext) fails only what was sent on it.
    pub(super) fn on_conn_set_up(&mut self, ci: ClusterId, h: u32, tag: u32) {
        let now = self.now();
        let host = &mut self.clusters[ci].hosts[h as usize];
        let Some(slot) = host
            .conns
            .iter()
            .position(|c| c.open && c.connecting && c.tag == tag)
        else {
            return; // closed while connecting (pod crash, drain)
        };
        let c = &mut host.conns[slot];
        c.connecting = false;
        c.last_used = now;
        let fail = c.fail;
        if fail != 0 {
            c.open = false;
        }
        host.sync_idle(slot);
        if fail == 0 {
            self.drain_pending(ci, h);
            return;
        }
        self.count_closed(ci, 1);
        let waiting = self.fail_pending(ci, h as usize, fail);
        trace!(self, "conn-fail", "pod" => self.pod_name(self.clusters[ci].pods[h as usize]),
            "flags" => flags::render(fail), "pending" => waiting);
    }

    /// Fails every attempt waiting for a connection to host `h` of cluster `ci` now, with
    /// `fail`'s flags (Envoy purges a host's pending streams when its connection fails);
    /// returns how many there were.
    pub(super) fn fail_pending(&mut self, ci: ClusterId, h: usize, fail: u16) -> usize {
        let now = self.now();
        let cl = &mut self.clusters[ci];
        let waiting: Vec<AttemptId> = cl.hosts[h].pending.drain(..).collect();
        cl.pending -= waiting.len() as u32;
        for &a in &waiting {
            let g = self.atts[a].tag;
            self.atts[a].stage = Stage::Wire;
            self.q.schedule_at(
                now,
                Ev::Fail {
                    attempt: a,
                    tag: g,
                    flags: fail,
                },
            );
        }
        waiting.len()
    }

    /// Gives back the attempt's stream (it stops counting as an active request); closes the
    /// connection when asked (reset) or exhausted, then lets the host's pending attempts use
    /// the capacity.
    pub(super) fn release_conn(&mut self, a: AttemptId, reset: bool) {
        let now = self.now();
        let at = self.atts[a];
        let Some(conn) = at.conn else {
            return;
        };
        self.atts[a].conn = None;
        let ci = at.cluster;
        let http2 = self.clusters[ci].policy.http2;
        let cl = &mut self.clusters[ci];
        cl.active_requests -= 1;
        cl.hosts[at.host as usize].active -= 1;
        let host = &mut cl.hosts[at.host as usize];
        let c = &mut host.conns[conn as usize];
        if !c.open || c.tag != at.conn_gen {
            return;
        }
        c.streams -= 1;
        c.last_used = now;
        // Resetting an HTTP/1.1 request closes its connection; HTTP/2 resets just the stream,
        // unless the server reset the whole connection.
        let close = (reset && (!http2 || c.resets)) || (c.closing && c.streams == 0);
        if close {
            c.open = false;
        }
        host.sync_idle(conn as usize);
        if close {
            self.count_closed(ci, 1);
        }
        self.drain_pending(at.cluster, at.host);
    }

    /// Counts `n` connections of cluster `ci` just marked closed: the cluster's open count and
    /// the client proxy's `connections_closed`.
    pub(super) fn count_closed(&mut self, ci: ClusterId, n: u32) {
        let cl = &mut self.clusters[ci];
        cl.open_conns -= n;
        let (client, version) = (cl.client, cl.version);
        self.telemetry
            .proxy_mut(client.0, version.0)
            .connections_closed += u64::from(n);
    }

    /// Closes idle and connecting connections to version `v` now and busy ones after their
    /// last stream; hosts with pending attempts connect again.
    pub(super) fn drain_connections_to(&mut self, v: VersionId) {
        for ci in self.cluster_ids() {
            if !self.cluster_holds(ci, v) {
                continue;
            }
            let client = self.clusters[ci].client;
            let cl = &mut self.clusters[ci];
            let pods = &self.pods;
            let mut closed = 0;
            for host in cl
                .hosts
                .iter_mut()
                .zip(&cl.pods)
                .filter(|(_, p)| pods[**p].version == v)
                .map(|(h, _)| h)
            {
                for i in 0..host.conns.len() {
                    let c = &mut host.conns[i];
                    if !c.open {
                        continue;
                    }
                    if c.streams == 0 {
                        c.open = false;
                        closed += 1;
                    } else {
                        c.closing = true;
                    }
                    host.sync_idle(i);
                }
            }
            cl.open_conns -= closed;
            self.telemetry.proxy_mut(client.0, v.0).connections_closed += u64::from(closed);
            for h in 0..self.clusters[ci].hosts.len() as u32 {
                if !self.clusters[ci].hosts[h as usize].pending.is_empty() {
                    self.grow_pool(ci, h);
                }
            }
        }
    }

    /// Hands the host's ready connections to its pending attempts in order, then opens
    /// connections for those still waiting.
    pub(super) fn drain_pending(&mut self, ci: ClusterId, h: u32) {
        while let Some(&next) = self.clusters[ci].hosts[h as usize].pending.front() {
            let Some(slot) = self.ready_conn(ci, h) else {
                break;
            };
            let cl = &mut self.clusters[ci];
            cl.hosts[h as usize].pending.pop_front();
            cl.pending -= 1;
            self.attach(next, slot);
        }
        self.grow_pool(ci, h);
    }
}
