//! The report's service graph: a node per client and per service version, in columns by
//! their distance from the clients (a calling version is one node as callee and caller, so
//! the chain of calls reads left to right), an arrow per edge labelled with its request rate,
//! error rate and p99 (the figures of `run --graph`). Inline SVG, as the plots.

use std::fmt::Write as _;

use super::html::escape;
use crate::observability::graph::{label, source_node, version_node};
use crate::result::{GraphEdge, RunResult};

const BOX_W: f64 = 150.0;
const BOX_H: f64 = 40.0;
const ROW: f64 = 90.0;
/// From one column's left side to the next's: room for an edge's label.
const COLUMN: f64 = 410.0;

/// A node's id and the text of its box.
type Node = (String, String);

/// The graph's nodes and each edge's (from, to) among them.
fn nodes(edges: &[GraphEdge]) -> (Vec<Node>, Vec<(usize, usize)>) {
    let mut nodes: Vec<Node> = Vec::new();
    let mut index = |id: String, text: String| match nodes.iter().position(|(n, _)| *n == id) {
        Some(i) => i,
        None => {
            nodes.push((id, text));
            nodes.len() - 1
        }
    };
    let links = edges
        .iter()
        .map(|e| {
            let text = match (&e.source_service, &e.source_version) {
                (Some(s), Some(v)) => format!("{s} {v}"),
                _ => e.source.clone(),
            };
            let from = index(source_node(e), text);
            let to = index(version_node(e), format!("{} {}", e.service, e.version));
            (from, to)
        })
        .collect();
    (nodes, links)
}

/// Each node's column: its fewest edges from a node nothing calls (0 for those, and for a
/// node only a cycle reaches).
fn columns(n: usize, links: &[(usize, usize)]) -> Vec<usize> {
    let mut column = vec![usize::MAX; n];
    let mut todo: Vec<usize> = (0..n)
        .filter(|&i| !links.iter().any(|&(_, to)| to == i))
        .collect();
    todo.iter().for_each(|&i| column[i] = 0);
    while !todo.is_empty() {
        let mut next = Vec::new();
        for &(from, to) in links {
            if todo.contains(&from) && column[to] == usize::MAX {
                column[to] = column[from] + 1;
                next.push(to);
            }
        }
        todo = next;
    }
    column
        .iter()
        .map(|&c| if c == usize::MAX { 0 } else { c })
        .collect()
}

/// The graph's heading and SVG; nothing for a run without requests.
pub(super) fn svg(run: &RunResult) -> String {
    if run.graph.is_empty() {
        return String::new();
    }
    let (nodes, links) = nodes(&run.graph);
    let column = columns(nodes.len(), &links);
    // Each node's row within its column, in the order nodes first appear.
    let mut filled: Vec<usize> = vec![0; column.iter().max().map_or(1, |c| c + 1)];
    let row: Vec<usize> = column
        .iter()
        .map(|&c| {
            filled[c] += 1;
            filled[c] - 1
        })
        .collect();
    let rows = filled.iter().max().copied().unwrap_or(1) as f64;
    let x = |i: usize| 10.0 + column[i] as f64 * COLUMN;
    let y = |i: usize| 10.0 + row[i] as f64 * ROW + (ROW - BOX_H) / 2.0;
    let (width, height) = (
        10.0 + (filled.len() - 1) as f64 * COLUMN + BOX_W + 20.0,
        rows * ROW + 20.0,
    );
    let mut out = format!(
        "<h3>Service graph</h3>\n<svg class=\"graph\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"service graph\">\n<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n"
    );
    let boxed = |out: &mut String, x: f64, y: f64, text: &str| {
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"6\" fill=\"#f4f4f4\" stroke=\"#555\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x + BOX_W / 2.0,
            y + BOX_H / 2.0 + 5.0,
            escape(text)
        );
    };
    for (i, (_, text)) in nodes.iter().enumerate() {
        boxed(&mut out, x(i), y(i), text);
    }
    for (e, &(from, to)) in run.graph.iter().zip(&links) {
        let (x1, y1) = (x(from) + BOX_W, y(from) + BOX_H / 2.0);
        let (x2, y2) = (x(to), y(to) + BOX_H / 2.0);
        let _ = writeln!(
            out,
            "<line x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" stroke=\"#555\" marker-end=\"url(#arrow)\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{}</text>",
            (x1 + x2) / 2.0,
            (y1 + y2) / 2.0 - 4.0,
            escape(&label(e).join(", "))
        );
    }
    out.push_str("</svg>\n");
    out
}
