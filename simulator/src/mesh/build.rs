//! Building the mesh from its configuration, as a cluster starts: every service with its versions
//! (Deployments whose pods carry `app` and `version` labels, as Istio's subsets select them), every
//! client workload with its sidecar, and one Envoy cluster per (client, version), the way istiod
//! builds an `outbound|port|subset|host` cluster for each subset a client can reach. Without manifests
//! each service's clients send to the cluster over all its pods, as a Kubernetes Service spreads
//! over its pods, and, on Istio, with Istio's
//! default retry policy.

use super::calls::{CallSite, add_call_clients};
use super::config::{Behaviour, DataPlane, MeshConfig};
use super::dist::LogNormalMemo;
use super::event::Ev;
use super::external;
use super::gateway::Ingress;
use super::headers::HeaderSets;
use super::outlier::AccrualConfig;
use super::pod::new_pod;
use super::request::Client;
use super::retry::RetryPolicy;
use super::routes::RouteBase;
use super::tls::Cert;
use super::{
    CertId, ClientId, ClusterId, Mesh, MeshError, PodId, QueueStats, RuleId, RunStats, ServiceId,
    VersionId, invalid,
};
use crate::engine::{EventQueue, Stream};
use crate::manifest::{MtlsMode, TrafficPolicy};
use crate::telemetry::{DestLabels, SourceLabels, Telemetry};
use std::collections::{BTreeMap, BTreeSet};

pub(super) struct Service {
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) versions: Vec<VersionId>,
    /// The versions the Service's selector picks ([`ServiceConfig::selects`]).
    pub(super) selected: Vec<VersionId>,
    pub(super) primary: Option<VersionId>,
    pub(super) canary: Option<VersionId>,
    pub(super) rules: Vec<RuleId>,
    pub(super) epoch: u32,
    pub(super) base: RouteBase,
    pub(super) explicit_route: bool,
    /// The VirtualService whose routes are in effect, if one's are.
    pub(super) virtual_service: Option<Box<crate::manifest::VirtualService>>,
    pub(super) policy: TrafficPolicy,
    pub(super) subset_policy: BTreeMap<VersionId, TrafficPolicy>,
    /// The versions of each subset that selects several (DestinationRule labels shared by
    /// their pods), each with a cluster per client over all their pods; kept once made.
    pub(super) groups: Vec<Vec<VersionId>>,
    /// The subset policies of those groups.
    pub(super) group_policy: BTreeMap<u32, TrafficPolicy>,
    /// Policies of DestinationRules on a version's own host (`podinfo-primary`).
    pub(super) host_policy: BTreeMap<VersionId, TrafficPolicy>,
    /// Versions the routes in effect name by their own host: those take only that host's
    /// policy, as Envoy picks the DestinationRule by the destination host.
    pub(super) host_routed: BTreeSet<VersionId>,
    pub(super) accrual: Option<AccrualConfig>,
    /// [`ServiceConfig::target_port`](super::ServiceConfig::target_port).
    pub(super) target_port: u32,
}

pub(super) struct Version {
    pub(super) service: ServiceId,
    pub(super) name: String,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) behaviour: Behaviour,
    pub(super) pods: Vec<PodId>,
    pub(super) sidecar: bool,
    pub(super) server_mode: MtlsMode,
    pub(super) stream: Stream,
    /// The service time's log-normal parameters, kept between draws.
    pub(super) ln_memo: LogNormalMemo,
    pub(super) queue_stats: QueueStats,
    /// The behaviour's calls, resolved (calls.rs).
    pub(super) calls: Vec<Vec<CallSite>>,
    /// The client standing for the version's sidecar towards each service it may call.
    pub(super) call_clients: Vec<(ServiceId, ClientId)>,
    /// Draws which calls a request makes.
    pub(super) call_rng: Stream,
}

