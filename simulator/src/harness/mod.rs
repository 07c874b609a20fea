//! The harness: the controller's own rollout core, driven over the simulated mesh.
//!
//! It plays the cluster shell's part in virtual time. Every `interval` (and, for the statistical
//! judge, at each of its looks in between) it asks the core what to observe, reads it from the
//! simulated telemetry the way Flagger's built-in Istio and Linkerd queries read Prometheus (the
//! destination sidecars' `istio_requests_total` and duration histogram over the metric's
//! window), answers webhooks as the scenario says, calls `advance`,
//! and carries out the actions on the mesh: a routing decision becomes the very objects the
//! cluster's router applies (built by `fledge_controller::routes` for the Canary's provider),
//! loaded through the manifest loader as `kubectl apply` would load them; scaling and promotion
//! change the versions' pods and behaviour.
//!
//! Like the cluster's routers, it owns the service's routes: routing objects are kept as the API
//! server keeps them (`objects`: by kind, namespace and name; of two claiming one host the older
//! routes it), its objects replace the scenario's object of the same name, and routes a
//! scenario applies mid-run are overwritten by the controller's at once. So that a scenario can
//! inject faults, the default route of the VirtualService the controller's replaces lends its
//! fault injection, timeout and retries to the controller's routes where they set none. The
//! apex Service selects the primary's pods only, as the controller points it. Load testers (`target: canary`) call the
//! canary's own Service (`<service>-canary`), as Flagger's load tester does, and send only while
//! a rollout progresses.
//!
//! Simplifications: pods are ready as soon as they are scaled up, and a promotion replaces the
//! primary's behaviour at once (no rolling update); webhooks answer instantly, and a load-test
//! webhook generates no traffic by itself (a `target: canary` client does).

mod actions;
mod figures;
mod live;
mod objects;
pub mod observe;
mod services;
mod timeline;

use fledge_controller::analysis::MetricResult;
use fledge_controller::rollout::{
    Action, HookOutcome, Observation, Phase, Readiness, RolloutState, Severity, advance,
    look_interval, wants,
};
use fledge_controller::routes::{Provider, Routes};
use fledge_controller::spec::{HookGate, RolloutSpec};

use crate::engine::{MILLIS, SECONDS, SimTime};
use crate::mesh::{
    ClientConfig, ClientId, HeaderProfile, Mesh, MeshConfig, MeshError, NetworkConfig,
    ServiceConfig, ServiceId, VersionConfig, VersionId,
};
use crate::result::{AppliedObject, Decision, RunResult, Sample};
use crate::scenario::{HookAnswer, Scenario, TimelineEntry, Trigger, Variant};
use crate::trace::Tracer;
pub(crate) use live::{Live, LiveApplyError};
use objects::{Store, Writer};

/// Revisions of the target: before and after the scenario's `deploy`.
const OLD_REVISION: &str = "rev-1";
const NEW_REVISION: &str = "rev-2";
/// The start of a warning about a routing object of the controller's that the mesh could not
/// use (a host or backend it does not simulate): the rehearsal then differs from the cluster.
pub const ROUTES_NOT_UNDERSTOOD: &str = "the controller's routing objects: ";
/// Rate shapes are applied as a step function at this resolution.
const SHAPE_STEP: SimTime = 10 * SECONDS;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{file}: the mesh could not be built: {source}")]
    Mesh { file: String, source: MeshError },
    #[error(
        "{file}: the scenario has no Canary: the live mode serves a rollout's workloads and routes"
    )]
    NoCanary { file: String },
}

/// Runs one variant of a scenario with a seed. The result's `checks` are empty: the caller
/// checks them with [`crate::expect::checked`].
pub fn run(scenario: &Scenario, variant: &Variant, seed: u64) -> Result<RunResult, HarnessError> {
    run_watched(scenario, variant, seed, u64::MAX, &mut |_| {})
}

/// [`run`], but the simulation stops at the tick on which the judge decided (the rollout began
/// promoting, or rolled back), so that a run costs what its decision costs. Figures over the
/// run (failed requests, counters) then cover the time up to the decision.
pub fn run_to_decision(
    scenario: &Scenario,
    variant: &Variant,
    seed: u64,
) -> Result<RunResult, HarnessError> {
    let mut h = Harness::new(scenario, variant, seed)?;
    h.stop_at_judgement = true;
    h.run(u64::MAX, &mut |_| {}).map(|(r, _)| r)
}

