//! Scenario files: one YAML document describing a mesh, its traffic, a Canary, what happens on
//! a timeline, and what must come out. See `scenarios/README.md` for the format.
//!
//! Loading is strict: unknown keys are errors, and every error names the file, the line and the
//! field. A loaded [`Scenario`] is fully checked: the harness runs it without further validation.
//!
//! Loading (this file) builds a [`Scenario`] through one `Context` that knows where each field
//! is written; each section has a file: `model` (versions, certificates), `traffic`,
//! `timeline` (events, webhooks), `expectations` (variants, checks), `canary` and `manifests`.

mod calls;
mod canary;
mod expectations;
mod external;
mod ingress;
mod manifests;
mod model;
mod names;
mod patch;
mod raw;
mod services;
mod source;
mod timeline;
mod traffic;
mod vary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fledge_controller::spec::{Canary, MetricTemplate, RolloutSpec};

use crate::engine::SimTime;
use crate::manifest::Manifests;
use crate::manifest::yaml::Outline;
use crate::mesh::config::{CertConfig, DataPlane};

/// The longest scenario: 30 days is far beyond any rollout Flagger's settings make sensible
/// (a 1h interval over 100 steps is about 4 days) and leaves room for weeks of diurnal
/// traffic, while a typo such as `100000h` (11 years, hours of wall time) is refused.
const MAX_DURATION: SimTime = 720 * 3600 * crate::engine::SECONDS;

pub use crate::result::Outcome;
pub use expectations::{Expectations, Variant};
pub(crate) use expectations::{FigureBound, Subject};
pub use model::Version;
pub use timeline::{Event, Side, TimelineEntry};
pub use traffic::{Client, RateShape};

pub(crate) use patch::Patch;
pub(crate) use services::ServiceModel;
pub(crate) use source::{load_error_place, read_bounded};
pub(crate) use timeline::{HookAnswer, Trigger};

/// A scenario, checked and ready to run.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub(crate) name: String,
    pub description: String,
    pub(crate) file: PathBuf,
    pub seed: u64,
    pub duration: SimTime,
    pub(crate) data_plane: DataPlane,
    pub namespace: String,
    /// The rollout's service: the Canary's target, `services[0]`; empty without a Canary.
    pub(crate) service: String,
    /// Every service, the rollout's first (see [`services`]), then the external hosts.
    pub(crate) services: Vec<ServiceModel>,
    /// The services that are hosts outside the mesh (`external`, see [`external`]).
    pub(crate) external_hosts: Vec<String>,
    pub clients: Vec<Client>,
    pub(crate) manifests: Manifests,
    /// The texts `manifests` was read from, in order.
    pub(crate) manifest_sources: Vec<manifests::ManifestSource>,
    /// The Canary; none for a scenario of the mesh alone (no rollout, no controller).
    pub canary_resource: Option<Canary>,
    /// The MetricTemplates given beside the Canary, for its `templateRef` metrics.
    pub metric_templates: Vec<MetricTemplate>,
    /// The Canary's validated spec; none without a Canary.
    pub(crate) spec: Option<RolloutSpec>,
    pub timeline: Vec<TimelineEntry>,
    pub(crate) hooks: BTreeMap<String, HookAnswer>,
    /// Runs of the scenario: one, or one per judge variant.
    pub variants: Vec<Variant>,
    /// Workload certificate lifetime and rotation.
    pub(crate) certificates: CertConfig,
    /// Istio's default retry policy also retries 503 (`istio.version` up to 1.23, or
    /// `istio.exclude_unsafe_503_from_default_retry: false`).
    pub istio_retry_503: bool,
    /// `retries.backoff` takes effect (`istio.version` 1.26 or later, or none given).
    pub istio_retry_backoff: bool,
    /// How route changes reach the proxies (`control_plane`).
    pub(crate) propagation: crate::mesh::Propagation,
    /// What the client workloads' sidecars cost (`proxy`; a version's is its behaviour's).
    pub(crate) proxy: Option<crate::mesh::ProxyCost>,
    /// A TLS handshake's CPU per side (`proxy.cpu_per_handshake`), when set.
    pub(crate) handshake_cpu: Option<SimTime>,
    /// Input that loads but is questionable: a setting changed or unused, a resource the
    /// scenario's mesh would not read, an event after the end. Shown once per command.
    pub warnings: Vec<String>,
}

