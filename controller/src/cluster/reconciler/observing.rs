//! Observing: the executor of the pure observation plan ([`crate::observe::plan`]) on the
//! cluster, the twin of the simulator's. It reads workloads, metrics and webhook answers into the
//! [`Observation`] the core decides on.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PodSpec, Probe};

use super::super::providers::{HookCall, Observer, template_credentials};
use super::super::workloads;
use super::super::{Error, Result, flagger};
use super::tick::Tick;
use crate::analysis::MetricReading;
use crate::metrics::Access;
use crate::observe::{Measure, Measurement, QuerySource, Subject, plan, template_not_found};
use crate::rollout::{
    Command, HookOutcome, Millis, Observation, Phase, PodState, RolloutState, wants,
};
use crate::spec::{HookGate, MetricTemplateSpec, RolloutSpec};
use crate::webhook::HookEvent;

impl Tick<'_> {
    pub(super) async fn observe(
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
        let revision = self.target_revision(target).await?;
        let asked = Asked {
            name: &self.name,
            namespace: &self.namespace,
            state,
            revision: &revision,
        };
        let hooks = call_hooks(&*self.ctx.observer, spec, want.hooks, &asked).await;
        let canary = workloads::readiness(target);
        // Pods are read only while a rollout waits on a canary that is not ready.
        let waiting = matches!(state.phase, Phase::Progressing | Phase::WaitingPromotion)
            && !canary.meets(spec.canary_ready_threshold);
        let canary_pods = match workloads::selector_labels(target) {
            Ok(selector) if waiting => self.current_pod_states(target, &selector).await?,
            _ => Vec::new(),
        };
        // Read while a rollout shifts traffic, and before the canary is scaled down once
        // traffic is back on the primary: the core holds on it then.
        let routes_not_accepted = if matches!(
            state.phase,
            Phase::Progressing | Phase::WaitingPromotion | Phase::Finalising
        ) {
            (self.ctx.routing)
                .not_accepted(self.provider()?, self.canary)
                .await
                .map_err(|m| self.route_error(m))?
        } else {
            None
        };
        Ok(Observation {
            revision,
            canary,
            primary: primary.map(workloads::readiness).unwrap_or_default(),
            metrics,
            hooks,
            canary_pods,
            deleting: false,
            command,
            routes_not_accepted,
        })
    }

    /// The not-ready containers of the target's current revision only: an old ReplicaSet's
    /// pods (a crash loop the new revision may be the fix of) judge nothing. Until the current
    /// revision is known, no pod is judged; the progress deadline still applies.
    async fn current_pod_states(
        &self,
        target: &Deployment,
        selector: &BTreeMap<String, String>,
    ) -> Result<Vec<PodState>> {
        let sets = self.workloads.replica_sets(selector).await?;
        let Some(hash) = workloads::current_template_hash(target, &sets) else {
            return Ok(Vec::new());
        };
        let pods = self.workloads.pods(selector).await?;
        let template = target.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        let mut states = Vec::new();
        for pod in workloads::pods_of_template(pods, &hash) {
            // The pod's own spec: a sidecar injected at admission (istio-proxy) has its probes
            // there, not in the template.
            let budgets = probe_budgets(pod.spec.as_ref().or(template));
            for mut s in workloads::pod_states(std::slice::from_ref(&pod)) {
                s.probe_budget = budgets.get(&s.container).copied();
                states.push(s);
            }
        }
        Ok(states)
    }

    /// One measurement, with the `MetricTemplate` it names and that template's credentials
    /// read from the API.
    async fn read_metric(&self, subject: &Subject, m: &Measurement) -> Result<MetricReading> {
        let mut template: Option<MetricTemplateSpec> = None;
        let mut credentials = None;
        if let Measure::Query(QuerySource::Template {
            namespace, name, ..
        }) = &m.measure
        {
            let client = self.ctx.client.clone();
            let read = |kind, name, source| Error::Read { kind, name, source };
            let found = flagger::metric_template(client.clone(), self.canary, namespace, name)
                .await
                .map_err(|e| read("MetricTemplate", format!("{namespace}/{name}"), e))?;
            let Some(t) = found else {
                let reason = template_not_found(namespace, name);
                return Ok(MetricReading::Error { reason });
            };
            let secret = t.provider.secret_ref.as_ref().map(|r| r.name.as_str());
            let secret = format!("{namespace}/{}", secret.unwrap_or_default());
            credentials = template_credentials(client, namespace, &t)
                .await
                .map_err(|e| read("Secret", secret, e))?;
            template = Some(t);
        }
        let access = Access {
            server: self.canary.spec.metrics_server.as_deref(),
            template: template.as_ref(),
            credentials: credentials.as_ref(),
        };
        Ok(self
            .ctx
            .observer
            .read_metric(self.provider()?, subject, m, access)
            .await)
    }
}

/// Whom a webhook is asked about: the Canary, its phase and the target's revision.
pub(crate) struct Asked<'a> {
    pub(crate) name: &'a str,
    pub(crate) namespace: &'a str,
    pub(crate) state: &'a RolloutState,
    pub(crate) revision: &'a str,
}

impl Asked<'_> {
    /// The call of a hook of `gate`; `event` only for event hooks.
    pub(crate) fn call(&self, gate: HookGate, event: Option<HookEvent>) -> HookCall {
        HookCall {
            name: self.name.to_string(),
            namespace: self.namespace.to_string(),
            phase: self.state.phase.to_string(),
            checksum: self.revision.to_string(),
            gate,
            event,
        }
    }
}

