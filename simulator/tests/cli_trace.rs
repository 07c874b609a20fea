//! `fledge-sim run --trace FILE`: one line per event of the mesh and decision of the
//! controller, the same bytes for the same seed, results unchanged, and `--trace-filter`.

mod support;

use std::path::{Path, PathBuf};

use support::*;

/// BASE with pods that answer 503 now and then, and Istio 1.23's default retry policy, which
/// retries a 503: some requests are retried.
fn retrying_scenario() -> PathBuf {
    let text = base_with(
        "    latency: {p50: 10ms, p99: 40ms}\n",
        "    latency: {p50: 10ms, p99: 40ms}\n    error_rate: 0.005\n    error_code: 503\n",
    )
    .replacen(
        "namespace: test\n",
        "namespace: test\nistio:\n  version: \"1.23\"\n",
        1,
    );
    write("trace-retry.yaml", &text)
}

/// Runs the scenario with `--trace` into a file of its own and returns the output and the trace.
fn traced(scenario: &Path, name: &str, extra: &[&str]) -> (Output, String) {
    let trace = scenario.with_file_name(name);
    let mut args = vec!["run", path_str(scenario), "--trace", path_str(&trace)];
    args.extend_from_slice(extra);
    let out = sim(&args);
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    (out, text)
}

#[test]
fn the_same_seed_writes_a_byte_identical_trace() {
    let file = retrying_scenario();
    let (a, first) = traced(&file, "same-1.trace", &["--seed", "3"]);
    let (b, second) = traced(&file, "same-2.trace", &["--seed", "3"]);
    assert_eq!((a.code, b.code), (0, 0), "{}{}", a.stderr, b.stderr);
    assert!(first.lines().count() > 1000, "{first}");
    assert!(first == second, "two runs of seed 3 wrote different traces");
    let (_, other) = traced(&file, "same-3.trace", &["--seed", "4"]);
    assert_ne!(first, other, "another seed, another run");
}

#[test]
fn tracing_does_not_change_the_results() {
    let file = retrying_scenario();
    let plain = sim(&["run", path_str(&file), "--json"]);
    let (out, trace) = traced(&file, "results.trace", &["--json"]);
    assert_eq!((plain.code, out.code), (0, 0), "{}", out.stderr);
    assert!(!trace.is_empty());
    assert!(plain.stdout == out.stdout, "--json differs with --trace");
}

