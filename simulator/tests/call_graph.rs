//! A scenario's call graph: the graph of the run (`--graph`, the report, `--json`) shows the
//! calls between services as edges from the calling version's workload, and a canary whose
//! call to a dependency fails is rolled back.

use std::collections::BTreeSet;
use std::path::Path;

use fledge_simulator::harness;
use fledge_simulator::scenario::Scenario;

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
