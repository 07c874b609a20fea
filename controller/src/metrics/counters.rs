//! Counts over a range from raw counter samples, exactly: the statistical judge's numbers on a
//! cluster.
//!
//! `increase(x[d])` is not used: Prometheus extrapolates it to the ends of the range (fractional
//! counts that can shrink between looks) and it cannot count a series' first sample (Prometheus
//! 2.42 has no created timestamps), which for Istio's lazily created 5xx series loses exactly the
//! failures that matter. Instead each series' own samples are diffed here:
//!
//! - a series that has a sample before the range began (within [`super::SERIES_LOOKBACK`]) counts
//!   from its first sample at or after the start: traffic from before the range, such as the
//!   previous step's, never leaks in;
//! - a series with no sample before the range is new: it counts from zero, so its first sample
//!   counts in full;
//! - a value lower than the one before is a counter reset (a restarted proxy): the count goes on
//!   from zero, as Prometheus' own functions take it;
//! - a series whose pod has gone keeps the samples it had: its requests stay counted.
//!
//! Known error against the exact counters at the range's ends: the requests between the range's
//! start and the series' first scrape after it are not counted (at most one scrape interval of
//! traffic, on both sides alike), and those after the last scrape before the range's end are
//! counted by the next look instead (the counts stay cumulative). A series created within the
//! scrape interval before the range began counts the requests it saw before the range.

use std::collections::BTreeMap;

use crate::analysis::{Counts, Covered, Histogram, MetricReading};
use crate::observe::{Range, Side};
use crate::rollout::Millis;

/// One series of a matrix: its labels and its samples, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<(Millis, f64)>,
}

/// How much one counter series grew over the range that starts at `from` (see the module).
pub fn increase_since(samples: &[(Millis, f64)], from: Millis) -> f64 {
    let existed = samples.first().is_some_and(|(t, _)| *t < from);
    let mut inside = samples.iter().filter(|(t, _)| *t >= from).map(|(_, v)| *v);
    let mut previous = if existed {
        match inside.next() {
            Some(first) => first,
            None => return 0.0,
        }
    } else {
        0.0
    };
    let mut total = 0.0;
    for value in inside {
        // A NaN anywhere, the baseline included, makes the count NaN: the caller reports it as
        // no data (compared as numbers, a NaN baseline would make every later sample a reset).
        if value.is_nan() || previous.is_nan() {
            return f64::NAN;
        }
        total += if value >= previous {
            value - previous
        } else {
            value
        };
        previous = value;
    }
    if previous.is_nan() { f64::NAN } else { total }
}

/// How often one counter series went down within the range that starts at `from`: each is a
/// reset (a restarted proxy), which [`increase_since`] counts on from zero.
fn resets_since(samples: &[(Millis, f64)], from: Millis) -> usize {
    let inside: Vec<f64> = samples
        .iter()
        .filter(|(t, _)| *t >= from)
        .map(|(_, v)| *v)
        .collect();
    inside.windows(2).filter(|w| w[1] < w[0]).count()
}

/// The seconds over which a series' counted increase (see [`increase_since`]) accumulated: from
/// the sample it counts from (its first in the range if it existed before, else the range's
/// start, a new series counting from zero) to its last. `None` when that is no time at all: one
/// sample of an existing series shows no rate.
fn covered_since(samples: &[(Millis, f64)], from: Millis) -> Option<f64> {
    let existed = samples.first().is_some_and(|(t, _)| *t < from);
    let mut inside = samples.iter().filter(|(t, _)| *t >= from).map(|(t, _)| *t);
    let first = inside.next()?;
    let last = inside.next_back().unwrap_or(first);
    let start = if existed { first } else { from };
    (last > start).then(|| (last - start) as f64 / 1000.0)
}

/// The seconds a side's count covers: the span over which its series, each at the rate its own
/// samples show, would serve the side's count (pods are scraped at different moments, so their
/// series cover different spans); the longest span when they counted nothing. `None` when no
/// series has covered any time yet.
fn side_covered<'a>(series: impl IntoIterator<Item = &'a Series>, from: Millis) -> Option<f64> {
    let spans: Vec<(f64, f64)> = series
        .into_iter()
        .filter_map(|s| {
            let span = covered_since(&s.samples, from)?;
            Some((increase_since(&s.samples, from), span))
        })
        .collect();
    let counted: f64 = spans.iter().map(|(n, _)| n).sum();
    let rate: f64 = spans.iter().map(|(n, span)| n / span).sum();
    if counted > 0.0 && rate > 0.0 {
        Some(counted / rate)
    } else {
        spans.iter().map(|(_, span)| *span).reduce(f64::max)
    }
}

