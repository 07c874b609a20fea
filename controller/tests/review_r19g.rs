//! Review r19g: findings on issue 19's latest fixes (the first look's forecast, its status).
#![cfg(feature = "cluster")]

mod support;

use fledge_controller::analysis::{Counts, Histogram, MetricReading};
use fledge_controller::rollout::{Action, ForecastStatus, advance, wants};
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
#[ignore = "review r19g finding 1: the status' forecast states the favourable-end rate, not the rate seen"]
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

/// Finding 3: when a compared metric's query fails at the look the forecast is made,
/// `forecast_once` (controller/src/rollout/deadline.rs) still records a `Known` forecast with
/// its warning and emits the Warning Event "the rollout is judged by the metrics' thresholds
/// over each interval's traffic", but does not hand the rollout over
/// (`undecidable && self.metrics_unavailable().is_none()`), and, the forecast being `Known`,
/// never looks again once the metric reads: the status' `Forecast` condition and the Event say
/// the rollout is judged by thresholds while it is held by the judge until its deadline.
/// Evidence: 1 request/s, success rate and request-duration compared, request-duration's
/// query failing at the first look only: `threshold_fallback` stays false for the next ten
/// minutes of readable metrics while the forecast's warning says it is judged by thresholds.
/// Right: keep the forecast `Unknown` (make it at the next look whose metrics all read), or
/// say in the warning that it is not handed over because a metric could not be read.
#[test]
#[ignore = "review r19g finding 3: a failed read at the forecast's look: warning says handed over, never is"]
fn a_failed_read_at_the_forecasts_look_does_not_leave_a_false_handover_warning() {
    let spec = canary_spec(
        "  - name: request-duration\n        thresholdRange: {max: 500}\n    stepWeight: 10\n    maxWeight: 50\n    judge: statistical",
    );
    let mut d = Driver::new(spec);
    d.tick_ms = 15_000;
    d.deploy("v2");
    let failed = MetricReading::Error {
        reason: "prometheus: 503".into(),
    };
    // Until the forecast is made, the latency query fails.
    for _ in 0..8 {
        if !matches!(d.state.forecast, Some(ForecastStatus::Unknown)) {
            break;
        }
        tick_with_latency(&mut d, 1.0, Some(failed.clone()));
    }
    let Some(ForecastStatus::Known {
        warning: Some(w), ..
    }) = d.state.forecast.clone()
    else {
        panic!("no Known forecast with a warning: {:?}", d.state.forecast)
    };
    assert!(w.contains("judged by the metrics' thresholds"), "{w}");
    // Ten minutes of readable metrics (the latency's histograms now read).
    for _ in 0..40 {
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
    assert!(
        d.state.threshold_fallback,
        "the forecast's warning says \"{w}\", yet after ten minutes of readable metrics the rollout is not judged by thresholds (phase {:?}: {})",
        d.state.phase, d.state.message
    );
}
