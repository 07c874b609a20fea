//! The simulator's PromQL beside Prometheus 2.42's own answers: the cases and the answers
//! promtool recorded are in `simulator/tests/fixtures/promql/prometheus-2.42.yaml`, one test group each.

use std::collections::BTreeMap;

use fledge_simulator::promql::{Labels, Ms, Series, Storage, Value, evaluate};
use serde_json::Value as Json;

const CASES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/promql/prometheus-2.42.yaml"
);

struct Memory(Vec<Series>);

impl Storage for Memory {
    fn select(&self, wanted: &dyn Fn(&Labels) -> bool, from: Ms, to: Ms) -> Vec<Series> {
        self.0
            .iter()
            .filter(|(l, _)| wanted(l))
            .map(|(l, s)| {
                let inside = s.iter().copied().filter(|(t, _)| (from..=to).contains(t));
                (l.clone(), inside.collect())
            })
            .collect()
    }
}

/// promtool's durations in these cases: `90s`, `1m`.
fn millis(text: &str) -> Ms {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: Ms = n.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
    n * match unit {
        "s" => 1000,
        "m" => 60_000,
        other => panic!("unit {other} in {text}"),
    }
}

/// `name{k="v",...}` or `{k="v"}` as labels (the name under `__name__`).
fn labels(text: &str) -> Labels {
    let (name, rest) = text.split_once('{').unwrap_or((text, "}"));
    let mut out = Labels::new();
    if !name.is_empty() {
        out.insert("__name__".into(), name.into());
    }
    for pair in rest
        .trim_end_matches('}')
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{text}"));
        out.insert(k.into(), v.trim_matches('"').into());
    }
    out
}

/// The expressions of one test group of the promtool file whose answer from the simulator's
/// evaluator differs from Prometheus' (described, one per line).
fn disagreements(group: usize) -> Vec<String> {
    let text = std::fs::read_to_string(CASES).unwrap_or_else(|e| panic!("{CASES}: {e}"));
    let doc: Json = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{CASES}: {e}"));
    let test = &doc["tests"][group];
    let step = millis(test["interval"].as_str().unwrap_or("15s"));
    let mut all = Vec::new();
    for s in test["input_series"].as_array().into_iter().flatten() {
        let samples = s["values"]
            .as_str()
            .unwrap_or_default()
            .split_whitespace()
            .enumerate()
            .filter(|(_, v)| *v != "_")
            .map(|(i, v)| (i as Ms * step, v.parse::<f64>().unwrap_or(f64::NAN)))
            .collect();
        all.push((labels(s["series"].as_str().unwrap_or_default()), samples));
    }
    let storage = Memory(all);
    let mut wrong = Vec::new();
    for case in test["promql_expr_test"].as_array().into_iter().flatten() {
        let expr = case["expr"].as_str().unwrap_or_default();
        let at = millis(case["eval_time"].as_str().unwrap_or_default());
        let expected: BTreeMap<Labels, f64> = case["exp_samples"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let value = s["value"].as_f64().unwrap_or(f64::NAN);
                (labels(s["labels"].as_str().unwrap_or_default()), value)
            })
            .collect();
        let got: Result<BTreeMap<Labels, f64>, String> = match evaluate(expr, &storage, at) {
            Ok(Value::Scalar(v)) => Ok(BTreeMap::from([(Labels::new(), v)])),
            Ok(Value::Vector(v)) => Ok(v.into_iter().collect()),
            Ok(Value::Matrix(_)) => Err("a matrix".into()),
            Err(e) => Err(e.to_string()),
        };
        let same = got.as_ref().is_ok_and(|got| {
            got.len() == expected.len()
                && got.iter().all(|(l, v)| {
                    expected
                        .get(l)
                        .is_some_and(|e| (v - e).abs() <= 1e-12 * e.abs().max(1.0))
                })
        });
        if !same {
            wrong.push(format!(
                "{expr} at {at} ms: Prometheus {expected:?}, simulator {got:?}"
            ));
        }
    }
    wrong
}

#[test]
fn the_simulators_promql_gives_prometheus_2_42s_answers() {
    let wrong = disagreements(0);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A range longer than the run so far keeps its true start (before t = 0): extrapolated and
/// divided by the whole range, not cut at t = 0.
#[test]
fn a_range_reaching_back_before_the_first_sample_is_extrapolated_and_divided_as_prometheus_does() {
    let wrong = disagreements(1);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
