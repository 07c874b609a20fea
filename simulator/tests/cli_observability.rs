//! `fledge-sim run --access-log, --traces, --graph, --sample`: the access log agrees with the
//! run's telemetry, sampling keeps its fraction, the same seed writes the same files (and the
//! outputs change no result), spans nest, the graph is DOT with the run's edges, and a path
//! that cannot be written, or one given to two outputs, is refused before the run.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use support::{path_str, sim, write};

fn scenario(name: &str) -> String {
    format!("{}/../scenarios/{name}.yaml", env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("h20a-observability");
    std::fs::create_dir_all(&dir).expect("writable");
    dir.join(name)
}

/// Runs `run FILE --json ARGS...` and returns the first run's result.
fn run_json(file: &str, args: &[&str]) -> Value {
    let mut all = vec!["run", file, "--json"];
    all.extend_from_slice(args);
    let out = sim(&all);
    assert!(out.code == 0 || out.code == 1, "{all:?}: {}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    v[0].clone()
}

/// An access log line's code, flags and upstream host.
fn fields(line: &str) -> (u16, String, String) {
    let parts: Vec<&str> = line.split('"').collect();
    assert_eq!(parts.len(), 13, "{line}");
    let after: Vec<&str> = parts[2].split_whitespace().collect();
    (
        after[0].parse().unwrap_or_else(|_| panic!("{line}")),
        after[1].to_string(),
        parts[11].to_string(),
    )
}

#[test]
fn the_access_log_counts_the_codes_and_flags_the_runs_telemetry_counts() {
    let log = tmp("spike.log");
    let r = run_json(
        &scenario("load-spike-pool-overflow"),
        &["--access-log", path_str(&log)],
    );
    let text = std::fs::read_to_string(&log).expect("the access log");
    let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
    let mut flags: BTreeMap<String, u64> = BTreeMap::new();
    let mut canary_failed = 0;
    for line in text.lines() {
        let (code, f, upstream) = fields(line);
        *codes.entry(code).or_default() += 1;
        *flags.entry(f).or_default() += 1;
        if code >= 500 && upstream.starts_with("podinfo-canary-") {
            canary_failed += 1;
        }
    }
    let n = |v: &Value| v.as_u64().unwrap();
    assert_eq!(
        text.lines().count() as u64,
        n(&r["requests"]),
        "every request"
    );
    let failed: u64 = codes.range(500..).map(|(_, c)| c).sum();
    assert_eq!(failed, n(&r["failed_requests"]), "{codes:?}");
    assert_eq!(canary_failed, n(&r["failed_requests_canary"]));
    // Pool overflow (503 UO, not retried here) is the proxies' pending_overflow.
    assert_eq!(
        flags.get("UO").copied().unwrap_or(0),
        n(&r["counters"]["pending_overflow"]),
        "{flags:?}"
    );
    assert!(flags.get("UO").copied().unwrap_or(0) > 100, "{flags:?}");
}

#[test]
fn sampling_keeps_its_fraction_within_four_standard_deviations() {
    let (log, spans) = (tmp("sampled.log"), tmp("sampled.jsonl"));
    let r = run_json(
        &scenario("load-spike-pool-overflow"),
        &[
            "--access-log",
            path_str(&log),
            "--sample",
            "0.1",
            "--traces",
            path_str(&spans),
        ],
    );
    let requests = r["requests"].as_u64().unwrap() as f64;
    let within = |kept: usize, p: f64| {
        let sd = (requests * p * (1.0 - p)).sqrt();
        (kept as f64 - requests * p).abs() < 4.0 * sd
    };
    let lines = std::fs::read_to_string(&log).expect("log").lines().count();
    assert!(within(lines, 0.1), "{lines} of {requests}");
    let text = std::fs::read_to_string(&spans).expect("spans");
    let clients = text
        .lines()
        .filter(|l| l.contains("\"kind\":\"SPAN_KIND_CLIENT\""))
        .count();
    assert!(within(clients, 0.1), "{clients} of {requests}");
    // Without --sample, traces keep Istio's default 1%.
    let r = run_json(
        &scenario("load-spike-pool-overflow"),
        &["--traces", path_str(&spans)],
    );
    assert_eq!(r["requests"].as_f64().unwrap(), requests);
    let text = std::fs::read_to_string(&spans).expect("spans");
    let clients = text
        .lines()
        .filter(|l| l.contains("\"kind\":\"SPAN_KIND_CLIENT\""))
        .count();
    assert!(within(clients, 0.01), "{clients} of {requests}");
}

#[test]
fn the_same_seed_writes_the_same_files_and_the_outputs_change_no_result() {
    let file = scenario("flaky-pod-ejected");
    let bare = run_json(&file, &[]);
    let mut written = Vec::new();
    for i in 0..2 {
        let (log, spans) = (
            tmp(&format!("same-{i}.log")),
            tmp(&format!("same-{i}.jsonl")),
        );
        let r = run_json(
            &file,
            &[
                "--access-log",
                path_str(&log),
                "--traces",
                path_str(&spans),
                "--sample",
                "0.5",
            ],
        );
        assert_eq!(r, bare, "the outputs changed the run");
        written.push((
            std::fs::read(&log).expect("log"),
            std::fs::read(&spans).expect("spans"),
        ));
    }
    assert!(!written[0].0.is_empty() && !written[0].1.is_empty());
    assert!(written[0] == written[1], "same seed, other bytes");
    let other = tmp("other-seed.log");
    run_json(
        &file,
        &[
            "--access-log",
            path_str(&other),
            "--sample",
            "0.5",
            "--seed",
            "99",
        ],
    );
    assert_ne!(std::fs::read(&other).expect("log"), written[0].0);
}

#[test]
fn every_attempt_span_is_the_child_of_its_requests_span_and_names_its_version() {
    let spans = tmp("nested.jsonl");
    run_json(
        &scenario("flaky-pod-ejected"),
        &["--traces", path_str(&spans), "--sample", "0.2"],
    );
    let text = std::fs::read_to_string(&spans).expect("spans");
    let all: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let requests: BTreeMap<&str, &Value> = all
        .iter()
        .filter(|s| s["kind"] == "SPAN_KIND_CLIENT")
        .map(|s| (s["traceId"].as_str().unwrap(), s))
        .collect();
    let mut children = 0;
    for s in all.iter().filter(|s| s["kind"] == "SPAN_KIND_SERVER") {
        assert!(
            ["primary", "canary"]
                .contains(&s["attributes"]["destination.version"].as_str().unwrap()),
            "{s}"
        );
        assert_eq!(s["service"], "podinfo", "{s}");
        // A request still in flight at the end of the run has attempts but no span yet.
        if let Some(parent) = requests.get(s["traceId"].as_str().unwrap()) {
            assert_eq!(s["parentSpanId"], parent["spanId"], "{s}");
            assert_eq!(parent["parentSpanId"], "", "{parent}");
            children += 1;
        }
        assert_eq!(s["traceId"].as_str().unwrap().len(), 32);
        assert_eq!(s["spanId"].as_str().unwrap().len(), 16);
    }
    assert!(children > 1000, "{children}");
    // 500s from the bad pod are errors.
    assert!(
        all.iter()
            .any(|s| s["status"]["code"] == "STATUS_CODE_ERROR"
                && s["attributes"]["http.status_code"] == 500)
    );
    // OTLP's shape: an end time, not a duration; a success leaves the status unset.
    for s in &all {
        let (start, end) = (&s["startTimeUnixNano"], &s["endTimeUnixNano"]);
        assert!(start.as_u64().unwrap() <= end.as_u64().unwrap(), "{s}");
        assert!(s.get("durationNano").is_none(), "{s}");
        if s["attributes"]["http.status_code"] == 200 {
            assert_eq!(s["status"]["code"], "STATUS_CODE_UNSET", "{s}");
        }
    }
}

#[test]
fn a_request_no_pod_answered_names_no_version_as_its_telemetry_reports_unknown() {
    // A pending-queue overflow (UO) is answered by the client's proxy with no upstream host:
    // Istio reports the destination `unknown`, and the span must not name a version either.
    let spans = tmp("overflow.jsonl");
    run_json(
        &scenario("load-spike-pool-overflow"),
        &["--traces", path_str(&spans), "--sample", "0.05"],
    );
    let text = std::fs::read_to_string(&spans).expect("spans");
    let overflows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|s| s["kind"] == "SPAN_KIND_CLIENT" && s["attributes"]["response_flags"] == "UO")
        .collect();
    assert!(overflows.len() > 10, "{}", overflows.len());
    for s in &overflows {
        assert_eq!(s["attributes"]["destination.version"], Value::Null, "{s}");
    }
}

#[test]
fn a_request_cut_by_the_route_timeout_names_the_pod_it_was_waiting_for_and_has_its_span() {
    // Envoy's %UPSTREAM_HOST% is set once the host is chosen, answered or not.
    let (log, spans) = (tmp("timeout.log"), tmp("timeout.jsonl"));
    run_json(
        &scenario("gateway-api-httproute"),
        &[
            "--access-log",
            path_str(&log),
            "--traces",
            path_str(&spans),
            "--sample",
            "1",
        ],
    );
    let log = std::fs::read_to_string(&log).expect("the access log");
    let cut: Vec<&str> = log.lines().filter(|l| l.contains("\" 504 UT ")).collect();
    assert!(!cut.is_empty(), "the scenario times requests out");
    for line in &cut {
        assert!(
            fields(line).2.starts_with("podinfo-"),
            "no upstream host: {line}"
        );
    }
    let spans: Vec<Value> = std::fs::read_to_string(&spans)
        .expect("the spans")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let attempts: std::collections::BTreeSet<(&str, &str)> = spans
        .iter()
        .filter(|s| s["parentSpanId"] != "")
        .map(|s| {
            (
                s["traceId"].as_str().unwrap(),
                s["parentSpanId"].as_str().unwrap(),
            )
        })
        .collect();
    let timed_out: Vec<&Value> = spans
        .iter()
        .filter(|s| s["parentSpanId"] == "" && s["attributes"]["response_flags"] == "UT")
        .collect();
    assert_eq!(timed_out.len(), cut.len());
    for request in timed_out {
        let key = (
            request["traceId"].as_str().unwrap(),
            request["spanId"].as_str().unwrap(),
        );
        assert!(
            attempts.contains(&key),
            "no span of the attempt in flight: {request}"
        );
    }
}

/// Whether every DOT string of a line is closed (inside one, a backslash escapes the next
/// character).
fn strings_closed(line: &str) -> bool {
    let (mut open, mut escaped) = (false, false);
    for c in line.chars() {
        match (open, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => open = !open,
            _ => {}
        }
    }
    !open
}

#[test]
fn the_graph_is_dot_with_an_edge_per_caller_and_version_and_the_report_draws_it() {
    let (dot, report) = (tmp("graph.dot"), tmp("graph.html"));
    // A quote and a trailing backslash in the name: each must be escaped in its DOT string.
    let original = std::fs::read_to_string(scenario("flaky-pod-ejected")).expect("the scenario");
    let file = write(
        "graph-names.yaml",
        &original.replacen("name: flaky-pod-ejected", "name: 'flaky\"pod\\'", 1),
    );
    let r = run_json(
        path_str(&file),
        &["--graph", path_str(&dot), "--report", path_str(&report)],
    );
    let text = std::fs::read_to_string(&dot).expect("the graph");
    // Shape: one digraph, statements one per line, every string closed, braces balanced.
    assert!(
        text.starts_with("digraph \"flaky\\\"pod\\\\\" {\n"),
        "{text}"
    );
    for line in text.lines() {
        assert!(
            strings_closed(line),
            "a string is not closed in `{line}`:\n{text}"
        );
    }
    assert!(text.ends_with("}\n"), "{text}");
    assert_eq!(text.matches('{').count(), text.matches('}').count());
    let body: Vec<&str> = text.lines().skip(1).take_while(|l| *l != "}").collect();
    let mut edges = Vec::new();
    for line in &body {
        let line = line.trim();
        assert!(line.ends_with(';'), "{line}");
        if let Some((from, rest)) = line.split_once(" -> ") {
            let to = rest.split(" [").next().unwrap();
            edges.push((
                from.trim_matches('"').to_string(),
                to.trim_matches('"').to_string(),
            ));
        }
    }
    let expected: Vec<(String, String)> = r["graph"]
        .as_array()
        .expect("the run's graph")
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_string(),
                format!(
                    "{}/{}",
                    e["service"].as_str().unwrap(),
                    e["version"].as_str().unwrap()
                ),
            )
        })
        .collect();
    assert_eq!(
        edges,
        [
            ("frontend".to_string(), "podinfo/primary".to_string()),
            ("frontend".to_string(), "podinfo/canary".to_string())
        ]
    );
    assert_eq!(edges, expected);
    let requests: u64 = r["graph"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(
        requests,
        r["requests"].as_u64().unwrap(),
        "the edges carry every request"
    );
    let html = std::fs::read_to_string(&report).expect("the report");
    assert!(
        html.contains("<h3>Service graph</h3>\n<svg class=\"graph\""),
        "no graph drawn"
    );
    assert!(html.contains(">podinfo canary</text>"), "no canary node");
}

