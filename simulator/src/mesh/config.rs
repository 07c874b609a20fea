//! Configuration of a simulated mesh: services, versions, pods, clients and the network. It is
//! the Kubernetes side of what a sidecar sees: a Service's versions as Deployments of pods (each
//! with its worker count and service time, as an application's concurrency), the clients whose
//! sidecars send the traffic (their rates and headers), the network between pods (round-trip
//! time, connection set-up) and the mesh's own settings (data plane, Istio version, mTLS
//! certificates). Routing and policy come from the manifests, not from here.

use std::collections::BTreeMap;

use crate::engine::{MICROS, MILLIS, SECONDS, SimTime};
use crate::manifest::MtlsMode;
use crate::mesh::dist::ServiceTime;
use crate::mesh::outlier::{AccrualConfig, EjectionRule};

/// What a pod of a version does with a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Behaviour {
    /// Requests served in parallel by one pod (workers); more wait in a FIFO queue.
    pub workers: u32,
    /// Service-time distribution.
    pub service_time: ServiceTime,
    /// Probability that a request fails with `error_code`.
    pub error_rate: f64,
    /// Status returned by failing requests (500 unless set).
    pub error_code: u16,
    /// What each request does once served: steps run in sequence, the calls of one step in
    /// parallel (see [`Call`]).
    pub calls: Vec<Vec<Call>>,
    /// What the pods' sidecar costs (latency, CPU, worker threads), as their pod template's
    /// proxy settings say; none: the fixed [`NetworkConfig::sidecar_latency`] and nothing
    /// counted. Part of the behaviour because it is part of the revision: a promotion copies it.
    pub proxy: Option<ProxyCost>,
}

/// The cost of a sidecar proxy (mesh/sidecar.rs): the latency it adds to each request, the
/// CPU it spends on it, and the Envoy worker threads that spend it, so that an undersized
/// sidecar queues requests and caps its pod's throughput at `min(concurrency, cpu limit) /
/// cpu_per_request`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyCost {
    /// What one idle proxy adds to one request, the way there and back together (half each
    /// way), drawn per request and proxy. 0.5 ms unless set: about 1 ms per call through two
    /// sidecars.
    pub latency: ServiceTime,
    /// CPU a request costs one proxy (Istio's published figure: 0.35 vCPU per 1000 requests
    /// per second through a sidecar). A TLS handshake costs [`NetworkConfig::handshake_cpu`].
    pub cpu_per_request: SimTime,
    /// Envoy's worker threads (Istio's ProxyConfig `concurrency`; 2 unless set).
    pub concurrency: u32,
    /// The sidecar container's CPU limit in millicores (Istio's
    /// `sidecar.istio.io/proxyCPULimit`); none: unlimited. Below `concurrency` cores the
    /// workers share it, so each request holds its worker longer.
    pub cpu_limit_millis: Option<u32>,
}

impl Default for ProxyCost {
    fn default() -> Self {
        Self {
            latency: ServiceTime::Constant(500 * MICROS),
            cpu_per_request: 350 * MICROS,
            concurrency: 2,
            cpu_limit_millis: None,
        }
    }
}

/// A request to another service that a version's request makes once its own work is done,
/// through the version's sidecar as a client of that service. The pod's worker waits for it; a
/// failed call (no answer below 400) fails the caller's request, answered with the caller's
/// `error_code`, unless the call is `optional`.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The service called (by name).
    pub service: String,
    /// The chance a request makes this call.
    pub probability: f64,
    /// A failed optional call does not fail the caller.
    pub optional: bool,
    /// The method and path of the call (its caller's when absent); its other headers are
    /// its caller's.
    pub method: Option<String>,
    /// See `method`.
    pub path: Option<String>,
    /// The calling application's own timeout: it gives up on the call after this long (its
    /// sidecar then sees the downstream disconnect, `DC`), whatever the route's timeout.
    pub timeout: Option<SimTime>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            workers: 16,
            service_time: ServiceTime::Exponential { mean: 10 * MILLIS },
            error_rate: 0.0,
            error_code: 500,
            calls: Vec::new(),
            proxy: None,
        }
    }
}

