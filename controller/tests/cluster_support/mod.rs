//! A fake Kubernetes API server for the reconciler's tests, on `tower_test::mock`.
//!
//! It keeps objects by their API path, answers GET, POST, PATCH (merge, apply, JSON patch) and
//! DELETE the way the API server does for the parts the controller uses (resourceVersion
//! conflicts, generation bumps, the status subresource), records every request, and fails the
//! requests a test asks it to fail. The fake router and observer record their calls in the same
//! log, so a test sees one ordered sequence of writes.

#![allow(dead_code)]

mod api_rules;
mod fakes;
mod fixtures;
mod flagger;
#[path = "../support/gateway_api_defaults.rs"]
mod gateway_api_defaults;

pub use api_rules::merge;
use api_rules::{
    applied_ports, in_collection, is_collection, json_patch, managed_apply, managed_status_update,
};
pub use fakes::{FakeObserver, FakeRouting};
pub use fixtures::*;
// Used by the Flagger take-over tests only.
#[allow(unused_imports)]
pub use flagger::*;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fledge_controller::alerts::{Alerts, Settings as AlertSettings};
use fledge_controller::analysis::MetricReading;
use fledge_controller::cluster::deadline;
use fledge_controller::cluster::telemetry::Metrics;
use fledge_controller::cluster::{Config, Context, HookCall, Observer, Routing};
use fledge_controller::metrics::Access;
use fledge_controller::observe::{Measurement, Subject};
use fledge_controller::rollout::HookOutcome;
use fledge_controller::router::Routes;
use fledge_controller::routes::Provider;
use fledge_controller::spec::{Canary, WebhookRef};
use futures::FutureExt;
use futures::future::BoxFuture;
use http::{Request, Response};
use kube::client::Body;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};

pub const NS: &str = "test";
pub const CANARY: &str = "/apis/fledge.dev/v1alpha1/namespaces/test/canaries/podinfo";
pub const TARGET: &str = "/apis/apps/v1/namespaces/test/deployments/podinfo";
pub const PRIMARY: &str = "/apis/apps/v1/namespaces/test/deployments/podinfo-primary";
/// The node selector with which Flagger keeps a DaemonSet's pods off every node.
pub const SCALE_TO_ZERO: &str = "flagger.app/scale-to-zero";
/// The nodes a DaemonSet schedules its pods on in these tests.
pub const NODES: i64 = 3;
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/test/events";

/// One request the controller made (or one call to the fake router).
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub body: Value,
    /// A server-side apply that created the object: the API server authorises it as `create`
    /// as well as `patch`.
    pub created: bool,
}

impl Call {
    /// Watches are logged as `WATCH` (they are reads, answered with a quiet open stream).
    pub fn is_write(&self) -> bool {
        self.method != "GET" && self.method != "WATCH"
    }

    /// A one-line summary: method, path and, for events, reason and note; stable across runs
    /// (event names and times come from the wall clock and are left out).
    pub fn summary(&self) -> String {
        if self.path.starts_with(EVENTS) {
            return format!(
                "EVENT {} {}: {}",
                self.body["type"].as_str().unwrap_or(""),
                self.body["reason"].as_str().unwrap_or(""),
                self.body["note"].as_str().unwrap_or("")
            );
        }
        if self.body.is_null() {
            return format!("{} {}", self.method, self.path);
        }
        format!("{} {} {}", self.method, self.path, self.body)
    }
}

struct Failure {
    method: String,
    path: String,
    code: u16,
    times: usize,
}

#[derive(Default)]
struct Store {
    objects: BTreeMap<String, Value>,
    calls: Vec<Call>,
    failures: Vec<Failure>,
    version: u64,
    routes: BTreeMap<String, Routes>,
    metrics: BTreeMap<String, MetricReading>,
    hooks: BTreeMap<String, HookOutcome>,
    /// Writes (API writes and router calls) so far, and the one that fails as if the
    /// controller had crashed just before it landed.
    writes: usize,
    crash_at: Option<usize>,
    /// Requests (method, path) the API server takes and never answers, and how many more.
    hangs: Vec<(String, String, usize)>,
    /// By Service path, the `spec.ports` keys the controller's last apply set.
    applied_ports: BTreeMap<String, Vec<Value>>,
    /// By path, the controller's last apply to an object that records its field managers.
    applied: BTreeMap<String, Value>,
}

