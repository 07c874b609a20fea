//! Checking a run against the scenario's `expect`.

use fledge_controller::spec::Duration;

use crate::harness::{Check, RunResult};
use crate::scenario::{Expectations, Outcome};

/// One [`Check`] per expectation the scenario states.
pub fn check(expect: &Expectations, run: &RunResult) -> Vec<Check> {
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
            outcome_name(outcome).into(),
            outcome_name(run.outcome).into(),
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
            format!("{}%, {}", run.max_canary_weight, outcome_name(run.outcome)),
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
            format!("{:.3}%", run.success_rate),
            run.success_rate >= min,
        );
    }
    if expect.no_false_rollback {
        add(
            "no_false_rollback",
            "not rolled back".into(),
            outcome_name(run.outcome).into(),
            run.outcome != Outcome::RolledBack,
        );
    }
    if let Some(metric) = &expect.rolled_back_by {
        let reason = rollback_reason(run);
        add(
            "rolled_back_by",
            format!("a rollback naming {metric}"),
            reason.clone().unwrap_or_else(|| "no rollback".into()),
            reason.is_some_and(|r| r.contains(metric.as_str())),
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
    checks
}

fn rollback_reason(run: &RunResult) -> Option<String> {
    run.decisions
        .iter()
        .flat_map(|d| &d.messages)
        .find(|m| m.starts_with("Rolling back"))
        .cloned()
}

pub fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Promoted => "promoted",
        Outcome::RolledBack => "rolled-back",
        Outcome::Undecided => "undecided",
    }
}
