//! Calls between services: a version's requests call other services through its sidecar, the
//! worker waiting; steps run in sequence and the calls of a step in parallel (latencies checked
//! by hand on a network of zero delay), a call may be made with a probability; the callee's
//! routes (timeout, retries) and faults apply to the calls, headers propagate over hops, a
//! failed call fails the caller unless it is optional, and calls that loop are refused.

mod support;

use fledge_simulator::engine::{MILLIS, SECONDS};
use fledge_simulator::mesh::*;
use support::mesh::{
    applied, apply, call_of, client_with, constant, mean_ms, one_version, seen, served,
};
use support::scenario::{MeshScenario, checked, refused, subsets, virtual_service};

/// `frontend` (one version, `v1`) calls `backend` with `call`; clients `jason` (every request
/// with `end-user: jason`) and `anon` (no header) call `frontend`.
fn mesh(call: Call, backend: Behaviour) -> Mesh {
    let frontend = Behaviour {
        calls: vec![vec![call]],
        ..Behaviour::default()
    };
    let jason = client_with("jason", "frontend", 200.0, &[("end-user", "jason")]);
    let cfg = MeshConfig {
        seed: 5,
        services: vec![
            one_version("frontend", 2, frontend),
            one_version("backend", 2, backend),
        ],
        clients: vec![jason, ClientConfig::new("anon", "frontend", 200.0)],
        ..Default::default()
    };
    Mesh::new(cfg).expect("a valid mesh")
}

fn backend_served(mesh: &Mesh) -> u64 {
    let v = mesh.version_id("backend", "v1").expect("backend v1");
    mesh.destination_stats(v, 0, mesh.now()).requests
}

#[test]
fn a_header_matched_fault_on_a_downstream_call_fails_only_the_matching_users() {
    let mut mesh = mesh(call_of("backend", false, None), Behaviour::default());
    apply(
        &mut mesh,
        r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: backend}
spec:
  hosts: [backend]
  http:
    - match: [{headers: {end-user: {exact: jason}}}]
      fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
      route: [{destination: {host: backend}}]
    - route: [{destination: {host: backend}}]
"#,
    );
    mesh.run_until(30 * SECONDS);
    let (jason, anon) = (seen(&mesh, "jason", None), seen(&mesh, "anon", None));
    assert!(jason.requests > 4_000 && anon.requests > 4_000);
    assert_eq!(
        jason.failures, jason.requests,
        "every call of jason's is aborted"
    );
    assert_eq!(anon.failures, 0, "no one else's call is");
    // Only anon's calls reach the backend: jason's are aborted by the frontend's sidecar.
    let served = backend_served(&mesh);
    assert!(served >= anon.requests - 100 && served <= anon.requests + 100);
}

#[test]
fn a_failed_optional_call_does_not_fail_the_caller() {
    let failing = Behaviour {
        error_rate: 1.0,
        ..Behaviour::default()
    };
    let mut optional = mesh(call_of("backend", true, None), failing.clone());
    optional.run_until(20 * SECONDS);
    assert!(backend_served(&optional) > 4_000, "the calls are made");
    let anon = seen(&optional, "anon", None);
    assert!(anon.requests > 3_000);
    assert_eq!(anon.failures, 0);

    let mut required = mesh(call_of("backend", false, None), failing);
    required.run_until(20 * SECONDS);
    let anon = seen(&required, "anon", None);
    assert_eq!(
        anon.failures, anon.requests,
        "a required call's failure is the caller's"
    );
}

#[test]
fn a_call_holds_the_callers_worker_until_it_is_answered() {
    // The backend answers in 50 ms; the frontend's own work takes 1 ms.
    let slow = Behaviour {
        service_time: ServiceTime::Constant(50 * MILLIS),
        ..Behaviour::default()
    };
    let mut mesh = mesh(call_of("backend", false, None), slow);
    mesh.run_until(20 * SECONDS);
    let p50 = seen(&mesh, "anon", None)
        .quantile_ms(0.5)
        .expect("requests");
    assert!(
        p50 >= 50.0,
        "the caller's latency holds the call's: p50 {p50} ms"
    );
    // 400 requests/s held 50 ms each over 2 pods of 16 workers: about 10 busy a pod, so
    // some queue only because the calls hold the workers.
    let v = mesh.version_id("frontend", "v1").expect("frontend");
    let q = mesh.queue_stats(v);
    assert!(q.queued > 0, "{q:?}");
}

