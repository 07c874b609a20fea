//! Checking a run against the scenario's `expect`.

use fledge_controller::analysis::{MetricResult, Verdict};
use fledge_controller::spec::Duration;

use crate::result::{Check, Outcome, RunResult};
use crate::scenario::{Expectations, FigureBound, Subject};

/// The run with its checks against `expect` filled in.
pub fn checked(mut run: RunResult, expect: &Expectations) -> RunResult {
    run.checks = check(expect, &run);
    run
}

/// One [`Check`] per expectation the scenario states.
pub(crate) fn check(expect: &Expectations, run: &RunResult) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut add = |name: &str, expected: String, actual: String, passed: bool| {
        checks.push(Check {
            name: name.into(),
            expected,
            actual,
            passed,
        });
    };
    if let Some(outcome) = expect.outcome {
        add(
            "outcome",
            Outcome::name(outcome).into(),
            Outcome::name(run.outcome).into(),
            run.outcome == outcome,
        );
    }
    if let Some(within) = expect.decided_within {
        let took = match (run.deployed_at_ms, run.decided_at_ms) {
            (Some(d), Some(t)) => Some(t - d),
            _ => None,
        };
        let within_ms = within / crate::engine::MILLIS;
        add(
            "decided_within",
            format!("<= {}", Duration(within_ms)),
            took.map_or("undecided".into(), |t| Duration(t).to_string()),
            took.is_some_and(|t| t <= within_ms),
        );
    }
    if let Some(max) = expect.max_canary_weight_before_rollback {
        let rolled_back = run.outcome == Outcome::RolledBack;
        add(
            "max_canary_weight_before_rollback",
            format!("<= {max}% and rolled back"),
            format!("{}%, {}", run.max_canary_weight, Outcome::name(run.outcome)),
            rolled_back && run.max_canary_weight <= max,
        );
    }
    if let Some(max) = expect.max_failed_requests {
        add(
            "max_failed_requests",
            format!("<= {max} failed requests served by the canary"),
            run.failed_requests_canary.to_string(),
            run.failed_requests_canary <= max,
        );
    }
    if let Some(min) = expect.min_success_rate {
        add(
            "min_success_rate",
            format!(">= {min}%"),
            run.success_rate
                .map_or("no requests".into(), |r| format!("{r:.3}%")),
            run.success_rate.is_some_and(|r| r >= min),
        );
    }
    if expect.no_false_rollback {
        add(
            "no_false_rollback",
            "not rolled back".into(),
            Outcome::name(run.outcome).into(),
            run.outcome != Outcome::RolledBack,
        );
    }
    if let Some(metric) = &expect.rolled_back_by {
        let (actual, passed) = rollback_by(run, metric, Verdict::Fail);
        add(
            "rolled_back_by",
            format!("a rollback because {metric} breached its bound or regressed"),
            actual,
            passed,
        );
    }
    if let Some(metric) = &expect.rolled_back_for_no_data {
        let (actual, passed) = rollback_by(run, metric, Verdict::NoData);
        add(
            "rolled_back_for_no_data",
            format!("a rollback because {metric} had no data"),
            actual,
            passed,
        );
    }
    if let Some(text) = &expect.message_contains {
        let found = run
            .decisions
            .iter()
            .flat_map(|d| &d.messages)
            .any(|m| m.contains(text.as_str()));
        add(
            "message_contains",
            format!("a decision mentioning `{text}`"),
            if found { "found" } else { "not found" }.into(),
            found,
        );
    }
    for b in &expect.counters {
        let actual = run.counters.get(&b.counter).copied().unwrap_or(0);
        let expected = match (b.min, b.max) {
            (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
            (Some(lo), None) => format!(">= {lo}"),
            (None, Some(hi)) => format!("<= {hi}"),
            (None, None) => "anything".into(),
        };
        add(
            &format!("counters.{}", b.counter),
            expected,
            actual.to_string(),
            b.min.is_none_or(|lo| actual >= lo) && b.max.is_none_or(|hi| actual <= hi),
        );
    }
    for b in &expect.figures {
        figure_checks(b, run, &mut add);
    }
    checks
}

