//! `fledge-sim run`, `validate` and `sweep` on scenario files: exit codes (0 pass, 1 an
//! expectation failed, 2 bad input), errors that name the file, line and field, determinism.

mod support;

use std::path::Path;

use support::*;

#[test]
fn the_base_scenario_passes_and_exits_0_with_a_timeline_and_the_wall_time() {
    let file = write("base.yaml", BASE);
    let out = sim(&["run", path_str(&file)]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("Promotion completed! Scaling down podinfo"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("pass  outcome"), "{}", out.stdout);
    assert!(out.stdout.contains("s of wall time"), "{}", out.stdout);
}

#[test]
fn a_failed_expectation_exits_1_and_marks_the_check() {
    let text = base_with("  outcome: promoted", "  outcome: rolled-back");
    let file = write("expect-fails.yaml", &text);
    let out = sim(&["run", path_str(&file)]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("FAIL  outcome: expected rolled-back, got promoted"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_yaml_syntax_error_names_the_file_the_line_and_what_the_parser_expected() {
    let text = base_with("    rate: 50", "    rate: 50\n  oops: {unclosed");
    assert_bad_input(
        "yaml-error.yaml",
        &text,
        line_of(&text, "oops:"),
        "traffic",
        "did not find expected '-' indicator",
    );
}

#[test]
fn an_unknown_key_is_rejected_with_its_line_and_the_keys_expected() {
    let text = base_with("    pods: 2", "    pods: 2\n    colour: blue");
    assert_bad_input(
        "unknown-key.yaml",
        &text,
        line_of(&text, "colour: blue"),
        "service.primary.colour",
        "unknown field `colour`, expected one of `pods`, `workers`",
    );
}

#[test]
fn a_rate_event_for_an_unknown_client_is_rejected() {
    let text = base_with(
        "    deploy: {}",
        "    deploy: {}\n  - at: 2m\n    rate: {client: backend, rps: 10}",
    );
    assert_bad_input(
        "unknown-client.yaml",
        &text,
        line_of(&text, "client: backend"),
        "timeline[1].rate.client",
        "no client named `backend` in `traffic`",
    );
}

#[test]
fn route_weights_that_add_up_to_0_are_rejected_at_their_line() {
    let vs = r#"  ---
  apiVersion: networking.istio.io/v1beta1
  kind: VirtualService
  metadata:
    name: podinfo
    namespace: test
  spec:
    hosts: [podinfo]
    http:
      - route:
          - destination: {host: podinfo-primary}
            weight: 0
          - destination: {host: podinfo-canary}
            weight: 0
canary:"#;
    let text = base_with("canary:", vs);
    assert_bad_input(
        "weights.yaml",
        &text,
        line_of(&text, "weight: 0"),
        "manifests",
        "route weights add up to 0: give some destination a weight (Istio refuses a total of 0)",
    );
}

#[test]
fn a_route_to_a_service_the_scenario_does_not_simulate_is_rejected() {
    let vs = r#"  ---
  apiVersion: networking.istio.io/v1beta1
  kind: VirtualService
  metadata:
    name: podinfo
    namespace: test
  spec:
    hosts: [podinfo]
    http:
      - route:
          - destination: {host: ratings}
canary:"#;
    let text = base_with("canary:", vs);
    assert_bad_input(
        "unknown-service.yaml",
        &text,
        line_of(&text, "host: ratings"),
        "manifests",
        "unknown service `ratings`",
    );
}

#[test]
fn a_manifest_field_of_the_wrong_type_is_located_inside_the_embedded_manifests() {
    let text = base_with("    host: podinfo", "    host: podinfo\n    subsets: 7");
    assert_bad_input(
        "manifest-type.yaml",
        &text,
        line_of(&text, "subsets: 7"),
        "manifests",
        "spec.subsets",
    );
}

#[test]
fn a_canary_that_does_not_validate_is_rejected_with_the_canary_field() {
    let text = base_with("      maxWeight: 30", "      maxWeight: 130");
    assert_bad_input(
        "bad-canary.yaml",
        &text,
        line_of(&text, "maxWeight: 130"),
        "canary.spec.analysis.maxWeight",
        "the Canary does not validate",
    );
}

#[test]
fn an_expectation_naming_an_unknown_metric_is_rejected() {
    let text = base_with(
        "  outcome: promoted",
        "  outcome: promoted\n  rolled_back_by: error-rate",
    );
    assert_bad_input(
        "unknown-metric.yaml",
        &text,
        line_of(&text, "rolled_back_by"),
        "expect.rolled_back_by",
        "unknown metric `error-rate`; the Canary's metrics are: request-success-rate",
    );
}

#[test]
fn an_expectation_naming_an_unknown_counter_is_rejected() {
    let text = base_with(
        "  outcome: promoted",
        "  outcome: promoted\n  counters:\n    ejections: {min: 1}",
    );
    assert_bad_input(
        "unknown-counter.yaml",
        &text,
        line_of(&text, "ejections:"),
        "expect.counters.ejections",
        "unknown counter `ejections`; known counters: ",
    );
}

#[test]
fn an_answer_for_a_webhook_the_canary_lacks_is_rejected() {
    let text = base_with("expect:", "webhooks:\n  smoke-test: pass\nexpect:");
    assert_bad_input(
        "unknown-hook.yaml",
        &text,
        line_of(&text, "smoke-test: pass"),
        "webhooks.smoke-test",
        "the Canary has no webhook named `smoke-test`",
    );
}

#[test]
fn an_error_in_a_manifest_file_names_that_file_and_its_line() {
    let manifest = "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: podinfo\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination: {host: reviews}\n";
    let manifest_file = write("routes.yaml", manifest);
    let text = base_with("canary:", "manifest_files: [routes.yaml]\ncanary:");
    let file = write("manifest-file.yaml", &text);
    let out = sim(&["validate", path_str(&file)]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let prefix = format!(
        "{}:{}: manifest_files[0]: ",
        manifest_file.display(),
        line_of(manifest, "host: reviews")
    );
    assert!(out.stderr.contains(&prefix), "{prefix}\n{}", out.stderr);
}

#[test]
fn a_canary_file_that_does_not_validate_is_named_with_its_own_line() {
    let canary_start = BASE.find("canary:\n").expect("BASE has a canary");
    let canary_end = BASE.find("timeline:").expect("BASE has a timeline");
    let canary: String = BASE[canary_start..canary_end]
        .lines()
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect::<String>()
        .replace("maxWeight: 30", "maxWeight: 0");
    let canary_file = write("podinfo-canary.yaml", &canary);
    let text = format!(
        "{}canary_file: podinfo-canary.yaml\n{}",
        &BASE[..canary_start],
        &BASE[canary_end..]
    );
    let file = write("canary-file.yaml", &text);
    let out = sim(&["validate", path_str(&file)]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let prefix = format!(
        "{}:{}: spec.analysis.maxWeight: the Canary does not validate",
        canary_file.display(),
        line_of(&canary, "maxWeight: 0")
    );
    assert!(out.stderr.contains(&prefix), "{prefix}\n{}", out.stderr);
}

#[test]
fn a_threshold_variant_of_a_statistical_canary_drops_the_settings_only_that_judge_reads() {
    let text = base_with("      interval: 30s\n", "      interval: 30s\n      judge: statistical\n")
        .replace("          interval: 1m\n", "          interval: 1m\n          margin: \"5\"\n")
        .replace(
            "expect:\n  outcome: promoted\n",
            "variants:\n  - {name: threshold, judge: threshold, expect: {no_false_rollback: true}}\n  - {name: statistical, judge: statistical, alpha: 0.05, expect: {no_false_rollback: true}}\n",
        );
    let file = write("variants.yaml", &text);
    let out = sim(&["validate", path_str(&file)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("2 variants"), "{}", out.stdout);
}

#[test]
fn a_missing_scenario_file_exits_2_naming_it() {
    let out = sim(&["run", "/nonexistent/scenario.yaml"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("/nonexistent/scenario.yaml"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_same_seed_gives_an_identical_json_result_and_another_seed_a_different_one() {
    let file = write("determinism.yaml", BASE);
    let a = sim(&["run", path_str(&file), "--json", "--seed", "3"]);
    let b = sim(&["run", path_str(&file), "--json", "--seed", "3"]);
    let c = sim(&["run", path_str(&file), "--json", "--seed", "4"]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert!(a.stdout.trim_start().starts_with('['), "{}", a.stdout);
    assert_eq!(a.stdout, b.stdout);
    assert_ne!(a.stdout, c.stdout);
}

#[test]
fn a_sweep_on_two_threads_counts_the_same_outcomes_as_on_one() {
    // A canary that fails 1.5% of requests: some seeds roll it back, some promote it.
    let text = base_with(
        "    latency: {p50: 10ms, p99: 40ms}",
        "    latency: {p50: 10ms, p99: 40ms}\n  canary:\n    error_rate: 0.012",
    );
    let file = write("sweep.yaml", &text);
    let one = sim(&[
        "sweep",
        path_str(&file),
        "--seeds",
        "12",
        "--threads",
        "1",
        "--json",
    ]);
    let two = sim(&[
        "sweep",
        path_str(&file),
        "--seeds",
        "12",
        "--threads",
        "2",
        "--json",
    ]);
    assert_eq!(one.code, 0, "{}", one.stderr);
    assert_eq!(two.code, 0, "{}", two.stderr);
    let parse = |s: &str| -> serde_json::Value { serde_json::from_str(s).expect("sweep JSON") };
    let (a, b) = (parse(&one.stdout), parse(&two.stdout));
    assert_eq!(a, b);
    assert_eq!(a[0]["runs"], 12);
}

#[test]
fn run_writes_a_self_contained_html_report() {
    let file = write("report.yaml", BASE);
    let report = file.with_extension("html");
    let out = sim(&["run", path_str(&file), "--report", path_str(&report)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let html = std::fs::read_to_string(&report).expect("report written");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg"), "the report has plots");
    assert!(!html.contains("http://") && !html.contains("https://"));
}

#[test]
fn every_scenario_of_the_library_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let out = sim(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), files.len(), "{}", out.stdout);
}

#[test]
fn a_report_path_that_cannot_be_created_exits_2_before_simulating() {
    let file = write("report-nowhere.yaml", BASE);
    let out = sim(&["run", path_str(&file), "--report", "/nonexistent/x.html"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("error: --report /nonexistent/x.html: No such file or directory"),
        "{}",
        out.stderr
    );
    // Nothing was simulated: no timeline, no result.
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

/// `fledge-sim args FILE` on `text` written to FILE with and without a UTF-8 byte order mark.
fn with_and_without_bom(command: &str, name: &str, text: &str) -> (Output, Output) {
    let file = write(name, &format!("\u{feff}{text}"));
    let with = sim(&[command, path_str(&file)]);
    let file = write(name, text);
    let without = sim(&[command, path_str(&file)]);
    (with, without)
}

#[test]
fn a_scenario_starting_with_a_byte_order_mark_loads_and_its_errors_are_where_they_are_without() {
    let (with, without) = with_and_without_bom("validate", "bom.yaml", BASE);
    assert_eq!(with.code, 0, "{}", with.stderr);
    assert_eq!(with.stdout, without.stdout);
    let cases = [
        base_with("    pods: 2", "    pods: 2\n    colour: blue"),
        format!("name: [unclosed\n{BASE}"),
        format!("colour: blue\n{BASE}"),
    ];
    for text in cases {
        let (with, without) = with_and_without_bom("validate", "bom-bad.yaml", &text);
        assert_eq!(without.code, 2, "{}", without.stderr);
        assert_eq!(
            (with.code, &with.stderr),
            (without.code, &without.stderr),
            "{text}"
        );
    }
}

#[test]
fn a_canary_file_starting_with_a_byte_order_mark_loads_as_without_it() {
    let canary_start = BASE.find("canary:\n").expect("BASE has a canary");
    let canary_end = BASE.find("timeline:").expect("BASE has a timeline");
    let canary: String = BASE[canary_start..canary_end]
        .lines()
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect::<String>()
        .replace("maxWeight: 30", "maxWeight: 0");
    let scenario = format!(
        "{}canary_file: bom-canary.yaml\n{}",
        &BASE[..canary_start],
        &BASE[canary_end..]
    );
    let file = write("bom-canary-file.yaml", &scenario);
    let canary_file = write("bom-canary.yaml", &format!("\u{feff}{canary}"));
    let with = sim(&["validate", path_str(&file)]);
    write("bom-canary.yaml", &canary);
    let without = sim(&["validate", path_str(&file)]);
    let prefix = format!(
        "{}:{}: spec.analysis.maxWeight: ",
        canary_file.display(),
        line_of(&canary, "maxWeight: 0")
    );
    assert!(without.stderr.contains(&prefix), "{}", without.stderr);
    assert_eq!((with.code, with.stderr), (without.code, without.stderr));
}

#[test]
fn manifest_and_canary_errors_both_count_documents_from_1() {
    let manifests = "apiVersion: v1\nkind: Service\nmetadata: {name: other}\n---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: podinfo}\nspec:\n  host: podinfo\n  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: lots}\n";
    write("two-docs-routes.yaml", manifests);
    let text = base_with("canary:", "manifest_files: [two-docs-routes.yaml]\ncanary:");
    let out = sim(&["validate", path_str(&write("two-docs.yaml", &text))]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("document 2 (DestinationRule \"podinfo\")"),
        "{}",
        out.stderr
    );

    let canary_start = BASE.find("canary:\n").expect("BASE has a canary");
    let canary_end = BASE.find("timeline:").expect("BASE has a timeline");
    let canary: String = BASE[canary_start..canary_end]
        .lines()
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect::<String>()
        .replace("maxWeight: 30", "maxWeight: lots");
    write(
        "two-docs-canary.yaml",
        &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: other}}\n---\n{canary}"),
    );
    let text = format!(
        "{}canary_file: two-docs-canary.yaml\n{}",
        &BASE[..canary_start],
        &BASE[canary_end..]
    );
    let out = sim(&["validate", path_str(&write("two-docs-c.yaml", &text))]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("document 2 (Canary podinfo)"),
        "{}",
        out.stderr
    );
}

/// A sweep of a scenario without a Canary has no rollout to count: it prints what the mesh's
/// clients were served, not promotion rates of 0% or the canary's failures.
#[test]
fn a_sweep_of_the_mesh_alone_prints_the_clients_figures_and_no_rollout_rates() {
    let file = scenario_file("bookinfo-mesh.yaml");
    let out = sim(&["sweep", &file, "--seeds", "1", "--threads", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for rollout in [
        "promoted",
        "served by the canary",
        "time to decision",
        "rolled back",
        "rollback",
    ] {
        assert!(
            !out.stdout.contains(rollout),
            "`{rollout}` in a sweep without a Canary:\n{}",
            out.stdout
        );
    }
    for mesh in [
        "no rollout (the mesh alone); expectations met in 100.0%",
        "clients' success 100.00%, p99 median ",
    ] {
        assert!(out.stdout.contains(mesh), "`{mesh}` in:\n{}", out.stdout);
    }
    let v = sweep_json(&[&file, "--seeds", "1", "--threads", "1"]);
    assert_eq!(
        (v[0]["runs"].as_u64(), v[0]["no_rollout"].as_u64()),
        (Some(1), Some(1)),
        "{v:?}"
    );
}

/// The timeline names a `request-duration` value by the quantile it is read at: a statistical
/// metric with `quantile: 0.5` shows the canary's median (about 24ms for this case's canary,
/// whose p99 is about 120ms), so its column is `p50ms`, not Flagger's `p99ms`.
#[test]
fn the_timeline_names_the_quantile_a_median_gated_latency_metric_shows() {
    let path = format!(
        "{}/../scenarios/benchmarks/latency-median-20pct-100rps.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = sim(&["run", &path]);
    let text = &out.stdout;
    assert!(text.contains("Rolling back app"), "{text}{}", out.stderr);
    assert!(text.contains("p50ms "), "{text}");
    assert!(!text.contains("p99ms"), "{text}");
}
