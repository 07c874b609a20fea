//! Requests carry a method and a path (the pseudo-headers `:method` and `:path`, `GET /` unless
//! set), so VirtualService `uri` and `method` matches route them, and a call sets its own; uri
//! matches read as Envoy reads them (case, query string, fragment), matches the sidecars do not
//! take (gateways, source namespace, port, scheme), and routes answered by the proxy itself
//! (direct response, redirect). (Partly from review r20b.)

mod support;

use fledge_simulator::engine::SECONDS;
use fledge_simulator::manifest;
use fledge_simulator::mesh::*;
use support::mesh::{
    applied, apply, call_of, client_with, constant, mean_ms, one_version, seen, served, v1_and_v2,
};
use support::scenario::{subsets, virtual_service};

fn client(name: &str, method: &str, path: &str) -> ClientConfig {
    client_with(
        name,
        "backend",
        100.0,
        &[(":method", method), (":path", path)],
    )
}

#[test]
fn virtualservice_uri_and_method_matches_route_requests_by_path_and_method() {
    let cfg = MeshConfig {
        seed: 2,
        services: vec![v1_and_v2("backend", 2, Behaviour::default())],
        clients: vec![
            client("reads", "GET", "/reviews/1"),
            client("writes", "POST", "/reviews/1"),
            client("health", "GET", "/health"),
        ],
        ..Default::default()
    };
    let mut mesh = Mesh::new(cfg).expect("a mesh");
    apply(&mut mesh, &subsets("backend", &["v1", "v2"]));
    apply(
        &mut mesh,
        &virtual_service(
            "backend",
            r#"- match: [{uri: {prefix: /reviews}, method: {exact: POST}}]
  route: [{destination: {host: backend, subset: v2}}]
- match: [{uri: {regex: "/reviews/[0-9]+"}}]
  route: [{destination: {host: backend, subset: v1}}]
"#,
        ),
    );
    mesh.run_until(20 * SECONDS);
    assert!(seen(&mesh, "writes", Some(("backend", "v2"))).requests > 1_500);
    assert_eq!(seen(&mesh, "writes", Some(("backend", "v1"))).requests, 0);
    assert!(seen(&mesh, "reads", Some(("backend", "v1"))).requests > 1_500);
    assert_eq!(seen(&mesh, "reads", Some(("backend", "v2"))).requests, 0);
    // No route takes `/health`: 404 NR, answered by the client's proxy.
    let health = seen(&mesh, "health", None);
    assert!(health.requests > 1_500);
    assert_eq!(health.failures, 0, "a 404 is no server error");
    assert_eq!(
        mesh.destination_stats(VersionId(0), 0, mesh.now()).requests
            + mesh.destination_stats(VersionId(1), 0, mesh.now()).requests,
        seen(&mesh, "reads", Some(("backend", "v1"))).requests
            + seen(&mesh, "writes", Some(("backend", "v2"))).requests
    );
}

#[test]
fn a_call_sets_its_own_path_and_a_path_no_route_takes_fails_the_caller() {
    let calls = |path: &str| Behaviour {
        calls: vec![vec![call_of("backend", false, Some(path))]],
        ..Behaviour::default()
    };
    let cfg = MeshConfig {
        seed: 4,
        services: vec![
            ServiceConfig::new(
                "frontend",
                vec![
                    VersionConfig::new("good", 2, calls("/ratings/1")),
                    VersionConfig::new("bad", 2, calls("/rating/1")),
                ],
            ),
            one_version("backend", 2, Behaviour::default()),
        ],
        clients: vec![ClientConfig::new("user", "frontend", 200.0)],
        ..Default::default()
    };
    let mut mesh = Mesh::new(cfg).expect("a mesh");
    apply(
        &mut mesh,
        &virtual_service(
            "backend",
            "- match: [{uri: {prefix: /ratings/}}]\n  route: [{destination: {host: backend}}]\n",
        ),
    );
    mesh.run_until(20 * SECONDS);
    let good = seen(&mesh, "user", Some(("frontend", "good")));
    let bad = seen(&mesh, "user", Some(("frontend", "bad")));
    assert!(good.requests > 1_500 && bad.requests > 1_500);
    assert_eq!(good.failures, 0);
    assert_eq!(
        bad.failures, bad.requests,
        "the bad path's 404 fails every request of `bad`"
    );
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

/// `ignoreUriCase: true` makes an `exact` uri match case-insensitive, as Envoy's `ignore_case`.
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

/// A match block naming only gateways (`gateways: [...]` without `mesh`) does not apply to the
/// sidecars, so it routes none of a sidecar client's requests.
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
    let s = seen(&m, "user", None);
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

/// A `sourceNamespace` match is not taken for every request: the client is not in that
/// namespace, so its requests are not aborted, and the match is warned about.
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
    let s = seen(&m, "user", None);
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

/// `port` and `scheme` matches, not modelled, are warned about and match no request.
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
    let s = seen(&m, "user", None);
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

/// `ignoreUriCase` applies to a `prefix` uri match too.
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

/// A uri match is against the path without its query string, as Envoy matches.
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

/// A uri `regex` match is against the path without its fragment.
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

/// A `directResponse` route is answered by the client's proxy: no pod serves it.
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
    let s = seen(&m, "user", None);
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

/// A fault on a `directResponse` route aborts or delays the proxy's own answer.
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
    let s = seen(&m, "user", None);
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
    let s = seen(&m, "user", None);
    assert!(s.requests > 250 && s.failures == 0, "{s:?}");
    assert!((mean_ms(&s) - 40.0).abs() < 1.0, "{:.2} ms", mean_ms(&s));
    assert_eq!(served(&m, "front", "v1"), 0);
}

/// A `redirect` route is answered by the proxy and does not reach the pods.
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
    let s = seen(&m, "user", None);
    assert!(
        s.requests > 200 && s.failures == 0,
        "{} of {} failed",
        s.failures,
        s.requests
    );
    assert_eq!(served(&m, "front", "v1"), 0);
    assert!(w.is_empty(), "{w:?}");
}

/// A `delegate` route (not modelled) is refused at its field; a `rewrite` is warned about.
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
