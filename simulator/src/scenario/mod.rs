//! Scenario files: one YAML document describing a mesh, its traffic, a Canary, what happens on
//! a timeline, and what must come out. See `scenarios/README.md` for the format.
//!
//! Loading is strict: unknown keys are errors, and every error names the file, the line and the
//! field. A loaded [`Scenario`] is fully checked: the harness runs it without further validation.

mod canary;
mod manifests;
mod patch;
mod raw;
mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fledge_controller::spec::{Canary, HookGate, MetricTemplate, RolloutSpec};

use crate::engine::SimTime;
use crate::manifest::yaml::Outline;
use crate::manifest::{self, Manifests};
use crate::mesh::config::{ArrivalShape, Behaviour, CertConfig, DataPlane};
use crate::mesh::dist::ServiceTime;

pub use crate::result::Outcome;
pub use patch::{Edit, Patch, PatchError};
pub(crate) use source::load_error_place;
pub use source::{MAX_FILE_BYTES, read_bounded};

/// A scenario, checked and ready to run.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    pub seed: u64,
    pub duration: SimTime,
    pub data_plane: DataPlane,
    pub namespace: String,
    pub service: String,
    pub primary: Version,
    /// The new revision's behaviour (deployed by the timeline's `deploy`).
    pub canary: Version,
    pub clients: Vec<Client>,
    pub manifests: Manifests,
    pub canary_resource: Canary,
    /// The MetricTemplates given beside the Canary, for its `templateRef` metrics.
    pub metric_templates: Vec<MetricTemplate>,
    pub spec: RolloutSpec,
    pub timeline: Vec<TimelineEntry>,
    pub hooks: BTreeMap<String, HookAnswer>,
    /// Runs of the scenario: one, or one per judge variant.
    pub variants: Vec<Variant>,
    /// Workload certificate lifetime and rotation.
    pub certificates: CertConfig,
    /// Input that loads but is questionable: a setting changed or unused, a resource the
    /// scenario's mesh would not read, an event after the end. Shown once per command.
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Version {
    pub pods: u32,
    pub behaviour: Behaviour,
}

#[derive(Clone, Debug)]
pub struct Client {
    pub name: String,
    pub namespace: Option<String>,
    pub rate: f64,
    pub arrivals: ArrivalShape,
    pub shape: RateShape,
    pub headers: Vec<(f64, Vec<(String, String)>)>,
    pub sidecar: bool,
    /// A load tester: sends straight to the canary's Service (`<service>-canary`), and only
    /// while a rollout progresses, as Flagger's load tester does from a rollout webhook.
    pub load_tester: bool,
}

/// How a client's rate changes over time.
#[derive(Clone, Debug, PartialEq)]
pub enum RateShape {
    Constant,
    /// Linear from the base rate to `to` over `over`, starting at `from`.
    Ramp {
        from: SimTime,
        to: f64,
        over: SimTime,
    },
    /// `rate * (1 + amplitude * sin(2π t / period))`.
    Diurnal {
        amplitude: f64,
        period: SimTime,
    },
    /// `factor` times the rate for `length` every `every`.
    Bursts {
        every: SimTime,
        length: SimTime,
        factor: f64,
    },
}

/// When a timeline entry fires.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Trigger {
    At(SimTime),
    /// The first time the canary's weight reaches this percentage.
    Weight(u8),
}

#[derive(Clone, Debug)]
pub struct TimelineEntry {
    pub when: Trigger,
    pub event: Event,
    /// Where it was written, for messages.
    pub line: usize,
}

/// What the timeline can do to the world.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A new revision of the target: the canary takes the scenario's `canary` behaviour.
    Deploy,
    ErrorRate {
        version: Side,
        rate: f64,
    },
    Latency {
        version: Side,
        service_time: ServiceTime,
    },
    PodErrorRate {
        version: Side,
        pod: u32,
        rate: Option<f64>,
    },
    Crash {
        version: Side,
        pods: Vec<u32>,
        restart_after: Option<SimTime>,
    },
    BlackHole {
        version: Side,
        pod: u32,
        on: bool,
    },
    Rate {
        client: String,
        rps: f64,
    },
    CertRotation {
        version: Side,
        enabled: bool,
    },
    /// Mesh manifests applied mid-run (a PeerAuthentication switched to STRICT, a new
    /// DestinationRule). The controller keeps owning its service's routes.
    ApplyManifests(Manifests),
    /// The Canary is deleted.
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Primary,
    Canary,
}