/// One version (subset) of a service, e.g. `primary` or `canary`.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionConfig {
    /// Version / subset name.
    pub(crate) name: String,
    /// Workload (Deployment) name used as `destination_workload`; default `<service>-<name>`.
    pub workload: Option<String>,
    /// Number of pods.
    pub(crate) pods: u32,
    /// Pod behaviour.
    pub behaviour: Behaviour,
    /// Pod labels (DestinationRule subsets and PeerAuthentication selectors match on them);
    /// `app: <service>` and `version: <name>` are added when absent.
    pub(crate) labels: BTreeMap<String, String>,
    /// Whether the pods have a sidecar (Istio's `sidecar.istio.io/inject: "false"` when not):
    /// without one they take plaintext only and report no destination series.
    pub sidecar: bool,
    /// The pods' service account: their mTLS identity, which AuthorizationPolicies match
    /// (`default` when absent).
    pub service_account: Option<String>,
}

impl VersionConfig {
    /// A version with `pods` pods of the given behaviour.
    pub fn new(name: &str, pods: u32, behaviour: Behaviour) -> Self {
        Self {
            name: name.into(),
            workload: None,
            pods,
            behaviour,
            labels: BTreeMap::new(),
            sidecar: true,
            service_account: None,
        }
    }
}

/// A service and its versions.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    /// Service name (short name; the FQDN is `<name>.<namespace>.svc.cluster.local`).
    pub name: String,
    /// Namespace; the mesh's default when absent.
    pub namespace: Option<String>,
    /// Versions.
    pub versions: Vec<VersionConfig>,
    /// Name of the stable version ([`Mesh::primary_canary`](crate::mesh::Mesh::primary_canary)).
    pub primary: String,
    /// Name of the version under test.
    pub canary: String,
    /// Linkerd failure accrual for clients of this service (Linkerd data plane only).
    pub failure_accrual: Option<AccrualConfig>,
    /// The versions the Service's own selector picks, by name; every version when absent.
    /// They take the requests no route governs (a request to the Service with no route of its
    /// own, or a route to the host without a subset). Flagger points the apex Service at the
    /// primary's pods only.
    pub selects: Option<Vec<String>>,
    /// The port the pods serve on (the Service's `targetPort`): a PeerAuthentication's
    /// `portLevelMtls` for it decides the pods' mTLS mode.
    pub target_port: u32,
    /// Calls the versions may make after a change of behaviour (a canary's new revision),
    /// beyond those their behaviours make now: each version gets a proxy's clusters for every
    /// service its service's versions call.
    pub may_call: Vec<Call>,
    /// A host outside the mesh (an Istio ServiceEntry with `location: MESH_EXTERNAL`): its
    /// name is the host, its versions' endpoints have no sidecar, and the callers' proxies
    /// report it as Istio reports an external host (see `mesh/external.rs`).
    pub external: bool,
}

impl ServiceConfig {
    /// A service with the given versions; `primary` / `canary` name the split targets.
    pub fn new(name: &str, versions: Vec<VersionConfig>) -> Self {
        Self {
            name: name.into(),
            namespace: None,
            versions,
            primary: "primary".into(),
            canary: "canary".into(),
            failure_accrual: None,
            selects: None,
            target_port: 80,
            may_call: Vec::new(),
            external: false,
        }
    }
}

/// How arrivals are spaced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ArrivalShape {
    /// Poisson process (exponential gaps).
    #[default]
    Poisson,
    /// Evenly spaced.
    Constant,
}

/// A set of request headers sent by a fraction of a client's requests.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderProfile {
    /// Relative weight among the client's profiles.
    pub weight: f64,
    /// Headers (name, value); names are matched case-insensitively.
    pub headers: Vec<(String, String)>,
}

/// A client workload sending requests to one service through its sidecar.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientConfig {
    /// Workload name (`source_workload`).
    pub name: String,
    /// Namespace; the mesh's default when absent.
    pub namespace: Option<String>,
    /// Target Service: a service's name, or `<service>-<version>` for the Service that selects
    /// only that version's pods (as the controller's `<svc>-primary` and `<svc>-canary` do).
    pub target: String,
    /// Requests per second.
    pub rate: f64,
    /// Arrival process.
    pub shape: ArrivalShape,
    /// Header mix; empty means every request carries no header.
    pub headers: Vec<HeaderProfile>,
    /// Whether the client has a sidecar (no sidecar: plaintext, no retries, no balancing rules).
    pub sidecar: bool,
    /// Pod labels of the client workload.
    pub labels: BTreeMap<String, String>,
    /// The Istio Gateway (`metadata.name`) the requests enter through: the client is that
    /// gateway's proxy and routes by the VirtualServices bound to it (see `mesh/gateway.rs`).
    pub gateway: Option<String>,
    /// The pods' service account, their mTLS identity (`default` when absent).
    pub service_account: Option<String>,
}

