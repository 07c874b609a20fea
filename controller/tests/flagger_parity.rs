//! Parity with today's Flagger (1.41 to 1.44): its newer fields are read, kept through
//! Fledge's CRD and a round trip, and honoured where Fledge can (or warned about where not).
// The Services' shape is the cluster shell's.
#![cfg(feature = "cluster")]

mod structural;

use std::collections::BTreeMap;

use fledge_controller::cluster::workloads::{Selectors, services};
use fledge_controller::spec::{Canary, MetricTemplate, load_manifests, validate, warnings};
use kube::CustomResourceExt;
use serde_json::{Value, json};
use structural::pruned_from_spec;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fixture's documents as written, as JSON.
fn written() -> Vec<Value> {
    let text = fixture("flagger-1.44-fields.yaml");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML"))
        .collect()
}

fn crd_json(crd: impl serde::Serialize) -> Value {
    serde_json::to_value(crd).expect("a CRD serialises")
}

#[test]
fn flaggers_newer_fields_load_without_being_ignored() {
    let text = fixture("flagger-1.44-fields.yaml");
    let loaded = load_manifests(&text).expect("the fixture loads");
    assert_eq!(loaded.ignored, Vec::<String>::new());
    let svc = &loaded.canaries[0].spec.service;
    assert!(svc.headless);
    assert_eq!(svc.traffic_distribution.as_deref(), Some("PreferClose"));
    assert_eq!(svc.backend_timeout.as_deref(), Some("10s"));
    let unmanaged = svc.unmanaged_metadata.clone().expect("unmanagedMetadata");
    assert_eq!(unmanaged.labels, ["team"]);
    let headers = &loaded.metric_templates[0].spec.provider.headers;
    assert_eq!(
        headers["Accept"],
        ["application/json", "text/plain"],
        "{headers:?}"
    );
}

/// What the API server stores under Fledge's CRD is what was written, and what Fledge writes
/// back (a spec read and serialised again) is too: nothing of Flagger's newer fields is lost.
#[test]
fn flaggers_newer_fields_survive_the_generated_crds_pruning_and_a_round_trip() {
    let docs = written();
    let crds = [crd_json(Canary::crd()), crd_json(MetricTemplate::crd())];
    for (doc, crd) in docs.iter().zip(&crds) {
        assert_eq!(
            pruned_from_spec(crd, doc),
            Vec::<String>::new(),
            "{}",
            doc["kind"]
        );
    }
    let canary: Canary = serde_json::from_value(docs[0].clone()).expect("a Canary");
    let back = serde_json::to_value(&canary.spec).unwrap();
    assert_eq!(lost(&docs[0]["spec"], &back, "spec"), Vec::<String>::new());
    let template: MetricTemplate =
        serde_json::from_value(docs[1].clone()).expect("a MetricTemplate");
    let back = serde_json::to_value(&template.spec).unwrap();
    assert_eq!(lost(&docs[1]["spec"], &back, "spec"), Vec::<String>::new());
}

/// The paths of `written` that `back` does not hold with the same value (`back` may hold more:
/// defaults written out).
fn lost(written: &Value, back: &Value, path: &str) -> Vec<String> {
    match (written, back) {
        (Value::Object(w), Value::Object(b)) => w
            .iter()
            .flat_map(|(k, v)| match b.get(k) {
                Some(bv) => lost(v, bv, &format!("{path}.{k}")),
                None => vec![format!("{path}.{k}")],
            })
            .collect(),
        _ if written == back => Vec::new(),
        _ => vec![path.to_string()],
    }
}

/// The check above is not vacuous: a field the schema does not know is reported as pruned.
#[test]
fn a_field_fledges_crd_does_not_know_is_reported_as_pruned() {
    let mut doc = written()[0].clone();
    doc["spec"]["service"]["notAField"] = json!(true);
    assert_eq!(
        pruned_from_spec(&crd_json(Canary::crd()), &doc),
        ["spec.service.notAField"]
    );
}

fn canary(service: Value) -> Canary {
    let mut spec = json!({"targetRef": {"name": "podinfo"}, "service": {"port": 9898},
                          "analysis": {"stepWeight": 10}});
    for (k, v) in service.as_object().into_iter().flatten() {
        spec["service"][k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "fledge.dev/v1alpha1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "u-1"},
        "spec": spec,
    }))
    .expect("a Canary")
}

