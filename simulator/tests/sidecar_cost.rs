//! The sidecars' cost: an undersized sidecar caps its pod's throughput at its worker threads
//! over the time a request holds one (queueing: c workers of service time s serve c/s per
//! second), each proxy adds its latency distribution's draw, and CPU is counted per request
//! and per TLS handshake. A cost equal to the fixed latency changes nothing.

mod support;

use fledge_simulator::engine::{MILLIS, SECONDS, SimTime};
use fledge_simulator::mesh::*;
use support::mesh::seen;

const MICROS: SimTime = MILLIS / 1000;

/// One client at `rps` (evenly spaced) to one pod whose app answers at once and whose sidecar
/// costs `server`; the client's proxy costs `client`.
fn mesh(rps: f64, client: Option<ProxyCost>, server: Option<ProxyCost>) -> (Mesh, VersionId) {
    let behaviour = Behaviour {
        workers: 100_000,
        service_time: ServiceTime::Constant(10 * MICROS),
        proxy: server,
        ..Behaviour::default()
    };
    let cfg = MeshConfig {
        seed: 3,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![VersionConfig::new("primary", 1, behaviour)],
        )],
        clients: vec![ClientConfig {
            shape: ArrivalShape::Constant,
            ..ClientConfig::new("loadtester", "podinfo", rps)
        }],
        proxy: client,
        ..Default::default()
    };
    let mesh = Mesh::new(cfg).expect("a valid mesh");
    let v = mesh.version_id("podinfo", "primary").expect("declared");
    (mesh, v)
}

fn cost(cpu: SimTime, concurrency: u32, limit: Option<u32>) -> ProxyCost {
    ProxyCost {
        cpu_per_request: cpu,
        concurrency,
        cpu_limit_millis: limit,
        ..ProxyCost::default()
    }
}

/// Requests the pod's app received over a minute of load.
fn served_in_a_minute(rps: f64, proxy: ProxyCost) -> u64 {
    let (mut m, v) = mesh(rps, None, Some(proxy));
    m.run_until(60 * SECONDS);
    m.queue_stats(v).arrivals
}

#[test]
fn an_undersized_sidecar_passes_at_most_its_threads_over_the_cpu_per_request() {
    // 2 threads, 10 ms of CPU a request: 200 requests/s at most, whatever is offered.
    let proxy = cost(10 * MILLIS, 2, None);
    assert_eq!(proxy.capacity(), Some(200.0));
    let served = served_in_a_minute(400.0, proxy.clone());
    assert!((11_900..=12_002).contains(&served), "served {served}");
    // Below its capacity it passes everything offered.
    let served = served_in_a_minute(150.0, proxy);
    assert!((8_990..=9_000).contains(&served), "served {served}");
}

#[test]
fn a_cpu_limit_below_the_threads_caps_the_sidecar_at_the_limit_over_the_cpu() {
    // Half a core for 2 threads: a quarter core each, so a request holds its thread four times
    // its CPU, and the pod's sidecar passes the limit over the CPU: 50/s at most.
    let proxy = cost(10 * MILLIS, 2, Some(500));
    assert_eq!(proxy.hold(), 40 * MILLIS);
    assert_eq!(proxy.capacity(), Some(50.0));
    let served = served_in_a_minute(100.0, proxy);
    assert!((2_990..=3_002).contains(&served), "served {served}");
}

