//! `fledge-sim compare`: one scenario under several Canary policies over the same seeds, and
//! how well each decides: how often it promotes, rolls back on evidence, by the metrics'
//! thresholds the statistical judge hands over to, or at the progress deadline, how long the decision takes and how many failed requests the canary served
//! before it.
//!
//! Every policy is a [`Patch`] of the scenario's Canary (its analysis replaced by the policy's),
//! run by the one seed runner; each run stops at its decision
//! ([`harness::run_to_decision`]), so a run costs what its decision costs and its failed
//! requests are those served before the decision.

mod stats;

use fledge_controller::rollout::JUDGED_BY_THRESHOLDS;
use fledge_controller::spec::load_manifests;
use serde::{Deserialize, Serialize};

use crate::harness::{self, HarnessError};
use crate::result::{Outcome, RunResult};
use crate::scenario::{Patch, Scenario, Variant, read_bounded};
use crate::seeds::Seeds;
pub(crate) use stats::{quantile, wilson};

/// The built-in policy's name, and the name of the scenario's own Canary.
pub(crate) const FLAGGER_DEFAULT: &str = "flagger-default";
pub(crate) const SCENARIO: &str = "scenario";

/// Flagger's documented defaults for a canary analysis: a step of 10% every minute up to 50%,
/// five failed checks roll back, success rate at least 99% and p99 at most 500 ms.
pub(crate) const FLAGGER_DEFAULT_CANARY: &str = "\
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: flagger-default
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: any}
  service: {port: 80}
  progressDeadlineSeconds: 600
  analysis:
    interval: 1m
    threshold: 5
    stepWeight: 10
    maxWeight: 50
    metrics:
      - name: request-success-rate
        thresholdRange: {min: 99}
        interval: 1m
      - name: request-duration
        thresholdRange: {max: 500}
        interval: 1m
";

/// The words the rollout core uses in every rollback at the progress deadline (not enough
/// traffic, no decision, workloads never ready), and in no other.
const DEADLINE_WORDS: &str = "progress deadline";

/// A policy to compare: a name and the Canary analysis it runs.
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub(crate) name: String,
    pub(crate) variant: Variant,
}

/// A policy that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{message}", if name.is_empty() { String::new() } else { format!("--policy {name}: ") })]
pub(crate) struct PolicyError {
    /// The `--policy` it is about; empty for a `--vary` (the message names it).
    pub(crate) name: String,
    pub(crate) message: String,
}

/// The policies for `--policy` arguments (`NAME=CANARY.yaml`, or `flagger-default`): the
/// scenario's own Canary first, then its variants, then the arguments in order, then one per
/// value of each `--vary PATH=V1,V2,...` (the scenario's Canary with that value, named
/// `PATH=V`). Without `--policy`, `flagger-default` is compared with the scenario's Canary.
pub(crate) fn policies(
    scenario: &Scenario,
    args: &[String],
    vary: &[String],
) -> Result<Vec<Policy>, PolicyError> {
    let mut out = given_policies(scenario, args)?;
    for arg in vary {
        let variants = scenario.vary(arg).map_err(|e| PolicyError {
            name: String::new(),
            message: e.0,
        })?;
        for variant in variants {
            if out.iter().any(|p| p.name == variant.name) {
                return Err(PolicyError {
                    name: String::new(),
                    message: format!("--vary {arg}: `{}` is given twice", variant.name),
                });
            }
            out.push(Policy {
                name: variant.name.clone(),
                variant,
            });
        }
    }
    Ok(out)
}

