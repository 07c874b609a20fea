//! The reconcile loop. Each reconcile of a Canary:
//!
//! 1. reads the rollout state recorded in its status (a new Canary starts from the default);
//! 2. reads the target, the primary and the routes, and gathers what [`wants`] asks for:
//!    metric readings, webhook answers, an operator's command;
//! 3. calls the pure [`advance`] and carries out its actions in order;
//! 4. writes the new state into the status (only when it changed) and requeues: after the
//!    analysis interval, or sooner while it waits on workloads or gates.
//!
//! Nothing a decision depends on is remembered between reconciles (only the retry backoff is): a
//! controller restarted at any point rebuilds everything from the cluster and makes the same
//! writes it would have made.
//!
//! Bad input (an invalid spec, a missing target, a Deployment without selector, a status that is
//! not a rollout state) is reported with a Warning Event and a status message, once, and the
//! Canary is looked at again later. Routes edited by hand are put back, with an Event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, Event as Finalizing, finalizer};
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use super::providers::{HookCall, Observer, Routing};
use super::telemetry::Metrics;
use super::workloads::{self, WorkloadProblem, Workloads};
use super::{COMMAND_ANNOTATION, Error, FINALIZER, Result, status};
use crate::analysis::MetricReading;
use crate::observe::{Measure, Measurement, QuerySource, Subject, plan, template_not_found};
use crate::rollout::{
    Action, Command, HookOutcome, Millis, Observation, Phase, RolloutState, Severity, advance,
    next_analysis, wants,
};
use crate::router::{Routes, api_resource};
use crate::routes::{Provider, UnknownProvider, service_names};
use crate::spec::{
    Canary, HookGate, MetricTemplate, MetricTemplateSpec, RolloutSpec, ValidationErrors, validate,
};

/// Controller-wide settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The traffic provider of Canaries that name none.
    pub default_provider: Provider,
    /// The longest wait between reconciles while a rollout waits on workloads or gates.
    pub poll: Duration,
    /// How long to wait after a failed reconcile.
    pub retry: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_provider: Provider::Istio,
            poll: Duration::from_secs(10),
            retry: Duration::from_secs(5),
        }
    }
}

/// The clock: Unix milliseconds in the cluster, a test's own counter in tests.
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub routing: Arc<dyn Routing>,
    pub observer: Arc<dyn Observer>,
    pub clock: Clock,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub reporter: Reporter,
    pub backoff: Backoff,
}

/// Consecutive failed reconciles per Canary, for an exponential backoff.
#[derive(Debug, Default)]
pub struct Backoff(std::sync::Mutex<BTreeMap<(String, String), u32>>);

impl Backoff {
    /// The wait after another failure of `key`: `base`, doubled per consecutive failure, at
    /// most five minutes.
    fn failed(&self, key: (String, String), base: Duration) -> Duration {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
        base.saturating_mul(factor).min(Duration::from_secs(300))
    }

