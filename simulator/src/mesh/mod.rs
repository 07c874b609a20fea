//! The simulated mesh: services with versions and pods, client workloads, and the client-side
//! proxy (routing, load balancing, connection pools, retries, timeouts, outlier detection, mTLS).
//!
//! # Using it from a harness
//! 1. Build: [`Mesh::new`] with a [`MeshConfig`] (services, versions with pod count and
//!    [`Behaviour`], clients with a rate and header mix), then [`Mesh::apply_manifests`] with
//!    parsed [`Manifests`] (VirtualService, DestinationRule, ...).
//! 2. Look up ids once: [`Mesh::service_id`], [`Mesh::version_id`], [`Mesh::client_id`].
//! 3. Drive: [`Mesh::run_until`] advances virtual time; between calls, [`Mesh::set_split`] sets
//!    primary/canary weights, header matches and mirroring; [`Mesh::apply`] performs an
//!    [`Action`] now (scale, behaviour change for promotion, faults, rate), [`Mesh::schedule`]
//!    queues one for later.
//! 4. Observe: [`Mesh::destination_stats`] (what the destination sidecars report, as Flagger's
//!    Istio queries read), [`Mesh::source_stats`] (what clients saw after retries),
//!    [`Mesh::client_failures_by_version`], and [`Mesh::telemetry`] for everything else
//!    (Prometheus text, raw buckets). Windows are read from scrape snapshots.
//!
//! ```
//! use fledge_simulator::engine::SECONDS;
//! use fledge_simulator::mesh::*;
//!
//! let versions = vec![
//!     VersionConfig::new("primary", 3, Behaviour::default()),
//!     VersionConfig::new("canary", 1, Behaviour { error_rate: 0.05, ..Behaviour::default() }),
//! ];
//! let cfg = MeshConfig {
//!     seed: 7,
//!     services: vec![ServiceConfig::new("podinfo", versions)],
//!     clients: vec![ClientConfig::new("loadtester", "podinfo", 100.0)],
//!     ..Default::default()
//! };
//! let mut mesh = Mesh::new(cfg)?;
//! let svc = mesh.service_id("podinfo").expect("declared above");
//! let (_primary, canary) = mesh.primary_canary(svc).expect("primary and canary exist");
//! mesh.set_split(svc, &Split { primary: 90, canary: 10, mirror: None, canary_match: vec![] })?;
//! mesh.run_until(60 * SECONDS);
//! let w = mesh.destination_stats(canary, 0, 60 * SECONDS);
//! assert!(w.requests > 0);
//! let (_success_rate, _p99_ms) = (w.success_rate(), w.quantile_ms(0.99));
//! mesh.promote(svc)?; // primary pods now behave like the canary
//! # Ok::<(), MeshError>(())
//! ```
//!
//! # Model
//! Each client workload has one proxy with one Envoy cluster per destination version (as Istio
//! builds `outbound|port|subset|host` clusters), so limits, load balancing and outlier detection
//! are per (client, version). Circuit-breaker limits are cluster-wide counters, as in Envoy;
//! connections are per host. A request is routed once (rule, weighted version), then each attempt
//! picks a host, takes or opens a connection (TCP + TLS round trips and handshake CPU for a new
//! one), crosses the network to the pod, waits for a worker, is served, and the response returns.
//!
//! Simplifications: requests carry headers only (no path or method), so a ServiceProfile's first
//! route stands for all requests and VirtualService `uri`/`method` matches are ignored with a
//! warning; one proxy per client workload (not per pod); mirrored requests skip connection-pool
//! accounting; a black-holed pod accepts requests on existing connections and never answers
//! (Envoy's 5-minute stream idle timeout ends them when no route timeout is set); routing to a
//! different service from a VirtualService is not simulated; requests without a matching route
//! (404 `NR`) are counted in [`RunStats`] but not in telemetry; a Linkerd retry budget is shared by
//! the client's requests to the service and counted over one to two `ttl` windows.

pub mod config;
pub mod dist;
pub mod outlier;

use std::collections::{BTreeMap, VecDeque};

pub use config::*;
pub use dist::ServiceTime;
pub use outlier::{
    Accrual, AccrualConfig, EjectionRule, FailurePercentageDetector, OutlierConfig,
    OutlierDetector, SuccessRateDetector,
};

use crate::engine::{EventQueue, MILLIS, SECONDS, SimTime, Stream};
use crate::manifest::{
    FaultInjection, HeaderMatch, Manifest, Manifests, MtlsMode, PeerAuthentication, RetryOn,
    TlsMode, TrafficPolicy,
};
use crate::telemetry::{
    DestLabels, ProxyCounters, Reporter, Selector, SourceLabels, Telemetry, WindowStats, flags,
};

const NONE: u32 = u32::MAX;

/// A manifest rule before compilation: match blocks, (version, weight) destinations, the route
/// timeout and the per-try timeout.
type WeightedRule = (
    Vec<Vec<HeaderMatch>>,
    Vec<(u32, u32)>,
    Option<SimTime>,
    Option<SimTime>,
);

/// Index of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId(pub u32);
/// Index of a version (across all services).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionId(pub u32);
/// Index of a client workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u32);

/// A workload holding a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// A client workload.
    Client(ClientId),
    /// A version of a service.
    Version(VersionId),
}

/// Errors from building or changing a mesh.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MeshError {
    /// A name does not refer to a service.
    #[error("unknown service `{0}`")]
    UnknownService(String),
    /// A version name or id does not exist.
    #[error("service `{service}` has no version `{version}`")]
    UnknownVersion {
        /// Service.
        service: String,
        /// Version.
        version: String,
    },
    /// A client id does not exist.
    #[error("unknown client {0}")]
    UnknownClient(u32),
    /// A pod index is out of range.
    #[error("version `{version}` has no pod {pod}")]
    UnknownPod {
        /// Version.
        version: String,
        /// Pod index.
        pod: u32,
    },
    /// The configuration is inconsistent.
    #[error("invalid configuration: {what}: {reason}")]
    InvalidConfig {
        /// Which part.
        what: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> MeshError {
    MeshError::InvalidConfig {
        what: what.into(),
        reason: reason.into(),
    }
}

/// A change to the mesh, applied now ([`Mesh::apply`]) or at a virtual time ([`Mesh::schedule`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Sets the error probability of every pod of a version.
    SetErrorRate {
        /// Version.
        version: VersionId,
        /// Probability.
        rate: f64,
    },
    /// Sets the service time of a version.
    SetServiceTime {
        /// Version.
        version: VersionId,
        /// Distribution.
        service_time: ServiceTime,
    },
    /// Replaces a version's behaviour (promotion copies the canary's to the primary).
    SetBehaviour {
        /// Version.
        version: VersionId,
        /// Behaviour.
        behaviour: Behaviour,
    },
    /// Overrides the error probability of one pod (`None` clears the override).
    SetPodErrorRate {
        /// Version.
        version: VersionId,
        /// Pod index within the version.
        pod: u32,
        /// Probability.
        rate: Option<f64>,
    },
    /// Multiplies one pod's service times by `factor` (a slow node); 1.0 restores it.
    SetPodSlowdown {
        /// Version.
        version: VersionId,
        /// Pod index within the version.
        pod: u32,
        /// Service-time multiplier.
        factor: f64,
    },
    /// Crashes a pod: its connections reset, in-flight requests fail; it restarts later if set.
    CrashPod {
        /// Version.
        version: VersionId,
        /// Pod index within the version.
        pod: u32,
        /// Restart after this long.
        restart_after: Option<SimTime>,
    },
    /// Makes a pod a black hole (new connections time out, requests are never answered) or heals it.
    BlackHole {
        /// Version.
        version: VersionId,
        /// Pod index within the version.
        pod: u32,
        /// On or off.
        on: bool,
    },
    /// Scales a version to `pods` pods.
    Scale {
        /// Version.
        version: VersionId,
        /// Pod count.
        pods: u32,
    },
    /// Sets a client's request rate.
    SetRate {
        /// Client.
        client: ClientId,
        /// Requests per second.
        rps: f64,
    },
    /// Stops (false) or resumes (true) certificate rotation of a workload; a stopped one expires.
    CertRotation {
        /// Workload.
        workload: Workload,
        /// Rotation enabled.
        enabled: bool,
    },
    /// Sets a service's split.
    SetSplit {
        /// Service.
        service: ServiceId,
        /// Split.
        split: Split,
    },
}

/// Counts describing the run so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Events processed.
    pub events: u64,
    /// Client requests started.
    pub requests: u64,
    /// Client requests completed.
    pub completed: u64,
    /// Upstream attempts started (first tries, retries and mirrors).
    pub attempts: u64,
    /// Certificate rotations performed.
    pub cert_rotations: u64,
}

/// Queueing counters of one version's pods (for checking the queueing model).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Requests that reached a pod.
    pub arrivals: u64,
    /// Of those, requests that found every worker busy and waited.
    pub queued: u64,
    /// Requests that started service.
    pub started: u64,
    /// Total time waited before service, in nanoseconds.
    pub total_wait: u128,
}

/// Linkerd's retry budget: retries may add `ratio` of the requests plus `min_per_sec` per second,
/// counted over the last one to two `ttl` windows.
#[derive(Clone, Debug)]
struct RetryBudget {
    ratio: f64,
    min_per_sec: f64,
    ttl: SimTime,
    window_start: SimTime,
    requests: [u64; 2],
    retries: [u64; 2],
}

impl RetryBudget {
    fn new(b: &crate::manifest::RetryBudget) -> Self {
        Self {
            ratio: b.retry_ratio.max(0.0),
            min_per_sec: f64::from(b.min_retries_per_second),
            ttl: b.ttl.max(1),
            window_start: 0,
            requests: [0; 2],
            retries: [0; 2],
        }
    }

