//! Routes, faults and pods: weighted splits, header matches, mirroring, injected faults,
//! crashed and scaled pods.

use fledge_simulator::engine::SECONDS;
use fledge_simulator::mesh::{
    Action, ClientConfig, HeaderProfile, Mesh, MeshConfig, ServiceConfig, VersionConfig, VersionId,
};
use fledge_simulator::telemetry::{Reporter, flags};

use crate::support::mesh::{behaviour, canary_mesh, count_flag, route, total};

#[test]
fn a_split_sends_the_canary_its_weight_and_header_matches_all_go_to_the_canary() {
    let cfg = MeshConfig {
        seed: 12,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![
                VersionConfig::new("primary", 4, behaviour(5, 8)),
                VersionConfig::new("canary", 2, behaviour(5, 8)),
            ],
        )],
        clients: vec![ClientConfig {
            headers: vec![
                HeaderProfile {
                    weight: 1.0,
                    headers: vec![("x-canary".into(), "insider".into())],
                },
                HeaderProfile {
                    weight: 9.0,
                    headers: vec![],
                },
            ],
            ..ClientConfig::new("client", "podinfo", 1000.0)
        }],
        ..Default::default()
    };
    let mut mesh = Mesh::new(cfg).unwrap();
    let s = mesh.service_id("podinfo").unwrap();
    let (p, c) = mesh.primary_canary(s).unwrap();
    route(&mut mesh, 80, 20, None, None);
    mesh.run_until(60 * SECONDS);
    let np = mesh.destination_stats(p, 0, 60 * SECONDS).requests as f64;
    let nc = mesh.destination_stats(c, 0, 60 * SECONDS).requests as f64;
    assert!((nc / (np + nc) - 0.2).abs() < 0.01);
    // A/B: only the header goes to the canary.
    route(&mut mesh, 100, 0, None, Some(("x-canary", "insider")));
    mesh.run_until(61 * SECONDS); // let in-flight requests finish
    mesh.run_until(121 * SECONDS);
    let np = mesh
        .destination_stats(p, 61 * SECONDS, 121 * SECONDS)
        .requests as f64;
    let nc = mesh
        .destination_stats(c, 61 * SECONDS, 121 * SECONDS)
        .requests as f64;
    assert!(
        (nc / (np + nc) - 0.1).abs() < 0.01,
        "header share {}",
        nc / (np + nc)
    );
}

#[test]
fn mirrored_requests_reach_the_canary_but_clients_only_see_the_primary() {
    let mut mesh = canary_mesh(13, 500.0, "");
    let s = mesh.service_id("podinfo").unwrap();
    let (p, c) = mesh.primary_canary(s).unwrap();
    mesh.apply(Action::SetErrorRate {
        version: c,
        rate: 1.0,
    })
    .unwrap();
    route(&mut mesh, 100, 0, Some(50), None);
    mesh.run_until(60 * SECONDS);
    let to_primary = mesh.destination_stats(p, 0, mesh.now()).requests as f64;
    let mirrored = mesh.destination_stats(c, 0, mesh.now());
    assert!((mirrored.requests as f64 / to_primary - 0.5).abs() < 0.03);
    assert_eq!(mirrored.failures, mirrored.requests);
    assert_eq!(
        total(&mesh, Reporter::Source).1,
        0,
        "mirror failures never reach clients"
    );
    let failures = mesh.client_failures_by_version(0, mesh.now());
    assert!(failures.iter().all(|(_, n)| *n == 0));
}

#[test]
fn injected_aborts_and_delays_follow_their_percentages() {
    let m = "kind: DestinationRule\nmetadata:\n  name: podinfo-subsets\nspec:\n  host: podinfo\n  subsets:\n    - {name: primary, labels: {version: primary}}\n    - {name: canary, labels: {version: canary}}\n---\nkind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - fault:\n        abort:\n          httpStatus: 503\n          percentage:\n            value: 10\n        delay:\n          fixedDelay: 2s\n          percentage:\n            value: 5\n      route:\n        - destination:\n            host: podinfo\n            subset: primary\n";
    let mut mesh = canary_mesh(14, 500.0, m);
    mesh.run_until(100 * SECONDS);
    let (requests, failures) = total(&mesh, Reporter::Source);
    let abort_share = failures as f64 / requests as f64;
    assert!(
        (abort_share - 0.1).abs() < 0.01,
        "abort share {abort_share}"
    );
    assert_eq!(count_flag(&mesh, flags::FI), failures);
    let delayed = count_flag(&mesh, flags::DI) as f64 / requests as f64;
    assert!((delayed - 0.045).abs() < 0.01, "delayed share {delayed}");
}

#[test]
fn a_crashed_pod_fails_in_flight_requests_and_recovers_after_restart() {
    let none = "kind: DestinationRule\nmetadata:\n  name: podinfo-subsets\nspec:\n  host: podinfo\n  subsets:\n    - {name: primary, labels: {version: primary}}\n    - {name: canary, labels: {version: canary}}\n---\nkind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n            subset: primary\n      retries:\n        attempts: 0\n";
    let mut mesh = canary_mesh(16, 500.0, none);
    let v = mesh.version_id("podinfo", "primary").unwrap();
    mesh.schedule(
        10 * SECONDS,
        Action::CrashPod {
            version: v,
            pod: 0,
            restart_after: Some(5 * SECONDS),
        },
    )
    .unwrap();
    mesh.run_until(30 * SECONDS);
    let during = mesh.source_stats(v, 10 * SECONDS, 16 * SECONDS).failures;
    assert!(during > 0, "some requests fail while the pod is down");
    assert_eq!(mesh.source_stats(v, 0, 10 * SECONDS).failures, 0);
    assert_eq!(mesh.source_stats(v, 20 * SECONDS, 30 * SECONDS).failures, 0);
    assert_eq!(mesh.ready_pods(v), 4);
}

#[test]
fn scaling_adds_and_removes_pods() {
    let mut mesh = canary_mesh(17, 200.0, "");
    let c = mesh.version_id("podinfo", "canary").unwrap();
    mesh.apply(Action::Scale {
        version: c,
        pods: 5,
    })
    .unwrap();
    assert_eq!(mesh.ready_pods(c), 5);
    mesh.run_until(10 * SECONDS);
    route(&mut mesh, 50, 50, None, None);
    mesh.apply(Action::Scale {
        version: c,
        pods: 0,
    })
    .unwrap();
    mesh.run_until(20 * SECONDS);
    assert_eq!(mesh.ready_pods(c), 0);
    // A route that still sends half the traffic to a version without pods: no healthy upstream.
    assert!(count_flag(&mesh, flags::UH) > 0);
}

#[test]
fn without_a_route_traffic_follows_pod_counts_as_versions_scale() {
    let mut mesh = canary_mesh(32, 500.0, "");
    let (p, c) = (VersionId(0), VersionId(1));
    mesh.apply(Action::Scale {
        version: c,
        pods: 4,
    })
    .unwrap();
    mesh.run_until(60 * SECONDS);
    let np = mesh
        .destination_stats(p, 10 * SECONDS, 60 * SECONDS)
        .requests as f64;
    let nc = mesh
        .destination_stats(c, 10 * SECONDS, 60 * SECONDS)
        .requests as f64;
    assert!(
        (nc / (np + nc) - 0.5).abs() < 0.03,
        "canary share {}",
        nc / (np + nc)
    );
}