    fn succeeded(&self, key: &(String, String)) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

fn key(canary: &Canary) -> (String, String) {
    (canary.namespace().unwrap_or_default(), canary.name_any())
}

impl Context {
    /// A context on the system clock.
    pub fn new(
        client: Client,
        routing: Arc<dyn Routing>,
        observer: Arc<dyn Observer>,
        config: Config,
        metrics: Arc<Metrics>,
    ) -> Self {
        Context {
            client,
            routing,
            observer,
            clock: Arc::new(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .unwrap_or(0)
            }),
            config,
            metrics,
            reporter: Reporter {
                controller: "fledge".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
            backoff: Backoff::default(),
        }
    }
}

/// Reconciles one Canary: the finalizer first, then a tick of the rollout (or its cleanup).
pub async fn reconcile(canary: Arc<Canary>, ctx: Arc<Context>) -> Result<Requeue> {
    let namespace = canary.namespace().ok_or(Error::Unnamed("namespace"))?;
    let name = canary.name_any();
    let span = info_span!("reconcile", namespace = %namespace, canary = %name);
    let _timer = ctx.metrics.reconcile_started();
    let api: Api<Canary> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = key(&canary);
    let result = finalizer(&api, FINALIZER, canary, |event| async {
        match event {
            Finalizing::Apply(c) => Tick::new(&c, &ctx)?.apply().await,
            Finalizing::Cleanup(c) => Tick::new(&c, &ctx)?.cleanup().await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    });
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

/// Counts the failure and retries after a pause that doubles with each consecutive failure.
pub fn error_policy(canary: Arc<Canary>, error: &Error, ctx: Arc<Context>) -> Requeue {
    warn!(namespace = ?canary.namespace(), canary = %canary.name_any(), %error, "reconcile failed");
    ctx.metrics.reconcile_failed(error);
    Requeue::requeue(ctx.backoff.failed(key(&canary), ctx.config.retry))
}

/// Runs the controller over `namespaces` (all when empty) until `shutdown` resolves; marks
/// `ctx.metrics` ready once the Canary lists of every namespace have synced.
pub async fn run(
    ctx: Arc<Context>,
    namespaces: &[String],
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let mut stores = Vec::new();
    let controllers = scopes.into_iter().map(|ns| {
        let client = ctx.client.clone();
        let (canaries, deployments): (Api<Canary>, Api<Deployment>) = match &ns {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (Api::all(client.clone()), Api::all(client)),
        };
        let mut controller = Controller::new(canaries, watcher::Config::default());
        // The default provider's routing objects (owned by their Canaries): an edit by hand is
        // put back at once rather than at the next analysis tick.
        let resource = api_resource(ctx.config.default_provider.routing_kind());
        let routes: Api<DynamicObject> = match &ns {
            Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &resource),
            None => Api::all_with(ctx.client.clone(), &resource),
        };
        controller = controller.owns_with(routes, resource, watcher::Config::default());
        let store = controller.store();
        stores.push(store.clone());
        let unsynced_stop = super::stop_if_unsynced(store.clone(), shutdown.clone());
        let services: Api<Service> = match &ns {
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
            None => Api::all(ctx.client.clone()),
        };
        controller
            // The primary and the generated Services: a change by hand is seen at once.
            .owns(deployments.clone(), watcher::Config::default())
            .owns(services, watcher::Config::default())
            // A change to a target Deployment (a new revision, readiness) wakes its Canaries.
            .watches(deployments, watcher::Config::default(), move |dep| {
                let (ns, name) = (dep.namespace(), dep.name_any());
                store
                    .state()
                    .into_iter()
                    .filter(|c| c.namespace() == ns && c.spec.target_ref.name == name)
                    .map(|c| kube::runtime::reflector::ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            })
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, ctx.clone())
            .take_until(unsynced_stop)
            .for_each(|res| async move {
                if let Err(e) = res {
                    warn!(error = %e, "controller");
                }
            })
    });
    let controllers = futures::future::join_all(controllers);
    let ready = super::ready_when_synced(stores, ctx.metrics.clone());
    futures::future::select(Box::pin(controllers), Box::pin(ready)).await;
}

/// Why a Canary cannot be acted on; reported, not retried as an error.
#[derive(Debug)]
enum Problem {
    InvalidSpec(String),
    UnreadableState(String),
    TargetNotFound(String),
    Workload(WorkloadProblem),
    UnknownCommand(String),
}

impl Problem {
    fn reason(&self) -> &'static str {
        match self {
            Problem::InvalidSpec(_) => "InvalidSpec",
            Problem::UnreadableState(_) => "UnreadableStatus",
            Problem::TargetNotFound(_) => "TargetNotFound",
            Problem::Workload(WorkloadProblem::NoSelector { .. }) => "TargetWithoutSelector",
            Problem::Workload(WorkloadProblem::UnsupportedKind { .. }) => "UnsupportedTarget",
            Problem::UnknownCommand(_) => "UnknownCommand",
        }
    }

    fn message(&self) -> String {
        match self {
            Problem::InvalidSpec(e) => format!("the Canary's spec is invalid:\n{e}"),
            Problem::UnreadableState(e) => format!(
                "status.state is not a rollout state ({e}); nothing is changed until it is \
                 cleared or fixed"
            ),
            Problem::TargetNotFound(name) => {
                format!("target Deployment {name} not found (spec.targetRef.name)")
            }
            Problem::Workload(p) => p.to_string(),
            Problem::UnknownCommand(c) => format!(
                "annotation {COMMAND_ANNOTATION}: unknown command `{c}`; expected promote or abort"
            ),
        }
    }
}

/// One reconcile of one Canary.
struct Tick<'a> {
    canary: &'a Canary,
    ctx: &'a Context,
    namespace: String,
    name: String,
    /// `spec.provider`, or the controller's default; unknown names fail every routing call.
    provider: std::result::Result<Provider, UnknownProvider>,
    api: Api<Canary>,
    workloads: Workloads,
    now: Millis,
}

