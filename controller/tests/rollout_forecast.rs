//! The statistical judge's forecast as a rollout reports it: unknown until the first look has
//! seen the traffic rate, then a status condition, and a Warning Event naming the setting to
//! change when the judge is not expected to decide within the progress deadline (the rollout
//! is then judged by thresholds). The forecast records the rate seen (the favourable end of
//! a look only decides whether to hand over), and a look some compared metric could not read
//! makes no forecast.
// The condition is read back through the cluster shell's status.
#![cfg(feature = "cluster")]

mod support;

use fledge_controller::analysis::{Counts, Histogram, MetricReading};
use fledge_controller::cluster::status::{FORECAST, status_of};
use fledge_controller::rollout::{
    Action, EventReason, ForecastStatus, Phase, Severity, advance, wants,
};
use support::{Driver, canary_spec};

fn reading(d: &Driver, rps: f64) -> MetricReading {
    let since = wants(&d.state, &d.spec, d.now)
        .since
        .unwrap_or(d.state.step_since);
    let seconds = d.now.saturating_sub(since) as f64 / 1000.0;
    let share = f64::from(d.state.canary_weight) / 100.0;
    let side = |n: f64| Counts {
        requests: n.floor(),
        failures: (n * 0.005).floor(),
    };
    MetricReading::Counts {
        canary: side(rps * share * seconds),
        primary: side(rps * (1.0 - share) * seconds),
        covered: None,
    }
}

/// A rollout at `rps` ticked every 15s until its first look has been made; the warnings
/// raised on the way, each with the reason it is recorded under.
fn first_look(rps: f64) -> (Driver, Vec<(String, Option<EventReason>)>) {
    let spec = canary_spec("stepWeight: 10\n    maxWeight: 50\n    judge: statistical");
    let mut d = Driver::new(spec);
    d.tick_ms = 15_000;
    d.deploy("v2");
    let condition = status_of(&d.state, "Deployment", None, None)
        .conditions
        .into_iter()
        .find(|c| c.type_ == FORECAST)
        .expect("a Forecast condition from the rollout's start");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_deref()),
        ("Unknown", Some("RateUnknown"))
    );
    let mut warnings = Vec::new();
    for _ in 0..8 {
        d.reading = Some(reading(&d, rps));
        for a in d.tick() {
            if let Action::Event {
                severity: Severity::Warning,
                message,
                reason,
            } = a
            {
                warnings.push((message, reason));
            }
        }
    }
    assert_eq!(d.state.phase, Phase::Progressing, "{}", d.state.message);
    (d, warnings)
}

#[test]
fn a_deadline_too_short_for_the_rate_seen_gets_a_false_condition_and_one_warning_event() {
    let (d, warnings) = first_look(2.0);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let (warning, reason) = &warnings[0];
    // Recorded under the reason of the False condition, not as a halted step.
    assert_eq!(*reason, Some(EventReason::ProgressDeadlineTooShort));
    assert!(
        warning.starts_with("Forecast for app: at ")
            && warning.contains(
                "requests/s the statistical judge is not expected to decide at canary weight"
            )
            && warning.contains("judged by the metrics' thresholds over each interval's traffic")
            && warning.contains("raise spec.progressDeadlineSeconds to at least"),
        "{}",
        warning
    );
    let condition = status_of(&d.state, "Deployment", None, None)
        .conditions
        .into_iter()
        .find(|c| c.type_ == FORECAST)
        .unwrap();
    assert_eq!(condition.status, "False");
    assert_eq!(
        condition.reason.as_deref(),
        Some("ProgressDeadlineTooShort")
    );
    assert!(
        condition
            .message
            .unwrap()
            .contains("spec.progressDeadlineSeconds"),
        "the condition names the setting"
    );
}

#[test]
fn enough_traffic_gets_a_true_condition_with_each_steps_requests_and_no_warning() {
    let (d, warnings) = first_look(1000.0);
    assert!(warnings.is_empty(), "{warnings:?}");
    let Some(ForecastStatus::Known { forecast, warning }) = &d.state.forecast else {
        panic!("{:?}", d.state.forecast)
    };
    assert_eq!(warning, &None);
    assert_eq!(forecast.steps.len(), 5);
    let condition = status_of(&d.state, "Deployment", None, None)
        .conditions
        .into_iter()
        .find(|c| c.type_ == FORECAST)
        .unwrap();
    assert_eq!(condition.status, "True", "{condition:?}");
    let message = condition.message.unwrap();
    assert!(
        message.contains("promotion expected after")
            && message.contains("canary requests per step 10%:"),
        "{message}"
    );
}

