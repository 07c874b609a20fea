//! Latency: a sequential test of the share of requests slower than a bound at the primary's
//! quantile, valid at every look, exact with ties and coarse histogram buckets.
//!
//! Prometheus gives latency as bucket counts, and Istio's buckets are coarse (a bound is 2 to
//! 2.5 times the one below between 10 ms and 1 s): most observations share a handful of buckets.
//! A rank test with a normal approximation is far off at the tiny per-look levels an
//! always-valid test needs there. This test reads what the buckets do tell exactly: how many
//! requests were slower than a bound.
//!
//! - **The bound** `t` is the bucket bound with the share of the primary's requests above it
//!   nearest to `1 - q` (`q` 0.99 by default, the quantile of Flagger's `request-duration`): the
//!   bound that best stands for the primary's `q`-quantile, read from the primary's
//!   traffic before any evidence is counted (at least [`BOUND_OBSERVATIONS`]` / (1 - q)`
//!   observations), then kept for the rollout. A request is *slow* when it took longer than `t`.
//!   Fixing `t` before the looks it judges keeps it independent of their data: chosen from the
//!   same data, it would sit just above the primary's slow requests and bias the test.
//! - **High** (roll back) is the error-rate test's rollback side ([`super::sequential`]) on slow
//!   requests instead of failures: within each look, given how many requests were slow on both
//!   sides together, which side each came from. The mixture likelihood ratio is a nonnegative
//!   supermartingale whenever the canary is slow no more often than the primary, so Ville's
//!   inequality bounds the chance of a false High over the whole rollout by `alpha`, one-sided
//!   (only High acts). Ties and coarse buckets cost nothing: "above `t`" is exact for every
//!   observation, whatever bucket it shares.
//! - **No worse** (advance) needs evidence that the canary is no slower than the primary slowed
//!   by the margin: its share of requests above `t` below the share of the primary's above
//!   `x = t / (1 + margin)`, which a primary made `1 + margin` times slower would have above
//!   `t`. Each side's share gets the beta-binomial always-valid confidence sequence of the
//!   error-rate test (`beta / 2` each side), over the traffic since the bound was fixed, pooled
//!   across steps (the versions do not change between steps, only the canary's weight: the
//!   argument is the error-rate test's, [`super::sequential`], "What accumulates"); each step
//!   still needs `min_requests` canary observations of its own before it may advance. Without
//!   enough evidence the step holds, as the error rate's Undecided does, and only a look with
//!   canary observations can advance.
//! - **The primary's share above `x`**, which usually lies inside a bucket `(a, b]`, is what
//!   bucket counts do not give. From the counts alone it is only known to be at least the share
//!   above `b`, which is `t` itself when the margin is finer than the buckets: a canary no
//!   slower than primary would then never be shown no worse. Read linearly within the bucket,
//!   as `histogram_quantile` reads a quantile, it is overstated in a tail, where the density
//!   falls within the bucket (a p99 of 80 ms has 0.55% above 91 ms, read linearly as 1.4%: a
//!   canary 35% slower passed a 10% margin). So it is read on the tail's own scale: `ln S`,
//!   the log of the share above, is taken as linear in `ln x` between `a` and `b` (the tail
//!   falls like a power law within one bucket), from the lower confidence bounds of the shares
//!   above `a` and above `b` (`beta / 4` each, so both hold at once at `beta / 2`). That is a
//!   lower bound whenever `ln S` is concave in `ln x` there: tails that fall at least as fast
//!   as a power law within a bucket, as log-normal, exponential, gamma and Weibull tails do
//!   everywhere. A tail heavier than that inside one bucket (a mixture whose slow part begins
//!   inside it) is read too high, which makes NoWorse easier; the rollback side does not use
//!   this read.
//! - **When the primary has no observation above `t`** as the bound is fixed (nearly every
//!   observation shares one bucket, the bound is that bucket's top), the buckets hold no tail to
//!   read, and the share above `x` would be bounded by 0. The comparison is then made at the
//!   histogram's resolution, decided before any evidence: the primary's share above `a`, the
//!   highest bound at or below `x` (0, every request, when there is none), exactly what the
//!   counts give; NoWorse then shows the canary no slower than the primary slowed by `t / a`,
//!   the margin rounded up to the buckets, and the reason says so.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Counts;
use super::Histogram;
use super::mann_whitney::{Buckets, CompareError};
use super::sequential::{
    BetaBinomialSequence, LEANING_WORSE_ABOVE, REGRESSION_RATIOS, add_share_evidence, log_mixture,
    number,
};