impl<'a> Tick<'a> {
    fn new(canary: &'a Canary, ctx: &'a Context) -> Result<Self> {
        let namespace = canary.namespace().ok_or(Error::Unnamed("namespace"))?;
        let name = canary.metadata.name.clone().ok_or(Error::Unnamed("name"))?;
        let provider = match canary.spec.provider.as_deref().filter(|p| !p.is_empty()) {
            Some(name) => name.parse(),
            None => Ok(ctx.config.default_provider),
        };
        Ok(Tick {
            canary,
            ctx,
            api: Api::namespaced(ctx.client.clone(), &namespace),
            workloads: Workloads::new(ctx.client.clone(), &namespace),
            now: (ctx.clock)(),
            namespace,
            name,
            provider,
        })
    }

    async fn apply(&self) -> Result<Requeue> {
        let spec = match validate(&self.canary.spec) {
            Ok(spec) => spec,
            Err(e) => return self.report(Problem::InvalidSpec(e.to_string())).await,
        };
        // Validation checked an explicit provider; the default one is checked here.
        let unroutable = spec.strategy.unroutable_by(self.provider()?);
        if !unroutable.is_empty() {
            let e = ValidationErrors(unroutable).to_string();
            return self.report(Problem::InvalidSpec(e)).await;
        }
        let state = match status::recorded_state(self.canary.status.as_ref()) {
            Ok(state) => state.unwrap_or_default(),
            Err(e) => return self.report(Problem::UnreadableState(e)).await,
        };
        let kind = &self.canary.spec.target_ref.kind;
        if !kind.is_empty() && kind != "Deployment" {
            let problem = WorkloadProblem::UnsupportedKind {
                target: spec.target.clone(),
                kind: kind.clone(),
            };
            return self.report(Problem::Workload(problem)).await;
        }
        let Some(target) = self.workloads.deployment(&spec.target).await? else {
            // Never leave traffic on a canary that has gone.
            if state.canary_weight > 0 || state.mirror.is_some() || state.matched {
                self.set_routes(Routes::PRIMARY_ONLY).await?;
            }
            return self
                .report(Problem::TargetNotFound(spec.target.clone()))
                .await;
        };
        if let Err(p) = workloads::selector_labels(&target) {
            return self.report(Problem::Workload(p)).await;
        }
        let command = match self.command() {
            Ok(c) => c,
            Err(p) => {
                self.clear_command().await?;
                return self.report(p).await;
            }
        };
        let primary_name = workloads::primary_name(&spec.target);
        let primary = self.workloads.deployment(&primary_name).await?;
        if state.revision.is_some() && state.phase != Phase::Initializing {
            // Picks up edits of the Canary's service and match rules; keeps the weights.
            self.ctx
                .routing
                .reconcile(self.provider()?, self.canary)
                .await
                .map_err(|m| self.route_error(m))?;
            self.restore_drifted_routes(&state).await?;
            self.sync_autoscaler().await?;
        }
        let obs = self
            .observe(&state, &spec, &target, primary.as_ref(), command)
            .await?;
        let (next, actions) = advance(&state, &spec, &obs, self.now);
        for action in actions {
            self.carry_out(action, &spec, &next, &target, primary.as_ref())
                .await?;
        }
        status::write(&self.api, self.canary, &status::status_of(&next)).await?;
        if command.is_some_and(|c| command_used(c, &state, &next)) {
            self.clear_command().await?;
        }
        self.ctx
            .metrics
            .record_canary(&self.namespace, &self.name, &state, &next);
        Ok(Requeue::requeue(self.requeue_after(&next, &spec)))
    }

