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

mod live;
mod objects;
pub mod observe;

use std::collections::BTreeMap;

use fledge_controller::analysis::MetricResult;
use fledge_controller::rollout::{
    Action, HookOutcome, Observation, Phase, Readiness, RolloutState, Severity, advance,
    look_interval, wants,
};
use fledge_controller::routes::{Provider, Routes};
use fledge_controller::spec::HookGate;

use crate::engine::{MILLIS, SECONDS, SimTime};
use crate::manifest::{self, Manifest, Manifests};
use crate::mesh::{
    self, ClientConfig, ClientId, HeaderProfile, Mesh, MeshConfig, MeshError, ServiceConfig,
    ServiceId, VersionConfig, VersionId,
};
use crate::result::{
    AppliedObject, ClientFigures, Decision, Outcome, RunResult, Sample, WindowFigures,
};
use crate::scenario::{
    Event, HookAnswer, RateShape, Scenario, Side, TimelineEntry, Trigger, Variant,
};
use crate::telemetry::{Reporter, Selector};
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
}

/// Runs one variant of a scenario with a seed. The result's `checks` are empty: the caller
/// checks them with [`crate::expect::check`].
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
    h.run(u64::MAX, &mut |_| {})
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
    Harness::new(scenario, variant, seed)?.run(every, progress)
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
    service: ServiceId,
    primary: VersionId,
    canary: VersionId,
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

