//! Envoy clusters: one per (client, version), as istiod builds one per subset, one per client
//! and subset whose labels select the pods of several versions (made when a DestinationRule
//! first defines it), plus one per client over every pod the Service selects, the cluster a route without a subset (or no route at all)
//! sends to (`outbound|port||host`): one balancer and one outlier detector over all the pods. Each
//! holds what a DestinationRule's `trafficPolicy`
//! (overlaid by its subset's) sets there: the load-balancing policy, the connection-pool limits that
//! act as Envoy's circuit breakers, the client TLS mode, and outlier detection with its periodic
//! ejection sweep. Linkerd's failure accrual rides on the same cluster when the data plane is
//! Linkerd.

use super::config::DataPlane;
use super::event::Ev;
use super::outlier::{Accrual, AccrualConfig, OutlierConfig, OutlierDetector};
use super::pool::{Conn, IdleConns};
use super::routes::Subset;
use super::tls::ClientTls;
use super::{AttemptId, ClientId, ClusterId, Mesh, PodId, ServiceId, VersionId};
use crate::engine::{SECONDS, SimTime, Stream};
use crate::manifest::{DestinationRule, TlsMode, TrafficPolicy};
use std::collections::{BTreeSet, VecDeque};

#[derive(Clone, Debug)]
pub(super) struct ClusterPolicy {
    pub(super) lb: crate::manifest::LbPolicy,
    pub(super) max_connections: u32,
    pub(super) max_pending: u32,
    pub(super) max_requests: u32,
    pub(super) max_requests_per_connection: u32,
    pub(super) max_retries: u32,
    /// Envoy's retry budget `(percent, min_retry_concurrency)`, replacing `max_retries`.
    pub(super) retry_budget: Option<(f64, u32)>,
    pub(super) http2: bool,
    pub(super) connect_timeout: SimTime,
    pub(super) idle_timeout: SimTime,
    pub(super) tls: ClientTls,
}

pub(super) struct Host {
    pub(super) active: u32,
    pub(super) conns: Vec<Conn>,
    /// Which of `conns` are idle (pool.rs keeps it in line with them).
    pub(super) idle: IdleConns,
    pub(super) pending: VecDeque<AttemptId>,
    pub(super) ewma: f64,
    pub(super) ewma_at: SimTime,
    pub(super) accrual: Accrual,
}

pub(super) struct Cluster {
    pub(super) client: ClientId,
    /// The subset's version; for a whole-service cluster, the first version the Service selects,
    /// under which its cluster-wide counters are reported.
    pub(super) version: VersionId,
    /// Whether the cluster spans every pod the Service selects (no subset).
    pub(super) whole: bool,
    /// The subset over several versions it spans, by its group of the service.
    pub(super) group: Option<u32>,
    /// The pod behind each host.
    pub(super) pods: Vec<PodId>,
    pub(super) policy: ClusterPolicy,
    pub(super) hosts: Vec<Host>,
    pub(super) in_lb: Vec<u32>,
    pub(super) candidates: Vec<u32>,
    pub(super) od: Option<OutlierDetector>,
    pub(super) accrual: Option<AccrualConfig>,
    pub(super) tick_armed: bool,
    pub(super) rr: u32,
    pub(super) active_requests: u32,
    pub(super) pending: u32,
    pub(super) open_conns: u32,
    pub(super) retries_active: u32,
    pub(super) peak_retries: u32,
    pub(super) lb_rng: Stream,
    pub(super) scratch: Vec<u32>,
}

impl Mesh {
    pub(super) fn new_cluster(&self, client: ClientId, version: VersionId) -> Cluster {
        let pods = self.versions[version].pods.clone();
        self.cluster_over(client, version, false, pods, format!("{}", version.0))
    }

    /// The cluster of a route without a subset: every pod the Service `s` selects.
    pub(super) fn new_service_cluster(&self, client: ClientId, s: ServiceId) -> Cluster {
        let svc = &self.services[s];
        let nominal = svc.selected.first().copied().unwrap_or(svc.versions[0]);
        let pods = svc
            .selected
            .iter()
            .flat_map(|&v| self.versions[v].pods.iter().copied())
            .collect();
        self.cluster_over(client, nominal, true, pods, "service".into())
    }

