//! The outputs of `run` beside its result: the requests the client's proxy answers at once
//! (no route, `NR`; no cluster, `NC`) are in the access log and the spans like any other, and
//! a run of several variants writes one service graph that renders as one picture.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{path_str, sim};

fn scenario(name: &str) -> String {
    format!("{}/../scenarios/{name}.yaml", env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("h20e-outputs");
    std::fs::create_dir_all(&dir).expect("writable");
    dir.join(name)
}

#[test]
fn requests_no_route_takes_are_in_the_access_log_and_the_spans() {
    // The canary of reviews calls ratings on a path no route of ratings takes: 404 NR.
    let (log, spans) = (tmp("nr.log"), tmp("nr.jsonl"));
    let out = sim(&[
        "run",
        &scenario("bookinfo-ratings-canary"),
        "--access-log",
        path_str(&log),
        "--traces",
        path_str(&spans),
        "--sample",
        "1",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let log = std::fs::read_to_string(&log).expect("the access log");
    let unrouted: Vec<&str> = log.lines().filter(|l| l.contains("\" 404 NR ")).collect();
    assert!(unrouted.len() > 20, "{} NR lines", unrouted.len());
    for line in &unrouted {
        assert!(
            line.contains("GET /rating/0 ") && line.contains("\"ratings\" \"-\" -"),
            "{line}"
        );
    }
    let spans = std::fs::read_to_string(&spans).expect("the spans");
    let nr_spans = spans
        .lines()
        .filter(|l| l.contains("\"response_flags\":\"NR\""))
        .count();
    assert_eq!(nr_spans, unrouted.len());
}

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
