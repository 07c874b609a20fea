//! The expectations section: the variants of a scenario (Canary settings changed per run) and
//! what each run must show (outcome, timing, weights, failures, counters, and what clients,
//! services and versions saw).

use fledge_controller::spec::{Canary, RolloutSpec};

use super::services::quoted;
use super::{Client, Context, Outcome, Patch, ScenarioError, ServiceModel, raw};
use crate::engine::SimTime;

/// One run of the scenario and the checks it must pass.
#[derive(Clone, Debug)]
pub struct Variant {
    /// Empty for a scenario without variants.
    pub name: String,
    /// The Canary's spec as this variant runs it; none for a scenario of the mesh alone.
    pub spec: Option<RolloutSpec>,
    pub expect: Expectations,
    /// Settings of a patched Canary (`--vary`, `--policy`) that do not do what they seem to;
    /// the scenario's own Canary's are among the scenario's warnings.
    pub(crate) warnings: Vec<String>,
    /// The mesh manifests of a variant that edits them (`--vary KIND/NAME:PATH=...`); none:
    /// the scenario's.
    pub(crate) manifests: Option<crate::manifest::Manifests>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expectations {
    pub(crate) outcome: Option<Outcome>,
    /// From the deploy to promotion or rollback.
    pub(crate) decided_within: Option<SimTime>,
    pub(crate) max_canary_weight_before_rollback: Option<u8>,
    /// Failed requests the clients saw that the canary served (the blast radius).
    pub(crate) max_failed_requests: Option<u64>,
    /// Percentage of client requests that succeeded over the whole run.
    pub(crate) min_success_rate: Option<f64>,
    /// The canary must not be rolled back.
    pub(crate) no_false_rollback: bool,
    /// The rollback's analysis must have failed this metric on its value (threshold judge)
    /// or found it regressed (statistical judge).
    pub(crate) rolled_back_by: Option<String>,
    /// The rollback's analysis must have found no value for this metric.
    pub(crate) rolled_back_for_no_data: Option<String>,
    /// Some decision's message must contain this text.
    pub(crate) message_contains: Option<String>,
    /// Bounds on counters (names from [`crate::telemetry::counter_names`]).
    pub(crate) counters: Vec<CounterBound>,
    /// Bounds on what clients, services and versions saw.
    pub(crate) figures: Vec<FigureBound>,
}

/// `counter` must lie within `[min, max]`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CounterBound {
    pub(crate) counter: String,
    pub(crate) min: Option<u64>,
    pub(crate) max: Option<u64>,
}

/// What a [`FigureBound`] bounds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Subject {
    /// A client of `traffic`, over all its requests (after retries).
    Client(String),
    /// A service, over every request its callers' proxies sent it (clients and calling
    /// versions), including those no pod answered.
    Service(String),
    /// One version of a service, over the requests its pods answered.
    Version { service: String, version: String },
}

/// Bounds on the figures of a client, a service or a version over the whole run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FigureBound {
    pub(crate) subject: Subject,
    /// Where it was written (`expect.services.reviews.versions.v2`), naming its checks.
    pub(crate) name: String,
    /// Percentage of requests that succeeded.
    pub(crate) min_success_rate: Option<f64>,
    pub(crate) max_success_rate: Option<f64>,
    /// The 99th percentile of the durations the callers saw, in milliseconds.
    pub(crate) max_p99_ms: Option<f64>,
    pub(crate) min_requests: Option<u64>,
    pub(crate) max_requests: Option<u64>,
    /// A version's percentage of its service's answered requests, and the margin (in
    /// percentage points) it may lie off.
    pub(crate) share: Option<(f64, f64)>,
}