/// As Flagger's Kubernetes router: `headless` and `trafficDistribution` on the three Services;
/// keys listed in `unmanagedMetadata` are never set by Fledge (so never changed or claimed).
#[test]
fn headless_traffic_distribution_and_unmanaged_keys_shape_all_three_services() {
    let c = canary(json!({
        "headless": true,
        "trafficDistribution": "PreferClose",
        "apex": {"labels": {"team": "a", "tier": "web"},
                 "annotations": {"owner": "ops", "external-dns/hostname": "x"}},
        "unmanagedMetadata": {"labels": ["team"], "annotations": ["external-dns/hostname"]},
    }));
    let label = |v: &str| BTreeMap::from([("app".to_string(), v.to_string())]);
    let selector = Selectors {
        primary: label("podinfo-primary"),
        canary: label("podinfo"),
        by_default_labels: true,
    };
    let svcs = services(&c, &selector, &BTreeMap::new());
    assert_eq!(svcs.len(), 3);
    for svc in &svcs {
        let spec = svc.spec.clone().unwrap_or_default();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.traffic_distribution.as_deref(), Some("PreferClose"));
    }
    let apex = &svcs[0].metadata;
    let labels = apex.labels.clone().unwrap_or_default();
    // `app` is Flagger's label of every Service it generates, named after it.
    assert_eq!(labels.keys().collect::<Vec<_>>(), ["app", "tier"]);
    let annotations = apex.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.keys().collect::<Vec<_>>(), ["owner"]);

    let plain = services(&canary(json!({})), &selector, &BTreeMap::new());
    let spec = plain[0].spec.clone().unwrap_or_default();
    assert_eq!((spec.cluster_ip, spec.traffic_distribution), (None, None));
}

fn spec_of(provider: &str, service: Value) -> fledge_controller::spec::CanarySpec {
    let mut c = canary(service).spec;
    c.provider = (!provider.is_empty()).then(|| provider.to_string());
    c
}

fn paths(errors: Vec<fledge_controller::spec::FieldError>) -> Vec<String> {
    errors.into_iter().map(|e| e.to_string()).collect()
}

#[test]
fn a_backend_timeout_is_checked_as_the_http_routes_schema_checks_it() {
    let ok = spec_of(
        "gatewayapi",
        json!({"timeout": "30s", "backendTimeout": "10s"}),
    );
    assert!(validate(&ok).is_ok());
    let fraction = spec_of("gatewayapi", json!({"backendTimeout": "1.5s"}));
    let errors = paths(validate(&fraction).unwrap_err().0);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("spec.service.backendTimeout: `1.5s` is not a Gateway API duration"),
        "{errors:?}"
    );
    let longer = spec_of(
        "gatewayapi",
        json!({"timeout": "10s", "backendTimeout": "30s"}),
    );
    let errors = paths(validate(&longer).unwrap_err().0);
    assert!(
        errors.len() == 1 && errors[0].contains("longer than spec.service.timeout"),
        "{errors:?}"
    );
    // A request timeout of 0s is none: any backend timeout fits.
    let unbounded = spec_of(
        "gatewayapi",
        json!({"timeout": "0s", "backendTimeout": "30s"}),
    );
    assert!(validate(&unbounded).is_ok());
    let garbage = spec_of("", json!({"backendTimeout": "soon"}));
    let errors = paths(validate(&garbage).unwrap_err().0);
    assert!(
        errors.len() == 1 && errors[0].starts_with("spec.service.backendTimeout: "),
        "{errors:?}"
    );
}

