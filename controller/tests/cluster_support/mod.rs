//! A fake Kubernetes API server for the reconciler's tests, on `tower_test::mock`.
//!
//! It keeps objects by their API path, answers GET, POST, PATCH (merge, apply, JSON patch) and
//! DELETE the way the API server does for the parts the controller uses (resourceVersion
//! conflicts, generation bumps, the status subresource), records every request, and fails the
//! requests a test asks it to fail. The fake router and observer record their calls in the same
//! log, so a test sees one ordered sequence of writes.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fledge_controller::analysis::MetricReading;
use fledge_controller::cluster::deadline;
use fledge_controller::cluster::telemetry::Metrics;
use fledge_controller::cluster::{Config, Context, HookCall, Observer, Routing};
use fledge_controller::observe::{Measurement, Subject};
use fledge_controller::rollout::HookOutcome;
use fledge_controller::router::Routes;
use fledge_controller::routes::Provider;
use fledge_controller::spec::{Canary, MetricTemplateSpec, WebhookRef};
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
}

/// The key of a Service port in its list-map: port and protocol (TCP by default).
fn port_key(port: &Value) -> Value {
    json!([port["port"], port["protocol"].as_str().unwrap_or("TCP")])
}

/// A Service's `spec.ports` after an apply, as server-side apply merges a list-map: the applied
/// entries, and the entries of others kept (those this manager applied before and left out
/// now are removed). `None` when the apply sets no ports or the object is not a Service.
fn applied_ports(s: &mut Store, path: &str, current: &Value, body: &Value) -> Option<Value> {
    if !path.contains("/services/") {
        return None;
    }
    let applied = body["spec"]["ports"].as_array()?;
    let keys: Vec<Value> = applied.iter().map(port_key).collect();
    let before = s.applied_ports.insert(path.to_string(), keys.clone());
    let ours_before = before.unwrap_or_default();
    let existing = current["spec"]["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // An applied entry is merged into the one with its key (fields of others, such as an
    // allocated nodePort, stay).
    let mut ports: Vec<Value> = applied
        .iter()
        .map(|a| {
            let mut entry = existing
                .iter()
                .find(|e| port_key(e) == port_key(a))
                .cloned()
                .unwrap_or_else(|| json!({}));
            merge(&mut entry, a);
            entry
        })
        .collect();
    for p in existing {
        let key = port_key(&p);
        if !keys.contains(&key) && !ours_before.contains(&key) {
            ports.push(p);
        }
    }
    Some(Value::Array(ports))
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

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// Collections are the paths the controller lists: `.../<resource>` with no name after it.
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let base = if segments.first() == Some(&"api") {
        2
    } else {
        3
    };
    match segments.get(base) {
        Some(&"namespaces") => segments.len() == base + 3,
        Some(_) => segments.len() == base + 1,
        None => false,
    }
}

/// Whether the object at `object` is an item of the collection `list` (namespaced or across
/// namespaces).
fn in_collection(list: &str, object: &str) -> bool {
    let Some((parent, _name)) = object.rsplit_once('/') else {
        return false;
    };
    if parent == list {
        return true;
    }
    // `/apis/g/v/deployments` lists `/apis/g/v/namespaces/*/deployments/*`.
    let Some((prefix, resource)) = list.rsplit_once('/') else {
        return false;
    };
    parent.starts_with(&format!("{prefix}/namespaces/"))
        && parent.ends_with(&format!("/{resource}"))
        && parent.matches('/').count() == list.matches('/').count() + 2
}

fn pointer_parent<'a>(doc: &'a mut Value, path: &str) -> Option<(&'a mut Value, String)> {
    let (parent, last) = path.rsplit_once('/')?;
    Some((doc.pointer_mut(parent)?, last.to_string()))
}

