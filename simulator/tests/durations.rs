//! Durations read as the real APIs read them: Go's `time.ParseDuration` for Istio's fields, the
//! Gateway API's own grammar (GEP-2257) for its timeouts, and the bounds Envoy and Istio's
//! validation put on each field (an outlier sweep interval above 0, a route timeout of at least
//! 1ms under Istio, a zero timeout that disables it under the Gateway API), each refused at its
//! line when out of them. (From reviews r16 and r16b of issue 16, the one duration grammar.)

mod support;

use fledge_controller::spec::parse_nanos;
use fledge_simulator::manifest::{self, ManifestError};
use support::*;

/// BASE with its DestinationRule given `trafficPolicy.outlierDetection.interval: VALUE`.
fn with_outlier_interval(value: &str) -> String {
    base_with(
        "    host: podinfo\n",
        &format!(
            "    host: podinfo\n    trafficPolicy:\n      outlierDetection:\n        interval: {value}\n"
        ),
    )
}

/// `run` on this scenario never ends (an outlier sweep every 0 ns), so only `validate` is asked
/// here: it must refuse what Envoy (`interval` > 0) and Istio's CRD (at least 1ms) refuse.
#[test]
fn an_outlier_detection_interval_of_zero_is_refused_at_its_line() {
    for value in ["0s", "1ns"] {
        let text = with_outlier_interval(value);
        let file = write(&format!("outlier-interval-{value}.yaml"), &text);
        let out = sim(&["validate", path_str(&file)]);
        assert_eq!(
            out.code, 2,
            "interval {value}: {}{}",
            out.stdout, out.stderr
        );
        let prefix = format!(
            "{}:{}: manifests: ",
            file.display(),
            line_of(&text, "interval: ")
        );
        assert!(out.stderr.contains(&prefix), "{prefix} in {}", out.stderr);
        assert!(
            out.stderr.contains("outlierDetection.interval"),
            "{}",
            out.stderr
        );
    }
}

