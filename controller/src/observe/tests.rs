use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::spec::{MetricProvider, MetricTemplateSpec, SecretReference, validate};

fn canary(judge: &str, service_name: Option<&str>) -> Canary {
    let mut c: Canary = serde_json::from_value(json!({
        "apiVersion": "fledge.dev/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {
                "interval": "30s", "maxWeight": 50, "stepWeight": 10, "judge": judge,
                "metrics": [
                    {"name": "request-success-rate", "interval": "1m"},
                    {"name": "request-duration", "interval": "30s"},
                    {"name": "latency", "interval": "2m", "thresholdRange": {"max": 500},
                     "templateRef": {"name": "latency"}},
                    {"name": "cpu", "interval": "1m", "thresholdRange": {"max": 1},
                     "query": "avg(cpu{pod=~\"{{ target }}-.*\"})"}
                ]
            }
        }
    }))
    .expect("a valid Canary");
    c.spec.service.name = service_name.map(String::from);
    c
}

fn spec(c: &Canary) -> RolloutSpec {
    validate(&c.spec).expect("the Canary validates")
}

const NOW: Millis = 1_000_000;

fn wanted(since: Option<Millis>) -> Wants {
    Wants {
        metrics: true,
        since,
        hooks: Vec::new(),
    }
}

#[test]
fn the_statistical_judge_measures_its_built_in_metrics_since_the_step_began() {
    let c = canary("statistical", None);
    let p = plan(&wanted(Some(900_000)), &spec(&c), &Subject::of(&c), NOW);
    let step = Range {
        from: 900_000,
        to: NOW,
    };
    assert_eq!(
        p.iter()
            .map(|m| (m.metric.as_str(), &m.measure, m.range))
            .take(2)
            .collect::<Vec<_>>(),
        vec![
            ("request-success-rate", &Measure::Counts, step),
            ("request-duration", &Measure::Histograms, step),
        ]
    );
}

#[test]
fn custom_queries_are_measured_over_their_own_window_under_either_judge() {
    for judge in ["statistical", "threshold"] {
        let c = canary(judge, None);
        let p = plan(&wanted(Some(900_000)), &spec(&c), &Subject::of(&c), NOW);
        assert_eq!(
            p[2],
            Measurement {
                metric: "latency".into(),
                measure: Measure::Query(QuerySource::Template {
                    namespace: "test".into(),
                    name: "latency".into(),
                    variables: BTreeMap::new(),
                    interval: Some("2m".into()),
                }),
                range: Range {
                    from: NOW - 120_000,
                    to: NOW
                },
            },
            "{judge}"
        );
        assert_eq!(p[3].range.length(), Duration::from_secs(60), "{judge}");
    }
}

#[test]
fn the_threshold_judge_reads_flaggers_scalars_over_each_window() {
    let c = canary("threshold", None);
    let p = plan(&wanted(None), &spec(&c), &Subject::of(&c), NOW);
    assert_eq!(p[0].measure, Measure::SuccessRate);
    assert_eq!(p[0].range.length(), Duration::from_secs(60));
    assert_eq!(p[1].measure, Measure::Latency);
    assert_eq!(p[1].range.length(), Duration::from_secs(30));
}

#[test]
fn no_metrics_wanted_is_an_empty_plan() {
    let c = canary("statistical", None);
    let none = Wants::default();
    assert!(plan(&none, &spec(&c), &Subject::of(&c), NOW).is_empty());
}

#[test]
fn the_sides_are_the_target_and_its_primary_behind_the_canarys_services() {
    let s = Subject::of(&canary("threshold", Some("frontend")));
    assert_eq!(
        (s.canary.deployment.as_str(), s.canary.service.as_str()),
        ("podinfo", "frontend-canary")
    );
    assert_eq!(
        (s.primary.deployment.as_str(), s.primary.service.as_str()),
        ("podinfo-primary", "frontend-primary")
    );
    assert_eq!(
        (s.target.as_str(), s.service.as_str()),
        ("podinfo", "frontend")
    );
    // An empty service name is the target's (one function names the Services).
    let s = Subject::of(&canary("threshold", Some("")));
    assert_eq!(s.canary.service, "podinfo-canary");
}

fn subject() -> Subject {
    Subject::of(&canary("threshold", None))
}