#[test]
fn an_output_that_cannot_be_written_shares_a_path_or_has_a_bad_fraction_is_exit_2_naming_it() {
    let file = scenario("flaky-pod-ejected");
    let missing = "/nonexistent-h20a/out";
    for flag in ["--access-log", "--traces", "--graph"] {
        let out = sim(&["run", &file, flag, missing]);
        assert_eq!(out.code, 2, "{flag}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("{flag} {missing}: ")),
            "{flag}: {}",
            out.stderr
        );
        assert!(
            out.stdout.is_empty(),
            "refused before the run: {}",
            out.stdout
        );
    }
    // One path for two outputs: each writer would overwrite the other's bytes.
    let same = tmp("same.out");
    let dotted = tmp(".").join("same.out");
    for (first, second, path) in [
        ("--access-log", "--traces", &same),
        ("--trace", "--graph", &dotted),
        ("--report", "--access-log", &same),
    ] {
        let out = sim(&["run", &file, first, path_str(&same), second, path_str(path)]);
        assert_eq!(out.code, 2, "{first} {second}: {}", out.stderr);
        assert!(
            out.stderr
                .contains(&format!("{first} and {second} are both")),
            "{}",
            out.stderr
        );
        assert!(
            out.stdout.is_empty(),
            "refused before the run: {}",
            out.stdout
        );
    }
    let out = sim(&["run", &file, "--report", &file]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("is the scenario file itself"),
        "{}",
        out.stderr
    );
    let out = sim(&["run", &file, "--sample", "0.5"]);
    assert_eq!(
        out.code, 2,
        "--sample alone samples nothing: {}",
        out.stderr
    );
    assert!(out.stderr.contains("--access-log"), "{}", out.stderr);
    for bad in ["1.5", "-0.1", "x"] {
        let sample = format!("--sample={bad}");
        let out = sim(&["run", &file, "--access-log", "/dev/null", &sample]);
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
        assert!(
            out.stderr.contains("--sample") && out.stderr.contains("fraction from 0 to 1"),
            "{}",
            out.stderr
        );
    }
}
