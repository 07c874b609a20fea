//! One observation plan, two executors, over the same simulated traffic.
//!
//! The cluster's executor (the controller's Prometheus client and query builder) reads a
//! Prometheus-shaped fake on 127.0.0.1: the simulator's labelled series as a Prometheus scraping
//! the proxies every 5 s stores them (series created lazily at their first request), queried
//! with the simulator's PromQL evaluator (Prometheus' extrapolation for `rate`/`increase`). The
//! simulator's executor reads its telemetry. Both must give the statistical judge the same
//! counts over the plan's range, and a template evaluated in the simulator must give the
//! built-in check's value.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use fledge_controller::analysis::{Counts, MetricReading};
use fledge_controller::metrics::{self, Prometheus, builtin_query};
use fledge_controller::observe::{Measure, Measurement, Range, Subject, plan};
use fledge_controller::rollout::{
    Action, Observation, Phase, Readiness, RolloutState, advance, look_interval, wants,
};
use fledge_controller::routes::{Provider, Routes};
use fledge_controller::spec::{Canary, validate};
use fledge_simulator::engine::{MILLIS, SECONDS};
use fledge_simulator::harness::observe;
use fledge_simulator::manifest;
use fledge_simulator::mesh::{
    Behaviour, ClientConfig, Mesh, MeshConfig, ServiceConfig, ServiceTime, VersionConfig, VersionId,
};
use fledge_simulator::promql::{self, Labels, Ms, Scraped, Series, Storage, Value};
use fledge_simulator::telemetry::{Naming, Reporter, Selector};
use serde_json::{Value as Json, json};

const RATE: f64 = 200.0;

/// `podinfo` in `test`: a primary (4 pods) and a canary (2 pods) failing `canary_errors` of
/// their requests; `rate` requests per second from `frontend`; `canary`% to the canary.
struct Rig {
    mesh: Mesh,
    primary: VersionId,
    canary: VersionId,
}

impl Rig {
    fn new(seed: u64, rate: f64, canary_errors: f64, canary_weight: u8) -> Rig {
        let behaviour = |error_rate| Behaviour {
            workers: 32,
            service_time: ServiceTime::LogNormal {
                p50: 15 * MILLIS,
                p99: 60 * MILLIS,
            },
            error_rate,
            ..Behaviour::default()
        };
        let mut primary = VersionConfig::new("primary", 4, behaviour(0.001));
        primary.workload = Some("podinfo-primary".into());
        let mut canary = VersionConfig::new("canary", 2, behaviour(canary_errors));
        canary.workload = Some("podinfo".into());
        let mut service = ServiceConfig::new("podinfo", vec![primary, canary]);
        service.namespace = Some("test".into());
        let mut client = ClientConfig::new("frontend", "podinfo", rate);
        client.namespace = Some("test".into());
        let cfg = MeshConfig {
            seed,
            namespace: "test".into(),
            services: vec![service],
            clients: vec![client],
            ..MeshConfig::default()
        };
        let mesh = Mesh::new(cfg).expect("the mesh builds");
        let ids = (
            mesh.version_id("podinfo", "primary"),
            mesh.version_id("podinfo", "canary"),
        );
        let (Some(primary), Some(canary)) = ids else {
            panic!("the service's versions exist");
        };
        let mut rig = Rig {
            mesh,
            primary,
            canary,
        };
        rig.route(canary_weight);
        rig
    }

    /// Routes `canary`% to the canary with the objects the controller's Istio router writes.
    fn route(&mut self, canary: u8) {
        let routes = Routes {
            primary: 100 - canary,
            canary,
            mirror: None,
            matched: false,
        };
        let objects = Provider::Istio
            .objects(&podinfo("threshold"), &routes)
            .expect("the router's objects");
        let text: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
        let loaded = manifest::parse(&text.join("\n---\n")).expect("the objects load");
        self.mesh
            .apply_manifests(&loaded)
            .expect("the objects apply");
    }

    /// What the destination sidecars of `v` reported up to now, exactly (the live counters).
    fn exact(&self, v: VersionId) -> Counts {
        let t = self.mesh.telemetry().totals(&Selector {
            reporter: Reporter::Destination,
            source: None,
            dest: Some(v.0),
        });
        Counts {
            requests: t.requests as f64,
            failures: t.failures as f64,
        }
    }