/// A scenario that cannot be used, with where and why.
/// `file:line: field: message`; without a line or a field (the file itself), those parts are
/// left out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ScenarioError {
    pub file: String,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = read_bounded(path).map_err(|message| ScenarioError {
            file: path.display().to_string(),
            line: None,
            field: String::new(),
            message,
        })?;
        Scenario::parse(&text, path)
    }

    /// Checks a scenario given as text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        if source::is_empty(text) {
            return Err(ScenarioError {
                file: path.display().to_string(),
                line: None,
                field: String::new(),
                message: "the file is empty".into(),
            });
        }
        let mut cx = Context {
            outline: Outline::of(text),
            file: path.display().to_string(),
            dir: path.parent().map(Path::to_path_buf),
            service: String::new(),
            others: Vec::new(),
            external_hosts: Vec::new(),
            namespace: String::new(),
            data_plane: DataPlane::Istio,
            proxy: None,
            proxy_threads: false,
            proxy_written: None,
            warnings: Vec::new(),
        };
        let raw = raw::parse(text)
            .map_err(|(field, line, message)| cx.error_at(&field, line, message))?;
        cx.build(raw, path)
    }

    /// The services whose versions the scenario names: all but the rollout's (every one
    /// without a Canary).
    pub(crate) fn other_services(&self) -> &[ServiceModel] {
        &self.services[usize::from(self.canary_resource.is_some())..]
    }

    /// The rollout's stable version.
    pub(crate) fn primary(&self) -> &Version {
        &self.services[0].versions[0].1
    }

    /// The new revision's behaviour (deployed by the timeline's `deploy`).
    pub fn canary(&self) -> &Version {
        &self.services[0].versions[1].1
    }

    /// The Canary's target workload name (the canary), and the primary's.
    pub(crate) fn workloads(&self) -> (String, String) {
        let target = self.spec.as_ref().map_or("", |s| s.target.as_str());
        (target.to_string(), format!("{target}-primary"))
    }

    /// The port the pods serve on: the Canary's `service.targetPort` when it is a number,
    /// else its `service.port` (a named port is the same container port).
    pub(crate) fn pod_port(&self) -> u32 {
        use fledge_controller::spec::IntOrString;
        let Some(canary) = &self.canary_resource else {
            return 80;
        };
        let svc = &canary.spec.service;
        let port = match &svc.target_port {
            Some(IntOrString::Int(p)) => *p,
            _ => svc.port,
        };
        u32::try_from(port).unwrap_or(80)
    }
}

struct Context {
    /// Where each field of the scenario is written.
    outline: Outline,
    file: String,
    dir: Option<PathBuf>,
    /// The simulated service and its namespace, for checking the manifests' routes.
    service: String,
    /// The scenario's other services, for checking the manifests' routes and the traffic.
    others: Vec<ServiceModel>,
    /// The external hosts (`external`), which calls may name.
    external_hosts: Vec<String>,
    namespace: String,
    data_plane: DataPlane,
    /// What every sidecar costs unless its version says otherwise (`proxy`).
    proxy: Option<crate::mesh::ProxyCost>,
    /// Whether `proxy` sets `concurrency` (meshConfig's ProxyConfig), which a CPU limit keeps.
    proxy_threads: bool,
    /// The first `proxy` written (its field), for the warning under `mesh: linkerd`.
    proxy_written: Option<String>,
    warnings: Vec<String>,
}

/// Why a timeline entry needs a rollout (a deploy, the Canary's deletion, a trigger at the
/// canary's weight, an event at the primary or the canary), if it does.
fn needs_rollout(entry: &TimelineEntry) -> Option<&'static str> {
    if matches!(entry.when, Trigger::Weight(_)) {
        return Some("`when_weight` waits for the canary's weight");
    }
    match &entry.event {
        Event::Deploy => Some("`deploy` starts a rollout"),
        Event::Delete => Some("`delete` deletes the Canary"),
        Event::Rate { .. } | Event::ApplyManifests(_) | Event::Scale { .. } => None,
        Event::ErrorRate { version, .. }
        | Event::Latency { version, .. }
        | Event::PodErrorRate { version, .. }
        | Event::Crash { version, .. }
        | Event::BlackHole { version, .. }
        | Event::CertRotation { version, .. } => match version {
            Side::Named { .. } => None,
            Side::Primary | Side::Canary => Some(
                "it acts on the rollout's primary or canary (`version`); name a version of a service with `service` and `version`",
            ),
        },
    }
}

