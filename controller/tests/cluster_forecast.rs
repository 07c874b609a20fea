//! On a cluster, a rollout under the statistical judge forecasts itself at the traffic rate its
//! first look sees: the Canary's status gets a `Forecast` condition (`Unknown` until then), and
//! a deadline too short for that rate a Warning Event naming the setting to change.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use fledge_controller::analysis::{Counts, MetricReading};
use serde_json::{Value, json};

fn forecast_condition(c: &FakeCluster) -> Value {
    let canary = c.get(CANARY).unwrap();
    canary["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Forecast").cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_deadline_too_short_for_the_rate_seen_gets_a_false_condition_and_a_warning_event() {
    let c = cluster_with(
        canary(json!({"analysis": {"judge": "statistical"}})),
        Some(deployment("podinfo:1")),
    );
    // 15 seconds of traffic at 2 requests/s with the canary at 10%: too little for the judge
    // to decide within the default deadline (10m).
    c.set_metric(
        "request-success-rate",
        MetricReading::Counts {
            canary: Counts {
                requests: 3.0,
                failures: 0.0,
            },
            primary: Counts {
                requests: 27.0,
                failures: 0.0,
            },
            covered: None,
        },
    );
    progressing_at(&c, 10).await;
    let unknown = forecast_condition(&c);
    assert_eq!(unknown["status"], "Unknown", "{unknown}");
    assert_eq!(unknown["reason"], "RateUnknown", "{unknown}");
    // The first look, a quarter of the interval into the step.
    c.advance_clock(Duration::from_secs(15));
    c.reconcile(&c.context()).await.expect("reconcile");
    let condition = forecast_condition(&c);
    assert_eq!(condition["status"], "False", "{condition}");
    assert_eq!(
        condition["reason"], "ProgressDeadlineTooShort",
        "{condition}"
    );
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.contains("at 2 requests/s")
            && message.contains("judged by the metrics' thresholds over each interval's traffic")
            && message.contains("spec.progressDeadlineSeconds"),
        "{message}"
    );
    let warnings: Vec<String> = events(&c)
        .into_iter()
        .filter(|e| e.contains("Warning") && e.contains("Forecast for podinfo"))
        .collect();
    assert_eq!(warnings.len(), 1, "{:?}", events(&c));
    // Under the reason of the False condition: it says what is wrong, not that a step halted.
    assert!(
        warnings[0].starts_with("EVENT Warning ProgressDeadlineTooShort: Forecast for podinfo"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[0].contains("spec.progressDeadlineSeconds"),
        "{}",
        warnings[0]
    );
    // Once: the next look raises no second Event.
    c.clear_calls();
    c.advance_clock(Duration::from_secs(15));
    c.reconcile(&c.context()).await.expect("reconcile");
    assert!(
        events(&c).iter().all(|e| !e.contains("Forecast for")),
        "{:?}",
        events(&c)
    );
}