/// How the scenario answers a webhook.
#[derive(Clone, Debug, PartialEq)]
pub enum HookAnswer {
    Pass,
    Fail,
    Timeout,
    /// Fails until this time, passes after.
    OpenAt(SimTime),
}

/// One run of the scenario and the checks it must pass.
#[derive(Clone, Debug)]
pub struct Variant {
    /// Empty for a scenario without variants.
    pub name: String,
    pub spec: RolloutSpec,
    pub expect: Expectations,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expectations {
    pub outcome: Option<Outcome>,
    /// From the deploy to promotion or rollback.
    pub decided_within: Option<SimTime>,
    pub max_canary_weight_before_rollback: Option<u8>,
    /// Failed requests the clients saw that the canary served (the blast radius).
    pub max_failed_requests: Option<u64>,
    /// Percentage of client requests that succeeded over the whole run.
    pub min_success_rate: Option<f64>,
    /// The canary must not be rolled back.
    pub no_false_rollback: bool,
    /// The rollback's analysis must have failed this metric on its value (threshold judge)
    /// or found it regressed (statistical judge).
    pub rolled_back_by: Option<String>,
    /// The rollback's analysis must have found no value for this metric.
    pub rolled_back_for_no_data: Option<String>,
    /// Some decision's message must contain this text.
    pub message_contains: Option<String>,
    /// Bounds on counters (names from [`crate::telemetry::counter_names`]).
    pub counters: Vec<CounterBound>,
    /// Bounds on what each named client saw.
    pub clients: Vec<ClientBound>,
}

/// `counter` must lie within `[min, max]`.
#[derive(Clone, Debug, PartialEq)]
pub struct CounterBound {
    pub counter: String,
    pub min: Option<u64>,
    pub max: Option<u64>,
}

/// The success rate (percent, after retries) a client saw must lie within `[min, max]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientBound {
    pub client: String,
    pub min_success_rate: Option<f64>,
    pub max_success_rate: Option<f64>,
}

/// A scenario that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}", line = line.map_or("?".to_string(), |l| l.to_string()))]
pub struct ScenarioError {
    pub file: String,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = read_bounded(path).map_err(|message| ScenarioError {
            file: path.display().to_string(),
            line: None,
            field: "(file)".into(),
            message,
        })?;
        Scenario::parse(&text, path)
    }

    /// Checks a scenario given as text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let mut cx = Context {
            outline: Outline::of(text),
            file: path.display().to_string(),
            dir: path.parent().map(Path::to_path_buf),
            service: String::new(),
            namespace: String::new(),
            data_plane: DataPlane::Istio,
            warnings: Vec::new(),
        };
        let raw = raw::parse(text)
            .map_err(|(field, line, message)| cx.error_at(&field, line, message))?;
        cx.build(raw, path)
    }

    /// The Canary's target workload name (the canary), and the primary's.
    pub fn workloads(&self) -> (String, String) {
        (
            self.spec.target.clone(),
            format!("{}-primary", self.spec.target),
        )
    }
}

struct Context {
    /// Where each field of the scenario is written.
    outline: Outline,
    file: String,
    dir: Option<PathBuf>,
    /// The simulated service and its namespace, for checking the manifests' routes.
    service: String,
    namespace: String,
    data_plane: DataPlane,
    warnings: Vec<String>,
}