    fn cluster_over(
        &self,
        client: ClientId,
        version: VersionId,
        whole: bool,
        pods: Vec<PodId>,
        rng_name: String,
    ) -> Cluster {
        let n = pods.len();
        Cluster {
            client,
            version,
            whole,
            group: None,
            pods,
            policy: self.client_policy(client),
            hosts: (0..n).map(|_| new_host(self.now())).collect(),
            in_lb: (0..n as u32).collect(),
            candidates: (0..n as u32).collect(),
            od: None,
            accrual: None,
            tick_armed: false,
            rr: 0,
            active_requests: 0,
            pending: 0,
            open_conns: 0,
            retries_active: 0,
            peak_retries: 0,
            lb_rng: Stream::new(self.seed, &format!("lb/{}/{rng_name}", client.0)),
            scratch: Vec::new(),
        }
    }

    /// A cluster's policy before any DestinationRule: the data plane's defaults, or for a
    /// client without a sidecar kube-proxy's (iptables mode picks a ready endpoint at random
    /// for each new connection, with no limits, no outlier detection and plaintext; see
    /// Kubernetes' "Virtual IPs and Service Proxies").
    fn client_policy(&self, client: ClientId) -> ClusterPolicy {
        let mut p = self.default_policy();
        if !self.clients[client].sidecar {
            p.lb = crate::manifest::LbPolicy::Random;
            p.tls = ClientTls::Plain;
        }
        p
    }

    pub(super) fn default_policy(&self) -> ClusterPolicy {
        ClusterPolicy {
            lb: match self.data_plane {
                DataPlane::Istio => crate::manifest::LbPolicy::LeastRequest,
                DataPlane::Linkerd => crate::manifest::LbPolicy::PeakEwma,
            },
            max_connections: u32::MAX,
            max_pending: u32::MAX,
            max_requests: u32::MAX,
            max_requests_per_connection: 0,
            max_retries: u32::MAX,
            retry_budget: None,
            http2: false,
            connect_timeout: 10 * SECONDS,
            idle_timeout: 3600 * SECONDS,
            tls: ClientTls::Auto,
        }
    }

    pub(super) fn cluster_of(&self, client: ClientId, version: VersionId) -> Option<ClusterId> {
        self.clients
            .get(client.0 as usize)?
            .clusters
            .iter()
            .copied()
            .find(|&c| {
                let cl = &self.clusters[c];
                cl.version == version && !cl.whole && cl.group.is_none()
            })
    }

    /// The cluster of `client` over the versions of group `g` of its service.
    pub(super) fn group_cluster(&self, client: ClientId, g: u32) -> Option<ClusterId> {
        self.clients
            .get(client.0 as usize)?
            .clusters
            .iter()
            .copied()
            .find(|&c| self.clusters[c].group == Some(g))
    }

    /// The group of service `s` over versions `vs` (several), made with a cluster over their
    /// pods for each client of `s` with a sidecar the first time a subset selects them.
    fn ensure_group(&mut self, s: ServiceId, vs: Vec<VersionId>) -> u32 {
        if let Some(g) = self.group_of(s, &vs) {
            return g;
        }
        let g = self.services[s].groups.len() as u32;
        let pods: Vec<PodId> = vs
            .iter()
            .flat_map(|&v| self.versions[v].pods.iter().copied())
            .collect();
        for c in (0..self.clients.len() as u32).map(ClientId) {
            let cl = &self.clients[c];
            if cl.service != s || cl.direct.is_some() || !cl.sidecar {
                continue;
            }
            let mut cluster =
                self.cluster_over(c, vs[0], false, pods.clone(), format!("group/{g}"));
            cluster.group = Some(g);
            let id = ClusterId(self.clusters.len() as u32);
            self.clusters.push(cluster);
            self.clients[c].clusters.push(id);
        }
        self.services[s].groups.push(vs);
        g
    }

    /// The cluster of `client` that a route to subset `name` of service `s` sends to, if the
    /// subset leads to pods.
    pub(super) fn subset_cluster(
        &self,
        client: ClientId,
        s: ServiceId,
        name: &str,
    ) -> Option<ClusterId> {
        match self.resolve_subset(s, name, None) {
            Subset::Version(v) => self.cluster_of(client, v),
            Subset::Several(vs) => self.group_cluster(client, self.group_of(s, &vs)?),
            Subset::NoEndpoints | Subset::Undefined => None,
        }
    }

