//! A self-contained HTML report: inline SVG plots and the timeline, no scripts, no network.
//!
//! The plots sample at every tick of the harness (each point covers the time since the one
//! before, from the scrape before it), so a step shorter than the analysis interval is seen. A rate from a handful of
//! requests says nothing, so a window with fewer than [`MIN_REQUESTS`] is not drawn (the
//! legend says so). Under the threshold judge each metric's bound is drawn, with the values the
//! analysis read over its own window as dots; decisions are marked and labelled.

use std::fmt::Write as _;

use fledge_controller::analysis::Verdict;
use fledge_controller::rollout::Phase;
use fledge_controller::spec::{Judge, MetricKind, RolloutSpec};

use super::plot::{Bound, Dots, Mark, Plot, Series};
use super::success;
use crate::result::{Decision, Outcome, RunResult, Sample};
use crate::scenario::Scenario;

const PRIMARY: &str = "#2f6fb0";
const CANARY: &str = "#d9822b";
const CLIENTS: &str = "#6b6b6b";

/// Fewest requests in a window for its success rate or latency to be drawn.
pub(super) const MIN_REQUESTS: u64 = 20;

/// The report for the runs of a scenario (one per variant).
pub(crate) fn html(scenario: &Scenario, runs: &[RunResult]) -> String {
    let title = runs.first().map_or("fledge-sim", |r| r.scenario.as_str());
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{}</style></head><body>\n<h1>{}</h1>\n<p>{}</p>\n",
        escape(title),
        STYLE,
        escape(title),
        escape(scenario.description.trim())
    );
    if !scenario.warnings.is_empty() {
        out.push_str("<ul class=\"warnings\">");
        for w in &scenario.warnings {
            let _ = write!(out, "<li>warning: {}</li>", escape(w));
        }
        out.push_str("</ul>\n");
    }
    for run in runs {
        let spec = scenario
            .variants
            .iter()
            .find(|v| v.name == run.variant)
            .map_or(scenario.spec.as_ref(), |v| v.spec.as_ref());
        section(&mut out, run, spec);
    }
    out.push_str("</body></html>\n");
    out
}

fn section(out: &mut String, run: &RunResult, spec: Option<&RolloutSpec>) {
    let name = if run.variant.is_empty() {
        format!("seed {}", run.seed)
    } else {
        format!("{} (seed {})", run.variant, run.seed)
    };
    let verdict = if run.passed() { "pass" } else { "fail" };
    let summary = match spec {
        Some(_) => format!(
            "Outcome <b>{}</b>; highest canary weight {}%; {} requests, {} failed ({}), {} failures served by the canary.",
            Outcome::name(run.outcome),
            run.max_canary_weight,
            run.requests,
            run.failed_requests,
            success(run.success_rate),
            run.failed_requests_canary
        ),
        None => format!(
            "The mesh alone, without a Canary: {} requests, {} failed ({}).",
            run.requests,
            run.failed_requests,
            success(run.success_rate)
        ),
    };
    let _ = write!(
        out,
        "<section><h2>{} <span class=\"{verdict}\">{}</span></h2>\n<p>{summary}</p>\n",
        escape(&name),
        if run.passed() {
            "expectations met"
        } else {
            "expectations failed"
        },
    );
    if !run.warnings.is_empty() {
        out.push_str("<ul class=\"warnings\">");
        for w in &run.warnings {
            let _ = write!(out, "<li>warning: {}</li>", escape(w));
        }
        out.push_str("</ul>\n");
    }
    match spec {
        Some(_) => plots(out, run, spec),
        // No rollout: no weight, primary or canary to draw; what the clients saw over time,
        // and each service and version in the table below.
        None => clients_plot(out, run),
    }
    out.push_str(&super::graph::svg(run));
    services_table(out, run);
    tables(out, run);
    out.push_str("</section>\n");
}