/// A saturated sidecar counts a request's CPU and latency when a worker thread takes it: one
/// thread spends at most a core, and requests still waiting at the end are its backlog, not
/// requests it passed (nor zero waits that halve the mean).
#[test]
fn a_saturated_sidecar_counts_the_requests_its_threads_took_and_reports_its_backlog() {
    // 1 thread, 10 ms a request: 100/s of the 200 offered; the app answers in 10 us.
    let (mut m, v) = mesh(200.0, None, Some(cost(10 * MILLIS, 1, None)));
    m.run_until(60 * SECONDS);
    let served = m.queue_stats(v).arrivals;
    assert!((5_990..=6_001).contains(&served), "served {served}");
    let usage = m.sidecar_usage();
    let (_, u) = usage.last().expect("the server's sidecar is modelled");
    let request_cpu = u.cpu - u.handshakes * NetworkConfig::default().handshake_cpu;
    assert!(
        request_cpu <= 60 * SECONDS + 10 * MILLIS,
        "{} s of request CPU on one thread in 60 s: {u:?}",
        request_cpu as f64 / 1e9
    );
    assert!(u.requests <= served + 1, "{u:?}, served {served}");
    // Waits grow from 0 to 30 s: about 15 s on average over the requests taken.
    let mean_wait_s = u.wait as f64 / 1e9 / u.requests as f64;
    assert!(mean_wait_s > 14.0, "mean wait {mean_wait_s} s: {u:?}");
    assert!((5_990..=6_010).contains(&u.backlog), "{u:?}");
}

/// Envoy starts a request's stream, and the clock of `istio_request_duration_milliseconds`,
/// when a worker thread decodes it: the wait for a worker is latency the client's proxy
/// reports (`reporter="source"`), not the destination's.
#[test]
fn waiting_for_a_worker_thread_is_latency_the_source_reports_not_the_destination() {
    let (mut m, v) = mesh(400.0, None, Some(cost(10 * MILLIS, 2, None)));
    m.run_until(60 * SECONDS);
    let usage = m.sidecar_usage();
    let (name, server) = usage.last().expect("the server's sidecar is modelled");
    assert_eq!(name, "podinfo-primary");
    assert!(server.waited > 0 && server.wait > 0, "{server:?}");
    // The queue grows by 200 requests a second: late requests wait many seconds.
    let source = m.source_stats(v, 0, 60 * SECONDS).quantile_ms(0.99);
    assert!(
        source.expect("answered") > 10_000.0,
        "source p99 {source:?}"
    );
    // The destination times its sidecar's way in (0.25 ms) and the app's 10 us.
    let destination = m.destination_stats(v, 0, 60 * SECONDS).quantile_ms(0.99);
    assert!(
        destination.expect("answered") < 1.0,
        "destination p99 {destination:?} ms, source {source:?} ms"
    );
}

#[test]
fn each_proxy_adds_a_draw_of_its_latency_distribution() {
    let lognormal = ProxyCost {
        latency: ServiceTime::LogNormal {
            p50: MILLIS,
            p99: 5 * MILLIS,
        },
        cpu_per_request: 0,
        ..ProxyCost::default()
    };
    let (mut m, _) = mesh(500.0, Some(lognormal.clone()), Some(lognormal));
    m.run_until(120 * SECONDS);
    // The log-normal's mean: exp(mu + sigma^2 / 2) with sigma = ln(p99 / p50) / z99.
    let sigma = 5f64.ln() / 2.326_347_874;
    let mean_ms = (sigma * sigma / 2.0).exp();
    for (name, u) in m.sidecar_usage() {
        let added = u.added as f64 / 1e6 / u.requests as f64;
        assert!(
            (added - mean_ms).abs() < 0.02 * mean_ms,
            "{name}: {added} ms per request, expected {mean_ms}"
        );
    }
}

#[test]
fn constant_proxy_latencies_add_up_along_the_request_path() {
    let fixed = |ms: SimTime| ProxyCost {
        latency: ServiceTime::Constant(ms * MILLIS),
        cpu_per_request: 0,
        ..ProxyCost::default()
    };
    let (mut m, v) = mesh(100.0, Some(fixed(1)), Some(fixed(3)));
    m.run_until(60 * SECONDS);
    // Client seen: the network both ways, 1 ms + 3 ms of proxies and the app's 10 us; only the
    // first request waits for the connection's handshake.
    let expected = 0.2 + 4.0 + 0.01;
    let seen = m.source_stats(v, 0, 60 * SECONDS);
    let mean = seen.mean_ms().expect("requests");
    assert!(
        (mean - expected).abs() < 0.01,
        "mean {mean} ms, expected {expected}"
    );
    // The destination reports its own sidecar's way in (half of 3 ms) and the app.
    let reported = m
        .destination_stats(v, 0, 60 * SECONDS)
        .mean_ms()
        .expect("requests");
    assert!(
        (reported - 1.51).abs() < 1e-4,
        "destination mean {reported} ms"
    );
}

