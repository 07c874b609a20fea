//! Client-side proxy behaviour: connection pools, retries, mTLS, routing, faults, determinism.

use fledge_simulator::engine::{MILLIS, SECONDS};
use fledge_simulator::manifest;
use fledge_simulator::mesh::{
    Action, Behaviour, CertConfig, ClientConfig, HeaderProfile, Mesh, MeshConfig, ServiceConfig,
    ServiceTime, VersionConfig, VersionId, Workload,
};
mod support;

use fledge_simulator::telemetry::{Reporter, Selector, flags};
use support::mesh::{behaviour, count_flags, mesh_with};

/// Routes `podinfo` as the controller's Istio router does: `primary`/`canary` percent to the
/// versions' own Services, requests with `header` all to the canary, `mirror` percent copied.
fn route(
    mesh: &mut Mesh,
    primary: u8,
    canary: u8,
    mirror: Option<u8>,
    header: Option<(&str, &str)>,
) {
    let general = format!(
        "      - route:\n          - {{destination: {{host: podinfo-primary}}, weight: {primary}}}\n          - {{destination: {{host: podinfo-canary}}, weight: {canary}}}\n{}",
        mirror.map_or(String::new(), |m| format!(
            "        mirror: {{host: podinfo-canary}}\n        mirrorPercentage: {{value: {m}}}\n"
        ))
    );
    let matched = header.map_or(String::new(), |(k, v)| {
        format!(
            "      - match: [{{headers: {{{k}: {{exact: {v}}}}}}}]\n        route:\n          - {{destination: {{host: podinfo-canary}}, weight: 100}}\n"
        )
    });
    let vs = format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: podinfo}}\nspec:\n  hosts: [podinfo]\n  http:\n{matched}{general}"
    );
    let manifests = manifest::parse(&vs).unwrap_or_else(|e| panic!("{e}\n{vs}"));
    let warnings = mesh.apply_manifests(&manifests).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
}

fn canary_mesh(seed: u64, rps: f64, manifests: &str) -> Mesh {
    let cfg = MeshConfig {
        seed,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![
                VersionConfig::new("primary", 4, behaviour(10, 8)),
                VersionConfig::new("canary", 2, behaviour(10, 8)),
            ],
        )],
        clients: vec![ClientConfig::new("client", "podinfo", rps)],
        ..Default::default()
    };
    mesh_with(cfg, manifests)
}

fn count_flag(mesh: &Mesh, flag: u16) -> u64 {
    count_flags(mesh, |f| f & flag != 0)
}

fn total(mesh: &Mesh, reporter: Reporter) -> (u64, u64) {
    let w = mesh.telemetry().totals(&Selector {
        reporter,
        source: None,
        dest: None,
    });
    (w.requests, w.failures)
}

const TIGHT_POOL: &str = "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnections: 4\n      http:\n        http1MaxPendingRequests: 2\n";

#[test]
fn overflow_answers_503_uo_only_when_the_pool_limits_are_exceeded() {
    // Light load: 4 connections are plenty, nothing overflows.
    let mut light = canary_mesh(1, 20.0, TIGHT_POOL);
    light.run_until(60 * SECONDS);
    assert_eq!(count_flag(&light, flags::UO), 0);
    // Heavy load on slow pods: more than 4 in flight + 2 pending per cluster overflow at once.
    let mut heavy = canary_mesh(1, 2000.0, TIGHT_POOL);
    heavy
        .apply(Action::SetServiceTime {
            version: VersionId(0),
            service_time: ServiceTime::Constant(50 * MILLIS),
        })
        .unwrap();
    heavy.run_until(10 * SECONDS);
    let uo = count_flag(&heavy, flags::UO);
    assert!(uo > 0);
    let sel = Selector {
        reporter: Reporter::Source,
        source: None,
        dest: None,
    };
    for (code, f, _) in heavy.telemetry().by_code(&sel, 0, heavy.now(), heavy.now()) {
        if f & flags::UO != 0 {
            assert_eq!(code, 503);
        }
    }
    let c = heavy.client_id("client").unwrap();
    assert_eq!(
        heavy.proxy_counters(c, VersionId(0)).pending_overflow
            + heavy.proxy_counters(c, VersionId(1)).pending_overflow,
        uo
    );
    // The same load without limits never overflows.
    let mut open = canary_mesh(1, 2000.0, "");
    open.apply(Action::SetServiceTime {
        version: VersionId(0),
        service_time: ServiceTime::Constant(50 * MILLIS),
    })
    .unwrap();
    open.run_until(10 * SECONDS);
    assert_eq!(count_flag(&open, flags::UO), 0);
}