/// The answers of every hook of `gates`, by hook name: what the core decides gates on. The
/// cluster's reconciler and the standalone controller (`local`) both observe hooks here.
pub(crate) async fn call_hooks(
    observer: &dyn Observer,
    spec: &RolloutSpec,
    gates: impl IntoIterator<Item = HookGate>,
    asked: &Asked<'_>,
) -> BTreeMap<String, HookOutcome> {
    let mut hooks = BTreeMap::new();
    for gate in gates {
        for hook in spec.hooks(gate) {
            let outcome = observer.call_hook(hook, &asked.call(gate, None)).await;
            hooks.insert(hook.name.clone(), outcome);
        }
    }
    hooks
}

/// How long each container may run before its readiness probe passes, by container name: its
/// startup probe's budget, for the kubelet runs no readiness probe until the startup probe has
/// passed, plus its readiness probe's. A probe first runs after `initialDelaySeconds` and fails
/// the container after `failureThreshold` failures `periodSeconds` apart; a readiness probe
/// also needs `successThreshold` successes in a row (Kubernetes' defaults when unset: 0, 3, 10
/// and 1; a startup probe's `successThreshold` must be 1). The readiness probe's delay counts
/// from the container's start, so it overlaps the startup probe's time: the sum is an upper
/// bound. A container with neither probe is ready once it runs, and has none.
fn probe_budgets(pod: Option<&PodSpec>) -> BTreeMap<String, Millis> {
    let containers = pod.map(|s| s.containers.as_slice()).unwrap_or_default();
    containers
        .iter()
        .filter(|c| c.startup_probe.is_some() || c.readiness_probe.is_some())
        .map(|c| {
            let startup = c
                .startup_probe
                .as_ref()
                .map_or(0, |p| probe_budget(p, false));
            let ready = c
                .readiness_probe
                .as_ref()
                .map_or(0, |p| probe_budget(p, true));
            let seconds = startup.saturating_add(ready);
            (c.name.clone(), seconds.saturating_mul(1000))
        })
        .collect()
}

/// One probe's budget in seconds: `initialDelaySeconds + failureThreshold x max(periodSeconds,
/// timeoutSeconds)`,
/// and with `successes`, `(successThreshold - 1) x periodSeconds` more.
fn probe_budget(p: &Probe, successes: bool) -> u64 {
    let seconds =
        |v: Option<i32>, default: u64| v.map_or(default, |v| u64::try_from(v).unwrap_or(0));
    let period = seconds(p.period_seconds, 10);
    // The kubelet's prober waits for a probe to end before its next tick, and a Go ticker drops
    // the ticks it missed: a probe that times out fails once per `max(period, timeout)`.
    let per_failure = period.max(seconds(p.timeout_seconds, 1));
    let failures = seconds(p.failure_threshold, 3).saturating_mul(per_failure);
    let extra = if successes {
        seconds(p.success_threshold, 1)
            .saturating_sub(1)
            .saturating_mul(period)
    } else {
        0
    };
    seconds(p.initial_delay_seconds, 0)
        .saturating_add(failures)
        .saturating_add(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_budget_takes_kubernetes_defaults_for_unset_fields() {
        let pod: PodSpec = serde_json::from_value(serde_json::json!({"containers": [
            {"name": "app", "readinessProbe": {"initialDelaySeconds": 5}},
            {"name": "proxy", "readinessProbe": {"periodSeconds": 2, "failureThreshold": 4}},
            {"name": "plain"},
        ]}))
        .unwrap();
        assert_eq!(
            probe_budgets(Some(&pod)),
            BTreeMap::from([("app".into(), 35_000), ("proxy".into(), 8_000)])
        );
    }

    #[test]
    fn a_startup_probe_budget_comes_before_the_readiness_probe_budget() {
        let pod: PodSpec = serde_json::from_value(serde_json::json!({"containers": [
            // Kubernetes' slow-starter example: up to 300 s to start, then 30 s to be ready.
            {"name": "slow", "startupProbe": {"failureThreshold": 30, "periodSeconds": 10},
             "readinessProbe": {}},
            {"name": "started", "startupProbe": {"initialDelaySeconds": 20}},
            // Three successes in a row: two more periods.
            {"name": "strict", "readinessProbe": {"successThreshold": 3, "periodSeconds": 5}},
        ]}))
        .unwrap();
        assert_eq!(
            probe_budgets(Some(&pod)),
            BTreeMap::from([
                ("slow".into(), 330_000),
                ("started".into(), 50_000),
                ("strict".into(), 25_000),
            ])
        );
        assert_eq!(probe_budgets(None), BTreeMap::new());
    }

    /// Review r13c, finding 3. The kubelet runs a probe and only then waits for its next tick
    /// (pkg/kubelet/prober/worker.go, `run`: `for w.doProbe(ctx) { <-probeTicker.C }`; a Go
    /// ticker drops the ticks a slow receiver missed), so a probe that times out after
    /// `timeoutSeconds`, longer than `periodSeconds`, is repeated every `timeoutSeconds`: here
    /// 30 failures of up to 5 s each, 150 s of start-up before the container is killed, not 30 s.
    #[test]
    fn a_probe_slower_than_its_period_counts_its_timeout_per_failure() {
        let pod: PodSpec = serde_json::from_value(serde_json::json!({"containers": [
            {"name": "slow", "startupProbe":
                {"periodSeconds": 1, "timeoutSeconds": 5, "failureThreshold": 30}},
        ]}))
        .unwrap();
        assert!(probe_budgets(Some(&pod))["slow"] >= 150_000);
    }
}