#[test]
fn flaggers_name_ingress_and_route_placeholders_render_as_flagger_fills_them() {
    // The Canary's name, and the target for ingress and route (no ingressRef/routeRef).
    let mut canary = canary("threshold", Some("frontend"));
    canary.metadata.name = Some("podinfo-canary-object".into());
    let s = Subject::of(&canary);
    for (placeholder, value) in [
        ("{{ name }}", "podinfo-canary-object"),
        ("{{ ingress }}", "podinfo"),
        ("{{ route }}", "podinfo"),
        ("{{ service }}", "frontend"),
    ] {
        let rendered = render_template(placeholder, &s, Duration::from_secs(60), &BTreeMap::new());
        assert_eq!(rendered.as_deref(), Ok(value), "{placeholder}");
    }
}

#[test]
fn placeholders_are_filled_with_or_without_spaces() {
    let vars = BTreeMap::from([("direction".to_string(), "inbound".to_string())]);
    let q = render_template(
        r#"rate(x{ns="{{ namespace }}",w="{{target}}",s="{{ service }}",d="{{  variables.direction }}"}[{{interval }}])"#,
        &subject(),
        Duration::from_secs(90),
        &vars,
    );
    assert_eq!(
        q.as_deref().ok(),
        Some(r#"rate(x{ns="test",w="podinfo",s="podinfo",d="inbound"}[1m30s])"#)
    );
}

#[test]
fn an_unknown_variable_is_an_error_that_names_it() {
    let e = render_template(
        "{{ variables.missing }}",
        &subject(),
        Duration(1000),
        &BTreeMap::new(),
    );
    assert!(
        e.as_ref()
            .is_err_and(|e| e.to_string().contains("`missing`")),
        "{e:?}"
    );
}

#[test]
fn unknown_and_unclosed_placeholders_are_errors() {
    let empty = BTreeMap::new();
    assert!(matches!(
        render_template("{{ pod }}", &subject(), Duration(1000), &empty),
        Err(RenderError::UnknownPlaceholder { name }) if name == "pod"
    ));
    assert!(matches!(
        render_template("up{a=\"{{ target \"}", &subject(), Duration(1000), &empty),
        Err(RenderError::UnclosedPlaceholder { at: 6 })
    ));
}

fn template(kind: &str, query: &str) -> MetricTemplateSpec {
    MetricTemplateSpec {
        provider: MetricProvider {
            type_: kind.into(),
            address: Some(String::new()),
            ..MetricProvider::default()
        },
        query: query.into(),
    }
}

#[test]
fn a_template_is_rendered_over_the_measured_range() {
    let source = QuerySource::Template {
        namespace: "istio-system".into(),
        name: "latency".into(),
        variables: BTreeMap::new(),
        interval: None,
    };
    let range = Range {
        from: 0,
        to: 120_000,
    };
    let t = template("prometheus", "p99{w=\"{{ target }}\"}[{{ interval }}]");
    assert_eq!(
        resolve_query(&source, &subject(), range, Some(&t)),
        Ok(ResolvedQuery {
            promql: "p99{w=\"podinfo\"}[2m]".into(),
            // An empty address is the controller's Prometheus.
            address: None,
            headers: Vec::new(),
        })
    );
    assert_eq!(
        resolve_query(&source, &subject(), range, None),
        Err("MetricTemplate istio-system/latency not found".into())
    );
    let datadog = template("datadog", "avg:x");
    assert!(
        resolve_query(&source, &subject(), range, Some(&datadog))
            .is_err_and(|e| e.contains("spec.provider.type: `datadog` (Datadog)"))
    );
    let bad = template("", "{{ variables.code }}");
    assert!(
        resolve_query(&source, &subject(), range, Some(&bad)).is_err_and(|e| e
            .starts_with("MetricTemplate istio-system/latency: ")
            && e.contains("`code`"))
    );
}

proptest::proptest! {
    #[test]
    fn rendering_any_text_never_panics(query in ".{0,64}", name in "[a-z{} .]{0,12}") {
        let vars = BTreeMap::from([(name, "v".to_string())]);
        let _ = render_template(&query, &subject(), Duration(1000), &vars);
    }
}

#[test]
fn a_template_with_credentials_resolves_and_one_without_the_secrets_name_is_refused() {
    let source = QuerySource::Template {
        namespace: "istio-system".into(),
        name: "latency".into(),
        variables: BTreeMap::new(),
        interval: None,
    };
    let range = Range {
        from: 0,
        to: 60_000,
    };
    let mut t = template("prometheus", "up");
    t.provider.secret_ref = Some(SecretReference {
        name: "prom-auth".into(),
    });
    t.provider.insecure_skip_verify = true;
    assert!(resolve_query(&source, &subject(), range, Some(&t)).is_ok());
    t.provider.secret_ref = Some(SecretReference::default());
    let e = resolve_query(&source, &subject(), range, Some(&t));
    assert!(
        e.as_ref()
            .is_err_and(|e| e
                .starts_with("MetricTemplate istio-system/latency: spec.provider.secretRef.name")),
        "{e:?}"
    );
}

fn with_inline_query(query: &str, variables: serde_json::Value) -> Canary {
    let mut c = canary("threshold", None);
    c.spec.analysis.metrics[3].query = Some(query.into());
    c.spec.analysis.metrics[3].template_variables =
        serde_json::from_value(variables).expect("variables");
    c
}

#[test]
fn an_inline_query_is_rendered_with_the_metrics_template_variables_as_flagger_does() {
    let c = with_inline_query(
        r#"sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="{{ variables.direction }}"}[{{ interval }}]))"#,
        json!({"direction": "inbound"}),
    );
    let p = plan(&wanted(None), &spec(&c), &Subject::of(&c), NOW);
    let Measure::Query(source) = &p[3].measure else {
        panic!("not a query: {:?}", p[3].measure);
    };
    let q = resolve_query(source, &Subject::of(&c), p[3].range, None);
    assert_eq!(
        q.map(|q| q.promql).as_deref(),
        Ok(
            r#"sum(rate(response_total{namespace="test",deployment=~"podinfo",direction="inbound"}[1m]))"#
        )
    );
}

#[test]
fn interval_is_the_metrics_interval_as_written_as_flagger_fills_it() {
    // `90s` stays `90s` (not `1m30s`), in inline queries and templates alike; a metric without
    // an interval reads Flagger's default, `1m`, also before the clock has run a minute.
    let query = "rate(x[{{ interval }}])";
    let mut c = with_inline_query(query, json!({}));
    c.spec.analysis.metrics[3].interval = Some("90s".into());
    let mut templated = c.clone();
    templated.spec.analysis.metrics[3].query = None;
    templated.spec.analysis.metrics[3].template_ref =
        Some(serde_json::from_value(json!({"name": "latency"})).expect("a templateRef"));
    let mut unset = c.clone();
    unset.spec.analysis.metrics[3].interval = None;
    let t = template("prometheus", query);
    for (c, now, expected) in [
        (&c, NOW, "rate(x[90s])"),
        (&templated, NOW, "rate(x[90s])"),
        (&unset, 30_000, "rate(x[1m])"),
    ] {
        let p = plan(&wanted(None), &spec(c), &Subject::of(c), now);
        let Measure::Query(source) = &p[3].measure else {
            panic!("not a query: {:?}", p[3].measure);
        };
        let q = resolve_query(source, &Subject::of(c), p[3].range, Some(&t));
        assert_eq!(q.map(|q| q.promql).as_deref(), Ok(expected));
    }
}

#[test]
fn go_trim_markers_drop_the_whitespace_beside_a_placeholder() {
    let empty = BTreeMap::new();
    let q = render_template(
        "a \n\t{{- namespace -}}\n  b {{-target}}",
        &subject(),
        Duration(1000),
        &empty,
    );
    // `{{-target}}` is no trim marker (Go wants a space after the dash): an unknown name.
    assert!(
        matches!(&q, Err(RenderError::UnknownPlaceholder { name }) if name == "-target"),
        "{q:?}"
    );
    let q = render_template(
        "a \n\t{{- namespace -}}\n  b {{ target -}} c{{- name }}",
        &subject(),
        Duration(1000),
        &empty,
    );
    assert_eq!(q.as_deref(), Ok("atestb podinfocpodinfo"));
}

#[test]
fn an_inline_query_whose_placeholder_cannot_be_filled_does_not_validate_naming_metric_and_placeholder()
 {
    for (query, says) in [
        ("up{pod=\"{{ pod }}\"}", "`{{ pod }}`"),
        ("up{d=\"{{ variables.direction }}\"}", "`direction`"),
    ] {
        let c = with_inline_query(query, json!({"other": "x"}));
        let errors = match validate(&c.spec) {
            Ok(_) => panic!("{query} validated"),
            Err(e) => e.to_string(),
        };
        assert!(
            errors.contains("spec.analysis.metrics[3].query") && errors.contains("metric `cpu`"),
            "{errors}"
        );
        assert!(errors.contains(says), "{errors}");
    }
}
