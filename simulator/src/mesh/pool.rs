//! The connection pool and its circuit breakers, per Envoy cluster: connections are per host and
//! reused while idle (HTTP/1.1, one stream each) or multiplexed (HTTP/2); `maxConnections`,
//! `http1MaxPendingRequests`, `http2MaxRequests` and `maxRequestsPerConnection` bound them, and a
//! request that finds every limit reached waits in the host's pending queue or overflows with 503
//! `UO`. A new connection costs TCP and TLS round trips; idle ones close after the idle timeout, and a
//! mode change on the server's sidecar drains them.

use super::event::Ev;
use super::request::Stage;
use super::tls::{Handshake, Peers, handshake};
use super::{AttemptId, ClusterId, Mesh, VersionId};
use crate::engine::SimTime;
use crate::telemetry::flags;

#[derive(Clone, Copy, Debug)]
pub(super) struct Conn {
    pub(super) open: bool,
    pub(super) tag: u32,
    pub(super) streams: u32,
    pub(super) served: u32,
    pub(super) ready_at: SimTime,
    pub(super) last_used: SimTime,
    pub(super) closing: bool,
}

impl Mesh {
    /// Takes a waiting attempt out of its host's pending queue (it timed out there).
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

    /// Sends attempt `a` on a usable connection of its host, opening one if the limits allow.
    /// Returns false when it has to wait.
    pub(super) fn try_dispatch(&mut self, a: AttemptId) -> bool {
        let now = self.now();
        let at = self.atts[a];
        let ci = at.cluster;
        let (client, version) = (self.clusters[ci].client, self.clusters[ci].version);
        let policy_streams = if self.clusters[ci].policy.http2 {
            u32::MAX
        } else {
            1
        };
        let per_conn = self.clusters[ci].policy.max_requests_per_connection;
        let idle = self.clusters[ci].policy.idle_timeout;
        let mut closed = 0;
        let host = &mut self.clusters[ci].hosts[at.host as usize];
        let mut found = None;
        for (i, c) in host.conns.iter_mut().enumerate() {
            if !c.open {
                continue;
            }
            if c.streams == 0 && now.saturating_sub(c.last_used) > idle && c.ready_at <= now {
                c.open = false;
                closed += 1;
                continue;
            }
            if !c.closing && c.streams < policy_streams {
                found = Some(i);
                break;
            }
        }
        if closed > 0 {
            self.clusters[ci].open_conns -= closed;
            self.telemetry
                .proxy_mut(client.0, version.0)
                .connections_closed += u64::from(closed);
        }
        let depart = if let Some(i) = found {
            let c = &mut self.clusters[ci].hosts[at.host as usize].conns[i];
            c.streams += 1;
            c.served += 1;
            if per_conn > 0 && c.served >= per_conn {
                c.closing = true;
            }
            let at = &mut self.atts[a];
            at.conn = Some(i as u32);
            at.conn_gen = c.tag;
            c.ready_at.max(now)
        } else if self.clusters[ci].open_conns < self.clusters[ci].policy.max_connections
            || self.close_idle_conn(ci, now)
        {
            match self.open_conn(a) {
                Some(t) => t,
                None => return true,
            }
        } else {
            return false;
        };
        let at = &mut self.atts[a];
        at.stage = Stage::Wire;
        let g = at.tag;
        self.q.schedule_at(
            depart + self.net.one_way + 2 * self.net.sidecar_latency,
            Ev::AtPod { attempt: a, tag: g },
        );
        true
    }

    /// At the connection limit, idle keep-alive connections to other hosts would starve this
    /// host's requests; close one (the first found, for determinism) to make room.
    pub(super) fn close_idle_conn(&mut self, ci: ClusterId, now: SimTime) -> bool {
        let cl = &mut self.clusters[ci];
        for host in cl.hosts.iter_mut() {
            if let Some(c) = host
                .conns
                .iter_mut()
                .find(|c| c.open && c.streams == 0 && c.ready_at <= now)
            {
                c.open = false;
                cl.open_conns -= 1;
                let (client, version) = (cl.client, cl.version);
                self.telemetry
                    .proxy_mut(client.0, version.0)
                    .connections_closed += 1;
                return true;
            }
        }
        false
    }