impl Store {
    fn crash_now(&mut self) -> bool {
        self.writes += 1;
        self.crash_at == Some(self.writes)
    }
}

/// The fake cluster: objects, the route table, metric and hook answers, and the call log.
#[derive(Clone, Default)]
pub struct FakeCluster {
    store: Arc<Mutex<Store>>,
    pub clock: Arc<AtomicU64>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

impl FakeCluster {
    pub fn new() -> Self {
        let c = FakeCluster::default();
        c.clock.store(1_700_000_000_000, Ordering::SeqCst);
        c
    }

    pub fn put(&self, path: &str, mut object: Value) {
        let mut s = self.store.lock().unwrap();
        s.version += 1;
        object["metadata"]["resourceVersion"] = json!(s.version.to_string());
        if object["metadata"]["generation"].is_null() {
            object["metadata"]["generation"] = json!(1);
        }
        s.objects.insert(path.into(), object);
    }

    /// Someone deletes an object (not logged: it is not the controller's call).
    pub fn delete(&self, path: &str) {
        let mut s = self.store.lock().unwrap();
        s.objects.remove(path);
        s.applied_ports.remove(path);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.store.lock().unwrap().objects.get(path).cloned()
    }

    pub fn canary(&self) -> Canary {
        serde_json::from_value(self.get(CANARY).expect("canary stored")).expect("a canary")
    }

    pub fn calls(&self) -> Vec<Call> {
        self.store.lock().unwrap().calls.clone()
    }

    pub fn writes(&self) -> Vec<String> {
        self.calls()
            .iter()
            .filter(|c| c.is_write())
            .map(Call::summary)
            .collect()
    }

    pub fn clear_calls(&self) {
        self.store.lock().unwrap().calls.clear();
    }

    /// The next `times` requests with this method and path fail with `code`.
    pub fn fail(&self, method: &str, path: &str, code: u16, times: usize) {
        self.store.lock().unwrap().failures.push(Failure {
            method: method.into(),
            path: path.into(),
            code,
            times,
        });
    }

    /// The next `times` requests with this method and path are taken and never answered.
    pub fn hang(&self, method: &str, path: &str, times: usize) {
        let mut s = self.store.lock().unwrap();
        s.hangs.push((method.into(), path.into(), times));
    }

    /// Whether this request is one to leave unanswered (and counts it).
    fn hangs(&self, method: &str, path: &str) -> bool {
        let mut s = self.store.lock().unwrap();
        let hang = s
            .hangs
            .iter_mut()
            .find(|(m, p, n)| m == method && p == path && *n > 0);
        hang.map(|(_, _, n)| *n -= 1).is_some()
    }

    /// The `n`th write from now on (1-based, router calls included) fails.
    pub fn crash_at_write(&self, n: usize) {
        let mut s = self.store.lock().unwrap();
        s.crash_at = Some(s.writes + n);
    }

