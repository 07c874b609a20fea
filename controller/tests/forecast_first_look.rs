//! The forecast a rollout makes of itself at its first look: the rate it records is the one
//! seen (the favourable end of the look only decides whether to hand over), and a look some
//! compared metric could not read makes no forecast (review r19g).
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
