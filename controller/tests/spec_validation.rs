//! Loading and validating Canary manifests: Flagger's as they are, and broken ones.

use fledge_controller::spec::{
    CanarySpec, HookGate, LoadError, MetricKind, Strategy as Rollout, load_manifests, validate,
};
use proptest::prelude::*;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The same text under Fledge's API group.
fn as_fledge(text: &str) -> String {
    text.replace("flagger.app/v1beta1", "fledge.dev/v1alpha1")
}

/// Resources compare by their JSON form (kube's generated types have no `PartialEq`).
fn json(v: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(v).expect("resources serialise")
}

fn only_canary(text: &str) -> CanarySpec {
    let loaded = load_manifests(text).expect("fixture loads");
    assert_eq!(loaded.canaries.len(), 1);
    loaded.canaries[0].spec.clone()
}

#[test]
fn flagger_manifests_parse_into_the_same_types_under_either_api_version() {
    for name in [
        "podinfo-canary.yaml",
        "podinfo-blue-green.yaml",
        "podinfo-ab.yaml",
    ] {
        let text = fixture(name);
        let flagger = load_manifests(&text).unwrap();
        let fledge = load_manifests(&as_fledge(&text)).unwrap();
        assert_eq!(json(&flagger.canaries), json(&fledge.canaries), "{name}");
        assert_eq!(
            json(&flagger.metric_templates),
            json(&fledge.metric_templates),
            "{name}"
        );
        for canary in &flagger.canaries {
            validate(&canary.spec).unwrap_or_else(|e| panic!("{name} does not validate:\n{e}"));
        }
    }
}

#[test]
fn the_progressive_canary_fixture_gives_a_ladder_to_max_weight_and_its_hooks() {
    let text = fixture("podinfo-canary.yaml");
    let loaded = load_manifests(&text).unwrap();
    assert_eq!(loaded.metric_templates.len(), 1);
    assert!(
        loaded.metric_templates[0]
            .spec
            .query
            .contains("{{ target }}")
    );
    let spec = validate(&loaded.canaries[0].spec).unwrap();
    assert_eq!(
        spec.strategy,
        Rollout::Canary {
            steps: vec![10, 20, 30, 40, 50],
            mirror: None
        }
    );
    assert_eq!(spec.threshold, 5);
    assert_eq!(spec.interval.millis(), 60_000);
    assert_eq!(spec.progress_deadline.millis(), 60_000);
    assert_eq!(spec.metrics[0].kind, MetricKind::RequestSuccessRate);
    assert_eq!(spec.metrics[1].window.millis(), 30_000);
    assert!(
        matches!(&spec.metrics[2].kind, MetricKind::Template { name, .. } if name == "not-found-percentage")
    );
    let gates: Vec<HookGate> = spec.webhooks.iter().map(|h| h.gate).collect();
    assert_eq!(gates, [HookGate::PreRollout, HookGate::Rollout]);
}

#[test]
fn iterations_without_match_is_blue_green_and_with_match_is_ab_testing() {
    let bg = validate(&only_canary(&fixture("podinfo-blue-green.yaml"))).unwrap();
    assert_eq!(
        bg.strategy,
        Rollout::BlueGreen {
            iterations: 10,
            mirror: None
        }
    );
    let ab = validate(&only_canary(&fixture("podinfo-ab.yaml"))).unwrap();
    let Rollout::AbTesting {
        iterations,
        matches,
    } = &ab.strategy
    else {
        panic!("{ab:?}")
    };
    assert_eq!((*iterations, matches.len()), (10, 2));
    assert_eq!(ab.hooks(HookGate::ConfirmPromotion).count(), 1);
    assert_eq!(ab.hooks(HookGate::PostRollout).count(), 1);
}

#[test]
fn a_broken_canary_gets_every_error_with_its_field_path() {
    let spec = only_canary(&fixture("bad-canary.yaml"));
    let errors = validate(&spec).unwrap_err().to_string();
    for expected in [
        "spec.targetRef.name: must name the workload",
        "spec.targetRef.kind: must be Deployment or DaemonSet, got `StatefulSet`",
        "spec.service.port: must be a port between 1 and 65535, got 0",
        "spec.progressDeadlineSeconds: must be a positive number of seconds, got -5",
        "spec.analysis.interval: `5 minutes` is not a duration",
        "spec.analysis.maxWeight: must be between 1 and 100, got 150",
        "spec.analysis.stepWeights[2]: must be greater than the previous step (40)",
        "spec.analysis.stepWeights[3]: must be between 1 and 100, got -2",
        "spec.analysis.metrics[0].name: unknown metric `error-budget`",
        "spec.analysis.metrics[1].thresholdRange: min (900) is greater than max (100)",
        "spec.analysis.webhooks[0].type: unknown webhook type `confirm-everything`",
        "spec.analysis.webhooks[0].url: must be an http:// or https:// URL",
    ] {
        assert!(
            errors.contains(expected),
            "missing `{expected}` in:\n{errors}"
        );
    }
}

