//! Review of issue 17's later fixes (r17c): behaviours the landed tests do not pin down.

mod support;

use support::mesh::mesh_with;
use support::*;

use fledge_simulator::engine::{MILLIS, SECONDS};
use fledge_simulator::mesh::{Action, Behaviour, ClientConfig, MeshConfig, ServiceConfig};
use fledge_simulator::mesh::{ServiceTime, VersionConfig};
use fledge_simulator::telemetry::{Reporter, Selector, flags};

/// Fix 4, an attempt abandoned on its way: the client's proxy resets the stream while the
/// request is still crossing the network, the reset follows it to the server sidecar, which
/// has started to proxy it and then sees its downstream close before any response: code 0,
/// flag `DC` (envoy access-log docs, `%RESPONSE_CODE%` 0 and `DC`), once per attempt, as
/// scenarios/README.md says ("An attempt abandoned on its way is reported when it arrives").
/// Here every try is abandoned on the wire: 20 ms per try, 50 ms one way.
#[test]
fn an_attempt_abandoned_on_its_way_is_reported_dc_when_it_arrives() {
    let mut cfg = MeshConfig {
        seed: 5,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![VersionConfig::new(
                "primary",
                2,
                Behaviour {
                    workers: 64,
                    service_time: ServiceTime::Constant(5 * MILLIS),
                    ..Default::default()
                },
            )],
        )],
        clients: vec![ClientConfig::new("client", "podinfo", 20.0)],
        ..Default::default()
    };
    cfg.network.one_way = 50 * MILLIS;
    let vs = "kind: VirtualService\nmetadata: {name: p}\nspec:\n  hosts: [podinfo]\n  http:\n    - route: [{destination: {host: podinfo}}]\n      retries: {attempts: 1, perTryTimeout: 20ms, retryOn: connect-failure}\n";
    let mut mesh = mesh_with(cfg, vs);
    let (c, v) = (
        mesh.client_id("client").unwrap(),
        mesh.version_id("podinfo", "primary").unwrap(),
    );
    mesh.schedule(
        10 * SECONDS,
        Action::SetRate {
            client: c,
            rps: 0.0,
        },
    )
    .unwrap();
    mesh.run_until(20 * SECONDS);
    let sel = Selector {
        reporter: Reporter::Destination,
        source: None,
        dest: Some(v.0),
    };
    let reported = mesh.telemetry().by_code(&sel, 0, mesh.now(), mesh.now());
    let served: u64 = mesh.pod_requests(v).iter().sum();
    assert!(served > 150, "{served}");
    let dc: u64 = reported
        .iter()
        .filter(|x| (x.0, x.1) == (0, flags::DC))
        .map(|x| x.2)
        .sum();
    assert_eq!(dc, served, "destination reports: {reported:?}");
}

/// `--trace-filter event=NAME` with a name that is no event of the legend (a typo such as
/// `atpod`) matches nothing: the run writes an empty trace and exits 0, so the user reads
/// "nothing happened". Unknown keys are refused (exit 2); an unknown event name should be too,
/// naming the events of the legend.
#[test]
fn an_event_filter_naming_no_event_exits_2() {
    let file = write("r17c-trace.yaml", &base_with("", ""));
    let trace = file.with_file_name("r17c.trace");
    let out = sim(&[
        "run",
        path_str(&file),
        "--trace",
        path_str(&trace),
        "--trace-filter",
        "event=atpod",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("--trace-filter") && out.stderr.contains("at-pod"),
        "{}",
        out.stderr
    );
}

/// Fix 3, kube-proxy's pick: a client without a sidecar has no Envoy balancer, so a slow pod
/// gets its random share of the requests (kube-proxy iptables mode: a ready endpoint at random
/// per connection; Kubernetes docs, "Virtual IPs and Service Proxies"), where Envoy's
/// LEAST_REQUEST (Istio's default) steers away from it. Pod 0 of 2 is 20 times slower.
#[test]
fn a_client_without_a_sidecar_spreads_requests_at_random_even_to_a_slow_pod() {
    for (sidecar, slow_share) in [(false, 45..=55), (true, 0..=30)] {
        let mut client = ClientConfig::new("client", "podinfo", 200.0);
        client.sidecar = sidecar;
        let cfg = MeshConfig {
            seed: 8,
            services: vec![ServiceConfig::new(
                "podinfo",
                vec![VersionConfig::new(
                    "primary",
                    2,
                    Behaviour {
                        workers: 64,
                        service_time: ServiceTime::Constant(5 * MILLIS),
                        ..Default::default()
                    },
                )],
            )],
            clients: vec![client],
            ..Default::default()
        };
        let mut mesh = mesh_with(cfg, "");
        let v = mesh.version_id("podinfo", "primary").unwrap();
        mesh.apply(Action::SetPodSlowdown {
            version: v,
            pod: 0,
            factor: 20.0,
        })
        .unwrap();
        mesh.run_until(20 * SECONDS);
        let served = mesh.pod_requests(v);
        let share = 100 * served[0] / served.iter().sum::<u64>().max(1);
        assert!(slow_share.contains(&share), "sidecar {sidecar}: {served:?}");
    }
}

/// Fix 9, a pending overflow has no upstream peer either: Envoy's pool fails the stream with
/// `Overflow` and no host (`conn_pool_base.cc` `newStreamImpl`: `onPoolFailure(nullptr, ...)`
/// on "max pending streams overflow"), the router records that null host as the upstream host
/// (`upstream_request.cc` `onPoolFailure` -> `onUpstreamHostSelected(host)`), so Istio's stats
/// filter has no upstream metadata and labels the destination workload `unknown`, as for `UH`.
/// (An overflow of `http2MaxRequests` at attach time does carry the host:
/// `attachStreamToClient` passes `client.real_host_description_`.)
#[test]
#[ignore = "finding 4"]
fn a_pending_overflow_reports_an_unknown_destination() {
    let cfg = MeshConfig {
        seed: 4,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![VersionConfig::new(
                "primary",
                1,
                Behaviour {
                    workers: 64,
                    service_time: ServiceTime::Constant(10 * MILLIS),
                    ..Default::default()
                },
            )],
        )],
        clients: vec![ClientConfig::new("client", "podinfo", 300.0)],
        ..Default::default()
    };
    let dr = "kind: DestinationRule\nmetadata: {name: p}\nspec:\n  host: podinfo\n  trafficPolicy:\n    connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}\n";
    let mut mesh = mesh_with(cfg, dr);
    mesh.run_until(10 * SECONDS);
    let text = mesh.render_prometheus();
    let uo: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("istio_requests_total{reporter=\"source\"")
                && l.contains("response_flags=\"UO\"")
        })
        .collect();
    assert!(!uo.is_empty(), "no UO series:\n{text}");
    for line in uo {
        assert!(line.contains("destination_workload=\"unknown\""), "{line}");
    }
}