    /// The simulator's executor.
    fn read(&self, subject: &Subject, m: &Measurement) -> MetricReading {
        let storage = Scraped::new(self.mesh.telemetry(), Naming::Istio);
        observe::read(&storage, &[], subject, m)
    }
}

fn podinfo(judge: &str) -> Canary {
    serde_json::from_value(json!({
        "apiVersion": "fledge.dev/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "provider": "istio",
            "targetRef": {"kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {
                "interval": "30s", "threshold": 2, "maxWeight": 50, "stepWeight": 10,
                "judge": judge,
                "metrics": [
                    {"name": "request-success-rate", "interval": "1m"},
                    {"name": "request-duration", "interval": "30s"}
                ]
            }
        }
    }))
    .expect("a Canary")
}

/// Every scraped series of the run so far, held for the fake.
#[derive(Clone, Default)]
struct Scrapes(Arc<Mutex<Vec<Series>>>);

impl Scrapes {
    fn take(&self, mesh: &Mesh) {
        let all = Scraped::new(mesh.telemetry(), Naming::Istio).select(&|_| true, 0, Ms::MAX);
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = all;
    }
}

impl Storage for Scrapes {
    fn select(&self, wanted: &dyn Fn(&Labels) -> bool, from: Ms, to: Ms) -> Vec<Series> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .filter(|(labels, _)| wanted(labels))
            .map(|(labels, samples)| {
                let inside = samples.iter().filter(|(t, _)| (from..=to).contains(t));
                (labels.clone(), inside.copied().collect())
            })
            .collect()
    }
}

/// Prometheus prints floats as Go does: `NaN`, `+Inf`, `-Inf`.
fn number(v: f64) -> String {
    match v {
        v if v.is_nan() => "NaN".into(),
        v if v == f64::INFINITY => "+Inf".into(),
        v if v == f64::NEG_INFINITY => "-Inf".into(),
        v => v.to_string(),
    }
}

