//! Figures of the scenario's services other than the rollout's: per version, what the clients'
//! proxies saw and how requests queued at the pods, and the requests that reached no pod.

use super::Harness;
use crate::engine::MILLIS;
use crate::mesh::ClientId;
use crate::result::{GraphEdge, ServiceFigures, ServiceVersionFigures, VersionQueueing};
use crate::scenario::ServiceModel;
use crate::telemetry::{Reporter, Selector};

impl Harness<'_> {
    pub(super) fn other_services(&self) -> Vec<ServiceFigures> {
        let telemetry = self.mesh.telemetry();
        let totals = |dest: u32| {
            telemetry.totals(&Selector {
                reporter: Reporter::Source,
                source: None,
                dest: Some(dest),
            })
        };
        let namespace = &self.scenario.namespace;
        self.scenario.services[1..]
            .iter()
            .map(|s| {
                let versions = s
                    .versions
                    .iter()
                    .filter_map(|(name, _)| {
                        let v = self.mesh.version_id(&s.name, name)?;
                        let t = totals(v.0);
                        Some(ServiceVersionFigures {
                            version: name.clone(),
                            requests: t.requests,
                            failed: t.failures,
                            p99_ms: t.quantile_ms(0.99),
                            queueing: queueing(name, self.mesh.queue_stats(v)),
                        })
                    })
                    .collect();
                // Requests that reached no pod are reported against the service's `unknown`
                // destination.
                // (an external host's is named by the host itself).
                let fqdn = format!("{}.{namespace}.svc.cluster.local", s.name);
                let unanswered = telemetry
                    .dests()
                    .iter()
                    .position(|d| !d.peer && (d.service == fqdn || d.service == s.name))
                    .map_or(0, |i| totals(i as u32).requests);
                ServiceFigures {
                    name: s.name.clone(),
                    versions,
                    unanswered,
                }
            })
            .collect()
    }

    /// The service graph's edges to the other services: each client's requests to each of
    /// their versions over `seconds`.
    pub(super) fn other_edges(&self, seconds: f64) -> Vec<GraphEdge> {
        let mut edges = Vec::new();
        for c in &self.scenario.clients {
            let Some(id) = self.mesh.client_id(&c.name) else {
                continue;
            };
            for s in &self.scenario.services[1..] {
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
            for s in &self.scenario.services {
                edges.extend(self.edges_to(c, &sources[c.0 as usize].workload, s, seconds));
            }
        }
        edges
    }

    /// Client `id`'s (named `source`) requests to each version of `service`.
    fn edges_to<'s>(
        &'s self,
        id: ClientId,
        source: &'s str,
        service: &'s ServiceModel,
        seconds: f64,
    ) -> impl Iterator<Item = GraphEdge> + 's {
        service.versions.iter().filter_map(move |(name, _)| {
            let v = self.mesh.version_id(&service.name, name)?;
            let t = self.mesh.telemetry().totals(&Selector {
                reporter: Reporter::Source,
                source: Some(id.0),
                dest: Some(v.0),
            });
            Some(GraphEdge {
                source: source.to_string(),
                service: service.name.clone(),
                version: name.clone(),
                requests: t.requests,
                failed: t.failures,
                rps: t.requests as f64 / seconds,
                p99_ms: t.quantile_ms(0.99),
            })
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