    fn roll(&mut self, now: SimTime) {
        while now >= self.window_start + self.ttl {
            self.window_start += self.ttl;
            self.requests = [self.requests[1], 0];
            self.retries = [self.retries[1], 0];
            if now >= self.window_start + 2 * self.ttl {
                // Idle for long: skip ahead without looping once per window.
                self.window_start = now - (now - self.window_start) % self.ttl;
                self.requests = [0; 2];
                self.retries = [0; 2];
            }
        }
    }

    fn deposit(&mut self, now: SimTime) {
        self.roll(now);
        self.requests[1] += 1;
    }

    fn withdraw(&mut self, now: SimTime) -> bool {
        self.roll(now);
        let reqs = (self.requests[0] + self.requests[1]) as f64;
        let allowed = self.min_per_sec * self.ttl as f64 / SECONDS as f64 + self.ratio * reqs;
        if ((self.retries[0] + self.retries[1]) as f64) < allowed {
            self.retries[1] += 1;
            true
        } else {
            false
        }
    }
}

#[derive(Clone, Debug)]
struct RetryPolicy {
    attempts: u32,
    per_try_timeout: Option<SimTime>,
    on: RetryOn,
}

impl RetryPolicy {
    fn none() -> Self {
        Self {
            attempts: 0,
            per_try_timeout: None,
            on: RetryOn::default(),
        }
    }
    fn istio_default() -> Self {
        Self {
            attempts: 2,
            per_try_timeout: None,
            on: RetryOn::istio_default(),
        }
    }
}

/// Route settings that a split keeps when it replaces the weights.
#[derive(Clone, Debug)]
struct RouteBase {
    timeout: Option<SimTime>,
    retry: RetryPolicy,
    fault: Option<FaultInjection>,
}

#[derive(Clone, Debug)]
struct RouteRule {
    matches: Vec<Vec<HeaderMatch>>,
    dests: Vec<(u32, u32)>,
    total_weight: u32,
    mirror: Option<(u32, f64)>,
    timeout: Option<SimTime>,
    retry: RetryPolicy,
    fault: Option<FaultInjection>,
}

struct Service {
    name: String,
    namespace: String,
    versions: Vec<u32>,
    primary: Option<u32>,
    canary: Option<u32>,
    rules: Vec<u32>,
    epoch: u32,
    base: RouteBase,
    explicit_route: bool,
    policy: TrafficPolicy,
    subset_policy: BTreeMap<u32, TrafficPolicy>,
    accrual: Option<AccrualConfig>,
}

struct Version {
    service: u32,
    name: String,
    labels: BTreeMap<String, String>,
    behaviour: Behaviour,
    pods: Vec<u32>,
    sidecar: bool,
    server_mode: MtlsMode,
    stream: Stream,
    queue_stats: QueueStats,
}

struct Pod {
    version: u32,
    alive: bool,
    black_hole: bool,
    in_lb: bool,
    removed: bool,
    busy: u32,
    queue: VecDeque<u32>,
    in_service: Vec<u32>,
    epoch: u32,
    error_rate: Option<f64>,
    slowdown: f64,
    served: u64,
}

