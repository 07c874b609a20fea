//! The rate the statistical judge's forecast runs on, as a rollout measures it at its first
//! looks: each side's count over the span its counter samples cover (not the whole time since
//! the step began: counters scraped every 15s count a step from its first scrape), read from
//! whichever compared metric has counts (a Canary comparing latency alone forecasts itself too).

mod first_look {
    use std::collections::BTreeMap;

    use fledge_controller::metrics::counters::{Series, counts_reading};
    use fledge_controller::observe::Range;
    use fledge_controller::rollout::{
        Action, ForecastStatus, Millis, Observation, Phase, Readiness, RolloutState, advance, wants,
    };
    use fledge_controller::spec::{RolloutSpec, load_manifests, validate};

    pub fn statistical_spec() -> RolloutSpec {
        let text = "apiVersion: fledge.dev/v1alpha1\nkind: Canary\nmetadata: {name: app}\nspec:\n  targetRef: {kind: Deployment, name: app}\n  service: {port: 80}\n  analysis:\n    judge: statistical\n    interval: 1m\n    threshold: 5\n    stepWeight: 10\n    maxWeight: 50\n    metrics:\n      - name: request-success-rate\n        thresholdRange: {min: 99}\n        interval: 1m\n";
        let loaded = load_manifests(text).expect("loads");
        validate(&loaded.canaries[0].spec).expect("valid")
    }

    /// A counter scraped every `scrape` ms (first scrape at `phase`): its samples up to `now`.
    #[derive(Default)]
    struct Counter {
        value: f64,
        samples: Vec<(Millis, f64)>,
        born: bool,
    }

    /// Drives the core from a new revision at `rps` requests/s (no failures), the counters
    /// scraped every `scrape` ms, until the rollout's forecast is known; returns the forecast's
    /// rate, whether the rollout fell back to thresholds and the forecast's warning.
    pub fn forecast_at_first_look(
        rps: f64,
        scrape: Millis,
        phase: Millis,
    ) -> (f64, bool, Option<String>) {
        let spec = statistical_spec();
        let mut state = RolloutState::default();
        let (mut primary, mut canary) = (
            Counter {
                born: true,
                ..Counter::default()
            },
            Counter::default(),
        );
        let mut canary_up = true;
        let mut revision = "v1";
        let start: Millis = 1_000_000;
        let mut now = start;
        let mut next_scrape = start + phase;
        let tick: Millis = 1_000;
        while now < start + 30 * 60_000 {
            if now == start + 120_000 {
                revision = "v2";
            }
            let w = wants(&state, &spec, now);
            let mut metrics = BTreeMap::new();
            if w.metrics {
                let since = w.since.expect("statistical ranges");
                let range = Range {
                    from: since,
                    to: now,
                };
                let lookback = since.saturating_sub(5 * 60_000);
                let series = |c: &Counter| -> Vec<Series> {
                    let samples: Vec<(Millis, f64)> = c
                        .samples
                        .iter()
                        .copied()
                        .filter(|(t, _)| *t >= lookback && *t <= now)
                        .collect();
                    if samples.is_empty() {
                        Vec::new()
                    } else {
                        vec![Series {
                            labels: BTreeMap::new(),
                            samples,
                        }]
                    }
                };
                let reading = counts_reading(
                    [
                        Ok(series(&canary)),
                        Ok(Vec::new()),
                        Ok(series(&primary)),
                        Ok(Vec::new()),
                    ],
                    range,
                );
                metrics.insert("request-success-rate".to_string(), reading);
            }
            let replicas = if canary_up { 2 } else { 0 };
            let obs = Observation {
                revision: revision.into(),
                canary: Readiness {
                    ready: replicas,
                    desired: replicas,
                },
                primary: Readiness::all(2),
                metrics,
                ..Observation::default()
            };
            let (next, actions) = advance(&state, &spec, &obs, now);
            for a in &actions {
                if let Action::ScaleCanary { up } = a {
                    canary_up = *up;
                }
            }
            state = next;
            if let Some(ForecastStatus::Known { forecast, warning }) = &state.forecast {
                return (forecast.rps, state.threshold_fallback, warning.clone());
            }
            assert!(state.phase != Phase::Failed, "{}", state.message);
            // Traffic over the next tick, at the weights now in force.
            let share = f64::from(state.canary_weight) / 100.0;
            let seconds = tick as f64 / 1000.0;
            primary.value += rps * (1.0 - share) * seconds;
            if share > 0.0 {
                canary.value += rps * share * seconds;
                canary.born = true;
            }
            now += tick;
            while next_scrape <= now {
                primary.samples.push((next_scrape, primary.value));
                if canary.born {
                    canary.samples.push((next_scrape, canary.value));
                }
                next_scrape += scrape;
            }
        }
        panic!("no forecast within 30 minutes: {}", state.message);
    }
}

mod latency_only {
    use std::collections::BTreeMap;

