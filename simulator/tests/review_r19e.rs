//! Review r19e (issue 19, the statistical judge): findings as failing tests, each ignored with
//! its label, so the suite stays green. Run with `-- --ignored`.

mod support;

use std::process::Command;

use fledge_controller::analysis::Histogram;
use fledge_controller::analysis::latency::{LatencyDecision, LatencyEvidence, LatencyTestConfig};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

/// Istio's duration buckets up to 10 s.
const ISTIO: [f64; 12] = [
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
    f64::INFINITY,
];

fn cumulative(counts: &[f64]) -> Histogram {
    let mut sum = 0.0;
    Histogram {
        bounds: ISTIO.to_vec(),
        cumulative: counts
            .iter()
            .map(|c| {
                sum += c;
                sum
            })
            .collect(),
    }
}

/// A log-normal observation's bucket.
fn bucket(rng: &mut Pcg64Mcg, median: f64, sigma: f64) -> usize {
    let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    let x = median * (sigma * z).exp();
    ISTIO
        .iter()
        .position(|&le| x <= le)
        .unwrap_or(ISTIO.len() - 1)
}

/// One A/A rollout of the latency test: `steps` canary weights, `looks` looks each with
/// `per_look` observations in all, readings cumulative since the step began. True if any look
/// said High.
fn aa_rollout(
    rng: &mut Pcg64Mcg,
    config: &LatencyTestConfig,
    (median, sigma): (f64, f64),
    weights: &[f64],
    looks: usize,
    per_look: usize,
) -> bool {
    let mut e = LatencyEvidence::default();
    for &w in weights {
        e.begin_step();
        let mut c = vec![0.0; ISTIO.len()];
        let mut p = vec![0.0; ISTIO.len()];
        for _ in 0..looks {
            for _ in 0..per_look {
                let b = bucket(rng, median, sigma);
                if rng.random::<f64>() < w {
                    c[b] += 1.0;
                } else {
                    p[b] += 1.0;
                }
            }
            if e.observe(config, &cumulative(&c), &cumulative(&p)).decision == LatencyDecision::High
            {
                return true;
            }
        }
    }
    false
}

/// An A/A case: the latency's shape (median, sigma), the canary's weights, looks a weight and
/// observations a look.
type Case<'a> = ((f64, f64), &'a [f64], usize, usize);

