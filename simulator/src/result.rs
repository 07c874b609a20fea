//! What a run produced: its outcome, timeline, samples and checks. A leaf: every module may use
//! it, it uses none of the crate's.

use std::collections::BTreeMap;

use fledge_controller::analysis::MetricResult;
use fledge_controller::rollout::Phase;
use fledge_controller::routes::Routes;
use serde::{Deserialize, Serialize};

/// How a rollout ended.
#[derive(Deserialize, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Promoted,
    RolledBack,
    /// Neither by the end of the run.
    Undecided,
    /// A scenario without a Canary: the mesh ran alone.
    NoRollout,
}

impl Outcome {
    /// The name scenarios and reports use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::Promoted => "promoted",
            Outcome::RolledBack => "rolled-back",
            Outcome::Undecided => "undecided",
            Outcome::NoRollout => "no-rollout",
        }
    }
}

/// One line of the timeline: what the controller decided on a tick, or what the scenario did.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// Virtual time in milliseconds.
    pub at_ms: u64,
    pub phase: Phase,
    pub canary_weight: u8,
    pub mirror: Option<u8>,
    pub matched: bool,
    /// The metrics analysed on this tick.
    pub metrics: Vec<MetricResult>,
    pub messages: Vec<String>,
    pub warning: bool,
    /// A timeline event of the scenario rather than a controller decision.
    pub scenario_event: bool,
}

/// Figures for the report's plots, at every tick, over the time since the previous sample (from
/// the last scrape at or before it).
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub at_ms: u64,
    pub canary_weight: u8,
    pub primary: WindowFigures,
    pub canary: WindowFigures,
    /// Requests per second the clients sent over the window.
    pub rps: f64,
    /// The clients' requests over the window, and the percentage that succeeded after retries:
    /// what users saw, including failures no destination reported.
    pub clients_requests: u64,
    pub clients_success_rate: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct WindowFigures {
    pub requests: u64,
    /// Percentage of non-5xx responses, when there was traffic.
    pub success_rate: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// A check of the scenario's `expect`, and how it came out.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub expected: String,
    pub actual: String,
    pub passed: bool,
}

/// Everything a run produced.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub scenario: String,
    pub variant: String,
    pub seed: u64,
    pub outcome: Outcome,
    /// When the new revision was deployed, and when the rollout was decided.
    pub deployed_at_ms: Option<u64>,
    pub decided_at_ms: Option<u64>,
    /// When the judge decided: the tick on which the rollout began promoting or rolled back
    /// (promotion then takes a tick or two more to reach `Succeeded`).
    pub judged_at_ms: Option<u64>,
    pub max_canary_weight: u8,
    /// The Canary's phase at the end; none for the mesh alone (no Canary has a phase).
    pub final_phase: Option<Phase>,
    pub final_message: String,
    /// Client requests, and those that failed after retries.
    pub requests: u64,
    pub failed_requests: u64,
    /// Failed client requests answered by the canary (the blast radius).
    pub failed_requests_canary: u64,
    /// Client requests sent but not answered by the end (in none of the figures above): in
    /// flight, or waiting for a retry or a saturated sidecar's worker thread.
    pub unanswered: u64,
    /// Percentage of client requests that succeeded; none without requests.
    pub success_rate: Option<f64>,
    /// The 99th percentile of the durations clients saw (after retries), in milliseconds, as
    /// Prometheus' `histogram_quantile` reads Istio's buckets; none without requests.
    pub p99_ms: Option<f64>,
    pub decisions: Vec<Decision>,
    pub samples: Vec<Sample>,
    pub checks: Vec<Check>,
    pub events_processed: u64,
    /// What each client saw over the whole run, after retries.
    pub clients: Vec<ClientFigures>,
    /// Queueing at each version's pods over the run, primary then canary.
    pub queueing: Vec<VersionQueueing>,
    /// The clients' proxy counters for the service, summed over clients and versions, and the
    /// mesh's own counters, by the names a scenario's `expect.counters` bounds.
    pub counters: BTreeMap<String, u64>,
    /// The service graph: who called which service's version, as the clients saw it.
    pub graph: Vec<GraphEdge>,
    /// The scenario's services other than the rollout's, by version (none for a scenario of
    /// one service, whose figures are the ones above); every service in a scenario of the
    /// mesh alone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceFigures>,
    /// What the sidecars cost, per workload whose cost the scenario models (`proxy`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<SidecarFigures>,
    pub warnings: Vec<String>,
    /// The routing objects the controller applied, in order.
    #[serde(skip)]
    pub applied_routes: Vec<AppliedObject>,
}

/// Routing objects as the controller's router applied them for a decision.
#[derive(Clone, Debug)]
pub struct AppliedObject {
    /// Virtual time in milliseconds.
    pub at_ms: u64,
    pub routes: Routes,
    /// The builders' objects, exactly as a cluster's API server would receive them.
    pub objects: Vec<serde_json::Value>,
    /// The service's route table in the mesh once they were applied: what clients walk.
    pub mesh_routes: Vec<RuleView>,
}

/// One rule of a service's route table in the mesh, in the order clients try them.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleView {
    /// Whether the rule takes only the requests that match it (A/B); one without takes all.
    pub matched: bool,
    /// Relative weights by version name (`primary`, `canary`).
    pub weights: Vec<(String, u32)>,
    /// The version requests are also copied to, and the percentage copied.
    pub mirror: Option<(String, f64)>,
}