fn plots(out: &mut String, run: &RunResult, spec: Option<&RolloutSpec>) {
    let end = run.samples.last().map_or(1, |s| s.at_ms).max(1) as f64;
    // Decisions at the same time share one marker.
    let mut marks: Vec<Mark> = Vec::new();
    for d in run
        .decisions
        .iter()
        .filter(|d| !d.scenario_event || d.messages.iter().any(|m| m.contains("deployed")))
    {
        let (label, text) = (mark_label(d), d.messages.join("; "));
        match marks.last_mut() {
            Some(m) if m.at_ms == d.at_ms as f64 => {
                m.label = format!("{}, {label}", m.label);
                m.text = format!("{}; {text}", m.text);
                m.warning |= d.warning;
            }
            _ => marks.push(Mark {
                at_ms: d.at_ms as f64,
                label,
                text,
                warning: d.warning,
            }),
        }
    }
    let weight = Series {
        name: "canary weight".into(),
        color: CANARY,
        dashed: false,
        steps: true,
        points: run
            .samples
            .iter()
            .map(|s| (s.at_ms as f64, Some(f64::from(s.canary_weight))))
            .collect(),
    };
    Plot {
        title: "Canary traffic weight (%), with the controller's decisions",
        end_ms: end,
        range: (0.0, 100.0),
        series: vec![weight],
        bounds: Vec::new(),
        dots: None,
        marks: &marks,
        labelled: true,
        note: "",
    }
    .render(out);

    let threshold = spec.is_some_and(|s| matches!(s.judge, Judge::Threshold));
    let note = format!(
        "Each point covers the time since the one before (a tick: {}; from the scrape before it); windows with fewer than {MIN_REQUESTS} requests are not drawn.",
        tick(run)
    );
    let rate = |s: &Sample, side: fn(&Sample) -> (u64, Option<f64>)| {
        let (n, v) = side(s);
        (s.at_ms as f64, drawable(n, v))
    };
    let success_series = vec![
        series("primary", PRIMARY, false, run, |s| {
            rate(s, |s| (s.primary.requests, s.primary.success_rate))
        }),
        series("canary", CANARY, false, run, |s| {
            rate(s, |s| (s.canary.requests, s.canary.success_rate))
        }),
        series("clients (after retries)", CLIENTS, true, run, |s| {
            rate(s, |s| (s.clients_requests, s.clients_success_rate))
        }),
    ];
    let (bounds, dots) = analysis(run, spec, &MetricKind::RequestSuccessRate, threshold);
    let lo = lowest(&success_series, &bounds, &dots).clamp(0.0, 99.0);
    Plot {
        title: "Success rate (%): reported by each version's sidecars (what the analysis reads), and seen by the clients",
        end_ms: end,
        range: (lo, 100.0),
        series: success_series,
        bounds,
        dots,
        marks: &marks,
        labelled: false,
        note: &note,
    }
    .render(out);

    let latency_series = vec![
        series("primary", PRIMARY, false, run, |s| {
            rate(s, |s| (s.primary.requests, s.primary.p99_ms))
        }),
        series("canary", CANARY, false, run, |s| {
            rate(s, |s| (s.canary.requests, s.canary.p99_ms))
        }),
    ];
    let (bounds, dots) = analysis(run, spec, &MetricKind::RequestDuration, threshold);
    let hi = highest(&latency_series, &bounds, &dots).max(1.0);
    Plot {
        title: "p99 latency (ms), at the destination sidecars",
        end_ms: end,
        range: (0.0, hi),
        series: latency_series,
        bounds,
        dots,
        marks: &marks,
        labelled: false,
        note: &note,
    }
    .render(out);
}

/// The success rate the clients saw over the run, for a scenario without a rollout.
fn clients_plot(out: &mut String, run: &RunResult) {
    let end = run.samples.last().map_or(1, |s| s.at_ms).max(1) as f64;
    let note = format!(
        "Each point covers the time since the one before (a tick: {}); windows with fewer than {MIN_REQUESTS} requests are not drawn.",
        tick(run)
    );
    let clients = vec![series(
        "clients (after retries)",
        CLIENTS,
        false,
        run,
        |s| {
            (
                s.at_ms as f64,
                drawable(s.clients_requests, s.clients_success_rate),
            )
        },
    )];
    let lo = lowest(&clients, &[], &None).clamp(0.0, 99.0);
    Plot {
        title: "Success rate (%) seen by the clients",
        end_ms: end,
        range: (lo, 100.0),
        series: clients,
        bounds: Vec::new(),
        dots: None,
        marks: &[],
        labelled: false,
        note: &note,
    }
    .render(out);
}