    /// The Canary is being deleted: routing goes back to the primary (and, with
    /// `revertOnDeletion`, the target is restored) before the finalizer is removed.
    async fn cleanup(&self) -> Result<Requeue> {
        let Ok(Some(mut state)) = status::recorded_state(self.canary.status.as_ref()) else {
            // Never initialised (or unreadable): there is no routing of ours to restore.
            return Ok(Requeue::await_change());
        };
        if state.revision.is_none() {
            return Ok(Requeue::await_change());
        }
        let Ok(spec) = validate(&self.canary.spec) else {
            // The spec was broken after initialisation: routing can still be restored.
            self.ctx
                .routing
                .finalize(self.provider()?, self.canary)
                .await
                .map_err(|m| self.route_error(m))?;
            return Ok(Requeue::await_change());
        };
        let target = self.workloads.deployment(&spec.target).await?;
        let primary = self
            .workloads
            .deployment(&workloads::primary_name(&spec.target))
            .await?;
        let obs = Observation {
            revision: state.revision.clone().unwrap_or_default(),
            deleting: true,
            ..Observation::default()
        };
        // Terminating carries out the finalisation; the next step records it as Terminated.
        for _ in 0..2 {
            if state.phase == Phase::Terminated {
                break;
            }
            let (next, actions) = advance(&state, &spec, &obs, self.now);
            for action in actions {
                match &target {
                    Some(t) => {
                        self.carry_out(action, &spec, &next, t, primary.as_ref())
                            .await?
                    }
                    None => self.carry_out_without_target(action, &next).await?,
                }
            }
            state = next;
        }
        status::write(&self.api, self.canary, &status::status_of(&state)).await?;
        Ok(Requeue::await_change())
    }

    fn command(&self) -> Result<Option<Command>, Problem> {
        match self
            .canary
            .annotations()
            .get(COMMAND_ANNOTATION)
            .map(|s| s.trim())
        {
            None | Some("") => Ok(None),
            Some("promote" | "approve") => Ok(Some(Command::Approve)),
            Some("abort") => Ok(Some(Command::Abort)),
            Some(other) => Err(Problem::UnknownCommand(other.to_string())),
        }
    }