impl Context {
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
        manifest::parse_duration(text).ok_or_else(|| {
            self.error(
                field,
                format!("`{text}` is not a duration: expected e.g. `30s`, `10m`, `1h30m`, `250ms`"),
            )
        })
    }

    fn build(&mut self, raw: raw::Scenario, path: &Path) -> Result<Scenario, ScenarioError> {
        self.service = raw.service.name.clone();
        self.namespace = raw.namespace.clone().unwrap_or_else(|| "default".into());
        let duration = self.duration("duration", &raw.duration)?;
        if duration == 0 {
            return Err(self.error("duration", "must be longer than 0s"));
        }
        let primary = self.version("service.primary", &raw.service.primary, None)?;
        let canary = self.version("service.canary", &raw.service.canary, Some(&primary))?;

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
        let (canary_resource, spec, metric_templates) = self.canary(&raw)?;
        if spec.target != raw.service.name {
            return Err(self.error(
                "canary.spec.targetRef.name",
                format!(
                    "targets `{}`, but the scenario's service is `{}`",
                    spec.target, raw.service.name
                ),
            ));
        }
        let manifests = self.manifests(&raw)?;

        let mut clients = Vec::new();
        for (i, c) in raw.traffic.iter().enumerate() {
            let client = self.client(&format!("traffic[{i}]"), c)?;
            if clients.iter().any(|o: &Client| o.name == client.name) {
                return Err(self.error(
                    &format!("traffic[{i}].client"),
                    format!("client `{}` is named twice", client.name),
                ));
            }
            clients.push(client);
        }
        if clients.is_empty() {
            return Err(self.error("traffic", "needs at least one client"));
        }
        let mut timeline = Vec::new();
        for (i, e) in raw.timeline.iter().enumerate() {
            timeline.push(self.timeline_entry(&format!("timeline[{i}]"), e, &clients)?);
        }
        if !timeline.iter().any(|e| e.event == Event::Deploy) {
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
        let hooks = self.hooks(&raw, &spec)?;
        let variants = self.variants(&raw, &spec, &canary_resource, &clients)?;

        Ok(Scenario {
            name: raw.name,
            description: raw.description.unwrap_or_default(),
            file: path.to_path_buf(),
            seed: raw.seed.unwrap_or(1),
            duration,
            data_plane,
            namespace: raw.namespace.unwrap_or_else(|| "default".into()),
            service: raw.service.name,
            primary,
            canary,
            clients,
            manifests,
            canary_resource,
            metric_templates,
            spec,
            timeline,
            hooks,
            variants,
            certificates,
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    fn certificates(&self, raw: Option<&raw::Certificates>) -> Result<CertConfig, ScenarioError> {
        let mut c = CertConfig::default();
        let Some(raw) = raw else { return Ok(c) };
        if let Some(ttl) = &raw.ttl {
            c.ttl = self.duration("certificates.ttl", ttl)?;
            if c.ttl < crate::engine::SECONDS {
                return Err(self.error("certificates.ttl", "must be at least 1s"));
            }
        }
        if let Some(r) = raw.grace_ratio {
            if !(r > 0.0 && r < 1.0) {
                return Err(self.error(
                    "certificates.grace_ratio",
                    format!("must be between 0 and 1 (exclusive), got {r}"),
                ));
            }
            c.grace_ratio = r;
        }
        Ok(c)
    }

    fn version(
        &self,
        field: &str,
        raw: &raw::Version,
        base: Option<&Version>,
    ) -> Result<Version, ScenarioError> {
        let mut v = base.cloned().unwrap_or(Version {
            pods: 2,
            behaviour: Behaviour::default(),
        });
        if let Some(pods) = raw.pods {
            if !(1..=1000).contains(&pods) {
                return Err(self.error(
                    &format!("{field}.pods"),
                    format!("must be between 1 and 1000, got {pods}"),
                ));
            }
            v.pods = pods;
        }
        if let Some(workers) = raw.workers {
            if !(1..=100_000).contains(&workers) {
                return Err(self.error(
                    &format!("{field}.workers"),
                    format!("must be between 1 and 100000, got {workers}"),
                ));
            }
            v.behaviour.workers = workers;
        }
        if let Some(rate) = raw.error_rate {
            v.behaviour.error_rate = self.probability(&format!("{field}.error_rate"), rate)?;
        }
        if let Some(code) = raw.error_code {
            if !(500..=599).contains(&code) {
                return Err(self.error(
                    &format!("{field}.error_code"),
                    format!("must be a 5xx status, got {code}"),
                ));
            }
            v.behaviour.error_code = code;
        }
        if let Some(latency) = &raw.latency {
            v.behaviour.service_time = self.latency(&format!("{field}.latency"), latency)?;
        }
        Ok(v)
    }

    fn probability(&self, field: &str, p: f64) -> Result<f64, ScenarioError> {
        if (0.0..=1.0).contains(&p) {
            Ok(p)
        } else {
            Err(self.error(
                field,
                format!("must be a probability between 0 and 1, got {p}"),
            ))
        }
    }

    fn latency(&self, field: &str, l: &raw::Latency) -> Result<ServiceTime, ScenarioError> {
        let d = |name: &str, t: &Option<String>| -> Result<Option<SimTime>, ScenarioError> {
            t.as_deref()
                .map(|t| self.duration(&format!("{field}.{name}"), t))
                .transpose()
        };
        let forms = [
            l.mean.is_some(),
            l.constant.is_some(),
            l.p50.is_some() || l.p99.is_some(),
            l.mixture.is_some(),
        ];
        if forms.iter().filter(|f| **f).count() != 1 {
            return Err(self.error(field, "give exactly one of `mean` (exponential), `constant`, `p50` with `p99` (log-normal) or `mixture`"));
        }
        if let Some(mean) = d("mean", &l.mean)? {
            return Ok(ServiceTime::Exponential { mean });
        }
        if let Some(c) = d("constant", &l.constant)? {
            return Ok(ServiceTime::Constant(c));
        }
        if let Some(parts) = &l.mixture {
            if parts.is_empty() {
                return Err(self.error(&format!("{field}.mixture"), "needs at least one component"));
            }
            let mut out = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                let path = format!("{field}.mixture[{i}]");
                if !(p.weight.is_finite() && p.weight > 0.0) {
                    return Err(self.error(
                        &format!("{path}.weight"),
                        format!("must be positive, got {}", p.weight),
                    ));
                }
                out.push((p.weight, self.latency(&path, &p.latency)?));
            }
            return Ok(ServiceTime::Mixture(out));
        }
        match (d("p50", &l.p50)?, d("p99", &l.p99)?) {
            (Some(p50), Some(p99)) if p99 >= p50 => Ok(ServiceTime::LogNormal { p50, p99 }),
            (Some(_), Some(_)) => Err(self.error(&format!("{field}.p99"), "must be at least p50")),
            _ => Err(self.error(field, "a log-normal latency needs both `p50` and `p99`")),
        }
    }

    fn client(&self, field: &str, c: &raw::Traffic) -> Result<Client, ScenarioError> {
        if !(c.rate.is_finite() && c.rate >= 0.0 && c.rate <= 1_000_000.0) {
            return Err(self.error(
                &format!("{field}.rate"),
                format!(
                    "must be between 0 and 1000000 requests per second, got {}",
                    c.rate
                ),
            ));
        }
        let arrivals = match c.arrivals.as_deref().unwrap_or("poisson") {
            "poisson" => ArrivalShape::Poisson,
            "constant" => ArrivalShape::Constant,
            other => {
                return Err(self.error(
                    &format!("{field}.arrivals"),
                    format!("must be `poisson` or `constant`, got `{other}`"),
                ));
            }
        };
        let shapes = [c.ramp.is_some(), c.diurnal.is_some(), c.bursts.is_some()];
        if shapes.iter().filter(|s| **s).count() > 1 {
            return Err(self.error(field, "give at most one of `ramp`, `diurnal`, `bursts`"));
        }
        let rate_ok = |r: f64| r.is_finite() && (0.0..=1_000_000.0).contains(&r);
        if let Some(r) = &c.ramp
            && !rate_ok(r.to)
        {
            return Err(self.error(
                &format!("{field}.ramp.to"),
                format!(
                    "must be between 0 and 1000000 requests per second, got {}",
                    r.to
                ),
            ));
        }
        if let Some(b) = &c.bursts
            && !(b.factor.is_finite() && b.factor >= 0.0 && rate_ok(c.rate * b.factor))
        {
            return Err(self.error(
                &format!("{field}.bursts.factor"),
                format!(
                    "must be a non-negative factor that keeps the rate within 1000000 requests per second, got {}",
                    b.factor
                ),
            ));
        }
        let shape = if let Some(r) = &c.ramp {
            RateShape::Ramp {
                from: r
                    .from
                    .as_deref()
                    .map(|t| self.duration(&format!("{field}.ramp.from"), t))
                    .transpose()?
                    .unwrap_or(0),
                to: r.to,
                over: self.duration(&format!("{field}.ramp.over"), &r.over)?,
            }
        } else if let Some(d) = &c.diurnal {
            if !(0.0..=1.0).contains(&d.amplitude) {
                return Err(self.error(
                    &format!("{field}.diurnal.amplitude"),
                    "must be between 0 and 1",
                ));
            }
            RateShape::Diurnal {
                amplitude: d.amplitude,
                period: self
                    .duration(&format!("{field}.diurnal.period"), &d.period)?
                    .max(1),
            }
        } else if let Some(b) = &c.bursts {
            let every = self.duration(&format!("{field}.bursts.every"), &b.every)?;
            let length = self.duration(&format!("{field}.bursts.length"), &b.length)?;
            if every == 0 || length >= every {
                return Err(self.error(
                    &format!("{field}.bursts"),
                    "`length` must be shorter than `every`",
                ));
            }
            RateShape::Bursts {
                every,
                length,
                factor: b.factor,
            }
        } else {
            RateShape::Constant
        };
        let mut headers = Vec::new();
        for (i, h) in c.headers.iter().enumerate() {
            if !(h.weight.is_finite() && h.weight >= 0.0) {
                return Err(self.error(
                    &format!("{field}.headers[{i}].weight"),
                    "must not be negative",
                ));
            }
            headers.push((
                h.weight,
                h.set
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect(),
            ));
        }
        let load_tester = match c.target.as_deref().unwrap_or("service") {
            "service" => false,
            "canary" => true,
            other => {
                return Err(self.error(
                    &format!("{field}.target"),
                    format!("must be `service` or `canary`, got `{other}`"),
                ));
            }
        };
        if load_tester && shape != RateShape::Constant {
            return Err(self.error(
                &format!("{field}.target"),
                "a load tester (`target: canary`) sends at a constant rate: drop `ramp`, `diurnal` or `bursts`",
            ));
        }
        Ok(Client {
            name: c.client.clone(),
            namespace: c.namespace.clone(),
            rate: c.rate,
            arrivals,
            shape,
            headers,
            sidecar: c.sidecar.unwrap_or(true),
            load_tester,
        })
    }

    fn timeline_entry(
        &mut self,
        field: &str,
        e: &raw::TimelineEntry,
        clients: &[Client],
    ) -> Result<TimelineEntry, ScenarioError> {
        let when = match (&e.at, e.when_weight) {
            (Some(at), None) => Trigger::At(self.duration(&format!("{field}.at"), at)?),
            (None, Some(w)) if (1..=100).contains(&w) => Trigger::Weight(w as u8),
            (None, Some(w)) => {
                return Err(self.error(
                    &format!("{field}.when_weight"),
                    format!("must be a weight between 1 and 100, got {w}"),
                ));
            }
            _ => {
                return Err(self.error(
                    field,
                    "give exactly one of `at` (a time) or `when_weight` (a canary weight)",
                ));
            }
        };
        let side = |path: &str, s: &str| match s {
            "primary" => Ok(Side::Primary),
            "canary" => Ok(Side::Canary),
            other => Err(self.error(
                path,
                format!("must be `primary` or `canary`, got `{other}`"),
            )),
        };
        let mut events = Vec::new();
        if e.deploy.is_some() {
            events.push(Event::Deploy);
        }
        if e.delete.is_some() {
            events.push(Event::Delete);
        }
        if let Some(f) = &e.error_rate {
            events.push(Event::ErrorRate {
                version: side(&format!("{field}.error_rate.version"), &f.version)?,
                rate: self.probability(&format!("{field}.error_rate.rate"), f.rate)?,
            });
        }
        if let Some(f) = &e.latency {
            events.push(Event::Latency {
                version: side(&format!("{field}.latency.version"), &f.version)?,
                service_time: self.latency(&format!("{field}.latency"), &f.latency)?,
            });
        }
        if let Some(f) = &e.pod_error_rate {
            let rate = f
                .rate
                .map(|r| self.probability(&format!("{field}.pod_error_rate.rate"), r))
                .transpose()?;
            events.push(Event::PodErrorRate {
                version: side(&format!("{field}.pod_error_rate.version"), &f.version)?,
                pod: f.pod,
                rate,
            });
        }
        if let Some(f) = &e.crash {
            let restart_after = f
                .restart_after
                .as_deref()
                .map(|t| self.duration(&format!("{field}.crash.restart_after"), t))
                .transpose()?;
            let pods = match (&f.pod, &f.pods) {
                (Some(p), None) => vec![*p],
                (None, Some(ps)) => ps.clone(),
                (None, None) => Vec::new(), // every pod
                _ => {
                    return Err(
                        self.error(&format!("{field}.crash"), "give `pod` or `pods`, not both")
                    );
                }
            };
            events.push(Event::Crash {
                version: side(&format!("{field}.crash.version"), &f.version)?,
                pods,
                restart_after,
            });
        }
        if let Some(f) = &e.black_hole {
            events.push(Event::BlackHole {
                version: side(&format!("{field}.black_hole.version"), &f.version)?,
                pod: f.pod,
                on: f.on.unwrap_or(true),
            });
        }
        if let Some(f) = &e.rate {
            if !clients.iter().any(|c| c.name == f.client) {
                return Err(self.error(
                    &format!("{field}.rate.client"),
                    format!("no client named `{}` in `traffic`", f.client),
                ));
            }
            if !(f.rps.is_finite() && (0.0..=1_000_000.0).contains(&f.rps)) {
                return Err(self.error(
                    &format!("{field}.rate.rps"),
                    format!(
                        "must be between 0 and 1000000 requests per second, got {}",
                        f.rps
                    ),
                ));
            }
            events.push(Event::Rate {
                client: f.client.clone(),
                rps: f.rps,
            });
        }
        if let Some(f) = &e.cert_rotation {
            events.push(Event::CertRotation {
                version: side(&format!("{field}.cert_rotation.version"), &f.version)?,
                enabled: f.enabled,
            });
        }
        if let Some(text) = &e.apply_manifests {
            let m =
                self.manifest_text(&self.embedded(&format!("{field}.apply_manifests"), text))?;
            events.push(Event::ApplyManifests(m));
        }
        match <[Event; 1]>::try_from(events) {
            Ok([event]) => Ok(TimelineEntry { when, event, line: self.outline.line(0, field).unwrap_or(0) }),
            Err(v) => Err(self.error(field, format!("needs exactly one event (deploy, delete, error_rate, latency, pod_error_rate, crash, black_hole, rate, cert_rotation, apply_manifests), found {}", v.len()))),
        }
    }

    fn hooks(
        &self,
        raw: &raw::Scenario,
        spec: &RolloutSpec,
    ) -> Result<BTreeMap<String, HookAnswer>, ScenarioError> {
        let mut out = BTreeMap::new();
        for (name, answer) in &raw.webhooks {
            let field = format!("webhooks.{name}");
            let Some(hook) = spec.webhooks.iter().find(|h| &h.name == name) else {
                return Err(self.error(&field, format!("the Canary has no webhook named `{name}`")));
            };
            let answer =
                match answer {
                    raw::HookAnswer::Word(w) => match w.as_str() {
                        "pass" => HookAnswer::Pass,
                        "fail" => HookAnswer::Fail,
                        "timeout" => HookAnswer::Timeout,
                        other => return Err(self.error(
                            &field,
                            format!(
                                "must be pass, fail, timeout or {{open_at: TIME}}, got `{other}`"
                            ),
                        )),
                    },
                    raw::HookAnswer::Gate { open_at } => {
                        HookAnswer::OpenAt(self.duration(&format!("{field}.open_at"), open_at)?)
                    }
                };
            if hook.gate == HookGate::Event && answer != HookAnswer::Pass {
                return Err(self.error(
                    &field,
                    "event hooks are notifications; their answer changes nothing",
                ));
            }
            out.insert(name.clone(), answer);
        }
        Ok(out)
    }

    fn variants(
        &self,
        raw: &raw::Scenario,
        spec: &RolloutSpec,
        canary: &Canary,
        clients: &[Client],
    ) -> Result<Vec<Variant>, ScenarioError> {
        if raw.variants.is_empty() {
            let Some(expect) = &raw.expect else {
                return Err(self.error(
                    "expect",
                    "a scenario states what must happen: add `expect:`",
                ));
            };
            return Ok(vec![Variant {
                name: String::new(),
                spec: spec.clone(),
                expect: self.expectations("expect", expect, spec, clients)?,
            }]);
        }
        if raw.expect.is_some() {
            return Err(self.error(
                "expect",
                "with `variants`, each variant has its own `expect`",
            ));
        }
        let mut out = Vec::new();
        for (i, v) in raw.variants.iter().enumerate() {
            let field = format!("variants[{i}]");
            let mut patch = Patch::default().judge(&v.judge);
            if let Some(alpha) = v.alpha {
                patch = patch.set("analysis.statistical.alpha", alpha);
            }
            if let Some(n) = v.min_requests {
                patch = patch.set("analysis.statistical.minRequests", n);
            }
            let spec = patch
                .apply(&canary.spec, spec)
                .map_err(|e| self.error(&format!("{field}.judge"), e.to_string()))?;
            out.push(Variant {
                name: v.name.clone(),
                expect: self.expectations(&format!("{field}.expect"), &v.expect, &spec, clients)?,
                spec,
            });
        }
        Ok(out)
    }

    fn expectations(
        &self,
        field: &str,
        e: &raw::Expect,
        spec: &RolloutSpec,
        clients: &[Client],
    ) -> Result<Expectations, ScenarioError> {
        let mut counters = Vec::new();
        for (name, b) in &e.counters {
            let path = format!("{field}.counters.{name}");
            if !crate::telemetry::counter_names().any(|n| n == name) {
                let known: Vec<&str> = crate::telemetry::counter_names().collect();
                return Err(self.error(
                    &path,
                    format!(
                        "unknown counter `{name}`; known counters: {}",
                        known.join(", ")
                    ),
                ));
            }
            if b.min.is_none() && b.max.is_none() {
                return Err(self.error(&path, "give `min`, `max` or both"));
            }
            if let (Some(lo), Some(hi)) = (b.min, b.max)
                && lo > hi
            {
                return Err(self.error(&path, format!("`min` ({lo}) is above `max` ({hi})")));
            }
            counters.push(CounterBound {
                counter: name.clone(),
                min: b.min,
                max: b.max,
            });
        }
        let mut client_bounds = Vec::new();
        for (name, b) in &e.clients {
            let path = format!("{field}.clients.{name}");
            if !clients.iter().any(|c| &c.name == name) {
                let known: Vec<&str> = clients.iter().map(|c| c.name.as_str()).collect();
                return Err(self.error(
                    &path,
                    format!(
                        "no client named `{name}` in `traffic`; clients: {}",
                        known.join(", ")
                    ),
                ));
            }
            for (key, v) in [
                ("min_success_rate", b.min_success_rate),
                ("max_success_rate", b.max_success_rate),
            ] {
                if let Some(r) = v
                    && !(0.0..=100.0).contains(&r)
                {
                    return Err(self.error(
                        &format!("{path}.{key}"),
                        format!("must be a percentage, got {r}"),
                    ));
                }
            }
            if b.min_success_rate.is_none() && b.max_success_rate.is_none() {
                return Err(
                    self.error(&path, "give `min_success_rate`, `max_success_rate` or both")
                );
            }
            client_bounds.push(ClientBound {
                client: name.clone(),
                min_success_rate: b.min_success_rate,
                max_success_rate: b.max_success_rate,
            });
        }
        for (key, metric) in [
            ("rolled_back_by", &e.rolled_back_by),
            ("rolled_back_for_no_data", &e.rolled_back_for_no_data),
        ] {
            if let Some(m) = metric
                && !spec.metrics.iter().any(|c| &c.name == m)
            {
                let known: Vec<&str> = spec.metrics.iter().map(|c| c.name.as_str()).collect();
                return Err(self.error(
                    &format!("{field}.{key}"),
                    format!(
                        "unknown metric `{m}`; the Canary's metrics are: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        if let Some(w) = e.max_canary_weight_before_rollback
            && !(0..=100).contains(&w)
        {
            return Err(self.error(
                &format!("{field}.max_canary_weight_before_rollback"),
                format!("must be a weight between 0 and 100, got {w}"),
            ));
        }
        if let Some(r) = e.min_success_rate
            && !(0.0..=100.0).contains(&r)
        {
            return Err(self.error(
                &format!("{field}.min_success_rate"),
                format!("must be a percentage, got {r}"),
            ));
        }
        Ok(Expectations {
            outcome: e.outcome,
            decided_within: e
                .decided_within
                .as_deref()
                .map(|t| self.duration(&format!("{field}.decided_within"), t))
                .transpose()?,
            max_canary_weight_before_rollback: e.max_canary_weight_before_rollback.map(|w| w as u8),
            max_failed_requests: e.max_failed_requests,
            min_success_rate: e.min_success_rate,
            no_false_rollback: e.no_false_rollback.unwrap_or(false),
            rolled_back_by: e.rolled_back_by.clone(),
            rolled_back_for_no_data: e.rolled_back_for_no_data.clone(),
            message_contains: e.message_contains.clone(),
            counters,
            clients: client_bounds,
        })
    }
}