#[test]
fn retries_in_flight_never_exceed_max_retries() {
    let m = "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    connectionPool:\n      http:\n        maxRetries: 3\n---\nkind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n            subset: primary\n      retries:\n        attempts: 5\n        retryOn: 5xx\n";
    let mut mesh = canary_mesh(3, 1000.0, m);
    let v = mesh.version_id("podinfo", "primary").unwrap();
    mesh.apply(Action::SetErrorRate {
        version: v,
        rate: 0.5,
    })
    .unwrap();
    mesh.run_until(30 * SECONDS);
    let c = mesh.client_id("client").unwrap();
    let peak = mesh.peak_retries_in_flight(c, v);
    assert!(peak <= 3 && peak > 0, "peak retries in flight {peak}");
    let counters = mesh.proxy_counters(c, v);
    assert!(
        counters.retry_overflow > 0,
        "the limit was actually reached"
    );
    assert!(count_flag(&mesh, flags::URX) > 0);
}

#[test]
fn retries_turn_transient_errors_into_successes_and_attempts_are_bounded() {
    let m = "kind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n            subset: primary\n      retries:\n        attempts: 2\n        retryOn: 5xx\n";
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

const STRICT: &str = "kind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n";

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
    let m = "kind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - fault:\n        abort:\n          httpStatus: 503\n          percentage:\n            value: 10\n        delay:\n          fixedDelay: 2s\n          percentage:\n            value: 5\n      route:\n        - destination:\n            host: podinfo\n            subset: primary\n";
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
fn a_route_timeout_ends_slow_requests_with_504_ut() {
    let m = "kind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n            subset: primary\n      timeout: 100ms\n";
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
fn a_crashed_pod_fails_in_flight_requests_and_recovers_after_restart() {
    let none = "kind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n            subset: primary\n      retries:\n        attempts: 0\n";
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
    assert!(
        retries >= 0.2 * requests * 0.9,
        "the budget is used: {retries} for {requests}"
    );
    assert!(mesh.proxy_counters(c, v).retry_overflow > 0);
}

#[test]
fn a_black_holed_pod_times_out_and_retries_move_requests_to_healthy_pods() {
    let m = "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        connectTimeout: 1s\n---\nkind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n            subset: primary\n      timeout: 3s\n      retries:\n        attempts: 3\n        perTryTimeout: 500ms\n        retryOn: 5xx,connect-failure,reset\n";
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
    let m = "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    loadBalancer:\n      simple: RANDOM\n---\nkind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n            subset: canary\n      retries:\n        attempts: 1\n        retryOn: 5xx\n";
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

fn all_bad(min_health: Option<u32>) -> (u64, u64) {
    let extra = min_health.map_or(String::new(), |p| format!("      minHealthPercent: {p}\n"));
    let m = format!(
        "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    outlierDetection:\n      consecutive5xxErrors: 5\n      maxEjectionPercent: 100\n{extra}---\nkind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - {{destination: {{host: podinfo, subset: primary}}, weight: 50}}\n        - {{destination: {{host: podinfo, subset: canary}}, weight: 50}}\n"
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

#[test]
fn a_mesh_can_move_to_another_thread_for_parallel_sweeps() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Mesh>();
}

#[test]
fn idle_connections_to_other_hosts_do_not_starve_a_host_at_the_connection_limit() {
    let m = "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnections: 1\n";
    let mut mesh = canary_mesh(37, 20.0, m);
    mesh.run_until(60 * SECONDS);
    let st = mesh.stats();
    assert!(st.requests > 1000);
    // Only the last few requests may still be in flight; none waits forever on a pool.
    assert!(st.requests - st.completed < 5, "{st:?}");
    assert_eq!(total(&mesh, Reporter::Source).1, 0);
}