/// Istio's fault-injection task ("Injecting an HTTP delay fault"): jason's calls from reviews
/// v2 to ratings are delayed 7 s, and productpage's own client timeout to reviews (3 s here,
/// the call's `timeout`) is shorter, so jason's page gives up on reviews after 3 s and, the
/// call being optional, is served without them. Without the call's timeout every one of
/// jason's pages would take 7 s.
#[test]
fn a_call_times_out_on_the_callers_own_timeout_as_in_bookinfos_delay_task() {
    let ratings = "- match:\n  - headers:\n      end-user: {exact: jason}\n  fault:\n    delay:\n      percentage: {value: 100.0}\n      fixedDelay: 7s\n  route:\n  - destination: {host: ratings}\n- route:\n  - destination: {host: ratings}\n";
    let reviews = "- match:\n  - headers:\n      end-user: {exact: jason}\n  route:\n  - destination: {host: reviews, subset: v2}\n- route:\n  - destination: {host: reviews, subset: v1}\n";
    let text = |timeout: &str| {
        MeshScenario::new("bookinfo-test-delay")
            .seed(3)
            .duration("2m")
            .service(
                "productpage",
                &[(
                    "v1",
                    &format!("{{pods: 2, workers: 64, latency: {{constant: 5ms}}, calls: [{{service: reviews, path: /reviews/0, optional: true{timeout}}}]}}"),
                )],
            )
            .service(
                "reviews",
                &[
                    ("v1", "{pods: 1, workers: 64, latency: {constant: 8ms}}"),
                    ("v2", "{pods: 1, workers: 64, latency: {constant: 10ms}, calls: [{service: ratings, path: /ratings/0, timeout: 10s}]}"),
                ],
            )
            .service("ratings", &[("v1", "{pods: 1, latency: {constant: 2ms}}")])
            .client_with(
                "browser",
                "productpage",
                10,
                "headers: [{weight: 9}, {weight: 1, set: {end-user: jason}}]",
            )
            .manifest(&subsets("reviews", &["v1", "v2"]))
            .manifest(&virtual_service("reviews", reviews))
            .manifest(&virtual_service("ratings", ratings))
            .expect("clients:\n  browser: {max_p99_ms: 3050, min_success_rate: 100}")
            .text()
    };
    let r = checked(&text(", timeout: 3s"));
    let browser = &r.clients[0];
    assert!(browser.requests > 1000, "{browser:?}");
    assert!(r.passed(), "{:?}", r.checks);
    // The p99 is jason's tenth of the pages: 5 ms of productpage's own work and the 3 s timeout.
    let p99 = browser.p99_ms.expect("a p99");
    assert!((2985.0..3030.0).contains(&p99), "{p99}");
    // productpage's sidecar saw its application give up: code 0, `DC`, on every jason's call.
    let reviews = r.services.iter().find(|s| s.name == "reviews").unwrap();
    let v2 = reviews.versions.iter().find(|v| v.version == "v2").unwrap();
    assert_eq!(v2.failed, 0, "a code 0 is no 5xx: {v2:?}");
    let p99 = v2.p99_ms.expect("a p99");
    assert!((2985.0..3015.0).contains(&p99), "cut at 3 s: {p99}");

    // Without it, jason waits out the 7 s delay.
    let r = checked(&text(""));
    let p99 = r.clients[0].p99_ms.expect("a p99");
    assert!(p99 > 7000.0, "{p99}");
    assert!(!r.passed(), "{:?}", r.checks);
}

#[test]
fn a_call_timeout_of_zero_or_not_a_duration_is_refused_at_its_field() {
    for (timeout, says) in [("0s", "must be more than 0"), ("soon", "is not a duration")] {
        let text = MeshScenario::new("call-timeout")
            .service(
                "front",
                &[(
                    "v1",
                    &format!("{{pods: 1, calls: [{{service: back, timeout: {timeout}}}]}}"),
                )],
            )
            .service("back", &[("v1", "{pods: 1}")])
            .client("user", "front", 5)
            .text();
        let e = refused(&text, "a call's timeout must be a positive duration");
        assert!(
            e.contains("services[0].versions.v1.calls[0].timeout") && e.contains(says),
            "{e}"
        );
    }
}