#[test]
fn filters_narrow_the_trace_to_the_lines_that_match_them_all() {
    let file = retrying_scenario();
    let (_, all) = traced(&file, "all.trace", &[]);
    let pod = "podinfo-primary-0";
    let (out, one_pod) = traced(
        &file,
        "pod.trace",
        &["--trace-filter", &format!("pod={pod}")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let body = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    let expected: Vec<String> = body(&all)
        .into_iter()
        .filter(|l| l.split(' ').any(|f| f == format!("pod={pod}")))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(
        body(&one_pod),
        expected,
        "pod= keeps exactly that pod's lines"
    );
    // Two filters AND together (repeated or comma-separated alike).
    let (_, both) = traced(
        &file,
        "both.trace",
        &[
            "--trace-filter",
            &format!("pod={pod}"),
            "--trace-filter",
            "event=at-pod",
        ],
    );
    let (_, comma) = traced(
        &file,
        "comma.trace",
        &["--trace-filter", &format!("pod={pod},event=at-pod")],
    );
    let at_pod: Vec<String> = expected
        .iter()
        .filter(|l| l.split_whitespace().nth(1) == Some("at-pod"))
        .cloned()
        .collect();
    assert!(!at_pod.is_empty() && at_pod.len() < expected.len());
    assert_eq!(body(&both), at_pod);
    assert_eq!(body(&comma), at_pod);
}

#[test]
fn a_retry_after_a_503_reads_step_by_step_for_its_request() {
    let file = retrying_scenario();
    let (out, retries) = traced(&file, "retries.trace", &["--trace-filter", "event=retry"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let first = retries
        .lines()
        .find(|l| l.contains(" retry "))
        .unwrap_or_else(|| panic!("no retry in:\n{retries}"));
    let req = first
        .split_whitespace()
        .find(|f| f.starts_with("req="))
        .expect("a retry names its request");
    let (_, lines) = traced(
        &file,
        "one-request.trace",
        &["--trace-filter", &format!("request={}", &req[4..])],
    );
    let events: Vec<&str> = lines
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().nth(1).expect("an event"))
        .collect();
    assert_eq!(
        events,
        [
            "request",
            "attempt-sent",
            "at-pod",
            "pod-done",
            "attempt-end",
            "retry",
            "attempt-sent",
            "at-pod",
            "pod-done",
            "attempt-end",
            "request-done",
        ],
        "{lines}"
    );
    let line = |i: usize| {
        lines
            .lines()
            .filter(|l| !l.starts_with('#'))
            .nth(i)
            .unwrap()
    };
    assert!(
        line(3).contains(" try=1 ") && line(3).ends_with(" code=503"),
        "{lines}"
    );
    assert!(line(4).contains(" code=503 flags=-"), "{lines}");
    assert!(line(5).contains(" try=2 "), "{lines}");
    assert!(line(6).contains(" try=2 "), "{lines}");
    // Times never go backwards.
    let times: Vec<f64> = lines
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('s').next().unwrap().parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{lines}");
}

#[test]
fn the_controllers_decisions_are_in_the_trace() {
    let file = retrying_scenario();
    let (_, decisions) = traced(
        &file,
        "decisions.trace",
        &["--trace-filter", "event=decision"],
    );
    assert!(
        decisions.contains("  decision      phase=Initialized weight=0 mirror=-"),
        "{decisions}"
    );
    assert!(
        decisions.contains("phase=Progressing weight=10 "),
        "{decisions}"
    );
}

/// Lines of `text` (headings aside) whose event is `event`.
fn events<'a>(text: &'a str, event: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(event))
        .collect()
}

#[test]
fn pool_outlier_certificate_and_harness_lines_are_in_the_trace() {
    // A copy in this test's own directory, where the traces are written.
    let scenario = |name: &str| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let text = std::fs::read_to_string(repo.join(name)).expect("a repository scenario");
        write(name, &text)
    };
    let retrying = retrying_scenario();
    // (scenario, event, what one of its lines holds)
    let cases: &[(PathBuf, &str, &str)] = &[
        // 3x load spikes overflow the primary's pool (http1MaxPendingRequests).
        (
            scenario("load-spike-pool-overflow.yaml"),
            "pool-overflow",
            " limit=pending",
        ),
        (
            scenario("load-spike-pool-overflow.yaml"),
            "pool-wait",
            " pending=",
        ),
        (
            scenario("load-spike-pool-overflow.yaml"),
            "conn-open",
            " ms=",
        ),
        // A pod answering 503 is ejected, then returns after its ejection time.
        (scenario("flaky-pod-ejected.yaml"), "eject", " ms="),
        (
            scenario("flaky-pod-ejected.yaml"),
            "uneject",
            " pod=podinfo-",
        ),
        (scenario("cert-rotation.yaml"), "cert-rotate", " workload="),
        // The harness's changes: routes written, the canary scaled, the timeline's deploy.
        (
            retrying.clone(),
            "action",
            " what=routes text=\"routes written: primary 90%, canary 10%\"",
        ),
        (
            retrying.clone(),
            "action",
            " what=scale text=\"canary scaled to ",
        ),
        (
            retrying.clone(),
            "action",
            " what=timeline text=\"scenario: new revision deployed\"",
        ),
    ];
    for (i, (file, event, holds)) in cases.iter().enumerate() {
        let (out, text) = traced(
            file,
            &format!("kinds-{i}.trace"),
            &["--trace-filter", &format!("event={event}")],
        );
        assert_eq!(out.code, 0, "{}: {}", file.display(), out.stderr);
        let lines = events(&text, event);
        assert!(
            lines.iter().any(|l| l.contains(holds)),
            "{}: no `{event}` line holds `{holds}`:\n{}",
            file.display(),
            lines.join("\n")
        );
    }
}

#[test]
fn a_pending_attempt_is_sent_when_its_connection_is_ready() {
    // The first request of the run waits for its connection (conn-open), then is sent.
    let file = retrying_scenario();
    let (_, text) = traced(&file, "first.trace", &["--trace-filter", "req=1"]);
    let kinds: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().nth(1).expect("an event"))
        .take(3)
        .collect();
    assert_eq!(kinds, ["request", "pool-wait", "attempt-sent"], "{text}");
}

#[test]
fn bad_filters_exit_2_naming_the_flag_and_what_is_expected() {
    let file = retrying_scenario();
    let trace = file.with_file_name("bad.trace");
    for (filter, expected) in [
        ("colour=red", "unknown key `colour`"),
        ("pod", "is not KEY=VALUE"),
        ("pod=", "has no value"),
        ("req=abc", "not a whole number"),
        // An event the legend does not have (a typo) would match nothing: an empty trace.
        ("event=atpod", "at-pod"),
    ] {
        let out = sim(&[
            "run",
            path_str(&file),
            "--trace",
            path_str(&trace),
            "--trace-filter",
            filter,
        ]);
        assert_eq!(out.code, 2, "{filter}: {}", out.stderr);
        assert!(
            out.stderr.contains("--trace-filter") && out.stderr.contains(expected),
            "{filter}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{}", out.stdout);
    }
    let out = sim(&["run", path_str(&file), "--trace-filter", "pod=x"]);
    assert_eq!(out.code, 2, "a filter without --trace: {}", out.stderr);
}