impl ClientConfig {
    /// A Poisson client at `rate` requests per second to `target`.
    pub fn new(name: &str, target: &str, rate: f64) -> Self {
        Self {
            name: name.into(),
            namespace: None,
            target: target.into(),
            rate,
            shape: ArrivalShape::Poisson,
            headers: Vec::new(),
            sidecar: true,
            labels: BTreeMap::new(),
            gateway: None,
            service_account: None,
        }
    }
}

/// Network and proxy timing.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    /// One-way network latency between pods.
    pub one_way: SimTime,
    /// Latency added by one traversal of a sidecar (a request crosses four per round trip).
    pub sidecar_latency: SimTime,
    /// CPU time of a full TLS 1.3 handshake, per side.
    pub handshake_cpu: SimTime,
    /// Delay until an endpoint change (crash, restart, scale) reaches the client proxies.
    pub endpoint_delay: SimTime,
    /// Envoy's stream idle timeout: ends requests a black-holed pod never answers when no
    /// route or per-try timeout is set.
    pub stream_idle_timeout: SimTime,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            one_way: 100 * MICROS,
            sidecar_latency: 250 * MICROS,
            handshake_cpu: 300 * MICROS,
            endpoint_delay: SECONDS,
            stream_idle_timeout: 300 * SECONDS,
        }
    }
}

/// Workload certificate lifetime and rotation (Istio agent defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct CertConfig {
    /// Certificate lifetime (`SECRET_TTL`, 24 h).
    pub ttl: SimTime,
    /// Rotate after this fraction of the lifetime (`SECRET_GRACE_PERIOD_RATIO`, 0.5).
    pub grace_ratio: f64,
    /// Relative jitter of the rotation time (0.01).
    pub jitter: f64,
}

impl Default for CertConfig {
    fn default() -> Self {
        Self {
            ttl: 24 * 3600 * SECONDS,
            grace_ratio: 0.5,
            jitter: 0.01,
        }
    }
}

/// Which data plane the client proxies model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DataPlane {
    /// Envoy as Istio configures it.
    #[default]
    Istio,
    /// linkerd2-proxy: peak-EWMA balancing, no default retries, always mTLS, failure accrual.
    Linkerd,
}

/// Everything needed to build a [`Mesh`](crate::mesh::Mesh).
#[derive(Clone, Debug, PartialEq)]
pub struct MeshConfig {
    /// Run seed.
    pub seed: u64,
    /// Default namespace.
    pub namespace: String,
    /// Services.
    pub services: Vec<ServiceConfig>,
    /// Client workloads.
    pub clients: Vec<ClientConfig>,
    /// Network timing.
    pub network: NetworkConfig,
    /// Certificates.
    pub certs: CertConfig,
    /// Data plane.
    pub data_plane: DataPlane,
    /// Max-ejection-percent rule.
    pub ejection_rule: EjectionRule,
    /// Mesh-wide mTLS mode when no PeerAuthentication applies (Istio: PERMISSIVE).
    pub default_mtls: MtlsMode,
    /// Istio's default retry policy also retries 503: Istio up to 1.23, or 1.24 to 1.26 with
    /// `EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY=false`. Off by default (Istio 1.24 and later).
    pub istio_retry_503: bool,
    /// A VirtualService's `retries.backoff` sets the retries' backoff base: Istio 1.26 and
    /// later (istio/istio#55639); older versions ignore it. On by default.
    pub istio_retry_backoff: bool,
    /// Telemetry scrape interval.
    pub scrape_interval: SimTime,
    /// How long snapshots are kept.
    pub retention: SimTime,
    /// How route changes reach the proxies (at once unless set).
    pub propagation: crate::mesh::Propagation,
    /// What the client workloads' sidecars cost (a version's is its behaviour's); none: the
    /// fixed [`NetworkConfig::sidecar_latency`] and nothing counted.
    pub proxy: Option<ProxyCost>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            namespace: "default".into(),
            services: Vec::new(),
            clients: Vec::new(),
            network: NetworkConfig::default(),
            certs: CertConfig::default(),
            data_plane: DataPlane::Istio,
            ejection_rule: EjectionRule::Current,
            default_mtls: MtlsMode::Permissive,
            istio_retry_503: false,
            istio_retry_backoff: true,
            scrape_interval: 5 * SECONDS,
            retention: 3600 * SECONDS,
            propagation: Default::default(),
            proxy: None,
        }
    }
}