struct Client {
    service: u32,
    rate: f64,
    shape: ArrivalShape,
    profiles: Vec<(f64, Vec<(String, String)>)>,
    profile_total: f64,
    sidecar: bool,
    cache: Vec<u32>,
    cache_epoch: u32,
    clusters: Vec<u32>,
    arrivals: Stream,
    routing: Stream,
    retry: Stream,
    budget: Option<RetryBudget>,
    running: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientTls {
    Auto,
    Mutual,
    Plain,
}

#[derive(Clone, Debug)]
struct ClusterPolicy {
    lb: crate::manifest::LbPolicy,
    max_connections: u32,
    max_pending: u32,
    max_requests: u32,
    max_requests_per_connection: u32,
    max_retries: u32,
    http2: bool,
    connect_timeout: SimTime,
    idle_timeout: SimTime,
    tls: ClientTls,
}

#[derive(Clone, Copy, Debug)]
struct Conn {
    open: bool,
    tag: u32,
    streams: u32,
    served: u32,
    ready_at: SimTime,
    last_used: SimTime,
    closing: bool,
}

struct Host {
    active: u32,
    conns: Vec<Conn>,
    pending: VecDeque<u32>,
    ewma: f64,
    ewma_at: SimTime,
    accrual: Accrual,
}

struct Cluster {
    client: u32,
    version: u32,
    policy: ClusterPolicy,
    hosts: Vec<Host>,
    in_lb: Vec<u32>,
    candidates: Vec<u32>,
    od: Option<OutlierDetector>,
    accrual: Option<AccrualConfig>,
    tick_armed: bool,
    rr: u32,
    active_requests: u32,
    pending: u32,
    open_conns: u32,
    retries_active: u32,
    peak_retries: u32,
    lb_rng: Stream,
    scratch: Vec<u32>,
}

#[derive(Clone, Copy)]
struct Request {
    client: u32,
    cluster: u32,
    rule: u32,
    start: SimTime,
    retries_done: u32,
    attempt: u32,
    tag: u32,
    flags: u16,
    tried: [u32; 4],
    ntried: u8,
    holds_retry: bool,
    live: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Pending,
    Wire,
    AtPod,
    Dropped,
    Returning,
}

#[derive(Clone, Copy)]
struct Attempt {
    req: u32,
    cluster: u32,
    host: u32,
    pod: u32,
    conn: u32,
    conn_gen: u32,
    tag: u32,
    sent: SimTime,
    at_pod: SimTime,
    code: u16,
    stage: Stage,
    cancelled: bool,
    mirror: bool,
    pod_epoch: u32,
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

struct Cert {
    expires_at: SimTime,
    rotating: bool,
}

#[derive(Clone, Copy, Debug)]
enum Ev {
    Arrival(u32),
    AtPod(u32, u32),
    Done(u32, u32),
    Response(u32, u32),
    Fail(u32, u32, u16),
    PerTry(u32, u32),
    RouteTimeout(u32, u32),
    Retry(u32, u32),
    FaultDelay(u32, u32),
    StreamIdle(u32, u32),
    OdTick(u32),
    Scrape,
    Action(u32),
    EndpointIn(u32, u32),
    EndpointOut(u32, u32),
    Restart(u32, u32),
    CertRotate(u32),
}

/// The simulated mesh. See the module docs for the harness-facing API.
pub struct Mesh {
    q: EventQueue<Ev>,
    seed: u64,
    net: NetworkConfig,
    certs_cfg: CertConfig,
    data_plane: DataPlane,
    ejection_rule: EjectionRule,
    default_mtls: MtlsMode,
    default_namespace: String,
    services: Vec<Service>,
    versions: Vec<Version>,
    pods: Vec<Pod>,
    clients: Vec<Client>,
    clusters: Vec<Cluster>,
    rules: Vec<RouteRule>,
    reqs: Vec<Request>,
    free_reqs: Vec<u32>,
    atts: Vec<Attempt>,
    free_atts: Vec<u32>,
    certs: Vec<Cert>,
    actions: Vec<Option<Action>>,
    peer_auth: Vec<PeerAuthentication>,
    subset_labels: Vec<(u32, String, BTreeMap<String, String>)>,
    telemetry: Telemetry,
    stats: RunStats,
    mirror_rng: Stream,
    od_rng: Stream,
    fault_rng: Stream,
    cert_rng: Stream,
}

fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn host_matches(host: &str, name: &str, namespace: &str) -> bool {
    host == name
        || host == format!("{name}.{namespace}")
        || host == format!("{name}.{namespace}.svc")
        || host == format!("{name}.{namespace}.svc.cluster.local")
}

impl Mesh {
    /// Builds a mesh. Routes default to spreading requests over all versions by pod count, with
    /// Istio's default retry policy; apply manifests or a split to change that.
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
                primary: None,
                canary: None,
                rules: Vec::new(),
                epoch: 0,
                base: RouteBase {
                    timeout: None,
                    retry: match cfg.data_plane {
                        DataPlane::Istio => RetryPolicy::istio_default(),
                        DataPlane::Linkerd => RetryPolicy::none(),
                    },
                    fault: None,
                },
                explicit_route: false,
                policy: TrafficPolicy::default(),
                subset_policy: BTreeMap::new(),
                accrual: sc.failure_accrual,
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
                        .get(v as usize)
                        .is_some_and(|x: &Version| x.name == vc.name)
                }) {
                    return Err(invalid(&what, "declared twice"));
                }
                let vid = versions.len() as u32;
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
                dest_labels.push(DestLabels {
                    workload,
                    namespace: namespace.clone(),
                    service: format!("{}.{}.svc.cluster.local", sc.name, namespace),
                    version: vc.name.clone(),
                });
                let mut v = Version {
                    service: si as u32,
                    name: vc.name.clone(),
                    labels,
                    behaviour: vc.behaviour.clone(),
                    pods: Vec::new(),
                    sidecar: vc.sidecar,
                    server_mode: cfg.default_mtls,
                    queue_stats: QueueStats::default(),
                    stream: Stream::new(cfg.seed, &format!("pods/{}/{}", sc.name, vc.name)),
                };
                for _ in 0..vc.pods {
                    v.pods.push(pods.len() as u32);
                    pods.push(new_pod(vid));
                }
                if vc.name == sc.primary {
                    svc.primary = Some(vid);
                }
                if vc.name == sc.canary {
                    svc.canary = Some(vid);
                }
                svc.versions.push(vid);
                versions.push(v);
            }
            services.push(svc);
        }
        let mut clients = Vec::new();
        let mut source_labels = Vec::new();
        for cc in &cfg.clients {
            let service = services
                .iter()
                .position(|s| s.name == cc.target)
                .ok_or_else(|| MeshError::UnknownService(cc.target.clone()))?
                as u32;
            if !valid_rate(cc.rate) {
                return Err(invalid(format!("client {}", cc.name), RATE_RULE));
            }
            let mut profiles: Vec<(f64, Vec<(String, String)>)> = cc
                .headers
                .iter()
                .map(|p| {
                    (
                        p.weight,
                        p.headers
                            .iter()
                            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                            .collect(),
                    )
                })
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
            let namespace = cc
                .namespace
                .clone()
                .unwrap_or_else(|| cfg.namespace.clone());
            source_labels.push(SourceLabels {
                workload: cc.name.clone(),
                namespace: namespace.clone(),
            });
            clients.push(Client {
                service,
                rate: cc.rate,
                shape: cc.shape,
                cache: vec![NONE; profiles.len()],
                profiles,
                profile_total: total,
                sidecar: cc.sidecar,
                cache_epoch: NONE,
                clusters: Vec::new(),
                arrivals: Stream::new(cfg.seed, &format!("arrivals/{}", cc.name)),
                routing: Stream::new(cfg.seed, &format!("routing/{}", cc.name)),
                retry: Stream::new(cfg.seed, &format!("retry/{}", cc.name)),
                budget: None,
                running: false,
            });
        }
        let n_certs = clients.len() + versions.len();
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
            default_namespace: cfg.namespace.clone(),
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
        };
        // One cluster per (client, version), as Istio builds one Envoy cluster per subset.
        for c in 0..mesh.clients.len() {
            let svc = mesh.clients[c].service as usize;
            let vs = mesh.services[svc].versions.clone();
            for v in vs {
                let id = mesh.clusters.len() as u32;
                let cluster = mesh.new_cluster(c as u32, v);
                mesh.clusters.push(cluster);
                mesh.clients[c].clusters.push(id);
            }
        }
        for s in 0..mesh.services.len() {
            mesh.reset_default_route(s as u32);
            mesh.refresh_policies(s as u32);
        }
        for i in 0..mesh.certs.len() {
            mesh.schedule_rotation(i as u32);
        }
        mesh.q.schedule_at(cfg.scrape_interval, Ev::Scrape);
        for c in 0..mesh.clients.len() {
            mesh.arm_client(c as u32);
        }
        Ok(mesh)
    }

    fn new_cluster(&self, client: u32, version: u32) -> Cluster {
        let n = self.versions[version as usize].pods.len();
        Cluster {
            client,
            version,
            policy: self.default_policy(),
            hosts: (0..n).map(|_| new_host()).collect(),
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
            lb_rng: Stream::new(self.seed, &format!("lb/{}/{}", client, version)),
            scratch: Vec::new(),
        }
    }

    fn default_policy(&self) -> ClusterPolicy {
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
            http2: false,
            connect_timeout: 10 * SECONDS,
            idle_timeout: 3600 * SECONDS,
            tls: ClientTls::Auto,
        }
    }

    // ----- lookups -------------------------------------------------------------------------

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
        self.services[s.0 as usize]
            .versions
            .iter()
            .find(|&&v| self.versions[v as usize].name == version)
            .map(|&v| VersionId(v))
    }

    /// Client by workload name.
    pub fn client_id(&self, name: &str) -> Option<ClientId> {
        self.telemetry
            .sources()
            .iter()
            .position(|s| s.workload == name)
            .map(|i| ClientId(i as u32))
    }

    /// Versions of a service.
    pub fn versions_of(&self, service: ServiceId) -> Vec<VersionId> {
        self.services
            .get(service.0 as usize)
            .map_or_else(Vec::new, |s| {
                s.versions.iter().map(|&v| VersionId(v)).collect()
            })
    }

    /// The primary and canary versions of a service, when it has versions with those names.
    pub fn primary_canary(&self, service: ServiceId) -> Option<(VersionId, VersionId)> {
        let s = self.services.get(service.0 as usize)?;
        Some((VersionId(s.primary?), VersionId(s.canary?)))
    }

    /// Name of a version.
    pub fn version_name(&self, v: VersionId) -> Option<&str> {
        self.versions.get(v.0 as usize).map(|x| x.name.as_str())
    }

    /// Current behaviour of a version.
    pub fn behaviour(&self, v: VersionId) -> Option<&Behaviour> {
        self.versions.get(v.0 as usize).map(|x| &x.behaviour)
    }

    /// Pods of a version that are running and not scaled away.
    pub fn ready_pods(&self, v: VersionId) -> u32 {
        self.versions.get(v.0 as usize).map_or(0, |x| {
            x.pods
                .iter()
                .filter(|&&p| !self.pods[p as usize].removed && self.pods[p as usize].alive)
                .count() as u32
        })
    }

    /// Hosts of (client, version) currently ejected by outlier detection.
    pub fn ejected_hosts(&self, client: ClientId, v: VersionId) -> u32 {
        self.cluster_of(client.0, v.0)
            .and_then(|c| {
                self.clusters[c as usize]
                    .od
                    .as_ref()
                    .map(|o| o.ejected_count())
            })
            .unwrap_or(0)
    }

    /// Highest number of retries in flight at once from `client` to `v` so far.
    pub fn peak_retries_in_flight(&self, client: ClientId, v: VersionId) -> u32 {
        self.cluster_of(client.0, v.0)
            .map_or(0, |c| self.clusters[c as usize].peak_retries)
    }

    /// Requests each pod of a version has served so far, in pod order (scaled-away pods included).
    pub fn pod_requests(&self, v: VersionId) -> Vec<u64> {
        self.versions.get(v.0 as usize).map_or_else(Vec::new, |x| {
            x.pods
                .iter()
                .map(|&p| self.pods[p as usize].served)
                .collect()
        })
    }

    /// Queueing counters of a version's pods.
    pub fn queue_stats(&self, v: VersionId) -> QueueStats {
        self.versions
            .get(v.0 as usize)
            .map_or_else(QueueStats::default, |x| x.queue_stats)
    }

    /// Upstream requests in flight from `client` to `v`, and retries in flight.
    pub fn in_flight(&self, client: ClientId, v: VersionId) -> (u32, u32) {
        self.cluster_of(client.0, v.0).map_or((0, 0), |c| {
            let c = &self.clusters[c as usize];
            (c.active_requests, c.retries_active)
        })
    }

    fn cluster_of(&self, client: u32, version: u32) -> Option<u32> {
        self.clients
            .get(client as usize)?
            .clusters
            .iter()
            .copied()
            .find(|&c| self.clusters[c as usize].version == version)
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

    // ----- control -------------------------------------------------------------------------

    /// Runs every event up to and including time `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: SimTime) {
        while let Some(ev) = self.q.pop_until(t) {
            self.handle(ev);
        }
        self.q.advance_to(t);
    }

    /// Queues `action` at virtual time `at` (now if in the past). It is checked now.
    pub fn schedule(&mut self, at: SimTime, action: Action) -> Result<(), MeshError> {
        self.check_action(&action)?;
        let idx = self.actions.len() as u32;
        self.actions.push(Some(action));
        self.q.schedule_at(at, Ev::Action(idx));
        Ok(())
    }

    /// Sets the weights, header matches and mirroring of a service's route, keeping the timeout,
    /// retries and fault injection of its current default route.
    pub fn set_split(&mut self, service: ServiceId, split: &Split) -> Result<(), MeshError> {
        self.apply(Action::SetSplit {
            service,
            split: split.clone(),
        })
    }

    /// Like [`Mesh::set_split`], with A/B match blocks that are alternatives, as Istio ORs a
    /// route's `match` blocks: a request matching every condition of any block goes to the
    /// canary. `split.canary_match` is ignored.
    pub fn set_split_matching(
        &mut self,
        service: ServiceId,
        split: &Split,
        blocks: &[Vec<HeaderMatch>],
    ) -> Result<(), MeshError> {
        self.check_action(&Action::SetSplit {
            service,
            split: split.clone(),
        })?;
        self.install_split_blocks(service.0, split, blocks);
        Ok(())
    }

    fn version_check(&self, v: VersionId) -> Result<&Version, MeshError> {
        self.versions
            .get(v.0 as usize)
            .ok_or(MeshError::UnknownVersion {
                service: "?".into(),
                version: v.0.to_string(),
            })
    }

    fn check_action(&self, a: &Action) -> Result<(), MeshError> {
        let prob = |p: f64| (0.0..=1.0).contains(&p);
        match a {
            Action::SetErrorRate { version, rate } => {
                self.version_check(*version)?;
                if !prob(*rate) {
                    return Err(invalid("error rate", "must be within [0, 1]"));
                }
            }
            Action::SetServiceTime {
                version,
                service_time,
            } => {
                self.version_check(*version)?;
                service_time
                    .validate()
                    .map_err(|r| invalid("service time", r))?;
            }
            Action::SetBehaviour { version, behaviour } => {
                self.version_check(*version)?;
                validate_behaviour(behaviour).map_err(|r| invalid("behaviour", r))?;
            }
            Action::SetPodErrorRate { version, pod, rate } => {
                self.pod_check(*version, *pod)?;
                if rate.is_some_and(|r| !prob(r)) {
                    return Err(invalid("error rate", "must be within [0, 1]"));
                }
            }
            Action::SetPodSlowdown {
                version,
                pod,
                factor,
            } => {
                self.pod_check(*version, *pod)?;
                if !(factor.is_finite() && *factor > 0.0) {
                    return Err(invalid("slowdown", "must be a positive number"));
                }
            }
            Action::CrashPod { version, pod, .. } | Action::BlackHole { version, pod, .. } => {
                self.pod_check(*version, *pod)?;
            }
            Action::Scale { version, pods } => {
                self.version_check(*version)?;
                if *pods > MAX_PODS {
                    return Err(invalid(
                        "scale",
                        format!("at most {MAX_PODS} pods per version"),
                    ));
                }
            }
            Action::SetRate { client, rps } => {
                if client.0 as usize >= self.clients.len() {
                    return Err(MeshError::UnknownClient(client.0));
                }
                if !valid_rate(*rps) {
                    return Err(invalid("rate", RATE_RULE));
                }
            }
            Action::CertRotation { workload, .. } => {
                self.cert_index(*workload)?;
            }
            Action::SetSplit { service, split } => {
                let s = self
                    .services
                    .get(service.0 as usize)
                    .ok_or(MeshError::UnknownService(service.0.to_string()))?;
                if s.primary.is_none() || s.canary.is_none() {
                    return Err(invalid(
                        format!("service {}", s.name),
                        "a split needs versions named as its primary and canary",
                    ));
                }
                if split.primary == 0 && split.canary == 0 {
                    return Err(invalid("split", "primary and canary weights are both zero"));
                }
                if split.mirror.is_some_and(|m| m > 100) {
                    return Err(invalid("split", "mirror percentage above 100"));
                }
            }
        }
        Ok(())
    }

    fn pod_check(&self, v: VersionId, pod: u32) -> Result<u32, MeshError> {
        let ver = self.version_check(v)?;
        ver.pods
            .get(pod as usize)
            .copied()
            .ok_or(MeshError::UnknownPod {
                version: ver.name.clone(),
                pod,
            })
    }

    fn cert_index(&self, w: Workload) -> Result<usize, MeshError> {
        match w {
            Workload::Client(c) if (c.0 as usize) < self.clients.len() => Ok(c.0 as usize),
            Workload::Client(c) => Err(MeshError::UnknownClient(c.0)),
            Workload::Version(v) => {
                self.version_check(v)?;
                Ok(self.clients.len() + v.0 as usize)
            }
        }
    }

    /// Promotion: the primary's pods take the canary's current behaviour.
    pub fn promote(&mut self, service: ServiceId) -> Result<(), MeshError> {
        let (p, c) = self.primary_canary(service).ok_or_else(|| {
            invalid(
                "promote",
                "the service needs versions named as its primary and canary",
            )
        })?;
        let behaviour = self.versions[c.0 as usize].behaviour.clone();
        self.apply(Action::SetBehaviour {
            version: p,
            behaviour,
        })
    }

    /// Performs `action` now.
    pub fn apply(&mut self, action: Action) -> Result<(), MeshError> {
        self.check_action(&action)?;
        self.do_action(action);
        Ok(())
    }

    fn do_action(&mut self, action: Action) {
        let now = self.now();
        match action {
            Action::SetErrorRate { version, rate } => {
                self.versions[version.0 as usize].behaviour.error_rate = rate
            }
            Action::SetServiceTime {
                version,
                service_time,
            } => {
                self.versions[version.0 as usize].behaviour.service_time = service_time;
            }
            Action::SetBehaviour { version, behaviour } => {
                self.versions[version.0 as usize].behaviour = behaviour;
                let pods = self.versions[version.0 as usize].pods.clone();
                for p in pods {
                    self.start_work(p);
                }
            }
            Action::SetPodErrorRate { version, pod, rate } => {
                let p = self.versions[version.0 as usize].pods[pod as usize];
                self.pods[p as usize].error_rate = rate;
            }
            Action::SetPodSlowdown {
                version,
                pod,
                factor,
            } => {
                let p = self.versions[version.0 as usize].pods[pod as usize];
                self.pods[p as usize].slowdown = factor;
            }
            Action::CrashPod {
                version,
                pod,
                restart_after,
            } => {
                let p = self.versions[version.0 as usize].pods[pod as usize];
                self.crash(p);
                if let Some(d) = restart_after {
                    let epoch = self.pods[p as usize].epoch;
                    self.q
                        .schedule_at(now.saturating_add(d), Ev::Restart(p, epoch));
                }
            }
            Action::BlackHole { version, pod, on } => {
                let p = self.versions[version.0 as usize].pods[pod as usize];
                self.pods[p as usize].black_hole = on;
            }
            Action::Scale { version, pods } => self.scale(version.0, pods),
            Action::SetRate { client, rps } => {
                self.clients[client.0 as usize].rate = rps;
                self.arm_client(client.0);
            }
            Action::CertRotation { workload, enabled } => {
                if let Ok(i) = self.cert_index(workload) {
                    let was = self.certs[i].rotating;
                    self.certs[i].rotating = enabled;
                    if enabled && !was {
                        // A resumed agent fetches a fresh certificate at once.
                        self.certs[i].expires_at = now.saturating_add(self.certs_cfg.ttl);
                        self.schedule_rotation(i as u32);
                    }
                }
            }
            Action::SetSplit { service, split } => self.install_split(service.0, &split),
        }
    }

    fn install_split(&mut self, s: u32, split: &Split) {
        self.install_split_blocks(s, split, std::slice::from_ref(&split.canary_match));
    }

    fn install_split_blocks(&mut self, s: u32, split: &Split, blocks: &[Vec<HeaderMatch>]) {
        let svc = &self.services[s as usize];
        let (Some(p), Some(c)) = (svc.primary, svc.canary) else {
            return;
        };
        let base = svc.base.clone();
        let mut rules = Vec::new();
        // An empty block would match every request.
        let blocks: Vec<Vec<HeaderMatch>> =
            blocks.iter().filter(|b| !b.is_empty()).cloned().collect();
        if !blocks.is_empty() {
            rules.push(RouteRule {
                matches: blocks,
                dests: vec![(c, 100)],
                total_weight: 100,
                mirror: None,
                timeout: base.timeout,
                retry: base.retry.clone(),
                fault: base.fault.clone(),
            });
        }
        let mut dests = Vec::new();
        if split.primary > 0 {
            dests.push((p, u32::from(split.primary)));
        }
        if split.canary > 0 {
            dests.push((c, u32::from(split.canary)));
        }
        rules.push(RouteRule {
            matches: Vec::new(),
            total_weight: weight_sum(&dests),
            dests,
            mirror: split.mirror.filter(|m| *m > 0).map(|m| (c, f64::from(m))),
            timeout: base.timeout,
            retry: base.retry,
            fault: base.fault,
        });
        self.install_rules(s, rules);
    }

    fn install_rules(&mut self, s: u32, rules: Vec<RouteRule>) {
        let mut ids = Vec::with_capacity(rules.len());
        for r in rules {
            ids.push(self.rules.len() as u32);
            self.rules.push(r);
        }
        let svc = &mut self.services[s as usize];
        svc.rules = ids;
        svc.epoch = svc.epoch.wrapping_add(1);
        svc.explicit_route = true;
    }

    fn reset_default_route(&mut self, s: u32) {
        let svc = &self.services[s as usize];
        let dests: Vec<(u32, u32)> = svc
            .versions
            .iter()
            .map(|&v| {
                let pods = &self.versions[v as usize].pods;
                let live = pods
                    .iter()
                    .filter(|&&p| !self.pods[p as usize].removed)
                    .count();
                (v, live as u32)
            })
            .collect();
        let rule = RouteRule {
            matches: Vec::new(),
            total_weight: weight_sum(&dests),
            dests,
            mirror: None,
            timeout: svc.base.timeout,
            retry: svc.base.retry.clone(),
            fault: svc.base.fault.clone(),
        };
        self.install_rules(s, vec![rule]);
        // Without a route of its own the service spreads by pod count, as a Kubernetes Service does.
        self.services[s as usize].explicit_route = false;
    }

    fn schedule_rotation(&mut self, cert: u32) {
        let c = &self.certs_cfg;
        let jitter = 1.0 + c.jitter * (2.0 * self.cert_rng.uniform() - 1.0);
        let after = (c.ttl as f64 * c.grace_ratio * jitter).max(1.0) as SimTime;
        self.q.schedule_in(after, Ev::CertRotate(cert));
    }

    fn arm_client(&mut self, c: u32) {
        let cl = &mut self.clients[c as usize];
        if cl.rate > 0.0 && !cl.running {
            cl.running = true;
            let gap = next_gap(cl);
            self.q.schedule_in(gap, Ev::Arrival(c));
        }
    }

    // ----- manifests -----------------------------------------------------------------------

    /// Applies parsed manifests: DestinationRules and PeerAuthentications set policies, then
    /// VirtualServices, TrafficSplits, HTTPRoutes and ServiceProfiles set routes. Returns
    /// warnings for what the mesh cannot use (hosts it does not simulate, unknown subsets).
    pub fn apply_manifests(&mut self, m: &Manifests) -> Result<Vec<String>, MeshError> {
        let mut warnings = Vec::new();
        for item in &m.items {
            match item {
                Manifest::DestinationRule(dr) => {
                    let Some(s) = self.find_service(&dr.host, dr.namespace.as_deref()) else {
                        warnings.push(format!(
                            "DestinationRule {}: host `{}` is not simulated",
                            dr.name, dr.host
                        ));
                        continue;
                    };
                    self.services[s as usize].policy = dr.traffic_policy.clone();
                    self.services[s as usize].subset_policy.clear();
                    for sub in &dr.subsets {
                        match self.resolve_subset(s, &sub.name, Some(&sub.labels)) {
                            Some(v) => {
                                if let Some(tp) = &sub.traffic_policy {
                                    self.services[s as usize]
                                        .subset_policy
                                        .insert(v, tp.clone());
                                }
                            }
                            None => warnings.push(format!(
                                "DestinationRule {}: subset `{}` selects no version",
                                dr.name, sub.name
                            )),
                        }
                    }
                    self.subset_labels.retain(|(svc, _, _)| *svc != s);
                    for sub in &dr.subsets {
                        self.subset_labels
                            .push((s, sub.name.clone(), sub.labels.clone()));
                    }
                    self.refresh_policies(s);
                }
                Manifest::PeerAuthentication(pa) => {
                    self.peer_auth.push(pa.clone());
                    let before: Vec<MtlsMode> =
                        self.versions.iter().map(|v| v.server_mode).collect();
                    self.resolve_peer_auth();
                    // A sidecar whose mTLS mode changes gets a new inbound listener, and Envoy
                    // drains the old one's connections: clients reconnect under the new mode.
                    for (v, mode) in before.into_iter().enumerate() {
                        if self.versions[v].server_mode != mode {
                            self.drain_connections_to(v as u32);
                        }
                    }
                }
                _ => {}
            }
        }
        for item in &m.items {
            match item {
                Manifest::VirtualService(vs) => self.apply_virtual_service(vs, &mut warnings)?,
                Manifest::TrafficSplit(ts) => {
                    let Some(s) = self.find_service(&ts.service, ts.namespace.as_deref()) else {
                        warnings.push(format!(
                            "TrafficSplit {}: service `{}` is not simulated",
                            ts.name, ts.service
                        ));
                        continue;
                    };
                    let mut dests = Vec::new();
                    for (b, w) in &ts.backends {
                        match self.resolve_backend(s, b) {
                            Some(v) => dests.push((v, u32::try_from(*w).unwrap_or(u32::MAX))),
                            None => warnings.push(format!(
                                "TrafficSplit {}: backend `{b}` matches no version",
                                ts.name
                            )),
                        }
                    }
                    self.install_weighted(s, vec![(Vec::new(), dests, None, None)]);
                }
                Manifest::HttpRoute(hr) => {
                    for parent in &hr.parents {
                        let Some(s) = self.find_service(parent, hr.namespace.as_deref()) else {
                            warnings.push(format!(
                                "HTTPRoute {}: parent `{parent}` is not a simulated service",
                                hr.name
                            ));
                            continue;
                        };
                        let mut rules = Vec::new();
                        for r in &hr.rules {
                            let mut dests = Vec::new();
                            for (b, w) in &r.backends {
                                match self.resolve_backend(s, b) {
                                    Some(v) => dests.push((v, *w)),
                                    None => warnings.push(format!(
                                        "HTTPRoute {}: backend `{b}` matches no version",
                                        hr.name
                                    )),
                                }
                            }
                            let matches = if r.matches.iter().any(Vec::is_empty) {
                                Vec::new()
                            } else {
                                r.matches.clone()
                            };
                            rules.push((
                                matches,
                                dests,
                                r.request_timeout,
                                r.backend_request_timeout,
                            ));
                        }
                        self.install_weighted(s, rules);
                    }
                }
                Manifest::ServiceProfile(sp) => {
                    let short = sp.name.split('.').next().unwrap_or(&sp.name);
                    let Some(s) = self.find_service(short, sp.namespace.as_deref()) else {
                        warnings.push(format!(
                            "ServiceProfile {}: service is not simulated",
                            sp.name
                        ));
                        continue;
                    };
                    // Requests carry no path or method, so the first route stands for all.
                    if let Some(r) = sp.routes.first() {
                        let budget = RetryBudget::new(sp.retry_budget.as_ref().unwrap_or(
                            &crate::manifest::RetryBudget {
                                retry_ratio: 0.2,
                                min_retries_per_second: 10,
                                ttl: 10 * SECONDS,
                            },
                        ));
                        for c in self.clients.iter_mut().filter(|c| c.service == s) {
                            c.budget = r.is_retryable.then(|| budget.clone());
                        }
                        let svc = &mut self.services[s as usize];
                        svc.base.timeout = r.timeout.or(svc.base.timeout);
                        if r.is_retryable {
                            // Linkerd bounds retries by the budget, not by a count.
                            svc.base.retry = RetryPolicy {
                                attempts: u32::MAX,
                                per_try_timeout: None,
                                on: failure_classes(&r.failure_ranges),
                            };
                        }
                        let ids = svc.rules.clone();
                        let (t, rp) = (svc.base.timeout, svc.base.retry.clone());
                        for id in ids {
                            self.rules[id as usize].timeout = t;
                            self.rules[id as usize].retry = rp.clone();
                        }
                        self.services[s as usize].epoch =
                            self.services[s as usize].epoch.wrapping_add(1);
                    }
                }
                _ => {}
            }
        }
        Ok(warnings)
    }

    fn install_weighted(&mut self, s: u32, rules: Vec<WeightedRule>) {
        let base = self.services[s as usize].base.clone();
        let compiled = rules
            .into_iter()
            .map(|(matches, dests, timeout, per_try)| {
                let mut retry = base.retry.clone();
                if per_try.is_some() {
                    retry.per_try_timeout = per_try;
                }
                RouteRule {
                    matches,
                    total_weight: weight_sum(&dests),
                    dests,
                    mirror: None,
                    timeout: timeout.or(base.timeout),
                    retry,
                    fault: base.fault.clone(),
                }
            })
            .collect();
        self.install_rules(s, compiled);
    }

    fn apply_virtual_service(
        &mut self,
        vs: &crate::manifest::VirtualService,
        warnings: &mut Vec<String>,
    ) -> Result<(), MeshError> {
        for host in &vs.hosts {
            let Some(s) = self.find_service(host, vs.namespace.as_deref()) else {
                warnings.push(format!(
                    "VirtualService {}: host `{host}` is not simulated",
                    vs.name
                ));
                continue;
            };
            let mut rules = Vec::new();
            for (i, r) in vs.http.iter().enumerate() {
                let mut dests = Vec::new();
                let single = r.route.len() == 1;
                for d in &r.route {
                    if self.find_service(&d.host, vs.namespace.as_deref()) != Some(s) {
                        warnings.push(format!("VirtualService {}: destination `{}` is another service; routing to it is not simulated", vs.name, d.host));
                        continue;
                    }
                    let w = d.weight.unwrap_or(if single { 100 } else { 0 });
                    match &d.subset {
                        Some(sub) => match self.resolve_subset(s, sub, None) {
                            Some(v) => dests.push((v, w)),
                            None => warnings.push(format!(
                                "VirtualService {}: subset `{sub}` matches no version",
                                vs.name
                            )),
                        },
                        None => {
                            // No subset: the whole service, spread by pod count.
                            let total: u32 = self.services[s as usize]
                                .versions
                                .iter()
                                .map(|&v| self.versions[v as usize].pods.len() as u32)
                                .sum();
                            for &v in &self.services[s as usize].versions {
                                let pods = self.versions[v as usize].pods.len() as u32;
                                if total > 0 {
                                    dests.push((v, w.saturating_mul(pods) / total.max(1)));
                                }
                            }
                        }
                    }
                }
                let retry = match &r.retries {
                    None => match self.data_plane {
                        DataPlane::Istio => RetryPolicy::istio_default(),
                        DataPlane::Linkerd => RetryPolicy::none(),
                    },
                    Some(rt) => RetryPolicy {
                        attempts: rt.attempts,
                        per_try_timeout: rt.per_try_timeout,
                        on: rt.retry_on.clone().unwrap_or_else(RetryOn::istio_default),
                    },
                };
                let mirror = match &r.mirror {
                    Some(m) => match m
                        .subset
                        .as_deref()
                        .and_then(|sub| self.resolve_subset(s, sub, None))
                    {
                        Some(v) => {
                            Some((v, r.mirror_percentage.unwrap_or(100.0).clamp(0.0, 100.0)))
                        }
                        None => {
                            warnings.push(format!(
                                "VirtualService {}: mirror `{}` is not a simulated subset",
                                vs.name, m.host
                            ));
                            None
                        }
                    },
                    None => None,
                };
                let rule = RouteRule {
                    matches: r
                        .matches
                        .iter()
                        .filter(|b| !b.is_empty())
                        .cloned()
                        .collect(),
                    total_weight: weight_sum(&dests),
                    dests,
                    mirror,
                    timeout: r.timeout,
                    retry: retry.clone(),
                    fault: r.fault.clone(),
                };
                // A match list whose blocks were all dropped (uri-only, ...) would match everything;
                // keep Istio's meaning by leaving an empty block only when the route had no match.
                let rule = if !r.matches.is_empty()
                    && rule.matches.is_empty()
                    && r.matches.iter().all(Vec::is_empty)
                {
                    RouteRule {
                        matches: Vec::new(),
                        ..rule
                    }
                } else {
                    rule
                };
                if i + 1 == vs.http.len() && rule.matches.is_empty() {
                    self.services[s as usize].base = RouteBase {
                        timeout: r.timeout,
                        retry,
                        fault: r.fault.clone(),
                    };
                }
                rules.push(rule);
            }
            self.install_rules(s, rules);
        }
        Ok(())
    }

    fn find_service(&self, host: &str, namespace: Option<&str>) -> Option<u32> {
        self.services
            .iter()
            .position(|s| {
                host_matches(host, &s.name, namespace.unwrap_or(&s.namespace))
                    || host_matches(host, &s.name, &s.namespace)
            })
            .map(|i| i as u32)
    }

    fn resolve_subset(
        &self,
        s: u32,
        subset: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Option<u32> {
        let svc = &self.services[s as usize];
        let by_labels = |sel: &BTreeMap<String, String>| {
            svc.versions
                .iter()
                .copied()
                .find(|&v| !sel.is_empty() && labels_match(sel, &self.versions[v as usize].labels))
        };
        if let Some(l) = labels
            && let Some(v) = by_labels(l)
        {
            return Some(v);
        }
        if let Some((_, _, l)) = self
            .subset_labels
            .iter()
            .find(|(sv, n, _)| *sv == s && n == subset)
            && let Some(v) = by_labels(l)
        {
            return Some(v);
        }
        svc.versions
            .iter()
            .copied()
            .find(|&v| self.versions[v as usize].name == subset)
    }

    fn resolve_backend(&self, s: u32, backend: &str) -> Option<u32> {
        let svc = &self.services[s as usize];
        svc.versions.iter().copied().find(|&v| {
            let d = &self.telemetry.dests()[v as usize];
            d.workload == backend
                || format!("{}-{}", svc.name, self.versions[v as usize].name) == backend
                || self.versions[v as usize].name == backend
        })
    }

    fn resolve_peer_auth(&mut self) {
        for v in 0..self.versions.len() {
            let ns = self.services[self.versions[v].service as usize]
                .namespace
                .clone();
            let labels = &self.versions[v].labels;
            let home = self.default_namespace.as_str();
            let find = |pred: &dyn Fn(&PeerAuthentication) -> bool| {
                self.peer_auth
                    .iter()
                    .rev()
                    .find(|p| pred(p) && p.mode != MtlsMode::Unset)
                    .map(|p| p.mode)
            };
            let workload = find(&|p| {
                p.namespace.as_deref().unwrap_or(home) == ns
                    && p.selector.as_ref().is_some_and(|s| labels_match(s, labels))
            });
            let namespace =
                find(&|p| p.namespace.as_deref().unwrap_or(home) == ns && p.selector.is_none());
            let mesh =
                find(&|p| p.namespace.as_deref() == Some("istio-system") && p.selector.is_none());
            self.versions[v].server_mode =
                workload.or(namespace).or(mesh).unwrap_or(self.default_mtls);
        }
    }

    fn refresh_policies(&mut self, s: u32) {
        let svc = &self.services[s as usize];
        let accrual = svc.accrual;
        let mut updates = Vec::new();
        for (ci, cl) in self.clusters.iter().enumerate() {
            if self.versions[cl.version as usize].service != s {
                continue;
            }
            let tp = match svc.subset_policy.get(&cl.version) {
                Some(sub) => svc.policy.overlay(sub),
                None => svc.policy.clone(),
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
                    for (h, host) in self.clusters[ci].hosts.iter().enumerate() {
                        let _ = host;
                        let pod = self.versions[self.clusters[ci].version as usize].pods[h];
                        if self.pods[pod as usize].removed {
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
                self.q.schedule_in(i, Ev::OdTick(ci as u32));
            }
            self.rebuild_candidates(ci as u32);
        }
    }

    /// Replaces the outlier-detection settings of (client, version); for tests and what-if runs
    /// that need detectors Istio does not expose (success rate, failure percentage).
    pub fn set_outlier_detection(
        &mut self,
        client: ClientId,
        v: VersionId,
        cfg: OutlierConfig,
    ) -> Result<(), MeshError> {
        let ci = self
            .cluster_of(client.0, v.0)
            .ok_or(MeshError::UnknownClient(client.0))?;
        let interval = cfg.interval.max(1);
        let n = self.clusters[ci as usize].hosts.len();
        self.clusters[ci as usize].od = Some(OutlierDetector::new(cfg, n));
        if !self.clusters[ci as usize].tick_armed {
            self.clusters[ci as usize].tick_armed = true;
            self.q.schedule_in(interval, Ev::OdTick(ci));
        }
        self.rebuild_candidates(ci);
        Ok(())
    }

    fn rebuild_candidates(&mut self, ci: u32) {
        let cl = &mut self.clusters[ci as usize];
        let ver = &self.versions[cl.version as usize];
        cl.in_lb.clear();
        cl.candidates.clear();
        for (h, &p) in ver.pods.iter().enumerate() {
            let pod = &self.pods[p as usize];
            if pod.in_lb && !pod.removed {
                cl.in_lb.push(h as u32);
                if !cl.od.as_ref().is_some_and(|o| o.is_ejected(h)) {
                    cl.candidates.push(h as u32);
                }
            }
        }
    }

    // ----- event handling ------------------------------------------------------------------

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Arrival(c) => self.on_arrival(c),
            Ev::AtPod(a, g) => {
                if self.atts[a as usize].tag == g {
                    self.on_at_pod(a);
                }
            }
            Ev::Done(a, g) => {
                if self.atts[a as usize].tag == g {
                    self.on_done(a);
                }
            }
            Ev::Response(a, g) => {
                if self.atts[a as usize].tag == g {
                    self.on_response(a);
                }
            }
            Ev::Fail(a, g, f) => {
                if self.atts[a as usize].tag == g {
                    self.on_fail(a, f);
                }
            }
            Ev::PerTry(a, g) => {
                if self.atts[a as usize].tag == g && !self.atts[a as usize].cancelled {
                    self.telemetry_proxy(a).timeouts += 1;
                    self.cancel_attempt(a, 504, flags::UT);
                }
            }
            Ev::StreamIdle(a, g) => {
                if self.atts[a as usize].tag == g && !self.atts[a as usize].cancelled {
                    self.cancel_attempt(a, 504, flags::UT);
                }
            }
            Ev::RouteTimeout(r, g) => {
                if self.reqs[r as usize].tag == g && self.reqs[r as usize].live {
                    self.on_route_timeout(r);
                }
            }
            Ev::Retry(r, g) => {
                if self.reqs[r as usize].tag == g && self.reqs[r as usize].live {
                    self.start_attempt(r);
                }
            }
            Ev::FaultDelay(r, g) => {
                if self.reqs[r as usize].tag == g && self.reqs[r as usize].live {
                    self.forward(r);
                }
            }
            Ev::OdTick(ci) => self.on_od_tick(ci),
            Ev::Scrape => {
                let now = self.now();
                self.telemetry.scrape(now);
                self.q
                    .schedule_in(self.telemetry.scrape_interval(), Ev::Scrape);
            }
            Ev::Action(i) => {
                if let Some(a) = self.actions[i as usize].take() {
                    self.do_action(a);
                }
            }
            Ev::EndpointIn(p, e) => {
                let pod = &mut self.pods[p as usize];
                if pod.epoch == e && pod.alive && !pod.removed && !pod.in_lb {
                    pod.in_lb = true;
                    let v = pod.version;
                    self.endpoints_changed(v);
                }
            }
            Ev::EndpointOut(p, e) => {
                let pod = &mut self.pods[p as usize];
                if pod.epoch == e && pod.in_lb {
                    pod.in_lb = false;
                    let v = pod.version;
                    self.endpoints_changed(v);
                }
            }
            Ev::Restart(p, e) => {
                let pod = &mut self.pods[p as usize];
                if pod.epoch == e && !pod.alive {
                    pod.alive = true;
                    pod.epoch += 1;
                    let epoch = pod.epoch;
                    self.q
                        .schedule_in(self.net.endpoint_delay, Ev::EndpointIn(p, epoch));
                }
            }
            Ev::CertRotate(i) => {
                if self.certs[i as usize].rotating {
                    self.stats.cert_rotations += 1;
                    self.certs[i as usize].expires_at =
                        self.now().saturating_add(self.certs_cfg.ttl);
                    self.schedule_rotation(i);
                }
            }
        }
    }

    fn endpoints_changed(&mut self, v: u32) {
        for ci in 0..self.clusters.len() {
            if self.clusters[ci].version == v {
                self.rebuild_candidates(ci as u32);
            }
        }
    }

    fn on_arrival(&mut self, c: u32) {
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
        let rule = &self.rules[rule_id as usize];
        if let Some(f) = &rule.fault {
            if let Some((status, pct)) = f.abort
                && self.fault_rng.chance(pct / 100.0)
            {
                self.complete(req, status, flags::FI);
                return;
            }
            if let Some((delay, pct)) = f.delay
                && self.fault_rng.chance(pct / 100.0)
            {
                let r = &mut self.reqs[req as usize];
                r.flags |= flags::DI;
                let g = r.tag;
                self.q.schedule_in(delay, Ev::FaultDelay(req, g));
                return;
            }
        }
        self.forward(req);
    }

    fn refresh_route_cache(&mut self, c: u32) {
        let svc = &self.services[self.clients[c as usize].service as usize];
        let cl = &self.clients[c as usize];
        let mut cache = Vec::with_capacity(cl.profiles.len());
        for (_, headers) in &cl.profiles {
            let hit = svc.rules.iter().copied().find(|&rid| {
                let r = &self.rules[rid as usize];
                r.matches.is_empty()
                    || r.matches.iter().any(|block| {
                        block.iter().all(|m| {
                            headers
                                .iter()
                                .any(|(k, v)| *k == m.name && m.matcher.matches(v))
                        })
                    })
            });
            cache.push(hit.unwrap_or(NONE));
        }
        let epoch = svc.epoch;
        let cl = &mut self.clients[c as usize];
        cl.cache = cache;
        cl.cache_epoch = epoch;
    }

    fn alloc_req(&mut self, client: u32, now: SimTime) -> u32 {
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

    fn alloc_att(&mut self, a: Attempt) -> u32 {
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

    fn free_att(&mut self, a: u32) {
        let at = &mut self.atts[a as usize];
        at.tag = at.tag.wrapping_add(1);
        self.free_atts.push(a);
    }

    fn forward(&mut self, req: u32) {
        let r = self.reqs[req as usize];
        if let Some(t) = self.rules[r.rule as usize].timeout {
            self.q.schedule_in(t, Ev::RouteTimeout(req, r.tag));
        }
        self.start_attempt(req);
    }

    fn send_mirror(&mut self, client: u32, version: u32) {
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

    fn pick_host(&mut self, ci: u32, tried: &[u32; 4], ntried: u8) -> Option<u32> {
        let now = self.now();
        let cl = &mut self.clusters[ci as usize];
        // Panic mode (Envoy) balances over all hosts when too few are healthy; Istio sets the
        // threshold to 0 whenever outlier detection is configured.
        let min_health = cl.od.as_ref().map_or(50, |o| o.cfg.min_health_percent);
        let panic =
            (cl.candidates.len() as u64) * 100 < u64::from(min_health) * cl.in_lb.len() as u64;
        let mut list: &Vec<u32> = if panic { &cl.in_lb } else { &cl.candidates };
        if cl.accrual.is_some() {
            cl.scratch.clear();
            for &h in list {
                if cl.hosts[h as usize].accrual.available(now) {
                    cl.scratch.push(h);
                }
            }
            list = &cl.scratch;
        }
        let n = list.len() as u32;
        if n == 0 {
            return None;
        }
        let mut choice = NONE;
        // Envoy's previous_hosts predicate re-picks up to 5 times to avoid a host already tried.
        for _ in 0..5 {
            choice = match cl.policy.lb {
                crate::manifest::LbPolicy::RoundRobin => {
                    cl.rr = cl.rr.wrapping_add(1);
                    list[(cl.rr % n) as usize]
                }
                crate::manifest::LbPolicy::Random => list[cl.lb_rng.below(n) as usize],
                crate::manifest::LbPolicy::LeastRequest => {
                    let a = list[cl.lb_rng.below(n) as usize];
                    let b = list[cl.lb_rng.below(n) as usize];
                    if cl.hosts[b as usize].active < cl.hosts[a as usize].active {
                        b
                    } else {
                        a
                    }
                }
                crate::manifest::LbPolicy::PeakEwma => {
                    let a = list[cl.lb_rng.below(n) as usize];
                    let b = list[cl.lb_rng.below(n) as usize];
                    let cost = |h: u32| {
                        let x = &cl.hosts[h as usize];
                        x.ewma * f64::from(x.active + 1)
                    };
                    if cost(b) < cost(a) { b } else { a }
                }
            };
            if ntried == 0 || n == 1 || !tried[..usize::from(ntried.min(4))].contains(&choice) {
                break;
            }
        }
        Some(choice)
    }

    fn start_attempt(&mut self, req: u32) {
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

    /// Sends attempt `a` on a usable connection of its host, opening one if the limits allow.
    /// Returns false when it has to wait.
    fn try_dispatch(&mut self, a: u32) -> bool {
        let now = self.now();
        let at = self.atts[a as usize];
        let ci = at.cluster as usize;
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
            self.telemetry.proxy_mut(client, version).connections_closed += u64::from(closed);
        }
        let depart = if let Some(i) = found {
            let c = &mut self.clusters[ci].hosts[at.host as usize].conns[i];
            c.streams += 1;
            c.served += 1;
            if per_conn > 0 && c.served >= per_conn {
                c.closing = true;
            }
            let at = &mut self.atts[a as usize];
            at.conn = i as u32;
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
        let at = &mut self.atts[a as usize];
        at.stage = Stage::Wire;
        let g = at.tag;
        self.q.schedule_at(
            depart + self.net.one_way + 2 * self.net.sidecar_latency,
            Ev::AtPod(a, g),
        );
        true
    }

    /// At the connection limit, idle keep-alive connections to other hosts would starve this
    /// host's requests; close one (the first found, for determinism) to make room.
    fn close_idle_conn(&mut self, ci: usize, now: SimTime) -> bool {
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
                self.telemetry.proxy_mut(client, version).connections_closed += 1;
                return true;
            }
        }
        false
    }

    /// Opens a connection for attempt `a`. Returns when it is ready, or None after scheduling
    /// the attempt's failure (refused, timed out, mTLS mismatch, expired certificate).
    fn open_conn(&mut self, a: u32) -> Option<SimTime> {
        let now = self.now();
        let at = self.atts[a as usize];
        let ci = at.cluster as usize;
        let (client, version) = (self.clusters[ci].client, self.clusters[ci].version);
        let rtt = 2 * self.net.one_way;
        let pod = &self.pods[at.pod as usize];
        let ver = &self.versions[version as usize];
        let cli = &self.clients[client as usize];
        let client_mtls = match self.clusters[ci].policy.tls {
            ClientTls::Mutual => cli.sidecar,
            ClientTls::Plain => false,
            ClientTls::Auto => {
                cli.sidecar
                    && ver.sidecar
                    && (self.data_plane == DataPlane::Linkerd
                        || ver.server_mode != MtlsMode::Disable)
            }
        };
        let server_mode = if !ver.sidecar {
            MtlsMode::Disable
        } else if self.data_plane == DataPlane::Linkerd {
            MtlsMode::Permissive
        } else {
            ver.server_mode
        };
        let mut fail: Option<(SimTime, u16, bool)> = None; // (at, flags, tls failure)
        if !pod.alive {
            fail = Some((now + rtt, flags::UF, false));
        } else if pod.black_hole {
            fail = Some((
                now + self.clusters[ci].policy.connect_timeout,
                flags::UF,
                false,
            ));
        } else if !client_mtls && server_mode == MtlsMode::Strict {
            // The server sidecar resets a plaintext connection: 503 UC.
            fail = Some((now + rtt + rtt / 2, flags::UC, true));
        } else if client_mtls && server_mode == MtlsMode::Disable {
            fail = Some((now + 2 * rtt, flags::UF, true));
        } else if client_mtls {
            let ccert = &self.certs[client as usize];
            let scert = &self.certs[self.clients.len() + version as usize];
            if ccert.expires_at <= now || scert.expires_at <= now {
                fail = Some((now + 2 * rtt + self.net.handshake_cpu, flags::UF, true));
            }
        }
        let counters = self.telemetry.proxy_mut(client, version);
        counters.connections_opened += 1;
        if let Some((when, f, tls)) = fail {
            counters.connect_failures += 1;
            counters.connections_closed += 1;
            if tls {
                counters.handshake_failures += 1;
            }
            let at = &mut self.atts[a as usize];
            at.stage = Stage::Wire;
            let g = at.tag;
            self.q.schedule_at(when, Ev::Fail(a, g, f));
            return None;
        }
        let ready = if client_mtls {
            counters.handshakes += 1;
            now + 2 * rtt + 2 * self.net.handshake_cpu
        } else {
            now + rtt
        };
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
        let at = &mut self.atts[a as usize];
        at.conn = slot as u32;
        at.conn_gen = c.tag;
        Some(ready)
    }

    /// Gives back the attempt's stream; closes the connection when asked (reset) or exhausted,
    /// then lets waiting attempts of the host use the capacity.
    fn release_conn(&mut self, a: u32, reset: bool) {
        let now = self.now();
        let at = self.atts[a as usize];
        if at.conn == NONE {
            return;
        }
        self.atts[a as usize].conn = NONE;
        let ci = at.cluster as usize;
        let (client, version) = (self.clusters[ci].client, self.clusters[ci].version);
        let http2 = self.clusters[ci].policy.http2;
        let cl = &mut self.clusters[ci];
        let c = &mut cl.hosts[at.host as usize].conns[at.conn as usize];
        if !c.open || c.tag != at.conn_gen {
            return;
        }
        c.streams -= 1;
        c.last_used = now;
        // Resetting an HTTP/1.1 request closes its connection; HTTP/2 resets just the stream.
        if (reset && !http2) || (c.closing && c.streams == 0) {
            c.open = false;
            cl.open_conns -= 1;
            self.telemetry.proxy_mut(client, version).connections_closed += 1;
        }
        self.drain_pending(at.cluster, at.host);
    }

    /// Closes idle connections to version `v` now and busy ones after their last stream.
    fn drain_connections_to(&mut self, v: u32) {
        for ci in 0..self.clusters.len() {
            if self.clusters[ci].version != v {
                continue;
            }
            let client = self.clusters[ci].client;
            let cl = &mut self.clusters[ci];
            let mut closed = 0;
            for c in cl
                .hosts
                .iter_mut()
                .flat_map(|h| h.conns.iter_mut())
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
            self.telemetry.proxy_mut(client, v).connections_closed += u64::from(closed);
        }
    }

    fn drain_pending(&mut self, ci: u32, h: u32) {
        while let Some(&next) = self.clusters[ci as usize].hosts[h as usize].pending.front() {
            if !self.try_dispatch(next) {
                break;
            }
            let cl = &mut self.clusters[ci as usize];
            cl.hosts[h as usize].pending.pop_front();
            cl.pending -= 1;
        }
    }

    fn on_at_pod(&mut self, a: u32) {
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

    fn start_work(&mut self, p: u32) {
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

    fn on_done(&mut self, a: u32) {
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

    fn on_response(&mut self, a: u32) {
        let at = self.atts[a as usize];
        if at.cancelled {
            self.free_att(a);
            return;
        }
        self.finish_attempt(a, at.code, 0, false);
    }

    fn on_fail(&mut self, a: u32, f: u16) {
        let at = self.atts[a as usize];
        if at.cancelled || at.mirror {
            self.free_att(a);
            return;
        }
        self.finish_attempt(a, 503, f, true);
    }

    fn telemetry_proxy(&mut self, a: u32) -> &mut ProxyCounters {
        let at = self.atts[a as usize];
        let cl = &self.clusters[at.cluster as usize];
        self.telemetry.proxy_mut(cl.client, cl.version)
    }

    /// A per-try or stream timeout: the attempt is abandoned (the pod may still work on it).
    fn cancel_attempt(&mut self, a: u32, code: u16, f: u16) {
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

    /// Client-side end of an attempt: frees its resources, feeds outlier detection, then retries
    /// or completes the request.
    fn finish_attempt(&mut self, a: u32, code: u16, f: u16, local: bool) {
        let now = self.now();
        let at = self.atts[a as usize];
        let reset = local && f & flags::UT != 0;
        self.release_conn(a, reset || f & flags::UC != 0);
        let ci = at.cluster as usize;
        let (client, version) = (self.clusters[ci].client, self.clusters[ci].version);
        {
            let cl = &mut self.clusters[ci];
            cl.active_requests -= 1;
            let host = &mut cl.hosts[at.host as usize];
            host.active -= 1;
            if cl.policy.lb == crate::manifest::LbPolicy::PeakEwma {
                let rtt = now.saturating_sub(at.sent) as f64;
                if rtt > host.ewma {
                    host.ewma = rtt;
                } else {
                    let w = (-(now.saturating_sub(host.ewma_at) as f64) / (10.0 * SECONDS as f64))
                        .exp();
                    host.ewma = host.ewma * w + rtt * (1.0 - w);
                }
                host.ewma_at = now;
            }
            if let Some(acc) = cl.accrual {
                let rng = &mut cl.lb_rng;
                cl.hosts[at.host as usize]
                    .accrual
                    .on_result(code >= 500, now, &acc, rng);
            }
        }
        let change = match self.clusters[ci].od.as_mut() {
            Some(od) => od.on_response(at.host as usize, code, now),
            None => Default::default(),
        };
        if change != Default::default() {
            let c = self.telemetry.proxy_mut(client, version);
            c.ejections_enforced += u64::from(change.ejected);
            c.ejections_overflow += u64::from(change.overflow);
            c.ejections_detected += u64::from(change.detected);
            if change.membership_changed() {
                self.rebuild_candidates(ci as u32);
            }
        }
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
        let r = self.reqs[req as usize];
        let rule = &self.rules[r.rule as usize];
        // A client without a sidecar has no proxy to retry for it.
        let retriable =
            self.clients[client as usize].sidecar && is_retriable(&rule.retry.on, code, f);
        if retriable && r.retries_done < rule.retry.attempts {
            let cl = &mut self.clusters[ci];
            if cl.retries_active >= cl.policy.max_retries {
                self.telemetry.proxy_mut(client, version).retry_overflow += 1;
                self.complete(req, code, f | flags::URX);
                return;
            }
            if let Some(b) = self.clients[client as usize].budget.as_mut()
                && !b.withdraw(now)
            {
                self.telemetry.proxy_mut(client, version).retry_overflow += 1;
                self.complete(req, code, f);
                return;
            }
            let cl = &mut self.clusters[ci];
            cl.retries_active += 1;
            cl.peak_retries = cl.peak_retries.max(cl.retries_active);
            let n = r.retries_done + 1;
            let rr = &mut self.reqs[req as usize];
            rr.retries_done = n;
            rr.holds_retry = true;
            let backoff = retry_backoff(n, &mut self.clients[client as usize].retry);
            self.telemetry.proxy_mut(client, version).retries += 1;
            self.q.schedule_in(backoff, Ev::Retry(req, r.tag));
            return;
        }
        let extra = if retriable && rule.retry.attempts > 0 {
            flags::URX
        } else {
            0
        };
        self.complete(req, code, f | extra);
    }

    fn release_retry_hold(&mut self, req: u32) {
        // The retry slot is held from scheduling the retry until the retried attempt ends.
        let r = &mut self.reqs[req as usize];
        if r.holds_retry && r.cluster != NONE && r.attempt == NONE {
            r.holds_retry = false;
            self.clusters[r.cluster as usize].retries_active -= 1;
        }
    }

    fn on_route_timeout(&mut self, req: u32) {
        let r = self.reqs[req as usize];
        let ci = r.cluster;
        if ci != NONE {
            let cl = &self.clusters[ci as usize];
            self.telemetry.proxy_mut(cl.client, cl.version).timeouts += 1;
        }
        if r.attempt != NONE {
            let a = r.attempt;
            // Abandon the attempt without retrying: the route deadline is over.
            let at = self.atts[a as usize];
            if at.stage == Stage::Pending {
                let cl = &mut self.clusters[at.cluster as usize];
                let q = &mut cl.hosts[at.host as usize].pending;
                if let Some(i) = q.iter().position(|&x| x == a) {
                    q.remove(i);
                    cl.pending -= 1;
                }
            }
            self.release_conn(a, true);
            let cl = &mut self.clusters[at.cluster as usize];
            cl.active_requests -= 1;
            cl.hosts[at.host as usize].active -= 1;
            let change = match cl.od.as_mut() {
                Some(od) => od.on_response(at.host as usize, 504, self.q.now()),
                None => Default::default(),
            };
            if change.membership_changed() {
                let (c, v) = (cl.client, cl.version);
                let pc = self.telemetry.proxy_mut(c, v);
                pc.ejections_enforced += u64::from(change.ejected);
                self.rebuild_candidates(at.cluster);
            }
            if matches!(at.stage, Stage::Wire | Stage::AtPod | Stage::Returning) {
                self.atts[a as usize].cancelled = true;
            } else {
                self.free_att(a);
            }
            self.reqs[req as usize].attempt = NONE;
        }
        self.release_retry_hold(req);
        self.complete(req, 504, flags::UT);
    }

    fn complete_unrouted(&mut self, req: u32, code: u16, f: u16) {
        // Without a destination there is no version label to report under; count it only.
        let _ = (code, f);
        self.stats.completed += 1;
        let r = &mut self.reqs[req as usize];
        r.live = false;
        r.tag = r.tag.wrapping_add(1);
        self.free_reqs.push(req);
    }

    fn complete(&mut self, req: u32, code: u16, f: u16) {
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

    fn on_od_tick(&mut self, ci: u32) {
        let now = self.now();
        let cl = &mut self.clusters[ci as usize];
        let Some(od) = cl.od.as_mut() else {
            cl.tick_armed = false;
            return;
        };
        let change = od.tick(now, &mut self.od_rng);
        let interval = od.cfg.interval;
        let (c, v) = (cl.client, cl.version);
        self.q.schedule_in(interval, Ev::OdTick(ci));
        let pc = self.telemetry.proxy_mut(c, v);
        pc.ejections_enforced += u64::from(change.ejected);
        pc.ejections_overflow += u64::from(change.overflow);
        pc.ejections_detected += u64::from(change.detected);
        if change.membership_changed() {
            self.rebuild_candidates(ci);
        }
    }

    fn crash(&mut self, p: u32) {
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

    fn scale(&mut self, v: u32, target: u32) {
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

/// Pods per version a mesh accepts: far beyond any real Deployment, small enough to allocate.
const MAX_PODS: u32 = 100_000;
/// Requests per second a client may send: beyond it a run would not finish in useful time.
const MAX_RATE: f64 = 10_000_000.0;
const RATE_RULE: &str = "rate must be a number between 0 and 10,000,000 requests per second";

fn valid_rate(r: f64) -> bool {
    r.is_finite() && (0.0..=MAX_RATE).contains(&r)
}

/// Sum of route weights; saturates so absurd user weights cannot overflow.
fn weight_sum(dests: &[(u32, u32)]) -> u32 {
    dests.iter().fold(0u32, |a, d| a.saturating_add(d.1))
}

fn validate_behaviour(b: &Behaviour) -> Result<(), String> {
    if b.workers == 0 {
        return Err("workers must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&b.error_rate) {
        return Err("error rate must be within [0, 1]".into());
    }
    if !(100..600).contains(&b.error_code) {
        return Err("error code must be an HTTP status".into());
    }
    b.service_time.validate()
}

fn new_pod(version: u32) -> Pod {
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

fn new_host() -> Host {
    Host {
        active: 0,
        conns: Vec::new(),
        pending: VecDeque::new(),
        ewma: 30.0 * MILLIS as f64,
        ewma_at: 0,
        accrual: Accrual::default(),
    }
}

fn next_gap(cl: &mut Client) -> SimTime {
    let mean = 1e9 / cl.rate;
    match cl.shape {
        ArrivalShape::Poisson => (cl.arrivals.exp(mean) as SimTime).max(1),
        ArrivalShape::Constant => (mean as SimTime).max(1),
    }
}

/// Envoy's fully jittered exponential backoff: retry n waits uniformly in [0, (2^n - 1) * 25 ms),
/// capped at 250 ms.
fn retry_backoff(n: u32, rng: &mut Stream) -> SimTime {
    let base = 25 * MILLIS;
    let cap = 250 * MILLIS;
    let mult = (1u64 << n.min(20)) - 1;
    let limit = (mult * base).min(cap);
    (rng.uniform() * limit as f64) as SimTime
}

/// Retry conditions from ServiceProfile response classes (default: 5xx is a failure).
fn failure_classes(ranges: &[(u16, u16)]) -> RetryOn {
    if ranges.is_empty() || ranges.iter().any(|&(lo, hi)| lo <= 500 && hi >= 599) {
        return RetryOn {
            five_xx: true,
            ..Default::default()
        };
    }
    let codes = ranges
        .iter()
        .flat_map(|&(lo, hi)| lo..=hi.min(599))
        .collect();
    RetryOn {
        retriable_status_codes: true,
        codes,
        ..Default::default()
    }
}

fn is_retriable(on: &RetryOn, code: u16, f: u16) -> bool {
    let connect_failure = f & flags::UF != 0;
    let reset = f & flags::UC != 0;
    let timeout = f & flags::UT != 0;
    (on.five_xx && code >= 500 && f & flags::UO == 0)
        || (on.gateway_error && (502..=504).contains(&code) && f & flags::UO == 0)
        || (on.connect_failure && (connect_failure || reset))
        || (on.reset && reset)
        || (on.retriable_status_codes && f == 0 && on.codes.contains(&code))
        // A per-try timeout counts as "no response": retried under 5xx, gateway-error and reset.
        || (timeout && (on.five_xx || on.gateway_error || on.reset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_envoys_jittered_bounds() {
        let mut rng = Stream::new(1, "b");
        for _ in 0..1000 {
            assert!(retry_backoff(1, &mut rng) < 25 * MILLIS);
            assert!(retry_backoff(2, &mut rng) < 75 * MILLIS);
            assert!(retry_backoff(9, &mut rng) < 250 * MILLIS);
        }
    }

    #[test]
    fn istio_default_retry_policy_does_not_retry_503_responses() {
        assert!(!is_retriable(&RetryOn::istio_default(), 503, 0));
        assert!(is_retriable(&RetryOn::istio_default(), 503, flags::UF));
    }
}
