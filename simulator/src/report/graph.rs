//! The report's service graph: the callers in a column on the left, the service versions they
//! called on the right, an arrow per edge labelled with its request rate, error rate and p99
//! (the figures of `run --graph`). Inline SVG, as the plots.

use std::fmt::Write as _;

use super::html::escape;
use crate::observability::graph::{label, version_node};
use crate::result::RunResult;

const BOX_W: f64 = 150.0;
const BOX_H: f64 = 40.0;
const ROW: f64 = 90.0;
const RIGHT: f64 = 420.0;

/// The graph's heading and SVG; nothing for a run without requests.
pub(super) fn svg(run: &RunResult) -> String {
    let mut callers: Vec<&str> = Vec::new();
    let mut versions: Vec<(String, String)> = Vec::new();
    for e in &run.graph {
        if !callers.contains(&e.source.as_str()) {
            callers.push(&e.source);
        }
        let node = (version_node(e), format!("{} {}", e.service, e.version));
        if !versions.contains(&node) {
            versions.push(node);
        }
    }
    if run.graph.is_empty() {
        return String::new();
    }
    let rows = callers.len().max(versions.len()) as f64;
    let (width, height) = (RIGHT + BOX_W + 20.0, rows * ROW + 20.0);
    let y = |i: usize| 10.0 + i as f64 * ROW + (ROW - BOX_H) / 2.0;
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
    for (i, c) in callers.iter().enumerate() {
        boxed(&mut out, 10.0, y(i), c);
    }
    for (i, (_, text)) in versions.iter().enumerate() {
        boxed(&mut out, RIGHT, y(i), text);
    }
    for e in &run.graph {
        let from = callers.iter().position(|c| *c == e.source).unwrap_or(0);
        let node = version_node(e);
        let to = versions.iter().position(|(n, _)| *n == node).unwrap_or(0);
        let (x1, y1) = (10.0 + BOX_W, y(from) + BOX_H / 2.0);
        let (x2, y2) = (RIGHT, y(to) + BOX_H / 2.0);
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