    use fledge_controller::analysis::{Histogram, MetricReading};
    use fledge_controller::rollout::{
        Action, EventReason, ForecastStatus, Millis, Observation, Readiness, RolloutState, advance,
        log_normal_latency, wants,
    };
    use fledge_controller::spec::{RolloutSpec, load_manifests, validate};

    pub fn spec(metrics: &str) -> RolloutSpec {
        let text = format!(
            "apiVersion: fledge.dev/v1alpha1\nkind: Canary\nmetadata: {{name: app}}\nspec:\n  targetRef: {{kind: Deployment, name: app}}\n  service: {{port: 80}}\n  analysis:\n    judge: statistical\n    interval: 1m\n    threshold: 5\n    stepWeight: 10\n    maxWeight: 50\n    metrics:\n{metrics}"
        );
        let loaded = load_manifests(&text).expect("loads");
        validate(&loaded.canaries[0].spec).expect("valid")
    }

    /// What a rollout at `rps` (latency p50 20 ms, p99 80 ms on both sides, no failures) has
    /// shown after `minutes` from the new revision: its forecast status, every Event reason
    /// recorded, and its phase.
    pub fn run(
        spec: &RolloutSpec,
        rps: f64,
        minutes: u64,
    ) -> (
        Option<ForecastStatus>,
        Vec<Option<EventReason>>,
        RolloutState,
    ) {
        let shape = log_normal_latency(20.0, 80.0).expect("a shape");
        let mut state = RolloutState::default();
        let mut canary_up = true;
        let mut events = Vec::new();
        let start: Millis = 1_000_000;
        let deploy = start + 60_000;
        let mut now = start;
        while now < deploy + minutes * 60_000 {
            let w = wants(&state, spec, now);
            let mut metrics = BTreeMap::new();
            if w.metrics {
                let since = w.since.unwrap_or(now.saturating_sub(60_000));
                let seconds = now.saturating_sub(since) as f64 / 1000.0;
                let share = f64::from(state.canary_weight) / 100.0;
                let h = |n: f64| Histogram {
                    bounds: shape.bounds.clone(),
                    cumulative: shape.cumulative.iter().map(|f| f * n).collect(),
                };
                for m in &spec.metrics {
                    let reading = if m.name == "request-duration" {
                        MetricReading::Histograms {
                            canary: h(rps * share * seconds),
                            primary: h(rps * (1.0 - share) * seconds),
                            covered: None,
                        }
                    } else {
                        MetricReading::Counts {
                            canary: fledge_controller::analysis::Counts {
                                requests: rps * share * seconds,
                                failures: 0.0,
                            },
                            primary: fledge_controller::analysis::Counts {
                                requests: rps * (1.0 - share) * seconds,
                                failures: 0.0,
                            },
                            covered: None,
                        }
                    };
                    metrics.insert(m.name.clone(), reading);
                }
            }
            let replicas = if canary_up { 2 } else { 0 };
            let obs = Observation {
                revision: if now >= deploy { "v2" } else { "v1" }.into(),
                canary: Readiness {
                    ready: replicas,
                    desired: replicas,
                },
                primary: Readiness::all(2),
                metrics,
                ..Observation::default()
            };
            let (next, actions) = advance(&state, spec, &obs, now);
            for a in &actions {
                match a {
                    Action::ScaleCanary { up } => canary_up = *up,
                    Action::Event { reason, .. } => events.push(*reason),
                    _ => {}
                }
            }
            state = next;
            now += 5_000;
        }
        (state.forecast.clone(), events, state)
    }
}

const LATENCY_ONLY: &str =
    "      - name: request-duration\n        thresholdRange: {max: 500}\n        interval: 1m\n";

#[test]
fn the_first_looks_rate_is_not_biased_by_the_scrape_interval() {
    // Counters scraped every 15s (a common Prometheus setting), diffed by the controller's own
    // `counts_reading` as on a cluster; the first look comes 15s into the first step.
    for phase in [1_000, 7_000, 13_000] {
        let (rps, fell_back, warning) = first_look::forecast_at_first_look(100.0, 15_000, phase);
        assert!(
            (75.0..=125.0).contains(&rps) && !fell_back,
            "scrape phase {phase}ms: forecast at {rps:.2} requests/s for 100, fell back to thresholds: {fell_back}, warning: {warning:?}"
        );
    }
}

#[test]
fn a_latency_only_canary_forecasts_itself_at_its_first_look() {
    use fledge_controller::rollout::{EventReason, ForecastStatus};
    let spec = latency_only::spec(LATENCY_ONLY);
    let (forecast, events, state) = latency_only::run(&spec, 1.0, 5);
    assert!(
        matches!(
            forecast,
            Some(ForecastStatus::Known {
                warning: Some(_),
                ..
            })
        ),
        "5 minutes into a rollout at 1 request/s: forecast {forecast:?}; {}",
        state.message
    );
    assert!(
        events.contains(&Some(EventReason::ProgressDeadlineTooShort)),
        "{events:?}"
    );
}
