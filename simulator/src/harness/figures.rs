//! The figures of a run: the samples plotted at every tick and the run's result at its end,
//! read from the simulated telemetry as Prometheus would have scraped it.

use std::collections::BTreeMap;

use fledge_controller::rollout::Phase;

use super::{Harness, NEW_REVISION};
use crate::engine::{MILLIS, SECONDS, SimTime};
use crate::mesh::VersionId;
use crate::result::{ClientFigures, Outcome, RunResult, Sample, WindowFigures};
use crate::telemetry::{Reporter, Selector, WindowStats};

impl Harness<'_> {
    pub(super) fn sample(&mut self, from: SimTime, now: SimTime) {
        // Counts before `now` come from scrapes, as Prometheus has them: the window starts at
        // the last scrape at or before `from`, and rates are over that window.
        let scrape = self.mesh.telemetry().scrape_interval().max(1);
        let from = from - from % scrape;
        let figures = |stats: crate::telemetry::WindowStats| WindowFigures {
            requests: stats.requests,
            success_rate: stats.success_rate().map(|r| r * 100.0),
            p99_ms: stats.quantile_ms(0.99),
        };
        // Without a Canary there is no primary or canary to plot.
        let (primary, canary) = self.target.map_or_else(Default::default, |t| {
            (
                figures(self.mesh.destination_stats(t.primary, from, now)),
                figures(self.mesh.destination_stats(t.canary, from, now)),
            )
        });
        let (sent, failed) = self
            .clients_saw(from, now)
            .iter()
            .fold((0, 0), |(r, f), s| (r + s.requests, f + s.failures));
        let seconds = ((now - from) as f64 / SECONDS as f64).max(1e-9);
        self.samples.push(Sample {
            at_ms: now / MILLIS,
            canary_weight: self.state.canary_weight,
            primary,
            canary,
            rps: if now == from {
                0.0
            } else {
                sent as f64 / seconds
            },
            clients_requests: sent,
            clients_success_rate: (sent > 0).then(|| 100.0 * (1.0 - failed as f64 / sent as f64)),
        });
    }

    /// What the clients of the rollout's service saw over `[from, to]`: the primary's and the
    /// canary's answers, and the requests no pod answered (a pool overflow, no healthy upstream,
    /// an abort, no route), which their proxies report against the destination `unknown`.
    /// Without a Canary: what each client of `traffic` saw, whatever it called.
    fn clients_saw(&self, from: SimTime, to: SimTime) -> Vec<WindowStats> {
        let Some(t) = self.target else {
            return self
                .scenario
                .clients
                .iter()
                .filter_map(|c| self.mesh.client_id(&c.name))
                .map(|id| {
                    let sel = Selector {
                        reporter: Reporter::Source,
                        source: Some(id.0),
                        dest: None,
                    };
                    self.mesh
                        .telemetry()
                        .window(&sel, from, to, self.mesh.now())
                })
                .collect();
        };
        let unanswered = self.mesh.unanswered_stats(t.service, from, to);
        [t.primary, t.canary]
            .into_iter()
            .map(|v| self.mesh.source_stats(v, from, to))
            .chain([unanswered])
            .collect()
    }

    /// The run's result, with figures up to `end`.
    pub(super) fn finish(self, end: SimTime) -> RunResult {
        let applied_routes = self.applied_routes.clone();
        let outcome = match (self.deployed_at, self.state.phase) {
            _ if self.target.is_none() => Outcome::NoRollout,
            (Some(_), Phase::Succeeded)
                if self.state.promoted_revision.as_deref() == Some(NEW_REVISION) =>
            {
                Outcome::Promoted
            }
            // Stopped at the decision to promote.
            (Some(_), Phase::Promoting | Phase::Finalising) if self.stop_at_judgement => {
                Outcome::Promoted
            }
            (Some(_), Phase::Failed) => Outcome::RolledBack,
            _ => Outcome::Undecided,
        };
        let mut requests = 0;
        let mut failed = 0;
        let mut buckets = [0; crate::telemetry::NUM_BUCKETS];
        for s in self.clients_saw(0, end) {
            requests += s.requests;
            failed += s.failures;
            buckets.iter_mut().zip(s.buckets).for_each(|(b, n)| *b += n);
        }
        let failed_canary = self
            .target
            .map_or(0, |t| self.mesh.source_stats(t.canary, 0, end).failures);
        let clients = self
            .scenario
            .clients
            .iter()
            .filter_map(|c| {
                let id = self.mesh.client_id(&c.name)?;
                let s = self.mesh.telemetry().totals(&Selector {
                    reporter: Reporter::Source,
                    source: Some(id.0),
                    dest: None,
                });
                Some(ClientFigures {
                    name: c.name.clone(),
                    requests: s.requests,
                    failed: s.failures,
                    success_rate: s.success_rate().map(|r| r * 100.0),
                    // As seen, not read off Istio's buckets.
                    p99_ms: self
                        .mesh
                        .telemetry()
                        .seen(Some(id.0), None)
                        .quantile_ms(0.99),
                })
            })
            .collect();
        let seconds = (end as f64 / SECONDS as f64).max(1e-9);
        let rollout_versions: Vec<VersionId> = self
            .target
            .iter()
            .flat_map(|t| [t.primary, t.canary])
            .collect();
        let graph = self
            .rollout_edges(seconds)
            .into_iter()
            .chain(self.other_edges(seconds))
            .chain(self.call_edges(seconds))
            .filter(|e| e.requests > 0)
            .collect();
        let mut counters: BTreeMap<String, u64> = crate::telemetry::counter_names()
            .map(|name| (name.to_string(), 0))
            .collect();
        counters.insert("cert_rotations".into(), self.mesh.stats().cert_rotations);
        if let Some(t) = self.target {
            counters.insert(
                "requests_primary".into(),
                self.mesh.source_stats(t.primary, 0, end).requests,
            );
            counters.insert(
                "requests_canary".into(),
                self.mesh.source_stats(t.canary, 0, end).requests,
            );
        }
        // The rollout's versions; without a Canary, every version of every service.
        let counted: Vec<VersionId> = if self.target.is_some() {
            rollout_versions.clone()
        } else {
            self.scenario
                .services
                .iter()
                .flat_map(|s| {
                    s.versions
                        .iter()
                        .filter_map(|(n, _)| self.mesh.version_id(&s.name, n))
                })
                .collect()
        };
        // Envoy's stats are per calling proxy: the `traffic` clients' and the sidecars of the
        // versions that call a service (their outlier detection, their pools).
        let proxies: Vec<_> = self
            .scenario
            .clients
            .iter()
            .filter_map(|c| self.mesh.client_id(&c.name))
            .chain(self.mesh.call_clients())
            .collect();
        for id in proxies {
            for &v in &counted {
                let proxy = self.mesh.proxy_counters(id, v);
                for (name, get) in crate::telemetry::PROXY_COUNTERS {
                    *counters.entry(name.to_string()).or_default() += get(&proxy);
                }
            }
        }
        let queueing = rollout_versions
            .iter()
            .map(|&v| {
                let name = self.mesh.version_name(v).unwrap_or_default();
                super::services::queueing(name, self.mesh.queue_stats(v))
            })
            .collect();
        let services = self.service_figures(self.scenario.other_services());
        let mut warnings = self.warnings;
        if let Some(t) = self.target
            && self.mesh.destination_stats(t.canary, 0, end).requests == 0
        {
            warnings.push(
                "the canary never received a request: nothing was judged on its traffic (check the clients' rates, the routes and the time of the deploy)"
                    .into(),
            );
        }
        let seconds = end as f64 / crate::engine::SECONDS as f64;
        let sidecars = self
            .mesh
            .sidecar_usage()
            .into_iter()
            .map(|(name, u)| crate::result::SidecarFigures::new(name, &u, seconds))
            .collect();
        RunResult {
            scenario: self.scenario.name.clone(),
            variant: self.variant.name.clone(),
            seed: self.seed,
            outcome,
            deployed_at_ms: self.deployed_at.map(|t| t / MILLIS),
            decided_at_ms: self.decided_at.map(|t| t / MILLIS),
            judged_at_ms: self.judged_at.map(|t| t / MILLIS),
            max_canary_weight: self.max_weight,
            final_phase: self.target.is_some().then_some(self.state.phase),
            final_message: self.state.message.clone(),
            requests,
            failed_requests: failed,
            failed_requests_canary: failed_canary,
            unanswered: self.mesh.unanswered(),
            success_rate: (requests > 0).then(|| 100.0 * (1.0 - failed as f64 / requests as f64)),
            p99_ms: crate::telemetry::histogram_quantile(0.99, &buckets),
            decisions: self.decisions,
            samples: self.samples,
            checks: Vec::new(),
            events_processed: self.mesh.stats().events,
            clients,
            queueing,
            counters,
            graph,
            services,
            sidecars,
            warnings,
            applied_routes,
        }
    }
}