fn to(service: &str) -> Call {
    call_of(service, false, None)
}

/// `front` (own work 1 ms, `calls`) calling `a` (10 ms) and `b` (20 ms), on a network and
/// sidecars of no delay; client `user` at 5 requests/s (no queueing), `end-user: jason`.
fn front_calling_a_and_b(calls: Vec<Vec<Call>>, a: Behaviour, b: Behaviour) -> Mesh {
    let front = Behaviour {
        calls,
        ..constant(1)
    };
    let user = client_with("user", "front", 5.0, &[("end-user", "jason")]);
    let cfg = MeshConfig {
        seed: 7,
        services: vec![
            one_version("front", 1, front),
            one_version("a", 1, a),
            one_version("b", 1, b),
        ],
        clients: vec![user],
        network: NetworkConfig {
            one_way: 0,
            sidecar_latency: 0,
            handshake_cpu: 0,
            ..NetworkConfig::default()
        },
        ..Default::default()
    };
    Mesh::new(cfg).expect("a valid mesh")
}

/// Steps run in sequence: the caller answers after its own work and each step in turn.
#[test]
fn a_sequence_of_calls_adds_their_latencies_to_the_callers_own() {
    let mut m = front_calling_a_and_b(
        vec![vec![to("a")], vec![to("b")]],
        constant(10),
        constant(20),
    );
    m.run_until(60 * SECONDS);
    let s = seen(&m, "user", None);
    assert!(s.requests > 200);
    let mean = mean_ms(&s);
    assert!((mean - 31.0).abs() < 0.01, "1 + 10 + 20 ms, got {mean}");
}

/// The calls of one step run in parallel: the step takes as long as its slowest call.
#[test]
fn a_parallel_step_takes_as_long_as_its_slowest_call() {
    let mut m = front_calling_a_and_b(vec![vec![to("a"), to("b")]], constant(10), constant(20));
    m.run_until(60 * SECONDS);
    let mean = mean_ms(&seen(&m, "user", None));
    assert!((mean - 21.0).abs() < 0.01, "1 + max(10, 20) ms, got {mean}");
}

#[test]
fn a_parallel_step_with_a_failed_call_still_waits_for_the_slowest() {
    // `a` fails at once (100% 500 after 10 ms); `b` takes 20 ms: the caller answers its
    // error at 21 ms, not 11 ms (the model: the step ends when every call is answered).
    let failing = Behaviour {
        error_rate: 1.0,
        ..constant(10)
    };
    let mut m = front_calling_a_and_b(vec![vec![to("a"), to("b")]], failing, constant(20));
    m.run_until(60 * SECONDS);
    let s = seen(&m, "user", None);
    assert_eq!(s.failures, s.requests);
    let mean = mean_ms(&s);
    assert!((mean - 21.0).abs() < 0.01, "got {mean}");
}

/// A failed (not optional) call fails the caller at the end of its step: later steps are not
/// called.
#[test]
fn a_failed_step_skips_the_later_steps() {
    let failing = Behaviour {
        error_rate: 1.0,
        ..constant(10)
    };
    let mut m = front_calling_a_and_b(vec![vec![to("a")], vec![to("b")]], failing, constant(20));
    m.run_until(60 * SECONDS);
    let s = seen(&m, "user", None);
    assert_eq!(s.failures, s.requests);
    assert_eq!(served(&m, "b", "v1"), 0);
    let mean = mean_ms(&s);
    assert!((mean - 11.0).abs() < 0.01, "got {mean}");
}

/// A call with `probability: 0.25` is made on about a quarter of the caller's requests.
#[test]
fn a_call_made_with_probability_one_quarter_reaches_a_quarter_of_the_requests() {
    let mut quarter = to("a");
    quarter.probability = 0.25;
    let mut m = front_calling_a_and_b(vec![vec![quarter]], constant(10), constant(20));
    m.run_until(400 * SECONDS);
    let n = seen(&m, "user", None).requests as f64;
    let got = served(&m, "a", "v1") as f64 / n;
    // n ~ 2000: sd of the share ~ 0.0097.
    assert!((got - 0.25).abs() < 0.04, "share {got} of {n}");
    // Mean latency: 1 + 0.25 * 10 ms.
    let mean = mean_ms(&seen(&m, "user", None));
    assert!((mean - 3.5).abs() < 0.4, "got {mean}");
}