/// Each service other than the rollout's, and each of its versions, over the run: requests,
/// failures (5xx) and p99, as the callers saw them.
fn services_table(out: &mut String, run: &RunResult) {
    if run.services.is_empty() {
        return;
    }
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let errors = |failed: u64, requests: u64| {
        if requests == 0 {
            "-".to_string()
        } else {
            format!("{:.2}%", 100.0 * failed as f64 / requests as f64)
        }
    };
    out.push_str("<h3>Services</h3><table><tr><th>service</th><th>version</th><th>requests</th><th>5xx</th><th>p99 (ms)</th></tr>\n");
    for s in &run.services {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>(all; {} reached no pod)</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.name),
            s.unanswered,
            s.requests,
            errors(s.failed, s.requests),
            ms(s.p99_ms)
        );
        for v in &s.versions {
            let _ = writeln!(
                out,
                "<tr><td></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&v.version),
                v.requests,
                errors(v.failed, v.requests),
                ms(v.p99_ms)
            );
        }
    }
    out.push_str("</table>\n");
}

/// A window's value, if it holds enough requests to mean something.
fn drawable(requests: u64, value: Option<f64>) -> Option<f64> {
    value.filter(|_| requests >= MIN_REQUESTS)
}

fn series(
    name: &str,
    color: &'static str,
    dashed: bool,
    run: &RunResult,
    point: impl Fn(&Sample) -> (f64, Option<f64>),
) -> Series {
    Series {
        name: name.into(),
        color,
        dashed,
        steps: false,
        points: run.samples.iter().map(point).collect(),
    }
}

/// The tick of the run's samples, for the legend.
fn tick(run: &RunResult) -> String {
    let step = run
        .samples
        .windows(2)
        .map(|w| w[1].at_ms - w[0].at_ms)
        .min()
        .unwrap_or(0);
    fledge_controller::spec::Duration(step).to_string()
}

/// The bounds of the metrics of this kind (threshold judge), and the values the analysis read
/// for them at each decision, failed checks marked.
fn analysis(
    run: &RunResult,
    spec: Option<&RolloutSpec>,
    kind: &MetricKind,
    threshold: bool,
) -> (Vec<Bound>, Option<Dots>) {
    // Without a Canary nothing was analysed.
    let Some(spec) = spec else {
        return (Vec::new(), None);
    };
    let metrics: Vec<_> = spec.metrics.iter().filter(|m| &m.kind == kind).collect();
    let mut bounds = Vec::new();
    if threshold {
        for m in &metrics {
            if let Some(min) = m.min {
                bounds.push(Bound {
                    label: format!("{} min {min}", m.name),
                    value: min,
                });
            }
            if let Some(max) = m.max {
                bounds.push(Bound {
                    label: format!("{} max {max}", m.name),
                    value: max,
                });
            }
        }
    }
    let points: Vec<(f64, f64, bool)> = run
        .decisions
        .iter()
        .flat_map(|d| d.metrics.iter().map(move |r| (d, r)))
        .filter(|(_, r)| metrics.iter().any(|m| m.name == r.name))
        .filter_map(|(d, r)| Some((d.at_ms as f64, r.value?, r.verdict == Verdict::Fail)))
        .collect();
    // The statistical judge reads everything since its step began.
    let window = match (threshold, metrics.first()) {
        (true, Some(m)) => format!(" ({} window)", m.window),
        _ => " (since the step began)".to_string(),
    };
    let dots = (!points.is_empty()).then(|| Dots {
        name: format!("analysis read{window}"),
        points,
    });
    (bounds, dots)
}

fn values<'a>(
    series: &'a [Series],
    bounds: &'a [Bound],
    dots: &'a Option<Dots>,
) -> impl Iterator<Item = f64> + 'a {
    series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .chain(bounds.iter().map(|b| b.value))
        .chain(dots.iter().flat_map(|d| d.points.iter().map(|p| p.1)))
}