/// [`run`], telling `progress` the virtual time reached at every tick and after every `every`
/// events between ticks (heavy traffic makes a tick long in wall time).
pub fn run_watched(
    scenario: &Scenario,
    variant: &Variant,
    seed: u64,
    every: u64,
    progress: &mut dyn FnMut(SimTime),
) -> Result<RunResult, HarnessError> {
    Harness::new(scenario, variant, seed)?
        .run(every, progress)
        .map(|(r, _)| r)
}

/// What a run writes besides its result, when asked: every event of the mesh and every
/// decision of the controller (`--trace`, see [`crate::trace`]), and the requests' access log
/// and spans (see [`crate::observability`]).
#[derive(Default)]
pub(crate) struct Writers {
    pub(crate) tracer: Option<Box<Tracer>>,
    pub(crate) outputs: Option<Box<crate::observability::Outputs>>,
}

/// [`run_watched`], writing to `writers`, which come back with the result.
pub(crate) fn run_written(
    scenario: &Scenario,
    variant: &Variant,
    seed: u64,
    every: u64,
    progress: &mut dyn FnMut(SimTime),
    writers: Writers,
) -> Result<(RunResult, Writers), HarnessError> {
    let mut h = Harness::new(scenario, variant, seed)?;
    h.mesh.set_trace(writers.tracer);
    h.mesh.set_outputs(writers.outputs);
    h.run(every, progress)
}

struct Harness<'a> {
    scenario: &'a Scenario,
    variant: &'a Variant,
    seed: u64,
    mesh: Mesh,
    /// The provider whose objects carry the routes.
    provider: Provider,
    /// The routing objects as the API server holds them.
    objects: Store,
    /// The rollout's service and versions; none for a scenario of the mesh alone.
    target: Option<Target>,
    canary_desired: u32,
    revision: &'static str,
    deleting: bool,
    state: RolloutState,
    /// The routes the controller last set, kept over manifests applied mid-run.
    routes: Option<Routes>,
    /// Every routing object applied, with the time: what a cluster's API server would have
    /// received.
    applied_routes: Vec<AppliedObject>,
    /// Load testers: client, the rate it sends at when on, and whether it is on.
    load_testers: Vec<(ClientId, f64, bool)>,
    pending: Vec<TimelineEntry>,
    decisions: Vec<Decision>,
    samples: Vec<Sample>,
    deployed_at: Option<SimTime>,
    decided_at: Option<SimTime>,
    /// When the judge decided: the rollout began promoting or rolled back.
    judged_at: Option<SimTime>,
    stop_at_judgement: bool,
    max_weight: u8,
    warnings: Vec<String>,
}

/// The Canary's service and its two versions, as the mesh numbers them.
#[derive(Clone, Copy)]
struct Target {
    service: ServiceId,
    primary: VersionId,
    canary: VersionId,
}

/// Without a Canary, the plots sample at this interval.
const SAMPLE_STEP: SimTime = 10 * SECONDS;

impl<'a> Harness<'a> {
    /// The rollout's service and versions. Only the rollout's paths ask (the controller's
    /// actions, timeline events naming the primary or the canary, the live mode), which the
    /// scenario loader refuses in a scenario without a Canary.
    fn target(&self) -> Target {
        self.target
            .expect("a rollout's action in a scenario without a Canary, which the loader refuses")
    }

