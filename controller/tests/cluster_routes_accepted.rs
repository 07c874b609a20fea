//! The HTTPRoute `Accepted` wait, against the fake API server: while a parent of the Canary's
//! HTTPRoute has not accepted its current generation the rollout holds at its step (Flagger's
//! router checks the same before shifting traffic); once accepted it moves on.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cluster_support::*;
use fledge_controller::alerts::Alerts;
use fledge_controller::cluster::deadline;
use fledge_controller::cluster::telemetry::Metrics;
use fledge_controller::cluster::{Config, Context, Routing};
use fledge_controller::router::{Router, Routes};
use fledge_controller::routes::Provider;
use fledge_controller::spec::Canary;
use futures::FutureExt;
use futures::future::BoxFuture;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};

const ROUTE: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/test/httproutes/podinfo";

/// The fake router for the split, and the cluster's own router for whether the HTTPRoute in
/// the fake API server is accepted.
struct Gate(FakeRouting);

impl Routing for Gate {
    fn reconcile<'a>(&'a self, p: Provider, c: &'a Canary) -> BoxFuture<'a, Result<(), String>> {
        self.0.reconcile(p, c)
    }
    fn set_routes<'a>(
        &'a self,
        p: Provider,
        c: &'a Canary,
        weights: Routes,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.0.set_routes(p, c, weights)
    }
    fn get_routes<'a>(
        &'a self,
        p: Provider,
        c: &'a Canary,
    ) -> BoxFuture<'a, Result<Routes, String>> {
        self.0.get_routes(p, c)
    }
    fn finalize<'a>(&'a self, p: Provider, c: &'a Canary) -> BoxFuture<'a, Result<(), String>> {
        self.0.finalize(p, c)
    }
    fn not_accepted<'a>(
        &'a self,
        p: Provider,
        c: &'a Canary,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        async move {
            let router = Router::new(p, self.0.0.client());
            router.not_accepted(c).await.map_err(|e| e.to_string())
        }
        .boxed()
    }
}

fn context(c: &FakeCluster) -> Arc<Context> {
    let clock = c.clock.clone();
    let client = deadline::bounded(c.client(), deadline::API_CALL_TIMEOUT);
    let metrics = Arc::new(Metrics::new());
    Arc::new(Context {
        alerts: Alerts::with_settings(client.clone(), metrics.clone(), c.alert_settings()),
        client,
        routing: Arc::new(Gate(FakeRouting(c.clone()))),
        observer: Arc::new(FakeObserver(c.clone())),
        clock: Arc::new(move || clock.load(Ordering::SeqCst)),
        config: Config::default(),
        metrics,
        reporter: Reporter {
            controller: "fledge".into(),
            instance: Some("test".into()),
        },
        backoff: Default::default(),
    })
}

/// The HTTPRoute at `generation`, its Gateway's `Accepted` condition as given.
fn http_route(generation: i64, accepted: &str, observed: i64) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "podinfo", "namespace": NS, "generation": generation},
        "spec": {"parentRefs": [{"name": "public", "namespace": "gateways"}], "rules": []},
        "status": {"parents": [{
            "controllerName": "gateway.envoyproxy.io/gatewayclass-controller",
            "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                          "name": "public", "namespace": "gateways"},
            "conditions": [{"type": "Accepted", "status": accepted, "observedGeneration": observed,
                            "reason": "NotAllowedByListeners", "message": "no listener allows it"}],
        }]},
    })
}

async fn tick(c: &FakeCluster) {
    c.advance_clock(Duration::from_secs(60));
    c.reconcile(&context(c)).await.expect("reconcile");
    c.settle();
}

#[tokio::test]
async fn a_rollout_holds_at_its_step_until_the_gateway_accepts_the_routes_current_generation() {
    let c = cluster_with(
        canary(json!({"provider": "gatewayapi",
                      "service": {"gatewayRefs": [{"name": "public", "namespace": "gateways"}]}})),
        Some(deployment("podinfo:1")),
    );
    progressing_at(&c, 10).await;

    // Refused by its Gateway: the step holds, and says which parent and why.
    c.put(ROUTE, http_route(2, "False", 2));
    tick(&c).await;
    tick(&c).await;
    assert_eq!(c.routes().map(|r| r.canary), Some(10));
    assert_eq!(c.phase(), "Progressing");
    let message = c.get(CANARY).unwrap()["status"]["message"].clone();
    let message = message.as_str().unwrap_or_default();
    assert!(
        message.starts_with("waiting: routes not in force: HTTPRoute test/podinfo: parent Gateway gateways/public (controller gateway.envoyproxy.io/gatewayclass-controller) does not accept it")
            && message.contains("NotAllowedByListeners"),
        "{message}"
    );
    let holds = events(&c)
        .into_iter()
        .filter(|e| e.contains("Holding podinfo"))
        .count();
    assert_eq!(holds, 1, "one Event when the hold begins");

    // Accepted, but the Gateway has not seen the current generation yet: still holding.
    c.put(ROUTE, http_route(3, "True", 2));
    tick(&c).await;
    assert_eq!(c.routes().map(|r| r.canary), Some(10));

    // Accepted at the current generation: the rollout moves on.
    c.put(ROUTE, http_route(3, "True", 3));
    tick(&c).await;
    assert_eq!(c.routes().map(|r| r.canary), Some(20));
}
