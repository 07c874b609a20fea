//! A Canary's MetricTemplates in a scenario: found beside the Canary, rendered by the
//! controller's renderer, and checked when the scenario loads; what the simulator cannot
//! evaluate is an error naming the metric and the part.

use std::path::Path;

use fledge_simulator::scenario::{Scenario, ScenarioError};

const LIBRARY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../scenarios/flagger-metric-templates.yaml"
);

/// The library's template scenario with `edit` applied to its text.
fn load_edited(edit: impl Fn(&str) -> String) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(LIBRARY).unwrap_or_else(|e| panic!("{LIBRARY}: {e}"));
    Scenario::parse(&edit(&text), Path::new("templates.yaml"))
}

#[test]
fn flaggers_canary_loads_with_the_templates_beside_it() {
    let s = load_edited(str::to_string).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<_> = s
        .metric_templates
        .iter()
        .filter_map(|t| t.metadata.name.clone())
        .collect();
    assert_eq!(names, ["latency", "error-rate"]);
}

#[test]
fn a_template_the_simulator_cannot_evaluate_is_an_error_naming_the_metric_and_the_part() {
    let e = load_edited(|t| t.replacen("histogram_quantile(", "quantile_over_time(", 1))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("spec.analysis.metrics[1]"), "{e}");
    assert!(e.contains("metric `latency`"), "{e}");
    assert!(e.contains("quantile_over_time"), "{e}");
}

#[test]
fn a_missing_template_is_an_error_naming_it() {
    let e = load_edited(|t| {
        t.replacen(
            "name: latency\n    namespace: istio-system",
            "name: slow\n    namespace: istio-system",
            1,
        )
    })
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        e.contains("MetricTemplate istio-system/latency not found"),
        "{e}"
    );
}

#[test]
fn a_template_with_an_unknown_placeholder_is_an_error_naming_it() {
    let e = load_edited(|t| t.replacen("{{ target }}", "{{ pod }}", 1))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("`{{ pod }}`"), "{e}");
}