/// The JSON patch operations the finalizer helper sends: test, add, remove, replace.
fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    for op in ops.as_array().ok_or("not an array")? {
        let path = op["path"].as_str().ok_or("no path")?;
        match op["op"].as_str() {
            Some("test") => {
                let found = doc.pointer(path).cloned().unwrap_or(Value::Null);
                if found != op["value"] {
                    return Err(format!("test failed at {path}"));
                }
            }
            Some("add" | "replace") => {
                let (parent, key) = pointer_parent(doc, path).ok_or("bad path")?;
                match parent {
                    Value::Array(a) if key == "-" => a.push(op["value"].clone()),
                    Value::Array(a) => {
                        let i: usize = key.parse().map_err(|_| "bad index")?;
                        a.insert(i.min(a.len()), op["value"].clone());
                    }
                    Value::Object(o) => {
                        o.insert(key, op["value"].clone());
                    }
                    _ => return Err("bad parent".into()),
                }
            }
            Some("remove") => {
                let (parent, key) = pointer_parent(doc, path).ok_or("bad path")?;
                match parent {
                    Value::Array(a) => {
                        let i: usize = key.parse().map_err(|_| "bad index")?;
                        if i >= a.len() {
                            return Err("no such index".into());
                        }
                        a.remove(i);
                    }
                    Value::Object(o) => {
                        o.remove(&key).ok_or("no such key")?;
                    }
                    _ => return Err("bad parent".into()),
                }
            }
            other => return Err(format!("unsupported op {other:?}")),
        }
    }
    Ok(())
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

    /// The kubelet and the Deployment controller catch up: every Deployment's rollout completes.
    pub fn settle(&self) {
        let mut s = self.store.lock().unwrap();
        for (path, obj) in s.objects.iter_mut() {
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

    fn answer(&self, method: &str, path: &str, content_type: &str, body: Value) -> (u16, Value) {
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
                Some(_) if s.applied_ports.remove(&object_path).is_some() => {
                    (200, status(200, "", "deleted"))
                }
                Some(_) => (200, status(200, "", "deleted")),
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
                    merge(&mut obj, &body);
                    if let Some(ports) = ports {
                        obj["spec"]["ports"] = ports;
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
                let (code, answer) = cluster.answer(&method, &path, &content_type, body);
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
        let clock = self.clock.clone();
        Arc::new(Context {
            // As the controller's: every call but a watch under the deadline.
            client: deadline::bounded(self.client(), deadline::API_CALL_TIMEOUT),
            routing: Arc::new(FakeRouting(self.clone())),
            observer,
            clock: Arc::new(move || clock.load(Ordering::SeqCst)),
            config: Config::default(),
            metrics: Arc::new(Metrics::new()),
            reporter: Reporter {
                controller: "fledge".into(),
                instance: Some("test".into()),
            },
            backoff: Default::default(),
        })
    }

    /// One reconcile of the stored Canary with `ctx`.
    pub async fn reconcile(
        &self,
        ctx: &Arc<Context>,
    ) -> Result<kube::runtime::controller::Action, fledge_controller::cluster::Error> {
        fledge_controller::cluster::reconcile(Arc::new(self.canary()), ctx.clone()).await
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

/// Routes live in the fake cluster's route table; every call is logged as `ROUTER`.
pub struct FakeRouting(pub FakeCluster);

impl Routing for FakeRouting {
    fn reconcile<'a>(
        &'a self,
        provider: Provider,
        canary: &'a Canary,
    ) -> BoxFuture<'a, Result<(), String>> {
        let name = canary.spec.target_ref.name.clone();
        async move {
            self.0
                .log("ROUTER", &format!("reconcile {provider}"), Value::Null);
            let mut s = self.0.store.lock().unwrap();
            if s.crash_now() {
                return Err("crashed".into());
            }
            s.routes.entry(name).or_insert(Routes::PRIMARY_ONLY);
            Ok(())
        }
        .boxed()
    }

    fn set_routes<'a>(
        &'a self,
        provider: Provider,
        canary: &'a Canary,
        weights: Routes,
    ) -> BoxFuture<'a, Result<(), String>> {
        let name = canary.spec.target_ref.name.clone();
        async move {
            self.0.log(
                "ROUTER",
                &format!("set_routes {provider} {weights}"),
                Value::Null,
            );
            let mut s = self.0.store.lock().unwrap();
            if s.crash_now() {
                return Err("crashed".into());
            }
            match s.routes.get_mut(&name) {
                Some(w) => {
                    *w = weights;
                    Ok(())
                }
                None => Err(format!("no routing object for {name}")),
            }
        }
        .boxed()
    }

    fn get_routes<'a>(
        &'a self,
        _provider: Provider,
        canary: &'a Canary,
    ) -> BoxFuture<'a, Result<Routes, String>> {
        let name = canary.spec.target_ref.name.clone();
        async move {
            let s = self.0.store.lock().unwrap();
            s.routes
                .get(&name)
                .copied()
                .ok_or_else(|| format!("no routing object for {name}"))
        }
        .boxed()
    }

    fn finalize<'a>(
        &'a self,
        provider: Provider,
        canary: &'a Canary,
    ) -> BoxFuture<'a, Result<(), String>> {
        let name = canary.spec.target_ref.name.clone();
        async move {
            self.0
                .log("ROUTER", &format!("finalize {provider}"), Value::Null);
            let mut s = self.0.store.lock().unwrap();
            if s.crash_now() {
                return Err("crashed".into());
            }
            s.routes.insert(name, Routes::PRIMARY_ONLY);
            Ok(())
        }
        .boxed()
    }
}

/// Metric readings and hook answers set by the test; a metric not set reads 100 (a healthy
/// success rate), a hook not set passes. Hook calls are logged as `HOOK`.
pub struct FakeObserver(pub FakeCluster);

