//! The seams between the reconciler and the IO providers: traffic routers, metric sources and
//! webhooks. The reconciler sees only these traits, so tests drive it with fakes and the
//! simulator's live mode can plug in its own.

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::analysis::MetricReading;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::metrics::{Access, Credentials, Mesh, Prometheus};
use crate::observe::{Measurement, Subject};
use crate::rollout::HookOutcome;
use crate::router::{Router, Routes};
use crate::routes::Provider;
use crate::spec::{Canary, HookGate, MetricTemplateSpec, WebhookRef};
use crate::webhook::{HookEvent, Payload, Webhooks};

/// A traffic router for every provider. Errors are the router's own messages; the reconciler
/// wraps them with the provider's name.
pub trait Routing: Send + Sync {
    /// Creates or updates the routing objects (all traffic to the primary when new).
    fn reconcile<'a>(
        &'a self,
        provider: Provider,
        canary: &'a Canary,
    ) -> BoxFuture<'a, Result<(), String>>;
    fn set_routes<'a>(
        &'a self,
        provider: Provider,
        canary: &'a Canary,
        weights: Routes,
    ) -> BoxFuture<'a, Result<(), String>>;
    fn get_routes<'a>(
        &'a self,
        provider: Provider,
        canary: &'a Canary,
    ) -> BoxFuture<'a, Result<Routes, String>>;
    /// Routes everything back to the primary for good: the Canary is going away.
    fn finalize<'a>(
        &'a self,
        provider: Provider,
        canary: &'a Canary,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Why the routing object is not in force yet (a Gateway API parent that has not accepted
    /// its current generation), `None` when it is. A router that cannot tell says `None`.
    fn not_accepted<'a>(
        &'a self,
        _provider: Provider,
        _canary: &'a Canary,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        async { Ok(None) }.boxed()
    }
}

/// What a webhook is told about the rollout (Flagger's payload).
#[derive(Clone, Debug, PartialEq)]
pub struct HookCall {
    pub name: String,
    pub namespace: String,
    /// The rollout's phase when the hook is called.
    pub phase: String,
    /// The target revision under rollout.
    pub checksum: String,
    pub gate: HookGate,
    /// For `event` hooks: the event.
    pub event: Option<HookEvent>,
}

/// Where metric readings and webhook answers come from. Failures are values (a reading of kind
/// `Error` or `NoData`, a failed hook outcome) because the rollout core decides what they mean.
pub trait Observer: Send + Sync {
    /// Executes one measurement of the observation plan ([`crate::observe::plan`]) about
    /// `subject`, asking the Canary's own Prometheus and the `MetricTemplate` it names (with
    /// its credentials) when `access` gives them.
    fn read_metric<'a>(
        &'a self,
        provider: Provider,
        subject: &'a Subject,
        measurement: &'a Measurement,
        access: Access<'a>,
    ) -> BoxFuture<'a, MetricReading>;
    fn call_hook<'a>(
        &'a self,
        hook: &'a WebhookRef,
        call: &'a HookCall,
    ) -> BoxFuture<'a, HookOutcome>;
}

/// The cluster's traffic routers ([`crate::router::Router`]), one per provider.
pub struct LiveRouting {
    client: kube::Client,
}

impl LiveRouting {
    pub fn new(client: kube::Client) -> Self {
        LiveRouting { client }
    }

    fn router(&self, provider: Provider) -> Router {
        Router::new(provider, self.client.clone())
    }
}

impl Routing for LiveRouting {
    fn reconcile<'a>(
        &'a self,
        provider: Provider,
        canary: &'a Canary,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let router = self.router(provider);
            router.reconcile(canary).await.map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn set_routes<'a>(
        &'a self,
        provider: Provider,
        canary: &'a Canary,
        weights: Routes,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let router = self.router(provider);
            router
                .set_routes(canary, &weights)
                .await
                .map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn get_routes<'a>(
        &'a self,
        provider: Provider,
        canary: &'a Canary,
    ) -> BoxFuture<'a, Result<Routes, String>> {
        async move {
            let router = self.router(provider);
            router.get_routes(canary).await.map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn finalize<'a>(
        &'a self,
        provider: Provider,
        canary: &'a Canary,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let router = self.router(provider);
            router.finalize(canary).await.map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn not_accepted<'a>(
        &'a self,
        provider: Provider,
        canary: &'a Canary,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        async move {
            let router = self.router(provider);
            router.not_accepted(canary).await.map_err(|e| e.to_string())
        }
        .boxed()
    }
}

/// Prometheus ([`crate::metrics::Prometheus`]) and HTTP webhooks ([`crate::webhook::Webhooks`]).
pub struct LiveObserver {
    prometheus: Prometheus,
    webhooks: Webhooks,
    /// Whose series the built-in queries of Gateway API Canaries read.
    gateway_api: Mesh,
}

impl LiveObserver {
    pub fn new(prometheus: Prometheus, webhooks: Webhooks) -> Self {
        LiveObserver {
            prometheus,
            webhooks,
            gateway_api: Mesh::GatewayApi,
        }
    }

    /// Reads Gateway API Canaries' built-in metrics from `mesh`'s series.
    pub fn with_gateway_api_metrics(mut self, mesh: Mesh) -> Self {
        self.gateway_api = mesh;
        self
    }
}

impl Observer for LiveObserver {
    fn read_metric<'a>(
        &'a self,
        provider: Provider,
        subject: &'a Subject,
        measurement: &'a Measurement,
        access: Access<'a>,
    ) -> BoxFuture<'a, MetricReading> {
        let mesh = Mesh::for_provider(provider, self.gateway_api);
        self.prometheus
            .read_with(mesh, subject, measurement, access)
            .boxed()
    }

    fn call_hook<'a>(
        &'a self,
        hook: &'a WebhookRef,
        call: &'a HookCall,
    ) -> BoxFuture<'a, HookOutcome> {
        async move {
            let payload = Payload {
                name: call.name.clone(),
                namespace: call.namespace.clone(),
                phase: call.phase.clone(),
                checksum: call.checksum.clone(),
                gate: call.gate,
                metadata: Default::default(),
                event: call.event.clone(),
            };
            self.webhooks.call(hook, &payload).await
        }
        .boxed()
    }
}

/// The credentials of a MetricTemplate in `namespace` (its `provider.secretRef`, read from the
/// template's own namespace, as Flagger reads it): `None` when it names no Secret; a Secret
/// that does not exist is a reason naming it, for the failed check; other API errors are the
/// caller's to retry.
pub(crate) async fn template_credentials(
    client: kube::Client,
    namespace: &str,
    template: &MetricTemplateSpec,
) -> Result<Option<Result<Credentials, String>>, kube::Error> {
    let Some(r) = &template.provider.secret_ref else {
        return Ok(None);
    };
    let secret = format!("{namespace}/{}", r.name);
    let api: Api<Secret> = Api::namespaced(client, namespace);
    Ok(Some(match api.get_opt(&r.name).await? {
        None => Err(format!(
            "Secret {secret} not found (the template's provider.secretRef)"
        )),
        Some(found) => Ok(Credentials {
            secret,
            data: found
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
        }),
    }))
}