#[test]
fn a_statistical_canary_comparing_no_metric_has_no_forecast_to_wait_for() {
    // Its steps last the interval whatever the traffic, and no look shows it a rate: a
    // Forecast condition "Unknown until the first look" would never be resolved.
    let text = "apiVersion: fledge.dev/v1alpha1\nkind: Canary\nmetadata: {name: app}\nspec:\n  targetRef: {kind: Deployment, name: app}\n  service: {port: 80}\n  analysis:\n    interval: 1m\n    stepWeight: 10\n    maxWeight: 50\n    judge: statistical\n";
    let loaded = fledge_controller::spec::load_manifests(text).expect("loads");
    let spec = fledge_controller::spec::validate(&loaded.canaries[0].spec).expect("valid");
    let mut d = Driver::new(spec);
    d.tick_ms = 15_000;
    d.deploy("v2");
    for _ in 0..8 {
        d.tick();
        assert_eq!(d.state.forecast, None, "{}", d.state.message);
        let conditions = status_of(&d.state, "Deployment", None, None).conditions;
        assert!(
            !conditions.iter().any(|c| c.type_ == FORECAST),
            "{conditions:?}"
        );
    }
    assert_eq!(d.state.phase, Phase::Progressing, "{}", d.state.message);
}

fn forecast_at(rps: f64) -> Option<ForecastStatus> {
    let spec = canary_spec("stepWeight: 10\n    maxWeight: 50\n    judge: statistical");
    let mut d = Driver::new(spec);
    d.tick_ms = 15_000;
    d.deploy("v2");
    for _ in 0..8 {
        d.reading = Some(reading(&d, rps));
        d.tick();
    }
    d.state.forecast.clone()
}

/// Finding 1: the forecast recorded at the first look (status.state and the `Forecast`
/// condition: "at X requests/s (primary errors Y%): promotion expected after T") is, when the
/// central forecast says the judge cannot decide but the favourable end of the look does
/// (`deadline.rs` `forecast_once`, the handover rule), the *favourable-end* forecast: its `rps`
/// is the inflated `rps * (1 + 1.645/sqrt(n))`, not the rate seen, and its promotion time is
/// that hopeful run's. Evidence: 5 requests/s seen on `canary_spec` (stepWeight 10, maxWeight
/// 50, 0.5% errors) records `rps` 5.88 and "promotion expected after 17m45s"; 4 and 6
/// requests/s record 4 and 6. The handover rule may use the favourable end to decide *not* to
/// hand over, but the status should state the rate seen (and the central forecast's time,
/// or say that it is the favourable end), as the condition's text claims.
#[test]
fn the_recorded_forecast_states_the_rate_seen_not_the_favourable_end() {
    let Some(ForecastStatus::Known { forecast, .. }) = forecast_at(5.0) else {
        panic!("no Known forecast at 5 requests/s")
    };
    assert!(
        (forecast.rps - 5.0).abs() / 5.0 < 0.05,
        "5 requests/s seen, the status says {} requests/s (promotion expected after {:?})",
        forecast.rps,
        forecast.unbounded
    );
}

/// One tick of `d` whose latency reading is `latency` (the success rate's from `reading`).
fn tick_with_latency(d: &mut Driver, rps: f64, latency: Option<MetricReading>) {
    let mut obs = d.observe();
    if obs.metrics.contains_key("request-success-rate") {
        obs.metrics
            .insert("request-success-rate".into(), reading(d, rps));
        match latency {
            Some(r) => obs.metrics.insert("request-duration".into(), r),
            None => obs.metrics.remove("request-duration"),
        };
    }
    let (state, actions) = advance(&d.state, &d.spec, &obs, d.now);
    for a in &actions {
        if let Action::ScaleCanary { up } = a {
            d.canary_replicas = if *up { 2 } else { 0 };
        }
    }
    d.state = state;
    d.now += d.tick_ms;
}

