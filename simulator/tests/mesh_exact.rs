//! Envoy's, Istio's and Linkerd's semantics case by case (issue 17, fixes 7 to 10): each test is
//! a table of cases, each citing the behaviour it reproduces.

mod support;

use support::mesh::{VS_PODINFO, behaviour, count_flags, mesh_with, podinfo};

use fledge_simulator::engine::SECONDS;
use fledge_simulator::manifest;
use fledge_simulator::mesh::{
    Action, ClientConfig, MeshConfig, ServiceConfig, ServiceTime, VersionConfig,
};
use fledge_simulator::telemetry::flags;

fn one_version(seed: u64, rps: f64) -> MeshConfig {
    MeshConfig {
        seed,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![VersionConfig::new("primary", 3, behaviour(5, 8))],
        )],
        clients: vec![ClientConfig::new("client", "podinfo", rps)],
        ..Default::default()
    }
}

const VS_HEAD: &str = "kind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n";

/// Fix 7: Istio's default retry policy, and a `retries` block without `retryOn` (which Istio
/// starts from the default), retry a 503 only up to Istio 1.23 or with
/// EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY=false (istio/istio
/// `pilot/pkg/networking/core/route/retry/retry.go`, `defaultPolicy` and `ConvertPolicy` before
/// commit "remove 1.23 compatibility profile"; release note 50506).
#[test]
fn istio_default_retry_policy_retries_503_only_on_the_legacy_versions() {
    let cases = [
        // (legacy switch, retries block, pod error code, retried)
        (false, "", 503, false),
        (true, "", 503, true),
        (true, "", 500, false),
        (false, "      retries: {attempts: 3}\n", 503, false),
        (true, "      retries: {attempts: 3}\n", 503, true),
        // An explicit retryOn replaces the default's status codes.
        (
            true,
            "      retries: {attempts: 3, retryOn: connect-failure}\n",
            503,
            false,
        ),
        (true, "      retries: {attempts: 0}\n", 503, false),
    ];
    for (legacy, retries, code, want) in cases {
        let mut cfg = one_version(7, 100.0);
        cfg.istio_retry_503 = legacy;
        cfg.services[0].versions[0].behaviour.error_code = code;
        let vs = if retries.is_empty() {
            String::new()
        } else {
            format!("{VS_HEAD}{retries}")
        };
        let mut mesh = mesh_with(cfg, &vs);
        let v = mesh.version_id("podinfo", "primary").unwrap();
        mesh.apply(Action::SetErrorRate {
            version: v,
            rate: 0.2,
        })
        .unwrap();
        mesh.run_until(10 * SECONDS);
        let c = mesh.client_id("client").unwrap();
        let retried = mesh.proxy_counters(c, v).retries > 0;
        assert_eq!(
            retried, want,
            "legacy={legacy} retries={retries:?} code={code}"
        );
    }
}

