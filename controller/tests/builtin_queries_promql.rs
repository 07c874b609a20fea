//! Every implementation's built-in queries, as Fledge renders them, evaluated by Prometheus' own
//! engine (`promtool test rules`, no server, no network) over series shaped as each
//! implementation exports them: the query parses, selects the canary and not the primary, and
//! gives the success rate in percent and the p99 in milliseconds.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

use fledge_controller::metrics::{Mesh, builtin_query};
use fledge_controller::observe::{Measure, Range, Subject, Workload};

/// `promtool` on PATH; `None` (the test skipped, loudly) when it is missing outside CI.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let how = "install it with `apt-get install prometheus`, then `cargo test -p fledge-controller --test builtin_queries_promql`";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "these tests need `promtool` on PATH and CI=true requires them: {how}"
        );
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! SKIPPED the built-in queries' check with Prometheus' engine: no `promtool` on PATH; {how}\n"
        );
    }
    found
}

/// The Service (`frontend`) is named apart from the target (`podinfo`), as Envoy's cluster
/// names must follow the Service.
fn subject() -> Subject {
    Subject {
        name: "podinfo".into(),
        namespace: "test".into(),
        target: "podinfo".into(),
        service: "frontend".into(),
        canary: Workload {
            deployment: "podinfo".into(),
            service: "frontend-canary".into(),
        },
        primary: Workload {
            deployment: "podinfo-primary".into(),
            service: "frontend-primary".into(),
        },
    }
}

/// The label selectors of one side's series in `mesh`'s own naming: the request counter's
/// labels without the status, the status label of a success and of a failure, the
/// histogram's labels.
struct Shape {
    requests: &'static str,
    selector: fn(&Workload) -> String,
    ok: &'static str,
    failed: &'static str,
    bucket: &'static str,
}

fn shape(mesh: Mesh) -> Shape {
    match mesh {
        Mesh::Istio => Shape {
            requests: "istio_requests_total",
            selector: |w| {
                format!(
                    r#"reporter="destination",destination_workload_namespace="test",destination_workload="{}""#,
                    w.deployment
                )
            },
            ok: r#"response_code="200""#,
            failed: r#"response_code="503""#,
            bucket: "istio_request_duration_milliseconds_bucket",
        },
        Mesh::Linkerd => Shape {
            requests: "response_total",
            selector: |w| {
                format!(
                    r#"namespace="test",deployment="{}",direction="inbound""#,
                    w.deployment
                )
            },
            ok: r#"classification="success""#,
            failed: r#"classification="failure""#,
            bucket: "response_latency_ms_bucket",
        },
        Mesh::GatewayApi => Shape {
            requests: "envoy_cluster_upstream_rq",
            selector: |w| format!(r#"envoy_cluster_name="test_{}_9898""#, w.service),
            ok: r#"envoy_response_code="200""#,
            failed: r#"envoy_response_code="503""#,
            bucket: "envoy_cluster_upstream_rq_time_bucket",
        },
    }
}

/// One input series of `promtool test rules`, values one a minute.
fn series(out: &mut String, name: &str, labels: &[&str], values: &str) {
    out.push_str(&format!(
        "      - series: '{name}{{{}}}'\n        values: '{values}'\n",
        labels.join(",")
    ));
}

/// The canary: 540 answers and 60 failures a minute, every request under 100 ms. The primary
/// fails half its requests and answers in 100 ms to 1 s: a query that also read it, in either
/// term, would be off.
fn input_series(mesh: Mesh) -> String {
    let s = shape(mesh);
    let mut out = String::new();
    let subject = subject();
    for (side, ok, failed, fast) in [
        (&subject.canary, "0+540x10", "0+60x10", "0+600x10"),
        (&subject.primary, "0+300x10", "0+300x10", "0+0x10"),
    ] {
        let sel = (s.selector)(side);
        series(&mut out, s.requests, &[&sel, s.ok], ok);
        series(&mut out, s.requests, &[&sel, s.failed], failed);
        series(&mut out, s.bucket, &[&sel, r#"le="100""#], fast);
        series(&mut out, s.bucket, &[&sel, r#"le="1000""#], "0+600x10");
        series(&mut out, s.bucket, &[&sel, r#"le="+Inf""#], "0+600x10");
    }
    out
}

fn query(mesh: Mesh, measure: Measure) -> String {
    let range = Range {
        from: 1_000_000,
        to: 1_060_000,
    };
    match builtin_query(mesh, &measure, &subject(), range) {
        Some(q) => q,
        None => panic!("{mesh} has no built-in query for {measure:?}"),
    }
}

/// Runs `promtool test rules` on a file that expects, ten minutes in, a success rate of 90 %
/// and a p99 of 99 ms (all within the first 100 ms bucket); the error is promtool's output.
fn evaluate(promtool: &PathBuf, mesh: Mesh) -> Result<(), String> {
    let mut file = String::from(
        "rule_files: []\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n",
    );
    file.push_str(&input_series(mesh));
    file.push_str("    promql_expr_test:\n");
    for (measure, value) in [(Measure::SuccessRate, 90), (Measure::Latency, 99)] {
        let q = query(mesh, measure).replace('\'', "''");
        file.push_str(&format!(
            "      - expr: '{q}'\n        eval_time: 10m\n        exp_samples:\n          - labels: '{{}}'\n            value: {value}\n"
        ));
    }
    let dir = std::env::temp_dir().join(format!(
        "fledge-builtin-queries-{}-{mesh}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("test.yml");
    std::fs::write(&path, &file).map_err(|e| format!("{}: {e}", path.display()))?;
    let out = Command::new(promtool)
        .arg("test")
        .arg("rules")
        .arg(&path)
        .output()
        .map_err(|e| format!("running {}: {e}", promtool.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}\n--- the test file ---\n{file}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn check(mesh: Mesh) {
    let Some(promtool) = promtool() else {
        return;
    };
    if let Err(e) = evaluate(&promtool, mesh) {
        panic!("{mesh}'s built-in queries under Prometheus' engine: {e}");
    }
}

#[test]
fn istios_built_in_queries_parse_and_read_the_canary_workload_in_prometheus() {
    check(Mesh::Istio);
}

#[test]
fn linkerds_built_in_queries_parse_and_read_the_canary_deployment_in_prometheus() {
    check(Mesh::Linkerd);
}

#[test]
fn contours_built_in_queries_parse_and_read_the_canary_services_envoy_cluster_in_prometheus() {
    check(Mesh::GatewayApi);
}