/// A look whose latency query failed makes no forecast (it would warn of a handover the
/// failed read forbids, and never look again): the forecast waits for a look whose metrics all
/// read, and a handover it then warns of is made. (Review r19g finding 3: the warning said
/// "judged by the metrics' thresholds" for ten minutes of a rollout held by the judge.)
#[test]
fn a_failed_read_at_the_first_look_defers_the_forecast_to_a_look_that_reads() {
    let spec = canary_spec(
        "  - name: request-duration\n        thresholdRange: {max: 500}\n    stepWeight: 10\n    maxWeight: 50\n    judge: statistical",
    );
    let mut d = Driver::new(spec);
    d.tick_ms = 15_000;
    d.deploy("v2");
    let failed = MetricReading::Error {
        reason: "prometheus: 503".into(),
    };
    for _ in 0..8 {
        tick_with_latency(&mut d, 1.0, Some(failed.clone()));
    }
    assert_eq!(
        d.state.forecast,
        Some(ForecastStatus::Unknown),
        "a forecast made at looks whose latency query failed"
    );
    assert!(!d.state.threshold_fallback, "handed over without data");
    // Readable metrics from now on (the latency's histograms now read).
    for _ in 0..4 {
        let MetricReading::Counts {
            canary, primary, ..
        } = reading(&d, 1.0)
        else {
            unreachable!()
        };
        let shape = |n: f64| Histogram {
            bounds: vec![25.0, 50.0, 100.0, f64::INFINITY],
            cumulative: vec![0.6 * n, 0.9 * n, 0.99 * n, n],
        };
        let ok = MetricReading::Histograms {
            canary: shape(canary.requests),
            primary: shape(primary.requests),
            covered: None,
        };
        tick_with_latency(&mut d, 1.0, Some(ok));
    }
    let Some(ForecastStatus::Known {
        warning: Some(w), ..
    }) = d.state.forecast.clone()
    else {
        panic!(
            "no Known forecast with a warning at 1 request/s: {:?}",
            d.state.forecast
        )
    };
    assert!(w.contains("judged by the metrics' thresholds"), "{w}");
    assert!(
        d.state.threshold_fallback,
        "the forecast's warning says \"{w}\", yet the rollout is not judged by thresholds (phase {:?}: {})",
        d.state.phase, d.state.message
    );
}

/// A rollout whose primary cannot serve the observations a latency slow bound is fixed from
/// (10,000 for p99.9) within the first step's interval and the progress deadline is handed to
/// the thresholds, even when the error rate alone would be decided in time; a first look
/// whose latency histogram read nothing forecasts nothing (review r19h: it was recorded as a
/// forecast the judge decides, never made again).
#[test]
fn a_slow_bound_out_of_reach_hands_over_once_a_latency_histogram_reads() {
    let spec = canary_spec(
        "    margin: \"5\"\n      - name: request-duration\n        thresholdRange: {max: 500}\n        quantile: 0.999\n    stepWeight: 10\n    maxWeight: 50\n    judge: statistical",
    );
    let mut d = Driver::new(spec);
    d.tick_ms = 15_000;
    d.deploy("v2");
    let nothing = MetricReading::NoData {
        reason: "no bucket series yet".into(),
    };
    for _ in 0..8 {
        if !matches!(d.state.forecast, Some(ForecastStatus::Unknown)) {
            break;
        }
        tick_with_latency(&mut d, 12.0, Some(nothing.clone()));
    }
    assert_eq!(
        d.state.forecast,
        Some(ForecastStatus::Unknown),
        "a forecast made from a look whose latency read nothing"
    );
    for _ in 0..4 {
        let MetricReading::Counts {
            canary, primary, ..
        } = reading(&d, 12.0)
        else {
            unreachable!()
        };
        let shape = |n: f64| Histogram {
            bounds: vec![25.0, 50.0, 100.0, f64::INFINITY],
            cumulative: vec![0.6 * n, 0.9 * n, 0.999 * n, n],
        };
        let ok = MetricReading::Histograms {
            canary: shape(canary.requests),
            primary: shape(primary.requests),
            covered: None,
        };
        tick_with_latency(&mut d, 12.0, Some(ok));
    }
    assert!(
        d.state.threshold_fallback,
        "not handed over: {:?}",
        d.state.forecast
    );
}