/// Primary observations needed to fix the bound, times `1 / (1 - q)`: ten expected above the
/// quantile (1,000 for p99, 20 for the median).
pub const BOUND_OBSERVATIONS: f64 = 10.0;

/// Settings of the latency test for one metric.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyTestConfig {
    /// Highest probability of ever flagging High a canary no slower than primary, over the
    /// rollout.
    pub alpha: f64,
    /// Highest probability of advancing a step when the canary is slower than the margin allows.
    pub beta: f64,
    /// The quantile gated, strictly between 0 and 1.
    pub quantile: f64,
    /// Relative margin: 0.1 lets the canary be 10% slower than primary.
    pub margin: f64,
    /// Canary observations a step needs before it may advance.
    pub min_requests: u64,
}

impl LatencyTestConfig {
    fn problem(&self) -> Option<String> {
        for (name, v) in [("alpha", self.alpha), ("beta", self.beta)] {
            if !(v > 0.0 && v < 1.0) {
                return Some(format!("{name} {v} is not strictly between 0 and 1"));
            }
        }
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            return Some(format!(
                "quantile {} is not strictly between 0 and 1",
                self.quantile
            ));
        }
        if !(self.margin > 0.0 && self.margin.is_finite()) {
            return Some(format!(
                "margin {} is not a positive finite fraction",
                self.margin
            ));
        }
        None
    }

    /// Primary observations needed before the bound is fixed.
    pub fn bound_observations(&self) -> f64 {
        (BOUND_OBSERVATIONS / (1.0 - self.quantile)).ceil()
    }
}

/// The test's answer at one look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LatencyDecision {
    /// The canary is slow more often than primary: roll back.
    High,
    /// The canary is no slower than primary by the margin: this step may advance.
    NoWorse,
    /// Not enough evidence either way: hold.
    Undecided,
    /// Nothing usable to compare (bad or mismatched histograms, bad settings): hold.
    NoData,
}

impl fmt::Display for LatencyDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LatencyDecision::High => "high",
            LatencyDecision::NoWorse => "no worse",
            LatencyDecision::Undecided => "undecided",
            LatencyDecision::NoData => "no data",
        })
    }
}

/// What one look concluded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyJudgement {
    pub decision: LatencyDecision,
    /// Evidence that the canary is slow more often than primary, over the rollout (1 is none,
    /// `1/alpha` is High).
    pub e_value: f64,
    /// The slow bound in the histograms' unit, once fixed.
    pub slow_above: Option<f64>,
    /// The canary's interpolated quantile over the reading, for display.
    pub canary_quantile: Option<f64>,
    /// Held only because the step has fewer canary observations than needed: (seen, needed).
    pub short_of_traffic: Option<(f64, u64)>,
    /// The step's own evidence lets it give way to the next (not to promotion): the bound is
    /// fixed, nothing is High, the step has `min_requests` canary observations judged against
    /// the bound, and this look saw some.
    #[serde(default)]
    pub step_clear: bool,
    pub reason: String,
}

