//! The simulated mesh: services with versions and pods, client workloads, and the client-side
//! proxy (routing, load balancing, connection pools, retries, timeouts, outlier detection, mTLS).
//!
//! # Using it from a harness
//! 1. Build: [`Mesh::new`] with a [`MeshConfig`] (services, versions with pod count and
//!    [`Behaviour`], clients with a rate and header mix), then [`Mesh::apply_manifests`] with
//!    parsed [`Manifests`](crate::manifest::Manifests) (VirtualService, DestinationRule, ...).
//! 2. Look up ids once: [`Mesh::service_id`], [`Mesh::version_id`], [`Mesh::client_id`].
//! 3. Drive: [`Mesh::run_until`] advances virtual time; between calls,
//!    [`Mesh::apply_manifests`] routes (the controller's own routing objects, loaded as
//!    `kubectl apply` would: the mesh builds no routes of its own); [`Mesh::apply`] performs an
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
//! // The Services `podinfo-primary` and `podinfo-canary` select one version's pods each.
//! let route = r#"
//! apiVersion: networking.istio.io/v1beta1
//! kind: VirtualService
//! metadata: {name: podinfo}
//! spec:
//!   hosts: [podinfo]
//!   http:
//!     - route:
//!         - {destination: {host: podinfo-primary}, weight: 90}
//!         - {destination: {host: podinfo-canary}, weight: 10}
//! "#;
//! let manifests = fledge_simulator::manifest::parse(route).expect("a VirtualService");
//! assert!(mesh.apply_manifests(&manifests)?.is_empty(), "every host is simulated");
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
//! builds `outbound|port|subset|host` clusters) and one over every pod the Service selects (the
//! cluster of a route without a subset, or of no route at all), so limits, load balancing and
//! outlier detection are per (client, cluster). Circuit-breaker limits are cluster-wide counters, as in Envoy;
//! connections are per host. A request is routed once (rule, weighted version), then each attempt
//! picks a host, takes or opens a connection (TCP + TLS round trips and handshake CPU for a new
//! one), crosses the network to the pod, waits for a worker, is served, and the response returns.
//!
//! Requests carry headers, a method and a path (the pseudo-headers `:method` and `:path`, `GET /`
//! unless set), so VirtualService `uri` and `method` matches route them. A version's requests
//! may call other services (calls.rs): the version's sidecar is then a client of each, with its
//! own clusters, and a call carries its caller's headers.
//!
//! Simplifications: a ServiceProfile's first route stands for all requests, and HTTPRoute
//! `path`/`method` matches are not simulated; one proxy per workload (one per client workload
//! and one per version as a caller, not one per pod), so limits, balancing and outlier detection
//! of calls are per (calling version, cluster); a call starts after the pod's own work and
//! carries every header of its caller (an application propagates only those it is written to);
//! a failed call (no answer, or a status of 400 or more) that is not optional makes the caller
//! answer with its version's error code, and later steps are skipped; mirrored copies make no
//! calls; calls that loop are refused; mirrored requests skip connection-pool
//! accounting; a black-holed pod accepts requests on existing connections and never answers
//! (Envoy's 5-minute stream idle timeout ends them when no route timeout is set); routing to a
//! different service from a VirtualService is not simulated; requests the client's proxy answers
//! before reaching a pod (`NR`, `FI`, `UH`) are reported against the service's `unknown`
//! destination workload, as Istio's stats filter does; a Linkerd retry budget is shared by
//! the client's requests to the service, credited by the results it does not retry and counted
//! over one to two `ttl` windows. A client
//! without a sidecar sends through its kube-proxy cluster (a random ready pod per request, no
//! route or DestinationRule) and only the run's figures see what it saw; a timeout that
//! abandons an attempt at the pod is reported by the destination at once as code 0 `DC`.

mod action;
mod authz;
mod balance;
mod build;
mod calls;
mod cluster;
pub(crate) mod config;
pub(crate) mod dist;
mod event;
mod external;
mod faults;
mod gateway;
mod headers;
mod observe;
pub(crate) mod outlier;
mod outputs;
mod pod;
mod pool;
mod propagation;
mod request;
mod retry;
mod routes;
mod sidecar;
mod tls;
mod trace;

pub use config::*;
pub use dist::ServiceTime;
pub use outlier::{
    Accrual, AccrualConfig, EjectionRule, FailurePercentageDetector, HostOutlier, OutlierChange,
    OutlierConfig, OutlierDetector, SuccessRateDetector,
};

pub use action::Action;
pub use propagation::Propagation;
pub use sidecar::SidecarUsage;

