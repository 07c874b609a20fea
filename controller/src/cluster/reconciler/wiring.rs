//! The controller's wiring: which Canaries it watches and what else wakes them.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{Controller, watcher};
use tracing::warn;

use super::{Context, error_policy, reconcile};
use crate::router::api_resource;
use crate::spec::Canary;

/// Runs the controller over `namespaces` (all when empty) until `shutdown` resolves; marks
/// `ctx.metrics` ready once the Canary lists of every namespace have synced.
pub async fn run(
    ctx: Arc<Context>,
    namespaces: &[String],
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let mut stores = Vec::new();
    let controllers = scopes.into_iter().map(|ns| {
        let client = ctx.client.clone();
        let (canaries, deployments): (Api<Canary>, Api<Deployment>) = match &ns {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (Api::all(client.clone()), Api::all(client)),
        };
        let mut controller = Controller::new(canaries, watcher::Config::default());
        // The default provider's routing objects (owned by their Canaries): an edit by hand is
        // put back at once rather than at the next analysis tick.
        let resource = api_resource(ctx.config.default_provider.routing_kind());
        let routes: Api<DynamicObject> = match &ns {
            Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &resource),
            None => Api::all_with(ctx.client.clone(), &resource),
        };
        controller = controller.owns_with(routes, resource, watcher::Config::default());
        let store = controller.store();
        stores.push(store.clone());
        let unsynced_stop = super::super::stop_if_unsynced(store.clone(), shutdown.clone());
        let services: Api<Service> = match &ns {
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
            None => Api::all(ctx.client.clone()),
        };
        controller
            // The primary and the generated Services: a change by hand is seen at once.
            .owns(deployments.clone(), watcher::Config::default())
            .owns(services, watcher::Config::default())
            // A change to a target Deployment (a new revision, readiness) wakes its Canaries.
            .watches(deployments, watcher::Config::default(), move |dep| {
                let (ns, name) = (dep.namespace(), dep.name_any());
                store
                    .state()
                    .into_iter()
                    .filter(|c| c.namespace() == ns && c.spec.target_ref.name == name)
                    .map(|c| kube::runtime::reflector::ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            })
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, ctx.clone())
            .take_until(unsynced_stop)
            .for_each(|res| async move {
                if let Err(e) = res {
                    warn!(error = %e, "controller");
                }
            })
    });
    let controllers = futures::future::join_all(controllers);
    let ready = super::super::ready_when_synced(stores, ctx.metrics.clone());
    futures::future::select(Box::pin(controllers), Box::pin(ready)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Provider;

    #[test]
    fn each_provider_watches_the_kind_of_routing_object_it_writes() {
        let api_version = |p: &str| {
            let r = api_resource(p.parse::<Provider>().ok()?.routing_kind());
            Some((r.api_version, r.plural))
        };
        assert_eq!(
            api_version("istio"),
            Some((
                "networking.istio.io/v1beta1".into(),
                "virtualservices".into()
            ))
        );
        assert_eq!(
            api_version("linkerd"),
            Some(("split.smi-spec.io/v1alpha2".into(), "trafficsplits".into()))
        );
        assert_eq!(
            api_version("gatewayapi:v1"),
            Some(("gateway.networking.k8s.io/v1".into(), "httproutes".into()))
        );
        assert_eq!(api_version("nginx"), None);
    }
}
