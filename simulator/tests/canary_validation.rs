//! A Canary's settings that a mesh's API or Flagger would read otherwise: a Gateway API request
//! timeout outside GEP-2257 is bad input at its line, and a threshold below 1, which Flagger
//! reads as 1, is read as 1 and warned about wherever a Canary is patched (`compare`, `sweep`);
//! Fledge's own fields in a Flagger Canary, which Flagger's CRD prunes, are warned about.

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