impl Context {
    /// The runs of the scenario; `rollout` is the Canary and its validated spec, none for a
    /// scenario of the mesh alone (one run, no judge variants).
    pub(super) fn variants(
        &self,
        raw: &raw::Scenario,
        rollout: Option<(&Canary, &RolloutSpec)>,
        clients: &[Client],
        services: &[ServiceModel],
    ) -> Result<Vec<Variant>, ScenarioError> {
        let spec = rollout.map(|(_, spec)| spec);
        if raw.variants.is_empty() {
            let Some(expect) = &raw.expect else {
                return Err(self.error(
                    "expect",
                    "a scenario states what must happen: add `expect:`",
                ));
            };
            return Ok(vec![Variant {
                name: String::new(),
                spec: spec.cloned(),
                expect: self.expectations("expect", expect, spec, clients, services)?,
                warnings: Vec::new(),
                manifests: None,
            }]);
        }
        let Some((canary, spec)) = rollout else {
            return Err(self.error(
                "variants",
                "variants run the Canary with other judges; a scenario without a Canary has none",
            ));
        };
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
                expect: self.expectations(
                    &format!("{field}.expect"),
                    &v.expect,
                    Some(&spec),
                    clients,
                    services,
                )?,
                spec: Some(spec),
                warnings: Vec::new(),
                manifests: None,
            });
        }
        Ok(out)
    }

    pub(super) fn expectations(
        &self,
        field: &str,
        e: &raw::Expect,
        spec: Option<&RolloutSpec>,
        clients: &[Client],
        services: &[ServiceModel],
    ) -> Result<Expectations, ScenarioError> {
        if spec.is_none() {
            let rollout_keys = [
                ("outcome", e.outcome.is_some()),
                ("decided_within", e.decided_within.is_some()),
                (
                    "max_canary_weight_before_rollback",
                    e.max_canary_weight_before_rollback.is_some(),
                ),
                ("max_failed_requests", e.max_failed_requests.is_some()),
                ("no_false_rollback", e.no_false_rollback.is_some()),
                ("rolled_back_by", e.rolled_back_by.is_some()),
                (
                    "rolled_back_for_no_data",
                    e.rolled_back_for_no_data.is_some(),
                ),
                ("message_contains", e.message_contains.is_some()),
            ];
            if let Some((key, _)) = rollout_keys.iter().find(|(_, given)| *given) {
                return Err(self.error(
                    &format!("{field}.{key}"),
                    "bounds a rollout, and a scenario without a Canary has none: bound the clients, services and versions instead",
                ));
            }
        }
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
            if spec.is_none() && crate::telemetry::ROLLOUT_COUNTERS.contains(&name.as_str()) {
                return Err(self.error(
                    &path,
                    "counts the requests a rollout's primary or canary answered, and a scenario without a Canary has none: bound the versions instead",
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
        let mut figures = Vec::new();
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
            figures.push(self.figure_bound(&path, Subject::Client(name.clone()), b)?);
        }
        // In a rollout the rollout's service is bounded by the run's own figures.
        let bounded = if spec.is_some() {
            &services[1..]
        } else {
            services
        };
        for (name, b) in &e.services {
            let path = format!("{field}.services.{name}");
            let Some(service) = bounded.iter().find(|s| &s.name == name) else {
                let known: Vec<&str> = bounded.iter().map(|s| s.name.as_str()).collect();
                let why = if services.first().is_some_and(|s| &s.name == name) {
                    format!(
                        "`{name}` is the Canary's service: bound it with `min_success_rate` and `clients`"
                    )
                } else {
                    format!("no service named `{name}`")
                };
                return Err(self.error(
                    &path,
                    format!("{why}; services that can be bounded: {}", quoted(&known)),
                ));
            };
            let versions = b.versions.iter().flatten();
            let mut bound = self.figure_bound(&path, Subject::Service(name.clone()), b)?;
            bound.share = None;
            if b.min_success_rate.is_none()
                && b.max_success_rate.is_none()
                && b.max_p99_ms.is_none()
                && b.min_requests.is_none()
                && b.max_requests.is_none()
                && b.versions.is_none()
            {
                return Err(self.error(&path, "give at least one bound, or `versions`"));
            }
            figures.push(bound);
            for (version, vb) in versions {
                let vpath = format!("{path}.versions.{version}");
                if !service.versions.iter().any(|(n, _)| n == version) {
                    let known: Vec<&str> =
                        service.versions.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(self.error(
                        &vpath,
                        format!(
                            "`{name}` has no version `{version}`; its versions: {}",
                            quoted(&known)
                        ),
                    ));
                }
                let subject = Subject::Version {
                    service: name.clone(),
                    version: version.clone(),
                };
                figures.push(self.figure_bound(&vpath, subject, vb)?);
            }
        }
        if let Some(spec) = spec {
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
        }
        if let Some(w) = e.max_canary_weight_before_rollback
            && !(0..=100).contains(&w)
        {
            return Err(self.error(
                &format!("{field}.max_canary_weight_before_rollback"),
                format!("must be a weight between 0 and 100, got {w}"),
            ));
        }
        if let Some(r) = e.min_success_rate {
            percentage(self, &format!("{field}.min_success_rate"), r)?;
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
            figures,
        })
    }

    /// The bounds written at `path` for `subject`, each checked; `share` and `margin` belong
    /// to a version, `versions` to a service.
    fn figure_bound(
        &self,
        path: &str,
        subject: Subject,
        b: &raw::FiguresExpect,
    ) -> Result<FigureBound, ScenarioError> {
        let is_version = matches!(subject, Subject::Version { .. });
        let misplaced = [
            ("share", b.share.is_some() && !is_version),
            ("margin", b.margin.is_some() && !is_version),
            (
                "versions",
                b.versions.is_some() && !matches!(subject, Subject::Service(_)),
            ),
        ];
        if let Some((key, _)) = misplaced.iter().find(|(_, bad)| *bad) {
            let belongs = if *key == "versions" {
                "a service's"
            } else {
                "a version's (under `services.NAME.versions`)"
            };
            return Err(self.error(
                &format!("{path}.{key}"),
                format!("`{key}` is {belongs} bound, not this one's"),
            ));
        }
        for (key, v) in [
            ("min_success_rate", b.min_success_rate),
            ("max_success_rate", b.max_success_rate),
            ("share", b.share),
        ] {
            if let Some(r) = v {
                percentage(self, &format!("{path}.{key}"), r)?;
            }
        }
        if let (Some(lo), Some(hi)) = (b.min_success_rate, b.max_success_rate)
            && lo > hi
        {
            return Err(self.error(
                path,
                format!("`min_success_rate` ({lo}) is above `max_success_rate` ({hi})"),
            ));
        }
        if let (Some(lo), Some(hi)) = (b.min_requests, b.max_requests)
            && lo > hi
        {
            return Err(self.error(
                path,
                format!("`min_requests` ({lo}) is above `max_requests` ({hi})"),
            ));
        }
        if let Some(p99) = b.max_p99_ms
            && p99 <= 0.0
        {
            return Err(self.error(
                &format!("{path}.max_p99_ms"),
                format!("must be a positive number of milliseconds, got {p99}"),
            ));
        }
        let share = match (b.share, b.margin) {
            (Some(share), Some(margin)) if (0.0..=100.0).contains(&margin) => Some((share, margin)),
            (Some(_), Some(margin)) => {
                return Err(self.error(
                    &format!("{path}.margin"),
                    format!("must be percentage points between 0 and 100, got {margin}"),
                ));
            }
            (Some(_), None) => {
                return Err(self.error(
                    &format!("{path}.share"),
                    "give its `margin` too (percentage points the measured share may lie off)",
                ));
            }
            (None, Some(_)) => {
                return Err(self.error(&format!("{path}.margin"), "bounds a `share`: give it"));
            }
            (None, None) => None,
        };
        let any = b.min_success_rate.is_some()
            || b.max_success_rate.is_some()
            || b.max_p99_ms.is_some()
            || b.min_requests.is_some()
            || b.max_requests.is_some()
            || share.is_some();
        if !any && !matches!(subject, Subject::Service(_)) {
            return Err(self.error(
                path,
                "give at least one of `min_success_rate`, `max_success_rate`, `max_p99_ms`, `min_requests`, `max_requests`",
            ));
        }
        Ok(FigureBound {
            subject,
            name: path
                .split_once("expect.")
                .map_or(path, |(_, rest)| rest)
                .to_string(),
            min_success_rate: b.min_success_rate,
            max_success_rate: b.max_success_rate,
            max_p99_ms: b.max_p99_ms,
            min_requests: b.min_requests,
            max_requests: b.max_requests,
            share,
        })
    }
}

fn percentage(cx: &Context, path: &str, r: f64) -> Result<(), ScenarioError> {
    if (0.0..=100.0).contains(&r) {
        Ok(())
    } else {
        Err(cx.error(path, format!("must be a percentage, got {r}")))
    }
}
