//! The outputs of `run` beside its result: the requests the client's proxy answers at once
//! (no route, `NR`; no cluster, `NC`) are in the access log and the spans like any other, the
//! spans of one request at the edge form one tree along the call graph, a client span answered
//! 4xx is an error, only the proxies that exist log and trace, and a run of several variants
//! writes one service graph that renders as one picture.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use support::{path_str, sim, write};

fn scenario(name: &str) -> String {
    format!("{}/../scenarios/{name}.yaml", env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("h20e-outputs");
    std::fs::create_dir_all(&dir).expect("writable");
    dir.join(name)
}

/// What a run of a repository scenario wrote: its access log, spans and report (those asked).
struct Outputs {
    log: String,
    spans: String,
    report: String,
}

/// `run` of scenarios/`name`.yaml writing the access log, the spans and (with `report`) the
/// report, sampling `sample` of the requests, which must exit 0. Each scenario is run once for
/// every test reading its outputs.
fn run_scenario(name: &str, sample: &str, report: bool) -> Outputs {
    let (log, spans, html) = (
        tmp(&format!("{name}.log")),
        tmp(&format!("{name}.jsonl")),
        tmp(&format!("{name}.html")),
    );
    let file = scenario(name);
    let mut args = vec![
        "run",
        &file,
        "--access-log",
        path_str(&log),
        "--traces",
        path_str(&spans),
        "--sample",
        sample,
    ];
    if report {
        args.extend(["--report", path_str(&html)]);
    }
    let out = sim(&args);
    assert_eq!(out.code, 0, "{name}: {}", out.stderr);
    Outputs {
        log: std::fs::read_to_string(&log).expect("the access log"),
        spans: std::fs::read_to_string(&spans).expect("the spans"),
        report: if report {
            std::fs::read_to_string(&html).expect("the report")
        } else {
            String::new()
        },
    }
}

/// bookinfo-ratings-canary, every request written: its canary of reviews calls ratings on a
/// path no route of ratings takes (404 `NR`).
fn ratings_canary() -> &'static Outputs {
    static RUN: OnceLock<Outputs> = OnceLock::new();
    RUN.get_or_init(|| run_scenario("bookinfo-ratings-canary", "1", false))
}

/// bookinfo-mesh (30,000 requests at the edge), 2% of them written, and its report.
fn bookinfo_mesh() -> &'static Outputs {
    static RUN: OnceLock<Outputs> = OnceLock::new();
    RUN.get_or_init(|| run_scenario("bookinfo-mesh", "0.02", true))
}

/// A request no route takes (`404 NR`, answered by the client's proxy) has its access-log
/// line and its span like any other.
#[test]
fn requests_no_route_takes_are_in_the_access_log_and_the_spans() {
    let run = ratings_canary();
    let unrouted: Vec<&str> = run
        .log
        .lines()
        .filter(|l| l.contains("\" 404 NR "))
        .collect();
    assert!(unrouted.len() > 20, "{} NR lines", unrouted.len());
    for line in &unrouted {
        assert!(
            line.contains("GET /rating/0 ") && line.contains("\"ratings\" \"-\" -"),
            "{line}"
        );
    }
    let nr_spans = run
        .spans
        .lines()
        .filter(|l| l.contains("\"response_flags\":\"NR\""))
        .count();
    assert_eq!(nr_spans, unrouted.len());
}

/// A run of several variants writes one service graph, a cluster a variant, that renders as one
/// picture.
#[test]
fn several_variants_write_one_digraph_with_a_cluster_each() {
    let dot = tmp("variants.dot");
    let out = sim(&[
        "run",
        &scenario("judges-compared"),
        "--graph",
        path_str(&dot),
    ]);
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    let text = std::fs::read_to_string(&dot).expect("the graph");
    assert_eq!(text.matches("digraph ").count(), 1, "{text}");
    assert_eq!(text.matches("subgraph cluster_").count(), 2, "{text}");
    // Each variant's nodes are its own: no node is declared twice.
    let mut nodes: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" [label=") && !l.contains(" -> "))
        .map(|l| l.trim().split(" [label=").next().unwrap_or(""))
        .collect();
    let declared = nodes.len();
    nodes.sort_unstable();
    nodes.dedup();
    assert!(declared >= 4, "{text}");
    assert_eq!(nodes.len(), declared, "{text}");
    // Where Graphviz is installed, the file renders as one picture.
    if let Ok(svg) = Command::new("dot").arg("-Tsvg").arg(&dot).output() {
        assert!(
            svg.status.success(),
            "{}",
            String::from_utf8_lossy(&svg.stderr)
        );
        let svg = String::from_utf8_lossy(&svg.stdout);
        assert_eq!(svg.matches("<svg").count(), 1);
    }
}

/// A span's field as text (`attributes.x` for an attribute).
fn field<'a>(span: &'a serde_json::Value, name: &str) -> &'a str {
    let v = match name.strip_prefix("attributes.") {
        Some(a) => &span["attributes"][a],
        None => &span[name],
    };
    v.as_str().unwrap_or("")
}