fn given_policies(scenario: &Scenario, args: &[String]) -> Result<Vec<Policy>, PolicyError> {
    let own = |name: &str, patch: &Patch| {
        scenario
            .variant(name, patch)
            .map_err(|e| PolicyError {
                name: name.to_string(),
                message: e.to_string(),
            })
            .map(|variant| Policy {
                name: name.to_string(),
                variant,
            })
    };
    let mut out = vec![own(SCENARIO, &Patch::default())?];
    out.extend(
        scenario
            .variants
            .iter()
            .filter(|v| !v.name.is_empty())
            .map(|v| Policy {
                name: v.name.clone(),
                variant: v.clone(),
            }),
    );
    let default = [FLAGGER_DEFAULT.to_string()];
    let args = if args.is_empty() { &default[..] } else { args };
    for arg in args {
        let (name, file) = match arg.split_once('=') {
            Some((name, file)) => (name, Some(file)),
            None => (arg.as_str(), None),
        };
        let error = |message: String| PolicyError {
            name: name.to_string(),
            message,
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(error(
                "give NAME=CANARY.yaml (a name without spaces) or `flagger-default`".into(),
            ));
        }
        if out.iter().any(|p| p.name == name) {
            return Err(error(format!(
                "the name `{name}` is taken (`{SCENARIO}` is the scenario's own Canary, variants keep their names)"
            )));
        }
        let (shown, text) = match file {
            Some(file) => (
                file.to_string(),
                read_bounded(std::path::Path::new(file))
                    .map_err(|e| error(format!("{file}: {e}")))?,
            ),
            None if name == FLAGGER_DEFAULT => {
                ("(built in)".to_string(), FLAGGER_DEFAULT_CANARY.to_string())
            }
            None => {
                return Err(error(format!(
                    "give the policy's Canary file as {name}=CANARY.yaml; the only built-in policy is `{FLAGGER_DEFAULT}`"
                )));
            }
        };
        let loaded = load_manifests(&text).map_err(|e| error(format!("{shown}: {e}")))?;
        let [canary] = <[_; 1]>::try_from(loaded.canaries).map_err(|v| {
            error(format!(
                "{shown}: must hold exactly one Canary, found {}",
                v.len()
            ))
        })?;
        let Some(ours) = &scenario.canary_resource else {
            return Err(error(
                "the scenario has no Canary whose analysis a policy could replace".into(),
            ));
        };
        let patch =
            Patch::policy(&canary.spec, &ours.spec).map_err(|e| error(format!("{shown}: {e}")))?;
        out.push(own(name, &patch).map_err(|e| PolicyError {
            message: format!("{shown}: {}", e.message),
            ..e
        })?);
    }
    Ok(out)
}

/// How one run decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Decided {
    Promoted,
    /// Rolled back on the analysis' evidence: the statistical judge's regression, or the failed
    /// checks of a threshold judge, of hooks, of scalar metrics.
    RolledBack,
    /// Rolled back by failed threshold checks after the statistical judge handed the rollout
    /// over to the metrics' thresholds (too little traffic to decide within the deadline).
    Thresholds,
    /// Rolled back at the progress deadline.
    Deadline,
    Undecided,
}

impl Decided {
    /// How a run with this outcome and last message decided: the rollout core's messages say
    /// which rollbacks the deadline made and which the thresholds of the statistical judge's
    /// threshold mode.
    pub(crate) fn of(outcome: Outcome, message: &str) -> Decided {
        match outcome {
            Outcome::Promoted => Decided::Promoted,
            Outcome::RolledBack if message.contains(DEADLINE_WORDS) => Decided::Deadline,
            Outcome::RolledBack if message.contains(JUDGED_BY_THRESHOLDS) => Decided::Thresholds,
            Outcome::RolledBack => Decided::RolledBack,
            Outcome::Undecided | Outcome::NoRollout => Decided::Undecided,
        }
    }

    /// A rollback of any kind: for a healthy canary, a false one.
    pub(crate) fn is_rollback(self) -> bool {
        matches!(
            self,
            Decided::RolledBack | Decided::Thresholds | Decided::Deadline
        )
    }
}

/// What `compare` keeps of a run (and writes, per seed, in a shard's partial results).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tally {
    pub(crate) decided: Decided,
    /// From the deploy to the decision.
    pub(crate) decision_ms: Option<u64>,
    /// Failed requests the canary served before the decision (or over the run, undecided).
    pub(crate) canary_failures: u64,
}

