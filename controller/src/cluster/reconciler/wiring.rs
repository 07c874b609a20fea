//! The controller's wiring: which Canaries it watches and what else wakes them.

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use tracing::warn;

use super::super::flagger;
use super::{Context, error_policy, flagger_error_policy, reconcile, reconcile_flagger};
use crate::router::api_resource;
use crate::spec::Canary;

/// Runs the controller over `namespaces` (all when empty) until `shutdown` resolves; marks
/// `ctx.metrics` ready once the Canary lists of every namespace have synced. With
/// `flagger_canaries`, Flagger's Canaries are watched and reconciled too.
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
    let mut flagger_stores = Vec::new();
    let mut controllers = Vec::new();
    for ns in scopes {
        let api = |client: kube::Client| -> Api<Canary> {
            match &ns {
                Some(ns) => Api::namespaced(client, ns),
                None => Api::all(client),
            }
        };
        let controller = Controller::new(api(ctx.client.clone()), watcher::Config::default());
        let store = controller.store();
        stores.push(store.clone());
        let unsynced_stop = super::super::stop_if_unsynced(store.clone(), shutdown.clone());
        let targets = move |ns: Option<String>, name: String| {
            store
                .state()
                .into_iter()
                .filter(|c| c.namespace() == ns && c.spec.target_ref.name == name)
                .map(|c| ObjectRef::from_obj(&*c))
                .collect::<Vec<_>>()
        };
        let controller = owning(controller, &ctx, &ns, targets)
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, ctx.clone())
            .take_until(unsynced_stop)
            .for_each(log_errors);
        controllers.push(controller.boxed());
        if !ctx.config.flagger_canaries {
            continue;
        }
        let resource = flagger::canary_resource();
        let canaries: Api<DynamicObject> = match &ns {
            Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &resource),
            None => Api::all_with(ctx.client.clone(), &resource),
        };
        let controller = Controller::new_with(canaries, watcher::Config::default(), resource);
        let store = controller.store();
        flagger_stores.push(store.clone());
        let unsynced_stop = super::super::stop_if_unsynced(store.clone(), shutdown.clone());
        let targets = move |ns: Option<String>, name: String| {
            store
                .state()
                .into_iter()
                .filter(|c| {
                    c.namespace() == ns
                        && c.data["spec"]["targetRef"]["name"].as_str() == Some(&name)
                })
                .map(|c| ObjectRef::from_obj_with(&*c, flagger::canary_resource()))
                .collect::<Vec<_>>()
        };
        let controller = owning(controller, &ctx, &ns, targets)
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile_flagger, flagger_error_policy, ctx.clone())
            .take_until(unsynced_stop)
            .for_each(log_errors);
        controllers.push(controller.boxed());
    }
    let controllers = futures::future::join_all(controllers);
    let metrics = ctx.metrics.clone();
    let ready = async move {
        let (fledge, flaggers) = futures::join!(
            super::super::synced_all(stores),
            super::super::synced_all(flagger_stores)
        );
        if fledge && flaggers {
            metrics.set_ready(true);
        }
        std::future::pending::<()>().await
    };
    futures::future::select(Box::pin(controllers), Box::pin(ready)).await;
}

async fn log_errors<T, E: std::fmt::Display>(res: Result<T, E>) {
    if let Err(e) = res {
        warn!(error = %e, "controller");
    }
}

/// A Canary controller with what else wakes its Canaries: the objects they own (the generated
/// Services, the default provider's routing objects: a change by hand is put back at once
/// rather than at the next analysis tick), and their targets (a new revision, readiness) and
/// primaries, which `targets` maps to the Canaries naming them. One stream a kind: targets and
/// primaries, Deployments or DaemonSets, share theirs, a primary `<target>-primary` waking the
/// Canaries of `<target>`.
fn owning<K>(
    controller: Controller<K>,
    ctx: &Context,
    ns: &Option<String>,
    targets: impl Fn(Option<String>, String) -> Vec<ObjectRef<K>> + Send + Sync + 'static,
) -> Controller<K>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + std::fmt::Debug + Unpin,
{
    let client = ctx.client.clone();
    let resource = api_resource(ctx.config.default_provider.routing_kind());
    let (routes, deployments, services): (Api<DynamicObject>, Api<Deployment>, Api<Service>) =
        match ns {
            Some(ns) => (
                Api::namespaced_with(client.clone(), ns, &resource),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all_with(client.clone(), &resource),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
    let daemon_sets: Api<DaemonSet> = match ns {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let wake = Arc::new(move |ns: Option<String>, name: String| {
        let mut woken = match name.strip_suffix("-primary") {
            Some(target) => targets(ns.clone(), target.to_string()),
            None => Vec::new(),
        };
        woken.extend(targets(ns, name));
        woken
    });
    let wake_too = wake.clone();
    controller
        .owns_with(routes, resource, watcher::Config::default())
        .owns(services, watcher::Config::default())
        .watches(deployments, watcher::Config::default(), move |d| {
            (*wake)(d.namespace(), d.name_any())
        })
        .watches(daemon_sets, watcher::Config::default(), move |d| {
            (*wake_too)(d.namespace(), d.name_any())
        })
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