/// Fix 3, two clients without a sidecar: the server's sidecar labels both `unknown`, so their
/// requests are one series in Envoy's stats (one counter per label set), not two series with
/// the same labels. Duplicate label sets in one exposition are refused by a Prometheus scrape
/// ("duplicate sample") and make one-to-one matching in a query fail.
#[test]
#[ignore = "finding 2"]
fn two_clients_without_a_sidecar_share_the_unknown_source_series() {
    let mut a = ClientConfig::new("batch-a", "podinfo", 50.0);
    a.sidecar = false;
    let mut b = ClientConfig::new("batch-b", "podinfo", 50.0);
    b.sidecar = false;
    let cfg = MeshConfig {
        seed: 6,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![VersionConfig::new("primary", 2, Behaviour::default())],
        )],
        clients: vec![a, b],
        ..Default::default()
    };
    let mut mesh = mesh_with(cfg, "");
    mesh.run_until(5 * SECONDS);
    let text = mesh.render_prometheus();
    let mut seen = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let labels = line.rsplit_once(' ').map_or(line, |x| x.0);
        assert!(seen.insert(labels.to_string()), "twice: {labels}");
    }
}

/// Fix 6, what a purge is for: Envoy fails a host's pending streams only when a connection
/// fails while still CONNECTING (conn_pool_base.cc `onConnectionEvent`: `purgePendingStreams`
/// under `client.state() == CONNECTING`). A plaintext client and a STRICT server sidecar are
/// not that case: TCP connects (nothing to negotiate on the client side), the first pending
/// request is put on the connection and sent, and the server's listener, finding no filter
/// chain for plaintext, closes it: that request fails with `UC` (an upstream connection
/// termination, which is why the flag is UC and not UF), and the requests still pending wait
/// for the next connection. Setup as in mesh_pool.rs: 10 ms one way, maxConnections 1,
/// requests every 10 ms from 10 ms; the first connection is up at 30 ms and reset at 40 ms, so
/// at 45 ms one request has ended, not three.
#[test]
#[ignore = "finding 3"]
fn a_strict_server_resetting_plaintext_fails_only_the_request_on_the_connection() {
    use fledge_simulator::mesh::{ArrivalShape, NetworkConfig};
    let cfg = MeshConfig {
        seed: 1,
        services: vec![ServiceConfig::new(
            "svc",
            vec![VersionConfig::new(
                "v1",
                1,
                Behaviour {
                    workers: 8,
                    service_time: ServiceTime::Constant(5 * MILLIS),
                    ..Behaviour::default()
                },
            )],
        )],
        clients: vec![ClientConfig {
            shape: ArrivalShape::Constant,
            ..ClientConfig::new("client", "svc", 100.0)
        }],
        network: NetworkConfig {
            one_way: 10 * MILLIS,
            sidecar_latency: 0,
            handshake_cpu: 0,
            ..NetworkConfig::default()
        },
        ..MeshConfig::default()
    };
    let manifests = "kind: DestinationRule\nmetadata: {name: svc}\nspec:\n  host: svc\n  trafficPolicy:\n    tls: {mode: DISABLE}\n    connectionPool: {tcp: {maxConnections: 1}}\n---\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n---\nkind: VirtualService\nmetadata: {name: svc}\nspec:\n  hosts: [svc]\n  http:\n    - route: [{destination: {host: svc}}]\n      retries: {attempts: 0}\n";
    let mut mesh = mesh_with(cfg, manifests);
    mesh.run_until(45 * MILLIS);
    assert_eq!(mesh.stats().completed, 1);
}
