//! Live mode (`fledge-sim serve`): a scenario's mesh run in wall-clock time (scaled by
//! `speed`), its telemetry served on `/metrics` for a real Prometheus, and a small HTTP API
//! through which a controller outside the process writes routing objects and scales and
//! promotes the workloads. The mesh, its traffic and the scenario's timeline are those `run`
//! simulates ([`crate::harness::Live`]); the rollout is left to that controller.
//!
//! | Method     | Path                       | Body                 | Answer                       |
//! |------------|----------------------------|----------------------|------------------------------|
//! | GET        | `/metrics`                 |                      | the exposition               |
//! | PUT, POST  | `/objects`                 | YAML or JSON objects | `{"warnings": [...]}`        |
//! | GET        | `/workloads`               |                      | revision, pods, weight       |
//! | PUT, POST  | `/workloads/canary/scale`  | `{"replicas": N}`    | the workloads                |
//! | POST       | `/workloads/primary/promote` |                    | the workloads                |
//!
//! A body that does not load is answered 400 with the field at fault; nothing changes.

mod http;
mod metrics;

use std::net::{TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::engine::SimTime;
use crate::harness::{Live, LiveApplyError};
use crate::mesh::DataPlane;
use crate::telemetry::Naming;
use http::{Request, Response};

/// How often the mesh is brought up to the clock between requests.
const CLOCK_STEP: Duration = Duration::from_millis(100);
/// The most canary pods a scale request may ask for. The mesh takes up to 100,000, but live it
/// must keep up with the wall clock: measured on the debug build (error-regression.yaml, 60
/// simulated seconds), 1,000 pods take 83 ms and 5,000 take 690 ms, which at `--speed 100`
/// (0.6 wall seconds per simulated minute) already falls behind; the cost grows faster than
/// the pods. 1,000 leaves room at any speed `serve` allows.
const MAX_LIVE_PODS: u32 = 1_000;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The live mesh and its clock.
pub(crate) struct Server<'a> {
    live: Mutex<Live<'a>>,
    naming: Naming,
    started: Instant,
    speed: f64,
}

impl<'a> Server<'a> {
    pub(crate) fn new(live: Live<'a>, data_plane: DataPlane, speed: f64) -> Self {
        let naming = match data_plane {
            DataPlane::Istio => Naming::Istio,
            DataPlane::Linkerd => Naming::Linkerd,
        };
        Server {
            live: Mutex::new(live),
            naming,
            started: Instant::now(),
            speed,
        }
    }

    /// The simulated time the wall clock has reached.
    fn sim_now(&self) -> SimTime {
        (self.started.elapsed().as_nanos() as f64 * self.speed) as SimTime
    }

    /// Serves `listener` until the process ends. A panic in the mesh (a bug) ends the process
    /// with exit code 1 once the clock finds the mesh unusable.
    pub(crate) fn serve(&self, listener: &TcpListener) -> ! {
        std::thread::scope(|scope| {
            scope.spawn(|| {
                loop {
                    std::thread::sleep(CLOCK_STEP);
                    let alive = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        self.with_live(|_| ()).is_some()
                    }));
                    if !matches!(alive, Ok(true)) {
                        use std::io::Write as _;
                        let _ = writeln!(
                            std::io::stderr(),
                            "error: the simulation stopped after an internal error"
                        );
                        std::process::exit(1);
                    }
                }
            });
            loop {
                if let Ok((stream, _)) = listener.accept() {
                    scope.spawn(|| self.exchange(stream));
                }
            }
        })
    }

    /// Runs `f` on the mesh brought up to the clock; `None` if an earlier panic left it unusable.
    fn with_live<T>(&self, f: impl FnOnce(&mut Live<'a>) -> T) -> Option<T> {
        let mut live = self.live.lock().ok()?;
        live.run_until(self.sim_now());
        Some(f(&mut live))
    }

    fn exchange(&self, stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
        let response = match http::read_request(&stream) {
            Ok(request) => self.route(&request),
            Err(response) => response,
        };
        let _ = http::write_response(&stream, &response);
    }

    fn route(&self, r: &Request) -> Response {
        let unusable = || Response::error(500, "the simulation stopped after an internal error");
        let method = r.method.as_str();
        let write = matches!(method, "PUT" | "POST");
        match r.path.as_str() {
            "/metrics" if method == "GET" => self
                .with_live(|l| Response {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: metrics::render(l.telemetry(), self.naming),
                })
                .unwrap_or_else(unusable),
            "/objects" if write => {
                let Ok(text) = std::str::from_utf8(&r.body) else {
                    return Response::error(400, "the body is not UTF-8 text");
                };
                if let Err(e) = yaml_syntax(text) {
                    return Response::error(400, e);
                }
                self.with_live(|l| match l.apply(text) {
                    Ok(warnings) => Response::json(200, &json!({ "warnings": warnings })),
                    Err(e @ LiveApplyError::Invalid(_)) => Response::error(400, e.to_string()),
                    Err(e @ LiveApplyError::Mesh(_)) => Response::error(422, e.to_string()),
                })
                .unwrap_or_else(unusable)
            }
            "/workloads" if method == "GET" => {
                self.with_live(|l| workloads(l)).unwrap_or_else(unusable)
            }
            "/workloads/canary/scale" if write => match replicas(&r.body) {
                Ok(n) if n > MAX_LIVE_PODS => Response::error(
                    422,
                    format!(
                        "replicas {n}: the live simulator runs at most {MAX_LIVE_PODS} canary \
                         pods (more would fall behind the wall clock)"
                    ),
                ),
                Ok(n) => self
                    .with_live(|l| match l.scale_canary(n) {
                        Ok(()) => workloads(l),
                        Err(e) => Response::error(422, e.to_string()),
                    })
                    .unwrap_or_else(unusable),
                Err(reason) => Response::error(400, reason),
            },
            "/workloads/primary/promote" if method == "POST" => self
                .with_live(|l| match l.promote() {
                    Ok(()) => workloads(l),
                    Err(e) => Response::error(422, e.to_string()),
                })
                .unwrap_or_else(unusable),
            "/metrics"
            | "/objects"
            | "/workloads"
            | "/workloads/canary/scale"
            | "/workloads/primary/promote" => {
                Response::error(405, format!("{method} is not allowed on {}", r.path))
            }
            other => Response::error(404, format!("no such path: {other}")),
        }
    }
}