    async fn clear_command(&self) -> Result<()> {
        let patch = serde_json::json!({"metadata": {"annotations": {COMMAND_ANNOTATION: null}}});
        self.api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::Write {
                kind: "Canary",
                name: self.name.clone(),
                source,
            })?;
        Ok(())
    }

    /// A Warning Event and a status message, the first time this problem is seen.
    async fn report(&self, problem: Problem) -> Result<Requeue> {
        let message = problem.message();
        warn!(reason = problem.reason(), %message, "cannot act on canary");
        let current = self.canary.status.as_ref();
        if current.and_then(|s| s.message.as_deref()) != Some(message.as_str()) {
            self.publish(EventType::Warning, problem.reason(), &message)
                .await?;
            status::write(
                &self.api,
                self.canary,
                &status::with_message(current, &message),
            )
            .await?;
        }
        Ok(Requeue::requeue(self.ctx.config.poll * 6))
    }

    async fn publish(&self, type_: EventType, reason: &str, message: &str) -> Result<()> {
        // The Events API caps a note at 1 kB.
        let note: String = message.chars().take(1000).collect();
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        // A recorder per Event: a recorder merges Events of the same reason into a series and
        // drops the later note, and two decisions of one reconcile often share a reason.
        Recorder::new(self.ctx.client.clone(), self.ctx.reporter.clone())
            .publish(&event, &self.canary.object_ref(&()))
            .await
            .map_err(Error::PublishEvent)
    }

    /// Puts routes edited by hand (or deleted) back to what the state says they are.
    async fn restore_drifted_routes(&self, state: &RolloutState) -> Result<()> {
        if matches!(state.phase, Phase::Terminating | Phase::Terminated) {
            return Ok(());
        }
        let want = Routes {
            primary: state.primary_weight(),
            canary: state.canary_weight,
            mirror: state.mirror,
            matched: state.matched,
        };
        let found = self
            .ctx
            .routing
            .get_routes(self.provider()?, self.canary)
            .await;
        let found = match found {
            Ok(found) if found == want => return Ok(()),
            Ok(found) => found.to_string(),
            Err(e) => format!("unreadable ({e})"),
        };
        let message = format!(
            "routes of {} differ from the recorded state (found {found}: edited by hand, or left \
             by an interrupted reconcile); restored to {want}",
            service_names(self.canary).apex
        );
        self.publish(EventType::Warning, "RoutesRestored", &message)
            .await?;
        self.set_routes(want).await
    }

    fn route_error(&self, message: String) -> Error {
        let provider = match &self.provider {
            Ok(p) => p.to_string(),
            Err(e) => e.0.clone(),
        };
        Error::Route { provider, message }
    }

    fn provider(&self) -> Result<Provider> {
        self.provider
            .clone()
            .map_err(|e| self.route_error(e.to_string()))
    }

    async fn set_routes(&self, weights: Routes) -> Result<()> {
        self.ctx
            .routing
            .set_routes(self.provider()?, self.canary, weights)
            .await
            .map_err(|m| self.route_error(m))
    }

    async fn observe(
        &self,
        state: &RolloutState,
        spec: &RolloutSpec,
        target: &Deployment,
        primary: Option<&Deployment>,
        command: Option<Command>,
    ) -> Result<Observation> {
        let want = wants(state, spec, self.now);
        let subject = Subject::of(self.canary);
        let mut metrics = BTreeMap::new();
        for measurement in plan(&want, spec, &subject, self.now) {
            let reading = self.read_metric(&subject, &measurement).await?;
            metrics.insert(measurement.metric, reading);
        }
        let revision = workloads::revision(target);
        let mut hooks = BTreeMap::new();
        for gate in want.hooks {
            for hook in spec.hooks(gate) {
                let call = self.hook_call(gate, state, &revision, None);
                let outcome = self.ctx.observer.call_hook(hook, &call).await;
                hooks.insert(hook.name.clone(), outcome);
            }
        }
        Ok(Observation {
            revision,
            canary: workloads::readiness(target),
            primary: primary.map(workloads::readiness).unwrap_or_default(),
            metrics,
            hooks,
            deleting: false,
            command,
        })
    }

    /// One measurement, with the `MetricTemplate` it names read from the API.
    async fn read_metric(&self, subject: &Subject, m: &Measurement) -> Result<MetricReading> {
        let template: Option<MetricTemplateSpec> = match &m.measure {
            Measure::Query(QuerySource::Template {
                namespace, name, ..
            }) => {
                let api: Api<MetricTemplate> = Api::namespaced(self.ctx.client.clone(), namespace);
                match api.get_opt(name).await {
                    Ok(Some(t)) => Some(t.spec),
                    Ok(None) => {
                        let reason = template_not_found(namespace, name);
                        return Ok(MetricReading::Error { reason });
                    }
                    Err(source) => {
                        return Err(Error::Read {
                            kind: "MetricTemplate",
                            name: format!("{namespace}/{name}"),
                            source,
                        });
                    }
                }
            }
            _ => None,
        };
        Ok(self
            .ctx
            .observer
            .read_metric(self.provider()?, subject, m, template.as_ref())
            .await)
    }

    fn hook_call(
        &self,
        gate: HookGate,
        state: &RolloutState,
        revision: &str,
        message: Option<String>,
    ) -> HookCall {
        HookCall {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            phase: state.phase.to_string(),
            checksum: revision.to_string(),
            gate,
            message,
        }
    }

    /// Calls every hook of `gate`; their answers change nothing (post-rollout, event).
    async fn notify(&self, spec: &RolloutSpec, gate: HookGate, state: &RolloutState, msg: &str) {
        let revision = state.revision.clone().unwrap_or_default();
        let message = (gate == HookGate::Event).then(|| msg.to_string());
        for hook in spec.hooks(gate) {
            let call = self.hook_call(gate, state, &revision, message.clone());
            if let HookOutcome::Failed(why) = self.ctx.observer.call_hook(hook, &call).await {
                warn!(hook = %hook.name, %gate, %why, "webhook failed");
            }
        }
    }

    async fn carry_out(
        &self,
        action: Action,
        spec: &RolloutSpec,
        next: &RolloutState,
        target: &Deployment,
        primary: Option<&Deployment>,
    ) -> Result<()> {
        info!(?action, "carrying out");
        match action {
            Action::InitializePrimary => self.initialize(target).await,
            Action::ScaleCanary { up } => {
                let replicas = if up {
                    self.canary_replicas(primary).await?
                } else {
                    0
                };
                self.workloads.scale(&spec.target, replicas).await
            }
            Action::SetRoutes {
                primary,
                canary,
                mirror,
                matched,
            } => {
                self.set_routes(Routes {
                    primary,
                    canary,
                    mirror,
                    matched,
                })
                .await
            }
            Action::PromotePrimary => {
                let replicas = primary
                    .and_then(|p| p.spec.as_ref())
                    .and_then(|s| s.replicas);
                self.apply_primary(target, replicas).await?;
                self.sync_autoscaler().await
            }
            Action::RunHooks { gate } => {
                self.notify(spec, gate, next, "").await;
                Ok(())
            }
            Action::Event { severity, message } => {
                let (type_, reason) = event_reason(severity, next.phase);
                self.publish(type_, reason, &message).await?;
                self.notify(spec, HookGate::Event, next, &message).await;
                Ok(())
            }
            Action::Finalize { revert } => self.finalize(revert, Some(target), primary).await,
        }
    }

    /// Deletion when the target itself is gone: only routing and events remain to do.
    async fn carry_out_without_target(&self, action: Action, next: &RolloutState) -> Result<()> {
        match action {
            Action::Event { severity, message } => {
                let (type_, reason) = event_reason(severity, next.phase);
                self.publish(type_, reason, &message).await
            }
            Action::Finalize { revert } => self.finalize(revert, None, None).await,
            Action::SetRoutes { .. } => self.set_routes(Routes::PRIMARY_ONLY).await,
            _ => Ok(()),
        }
    }

    /// The primary, the Services, the primary's HPA and the routes (all to the primary).
    async fn initialize(&self, target: &Deployment) -> Result<()> {
        let replicas = target
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .filter(|r| *r > 0)
            .or(Some(1));
        self.apply_primary(target, replicas).await?;
        // The selector was checked before the core ran.
        let selector = workloads::selector_labels(target).unwrap_or_default();
        for svc in workloads::services(self.canary, &selector) {
            self.workloads.apply_service(&svc).await?;
        }
        self.sync_autoscaler().await?;
        self.ctx
            .routing
            .reconcile(self.provider()?, self.canary)
            .await
            .map_err(|m| self.route_error(m))
    }

    async fn apply_primary(&self, target: &Deployment, replicas: Option<i32>) -> Result<()> {
        match workloads::primary_deployment(self.canary, target, replicas) {
            Ok(dep) => self.workloads.apply_deployment(&dep).await,
            // Checked before the core ran; a target edited since is caught on the next tick.
            Err(p) => {
                warn!(problem = %p, "primary not written");
                Ok(())
            }
        }
    }

    async fn target_hpa(&self) -> Result<Option<HorizontalPodAutoscaler>> {
        match &self.canary.spec.autoscaler_ref {
            Some(r) => self.workloads.hpa(&r.name).await,
            None => Ok(None),
        }
    }

    /// Keeps `<hpa>-primary` in step with the HPA on the target; writes only a difference.
    async fn sync_autoscaler(&self) -> Result<()> {
        let Some(hpa) = self.target_hpa().await? else {
            return Ok(());
        };
        let desired = workloads::primary_hpa(self.canary, &hpa);
        let name = desired.metadata.name.clone().unwrap_or_default();
        if let Some(current) = self.workloads.hpa(&name).await?
            && current.spec == desired.spec
        {
            return Ok(());
        }
        self.workloads.apply_hpa(&desired).await
    }

    /// The canary's size while analysed: its HPA's minimum, else the primary's size.
    async fn canary_replicas(&self, primary: Option<&Deployment>) -> Result<i32> {
        let from_hpa = self
            .target_hpa()
            .await?
            .and_then(|h| h.spec)
            .and_then(|s| s.min_replicas);
        let from_primary = primary
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.replicas);
        Ok(from_hpa.or(from_primary).unwrap_or(1).max(1))
    }

    async fn finalize(
        &self,
        revert: bool,
        target: Option<&Deployment>,
        primary: Option<&Deployment>,
    ) -> Result<()> {
        self.ctx
            .routing
            .finalize(self.provider()?, self.canary)
            .await
            .map_err(|m| self.route_error(m))?;
        let Some(target) = target.filter(|_| revert) else {
            return Ok(());
        };
        // Restore the original workload: the target serves again, the apex Service selects it,
        // and the primary goes.
        let replicas = primary
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(1);
        self.workloads
            .scale(&self.canary.spec.target_ref.name, replicas)
            .await?;
        if let Ok(selector) = workloads::selector_labels(target) {
            let mut apex = workloads::services(self.canary, &selector).remove(0);
            if let Some(spec) = apex.spec.as_mut() {
                spec.selector = Some(selector);
            }
            self.workloads.apply_service(&apex).await?;
        }
        if let Some(r) = &self.canary.spec.autoscaler_ref {
            self.workloads
                .delete_hpa(&workloads::primary_name(&r.name))
                .await?;
        }
        self.workloads
            .delete_deployment(&workloads::primary_name(&self.canary.spec.target_ref.name))
            .await
    }

    fn requeue_after(&self, state: &RolloutState, spec: &RolloutSpec) -> Duration {
        let interval = Duration::from_millis(spec.interval.millis());
        let poll = self.ctx.config.poll.min(interval);
        let waiting = state.message.starts_with("waiting");
        match state.phase {
            // The next step, or the statistical judge's next look in between.
            Phase::Progressing if !waiting => match next_analysis(state, spec) {
                Some(due) => Duration::from_millis(due.saturating_sub(self.now))
                    .clamp(poll.min(Duration::from_secs(1)), interval),
                None => poll,
            },
            Phase::Initialized | Phase::Succeeded | Phase::Failed => interval,
            _ => poll,
        }
    }
}