    /// Opens a connection for attempt `a`. Returns when it is ready, or None after scheduling
    /// the attempt's failure (refused, timed out, mTLS mismatch, expired certificate).
    pub(super) fn open_conn(&mut self, a: AttemptId) -> Option<SimTime> {
        let now = self.now();
        let at = self.atts[a];
        let ci = at.cluster;
        let client = self.clusters[ci].client;
        let pod = &self.pods[at.pod];
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
        // (after how long, flags, whether the TLS handshake failed)
        let outcome = match (pod.alive, pod.black_hole, handshake(&peers, &self.net)) {
            (false, _, _) => Err((2 * self.net.one_way, flags::UF, false)),
            (true, true, _) => Err((self.clusters[ci].policy.connect_timeout, flags::UF, false)),
            (true, false, Handshake::Fails { after, flags }) => Err((after, flags, true)),
            (true, false, Handshake::Ready { after, mutual }) => Ok((after, mutual)),
        };
        let counters = self.telemetry.proxy_mut(client.0, version.0);
        counters.connections_opened += 1;
        let (after, mutual) = match outcome {
            Ok(ready) => ready,
            Err((after, f, tls)) => {
                counters.connect_failures += 1;
                counters.connections_closed += 1;
                if tls {
                    counters.handshake_failures += 1;
                }
                let at = &mut self.atts[a];
                at.stage = Stage::Wire;
                let g = at.tag;
                self.q.schedule_at(
                    now + after,
                    Ev::Fail {
                        attempt: a,
                        tag: g,
                        flags: f,
                    },
                );
                return None;
            }
        };
        if mutual {
            counters.handshakes += 1;
        }
        let ready = now + after;
        let per_conn = self.clusters[ci].policy.max_requests_per_connection;
        let cl = &mut self.clusters[ci];
        cl.open_conns += 1;
        let host = &mut cl.hosts[at.host as usize];
        let slot = match host.conns.iter().position(|c| !c.open) {
            Some(i) => i,
            None => {
                host.conns.push(Conn {
                    open: false,
                    tag: 0,
                    streams: 0,
                    served: 0,
                    ready_at: 0,
                    last_used: 0,
                    closing: false,
                });
                host.conns.len() - 1
            }
        };
        let c = &mut host.conns[slot];
        *c = Conn {
            open: true,
            tag: c.tag.wrapping_add(1),
            streams: 1,
            served: 1,
            ready_at: ready,
            last_used: now,
            closing: per_conn == 1,
        };
        let at = &mut self.atts[a];
        at.conn = Some(slot as u32);
        at.conn_gen = c.tag;
        Some(ready)
    }

    /// Gives back the attempt's stream; closes the connection when asked (reset) or exhausted,
    /// then lets waiting attempts of the host use the capacity.
    pub(super) fn release_conn(&mut self, a: AttemptId, reset: bool) {
        let now = self.now();
        let at = self.atts[a];
        let Some(conn) = at.conn else {
            return;
        };
        self.atts[a].conn = None;
        let ci = at.cluster;
        let (client, version) = (self.clusters[ci].client, self.clusters[ci].version);
        let http2 = self.clusters[ci].policy.http2;
        let cl = &mut self.clusters[ci];
        let c = &mut cl.hosts[at.host as usize].conns[conn as usize];
        if !c.open || c.tag != at.conn_gen {
            return;
        }
        c.streams -= 1;
        c.last_used = now;
        // Resetting an HTTP/1.1 request closes its connection; HTTP/2 resets just the stream.
        if (reset && !http2) || (c.closing && c.streams == 0) {
            c.open = false;
            cl.open_conns -= 1;
            self.telemetry
                .proxy_mut(client.0, version.0)
                .connections_closed += 1;
        }
        self.drain_pending(at.cluster, at.host);
    }

    /// Closes idle connections to version `v` now and busy ones after their last stream.
    pub(super) fn drain_connections_to(&mut self, v: VersionId) {
        for ci in self.cluster_ids() {
            if !self.cluster_holds(ci, v) {
                continue;
            }
            let client = self.clusters[ci].client;
            let cl = &mut self.clusters[ci];
            let pods = &self.pods;
            let mut closed = 0;
            for c in cl
                .hosts
                .iter_mut()
                .zip(&cl.pods)
                .filter(|(_, p)| pods[**p].version == v)
                .flat_map(|(h, _)| h.conns.iter_mut())
                .filter(|c| c.open)
            {
                if c.streams == 0 {
                    c.open = false;
                    closed += 1;
                } else {
                    c.closing = true;
                }
            }
            cl.open_conns -= closed;
            self.telemetry.proxy_mut(client.0, v.0).connections_closed += u64::from(closed);
        }
    }

    pub(super) fn drain_pending(&mut self, ci: ClusterId, h: u32) {
        while let Some(&next) = self.clusters[ci].hosts[h as usize].pending.front() {
            if !self.try_dispatch(next) {
                break;
            }
            let cl = &mut self.clusters[ci];
            cl.hosts[h as usize].pending.pop_front();
            cl.pending -= 1;
        }
    }
}