/// Reports the resets of `series` in the range, as what they are.
fn log_resets(series: &Series, from: Millis) {
    let resets = resets_since(&series.samples, from);
    if resets > 0 {
        tracing::info!(
            labels = ?series.labels,
            resets,
            "a counter went down: a reset (a restarted proxy); counted on from zero"
        );
    }
}

/// The summed increase of every series over the range from `from`; `None` when there is no
/// series at all.
pub fn total_since(series: &[Series], from: Millis) -> Option<f64> {
    (!series.is_empty()).then(|| {
        series
            .iter()
            .map(|s| {
                log_resets(s, from);
                increase_since(&s.samples, from)
            })
            .sum()
    })
}

/// The summed increase per value of `label` (e.g. a histogram's `le`); series without the
/// label are listed apart, by their labels, as an error a person can read.
pub fn totals_by(
    series: &[Series],
    label: &str,
    from: Millis,
) -> Result<BTreeMap<String, f64>, String> {
    let mut out = BTreeMap::new();
    for s in series {
        let Some(value) = s.labels.get(label) else {
            return Err(format!(
                "a series without an `{label}` label: {:?}",
                s.labels
            ));
        };
        log_resets(s, from);
        *out.entry(value.clone()).or_insert(0.0) += increase_since(&s.samples, from);
    }
    Ok(out)
}

/// The statistical success rate's reading over `range` from the raw samples of the counter
/// series (the matrices of [`super::side_queries`], or why one could not be had): canary's
/// requests and failures, then the primary's. Both executors, the cluster's Prometheus client
/// and the simulator's PromQL evaluator, end here.
pub fn counts_reading(
    [
        canary_requests,
        canary_failures,
        primary_requests,
        primary_failures,
    ]: [Result<Vec<Series>, MetricReading>; 4],
    range: Range,
) -> MetricReading {
    let (canary, canary_covered) =
        match side_counts(Side::Canary, canary_requests, canary_failures, range) {
            Ok(counts) => counts,
            Err(reading) => return reading,
        };
    match side_counts(Side::Primary, primary_requests, primary_failures, range) {
        Ok((primary, primary_covered)) => MetricReading::Counts {
            canary,
            primary,
            covered: Some(Box::new(Covered {
                canary: canary_covered,
                primary: primary_covered,
            })),
        },
        Err(reading) => reading,
    }
}

/// The statistical request duration's reading over `range` from the bucket series of the
/// canary and the primary (see [`counts_reading`]).
pub fn histograms_reading(
    canary: Result<Vec<Series>, MetricReading>,
    primary: Result<Vec<Series>, MetricReading>,
    range: Range,
) -> MetricReading {
    let (canary, canary_covered) = match canary.and_then(|s| histogram(Side::Canary, &s, range)) {
        Ok(h) => h,
        Err(reading) => return reading,
    };
    match primary.and_then(|s| histogram(Side::Primary, &s, range)) {
        Ok((primary, primary_covered)) => MetricReading::Histograms {
            canary,
            primary,
            covered: Some(Box::new(Covered {
                canary: canary_covered,
                primary: primary_covered,
            })),
        },
        Err(reading) => reading,
    }
}

