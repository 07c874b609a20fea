//! The Helm chart's RBAC against what the controller really asks of the API server.
//!
//! Each test drives the controller, with its real traffic routers, through initialisation, a
//! promotion, a rollback, an operator abort, deletion with `revertOnDeletion`, the watches of
//! `run` (all namespaces and a namespace list) and leader election, against the fake API server
//! of the mock-API suite. Every request it records is turned into the permission the API
//! server's authorizer checks: GET of a named object is `get`, of a collection `list`, a watch
//! `watch`; POST `create`, PUT `update`, PATCH `patch`, DELETE `delete` (of a collection
//! `deletecollection`), for the API group and resource (with subresource) of the path. A
//! server-side apply that creates its object needs `create` as well as `patch`: the API server
//! authorises an apply patch of a missing object as a create. That set
//! must equal what `charts/fledge/rbac/permissions.yaml` grants for the same settings, scope by
//! scope: a permission missing from the chart would fail on a real cluster, an extra one is
//! privilege nobody uses. A rule with `resourceNames` covers only requests for those names (a
//! create, whose name the authorizer does not know, never), and a request outside any namespace
//! only where the chart grants a ClusterRole: with a namespace list it has Roles only.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cluster_support::*;
use fledge_controller::analysis::MetricReading;
use fledge_controller::cluster::lease::{Attempt, LeaderElection, LeaseConfig, Timing};
use fledge_controller::cluster::providers::LiveRouting;
use fledge_controller::cluster::telemetry::Metrics;
use fledge_controller::cluster::{Config, Context};
use fledge_controller::routes::{PROVIDER_NAMES, Provider};
use kube::runtime::events::Reporter;
use serde::Deserialize;
use serde_json::{Value, json};

/// Where the Lease lives (the release's namespace) and where a MetricTemplate outside the
/// Canary's namespace lives.
const RELEASE_NS: &str = "fledge-system";
const TEMPLATES_NS: &str = "istio-system";
/// A MetricTemplate in another namespace, and one in the Canary's.
const TEMPLATE: &str =
    "/apis/fledge.dev/v1alpha1/namespaces/istio-system/metrictemplates/not-found-percentage";
const LOCAL_TEMPLATE: &str = "/apis/fledge.dev/v1alpha1/namespaces/test/metrictemplates/errors";
const HPA: &str = "/apis/autoscaling/v2/namespaces/test/horizontalpodautoscalers/podinfo";

/// Where a permission is needed, as the chart's Roles are scoped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// Outside any namespace (a cluster-wide list or watch): only a ClusterRole grants it.
    Cluster,
    /// Where Canaries are reconciled (their namespace, or cluster-wide for all namespaces).
    Watched,
    /// A namespace that only MetricTemplates are read from.
    Templates,
    /// The release's namespace (the Lease).
    Release,
}

/// One permission: scope, API group, resource (with subresource), verb, and the object's name:
/// in a grant, one of the rule's `resourceNames` (none: any object); in a request, the name in
/// its path (none for a collection or a create).
type Permission = (Scope, String, String, String, Option<String>);

/// The Lease the test elects with; `{leaseName}` in permissions.yaml stands for it (the chart
/// puts `leaderElection.leaseName` there).
const LEASE: &str = "fledge-leader";

// ---- what the chart grants ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    why: String,
    #[serde(rename = "apiGroups")]
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    #[serde(rename = "resourceNames", default)]
    resource_names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Family {
    providers: Vec<String>,
    rules: Vec<Rule>,
    watch: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Permissions {
    canaries: Vec<Rule>,
    #[serde(rename = "metricTemplates")]
    metric_templates: Vec<Rule>,
    #[serde(rename = "metricTemplateSecrets")]
    metric_template_secrets: Vec<Rule>,
    #[serde(rename = "flaggerCanaries")]
    flagger_canaries: Vec<Rule>,
    #[serde(rename = "flaggerMetricTemplates")]
    flagger_metric_templates: Vec<Rule>,
    routing: BTreeMap<String, Family>,
    #[serde(rename = "leaderElection")]
    leader_election: Vec<Rule>,
}

fn chart_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/fledge")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn permissions() -> Permissions {
    serde_norway::from_str(&chart_file("rbac/permissions.yaml"))
        .unwrap_or_else(|e| panic!("charts/fledge/rbac/permissions.yaml: {e}"))
}

impl Permissions {
    fn family(&self, provider: &str) -> &Family {
        self.routing
            .values()
            .find(|f| f.providers.iter().any(|p| p == provider))
            .unwrap_or_else(|| panic!("no routing family lists provider `{provider}`"))
    }