/// The spans of one request at the edge form one tree along the call graph: one root (the
/// client's), each server span under its attempt's client span, each call under the server span
/// of the attempt that made it.
#[test]
fn the_spans_of_one_bookinfo_request_form_one_tree_along_the_call_graph() {
    let text = &bookinfo_mesh().spans;
    let mut traces: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for line in text.lines() {
        let span: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        traces
            .entry(field(&span, "traceId").to_string())
            .or_default()
            .push(span);
    }
    // 2% of 30,000 requests at the edge, each a trace.
    assert!(
        (450..=750).contains(&traces.len()),
        "{} traces",
        traces.len()
    );
    let graph: BTreeSet<(&str, &str)> = [
        ("productpage", "details"),
        ("productpage", "reviews"),
        ("reviews", "ratings"),
    ]
    .into();
    let mut edges = BTreeSet::new();
    for (trace, spans) in &traces {
        let by_id: BTreeMap<&str, &serde_json::Value> =
            spans.iter().map(|s| (field(s, "spanId"), s)).collect();
        assert_eq!(by_id.len(), spans.len(), "span ids repeat in {trace}");
        let roots: Vec<_> = spans
            .iter()
            .filter(|s| field(s, "parentSpanId").is_empty())
            .collect();
        assert_eq!(roots.len(), 1, "trace {trace} has {} roots", roots.len());
        assert_eq!(field(roots[0], "kind"), "SPAN_KIND_CLIENT");
        assert_eq!(field(roots[0], "service"), "browser");
        let mut children: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for s in spans
            .iter()
            .filter(|s| !field(s, "parentSpanId").is_empty())
        {
            let parent = by_id
                .get(field(s, "parentSpanId"))
                .unwrap_or_else(|| panic!("a span of {trace} has its parent elsewhere: {s}"));
            // The caller's span encloses its child's.
            assert!(parent["startTimeUnixNano"].as_u64() <= s["startTimeUnixNano"].as_u64());
            assert!(parent["endTimeUnixNano"].as_u64() >= s["endTimeUnixNano"].as_u64());
            let callee = field(s, "attributes.destination.service");
            match field(s, "kind") {
                // A pod's side of an attempt, under its request's client span.
                "SPAN_KIND_SERVER" => {
                    assert_eq!(field(parent, "kind"), "SPAN_KIND_CLIENT", "{s}");
                    assert_eq!(field(parent, "attributes.destination.service"), callee);
                }
                // A call, under the server span of the caller's attempt that made it.
                _ => {
                    assert_eq!(field(parent, "kind"), "SPAN_KIND_SERVER", "{s}");
                    let caller = field(parent, "attributes.destination.service");
                    edges.insert((caller.to_string(), callee.to_string()));
                    assert!(graph.contains(&(caller, callee)), "{caller} -> {callee}");
                    children
                        .entry(field(parent, "spanId"))
                        .or_default()
                        .insert(callee);
                }
            }
        }
        // Each pod's answer made its version's calls: productpage both, reviews v2 and v3
        // ratings, reviews v1 and the leaves none.
        for s in spans
            .iter()
            .filter(|s| field(s, "kind") == "SPAN_KIND_SERVER")
        {
            let made: Vec<&str> = children
                .get(field(s, "spanId"))
                .map(|c| c.iter().copied().collect())
                .unwrap_or_default();
            let expected: &[&str] = match (
                field(s, "attributes.destination.service"),
                field(s, "attributes.destination.version"),
            ) {
                ("productpage", _) => &["details", "reviews"],
                ("reviews", "v2" | "v3") => &["ratings"],
                _ => &[],
            };
            assert_eq!(made, expected, "{s}");
        }
    }
    let edges: BTreeSet<(&str, &str)> = edges
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(edges, graph);
}

/// The report of a mesh without a Canary draws no rollout plots and has a row a version.
#[test]
fn the_report_of_a_mesh_without_a_canary_draws_no_rollout_plots_and_tables_each_version() {
    let html = &bookinfo_mesh().report;
    // No weight, primary or canary to draw.
    assert!(!html.contains("Canary traffic weight"), "a rollout plot");
    assert!(!html.contains("p99 latency (ms), at the destination"));
    assert!(html.contains("Success rate (%) seen by the clients"));
    assert!(html.contains("The mesh alone, without a Canary"));
    let table = html
        .split("<h3>Services</h3>")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .expect("a services table");
    for row in ["<td>reviews</td>", "<td>ratings</td>", "<td>details</td>"] {
        assert!(table.contains(row), "{row} in {table}");
    }
    for version in ["v1", "v2", "v3"] {
        assert!(table.contains(&format!("<td>{version}</td>")), "{table}");
    }
}