    /// The clusters of `client` whose hosts include the pods of `v`: the subset's (or the
    /// version's own Service's), those of subsets over several versions with `v` among them,
    /// and the one over the whole service while it selects `v`.
    pub(super) fn clusters_reaching(&self, client: ClientId, v: VersionId) -> Vec<ClusterId> {
        let Some(c) = self.clients.get(client.0 as usize) else {
            return Vec::new();
        };
        let groups = c
            .clusters
            .iter()
            .copied()
            .filter(|&ci| self.clusters[ci].group.is_some() && self.cluster_holds(ci, v));
        let whole = c.service_cluster.filter(|&ci| self.cluster_holds(ci, v));
        self.cluster_of(client, v)
            .into_iter()
            .chain(groups)
            .chain(whole)
            .collect()
    }

    /// Whether cluster `ci` has the pods of version `v` among its hosts.
    pub(super) fn cluster_holds(&self, ci: ClusterId, v: VersionId) -> bool {
        let cl = &self.clusters[ci];
        let s = self.versions[v].service;
        if let Some(g) = cl.group {
            return self.clients[cl.client].service == s
                && self.services[s].groups[g as usize].contains(&v);
        }
        if !cl.whole {
            return cl.version == v;
        }
        self.clients[cl.client].service == s && self.services[s].selected.contains(&v)
    }

    pub(super) fn refresh_policies(&mut self, s: ServiceId) {
        let svc = &self.services[s];
        let accrual = svc.accrual;
        let mut updates = Vec::new();
        for (ci, cl) in self.clusters.iter().enumerate() {
            // A client without a sidecar reads no DestinationRule.
            if self.versions[cl.version].service != s || !self.clients[cl.client].sidecar {
                continue;
            }
            let tp = if cl.whole {
                svc.policy.clone()
            } else if let Some(g) = cl.group {
                match svc.group_policy.get(&g) {
                    Some(sub) => svc.policy.overlay(sub),
                    None => svc.policy.clone(),
                }
            } else if svc.host_routed.contains(&cl.version) {
                svc.host_policy
                    .get(&cl.version)
                    .cloned()
                    .unwrap_or_default()
            } else {
                match svc.subset_policy.get(&cl.version) {
                    Some(sub) => svc.policy.overlay(sub),
                    None => svc.policy.clone(),
                }
            };
            updates.push((ci, tp));
        }
        for (ci, tp) in updates {
            let mut p = self.default_policy();
            if let Some(lb) = tp.load_balancer {
                p.lb = lb;
            }
            if let Some(cp) = &tp.connection_pool {
                let lim = |x: Option<u32>| x.filter(|v| *v > 0).unwrap_or(u32::MAX);
                p.max_connections = lim(cp.max_connections);
                p.max_pending = lim(cp.http1_max_pending_requests);
                p.max_requests = lim(cp.http2_max_requests);
                p.max_requests_per_connection = cp.max_requests_per_connection.unwrap_or(0);
                p.max_retries = lim(cp.max_retries);
                p.http2 = cp.h2_upgrade.unwrap_or(false);
                p.connect_timeout = cp.connect_timeout.unwrap_or(p.connect_timeout);
                p.idle_timeout = cp.idle_timeout.unwrap_or(p.idle_timeout);
            }
            p.retry_budget = tp
                .retry_budget
                .map(|b| (b.percent, b.min_retry_concurrency));
            p.tls = match tp.tls {
                Some(TlsMode::IstioMutual) => ClientTls::Mutual,
                Some(TlsMode::Disable) => ClientTls::Plain,
                None => ClientTls::Auto,
            };
            let n = self.clusters[ci].hosts.len();
            let od = match (&tp.outlier_detection, self.data_plane) {
                (Some(spec), DataPlane::Istio) => {
                    let cfg = OutlierConfig::from_istio(spec, self.ejection_rule);
                    let mut d = OutlierDetector::new(cfg, n);
                    for (h, &pod) in self.clusters[ci].pods.iter().enumerate() {
                        if self.pods[pod].removed {
                            d.remove_host(h);
                        }
                    }
                    Some(d)
                }
                _ => None,
            };
            let cl = &mut self.clusters[ci];
            cl.policy = p;
            cl.od = od;
            cl.accrual = if self.data_plane == DataPlane::Linkerd {
                accrual
            } else {
                None
            };
            let interval = cl.od.as_ref().map(|o| o.cfg.interval);
            let arm = interval.is_some() && !cl.tick_armed;
            if arm {
                cl.tick_armed = true;
            }
            if let (true, Some(i)) = (arm, interval) {
                let cluster = ClusterId(ci as u32);
                self.q.schedule_in(i, Ev::OdTick { cluster });
            }
            self.rebuild_candidates(ClusterId(ci as u32));
        }
    }

