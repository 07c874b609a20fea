//! Figures of the scenario's services (in a rollout, those other than the rollout's): per
//! version, what the callers' proxies saw and how requests queued at the pods, and the
//! requests that reached no pod.

use super::Harness;
use crate::engine::MILLIS;
use crate::mesh::ClientId;
use crate::result::{GraphEdge, ServiceFigures, ServiceVersionFigures, VersionQueueing};
use crate::scenario::ServiceModel;
use crate::telemetry::{Durations, Reporter, Selector, WindowStats};

impl Harness<'_> {
    /// Each of `services` by version, as its callers' proxies reported it.
    pub(super) fn service_figures(&self, services: &[ServiceModel]) -> Vec<ServiceFigures> {
        let telemetry = self.mesh.telemetry();
        let totals = |dest: u32| {
            telemetry.totals(&Selector {
                reporter: Reporter::Source,
                source: None,
                dest: Some(dest),
            })
        };
        services
            .iter()
            .map(|s| {
                let (mut requests, mut failed) = (0, 0);
                // The percentiles are of the durations as seen, not read off Istio's buckets.
                let mut seen = Durations::default();
                let mut add = |t: &WindowStats, dest: u32| {
                    requests += t.requests;
                    failed += t.failures;
                    let d = telemetry.seen(None, Some(dest));
                    seen.merge(&d);
                    d
                };
                let versions = s
                    .versions
                    .iter()
                    .filter_map(|(name, _)| {
                        let v = self.mesh.version_id(&s.name, name)?;
                        let t = totals(v.0);
                        let d = add(&t, v.0);
                        Some(ServiceVersionFigures {
                            version: name.clone(),
                            requests: t.requests,
                            failed: t.failures,
                            p50_ms: d.quantile_ms(0.5),
                            p99_ms: d.quantile_ms(0.99),
                            queueing: queueing(name, self.mesh.queue_stats(v)),
                        })
                    })
                    .collect();
                // Requests that reached no pod are reported against the service's `unknown`
                // destination.
                // (an external host's is named by the host itself).
                let unknown = self.unknown_dest(&s.name);
                let unanswered = unknown.map(totals);
                if let (Some(t), Some(dest)) = (&unanswered, unknown) {
                    add(t, dest);
                }
                ServiceFigures {
                    name: s.name.clone(),
                    requests,
                    failed,
                    p50_ms: seen.quantile_ms(0.5),
                    p99_ms: seen.quantile_ms(0.99),
                    versions,
                    unanswered: unanswered.map_or(0, |t| t.requests),
                }
            })
            .collect()
    }

    /// The telemetry destination of the requests to `service` that reached no pod (no route,
    /// no healthy upstream, a fault's abort, a full pool): Istio's `unknown` destination.
    fn unknown_dest(&self, service: &str) -> Option<u32> {
        let fqdn = format!("{service}.{}.svc.cluster.local", self.scenario.namespace);
        self.mesh
            .telemetry()
            .dests()
            .iter()
            .position(|d| !d.peer && (d.service == fqdn || d.service == service))
            .map(|i| i as u32)
    }

    /// The service graph's edges to the rollout's service: each client's requests to the
    /// primary, the canary and `unknown`, over `seconds`. None without a Canary.
    pub(super) fn rollout_edges(&self, seconds: f64) -> Vec<GraphEdge> {
        let Some(rollout) = self
            .scenario
            .services
            .first()
            .filter(|_| self.target.is_some())
        else {
            return Vec::new();
        };
        let mut edges = Vec::new();
        for c in &self.scenario.clients {
            if let Some(id) = self.mesh.client_id(&c.name) {
                edges.extend(self.edges_to(id, &c.name, rollout, seconds));
            }
        }
        edges
    }

    /// The service graph's edges to the other services: each client's requests to each of
    /// their versions over `seconds`.
    pub(super) fn other_edges(&self, seconds: f64) -> Vec<GraphEdge> {
        let mut edges = Vec::new();
        for c in &self.scenario.clients {
            let Some(id) = self.mesh.client_id(&c.name) else {
                continue;
            };
            for s in self.scenario.other_services() {
                edges.extend(self.edges_to(id, &c.name, s, seconds));
            }
        }
        edges
    }

    /// The service graph's edges of calls: each calling version's workload to each version of
    /// the services it calls, over `seconds`.
    pub(super) fn call_edges(&self, seconds: f64) -> Vec<GraphEdge> {
        let sources = self.mesh.telemetry().sources();
        let mut edges = Vec::new();
        for c in self.mesh.call_clients() {
            let caller = self.mesh.caller_version(c);
            for s in &self.scenario.services {
                edges.extend(
                    self.edges_to(c, &sources[c.0 as usize].workload, s, seconds)
                        .map(|mut e| {
                            e.source_service = caller.map(|(s, _)| s.to_string());
                            e.source_version = caller.map(|(_, v)| v.to_string());
                            e
                        }),
                );
            }
        }
        edges
    }

    /// Client `id`'s (named `source`) requests to each version of `service`, and to its
    /// `unknown` destination: the requests no pod answered, as Kiali draws them.
    fn edges_to<'s>(
        &'s self,
        id: ClientId,
        source: &'s str,
        service: &'s ServiceModel,
        seconds: f64,
    ) -> impl Iterator<Item = GraphEdge> + 's {
        let versions = service.versions.iter().filter_map(move |(name, _)| {
            Some((name.as_str(), self.mesh.version_id(&service.name, name)?.0))
        });
        let unknown = self.unknown_dest(&service.name).map(|d| ("unknown", d));
        versions.chain(unknown).map(move |(name, dest)| {
            let telemetry = self.mesh.telemetry();
            let t = telemetry.totals(&Selector {
                reporter: Reporter::Source,
                source: Some(id.0),
                dest: Some(dest),
            });
            GraphEdge {
                source: source.to_string(),
                source_service: None,
                source_version: None,
                service: service.name.clone(),
                version: name.to_string(),
                requests: t.requests,
                failed: t.failures,
                client_errors: t.client_errors,
                rps: t.requests as f64 / seconds,
                p99_ms: telemetry.seen(Some(id.0), Some(dest)).quantile_ms(0.99),
            }
        })
    }
}

/// Queueing at a version's pods, as the run's figures give it.
pub(super) fn queueing(version: &str, q: crate::mesh::QueueStats) -> VersionQueueing {
    VersionQueueing {
        version: version.to_string(),
        arrivals: q.arrivals,
        queued: q.queued,
        queued_fraction: (q.arrivals > 0).then(|| q.queued as f64 / q.arrivals as f64),
        mean_queue_wait_ms: (q.started > 0)
            .then(|| q.total_wait as f64 / q.started as f64 / MILLIS as f64),
    }
}
