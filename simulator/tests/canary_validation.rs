//! A Canary's settings that a mesh's API or Flagger would read otherwise: a Gateway API request
//! timeout outside GEP-2257 is bad input at its line; a `trafficPolicy` or `retries` value
//! Istio refuses is bad input at the Canary's line, and a `trafficPolicy` under a provider
//! without DestinationRules is warned unused; the Canary's own timeout is not warned about as
//! replaced; and a threshold below 1, which Flagger reads as 1, is read as 1 and warned about
//! wherever a Canary is patched (`compare`, `sweep`). Fledge's own fields in a Flagger Canary,
//! which Flagger's CRD prunes, are warned about. (Durations: durations.rs.)

mod support;

use serde_json::Value;
use support::*;

fn benchmark(name: &str) -> String {
    format!(
        "{}/../scenarios/benchmarks/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn a_gateway_api_timeout_outside_gep_2257_is_bad_input_at_its_line() {
    let text = base_with(
        "  spec:\n    targetRef:\n",
        "  spec:\n    provider: gatewayapi:v1\n    targetRef:\n",
    )
    .replacen(
        "      port: 9898\n",
        "      port: 9898\n      timeout: 1.5s\n",
        1,
    );
    assert_bad_input(
        "gateway-timeout.yaml",
        &text,
        line_of(&text, "timeout: 1.5s"),
        "canary.spec.service.timeout",
        "GEP-2257",
    );
}

#[test]
fn a_threshold_below_one_is_read_as_one_and_warned_about_in_compare_and_sweep() {
    let file = benchmark("errors-10x-100rps");
    let warning = "spec.analysis.threshold: -3 is below 1; raised to 1";
    let out = sim(&[
        "compare",
        &file,
        "--seeds",
        "3",
        "--json",
        "--vary",
        "analysis.threshold=-3,1",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("policy analysis.threshold=-3: {warning}")),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("policy analysis.threshold=1:"),
        "{}",
        out.stderr
    );
    let v: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    assert_eq!(
        v["analysis.threshold=-3"], v["analysis.threshold=1"],
        "-3 reads as 1: {v}"
    );

    let out = sim(&[
        "sweep",
        &file,
        "--seeds",
        "1",
        "--vary",
        "analysis.threshold=-3",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("analysis.threshold=-3: {warning}")),
        "{}",
        out.stderr
    );
}

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

/// A `flagger.app/v1beta1` Canary with Fledge's own fields (here the statistical judge and a
/// metric's margin) rehearses what no cluster would run: Flagger's CRD prunes the fields.
/// `validate`, `run` and `plan` warn at each field's line; as `fledge.dev/v1alpha1` it is quiet.
#[test]
fn fledge_only_fields_in_a_flagger_canary_are_warned_about_at_their_line() {
    let flagger = base_with(
        "      stepWeight: 10\n",
        "      stepWeight: 10\n      judge: statistical\n",
    )
    .replacen(
        "          interval: 1m\n",
        "          interval: 1m\n          margin: \"1\"\n",
        1,
    );
    let fledge = flagger.replacen(
        "apiVersion: flagger.app/v1beta1",
        "apiVersion: fledge.dev/v1alpha1",
        1,
    );
    let judge = format!(
        "canary.spec.analysis.judge (line {}): a Fledge-only field in a flagger.app/v1beta1 Canary",
        line_of(&flagger, "judge: statistical")
    );
    let margin = format!(
        "canary.spec.analysis.metrics[0].margin (line {})",
        line_of(&flagger, "margin:")
    );
    let file = write("fledge-only-flagger.yaml", &flagger);
    for command in ["validate", "run"] {
        let out = sim(&[command, path_str(&file)]);
        // The run's own outcome is not the point here: only that it is not bad input.
        assert_ne!(out.code, 2, "{}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains(&judge), "{command}: {}", out.stderr);
        assert!(out.stderr.contains(&margin), "{command}: {}", out.stderr);
        assert!(
            out.stderr.contains("use apiVersion fledge.dev/v1alpha1"),
            "{}",
            out.stderr
        );
    }
    let file = write("fledge-only-fledge.yaml", &fledge);
    let out = sim(&["validate", path_str(&file)]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains("Fledge-only"), "{}", out.stderr);

    // `plan` on the Canary alone: `FILE:LINE: field`.
    let canary = |scenario: &str| -> String {
        let start = scenario.find("canary:\n").expect("a canary") + "canary:\n".len();
        scenario[start..]
            .lines()
            .take_while(|l| l.starts_with("  "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect()
    };
    let text = canary(&flagger);
    let file = write("fledge-only-canary.yaml", &text);
    let out = sim(&["plan", path_str(&file)]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let at = format!(
        "{}:{}: spec.analysis.judge: a Fledge-only field",
        path_str(&file),
        line_of(&text, "judge: statistical")
    );
    assert!(out.stderr.contains(&at), "{}", out.stderr);
    let file = write("fledge-only-canary-fledge.yaml", &canary(&fledge));
    let out = sim(&["plan", path_str(&file)]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains("Fledge-only"), "{}", out.stderr);
}
