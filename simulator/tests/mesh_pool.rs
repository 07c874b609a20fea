//! Issue 17, fix 6: the connection pool as Envoy's HTTP connection pool keeps it. Every case runs
//! one client at a constant rate against one service whose pods answer in a constant time, over
//! a network slow enough (10 ms one way, so a mutual-TLS connection takes 40 ms to set up) that
//! the order of events can be worked out by hand; each checkpoint gives a proxy counter's exact
//! value at a time. The comments say what Envoy (or Istio's translation) does and where.

use fledge_simulator::engine::MILLIS;
use fledge_simulator::mesh::{
    ArrivalShape, Behaviour, ClientConfig, Mesh, MeshConfig, NetworkConfig, ServiceConfig,
    ServiceTime, VersionConfig, VersionId,
};
use fledge_simulator::telemetry::ProxyCounters;

mod support;
use support::mesh::mesh_with;

struct Case {
    name: &'static str,
    pods: u32,
    rps: f64,
    service_ms: u64,
    /// A DestinationRule's `trafficPolicy` (and, after it, any other manifest), for host `svc`.
    policy: &'static str,
    extra: &'static str,
    /// What is checked, and how it is read from the mesh.
    counter: (&'static str, fn(&Mesh) -> u64),
    /// (milliseconds, the counter's value then)
    checkpoints: &'static [(u64, u64)],
}

/// The client's proxy counters for the service's one version.
fn counters(mesh: &Mesh) -> ProxyCounters {
    let client = mesh.client_id("client").expect("declared");
    mesh.proxy_counters(client, VersionId(0))
}

const OVERFLOW: (&str, fn(&Mesh) -> u64) = ("pending_overflow", |m| counters(m).pending_overflow);
const OPENED: (&str, fn(&Mesh) -> u64) = ("connections_opened", |m| counters(m).connections_opened);
const TIMEOUTS: (&str, fn(&Mesh) -> u64) = ("timeouts", |m| counters(m).timeouts);
const COMPLETED: (&str, fn(&Mesh) -> u64) = ("completed requests", |m| m.stats().completed);

/// Mutual TLS required by the server while the client sends plain text: every connection is
/// reset when the first request on it reaches the server; no retries.
const PLAIN_TO_STRICT: &str = "---\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n---\nkind: VirtualService\nmetadata: {name: svc}\nspec:\n  hosts: [svc]\n  http:\n    - route: [{destination: {host: svc}}]\n      retries: {attempts: 0}\n";

/// Mutual TLS disabled on the server's sidecar; no retries.
const MTLS_DISABLED: &str = "---\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: DISABLE\n---\nkind: VirtualService\nmetadata: {name: svc}\nspec:\n  hosts: [svc]\n  http:\n    - route: [{destination: {host: svc}}]\n      retries: {attempts: 0}\n";

const TIMEOUT_20MS: &str = "---\nkind: VirtualService\nmetadata: {name: svc}\nspec:\n  hosts: [svc]\n  http:\n    - route: [{destination: {host: svc}}]\n      timeout: 20ms\n";

const PER_TRY_30MS: &str = "---\nkind: VirtualService\nmetadata: {name: svc}\nspec:\n  hosts: [svc]\n  http:\n    - route: [{destination: {host: svc}}]\n      retries: {attempts: 1, perTryTimeout: 30ms, retryOn: 5xx}\n";

const CASES: &[Case] = &[
    // Envoy queues a stream as pending whenever no ready connection can take it, also while the
    // connection it caused is still connecting (conn_pool_base.cc `newStreamImpl`: pending
    // before `tryCreateNewConnections`); circuit_breaking.rst: "the maximum number of requests
    // that will be queued while waiting for a ready connection pool connection". At a cold start
    // with one pending slot, requests 2-4 (at 20, 30, 40 ms) overflow while the first connection
    // (opened at 10 ms) is set up until 50 ms, even though connections are unlimited.
    Case {
        name: "a request waiting for a connection being set up is pending and overflows",
        pods: 1,
        rps: 100.0,
        service_ms: 5,
        policy: "connectionPool: {http: {http1MaxPendingRequests: 1}}",
        extra: "",
        counter: OVERFLOW,
        checkpoints: &[(15, 0), (45, 3)],
    },
    // circuit_breaking.rst (maximum connections): "Even if this circuit breaker has overflowed,
    // Envoy will ensure that a host selected by cluster load balancing has at least one
    // connection allocated" (conn_pool_base.cc `tryCreateNewConnection`). Round robin sends
    // request 2 (200 ms) to the second pod while the first pod's one connection is busy for a
    // second: it opens a second connection although maxConnections is 1.
    Case {
        name: "a host with no connection opens one at the connection limit",
        pods: 2,
        rps: 10.0,
        service_ms: 1000,
        policy: "connectionPool: {tcp: {maxConnections: 1}}\n    loadBalancer: {simple: ROUND_ROBIN}",
        extra: "",
        counter: OPENED,
        checkpoints: &[(150, 1), (250, 2), (450, 2)],
    },
    // Envoy counts a request against `max_requests` (Istio's http2MaxRequests) when the pool
    // attaches it to a connection (conn_pool_base.cc `attachStreamToClient`), so a pending
    // request is not an active one: with one connection and one active request allowed,
    // requests queue behind the busy connection instead of overflowing.
    Case {
        name: "pending requests do not count as active requests",
        pods: 1,
        rps: 100.0,
        service_ms: 5,
        policy: "connectionPool: {tcp: {maxConnections: 1}, http: {http2MaxRequests: 1}}",
        extra: "",
        counter: OVERFLOW,
        checkpoints: &[(200, 0)],
    },
    // The same limit over HTTP/2: requests 1-4 wait for the first connection (pending, not
    // active); when it is ready at 50 ms the first is attached and requests 2-4, then request
    // 5 arriving at 50 ms, overflow at attach time (UO, upstream_rq_pending_overflow).
    Case {
        name: "the active-request limit is checked when a request gets a connection",
        pods: 1,
        rps: 100.0,
        service_ms: 5,
        policy: "connectionPool: {http: {http2MaxRequests: 1, h2UpgradePolicy: UPGRADE}}",
        extra: "",
        counter: OVERFLOW,
        checkpoints: &[(45, 0), (55, 4)],
    },
    // Envoy's router starts the per-try timer when the pool hands the request a ready
    // connection (router `onPoolReady`; envoy issue 4903 moved it there so connection setup
    // does not count against a try). First request at 1 s: connected at 1.04 s, back at
    // 1.065 s, inside its 30 ms try.
    Case {
        name: "the per-try timer does not run while the connection is set up",
        pods: 1,
        rps: 1.0,
        service_ms: 5,
        policy: "connectionPool: {http: {http1MaxPendingRequests: 10}}",
        extra: PER_TRY_30MS,
        counter: TIMEOUTS,
        checkpoints: &[(1200, 0)],
    },
    // ... and it does run once the request is sent: 40 ms of service on a connection ready at
    // 1.04 s ends the try at 1.07 s.
    Case {
        name: "the per-try timer runs from the moment the request is sent",
        pods: 1,
        rps: 1.0,
        service_ms: 40,
        policy: "connectionPool: {http: {http1MaxPendingRequests: 10}}",
        extra: PER_TRY_30MS,
        counter: TIMEOUTS,
        checkpoints: &[(1065, 0), (1075, 1)],
    },
    // A connection that fails while still connecting fails every pending stream of the host's
    // pool (conn_pool_base.cc `onConnectionEvent`: pending streams are purged when a client
    // closes in the CONNECTING state; with TLS, Envoy's connection is connected only once the
    // handshake is done). Mutual TLS to a server whose sidecar has it disabled fails the
    // handshake (UF) after two round trips: the one connection allowed, opened at 10 ms, fails
    // at 50 ms, and requests 1-4 (10-40 ms) waiting for it all end then.
    Case {
        name: "a connection that fails to set up fails every request waiting for it",
        pods: 1,
        rps: 100.0,
        service_ms: 5,
        policy: "tls: {mode: ISTIO_MUTUAL}\n    connectionPool: {tcp: {maxConnections: 1}}",
        extra: MTLS_DISABLED,
        counter: COMPLETED,
        checkpoints: &[(45, 0), (55, 4)],
    },
    // A STRICT server and a plaintext client are not that case: TCP connects (nothing to
    // negotiate on the client side), the first pending request is sent, and the server's
    // listener, finding no filter chain for plaintext, closes the connection: that request
    // fails UC (an upstream connection termination), the others stay pending for the next
    // connection. Connected at 30 ms, reset at 40 ms: at 45 ms one request has ended, not three.
    Case {
        name: "a server resetting a connected connection fails only the request sent on it",
        pods: 1,
        rps: 100.0,
        service_ms: 5,
        policy: "tls: {mode: DISABLE}\n    connectionPool: {tcp: {maxConnections: 1}}",
        extra: PLAIN_TO_STRICT,
        counter: COMPLETED,
        checkpoints: &[(35, 0), (45, 1)],
    },
    // A request cancelled while pending does not close the connection it was waiting for: the
    // router cancels its pool request with the default policy (envoy `source/extensions/
    // upstreams/http/http/upstream_request.cc`, `cancelAnyPendingStream`:
    // `CancelPolicy::Default`, "canceled streams allow a pending connection to complete and
    // become available for a future stream"; `envoy/common/conn_pool.h`). The request at 1 s
    // times out at 1.02 s while its mutual-TLS connection is set up until 1.04 s; the
    // connection stays open and carries the request at 2 s: one connection opened in all.
    Case {
        name: "a request cancelled while pending leaves its connection to be set up and reused",
        pods: 1,
        rps: 1.0,
        service_ms: 5,
        policy: "connectionPool: {http: {http1MaxPendingRequests: 10}}",
        extra: TIMEOUT_20MS,
        counter: OPENED,
        checkpoints: &[(1100, 1), (2100, 1)],
    },
];

fn mesh_of(case: &Case) -> Mesh {
    let behaviour = Behaviour {
        workers: 8,
        service_time: ServiceTime::Constant(case.service_ms * MILLIS),
        ..Behaviour::default()
    };
    let cfg = MeshConfig {
        seed: 1,
        services: vec![ServiceConfig::new(
            "svc",
            vec![VersionConfig::new("v1", case.pods, behaviour)],
        )],
        clients: vec![ClientConfig {
            shape: ArrivalShape::Constant,
            ..ClientConfig::new("client", "svc", case.rps)
        }],
        network: NetworkConfig {
            one_way: 10 * MILLIS,
            sidecar_latency: 0,
            handshake_cpu: 0,
            ..NetworkConfig::default()
        },
        ..MeshConfig::default()
    };
    let manifests = format!(
        "kind: DestinationRule\nmetadata: {{name: svc}}\nspec:\n  host: svc\n  trafficPolicy:\n    {}\n{}",
        case.policy, case.extra
    );
    mesh_with(cfg, &manifests)
}

#[test]
fn the_pool_keeps_envoys_pending_active_and_connection_rules() {
    let mut failures = Vec::new();
    for case in CASES {
        let mut mesh = mesh_of(case);
        for &(ms, want) in case.checkpoints {
            mesh.run_until(ms * MILLIS);
            let got = (case.counter.1)(&mesh);
            if got != want {
                failures.push(format!(
                    "{}: {} at {ms} ms is {got}, expected {want}",
                    case.name, case.counter.0
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