/// Envoy: a route timeout of 0 disables the timeout, and the Gateway API says a zero duration
/// disables it (GEP-2257): under `provider: gatewayapi` a Canary `timeout: 0s` times nothing out.
#[test]
fn a_gateway_api_route_timeout_of_zero_disables_the_timeout() {
    let text = base_with(
        "      port: 9898
",
        "      port: 9898
      timeout: 0s
",
    )
    .replace(
        "  spec:
    targetRef:",
        "  spec:
    provider: gatewayapi
    targetRef:",
    )
    .replace(
        "  outcome: promoted\n",
        "  outcome: promoted\n  min_success_rate: 99\n",
    );
    let file = write("timeout-zero-gateway.yaml", &text);
    let out = sim(&["run", path_str(&file)]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

/// Istio's validation refuses a VirtualService `timeout` under 1ms (`ValidateDuration` in
/// pilot's `agent` validation, called for every HTTP route's timeout and `perTryTimeout`), so a
/// Canary `timeout: 0s` routed by Istio is bad input at its line, not a disabled timeout.
#[test]
fn an_istio_route_timeout_under_a_millisecond_is_bad_input_at_its_line() {
    for (field, extra) in [
        ("timeout", "      timeout: 0s\n"),
        (
            "retries.perTryTimeout",
            "      retries: {attempts: 2, perTryTimeout: 500us}\n",
        ),
    ] {
        let text = base_with("      port: 9898\n", &format!("      port: 9898\n{extra}"));
        let file = write("timeout-zero-istio.yaml", &text);
        let out = sim(&["run", path_str(&file)]);
        assert_eq!(out.code, 2, "{field}: {}{}", out.stdout, out.stderr);
        let needle = extra.trim().split(':').next().unwrap_or_default();
        let prefix = format!("{}:{}: ", file.display(), line_of(&text, needle));
        assert!(out.stderr.contains(&prefix), "{prefix} in {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("spec.service.{field}")),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("at least 1ms"), "{}", out.stderr);
    }
}

/// A bad duration in the Canary's `service.trafficPolicy` is the user's input: exit 2 at the
/// Canary's line, as every other Canary error, not a rollback with the DestinationRule's field.
#[test]
fn a_bad_duration_in_the_canary_traffic_policy_is_bad_input_at_its_line() {
    let text = base_with(
        "      port: 9898\n",
        "      port: 9898\n      trafficPolicy:\n        outlierDetection:\n          interval: 1d\n",
    );
    let file = write("canary-policy-duration.yaml", &text);
    let out = sim(&["run", path_str(&file)]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let prefix = format!("{}:{}: ", file.display(), line_of(&text, "interval: 1d"));
    assert!(out.stderr.contains(&prefix), "{prefix} in {}", out.stderr);
}

/// Go's `time.ParseDuration` (which the module doc says it follows): fractions are truncated,
/// not rounded; the range is an int64 of nanoseconds; no whitespace around the text.
#[test]
fn durations_read_as_go_reads_them() {
    assert_eq!(parse_nanos("1.0000000005s"), Ok(1_000_000_000));
    assert_eq!(parse_nanos("0.5ns"), Ok(0));
    assert_eq!(parse_nanos("2562047h"), Ok(2_562_047 * 3_600_000_000_000));
    assert!(parse_nanos("2562048h").is_err(), "over Go's int64 range");
    assert!(parse_nanos(" 1s").is_err(), "Go refuses surrounding spaces");
}

/// The Gateway API's Duration (GEP-2257) is `^([0-9]{1,5}(h|m|s|ms)){1,4}$`: no fractions, no
/// us/ns, at most five digits a number. A real API server refuses these HTTPRoutes.
#[test]
fn a_gateway_api_timeout_takes_only_the_gateway_api_duration_grammar() {
    for value in ["1.5s", "100us", "123456s", "1h1m1s1ms1ms"] {
        let yaml = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: podinfo\n  namespace: test\nspec:\n  parentRefs:\n    - {{group: \"\", kind: Service, name: podinfo, port: 9898}}\n  rules:\n    - backendRefs:\n        - {{name: podinfo-primary, port: 9898, weight: 100}}\n      timeouts:\n        request: \"{value}\"\n"
        );
        assert!(
            matches!(manifest::parse(&yaml), Err(ManifestError::WrongType { .. })),
            "timeouts.request: {value} should be refused"
        );
    }
}

/// A `baseEjectionTime` the grammar accepts (u64 nanoseconds, past Go's int64 range) overflows
/// `max_ejection_time + base_ejection_time` in outlier detection at the first ejection: a panic
/// in a debug build, a wrapped comparison in release. Go, and so Istio's CRD, refuse it.
#[test]
fn a_huge_base_ejection_time_is_refused_not_a_panic() {
    let text = base_with(
        "      port: 9898\n",
        "      port: 9898\n      trafficPolicy:\n        outlierDetection:\n          consecutive5xxErrors: 1\n          interval: 1s\n          baseEjectionTime: 5124095h\n          maxEjectionPercent: 100\n",
    )
    .replace(
        "    latency: {p50: 10ms, p99: 40ms}\n",
        "    latency: {p50: 10ms, p99: 40ms}\n    error_rate: 0.2\n",
    )
    .replace("  outcome: promoted\n", "  outcome: rolled-back\n");
    let file = write("huge-base-ejection.yaml", &text);
    let out = sim(&["run", path_str(&file)]);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("baseEjectionTime"), "{}", out.stderr);
}

/// Istio's `ValidateHTTPRetry` checks `retries.backoff` with `ValidateDuration` (and the CRD
/// asks `>= 1ms`), as it checks `perTryTimeout`; the Canary's `retries` is copied verbatim into
/// the VirtualService, and a scenario's VirtualService reader checks it too (both once knew
/// `backoff` without checking it).
#[test]
fn an_istio_retry_backoff_istio_refuses_is_bad_input_at_its_line() {
    let text = base_with(
        "      port: 9898\n",
        "      port: 9898\n      retries: {attempts: 2, backoff: 0s}\n",
    );
    assert_bad_input(
        "canary-backoff.yaml",
        &text,
        line_of(&text, "backoff: 0s"),
        "canary.spec.service.retries.backoff",
        "at least 1ms",
    );

    let vs = "  ---\n  apiVersion: networking.istio.io/v1beta1\n  kind: VirtualService\n  metadata:\n    name: other\n    namespace: test\n  spec:\n    hosts: [podinfo]\n    http:\n      - route:\n          - destination: {host: podinfo}\n        retries: {attempts: 2, backoff: banana}\n";
    let text = base_with(
        "    host: podinfo\ncanary:",
        &format!("    host: podinfo\n{vs}canary:"),
    );
    let file = write("vs-backoff.yaml", &text);
    let out = sim(&["validate", path_str(&file)]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("retries.backoff"), "{}", out.stderr);
}

/// A scenario's own DestinationRule is read with the rules the Canary's `trafficPolicy` is
/// validated with (the controller's `TRAFFIC_POLICY_DURATIONS`): it was read with fewer
/// (`tcp.idleTimeout` took any duration, and `maxConnectionDuration`, `tcpKeepalive`,
/// `http2KeepAlive`, `warmupDurationSecs` and `warmup.duration` were neither read nor checked). Istio refuses each of these (`validateConnectionPool`,
/// `validateLoadBalancer`, the CRD's `duration(self) >= duration('1ms')`), as the Canary does.
#[test]
fn a_scenario_destination_rule_duration_istio_refuses_is_bad_input_at_its_line() {
    for policy in [
        "connectionPool: {tcp: {idleTimeout: 1500us}}",
        "connectionPool: {tcp: {maxConnectionDuration: banana}}",
        "connectionPool: {tcp: {tcpKeepalive: {time: 0s}}}",
        "connectionPool: {http: {http2KeepAlive: {interval: 0s, timeout: 1s}}}",
        "loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 0s}",
        "loadBalancer: {simple: LEAST_REQUEST, warmup: {duration: banana}}",
    ] {
        let text = base_with(
            "    host: podinfo\ncanary:",
            &format!("    host: podinfo\n    trafficPolicy:\n      {policy}\ncanary:"),
        );
        let file = write("dr-durations.yaml", &text);
        let out = sim(&["validate", path_str(&file)]);
        assert_eq!(out.code, 2, "{policy}: {}{}", out.stdout, out.stderr);
        let prefix = format!("{}:{}: ", file.display(), line_of(&text, policy));
        assert!(out.stderr.contains(&prefix), "{prefix} in {}", out.stderr);
    }
}