impl Observer for FakeObserver {
    fn read_metric<'a>(
        &'a self,
        _provider: Provider,
        _subject: &'a Subject,
        measurement: &'a Measurement,
        _template: Option<&'a MetricTemplateSpec>,
    ) -> BoxFuture<'a, MetricReading> {
        async move {
            let s = self.0.store.lock().unwrap();
            s.metrics
                .get(&measurement.metric)
                .cloned()
                .unwrap_or(MetricReading::Value { value: 100.0 })
        }
        .boxed()
    }

    fn call_hook<'a>(
        &'a self,
        hook: &'a WebhookRef,
        call: &'a HookCall,
    ) -> BoxFuture<'a, HookOutcome> {
        async move {
            self.0.log(
                "HOOK",
                &format!("{} {} {}", call.gate, hook.name, call.phase),
                json!(call.message),
            );
            let s = self.0.store.lock().unwrap();
            s.hooks
                .get(&hook.name)
                .cloned()
                .unwrap_or(HookOutcome::Passed)
        }
        .boxed()
    }
}

/// The Canary of the tests: podinfo on Istio, 10% steps to 30%, one success-rate check, two
/// failed checks roll back.
pub fn canary(extra_spec: Value) -> Value {
    let mut c = json!({
        "apiVersion": "fledge.dev/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": NS, "uid": "c-uid-1",
                     "finalizers": ["fledge.dev/finalizer"]},
        "spec": {
            "provider": "istio",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {
                "interval": "1m", "threshold": 2, "maxWeight": 30, "stepWeight": 10,
                "metrics": [{"name": "request-success-rate",
                             "thresholdRange": {"min": 99}, "interval": "1m"}]
            }
        }
    });
    merge(&mut c["spec"], &extra_spec);
    c
}

/// The target Deployment, running `image`.
pub fn deployment(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "podinfo", "namespace": NS, "labels": {"app": "podinfo"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {
                "metadata": {"labels": {"app": "podinfo"}},
                "spec": {"containers": [{"name": "podinfo", "image": image}]}
            }
        }
    })
}

/// A cluster with the Canary (finalizer already added) and its target.
pub fn cluster_with(canary: Value, target: Option<Value>) -> FakeCluster {
    let c = FakeCluster::new();
    c.put(CANARY, canary);
    if let Some(t) = target {
        c.put(TARGET, t);
    }
    c.settle();
    c
}

/// Changes the target's image (a new revision), as `kubectl set image` would.
pub fn set_image(c: &FakeCluster, image: &str) {
    let mut t = c.get(TARGET).unwrap();
    t["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
    let g = t["metadata"]["generation"].as_i64().unwrap_or(1);
    t["metadata"]["generation"] = json!(g + 1);
    c.put(TARGET, t);
}

/// Reconciles with fresh contexts, settling workloads and moving the clock an interval each
/// time, until the phase is `phase` (or `limit` reconciles have run).
pub async fn run_until(c: &FakeCluster, phase: &str, limit: usize) -> usize {
    for i in 0..limit {
        let ctx = c.context();
        c.reconcile(&ctx).await.expect("reconcile");
        c.settle();
        if c.phase() == phase {
            // Onboarding scales the target down on the tick after the one that routed traffic
            // to the primary: `Initialized` means both done.
            if phase == "Initialized" && c.get(TARGET).unwrap()["spec"]["replicas"] != 0 {
                c.advance_clock(Duration::from_secs(60));
                c.reconcile(&c.context()).await.expect("reconcile");
                c.settle();
            }
            return i + 1;
        }
        c.advance_clock(Duration::from_secs(60));
    }
    panic!(
        "phase {phase} not reached in {limit} reconciles; at {}",
        c.phase()
    );
}

/// The Services of the test Canary.
pub const SERVICES: &str = "/api/v1/namespaces/test/services";

/// The Warning and Normal Events written since the last `clear_calls`, as summaries.
pub fn events(c: &FakeCluster) -> Vec<String> {
    c.writes()
        .into_iter()
        .filter(|w| w.starts_with("EVENT"))
        .collect()
}

/// Initialises the Canary, deploys `podinfo:2` and reconciles (an interval apart) until the
/// canary gets `weight` percent; the call log is cleared and the clock stands at the step.
pub async fn progressing_at(c: &FakeCluster, weight: u8) {
    run_until(c, "Initialized", 5).await;
    set_image(c, "podinfo:2");
    for _ in 0..10 {
        c.advance_clock(Duration::from_secs(60));
        c.reconcile(&c.context()).await.expect("reconcile");
        c.settle();
        if c.phase() == "Progressing" && c.routes().is_some_and(|r| r.canary == weight) {
            c.clear_calls();
            return;
        }
    }
    panic!("no {weight}% step; at {}", c.phase());
}