fn workloads(l: &Live<'_>) -> Response {
    Response::json(200, &json!(l.workloads()))
}

/// YAML's syntax, checked before the objects load: the loader's message names the document, this
/// also the line and column (a body is often one line of JSON per document).
fn yaml_syntax(text: &str) -> Result<(), String> {
    use serde::Deserialize as _;
    for (index, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        if let Err(e) = serde_norway::Value::deserialize(doc) {
            let mut message = e.to_string();
            if let Some(i) = message.find(" at line ") {
                message.truncate(i);
            }
            let place = e.location().map_or_else(String::new, |l| {
                format!(" at line {} column {}", l.line(), l.column())
            });
            return Err(format!(
                "document {}: invalid YAML{place}: {message}",
                index + 1
            ));
        }
    }
    Ok(())
}

/// The `replicas` of a scale request's JSON body.
fn replicas(body: &[u8]) -> Result<u32, String> {
    let doc: Json = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not JSON such as {{\"replicas\": 2}}: {e}"))?;
    let field = doc
        .get("replicas")
        .ok_or("missing required field `replicas`")?;
    field
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("field `replicas`: expected a number of pods, got {field}"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use fledge_controller::routes::{Provider, Routes};

    use super::*;
    use crate::engine::SECONDS;
    use crate::scenario::Scenario;

    fn scenario(name: &str) -> Scenario {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scenarios")
            .join(name);
        Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    fn server(s: &Scenario) -> Server<'_> {
        let live = Live::new(s, &s.variants[0], s.seed).expect("the mesh builds");
        Server::new(live, s.data_plane, 1.0)
    }

    fn call(server: &Server<'_>, method: &str, path: &str, body: &str) -> Response {
        server.route(&Request {
            method: method.into(),
            path: path.into(),
            body: body.as_bytes().to_vec(),
        })
    }

    fn run_to(server: &Server<'_>, t: SimTime) {
        server.live.lock().unwrap().run_until(t);
    }

    /// The canary's destination-reported requests so far.
    fn canary_requests(server: &Server<'_>) -> f64 {
        let live = server.live.lock().unwrap();
        let t = live.telemetry();
        t.labelled_series(Naming::Istio)
            .iter()
            .filter(|s| s.name == "istio_requests_total")
            .filter(|s| s.label("reporter") == Some("destination"))
            .filter(|s| s.label("destination_workload") == Some("podinfo"))
            .map(|s| t.live_value(s))
            .sum()
    }

    fn split(s: &Scenario, canary: u8) -> String {
        let routes = Routes {
            primary: 100 - canary,
            canary,
            mirror: None,
            matched: false,
        };
        let objects = Provider::Istio
            .objects(s.canary_resource.as_ref().expect("a Canary"), &routes)
            .expect("the router builds its objects");
        let docs: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
        docs.join("\n---\n")
    }

    #[test]
    fn a_timeline_deploy_shows_as_a_new_revision() {
        let s = scenario("error-regression.yaml");
        let server = server(&s);
        let before = call(&server, "GET", "/workloads", "");
        assert!(
            before.body.contains(r#""revision":"rev-1""#),
            "{}",
            before.body
        );
        run_to(&server, 61 * SECONDS);
        let after = call(&server, "GET", "/workloads", "");
        assert!(
            after.body.contains(r#""revision":"rev-2""#),
            "{}",
            after.body
        );
    }

    #[test]
    fn a_malformed_object_is_refused_naming_the_field_and_the_routes_stay() {
        let s = scenario("error-regression.yaml");
        let server = server(&s);
        let scaled = call(
            &server,
            "POST",
            "/workloads/canary/scale",
            r#"{"replicas": 2}"#,
        );
        assert_eq!(scaled.status, 200, "{}", scaled.body);
        let applied = call(&server, "PUT", "/objects", &split(&s, 50));
        assert_eq!(applied.status, 200, "{}", applied.body);
        run_to(&server, 10 * SECONDS);
        let served = canary_requests(&server);
        assert!(served > 0.0, "the canary takes half the traffic");

        let bad = split(&s, 0).replace(r#""weight":100"#, r#""weight":"all""#);
        let refused = call(&server, "PUT", "/objects", &bad);
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert!(refused.body.contains("weight"), "{}", refused.body);
        let workloads = call(&server, "GET", "/workloads", "");
        assert!(
            workloads.body.contains(r#""canary_weight":50"#),
            "{}",
            workloads.body
        );
        run_to(&server, 20 * SECONDS);
        let more = canary_requests(&server) - served;
        assert!(
            more > 0.3 * served,
            "the canary still takes its half: {more} after {served}"
        );
    }

    #[test]
    fn invalid_yaml_sent_to_objects_is_placed_at_its_line_and_column() {
        let s = scenario("error-regression.yaml");
        let server = server(&s);
        let good = split(&s, 0);
        let (docs, lines) = (good.matches("\n---\n").count() + 1, good.lines().count());
        // An unclosed list after the router's objects: the parser stops at the text's end.
        let bad = format!("{good}\n---\nkind: VirtualService\nspec: [a\n");
        let refused = call(&server, "PUT", "/objects", &bad);
        assert_eq!(refused.status, 400, "{}", refused.body);
        let place = format!(
            "document {}: invalid YAML at line {} column 1",
            docs + 1,
            lines + 4
        );
        assert!(refused.body.contains(&place), "{place}: {}", refused.body);
    }

    #[test]
    fn a_linkerd_scenario_is_served_with_linkerd_names() {
        let s = scenario("linkerd-trafficsplit.yaml");
        let server = server(&s);
        run_to(&server, 5 * SECONDS);
        let metrics = call(&server, "GET", "/metrics", "");
        assert_eq!(metrics.status, 200);
        assert!(
            metrics
                .body
                .contains("response_total{direction=\"inbound\""),
            "{}",
            metrics.body
        );
        assert!(metrics.body.contains("response_latency_ms_bucket{"));
        assert!(!metrics.body.contains("istio_"), "{}", metrics.body);
    }

    /// Past the live cap (the mesh's own 100,000 would never catch up with the clock) or past
    /// any count at all, a scale is refused naming the cap and changes nothing; the cap itself
    /// is allowed.
    #[test]
    fn a_scale_beyond_the_live_cap_is_refused_naming_the_cap_and_changes_nothing() {
        let s = scenario("error-regression.yaml");
        let server = server(&s);
        let before = call(&server, "GET", "/workloads", "");
        for replicas in ["100000", "4000000000"] {
            let body = format!(r#"{{"replicas": {replicas}}}"#);
            let refused = call(&server, "PUT", "/workloads/canary/scale", &body);
            assert_eq!(refused.status, 422, "{replicas}: {}", refused.body);
            assert!(
                refused.body.contains("at most 1000 canary pods"),
                "{replicas}: {}",
                refused.body
            );
            let after = call(&server, "GET", "/workloads", "");
            assert_eq!(
                after.body, before.body,
                "a refused scale keeps the workloads"
            );
        }
        let at_cap = format!(r#"{{"replicas": {MAX_LIVE_PODS}}}"#);
        let scaled = call(&server, "PUT", "/workloads/canary/scale", &at_cap);
        assert_eq!(scaled.status, 200, "{}", scaled.body);
    }

    #[test]
    fn a_scale_request_names_the_field_at_fault() {
        assert_eq!(replicas(br#"{"replicas": 3}"#), Ok(3));
        let missing = replicas(b"{}").unwrap_err();
        assert!(missing.contains("`replicas`"), "{missing}");
        let wrong = replicas(br#"{"replicas": -1}"#).unwrap_err();
        assert!(wrong.contains("field `replicas`"), "{wrong}");
        assert!(replicas(b"replicas: 3").is_err());
    }
}