impl Tally {
    pub(crate) fn of(run: &RunResult) -> Tally {
        let decided = Decided::of(run.outcome, &run.final_message);
        Tally {
            decided,
            decision_ms: match decided {
                Decided::Undecided => None,
                _ => run
                    .deployed_at_ms
                    .zip(run.judged_at_ms)
                    .map(|(d, t)| t.saturating_sub(d)),
            },
            canary_failures: run.failed_requests_canary,
        }
    }
}

/// One policy's figures over the seeds. Rates are fractions (0 to 1) with their 95% Wilson
/// intervals; a run is exactly one of promoted, rolled back (on evidence), thresholds, deadline
/// or undecided. `rolled_back_all` counts every kind of rollback: a healthy canary rolled back
/// at the deadline or by thresholds is as falsely rolled back as one rolled back on evidence,
/// and the tables show that figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Summary {
    pub(crate) seeds: u64,
    pub(crate) promoted: f64,
    pub(crate) promoted_95: [f64; 2],
    /// On evidence.
    pub(crate) rolled_back: f64,
    pub(crate) rolled_back_95: [f64; 2],
    /// By the thresholds of the statistical judge's threshold mode.
    pub(crate) thresholds: f64,
    pub(crate) thresholds_95: [f64; 2],
    /// On evidence, by thresholds or at the deadline.
    pub(crate) rolled_back_all: f64,
    pub(crate) rolled_back_all_95: [f64; 2],
    pub(crate) deadline: f64,
    pub(crate) deadline_95: [f64; 2],
    pub(crate) undecided: f64,
    pub(crate) undecided_95: [f64; 2],
    /// Over the decided runs; none when no run decided.
    pub(crate) median_decision_s: Option<f64>,
    pub(crate) p95_decision_s: Option<f64>,
    /// Over every run.
    pub(crate) median_canary_failures: Option<f64>,
    pub(crate) p95_canary_failures: Option<f64>,
}

impl Summary {
    pub(crate) fn of(tallies: &[Tally]) -> Summary {
        let n = tallies.len() as u64;
        let rate = |d: Decided| wilson(tallies.iter().filter(|t| t.decided == d).count() as u64, n);
        let rolled_back_all = wilson(
            tallies.iter().filter(|t| t.decided.is_rollback()).count() as u64,
            n,
        );
        let (promoted, rolled_back, thresholds, deadline, undecided) = (
            rate(Decided::Promoted),
            rate(Decided::RolledBack),
            rate(Decided::Thresholds),
            rate(Decided::Deadline),
            rate(Decided::Undecided),
        );
        let mut decisions: Vec<u64> = tallies.iter().filter_map(|t| t.decision_ms).collect();
        decisions.sort_unstable();
        let mut failures: Vec<u64> = tallies.iter().map(|t| t.canary_failures).collect();
        failures.sort_unstable();
        let secs = |q| quantile(&decisions, q).map(|ms| ms as f64 / 1000.0);
        Summary {
            seeds: n,
            promoted: promoted.rate,
            promoted_95: promoted.interval,
            rolled_back: rolled_back.rate,
            rolled_back_95: rolled_back.interval,
            thresholds: thresholds.rate,
            thresholds_95: thresholds.interval,
            rolled_back_all: rolled_back_all.rate,
            rolled_back_all_95: rolled_back_all.interval,
            deadline: deadline.rate,
            deadline_95: deadline.interval,
            undecided: undecided.rate,
            undecided_95: undecided.interval,
            median_decision_s: secs(0.5),
            p95_decision_s: secs(0.95),
            median_canary_failures: quantile(&failures, 0.5).map(|f| f as f64),
            p95_canary_failures: quantile(&failures, 0.95).map(|f| f as f64),
        }
    }
}

/// Runs every policy over the seeds; each policy's runs in seed order, in the policies' order.
pub(crate) fn compare(
    scenario: &Scenario,
    policies: &[Policy],
    seeds: &Seeds,
) -> Result<Vec<(String, Vec<Tally>)>, HarnessError> {
    policies
        .iter()
        .map(|p| {
            let tallies = seeds.run(|seed| {
                harness::run_to_decision(scenario, &p.variant, seed).map(|r| Tally::of(&r))
            })?;
            Ok((p.name.clone(), tallies))
        })
        .collect()
}