/// An edge of the service graph: a client workload's requests to one version of a service over
/// the run, after retries, as its proxy reported them (`reporter="source"`).
#[derive(Clone, Debug, Serialize)]
pub struct GraphEdge {
    /// The calling workload: a client, or the Deployment of the version making a call.
    pub source: String,
    /// For a call: the service and version calling, whose node the graph's caller is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    pub service: String,
    /// The version that answered, or `unknown` for the requests no pod answered (no route, no
    /// healthy upstream, an injected abort, a full pool), as Istio reports and Kiali draws them.
    pub version: String,
    pub requests: u64,
    /// Answered with a 5xx.
    pub failed: u64,
    /// Answered with a 4xx (a `404 NR`, a `403` of an AuthorizationPolicy): an error on the
    /// edge as Kiali counts it, though not a failure to Flagger's success rate.
    pub client_errors: u64,
    /// Requests per second over the run.
    pub rps: f64,
    /// The 99th percentile of their durations as seen (to 0.4%, not read off Istio's
    /// buckets), in milliseconds.
    pub p99_ms: Option<f64>,
}

/// One client's requests over the run.
#[derive(Clone, Debug, Serialize)]
pub struct ClientFigures {
    pub name: String,
    pub requests: u64,
    pub failed: u64,
    /// Percentage of requests that succeeded; none without requests.
    pub success_rate: Option<f64>,
    /// The 99th percentile of the durations it saw (to 0.4%, not read off Istio's buckets),
    /// in milliseconds.
    pub p99_ms: Option<f64>,
}

/// Queueing at one version's pods over a run: requests that found every worker of their pod
/// busy, and how long requests waited for a worker. For an M/M/c pod these are Erlang C's
/// probability of waiting and its mean wait `Wq`.
#[derive(Clone, Debug, Serialize)]
pub struct VersionQueueing {
    pub version: String,
    /// Requests that reached a pod of the version.
    pub arrivals: u64,
    /// Of those, requests that waited for a worker.
    pub queued: u64,
    /// `queued / arrivals`; none without arrivals.
    pub queued_fraction: Option<f64>,
    /// Mean wait for a worker over every request that started service (zero for those that
    /// did not wait), in milliseconds; none when none started.
    pub mean_queue_wait_ms: Option<f64>,
}

/// One workload's sidecars over a run (all its pods'), when their cost is modelled.
#[derive(Clone, Debug, Serialize)]
pub struct SidecarFigures {
    pub workload: String,
    /// Requests through them (each attempt once, its response with it).
    pub requests: u64,
    /// TLS handshakes they took part in, as client or server.
    pub handshakes: u64,
    /// CPU spent on requests and handshakes, in seconds, and its mean over the run in cores.
    pub cpu_seconds: f64,
    pub mean_cores: f64,
    /// Mean latency they added to a request, waits for a worker thread included, in
    /// milliseconds; none without requests.
    pub added_latency_ms: Option<f64>,
    /// Requests that found every worker thread busy, and the mean wait over all requests, in
    /// milliseconds.
    pub waited: u64,
    pub mean_wait_ms: Option<f64>,
    /// Requests still waiting for a worker thread at the end of the run (in none of the
    /// figures above).
    pub backlog: u64,
}

impl SidecarFigures {
    /// A workload's usage over a run of `seconds`.
    pub(crate) fn new(workload: String, u: &crate::mesh::SidecarUsage, seconds: f64) -> Self {
        let ms = |ns: u64| (u.requests > 0).then(|| ns as f64 / 1e6 / u.requests as f64);
        let cpu_seconds = u.cpu as f64 / 1e9;
        Self {
            workload,
            requests: u.requests,
            handshakes: u.handshakes,
            cpu_seconds,
            mean_cores: if seconds > 0.0 {
                cpu_seconds / seconds
            } else {
                0.0
            },
            added_latency_ms: ms(u.added),
            waited: u.waited,
            mean_wait_ms: ms(u.wait),
            backlog: u.backlog,
        }
    }
}

/// One of the scenario's other services over the run, as its clients' proxies reported it
/// (`reporter="source"`, after retries).
#[derive(Clone, Debug, Serialize)]
pub struct ServiceFigures {
    pub name: String,
    /// Every request its callers sent it (after retries), answered or not, and those answered
    /// with a 5xx (a pod's, or a proxy's own when no pod answered).
    pub requests: u64,
    pub failed: u64,
    /// Percentiles of the durations its callers saw (to 0.4%, not read off Istio's
    /// buckets), in milliseconds.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub versions: Vec<ServiceVersionFigures>,
    /// Requests to the service that reached no pod: no healthy upstream (`UH`, e.g. a subset
    /// whose version has no pods), no route (`NR`) or an injected fault (`FI`).
    pub unanswered: u64,
}

/// One version of a service over the run.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceVersionFigures {
    pub version: String,
    pub requests: u64,
    /// Answered with a 5xx.
    pub failed: u64,
    /// Percentiles of the durations its callers saw (to 0.4%, not read off Istio's
    /// buckets), in milliseconds.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Queueing at the version's pods.
    pub queueing: VersionQueueing,
}

impl RunResult {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}
