//! Review r16b of issue 16: what the Canary copies into Istio's objects that Istio refuses,
//! beyond the durations of `trafficPolicy`, and a warning a Canary's own timeout gets.

mod support;

use support::*;

/// BASE with `extra` (indented under `service:`) added after the Canary's port.
fn with_service(extra: &str) -> String {
    base_with("      port: 9898\n", &format!("      port: 9898\n{extra}"))
}

/// Istio's CRD and validation refuse these settings (`tls.mode` is an enum; `trafficPolicy`,
/// `outlierDetection` and a route's `retries` are objects; `maxConnections` must be
/// non-negative, `validateConnectionPool`), and the simulator's own readers refuse them: the
/// Canary loader reads the objects the router would write from it with those readers, so each
/// is bad input at the Canary's line (it was a NODATA rollback and exit 1, once copied).
#[test]
fn a_bad_non_duration_value_in_the_canary_traffic_policy_is_bad_input_at_its_line() {
    for (name, extra, needle, field) in [
        (
            "tls-mode.yaml",
            "      trafficPolicy:\n        tls: {mode: BANANA}\n",
            "tls: {mode",
            "canary.spec.service.trafficPolicy.tls.mode",
        ),
        (
            "policy-scalar.yaml",
            "      trafficPolicy: 5\n",
            "trafficPolicy: 5",
            "canary.spec.service.trafficPolicy",
        ),
        (
            "outlier-scalar.yaml",
            "      trafficPolicy:\n        outlierDetection: soon\n",
            "outlierDetection: soon",
            "canary.spec.service.trafficPolicy.outlierDetection",
        ),
        (
            "retries-scalar.yaml",
            "      retries: 3\n",
            "retries: 3",
            "canary.spec.service.retries",
        ),
        (
            "max-connections.yaml",
            "      trafficPolicy:\n        connectionPool: {tcp: {maxConnections: -1}}\n",
            "connectionPool:",
            "canary.spec.service.trafficPolicy.connectionPool.tcp.maxConnections",
        ),
    ] {
        let text = with_service(extra);
        assert_bad_input(name, &text, line_of(&text, needle), field, "");
    }
}

/// Istio's `ValidateHTTPRetry` checks `retries.backoff` with `ValidateDuration` (and the CRD
/// asks `>= 1ms`), as it checks `perTryTimeout`; the Canary's `retries` is copied verbatim into
/// the VirtualService, and a scenario's VirtualService reader checks it too (both once knew
/// `backoff` without checking it).
#[test]
fn an_istio_retry_backoff_istio_refuses_is_bad_input_at_its_line() {
    let text = with_service("      retries: {attempts: 2, backoff: 0s}\n");
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

/// The harness warned that "the controller's routes replace its timeout; set the Canary's
/// service.timeout instead" when the VirtualService replaced was the controller's own earlier
/// apply, which carries the Canary's `service.timeout`: only a scenario's own is warned about.
#[test]
fn a_canary_service_timeout_is_not_warned_about_as_replaced() {
    for extra in [
        "      timeout: 2s\n",
        "      retries: {attempts: 2, perTryTimeout: 1s}\n",
    ] {
        let file = write("canary-timeout.yaml", &with_service(extra));
        let out = sim(&["run", path_str(&file)]);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(
            !all.contains("the controller's routes replace its"),
            "{extra}: {all}"
        );
    }
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

/// Only Istio's DestinationRules carry `service.trafficPolicy`: under another provider (named
/// by the Canary, or the data plane's default) a value Istio would refuse is not checked, and
/// the policy is reported unused.
#[test]
fn a_traffic_policy_under_a_provider_without_destination_rules_is_warned_unused() {
    let policy = "      trafficPolicy:\n        outlierDetection: {interval: 0s}\n";
    let gateway = base_with("    targetRef:", "    provider: gatewayapi\n    targetRef:").replacen(
        "      port: 9898\n",
        &format!("      port: 9898\n{policy}"),
        1,
    );
    let linkerd = base_with("namespace: test\n", "namespace: test\nmesh: linkerd\n").replacen(
        "      port: 9898\n",
        &format!("      port: 9898\n{policy}"),
        1,
    );
    for (name, text) in [
        ("policy-gateway.yaml", gateway),
        ("policy-linkerd.yaml", linkerd),
    ] {
        let file = write(name, &text);
        let out = sim(&["validate", path_str(&file)]);
        assert_eq!(out.code, 0, "{name}: {}{}", out.stdout, out.stderr);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(
            all.contains("spec.service.trafficPolicy: not used"),
            "{name}: {all}"
        );
    }
}