/// `--trace -` is refused (stdout carries the summary), not written to a file named `-`.
#[test]
fn a_trace_to_stdout_is_refused() {
    let file = retrying_scenario();
    let dir = file.parent().unwrap().join("trace-dash");
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(sim_binary())
        .args(["run", path_str(&file), "--trace", "-"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--trace -") && stderr.contains("stdout"),
        "{stderr}"
    );
    assert!(!dir.join("-").exists(), "a file named `-` was written");
}

#[test]
fn a_trace_path_that_cannot_be_written_exits_2_naming_it() {
    let file = retrying_scenario();
    let bad = file.with_file_name("no-such-dir").join("out.trace");
    let out = sim(&["run", path_str(&file), "--trace", path_str(&bad)]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("--trace {}", bad.display())),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

#[test]
fn the_help_of_run_gives_the_trace_legend() {
    let out = sim(&["run", "--help"]);
    assert_eq!(out.code, 0);
    for word in [
        "--trace <FILE>",
        "--trace-filter",
        "attempt-sent",
        "request-done",
        "decision",
        "flags",
    ] {
        assert!(
            out.stdout.contains(word),
            "`{word}` not in:\n{}",
            out.stdout
        );
    }
}

#[test]
fn scenarios_readme_gives_the_legend_of_run_help() {
    let out = sim(&["run", "--help"]);
    let start = out.stdout.find("Trace (--trace FILE)").expect("the legend");
    let end = out.stdout[start..]
        .find("\n\nExit codes")
        .expect("the exit codes")
        + start;
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/README.md"
    ))
    .expect("scenarios/README.md");
    assert!(
        readme.contains(&out.stdout[start..end]),
        "scenarios/README.md's legend differs from `run --help`'s:\n{}",
        &out.stdout[start..end]
    );
}

/// A pending overflow is answered with no upstream host (Envoy's pool fails the stream with none),
/// so `request-done` names no version (`-`), as telemetry, the access log and the spans do.
#[test]
fn a_request_no_pod_answered_is_traced_with_no_version() {
    let scenario =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/load-spike-pool-overflow.yaml");
    let trace = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-trace-uo.trace");
    let out = sim(&[
        "run",
        path_str(&scenario),
        "--trace",
        path_str(&trace),
        "--trace-filter",
        "event=request-done,flags=UO",
    ]);
    let text = std::fs::read_to_string(&trace).expect("the trace");
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    let done: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(done.len() > 1000, "{}", done.len());
    for line in done {
        assert!(line.contains(" version=- "), "{line}");
    }
}

/// A scenario of the repository's scenarios/ directory.
fn shipped_scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name)
}

/// The trace's `refused` lines (a request the server's sidecar denied, 403) and `answered`
/// lines (a direct response or redirect) are in the legend of `fledge-sim run --help`, and
/// `--trace-filter event=refused` pulls the denied requests out of a large trace
/// (`authz-new-service-account.yaml` denies about 90). Review r17 finding 1; the unit test
/// `every_event_written_is_in_the_legend` in src/trace keeps every other event so.
#[test]
fn every_event_the_trace_writes_is_in_the_legend_and_can_be_filtered() {
    let file = shipped_scenario("authz-new-service-account.yaml");
    let dir = std::env::temp_dir().join(format!("fledge-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("refused.trace");
    let out = sim(&[
        "run",
        path_str(&file),
        "--seed",
        "1",
        "--trace",
        path_str(&trace),
        "--trace-filter",
        "event=refused",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(
        text.lines().any(|l| l.contains(" refused ")),
        "no refused line kept:\n{text}"
    );
    let help = sim(&["run", "--help"]);
    for event in ["refused", "answered"] {
        assert!(
            help.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(event)),
            "`{event}` is not in the legend of run --help"
        );
    }
}

/// The trace writes several flags joined by commas (`flags=UF,URX`, as scenarios/README.md's
/// crash-at-30 example shows), and `--trace-filter flags=UF,URX` asks for that very value (a
/// comma not followed by KEY= is part of it): the requests whose retries ran out after connect
/// failures (41 lines in crash-at-30, seed 5). Review r17 finding 7.
#[test]
fn a_multi_flag_value_written_in_the_trace_can_be_filtered_on() {
    let dir = std::env::temp_dir().join(format!("fledge-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("flags.trace");
    let out = sim(&[
        "run",
        path_str(&shipped_scenario("crash-at-30.yaml")),
        "--seed",
        "5",
        "--trace",
        path_str(&trace),
        "--trace-filter",
        "flags=UF,URX",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(!kept.is_empty(), "no line kept");
    assert!(kept.iter().all(|l| l.contains(" flags=UF,URX")), "{kept:?}");
}
