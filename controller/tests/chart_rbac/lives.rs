//! The lives the grant checks are made against: Canaries driven through everything the
//! controller does to them (initialisation, promotion, rollback, an operator abort, deletion with
//! `revertOnDeletion`, the watches of `run`, leader election, alerts), on the fake API server,
//! each recording the requests it made.

use super::*;

/// A MetricTemplate in another namespace, and one in the Canary's.
pub(crate) const TEMPLATE: &str =
    "/apis/fledge.dev/v1alpha1/namespaces/istio-system/metrictemplates/not-found-percentage";
pub(crate) const LOCAL_TEMPLATE: &str =
    "/apis/fledge.dev/v1alpha1/namespaces/test/metrictemplates/errors";
pub(crate) const HPA: &str =
    "/apis/autoscaling/v2/namespaces/test/horizontalpodautoscalers/podinfo";

/// The requests of a Canary's life on the fake cluster, and which of them `run` made over all
/// namespaces (what a controller with a namespace list never does).
pub(crate) struct Life {
    pub(crate) calls: Vec<Call>,
    pub(crate) all_namespaces: Range<usize>,
}

/// A context like the controller's own: the real routers over the fake API server.
pub(crate) fn live_context(c: &FakeCluster, default: Provider) -> Arc<Context> {
    live_context_with(c, default, false)
}

/// [`live_context`] with `--flagger-canaries` on or off.
pub(crate) fn live_context_with(c: &FakeCluster, default: Provider, flagger: bool) -> Arc<Context> {
    let client = c.client();
    let clock = c.clock.clone();
    let metrics = Arc::new(Metrics::new());
    Arc::new(Context {
        // One attempt per alert: the providers' webhooks refuse connections, and a retry would
        // only hold the next alert's provider read up.
        alerts: fledge_controller::alerts::Alerts::with_settings(
            client.clone(),
            metrics.clone(),
            fledge_controller::alerts::Settings {
                attempts: 1,
                ..Default::default()
            },
        ),
        client: client.clone(),
        routing: Arc::new(LiveRouting::new(client)),
        observer: Arc::new(FakeObserver(c.clone())),
        clock: Arc::new(move || clock.load(std::sync::atomic::Ordering::SeqCst)),
        config: Config {
            default_provider: default,
            flagger_canaries: flagger,
            ..Config::default()
        },
        metrics,
        reporter: Reporter {
            controller: "fledge".into(),
            instance: Some("test".into()),
        },
        backoff: Default::default(),
    })
}

/// Reconciles until the phase is `phase`, settling workloads and moving the clock a minute
/// each time.
pub(crate) async fn drive(c: &FakeCluster, default: Provider, phase: &str) {
    for _ in 0..40 {
        c.reconcile(&live_context(c, default))
            .await
            .expect("reconcile");
        c.settle();
        if c.phase() == phase {
            return;
        }
        c.advance_clock(Duration::from_secs(60));
    }
    panic!("phase {phase} not reached; at {}", c.phase());
}

/// `run` over `namespaces` until it has reconciled the Canary once, then stopped.
pub(crate) async fn run_once(c: &FakeCluster, default: Provider, namespaces: &[String]) {
    run_once_on(c, live_context(c, default), CANARY, namespaces).await;
}

/// `run` with `ctx` over `namespaces` until it has written the Canary at `canary`, then stopped.
pub(crate) async fn run_once_on(
    c: &FakeCluster,
    ctx: Arc<Context>,
    canary: &str,
    namespaces: &[String],
) {
    let namespaces = namespaces.to_vec();
    let before = c.get(canary).unwrap()["metadata"]["resourceVersion"].clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(async move {
        fledge_controller::cluster::run(ctx, &namespaces, async {
            let _ = stopped.await;
        })
        .await;
    });
    // Bounded polling for the first write to the Canary, not a measure of speed.
    for _ in 0..1000 {
        if c.get(canary).unwrap()["metadata"]["resourceVersion"] != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), controller)
        .await
        .expect("the controller stops")
        .unwrap();
}

