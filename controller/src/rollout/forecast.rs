//! What a rollout should take at a given traffic rate, before it starts: the core itself, run on
//! the counts such traffic gives on average to a canary that fails exactly as often as primary.
//! Every step ends when the judge's own boundary is crossed, so the requests a step needs are
//! those of the judge, not of a formula beside it; holds, looks, `minStepDuration` and the
//! progress deadline act as in a real rollout.
//!
//! Latency is forecast only from a given shape of the service's latency (both sides the same):
//! the latency test's evidence depends on how many requests fall above the slow bound and
//! near it, which no single number says. On a cluster the shape is the primary's histogram at
//! the first look; `fledge-sim plan` takes a median and a p99 (`--latency`). Without one, the
//! latency metrics are left out of the run and the forecast names them as not forecast.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::plan::{agreeing_hooks, ideal_readings, initialised};
use super::schedule::look_interval;
use super::{Millis, Phase, RolloutState, advance, wants};
use crate::analysis::{Counts, Histogram, ISTIO_DURATION_BOUNDS_MS, MetricReading};
use crate::spec::{Duration, Judge, MetricKind, RolloutSpec};

/// How far ahead a forecast looks: a rollout that is not decided in a day is "never" for
/// anyone planning one, and the bound keeps a forecast cheap enough for a reconcile.
const HORIZON: Millis = 24 * 3_600_000;

/// One step of the forecast rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepForecast {
    pub canary_weight: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<u8>,
    /// Canary requests per second at this step.
    pub canary_rps: f64,
    /// Canary requests the step had served when it ended (the judge's evidence sufficed at the
    /// look that ended it), or when the forecast stopped.
    pub canary_requests: f64,
    /// Time from the new revision to the step's start, and how long it lasted.
    pub started: Millis,
    pub duration: Millis,
    /// Whether the judge ended the step; `false` for the step the forecast stopped in.
    pub ended: bool,
}

/// How the forecast rollout ends.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ForecastEnd {
    /// Promoted and finalised after this long.
    Promoted { after: Millis },
    /// Still held at the progress deadline after this long: from then on the metrics'
    /// thresholds judge what the comparison leaves undecided (`threshold_fallback`).
    Deadline { after: Millis },
    /// Still undecided at the forecast's horizon (a day).
    Undecided,
}

/// The expected rollout of a spec at a traffic rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Forecast {
    /// Requests per second reaching the service, and the error rate (a fraction) both sides
    /// are assumed to have.
    pub rps: f64,
    pub error_rate: f64,
    /// The steps with no progress deadline: what each needs and how long it lasts.
    pub steps: Vec<StepForecast>,
    /// How the rollout ends under the spec's own progress deadline.
    pub end: ForecastEnd,
    /// The time the same rollout would take with no progress deadline (`None` if more than
    /// the horizon).
    pub unbounded: Option<Millis>,
    /// The shortest progress deadline (in whole minutes) under which the judge decides every
    /// step in 95% of runs: the longest hold of the same rollout on random counts (Poisson
    /// arrivals, fixed seeds), not only on the expected ones, whose hold is a typical run's.
    pub deadline_needed: Option<Millis>,
    /// Latency metrics left out for want of a latency shape: the steps above may end sooner
    /// than their latency comparison lets them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_forecast: Vec<String>,
}

impl Forecast {
    /// Whether the statistical judge is expected to decide within the progress deadline.
    /// When not, the rollout is judged by the metrics' thresholds from its first look (see
    /// `RolloutState::threshold_fallback`).
    pub fn judge_decides(&self) -> bool {
        matches!(self.end, ForecastEnd::Promoted { .. })
    }

    /// A warning for a rollout the judge is not expected to decide within its progress
    /// deadline: what happens instead, and what to change for the judge to decide.
    pub fn warning(&self, spec: &RolloutSpec) -> Option<String> {
        let (short, fix) = self.shortfall(spec)?;
        Some(format!(
            "{short}: the rollout is judged by the metrics' thresholds over each interval's traffic, as Flagger judges (a regression the statistical judge shows still rolls back at once); for the judge to decide, {fix}",
        ))
    }

    /// The warning for a rollout this forecast does not expect the judge to decide in time,
    /// though the favourable end of a look's few requests (`favourable_rps`) does: the judge
    /// is let decide, and the deadline hands the rollout to the thresholds if it has not.
    pub fn let_decide_warning(&self, spec: &RolloutSpec, favourable_rps: f64) -> Option<String> {
        let (short, fix) = self.shortfall(spec)?;
        Some(format!(
            "{short}, though it would at the favourable end of the look's few requests ({} requests/s): it is let decide, and if it has not by the progress deadline the metrics' thresholds judge the rollout from then on, as Flagger judges; for the judge to decide surely, {fix}",
            rate_text(favourable_rps),
        ))
    }