use std::collections::BTreeMap;

use crate::engine::{EventQueue, Stream};
use crate::manifest::{MtlsMode, PeerAuthentication};
use crate::telemetry::Telemetry;

use build::{Service, Version};
use cluster::Cluster;
use event::Ev;
use pod::Pod;
use request::{Attempt, Client, Request};
use routes::RouteRule;
use tls::Cert;

/// Internal ids: each indexes its own vector of the mesh (`mesh.pods[pod]`), so an id of one
/// kind cannot index another's.
macro_rules! ids {
    ($($(#[$doc:meta])* $id:ident => $elem:ty;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        struct $id(u32);
        ids!(@index $id => $elem);
    )*};
    (@index $id:ty => $elem:ty) => {
        impl std::ops::Index<$id> for Vec<$elem> {
            type Output = $elem;
            fn index(&self, i: $id) -> &$elem {
                &self[i.0 as usize]
            }
        }
        impl std::ops::IndexMut<$id> for Vec<$elem> {
            fn index_mut(&mut self, i: $id) -> &mut $elem {
                &mut self[i.0 as usize]
            }
        }
    };
}

ids! {
    /// A pod (across all versions; scaled-away pods keep theirs).
    PodId => Pod;
    /// An Envoy cluster: one per (client, version), and one per client over the whole service.
    ClusterId => Cluster;
    /// A compiled route rule.
    RuleId => RouteRule;
    /// A slot for a client request in flight (reused once it completes).
    RequestId => Request;
    /// A slot for an upstream attempt in flight (reused once it ends).
    AttemptId => Attempt;
    /// A workload's certificate: clients first, then versions.
    CertId => Cert;
}
ids!(@index ServiceId => Service);
ids!(@index VersionId => Version);
ids!(@index ClientId => Client);

/// Index of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId(pub(crate) u32);

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

pub(super) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> MeshError {
    MeshError::InvalidConfig {
        what: what.into(),
        reason: reason.into(),
    }
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

/// The simulated mesh. See the module docs for the harness-facing API.
pub struct Mesh {
    q: EventQueue<Ev>,
    seed: u64,
    net: NetworkConfig,
    certs_cfg: CertConfig,
    data_plane: DataPlane,
    ejection_rule: EjectionRule,
    default_mtls: MtlsMode,
    /// Istio's default retry policy also retries 503 ([`MeshConfig::istio_retry_503`]).
    istio_retry_503: bool,
    /// [`MeshConfig::istio_retry_backoff`].
    istio_retry_backoff: bool,
    default_namespace: String,
    /// Clients holding a certificate of their own (the configured ones; a call uses its
    /// version's): certificates are theirs first, then the versions'.
    own_certs: u32,
    services: Vec<Service>,
    versions: Vec<Version>,
    pods: Vec<Pod>,
    clients: Vec<Client>,
    clusters: Vec<Cluster>,
    rules: Vec<RouteRule>,
    reqs: Vec<Request>,
    free_reqs: Vec<RequestId>,
    atts: Vec<Attempt>,
    free_atts: Vec<AttemptId>,
    certs: Vec<Cert>,
    actions: Vec<Option<Action>>,
    peer_auth: Vec<PeerAuthentication>,
    subset_labels: Vec<(ServiceId, String, BTreeMap<String, String>)>,
    telemetry: Telemetry,
    stats: RunStats,
    mirror_rng: Stream,
    od_rng: Stream,
    fault_rng: Stream,
    cert_rng: Stream,
    /// `--trace`: where events are written, when tracing is on.
    trace: Option<Box<crate::trace::Tracer>>,
    /// `--access-log`, `--traces`: where requests are written, when asked.
    outputs: Option<Box<crate::observability::Outputs>>,
    /// Calls in flight of requests at pods (calls.rs), and the free slots.
    callings: Vec<calls::Calling>,
    free_callings: Vec<u32>,
    /// Every header set a request may carry.
    header_sets: headers::HeaderSets,
    /// Route changes on their way to the proxies, when they are not atomic (propagation.rs).
    pushes: Option<Box<propagation::Pushes>>,
    /// AuthorizationPolicies and the workloads' identities (authz.rs).
    authz: Box<authz::Authz>,
    /// What the sidecars cost (sidecar.rs).
    sidecars: Box<sidecar::Sidecars>,
}

impl Mesh {
    /// Every cluster, in creation order.
    fn cluster_ids(&self) -> impl Iterator<Item = ClusterId> + use<> {
        (0..self.clusters.len() as u32).map(ClusterId)
    }
}
