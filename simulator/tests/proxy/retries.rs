//! Retries and timeouts: Istio's and Linkerd's retry policies, route and per-try timeouts.

use fledge_simulator::engine::{MILLIS, SECONDS};
use fledge_simulator::manifest;
use fledge_simulator::mesh::{
    Action, ClientConfig, Mesh, MeshConfig, ServiceConfig, ServiceTime, VersionConfig, VersionId,
};
use fledge_simulator::telemetry::flags;

use crate::support::mesh::{behaviour, canary_mesh, count_flag};

#[test]
fn retries_turn_transient_errors_into_successes_and_attempts_are_bounded() {
    let m = "kind: DestinationRule\nmetadata:\n  name: podinfo-subsets\nspec:\n  host: podinfo\n  subsets:\n    - {name: primary, labels: {version: primary}}\n    - {name: canary, labels: {version: canary}}\n---\nkind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n            subset: primary\n      retries:\n        attempts: 2\n        retryOn: 5xx\n";
    let mut mesh = canary_mesh(4, 200.0, m);
    let v = mesh.version_id("podinfo", "primary").unwrap();
    mesh.apply(Action::SetErrorRate {
        version: v,
        rate: 0.1,
    })
    .unwrap();
    mesh.run_until(120 * SECONDS);
    let client = mesh.source_stats(v, 0, mesh.now());
    let server = mesh.destination_stats(v, 0, mesh.now());
    // 10% per try, 3 tries: about 0.1% of requests fail end to end.
    let fail_rate = client.failures as f64 / client.requests as f64;
    assert!(fail_rate < 0.004, "client failure rate {fail_rate}");
    assert!(server.requests <= 3 * client.requests);
    assert!(server.failures as f64 / server.requests as f64 > 0.08);
}

#[test]
fn istio_default_retries_do_not_retry_a_500() {
    let mut mesh = canary_mesh(5, 200.0, "");
    let v = mesh.version_id("podinfo", "primary").unwrap();
    mesh.apply(Action::SetErrorRate {
        version: v,
        rate: 0.2,
    })
    .unwrap();
    mesh.run_until(60 * SECONDS);
    let client = mesh.source_stats(v, 0, mesh.now());
    let server = mesh.destination_stats(v, 0, mesh.now());
    assert_eq!(client.requests, server.requests);
    assert_eq!(client.failures, server.failures);
}

#[test]
fn a_route_timeout_ends_slow_requests_with_504_ut() {
    let m = "kind: DestinationRule\nmetadata:\n  name: podinfo-subsets\nspec:\n  host: podinfo\n  subsets:\n    - {name: primary, labels: {version: primary}}\n    - {name: canary, labels: {version: canary}}\n---\nkind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n            subset: primary\n      timeout: 100ms\n";
    let mut mesh = canary_mesh(15, 100.0, m);
    let v = mesh.version_id("podinfo", "primary").unwrap();
    mesh.apply(Action::SetServiceTime {
        version: v,
        service_time: ServiceTime::Mixture(vec![
            (0.9, ServiceTime::Constant(10 * MILLIS)),
            (0.1, ServiceTime::Constant(500 * MILLIS)),
        ]),
    })
    .unwrap();
    mesh.run_until(100 * SECONDS);
    let w = mesh.source_stats(v, 0, mesh.now());
    let timeouts = count_flag(&mesh, flags::UT) as f64 / w.requests as f64;
    assert!((timeouts - 0.1).abs() < 0.02, "timeout share {timeouts}");
    assert!(
        w.quantile_ms(0.999).unwrap() <= 250.0,
        "nothing waits past the timeout"
    );
}