#[test]
fn a_wrongly_typed_field_is_named_by_its_path() {
    let text =
        as_fledge(&fixture("podinfo-canary.yaml")).replace("stepWeight: 10", "stepWeight: ten");
    let err = load_manifests(&text).unwrap_err();
    let LoadError::Field { document, path, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!((*document, path.as_str()), (2, "spec.analysis.stepWeight"));
    assert!(err.to_string().contains("Canary podinfo"), "{err}");
}

#[test]
fn other_kinds_and_groups_are_skipped_and_unknown_versions_rejected() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n---\n".to_string()
        + &fixture("podinfo-blue-green.yaml");
    let loaded = load_manifests(&text).unwrap();
    assert_eq!(loaded.canaries.len(), 1);
    assert_eq!(
        loaded.skipped,
        [(1, "v1".to_string(), "Service".to_string())]
    );
    let wrong = fixture("podinfo-blue-green.yaml").replace("v1beta1", "v1alpha3");
    assert!(matches!(
        load_manifests(&wrong),
        Err(LoadError::ApiVersion { .. })
    ));
    assert!(matches!(
        load_manifests("a: [b"),
        Err(LoadError::Yaml { .. })
    ));
}

#[test]
fn flagger_defaults_apply_to_a_minimal_canary() {
    let spec = validate(&only_canary(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: m}\nspec:\n  targetRef: {kind: Deployment, name: m}\n  service: {port: 80}\n  analysis:\n    interval: 5s\n    threshold: 0\n    stepWeight: 30\n    metrics: [{name: request-success-rate}]\n",
    ))
    .unwrap();
    assert_eq!(
        spec.interval.millis(),
        10_000,
        "intervals below 10s are raised to 10s"
    );
    assert_eq!(spec.threshold, 1, "a threshold below 1 becomes 1");
    assert_eq!(
        spec.strategy,
        Rollout::Canary {
            steps: vec![30, 60, 90, 100],
            mirror: None
        }
    );
    assert_eq!(spec.progress_deadline.millis(), 600_000);
    assert_eq!(
        (spec.primary_ready_threshold, spec.canary_ready_threshold),
        (100, 100)
    );
    assert_eq!(spec.metrics[0].min, Some(99.0));
}