/// What the test keeps between looks; serialises into the Canary's status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyEvidence {
    /// The histograms' bucket bounds (`+Inf` written as `null`); other bounds restart the test.
    #[serde(default, with = "bounds_json")]
    bounds: Vec<f64>,
    /// The slow bound, once fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slow_above: Option<f64>,
    /// The primary had no observation above the slow bound when it was fixed: "no worse" is
    /// judged at the buckets' resolution (see the module).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    empty_tail: bool,
    /// The primary's observations per bucket while the bound is being chosen, and those it
    /// was chosen from once fixed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    primary_seen: Vec<f64>,
    /// Log likelihood ratios of [`REGRESSION_RATIOS`] (empty until the first evidence).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    log_lr: Vec<f64>,
    /// The last cumulative per-bucket counts of this step (the next look's baseline).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    baseline_canary: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    baseline_primary: Vec<f64>,
    /// Per-bucket counts used as evidence since the bound was fixed, pooled across steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "stepCanary")]
    pooled_canary: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "stepPrimary")]
    pooled_primary: Vec<f64>,
    /// The canary's observations per bucket since the last step check (or the step's start):
    /// one interval's window, as a threshold check reads it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    window_canary: Vec<f64>,
    /// Canary observations used as evidence in this step.
    #[serde(default)]
    step_canary_observations: f64,
}

