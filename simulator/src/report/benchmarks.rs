//! The benchmark plot: per case and policy, the rollback rate and the median time to the
//! decision, each with its 95% interval, as a standalone SVG (`fledge-sim merge --svg`,
//! `fledge-sim publish`).

use std::fmt::Write as _;

use super::html::escape;
use super::plot::ticks;
use crate::compare::{Tally, quantile, wilson};

/// One case: its name and each policy's runs, in seed order.
pub(crate) type Case = (String, Vec<(String, Vec<Tally>)>);

const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
const LABELS: f64 = 250.0;
const PANEL: f64 = 310.0;
const GAP: f64 = 40.0;
const TOP: f64 = 58.0;
const ROW: f64 = 26.0;
const BOTTOM: f64 = 40.0;

/// A value with its 95% interval, none when there is nothing to show (no decided run).
type Estimate = Option<(f64, f64, f64)>;
/// A panel: its title, the largest value its axis must show, and what it plots of a policy.
type Panel = (&'static str, f64, fn(&[Tally]) -> Estimate);

/// The share of runs rolled back, on evidence, by thresholds or at the deadline, in percent.
fn rollbacks(tallies: &[Tally]) -> Estimate {
    let k = tallies.iter().filter(|t| t.decided.is_rollback()).count() as u64;
    let r = wilson(k, tallies.len() as u64);
    (!tallies.is_empty()).then(|| (r.rate * 100.0, r.interval[0] * 100.0, r.interval[1] * 100.0))
}

/// The median time from the deploy to the decision, in minutes, over the decided runs, with
/// the distribution-free 95% interval of a median: the order statistics at ranks
/// n/2 -+ 1.96 sqrt(n)/2.
fn median_decision(tallies: &[Tally]) -> Estimate {
    let mut ms: Vec<u64> = tallies.iter().filter_map(|t| t.decision_ms).collect();
    ms.sort_unstable();
    let median = quantile(&ms, 0.5)?;
    let n = ms.len() as f64;
    let half = 1.96 * n.sqrt() / 2.0;
    let last = ms.len() - 1;
    let lo = ((n / 2.0 - half).floor().max(0.0) as usize).min(last);
    let hi = ((n / 2.0 + half).ceil() as usize).min(last);
    let min = |v: u64| v as f64 / 60_000.0;
    Some((min(median), min(ms[lo]), min(ms[hi])))
}

/// The plot of every case, a row each, policies in the first case's order.
pub(crate) fn svg(cases: &[Case]) -> String {
    let policies: Vec<&str> = cases
        .first()
        .map(|(_, p)| p.iter().map(|(n, _)| n.as_str()).collect())
        .unwrap_or_default();
    let width = LABELS + 2.0 * PANEL + GAP + 20.0;
    let height = TOP + ROW * cases.len() as f64 + BOTTOM;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="{width}" height="{height}" fill="#fff"/>"##
    );
    for (i, name) in policies.iter().enumerate() {
        let x = LABELS + i as f64 * 170.0;
        let _ = writeln!(
            out,
            r#"<circle cx="{x}" cy="14" r="4" fill="{}"/><text x="{}" y="18">{}</text>"#,
            COLORS[i % COLORS.len()],
            x + 8.0,
            escape(name)
        );
    }
    let decision_max = cases
        .iter()
        .flat_map(|(_, p)| p.iter().filter_map(|(_, t)| median_decision(t)))
        .map(|(_, _, hi)| hi)
        .fold(1.0, f64::max);
    let panels: [Panel; 2] = [
        ("rolled back, % of runs", 100.0, rollbacks),
        (
            "median time to the decision, minutes",
            decision_max,
            median_decision,
        ),
    ];
    for (p, (title, max, estimate)) in panels.iter().enumerate() {
        let left = LABELS + p as f64 * (PANEL + GAP);
        let axis = ticks(0.0, *max);
        let top = axis.last().copied().unwrap_or(1.0).max(1e-9);
        let x = |v: f64| left + PANEL * v / top;
        let bottom = TOP + ROW * cases.len() as f64;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{title}</text>"#,
            left + PANEL / 2.0,
            TOP - 16.0
        );
        for t in &axis {
            let _ = writeln!(
                out,
                r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{bottom}" stroke="#ddd"/><text x="{0:.1}" y="{2}" text-anchor="middle">{t}</text>"##,
                x(*t),
                TOP - 6.0,
                bottom + 16.0
            );
        }
        for (row, (_, runs)) in cases.iter().enumerate() {
            let mid = TOP + ROW * (row as f64 + 0.5);
            for (i, (_, tallies)) in runs.iter().enumerate() {
                let Some((v, lo, hi)) = estimate(tallies) else {
                    continue;
                };
                let y = mid + (i as f64 - (runs.len() as f64 - 1.0) / 2.0) * 7.0;
                let color = COLORS[i % COLORS.len()];
                let _ = writeln!(
                    out,
                    r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2"/><circle cx="{:.1}" cy="{y:.1}" r="3.5" fill="{color}"/>"#,
                    x(lo),
                    x(hi),
                    x(v)
                );
            }
        }
    }
    for (row, (case, _)) in cases.iter().enumerate() {
        let y = TOP + ROW * (row as f64 + 0.5) + 4.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{y:.1}" text-anchor="end">{}</text>"#,
            LABELS - 10.0,
            escape(case)
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{LABELS}" y="{}" fill="#555">Dots: the estimate over the seeds; bars: its 95% interval (Wilson for rates, order statistics for medians).</text>"##,
        height - 8.0
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Decided;

    fn tally(decided: Decided, decision_ms: Option<u64>) -> Tally {
        Tally {
            decided,
            decision_ms,
            canary_failures: 0,
        }
    }

    #[test]
    fn rollbacks_by_thresholds_or_at_the_deadline_count_as_rollbacks_and_undecided_runs_have_no_time()
     {
        let runs = [
            tally(Decided::RolledBack, Some(60_000)),
            tally(Decided::Deadline, Some(600_000)),
            tally(Decided::Thresholds, Some(300_000)),
            tally(Decided::Promoted, Some(120_000)),
            tally(Decided::Promoted, Some(180_000)),
            tally(Decided::Undecided, None),
        ];
        let (rate, lo, hi) = rollbacks(&runs).unwrap();
        assert_eq!(rate, 50.0);
        assert!(lo < 50.0 && hi > 50.0);
        // The decided runs: 1, 2, 3, 5 and 10 minutes.
        assert_eq!(median_decision(&runs).unwrap().0, 3.0);
        assert_eq!(median_decision(&runs[5..]), None);
    }

    #[test]
    fn the_interval_of_a_median_holds_the_median_and_narrows_with_the_runs() {
        let runs = |n: u64| -> Vec<Tally> {
            (0..n)
                .map(|i| tally(Decided::Promoted, Some(i * 60_000)))
                .collect()
        };
        let (m, lo, hi) = median_decision(&runs(101)).unwrap();
        assert!(lo < m && m < hi, "{lo} {m} {hi}");
        let (m2, lo2, hi2) = median_decision(&runs(10_001)).unwrap();
        assert!((hi2 - lo2) / m2 < (hi - lo) / m);
    }
}
