//! The steps a rollout would take if everything went well: the core itself, driven with
//! observations in which every workload is ready, every metric passes and every hook says yes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    Action, HookOutcome, Millis, Observation, Phase, Readiness, RolloutState, advance,
    look_interval, wants,
};
use crate::analysis::MetricReading;
use crate::spec::{HookGate, MetricKind, RolloutSpec};

/// One decision of the ideal rollout.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanStep {
    /// Time since the new revision was detected.
    pub at: Millis,
    pub phase: Phase,
    pub canary_weight: u8,
    pub mirror: Option<u8>,
    pub matched: bool,
    /// The hooks called before this decision, by type.
    pub hooks: Vec<String>,
    /// Whether the metrics were analysed for this decision.
    pub analysed: bool,
    pub message: String,
}

/// The ideal rollout of a spec.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RolloutPlan {
    pub steps: Vec<PlanStep>,
    /// The shortest time from a new revision to a promoted, finalised rollout.
    pub shortest_promotion: Millis,
    /// Analysis ticks that check metrics on the way.
    pub analyses: u32,
}

const REVISION: &str = "planned";

/// `spec` (unsuspended) initialised on a first revision with every workload ready, and the
/// observation of a new revision `revision` to drive it with.
pub(super) fn initialised(
    spec: &RolloutSpec,
    revision: &str,
) -> (RolloutSpec, RolloutState, Observation) {
    let mut spec = spec.clone();
    spec.suspend = false;
    let mut obs = Observation {
        revision: "initial".into(),
        canary: Readiness::all(1),
        primary: Readiness::all(1),
        ..Observation::default()
    };
    let (state, _) = advance(&RolloutState::default(), &spec, &obs, 0);
    obs.revision = revision.into();
    (spec, state, obs)
}

/// Runs the core on ideal observations, a tick per look (the threshold judge looks once per
/// interval, the statistical judge more often: see [`look_interval`]), from a new revision until
/// the rollout has succeeded. Under the statistical judge a step below the top ends at its first
/// look after `minStepDuration` once the evidence suffices, which ideal readings always do:
/// the shortest time is the one of plenty of traffic.
pub fn plan(spec: &RolloutSpec) -> RolloutPlan {
    let (spec, mut state, mut obs) = initialised(spec, REVISION);
    debug_assert_eq!(state.phase, Phase::Initialized);

    let mut steps = Vec::new();
    let mut analyses = 0;
    let tick = look_interval(&spec);
    // Every interval's tick either advances or is gated by the interval, so this bound is
    // never reached by a valid spec; it only guards against a core bug looping forever.
    let per_interval = spec.interval.millis().div_ceil(tick).max(1);
    let max_ticks = 4 * per_interval * (200 + spec.threshold as u64 + iterations(&spec));
    let mut now = 0;
    for _ in 0..max_ticks {
        let w = wants(&state, &spec, now);
        obs.metrics = if w.metrics {
            ideal_readings(&spec)
        } else {
            BTreeMap::new()
        };
        obs.hooks = agreeing_hooks(&spec, &w.hooks);
        let (next, actions) = advance(&state, &spec, &obs, now);
        if !actions.is_empty() {
            analyses += u32::from(w.metrics);
            steps.push(PlanStep {
                at: now,
                phase: next.phase,
                canary_weight: next.canary_weight,
                mirror: next.mirror,
                matched: next.matched,
                hooks: w
                    .hooks
                    .iter()
                    .filter(|g| spec.hooks(**g).next().is_some())
                    .map(|g| g.to_string())
                    .collect(),
                analysed: w.metrics,
                message: events(&actions).unwrap_or_else(|| next.message.clone()),
            });
        }
        state = next;
        if state.phase == Phase::Succeeded {
            break;
        }
        // The shells tick at each look (`next_analysis`): once per interval for Flagger's
        // judge, whose ticks in between would change nothing here except finishing Promoting
        // and Finalising, which the next interval does too.
        now += tick;
    }
    let shortest_promotion = steps.last().map_or(0, |s| s.at);
    RolloutPlan {
        steps,
        shortest_promotion,
        analyses,
    }
}

/// Every hook of the wanted types says yes, except rollback hooks, for which yes means "roll
/// back".
pub(super) fn agreeing_hooks(
    spec: &RolloutSpec,
    gates: &[HookGate],
) -> BTreeMap<String, HookOutcome> {
    gates
        .iter()
        .flat_map(|g| spec.hooks(*g))
        .map(|h| {
            let answer = match h.gate {
                HookGate::Rollback => HookOutcome::Failed("no rollback asked".into()),
                _ => HookOutcome::Passed,
            };
            (h.name.clone(), answer)
        })
        .collect()
}

/// The events of one tick, joined.
pub(super) fn events(actions: &[Action]) -> Option<String> {
    let messages: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Event { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    (!messages.is_empty()).then(|| messages.join("; "))
}

fn iterations(spec: &RolloutSpec) -> u64 {
    match &spec.strategy {
        crate::spec::Strategy::BlueGreen { iterations, .. }
        | crate::spec::Strategy::AbTesting { iterations, .. } => *iterations as u64,
        crate::spec::Strategy::Canary { .. } => 0,
    }
}

/// A reading that passes each metric's check.
pub(super) fn ideal_readings(spec: &RolloutSpec) -> BTreeMap<String, MetricReading> {
    spec.metrics
        .iter()
        .map(|m| {
            let value = match (m.min, m.max, &m.kind) {
                (Some(lo), Some(hi), _) => (lo + hi) / 2.0,
                (Some(lo), None, MetricKind::RequestSuccessRate) => lo.max(100.0),
                (Some(lo), None, _) => lo,
                (None, Some(hi), _) => hi,
                (None, None, _) => 0.0,
            };
            (m.name.clone(), MetricReading::Value { value })
        })
        .collect()
}
