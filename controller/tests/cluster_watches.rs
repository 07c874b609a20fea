//! What `run` watches: each kind of object that wakes a Canary by one stream per Canary API
//! (`fledge.dev`, and `flagger.app` under `--flagger-canaries`), not one per reason it wakes one.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cluster_support::*;
use fledge_controller::cluster::{Config, Context};
use serde_json::json;

/// `run` over the test namespace with `--flagger-canaries` as `flagger`, until it has written
/// the Canary once (its watches are open by then), then stopped; the watch requests it made,
/// counted by collection.
async fn watches(flagger: bool) -> BTreeMap<String, usize> {
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    c.put(FLAGGER_CANARY, flagger_canary("Succeeded", 0));
    let base = c.context();
    let ctx = Arc::new(Context {
        alerts: base.alerts.clone(),
        client: base.client.clone(),
        routing: base.routing.clone(),
        observer: base.observer.clone(),
        clock: base.clock.clone(),
        config: Config {
            flagger_canaries: flagger,
            ..Config::default()
        },
        metrics: base.metrics.clone(),
        reporter: base.reporter.clone(),
        backoff: Default::default(),
    });
    let before = c.get(CANARY).unwrap()["metadata"]["resourceVersion"].clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(async move {
        let namespaces = [NS.to_string()];
        fledge_controller::cluster::run(ctx, &namespaces, async {
            let _ = stopped.await;
        })
        .await;
    });
    // Bounded polling for the first write to the Canary, not a measure of speed.
    for _ in 0..1000 {
        if c.get(CANARY).unwrap()["metadata"]["resourceVersion"] != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), controller)
        .await
        .expect("the controller stops")
        .unwrap();
    let mut count = BTreeMap::new();
    for call in c.calls().into_iter().filter(|c| c.method == "WATCH") {
        *count.entry(call.path).or_default() += 1;
    }
    count
}

#[tokio::test]
async fn each_kind_is_watched_by_one_stream_per_canary_api() {
    let at = |kind: &str| format!("/apis/apps/v1/namespaces/{NS}/{kind}");
    for (flagger, controllers) in [(false, 1), (true, 2)] {
        let count = watches(flagger).await;
        for path in [
            at("deployments"),
            at("daemonsets"),
            SERVICES.to_string(),
            "/apis/networking.istio.io/v1beta1/namespaces/test/virtualservices".to_string(),
        ] {
            assert_eq!(
                count.get(&path),
                Some(&controllers),
                "flagger {flagger}: {path} in {count:#?}"
            );
        }
    }
}