/// Whether a command has done its work and can be cleared. An approval sent between two steps
/// waits for the gate it opens; one sent when no rollout is under way is dropped.
fn command_used(command: Command, before: &RolloutState, after: &RolloutState) -> bool {
    let changed = before.phase != after.phase
        || before.canary_weight != after.canary_weight
        || before.mirror != after.mirror
        || before.iterations != after.iterations;
    command == Command::Abort || changed || !before.phase.is_active()
}

/// The Event reason for a decision: the phase it led to, or why it halted.
fn event_reason(severity: Severity, phase: Phase) -> (EventType, &'static str) {
    match (severity, phase) {
        (Severity::Warning, Phase::Failed) => (EventType::Warning, "RolledBack"),
        (Severity::Warning, _) => (EventType::Warning, "Halted"),
        (Severity::Normal, Phase::Initializing) => (EventType::Normal, "Initializing"),
        (Severity::Normal, Phase::Initialized) => (EventType::Normal, "Initialized"),
        (Severity::Normal, Phase::Waiting) => (EventType::Normal, "Waiting"),
        (Severity::Normal, Phase::Progressing) => (EventType::Normal, "Progressing"),
        (Severity::Normal, Phase::WaitingPromotion) => (EventType::Normal, "WaitingPromotion"),
        (Severity::Normal, Phase::Promoting) => (EventType::Normal, "Promoting"),
        (Severity::Normal, Phase::Finalising) => (EventType::Normal, "Finalising"),
        (Severity::Normal, Phase::Succeeded) => (EventType::Normal, "Succeeded"),
        (Severity::Normal, Phase::Failed) => (EventType::Normal, "Failed"),
        (Severity::Normal, Phase::Terminating | Phase::Terminated) => {
            (EventType::Normal, "Terminating")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_approval_is_kept_until_the_rollout_moves_and_an_abort_is_used_at_once() {
        let at = |phase, canary_weight| RolloutState {
            phase,
            canary_weight,
            ..RolloutState::default()
        };
        let waiting = at(Phase::Progressing, 10);
        assert!(!command_used(Command::Approve, &waiting, &waiting));
        assert!(command_used(
            Command::Approve,
            &waiting,
            &at(Phase::Progressing, 20)
        ));
        assert!(command_used(Command::Abort, &waiting, &waiting));
        let idle = at(Phase::Succeeded, 0);
        assert!(command_used(Command::Approve, &idle, &idle));
    }

    #[test]
    fn each_provider_watches_the_kind_of_routing_object_it_writes() {
        let api_version = |p: &str| {
            let r = api_resource(p.parse::<Provider>().ok()?.routing_kind());
            Some((r.api_version, r.plural))
        };
        assert_eq!(
            api_version("istio"),
            Some((
                "networking.istio.io/v1beta1".into(),
                "virtualservices".into()
            ))
        );
        assert_eq!(
            api_version("linkerd"),
            Some(("split.smi-spec.io/v1alpha2".into(), "trafficsplits".into()))
        );
        assert_eq!(
            api_version("gatewayapi:v1"),
            Some(("gateway.networking.k8s.io/v1".into(), "httproutes".into()))
        );
        assert_eq!(api_version("nginx"), None);
    }

    #[test]
    fn a_rollback_is_reported_as_a_warning_named_rolled_back() {
        assert_eq!(
            event_reason(Severity::Warning, Phase::Failed),
            (EventType::Warning, "RolledBack")
        );
        assert_eq!(
            event_reason(Severity::Warning, Phase::Progressing),
            (EventType::Warning, "Halted")
        );
    }
}