impl Context {
    /// The Canary's target must be the rollout's service, and its Services must be named
    /// after it.
    fn check_rollout_service(
        &self,
        canary: &Canary,
        spec: &RolloutSpec,
        rollout: &str,
    ) -> Result<(), ScenarioError> {
        if spec.target != rollout {
            return Err(self.error(
                "canary.spec.targetRef.name",
                format!(
                    "targets `{}`, but the scenario's service is `{rollout}`",
                    spec.target
                ),
            ));
        }
        let apex = fledge_controller::routes::service_names(canary).apex;
        if apex != rollout {
            // The router's objects would route `apex`, which no client of the scenario calls.
            return Err(self.error(
                "canary.spec.service.name",
                format!(
                    "names the Canary's Services `{apex}`, `{apex}-primary` and `{apex}-canary`, but the scenario's service is `{rollout}`: the controller's routes would govern a Service no client calls. Name the scenario's service `{apex}`, or leave service.name out",
                ),
            ));
        }
        Ok(())
    }

    fn error_at(
        &self,
        field: &str,
        line: Option<usize>,
        message: impl Into<String>,
    ) -> ScenarioError {
        ScenarioError {
            file: self.file.clone(),
            line: line.or_else(|| self.outline.line(0, field)),
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn error(&self, field: &str, message: impl Into<String>) -> ScenarioError {
        self.error_at(field, None, message)
    }

    fn duration(&self, field: &str, text: &str) -> Result<SimTime, ScenarioError> {
        fledge_controller::spec::parse_nanos(text).map_err(|_| {
            self.error(
                field,
                format!("`{text}` is not a duration: expected e.g. `30s`, `10m`, `1h30m`, `250ms`"),
            )
        })
    }

    fn build(&mut self, raw: raw::Scenario, path: &Path) -> Result<Scenario, ScenarioError> {
        let written = self.written(&raw)?;
        let rollout = raw.canary.is_some() || raw.canary_file.is_some();
        if let services::Written::One(one) = &written {
            if !rollout {
                return Err(self.error(
                    "service",
                    "`service:` is the Canary's service with its primary and canary; a scenario without a Canary lists its services under `services:`",
                ));
            }
            self.service = one.name.clone();
        }
        self.namespace = raw.namespace.clone().unwrap_or_else(|| "default".into());
        let duration = self.duration("duration", &raw.duration)?;
        if !(1..=MAX_DURATION).contains(&duration) {
            return Err(self.error(
                "duration",
                format!(
                    "must be between 1ns and 720h (30 days), got `{}`",
                    raw.duration.trim()
                ),
            ));
        }
        let (proxy, handshake_cpu) = self.mesh_proxy(raw.proxy.as_ref())?;
        self.proxy = proxy.clone();
        self.proxy_threads = raw.proxy.as_ref().is_some_and(|p| p.concurrency.is_some());
        if raw.proxy.is_some() {
            self.proxy_written = Some("proxy".into());
        }
        let mut externals = self.externals(&raw.external)?;
        self.external_hosts = externals.iter().map(|s| s.name.clone()).collect();
        // The short form's versions are checked first, as they always were.
        let mut services = match &written {
            services::Written::One(one) => Some(self.services(&written, &one.name)?),
            services::Written::Many(_) => None,
        };

        self.data_plane = match raw.mesh.as_deref().unwrap_or("istio") {
            "istio" => DataPlane::Istio,
            "linkerd" => DataPlane::Linkerd,
            other => {
                return Err(self.error(
                    "mesh",
                    format!("must be `istio` or `linkerd`, got `{other}`"),
                ));
            }
        };
        let data_plane = self.data_plane;
        if data_plane == DataPlane::Linkerd
            && let Some(field) = self.proxy_written.take()
        {
            let line = self.line_note(&field);
            self.warnings.push(format!(
                "{field}{line}: under `mesh: linkerd` the sidecars are linkerd2-proxy, but `proxy` models Envoy's worker threads (`concurrency`, `cpu_limit` as Istio sets them) and Istio's published costs: read its figures as an Envoy sidecar's"
            ));
        }
        let (canary_resource, spec, metric_templates, rollout) = if rollout {
            let (canary, spec, templates) = self.canary(&raw)?;
            let name = self.rollout_service(&written, &spec.target)?;
            self.check_rollout_service(&canary, &spec, &name)?;
            (Some(canary), Some(spec), templates, name)
        } else {
            // No service is the rollout's: every one is written version by version.
            (None, None, Vec::new(), String::new())
        };
        let services = match services.take() {
            Some(s) => s,
            None => self.services(&written, &rollout)?,
        };
        self.service = rollout.clone();
        self.others = services[usize::from(spec.is_some())..].to_vec();
        self.others.extend(externals.iter().cloned());
        let (manifests, manifest_sources) = self.manifests(&raw)?;
        self.resolve_externals(&mut externals, &services, &manifests)?;
        let external_hosts = std::mem::take(&mut self.external_hosts);
        let mut services = services;
        services.extend(externals);

        let mut clients = Vec::new();
        for (i, c) in raw.traffic.iter().enumerate() {
            let client = self.client(&format!("traffic[{i}]"), c, &services)?;
            if clients.iter().any(|o: &Client| o.name == client.name) {
                return Err(self.error(
                    &format!("traffic[{i}].client"),
                    format!("client `{}` is named twice", client.name),
                ));
            }
            if spec.is_none() && client.load_tester {
                return Err(self.error(
                    &format!("traffic[{i}].target"),
                    "a load tester calls the canary of a rollout; a scenario without a Canary has none",
                ));
            }
            clients.push(client);
        }
        if clients.is_empty() {
            return Err(self.error("traffic", "needs at least one client"));
        }
        self.check_ingress(&mut clients, &manifests)?;
        let mut timeline = Vec::new();
        for (i, e) in raw.timeline.iter().enumerate() {
            let entry = self.timeline_entry(&format!("timeline[{i}]"), e, &clients)?;
            if spec.is_none()
                && let Some(why) = needs_rollout(&entry)
            {
                return Err(self.error(
                    &format!("timeline[{i}]"),
                    format!("{why}; a scenario without a Canary has no rollout"),
                ));
            }
            timeline.push(entry);
        }
        if spec.is_some() && !timeline.iter().any(|e| e.event == Event::Deploy) {
            return Err(self.error(
                "timeline",
                "needs a `deploy` entry: the new revision the Canary rolls out",
            ));
        }
        for (i, e) in timeline.iter().enumerate() {
            let never = match e.when {
                Trigger::At(at) if at >= duration => format!(
                    "at {} is not before the end of the run ({}): {}",
                    fledge_controller::spec::Duration(at / crate::engine::MILLIS),
                    fledge_controller::spec::Duration(duration / crate::engine::MILLIS),
                    if e.event == Event::Deploy {
                        "the rollout it starts is not simulated"
                    } else {
                        "nothing it changes is simulated"
                    }
                ),
                // The canary has no weight before a new revision: without a timed deploy,
                // none fires.
                Trigger::Weight(w)
                    if e.event == Event::Deploy
                        && !timeline.iter().any(|e| {
                            e.event == Event::Deploy && matches!(e.when, Trigger::At(_))
                        }) =>
                {
                    format!(
                        "a deploy at when_weight {w} never fires: no deploy at a time gives the canary a weight first"
                    )
                }
                _ => continue,
            };
            self.warnings
                .push(format!("timeline[{i}] (line {}): {never}", e.line));
        }
        let certificates = self.certificates(raw.certificates.as_ref())?;
        let istio_retry_503 = self.istio_retry_503(raw.istio.as_ref())?;
        // Istio added retry backoff in 1.26 (#55639); the version was checked just above.
        let istio_retry_backoff = raw
            .istio
            .as_ref()
            .and_then(|i| i.version.as_deref())
            .and_then(model::parse_istio_minor)
            .is_none_or(|m| m >= 26);
        let propagation = self.propagation(raw.control_plane.as_ref(), duration)?;
        let hooks = match &spec {
            Some(spec) => self.hooks(&raw, spec)?,
            None if raw.webhooks.is_empty() => BTreeMap::new(),
            None => {
                return Err(self.error(
                    "webhooks",
                    "answers the Canary's webhooks; a scenario without a Canary has none",
                ));
            }
        };
        let variants = self.variants(
            &raw,
            canary_resource.as_ref().zip(spec.as_ref()),
            &clients,
            &services,
        )?;

        Ok(Scenario {
            name: raw.name,
            description: raw.description.unwrap_or_default(),
            file: path.to_path_buf(),
            seed: raw.seed.unwrap_or(1),
            duration,
            data_plane,
            namespace: raw.namespace.unwrap_or_else(|| "default".into()),
            service: rollout,
            services,
            external_hosts,
            clients,
            manifests,
            manifest_sources,
            canary_resource,
            metric_templates,
            spec,
            timeline,
            hooks,
            variants,
            certificates,
            istio_retry_503,
            istio_retry_backoff,
            propagation,
            proxy,
            handshake_cpu,
            warnings: std::mem::take(&mut self.warnings),
        })
    }
}