impl Mesh {
    /// Builds a mesh. Routes default to spreading requests over the versions each Service
    /// selects (all unless [`ServiceConfig::selects`](super::ServiceConfig::selects) says
    /// otherwise) by pod count, with Istio's default retry policy; apply manifests or a split to
    /// change that.
    pub fn new(cfg: MeshConfig) -> Result<Self, MeshError> {
        if cfg.scrape_interval == 0 {
            return Err(invalid("scrape_interval", "must be positive"));
        }
        let mut services = Vec::new();
        let mut versions = Vec::new();
        let mut pods = Vec::new();
        let mut dest_labels = Vec::new();
        for (si, sc) in cfg.services.iter().enumerate() {
            if sc.versions.is_empty() {
                return Err(invalid(format!("service {}", sc.name), "has no versions"));
            }
            if cfg.services[..si].iter().any(|o| o.name == sc.name) {
                return Err(invalid(format!("service {}", sc.name), "declared twice"));
            }
            let namespace = sc
                .namespace
                .clone()
                .unwrap_or_else(|| cfg.namespace.clone());
            let mut svc = Service {
                name: sc.name.clone(),
                namespace: namespace.clone(),
                versions: Vec::new(),
                selected: Vec::new(),
                primary: None,
                canary: None,
                rules: Vec::new(),
                epoch: 0,
                base: RouteBase {
                    timeout: None,
                    retry: match cfg.data_plane {
                        DataPlane::Istio => RetryPolicy::istio_default(cfg.istio_retry_503),
                        DataPlane::Linkerd => RetryPolicy::none(),
                    },
                    fault: None,
                },
                explicit_route: false,
                virtual_service: None,
                policy: TrafficPolicy::default(),
                subset_policy: BTreeMap::new(),
                groups: Vec::new(),
                group_policy: BTreeMap::new(),
                host_policy: BTreeMap::new(),
                host_routed: BTreeSet::new(),
                accrual: sc.failure_accrual,
                target_port: sc.target_port,
            };
            for vc in &sc.versions {
                let what = format!("service {} version {}", sc.name, vc.name);
                validate_behaviour(&vc.behaviour).map_err(|r| invalid(&what, r))?;
                if vc.pods > MAX_PODS {
                    return Err(invalid(
                        &what,
                        format!("at most {MAX_PODS} pods per version"),
                    ));
                }
                if svc.versions.iter().any(|&v| {
                    versions
                        .get(v.0 as usize)
                        .is_some_and(|x: &Version| x.name == vc.name)
                }) {
                    return Err(invalid(&what, "declared twice"));
                }
                let vid = VersionId(versions.len() as u32);
                let mut labels = vc.labels.clone();
                labels
                    .entry("app".into())
                    .or_insert_with(|| sc.name.clone());
                labels
                    .entry("version".into())
                    .or_insert_with(|| vc.name.clone());
                let workload = vc
                    .workload
                    .clone()
                    .unwrap_or_else(|| format!("{}-{}", sc.name, vc.name));
                dest_labels.push(if sc.external {
                    external::endpoint_labels(sc, vc).map_err(|r| invalid(&what, r))?
                } else {
                    DestLabels {
                        workload,
                        namespace: namespace.clone(),
                        service: format!("{}.{}.svc.cluster.local", sc.name, namespace),
                        version: vc.name.clone(),
                        peer: true,
                    }
                });
                let mut v = Version {
                    service: ServiceId(si as u32),
                    name: vc.name.clone(),
                    labels,
                    behaviour: vc.behaviour.clone(),
                    pods: Vec::new(),
                    sidecar: vc.sidecar,
                    server_mode: cfg.default_mtls,
                    queue_stats: QueueStats::default(),
                    ln_memo: LogNormalMemo::default(),
                    stream: Stream::new(cfg.seed, &format!("pods/{}/{}", sc.name, vc.name)),
                    calls: Vec::new(),
                    call_clients: Vec::new(),
                    call_rng: Stream::new(cfg.seed, &format!("calls/{}/{}", sc.name, vc.name)),
                };
                for _ in 0..vc.pods {
                    v.pods.push(PodId(pods.len() as u32));
                    pods.push(new_pod(vid));
                }
                if vc.name == sc.primary {
                    svc.primary = Some(vid);
                }
                if vc.name == sc.canary {
                    svc.canary = Some(vid);
                }
                svc.versions.push(vid);
                if sc
                    .selects
                    .as_ref()
                    .is_none_or(|names| names.contains(&vc.name))
                {
                    svc.selected.push(vid);
                }
                versions.push(v);
            }
            if let Some(name) = sc
                .selects
                .iter()
                .flatten()
                .find(|n| !sc.versions.iter().any(|vc| &vc.name == *n))
            {
                return Err(invalid(
                    format!("service {} selects", sc.name),
                    format!("no version is named `{name}`"),
                ));
            }
            services.push(svc);
        }
        // Requests no pod answered are reported against their service's `unknown`
        // destination, after the versions' (see `Mesh::unknown_dest`).
        for (s, sc) in services.iter().zip(&cfg.services) {
            dest_labels.push(DestLabels::unknown(external::service_label(
                sc,
                &s.namespace,
            )));
        }
        let mut clients = Vec::new();
        let mut source_labels = Vec::new();
        let mut header_sets = HeaderSets::default();
        for cc in &cfg.clients {
            let (service, direct) = match services.iter().position(|s| s.name == cc.target) {
                Some(s) => (ServiceId(s as u32), None),
                None => services
                    .iter()
                    .enumerate()
                    .find_map(|(si, s)| {
                        let v = s.versions.iter().copied().find(|&v| {
                            format!("{}-{}", s.name, versions[v.0 as usize].name) == cc.target
                        })?;
                        Some((ServiceId(si as u32), Some((v, None))))
                    })
                    .ok_or_else(|| MeshError::UnknownService(cc.target.clone()))?,
            };
            if !valid_rate(cc.rate) {
                return Err(invalid(format!("client {}", cc.name), RATE_RULE));
            }
            let mut profiles: Vec<(f64, Vec<(String, String)>)> = cc
                .headers
                .iter()
                .map(|p| (p.weight, p.headers.clone()))
                .collect();
            if profiles.iter().any(|p| !(p.0.is_finite() && p.0 >= 0.0)) {
                return Err(invalid(
                    format!("client {}", cc.name),
                    "header weights must be non-negative",
                ));
            }
            let mut total: f64 = profiles.iter().map(|p| p.0).sum();
            if total <= 0.0 {
                profiles = vec![(1.0, Vec::new())];
                total = 1.0;
            }
            let mut header_ids = Vec::with_capacity(profiles.len());
            for p in &mut profiles {
                let (id, set) = header_sets.profile(&p.1);
                header_ids.push(id);
                p.1 = set;
            }
            let namespace = cc
                .namespace
                .clone()
                .unwrap_or_else(|| cfg.namespace.clone());
            source_labels.push(SourceLabels {
                workload: cc.name.clone(),
                namespace: namespace.clone(),
                sidecar: cc.sidecar,
            });
            clients.push(Client {
                service,
                direct,
                caller: None,
                rate: cc.rate,
                shape: cc.shape,
                cache: vec![None; profiles.len()],
                profiles,
                profile_total: total,
                header_ids,
                sidecar: cc.sidecar,
                kube_proxy: None,
                cache_epoch: None,
                clusters: Vec::new(),
                service_cluster: None,
                arrivals: Stream::new(cfg.seed, &format!("arrivals/{}", cc.name)),
                routing: Stream::new(cfg.seed, &format!("routing/{}", cc.name)),
                retry: Stream::new(cfg.seed, &format!("retry/{}", cc.name)),
                budget: None,
                running: false,
                ingress: cc
                    .gateway
                    .clone()
                    .map(|gateway| Ingress::new(gateway, cfg.namespace.clone())),
            });
        }
        let own_certs = clients.len() as u32;
        add_call_clients(
            &cfg,
            &services,
            &mut versions,
            &dest_labels,
            &mut header_sets,
            &mut clients,
            &mut source_labels,
        )?;
        let n_certs = own_certs as usize + versions.len();
        let telemetry = Telemetry::new(
            source_labels,
            dest_labels,
            cfg.scrape_interval,
            cfg.retention,
        );
        let mut mesh = Mesh {
            q: EventQueue::new(),
            seed: cfg.seed,
            net: cfg.network.clone(),
            certs_cfg: cfg.certs.clone(),
            data_plane: cfg.data_plane,
            ejection_rule: cfg.ejection_rule,
            default_mtls: cfg.default_mtls,
            istio_retry_503: cfg.istio_retry_503,
            istio_retry_backoff: cfg.istio_retry_backoff,
            default_namespace: cfg.namespace.clone(),
            own_certs,
            services,
            versions,
            pods,
            clients,
            clusters: Vec::new(),
            rules: Vec::new(),
            reqs: Vec::with_capacity(1024),
            free_reqs: Vec::new(),
            atts: Vec::with_capacity(1024),
            free_atts: Vec::new(),
            certs: (0..n_certs)
                .map(|_| Cert {
                    expires_at: cfg.certs.ttl,
                    rotating: true,
                })
                .collect(),
            actions: Vec::new(),
            peer_auth: Vec::new(),
            subset_labels: Vec::new(),
            telemetry,
            stats: RunStats::default(),
            mirror_rng: Stream::new(cfg.seed, "mirror"),
            od_rng: Stream::new(cfg.seed, "outlier"),
            fault_rng: Stream::new(cfg.seed, "fault-injection"),
            cert_rng: Stream::new(cfg.seed, "certs"),
            trace: None,
            outputs: None,
            callings: Vec::new(),
            free_callings: Vec::new(),
            header_sets,
            pushes: None,
            authz: Box::default(),
            sidecars: Box::new(super::sidecar::Sidecars::new(&cfg, n_certs)?),
        };
        // One cluster per (client, version), as Istio builds one Envoy cluster per subset.
        for c in (0..mesh.clients.len() as u32).map(ClientId) {
            let svc = mesh.clients[c].service;
            let vs = mesh.services[svc].versions.clone();
            for v in vs {
                let id = ClusterId(mesh.clusters.len() as u32);
                let cluster = mesh.new_cluster(c, v);
                mesh.clusters.push(cluster);
                mesh.clients[c].clusters.push(id);
            }
            if mesh.clients[c].direct.is_none() {
                let id = ClusterId(mesh.clusters.len() as u32);
                let cluster = mesh.new_service_cluster(c, svc);
                mesh.clusters.push(cluster);
                mesh.clients[c].service_cluster = Some(id);
            }
        }
        for s in (0..mesh.services.len() as u32).map(ServiceId) {
            mesh.reset_default_route(s);
            mesh.refresh_policies(s);
        }
        for c in (0..mesh.clients.len() as u32).map(ClientId) {
            if let Some((v, None)) = mesh.clients[c].direct {
                let rule = mesh.direct_rule(v);
                mesh.clients[c].direct = Some((v, Some(rule)));
            }
        }
        // A client without a sidecar reaches the pods through kube-proxy alone (no route).
        for c in (0..mesh.clients.len() as u32).map(ClientId) {
            let cl = &mesh.clients[c];
            if cl.sidecar {
                continue;
            }
            let cluster = match cl.direct {
                Some((v, _)) => mesh.cluster_of(c, v),
                None => cl.service_cluster,
            };
            let rule = mesh.kube_proxy_rule();
            mesh.clients[c].kube_proxy = cluster.map(|ci| (ci, rule));
        }
        for v in (0..mesh.versions.len() as u32).map(VersionId) {
            let calls = cfg.services[mesh.versions[v].service.0 as usize]
                .versions
                .iter()
                .find(|vc| vc.name == mesh.versions[v].name)
                .map(|vc| vc.behaviour.calls.clone())
                .unwrap_or_default();
            mesh.versions[v].calls = mesh.resolve_calls(v, &calls)?;
        }
        mesh.init_propagation(&cfg.propagation)?;
        mesh.authz = Box::new(super::authz::Authz::new(&cfg, &mesh));
        for i in (0..mesh.certs.len() as u32).map(CertId) {
            mesh.schedule_rotation(i);
        }
        mesh.q.schedule_at(cfg.scrape_interval, Ev::Scrape);
        for c in (0..mesh.clients.len() as u32).map(ClientId) {
            mesh.arm_client(c);
        }
        Ok(mesh)
    }
}

/// Pods per version a mesh accepts: far beyond any real Deployment, small enough to allocate.
pub(super) const MAX_PODS: u32 = 100_000;

/// Requests per second a client may send: beyond it a run would not finish in useful time.
pub(super) const MAX_RATE: f64 = 10_000_000.0;

pub(super) const RATE_RULE: &str =
    "rate must be a number between 0 and 10,000,000 requests per second";

pub(super) fn valid_rate(r: f64) -> bool {
    r.is_finite() && (0.0..=MAX_RATE).contains(&r)
}

pub(super) fn validate_behaviour(b: &Behaviour) -> Result<(), String> {
    if b.workers == 0 {
        return Err("workers must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&b.error_rate) {
        return Err("error rate must be within [0, 1]".into());
    }
    if !(100..600).contains(&b.error_code) {
        return Err("error code must be an HTTP status".into());
    }
    if let Some(p) = &b.proxy {
        p.validate()?;
    }
    b.service_time.validate()
}
