//! The expectations section: the variants of a scenario (Canary settings changed per run) and
//! what each run must show (outcome, timing, weights, failures, counters, clients).

use fledge_controller::spec::{Canary, RolloutSpec};

use super::{Client, Context, Outcome, Patch, ScenarioError, raw};
use crate::engine::SimTime;

/// One run of the scenario and the checks it must pass.
#[derive(Clone, Debug)]
pub struct Variant {
    /// Empty for a scenario without variants.
    pub name: String,
    pub spec: RolloutSpec,
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
    /// Bounds on what each named client saw.
    pub(crate) clients: Vec<ClientBound>,
}

/// `counter` must lie within `[min, max]`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CounterBound {
    pub(crate) counter: String,
    pub(crate) min: Option<u64>,
    pub(crate) max: Option<u64>,
}

/// The success rate (percent, after retries) a client saw must lie within `[min, max]`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ClientBound {
    pub(crate) client: String,
    pub(crate) min_success_rate: Option<f64>,
    pub(crate) max_success_rate: Option<f64>,
}

impl Context {
    pub(super) fn variants(
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
                warnings: Vec::new(),
                manifests: None,
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
