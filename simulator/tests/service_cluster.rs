//! A destination without a subset, or no VirtualService at all, is one Envoy cluster over every
//! pod the Service selects: Istio builds `outbound|port||host` with all the Service's endpoints
//! (`pilot/pkg/networking/core/cluster_builder.go`, subset clusters only for DestinationRule
//! subsets), so one balancer and one outlier detector see every pod, whatever its version.

use fledge_simulator::engine::{MILLIS, SECONDS};
use fledge_simulator::manifest;
use fledge_simulator::mesh::{
    Action, Behaviour, ClientConfig, Mesh, MeshConfig, ServiceConfig, ServiceTime, VersionConfig,
};

/// 9 primary pods and 1 canary pod (a pod-ratio canary) behind `podinfo`, with outlier detection
/// at Istio's default 10% and `routes` applied.
fn pod_ratio_mesh(routes: &str) -> Mesh {
    let b = Behaviour {
        service_time: ServiceTime::Exponential { mean: 5 * MILLIS },
        workers: 8,
        ..Behaviour::default()
    };
    let cfg = MeshConfig {
        seed: 3,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![
                VersionConfig::new("primary", 9, b.clone()),
                VersionConfig::new("canary", 1, b),
            ],
        )],
        clients: vec![ClientConfig::new("client", "podinfo", 200.0)],
        ..Default::default()
    };
    let mut mesh = Mesh::new(cfg).expect("mesh builds");
    let dr = "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    outlierDetection:\n      consecutive5xxErrors: 5\n      interval: 10s\n      baseEjectionTime: 60s\n";
    let all = format!("{dr}{routes}");
    mesh.apply_manifests(&manifest::parse(&all).expect("manifests parse"))
        .expect("manifests apply");
    mesh
}

#[test]
fn a_route_without_a_subset_balances_and_ejects_over_every_pod_of_the_service() {
    let vs_no_subset = "---\nkind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n";
    let vs_subsets = "---\nkind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - {destination: {host: podinfo, subset: primary}, weight: 90}\n        - {destination: {host: podinfo, subset: canary}, weight: 10}\n";
    // (routes, canary pod ejected): over 10 hosts one ejection fits 10% (100 <= 10 * 10); the
    // canary's own subset cluster has 1 host, where none does (100 > 10 * 1).
    let cases = [
        ("no VirtualService", "", true),
        ("a route to the host without a subset", vs_no_subset, true),
        ("subset routes", vs_subsets, false),
    ];
    for (what, routes, ejected) in cases {
        let mut mesh = pod_ratio_mesh(routes);
        let client = mesh.client_id("client").unwrap();
        let canary = mesh.version_id("podinfo", "canary").unwrap();
        mesh.apply(Action::SetErrorRate {
            version: canary,
            rate: 1.0,
        })
        .unwrap();
        mesh.run_until(30 * SECONDS);
        assert_eq!(
            mesh.ejected_hosts(client, canary),
            u32::from(ejected),
            "{what}: canary pod ejected"
        );
        if ejected {
            // Ejected, the canary pod gets nothing more: the balancer has the primary's pods.
            let late = mesh.destination_stats(canary, 15 * SECONDS, 30 * SECONDS);
            assert_eq!(late.requests, 0, "{what}: requests to the ejected pod");
        }
    }
}

#[test]
fn without_a_subset_each_pod_takes_its_share_of_the_requests() {
    let mut mesh = pod_ratio_mesh("");
    mesh.run_until(60 * SECONDS);
    let primary = mesh.version_id("podinfo", "primary").unwrap();
    let canary = mesh.version_id("podinfo", "canary").unwrap();
    let (p, c) = (
        mesh.destination_stats(primary, 0, 60 * SECONDS).requests as f64,
        mesh.destination_stats(canary, 0, 60 * SECONDS).requests as f64,
    );
    let share = c / (p + c);
    // One pod in ten, balanced by least request over all ten.
    assert!((0.07..0.13).contains(&share), "canary share {share}");
    // The source reporter labels each response with the version of the pod that answered.
    let src = mesh.source_stats(canary, 0, 60 * SECONDS).requests as f64;
    assert!((src - c).abs() <= 5.0, "source {src} vs destination {c}");
}
