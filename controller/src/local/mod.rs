//! `fledge-controller local`: the reconciler's decision path with the Canary in memory, against
//! the live simulator (`fledge-sim serve`) instead of a cluster.
//!
//! Each tick is a reconcile's: [`wants`] says what to observe, the observation plan
//! ([`plan`]) is read from Prometheus by the cluster's own client and PromQL, webhooks by the
//! cluster's own client ([`LiveObserver`]), the workloads from the simulator; [`advance`]
//! decides, and its actions are carried out on the simulator (scale, promote, and the objects
//! the cluster's router writes, built by the same builders). Each decision is printed as the
//! cluster records it: the status (phase, weight, failed checks, message) and the Events with
//! their reasons. Ticks are paced as the reconciler requeues them ([`requeue_after`]).
//!
//! Time is the wall clock, as in a cluster: the Canary's intervals are read as written.
//! `fledge-sim serve --speed N` plays the simulated mesh N times faster than the wall clock, so
//! an interval of the Canary then carries N times the simulated traffic (rates and counts per
//! wall second grow N-fold; success rates and latencies do not change); `--speed 1` rehearses
//! the rollout at a cluster's pace.
//!
//! What a cluster has and `local` has not: there is no status to resume from (a restarted
//! `local` starts a new onboarding), no operator commands, no repairs of hand-edited objects.

mod canary;
mod mesh;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

pub use canary::{CanaryFile, read as read_canary};
pub use mesh::{MeshApi, MeshError, Workloads};

use crate::cluster::providers::{LiveObserver, Observer};
use crate::cluster::reconciler::{Asked, call_hooks, event_reason, notify, requeue_after};
use crate::cluster::status;
use crate::metrics::Prometheus;
use crate::observe::{Measure, QuerySource, Subject, plan, template_not_found};
use crate::rollout::{Action, Millis, Observation, Phase, RolloutState, Severity, advance, wants};
use crate::routes::{Provider, Routes};
use crate::spec::{Canary, HookGate, MetricTemplate, RolloutSpec, ValidationErrors, unroutable_by};

/// How a rollout ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Promoted,
    RolledBack,
}

/// The longest wait after failed ticks (a reconcile's backoff, shortened for a terminal).
const MAX_RETRY: Duration = Duration::from_secs(30);

/// How long `local` waits at the start for the mesh to answer, in all, and how far apart it asks:
/// long enough for a `cargo run` of the simulator started at the same time.
pub const START_WAIT: Duration = Duration::from_secs(30);
const START_PAUSE: Duration = Duration::from_millis(500);

/// One Canary driven against one live simulator.
pub struct Local {
    canary: Canary,
    spec: RolloutSpec,
    provider: Provider,
    subject: Subject,
    templates: Vec<MetricTemplate>,
    observer: LiveObserver,
    mesh: MeshApi,
    /// The longest wait between ticks while the rollout waits on workloads or gates.
    poll: Duration,
}

impl Local {
    /// Checks the Canary as the reconciler does before it acts (its spec, and that its
    /// provider can route its strategy) and that the mesh answers. An error is bad input.
    pub async fn new(
        file: CanaryFile,
        default_provider: Provider,
        observer: LiveObserver,
        mesh: MeshApi,
        poll: Duration,
    ) -> Result<Local, String> {
        let mut canary = file.canary;
        // As `kubectl apply` places a manifest that names no namespace.
        if canary
            .metadata
            .namespace
            .as_deref()
            .is_none_or(str::is_empty)
        {
            canary.metadata.namespace = Some("default".into());
        }
        let invalid = |e: String| format!("the Canary's spec is invalid: {e}");
        let spec = file.spec;
        let provider = match canary.spec.provider.as_deref().filter(|p| !p.is_empty()) {
            Some(name) => name.parse().map_err(|e: crate::routes::UnknownProvider| {
                invalid(format!("spec.provider: {e}"))
            })?,
            None => default_provider,
        };
        let unroutable = unroutable_by(&canary.spec, &spec, provider);
        if !unroutable.is_empty() {
            return Err(invalid(ValidationErrors(unroutable).to_string()));
        }
        wait_for_mesh(&mesh, START_WAIT).await?;
        Ok(Local {
            subject: Subject::of(&canary),
            canary,
            spec,
            provider,
            templates: file.templates,
            observer,
            mesh,
            poll,
        })
    }

