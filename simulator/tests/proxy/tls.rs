//! Mutual TLS: handshakes per connection, PeerAuthentication modes, certificate rotation and
//! expiry.

use fledge_simulator::engine::{MILLIS, SECONDS};
use fledge_simulator::manifest;
use fledge_simulator::mesh::{
    Action, CertConfig, ClientConfig, Mesh, MeshConfig, ServiceConfig, VersionConfig, VersionId,
    Workload,
};
use fledge_simulator::telemetry::{Reporter, flags};

use crate::support::mesh::{STRICT, behaviour, canary_mesh, count_flag, total};

#[test]
fn handshakes_equal_connections_opened_with_mutual_tls() {
    let m = format!(
        "{STRICT}---\nkind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n    connectionPool:\n      http:\n        maxRequestsPerConnection: 10\n"
    );
    let mut mesh = canary_mesh(6, 300.0, &m);
    mesh.run_until(60 * SECONDS);
    let c = mesh.client_id("client").unwrap();
    let mut opened = 0;
    for v in [VersionId(0), VersionId(1)] {
        let p = mesh.proxy_counters(c, v);
        assert_eq!(p.handshakes, p.connections_opened);
        assert_eq!(p.handshake_failures, 0);
        opened += p.connections_opened;
    }
    // Ten requests per connection: about a tenth as many connections as requests.
    let (requests, failures) = total(&mesh, Reporter::Source);
    assert_eq!(failures, 0);
    assert!(
        opened * 10 >= requests && opened * 8 < requests,
        "{opened} connections for {requests} requests"
    );
}

#[test]
fn reused_connections_pay_no_handshake_and_new_ones_pay_tls_round_trips() {
    let slow_net = |tls: &str| {
        let cfg = MeshConfig {
            services: vec![ServiceConfig::new(
                "podinfo",
                vec![VersionConfig::new("primary", 1, behaviour(1, 64))],
            )],
            clients: vec![ClientConfig::new("client", "podinfo", 50.0)],
            network: fledge_simulator::mesh::NetworkConfig {
                one_way: 5 * MILLIS,
                sidecar_latency: 0,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut mesh = Mesh::new(cfg).unwrap();
        let m = format!(
            "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    tls:\n      mode: {tls}\n    connectionPool:\n      http:\n        maxRequestsPerConnection: 1\n"
        );
        mesh.apply_manifests(&manifest::parse(&m).unwrap()).unwrap();
        mesh.run_until(60 * SECONDS);
        mesh.source_stats(VersionId(0), 0, mesh.now())
            .mean_ms()
            .unwrap()
    };
    let mtls = slow_net("ISTIO_MUTUAL");
    let plain = slow_net("DISABLE");
    // A fresh connection per request: mTLS adds one 10 ms round trip and 0.6 ms of CPU.
    let extra = mtls - plain;
    assert!((extra - 10.6).abs() < 0.5, "mTLS adds {extra} ms");
}

#[test]
fn a_plaintext_client_against_strict_fails_every_request_with_uc() {
    let m = format!(
        "{STRICT}---\nkind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    tls:\n      mode: DISABLE\n"
    );
    let mut mesh = canary_mesh(7, 100.0, &m);
    mesh.run_until(30 * SECONDS);
    let (requests, failures) = total(&mesh, Reporter::Source);
    assert!(requests > 2000);
    assert_eq!(failures, requests);
    assert_eq!(count_flag(&mesh, flags::UC), requests);
    assert_eq!(
        total(&mesh, Reporter::Destination).0,
        0,
        "nothing reaches a pod"
    );
}

#[test]
fn workload_peer_authentication_overrides_namespace_and_mesh() {
    let m = format!(
        "{STRICT}---\nkind: PeerAuthentication\nmetadata:\n  name: canary-open\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      version: canary\n  mtls:\n    mode: PERMISSIVE\n---\nkind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    tls:\n      mode: DISABLE\n"
    );
    let mut mesh = canary_mesh(8, 100.0, &m);
    mesh.run_until(30 * SECONDS);
    assert_eq!(
        mesh.source_stats(VersionId(1), 0, mesh.now()).failures,
        0,
        "PERMISSIVE canary accepts plaintext"
    );
    let primary = mesh.source_stats(VersionId(0), 0, mesh.now());
    assert_eq!(
        primary.failures, primary.requests,
        "STRICT primary rejects it"
    );
}

fn rotating_mesh(seed: u64) -> Mesh {
    let cfg = MeshConfig {
        seed,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![VersionConfig::new("primary", 3, behaviour(5, 8))],
        )],
        clients: vec![ClientConfig::new("client", "podinfo", 200.0)],
        certs: CertConfig {
            ttl: 60 * SECONDS,
            grace_ratio: 0.5,
            jitter: 0.01,
        },
        ..Default::default()
    };
    let mut mesh = Mesh::new(cfg).unwrap();
    let m = format!(
        "{STRICT}---\nkind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    connectionPool:\n      http:\n        maxRequestsPerConnection: 5\n"
    );
    mesh.apply_manifests(&manifest::parse(&m).unwrap()).unwrap();
    mesh
}

#[test]
fn certificate_rotation_causes_no_failed_request() {
    let mut mesh = rotating_mesh(9);
    mesh.run_until(600 * SECONDS);
    assert!(
        mesh.stats().cert_rotations >= 30,
        "rotations {}",
        mesh.stats().cert_rotations
    );
    let (requests, failures) = total(&mesh, Reporter::Source);
    assert!(requests > 100_000);
    assert_eq!(failures, 0);
}

#[test]
fn an_expired_certificate_fails_new_handshakes() {
    let mut mesh = rotating_mesh(10);
    let v = mesh.version_id("podinfo", "primary").unwrap();
    mesh.apply(Action::CertRotation {
        workload: Workload::Version(v),
        enabled: false,
    })
    .unwrap();
    mesh.run_until(59 * SECONDS);
    assert_eq!(total(&mesh, Reporter::Source).1, 0, "valid until the TTL");
    mesh.run_until(120 * SECONDS);
    let after = mesh.source_stats(v, 62 * SECONDS, 120 * SECONDS);
    assert!(after.requests > 0);
    // Idle connections opened before the expiry keep serving their few remaining requests
    // (Envoy does not close them); everything else needs a handshake and fails.
    let failed = after.failures as f64 / after.requests as f64;
    assert!(failed > 0.99, "failed share {failed}");
    let c = mesh.client_id("client").unwrap();
    assert!(mesh.proxy_counters(c, v).handshake_failures > 0);
    assert!(count_flag(&mesh, flags::UF) > 0);
}
