//! Calls between services: a version's requests call other services through its sidecar, the
//! worker waiting; the callee's routes and faults apply to the calls, headers propagate, and a
//! failed call fails the caller unless it is optional.

mod support;

use fledge_simulator::engine::{MILLIS, SECONDS};
use fledge_simulator::mesh::*;
use support::mesh::{apply, call_of, client_with, one_version, seen};
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