    /// The rules rendered into each scope for a default provider and extra providers (and,
    /// with `flagger`, the value `flaggerCanaries` on), as templates/rbac.yaml selects them.
    fn rendered(&self, default: &str, extra: &[&str], flagger: bool) -> Vec<(Scope, &Rule)> {
        let mut out: Vec<(Scope, &Rule)> = Vec::new();
        let none: &[Rule] = &[];
        let (flaggers, flagger_templates) = match flagger {
            true => (
                &self.flagger_canaries[..],
                &self.flagger_metric_templates[..],
            ),
            false => (none, none),
        };
        let templates: Vec<&Rule> = self
            .metric_templates
            .iter()
            .chain(flagger_templates)
            .collect();
        let watched = self
            .canaries
            .iter()
            .chain(flaggers)
            .chain(templates.clone());
        out.extend(watched.map(|r| (Scope::Watched, r)));
        let mut families: Vec<&Family> = Vec::new();
        for p in std::iter::once(&default).chain(extra) {
            let f = self.family(p);
            if !families.iter().any(|g| std::ptr::eq(*g, f)) {
                families.push(f);
            }
        }
        for f in families {
            out.extend(f.rules.iter().map(|r| (Scope::Watched, r)));
        }
        out.extend(
            self.family(default)
                .watch
                .iter()
                .map(|r| (Scope::Watched, r)),
        );
        let secrets = self.metric_template_secrets.iter();
        out.extend(
            templates
                .into_iter()
                .chain(secrets)
                .map(|r| (Scope::Templates, r)),
        );
        out.extend(self.leader_election.iter().map(|r| (Scope::Release, r)));
        out
    }

    fn granted(&self, default: &str, extra: &[&str], flagger: bool) -> BTreeSet<Permission> {
        let mut out = BTreeSet::new();
        for (scope, rule) in self.rendered(default, extra, flagger) {
            let names: Vec<Option<String>> = match rule.resource_names.as_slice() {
                [] => vec![None],
                names => names
                    .iter()
                    .map(|n| Some(n.replace("{leaseName}", LEASE)))
                    .collect(),
            };
            for group in &rule.api_groups {
                for resource in &rule.resources {
                    for verb in &rule.verbs {
                        for name in &names {
                            let (g, r, v) = (group.clone(), resource.clone(), verb.clone());
                            out.insert((scope, g, r, v, name.clone()));
                        }
                    }
                }
            }
        }
        out
    }
}

// ---- what the controller requests ----

/// The permissions a recorded request needs; none for the fake's own calls (router, hooks).
fn permissions_of(call: &Call) -> Vec<Permission> {
    let segments: Vec<&str> = call.path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return vec![],
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        _ => (None, rest),
    };
    let (resource, name) = match rest {
        [resource] => (resource.to_string(), None),
        [resource, name] => (resource.to_string(), Some(name.to_string())),
        [resource, name, sub] => (format!("{resource}/{sub}"), Some(name.to_string())),
        _ => panic!("unexpected API path {}", call.path),
    };
    let verb = match (call.method.as_str(), name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("WATCH", _) => "watch",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return vec![],
    };
    let scope = match namespace {
        None => Scope::Cluster,
        Some(NS) => Scope::Watched,
        Some(TEMPLATES_NS) => Scope::Templates,
        Some(RELEASE_NS) => Scope::Release,
        Some(other) => panic!("request in unexpected namespace {other}: {}", call.path),
    };
    let mut out = vec![(
        scope,
        group.to_string(),
        resource.clone(),
        verb.to_string(),
        name,
    )];
    if call.created {
        // An apply of a missing object passes the API server's create authorisation too; a
        // create is never matched by name (RBAC cannot limit it with resourceNames).
        out.push((
            scope,
            group.to_string(),
            resource,
            "create".to_string(),
            None,
        ));
    }
    out
}

/// The requests of a Canary's life on the fake cluster, and which of them `run` made over all
/// namespaces (what a controller with a namespace list never does).
struct Life {
    calls: Vec<Call>,
    all_namespaces: Range<usize>,
}

/// The chart's two RBAC layouts.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// `namespaces` empty: a ClusterRole, which also grants requests outside any namespace.
    ClusterRole,
    /// `namespaces` set: Roles only.
    Roles,
}

/// What the controller requests under `layout`: with Roles, every call but those of `run` over
/// all namespaces; with a ClusterRole, every call (it grants the namespaced ones too), a
/// cluster-wide one granted by the watched rules.
fn requested(life: &Life, layout: Layout) -> BTreeSet<Permission> {
    let mut out = BTreeSet::new();
    for (i, call) in life.calls.iter().enumerate() {
        if layout == Layout::Roles && life.all_namespaces.contains(&i) {
            continue;
        }
        for mut p in permissions_of(call) {
            if layout == Layout::ClusterRole && p.0 == Scope::Cluster {
                p.0 = Scope::Watched;
            }
            out.insert(p);
        }
    }
    out
}

