//! Review r19g: findings on issue 19's latest fixes (the first look's forecast, its status).
#![cfg(feature = "cluster")]

mod support;

use fledge_controller::analysis::{Counts, MetricReading};
use fledge_controller::rollout::{ForecastStatus, wants};
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