/// The instant-query API over the scrapes.
async fn query(
    State(scrapes): State<Scrapes>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let q = params.get("query").cloned().unwrap_or_default();
    let seconds: f64 = params
        .get("time")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0.0);
    let at = (seconds * 1000.0).round() as Ms;
    let stamp = |t: Ms| json!(t as f64 / 1000.0);
    let data = match promql::evaluate(&q, &scrapes, at) {
        Ok(Value::Scalar(v)) => json!({"resultType": "scalar", "result": [stamp(at), number(v)]}),
        Ok(Value::Vector(v)) => {
            let result: Vec<Json> = v
                .iter()
                .map(|(l, x)| json!({"metric": l, "value": [stamp(at), number(*x)]}))
                .collect();
            json!({"resultType": "vector", "result": result})
        }
        Ok(Value::Matrix(m)) => {
            let result: Vec<Json> = m
                .iter()
                .map(|(l, s)| {
                    let values: Vec<Json> = s
                        .iter()
                        .map(|(t, x)| json!([stamp(*t), number(*x)]))
                        .collect();
                    json!({"metric": l, "values": values})
                })
                .collect();
            json!({"resultType": "matrix", "result": result})
        }
        Err(e) => {
            let body = json!({"status": "error", "errorType": "bad_data", "error": e.to_string()});
            return (axum::http::StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

async fn serve(scrapes: Scrapes) -> Prometheus {
    let app = axum::Router::new()
        .route("/api/v1/query", axum::routing::get(query))
        .with_state(scrapes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Prometheus::new(&address, StdDuration::from_secs(5), 0).expect("a client")
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(StdDuration::from_secs(30), f)
        .await
        .expect("Prometheus answers within 30 s")
}

fn counts(reading: &MetricReading) -> (Counts, Counts) {
    match reading {
        MetricReading::Counts {
            canary, primary, ..
        } => (*canary, *primary),
        other => panic!("expected counts, got {other:?}"),
    }
}

/// The statistical success rate's measurement of a step.
fn step(from: Ms, to: Ms) -> Measurement {
    Measurement {
        metric: "request-success-rate".into(),
        measure: Measure::Counts,
        range: Range { from, to },
    }
}

/// One step's counts of canary and primary: exactly, by each executor, and by `increase()`.
struct Step {
    exact: (Counts, Counts),
    simulator: (Counts, Counts),
    cluster: (Counts, Counts),
    /// `sum(increase(...[range]))` of the canary's requests, as the cluster once queried.
    increase: f64,
}

/// The canary went from 10% to 30% at `since`; the step is measured at `now`.
async fn measure_a_step(since: Ms, now: Ms) -> Step {
    let mut rig = Rig::new(5, RATE, 0.02, 10);
    rig.mesh.run_until(since * MILLIS);
    let (canary_then, primary_then) = (rig.exact(rig.canary), rig.exact(rig.primary));
    rig.route(30);
    rig.mesh.run_until(now * MILLIS);
    let less = |a: Counts, b: Counts| Counts {
        requests: a.requests - b.requests,
        failures: a.failures - b.failures,
    };
    let exact = (
        less(rig.exact(rig.canary), canary_then),
        less(rig.exact(rig.primary), primary_then),
    );
    let subject = Subject::of(&podinfo("statistical"));
    let m = step(since, now);
    let simulator = counts(&rig.read(&subject, &m));
    let scrapes = Scrapes::default();
    scrapes.take(&rig.mesh);
    let old = format!(
        r#"sum(increase(istio_requests_total{{reporter="destination",destination_workload="podinfo"}}[{}ms]))"#,
        now - since
    );
    let increase = match promql::reading(promql::evaluate(&old, &scrapes, now)) {
        MetricReading::Value { value } => value,
        other => panic!("{other:?}"),
    };
    let prometheus = serve(scrapes).await;
    let reading = bounded(prometheus.read(metrics::Mesh::Istio, &subject, &m, None)).await;
    Step {
        exact,
        simulator,
        cluster: counts(&reading),
        increase,
    }
}

#[tokio::test]
async fn both_executors_count_the_same_requests_and_failures_when_the_step_begins_on_a_scrape() {
    let s = measure_a_step(60_000, 150_000).await;
    assert_eq!(s.simulator, s.exact);
    assert_eq!(s.cluster, s.exact);
    // The canary's 5xx series: some created after the step began (lazily), all counted.
    assert!(s.exact.0.failures > 0.0, "{:?}", s.exact);
    eprintln!(
        "canary requests: exact {}, increase() {}",
        s.exact.0.requests, s.increase
    );
}

#[tokio::test]
async fn between_scrapes_both_executors_count_alike_missing_at_most_a_scrape_at_each_end_leaking_none()
 {
    // The step begins 2.5 s after a scrape and is read 2.5 s after another.
    let s = measure_a_step(62_500, 152_500).await;
    let ((exact_c, exact_p), (sim_c, sim_p), (cluster_c, cluster_p)) =
        (s.exact, s.simulator, s.cluster);
    eprintln!(
        "canary requests: exact {}, increase() {}",
        exact_c.requests, s.increase
    );
    let scrape_of = |share: f64| RATE * share * 5.0;
    for (side, exact, cluster, share) in [
        ("canary", exact_c, cluster_c, 0.3),
        ("primary", exact_p, cluster_p, 0.7),
    ] {
        let missed = exact.requests - cluster.requests;
        eprintln!(
            "{side}: exact {exact:?}, cluster {cluster:?}: {missed} requests not counted ({:.2}%)",
            100.0 * missed / exact.requests
        );
        // Never more than what happened in the range (no earlier traffic leaks in) ...
        assert!(cluster.requests <= exact.requests, "{side}");
        assert!(cluster.failures <= exact.failures, "{side}");
        // ... and no less than the range short of one scrape interval at each end (with
        // room for the traffic's randomness).
        assert!(missed <= 2.0 * 1.5 * scrape_of(share), "{side}: {missed}");
    }
    // The simulator executes the very same measurement over its scrapes.
    assert_eq!((sim_c, sim_p), (cluster_c, cluster_p));
}

#[tokio::test]
async fn the_statistical_judge_promotes_a_healthy_canary_through_the_clusters_metrics_path() {
    let canary = podinfo("statistical");
    let spec = validate(&canary.spec).expect("the Canary validates");
    let subject = Subject::of(&canary);
    // The canary is as healthy as the primary. At 50 requests per second a minute's window
    // never holds the evidence a step needs (about 1,500 canary requests): only counts that keep
    // growing since the step began let it advance before the progress deadline.
    let mut rig = Rig::new(7, 50.0, 0.001, 0);
    let scrapes = Scrapes::default();
    let prometheus = serve(scrapes.clone()).await;
    let mut state = RolloutState::default();
    let look = look_interval(&spec);
    let mut now: Ms = 0;
    while state.phase != Phase::Succeeded {
        assert!(
            now <= 30 * 60 * 1000,
            "not promoted in 30 minutes: {:?} {}",
            state.phase,
            state.message
        );
        rig.mesh.run_until(now * MILLIS);
        scrapes.take(&rig.mesh);
        let mut readings = BTreeMap::new();
        for m in plan(&wants(&state, &spec, now), &spec, &subject, now) {
            let reading = bounded(prometheus.read(metrics::Mesh::Istio, &subject, &m, None)).await;
            readings.insert(m.metric, reading);
        }
        let obs = Observation {
            revision: if now < 60_000 { "rev-1" } else { "rev-2" }.into(),
            canary: Readiness::all(2),
            primary: Readiness::all(4),
            metrics: readings,
            ..Observation::default()
        };
        let (next, actions) = advance(&state, &spec, &obs, now);
        for action in actions {
            if let Action::SetRoutes { canary, .. } = action {
                rig.route(canary);
            }
        }
        assert_ne!(next.phase, Phase::Failed, "rolled back: {}", next.message);
        state = next;
        now += look;
    }
    eprintln!("promoted at {} s", now / 1000);
}

#[test]
fn flaggers_built_in_queries_evaluated_in_the_simulator_give_the_built_in_checks() {
    let mut rig = Rig::new(3, RATE, 0.02, 30);
    rig.mesh.run_until(180 * SECONDS);
    let subject = Subject::of(&podinfo("threshold"));
    for naming in [Naming::Istio, Naming::Linkerd] {
        let mesh = match naming {
            Naming::Istio => metrics::Mesh::Istio,
            Naming::Linkerd => metrics::Mesh::Linkerd,
        };
        let storage = Scraped::new(rig.mesh.telemetry(), naming);
        for (measure, window) in [(Measure::SuccessRate, 60_000), (Measure::Latency, 30_000)] {
            let m = Measurement {
                metric: format!("{measure:?}"),
                measure,
                range: Range {
                    from: 180_000 - window,
                    to: 180_000,
                },
            };
            let Some(template) = builtin_query(mesh, &m.measure, &subject, m.range) else {
                panic!("Flagger has a query for {m:?}");
            };
            let from_template = promql::reading(promql::evaluate(&template, &storage, m.range.to));
            let built_in = rig.read(&subject, &m);
            let (MetricReading::Value { value: a }, MetricReading::Value { value: b }) =
                (&from_template, &built_in)
            else {
                panic!("{naming:?} {m:?}: {from_template:?} and {built_in:?}");
            };
            assert!(
                (a - b).abs() <= 1e-9 * b.abs(),
                "{naming:?} {}: template {a}, built-in {b}",
                m.metric
            );
        }
    }
}

/// The threshold judge's built-in success rate is Flagger's `rate()` ratio in the simulator too:
/// right after traffic reaches a new canary its series are young (`rate()` drops a series with
/// one sample and extrapolates the others), and the simulator rehearses that number, not the
/// exact one.
#[test]
fn the_built_in_success_rate_is_flaggers_query_while_the_canarys_series_are_young() {
    let mut rig = Rig::new(3, 20.0, 0.03, 0);
    rig.mesh.run_until(150 * SECONDS);
    rig.route(20);
    rig.mesh.run_until(180 * SECONDS);
    let subject = Subject::of(&podinfo("threshold"));
    let storage = Scraped::new(rig.mesh.telemetry(), Naming::Istio);
    let m = Measurement {
        metric: "request-success-rate".into(),
        measure: Measure::SuccessRate,
        range: Range {
            from: 120_000,
            to: 180_000,
        },
    };
    let query =
        builtin_query(metrics::Mesh::Istio, &m.measure, &subject, m.range).unwrap_or_default();
    let cluster = promql::reading(promql::evaluate(&query, &storage, m.range.to));
    let simulator = rig.read(&subject, &m);
    assert_eq!(simulator, cluster);
}
