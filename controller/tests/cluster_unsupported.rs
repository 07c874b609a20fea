//! What Flagger supports and Fledge does not (its other traffic providers and metric sources)
//! is refused before anything is touched: at validation, naming the field and the value, and in
//! the cluster with a `Stalled` condition, at take-over as for a Canary of Fledge's own.
#![cfg(feature = "cluster")]

mod cluster_support;

use cluster_support::*;
use fledge_controller::spec::{LoadError, load_manifests};
use serde_json::{Value, json};

const FLAGGER_TEMPLATE: &str = "/apis/flagger.app/v1beta1/namespaces/test/metrictemplates/errors";
const FLEDGE_TEMPLATE: &str = "/apis/fledge.dev/v1alpha1/namespaces/test/metrictemplates/errors";

fn template(api_version: &str, provider: &str) -> Value {
    json!({
        "apiVersion": api_version, "kind": "MetricTemplate",
        "metadata": {"name": "errors", "namespace": NS},
        "spec": {"provider": {"type": provider, "address": "https://api.example.com"},
                 "query": "sum:errors{app:podinfo}.as_count()"}
    })
}

/// The metric naming the template `errors`, after the success rate.
fn templated_metric() -> Value {
    json!([{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
           {"name": "errors", "templateRef": {"name": "errors"},
            "thresholdRange": {"max": 1}, "interval": "1m"}])
}

/// The `Stalled` condition of `status`, as `(reason, message)`.
fn stalled(status: &Value) -> (String, String) {
    let found = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Stalled")
        .cloned()
        .unwrap_or_else(|| panic!("no Stalled condition: {status}"));
    let text = |k: &str| found[k].as_str().unwrap_or_default().to_string();
    (text("reason"), text("message"))
}

/// Only the Canary itself and Events were written: nothing adopted, created or changed.
fn only_the_canary_written(c: &FakeCluster, canary: &str) {
    let writes: Vec<String> = c
        .calls()
        .into_iter()
        .filter(|w| w.is_write() && !w.path.starts_with(canary) && !w.path.starts_with(EVENTS))
        .map(|w| w.summary())
        .collect();
    assert_eq!(writes, Vec::<String>::new());
}

fn flagger_canary_with(edit: impl FnOnce(&mut Value)) -> FakeCluster {
    let owner = flagger_owner("flagger.app/v1beta1", FLAGGER_UID);
    let c = flagger_cluster("Succeeded", 0, owner);
    let mut canary = c.get(FLAGGER_CANARY).unwrap();
    edit(&mut canary);
    c.put(FLAGGER_CANARY, canary);
    c.settle();
    c.clear_calls();
    c
}

#[tokio::test]
async fn a_flagger_canary_of_a_provider_fledge_lacks_is_refused_at_take_over_naming_it() {
    let c = flagger_canary_with(|canary| canary["spec"]["provider"] = json!("nginx"));
    c.reconcile_flagger(&c.context()).await.expect("reconcile");
    only_the_canary_written(&c, FLAGGER_CANARY);
    let status = c.flagger_status();
    let (reason, message) = stalled(&status);
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains("spec.provider: provider `nginx` (the NGINX Ingress controller) is one of Flagger's that Fledge does not support"),
        "{message}"
    );
    // Flagger's own fields are left as they were.
    assert_eq!(status["phase"], "Succeeded");
    let events = events(&c);
    assert!(
        events.iter().any(|e| e.contains("Warning InvalidSpec")),
        "{events:#?}"
    );
}

/// Without `provider`, Flagger routes with its `-mesh-provider` flag, which Fledge cannot see:
/// an `ingressRef` says the Canary routes through an Ingress.
#[tokio::test]
async fn a_flagger_canary_naming_an_ingress_without_a_provider_is_refused_at_take_over() {
    let c = flagger_canary_with(|canary| {
        let spec = canary["spec"].as_object_mut().unwrap();
        spec.remove("provider");
        spec.insert(
            "ingressRef".into(),
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"}),
        );
    });
    c.reconcile_flagger(&c.context()).await.expect("reconcile");
    only_the_canary_written(&c, FLAGGER_CANARY);
    let (reason, message) = stalled(&c.flagger_status());
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains("spec.ingressRef: names an Ingress (providers nginx, skipper)"),
        "{message}"
    );
}

