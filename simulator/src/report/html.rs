//! A self-contained HTML report: inline SVG plots and the timeline, no scripts, no network.

use std::fmt::Write as _;

use crate::expect::outcome_name;
use crate::harness::{RunResult, Sample};

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 220.0;
const PAD_LEFT: f64 = 60.0;
const PAD_RIGHT: f64 = 20.0;
const PAD_TOP: f64 = 20.0;
const PAD_BOTTOM: f64 = 30.0;
const PRIMARY: &str = "#2f6fb0";
const CANARY: &str = "#d9822b";
const CLIENTS: &str = "#6b6b6b";

/// The report for one or more runs of a scenario.
pub fn html(runs: &[RunResult], description: &str) -> String {
    let title = runs.first().map_or("fledge-sim", |r| r.scenario.as_str());
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{}</style></head><body>\n<h1>{}</h1>\n<p>{}</p>\n",
        escape(title),
        STYLE,
        escape(title),
        escape(description.trim())
    );
    for run in runs {
        section(&mut out, run);
    }
    out.push_str("</body></html>\n");
    out
}

fn section(out: &mut String, run: &RunResult) {
    let name = if run.variant.is_empty() {
        format!("seed {}", run.seed)
    } else {
        format!("{} (seed {})", run.variant, run.seed)
    };
    let verdict = if run.passed() { "pass" } else { "fail" };
    let _ = write!(
        out,
        "<section><h2>{} <span class=\"{verdict}\">{}</span></h2>\n<p>Outcome <b>{}</b>; highest canary weight {}%; {} requests, {} failed ({:.3}% success), {} failures served by the canary.</p>\n",
        escape(&name),
        if run.passed() {
            "expectations met"
        } else {
            "expectations failed"
        },
        outcome_name(run.outcome),
        run.max_canary_weight,
        run.requests,
        run.failed_requests,
        run.success_rate,
        run.failed_requests_canary
    );
    let end = run.samples.last().map_or(1, |s| s.at_ms).max(1) as f64;
    let marks: Vec<(f64, String, bool)> = run
        .decisions
        .iter()
        .filter(|d| !d.scenario_event || d.messages.iter().any(|m| m.contains("deployed")))
        .map(|d| (d.at_ms as f64, d.messages.join("; "), d.warning))
        .collect();
    let weight: Vec<(f64, f64)> = run
        .samples
        .iter()
        .map(|s| (s.at_ms as f64, s.canary_weight as f64))
        .collect();
    plot(
        out,
        "Canary traffic weight (%)",
        end,
        (0.0, 100.0),
        &[("canary weight", CANARY, weight)],
        &marks,
    );
    let series = |f: fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        run.samples
            .iter()
            .filter_map(|s| f(s).map(|v| (s.at_ms as f64, v)))
            .collect()
    };
    let sr_p = series(|s| s.primary.success_rate);
    let sr_c = series(|s| s.canary.success_rate);
    let sr_clients = series(|s| s.clients_success_rate);
    let lo = sr_p
        .iter()
        .chain(&sr_c)
        .chain(&sr_clients)
        .map(|p| p.1)
        .fold(100.0f64, f64::min)
        .clamp(0.0, 99.0)
        .floor();
    plot(
        out,
        "Success rate (%) per interval: reported by each version's sidecars (what the analysis reads), and seen by the clients after retries",
        end,
        (lo, 100.0),
        &[
            ("primary", PRIMARY, sr_p),
            ("canary", CANARY, sr_c),
            ("clients", CLIENTS, sr_clients),
        ],
        &marks,
    );
    let p99_p = series(|s| s.primary.p99_ms);
    let p99_c = series(|s| s.canary.p99_ms);
    let hi = p99_p
        .iter()
        .chain(&p99_c)
        .map(|p| p.1)
        .fold(1.0f64, f64::max)
        * 1.1;
    plot(
        out,
        "p99 latency (ms), per interval",
        end,
        (0.0, hi),
        &[("primary", PRIMARY, p99_p), ("canary", CANARY, p99_c)],
        &marks,
    );

    let clients: Vec<String> = run
        .clients
        .iter()
        .map(|c| {
            format!(
                "{}: {} requests, {} failed ({:.3}% success)",
                escape(&c.name),
                c.requests,
                c.failed,
                c.success_rate
            )
        })
        .collect();
    let counters: Vec<String> = run
        .counters
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{} {v}", escape(k)))
        .collect();
    let _ = writeln!(
        out,
        "<p>Clients: {}.</p>\n<p class=\"counters\">Counters: {}.</p>",
        clients.join("; "),
        counters.join(", ")
    );
    out.push_str("<h3>Expectations</h3><table><tr><th></th><th>check</th><th>expected</th><th>actual</th></tr>\n");
    for c in &run.checks {
        let _ = writeln!(
            out,
            "<tr><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if c.passed { "pass" } else { "fail" },
            if c.passed { "pass" } else { "FAIL" },
            escape(&c.name),
            escape(&c.expected),
            escape(&c.actual)
        );
    }
    out.push_str("</table>\n<h3>Timeline</h3><table><tr><th>time</th><th>phase</th><th>canary</th><th>analysis</th><th>decision</th></tr>\n");
    for d in &run.decisions {
        let metrics: Vec<String> = d
            .metrics
            .iter()
            .map(|m| format!("{}: {}", m.verdict, m.reason))
            .collect();
        let _ = writeln!(
            out,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}%</td><td>{}</td><td>{}</td></tr>",
            if d.warning { "warn" } else { "" },
            fledge_controller::spec::Duration(d.at_ms),
            if d.scenario_event {
                "(scenario)".to_string()
            } else {
                d.phase.to_string()
            },
            d.canary_weight,
            escape(&metrics.join("; ")),
            escape(&d.messages.join("; "))
        );
    }
    out.push_str("</table></section>\n");
}