#[test]
fn cpu_is_counted_per_request_and_per_tls_handshake() {
    let proxy = cost(350 * MICROS, 2, None);
    let (mut m, v) = mesh(200.0, Some(proxy.clone()), Some(proxy));
    // Each connection carries one request: a handshake per request.
    let dr = "apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: podinfo}
spec:
  host: podinfo
  trafficPolicy:
    connectionPool:
      http: {maxRequestsPerConnection: 1}
";
    let manifests = fledge_simulator::manifest::parse(dr).expect("a DestinationRule");
    m.apply_manifests(&manifests).expect("applies");
    m.run_until(30 * SECONDS);
    let client = m.client_id("loadtester").expect("declared");
    let handshakes = m.proxy_counters(client, v).handshakes;
    assert!(handshakes > 5_000, "handshakes {handshakes}");
    let handshake_cpu = NetworkConfig::default().handshake_cpu;
    let usage = m.sidecar_usage();
    assert_eq!(usage.len(), 2, "{usage:?}");
    for (name, u) in usage {
        assert_eq!(u.handshakes, handshakes, "{name}");
        // The last connection may be set up for a request not yet sent.
        assert!(u.requests + 1 >= handshakes, "{name}: {u:?}");
        assert_eq!(
            u.cpu,
            u.requests * 350 * MICROS + u.handshakes * handshake_cpu,
            "{name}"
        );
    }
}

#[test]
fn a_modelled_cost_equal_to_the_fixed_latency_changes_nothing() {
    let run = |proxy: Option<ProxyCost>| {
        let (mut m, _) = mesh(300.0, proxy.clone(), proxy);
        m.run_until(30 * SECONDS);
        (m.telemetry().fingerprint(), m.stats())
    };
    // The fixed model: 0.25 ms per pass, 0.5 ms per proxy.
    let same = ProxyCost {
        cpu_per_request: 0,
        ..ProxyCost::default()
    };
    assert_eq!(run(None), run(Some(same)));
}

#[test]
fn a_sidecar_cost_without_threads_is_refused() {
    let refused = Mesh::new(MeshConfig {
        proxy: Some(cost(MILLIS, 0, None)),
        ..Default::default()
    });
    let err = refused.err().expect("refused");
    assert!(err.to_string().contains("concurrency"), "{err}");
}

/// `clients` (name, sidecar) at `rps` each, evenly spaced, to one pod answering in 10 ms whose
/// sidecar (if `server_sidecar`) costs `server`; the clients' proxies cost `client_proxy`.
fn clients_mesh(
    rps: f64,
    clients: &[(&str, bool)],
    client_proxy: Option<ProxyCost>,
    server: Option<ProxyCost>,
    server_sidecar: bool,
) -> Mesh {
    let behaviour = Behaviour {
        workers: 100_000,
        service_time: ServiceTime::Constant(10 * MILLIS),
        proxy: server,
        ..Behaviour::default()
    };
    let mut version = VersionConfig::new("primary", 1, behaviour);
    version.sidecar = server_sidecar;
    let cfg = MeshConfig {
        seed: 5,
        services: vec![ServiceConfig::new("podinfo", vec![version])],
        clients: clients
            .iter()
            .map(|&(name, sidecar)| ClientConfig {
                shape: ArrivalShape::Constant,
                sidecar,
                ..ClientConfig::new(name, "podinfo", rps)
            })
            .collect(),
        proxy: client_proxy,
        ..Default::default()
    };
    Mesh::new(cfg).expect("a valid mesh")
}

fn constant(latency_ms: SimTime) -> ProxyCost {
    ProxyCost {
        latency: ServiceTime::Constant(latency_ms * MILLIS),
        cpu_per_request: 0,
        ..ProxyCost::default()
    }
}

