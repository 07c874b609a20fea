//! Views of a run: a readable timeline, JSON, and a self-contained HTML page with plots.

pub(crate) mod benchmarks;
mod graph;
mod html;
mod plot;

pub(crate) use html::html;

use std::fmt::Write as _;

use fledge_controller::analysis::Verdict;
use fledge_controller::analysis::statistical::DEFAULT_LATENCY_QUANTILE;
use fledge_controller::spec::{Duration, Judge, MetricCheck, MetricKind, RolloutSpec};

use crate::result::{Outcome, RunResult};

fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// One line per decision, then the outcome and the checks; `spec` (the Canary the run's variant
/// ran) names the built-in metrics' columns.
pub(crate) fn timeline(run: &RunResult, description: &str, spec: Option<&RolloutSpec>) -> String {
    let mut out = String::new();
    let variant = if run.variant.is_empty() {
        String::new()
    } else {
        format!(" [{}]", run.variant)
    };
    let _ = writeln!(out, "{}{variant} (seed {})", run.scenario, run.seed);
    if !description.is_empty() {
        let _ = writeln!(out, "  {}", description.trim());
    }
    if run.outcome == Outcome::NoRollout {
        // No Canary: no phase, weight or analysis to table; only the scenario's own events.
        if !run.decisions.is_empty() {
            let _ = writeln!(out, "\n  {:<8}  event", "time");
        }
        for d in &run.decisions {
            let _ = writeln!(out, "  {:<8}  {}", clock(d.at_ms), d.messages.join("; "));
        }
        let _ = writeln!(out, "\n{}", summary(run));
        return out;
    }
    let _ = writeln!(
        out,
        "\n  {:<8}  {:<16} {:>7}  {:<44}  decision",
        "time", "phase", "canary", "analysis"
    );
    for d in &run.decisions {
        let mut routing = format!("{}%", d.canary_weight);
        if let Some(m) = d.mirror {
            routing = format!("m{m}%");
        }
        if d.matched {
            routing = "match".into();
        }
        let metrics: Vec<String> = d
            .metrics
            .iter()
            .map(|m| {
                let value = m.value.map_or("-".to_string(), |v| format!("{v:.2}"));
                let verdict = match m.verdict {
                    Verdict::Pass => "ok",
                    Verdict::Fail => "FAIL",
                    Verdict::Low => "low",
                    Verdict::Undecided => "wait",
                    Verdict::NoData => "NODATA",
                };
                format!("{} {value} {verdict}", short(&m.name, spec))
            })
            .collect();
        let (phase, routing) = if d.scenario_event {
            ("(scenario)".to_string(), String::new())
        } else {
            (d.phase.to_string(), routing)
        };
        let mark = if d.warning { "!" } else { " " };
        let _ = writeln!(
            out,
            "{mark} {:<8}  {:<16} {:>7}  {:<44}  {}",
            clock(d.at_ms),
            phase,
            routing,
            metrics.join(", "),
            d.messages.join("; ")
        );
    }
    let _ = writeln!(out, "\n{}", summary(run));
    out
}

/// `99.928% success`, or why there is no rate.
pub(crate) fn success(rate: Option<f64>) -> String {
    rate.map_or("no success rate: no requests".into(), |r| {
        format!("{r:.3}% success")
    })
}

/// Metric names shortened for the timeline's column: the built-in ones by what their value is
/// (a latency by the quantile it is read at), others as written.
fn short(name: &str, spec: Option<&RolloutSpec>) -> String {
    let check = spec.and_then(|s| Some((s.metrics.iter().find(|m| m.name == name)?, &s.judge)));
    match check {
        Some((m, _)) if m.kind == MetricKind::RequestSuccessRate => "success%".into(),
        Some((m, judge)) if m.kind == MetricKind::RequestDuration => {
            format!("{}ms", quantile_name(latency_quantile(m, judge)))
        }
        _ => name.into(),
    }
}

/// The latency quantile a `request-duration` metric's value is: the statistical judge reads
/// the metric's `quantile` (also when it hands a step to the thresholds); Flagger's threshold
/// query reads the p99.
pub(crate) fn latency_quantile(m: &MetricCheck, judge: &Judge) -> f64 {
    match judge {
        Judge::Statistical { .. } => m.quantile.unwrap_or(DEFAULT_LATENCY_QUANTILE),
        Judge::Threshold => 0.99,
    }
}