/// The callee's VirtualService `timeout` applies to the call, at the caller's sidecar.
#[test]
fn the_callees_route_timeout_cuts_the_call_from_the_callers_sidecar() {
    let mut m = front_calling_a_and_b(vec![vec![to("a")]], constant(50), constant(20));
    applied(
        &mut m,
        &virtual_service(
            "a",
            r#"- timeout: 5ms
  route: [{destination: {host: a}}]
"#,
        ),
    );
    m.run_until(60 * SECONDS);
    let s = seen(&m, "user", None);
    assert_eq!(s.failures, s.requests, "every call is cut at 5 ms");
    let mean = mean_ms(&s);
    // The caller answers once the call is cut: 1 + 5 ms.
    assert!((mean - 6.0).abs() < 0.01, "got {mean}");
}

/// The callee's VirtualService `retries` apply to the call, from the caller's sidecar.
#[test]
fn the_callees_retries_apply_to_the_call() {
    let half = Behaviour {
        error_rate: 0.5,
        error_code: 503,
        ..constant(10)
    };
    let mut m = front_calling_a_and_b(vec![vec![to("a")]], half, constant(20));
    applied(
        &mut m,
        &virtual_service(
            "a",
            r#"- retries: {attempts: 3, retryOn: 5xx}
  route: [{destination: {host: a}}]
"#,
        ),
    );
    m.run_until(400 * SECONDS);
    let s = seen(&m, "user", None);
    let rate = s.success_rate().expect("requests");
    // Four tries at 1/2: 15/16 succeed.
    assert!((rate - 0.9375).abs() < 0.02, "got {rate} of {}", s.requests);
}

/// A header the client sends is propagated over two hops, so a route two services down
/// matches it.
#[test]
fn a_header_propagates_over_two_hops() {
    // front -> a -> b; a fault on b for end-user jason fails every request of the user.
    let a = Behaviour {
        calls: vec![vec![to("b")]],
        ..constant(10)
    };
    let mut m = front_calling_a_and_b(vec![vec![to("a")]], a, constant(20));
    applied(
        &mut m,
        &virtual_service(
            "b",
            r#"- match: [{headers: {end-user: {exact: jason}}}]
  fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
  route: [{destination: {host: b}}]
- route: [{destination: {host: b}}]
"#,
        ),
    );
    m.run_until(60 * SECONDS);
    let s = seen(&m, "user", None);
    assert!(s.requests > 200);
    assert_eq!(s.failures, s.requests);
    assert_eq!(served(&m, "b", "v1"), 0);
}

/// Calls that loop across services would never end: refused at the call closing the loop.
#[test]
fn calls_that_loop_across_services_are_refused_at_the_call_closing_the_loop() {
    // productpage -> reviews -> ratings, and now ratings -> productpage.
    let text = include_str!("../../scenarios/bookinfo-ratings-canary.yaml").replace(
        "        pods: 2\n        latency: {p50: 2ms, p99: 10ms}\n",
        "        pods: 2\n        latency: {p50: 2ms, p99: 10ms}\n        calls:\n          - service: productpage\n",
    );
    let err = fledge_simulator::scenario::Scenario::parse(&text, std::path::Path::new("loop.yaml"))
        .expect_err("a loop of calls is refused");
    // The Canary's service comes first, so the search goes reviews -> ratings -> productpage,
    // whose call to reviews closes the loop: the error is at that call's line.
    let line = text
        .lines()
        .position(|l| l.contains("- service: reviews"))
        .unwrap()
        + 1;
    assert_eq!(
        (err.line, err.field.as_str()),
        (Some(line), "services[0].versions.v1.calls[0]"),
        "{err}"
    );
    assert!(
        err.message
            .contains("closes a loop of calls (reviews -> ratings -> productpage -> reviews)"),
        "{err}"
    );
}