    /// "at R requests/s the statistical judge is not expected to decide ..." and the setting
    /// that would let it, when the judge is not expected to decide in time.
    fn shortfall(&self, spec: &RolloutSpec) -> Option<(String, String)> {
        if self.judge_decides() {
            return None;
        }
        let interval = spec.interval.millis();
        let held = self.steps.iter().find(|s| {
            !s.ended || s.duration.saturating_sub(interval) >= spec.progress_deadline.millis()
        });
        let step = held.map_or(String::new(), |s| {
            format!(" at canary weight {}%", s.canary_weight)
        });
        let fix = match self.deadline_needed {
            Some(d) => format!(
                "raise spec.progressDeadlineSeconds to at least {} (expected promotion after {})",
                d / 1000,
                Duration(self.unbounded.unwrap_or(0))
            ),
            None => "raise analysis.stepWeight (or maxWeight), or widen the metrics' margin".into(),
        };
        let within = match self.end {
            ForecastEnd::Undecided => "within a day".to_string(),
            _ => format!("within the progress deadline ({})", spec.progress_deadline),
        };
        Some((
            format!(
                "at {} requests/s the statistical judge is not expected to decide{step} {within}",
                rate_text(self.rps),
            ),
            fix,
        ))
    }
}

/// The rollout `spec` is expected to take at `rps` requests per second with `error_rate` (a
/// fraction) on both sides, and `latency` (a histogram of any total: only its shape counts) on
/// both sides if given. `None` for a threshold judge (its pace does not depend on traffic), a
/// rate that is not a positive number, or a latency histogram without observations.
pub fn forecast(
    spec: &RolloutSpec,
    rps: f64,
    error_rate: f64,
    latency: Option<&Histogram>,
) -> Option<Forecast> {
    let statistical = matches!(spec.judge, Judge::Statistical { .. });
    let usable = rps > 0.0 && rps.is_finite() && (0.0..1.0).contains(&error_rate);
    if !(statistical && usable) {
        return None;
    }
    let shape = match latency {
        Some(h) => Some(Shape::of(h)?),
        None => None,
    };
    // Run with the deadline past the horizon (a rollback at the deadline would ask for the
    // forecast again), then place the spec's own deadline on the steps.
    let mut lifted = spec.clone();
    lifted.progress_deadline = Duration(HORIZON + 1);
    let mut not_forecast = Vec::new();
    if shape.is_none() {
        lifted.metrics.retain(|m| {
            let latency = m.kind == MetricKind::RequestDuration;
            if latency {
                not_forecast.push(m.name.clone());
            }
            !latency
        });
    }
    let load = Load {
        rps,
        error_rate,
        latency: shape,
    };
    let (steps, free_end) = run(&lifted, &load, None);
    let unbounded = match free_end {
        ForecastEnd::Promoted { after } => Some(after),
        _ => None,
    };
    let end = deadline_end(spec, &steps).unwrap_or(free_end);
    let deadline_needed = unbounded.map(|_| {
        // The expected counts' hold is the typical run's; the recommendation covers
        // `draws::COVERED` of runs on random counts (a run not decided within the horizon
        // needs more than any deadline).
        let mut holds = vec![longest_hold(spec, &steps)];
        for seed in 0..draws::DRAWS {
            let mut draw = Draw::new(seed);
            let (drawn, end) = run(&lifted, &load, Some(&mut draw));
            holds.push(match end {
                ForecastEnd::Undecided => HORIZON,
                _ => longest_hold(spec, &drawn),
            });
        }
        let held = draws::percentile(holds, draws::COVERED).unwrap_or(0);
        held.div_ceil(60_000).max(1) * 60_000
    });
    Some(Forecast {
        rps,
        error_rate,
        steps,
        end,
        unbounded,
        deadline_needed,
        not_forecast,
    })
}

/// The traffic a forecast runs on.
struct Load {
    rps: f64,
    error_rate: f64,
    latency: Option<Shape>,
}

/// A latency histogram's bounds and the share of requests at or below each.
struct Shape {
    bounds: Vec<f64>,
    fractions: Vec<f64>,
}

impl Shape {
    /// `None` for a histogram without observations or with a count that is not a finite
    /// non-negative number.
    fn of(h: &Histogram) -> Option<Shape> {
        let total = *h.cumulative.last()?;
        let fine = h.cumulative.iter().all(|c| c.is_finite() && *c >= 0.0);
        (fine && total > 0.0 && h.bounds.len() == h.cumulative.len()).then(|| Shape {
            bounds: h.bounds.clone(),
            fractions: h.cumulative.iter().map(|c| c / total).collect(),
        })
    }