/// `p50`, `p99`, `p99.9`: a quantile as a percentile's name.
pub(crate) fn quantile_name(q: f64) -> String {
    let percent = format!("{:.3}", q * 100.0);
    format!("p{}", percent.trim_end_matches('0').trim_end_matches('.'))
}

pub fn summary(run: &RunResult) -> String {
    let mut out = String::new();
    let decided = match (run.deployed_at_ms, run.decided_at_ms) {
        (Some(d), Some(t)) => format!(" at {} ({} after the deploy)", clock(t), Duration(t - d)),
        _ => String::new(),
    };
    if run.outcome == Outcome::NoRollout {
        let _ = writeln!(
            out,
            "outcome: no-rollout (the mesh alone, without a Canary)"
        );
        let _ = writeln!(
            out,
            "requests: {} sent, {} failed ({})",
            run.requests,
            run.failed_requests,
            success(run.success_rate)
        );
    } else {
        let _ = writeln!(
            out,
            "outcome: {}{decided}; highest canary weight {}%",
            Outcome::name(run.outcome),
            run.max_canary_weight
        );
        let _ = writeln!(out, "  last decision: {}", run.final_message);
        // A handful in flight at the end is every run's; a backlog (0.1% or more) changes
        // what the counts mean.
        let unanswered = if run.unanswered * 1000 >= run.requests.max(1) {
            format!(
                "; {} more sent and not answered by the end (not counted)",
                run.unanswered
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "requests: {} sent, {} failed ({}); {} failures served by the canary{unanswered}",
            run.requests,
            run.failed_requests,
            success(run.success_rate),
            run.failed_requests_canary
        );
    }
    if run.clients.len() > 1 {
        for c in &run.clients {
            let _ = writeln!(
                out,
                "  {}: {} sent, {} failed ({})",
                c.name,
                c.requests,
                c.failed,
                success(c.success_rate)
            );
        }
    }
    let queueing: Vec<String> = run
        .queueing
        .iter()
        .filter(|q| q.arrivals > 0)
        .map(|q| {
            format!(
                "{} {:.2}% waited for a worker (mean wait {:.3} ms)",
                q.version,
                100.0 * q.queued_fraction.unwrap_or(0.0),
                q.mean_queue_wait_ms.unwrap_or(0.0)
            )
        })
        .collect();
    if !queueing.is_empty() {
        let _ = writeln!(out, "queueing: {}", queueing.join("; "));
    }
    let sidecars: Vec<String> = run
        .sidecars
        .iter()
        .map(|s| {
            let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} ms"));
            let backlog = match s.backlog {
                0 => String::new(),
                n => format!(", {n} still waiting for a worker at the end"),
            };
            format!(
                "{} {:.1} s CPU ({:.3} cores), +{} per request ({} waiting for a worker){backlog}",
                s.workload,
                s.cpu_seconds,
                s.mean_cores,
                ms(s.added_latency_ms),
                ms(s.mean_wait_ms)
            )
        })
        .collect();
    if !sidecars.is_empty() {
        let _ = writeln!(out, "sidecars: {}", sidecars.join("; "));
    }
    if run.outcome == Outcome::NoRollout {
        for s in &run.services {
            let versions: Vec<String> = s
                .versions
                .iter()
                .map(|v| format!("{} {}", v.version, v.requests))
                .collect();
            let _ = writeln!(
                out,
                "  {}: {} requests, {} failed, p99 {}; by version: {}",
                s.name,
                s.requests,
                s.failed,
                s.p99_ms.map_or("-".into(), |p| format!("{p:.1} ms")),
                versions.join(", ")
            );
        }
    }
    for w in &run.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if !run.checks.is_empty() {
        let _ = writeln!(out, "expectations:");
        for c in &run.checks {
            let mark = if c.passed { "pass" } else { "FAIL" };
            let _ = writeln!(
                out,
                "  {mark}  {}: expected {}, got {}",
                c.name, c.expected, c.actual
            );
        }
    }
    out
}