/// Fix 7, the scenario's switch: `istio.version` up to 1.23 always retries 503 by default;
/// 1.24 to 1.26 follow `exclude_unsafe_503_from_default_retry` (default true); 1.27 removed the
/// flag (istio/istio `pilot/pkg/features/pilot.go` before commit "remove 1.23 compatibility
/// profile", which shipped in 1.27).
#[test]
fn scenario_istio_settings_choose_the_default_retry_policy() {
    use fledge_simulator::scenario::Scenario;
    let cases = [
        // (istio section, retries 503, warned)
        ("", false, false),
        ("istio: {version: '1.23'}\n", true, false),
        ("istio: {version: '1.22.3'}\n", true, false),
        ("istio: {version: '1.24'}\n", false, false),
        (
            "istio: {version: '1.25', exclude_unsafe_503_from_default_retry: false}\n",
            true,
            false,
        ),
        (
            "istio: {exclude_unsafe_503_from_default_retry: false}\n",
            true,
            false,
        ),
        (
            "istio: {exclude_unsafe_503_from_default_retry: true}\n",
            false,
            false,
        ),
        (
            "istio: {version: '1.27', exclude_unsafe_503_from_default_retry: false}\n",
            false,
            true,
        ),
        (
            "istio: {version: '1.20', exclude_unsafe_503_from_default_retry: true}\n",
            true,
            true,
        ),
    ];
    for (section, want, warned) in cases {
        let text = format!("{}{section}", support::BASE);
        let s = Scenario::parse(&text, std::path::Path::new("t.yaml"))
            .unwrap_or_else(|e| panic!("{section}: {e}"));
        assert_eq!(s.istio_retry_503, want, "{section}");
        // Retry backoff came with Istio 1.26 (istio/istio#55639).
        let minor = section
            .split("version: '1.")
            .nth(1)
            .map(|r| {
                r.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|m| m.parse::<u32>().ok());
        assert_eq!(
            s.istio_retry_backoff,
            minor.is_none_or(|m| m >= 26),
            "{section}"
        );
        assert_eq!(
            s.warnings.iter().any(|w| w.starts_with("istio.")),
            warned,
            "{section}: {:?}",
            s.warnings
        );
    }
    for bad in ["2.1", "1", "1.x", "1.2.3.4"] {
        let text = format!("{}istio: {{version: '{bad}'}}\n", support::BASE);
        let e = Scenario::parse(&text, std::path::Path::new("t.yaml")).unwrap_err();
        assert_eq!(e.field, "istio.version", "{bad}");
        assert!(e.message.contains("not an Istio version"), "{e}");
    }
}

/// The scenario's Istio version reaches the mesh through the harness: `istio: {version:
/// '1.23'}` retries a 503 by default, the default version does not. (The test above checks only
/// the parsed flag, and the mesh tests set `MeshConfig::istio_retry_503` by hand; review r17.)
#[test]
fn the_scenario_istio_version_reaches_the_default_retry_policy() {
    use fledge_simulator::harness;
    use fledge_simulator::scenario::Scenario;
    for (section, retried) in [("", false), ("istio: {version: '1.23'}\n", true)] {
        let text = support::BASE
            .replace(
                "    latency: {p50: 10ms, p99: 40ms}\n",
                "    latency: {p50: 10ms, p99: 40ms}\n    error_rate: 0.05\n    error_code: 503\n",
            )
            .replace("duration: 8m\n", "duration: 1m\n");
        let text = format!("{text}{section}");
        let s = Scenario::parse(&text, std::path::Path::new("t.yaml"))
            .unwrap_or_else(|e| panic!("{section}: {e}"));
        let r = harness::run(&s, &s.variants[0], 1).expect("runs");
        let retries = r.counters.get("retries").copied().unwrap_or(0);
        assert_eq!(retries > 0, retried, "{section:?}: {retries} retries");
    }
}

/// Fix 9: a retry the `maxRetries` circuit breaker refuses ends the request with flag UO, not
/// URX; URX is for attempts run out (envoy `source/common/router/router.cc`: `NoOverflow` sets
/// UpstreamOverflow, `NoRetryLimitExceeded` sets UpstreamRetryLimitExceeded).
#[test]
fn retry_overflow_is_flagged_uo_and_exhausted_attempts_urx() {
    let cases = [
        // (maxRetries, attempts, overflow seen, exhaustion seen)
        (1, 20, true, false),
        (1000, 1, false, true),
    ];
    for (max_retries, attempts, want_uo, want_urx) in cases {
        let m = format!(
            "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    connectionPool:\n      http:\n        maxRetries: {max_retries}\n---\n{VS_HEAD}      retries: {{attempts: {attempts}, retryOn: 5xx}}\n"
        );
        let mut mesh = mesh_with(one_version(3, 400.0), &m);
        let v = mesh.version_id("podinfo", "primary").unwrap();
        mesh.apply(Action::SetErrorRate {
            version: v,
            rate: 0.5,
        })
        .unwrap();
        mesh.run_until(20 * SECONDS);
        let uo = count_flags(&mesh, |f| f & flags::UO != 0);
        let urx = count_flags(&mesh, |f| f & flags::URX != 0);
        let c = mesh.client_id("client").unwrap();
        assert_eq!(
            mesh.proxy_counters(c, v).retry_overflow > 0,
            want_uo,
            "maxRetries {max_retries}"
        );
        assert_eq!(uo > 0, want_uo, "maxRetries {max_retries}: {uo} UO");
        assert_eq!(urx > 0, want_urx, "maxRetries {max_retries}: {urx} URX");
        assert_eq!(
            count_flags(&mesh, |f| f & flags::UO != 0 && f & flags::URX != 0),
            0
        );
    }
}

/// Fix 9: mirroring is done by the router, after the fault filter: an aborted request is not
/// mirrored, a delayed one is mirrored when its delay ends (envoy
/// `docs/root/configuration/http/http_filters/fault_filter.rst`: the fault filter sits before
/// the router; `route_components.proto` `request_mirror_policies`).
#[test]
fn mirrors_are_sent_after_fault_injection() {
    let route = "kind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination: {host: podinfo-primary}\n      mirror: {host: podinfo-primary}\n      mirrorPercentage: {value: 100}\n";
    let cases = [
        // (fault, run for, mirrored copies: none / some)
        ("", 2 * SECONDS, true),
        (
            "      fault: {abort: {httpStatus: 503, percentage: {value: 100}}}\n",
            2 * SECONDS,
            false,
        ),
        (
            "      fault: {delay: {fixedDelay: 1s, percentage: {value: 100}}}\n",
            SECONDS / 2,
            false,
        ),
        (
            "      fault: {delay: {fixedDelay: 1s, percentage: {value: 100}}}\n",
            2 * SECONDS,
            true,
        ),
    ];
    for (fault, until, want) in cases {
        let mut mesh = mesh_with(one_version(9, 100.0), &format!("{route}{fault}"));
        mesh.run_until(until);
        let c = mesh.client_id("client").unwrap();
        let v = mesh.version_id("podinfo", "primary").unwrap();
        assert!(mesh.stats().requests > 20);
        assert_eq!(
            mesh.proxy_counters(c, v).mirrored > 0,
            want,
            "{fault:?} until {until}"
        );
    }
}

/// A mirror names a destination as a route does: the service's host without a subset mirrors to
/// the cluster over the whole service (istio/istio `pilot/pkg/networking/core/route/route.go`:
/// the mirror policy's cluster is `GetDestinationCluster` of the mirror, `outbound|port||host`
/// when it sets no subset); a subset or a version's own host mirrors to that version; anything
/// else is warned about and not mirrored.
#[test]
fn mirrors_go_where_the_mirror_destination_names() {
    let cases = [
        // (mirror, mirrored, warned)
        ("{host: podinfo}", true, false),
        ("{host: podinfo, subset: primary}", true, false),
        ("{host: podinfo-primary}", true, false),
        ("{host: podinfo, subset: nope}", false, true),
        ("{host: elsewhere}", false, true),
    ];
    let dr = "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  subsets:\n    - name: primary\n      labels: {app: podinfo, version: primary}\n---\n";
    for (mirror, want, warned) in cases {
        let m = format!("{dr}{VS_HEAD}      mirror: {mirror}\n");
        let mut mesh = mesh_with(one_version(9, 100.0), "");
        let warnings = mesh
            .apply_manifests(&manifest::parse(&m).expect("parses"))
            .expect("applies");
        assert_eq!(
            warnings.iter().any(|w| w.contains("mirror")),
            warned,
            "{mirror}: {warnings:?}"
        );
        mesh.run_until(2 * SECONDS);
        let c = mesh.client_id("client").unwrap();
        let v = mesh.version_id("podinfo", "primary").unwrap();
        let mirrored = mesh.proxy_counters(c, v).mirrored;
        assert_eq!(mirrored > 0, want, "{mirror}: {mirrored} mirrored");
    }
}

/// Fix 10: a ServiceProfile route has no timeout unless it sets one (Linkerd removed the 10 s
/// default in 2.9: linkerd/linkerd2#4958 "profiles: Eliminate default timeout", and the docs
/// with linkerd/website#1733); a re-applied profile without one clears the earlier timeout.
#[test]
fn linkerd_service_profile_routes_have_no_default_timeout() {
    let sp = |timeout: &str| {
        format!(
            "apiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\nmetadata:\n  name: podinfo.default.svc.cluster.local\nspec:\n  routes:\n    - name: all\n      condition:\n        pathRegex: /.*\n{timeout}"
        )
    };
    let cases: [(&[&str], bool); 3] = [
        // (profiles applied in turn, requests cut at a timeout)
        (&[""], false),
        (&["      timeout: 2s\n"], true),
        (&["      timeout: 2s\n", ""], false),
    ];
    for (profiles, want) in cases {
        let mut cfg = one_version(2, 5.0);
        cfg.data_plane = fledge_simulator::mesh::DataPlane::Linkerd;
        cfg.services[0].versions[0].behaviour.service_time = ServiceTime::Constant(12 * SECONDS);
        let mut mesh = mesh_with(cfg, "");
        for p in profiles {
            let w = mesh
                .apply_manifests(&manifest::parse(&sp(p)).unwrap())
                .unwrap();
            assert!(w.is_empty(), "{w:?}");
        }
        mesh.run_until(40 * SECONDS);
        let timed_out = count_flags(&mesh, |f| f & flags::UT != 0);
        assert_eq!(timed_out > 0, want, "{profiles:?}: {timed_out} timed out");
    }
}

/// Fix 8: `trafficPolicy.retryBudget` replaces the `maxRetries` breaker with Envoy's budget:
/// retries in flight up to `percent` of the active requests but never fewer than
/// `minRetryConcurrency`, with Istio's defaults 20% and 3 (istio/istio
/// `pilot/pkg/networking/core/cluster_traffic_policy.go`, `applyRetryBudget`; envoy
/// `api/envoy/config/cluster/v3/circuit_breaker.proto`, `RetryBudget`). A budget without a
/// `connectionPool` applies too: `applyTrafficPolicy` hands `applyConnectionPool` an empty pool
/// when none is set, and the budget is applied there. The route has no subset, so the bound is
/// read on the cluster over the whole service.
#[test]
fn destination_rule_retry_budget_bounds_retries_in_flight() {
    let cases = [
        // (trafficPolicy, the budget's floor: the bound while few requests are active)
        ("    retryBudget: {}\n", 3),
        ("    retryBudget: {minRetryConcurrency: 1}\n", 1),
        ("    retryBudget: {percent: 0, minRetryConcurrency: 2}\n", 2),
        // maxRetries is ignored once a budget is set.
        (
            "    retryBudget: {minRetryConcurrency: 1}\n    connectionPool: {http: {maxRetries: 50}}\n",
            1,
        ),
    ];
    for (policy, floor) in cases {
        let m = format!(
            "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n{policy}---\n{VS_HEAD}      retries: {{attempts: 5, retryOn: 5xx}}\n"
        );
        // Low load: few requests active, so the budget's floor is the bound.
        let mut mesh = mesh_with(one_version(11, 40.0), &m);
        let v = mesh.version_id("podinfo", "primary").unwrap();
        mesh.apply(Action::SetErrorRate {
            version: v,
            rate: 0.9,
        })
        .unwrap();
        mesh.run_until(30 * SECONDS);
        let c = mesh.client_id("client").unwrap();
        let peak = mesh.peak_retries_in_flight(c, v);
        assert!(peak <= floor, "{policy}: peak {peak}");
        assert!(
            mesh.proxy_counters(c, v).retry_overflow > 0,
            "{policy}: the budget was reached"
        );
    }
}

/// Retries in flight through a route without a subset are observed on the cluster over the
/// whole service, where that route sends: bounded by `maxRetries`, and not 0 (they were read
/// from the per-version subset cluster only, so the retry-budget test in `mesh_exact.rs` and
/// any bound on retries through such a route could not fail; review r17).
#[test]
fn retries_in_flight_are_observed_on_the_cluster_over_the_whole_service() {
    let m = format!(
        "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    connectionPool: {{http: {{maxRetries: 3}}}}\n---\n{VS_PODINFO}      retries: {{attempts: 5, retryOn: 5xx}}\n"
    );
    let mut mesh = mesh_with(podinfo(3, 3, 1000.0), &m);
    let v = mesh.version_id("podinfo", "primary").unwrap();
    mesh.apply(Action::SetErrorRate {
        version: v,
        rate: 0.5,
    })
    .unwrap();
    mesh.run_until(20 * SECONDS);
    let c = mesh.client_id("client").unwrap();
    assert!(
        mesh.proxy_counters(c, v).retry_overflow > 0,
        "the limit was reached"
    );
    let peak = mesh.peak_retries_in_flight(c, v);
    assert!(peak > 0 && peak <= 3, "peak retries in flight {peak}");
}

/// A retry budget's floor is reached, not only respected (review r17 finding 4: the test above
/// also passes with a budget that refuses every retry). Envoy's budget never goes below `min_retry_concurrency` (envoy
/// `source/common/upstream/resource_manager_impl.h`, `RetryBudgetImpl::max`): under steady
/// failures at low load the peak of retries in flight reaches the floor exactly.
#[test]
fn a_retry_budget_lets_exactly_its_floor_of_retries_through_at_low_load() {
    let cases = [
        // (retryBudget, the floor)
        ("{}", 3),
        ("{minRetryConcurrency: 1}", 1),
        ("{percent: 0, minRetryConcurrency: 2}", 2),
    ];
    for (budget, floor) in cases {
        let m = format!(
            "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    retryBudget: {budget}\n---\n{VS_PODINFO}      retries: {{attempts: 5, retryOn: 5xx}}\n"
        );
        let mut mesh = mesh_with(podinfo(11, 2, 40.0), &m);
        let v = mesh.version_id("podinfo", "primary").unwrap();
        mesh.apply(Action::SetErrorRate {
            version: v,
            rate: 0.9,
        })
        .unwrap();
        mesh.run_until(30 * SECONDS);
        let c = mesh.client_id("client").unwrap();
        assert_eq!(
            mesh.peak_retries_in_flight(c, v),
            floor,
            "retryBudget {budget}"
        );
        assert!(
            mesh.proxy_counters(c, v).retries > 0,
            "retryBudget {budget}"
        );
    }
}

/// Fix 8: DestinationRule fields the simulator reads but does not model are warned about,
/// never dropped in silence (istio/istio `cluster_traffic_policy.go`: `consecutiveLocalOriginFailures`
/// counts only with `splitExternalLocalOriginErrors`; `outlierDetectionHttpErrorCodes` redefines
/// the errors).
#[test]
fn destination_rule_outlier_fields_not_modelled_are_warned() {
    let cases = [
        // Simulated (outlier_detection.rs): no warning.
        (
            "splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3",
            "",
        ),
        (
            "consecutiveLocalOriginFailures: 3",
            "has no effect without splitExternalLocalOriginErrors",
        ),
        (
            "outlierDetectionHttpErrorCodes: [500, 503]",
            "outlierDetectionHttpErrorCodes` is not simulated",
        ),
        ("consecutive5xxErrors: 3", ""),
    ];
    for (fields, warning) in cases {
        let m = format!(
            "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    outlierDetection: {{{fields}}}\n"
        );
        let warnings = manifest::parse(&m).expect("parses").warnings;
        if warning.is_empty() {
            assert!(warnings.is_empty(), "{fields}: {warnings:?}");
        } else {
            assert!(
                warnings.iter().any(|w| w.contains(warning)),
                "{fields}: {warnings:?}"
            );
        }
    }
}

/// Fix 4: a timeout that abandons an attempt at the pod resets its stream, and the server
/// sidecar reports what it saw: its downstream closed before any response, response code 0
/// with flag DC, at the reset (envoy access-log docs: `%RESPONSE_CODE%` 0 "means that the
/// server never sent the beginning of a response ... the (downstream) client disconnected";
/// flag `DC` downstream connection termination). The app is not interrupted: it keeps its
/// worker until it has served the request, and that late answer is reported by nobody. An
/// attempt abandoned on its way (the try ends while the request still crosses the network)
/// is reported so when it arrives, once per attempt, as scenarios/README.md says.
#[test]
fn a_timeout_at_the_pod_is_reported_by_the_destination_as_code_0_dc() {
    use fledge_simulator::engine::MILLIS;
    use fledge_simulator::telemetry::{Reporter, Selector};
    let per_try = |ms| {
        format!("      retries: {{attempts: 1, perTryTimeout: {ms}ms, retryOn: connect-failure}}\n")
    };
    let cases = [
        // (route block, one way in microseconds (100: the default) and service milliseconds,
        // what the destination reports, the
        // range of the mean reported duration in milliseconds)
        (
            "      timeout: 100ms\n".to_string(),
            (100, 200),
            (0, flags::DC),
            50..=100,
        ),
        (per_try(100), (100, 200), (0, flags::DC), 50..=100),
        // The answer comes before the timeout: the pod's own code, after its service time.
        (
            "      timeout: 300ms\n".to_string(),
            (100, 200),
            (200, 0),
            125..=250,
        ),
        // Every try is abandoned on the wire: 20 ms per try, 50 ms one way.
        (per_try(20), (50_000, 5), (0, flags::DC), 0..=20),
    ];
    for (block, (one_way, service), want, mean_ms) in cases {
        let mut cfg = one_version(11, 20.0);
        cfg.network.one_way = one_way * 1_000;
        cfg.services[0].versions[0].behaviour = fledge_simulator::mesh::Behaviour {
            workers: 64,
            service_time: ServiceTime::Constant(service * MILLIS),
            ..Default::default()
        };
        let mut mesh = mesh_with(cfg, &format!("{VS_HEAD}{block}"));
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
        let codes: Vec<(u16, u16)> = reported.iter().map(|x| (x.0, x.1)).collect();
        assert_eq!(codes, vec![want], "{block}");
        let w = mesh.destination_stats(v, 0, mesh.now());
        // Every attempt that reached the pod was served to the end, and reported once.
        let served: u64 = mesh.pod_requests(v).iter().sum();
        assert_eq!(w.requests, served, "{block}");
        assert!(served > 150, "{block}: {served}");
        let mean = w.mean_ms().unwrap();
        assert!(mean_ms.contains(&(mean as u64)), "{block}: mean {mean} ms");
    }
}

/// Fix 9: a workload PeerAuthentication's `portLevelMtls` decides the mode of the port the pods
/// serve on, over its own `mtls` and any wider policy; an UNSET port inherits the workload's
/// mode; another port's entry changes nothing (istio/istio `pilot/pkg/security/authn/
/// policy_applier.go`: `ComposePeerAuthentication` fills `PerPort` from the workload policy
/// only, `GetMutualTLSModeForPort` reads it by the endpoint's port). The client has no
/// sidecar, so it speaks plaintext and fails exactly where the mode is STRICT.
#[test]
fn peer_authentication_port_level_mtls_decides_the_served_port() {
    let ns_strict =
        "kind: PeerAuthentication\nmetadata: {name: ns}\nspec:\n  mtls: {mode: STRICT}\n";
    let workload = |mtls: &str, ports: &str| {
        format!(
            "kind: PeerAuthentication\nmetadata: {{name: w}}\nspec:\n  selector: {{matchLabels: {{app: podinfo}}}}\n{mtls}  portLevelMtls: {{{ports}}}\n"
        )
    };
    let strict = "  mtls: {mode: STRICT}\n";
    let permissive = "  mtls: {mode: PERMISSIVE}\n";
    let cases = [
        // (manifests, the pods' port, plaintext refused)
        (workload(strict, "9898: {mode: PERMISSIVE}"), 9898, false),
        (workload(strict, "9898: {mode: PERMISSIVE}"), 8080, true),
        (workload(permissive, "9898: {mode: STRICT}"), 9898, true),
        (workload(strict, "9898: {mode: UNSET}"), 9898, true),
        (workload(strict, "'9898': {mode: DISABLE}"), 9898, false),
        (
            format!(
                "{ns_strict}---\n{}",
                workload("", "9898: {mode: PERMISSIVE}")
            ),
            9898,
            false,
        ),
        (
            format!("{ns_strict}---\n{}", workload("", "9898: {mode: UNSET}")),
            9898,
            true,
        ),
    ];
    for (manifests, port, refused) in cases {
        let mut cfg = one_version(3, 50.0);
        cfg.services[0].target_port = port;
        cfg.clients[0].sidecar = false;
        let mut mesh = mesh_with(cfg, &manifests);
        mesh.run_until(5 * SECONDS);
        let reset = count_flags(&mesh, |f| f & flags::UC != 0) > 0;
        assert_eq!(reset, refused, "port {port}:\n{manifests}");
    }
}

/// Istio's validation refuses a `portLevelMtls` without a workload selector, an empty one, and
/// a key that is not a port (istio/istio `pkg/config/validation/validation.go`,
/// `ValidatePeerAuthentication`; `testdata/crds/peerauth-invalid.yaml`).
#[test]
fn peer_authentication_port_level_mtls_is_validated_as_istio_does() {
    let cases = [
        (
            "  portLevelMtls: {9898: {mode: STRICT}}\n",
            "requires selector",
        ),
        (
            "  selector: {matchLabels: {}}\n  portLevelMtls: {9898: {mode: STRICT}}\n",
            "requires selector",
        ),
        (
            "  selector: {matchLabels: {app: podinfo}}\n  portLevelMtls: {}\n",
            "at least one port",
        ),
        (
            "  selector: {matchLabels: {app: podinfo}}\n  portLevelMtls: {http: {mode: STRICT}}\n",
            "port number",
        ),
        (
            "  selector: {matchLabels: {app: podinfo}}\n  portLevelMtls: {9898: {mode: SOMETIMES}}\n",
            "spec.portLevelMtls.9898.mode",
        ),
    ];
    for (spec, want) in cases {
        let text = format!("kind: PeerAuthentication\nmetadata: {{name: p}}\nspec:\n{spec}");
        let err = manifest::parse(&text).expect_err(spec).to_string();
        assert!(err.contains(want), "{spec}: {err}");
    }
}

/// Fix 9: a request the client's proxy answers itself, before any attempt reached a pod (no
/// route `NR`, fault abort `FI`, no healthy upstream `UH`), has no upstream peer, and Istio's
/// stats filter labels its destination workload, namespace and version `unknown` (Istio docs,
/// "Istio Standard Metrics": a label is `unknown` when its value cannot be determined;
/// istio/istio `tests/integration/telemetry/api/stats_test.go` on unknown destination labels);
/// the service stays named. A request no route takes is reported too, not only counted. A
/// pending overflow has no upstream host either: Envoy's pool fails the stream with `Overflow`
/// and a null host (`conn_pool_base.cc` `newStreamImpl`: `onPoolFailure(nullptr, ...)` on
/// "max pending streams overflow"), which the router records as the upstream host
/// (`upstream_request.cc` `onPoolFailure`); an overflow of `http2MaxRequests` when a stream is
/// attached carries the connection's host (`attachStreamToClient`), so it keeps the version.
#[test]
fn requests_answered_by_the_client_proxy_report_an_unknown_destination() {
    let header_only = "kind: VirtualService\nmetadata: {name: p}\nspec:\n  hosts: [podinfo]\n  http:\n    - match: [{headers: {x-user: {exact: tester}}}]\n      route:\n        - destination: {host: podinfo}\n";
    let abort = format!(
        "{VS_HEAD}      fault: {{abort: {{httpStatus: 503, percentage: {{value: 100}}}}}}\n"
    );
    let pool = |limits: &str| {
        format!(
            "kind: DestinationRule\nmetadata: {{name: p}}\nspec:\n  host: podinfo\n  trafficPolicy:\n    connectionPool: {limits}\n"
        )
    };
    let pending = pool("{tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}");
    let active = pool("{http: {http2MaxRequests: 1, h2UpgradePolicy: UPGRADE}}");
    let cases = [
        // (manifests, requests per second, scaled to zero, code, flags, destination workload)
        (String::new(), 50.0, false, "200", "-", "podinfo-primary"),
        (header_only.to_string(), 50.0, false, "404", "NR", "unknown"),
        (abort, 50.0, false, "503", "FI", "unknown"),
        (String::new(), 50.0, true, "503", "UH", "unknown"),
        (pending, 2000.0, false, "503", "UO", "unknown"),
        (active, 2000.0, false, "503", "UO", "podinfo-primary"),
    ];
    for (manifests, rps, empty, code, flag, workload) in cases {
        let mut mesh = mesh_with(one_version(9, rps), &manifests);
        if empty {
            let v = mesh.version_id("podinfo", "primary").unwrap();
            mesh.apply(Action::Scale {
                version: v,
                pods: 0,
            })
            .unwrap();
        }
        mesh.run_until(10 * SECONDS);
        let text = mesh.render_prometheus();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("istio_requests_total{reporter=\"source\"")
                    && l.contains(&format!(
                        "response_code=\"{code}\",response_flags=\"{flag}\""
                    ))
            })
            .collect();
        assert_eq!(series.len(), 1, "{flag}:\n{text}");
        let line = series[0];
        for label in [
            format!("destination_workload=\"{workload}\""),
            "destination_service=\"podinfo.default.svc.cluster.local\"".to_string(),
        ] {
            assert!(line.contains(&label), "{flag}: {line}");
        }
        if workload == "unknown" {
            for label in ["destination_version", "destination_workload_namespace"] {
                assert!(
                    line.contains(&format!("{label}=\"unknown\"")),
                    "{flag}: {line}"
                );
            }
        }
        let requests: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(requests > 300.0, "{flag}: {line}");
    }
}