#[test]
fn linkerd_retries_stay_within_the_service_profile_budget() {
    let cfg = MeshConfig {
        seed: 33,
        data_plane: fledge_simulator::mesh::DataPlane::Linkerd,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![VersionConfig::new("primary", 4, behaviour(5, 8))],
        )],
        clients: vec![ClientConfig::new("client", "podinfo", 500.0)],
        ..Default::default()
    };
    let mut mesh = Mesh::new(cfg).unwrap();
    let sp = "apiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\nmetadata:\n  name: podinfo.default.svc.cluster.local\nspec:\n  routes:\n    - name: all\n      condition:\n        pathRegex: /.*\n      isRetryable: true\n  retryBudget:\n    retryRatio: 0.2\n    minRetriesPerSecond: 10\n    ttl: 10s\n";
    let w = mesh.apply_manifests(&manifest::parse(sp).unwrap()).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let v = VersionId(0);
    mesh.apply(Action::SetErrorRate {
        version: v,
        rate: 0.5,
    })
    .unwrap();
    mesh.run_until(100 * SECONDS);
    let c = mesh.client_id("client").unwrap();
    let retries = mesh.proxy_counters(c, v).retries as f64;
    let requests = mesh.stats().requests as f64;
    // 20% of requests plus 10/s over each ttl window, windows overlapping by at most one ttl.
    assert!(
        retries <= 0.2 * requests * 2.0 + 10.0 * 100.0,
        "{retries} retries for {requests}"
    );
    // linkerd2-proxy credits only results it does not retry: about half the requests succeed
    // at once, each worth 0.2 of a retry.
    assert!(
        retries >= 0.2 * 0.5 * requests * 0.9,
        "the budget is used: {retries} for {requests}"
    );
    assert!(mesh.proxy_counters(c, v).retry_overflow > 0);
}

#[test]
fn a_black_holed_pod_times_out_and_retries_move_requests_to_healthy_pods() {
    let m = "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  subsets:\n    - {name: primary, labels: {version: primary}}\n    - {name: canary, labels: {version: canary}}\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        connectTimeout: 1s\n---\nkind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n            subset: primary\n      timeout: 3s\n      retries:\n        attempts: 3\n        perTryTimeout: 500ms\n        retryOn: 5xx,connect-failure,reset\n";
    let mut mesh = canary_mesh(34, 200.0, m);
    let v = mesh.version_id("podinfo", "primary").unwrap();
    mesh.run_until(10 * SECONDS);
    mesh.apply(Action::BlackHole {
        version: v,
        pod: 2,
        on: true,
    })
    .unwrap();
    // Requests already at the pod finish; nothing new is answered after that.
    mesh.run_until(11 * SECONDS);
    let answered = mesh.pod_requests(v)[2];
    mesh.run_until(70 * SECONDS);
    let w = mesh.source_stats(v, 10 * SECONDS, 70 * SECONDS);
    // Every request that met the black hole timed out after 500 ms and was retried elsewhere.
    assert!(
        count_flag(&mesh, flags::UT) == 0,
        "no request ran out of retries"
    );
    assert_eq!(w.failures, 0);
    let c = mesh.client_id("client").unwrap();
    assert!(mesh.proxy_counters(c, v).timeouts > 0);
    assert!(
        w.quantile_ms(0.999).unwrap() > 400.0,
        "the timed-out tries show in the tail"
    );
    assert_eq!(
        mesh.pod_requests(v)[2],
        answered,
        "pod 2 answers nothing new"
    );
}

#[test]
fn a_retry_prefers_a_host_not_tried_before() {
    let m = "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  subsets:\n    - {name: primary, labels: {version: primary}}\n    - {name: canary, labels: {version: canary}}\n  trafficPolicy:\n    loadBalancer:\n      simple: RANDOM\n---\nkind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n            subset: canary\n      retries:\n        attempts: 1\n        retryOn: 5xx\n";
    let mut mesh = canary_mesh(35, 300.0, m);
    let c = mesh.version_id("podinfo", "canary").unwrap();
    mesh.apply(Action::SetPodErrorRate {
        version: c,
        pod: 0,
        rate: Some(1.0),
    })
    .unwrap();
    mesh.run_until(60 * SECONDS);
    let w = mesh.source_stats(c, 0, mesh.now());
    // Half the requests first hit the bad pod; the retry re-picks up to five times to avoid it,
    // so about 0.5 * 2^-5 fail (a retry to the same host would make that 25%).
    let failed = w.failures as f64 / w.requests as f64;
    assert!(failed < 0.03, "failed share {failed}");
}