/// The summaries of each policy's runs.
pub(crate) fn summaries(runs: &[(String, Vec<Tally>)]) -> Vec<(String, Summary)> {
    runs.iter()
        .map(|(name, tallies)| (name.clone(), Summary::of(tallies)))
        .collect()
}

/// A summary's cells as the tables show them: the rates with their intervals (promoted; every
/// rollback; of them, those by thresholds and those at the deadline; undecided), the decision
/// times and the canary failures (each `p50 / p95`).
fn cells(s: &Summary) -> [String; 7] {
    let pct = |rate: f64, ci: [f64; 2]| {
        format!(
            "{:.1}% [{:.1}, {:.1}]",
            rate * 100.0,
            ci[0] * 100.0,
            ci[1] * 100.0
        )
    };
    let time = |s: Option<f64>| {
        s.map_or("-".to_string(), |s| {
            fledge_controller::spec::Duration(s.round() as u64 * 1000).to_string()
        })
    };
    let count = |c: Option<f64>| c.map_or("-".to_string(), |c| format!("{c:.0}"));
    [
        pct(s.promoted, s.promoted_95),
        pct(s.rolled_back_all, s.rolled_back_all_95),
        pct(s.thresholds, s.thresholds_95),
        pct(s.deadline, s.deadline_95),
        pct(s.undecided, s.undecided_95),
        format!("{} / {}", time(s.median_decision_s), time(s.p95_decision_s)),
        format!(
            "{} / {}",
            count(s.median_canary_failures),
            count(s.p95_canary_failures)
        ),
    ]
}

/// The summaries as a Markdown table, one row per policy, the scenario's name in the first
/// column so that the tables of several cases stack into one ([`markdown_rows`]).
pub(crate) fn render_markdown(scenario: &str, summaries: &[(String, Summary)]) -> String {
    String::from(
        "| case | policy | promoted [95%] | rolled back, all [95%] | of which by thresholds [95%] | of which at deadline [95%] | undecided [95%] | decision p50 / p95 | canary failures p50 / p95 |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    ) + &markdown_rows(scenario, summaries)
}

/// The rows of [`render_markdown`]'s table, without its header.
pub(crate) fn markdown_rows(scenario: &str, summaries: &[(String, Summary)]) -> String {
    summaries
        .iter()
        .map(|(name, s)| format!("| {scenario} | {name} | {} |\n", cells(s).join(" | ")))
        .collect()
}

/// What the rollback columns count, under the text table.
pub(crate) const ROLLBACK_LEGEND: &str = "¹ rolled back on evidence, by thresholds or at the progress deadline (the next two columns are the parts of them the latter made): for a healthy canary, each is a false rollback\n² by the metrics' thresholds, once the statistical judge handed the rollout over to them (too little traffic to decide within the progress deadline)\n";

/// The summaries as a table.
pub(crate) fn render(summaries: &[(String, Summary)]) -> String {
    let width = summaries
        .iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(0)
        .max("policy".len());
    let mut out = format!(
        "{:width$}  {:>21}  {:>21}  {:>21}  {:>21}  {:>21}  {:>17}  {:>20}\n",
        "policy",
        "promoted [95%]",
        "rolled back¹ [95%]",
        "by thresholds² [95%]",
        "at deadline [95%]",
        "undecided [95%]",
        "decision p50/p95",
        "canary fails p50/p95"
    );
    for (name, s) in summaries {
        let [a, b, c, d, e, f, g] = cells(s);
        out.push_str(&format!(
            "{name:width$}  {a:>21}  {b:>21}  {c:>21}  {d:>21}  {e:>21}  {f:>17}  {g:>20}\n"
        ));
    }
    out.push_str(ROLLBACK_LEGEND);
    out
}

#[cfg(test)]
mod tests;