/// JSON has no infinity: bounds are written with `+Inf` as `null`.
mod bounds_json {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bounds: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(bounds.iter().map(|b| b.is_finite().then_some(*b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let raw: Vec<Option<f64>> = Vec::deserialize(d)?;
        Ok(raw
            .into_iter()
            .map(|b| b.unwrap_or(f64::INFINITY))
            .collect())
    }
}

impl LatencyEvidence {
    /// The canary's weight changed: readings are cumulative from zero again, and the step needs
    /// `min_requests` canary observations of its own. The bound, the High evidence and the
    /// pooled NoWorse counts carry on.
    pub fn begin_step(&mut self) {
        self.baseline_canary.clear();
        self.baseline_primary.clear();
        self.window_canary.clear();
        self.step_canary_observations = 0.0;
    }

    /// A step check has read the window: the next window starts now.
    pub fn begin_window(&mut self) {
        self.window_canary.clear();
    }

    /// Evidence that the canary is slow more often than primary, over the rollout.
    pub fn e_value(&self) -> f64 {
        if self.log_lr.is_empty() {
            1.0
        } else {
            log_mixture(&self.log_lr).exp()
        }
    }

    /// The canary's `q`-quantile over the window (see [`begin_window`](Self::begin_window)),
    /// read as `histogram_quantile` reads it.
    pub fn window_canary_quantile(&self, q: f64) -> Option<f64> {
        if self.window_canary.iter().sum::<f64>() <= 0.0 {
            return None;
        }
        Buckets::from_counts(&self.bounds, &self.window_canary).quantile(q)
    }

    /// The slow bound, once fixed.
    pub fn slow_above(&self) -> Option<f64> {
        self.slow_above
    }

    /// The primary's histogram the slow bound was chosen from (at least
    /// [`LatencyTestConfig::bound_observations`]), once the bound is fixed: a tail shape from
    /// fewer observations is noise in the buckets the test reads.
    pub fn bound_histogram(&self) -> Option<Histogram> {
        self.slow_above?;
        let cumulative: Vec<f64> = self
            .primary_seen
            .iter()
            .scan(0.0, |sum, c| {
                *sum += c;
                Some(*sum)
            })
            .collect();
        let seen = cumulative.last().copied().unwrap_or(0.0);
        (seen > 0.0 && cumulative.len() == self.bounds.len()).then(|| Histogram {
            bounds: self.bounds.clone(),
            cumulative,
        })
    }

    /// Judges after a look, given histograms cumulative since the current step began.
    pub fn observe(
        &mut self,
        config: &LatencyTestConfig,
        canary: &Histogram,
        primary: &Histogram,
    ) -> LatencyJudgement {
        let mut out = LatencyJudgement {
            decision: LatencyDecision::NoData,
            e_value: self.e_value(),
            slow_above: self.slow_above,
            canary_quantile: None,
            short_of_traffic: None,
            step_clear: false,
            reason: String::new(),
        };
        if let Some(problem) = config.problem() {
            out.reason = format!("cannot judge latency: {problem}");
            return out;
        }
        let buckets = Buckets::from_histogram(canary)
            .map_err(CompareError::Canary)
            .and_then(|c| {
                Ok((
                    c,
                    Buckets::from_histogram(primary).map_err(CompareError::Primary)?,
                ))
            });
        let (canary, primary) = match buckets {
            Ok((c, p)) if c.bounds() != p.bounds() => {
                out.reason = format!(
                    "cannot compare latency: {}",
                    CompareError::BoundsDiffer {
                        canary: c.bounds().to_vec(),
                        primary: p.bounds().to_vec(),
                    }
                );
                return out;
            }
            Ok(pair) => pair,
            Err(e) => {
                out.reason = format!("cannot compare latency: {e}");
                return out;
            }
        };
        out.canary_quantile = canary.quantile(config.quantile);
        let q = quantile_name(config.quantile);
        if self.bounds != canary.bounds() {
            // New bucket bounds (a first look, or another histogram): the bound is chosen again.
            // Rollback evidence from earlier looks stays valid and is kept.
            *self = LatencyEvidence {
                bounds: canary.bounds().to_vec(),
                log_lr: std::mem::take(&mut self.log_lr),
                ..LatencyEvidence::default()
            };
        }
        let n = self.bounds.len();
        for v in [
            &mut self.baseline_canary,
            &mut self.baseline_primary,
            &mut self.pooled_canary,
            &mut self.pooled_primary,
        ] {
            v.resize(n, 0.0);
        }
        let increment = |now: &[f64], before: &[f64]| -> Option<Vec<f64>> {
            now.iter()
                .zip(before)
                .map(|(a, b)| (a >= b).then(|| a - b))
                .collect()
        };
        let (Some(inc_canary), Some(inc_primary)) = (
            increment(canary.counts(), &self.baseline_canary),
            increment(primary.counts(), &self.baseline_primary),
        ) else {
            self.baseline_canary = canary.counts().to_vec();
            self.baseline_primary = primary.counts().to_vec();
            out.decision = LatencyDecision::Undecided;
            out.reason = format!(
                "a bucket count went down (counter reset?); holding, the counts since then are the new baseline; e-value {}",
                number(out.e_value)
            );
            return out;
        };
        self.baseline_canary = canary.counts().to_vec();
        self.baseline_primary = primary.counts().to_vec();
        self.window_canary.resize(n, 0.0);
        add(&mut self.window_canary, &inc_canary);

        let Some(t) = self.slow_above else {
            self.primary_seen.resize(n, 0.0);
            add(&mut self.primary_seen, &inc_primary);
            let seen: f64 = self.primary_seen.iter().sum();
            let needed = config.bound_observations();
            out.decision = LatencyDecision::Undecided;
            if seen < needed {
                out.reason = format!(
                    "holding: choosing the slow bound at the primary's p{q}, {} of {} primary observations seen",
                    number(seen),
                    number(needed)
                );
                return out;
            }
            let t = bucket_bound_at(&self.bounds, &self.primary_seen, config.quantile);
            self.slow_above = Some(t);
            // Fewer than one: expected counts (a forecast's) are fractional.
            self.empty_tail =
                Buckets::from_counts(&self.bounds, &self.primary_seen).count_above(t) < 1.0;
            // Kept: the shape the bound was chosen from is the one a forecast may trust.
            out.slow_above = Some(t);
            out.reason = format!(
                "holding: the slow bound is {}, the top of the bucket holding the primary's p{q} ({} observations); judging from the next look",
                number(t),
                number(seen)
            );
            return out;
        };

        let look_canary: f64 = inc_canary.iter().sum();
        let side = |counts: &[f64], above: f64| {
            let b = Buckets::from_counts(&self.bounds, counts);
            Counts {
                requests: b.total(),
                failures: b.count_above(above),
            }
        };
        if self.log_lr.len() != REGRESSION_RATIOS.len() {
            self.log_lr = vec![0.0; REGRESSION_RATIOS.len()];
        }
        add_share_evidence(
            &mut self.log_lr,
            side(&inc_canary, t),
            side(&inc_primary, t),
        );
        add(&mut self.pooled_canary, &inc_canary);
        add(&mut self.pooled_primary, &inc_primary);
        self.step_canary_observations += look_canary;
        out.e_value = self.e_value();
        let high_at = 1.0 / config.alpha;
        let pooled_canary = side(&self.pooled_canary, t);
        let pooled_primary = side(&self.pooled_primary, t);
        let evidence = format!(
            "slower than {}: canary {} vs primary {} in the rollout, e-value {} (high at {})",
            number(t),
            share(pooled_canary),
            share(pooled_primary),
            number(out.e_value),
            number(high_at)
        );
        if out.e_value >= high_at {
            out.decision = LatencyDecision::High;
            out.reason = format!("canary slower than primary at p{q}: {evidence}");
            return out;
        }
        out.decision = LatencyDecision::Undecided;
        if self.step_canary_observations < config.min_requests as f64 {
            out.short_of_traffic = Some((self.step_canary_observations, config.min_requests));
            out.reason = format!(
                "not enough traffic to judge latency: {} canary observations in this step, need {}; {evidence}",
                number(self.step_canary_observations),
                config.min_requests
            );
            return out;
        }
        let level = config.beta / 2.0;
        let canary_upper =
            BetaBinomialSequence::with_prior(pooled_canary, prior(config.quantile)).upper(level);
        let shifted = t / (1.0 + config.margin);
        let (primary_lower, read) = self.primary_share_lower(config, shifted, level);
        let below = canary_upper < primary_lower;
        let leaning_worse = out.e_value > LEANING_WORSE_ABOVE;
        out.step_clear = look_canary > 0.0 && !leaning_worse;
        let verb = if below && look_canary > 0.0 && !leaning_worse {
            out.decision = LatencyDecision::NoWorse;
            "canary no worse than primary"
        } else if below && leaning_worse {
            "undecided, the rollback evidence leans towards slower (e-value above 1)"
        } else if below {
            "undecided, no canary observations in this look"
        } else {
            "undecided"
        };
        let comparison = if below { "<" } else { "≥" };
        out.reason = format!(
            "{verb} at p{q} with margin {}%: canary's share slower than {} at most {}% {comparison} primary's share slower than {read} at least {}% ({}% always-valid bounds); {evidence}",
            number(100.0 * config.margin),
            number(t),
            number(100.0 * canary_upper),
            number(100.0 * primary_lower),
            number(100.0 * (1.0 - config.beta)),
        );
        out
    }

    /// A lower confidence bound (at `level`) of the primary's share of requests slower than
    /// `x`, over the pooled evidence, and how it was read, for the reason (see the module).
    fn primary_share_lower(&self, config: &LatencyTestConfig, x: f64, level: f64) -> (f64, String) {
        let pooled = Buckets::from_counts(&self.bounds, &self.pooled_primary);
        let lower = |above: f64, level: f64| {
            let counts = Counts {
                requests: pooled.total(),
                failures: if above > 0.0 {
                    pooled.count_above(above)
                } else {
                    pooled.total()
                },
            };
            BetaBinomialSequence::with_prior(counts, prior(config.quantile)).lower(level)
        };
        let a = resolved_bound(&self.bounds, x);
        let t = self.slow_above.unwrap_or(x);
        if self.empty_tail {
            let resolved = if a > 0.0 { t / a - 1.0 } else { f64::INFINITY };
            return (
                lower(a, level),
                format!(
                    "{} (none of the primary's observations above {} as it was fixed: the buckets resolve a margin of {}%, not finer)",
                    number(a),
                    number(t),
                    number(100.0 * resolved)
                ),
            );
        }
        let b = self
            .bounds
            .iter()
            .copied()
            .find(|&b| b >= x)
            .unwrap_or(f64::INFINITY);
        if a >= x || b == x {
            return (lower(x, level), number(x));
        }
        if !b.is_finite() {
            // Above the highest finite bound nothing is known but that the share is positive.
            return (0.0, number(x));
        }
        let share = if a > 0.0 {
            let weight = (x / a).ln() / (b / a).ln();
            lower(a, level / 2.0).powf(1.0 - weight) * lower(b, level / 2.0).powf(weight)
        } else {
            // Below the first bound: at least the share above it.
            lower(b, level)
        };
        (
            share,
            format!(
                "{} (read between {} and {} as a power-law tail)",
                number(x),
                number(a),
                number(b)
            ),
        )
    }
}

/// The finite bucket bound whose share of the primary's observations above it is nearest to
/// `1 - q` in log-odds: the bound that best stands for the quantile. Istio's bounds are 2 to
/// 2.5 times apart, so the quantile can sit far from the bound above it (a p99 of 60 ms has
/// 0.07% above 100 ms but 2% above 50 ms). Log-odds weigh a share near 1 as far off as its
/// complement near 0: when nearly every observation shares one bucket, the bound is that
/// bucket's top, not the bound below, which nearly every observation exceeds (shares of all
/// requests on both sides compare nothing). A bound with no observation above it (or none at
/// or below it) counts as half of one.
fn bucket_bound_at(bounds: &[f64], counts: &[f64], q: f64) -> f64 {
    let total: f64 = counts.iter().sum();
    let finite = &bounds[..bounds.len() - 1];
    let log_odds = |share: f64| (share / (1.0 - share)).ln();
    let target = log_odds(1.0 - q);
    let mut above = total;
    let mut best = (f64::INFINITY, finite[finite.len() - 1]);
    for (&bound, &count) in finite.iter().zip(counts) {
        above -= count;
        let share = above.max(0.5).min(total - 0.5) / total;
        let distance = (log_odds(share) - target).abs();
        if distance < best.0 {
            best = (distance, bound);
        }
    }
    best.1
}

/// The highest bucket bound at or below `x`, or 0 (below every bound: every observation is
/// above it) when there is none: the point nearest `x` whose share above it the bucket counts
/// give exactly, and at least the share above `x`.
fn resolved_bound(bounds: &[f64], x: f64) -> f64 {
    bounds
        .iter()
        .copied()
        .filter(|&b| b <= x * (1.0 + 1e-12))
        .fold(0.0, f64::max)
}

/// A Beta prior for the confidence sequences with its mean at `1 - q` (the share above the
/// quantile) and the weight of at least ten observations: for p99 it is close to the error
/// rate's Beta(0.5, 50).
fn prior(q: f64) -> (f64, f64) {
    let mean = 1.0 - q;
    let weight = (0.5 / mean).max(10.0);
    (mean * weight, (1.0 - mean) * weight)
}

fn add(to: &mut [f64], more: &[f64]) {
    for (a, b) in to.iter_mut().zip(more) {
        *a += b;
    }
}

/// `1.52% (46/3021)`.
fn share(c: Counts) -> String {
    if c.requests > 0.0 {
        format!(
            "{}% ({}/{})",
            number(100.0 * c.failures / c.requests),
            number(c.failures),
            number(c.requests)
        )
    } else {
        "no observations".to_string()
    }
}

fn quantile_name(q: f64) -> String {
    let percent = 100.0 * q;
    if percent == percent.round() {
        format!("{percent:.0}")
    } else {
        format!("{percent}")
    }
}

#[cfg(test)]
mod tests;
