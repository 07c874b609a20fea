//! Telemetry and the mesh as a library: Prometheus text, windows read from scrapes, determinism
//! by seed, errors for bad input, and a mesh that can move between threads.

use fledge_simulator::engine::SECONDS;
use fledge_simulator::mesh::{
    Action, Behaviour, ClientConfig, Mesh, MeshConfig, ServiceConfig, VersionConfig, VersionId,
};

use crate::support::mesh::{STRICT, canary_mesh};

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let mut mesh = canary_mesh(18, 10.0, "");
    assert!(
        mesh.apply(Action::SetErrorRate {
            version: VersionId(99),
            rate: 0.1
        })
        .is_err()
    );
    assert!(
        mesh.apply(Action::SetErrorRate {
            version: VersionId(0),
            rate: 1.5
        })
        .is_err()
    );
    assert!(
        mesh.apply(Action::CrashPod {
            version: VersionId(0),
            pod: 42,
            restart_after: None
        })
        .is_err()
    );
    assert!(
        mesh.apply(Action::Scale {
            version: VersionId(0),
            pods: u32::MAX
        })
        .is_err()
    );
    let c = mesh.client_id("client").unwrap();
    assert!(
        mesh.apply(Action::SetRate {
            client: c,
            rps: 1e15
        })
        .is_err()
    );
    assert!(
        mesh.apply(Action::SetRate {
            client: c,
            rps: f64::NAN
        })
        .is_err()
    );
    let bad = MeshConfig {
        services: vec![ServiceConfig::new(
            "x",
            vec![VersionConfig::new(
                "v",
                1,
                Behaviour {
                    workers: 0,
                    ..Default::default()
                },
            )],
        )],
        ..Default::default()
    };
    assert!(Mesh::new(bad).is_err());
    let unknown = MeshConfig {
        clients: vec![ClientConfig::new("c", "nowhere", 1.0)],
        ..Default::default()
    };
    assert!(Mesh::new(unknown).is_err());
}

fn fingerprint(seed: u64) -> (u64, u64) {
    let m = format!(
        "{STRICT}---\nkind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    outlierDetection:\n      consecutive5xxErrors: 3\n      maxEjectionPercent: 50\n"
    );
    let mut mesh = canary_mesh(seed, 800.0, &m);
    mesh.apply(Action::SetErrorRate {
        version: VersionId(1),
        rate: 0.05,
    })
    .unwrap();
    mesh.schedule(
        20 * SECONDS,
        Action::CrashPod {
            version: VersionId(0),
            pod: 1,
            restart_after: Some(3 * SECONDS),
        },
    )
    .unwrap();
    mesh.run_until(60 * SECONDS);
    (mesh.telemetry().fingerprint(), mesh.stats().events)
}

#[test]
fn the_same_seed_gives_identical_telemetry_and_different_seeds_differ() {
    assert_eq!(fingerprint(21), fingerprint(21));
    assert_ne!(fingerprint(21).0, fingerprint(22).0);
}

#[test]
fn prometheus_text_uses_istio_names_and_labels() {
    let mut mesh = canary_mesh(19, 50.0, "");
    mesh.run_until(10 * SECONDS);
    let text = mesh.render_prometheus();
    assert!(
        text.contains("istio_requests_total{reporter=\"destination\",source_workload=\"client\"")
    );
    assert!(text.contains("destination_workload=\"podinfo-canary\""));
    assert!(text.contains("istio_request_duration_milliseconds_bucket{"));
    assert!(text.contains("le=\"3600000\""));
    assert!(text.contains("envoy_cluster_upstream_cx_total"));
}

#[test]
fn windows_read_from_scrapes_add_up_to_the_total() {
    let mut mesh = canary_mesh(20, 300.0, "");
    mesh.run_until(120 * SECONDS);
    let v = VersionId(0);
    let a = mesh.destination_stats(v, 0, 60 * SECONDS).requests;
    let b = mesh
        .destination_stats(v, 60 * SECONDS, 120 * SECONDS)
        .requests;
    assert_eq!(a + b, mesh.destination_stats(v, 0, 120 * SECONDS).requests);
    assert!(a > 0 && b > 0);
}

#[test]
fn a_mesh_can_move_to_another_thread_for_parallel_sweeps() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Mesh>();
}
