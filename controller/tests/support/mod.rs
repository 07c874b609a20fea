//! A test shell for the rollout core: a tiny world that answers observations and carries out
//! actions, ticking once per analysis interval.
#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeMap;

use fledge_controller::analysis::MetricReading;
use fledge_controller::rollout::{
    Action, Command, HookOutcome, Millis, Observation, Phase, Readiness, RolloutState, advance,
    wants,
};
use fledge_controller::spec::{
    Duration, HookGate, RolloutSpec, WebhookRef, load_manifests, validate,
};

/// A validated spec for target `app` (threshold 1 unless given) with a success-rate metric
/// (min 99%) and the given extra
/// lines under `analysis:` (indented by four spaces).
pub fn canary_spec(analysis: &str) -> RolloutSpec {
    let text = format!(
        "apiVersion: fledge.dev/v1alpha1\nkind: Canary\nmetadata: {{name: app}}\nspec:\n  targetRef: {{kind: Deployment, name: app}}\n  service: {{port: 80}}\n  analysis:\n    interval: 1m\n    metrics:\n      - name: request-success-rate\n        thresholdRange: {{min: 99}}\n    {analysis}\n"
    );
    let loaded = load_manifests(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    validate(&loaded.canaries[0].spec).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

pub trait SpecExt {
    fn with_hook(self, name: &str, gate: &str) -> Self;
    fn with_deadline_seconds(self, s: u64) -> Self;
    fn with_skip_analysis(self) -> Self;
    fn with_revert_on_deletion(self) -> Self;
}

impl SpecExt for RolloutSpec {
    fn with_hook(mut self, name: &str, gate: &str) -> Self {
        let gate = HookGate::ALL
            .into_iter()
            .find(|g| g.as_str() == gate)
            .expect("a hook type");
        self.webhooks.push(WebhookRef {
            name: name.into(),
            gate,
            url: "http://hooks.test/".into(),
            timeout: Duration::from_secs(10),
            retries: 0,
            metadata: BTreeMap::new(),
            mute_alert: false,
        });
        self
    }
    fn with_deadline_seconds(mut self, s: u64) -> Self {
        self.progress_deadline = Duration::from_secs(s);
        self
    }
    fn with_skip_analysis(mut self) -> Self {
        self.skip_analysis = true;
        self
    }
    fn with_revert_on_deletion(mut self) -> Self {
        self.revert_on_deletion = true;
        self
    }
}

pub struct Driver {
    pub spec: RolloutSpec,
    pub state: RolloutState,
    pub now: Millis,
    pub revision: String,
    pub canary_replicas: u32,
    pub canary_ready: bool,
    pub primary_ready: bool,
    /// The canary's success rate, reported for every success-rate metric.
    pub success_rate: f64,
    /// Overrides every metric reading when set.
    pub reading: Option<MetricReading>,
    /// Hooks not listed here answer success (rollback hooks: no rollback).
    pub hook_answers: BTreeMap<String, HookOutcome>,
    /// Sent with the next tick only.
    pub command: Option<Command>,
    pub deleting: bool,
    /// Reported as the routes' reason not to be in force, while set.
    pub routes_not_accepted: Option<String>,
    pub log: Vec<Action>,
    /// Where the current rollout's actions start in `log`.
    pub rollout_start: usize,
    /// When a tick last produced actions.
    pub last_change: Millis,
    /// Time between ticks (the spec's interval unless a test sets it).
    pub tick_ms: Millis,
}

impl Driver {
    /// A driver whose canary has been initialised (primary ready, canary scaled to zero).
    pub fn new(spec: RolloutSpec) -> Self {
        let mut d = Driver {
            spec,
            state: RolloutState::default(),
            now: 1_000_000,
            revision: "v1".into(),
            canary_replicas: 2,
            canary_ready: true,
            primary_ready: true,
            success_rate: 100.0,
            reading: None,
            hook_answers: BTreeMap::new(),
            command: None,
            deleting: false,
            routes_not_accepted: None,
            log: Vec::new(),
            rollout_start: 0,
            last_change: 0,
            tick_ms: 0,
        };
        d.tick_ms = d.spec.interval.millis();
        d.tick();
        assert_eq!(d.state.phase, Phase::Initialized, "{}", d.state.message);
        // The target is scaled to zero on the tick after traffic moved to the primary.
        d.tick();
        assert_eq!(d.canary_replicas, 0, "{}", d.state.message);
        d
    }

    pub fn observe(&self) -> Observation {
        let w = wants(&self.state, &self.spec, self.now);
        let metrics = if w.metrics {
            self.spec
                .metrics
                .iter()
                .map(|m| {
                    let r = self.reading.clone().unwrap_or(MetricReading::Value {
                        value: self.success_rate,
                    });
                    (m.name.clone(), r)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        let hooks = w
            .hooks
            .iter()
            .flat_map(|g| self.spec.hooks(*g))
            .map(|h| {
                // Unlisted hooks say yes, except rollback hooks, for which yes means "roll back".
                let default = match h.gate {
                    HookGate::Rollback => HookOutcome::Failed("no rollback asked".into()),
                    _ => HookOutcome::Passed,
                };
                (
                    h.name.clone(),
                    self.hook_answers.get(&h.name).cloned().unwrap_or(default),
                )
            })
            .collect();
        Observation {
            revision: self.revision.clone(),
            canary: Readiness {
                ready: if self.canary_ready {
                    self.canary_replicas
                } else {
                    0
                },
                desired: self.canary_replicas,
            },
            primary: if self.primary_ready {
                Readiness::all(2)
            } else {
                Readiness {
                    ready: 0,
                    desired: 2,
                }
            },
            metrics,
            hooks,
            canary_pods: Vec::new(),
            deleting: self.deleting,
            command: self.command,
            routes_not_accepted: self.routes_not_accepted.clone(),
        }
    }

    pub fn tick(&mut self) -> Vec<Action> {
        let obs = self.observe();
        self.command = None;
        let (state, actions) = advance(&self.state, &self.spec, &obs, self.now);
        for a in &actions {
            if let Action::ScaleCanary { up } = a {
                self.canary_replicas = if *up { 2 } else { 0 };
            }
        }
        if !actions.is_empty() {
            self.last_change = self.now;
        }
        self.state = state;
        self.log.extend(actions.iter().cloned());
        self.now += self.tick_ms;
        actions
    }

    /// A new revision of the target, noticed on the next tick.
    pub fn deploy(&mut self, revision: &str) {
        self.revision = revision.into();
        self.rollout_start = self.log.len();
        self.tick();
    }

    /// Ticks until the rollout succeeds or fails; returns the canary weights routed on the way.
    pub fn run_until_done(&mut self) -> Vec<u8> {
        for _ in 0..1000 {
            if matches!(self.state.phase, Phase::Succeeded | Phase::Failed) {
                break;
            }
            self.tick();
        }
        self.route_weights()
    }

    pub fn actions(&self) -> Vec<Action> {
        self.log[self.rollout_start..].to_vec()
    }

    pub fn route_weights(&self) -> Vec<u8> {
        self.log[self.rollout_start..]
            .iter()
            .filter_map(|a| match a {
                Action::SetRoutes { canary, .. } => Some(*canary),
                _ => None,
            })
            .collect()
    }

    pub fn messages(&self) -> Vec<String> {
        self.log[self.rollout_start..]
            .iter()
            .filter_map(|a| match a {
                Action::Event { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }
}
