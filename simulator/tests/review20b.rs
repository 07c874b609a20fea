//! Review r20b of issue 20's calls (simulator/src/mesh/calls.rs): latencies of sequence and
//! parallel steps checked by hand on a network of zero delay, probability, the callee's
//! VirtualService (timeout, retries) applied from the caller's sidecar, headers over two hops,
//! and uri matches.

mod support;

use fledge_simulator::engine::SECONDS;
use fledge_simulator::manifest;
use fledge_simulator::mesh::*;
use fledge_simulator::telemetry::WindowStats;
use support::mesh::{applied, call_of, client_with, constant, one_version, seen, served};
use support::scenario::virtual_service;

fn to(service: &str) -> Call {
    call_of(service, false, None)
}

/// `front` (own work 1 ms, `calls`) calling `a` (10 ms) and `b` (20 ms), on a network and
/// sidecars of no delay; client `user` at 5 requests/s (no queueing), `end-user: jason`.
fn mesh(calls: Vec<Vec<Call>>, a: Behaviour, b: Behaviour) -> Mesh {
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

fn seen_by_user(mesh: &Mesh) -> WindowStats {
    seen(mesh, "user", None)
}

fn mean_ms(s: &WindowStats) -> f64 {
    s.mean_ms().expect("requests")
}

#[test]
fn a_sequence_of_calls_adds_their_latencies_to_the_callers_own() {
    let mut m = mesh(
        vec![vec![to("a")], vec![to("b")]],
        constant(10),
        constant(20),
    );
    m.run_until(60 * SECONDS);
    let s = seen_by_user(&m);
    assert!(s.requests > 200);
    let mean = mean_ms(&s);
    assert!((mean - 31.0).abs() < 0.01, "1 + 10 + 20 ms, got {mean}");
}

#[test]
fn a_parallel_step_takes_as_long_as_its_slowest_call() {
    let mut m = mesh(vec![vec![to("a"), to("b")]], constant(10), constant(20));
    m.run_until(60 * SECONDS);
    let mean = mean_ms(&seen_by_user(&m));
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
    let mut m = mesh(vec![vec![to("a"), to("b")]], failing, constant(20));
    m.run_until(60 * SECONDS);
    let s = seen_by_user(&m);
    assert_eq!(s.failures, s.requests);
    let mean = mean_ms(&s);
    assert!((mean - 21.0).abs() < 0.01, "got {mean}");
}

#[test]
fn a_failed_step_skips_the_later_steps() {
    let failing = Behaviour {
        error_rate: 1.0,
        ..constant(10)
    };
    let mut m = mesh(vec![vec![to("a")], vec![to("b")]], failing, constant(20));
    m.run_until(60 * SECONDS);
    let s = seen_by_user(&m);
    assert_eq!(s.failures, s.requests);
    assert_eq!(served(&m, "b", "v1"), 0);
    let mean = mean_ms(&s);
    assert!((mean - 11.0).abs() < 0.01, "got {mean}");
}

#[test]
fn a_call_made_with_probability_one_quarter_reaches_a_quarter_of_the_requests() {
    let mut quarter = to("a");
    quarter.probability = 0.25;
    let mut m = mesh(vec![vec![quarter]], constant(10), constant(20));
    m.run_until(400 * SECONDS);
    let n = seen_by_user(&m).requests as f64;
    let got = served(&m, "a", "v1") as f64 / n;
    // n ~ 2000: sd of the share ~ 0.0097.
    assert!((got - 0.25).abs() < 0.04, "share {got} of {n}");
    // Mean latency: 1 + 0.25 * 10 ms.
    let mean = mean_ms(&seen_by_user(&m));
    assert!((mean - 3.5).abs() < 0.4, "got {mean}");
}

#[test]
fn the_callees_route_timeout_cuts_the_call_from_the_callers_sidecar() {
    let mut m = mesh(vec![vec![to("a")]], constant(50), constant(20));
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
    let s = seen_by_user(&m);
    assert_eq!(s.failures, s.requests, "every call is cut at 5 ms");
    let mean = mean_ms(&s);
    // The caller answers once the call is cut: 1 + 5 ms.
    assert!((mean - 6.0).abs() < 0.01, "got {mean}");
}

#[test]
fn the_callees_retries_apply_to_the_call() {
    let half = Behaviour {
        error_rate: 0.5,
        error_code: 503,
        ..constant(10)
    };
    let mut m = mesh(vec![vec![to("a")]], half, constant(20));
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
    let s = seen_by_user(&m);
    let rate = s.success_rate().expect("requests");
    // Four tries at 1/2: 15/16 succeed.
    assert!((rate - 0.9375).abs() < 0.02, "got {rate} of {}", s.requests);
}

#[test]
fn a_header_propagates_over_two_hops() {
    // front -> a -> b; a fault on b for end-user jason fails every request of the user.
    let a = Behaviour {
        calls: vec![vec![to("b")]],
        ..constant(10)
    };
    let mut m = mesh(vec![vec![to("a")]], a, constant(20));
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
    let s = seen_by_user(&m);
    assert!(s.requests > 200);
    assert_eq!(s.failures, s.requests);
    assert_eq!(served(&m, "b", "v1"), 0);
}

/// `user` calls `front` with `GET path`; `front`'s VirtualService is `vs`.
fn front_with_path(path: &str, vs: &str) -> (Mesh, Vec<String>) {
    let user = client_with("user", "front", 5.0, &[(":method", "GET"), (":path", path)]);
    let cfg = MeshConfig {
        seed: 7,
        services: vec![one_version("front", 1, constant(1))],
        clients: vec![user],
        ..Default::default()
    };
    let mut m = Mesh::new(cfg).expect("a valid mesh");
    let warnings = applied(&mut m, vs);
    m.run_until(60 * SECONDS);
    (m, warnings)
}

#[test]
fn ignore_uri_case_makes_the_uri_match_case_insensitive() {
    let (m, w) = front_with_path(
        "/productpage",
        &virtual_service(
            "front",
            r#"- match: [{uri: {exact: /ProductPage}, ignoreUriCase: true}]
  route: [{destination: {host: front}}]
"#,
        ),
    );
    // Istio: `ignoreUriCase` makes the match case-insensitive (Envoy `case_sensitive: false`),
    // so every request is routed.
    assert!(
        served(&m, "front", "v1") > 200,
        "routed {}",
        served(&m, "front", "v1")
    );
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn a_match_block_for_a_gateway_only_does_not_apply_to_the_sidecars() {
    let (m, w) = front_with_path(
        "/",
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front}
spec:
  hosts: [front]
  gateways: [mesh, front-gateway]
  http:
    - match: [{gateways: [front-gateway]}]
      fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
      route: [{destination: {host: front}}]
    - route: [{destination: {host: front}}]
"#,
    );
    let s = seen_by_user(&m);
    // Istio: a match naming gateways applies only to those gateways, not to `mesh`.
    assert!(
        s.requests > 200 && s.failures == 0,
        "{} of {} aborted",
        s.failures,
        s.requests
    );
    // Match-block gateways are modelled (mesh/gateway.rs), so nothing is warned.
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn a_source_namespace_match_is_not_taken_for_every_request() {
    let (m, w) = front_with_path(
        "/",
        &virtual_service(
            "front",
            r#"- match: [{sourceNamespace: elsewhere}]
  fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
  route: [{destination: {host: front}}]
- route: [{destination: {host: front}}]
"#,
        ),
    );
    let s = seen_by_user(&m);
    // The user is not in namespace `elsewhere`: Istio does not abort its requests. The
    // simulator warns for `sourceLabels` ("matches no request"); `sourceNamespace` must too.
    assert!(
        s.requests > 200 && s.failures == 0,
        "{} of {} aborted",
        s.failures,
        s.requests
    );
    assert!(w.iter().any(|w| w.contains("sourceNamespace")), "{w:?}");
}

#[test]
fn port_and_scheme_matches_warn_and_match_no_request() {
    let (m, w) = front_with_path(
        "/",
        &virtual_service(
            "front",
            r#"- match: [{port: 9080}, {scheme: {exact: https}}]
  fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
  route: [{destination: {host: front}}]
- route: [{destination: {host: front}}]
"#,
        ),
    );
    let s = seen_by_user(&m);
    assert!(
        s.requests > 200 && s.failures == 0,
        "{} of {} aborted",
        s.failures,
        s.requests
    );
    for key in ["match[0]`: port", "match[1]`: scheme"] {
        assert!(w.iter().any(|w| w.contains(key)), "{key} in {w:?}");
    }
}

#[test]
fn ignore_uri_case_applies_to_a_prefix_too() {
    let (m, _) = front_with_path(
        "/API/v1/items",
        &virtual_service(
            "front",
            r#"- match: [{uri: {prefix: /api/}, ignoreUriCase: true}]
  route: [{destination: {host: front}}]
"#,
        ),
    );
    assert!(
        served(&m, "front", "v1") > 200,
        "routed {}",
        served(&m, "front", "v1")
    );
}

#[test]
fn a_uri_match_ignores_the_query_string_as_envoy_does() {
    let (m, _) = front_with_path(
        "/productpage?u=normal",
        &virtual_service(
            "front",
            r#"- match: [{uri: {exact: /productpage}}]
  route: [{destination: {host: front}}]
"#,
        ),
    );
    // Envoy's `path` and `safe_regex` route matches compare the path without its query.
    assert!(
        served(&m, "front", "v1") > 200,
        "routed {}",
        served(&m, "front", "v1")
    );
}

#[test]
fn a_uri_regex_match_ignores_the_fragment() {
    let (m, _) = front_with_path(
        "/reviews/7#top",
        &virtual_service(
            "front",
            r#"- match: [{uri: {regex: "/reviews/[0-9]+"}}]
  route: [{destination: {host: front}}]
"#,
        ),
    );
    assert!(
        served(&m, "front", "v1") > 200,
        "routed {}",
        served(&m, "front", "v1")
    );
}

#[test]
fn a_direct_response_route_answers_from_the_proxy() {
    let (m, w) = front_with_path(
        "/",
        &virtual_service(
            "front",
            r#"- directResponse: {status: 200, body: {string: ok}}
"#,
        ),
    );
    let s = seen_by_user(&m);
    // Istio (1.21+): the sidecar answers 200 itself; no request reaches the pods.
    assert!(
        s.requests > 200 && s.failures == 0,
        "{} of {} failed",
        s.failures,
        s.requests
    );
    assert_eq!(served(&m, "front", "v1"), 0);
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn a_fault_on_a_direct_response_route_aborts_or_delays_the_proxys_answer() {
    // Istio sets a route's fault on a direct-response route as on any other, and Envoy's
    // fault filter runs before the router answers: half are aborted with 503 `FI`.
    let (m, w) = front_with_path(
        "/",
        &virtual_service(
            "front",
            r#"- directResponse: {status: 200}
  fault: {abort: {httpStatus: 503, percentage: {value: 50}}}
"#,
        ),
    );
    let s = seen_by_user(&m);
    assert!(s.requests > 250, "{} requests", s.requests);
    let share = s.failures as f64 / s.requests as f64;
    assert!((0.4..0.6).contains(&share), "{share:.3} aborted");
    assert_eq!(served(&m, "front", "v1"), 0);
    assert!(w.is_empty(), "{w:?}");
    // A delay holds the answer: every request answered 200 after 40 ms.
    let (m, _) = front_with_path(
        "/",
        &virtual_service(
            "front",
            r#"- directResponse: {status: 200}
  fault: {delay: {fixedDelay: 40ms, percentage: {value: 100}}}
"#,
        ),
    );
    let s = seen_by_user(&m);
    assert!(s.requests > 250 && s.failures == 0, "{s:?}");
    assert!((mean_ms(&s) - 40.0).abs() < 1.0, "{:.2} ms", mean_ms(&s));
    assert_eq!(served(&m, "front", "v1"), 0);
}

#[test]
fn a_redirect_route_does_not_reach_the_pods() {
    let (m, w) = front_with_path(
        "/old",
        &virtual_service(
            "front",
            r#"- match: [{uri: {prefix: /old}}]
  redirect: {uri: /new}
- route: [{destination: {host: front}}]
"#,
        ),
    );
    // Envoy answers 301 itself: nothing of /old reaches the pods, and nothing fails with a
    // 5xx.
    let s = seen_by_user(&m);
    assert!(
        s.requests > 200 && s.failures == 0,
        "{} of {} failed",
        s.failures,
        s.requests
    );
    assert_eq!(served(&m, "front", "v1"), 0);
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn a_delegate_route_is_refused_at_its_field_and_a_rewrite_warns() {
    let err = manifest::parse(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: front}\nspec:\n  hosts: [front]\n  http:\n    - delegate: {name: reviews}\n",
    )
    .expect_err("delegate is refused");
    assert!(err.to_string().contains("spec.http[0].delegate"), "{err}");
    let m = manifest::parse(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: front}\nspec:\n  hosts: [front]\n  http:\n    - rewrite: {uri: /v2}\n      route: [{destination: {host: front}}]\n",
    )
    .expect("rewrite is read");
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("spec.http[0].rewrite")),
        "{:?}",
        m.warnings
    );
}

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