    pub(super) fn on_od_tick(&mut self, ci: ClusterId) {
        let now = self.now();
        let cl = &mut self.clusters[ci];
        let Some(od) = cl.od.as_mut() else {
            cl.tick_armed = false;
            return;
        };
        let change = od.tick(now, &mut self.od_rng);
        let interval = od.cfg.interval;
        let (c, v) = (cl.client, cl.version);
        self.q.schedule_in(interval, Ev::OdTick { cluster: ci });
        let pc = self.telemetry.proxy_mut(c.0, v.0);
        pc.ejections_enforced += u64::from(change.ejected);
        pc.ejections_overflow += u64::from(change.overflow);
        pc.ejections_detected += u64::from(change.detected);
        if change.membership_changed() {
            self.rebuild_candidates(ci);
        }
    }
}

/// A host whose endpoint joins the balancer at `joined`: its latency estimate is the default
/// RTT as of then (see `Host::join_balancer`).
pub(super) fn new_host(joined: SimTime) -> Host {
    let mut h = Host {
        active: 0,
        conns: Vec::new(),
        idle: IdleConns::default(),
        pending: VecDeque::new(),
        ewma: 0.0,
        ewma_at: 0,
        accrual: Accrual::default(),
    };
    h.join_balancer(joined);
    h
}

impl Mesh {
    /// A DestinationRule: the service's traffic policy and its subsets' overlays, then the
    /// clusters' settings rebuilt from them.
    pub(super) fn apply_destination_rule(
        &mut self,
        dr: &DestinationRule,
        warnings: &mut Vec<String>,
    ) {
        let Some(s) = self.find_service(&dr.host, dr.namespace.as_deref()) else {
            // A version's own Service (the controller's `-primary` and `-canary`): its policy
            // is that version's.
            if let Some((s, v)) = self.find_version_service(&dr.host, dr.namespace.as_deref()) {
                self.services[s]
                    .host_policy
                    .insert(v, dr.traffic_policy.clone());
                self.refresh_policies(s);
                return;
            }
            warnings.push(format!(
                "DestinationRule {}: host `{}` is not simulated",
                dr.name, dr.host
            ));
            return;
        };
        self.services[s].policy = dr.traffic_policy.clone();
        self.services[s].subset_policy.clear();
        self.services[s].group_policy.clear();
        for sub in &dr.subsets {
            match self.resolve_subset(s, &sub.name, Some(&sub.labels)) {
                Subset::Version(v) => {
                    if let Some(tp) = &sub.traffic_policy {
                        self.services[s].subset_policy.insert(v, tp.clone());
                    }
                }
                Subset::Several(vs) => {
                    let g = self.ensure_group(s, vs);
                    if let Some(tp) = &sub.traffic_policy {
                        self.services[s].group_policy.insert(g, tp.clone());
                    }
                }
                Subset::NoEndpoints | Subset::Undefined => warnings.push(format!(
                    "DestinationRule {}: subset `{}` selects no pod of `{}`: the requests routed to it are answered 503 `UH` (no healthy upstream)",
                    dr.name, sub.name, self.services[s].name
                )),
            }
        }
        let before: Vec<_> = self
            .subset_labels
            .iter()
            .filter(|(sv, _, _)| *sv == s)
            .cloned()
            .collect();
        self.subset_labels.retain(|(svc, _, _)| *svc != s);
        for sub in &dr.subsets {
            self.subset_labels
                .push((s, sub.name.clone(), sub.labels.clone()));
        }
        self.refresh_policies(s);
        // The routes in effect resolve the subsets anew only when they changed.
        if self
            .subset_labels
            .iter()
            .filter(|(sv, _, _)| *sv == s)
            .ne(before.iter())
        {
            self.resolve_subsets_again(s, warnings);
        }
    }

    /// Records which versions the routes of `s` name by their own host and rebuilds the
    /// clusters' policies when that changes.
    pub(super) fn set_host_routed(&mut self, s: ServiceId, routed: BTreeSet<VersionId>) {
        if self.services[s].host_routed != routed {
            self.services[s].host_routed = routed;
            self.refresh_policies(s);
        }
    }

    /// Whether a DestinationRule on the service's own host sets a policy that the routes in
    /// effect bypass, because they name the versions by their own hosts.
    pub(crate) fn service_policy_bypassed(&self, s: ServiceId) -> bool {
        let svc = &self.services[s];
        !svc.host_routed.is_empty()
            && (svc.policy != TrafficPolicy::default()
                || svc
                    .host_routed
                    .iter()
                    .any(|v| svc.subset_policy.contains_key(v)))
    }
}