#[test]
#[ignore = "review r19e check, not a finding (the latency High side's A/A size with one dominant bucket, unbalanced sides, many looks)"]
fn review_r19e_probe_latency_false_high_rate() {
    // Measured (1,000 rollouts a case, alpha 1%): 0.1%, 0.3%, ... (see the review's report).
    let config = LatencyTestConfig {
        alpha: 0.01,
        beta: 0.01,
        quantile: 0.99,
        margin: 0.5,
        min_requests: 100,
    };
    let n = 1000;
    let allowed = 0.01 + 3.0 * (0.01 * 0.99 / n as f64).sqrt();
    // p99: nearly every observation in (10, 25] (median 15 ms, sigma 0.15 or 0.25), a canary at
    // 1% to 10% of the traffic over up to 240 looks; a canary swinging between 2% and 50%.
    let p99: [Case; 4] = [
        ((15.0, 0.15), &[0.02, 0.05, 0.1], 80, 40),
        ((15.0, 0.25), &[0.02, 0.05, 0.1, 0.2, 0.5], 60, 200),
        ((20.0, 0.6), &[0.01, 0.02], 150, 500),
        ((40.0, 0.05), &[0.02, 0.5, 0.02, 0.5], 60, 100),
    ];
    // The median: every observation in (10, 25] or spread over three buckets.
    let median: [Case; 2] = [
        ((20.0, 0.05), &[0.02, 0.1], 100, 40),
        ((24.0, 0.3), &[0.03, 0.5], 100, 60),
    ];
    for (q, cases) in [(0.99, &p99[..]), (0.5, &median[..])] {
        let config = LatencyTestConfig {
            quantile: q,
            ..config
        };
        for (i, &(shape, weights, looks, per_look)) in cases.iter().enumerate() {
            let mut rng = Pcg64Mcg::seed_from_u64(19 + i as u64);
            let highs = (0..n)
                .filter(|_| aa_rollout(&mut rng, &config, shape, weights, looks, per_look))
                .count();
            let rate = highs as f64 / n as f64;
            assert!(
                rate <= allowed,
                "q {q} case {i}: false High in {highs} of {n} rollouts, alpha 1%"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The forecast's rate at the first look, from counters scraped as Prometheus scrapes them.

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

// ---------------------------------------------------------------------------------------------
// Findings.

#[test]
#[ignore = "review r19e finding 1: the first look's rate divides counts that start at the first scrape after the step began by the whole time since it began: at 100 rps with a 15s scrape interval the forecast sees about a tenth of the traffic and hands a healthy rollout to the thresholds with a ProgressDeadlineTooShort warning"]
fn review_r19e_finding_1_the_first_looks_rate_is_not_biased_by_the_scrape_interval() {
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
#[ignore = "review r19e finding 2: a statistical Canary whose only compared metric is request-duration never forecasts itself (the rate is read from the success-rate counts alone): at 1 rps no Forecast condition, no ProgressDeadlineTooShort Event, held to the progress deadline"]
fn review_r19e_finding_2_a_latency_only_canary_forecasts_itself_at_its_first_look() {
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

#[test]
#[ignore = "review r19e finding 7: issue 19's target 'at 1 rps ... with the deadline plan recommends, which must be at most 30 minutes' is missed and not said: plan recommends progressDeadlineSeconds 7560 (2h6m) for the benchmark's Canary at 1 rps"]
fn review_r19e_finding_7_the_deadline_plan_recommends_at_1_rps_is_at_most_30_minutes() {
    let canary = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/benchmarks/aa-1rps.yaml"
    ))
    .unwrap();
    // The benchmark's own Canary, as a Canary file.
    let start = canary.find("canary:\n").expect("a canary") + "canary:\n".len();
    let body: String = canary[start..]
        .lines()
        .take_while(|l| l.starts_with("  ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    let path = std::env::temp_dir().join(format!("review-r19e-7-{}.yaml", std::process::id()));
    std::fs::write(&path, body).unwrap();
    let out = Command::new(support::sim_binary())
        .arg("plan")
        .arg(&path)
        .args(["--rps", "1", "--latency", "20,80"])
        .output()
        .expect("fledge-sim runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let recommended: u64 = text
        .split("raise spec.progressDeadlineSeconds to at least ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no recommended deadline: {text}"));
    assert!(
        recommended <= 1800,
        "plan recommends {recommended}s at 1 rps"
    );
}

#[test]
#[ignore = "review r19e finding 8: under the statistical judge a Canary with no built-in metric (only MetricTemplates or inline queries, or none) ends every step at minStepDuration (30s) on scalar checks of a 1m window that mostly holds the previous weight's traffic: no step has 'its own minRequests' as the README says; promotion in 3m15s where Flagger's pacing takes 5m"]
fn review_r19e_finding_8_without_a_compared_metric_a_step_lasts_its_interval() {
    use fledge_controller::rollout::plan;
    use fledge_controller::spec::{load_manifests, validate};
    let text = "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: app}\nspec:\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: app}\n  service: {port: 80}\n  analysis:\n    judge: statistical\n    interval: 1m\n    threshold: 5\n    stepWeight: 10\n    maxWeight: 50\n    metrics:\n      - name: error-rate\n        query: sum(rate(http_errors_total[1m]))\n        thresholdRange: {max: 1}\n        interval: 1m\n";
    let loaded = load_manifests(text).expect("loads");
    let spec = validate(&loaded.canaries[0].spec).expect("valid");
    let p = plan(&spec);
    // Five weights, each checked over its own interval's traffic as Flagger checks it.
    assert!(
        p.shortest_promotion >= 5 * 60_000,
        "promotion after {}ms with {} analyses",
        p.shortest_promotion,
        p.analyses
    );
}
