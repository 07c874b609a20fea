//! The service graph as Graphviz DOT: a node per client workload and per service version (a
//! version that calls others is the same node as caller and callee, so a request's path can be
//! followed from the client), an edge per caller and callee with its request rate, error rate
//! (4xx and 5xx) and p99 over the run (the callers' view, after retries). A run of several variants writes one `digraph` holding a
//! cluster per variant, its nodes named after the variant, so that one file renders as one
//! picture.

use crate::result::{GraphEdge, RunResult};

/// The graph of the runs: one `digraph`, with a `cluster_N` subgraph per run when there are
/// several.
pub(crate) fn dot(runs: &[RunResult]) -> String {
    let mut out = String::new();
    let [run] = runs else {
        let name = runs.first().map_or("", |r| r.scenario.as_str());
        out.push_str(&format!(
            "digraph {} {{\n  rankdir=LR;\n  node [shape=box];\n",
            quoted(name)
        ));
        for (i, run) in runs.iter().enumerate() {
            out.push_str(&format!(
                "  subgraph cluster_{i} {{\n    label={};\n",
                quoted(&run.variant)
            ));
            body(&mut out, run, &format!("{}: ", run.variant), "    ");
            out.push_str("  }\n");
        }
        out.push_str("}\n");
        return out;
    };
    let name = if run.variant.is_empty() {
        run.scenario.clone()
    } else {
        format!("{} [{}]", run.scenario, run.variant)
    };
    out.push_str(&format!(
        "digraph {} {{\n  rankdir=LR;\n  node [shape=box];\n",
        quoted(&name)
    ));
    body(&mut out, run, "", "  ");
    out.push_str("}\n");
    out
}

/// A run's nodes and edges, node ids starting with `prefix`, lines with `indent`.
fn body(out: &mut String, run: &RunResult, prefix: &str, indent: &str) {
    let mut nodes: Vec<(String, String)> = Vec::new();
    for e in &run.graph {
        let source = match (&e.source_service, &e.source_version) {
            (Some(s), Some(v)) => lines(&[s, v]),
            _ => quoted(&e.source),
        };
        for (id, label) in [
            (source_node(e), source),
            (version_node(e), lines(&[&e.service, &e.version])),
        ] {
            let node = (format!("{prefix}{id}"), label);
            if !nodes.iter().any(|(id, _)| *id == node.0) {
                nodes.push(node);
            }
        }
    }
    for (id, label) in &nodes {
        out.push_str(&format!("{indent}{} [label={label}];\n", quoted(id)));
    }
    for e in &run.graph {
        out.push_str(&format!(
            "{indent}{} -> {} [label={}];\n",
            quoted(&format!("{prefix}{}", source_node(e))),
            quoted(&format!("{prefix}{}", version_node(e))),
            lines(&label(e).each_ref().map(String::as_str))
        ));
    }
}

/// A version's node: `<service>/<version>`.
pub(crate) fn version_node(e: &GraphEdge) -> String {
    format!("{}/{}", e.service, e.version)
}

/// The caller's node: a calling version's own node (its workload and the version it runs are
/// one node, as in Kiali's versioned-app graph), else the client's.
pub(crate) fn source_node(e: &GraphEdge) -> String {
    match (&e.source_service, &e.source_version) {
        (Some(s), Some(v)) => format!("{s}/{v}"),
        _ => e.source.clone(),
    }
}

/// An edge's figures: request rate, error rate (4xx and 5xx, as Kiali counts an edge's
/// errors), p99.
pub(crate) fn label(e: &GraphEdge) -> [String; 3] {
    let errors = if e.requests == 0 {
        0.0
    } else {
        100.0 * (e.failed + e.client_errors) as f64 / e.requests as f64
    };
    [
        format!("{:.1} rps", e.rps),
        format!("{errors:.2}% errors"),
        e.p99_ms
            .map_or("p99 -".to_string(), |p| format!("p99 {p:.0} ms")),
    ]
}

/// A DOT string: inside one a backslash escapes the next character, so backslashes are
/// escaped as well as quotes.
fn quoted(s: &str) -> String {
    lines(&[s])
}

/// A DOT string of several lines, each escaped, joined by DOT's `\n` line break.
fn lines(parts: &[&str]) -> String {
    let escaped: Vec<String> = parts
        .iter()
        .map(|p| p.replace('\\', "\\\\").replace('"', "\\\""))
        .collect();
    format!("\"{}\"", escaped.join("\\n"))
}
