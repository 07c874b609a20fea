//! What a harness may read from the mesh: ids by name, versions, pod and proxy counters, and the
//! telemetry windows that answer the questions Flagger's Istio and Linkerd queries ask of Prometheus
//! (what the destination sidecars reported, what the clients saw after retries).

use super::config::Behaviour;
use super::{ClientId, Mesh, QueueStats, RunStats, ServiceId, VersionId};
use crate::engine::SimTime;
use crate::telemetry::{ProxyCounters, Reporter, Selector, Telemetry, WindowStats};

impl Mesh {
    /// Current virtual time.
    pub fn now(&self) -> SimTime {
        self.q.now()
    }

    /// Service by name.
    pub fn service_id(&self, name: &str) -> Option<ServiceId> {
        self.services
            .iter()
            .position(|s| s.name == name)
            .map(|i| ServiceId(i as u32))
    }

    /// Version of a service by name.
    pub fn version_id(&self, service: &str, version: &str) -> Option<VersionId> {
        let s = self.service_id(service)?;
        self.services[s]
            .versions
            .iter()
            .find(|&&v| self.versions[v].name == version)
            .copied()
    }

    /// Client by workload name.
    pub fn client_id(&self, name: &str) -> Option<ClientId> {
        self.telemetry
            .sources()
            .iter()
            .position(|s| s.workload == name)
            .map(|i| ClientId(i as u32))
    }

    /// The primary and canary versions of a service, when it has versions with those names.
    pub fn primary_canary(&self, service: ServiceId) -> Option<(VersionId, VersionId)> {
        let s = self.services.get(service.0 as usize)?;
        Some((s.primary?, s.canary?))
    }

    /// Name of a version.
    pub(crate) fn version_name(&self, v: VersionId) -> Option<&str> {
        self.versions.get(v.0 as usize).map(|x| x.name.as_str())
    }

    /// Current behaviour of a version.
    pub(crate) fn behaviour(&self, v: VersionId) -> Option<&Behaviour> {
        self.versions.get(v.0 as usize).map(|x| &x.behaviour)
    }

    /// Pods of a version that are running and not scaled away.
    pub fn ready_pods(&self, v: VersionId) -> u32 {
        self.versions.get(v.0 as usize).map_or(0, |x| {
            x.pods
                .iter()
                .filter(|&&p| !self.pods[p].removed && self.pods[p].alive)
                .count() as u32
        })
    }

    /// Hosts of (client, version) currently ejected by outlier detection: in its subset's
    /// cluster, and its pods ejected from the clusters over several versions.
    pub fn ejected_hosts(&self, client: ClientId, v: VersionId) -> u32 {
        self.clusters_reaching(client, v)
            .into_iter()
            .map(|ci| {
                let cl = &self.clusters[ci];
                cl.od.as_ref().map_or(0, |od| {
                    cl.pods
                        .iter()
                        .enumerate()
                        .filter(|&(h, &p)| self.pods[p].version == v && od.is_ejected(h))
                        .count() as u32
                })
            })
            .sum()
    }

    /// Highest number of retries in flight at once so far in one cluster from `client` that
    /// reaches `v`: its subset's, or the whole service's (which a route without a subset uses).
    pub fn peak_retries_in_flight(&self, client: ClientId, v: VersionId) -> u32 {
        self.clusters_reaching(client, v)
            .into_iter()
            .map(|c| self.clusters[c].peak_retries)
            .max()
            .unwrap_or(0)
    }

    /// Requests each pod of a version has served so far, in pod order (scaled-away pods included).
    pub fn pod_requests(&self, v: VersionId) -> Vec<u64> {
        self.versions.get(v.0 as usize).map_or_else(Vec::new, |x| {
            x.pods.iter().map(|&p| self.pods[p].served).collect()
        })
    }

    /// Queueing counters of a version's pods.
    pub fn queue_stats(&self, v: VersionId) -> QueueStats {
        self.versions
            .get(v.0 as usize)
            .map_or_else(QueueStats::default, |x| x.queue_stats)
    }

    /// Client requests sent and not yet answered (calls made at pods not counted): in flight,
    /// waiting for a retry or for a sidecar's worker thread.
    pub fn unanswered(&self) -> u64 {
        let own = |r: &&super::request::Request| r.live && r.call.parent == super::calls::NO_PARENT;
        self.reqs.iter().filter(own).count() as u64
    }

    /// Run counters.
    pub fn stats(&self) -> RunStats {
        RunStats {
            events: self.q.events_processed(),
            ..self.stats
        }
    }

    /// The telemetry store.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Proxy counters of (client, version).
    pub fn proxy_counters(&self, client: ClientId, v: VersionId) -> ProxyCounters {
        self.telemetry.proxy(client.0, v.0)
    }

    /// What the destination sidecars of `v` reported over `[from, to]` (all clients).
    pub fn destination_stats(&self, v: VersionId, from: SimTime, to: SimTime) -> WindowStats {
        let sel = Selector {
            reporter: Reporter::Destination,
            source: None,
            dest: Some(v.0),
        };
        self.telemetry.window(&sel, from, to, self.now())
    }

    /// What clients saw (after retries) from requests answered by `v` over `[from, to]`.
    pub fn source_stats(&self, v: VersionId, from: SimTime, to: SimTime) -> WindowStats {
        let sel = Selector {
            reporter: Reporter::Source,
            source: None,
            dest: Some(v.0),
        };
        self.telemetry.window(&sel, from, to, self.now())
    }

    /// Client requests to service `s` over `[from, to]` that no pod answered (no route, no
    /// healthy upstream, a fault's abort, a pool overflow): Istio's `unknown` destination.
    pub fn unanswered_stats(&self, s: ServiceId, from: SimTime, to: SimTime) -> WindowStats {
        let sel = Selector {
            reporter: Reporter::Source,
            source: None,
            dest: Some(self.unknown_dest(s)),
        };
        self.telemetry.window(&sel, from, to, self.now())
    }

    /// Failed (5xx) client requests over `[from, to]`, after retries, by the version that answered.
    pub fn client_failures_by_version(&self, from: SimTime, to: SimTime) -> Vec<(VersionId, u64)> {
        (0..self.versions.len() as u32)
            .map(|v| {
                (
                    VersionId(v),
                    self.source_stats(VersionId(v), from, to).failures,
                )
            })
            .collect()
    }

    /// Live counters in the Prometheus text format.
    pub fn render_prometheus(&self) -> String {
        self.telemetry.render_prometheus()
    }
}
