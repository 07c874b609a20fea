//! Connection pools and circuit breaking: pending overflow (503 `UO`), the retry limit of the
//! pool, and a connection limit shared across hosts.

use fledge_simulator::engine::{MILLIS, SECONDS};
use fledge_simulator::mesh::{Action, ServiceTime, VersionId};
use fledge_simulator::telemetry::{Reporter, Selector, flags};

use crate::support::mesh::{canary_mesh, count_flag, total};

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
    let m = "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  subsets:\n    - {name: primary, labels: {version: primary}}\n    - {name: canary, labels: {version: canary}}\n  trafficPolicy:\n    connectionPool:\n      http:\n        maxRetries: 3\n---\nkind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n            subset: primary\n      retries:\n        attempts: 5\n        retryOn: 5xx\n";
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