/// Everything the controller does to a Canary in its life, with `default` as the controller's
/// provider and `named` as the Canary's `spec.provider` (none: the default).
pub(crate) async fn a_life(default: &str, named: Option<&str>) -> Life {
    let default: Provider = default.parse().unwrap();
    let mut canary = canary(json!({
        "provider": named,
        "autoscalerRef": {
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"
        },
        "analysis": {"metrics": [
            {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
            {"name": "not-found", "interval": "1m", "thresholdRange": {"max": 5},
             "templateRef": {"name": "not-found-percentage", "namespace": TEMPLATES_NS}},
            {"name": "errors", "interval": "1m", "thresholdRange": {"max": 5},
             "templateRef": {"name": "errors"}}
        ], "alerts": alerts()}
    }));
    // A new Canary: the controller adds its finalizer.
    canary["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("finalizers");
    // Its pods read a ConfigMap and a Secret, copied to `-primary` versions for the primary.
    let mut target = deployment("podinfo:1");
    target["spec"]["template"]["spec"]["volumes"] =
        json!([{"name": "config", "configMap": {"name": "podinfo-config"}}]);
    target["spec"]["template"]["spec"]["containers"][0]["envFrom"] =
        json!([{"secretRef": {"name": "podinfo-secret"}}]);
    let c = cluster_with(canary, Some(target));
    for (kind, plural, name) in [
        ("ConfigMap", "configmaps", "podinfo-config"),
        ("Secret", "secrets", "podinfo-secret"),
    ] {
        c.put(
            &format!("/api/v1/namespaces/{NS}/{plural}/{name}"),
            json!({"apiVersion": "v1", "kind": kind,
                   "metadata": {"name": name, "namespace": NS}, "data": {"a": "MQ=="}}),
        );
    }
    c.put(
        HPA,
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "podinfo", "namespace": NS},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "minReplicas": 2, "maxReplicas": 4
            }
        }),
    );
    put_alert_providers(&c, "fledge.dev/v1alpha1");
    for (path, name, ns) in [
        (TEMPLATE, "not-found-percentage", TEMPLATES_NS),
        (LOCAL_TEMPLATE, "errors", NS),
    ] {
        c.put(
            path,
            json!({
                "apiVersion": "fledge.dev/v1alpha1", "kind": "MetricTemplate",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"provider": {"type": "prometheus", "address": "http://prometheus:9090",
                                      "secretRef": {"name": "prom-auth"}},
                         "query": "1"}
            }),
        );
        // The template's credentials are read from its own namespace.
        c.put(
            &format!("/api/v1/namespaces/{ns}/secrets/prom-auth"),
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "prom-auth", "namespace": ns}, "data": {"token": "MQ=="}}),
        );
    }
    for metric in ["not-found", "errors"] {
        c.set_metric(metric, MetricReading::Value { value: 1.0 });
    }

    let start = c.calls().len();
    run_once(&c, default, &[]).await;
    let all_namespaces = start..c.calls().len();
    run_once(&c, default, &[NS.to_string()]).await;
    drive(&c, default, "Initialized").await;

    set_image(&c, "podinfo:2");
    // A status write that conflicts is retried on a fresh read of the Canary.
    c.fail("PATCH", &format!("{CANARY}/status"), 409, 1);
    drive(&c, default, "Succeeded").await;

    set_image(&c, "podinfo:3");
    c.set_metric("request-success-rate", MetricReading::Value { value: 90.0 });
    drive(&c, default, "Failed").await;

    c.set_metric(
        "request-success-rate",
        MetricReading::Value { value: 100.0 },
    );
    set_image(&c, "podinfo:4");
    drive(&c, default, "Progressing").await;
    // A canary not ready yet: the controller reads the target's ReplicaSets and the pods of the
    // current one for a reason to roll back at once.
    c.put(
        "/apis/apps/v1/namespaces/test/replicasets/podinfo-7f9c",
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
               "metadata": {"name": "podinfo-7f9c", "namespace": "test",
                            "labels": {"app": "podinfo", "pod-template-hash": "7f9c"},
                            "annotations": {"deployment.kubernetes.io/revision": "4"},
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": "podinfo", "uid": ""}]}}),
    );
    let mut target = c.get(TARGET).unwrap();
    target["status"]["readyReplicas"] = json!(0);
    target["status"]["observedGeneration"] = target["metadata"]["generation"].clone();
    c.put(TARGET, target);
    c.reconcile(&live_context(&c, default))
        .await
        .expect("reconcile");
    let mut obj = c.get(CANARY).unwrap();
    obj["metadata"]["annotations"] = json!({"fledge.dev/command": "abort"});
    c.put(CANARY, obj);
    drive(&c, default, "Failed").await;

    let mut obj = c.get(CANARY).unwrap();
    obj["spec"]["revertOnDeletion"] = json!(true);
    obj["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:20:00Z");
    c.put(CANARY, obj);
    drive(&c, default, "Terminated").await;
    assert!(c.get(PRIMARY).is_none(), "the primary is deleted");

    let election = LeaderElection::new(
        c.client(),
        LeaseConfig {
            name: LEASE.into(),
            namespace: RELEASE_NS.into(),
            identity: "fledge-0".into(),
            timing: Timing::for_lease_duration(Duration::from_secs(15)).unwrap(),
        },
    );
    assert_eq!(
        election.try_hold().await.unwrap(),
        Attempt::Holding,
        "takes the Lease"
    );
    assert_eq!(
        election.try_hold().await.unwrap(),
        Attempt::Holding,
        "renews it"
    );
    election.release().await.unwrap();
    alert_providers_read(&c).await;
    // A second Canary, scaled by KEDA, and a third rolling a DaemonSet out.
    let mut calls = c.calls();
    // Boxed: the futures of three lives in one overflow a test thread's stack.
    calls.extend(Box::pin(a_keda_life(default)).await);
    calls.extend(Box::pin(a_daemon_set_life(default)).await);
    Life {
        calls,
        all_namespaces,
    }
}