/// A client without a sidecar passes one proxy fewer than one with a sidecar: it sees that
/// proxy's latency less (the fixed 0.5 ms, or the modelled cost), whatever else is modelled.
#[test]
fn a_client_without_a_sidecar_pays_no_proxy_latency() {
    let clients = [("frontend", true), ("bare", false)];
    for (label, client, server, saved_ms) in [
        ("no proxy cost", None, None, 0.5),
        ("the server's cost only", None, Some(constant(1)), 0.5),
        ("both", Some(constant(1)), Some(constant(1)), 1.0),
    ] {
        let mut m = clients_mesh(100.0, &clients, client, server, true);
        m.run_until(60 * SECONDS);
        let with = seen(&m, "frontend", None).mean_ms().expect("requests");
        let without = seen(&m, "bare", None).mean_ms().expect("requests");
        assert!(
            (with - without - saved_ms).abs() < 0.01,
            "{label}: with a sidecar {with} ms, without {without} ms: expected {saved_ms} ms less"
        );
    }
}

/// Simplification (scenarios/README.md, "Sidecar cost"): a pod's worker threads take requests
/// from one queue, whatever connection they came on. Envoy pins each connection to one thread,
/// so one HTTP/2 connection would get one thread (100/s here); the model passes 150/s on 2.
#[test]
fn worker_threads_take_requests_whatever_connection_they_came_on() {
    let p = cost(10 * MILLIS, 2, None);
    let mut m = clients_mesh(150.0, &[("frontend", true)], None, Some(p), true);
    let dr = "apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: podinfo}
spec:
  host: podinfo
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {h2UpgradePolicy: UPGRADE, http2MaxRequests: 100000, http1MaxPendingRequests: 100000}
";
    let manifests = fledge_simulator::manifest::parse(dr).expect("a DestinationRule");
    m.apply_manifests(&manifests).expect("applies");
    m.run_until(60 * SECONDS);
    let v = m.version_id("podinfo", "primary").expect("declared");
    let client = m.client_id("frontend").expect("declared");
    assert_eq!(m.proxy_counters(client, v).handshakes, 1, "one connection");
    let served = m.queue_stats(v).arrivals;
    assert!((8_990..=9_000).contains(&served), "served {served}");
}

/// Simplification (scenarios/README.md, "Sidecar cost"): a version's calls out pass its
/// sidecar, whose latency and CPU they add, but take none of its worker threads. `front` (1
/// thread, 10 ms a request) takes 60 requests/s and calls `back` once for each: its sidecar
/// counts 120 requests/s of CPU (1.2 cores) yet passes all 60 in.
#[test]
fn calls_out_count_cpu_at_the_callers_sidecar_but_take_no_worker_thread() {
    let front = Behaviour {
        workers: 100_000,
        service_time: ServiceTime::Constant(MILLIS),
        proxy: Some(cost(10 * MILLIS, 1, None)),
        calls: vec![vec![support::mesh::call_of("back", false, None)]],
        ..Behaviour::default()
    };
    let back = Behaviour {
        workers: 100_000,
        service_time: ServiceTime::Constant(MILLIS),
        ..Behaviour::default()
    };
    let cfg = MeshConfig {
        seed: 5,
        services: vec![
            ServiceConfig::new("front", vec![VersionConfig::new("v1", 1, front)]),
            ServiceConfig::new("back", vec![VersionConfig::new("v1", 1, back)]),
        ],
        clients: vec![ClientConfig {
            shape: ArrivalShape::Constant,
            ..ClientConfig::new("frontend", "front", 60.0)
        }],
        ..Default::default()
    };
    let mut m = Mesh::new(cfg).expect("a valid mesh");
    m.run_until(60 * SECONDS);
    let front = m.version_id("front", "v1").expect("declared");
    let served = m.queue_stats(front).arrivals;
    assert!((3_590..=3_600).contains(&served), "served {served}");
    let usage = m.sidecar_usage();
    let (_, u) = usage
        .iter()
        .find(|(n, _)| n == "front-v1")
        .expect("front's sidecar is modelled");
    assert!((7_180..=7_200).contains(&u.requests), "in and out: {u:?}");
    assert_eq!(u.waited, 0, "{u:?}");
}