/// The figures a bound's subject shows: requests, failed, p99, and a version's share of its
/// service's answered requests; none when the run has no figures for it.
fn figures_of(subject: &Subject, run: &RunResult) -> Option<(u64, u64, Option<f64>, Option<f64>)> {
    match subject {
        Subject::Client(name) => {
            let c = run.clients.iter().find(|c| &c.name == name)?;
            Some((c.requests, c.failed, c.p99_ms, None))
        }
        Subject::Service(name) => {
            let s = run.services.iter().find(|s| &s.name == name)?;
            Some((s.requests, s.failed, s.p99_ms, None))
        }
        Subject::Version { service, version } => {
            let s = run.services.iter().find(|s| &s.name == service)?;
            let v = s.versions.iter().find(|v| &v.version == version)?;
            let answered: u64 = s.versions.iter().map(|v| v.requests).sum();
            let share = (answered > 0).then(|| 100.0 * v.requests as f64 / answered as f64);
            Some((v.requests, v.failed, v.p99_ms, share))
        }
    }
}

/// One check per bound the scenario gives for a client, service or version.
fn figure_checks(
    b: &FigureBound,
    run: &RunResult,
    add: &mut impl FnMut(&str, String, String, bool),
) {
    let seen = figures_of(&b.subject, run);
    let requests = seen.map_or(0, |f| f.0);
    let rate = seen
        .filter(|f| f.0 > 0)
        .map(|f| 100.0 * (1.0 - f.1 as f64 / f.0 as f64));
    if b.min_success_rate.is_some() || b.max_success_rate.is_some() {
        let expected = match (b.min_success_rate, b.max_success_rate) {
            (Some(lo), Some(hi)) => format!("success between {lo}% and {hi}%"),
            (Some(lo), None) => format!("success >= {lo}%"),
            (None, Some(hi)) => format!("success <= {hi}%"),
            (None, None) => "anything".into(),
        };
        add(
            &b.name,
            expected,
            match (seen, rate) {
                (Some(f), Some(r)) => format!("{r:.3}% ({} of {} failed)", f.1, f.0),
                _ => "no requests".into(),
            },
            rate.is_some_and(|r| {
                b.min_success_rate.is_none_or(|lo| r >= lo)
                    && b.max_success_rate.is_none_or(|hi| r <= hi)
            }),
        );
    }
    if let Some(max) = b.max_p99_ms {
        let p99 = seen.and_then(|f| f.2);
        add(
            &format!("{}.max_p99_ms", b.name),
            format!("p99 <= {max} ms"),
            p99.map_or("no requests".into(), |p| format!("{p:.1} ms")),
            p99.is_some_and(|p| p <= max),
        );
    }
    if b.min_requests.is_some() || b.max_requests.is_some() {
        let expected = match (b.min_requests, b.max_requests) {
            (Some(lo), Some(hi)) => format!("between {lo} and {hi} requests"),
            (Some(lo), None) => format!(">= {lo} requests"),
            (None, Some(hi)) => format!("<= {hi} requests"),
            (None, None) => "anything".into(),
        };
        add(
            &format!("{}.requests", b.name),
            expected,
            requests.to_string(),
            b.min_requests.is_none_or(|lo| requests >= lo)
                && b.max_requests.is_none_or(|hi| requests <= hi),
        );
    }
    if let Some((share, margin)) = b.share {
        let measured = seen.and_then(|f| f.3);
        add(
            &format!("{}.share", b.name),
            format!("{share}% ± {margin} of the service's answered requests"),
            measured.map_or("no requests".into(), |m| format!("{m:.2}% ({requests})")),
            measured.is_some_and(|m| (m - share).abs() <= margin),
        );
    }
}

/// Whether the rollback's own analysis gave `metric` this verdict (Fail: a value beyond its
/// bound, or a regression against the primary; NoData: no value), and what the rollback was.
/// A message merely naming the metric does not count.
fn rollback_by(run: &RunResult, metric: &str, verdict: Verdict) -> (String, bool) {
    let Some(rollback) = run
        .decisions
        .iter()
        .find(|d| d.messages.iter().any(|m| m.starts_with("Rolling back")))
    else {
        return ("no rollback".into(), false);
    };
    let judged: Vec<String> = rollback.metrics.iter().map(judged).collect();
    let actual = if judged.is_empty() {
        format!(
            "a rollback without an analysis: {}",
            rollback.messages.join("; ")
        )
    } else {
        format!("a rollback on {}", judged.join(", "))
    };
    let passed = rollback
        .metrics
        .iter()
        .any(|m| m.name == metric && m.verdict == verdict);
    (actual, passed)
}

/// `request-success-rate 95.87 (fail)`, `request-duration (no data)`.
fn judged(m: &MetricResult) -> String {
    match m.value {
        Some(v) => format!("{} {v:.2} ({})", m.name, m.verdict),
        None => format!("{} ({})", m.name, m.verdict),
    }
}
