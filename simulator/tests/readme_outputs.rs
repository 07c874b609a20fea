//! What scenarios/README.md shows and says of a run is what a run does: the access-log line
//! and the trace it shows are the ones a run writes, and a DestinationRule applied after the
//! VirtualService that names its subsets re-resolves them, as it says.

mod support;

use std::path::PathBuf;

use support::{path_str, sim, write};

fn scenario(name: &str) -> String {
    format!("{}/../scenarios/{name}.yaml", env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("readme-outputs");
    std::fs::create_dir_all(&dir).expect("writable");
    dir.join(name)
}

/// scenarios/README.md's access-log line of `flaky-pod-ejected` and its trace of one
/// `crash-at-30` request are what a run writes.
#[test]
fn the_access_log_line_and_the_trace_shown_are_what_a_run_writes() {
    let readme = std::fs::read_to_string(format!(
        "{}/../scenarios/README.md",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("scenarios/README.md");
    let shown_log = readme
        .lines()
        .find(|l| l.starts_with("[1970-01-01T00:00:11.820Z]"))
        .expect("the README's access-log line");
    let log = tmp("flaky.log");
    let out = sim(&[
        "run",
        &scenario("flaky-pod-ejected"),
        "--access-log",
        path_str(&log),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let written = std::fs::read_to_string(&log).expect("the access log");
    let mut wrong = Vec::new();
    if !written.lines().any(|l| l == shown_log) {
        let actual = written
            .lines()
            .find(|l| l.starts_with("[1970-01-01T00:00:11.820Z]"))
            .unwrap_or("none");
        wrong.push(format!(
            "access log: shown\n  {shown_log}\nwritten\n  {actual}"
        ));
    }
    let trace = tmp("crash.trace");
    let out = sim(&[
        "run",
        &scenario("crash-at-30"),
        "--seed",
        "5",
        "--trace",
        path_str(&trace),
        "--trace-filter",
        "req=22540",
    ]);
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    let written = std::fs::read_to_string(&trace).expect("the trace");
    for line in written.lines().filter(|l| !l.starts_with('#')) {
        if !readme.lines().any(|r| r.trim_end() == line.trim_end()) {
            wrong.push(format!("trace line not in the README: {line}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A VirtualService to subset `v2` that a DestinationRule applied at 1m defines: `503 NC`
/// for a minute, then routed (istiod rebuilds the routes), and scenarios/README.md says so and
/// nowhere the opposite.
#[test]
fn a_later_destination_rule_re_resolves_subsets_as_the_readme_says() {
    let file = write(
        "late-destination-rule.yaml",
        r#"name: late-dr
seed: 5
duration: 2m
services:
  - name: reviews
    versions:
      v1: {pods: 2}
traffic:
  - {client: productpage, service: reviews, rate: 50}
manifests: |
  apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata: {name: reviews}
  spec:
    hosts: [reviews]
    http:
    - route:
      - destination: {host: reviews, subset: v2}
timeline:
  - at: 1m
    apply_manifests: |
      apiVersion: networking.istio.io/v1
      kind: DestinationRule
      metadata: {name: reviews}
      spec:
        host: reviews
        subsets:
        - {name: v2, labels: {version: v1}}
expect:
  clients:
    productpage: {min_success_rate: 45, max_success_rate: 55}
"#,
    );
    let out = sim(&["run", path_str(&file)]);
    assert_eq!(out.code, 0, "the run re-resolves at 1m: {}", out.stdout);
    let readme = std::fs::read_to_string(format!(
        "{}/../scenarios/README.md",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("scenarios/README.md")
    .replace('\n', " ");
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        !readme.contains("does not re-resolve them"),
        "scenarios/README.md still says a later DestinationRule does not re-resolve subsets"
    );
}
