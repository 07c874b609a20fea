//! A scenario's call graph: the graph of the run (`--graph`, the report, `--json`) shows the
//! calls between services as edges from the calling version, one node with the version
//! called, so the graph leads from a client to the last service; an edge's errors count 4xx
//! and 5xx (as Kiali's), and the edges carry every request and failure the callers saw, even
//! those no pod answered; and a canary whose call to a dependency fails is rolled back.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fledge_simulator::harness;
use fledge_simulator::scenario::Scenario;
use support::scenario::run_file;
use support::{path_str, sim};

fn scenario(name: &str) -> String {
    format!("{}/../scenarios/{name}.yaml", env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("call-graph");
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

const RATINGS: &str = include_str!("../../scenarios/bookinfo-ratings-canary.yaml");

#[test]
fn the_graphs_edges_match_the_call_graph() {
    let scenario = Scenario::parse(RATINGS, Path::new("bookinfo-ratings-canary.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let r = harness::run(&scenario, &scenario.variants[0], 3).expect("the run");
    assert!(r.passed(), "{:?}", r.checks);
    let edges: BTreeSet<(&str, &str, &str)> = r
        .graph
        .iter()
        .map(|e| (e.source.as_str(), e.service.as_str(), e.version.as_str()))
        .collect();
    let expected: BTreeSet<(&str, &str, &str)> = [
        ("browser", "productpage", "v1"),
        ("productpage-v1", "reviews", "primary"),
        ("productpage-v1", "reviews", "canary"),
        ("reviews-primary", "ratings", "v1"),
        // The canary's workload is the Canary's target: its good calls reach ratings, its
        // mistyped ones no pod (404 NR), an edge to ratings' `unknown` destination.
        ("reviews", "ratings", "v1"),
        ("reviews", "ratings", "unknown"),
    ]
    .into_iter()
    .collect();
    assert_eq!(edges, expected);
    // Each request of productpage calls reviews once: the edges carry the same count.
    let count = |source: &str, service: &str| -> u64 {
        r.graph
            .iter()
            .filter(|e| e.source == source && e.service == service)
            .map(|e| e.requests)
            .sum()
    };
    let browser = count("browser", "productpage");
    let calls = count("productpage-v1", "reviews");
    assert!(browser > 25_000);
    assert!(
        calls.abs_diff(browser) < 10,
        "{calls} calls for {browser} requests"
    );
}

/// The calling workload and the version it runs are one node (Kiali's versioned-app graph):
/// bookinfo's graph leads from `browser` through `productpage` and `reviews` to `ratings`.
#[test]
fn a_calling_version_is_one_node_so_the_graph_leads_from_the_client_to_the_last_service() {
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

/// An edge's error share counts 4xx as Kiali counts an edge's errors: the canary's mistyped
/// calls to `ratings` are all answered `404 NR`, 100% errors on their edge.
#[test]
fn an_edge_counts_4xx_as_errors_as_kiali_does() {
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
        .find(|(from, to, _)| from == "reviews/canary" && to == "ratings/unknown")
        .unwrap_or_else(|| panic!("no edge reviews/canary -> ratings/unknown in\n{text}"));
    let errors: f64 = edge
        .2
        .split("\\n")
        .find_map(|part| part.strip_suffix("% errors"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no error share in the label {}", edge.2));
    assert_eq!(
        errors, 100.0,
        "every call on this edge failed its caller (404 NR), its label: {}",
        edge.2
    );
}

/// The service graph carries the requests no pod answered too (a full pool's `UO`, `UH`, `NR`,
/// an injected abort): its edges add up to every request and failure the callers saw. (Review
/// r20: on load-spike-pool-overflow the edges once showed 0.05% failed, the clients 2.5%.)
#[test]
fn the_service_graph_carries_every_request_and_failure_the_callers_saw() {
    let r = run_file("load-spike-pool-overflow", 1);
    assert!(r.failed_requests > 1000, "{}", r.failed_requests);
    let requests: u64 = r.graph.iter().map(|e| e.requests).sum();
    let failed: u64 = r.graph.iter().map(|e| e.failed).sum();
    assert_eq!(requests, r.requests, "requests on the edges: {:?}", r.graph);
    assert_eq!(
        failed, r.failed_requests,
        "failures on the edges: {:?}",
        r.graph
    );
}
