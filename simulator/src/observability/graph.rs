//! The service graph as Graphviz DOT: a node per client workload and per service version, an
//! edge per caller and callee with its request rate, error rate and p99 over the run (the
//! callers' view, after retries). A run of several variants writes a `digraph` per variant.

use crate::result::{GraphEdge, RunResult};

/// The graphs of the runs, one `digraph` each.
pub(crate) fn dot(runs: &[RunResult]) -> String {
    let mut out = String::new();
    for run in runs {
        let name = if run.variant.is_empty() {
            run.scenario.clone()
        } else {
            format!("{} [{}]", run.scenario, run.variant)
        };
        out.push_str(&format!(
            "digraph {} {{\n  rankdir=LR;\n  node [shape=box];\n",
            quoted(&name)
        ));
        let mut nodes: Vec<(String, String)> = Vec::new();
        for e in &run.graph {
            for node in [
                (e.source.clone(), quoted(&e.source)),
                (version_node(e), lines(&[&e.service, &e.version])),
            ] {
                if !nodes.contains(&node) {
                    nodes.push(node);
                }
            }
        }
        for (id, label) in &nodes {
            out.push_str(&format!("  {} [label={label}];\n", quoted(id)));
        }
        for e in &run.graph {
            out.push_str(&format!(
                "  {} -> {} [label={}];\n",
                quoted(&e.source),
                quoted(&version_node(e)),
                lines(&label(e).each_ref().map(String::as_str))
            ));
        }
        out.push_str("}\n");
    }
    out
}

/// A version's node: `<service>/<version>`.
pub(crate) fn version_node(e: &GraphEdge) -> String {
    format!("{}/{}", e.service, e.version)
}

/// An edge's figures: request rate, error rate, p99.
pub(crate) fn label(e: &GraphEdge) -> [String; 3] {
    let errors = if e.requests == 0 {
        0.0
    } else {
        100.0 * e.failed as f64 / e.requests as f64
    };
    [
        format!("{:.1} rps", e.rps),
        format!("{errors:.2}% 5xx"),
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