/// Without `provider`, the Canary is routed by Fledge's default provider (Istio here), which
/// validation cannot see: `appProtocol: tcp` (a TCP route in Flagger, Fledge routes HTTP) is
/// refused at take-over as it is with `provider: istio`, before anything is adopted (review
/// r14g finding 2: the Canary was taken over first, then refused).
#[tokio::test]
async fn a_flagger_canary_the_default_provider_cannot_route_is_refused_at_take_over() {
    let c = flagger_canary_with(|canary| {
        canary["spec"].as_object_mut().unwrap().remove("provider");
        canary["spec"]["service"]["appProtocol"] = json!("tcp");
    });
    let primary_fields = c.get(PRIMARY).unwrap()["metadata"]["managedFields"].clone();
    for _ in 0..3 {
        c.reconcile_flagger(&c.context()).await.expect("reconcile");
        c.settle();
        c.advance_clock(std::time::Duration::from_secs(60));
    }
    only_the_canary_written(&c, FLAGGER_CANARY);
    let (reason, message) = stalled(&c.flagger_status());
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains("spec.service.appProtocol: `tcp`"),
        "{message}"
    );
    let events = events(&c);
    assert!(
        !events.iter().any(|e| e.contains("TakenOver")),
        "{events:#?}"
    );
    assert_eq!(
        c.get(PRIMARY).unwrap()["metadata"]["managedFields"],
        primary_fields,
        "Flagger's primary adopted"
    );
}

#[tokio::test]
async fn a_flagger_canary_whose_metric_template_is_datadog_is_refused_at_take_over() {
    let c = flagger_canary_with(|canary| {
        canary["spec"]["analysis"]["metrics"] = templated_metric();
    });
    c.put(FLAGGER_TEMPLATE, template("flagger.app/v1beta1", "datadog"));
    c.clear_calls();
    c.reconcile_flagger(&c.context()).await.expect("reconcile");
    only_the_canary_written(&c, FLAGGER_CANARY);
    let (reason, message) = stalled(&c.flagger_status());
    assert_eq!(reason, "UnsupportedMetricSource");
    assert!(
        message.starts_with(
            "spec.analysis.metrics[1].templateRef: MetricTemplate test/errors: \
             spec.provider.type: `datadog` (Datadog) is one of Flagger's metric providers that \
             Fledge does not support"
        ),
        "{message}"
    );
    // Once the template is one Fledge can query, the Canary is taken over.
    c.put(
        FLAGGER_TEMPLATE,
        template("flagger.app/v1beta1", "prometheus"),
    );
    c.clear_calls();
    c.reconcile_flagger(&c.context()).await.expect("reconcile");
    let events = events(&c);
    assert!(
        events.iter().any(|e| e.contains("Normal TakenOver")),
        "{events:#?}"
    );
}

#[tokio::test]
async fn a_new_canary_whose_metric_template_fledge_cannot_query_is_refused_before_onboarding() {
    let c = cluster_with(
        canary(json!({"analysis": {"metrics": templated_metric()}})),
        Some(deployment("podinfo:1")),
    );
    c.put(
        FLEDGE_TEMPLATE,
        template("fledge.dev/v1alpha1", "cloudwatch"),
    );
    c.clear_calls();
    c.reconcile(&c.context()).await.expect("reconcile");
    only_the_canary_written(&c, CANARY);
    assert!(c.get(PRIMARY).is_none(), "no primary is created");
    let (reason, message) = stalled(&c.get(CANARY).unwrap()["status"]);
    assert_eq!(reason, "UnsupportedMetricSource");
    assert!(
        message.contains("`cloudwatch` (Amazon CloudWatch)"),
        "{message}"
    );
}

#[test]
fn a_metric_template_of_another_provider_does_not_validate_naming_the_field_and_value() {
    for (kind, says) in [
        (
            "newrelic",
            "`newrelic` (New Relic) is one of Flagger's metric providers",
        ),
        (
            "opentsdb",
            "unknown metric provider `opentsdb`; only prometheus",
        ),
    ] {
        let text = serde_json::to_string(&template("flagger.app/v1beta1", kind)).unwrap();
        match load_manifests(&text) {
            Err(LoadError::Invalid { kind, errors, .. }) => {
                assert_eq!(kind, "MetricTemplate");
                assert_eq!(errors.0.len(), 1, "{errors}");
                assert_eq!(errors.0[0].path, "spec.provider.type");
                assert!(errors.0[0].message.contains(says), "{errors}");
            }
            other => panic!("{kind}: {other:?}"),
        }
    }
    let text = serde_json::to_string(&template("flagger.app/v1beta1", "prometheus")).unwrap();
    assert!(load_manifests(&text).is_ok());
}

/// With a provider Fledge supports, a leftover reference to another provider's object is
/// not used, and said so.
#[test]
fn a_reference_to_another_providers_object_beside_a_supported_provider_is_warned_unused() {
    let spec = |provider: &str| {
        let mut c = canary(json!({"ingressRef": {"kind": "Ingress", "name": "podinfo"}}));
        c["spec"]["provider"] = json!(provider);
        serde_json::from_value::<fledge_controller::spec::CanarySpec>(c["spec"].clone()).unwrap()
    };
    let istio = spec("istio");
    assert!(fledge_controller::spec::validate(&istio).is_ok());
    let warned: Vec<String> = fledge_controller::spec::warnings(&istio)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        warned,
        [
            "spec.ingressRef: not used: names an Ingress (providers nginx, skipper); provider istio does not route through it"
        ]
    );
}
