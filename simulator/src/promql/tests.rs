use super::*;

/// Series held in memory: labels (name under `__name__`) and samples.
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

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn series(name: &str, pairs: &[(&str, &str)], samples: &[(u64, f64)]) -> Series {
    let mut l = labels(pairs);
    l.insert(NAME.into(), name.into());
    // Sample times in seconds, for readability.
    (l, samples.iter().map(|(t, v)| (t * 1000, *v)).collect())
}

fn scalar_at(query: &str, storage: &Memory, at_s: u64) -> f64 {
    match evaluate(query, storage, at_s * 1000) {
        Ok(Value::Vector(v)) if v.len() == 1 => v[0].1,
        Ok(Value::Scalar(v)) => v,
        other => panic!("{query}: {other:?}"),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn increase_extrapolates_to_the_ranges_ends_as_prometheus_does() {
    let m = Memory(vec![series(
        "x_total",
        &[],
        &[(10, 10.0), (25, 20.0), (40, 30.0), (55, 40.0)],
    )]);
    // 30 counted over 45 s of samples; 10 s before and 5 s after are each within 1.1 sample
    // intervals, so the whole 60 s is covered: 30 * 60/45.
    assert!(close(scalar_at("increase(x_total[1m])", &m, 60), 40.0));
    assert!(close(scalar_at("rate(x_total[1m])", &m, 60), 40.0 / 60.0));
}

#[test]
fn a_series_born_in_the_range_is_extrapolated_at_most_to_where_it_was_zero() {
    let m = Memory(vec![series("x_total", &[], &[(40, 1.0), (55, 5.0)])]);
    // 4 counted over 15 s: towards the start only 3.75 s (where the counter would be zero),
    // 5 s to the end.
    let expected = 4.0 * (15.0 + 3.75 + 5.0) / 15.0;
    assert!(close(scalar_at("increase(x_total[1m])", &m, 60), expected));
    // Born long before the zero point: half a sample interval (7.5 s) towards the start.
    let m = Memory(vec![series("x_total", &[], &[(40, 3.0), (55, 5.0)])]);
    let expected = 2.0 * (15.0 + 7.5 + 5.0) / 15.0;
    assert!(close(scalar_at("increase(x_total[1m])", &m, 60), expected));
}

#[test]
fn a_counter_reset_is_counted_as_a_restart_from_zero() {
    let m = Memory(vec![series(
        "x_total",
        &[],
        &[(0, 50.0), (15, 70.0), (30, 5.0), (45, 9.0), (60, 19.0)],
    )]);
    // 20 + 5 + 4 + 10 over the whole range, no extrapolation needed.
    assert!(close(scalar_at("increase(x_total[1m])", &m, 60), 39.0));
    assert!(close(scalar_at("irate(x_total[1m])", &m, 60), 10.0 / 15.0));
}

fn istio() -> Memory {
    let s = |w: &str, code: &str, values: [f64; 2]| {
        series(
            "istio_requests_total",
            &[("destination_workload", w), ("response_code", code)],
            &[(0, values[0]), (60, values[1])],
        )
    };
    Memory(vec![
        s("podinfo", "200", [0.0, 970.0]),
        s("podinfo", "503", [0.0, 30.0]),
        s("podinfo-primary", "200", [0.0, 5000.0]),
    ])
}

#[test]
fn flaggers_success_rate_divides_matched_sums() {
    let q = r#"sum(rate(istio_requests_total{destination_workload=~"podinfo",response_code!~"5.*"}[1m])) / sum(rate(istio_requests_total{destination_workload=~"podinfo"}[1m])) * 100"#;
    assert!(close(scalar_at(q, &istio(), 60), 97.0));
}

#[test]
fn sum_by_keeps_the_named_labels_and_vectors_match_one_to_one() {
    let by = evaluate(
        "sum by (destination_workload) (increase(istio_requests_total[1m]))",
        &istio(),
        60_000,
    );
    assert_eq!(
        by,
        Ok(Value::Vector(vec![
            (labels(&[("destination_workload", "podinfo")]), 1000.0),
            (
                labels(&[("destination_workload", "podinfo-primary")]),
                5000.0
            ),
        ]))
    );
    let q = r#"sum by (destination_workload) (increase(istio_requests_total{response_code="200"}[1m])) / on (destination_workload) sum by (destination_workload) (increase(istio_requests_total[1m]))"#;
    let Ok(Value::Vector(ratio)) = evaluate(q, &istio(), 60_000) else {
        panic!("a vector");
    };
    assert_eq!(ratio.len(), 2);
    assert!(close(ratio[0].1, 0.97));
}

#[test]
fn histogram_quantile_interpolates_within_the_bucket_as_prometheus_does() {
    let bucket = |le: &str, count: f64| {
        series(
            "latency_bucket",
            &[("le", le), ("pod", "a")],
            &[(0, 0.0), (60, count)],
        )
    };
    let m = Memory(vec![
        bucket("5", 0.0),
        bucket("10", 100.0),
        bucket("+Inf", 100.0),
    ]);
    let q = "histogram_quantile(0.5, sum(rate(latency_bucket[1m])) by (le))";
    assert!(close(scalar_at(q, &m, 60), 7.5));
    let top = "histogram_quantile(0.99, sum(rate(latency_bucket[1m])) by (le))";
    assert!(close(scalar_at(top, &m, 60), 9.95));
}

#[test]
fn an_instant_selector_takes_the_last_sample_within_five_minutes() {
    let m = Memory(vec![series("up", &[], &[(0, 1.0), (100, 2.0)])]);
    assert_eq!(scalar_at("up", &m, 200), 2.0);
    assert_eq!(evaluate("up", &m, 401_000), Ok(Value::Vector(Vec::new())));
}

#[test]
fn a_range_selector_alone_returns_the_raw_samples() {
    let m = Memory(vec![series(
        "x_total",
        &[],
        &[(0, 1.0), (30, 2.0), (90, 3.0)],
    )]);
    let Ok(Value::Matrix(series)) = evaluate("x_total[1m]", &m, 90_000) else {
        panic!("a matrix");
    };
    assert_eq!(series[0].1, vec![(30_000, 2.0), (90_000, 3.0)]);
}

#[test]
fn unsupported_forms_are_errors_naming_the_part() {
    for (query, part) in [
        ("rate(x[1m] offset 5m)", "offset"),
        ("max_over_time(x[5m])", "max_over_time"),
        ("topk(3, x)", "topk"),
        ("x > 3", ">"),
        ("rate(x[5m:1m])", "5m:1m"),
        ("x / on (a) group_left x", "group_left"),
        ("x @ 100", "@"),
    ] {
        match check(query) {
            Err(PromqlError::Unsupported { part: found, why }) => {
                assert!(
                    found.contains(part) || why.contains(part),
                    "{query}: {found} ({why})"
                );
            }
            other => panic!("{query}: {other:?}"),
        }
    }
    assert!(matches!(
        check("sum(rate(x[1m]"),
        Err(PromqlError::Parse(_))
    ));
    assert_eq!(check("sum(rate(x{a=~\"b.*\"}[1m])) by (le)"), Ok(()));
}

#[test]
fn a_query_nested_thousands_of_levels_deep_is_an_error_not_a_stack_overflow() {
    let depth = 20_000;
    let parens = format!("{}1{}", "(".repeat(depth), ")".repeat(depth));
    let chain = format!("1{}", "+1".repeat(depth));
    for query in [parens, chain] {
        assert!(
            matches!(check(&query), Err(PromqlError::TooDeep { .. })),
            "{}",
            &query[..20]
        );
    }
    // Flagger's own templates nest a handful of levels.
    assert_eq!(check("sum(rate(x[1m])) / sum(rate(y[1m])) * 100"), Ok(()));
}
