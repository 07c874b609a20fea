//! Time and the statistical judge: the forecast of a rollout at the traffic rate its first looks
//! show, and what a rollout the judge cannot decide in time does instead, and what it says.
//!
//! - Metrics that could not be read (the metrics provider failed): rolled back at the progress
//!   deadline, never promoted.
//! - Too little traffic for the judge, known in advance: when the forecast at the first look
//!   says the judge is not expected to decide within the progress deadline, the rollout is
//!   judged from then on as Flagger judges it: each step lasts `interval` and passes when every
//!   metric is within its threshold range over that interval's own traffic; a failed check
//!   counts against `threshold`. A success rate under its minimum fails only when the
//!   interval's counts show it at the judge's `alpha` (`analysis::check_threshold_shown`): one
//!   5xx among a few dozen requests is under 99% but shows nothing. A Warning Event (and the status' forecast) says so, with the
//!   deadline that would let the judge decide.
//! - Too little evidence at the deadline anyway (a forecast that was too hopeful, a canary in
//!   the judge's indifference zone): the same, from the deadline on.
//!
//! In both cases the judge's rollback side keeps looking: a regression it shows rolls back at
//! once. The threshold checks read each interval's own window, not the traffic pooled since the
//! rollout began: checks over pooled traffic are correlated (once the pooled rate is out of
//! range it stays there for several checks, and `threshold` of them roll back), which rolled
//! back 1.6% of healthy rollouts at 10 requests/s in the simulator; a window's checks are
//! independent as Flagger's are.

use super::forecast::{ForecastEnd, forecast};
use super::judging::Analysis;
use super::state::ForecastStatus;
use super::tick::Tick;
use super::{EventReason, Severity};
use crate::analysis::latency::BOUND_OBSERVATIONS;
use crate::analysis::statistical::DEFAULT_LATENCY_QUANTILE;
use crate::analysis::{Counts, Histogram, MetricReading};
use crate::spec::MetricKind;

/// How far towards the favourable end a handover's forecast reads a look's rate and the
/// latency's tail: the upper end of a one-sided 95% interval.
const FAVOURABLE_Z: f64 = 1.645;

/// `h` with the share above `bound` at the upper end of its interval (`z` standard errors of
/// a Poisson count over), taken from the bucket just below: the more requests fall above the
/// judge's slow bound, the sooner it decides.
fn heavier_tail(h: &Histogram, bound: Option<f64>, z: f64) -> Histogram {
    let mut out = h.clone();
    let total = h.cumulative.last().copied().unwrap_or(0.0);
    let Some(at) = bound.and_then(|b| h.bounds.iter().position(|x| *x == b)) else {
        return out;
    };
    let above = total - h.cumulative[at];
    let below_bucket = h.cumulative[at] - if at == 0 { 0.0 } else { h.cumulative[at - 1] };
    let more = (z * (above + 1.0).sqrt() + 1.0).min(below_bucket);
    out.cumulative[at] -= more;
    out
}

