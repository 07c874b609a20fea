//! What every reconcile needs: the client, the providers, the clock, the settings, and the
//! retry backoff (the only thing remembered between reconciles).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::Reporter;
use kube::{Client, ResourceExt};

use super::super::providers::{Observer, Routing};
use super::super::telemetry::Metrics;
use crate::alerts::Alerts;
use crate::rollout::Millis;
use crate::routes::Provider;
use crate::spec::Canary;

/// Controller-wide settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The traffic provider of Canaries that name none.
    pub default_provider: Provider,
    /// The longest wait between reconciles while a rollout waits on workloads or gates.
    pub poll: Duration,
    /// How long to wait after a failed reconcile.
    pub retry: Duration,
    /// Also reconcile Flagger's own Canaries (`flagger.app/v1beta1`), taking them over in place.
    pub flagger_canaries: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_provider: Provider::Istio,
            poll: Duration::from_secs(10),
            retry: Duration::from_secs(5),
            flagger_canaries: false,
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
    /// Alerts on decisions, delivered by their own task.
    pub alerts: Alerts,
    pub reporter: Reporter,
    pub backoff: Backoff,
}

/// Consecutive failed reconciles per Canary, for an exponential backoff.
#[derive(Debug, Default)]
pub struct Backoff(std::sync::Mutex<BTreeMap<(String, String), u32>>);

impl Backoff {
    /// The wait after another failure of `key`: `base`, doubled per consecutive failure, at
    /// most five minutes.
    pub(super) fn failed(&self, key: (String, String), base: Duration) -> Duration {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
        base.saturating_mul(factor).min(Duration::from_secs(300))
    }

    pub(super) fn succeeded(&self, key: &(String, String)) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

pub(super) fn key(canary: &Canary) -> (String, String) {
    (canary.namespace().unwrap_or_default(), canary.name_any())
}

impl Context {
    /// A context on the system clock; starts the alert sender (on the current runtime).
    pub fn new(
        client: Client,
        routing: Arc<dyn Routing>,
        observer: Arc<dyn Observer>,
        config: Config,
        metrics: Arc<Metrics>,
        alerts: crate::alerts::Settings,
    ) -> Self {
        Context {
            alerts: Alerts::with_settings(client.clone(), metrics.clone(), alerts),
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
            reporter: reporter(),
            backoff: Backoff::default(),
        }
    }
}

/// Who publishes Fledge's Events: the controller, and its pod when it runs in one.
pub(crate) fn reporter() -> Reporter {
    Reporter {
        controller: "fledge".into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}
