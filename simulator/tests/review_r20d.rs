//! Review r20d of issue 20 (meshes as they are: several services, calls, the mesh without a
//! Canary, access logs, traces, the service graph, `sweep --vary`), walked as a user with
//! Istio's bookinfo samples. Each finding is a test that fails today, ignored so that the suite
//! stays green; `cargo test --test review_r20d -- --include-ignored` runs them.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;
use support::{path_str, sim, write};

fn scenario(name: &str) -> String {
    format!("{}/../scenarios/{name}.yaml", env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("review-r20d");
    std::fs::create_dir_all(&dir).expect("writable");
    dir.join(name)
}

/// The edges of a DOT file: (from, to, label) by node id.
fn dot_edges(dot: &str) -> Vec<(String, String, String)> {
    dot.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (from, rest) = l.strip_prefix('"')?.split_once("\" -> \"")?;
            let (to, rest) = rest.split_once('"')?;
            let label = rest.split("label=\"").nth(1)?.trim_end_matches("\"];");
            Some((from.to_string(), to.to_string(), label.to_string()))
        })
        .collect()
}

/// Finding 1: the service graph is not a graph of who calls whom. A user runs
/// `fledge-sim run scenarios/bookinfo-mesh.yaml --graph g.dot` and renders it: `browser` points
/// at a box `productpage v1`, and a second, unconnected box `productpage-v1` points at
/// `details` and `reviews`; `reviews-v2` / `reviews-v3` (the callers of `ratings`) are again
/// boxes apart from `reviews v2` / `reviews v3`. The calling workload and the version it runs
/// are one workload (Istio's telemetry names both `productpage-v1`: `source_workload` of the
/// call, `destination_workload` of the request), and Kiali's workload/versioned-app graphs draw
/// one node for it, so the chain browser -> productpage -> reviews -> ratings can be followed.
/// Here no path leads from the client to `ratings` (the same in bookinfo-ratings-canary:
/// `reviews-primary` and `reviews` vs `reviews/primary` and `reviews/canary`; and in the HTML
/// report, which draws the same nodes).
#[test]
#[ignore = "review r20d finding 1: the service graph draws a caller apart from the version it is: browser cannot reach ratings"]
fn the_service_graph_connects_a_callers_workload_to_the_version_it_is() {
    let dot = tmp("bookinfo-mesh.dot");
    let out = sim(&["run", &scenario("bookinfo-mesh"), "--graph", path_str(&dot)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&dot).expect("the graph");
    let mut next: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to, _) in dot_edges(&text) {
        next.entry(from).or_default().insert(to);
    }
    let mut seen: BTreeSet<String> = BTreeSet::from(["browser".to_string()]);
    let mut todo = vec!["browser".to_string()];
    while let Some(n) = todo.pop() {
        for m in next.get(&n).into_iter().flatten() {
            if seen.insert(m.clone()) {
                todo.push(m.clone());
            }
        }
    }
    assert!(
        seen.iter().any(|n| n.starts_with("ratings")),
        "from `browser` the graph reaches only {seen:?}; the graph:\n{text}"
    );
}