impl Tick<'_> {
    /// The compared metrics whose reading failed this tick (the metrics provider did not answer
    /// or answered with an error), with the reason.
    pub(super) fn metrics_unavailable(&self) -> Option<String> {
        let failed: Vec<String> = self
            .spec
            .metrics
            .iter()
            .filter(|m| m.kind.is_builtin())
            .filter_map(|m| match self.obs.metrics.get(&m.name) {
                Some(MetricReading::Error { reason }) => {
                    Some(format!("{}: the metrics query failed: {reason}", m.name))
                }
                None => Some(format!("{}: not measured", m.name)),
                _ => None,
            })
            .collect();
        (!failed.is_empty()).then(|| failed.join("; "))
    }

    /// The forecast at the traffic rate seen, recorded for the status, and a Warning Event
    /// naming the setting to change if the judge is not expected to decide within the progress
    /// deadline (the rollout is then handed to the metrics' thresholds). Made at the first look
    /// that shows the rate; with a compared latency metric, the latency's shape is only trusted
    /// from the primary observations the judge fixed its slow bound from, so the first look
    /// forecasts the error rate alone (handing over if even that cannot decide in time, or if
    /// the primary cannot serve the bound's observations in time) and the full forecast is made
    /// at the look the bound is fixed.
    pub(super) fn forecast_once(&mut self) {
        let provisional = match &self.s.forecast {
            Some(ForecastStatus::Unknown) => false,
            Some(ForecastStatus::Provisional { .. }) => true,
            _ => return,
        };
        // A look some compared metric could not read is no look to forecast from: the
        // forecast waits for one whose metrics all read, and no data never hands over.
        if !self.s.phase.is_active() || self.metrics_unavailable().is_some() {
            return;
        }
        let latency_compared = self
            .spec
            .metrics
            .iter()
            .any(|m| m.kind == MetricKind::RequestDuration);
        let shape = self.bound_latency();
        if latency_compared && shape.is_none() && provisional {
            return;
        }
        let Some((rps, errors, seen)) = self.observed_rate() else {
            return;
        };
        let Some(mut forecast) = forecast(self.spec, rps, errors, shape.as_ref()) else {
            return;
        };
        let hopeful_rps = rps * (1.0 + FAVOURABLE_Z / seen.requests.max(1.0).sqrt());
        // The forecast recorded is the one at the rate seen; whether the judge may still
        // decide is asked of the favourable end too.
        let mut decides = forecast.judge_decides();
        if !decides {
            // A look's few requests leave the rate, the error rate and the latency's tail
            // uncertain (at 10 requests/s a first look's 2 failures instead of 1 doubled the
            // error rate forecast); a rollout not handed over still falls back to thresholds at
            // its deadline, so it is handed over only when even the favourable end of what the
            // look shows says so: more requests, fewer failures, more of them slow.
            let z = FAVOURABLE_Z;
            let fewer = (seen.failures - z * seen.failures.sqrt()).max(0.0);
            let hopeful_errors = (fewer + 0.5) / (seen.requests + 50.5);
            let hopeful_shape = shape
                .as_ref()
                .map(|h| heavier_tail(h, self.slow_bound(), z));
            decides = super::forecast::forecast(
                self.spec,
                hopeful_rps,
                hopeful_errors,
                hopeful_shape.as_ref().or(shape.as_ref()),
            )
            .is_some_and(|f| f.judge_decides());
        }
        if latency_compared && shape.is_none() && decides {
            if self.slow_bound_in_time(hopeful_rps) {
                self.s.forecast = Some(ForecastStatus::Provisional { forecast });
                return;
            }
            // The judge cannot even fix its latency slow bound in time: this look's histogram,
            // however few its observations, is shape enough for a forecast that says so. A look
            // without one forecasts nothing: the next look's will.
            let Some(f) = self
                .primary_latency()
                .and_then(|h| super::forecast::forecast(self.spec, rps, errors, Some(h)))
            else {
                return;
            };
            decides = f.judge_decides();
            forecast = f;
        }
        let undecidable = !decides;
        let warning = if undecidable {
            forecast.warning(self.spec)
        } else {
            forecast.let_decide_warning(self.spec, hopeful_rps)
        };
        self.s.forecast = Some(ForecastStatus::Known {
            forecast,
            warning: warning.clone(),
        });
        if let Some(w) = warning {
            let message = self.s.message.clone();
            self.event_for(
                Severity::Warning,
                Some(EventReason::ProgressDeadlineTooShort),
                format!("Forecast for {}: {w}", self.target()),
            );
            // The rollout's own message stays what it was; the Event carries the warning.
            self.s.message = message;
        }
        if undecidable {
            self.s.threshold_fallback = true;
        }
    }

    /// The service's request rate, error rate and the counts they were estimated from at this
    /// look, from the first compared metric
    /// whose reading has counts (the success rate's, else the latency histograms' totals). Each
    /// side's rate is its count over the span its samples cover (counters scraped every 15s
    /// count the step from its first scrape, not from its start); `None` until both sides'
    /// rates are known (the primary's alone for a mirrored canary), or with no traffic.
    fn observed_rate(&self) -> Option<(f64, f64, Counts)> {
        let since = self.now.saturating_sub(self.s.step_since) as f64 / 1000.0;
        let compared = || self.spec.metrics.iter().filter(|m| m.kind.is_builtin());
        let counts = compared().find_map(|m| match self.obs.metrics.get(&m.name) {
            Some(MetricReading::Counts {
                canary,
                primary,
                covered,
            }) => Some((*canary, *primary, covered.as_deref().copied())),
            _ => None,
        });
        let histograms = || {
            compared().find_map(|m| match self.obs.metrics.get(&m.name) {
                Some(MetricReading::Histograms {
                    canary,
                    primary,
                    covered,
                }) => {
                    let total = |h: &Histogram| Counts {
                        requests: h.cumulative.last().copied().unwrap_or(0.0),
                        failures: 0.0,
                    };
                    Some((total(canary), total(primary), covered.as_deref().copied()))
                }
                _ => None,
            })
        };
        let (canary, primary, covered) = counts.or_else(histograms)?;
        let spans = covered.map_or((Some(since), Some(since)), |c| (c.canary, c.primary));
        let rate = |n: f64, span: Option<f64>| span.filter(|s| *s > 0.0).map(|s| n / s);
        let primary_rate = rate(primary.requests, spans.1)?;
        // A mirrored canary serves copies of the primary's requests.
        let rps = match self.s.mirror {
            Some(_) => primary_rate,
            None => rate(canary.requests, spans.0)? + primary_rate,
        };
        let requests = canary.requests + primary.requests;
        // A first look's few requests often hold no failure at all, and a forecast at 0% errors
        // would promise a rollout far shorter than the first failures make it: the error rate
        // is the mean under a Beta(0.5, 50) prior (mean 1%, as the judge's own bounds use), which
        // the look's counts move towards what they show.
        let failures = canary.failures + primary.failures;
        (rps > 0.0 && rps.is_finite()).then(|| {
            let seen = Counts { requests, failures };
            (rps, (failures + 0.5) / (requests + 50.5), seen)
        })
    }

    /// The primary's latency histogram the judge fixed its slow bound from (the shape the
    /// forecast runs on), once a compared latency metric has one.
    fn bound_latency(&self) -> Option<Histogram> {
        self.spec
            .metrics
            .iter()
            .filter(|m| m.kind == MetricKind::RequestDuration)
            .find_map(|m| self.s.evidence.latency.get(&m.name)?.bound_histogram())
    }

    /// Whether the primary, at `rps`, serves the observations every compared latency metric's
    /// slow bound is fixed from (`BOUND_OBSERVATIONS / (1 - q)`) within the first step's
    /// interval and the progress deadline: before its bound no latency evidence counts.
    fn slow_bound_in_time(&self, rps: f64) -> bool {
        let needed = self
            .spec
            .metrics
            .iter()
            .filter(|m| m.kind == MetricKind::RequestDuration)
            .map(|m| {
                let q = m.quantile.unwrap_or(DEFAULT_LATENCY_QUANTILE);
                (BOUND_OBSERVATIONS / (1.0 - q)).ceil()
            })
            .fold(0.0, f64::max);
        let primary_share = match self.s.mirror {
            Some(_) => 1.0,
            None => 1.0 - f64::from(self.s.canary_weight) / 100.0,
        };
        let within = (self.spec.interval.millis() + self.spec.progress_deadline.millis()) as f64;
        needed / (rps * primary_share) * 1000.0 <= within
    }

    /// The primary's latency histogram of this look, if a compared latency metric read one
    /// with observations.
    fn primary_latency(&self) -> Option<&Histogram> {
        self.spec
            .metrics
            .iter()
            .filter(|m| m.kind == MetricKind::RequestDuration)
            .find_map(|m| match self.obs.metrics.get(&m.name) {
                Some(MetricReading::Histograms { primary, .. })
                    if primary.cumulative.last().is_some_and(|n| *n > 0.0) =>
                {
                    Some(primary)
                }
                _ => None,
            })
    }

    /// The judge's latency slow bound, once fixed (the first compared latency metric's).
    fn slow_bound(&self) -> Option<f64> {
        self.spec
            .metrics
            .iter()
            .filter(|m| m.kind == MetricKind::RequestDuration)
            .find_map(|m| self.s.evidence.latency.get(&m.name)?.slow_above())
    }

    /// "; at the N requests/s seen, spec.progressDeadlineSeconds of at least S would let it
    /// decide", when the forecast at the rate seen says so.
    fn deadline_advice(&self) -> String {
        self.observed_rate()
            .and_then(|(rps, errors, _)| {
                Some((rps, forecast(self.spec, rps, errors, self.bound_latency().as_ref())?))
            })
            .map(|(rps, f)| match (f.end, f.deadline_needed) {
                (ForecastEnd::Deadline { .. }, Some(needed)) => format!(
                    "; at the {} requests/s seen, spec.progressDeadlineSeconds of at least {} would let the statistical judge decide (`fledge-sim plan --rps`)",
                    super::forecast::rate_text(rps),
                    needed / 1000
                ),
                _ => String::new(),
            })
            .unwrap_or_default()
    }

    /// The progress deadline of a step the judge still holds, its metrics readable: from now
    /// on the rollout is judged by the metrics' thresholds over each interval's traffic (see
    /// `RolloutState::threshold_fallback`). Said in a Warning Event; this step is judged so at
    /// once.
    pub(super) fn fall_back_to_thresholds(
        &mut self,
        why: &str,
        short_of_traffic: Option<(f64, u64)>,
    ) {
        self.s.threshold_fallback = true;
        self.s.held_since = None;
        let cause = match short_of_traffic {
            Some((seen, need)) => format!(
                "too little traffic to judge ({seen:.0} canary requests in this step, need {need})"
            ),
            None => format!("no decision ({why})"),
        };
        let advice = self.deadline_advice();
        self.event(
            Severity::Warning,
            format!(
                "Progress deadline of {} reached by {} with {cause}: judged from now on by the metrics' thresholds over each interval's traffic, as Flagger judges; a regression the statistical judge shows still rolls back at once{advice}",
                self.spec.progress_deadline,
                self.target()
            ),
        );
        match self.analyse() {
            Analysis::Passed => self.next_step(),
            Analysis::Regressed(why) => self.rollback(format!("canary regressed: {why}")),
            Analysis::Failed(why) => self.failed_check(why),
            Analysis::Held {
                why,
                short_of_traffic,
            } => self.rollback(self.deadline_reason(&why, short_of_traffic)),
        }
    }

    /// The reason of a rollback at the progress deadline of a step the judge still holds.
    pub(super) fn deadline_reason(
        &self,
        why: &str,
        short_of_traffic: Option<(f64, u64)>,
    ) -> String {
        let deadline = self.spec.progress_deadline;
        if let Some(failed) = self.metrics_unavailable() {
            return format!(
                "no data to judge within the progress deadline of {deadline} ({failed}); a canary is never promoted without its metrics"
            );
        }
        let advice = self.deadline_advice();
        match short_of_traffic {
            Some((seen, need)) => format!(
                "not enough traffic to judge: {seen:.0} requests, need {need}; held for the progress deadline of {deadline}; not promoted without evidence{advice}"
            ),
            None => format!(
                "no decision within the progress deadline of {deadline}; not promoted without evidence: {why}{advice}"
            ),
        }
    }
}