    fn histogram(&self, n: f64) -> Histogram {
        Histogram {
            bounds: self.bounds.clone(),
            cumulative: self.fractions.iter().map(|f| f * n).collect(),
        }
    }
}

/// A log-normal latency with this median and p99 (milliseconds) in Istio's default buckets, as
/// a histogram of one observation: a shape for [`forecast`]. `None` unless
/// `0 < p50 <= p99`, both finite.
pub fn log_normal_latency(p50: f64, p99: f64) -> Option<Histogram> {
    if !(p50 > 0.0 && p99 >= p50 && p99.is_finite()) {
        return None;
    }
    let z99 = 2.326_347_874_040_841;
    let sigma = (p99 / p50).ln() / z99;
    let cdf = |x: f64| {
        if x.is_infinite() {
            1.0
        } else if sigma == 0.0 {
            f64::from(u8::from(x >= p50))
        } else {
            0.5 * statrs::function::erf::erfc(-(x / p50).ln() / (sigma * std::f64::consts::SQRT_2))
        }
    };
    Some(Histogram {
        bounds: ISTIO_DURATION_BOUNDS_MS.to_vec(),
        cumulative: ISTIO_DURATION_BOUNDS_MS.iter().map(|b| cdf(*b)).collect(),
    })
}

/// Where the spec's progress deadline ends the rollout: a step the judge has not let go by its
/// first `interval` is held from then, and the step at `interval` after the hold has lasted the
/// deadline rolls it back (unless the evidence suffices by that step).
fn deadline_end(spec: &RolloutSpec, steps: &[StepForecast]) -> Option<ForecastEnd> {
    let interval = spec.interval.millis();
    let held_steps = spec.progress_deadline.millis().div_ceil(interval);
    let rollback_at = interval * (1 + held_steps);
    steps
        .iter()
        .find(|s| !s.ended || s.duration > rollback_at)
        .filter(|s| s.duration >= rollback_at)
        .map(|s| ForecastEnd::Deadline {
            after: s.started + rollback_at,
        })
}

/// Runs the core from a new revision, ticking at every look, on expected counts, or on random
/// ones when given a `draw`.
fn run(
    spec: &RolloutSpec,
    load: &Load,
    mut draw: Option<&mut Draw>,
) -> (Vec<StepForecast>, ForecastEnd) {
    let (rps, error_rate) = (load.rps, load.error_rate);
    let (spec, mut state, mut obs) = initialised(spec, "forecast");
    let tick = look_interval(&spec);
    let mut steps: Vec<StepForecast> = Vec::new();
    let mut now = 0;
    while now <= HORIZON {
        let w = wants(&state, &spec, now);
        obs.metrics = if w.metrics {
            readings(&spec, &state, load, now, draw.as_deref_mut())
        } else {
            BTreeMap::new()
        };
        obs.hooks = agreeing_hooks(&spec, &w.hooks);
        let counted = counts(&state, rps, error_rate, now).0.requests;
        let (next, _) = advance(&state, &spec, &obs, now);
        let moved = next.step_since != state.step_since || next.phase != state.phase;
        if moved && let Some(last) = steps.last_mut().filter(|s| !s.ended) {
            last.duration = now - last.started;
            last.canary_requests = counted;
            last.ended = next.phase != Phase::Failed;
        }
        if next.phase == Phase::Progressing
            && next.step_since == now
            && moved
            && canary_share(&next) > 0.0
        {
            steps.push(StepForecast {
                canary_weight: next.canary_weight,
                mirror: next.mirror,
                canary_rps: rps * canary_share(&next),
                canary_requests: 0.0,
                started: now,
                duration: 0,
                ended: false,
            });
        }
        state = next;
        // The rollout forecast here does not forecast itself at its first look.
        state.forecast = None;
        match state.phase {
            Phase::Succeeded => return (steps, ForecastEnd::Promoted { after: now }),
            Phase::Failed => return (steps, ForecastEnd::Deadline { after: now }),
            _ => now += tick,
        }
    }
    if let Some(last) = steps.last_mut().filter(|s| !s.ended) {
        last.duration = HORIZON - last.started;
        last.canary_requests = counts(&state, rps, error_rate, HORIZON).0.requests;
    }
    (steps, ForecastEnd::Undecided)
}

/// The fraction of the service's requests the canary serves (or receives as mirrored copies).
fn canary_share(state: &RolloutState) -> f64 {
    f64::from(state.mirror.unwrap_or(state.canary_weight)) / 100.0
}