/// The access log's upstream cluster is `outbound|port|subset|host`, its subset the version
/// routed to, and a call's lines carry its caller's request id.
#[test]
fn the_access_log_names_the_upstream_cluster_whose_subset_is_the_version_routed_to() {
    let text = &bookinfo_mesh().log;
    let mut subsets: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        // `... "X-REQUEST-ID" "AUTHORITY" "UPSTREAM_HOST" UPSTREAM_CLUSTER ROUTE_NAME`
        let quoted: Vec<&str> = line.split('"').collect();
        let (id, authority, upstream) = (quoted[7], quoted[9], quoted[11]);
        let rest: Vec<&str> = quoted[12].split_whitespace().collect();
        let [cluster, _route] = rest[..] else {
            panic!("no cluster and route in {line}");
        };
        ids.entry(id.to_string())
            .or_default()
            .insert(authority.to_string());
        let parts: Vec<&str> = cluster.split('|').collect();
        let [direction, port, subset, host] = parts[..] else {
            panic!("{cluster} is not outbound|port|subset|host");
        };
        assert_eq!(direction, "outbound", "{line}");
        assert!(port.parse::<u16>().is_ok(), "{line}");
        assert_eq!(
            host,
            format!("{authority}.bookinfo.svc.cluster.local"),
            "{line}"
        );
        match authority {
            // Routed by subsets: the subset is the version of the pod that answered.
            "reviews" => {
                assert!(
                    upstream.starts_with(&format!("reviews-{subset}-")),
                    "{line}"
                );
                *subsets.entry(subset.to_string()).or_default() += 1;
            }
            // No VirtualService: the cluster over the whole Service.
            _ => assert_eq!(subset, "", "{line}"),
        }
    }
    assert_eq!(
        subsets.keys().map(String::as_str).collect::<Vec<_>>(),
        ["v1", "v2", "v3"]
    );
    // A call carries its caller's request id: the lines of a request at the edge share it.
    let whole = ids
        .values()
        .filter(|a| a.contains("productpage") && a.contains("details"))
        .count();
    assert!(whole > 0, "no request id shared along its calls");
}

/// OpenTelemetry's HTTP conventions: a CLIENT span answered 4xx (here the canary's `404 NR`
/// calls) is an error, where a SERVER span would be left unset.
#[test]
fn a_client_span_answered_4xx_has_an_error_status() {
    let client_4xx: Vec<Value> = ratings_canary()
        .spans
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

/// The access log and the spans (with `--sample 1`) of a run of `yaml`.
fn outputs(name: &str, yaml: &str) -> (String, Vec<Value>) {
    let file = write(&format!("{name}.yaml"), yaml);
    let (log, spans) = (tmp(&format!("{name}.log")), tmp(&format!("{name}.jsonl")));
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
    let spans = std::fs::read_to_string(&spans)
        .expect("the spans")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    (
        std::fs::read_to_string(&log).expect("the access log"),
        spans,
    )
}

/// `job` calls `back` (two pods), each with a sidecar unless `SIDECAR` says otherwise.
const JOB_BACK: &str = r#"name: sidecars
seed: 5
duration: 1m
services:
  - name: back
    versions:
      v1: {pods: 2, sidecar: SERVER}
traffic:
  - {client: job, service: back, rate: 10, sidecar: CLIENT}
expect:
  clients:
    job: {min_requests: 500}
"#;

fn kind_count(spans: &[Value], kind: &str) -> usize {
    spans.iter().filter(|s| s["kind"] == kind).count()
}

/// Only proxies that exist log and trace: a client without a sidecar has no Envoy, so its
/// requests have no access-log line and no CLIENT span; the server's sidecar still traces
/// each attempt, a span without a parent (no client span to be the child of).
#[test]
fn a_client_without_a_sidecar_has_no_access_log_lines_or_client_spans() {
    let yaml = JOB_BACK
        .replace("SERVER", "true")
        .replace("CLIENT", "false");
    let (log, spans) = outputs("no-sidecar-client", &yaml);
    assert!(
        log.lines().count() == 0 && kind_count(&spans, "SPAN_KIND_CLIENT") == 0,
        "{} access-log lines (first: {}), {} client spans of `job`, which has no proxy",
        log.lines().count(),
        log.lines().next().unwrap_or("-"),
        kind_count(&spans, "SPAN_KIND_CLIENT")
    );
    assert!(kind_count(&spans, "SPAN_KIND_SERVER") > 500);
    for s in &spans {
        assert_eq!(s["parentSpanId"], "", "{s}");
    }
}

/// A pod without a sidecar has no proxy to trace its attempts: no SERVER span, while the
/// client's sidecar logs and traces every request.
#[test]
fn a_server_without_a_sidecar_has_no_server_spans() {
    let yaml = JOB_BACK
        .replace("SERVER", "false")
        .replace("CLIENT", "true");
    let (log, spans) = outputs("no-sidecar-server", &yaml);
    assert_eq!(kind_count(&spans, "SPAN_KIND_SERVER"), 0);
    assert!(kind_count(&spans, "SPAN_KIND_CLIENT") > 500);
    assert_eq!(log.lines().count(), kind_count(&spans, "SPAN_KIND_CLIENT"));
}