impl<'a> Harness<'a> {
    fn new(scenario: &'a Scenario, variant: &'a Variant, seed: u64) -> Result<Self, HarnessError> {
        let mesh_error = |source| HarnessError::Mesh {
            file: scenario.file.display().to_string(),
            source,
        };
        let (target, primary_workload) = scenario.workloads();
        let mut primary = VersionConfig::new(
            "primary",
            scenario.primary.pods,
            scenario.primary.behaviour.clone(),
        );
        primary.workload = Some(primary_workload);
        // The target starts as the current revision and is scaled to zero by initialisation.
        let mut canary = VersionConfig::new("canary", 0, scenario.primary.behaviour.clone());
        canary.workload = Some(target);
        let mut service = ServiceConfig::new(&scenario.service, vec![primary, canary]);
        service.namespace = Some(scenario.namespace.clone());
        // The controller points the apex Service at the primary's pods: requests that no
        // routing object of the mesh governs (a VirtualService bound to a gateway only, an
        // HTTPRoute on a Gateway) reach the primary alone, as on a cluster.
        service.selects = Some(vec!["primary".into()]);
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
                    scenario.service.clone()
                };
                let mut cfg = ClientConfig::new(&c.name, &service, rate);
                cfg.namespace = c.namespace.clone();
                cfg.shape = c.arrivals;
                cfg.sidecar = c.sidecar;
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
            services: vec![service],
            clients,
            data_plane: scenario.data_plane,
            ..MeshConfig::default()
        };
        let mesh = Mesh::new(config).map_err(mesh_error)?;
        let service = mesh
            .service_id(&scenario.service)
            .expect("the service was just built");
        // The scenario loader resolved the provider (the data plane's when the Canary names none).
        let provider = variant.spec.provider.unwrap_or(Provider::Istio);
        let (primary, canary) = mesh
            .primary_canary(service)
            .expect("the service has both versions");
        let mut h = Harness {
            scenario,
            variant,
            seed,
            mesh,
            provider,
            objects: Store::new(&scenario.namespace),
            service,
            primary,
            canary,
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
            warnings: scenario.manifests.warnings.clone(),
        };
        h.apply_objects(&scenario.manifests, Writer::Scenario)
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

    fn schedule_rate_shapes(&mut self) -> Result<(), MeshError> {
        for c in &self.scenario.clients {
            if c.shape == RateShape::Constant {
                continue;
            }
            let id = self
                .mesh
                .client_id(&c.name)
                .expect("clients are built from the scenario");
            let mut t = 0;
            while t < self.scenario.duration {
                let rps = shaped_rate(c.rate, &c.shape, t);
                self.mesh
                    .schedule(t, mesh::Action::SetRate { client: id, rps })?;
                t += SHAPE_STEP;
            }
        }
        Ok(())
    }

    fn run(
        mut self,
        every: u64,
        progress: &mut dyn FnMut(SimTime),
    ) -> Result<RunResult, HarnessError> {
        // Ticks come as often as the judge looks (the cluster shell requeues the same way), and
        // the plots sample at every tick, so that a short step is seen.
        let look = look_interval(&self.variant.spec) * MILLIS;
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
        Ok(self.finish(end))
    }

    /// Runs the mesh to `t` in slices of `every` events, telling `progress` the virtual time
    /// after each slice.
    fn run_mesh_until(&mut self, t: SimTime, every: u64, progress: &mut dyn FnMut(SimTime)) {
        while !self.mesh.run_until_within(t, every) {
            progress(self.mesh.now());
        }
    }

    /// Fires, in timeline order, the pending events whose trigger has come.
    fn fire_pending(&mut self, now: SimTime) {
        self.fire_pending_at(now, self.state.canary_weight);
    }

    /// [`Self::fire_pending`] with the canary's weight given (the live mode reads it from the
    /// routing objects it was sent).
    fn fire_pending_at(&mut self, now: SimTime, weight: u8) {
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|e| match e.when {
                Trigger::At(t) => t <= now,
                Trigger::Weight(w) => weight >= w,
            });
        self.pending = rest;
        for e in due {
            self.fire(now, &e);
        }
    }

    /// Carries out a timeline event and records it.
    fn fire(&mut self, now: SimTime, entry: &TimelineEntry) {
        let version = |side: Side| match side {
            Side::Primary => self.primary,
            Side::Canary => self.canary,
        };
        let (message, result) = match &entry.event {
            Event::Deploy => {
                self.revision = NEW_REVISION;
                self.deployed_at.get_or_insert(now);
                ("scenario: new revision deployed".to_string(), Ok(()))
            }
            Event::Delete => {
                self.deleting = true;
                ("scenario: Canary deleted".to_string(), Ok(()))
            }
            Event::ApplyManifests(m) => {
                let kinds: Vec<String> = m.items.iter().map(manifest_label).collect();
                self.warnings.extend(m.warnings.iter().cloned());
                let result = self.apply_objects(m, Writer::Scenario).and_then(|()| {
                    // The controller owns its service's routes and writes them back on its
                    // next reconcile; the harness does so at once.
                    match self.routes {
                        Some(routes) => self.apply_routes(routes),
                        None => Ok(()),
                    }
                });
                (format!("scenario: applied {}", kinds.join(", ")), result)
            }
            Event::ErrorRate {
                version: side,
                rate,
            } => (
                format!(
                    "scenario: {} error rate set to {:.2}%",
                    side_name(*side),
                    rate * 100.0
                ),
                self.mesh.apply(mesh::Action::SetErrorRate {
                    version: version(*side),
                    rate: *rate,
                }),
            ),
            Event::Latency {
                version: side,
                service_time,
            } => (
                format!("scenario: {} latency changed", side_name(*side)),
                self.mesh.apply(mesh::Action::SetServiceTime {
                    version: version(*side),
                    service_time: service_time.clone(),
                }),
            ),
            Event::PodErrorRate {
                version: side,
                pod,
                rate,
            } => (
                format!(
                    "scenario: {} pod {pod} error rate {}",
                    side_name(*side),
                    rate.map_or("cleared".into(), |r| format!("{:.2}%", r * 100.0))
                ),
                self.mesh.apply(mesh::Action::SetPodErrorRate {
                    version: version(*side),
                    pod: *pod,
                    rate: *rate,
                }),
            ),
            Event::Crash {
                version: side,
                pods,
                restart_after,
            } => {
                let v = version(*side);
                let pods: Vec<u32> = if pods.is_empty() {
                    (0..self.mesh.ready_pods(v)).collect()
                } else {
                    pods.clone()
                };
                let result = pods.iter().try_for_each(|&pod| {
                    self.mesh.apply(mesh::Action::CrashPod {
                        version: v,
                        pod,
                        restart_after: *restart_after,
                    })
                });
                (
                    format!("scenario: {} pods {pods:?} crash", side_name(*side)),
                    result,
                )
            }
            Event::BlackHole {
                version: side,
                pod,
                on,
            } => (
                format!(
                    "scenario: {} pod {pod} {}",
                    side_name(*side),
                    if *on {
                        "becomes a black hole"
                    } else {
                        "recovers"
                    }
                ),
                self.mesh.apply(mesh::Action::BlackHole {
                    version: version(*side),
                    pod: *pod,
                    on: *on,
                }),
            ),
            Event::Rate { client, rps } => {
                let id = self
                    .mesh
                    .client_id(client)
                    .expect("clients are checked by the scenario loader");
                let mut send = Some(*rps);
                if let Some(lt) = self.load_testers.iter_mut().find(|l| l.0 == id) {
                    // A load tester keeps the new rate for when it is on.
                    lt.1 = *rps;
                    send = lt.2.then_some(*rps);
                }
                (
                    format!("scenario: {client} sends {rps} rps"),
                    send.map_or(Ok(()), |rps| {
                        self.mesh.apply(mesh::Action::SetRate { client: id, rps })
                    }),
                )
            }
            Event::CertRotation {
                version: side,
                enabled,
            } => (
                format!(
                    "scenario: certificate rotation of {} {}",
                    side_name(*side),
                    if *enabled { "resumed" } else { "stopped" }
                ),
                self.mesh.apply(mesh::Action::CertRotation {
                    workload: mesh::Workload::Version(version(*side)),
                    enabled: *enabled,
                }),
            ),
        };
        let mut messages = vec![message];
        if let Err(e) = result {
            let warning = format!("line {}: event not applied: {e}", entry.line);
            self.warnings.push(warning.clone());
            messages.push(warning);
        }
        self.record(now, Vec::new(), messages, false, true);
    }

    fn tick(&mut self, now: SimTime) {
        let now_ms = now / MILLIS;
        let spec = &self.variant.spec;
        let w = wants(&self.state, spec, now_ms);
        let obs = Observation {
            revision: self.revision.to_string(),
            canary: Readiness {
                ready: self.mesh.ready_pods(self.canary),
                desired: self.canary_desired,
            },
            primary: Readiness {
                ready: self.mesh.ready_pods(self.primary),
                desired: self.scenario.primary.pods,
            },
            metrics: observe::metrics(&self.mesh, self.scenario, spec, &w, now),
            hooks: w
                .hooks
                .iter()
                .flat_map(|g| self.answer_hooks(*g, now))
                .collect(),
            // The simulated pods never report container states (yet).
            canary_pods: Vec::new(),
            deleting: self.deleting,
            command: None,
        };
        let before = self.state.clone();
        let (state, actions) = advance(&self.state, spec, &obs, now_ms);
        self.state = state;
        let mut messages = Vec::new();
        let mut warning = false;
        for action in &actions {
            match action {
                Action::Event { severity, message } => {
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

    fn answer_hooks(&self, gate: HookGate, now: SimTime) -> Vec<(String, HookOutcome)> {
        self.variant
            .spec
            .hooks(gate)
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

    fn carry_out(&mut self, action: &Action) {
        let result = match action {
            // The router creates its objects, all traffic on the primary, as the primary starts.
            Action::InitializePrimary => self.apply_routes(Routes::PRIMARY_ONLY),
            Action::RunHooks { .. } | Action::Event { .. } => Ok(()),
            Action::ScaleCanary { up } => {
                self.scale_canary(if *up { self.scenario.canary.pods } else { 0 })
            }
            Action::SetRoutes {
                primary,
                canary,
                mirror,
                matched,
            } => self.apply_routes(Routes {
                primary: *primary,
                canary: *canary,
                mirror: *mirror,
                matched: *matched,
            }),
            Action::PromotePrimary => self.promote_primary(),
            Action::Finalize { .. } => self.apply_routes(Routes::PRIMARY_ONLY),
        };
        if let Err(e) = result {
            self.warnings
                .push(format!("{action:?} could not be carried out: {e}"));
        }
    }

    /// Scales the target to `pods`; scaled up, it runs the revision the scenario deployed.
    fn scale_canary(&mut self, pods: u32) -> Result<(), MeshError> {
        self.canary_desired = pods;
        if pods > 0 {
            let behaviour = if self.revision == NEW_REVISION {
                self.scenario.canary.behaviour.clone()
            } else {
                self.scenario.primary.behaviour.clone()
            };
            self.mesh.apply(mesh::Action::SetBehaviour {
                version: self.canary,
                behaviour,
            })?;
        }
        self.mesh.apply(mesh::Action::Scale {
            version: self.canary,
            pods,
        })
    }

    /// Copies the target's template (its behaviour) to the primary.
    fn promote_primary(&mut self) -> Result<(), MeshError> {
        let behaviour = self
            .mesh
            .behaviour(self.canary)
            .cloned()
            .unwrap_or_default();
        self.mesh.apply(mesh::Action::SetBehaviour {
            version: self.primary,
            behaviour,
        })
    }

    /// Routes as the cluster's router would: the provider's objects for `routes`, built by the
    /// controller's own builders and loaded through the manifest loader.
    fn apply_routes(&mut self, routes: Routes) -> Result<(), MeshError> {
        self.routes = Some(routes);
        let objects = match self
            .provider
            .objects(&self.scenario.canary_resource, &routes)
        {
            Ok(objects) => objects,
            Err(e) => return Err(routing_error(format!("the router refuses {routes}: {e}"))),
        };
        let text = objects
            .iter()
            .map(|o| serde_json::to_string(o).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n");
        let loaded = manifest::parse(&text)
            .map_err(|e| routing_error(format!("the router's objects do not load: {e}")))?;
        self.apply_controller_objects(loaded)?;
        self.applied_routes.push(AppliedObject {
            at_ms: self.mesh.now() / MILLIS,
            routes,
            objects,
            mesh_routes: self.mesh.route_table(self.service),
        });
        Ok(())
    }

    /// Applies routing objects the controller wrote, as its router applies them: the default
    /// route of the VirtualService it replaces lends its faults, timeout and retries.
    fn apply_controller_objects(&mut self, mut loaded: Manifests) -> Result<(), MeshError> {
        for item in &mut loaded.items {
            if let Some(Manifest::VirtualService(current)) = self.objects.get(item).cloned()
                && let Manifest::VirtualService(vs) = item
            {
                let dropped = lend_default_route(vs, &current);
                self.warn(Writer::Scenario, dropped);
            }
        }
        let warnings = std::mem::take(&mut loaded.warnings);
        self.warn(Writer::Controller, warnings);
        self.apply_objects(&loaded, Writer::Controller)?;
        if self.mesh.service_policy_bypassed(self.service) {
            self.warn(
                Writer::Scenario,
                vec![format!(
                    "a DestinationRule on `{}` sets a trafficPolicy the controller's routes bypass: they name the primary and canary by their own hosts, which take only their own DestinationRules; put the policy in the Canary's service.trafficPolicy",
                    self.scenario.service
                )],
            );
        }
        Ok(())
    }

    /// Applies objects as the API server takes them from `writer`, then what is in effect to
    /// the mesh: objects of other kinds directly, routing objects as the store resolves them
    /// (by kind, namespace and name; the older of two claims on a host wins) over the data
    /// plane's default routes.
    fn apply_objects(&mut self, m: &Manifests, writer: Writer) -> Result<(), MeshError> {
        let mut direct = Manifests::default();
        for item in &m.items {
            if Store::keeps(item) {
                self.objects.apply(item.clone(), writer);
            } else {
                direct.items.push(item.clone());
            }
        }
        let warnings = self.mesh.apply_manifests(&direct)?;
        self.warn(writer, warnings);
        let (effective, conflicts) = self.objects.effective();
        self.warn(Writer::Scenario, conflicts);
        // What the store holds now is all that routes: a replaced object's rules, timeouts,
        // retries and faults go with it.
        self.mesh.reset_routes();
        for e in effective {
            let one = Manifests {
                items: vec![e.manifest],
                warnings: Vec::new(),
            };
            let warnings = self.mesh.apply_manifests(&one)?;
            self.warn(e.writer, warnings);
        }
        Ok(())
    }

    /// Records warnings once each; those about the controller's objects say so.
    fn warn(&mut self, writer: Writer, warnings: Vec<String>) {
        for w in warnings {
            let w = match writer {
                Writer::Controller => format!("{ROUTES_NOT_UNDERSTOOD}{w}"),
                Writer::Scenario => w,
            };
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
    }

    /// Load testers send while a rollout progresses, from its first step on (Flagger runs them
    /// from rollout hooks, which start with the analysis).
    fn switch_load_testers(&mut self) {
        let on = self.state.phase == Phase::Progressing && self.state.pre_rollout_done;
        for i in 0..self.load_testers.len() {
            let (client, rps, was) = self.load_testers[i];
            if was != on {
                self.load_testers[i].2 = on;
                let rps = if on { rps } else { 0.0 };
                if let Err(e) = self.mesh.apply(mesh::Action::SetRate { client, rps }) {
                    self.warnings.push(format!("load tester not switched: {e}"));
                }
            }
        }
    }

    fn sample(&mut self, from: SimTime, now: SimTime) {
        // Counts before `now` come from scrapes, as Prometheus has them: the window starts at
        // the last scrape at or before `from`, and rates are over that window.
        let scrape = self.mesh.telemetry().scrape_interval().max(1);
        let from = from - from % scrape;
        let figures = |stats: crate::telemetry::WindowStats| WindowFigures {
            requests: stats.requests,
            success_rate: stats.success_rate().map(|r| r * 100.0),
            p99_ms: stats.quantile_ms(0.99),
        };
        let primary = figures(self.mesh.destination_stats(self.primary, from, now));
        let canary = figures(self.mesh.destination_stats(self.canary, from, now));
        let (sent, failed) = [self.primary, self.canary]
            .iter()
            .map(|v| self.mesh.source_stats(*v, from, now))
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

    fn record(
        &mut self,
        now: SimTime,
        metrics: Vec<MetricResult>,
        messages: Vec<String>,
        warning: bool,
        scenario_event: bool,
    ) {
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

    /// The run's result, with figures up to `end`.
    fn finish(self, end: SimTime) -> RunResult {
        let applied_routes = self.applied_routes.clone();
        let outcome = match (self.deployed_at, self.state.phase) {
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
        for v in [self.primary, self.canary] {
            let s = self.mesh.source_stats(v, 0, end);
            requests += s.requests;
            failed += s.failures;
        }
        let failed_canary = self.mesh.source_stats(self.canary, 0, end).failures;
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
                })
            })
            .collect();
        let mut counters: BTreeMap<String, u64> = crate::telemetry::counter_names()
            .map(|name| (name.to_string(), 0))
            .collect();
        counters.insert("cert_rotations".into(), self.mesh.stats().cert_rotations);
        counters.insert(
            "requests_primary".into(),
            self.mesh.source_stats(self.primary, 0, end).requests,
        );
        counters.insert(
            "requests_canary".into(),
            self.mesh.source_stats(self.canary, 0, end).requests,
        );
        for c in &self.scenario.clients {
            let Some(id) = self.mesh.client_id(&c.name) else {
                continue;
            };
            for v in [self.primary, self.canary] {
                let proxy = self.mesh.proxy_counters(id, v);
                for (name, get) in crate::telemetry::PROXY_COUNTERS {
                    *counters.entry(name.to_string()).or_default() += get(&proxy);
                }
            }
        }
        let mut warnings = self.warnings;
        if self.mesh.destination_stats(self.canary, 0, end).requests == 0 {
            warnings.push(
                "the canary never received a request: nothing was judged on its traffic (check the clients' rates, the routes and the time of the deploy)"
                    .into(),
            );
        }
        RunResult {
            scenario: self.scenario.name.clone(),
            variant: self.variant.name.clone(),
            seed: self.seed,
            outcome,
            deployed_at_ms: self.deployed_at.map(|t| t / MILLIS),
            decided_at_ms: self.decided_at.map(|t| t / MILLIS),
            judged_at_ms: self.judged_at.map(|t| t / MILLIS),
            max_canary_weight: self.max_weight,
            final_phase: self.state.phase,
            final_message: self.state.message.clone(),
            requests,
            failed_requests: failed,
            failed_requests_canary: failed_canary,
            success_rate: (requests > 0).then(|| 100.0 * (1.0 - failed as f64 / requests as f64)),
            decisions: self.decisions,
            samples: self.samples,
            checks: Vec::new(),
            events_processed: self.mesh.stats().events,
            clients,
            counters,
            warnings,
            applied_routes,
        }
    }
}

fn routing_error(reason: String) -> MeshError {
    MeshError::InvalidConfig {
        what: "routes".into(),
        reason,
    }
}

/// The default route (the last without a match) of the VirtualService the controller's
/// replaces, the one of the same namespace and name, lends its fault injection to the
/// controller's routes that set none: the way a scenario injects faults under the controller's
/// routing (on a cluster the controller's apply replaces `spec.http`, fault and all). Its
/// timeout and retries are not lent: the Canary sets those, so they are dropped with a
/// warning naming where they go. A VirtualService of another name is another object.
fn lend_default_route(
    controller: &mut manifest::VirtualService,
    current: &manifest::VirtualService,
) -> Vec<String> {
    let Some(default) = current
        .http
        .iter()
        .rev()
        .find(|r| r.matches.is_empty() && !r.matches_none)
    else {
        return Vec::new();
    };
    for r in &mut controller.http {
        if r.fault.is_none() {
            r.fault = default.fault.clone();
        }
    }
    let dropped = [
        (default.timeout.is_some(), "timeout", "service.timeout"),
        (default.retries.is_some(), "retries", "service.retries"),
    ];
    dropped
        .iter()
        .filter(|(set, _, _)| *set)
        .map(|(_, what, field)| {
            format!(
                "VirtualService {}: the controller's routes replace its {what}, as on a cluster; set the Canary's {field} instead",
                current.name
            )
        })
        .collect()
}

/// `Kind name` of a manifest, for the timeline.
fn manifest_label(m: &Manifest) -> String {
    match m {
        Manifest::VirtualService(x) => format!("VirtualService {}", x.name),
        Manifest::DestinationRule(x) => format!("DestinationRule {}", x.name),
        Manifest::PeerAuthentication(x) => format!("PeerAuthentication {}", x.name),
        Manifest::ServiceProfile(x) => format!("ServiceProfile {}", x.name),
        Manifest::TrafficSplit(x) => format!("TrafficSplit {}", x.name),
        Manifest::HttpRoute(x) => format!("HTTPRoute {}", x.name),
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Primary => "primary",
        Side::Canary => "canary",
    }
}

/// A client's rate at time `t` under its shape.
pub fn shaped_rate(base: f64, shape: &RateShape, t: SimTime) -> f64 {
    match *shape {
        RateShape::Constant => base,
        RateShape::Ramp { from, to, over } => {
            if t <= from {
                base
            } else if over == 0 || t >= from + over {
                to
            } else {
                base + (to - base) * (t - from) as f64 / over as f64
            }
        }
        RateShape::Diurnal { amplitude, period } => {
            let phase = (t % period) as f64 / period as f64;
            (base * (1.0 + amplitude * (2.0 * std::f64::consts::PI * phase).sin())).max(0.0)
        }
        RateShape::Bursts {
            every,
            length,
            factor,
        } => {
            if t % every < length {
                base * factor
            } else {
                base
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_shapes_follow_their_definitions() {
        let ramp = RateShape::Ramp {
            from: 10 * SECONDS,
            to: 300.0,
            over: 100 * SECONDS,
        };
        assert_eq!(shaped_rate(100.0, &ramp, 0), 100.0);
        assert_eq!(shaped_rate(100.0, &ramp, 60 * SECONDS), 200.0);
        assert_eq!(shaped_rate(100.0, &ramp, 500 * SECONDS), 300.0);
        let diurnal = RateShape::Diurnal {
            amplitude: 0.5,
            period: 400 * SECONDS,
        };
        assert!((shaped_rate(100.0, &diurnal, 100 * SECONDS) - 150.0).abs() < 1e-9);
        let bursts = RateShape::Bursts {
            every: 60 * SECONDS,
            length: 10 * SECONDS,
            factor: 4.0,
        };
        assert_eq!(shaped_rate(50.0, &bursts, 65 * SECONDS), 200.0);
        assert_eq!(shaped_rate(50.0, &bursts, 75 * SECONDS), 50.0);
    }
}
