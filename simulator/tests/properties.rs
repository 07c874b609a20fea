//! Invariants of the proxy model over generated meshes.

use fledge_simulator::engine::{MILLIS, SECONDS};
use fledge_simulator::manifest;
use fledge_simulator::mesh::{
    Action, Behaviour, ClientConfig, Mesh, MeshConfig, ServiceConfig, ServiceTime, VersionConfig,
};
use fledge_simulator::telemetry::{Reporter, Selector, flags};
use proptest::prelude::*;

/// Pool limits on each version's own host (the controller's DestinationRules), and the
/// controller's kind of route: `canary` percent to the canary's own Service, 10% mirrored to
/// it, with retries.
fn manifests(max_conn: u32, pending: u32, max_retries: u32, attempts: u32, canary: u8) -> String {
    let primary = 100 - canary;
    // Istio refuses the other retry settings with `attempts: 0`.
    let tries = if attempts == 0 {
        ""
    } else {
        "        perTryTimeout: 200ms\n        retryOn: 5xx,reset,connect-failure\n"
    };
    let rule = |host: &str| {
        format!(
            "kind: DestinationRule\nmetadata:\n  name: {host}\nspec:\n  host: {host}\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnections: {max_conn}\n      http:\n        http1MaxPendingRequests: {pending}\n        maxRetries: {max_retries}\n    outlierDetection:\n      consecutive5xxErrors: 5\n      maxEjectionPercent: 50\n---\n"
        )
    };
    format!(
        "{}{}kind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [svc]\n  http:\n    - route:\n        - destination:\n            host: svc-primary\n          weight: {primary}\n        - destination:\n            host: svc-canary\n          weight: {canary}\n      mirror:\n        host: svc-canary\n      mirrorPercentage:\n        value: 10\n      retries:\n        attempts: {attempts}\n{tries}",
        rule("svc-primary"),
        rule("svc-canary")
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_proxy_keeps_its_books_balanced_under_any_load_and_limits(
        seed in 0u64..1000,
        rate in 50.0f64..1500.0,
        error in 0.0f64..0.6,
        mean_ms in 1u64..40,
        max_conn in 1u32..20,
        pending in 1u32..20,
        max_retries in 1u32..5,
        attempts in 0u32..4,
        canary in 0u8..=100,
    ) {
        let b = Behaviour { workers: 4, service_time: ServiceTime::Exponential { mean: mean_ms * MILLIS }, error_rate: error, error_code: 503, ..Behaviour::default() };
        let cfg = MeshConfig {
            seed,
            services: vec![ServiceConfig::new("svc", vec![VersionConfig::new("primary", 3, b.clone()), VersionConfig::new("canary", 1, b)])],
            clients: vec![ClientConfig::new("client", "svc", rate)],
            ..Default::default()
        };
        let mut mesh = Mesh::new(cfg).unwrap();
        let warnings = mesh.apply_manifests(&manifest::parse(&manifests(max_conn, pending, max_retries, attempts, canary)).unwrap()).unwrap();
        prop_assert!(warnings.is_empty(), "{:?}", warnings);
        let s = mesh.service_id("svc").unwrap();
        let (p, c) = mesh.primary_canary(s).unwrap();
        mesh.schedule(5 * SECONDS, Action::CrashPod { version: p, pod: 0, restart_after: Some(2 * SECONDS) }).unwrap();
        mesh.run_until(15 * SECONDS);
        let client = mesh.client_id("client").unwrap();
        for v in [p, c] {
            prop_assert!(mesh.peak_retries_in_flight(client, v) <= max_retries);
        }
        let st = mesh.stats();
        prop_assert!(st.completed <= st.requests);
        let source = mesh.telemetry().totals(&Selector { reporter: Reporter::Source, source: None, dest: None });
        prop_assert_eq!(source.requests, st.completed);
        // Retries never exceed the configured attempts per request (mirrors aside).
        let dest = mesh.telemetry().totals(&Selector { reporter: Reporter::Destination, source: None, dest: None });
        prop_assert!(dest.requests <= st.attempts);
        prop_assert!(st.attempts <= st.requests * u64::from(attempts + 1) + st.requests);
        // A pool overflow answers 503 UO; a retry the maxRetries breaker refused keeps the
        // attempt's answer and adds UO (Envoy's router), so other codes need such a refusal.
        let refused: u64 = [p, c].iter().map(|&v| mesh.proxy_counters(client, v).retry_overflow).sum();
        let sel = Selector { reporter: Reporter::Source, source: None, dest: None };
        for (code, f, _) in mesh.telemetry().by_code(&sel, 0, mesh.now(), mesh.now()) {
            if f & flags::UO != 0 && code != 503 {
                prop_assert!(refused > 0, "{} UO without a refused retry", code);
            }
        }
    }
}