#[test]
fn what_fledge_cannot_honour_yet_is_warned_about_at_its_field() {
    let istio = spec_of("istio", json!({"backendTimeout": "10s"}));
    let found = paths(warnings(&istio));
    assert!(
        found.len() == 1
            && found[0].starts_with("spec.service.backendTimeout: not used")
            && found[0].contains("provider istio"),
        "{found:?}"
    );
    assert_eq!(
        paths(warnings(&spec_of(
            "gatewayapi",
            json!({"backendTimeout": "10s"})
        ))),
        Vec::<String>::new()
    );
    // Session affinity is honoured on Istio and the Gateway API; SMI cannot carry it.
    let affinity = |provider: &str| {
        let mut spec = spec_of(provider, json!({}));
        spec.analysis.session_affinity = Some(
            serde_json::from_value(json!({"cookieName": "c", "primaryCookieName": "p"})).unwrap(),
        );
        paths(warnings(&spec))
    };
    assert_eq!(affinity("istio"), Vec::<String>::new());
    assert_eq!(affinity("gatewayapi"), Vec::<String>::new());
    let found = affinity("smi");
    assert!(
        found.len() == 1
            && found[0].starts_with("spec.analysis.sessionAffinity: not used")
            && found[0].contains("provider smi"),
        "{found:?}"
    );
}

#[test]
fn a_traffic_distribution_kubernetes_does_not_know_is_refused_naming_the_value() {
    let spec = spec_of("", json!({"trafficDistribution": "Nearest"}));
    let errors = paths(validate(&spec).unwrap_err().0);
    assert_eq!(
        errors,
        [
            "spec.service.trafficDistribution: must be one of PreferClose, PreferSameZone, PreferSameNode, got `Nearest`"
        ]
    );
}

#[test]
fn an_autoscaler_ref_is_an_hpa_or_a_scaled_object_with_bounds_that_make_sense() {
    let with = |autoscaler: Value| {
        let mut spec = canary(json!({})).spec;
        spec.autoscaler_ref = Some(serde_json::from_value(autoscaler).expect("a reference"));
        spec
    };
    let keda = with(json!({"kind": "ScaledObject", "name": "so",
                            "primaryScalerQueries": {"rps": "up"},
                            "primaryScalerReplicas": {"minReplicas": 2, "maxReplicas": 8}}));
    assert!(validate(&keda).is_ok());
    assert_eq!(paths(warnings(&keda)), Vec::<String>::new());
    let crossed = with(json!({"kind": "ScaledObject", "name": "so",
                               "primaryScalerReplicas": {"minReplicas": 9, "maxReplicas": 8}}));
    assert_eq!(
        paths(validate(&crossed).unwrap_err().0),
        ["spec.autoscalerRef.primaryScalerReplicas.maxReplicas: 8 is below minReplicas (9)"]
    );
    let vpa = with(json!({"kind": "VerticalPodAutoscaler", "name": "v"}));
    assert_eq!(
        paths(validate(&vpa).unwrap_err().0),
        [
            "spec.autoscalerRef.kind: must be HorizontalPodAutoscaler or ScaledObject, got `VerticalPodAutoscaler`"
        ]
    );
    // Flagger ignores the primary's queries on an HPA: accepted, and said to be unused.
    let hpa = with(json!({"kind": "HorizontalPodAutoscaler", "name": "h",
                          "primaryScalerQueries": {"rps": "up"}}));
    assert!(validate(&hpa).is_ok());
    assert_eq!(
        paths(warnings(&hpa)),
        [
            "spec.autoscalerRef.primaryScalerQueries: not used: an HPA has no queries; primaryScalerQueries apply to a ScaledObject only"
        ]
    );
}

/// Flagger accepts an `autoscalerRef` on a DaemonSet target (its primary copy of it never
/// scales anything: a DaemonSet has no `scale` subresource); Fledge accepts it too, leaves it
/// unused and says so at the field.
#[test]
fn a_daemonsets_autoscaler_ref_is_accepted_and_said_to_be_unused() {
    let mut spec = canary(json!({})).spec;
    spec.target_ref.kind = "DaemonSet".into();
    spec.autoscaler_ref = Some(
        serde_json::from_value(json!({"kind": "HorizontalPodAutoscaler", "name": "h"}))
            .expect("a reference"),
    );
    assert!(validate(&spec).is_ok(), "{:?}", validate(&spec));
    assert!(spec.scaled_by().is_none());
    let warned = paths(warnings(&spec));
    assert!(
        warned.len() == 1 && warned[0].starts_with("spec.autoscalerRef: not used: a DaemonSet"),
        "{warned:?}"
    );
    spec.target_ref.kind = "Deployment".into();
    assert!(spec.scaled_by().is_some());
    assert_eq!(paths(warnings(&spec)), Vec::<String>::new());
}