type Series = (&'static str, &'static str, Vec<(f64, f64)>);

/// A line plot over time with decisions marked as vertical lines (their text as tooltips).
fn plot(
    out: &mut String,
    title: &str,
    end_ms: f64,
    (lo, hi): (f64, f64),
    series: &[Series],
    marks: &[(f64, String, bool)],
) {
    let hi = if hi <= lo { lo + 1.0 } else { hi };
    let x = |t: f64| PAD_LEFT + (WIDTH - PAD_LEFT - PAD_RIGHT) * t / end_ms;
    let y = |v: f64| {
        PAD_TOP + (HEIGHT - PAD_TOP - PAD_BOTTOM) * (1.0 - (v.clamp(lo, hi) - lo) / (hi - lo))
    };
    let _ = write!(
        out,
        "<figure><figcaption>{}</figcaption><svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\">",
        escape(title)
    );
    for i in 0..=4 {
        let v = lo + (hi - lo) * i as f64 / 4.0;
        let _ = write!(
            out,
            "<line x1=\"{PAD_LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/><text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>",
            WIDTH - PAD_RIGHT,
            PAD_LEFT - 6.0,
            y(v) + 4.0,
            trim(v),
            y = y(v)
        );
    }
    for i in 0..=6 {
        let t = end_ms * i as f64 / 6.0;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" class=\"axis\" text-anchor=\"middle\">{}</text>",
            x(t),
            HEIGHT - 8.0,
            fledge_controller::spec::Duration((t / 1000.0).round() as u64 * 1000)
        );
    }
    for (t, text, warning) in marks {
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{PAD_TOP}\" y2=\"{}\" class=\"{}\"><title>{} {}</title></line>",
            HEIGHT - PAD_BOTTOM,
            if *warning { "mark warn" } else { "mark" },
            fledge_controller::spec::Duration(*t as u64),
            escape(text),
            x = x(*t)
        );
    }
    for (i, (name, color, points)) in series.iter().enumerate() {
        if !points.is_empty() {
            let path: Vec<String> = points
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            // What clients saw is dashed, so the versions' lines show through where they agree.
            let dash = if *color == CLIENTS {
                " stroke-dasharray=\"5 4\""
            } else {
                ""
            };
            let _ = write!(
                out,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
                path.join(" ")
            );
        }
        let _ = write!(
            out,
            "<rect x=\"{}\" y=\"4\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"13\" class=\"axis\">{name}</text>",
            PAD_LEFT + 10.0 + 120.0 * i as f64,
            PAD_LEFT + 24.0 + 120.0 * i as f64
        );
    }
    out.push_str("</svg></figure>\n");
}

fn trim(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:1000px;color:#222}\
h2 span{font-size:.6em;padding:.2em .5em;border-radius:4px}\
.pass{color:#1a7f37}.fail{color:#c62828}span.pass{background:#e6f4ea}span.fail{background:#fdecea}\
figure{margin:1em 0}figcaption{font-weight:600;margin-bottom:.3em}svg{width:100%;height:auto;background:#fafafa}\
.grid{stroke:#e2e2e2}.axis{font-size:11px;fill:#555}.mark{stroke:#999;stroke-dasharray:3 3}.mark.warn{stroke:#c62828}\
table{border-collapse:collapse;font-size:13px;margin-bottom:1em}td,th{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}\
tr.warn td{background:#fff4f4}";
