//! Requests carry a method and a path (the pseudo-headers `:method` and `:path`, `GET /` unless
//! set), so VirtualService `uri` and `method` matches route them, and a call sets its own.

mod support;

use fledge_simulator::engine::SECONDS;
use fledge_simulator::mesh::*;
use support::mesh::{apply, call_of, client_with, one_version, seen, v1_and_v2};
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