    /// The Canary, on the same paths as [`Self::target`].
    fn rollout_canary(&self) -> &'a fledge_controller::spec::Canary {
        self.scenario
            .canary_resource
            .as_ref()
            .expect("a rollout's action in a scenario without a Canary, which the loader refuses")
    }

    fn new(scenario: &'a Scenario, variant: &'a Variant, seed: u64) -> Result<Self, HarnessError> {
        let mesh_error = |source| HarnessError::Mesh {
            file: scenario.file.display().to_string(),
            source,
        };
        let mut services = Vec::new();
        if scenario.canary_resource.is_some() {
            services.push(rollout_service(scenario));
        }
        services.extend(scenario.other_services().iter().map(|s| {
            let versions = s
                .versions
                .iter()
                .map(|(name, v)| {
                    let mut cfg = VersionConfig::new(name, v.pods, v.behaviour.clone());
                    cfg.sidecar = v.sidecar;
                    cfg.service_account = v.service_account.clone();
                    cfg.labels = v.labels.clone();
                    cfg
                })
                .collect();
            let mut cfg = ServiceConfig::new(&s.name, versions);
            cfg.namespace = Some(scenario.namespace.clone());
            cfg.external = scenario.external_hosts.contains(&s.name);
            cfg
        }));
        let clients = scenario
            .clients
            .iter()
            .map(|c| {
                // A load tester is off until a rollout progresses.
                let rate = if c.load_tester { 0.0 } else { c.rate };
                // A load tester calls the canary's own Service, which no route of the apex
                // service governs.
                let service = if c.load_tester {
                    format!("{}-canary", scenario.service)
                } else {
                    c.service.clone()
                };
                let mut cfg = ClientConfig::new(&c.name, &service, rate);
                cfg.namespace = c.namespace.clone();
                cfg.shape = c.arrivals;
                cfg.sidecar = c.sidecar;
                cfg.gateway = c.gateway.clone();
                cfg.service_account = c.service_account.clone();
                cfg.headers = c
                    .headers
                    .iter()
                    .map(|(weight, headers)| HeaderProfile {
                        weight: *weight,
                        headers: headers.clone(),
                    })
                    .collect();
                cfg
            })
            .collect();
        let config = MeshConfig {
            seed,
            certs: scenario.certificates.clone(),
            namespace: scenario.namespace.clone(),
            services,
            clients,
            data_plane: scenario.data_plane,
            istio_retry_503: scenario.istio_retry_503,
            istio_retry_backoff: scenario.istio_retry_backoff,
            propagation: scenario.propagation.clone(),
            proxy: scenario.proxy.clone(),
            network: NetworkConfig {
                handshake_cpu: scenario
                    .handshake_cpu
                    .unwrap_or(NetworkConfig::default().handshake_cpu),
                ..NetworkConfig::default()
            },
            ..MeshConfig::default()
        };
        let mesh = Mesh::new(config).map_err(mesh_error)?;
        let target = scenario.canary_resource.as_ref().map(|_| {
            let service = mesh
                .service_id(&scenario.service)
                .expect("the service was just built");
            let (primary, canary) = mesh
                .primary_canary(service)
                .expect("the service has both versions");
            Target {
                service,
                primary,
                canary,
            }
        });
        // The scenario loader resolved the provider (the data plane's when the Canary names none).
        let provider = variant
            .spec
            .as_ref()
            .and_then(|s| s.provider)
            .unwrap_or(Provider::Istio);
        let manifests = variant.manifests.as_ref().unwrap_or(&scenario.manifests);
        let mut h = Harness {
            scenario,
            variant,
            seed,
            mesh,
            provider,
            objects: Store::new(&scenario.namespace),
            target,
            canary_desired: 0,
            revision: OLD_REVISION,
            deleting: false,
            state: RolloutState::default(),
            routes: None,
            applied_routes: Vec::new(),
            load_testers: Vec::new(),
            pending: scenario.timeline.clone(),
            decisions: Vec::new(),
            samples: Vec::new(),
            deployed_at: None,
            decided_at: None,
            judged_at: None,
            stop_at_judgement: false,
            max_weight: 0,
            warnings: manifests.warnings.clone(),
        };
        h.apply_objects(manifests, Writer::Scenario)
            .map_err(mesh_error)?;
        h.load_testers = scenario
            .clients
            .iter()
            .filter(|c| c.load_tester)
            .filter_map(|c| Some((h.mesh.client_id(&c.name)?, c.rate, false)))
            .collect();
        h.schedule_rate_shapes().map_err(mesh_error)?;
        Ok(h)
    }

    /// The result, and the writers that were set.
    fn run(
        mut self,
        every: u64,
        progress: &mut dyn FnMut(SimTime),
    ) -> Result<(RunResult, Writers), HarnessError> {
        // Ticks come as often as the judge looks (the cluster shell requeues the same way), and
        // the plots sample at every tick, so that a short step is seen.
        let look = self
            .variant
            .spec
            .as_ref()
            .map_or(SAMPLE_STEP, |spec| look_interval(spec) * MILLIS);
        let mut end = self.scenario.duration;
        let (mut next_tick, mut last_sample) = (0, 0);
        loop {
            let next_event = self
                .pending
                .iter()
                .filter_map(|e| match e.when {
                    Trigger::At(t) => Some(t),
                    Trigger::Weight(_) => None,
                })
                .min()
                .unwrap_or(SimTime::MAX);
            let t = next_tick.min(next_event);
            if t > end {
                break;
            }
            self.run_mesh_until(t, every, progress);
            if next_event <= next_tick {
                self.fire_pending(t);
            } else {
                self.tick(t);
                self.sample(last_sample, t);
                last_sample = t;
                next_tick += look;
                progress(t);
                if self.stop_at_judgement && self.judged_at.is_some() {
                    end = t;
                    break;
                }
            }
        }
        self.run_mesh_until(end, every, progress);
        let writers = Writers {
            tracer: self.mesh.take_trace(),
            outputs: self.mesh.take_outputs(),
        };
        Ok((self.finish(end), writers))
    }

    /// Runs the mesh to `t` in slices of `every` events, telling `progress` the virtual time
    /// after each slice.
    fn run_mesh_until(&mut self, t: SimTime, every: u64, progress: &mut dyn FnMut(SimTime)) {
        while !self.mesh.run_until_within(t, every) {
            progress(self.mesh.now());
        }
    }

    fn tick(&mut self, now: SimTime) {
        // Without a Canary there is no controller: the timeline alone changes the mesh.
        let (Some(spec), Some(target)) = (self.variant.spec.as_ref(), self.target) else {
            self.fire_pending(now);
            return;
        };
        let now_ms = now / MILLIS;
        let w = wants(&self.state, spec, now_ms);
        let obs = Observation {
            revision: self.revision.to_string(),
            canary: Readiness {
                ready: self.mesh.ready_pods(target.canary),
                desired: self.canary_desired,
            },
            primary: Readiness {
                ready: self.mesh.ready_pods(target.primary),
                desired: self.scenario.primary().pods,
            },
            metrics: observe::metrics(&self.mesh, self.scenario, spec, &w, now),
            hooks: w
                .hooks
                .iter()
                .flat_map(|g| self.answer_hooks(spec, *g, now))
                .collect(),
            // The simulated pods never report container states (yet).
            canary_pods: Vec::new(),
            deleting: self.deleting,
            command: None,
            // The simulated gateway accepts every route at once.
            routes_not_accepted: None,
        };
        let before = self.state.clone();
        let (state, actions) = advance(&self.state, spec, &obs, now_ms);
        self.state = state;
        let mut messages = Vec::new();
        let mut warning = false;
        for action in &actions {
            match action {
                Action::Event {
                    severity, message, ..
                } => {
                    warning |= *severity == Severity::Warning;
                    messages.push(message.clone());
                }
                other => self.carry_out(other),
            }
        }
        if self.state.phase.is_active() {
            self.max_weight = self.max_weight.max(self.state.canary_weight);
        }
        if self.deployed_at.is_some()
            && self.decided_at.is_none()
            && matches!(self.state.phase, Phase::Succeeded | Phase::Failed)
        {
            self.decided_at = Some(now);
        }
        if self.deployed_at.is_some()
            && self.judged_at.is_none()
            && matches!(
                self.state.phase,
                Phase::Promoting | Phase::Finalising | Phase::Succeeded | Phase::Failed
            )
        {
            self.judged_at = Some(now);
        }
        if !messages.is_empty() || self.state.message != before.message {
            if messages.is_empty() {
                messages.push(self.state.message.clone());
            }
            // The core analysed on this tick only if it took a step, or if a look between steps
            // saw a regression and rolled back; otherwise (workloads not ready, a hook's
            // rollback, a look that changed nothing) its last analysis is stale and not shown.
            let looked_back = self.state.last_look != before.last_look
                && self.state.phase == Phase::Failed
                && before.phase != Phase::Failed;
            let analysed = w.metrics && (self.state.last_step != before.last_step || looked_back);
            let metrics = if analysed {
                self.state.analysis.clone()
            } else {
                Vec::new()
            };
            self.record(now, metrics, messages, warning, false);
        }
        self.switch_load_testers();
        self.fire_pending(now);
    }

    fn answer_hooks(
        &self,
        spec: &RolloutSpec,
        gate: HookGate,
        now: SimTime,
    ) -> Vec<(String, HookOutcome)> {
        spec.hooks(gate)
            .map(|hook| {
                let outcome = match self
                    .scenario
                    .hooks
                    .get(&hook.name)
                    .unwrap_or(&HookAnswer::Pass)
                {
                    HookAnswer::Pass => HookOutcome::Passed,
                    HookAnswer::Fail => HookOutcome::Failed("HTTP 500 from the scenario".into()),
                    HookAnswer::Timeout => {
                        HookOutcome::Failed(format!("no answer within {}", hook.timeout))
                    }
                    HookAnswer::OpenAt(t) if now >= *t => HookOutcome::Passed,
                    HookAnswer::OpenAt(t) => HookOutcome::Failed(format!(
                        "gate closed until {}",
                        fledge_controller::spec::Duration(t / MILLIS)
                    )),
                };
                (hook.name.clone(), outcome)
            })
            .collect()
    }

    fn record(
        &mut self,
        now: SimTime,
        metrics: Vec<MetricResult>,
        messages: Vec<String>,
        warning: bool,
        scenario_event: bool,
    ) {
        if let Some(t) = self.mesh.tracer() {
            trace_decision(t, now, &self.state, &metrics, &messages);
        }
        self.decisions.push(Decision {
            at_ms: now / MILLIS,
            phase: self.state.phase,
            canary_weight: self.state.canary_weight,
            mirror: self.state.mirror,
            matched: self.state.matched,
            metrics,
            messages,
            warning,
            scenario_event,
        });
    }
}