    pub fn advance_clock(&self, by: Duration) {
        self.clock
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_metric(&self, name: &str, reading: MetricReading) {
        self.store
            .lock()
            .unwrap()
            .metrics
            .insert(name.into(), reading);
    }

    pub fn set_hook(&self, name: &str, outcome: HookOutcome) {
        self.store
            .lock()
            .unwrap()
            .hooks
            .insert(name.into(), outcome);
    }

    pub fn routes(&self) -> Option<Routes> {
        self.store.lock().unwrap().routes.get("podinfo").copied()
    }

    /// Someone edits the routing object by hand.
    pub fn edit_routes(&self, weights: Routes) {
        self.store
            .lock()
            .unwrap()
            .routes
            .insert("podinfo".into(), weights);
    }

    /// The kubelet and the Deployment controller catch up: every Deployment's rollout completes;
    /// so does every DaemonSet's, on [`NODES`] nodes (none with Flagger's scale-to-zero node
    /// selector).
    pub fn settle(&self) {
        let mut s = self.store.lock().unwrap();
        for (path, obj) in s.objects.iter_mut() {
            if path.contains("/daemonsets/") {
                let off = &obj["spec"]["template"]["spec"]["nodeSelector"][SCALE_TO_ZERO];
                let n = if off.is_null() { NODES } else { 0 };
                obj["status"] = json!({
                    "observedGeneration": obj["metadata"]["generation"].clone(),
                    "desiredNumberScheduled": n, "currentNumberScheduled": n, "numberReady": n,
                    "updatedNumberScheduled": n, "numberAvailable": n, "numberMisscheduled": 0,
                });
                continue;
            }
            if !path.contains("/deployments/") {
                continue;
            }
            let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            let generation = obj["metadata"]["generation"].clone();
            obj["status"] = json!({
                "observedGeneration": generation,
                "replicas": replicas,
                "readyReplicas": replicas,
                "updatedReplicas": replicas,
                "availableReplicas": replicas,
            });
        }
    }

    fn log(&self, method: &str, path: &str, body: Value) {
        self.store.lock().unwrap().calls.push(Call {
            method: method.into(),
            path: path.into(),
            body,
            created: false,
        });
    }

    fn answer(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        manager: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let mut s = self.store.lock().unwrap();
        let call = s.calls.len();
        s.calls.push(Call {
            method: method.into(),
            path: path.into(),
            body: body.clone(),
            created: false,
        });
        if let Some(f) = s
            .failures
            .iter_mut()
            .find(|f| f.times > 0 && f.method == method && f.path == path)
        {
            f.times -= 1;
            return (f.code, status(f.code, "Injected", "injected failure"));
        }
        if method != "GET" && s.crash_now() {
            return (500, status(500, "Crashed", "the controller stopped here"));
        }
        let (object_path, subresource) = match path.strip_suffix("/status") {
            Some(p) => (p.to_string(), true),
            None => (path.to_string(), false),
        };
        match method {
            "GET" => match s.objects.get(&object_path) {
                Some(o) => (200, o.clone()),
                None if is_collection(path) => {
                    let items: Vec<Value> = s
                        .objects
                        .iter()
                        .filter(|(p, _)| in_collection(path, p))
                        .map(|(_, o)| o.clone())
                        .collect();
                    let version = s.version.to_string();
                    (
                        200,
                        json!({"apiVersion": "v1", "kind": "List",
                               "metadata": {"resourceVersion": version}, "items": items}),
                    )
                }
                None => (404, status(404, "NotFound", &format!("{path} not found"))),
            },
            "PUT" => {
                let Some(current) = s.objects.get(&object_path) else {
                    return (404, status(404, "NotFound", "not found"));
                };
                if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    return (409, status(409, "Conflict", "the object has been modified"));
                }
                s.version += 1;
                let mut obj = body.clone();
                obj["metadata"]["resourceVersion"] = json!(s.version.to_string());
                s.objects.insert(object_path, obj.clone());
                (200, obj)
            }
            "DELETE" => match s.objects.remove(&object_path) {
                Some(_) => {
                    s.applied_ports.remove(&object_path);
                    s.applied.remove(&object_path);
                    (200, status(200, "", "deleted"))
                }
                None => (404, status(404, "NotFound", "not found")),
            },
            "POST" => {
                let name = body["metadata"]["name"].as_str().unwrap_or("unnamed");
                let key = format!("{path}/{name}");
                s.version += 1;
                let mut obj = body.clone();
                obj["metadata"]["resourceVersion"] = json!(s.version.to_string());
                s.objects.insert(key, obj.clone());
                (201, obj)
            }
            "PATCH" => {
                let existing = s.objects.get(&object_path).cloned();
                let mut obj = match (&existing, content_type) {
                    (Some(o), _) => o.clone(),
                    (None, t) if t.contains("apply-patch") => json!({}),
                    (None, _) => return (404, status(404, "NotFound", "not found")),
                };
                let wanted_version = body["metadata"]["resourceVersion"].as_str();
                if content_type.contains("merge-patch") {
                    if let Some(v) = wanted_version
                        && Some(v) != obj["metadata"]["resourceVersion"].as_str()
                    {
                        return (409, status(409, "Conflict", "the object has been modified"));
                    }
                    merge(&mut obj, &body);
                } else if content_type.contains("apply-patch") {
                    let ports = applied_ports(&mut s, &object_path, &obj, &body);
                    managed_apply(&mut s, &object_path, &mut obj, manager, &body);
                    merge(&mut obj, &body);
                    if let Some(ports) = ports {
                        obj["spec"]["ports"] = ports;
                    }
                    if object_path.contains("/httproutes/") {
                        gateway_api_defaults::default_matches(&mut obj["spec"]);
                    }
                    // A Service's selector is an atomic map: an apply replaces it whole.
                    if object_path.contains("/services/") && !body["spec"]["selector"].is_null() {
                        obj["spec"]["selector"] = body["spec"]["selector"].clone();
                    }
                } else if let Err(e) = json_patch(&mut obj, &body) {
                    return (422, status(422, "Invalid", &e));
                }
                let mut result = match (&existing, subresource) {
                    (Some(o), true) => {
                        let mut kept = o.clone();
                        kept["status"] = obj["status"].clone();
                        managed_status_update(o, &mut kept, manager);
                        kept
                    }
                    _ => obj,
                };
                if let Some(old) = &existing
                    && old["spec"] != result["spec"]
                {
                    let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
                    result["metadata"]["generation"] = json!(g + 1);
                } else if existing.is_none() {
                    result["metadata"]["generation"] = json!(1);
                    s.calls[call].created = true;
                }
                s.version += 1;
                result["metadata"]["resourceVersion"] = json!(s.version.to_string());
                s.objects.insert(object_path, result.clone());
                (200, result)
            }
            _ => (405, status(405, "MethodNotAllowed", method)),
        }
    }