/// One side's requests and failures over the range, and the seconds they cover. No request
/// series (or NaN) is no data; no failure series while requests exist is no failure; more
/// failures than requests is an error, since the two cannot both be right.
fn side_counts(
    side: Side,
    requests: Result<Vec<Series>, MetricReading>,
    failures: Result<Vec<Series>, MetricReading>,
    range: Range,
) -> Result<(Counts, Option<f64>), MetricReading> {
    let name = side.as_str();
    let series = requests?;
    let covered = side_covered(&series, range.from);
    let requests = match total_since(&series, range.from) {
        Some(r) if r.is_nan() => {
            return Err(MetricReading::NoData {
                reason: format!("the {name} request count is NaN"),
            });
        }
        Some(r) => r,
        None => {
            return Err(MetricReading::NoData {
                reason: format!("no values found for the {name}: no request series in {range}"),
            });
        }
    };
    // No failure series is no failure (the 5xx series appear at the first one); a NaN count is
    // no data, never 0 failures.
    let failures = match total_since(&failures?, range.from) {
        Some(f) if f.is_nan() => {
            return Err(MetricReading::NoData {
                reason: format!("the {name} failure count is NaN"),
            });
        }
        f => f.unwrap_or(0.0),
    };
    if failures > requests {
        return Err(MetricReading::Error {
            reason: format!(
                "the {name} has {failures} 5xx answers but {requests} requests in {range}: its failure and request series disagree"
            ),
        });
    }
    Ok((Counts { requests, failures }, covered))
}