/// A context like the controller's own: the real routers over the fake API server.
fn live_context(c: &FakeCluster, default: Provider) -> Arc<Context> {
    live_context_with(c, default, false)
}

/// [`live_context`] with `--flagger-canaries` on or off.
fn live_context_with(c: &FakeCluster, default: Provider, flagger: bool) -> Arc<Context> {
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
async fn drive(c: &FakeCluster, default: Provider, phase: &str) {
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
async fn run_once(c: &FakeCluster, default: Provider, namespaces: &[String]) {
    run_once_on(c, live_context(c, default), CANARY, namespaces).await;
}

/// `run` with `ctx` over `namespaces` until it has written the Canary at `canary`, then stopped.
async fn run_once_on(c: &FakeCluster, ctx: Arc<Context>, canary: &str, namespaces: &[String]) {
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
async fn a_life(default: &str, named: Option<&str>) -> Life {
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
async fn a_keda_life(default: Provider) -> Vec<Call> {
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
async fn a_daemon_set_life(default: Provider) -> Vec<Call> {
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
async fn a_flagger_life() -> Life {
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
fn alerts() -> Value {
    json!([
        {"name": "team", "severity": "info", "providerRef": {"name": "team"}},
        {"name": "on-call", "severity": "info",
         "providerRef": {"name": "on-call", "namespace": TEMPLATES_NS}}
    ])
}

fn put_alert_providers(c: &FakeCluster, api_version: &str) {
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
async fn alert_providers_read(c: &FakeCluster) {
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

fn show<'a>(set: impl IntoIterator<Item = &'a Permission>) -> String {
    set.into_iter()
        .map(|(s, g, r, v, n)| format!("  {s:?} {g:?} {r} {v} {}", n.as_deref().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a grant lets a request through: the same scope, group, resource and verb, and a
/// rule without resourceNames or naming the requested object.
fn covers(grant: &Permission, request: &Permission) -> bool {
    grant.0 == request.0
        && grant.1 == request.1
        && grant.2 == request.2
        && grant.3 == request.3
        && (grant.4.is_none() || grant.4 == request.4)
}

/// The chart's grants against the requests: nothing missing, nothing unused.
fn check_grants(
    default: &str,
    extra: &[&str],
    layout: Layout,
    requested: &BTreeSet<Permission>,
) -> Result<(), String> {
    check_grants_with(default, extra, false, layout, requested)
}

/// [`check_grants`] with `flaggerCanaries` on or off.
fn check_grants_with(
    default: &str,
    extra: &[&str],
    flagger: bool,
    layout: Layout,
    requested: &BTreeSet<Permission>,
) -> Result<(), String> {
    let granted = permissions().granted(default, extra, flagger);
    let missing: Vec<_> = requested
        .iter()
        .filter(|r| !granted.iter().any(|g| covers(g, r)))
        .collect();
    let unused: Vec<_> = granted
        .iter()
        .filter(|g| !requested.iter().any(|r| covers(g, r)))
        .collect();
    if missing.is_empty() && unused.is_empty() {
        return Ok(());
    }
    Err(format!(
        "provider {default} (extra {extra:?}, flaggerCanaries {flagger}, {layout:?}): \
         charts/fledge/rbac/permissions.yaml\n\
         misses what the controller requests:\n{}\ngrants what it never requests:\n{}",
        show(missing),
        show(unused)
    ))
}

fn assert_grants_exactly(default: &str, extra: &[&str], lives: &[Life]) {
    assert_grants_exactly_with(default, extra, false, lives);
}

fn assert_grants_exactly_with(default: &str, extra: &[&str], flagger: bool, lives: &[Life]) {
    for layout in [Layout::ClusterRole, Layout::Roles] {
        let requested = lives.iter().flat_map(|l| requested(l, layout)).collect();
        if let Err(e) = check_grants_with(default, extra, flagger, layout, &requested) {
            panic!("{e}");
        }
    }
}

#[tokio::test]
async fn the_chart_grants_exactly_what_the_controller_requests_with_each_default_provider() {
    for &provider in PROVIDER_NAMES {
        let life = a_life(provider, None).await;
        assert_grants_exactly(provider, &[], &[life]);
    }
}

#[tokio::test]
async fn with_flagger_canaries_the_chart_grants_exactly_what_taking_them_over_requests() {
    let lives = [a_life("istio", None).await, a_flagger_life().await];
    assert_grants_exactly_with("istio", &[], true, &lives);
}

#[tokio::test]
async fn an_apply_that_creates_its_object_needs_create_as_well_as_patch() {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, Patch, PatchParams};
    let c = FakeCluster::new();
    let services: Api<Service> = Api::namespaced(c.client(), NS);
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "podinfo"}});
    let params = PatchParams::apply("fledge").force();
    for _ in 0..2 {
        services
            .patch("podinfo", &params, &Patch::Apply(&svc))
            .await
            .expect("apply");
    }
    let perms: Vec<Vec<String>> = c
        .calls()
        .iter()
        .map(|call| permissions_of(call).into_iter().map(|p| p.3).collect())
        .collect();
    assert_eq!(
        perms,
        [vec!["patch", "create"], vec!["patch"]],
        "the first apply creates the Service, the second only patches it"
    );
}

#[tokio::test]
async fn a_canary_naming_another_provider_needs_the_rules_of_an_extra_provider() {
    // Two Canaries on an Istio controller: one on the default, one naming the Gateway API.
    let lives = [
        a_life("istio", None).await,
        a_life("istio", Some("gatewayapi:v1")).await,
    ];
    assert_grants_exactly("istio", &["gatewayapi:v1"], &lives);
}

/// A request the controller would make, as the fake records it.
fn call(method: &str, path: &str) -> Call {
    Call {
        method: method.into(),
        path: path.into(),
        body: Value::Null,
        created: false,
    }
}

#[tokio::test]
async fn a_cluster_wide_request_fails_under_a_namespace_list_but_not_under_a_cluster_role() {
    let mut life = a_life("istio", None).await;
    // As if reconciling in namespace `test` listed Deployments in every namespace.
    life.calls.push(call("GET", "/apis/apps/v1/deployments"));
    let roles = requested(&life, Layout::Roles);
    let err = check_grants("istio", &[], Layout::Roles, &roles)
        .expect_err("a Role cannot grant a cluster-wide list");
    assert!(
        err.contains("Cluster \"apps\" deployments list"),
        "names the request: {err}"
    );
    let cluster = requested(&life, Layout::ClusterRole);
    check_grants("istio", &[], Layout::ClusterRole, &cluster)
        .expect("the ClusterRole grants it (list deployments everywhere)");
}

#[tokio::test]
async fn the_lease_rules_name_the_lease_so_another_lease_is_refused() {
    let mut life = a_life("istio", None).await;
    let other = "/apis/coordination.k8s.io/v1/namespaces/fledge-system/leases/other";
    life.calls.push(call("PUT", other));
    let requested = requested(&life, Layout::Roles);
    let err = check_grants("istio", &[], Layout::Roles, &requested)
        .expect_err("update of another Lease is not granted");
    assert!(
        err.contains("Release \"coordination.k8s.io\" leases update other"),
        "names the request: {err}"
    );
}

#[test]
fn every_rule_says_why_and_none_has_a_wildcard_or_repeats_a_permission() {
    let perms = permissions();
    let words = |r: &Rule| -> Vec<String> {
        r.api_groups
            .iter()
            .chain(&r.resources)
            .chain(&r.verbs)
            .cloned()
            .collect()
    };
    for provider in PROVIDER_NAMES {
        let mut seen = BTreeSet::new();
        for (scope, rule) in perms.rendered(provider, PROVIDER_NAMES, true) {
            assert!(
                !rule.why.trim().is_empty(),
                "a rule without `why`: {:?}",
                words(rule)
            );
            assert!(
                words(rule).iter().all(|w| !w.contains('*')),
                "a wildcard in {:?}",
                words(rule)
            );
            for g in &rule.api_groups {
                for r in &rule.resources {
                    for v in &rule.verbs {
                        assert!(
                            seen.insert((scope, g, r, v)),
                            "{scope:?} {g:?} {r} {v} is granted twice"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_values_schema_knows_exactly_the_providers_the_controller_knows() {
    let schema: Value = serde_json::from_str(&chart_file("values.schema.json")).unwrap();
    let names = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("not an enum: {v}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let known: BTreeSet<String> = PROVIDER_NAMES.iter().map(|s| s.to_string()).collect();
    let providers = &schema["$defs"]["provider"]["enum"];
    assert_eq!(names(providers), known, "values.schema.json $defs.provider");
    let listed: BTreeSet<String> = permissions()
        .routing
        .values()
        .flat_map(|f| f.providers.clone())
        .collect();
    assert_eq!(listed, known, "rbac/permissions.yaml routing providers");
}
