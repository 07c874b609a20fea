//! Load balancing: Envoy's ROUND_ROBIN, RANDOM and LEAST_REQUEST, Linkerd's peak-EWMA and failure
//! accrual, and Envoy's panic threshold when outlier detection ejects every host.

use fledge_simulator::engine::SECONDS;
use fledge_simulator::manifest;
use fledge_simulator::mesh::{
    Action, ClientConfig, Mesh, MeshConfig, ServiceConfig, VersionConfig, VersionId,
};
use fledge_simulator::telemetry::flags;

use crate::support::mesh::{behaviour, canary_mesh, count_flag};

fn balanced(lb: &str, seed: u64) -> Vec<u64> {
    let cfg = MeshConfig {
        seed,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![VersionConfig::new("primary", 4, behaviour(20, 4))],
        )],
        clients: vec![ClientConfig::new("client", "podinfo", 200.0)],
        ..Default::default()
    };
    let mut mesh = Mesh::new(cfg).unwrap();
    let m = format!(
        "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    loadBalancer:\n      simple: {lb}\n"
    );
    mesh.apply_manifests(&manifest::parse(&m).unwrap()).unwrap();
    let v = VersionId(0);
    mesh.apply(Action::SetPodSlowdown {
        version: v,
        pod: 0,
        factor: 3.0,
    })
    .unwrap();
    mesh.run_until(120 * SECONDS);
    mesh.pod_requests(v)
}

#[test]
fn round_robin_spreads_evenly_and_least_request_steers_away_from_a_slow_pod() {
    let rr = balanced("ROUND_ROBIN", 30);
    let total: u64 = rr.iter().sum();
    assert!(
        rr.iter()
            .all(|&n| (n as f64 / total as f64 - 0.25).abs() < 0.01),
        "{rr:?}"
    );
    let random = balanced("RANDOM", 30);
    let least = balanced("LEAST_REQUEST", 30);
    let share = |v: &[u64]| v[0] as f64 / v.iter().sum::<u64>() as f64;
    assert!((share(&random) - 0.25).abs() < 0.02, "random {random:?}");
    assert!(
        share(&least) < 0.2,
        "least request gives the slow pod {}",
        share(&least)
    );
}

#[test]
fn linkerd_peak_ewma_steers_away_from_a_slow_pod_and_accrual_removes_a_failing_one() {
    let cfg = MeshConfig {
        seed: 31,
        data_plane: fledge_simulator::mesh::DataPlane::Linkerd,
        services: vec![ServiceConfig {
            failure_accrual: Some(fledge_simulator::mesh::AccrualConfig::default()),
            ..ServiceConfig::new(
                "podinfo",
                vec![VersionConfig::new("primary", 4, behaviour(20, 4))],
            )
        }],
        clients: vec![ClientConfig::new("client", "podinfo", 400.0)],
        ..Default::default()
    };
    let mut mesh = Mesh::new(cfg).unwrap();
    let v = VersionId(0);
    mesh.apply(Action::SetPodSlowdown {
        version: v,
        pod: 0,
        factor: 4.0,
    })
    .unwrap();
    mesh.apply(Action::SetPodErrorRate {
        version: v,
        pod: 1,
        rate: Some(1.0),
    })
    .unwrap();
    mesh.run_until(120 * SECONDS);
    let served = mesh.pod_requests(v);
    let total: u64 = served.iter().sum();
    assert!(
        (served[0] as f64 / total as f64) < 0.2,
        "slow pod share {served:?}"
    );
    // The failing pod only sees its 7 failures per penalty and then single probes.
    assert!(
        (served[1] as f64 / total as f64) < 0.05,
        "failing pod share {served:?}"
    );
}

fn all_bad(min_health: Option<u32>) -> (u64, u64) {
    let extra = min_health.map_or(String::new(), |p| format!("      minHealthPercent: {p}\n"));
    let m = format!(
        "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  subsets:\n    - {{name: primary, labels: {{version: primary}}}}\n    - {{name: canary, labels: {{version: canary}}}}\n  trafficPolicy:\n    outlierDetection:\n      consecutive5xxErrors: 5\n      maxEjectionPercent: 100\n{extra}---\nkind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - {{destination: {{host: podinfo, subset: primary}}, weight: 50}}\n        - {{destination: {{host: podinfo, subset: canary}}, weight: 50}}\n"
    );
    // The canary's own subset cluster: all its hosts can be ejected (over the whole service,
    // the primary's pods would stay healthy).
    let mut mesh = canary_mesh(36, 200.0, &m);
    let c = mesh.version_id("podinfo", "canary").unwrap();
    mesh.apply(Action::SetErrorRate {
        version: c,
        rate: 1.0,
    })
    .unwrap();
    mesh.run_until(20 * SECONDS);
    (
        count_flag(&mesh, flags::UH),
        mesh.destination_stats(c, 5 * SECONDS, 20 * SECONDS)
            .requests,
    )
}

#[test]
fn with_istios_panic_threshold_off_ejecting_every_host_leaves_no_healthy_upstream() {
    let (no_healthy, reached) = all_bad(None);
    assert!(no_healthy > 0);
    assert_eq!(reached, 0, "ejected hosts get nothing");
    // With minHealthPercent set, Envoy panics and balances over all hosts again.
    let (no_healthy, reached) = all_bad(Some(50));
    assert_eq!(no_healthy, 0);
    assert!(reached > 0);
}