/// The calls of a Canary whose autoscaler is a KEDA ScaledObject: initialised (its `-primary` copy applied,
/// the target's paused), rolled out (the pause lifted) and deleted with `revertOnDeletion` (the
/// copy deleted with the primary).
pub(crate) async fn a_keda_life(default: Provider) -> Vec<Call> {
    let mut canary = canary(json!({
        "provider": null,
        "autoscalerRef": {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                          "name": "podinfo-so"}
    }));
    canary["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("finalizers");
    let c = cluster_with(canary, Some(deployment("podinfo:1")));
    c.put(
        "/apis/keda.sh/v1alpha1/namespaces/test/scaledobjects/podinfo-so",
        json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "podinfo-so", "namespace": NS},
            "spec": {"scaleTargetRef": {"name": "podinfo"}, "minReplicaCount": 2,
                     "triggers": [{"type": "cpu", "metadata": {"value": "60"}}]}
        }),
    );
    drive(&c, default, "Initialized").await;
    set_image(&c, "podinfo:2");
    drive(&c, default, "Succeeded").await;
    let mut obj = c.get(CANARY).unwrap();
    obj["spec"]["revertOnDeletion"] = json!(true);
    obj["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:20:00Z");
    c.put(CANARY, obj);
    drive(&c, default, "Terminated").await;
    assert!(
        c.get("/apis/keda.sh/v1alpha1/namespaces/test/scaledobjects/podinfo-so-primary")
            .is_none(),
        "the copy is deleted with the primary"
    );
    c.calls()
}

