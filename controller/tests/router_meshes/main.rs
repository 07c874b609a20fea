//! The traffic routers against a fake API server: the exact object each mesh gets, the
//! requests the router makes, and that fields other managers own survive a write.
//!
//! The fake (a `tower_test` mock behind `kube::Client`) keeps objects by path, answers GET and
//! server-side apply PATCH, and merges an apply the way the API server does for the fields
//! involved here: maps merge key by key, lists are replaced whole. It records every request.
#![cfg(feature = "cluster")]

#[path = "../support/gateway_api_defaults.rs"]
mod gateway_api_defaults;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fledge_controller::router::{Router, RouterError, Routes};
use fledge_controller::routes::{Provider, RouteError, UnknownProvider, gateway_api, istio, smi};
use fledge_controller::spec::Canary;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One request as the fake API server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Option<Value>,
}

#[derive(Clone, Default)]
struct FakeApi {
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Answer every request with this status instead.
    fail_with: Option<u16>,
    /// Drop `requestMirror.percent` from applied objects, as an HTTPRoute CRD older than
    /// v1.2 prunes it.
    prune_mirror_percent: bool,
}

impl FakeApi {
    fn with(objects: &[(&str, Value)]) -> Self {
        let fake = FakeApi::default();
        for (path, object) in objects {
            lock(&fake.objects).insert(path.to_string(), object.clone());
        }
        fake
    }

    fn client(&self) -> kube::Client {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(self.clone().serve(handle));
        kube::Client::new(service, "default")
    }

    async fn serve(self, mut handle: Handle) {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body: Option<Value> = serde_json::from_slice(&bytes).ok();
            let path = parts.uri.path().to_string();
            lock(&self.seen).push(Seen {
                method: parts.method.to_string(),
                path: path.clone(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                body: body.clone(),
            });
            let (status, answer) = match (self.fail_with, parts.method.as_str()) {
                (Some(code), _) => (code, status_body(code, "the API server is unwell")),
                (None, "GET") => match lock(&self.objects).get(&path) {
                    Some(o) => (200, o.clone()),
                    None => (404, status_body(404, "not found")),
                },
                (None, "PATCH") => {
                    let mut objects = lock(&self.objects);
                    let mut answer = objects.get(&path).cloned().unwrap_or_else(|| json!({}));
                    let body = body.unwrap_or(Value::Null);
                    if parts.headers.get(http::header::CONTENT_TYPE)
                        == Some(&http::HeaderValue::from_static(
                            "application/merge-patch+json",
                        ))
                    {
                        merge_patch(&mut answer, body);
                    } else {
                        merge(&mut answer, body);
                    }
                    if self.prune_mirror_percent {
                        prune_mirror_percent(&mut answer);
                    }
                    if path.contains("/httproutes/") {
                        gateway_api_defaults::default_matches(&mut answer["spec"]);
                    }
                    // A dry run answers what would be stored and stores nothing.
                    if !is_dry_run(parts.uri.query().unwrap_or_default()) {
                        objects.insert(path, answer.clone());
                    }
                    (200, answer)
                }
                (None, "DELETE") => match lock(&self.objects).remove(&path) {
                    Some(o) => (200, o),
                    None => (404, status_body(404, "not found")),
                },
                (None, _) => (405, status_body(405, "not allowed")),
            };
            let mut response =
                Response::new(Body::from(serde_json::to_vec(&answer).unwrap_or_default()));
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            send.send_response(response);
        }
    }

    fn seen(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }

    fn object(&self, path: &str) -> Value {
        lock(&self.objects)
            .get(path)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Method and path of every request but dry runs, in order.
    fn calls(&self) -> Vec<String> {
        self.seen()
            .iter()
            .filter(|s| !is_dry_run(&s.query))
            .map(|s| format!("{} {}", s.method, s.path))
            .collect()
    }

    /// Bodies of the applies (not dry runs), in order.
    fn applied(&self) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "PATCH" && !is_dry_run(&s.query))
            .filter_map(|s| s.body)
            .collect()
    }
}

fn is_dry_run(query: &str) -> bool {
    query.split('&').any(|kv| kv == "dryRun=All")
}

fn prune_mirror_percent(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Object(m)) = o.get_mut("requestMirror") {
                m.remove("percent");
            }
            o.values_mut().for_each(prune_mirror_percent);
        }
        Value::Array(a) => a.iter_mut().for_each(prune_mirror_percent),
        _ => {}
    }
}

/// The router for a provider as a Canary names it.
fn router(provider: &str, client: kube::Client) -> Result<Router, UnknownProvider> {
    provider.parse::<Provider>().map(|p| Router::new(p, client))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn status_body(code: u16, message: &str) -> Value {
    let reason = match code {
        404 => "NotFound",
        _ => "InternalError",
    };
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

/// Server-side apply, as far as these objects need it: maps merge, lists are atomic.
fn merge(into: &mut Value, applied: Value) {
    match (into, applied) {
        (Value::Object(into), Value::Object(applied)) => {
            for (k, v) in applied {
                merge(into.entry(k).or_insert(Value::Null), v);
            }
        }
        (into, applied) => *into = applied,
    }
}

/// RFC 7386: as `merge`, and a null removes its key.
fn merge_patch(into: &mut Value, patch: Value) {
    match (into, patch) {
        (Value::Object(into), Value::Object(patch)) => {
            for (k, v) in patch {
                if v.is_null() {
                    into.remove(&k);
                } else {
                    merge_patch(into.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (into, patch) => *into = patch,
    }
}

/// Every test finishes in bounded time, even if a request never comes back.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(10), f).await {
        Ok(v) => v,
        Err(_) => panic!("the router did not finish within 10s"),
    }
}

fn canary(extra_spec: Value) -> Canary {
    let mut spec = json!({
        "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo" },
        "service": { "port": 9898 },
        "analysis": { "interval": "1m", "stepWeight": 10, "maxWeight": 50 },
    });
    merge(&mut spec, extra_spec);
    let object = json!({
        "apiVersion": "fledge.dev/v1alpha1",
        "kind": "Canary",
        "metadata": { "name": "podinfo", "namespace": "test", "uid": "c0ffee" },
        "spec": spec,
    });
    match serde_json::from_value(object) {
        Ok(c) => c,
        Err(e) => panic!("fixture is not a Canary: {e}"),
    }
}

fn owner() -> Value {
    json!([{
        "apiVersion": "fledge.dev/v1alpha1", "kind": "Canary", "name": "podinfo", "uid": "c0ffee",
        "controller": true,
    }])
}

fn weights(primary: u8, canary: u8) -> Routes {
    Routes {
        primary,
        canary,
        mirror: None,
        matched: false,
    }
}

const VS: &str = "/apis/networking.istio.io/v1beta1/namespaces/test/virtualservices/podinfo";
const DR_PRIMARY: &str =
    "/apis/networking.istio.io/v1beta1/namespaces/test/destinationrules/podinfo-primary";
const DR_CANARY: &str =
    "/apis/networking.istio.io/v1beta1/namespaces/test/destinationrules/podinfo-canary";
const TS: &str = "/apis/split.smi-spec.io/v1alpha2/namespaces/test/trafficsplits/podinfo";
const HR: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/test/httproutes/podinfo";

fn istio_destination(host: &str, weight: u8) -> Value {
    json!({ "destination": { "host": host, "port": { "number": 9898 } }, "weight": weight })
}

mod any_input;
mod gateway_api_routes;
mod istio_routes;
mod smi_routes;