    /// A kube client whose requests this fake answers.
    pub fn client(&self) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let cluster = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().to_string();
                let path = request.uri().path().to_string();
                let query = request.uri().query().unwrap_or("").to_string();
                let content_type = request
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let bytes = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                if query.contains("watch=true") {
                    cluster.log("WATCH", &path, Value::Null);
                    // A watch that stays open and quiet until the client goes away.
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        send.send_response(Response::new(Body::empty()));
                    });
                    continue;
                }
                if cluster.hangs(&method, &path) {
                    cluster.log(&method, &path, body);
                    tokio::spawn(async move {
                        std::future::pending::<()>().await;
                        drop(send);
                    });
                    continue;
                }
                let manager = query
                    .split('&')
                    .find_map(|q| q.strip_prefix("fieldManager="))
                    .map(String::from);
                let (code, answer) =
                    cluster.answer(&method, &path, &content_type, manager.as_deref(), body);
                let response = Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
        });
        kube::Client::new(service, NS)
    }

    /// A fresh controller context (as after a restart) over this cluster.
    pub fn context(&self) -> Arc<Context> {
        self.context_with(Arc::new(FakeObserver(self.clone())))
    }

    /// A fresh context whose metrics and hooks come from `observer`.
    pub fn context_with(&self, observer: Arc<dyn Observer>) -> Arc<Context> {
        self.context_alerting(observer, self.alert_settings())
    }

    /// A fresh context whose alerts are delivered with `alerts`.
    pub fn context_alerting(
        &self,
        observer: Arc<dyn Observer>,
        alerts: AlertSettings,
    ) -> Arc<Context> {
        let clock = self.clock.clone();
        // As the controller's: every call but a watch under the deadline.
        let client = deadline::bounded(self.client(), deadline::API_CALL_TIMEOUT);
        let metrics = Arc::new(Metrics::new());
        Arc::new(Context {
            alerts: Alerts::with_settings(client.clone(), metrics.clone(), alerts),
            client,
            routing: Arc::new(FakeRouting(self.clone())),
            observer,
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

    /// Alert delivery as the controller's, with short waits: a failed alert is retried after
    /// 10 ms, and an attempt given 2 s.
    pub fn alert_settings(&self) -> AlertSettings {
        AlertSettings {
            first_backoff: Duration::from_millis(10),
            timeout: Duration::from_secs(2),
            ..AlertSettings::default()
        }
    }

    /// One reconcile of the stored Canary with `ctx`.
    pub async fn reconcile(
        &self,
        ctx: &Arc<Context>,
    ) -> Result<kube::runtime::controller::Action, fledge_controller::cluster::Error> {
        // Boxed: a test driving several lives in one future would otherwise carry a reconcile's
        // state in its own, near a debug build's thread stack limit.
        Box::pin(fledge_controller::cluster::reconcile(
            Arc::new(self.canary()),
            ctx.clone(),
        ))
        .await
    }

    /// The recorded rollout phase, if any.
    pub fn phase_opt(&self) -> Option<String> {
        let canary = self.get(CANARY)?;
        canary["status"]["phase"].as_str().map(String::from)
    }

    /// The recorded rollout phase.
    pub fn phase(&self) -> String {
        self.get(CANARY).unwrap()["status"]["phase"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}