/// One side's latency histogram over the range, cumulative per bucket, from its bucket series,
/// and the seconds its `+Inf` bucket (every observation) covers.
fn histogram(
    side: Side,
    series: &[Series],
    range: Range,
) -> Result<(Histogram, Option<f64>), MetricReading> {
    let wrong = |what: String| MetricReading::Error {
        reason: format!(
            "wrong result type for the {} histogram: {what}",
            side.as_str()
        ),
    };
    if series.is_empty() {
        return Err(MetricReading::NoData {
            reason: format!(
                "no values found for the {} latency histogram: no bucket series in {range}",
                side.as_str()
            ),
        });
    }
    let mut buckets = Vec::new();
    for (le, count) in totals_by(series, "le", range.from).map_err(wrong)? {
        let bound = le
            .parse::<f64>()
            .ok()
            .filter(|b| !b.is_nan())
            .ok_or_else(|| wrong(format!("bucket bound `{le}` is not a number")))?;
        if count.is_nan() {
            return Err(MetricReading::NoData {
                reason: format!("the {} histogram has NaN counts", side.as_str()),
            });
        }
        buckets.push((bound, count));
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|(b, _)| *b != f64::INFINITY) {
        return Err(wrong("no `+Inf` bucket".into()));
    }
    let (bounds, cumulative) = buckets.into_iter().unzip();
    let every = series.iter().filter(|s| {
        s.labels
            .get("le")
            .is_some_and(|le| le.parse().is_ok_and(f64::is_infinite))
    });
    Ok((
        Histogram { bounds, cumulative },
        side_covered(every, range.from),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: Millis = 60_000;

    #[test]
    fn a_series_that_existed_counts_from_its_first_sample_in_the_range() {
        // Scrapes every 15 s; 100 requests before the step, 10 per scrape after it.
        let samples = [
            (45_000, 100.0),
            (60_000, 100.0),
            (75_000, 110.0),
            (90_000, 120.0),
        ];
        assert_eq!(increase_since(&samples, STEP), 20.0);
        // The step began between scrapes: the traffic before it does not leak in.
        let late = [(50_000, 100.0), (65_000, 105.0), (80_000, 115.0)];
        assert_eq!(increase_since(&late, STEP), 10.0);
    }

    #[test]
    fn a_series_created_in_the_range_counts_its_first_sample_in_full() {
        // Istio creates the 5xx series at the first failure.
        let samples = [(75_000, 3.0), (90_000, 4.0)];
        assert_eq!(increase_since(&samples, STEP), 4.0);
    }

    #[test]
    fn a_counter_reset_counts_on_from_zero() {
        let samples = [
            (45_000, 50.0),
            (60_000, 50.0),
            (75_000, 70.0),
            (90_000, 5.0),
            (105_000, 9.0),
        ];
        assert_eq!(increase_since(&samples, STEP), 20.0 + 5.0 + 4.0);
    }

    #[test]
    fn no_sample_in_the_range_is_nothing_counted_yet() {
        assert_eq!(increase_since(&[(45_000, 50.0)], STEP), 0.0);
        assert_eq!(total_since(&[], STEP), None);
        let old = Series {
            samples: vec![(45_000, 50.0)],
            ..Series::default()
        };
        assert_eq!(total_since(&[old], STEP), Some(0.0));
    }

    #[test]
    fn a_nan_sample_makes_the_count_nan() {
        assert!(increase_since(&[(75_000, 1.0), (90_000, f64::NAN)], STEP).is_nan());
    }

    #[test]
    fn a_nan_baseline_makes_the_count_nan_not_a_reset() {
        // Read as numbers, every sample after a NaN baseline would look like a reset and the
        // count would be the counter's whole value (100,000 requests).
        let samples = [(45_000, 99_000.0), (60_000, f64::NAN), (75_000, 100_000.0)];
        assert!(increase_since(&samples, STEP).is_nan());
        assert!(increase_since(&samples[..2], STEP).is_nan());
    }

    #[test]
    fn a_counter_going_down_is_counted_as_a_reset() {
        let samples = [
            (60_000, 50.0),
            (75_000, 70.0),
            (90_000, 5.0),
            (105_000, 3.0),
        ];
        assert_eq!(resets_since(&samples, STEP), 2);
        assert_eq!(resets_since(&samples, 80_000), 1);
    }

    #[test]
    fn histogram_buckets_are_summed_per_bound_across_series() {
        let bucket = |le: &str, pod: &str, values: [f64; 2]| Series {
            labels: BTreeMap::from([
                ("le".to_string(), le.to_string()),
                ("pod".to_string(), pod.to_string()),
            ]),
            samples: vec![(45_000, values[0]), (75_000, values[1])],
        };
        let series = [
            bucket("5", "a", [1.0, 4.0]),
            bucket("5", "b", [0.0, 2.0]),
            bucket("+Inf", "a", [2.0, 9.0]),
        ];
        // Both series existed before the range but have one sample in it: nothing counted yet.
        assert_eq!(
            totals_by(&series, "le", STEP),
            Ok(BTreeMap::from([
                ("+Inf".to_string(), 0.0),
                ("5".to_string(), 0.0)
            ]))
        );
        assert_eq!(
            totals_by(&series, "le", 40_000),
            Ok(BTreeMap::from([
                ("+Inf".to_string(), 9.0),
                ("5".to_string(), 6.0)
            ]))
        );
        assert!(totals_by(&series, "quantile", STEP).is_err());
    }

    #[test]
    fn a_sides_count_covers_the_time_between_the_samples_it_counts_from_and_to() {
        let series = |samples: Vec<(Millis, f64)>| Series {
            samples,
            ..Series::default()
        };
        // Existed before the step at 60s: counts from its first scrape in it (61s) to its last.
        let old = series(vec![(46_000, 100.0), (61_000, 100.0), (76_000, 130.0)]);
        assert_eq!(side_covered([&old], STEP), Some(15.0));
        // One scrape in the step shows no rate yet, however long the step has lasted.
        assert_eq!(
            side_covered([&series(vec![(46_000, 1.0), (61_000, 2.0)])], STEP),
            None
        );
        // New in the step: counts from zero, so from the step's start.
        let new = series(vec![(61_000, 1.0), (76_000, 4.0)]);
        assert_eq!(side_covered([&new], STEP), Some(16.0));
        // Two pods scraped at different moments, each at 2 requests/s: 28 requests over 14s
        // and 12 over 6s, the side's 40 at 4 requests/s.
        let a = series(vec![(50_000, 0.0), (62_000, 0.0), (76_000, 28.0)]);
        let b = series(vec![(58_000, 0.0), (70_000, 0.0), (76_000, 12.0)]);
        let covered = side_covered([&a, &b], STEP).unwrap();
        assert_eq!(
            total_since(&[a, b], STEP).unwrap() / covered,
            4.0,
            "{covered}"
        );
    }

    #[test]
    fn a_counts_reading_says_what_each_side_covers() {
        let series = |samples: Vec<(Millis, f64)>| {
            Ok(vec![Series {
                samples,
                ..Series::default()
            }])
        };
        let range = Range {
            from: STEP,
            to: 75_000,
        };
        let reading = counts_reading(
            [
                series(vec![(61_000, 2.0)]),
                Ok(Vec::new()),
                series(vec![(46_000, 100.0), (61_000, 140.0)]),
                Ok(Vec::new()),
            ],
            range,
        );
        let MetricReading::Counts { covered, .. } = reading else {
            panic!("{reading:?}")
        };
        assert_eq!(
            covered,
            Some(Box::new(Covered {
                canary: Some(1.0),
                primary: None
            }))
        );
    }
}