/// The Canary's service as the controller leaves it before a rollout: the primary serving, the
/// target (the canary) scaled to zero, the apex Service selecting the primary's pods.
fn rollout_service(scenario: &Scenario) -> ServiceConfig {
    let (target, primary_workload) = scenario.workloads();
    let (primary, canary) = (scenario.primary(), scenario.canary());
    let mut primary_cfg = VersionConfig::new("primary", primary.pods, primary.behaviour.clone());
    primary_cfg.workload = Some(primary_workload);
    primary_cfg.sidecar = primary.sidecar;
    primary_cfg.service_account = primary.service_account.clone();
    primary_cfg.labels = primary.labels.clone();
    // The target starts as the current revision and is scaled to zero by initialisation.
    let mut canary_cfg = VersionConfig::new("canary", 0, primary.behaviour.clone());
    canary_cfg.workload = Some(target);
    canary_cfg.sidecar = canary.sidecar;
    canary_cfg.service_account = canary.service_account.clone();
    canary_cfg.labels = canary.labels.clone();
    let mut service = ServiceConfig::new(&scenario.service, vec![primary_cfg, canary_cfg]);
    service.namespace = Some(scenario.namespace.clone());
    service.target_port = scenario.pod_port();
    // The controller points the apex Service at the primary's pods: requests that no
    // routing object of the mesh governs (a VirtualService bound to a gateway only, an
    // HTTPRoute on a Gateway) reach the primary alone, as on a cluster.
    service.selects = Some(vec!["primary".into()]);
    // The new revision may call what the current one does not.
    service.may_call = canary.behaviour.calls.iter().flatten().cloned().collect();
    service
}

/// The controller's side of a trace: the state after a tick, each metric's verdict, then what
/// it said.
fn trace_decision(
    t: &mut Tracer,
    now: SimTime,
    state: &RolloutState,
    metrics: &[MetricResult],
    messages: &[String],
) {
    if t.wants("decision", &["phase", "weight", "mirror"]) {
        let phase = format!("{:?}", state.phase);
        let mirror = state.mirror.map_or_else(|| "-".into(), |m| m.to_string());
        t.emit(
            now,
            "decision",
            &[
                ("phase", &phase),
                ("weight", &state.canary_weight),
                ("mirror", &mirror),
            ],
        );
    }
    if t.wants("metric", &["metric", "value", "verdict", "reason"]) {
        for m in metrics {
            let value = m
                .value
                .map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
            let verdict = format!("{:?}", m.verdict).to_lowercase();
            let reason = format!("{:?}", m.reason);
            t.emit(
                now,
                "metric",
                &[
                    ("metric", &m.name),
                    ("value", &value),
                    ("verdict", &verdict),
                    ("reason", &reason),
                ],
            );
        }
    }
    if t.wants("message", &["text"]) {
        for text in messages {
            t.emit(now, "message", &[("text", &format_args!("{text:?}"))]);
        }
    }
}