/// Documents built from plausible and implausible values for every field the core reads.
fn arbitrary_canary() -> impl Strategy<Value = String> {
    let weight = prop_oneof![
        Just("null".to_string()),
        (-20i64..130).prop_map(|w| w.to_string())
    ];
    let weights = prop::collection::vec(-10i64..120, 0..6).prop_map(|v| {
        format!(
            "[{}]",
            v.iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    });
    let duration = prop_oneof![
        Just("null"),
        Just("30s"),
        Just("1m"),
        Just("0s"),
        Just("5 minutes"),
        Just("1h30m"),
        Just("x"),
        Just("99999999999999999999h")
    ];
    let metric = prop_oneof![
        Just("{name: request-success-rate, thresholdRange: {min: 99}}"),
        Just("{name: request-duration, threshold: 500, interval: 1m}"),
        Just("{name: custom, query: 'up', thresholdRange: {max: 1}}"),
        Just("{name: custom2}"),
        Just("{name: t, templateRef: {name: tmpl}, thresholdRange: {min: 1, max: 0}}"),
        Just("{name: '', query: ''}"),
    ];
    let hook = prop_oneof![
        Just("{name: a, type: pre-rollout, url: 'http://x.test/'}"),
        Just("{name: b, type: confirm-promotion, url: 'http://x.test/gate'}"),
        Just("{name: c, type: nonsense, url: 'ftp://x'}"),
        Just("{name: d, url: 'http://x.test/', timeout: 0s}"),
    ];
    (
        weight.clone(),
        weight,
        weights,
        duration,
        prop::collection::vec(metric, 0..4),
        prop::collection::vec(hook, 0..4),
        prop_oneof![Just("null"), Just("3"), Just("0"), Just("-1")],
        prop_oneof![Just("null"), Just("[{headers: {x: {exact: y}}}]"), Just("[1]")],
        any::<bool>(),
        -5i64..70000,
    )
        .prop_map(|(max, step, steps, interval, metrics, hooks, iterations, matches, mirror, port)| {
            format!(
                "apiVersion: fledge.dev/v1alpha1\nkind: Canary\nmetadata: {{name: r}}\nspec:\n  targetRef: {{kind: Deployment, name: app}}\n  service: {{port: {port}}}\n  analysis:\n    interval: {interval}\n    maxWeight: {max}\n    stepWeight: {step}\n    stepWeights: {steps}\n    iterations: {iterations}\n    match: {matches}\n    mirror: {mirror}\n    metrics: [{}]\n    webhooks: [{}]\n",
                metrics.join(", "),
                hooks.join(", ")
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_specs_either_validate_or_give_errors_never_a_panic(text in arbitrary_canary()) {
        match load_manifests(&text) {
            Err(e) => prop_assert!(!e.to_string().is_empty()),
            Ok(loaded) => {
                for canary in loaded.canaries {
                    match validate(&canary.spec) {
                        Ok(spec) => {
                            // What validates is what the core can run: a ladder within 1..=100.
                            if let Rollout::Canary { steps, .. } = &spec.strategy {
                                prop_assert!(!steps.is_empty());
                                prop_assert!(steps.windows(2).all(|w| w[0] < w[1]));
                                prop_assert!(steps.iter().all(|w| (1..=100).contains(w)));
                            }
                        }
                        Err(errors) => {
                            prop_assert!(!errors.0.is_empty());
                            prop_assert!(errors.0.iter().all(|e| e.path.starts_with("spec")));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn fields_fledge_does_not_know_are_listed_not_silently_dropped() {
    let text = fixture("podinfo-blue-green.yaml")
        .replace(
            "  progressDeadlineSeconds: 60",
            "  progressDeadlineSeconds: 60\n  metricServer: http://prometheus:9090",
        )
        .replace(
            "    iterations: 10",
            "    iterations: 10\n    stepWeigth: 5",
        );
    let loaded = load_manifests(&text).unwrap();
    assert_eq!(
        loaded.ignored,
        [
            "document 1 (Canary podinfo): spec.metricServer",
            "document 1 (Canary podinfo): spec.analysis.stepWeigth"
        ]
    );
    assert!(
        load_manifests(&fixture("podinfo-ab.yaml"))
            .unwrap()
            .ignored
            .is_empty()
    );
}

#[test]
fn smi_providers_refuse_ab_matches_and_mirroring_at_validation_naming_the_field() {
    for provider in ["linkerd", "smi:v1alpha1"] {
        let mut ab = only_canary(&fixture("podinfo-ab.yaml"));
        ab.provider = Some(provider.into());
        let e = validate(&ab).unwrap_err().to_string();
        assert!(
            e.contains("spec.analysis.match: A/B routing on request matches is not supported"),
            "{provider}: {e}"
        );
        let mut mirrored = only_canary(&fixture("podinfo-canary.yaml"));
        mirrored.provider = Some(provider.into());
        mirrored.analysis.mirror = true;
        let e = validate(&mirrored).unwrap_err().to_string();
        assert!(
            e.contains("spec.analysis.mirror: traffic mirroring is not supported"),
            "{provider}: {e}"
        );
    }
    let mut ab = only_canary(&fixture("podinfo-ab.yaml"));
    for provider in ["istio", "gatewayapi:v1"] {
        ab.provider = Some(provider.into());
        assert!(validate(&ab).is_ok(), "{provider}");
    }
}

#[test]
fn a_missing_required_field_is_reported_with_every_other_error() {
    let text = as_fledge(&fixture("podinfo-canary.yaml"))
        .replace("    port: 9898\n", "")
        .replace("maxWeight: 50", "maxWeight: 130");
    assert!(!text.contains("port: 9898"), "{text}");
    let err = load_manifests(&text).unwrap_err();
    let LoadError::Invalid {
        document, errors, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*document, 2);
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["spec.service.port", "spec.analysis.maxWeight"],
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("spec.service.port: missing required field"),
        "{err}"
    );
}

#[test]
fn a_missing_block_is_reported_once_not_with_each_field_it_lacks() {
    let text = "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: x}\nspec:\n  service: {port: 80}\n  analysis: {interval: 1m, stepWeight: 10, threshold: 0}\n";
    let err = load_manifests(text).unwrap_err();
    let LoadError::Invalid { errors, .. } = &err else {
        panic!("{err}")
    };
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["spec.targetRef"], "{err}");
}

#[test]
fn settings_flagger_changes_quietly_are_warned_about() {
    let text = as_fledge(&fixture("podinfo-canary.yaml"));
    assert!(load_manifests(&text).unwrap().warnings.is_empty());
    let changed = text
        .replace(
            "interval: 1m\n    threshold: 5",
            "interval: 5s\n    threshold: 0",
        )
        .replace("stepWeight: 10", "stepWeights: [20, 60, 80]");
    let warnings = load_manifests(&changed).unwrap().warnings;
    let all = warnings.join("\n");
    assert_eq!(warnings.len(), 3, "{all}\n{changed}");
    assert!(
        all.contains(
            "spec.analysis.interval: 5s is shorter than the shortest interval; raised to 10s"
        ),
        "{all}"
    );
    assert!(
        all.contains("spec.analysis.threshold: 0 is below 1; raised to 1"),
        "{all}"
    );
    assert!(
        all.contains("spec.analysis.stepWeights: go up to 80%, above maxWeight (50%)"),
        "{all}"
    );
    assert!(all.starts_with("document 2 (Canary podinfo): "), "{all}");
}