    /// Ticks until the rollout of a new revision ends, printing every decision to `out`.
    /// A tick that fails (the mesh not answering) changes nothing and is tried again, with a
    /// growing pause, as a failed reconcile is.
    pub async fn run(&self, out: &mut impl Write) -> Outcome {
        let mut state = RolloutState::default();
        let mut retry = self.poll;
        loop {
            let now = wall_clock();
            let wait = match self.tick(&state, now, out).await {
                Ok(next) => {
                    report(out, &state, &next);
                    if next.phase == Phase::Initialized && state.phase != Phase::Initialized {
                        self.say_waiting(out, &next);
                    }
                    state = next;
                    retry = self.poll;
                    match state.phase {
                        Phase::Succeeded => return Outcome::Promoted,
                        Phase::Failed => return Outcome::RolledBack,
                        _ => requeue_after(&state, &self.spec, now, self.poll),
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "error: {e}; trying again in {}s", retry.as_secs());
                    let wait = retry;
                    retry = retry.saturating_mul(2).min(MAX_RETRY);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Onboarded: nothing more happens until the target's revision changes, which a user who
    /// started `local` after the scenario's deploy would otherwise wait for in silence.
    fn say_waiting(&self, out: &mut impl Write, state: &RolloutState) {
        let _ = writeln!(
            out,
            "waiting for a new revision of {}: {} serves now and is the one protected (if the \
             mesh's deploy came before `local` started, restart both)",
            self.spec.target,
            state.revision.as_deref().unwrap_or("the current one")
        );
    }

    /// One reconcile: observe, decide, carry out. Returns the state to record.
    async fn tick(
        &self,
        state: &RolloutState,
        now: Millis,
        out: &mut impl Write,
    ) -> Result<RolloutState, String> {
        let workloads = self.mesh.workloads().await.map_err(|e| e.to_string())?;
        let obs = self.observe(state, &workloads, now).await;
        let (next, actions) = advance(state, &self.spec, &obs, now);
        for action in actions {
            self.carry_out(action, &next, &workloads, out).await?;
        }
        Ok(next)
    }

    /// What the core wants to see, gathered as the cluster's observing executor does.
    async fn observe(&self, state: &RolloutState, w: &Workloads, now: Millis) -> Observation {
        let want = wants(state, &self.spec, now);
        let mut metrics = BTreeMap::new();
        for m in plan(&want, &self.spec, &self.subject, now) {
            let template = match &m.measure {
                Measure::Query(QuerySource::Template {
                    namespace, name, ..
                }) => match self.template(namespace, name) {
                    Some(t) => Some(t),
                    None => {
                        let reason = template_not_found(namespace, name);
                        let reading = crate::analysis::MetricReading::Error { reason };
                        metrics.insert(m.metric.clone(), reading);
                        continue;
                    }
                },
                _ => None,
            };
            // No cluster, no Secrets: a template's secretRef reads as an error naming it.
            let access = crate::metrics::Access {
                server: self.canary.spec.metrics_server.as_deref(),
                template,
                credentials: None,
            };
            let reading = self
                .observer
                .read_metric(self.provider, &self.subject, &m, access)
                .await;
            metrics.insert(m.metric, reading);
        }
        let hooks = call_hooks(
            &self.observer,
            &self.spec,
            want.hooks,
            &self.asked(state, &w.revision),
        )
        .await;
        Observation {
            revision: w.revision.clone(),
            canary: w.canary.into(),
            primary: w.primary.into(),
            metrics,
            hooks,
            canary_pods: Vec::new(),
            deleting: false,
            command: None,
            // The live simulator applies every route at once.
            routes_not_accepted: None,
        }
    }

    /// A MetricTemplate of the Canary file; one that names no namespace is in the Canary's.
    fn template(&self, namespace: &str, name: &str) -> Option<&crate::spec::MetricTemplateSpec> {
        self.templates
            .iter()
            .find(|t| {
                let ns = t.metadata.namespace.as_deref().filter(|n| !n.is_empty());
                t.metadata.name.as_deref() == Some(name)
                    && ns.unwrap_or(&self.subject.namespace) == namespace
            })
            .map(|t| &t.spec)
    }

    /// Whom webhooks are asked about, as the cluster's reconciler asks them.
    fn asked<'a>(&'a self, state: &'a RolloutState, revision: &'a str) -> Asked<'a> {
        Asked {
            name: &self.subject.name,
            namespace: &self.subject.namespace,
            state,
            revision,
        }
    }

    /// Carries out one action on the simulator, as the cluster's executor does on the API.
    async fn carry_out(
        &self,
        action: Action,
        next: &RolloutState,
        w: &Workloads,
        out: &mut impl Write,
    ) -> Result<(), String> {
        match action {
            // The primary exists in the simulator from the start; as the router's first
            // reconcile does, its objects are written with all traffic on the primary.
            Action::InitializePrimary => self.set_routes(Routes::PRIMARY_ONLY, next, out).await,
            Action::ScaleCanary { up } => {
                // The canary's size while analysed: the primary's (there is no HPA here).
                let replicas = if up { w.primary.desired.max(1) } else { 0 };
                self.mesh
                    .scale_canary(replicas)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Action::SetRoutes {
                primary,
                canary,
                mirror,
                matched,
            } => {
                let routes = Routes {
                    primary,
                    canary,
                    mirror,
                    matched,
                };
                self.set_routes(routes, next, out).await
            }
            Action::PromotePrimary => self
                .mesh
                .promote_primary()
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Action::RunHooks { gate } => {
                self.notify(gate, next, None, out).await;
                Ok(())
            }
            Action::Event {
                severity,
                message,
                reason,
            } => {
                let (type_, reason) = event_reason(severity, next.phase, reason);
                let _ = writeln!(out, "event: {type_:?} {reason}: {}", one_line(&message));
                self.notify(HookGate::Event, next, Some((severity, &message)), out)
                    .await;
                Ok(())
            }
            Action::Finalize { .. } => self.set_routes(Routes::PRIMARY_ONLY, next, out).await,
        }
    }

    /// The router's objects for `routes` (with the session cookies of `next`), written to the
    /// mesh.
    async fn set_routes(
        &self,
        routes: Routes,
        next: &RolloutState,
        out: &mut impl Write,
    ) -> Result<(), String> {
        let canary = crate::routes::with_cookies(&self.canary, &next.cookies);
        let objects = self
            .provider
            .objects(&canary, &routes)
            .map_err(|e| format!("routing with {}: {e}", self.provider))?;
        let warnings = self
            .mesh
            .put_objects(&objects)
            .await
            .map_err(|e| format!("routing with {}: {e}", self.provider))?;
        for w in warnings {
            let _ = writeln!(out, "warning: the mesh: {w}");
        }
        Ok(())
    }

    /// Calls every hook of `gate`; their answers change nothing (post-rollout, event).
    async fn notify(
        &self,
        gate: HookGate,
        state: &RolloutState,
        event: Option<(Severity, &str)>,
        out: &mut impl Write,
    ) {
        let revision = state.revision.clone().unwrap_or_default();
        let asked = self.asked(state, &revision);
        for (hook, why) in notify(&self.observer, &self.spec, gate, &asked, event).await {
            let _ = writeln!(out, "warning: webhook {hook} failed: {why}");
        }
    }
}

/// Waits for the mesh to answer, at most `within` in all: a simulator started just before
/// (`fledge-sim serve ... &`) is given a moment; one that accepts and never answers is not
/// waited on for each call's own timeout.
async fn wait_for_mesh(mesh: &MeshApi, within: Duration) -> Result<(), String> {
    wait_for("--mesh: the live simulator", within, || async {
        mesh.workloads()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|why| format!("{why} (GET /workloads on {})", mesh.base()))
}

/// Waits for Prometheus to answer a query, at most `within` in all, so that a wrong address is
/// bad input at start-up rather than a rollout rolled back for unreadable metrics.
pub async fn wait_for_prometheus(prometheus: &Prometheus, within: Duration) -> Result<(), String> {
    wait_for("--prometheus: Prometheus", within, || async {
        prometheus.answers(wall_clock()).await
    })
    .await
}

/// Calls `probe` until it succeeds, pausing between tries, for at most `within` in all.
async fn wait_for<F, Fut>(what: &str, within: Duration, mut probe: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let why = match tokio::time::timeout_at(deadline, probe()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => "no answer".to_string(),
        };
        if tokio::time::Instant::now() + START_PAUSE >= deadline {
            return Err(format!(
                "{what} does not answer (tried for {}s): {why}",
                within.as_secs()
            ));
        }
        tokio::time::sleep(START_PAUSE).await;
    }
}

/// A status line when the status the cluster would record changed: phase, canary weight,
/// failed checks, iterations and the last decision.
fn report(out: &mut impl Write, before: &RolloutState, after: &RolloutState) {
    let key = |s: &RolloutState| {
        let s = status::status_of(s, "Deployment", None, None);
        (
            s.phase,
            s.canary_weight,
            s.failed_checks,
            s.iterations,
            s.message,
        )
    };
    let (old, (phase, weight, failed, iterations, message)) = (key(before), key(after));
    if old != (phase.clone(), weight, failed, iterations, message.clone()) {
        let message = one_line(message.as_deref().unwrap_or(""));
        let _ = writeln!(
            out,
            "status: {phase} weight {weight} failedChecks {failed} iterations {iterations}: {message}"
        );
    }
}

/// A message on one line (a spec's problems are listed one a line).
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Unix milliseconds.
fn wall_clock() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes the connection and never answers: each call would wait for its own
    /// 10 s timeout (ten tries, ~100 s, for a promised 5 s). Here 2 s are promised; the bound,
    /// three times that, leaves room for a loaded machine and is short of one call's timeout.
    #[tokio::test]
    async fn the_start_up_wait_on_a_mesh_that_never_answers_is_bounded_as_it_says() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mesh = MeshApi::new(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        // Accepted, held open, never answered.
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        let within = Duration::from_secs(2);
        let waited = tokio::time::timeout(within * 3, wait_for_mesh(&mesh, within)).await;
        held.abort();
        let e = waited
            .expect("the start-up wait ends within its bound")
            .unwrap_err();
        assert!(e.contains("tried for 2s") && e.contains("no answer"), "{e}");
    }

    /// A wrong `--prometheus` is bad input at the start, not a rollout rolled back later for
    /// metrics it could not read.
    #[tokio::test]
    async fn a_prometheus_that_does_not_answer_at_the_start_is_named_within_the_wait() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let prometheus = Prometheus::new(&address, Duration::from_secs(1), 0).unwrap();
        let within = Duration::from_secs(1);
        let waited = tokio::time::timeout(within * 5, wait_for_prometheus(&prometheus, within))
            .await
            .expect("the start-up wait ends within its bound");
        let e = waited.unwrap_err();
        assert!(
            e.starts_with("--prometheus: ") && e.contains("tried for 1s"),
            "{e}"
        );
        assert!(e.contains(&address), "{e}");
    }
}