/// Expected canary and primary counts since the current step began.
fn counts(state: &RolloutState, rps: f64, error_rate: f64, now: Millis) -> (Counts, Counts) {
    let seconds = now.saturating_sub(state.step_since) as f64 / 1000.0;
    let canary = rps * canary_share(state) * seconds;
    let primary = rps * (1.0 - f64::from(state.canary_weight) / 100.0) * seconds;
    let side = |requests: f64| Counts {
        requests,
        failures: requests * error_rate,
    };
    (side(canary), side(primary))
}

fn readings(
    spec: &RolloutSpec,
    state: &RolloutState,
    load: &Load,
    now: Millis,
    draw: Option<&mut Draw>,
) -> BTreeMap<String, MetricReading> {
    let (canary, primary, latency) = match draw {
        None => {
            let (canary, primary) = counts(state, load.rps, load.error_rate, now);
            let latency = load.latency.as_ref().map(|shape| {
                (
                    shape.histogram(canary.requests),
                    shape.histogram(primary.requests),
                )
            });
            (canary, primary, latency)
        }
        Some(draw) => draw.look(state, load, now),
    };
    let mut out = ideal_readings(spec);
    for m in &spec.metrics {
        let reading = match (&m.kind, &latency) {
            (MetricKind::RequestSuccessRate, _) => MetricReading::Counts {
                canary,
                primary,
                covered: None,
            },
            (MetricKind::RequestDuration, Some((c, p))) => MetricReading::Histograms {
                canary: c.clone(),
                primary: p.clone(),
                covered: None,
            },
            _ => continue,
        };
        out.insert(m.name.clone(), reading);
    }
    out
}

/// The longest a step is held past its first interval.
fn longest_hold(spec: &RolloutSpec, steps: &[StepForecast]) -> Millis {
    let interval = spec.interval.millis();
    steps
        .iter()
        .map(|s| s.duration.saturating_sub(interval))
        .max()
        .unwrap_or(0)
}

/// One run on random counts: each side's counts since its step began, drawn look by look.
struct Draw {
    rng: draws::Rng,
    step_since: Option<Millis>,
    last: Millis,
    canary: draws::Side,
    primary: draws::Side,
}

impl Draw {
    fn new(seed: u64) -> Draw {
        Draw {
            rng: draws::Rng::new(seed),
            step_since: None,
            last: 0,
            canary: draws::Side::default(),
            primary: draws::Side::default(),
        }
    }

    fn look(
        &mut self,
        state: &RolloutState,
        load: &Load,
        now: Millis,
    ) -> (Counts, Counts, Option<(Histogram, Histogram)>) {
        if self.step_since != Some(state.step_since) {
            self.step_since = Some(state.step_since);
            self.last = state.step_since;
            self.canary = draws::Side::default();
            self.primary = draws::Side::default();
        }
        let seconds = now.saturating_sub(self.last) as f64 / 1000.0;
        self.last = self.last.max(now);
        let shares: Vec<f64> = load.latency.as_ref().map_or(Vec::new(), |shape| {
            let mut below = 0.0;
            shape
                .fractions
                .iter()
                .map(|f| {
                    let share = (f - below).max(0.0);
                    below = *f;
                    share
                })
                .collect()
        });
        let canary = load.rps * canary_share(state) * seconds;
        let primary = load.rps * (1.0 - f64::from(state.canary_weight) / 100.0) * seconds;
        let rng = &mut self.rng;
        self.canary.add(rng, canary, load.error_rate, &shares);
        self.primary.add(rng, primary, load.error_rate, &shares);
        let latency = load.latency.as_ref().map(|shape| {
            (
                self.canary.histogram(&shape.bounds),
                self.primary.histogram(&shape.bounds),
            )
        });
        (self.canary.counts, self.primary.counts, latency)
    }
}

/// A rate (requests per second) for people, no trailing zeros: whole from 100, two decimals
/// from 1, and three significant figures below 1, so that a small rate is never rounded away
/// (0.001 stays 0.001, not 0).
pub fn rate_text(x: f64) -> String {
    let decimals = if x >= 100.0 {
        0
    } else if x >= 1.0 || x <= 0.0 || !x.is_finite() {
        2
    } else {
        // Capped: a rate of one request in a few centuries is not one anyone serves.
        (2 - x.log10().floor() as i64).clamp(2, 12) as usize
    };
    let s = format!("{x:.decimals$}");
    if decimals == 0 {
        s
    } else {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

mod draws;

#[cfg(test)]
mod tests;