/// The calls of a Canary of a DaemonSet: initialised (the primary DaemonSet created, the target
/// kept off every node), rolled out to promotion, deleted with `revertOnDeletion`.
pub(crate) async fn a_daemon_set_life(default: Provider) -> Vec<Call> {
    let mut canary = canary(json!({
        "provider": null,
        "targetRef": {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "podinfo"}
    }));
    canary["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("finalizers");
    let c = cluster_with(canary, None);
    c.put(DS_TARGET, daemon_set("podinfo:1"));
    drive(&c, default, "Initialized").await;
    let mut ds = c.get(DS_TARGET).unwrap();
    ds["spec"]["template"]["spec"]["containers"][0]["image"] = json!("podinfo:2");
    ds["metadata"]["generation"] = json!(2);
    c.put(DS_TARGET, ds);
    drive(&c, default, "Succeeded").await;
    let mut obj = c.get(CANARY).unwrap();
    obj["spec"]["revertOnDeletion"] = json!(true);
    obj["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:20:00Z");
    c.put(CANARY, obj);
    drive(&c, default, "Terminated").await;
    assert!(c.get(DS_PRIMARY).is_none(), "the primary is deleted");
    c.calls()
}

/// A Flagger Canary's life under `--flagger-canaries` (Istio): taken over with `run` (all
/// namespaces, then a namespace list), a rollout to promotion with a conflicting status write,
/// deletion with `revertOnDeletion`; its metrics read Flagger's MetricTemplates.
pub(crate) async fn a_flagger_life() -> Life {
    let default = Provider::Istio;
    let c = flagger_cluster(
        "Succeeded",
        0,
        flagger_owner("flagger.app/v1beta1", FLAGGER_UID),
    );
    let mut canary = c.get(FLAGGER_CANARY).unwrap();
    canary["spec"]["analysis"]["metrics"] = json!([
        {"name": "not-found", "interval": "1m", "thresholdRange": {"max": 5},
         "templateRef": {"name": "not-found-percentage", "namespace": TEMPLATES_NS}},
        {"name": "errors", "interval": "1m", "thresholdRange": {"max": 5},
         "templateRef": {"name": "errors"}}
    ]);
    canary["spec"]["analysis"]["alerts"] = alerts();
    c.put(FLAGGER_CANARY, canary);
    put_alert_providers(&c, "flagger.app/v1beta1");
    for (name, ns) in [("not-found-percentage", TEMPLATES_NS), ("errors", NS)] {
        c.put(
            &format!("/apis/flagger.app/v1beta1/namespaces/{ns}/metrictemplates/{name}"),
            json!({
                "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"provider": {"type": "prometheus", "address": "http://prometheus:9090"},
                         "query": "1"}
            }),
        );
    }
    for metric in ["not-found", "errors"] {
        c.set_metric(metric, MetricReading::Value { value: 1.0 });
    }
    let ctx = || live_context_with(&c, default, true);
    let start = c.calls().len();
    run_once_on(&c, ctx(), FLAGGER_CANARY, &[]).await;
    let all_namespaces = start..c.calls().len();
    run_once_on(&c, ctx(), FLAGGER_CANARY, &[NS.to_string()]).await;
    let drive = async |until: &dyn Fn(&Value) -> bool| {
        for _ in 0..40 {
            c.reconcile_flagger(&ctx()).await.expect("reconcile");
            c.settle();
            if until(&c.get(FLAGGER_CANARY).unwrap()) {
                return;
            }
            c.advance_clock(Duration::from_secs(60));
        }
        panic!("not reached; at {}", c.flagger_status());
    };
    set_image(&c, "podinfo:2");
    // A status write that conflicts is retried on a fresh read of the Canary.
    c.fail("PATCH", &format!("{FLAGGER_CANARY}/status"), 409, 1);
    drive(&|o| o["status"]["phase"] == "Progressing").await;
    drive(&|o| o["status"]["phase"] == "Succeeded").await;
    let mut obj = c.get(FLAGGER_CANARY).unwrap();
    obj["spec"]["revertOnDeletion"] = json!(true);
    obj["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:20:00Z");
    c.put(FLAGGER_CANARY, obj);
    drive(&|o| {
        o["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty)
    })
    .await;
    assert!(c.get(PRIMARY).is_none(), "the primary is deleted");
    alert_providers_read(&c).await;
    Life {
        calls: c.calls(),
        all_namespaces,
    }
}

/// Alerts on every decision to two providers, the Canary's namespace's and one in the templates'
/// namespace (a providerRef, like a templateRef, may name another), each a webhook that refuses
/// connections: delivery fails; reading the providers is what the grants are about.
pub(crate) fn alerts() -> Value {
    json!([
        {"name": "team", "severity": "info", "providerRef": {"name": "team"}},
        {"name": "on-call", "severity": "info",
         "providerRef": {"name": "on-call", "namespace": TEMPLATES_NS}}
    ])
}

pub(crate) fn put_alert_providers(c: &FakeCluster, api_version: &str) {
    for (name, ns) in [("team", NS), ("on-call", TEMPLATES_NS)] {
        c.put(
            &format!("/apis/{api_version}/namespaces/{ns}/alertproviders/{name}"),
            json!({"apiVersion": api_version, "kind": "AlertProvider",
                   "metadata": {"name": name, "namespace": ns},
                   "spec": {"type": "webhook", "address": "http://127.0.0.1:9/"}}),
        );
    }
}

/// Alerts are sent off the reconcile path: waits (bounded) until the sender has read both
/// providers.
pub(crate) async fn alert_providers_read(c: &FakeCluster) {
    for _ in 0..400 {
        let calls = c.calls();
        let read = |name: &str| {
            let end = format!("/alertproviders/{name}");
            calls
                .iter()
                .any(|call| call.method == "GET" && call.path.ends_with(&end))
        };
        if read("team") && read("on-call") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the alert sender never read both AlertProviders");
}