fn lowest(series: &[Series], bounds: &[Bound], dots: &Option<Dots>) -> f64 {
    values(series, bounds, dots).fold(100.0, f64::min)
}

fn highest(series: &[Series], bounds: &[Bound], dots: &Option<Dots>) -> f64 {
    values(series, bounds, dots).fold(0.0, f64::max)
}

/// A decision in a word or two, from what it did: the weight it set, a halt, a rollback.
fn mark_label(d: &Decision) -> String {
    if d.scenario_event {
        return "deploy".into();
    }
    match d.phase {
        Phase::Failed => "rollback".into(),
        _ if d.warning => "halt".into(),
        Phase::Progressing if d.matched => "match".into(),
        Phase::Progressing => match (d.mirror, d.canary_weight) {
            (Some(m), _) => format!("mirror {m}%"),
            (None, 0) => "start".into(),
            (None, w) => format!("{w}%"),
        },
        Phase::WaitingPromotion => "gate".into(),
        Phase::Promoting => "promote".into(),
        Phase::Finalising => "finalise".into(),
        Phase::Succeeded => "promoted".into(),
        other => other.to_string().to_lowercase(),
    }
}

fn tables(out: &mut String, run: &RunResult) {
    let clients: Vec<String> = run
        .clients
        .iter()
        .map(|c| {
            format!(
                "{}: {} requests, {} failed ({})",
                escape(&c.name),
                c.requests,
                c.failed,
                success(c.success_rate)
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
    out.push_str("</table>\n");
    if run.outcome == Outcome::NoRollout {
        // No Canary: no phase, weight or analysis; only the scenario's own events.
        if !run.decisions.is_empty() {
            out.push_str("<h3>Events</h3><table><tr><th>time</th><th>event</th></tr>\n");
            for d in &run.decisions {
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td>{}</td></tr>",
                    fledge_controller::spec::Duration(d.at_ms),
                    escape(&d.messages.join("; "))
                );
            }
            out.push_str("</table>\n");
        }
        return;
    }
    out.push_str("<h3>Timeline</h3><table><tr><th>time</th><th>phase</th><th>canary</th><th>analysis</th><th>decision</th></tr>\n");
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
    out.push_str("</table>\n");
}

pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:1000px;color:#222}\
h2 span{font-size:.6em;padding:.2em .5em;border-radius:4px}\
.pass{color:#1a7f37}.fail{color:#c62828}span.pass{background:#e6f4ea}span.fail{background:#fdecea}\
ul.warnings{color:#b3261e;font-weight:600}\
figure{margin:1em 0}figcaption{font-weight:600;margin-bottom:.3em}svg{width:100%;height:auto;background:#fafafa}\
.grid{stroke:#e2e2e2}.axis-tick{stroke:#999}.axis{font-size:11px;fill:#555}.note{font-size:10px;fill:#777}\
.mark{stroke:#999;stroke-dasharray:3 3}.mark.warn{stroke:#c62828}\
.mark-label{font-size:10px;fill:#444}.mark-label.warn{fill:#c62828}\
.bound{stroke:#c62828;stroke-width:1.5;stroke-dasharray:8 4}.bound-label{font-size:10px;fill:#c62828}\
.dot{fill:#fff;stroke:#222;stroke-width:1.5}.dot.fail{fill:#c62828;stroke:#c62828}\
table{border-collapse:collapse;font-size:13px;margin-bottom:1em}td,th{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}\
tr.warn td{background:#fff4f4}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_with_fewer_requests_than_the_minimum_is_not_drawn() {
        // One stray failure among a few requests is not a 0% success rate.
        assert_eq!(drawable(1, Some(0.0)), None);
        assert_eq!(drawable(MIN_REQUESTS - 1, Some(94.7)), None);
        assert_eq!(drawable(MIN_REQUESTS, Some(95.0)), Some(95.0));
        assert_eq!(drawable(500, None), None);
    }
}