/// Finding 2: the client span of a call answered 4xx is `STATUS_CODE_UNSET`. A user traces
/// bookinfo-ratings-canary (`--traces spans.jsonl --sample 1`): the canary's calls to
/// `/rating/0` are answered 404 `NR` and fail the caller, yet their `SPAN_KIND_CLIENT` spans
/// carry no error, so a tracing UI does not flag the span that explains the rollback. The
/// README says the status follows "OpenTelemetry's HTTP conventions", which say the opposite
/// for a client: "For HTTP status codes in the 4xx range span status MUST be left unset in case
/// of SpanKind.SERVER and MUST be set to Error in case of SpanKind.CLIENT"
/// (opentelemetry.io/docs/specs/semconv/http/http-spans, "Status"). The same for the 403s of an
/// AuthorizationPolicy (authz-new-service-account).
#[test]
#[ignore = "review r20d finding 2: a CLIENT span answered 4xx (404 NR, 403 RBAC) is STATUS_CODE_UNSET; OTel's HTTP conventions make it Error"]
fn a_client_span_answered_4xx_has_an_error_status() {
    let spans = tmp("nr-spans.jsonl");
    let out = sim(&[
        "run",
        &scenario("bookinfo-ratings-canary"),
        "--traces",
        path_str(&spans),
        "--sample",
        "1",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&spans).expect("the spans");
    let client_4xx: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter(|s| {
            s["kind"] == "SPAN_KIND_CLIENT"
                && s["attributes"]["http.status_code"]
                    .as_u64()
                    .is_some_and(|c| (400..500).contains(&c))
        })
        .collect();
    assert!(
        client_4xx.len() > 20,
        "{} client spans 4xx",
        client_4xx.len()
    );
    for s in &client_4xx {
        assert_eq!(s["status"]["code"], "STATUS_CODE_ERROR", "{s}");
    }
}

/// Finding 3: the service graph shows a call edge whose every call failed its caller as
/// healthy. In bookinfo-ratings-canary the canary's calls to `ratings` on `/rating/0` are
/// answered 404 `NR` and each fails its `reviews` request (the README: "a status of 400 or
/// more ... fails the caller's request"); the graph's edge `reviews -> ratings unknown` reads
/// `0.00% 5xx` (and `--json` `graph[].failed` 0, `services.ratings` 100% success), while the
/// edge into `reviews canary` reads 18.65%: the user reading the graph sees the symptom and not
/// its cause. Kiali, which the graph stands in for, counts 4xx as errors on its edges ("For
/// http protocol 4xx are client errors and 5xx codes are application errors", degraded at 10%,
/// failure at 20%: kiali.io/docs/configuration/health).
#[test]
#[ignore = "review r20d finding 3: the graph edge of calls all answered 404 (each failing its caller) shows 0.00% errors"]
fn a_graph_edge_of_failed_4xx_calls_shows_its_errors() {
    let dot = tmp("ratings-canary.dot");
    let out = sim(&[
        "run",
        &scenario("bookinfo-ratings-canary"),
        "--graph",
        path_str(&dot),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&dot).expect("the graph");
    let edge = dot_edges(&text)
        .into_iter()
        .find(|(from, to, _)| from == "reviews" && to == "ratings/unknown")
        .unwrap_or_else(|| panic!("no edge reviews -> ratings/unknown in\n{text}"));
    assert!(
        !edge.2.contains("0.00%"),
        "every call on this edge failed its caller (404 NR), its label: {}",
        edge.2
    );
}

/// Finding 4: `sweep --vary 'KIND/NAME:PATH=V'` edits every document of that kind and name,
/// also one that a later document replaces. Istio's traffic-shifting task applies
/// `virtual-service-all-v1.yaml` and then `virtual-service-reviews-90-10.yaml` (both define
/// VirtualService `reviews`; `kubectl apply` makes the second the object). A scenario doing the
/// same runs with the 90/10 split, as it should, but varying the second destination's weight
/// (`spec.http[0].route[1].weight`) exits 2: "`[1]` is past the end of a list of 1 element",
/// the superseded object's. The edit should apply to the object in effect (the last applied).
#[test]
#[ignore = "review r20d finding 4: --vary edits a superseded document of the same kind/name too and fails on it"]
fn vary_edits_the_object_in_effect_not_a_superseded_one() {
    let file = write(
        "r20d-superseded.yaml",
        r#"name: superseded
seed: 5
duration: 1m
services:
  - name: reviews
    versions:
      v1: {pods: 2}
      v2: {pods: 2}
traffic:
  - {client: productpage, service: reviews, rate: 50}
manifests: |
  apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata: {name: reviews}
  spec:
    host: reviews
    subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
  ---
  apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata: {name: reviews}
  spec:
    hosts: [reviews]
    http:
    - route:
      - destination: {host: reviews, subset: v1}
  ---
  apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata: {name: reviews}
  spec:
    hosts: [reviews]
    http:
    - route:
      - destination: {host: reviews, subset: v1}
        weight: 90
      - destination: {host: reviews, subset: v2}
        weight: 10
expect:
  services:
    reviews:
      versions:
        v2: {share: 10, margin: 3}
"#,
    );
    let run = sim(&["run", path_str(&file)]);
    assert_eq!(
        run.code, 0,
        "the 90/10 document is the one in effect: {}",
        run.stdout
    );
    let out = sim(&[
        "sweep",
        path_str(&file),
        "--seeds",
        "1",
        "--vary",
        "VirtualService/reviews:spec.http[0].route[1].weight=30",
    ]);
    assert_ne!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains("past the end"), "{}", out.stderr);
}

/// Finding 5: two outputs scenarios/README.md shows no longer match a run. (a) "A 500 from the
/// bad pod of `flaky-pod-ejected.yaml`, 11.8 s into the run" shows the upstream cluster
/// `outbound|80||podinfo-primary.test.svc.cluster.local`; the run writes `outbound|9898||...`
/// (the Canary's port). (b) "A request of `crash-at-30.yaml` (`--trace-filter req=22540`)"
/// shows `attempt-sent` lines; `--seed 5` writes `pool-wait ... pending=1` there (the
/// connection fails to set up: the attempt never leaves on a ready connection).
#[test]
#[ignore = "review r20d finding 5: scenarios/README.md's access-log line (outbound|80||) and crash-at-30 trace (attempt-sent) differ from a run"]
fn the_readmes_shown_outputs_are_what_a_run_writes() {
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

/// A mesh without a Canary: `front` calls `back`.
const MESH: &str = r#"name: mesh-alone
seed: 5
duration: 1m
services:
  - name: front
    versions:
      v1: {pods: 1, calls: [{service: back}]}
  - name: back
    versions:
      v1: {pods: 1}
traffic:
  - {client: user, service: front, rate: 10}
expect:
  clients:
    user: {min_success_rate: 99}
"#;

/// Finding 6: a run of the mesh alone reports rollout state it never had. `--json` says
/// `"final_phase": "Initializing"` (no Canary exists to initialise; the outcome is
/// `no-rollout`), and the text prints the timeline's column heads (`phase  canary  analysis
/// decision`) over no rows. A mesh-alone run should have no phase (null) and no rollout table.
#[test]
#[ignore = "review r20d finding 6: a mesh-alone run reports final_phase Initializing and prints an empty rollout table"]
fn a_run_of_the_mesh_alone_reports_no_rollout_phase() {
    let file = write("r20d-mesh-alone.yaml", MESH);
    let out = sim(&["run", path_str(&file), "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let runs: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(runs[0]["outcome"], "no-rollout");
    let text = sim(&["run", path_str(&file)]);
    assert!(
        runs[0]["final_phase"].is_null() && !text.stdout.contains("phase             canary"),
        "final_phase {}; text:\n{}",
        runs[0]["final_phase"],
        text.stdout
    );
}

/// Finding 7: names Kubernetes refuses load. A service `Back_1` (a Service name must be a
/// DNS-1035 label: lowercase letters, digits, `-`), a version `v 1` (it names the Deployment
/// `back-v 1` and the pods' `version` label, neither of which may hold a space), and a pod label
/// key `bad key!` (not a qualified name) all validate, and the run writes pods `back-v 1-0`
/// into the access log and the graph. `kubectl apply` refuses each; the loader should too, at
/// its line, as it does for other values out of range.
#[test]
#[ignore = "review r20d finding 7: a service `Back_1`, a version `v 1` and a label key `bad key!` load; Kubernetes refuses them"]
fn names_kubernetes_refuses_are_refused() {
    let cases = [
        (
            "  - name: back\n",
            "  - name: Back_1\n",
            "calls: [{service: back}]",
            "calls: [{service: Back_1}]",
        ),
        ("      v1: {pods: 1}\n", "      'v 1': {pods: 1}\n", "", ""),
        (
            "      v1: {pods: 1}\n",
            "      v1: {pods: 1, labels: {'bad key!': x}}\n",
            "",
            "",
        ),
    ];
    let mut loaded = Vec::new();
    for (i, (from, to, from2, to2)) in cases.iter().enumerate() {
        assert!(MESH.contains(from));
        let text = MESH.replacen(from, to, 1).replacen(from2, to2, 1);
        let file = write(&format!("r20d-names-{i}.yaml"), &text);
        let out = sim(&["validate", path_str(&file)]);
        if out.code != 2 {
            loaded.push(to.trim().to_string());
        }
    }
    assert!(loaded.is_empty(), "these load: {loaded:?}");
}

/// Finding 8: scenarios/README.md contradicts itself, and the run, on a DestinationRule
/// applied after the VirtualService that names its subsets. "Several services" and the first
/// "What the simulator simplifies" bullets say istiod rebuilds the routes and they route to the
/// subset from then on; a later bullet says "a DestinationRule applied later (mid-run, after the
/// route) does not re-resolve them, where Istio would". A run re-resolves them: a VirtualService
/// to subset `v2`, defined at 1m by a DestinationRule selecting v1's pods, answers 503 `NC` for
/// a minute and then routes every request (no failure after 1m). The stale bullet misleads a
/// user reading what the model leaves out.
#[test]
#[ignore = "review r20d finding 8: scenarios/README.md says a DestinationRule applied later does not re-resolve subsets; the run (and the README elsewhere) re-resolves"]
fn the_readme_says_once_how_a_later_destination_rule_resolves_subsets() {
    let file = write(
        "r20d-late-dr.yaml",
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

/// Finding 9: a client without a sidecar gets Envoy access-log lines and client spans. The
/// README: `--access-log` writes "a line per request as the client's sidecar logs it", and "a
/// client without a sidecar has no Envoy: it calls the Service's cluster IP and kube-proxy
/// sends each connection". Yet a `sidecar: false` client's every request is logged with an
/// Envoy upstream cluster (`outbound|80||back.default.svc.cluster.local`) and response flags,
/// and traced as a `SPAN_KIND_CLIENT` span of service `job`; in mtls-strict-migration the
/// legacy job's resets are 10,035 lines `503 UC` that no proxy writes (on a cluster the STRICT
/// server's inbound listener refuses the plaintext connection before any HTTP request is
/// logged). The log has no field naming the client, so a user cannot tell these lines apart.
/// Only the proxies that exist should log and trace: nothing here from the client's side.
#[test]
#[ignore = "review r20d finding 9: a client without a sidecar gets Envoy outbound access-log lines (cluster, UC flags) and CLIENT spans"]
fn a_client_without_a_sidecar_writes_no_envoy_access_log_or_client_span() {
    let file = write(
        "r20d-no-sidecar.yaml",
        r#"name: no-sidecar-client
seed: 5
duration: 1m
services:
  - name: back
    versions:
      v1: {pods: 2}
traffic:
  - {client: job, service: back, rate: 10, sidecar: false}
expect:
  clients:
    job: {min_requests: 500}
"#,
    );
    let (log, spans) = (tmp("no-sidecar.log"), tmp("no-sidecar.jsonl"));
    let out = sim(&[
        "run",
        path_str(&file),
        "--access-log",
        path_str(&log),
        "--traces",
        path_str(&spans),
        "--sample",
        "1",
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let log = std::fs::read_to_string(&log).expect("the access log");
    let client_spans = std::fs::read_to_string(&spans)
        .expect("the spans")
        .lines()
        .filter(|l| l.contains("\"SPAN_KIND_CLIENT\"") && l.contains("\"service\":\"job\""))
        .count();
    assert!(
        log.lines().count() == 0 && client_spans == 0,
        "{} access-log lines (first: {}), {client_spans} client spans of `job`, which has no proxy",
        log.lines().count(),
        log.lines().next().unwrap_or("-")
    );
}
