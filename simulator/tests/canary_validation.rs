//! A Canary's settings that a mesh's API or Flagger would read otherwise: a Gateway API request
//! timeout outside GEP-2257 is bad input at its line, and a threshold below 1, which Flagger
//! reads as 1, is read as 1 and warned about wherever a Canary is patched (`compare`, `sweep`).

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
