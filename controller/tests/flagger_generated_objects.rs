//! What Fledge generates for a Flagger user's Canary, as Flagger generates it: the primary's
//! HPA, the Services, the routes' share of the `service` block and the `Promoted` condition
//! (review r14e of issue 14). Pure: no cluster needed (the cluster feature's builders are
//! called directly).
#![cfg(feature = "cluster")]

use std::collections::BTreeMap;

use fledge_controller::cluster::{status, workloads};
use fledge_controller::rollout::{Phase, RolloutState};
use fledge_controller::routes::{GatewayVersion, Provider, Routes};
use fledge_controller::spec::{Canary, validate, warnings};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::{Value, json};

/// Flagger's Canary of podinfo (`flagger.app/v1beta1`) with `extra` merged into its spec.
fn flagger_canary(extra: Value) -> Canary {
    let mut spec = json!({
        "provider": "istio",
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": {"interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
                     "metrics": [{"name": "request-success-rate", "interval": "1m",
                                  "thresholdRange": {"min": 99}}]}
    });
    merge(&mut spec, extra);
    let mut c: Canary = serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "f-uid-1"},
        "spec": spec,
    }))
    .expect("a Canary");
    c.metadata.uid = Some("f-uid-1".into());
    c
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn target() -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"selector": {"matchLabels": {"app": "podinfo"}},
                 "template": {"metadata": {"labels": {"app": "podinfo"}},
                              "spec": {"containers": [{"name": "app", "image": "podinfo:1"}]}}}
    }))
    .unwrap()
}

/// `autoscalerRef.primaryScalerReplicas` with an HPA: Flagger applies it to the primary's HPA
/// as it does to a ScaledObject (pkg/canary/hpa_reconciler.go, `reconcilePrimaryHpaV2`:
/// `MinReplicas`/`MaxReplicas` replaced from `PrimaryScalerReplicas`), so that the primary is
/// sized apart from the canary (review r14e finding 1: Fledge gave it the target HPA's bounds).
#[test]
fn primary_scaler_replicas_bound_the_primary_hpa_as_in_flagger() {
    let canary = flagger_canary(json!({
        "autoscalerRef": {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                          "name": "podinfo",
                          "primaryScalerReplicas": {"minReplicas": 4, "maxReplicas": 20}}
    }));
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": "podinfo"},
                 "minReplicas": 1, "maxReplicas": 3}
    }))
    .unwrap();
    let said: Vec<String> = warnings(&canary.spec)
        .iter()
        .map(ToString::to_string)
        .collect();
    let primary = workloads::primary_hpa(&canary, &hpa);
    let spec = primary.spec.expect("a spec");
    assert!(said.is_empty(), "{said:?}");
    assert_eq!(
        (spec.min_replicas, spec.max_replicas),
        (Some(4), 20),
        "warnings: {said:?}"
    );
}

/// Flagger's `service` fields `appProtocol`, `match`, `rewrite`, `corsPolicy`, `delegation`
/// and `mirror` are kept and written as Flagger writes them (the tests below), refused where
/// the provider cannot carry them, or said to be unused: never read as if absent (review r14e
/// finding 2: an Istio route's URI rewrite and CORS policy were dropped at the first rollout,
/// a delegate VirtualService got hosts, the Services' `appProtocol` was lost).
#[test]
fn flaggers_service_routing_fields_are_kept_refused_or_said_unused() {
    let fields = json!({
        "appProtocol": "http",
        "match": [{"uri": {"prefix": "/api"}}],
        "rewrite": {"uri": "/"},
        "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}],
                       "allowMethods": ["GET"]},
        "delegation": true,
        "mirror": [{"backendRef": {"name": "shadow", "port": 9898}}],
    });
    let mut silent = Vec::new();
    for (key, value) in fields.as_object().unwrap() {
        let canary = flagger_canary(json!({"service": {key.as_str(): value.clone()}}));
        let path = format!("spec.service.{key}");
        let kept = serde_json::to_value(&canary).unwrap()["spec"]["service"]
            .get(key)
            .is_some();
        let refused = validate(&canary.spec)
            .err()
            .is_some_and(|e| e.0.iter().any(|f| f.path.starts_with(&path)));
        let warned = warnings(&canary.spec)
            .iter()
            .any(|w| w.path.starts_with(&path));
        if !(kept || refused || warned) {
            silent.push(path);
        }
    }
    assert!(
        silent.is_empty(),
        "read as if absent, with no error or warning: {silent:?}"
    );
}

/// Each generated Service carries the label Flagger gives it: its selector label (`app`,
/// `name` or `app.kubernetes.io/name`, the one it selects on) set to the Service's own name
/// (pkg/router/kubernetes_default.go `reconcileService`: `metadata.Labels[c.labelSelector] =
/// name`). Flagger users select these Services by it (ServiceMonitors, `kubectl get svc -l
/// app=podinfo-primary`); after a take-over Fledge owns the Services' fields, so an apply
/// without it would remove it (review r14e finding 3).
#[test]
fn generated_services_carry_flaggers_selector_label_named_after_them() {
    let canary = flagger_canary(json!({}));
    let t = target();
    let selectors = workloads::selectors(&t, None).unwrap();
    let svcs = workloads::services(&canary, &selectors, &BTreeMap::new());
    let labels: Vec<(String, Option<String>)> = svcs
        .iter()
        .map(|s| {
            let name = s.metadata.name.clone().unwrap_or_default();
            let app = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app").cloned());
            (name, app)
        })
        .collect();
    assert_eq!(
        labels,
        [
            ("podinfo".to_string(), Some("podinfo".to_string())),
            (
                "podinfo-primary".to_string(),
                Some("podinfo-primary".to_string())
            ),
            (
                "podinfo-canary".to_string(),
                Some("podinfo-canary".to_string())
            ),
        ]
    );
}

/// The `Promoted` condition's message is Flagger's fixed one for the phase
/// (pkg/canary/status.go `MakeStatusConditions`), not Fledge's last decision: tools and
/// runbooks show or match it (Argo CD's health check shows it as the Canary's health
/// message). Review r14e finding 4.
#[test]
fn the_promoted_condition_carries_flaggers_message_for_the_phase() {
    let cases = [
        (
            Phase::Succeeded,
            "Promotion completed! Scaling down podinfo.test",
            "Canary analysis completed successfully, promotion finished.",
        ),
        (
            Phase::Progressing,
            "Advance podinfo.test canary weight 20",
            "New revision detected, progressing canary analysis.",
        ),
        (
            Phase::Failed,
            "Canary failed! Scaling down podinfo.test",
            "Canary analysis failed, Deployment scaled to zero.",
        ),
        (
            Phase::Initialized,
            "Initialization done! podinfo.test",
            "Deployment initialization completed.",
        ),
    ];
    let mut wrong = Vec::new();
    for (phase, event, flaggers) in cases {
        let state = RolloutState {
            phase,
            message: event.to_string(),
            ..RolloutState::default()
        };
        let c = status::promoted_condition(&state, "Deployment");
        assert_eq!(c.reason.as_deref(), Some(phase.to_string().as_str()));
        if c.message.as_deref() != Some(flaggers) {
            wrong.push(format!("{phase}: {:?}, Flagger's {flaggers:?}", c.message));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

fn paths(errors: Vec<fledge_controller::spec::FieldError>) -> Vec<String> {
    errors.into_iter().map(|e| e.to_string()).collect()
}

const AB: Routes = Routes {
    primary: 100,
    canary: 0,
    mirror: None,
    matched: true,
};

const SPLIT: Routes = Routes {
    primary: 80,
    canary: 20,
    mirror: None,
    matched: false,
};

/// Istio, as Flagger's router writes it: every HTTP route carries `service.match`, the
/// `rewrite` (its `uri` and `authority`) and `corsPolicy`; the A/B route's match is
/// `analysis.match` merged into each `service.match`. The split reads back as written: the
/// service match is no A/B match.
#[test]
fn istio_routes_carry_the_service_match_rewrite_and_cors_policy() {
    let canary = flagger_canary(json!({
        "service": {"match": [{"uri": {"prefix": "/api"}}],
                    "rewrite": {"uri": "/", "authority": "podinfo.internal"},
                    "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}]}},
        "analysis": {"match": [{"headers": {"x-canary": {"exact": "insider"}}}]}
    }));
    let vs = Provider::Istio.routing_object(&canary, &SPLIT).unwrap();
    let route = &vs["spec"]["http"][0];
    assert_eq!(route["match"], json!([{"uri": {"prefix": "/api"}}]));
    assert_eq!(
        route["rewrite"],
        json!({"uri": "/", "authority": "podinfo.internal"})
    );
    assert_eq!(
        route["corsPolicy"],
        json!({"allowOrigins": [{"exact": "https://example.com"}]})
    );
    let ab = Provider::Istio.routing_object(&canary, &AB).unwrap();
    let http = ab["spec"]["http"].as_array().unwrap();
    assert_eq!(
        http[0]["match"],
        json!([{"uri": {"prefix": "/api"}, "headers": {"x-canary": {"exact": "insider"}}}])
    );
    assert_eq!(http[1]["match"], json!([{"uri": {"prefix": "/api"}}]));
    assert!(http.iter().all(|r| r["rewrite"]["uri"] == "/"), "{ab:#}");
    for routes in [SPLIT, AB, Routes::PRIMARY_ONLY] {
        let written = Provider::Istio.routing_object(&canary, &routes).unwrap();
        let read = Provider::Istio.read_routes(&canary, &written["spec"]);
        assert_eq!(read, Ok(routes), "{written:#}");
    }
}

/// `delegation`: a delegate VirtualService has no hosts and no gateways; with either set,
/// the Canary is refused at the field, as Flagger's router refuses it.
#[test]
fn a_delegate_virtual_service_has_no_hosts_or_gateways() {
    let canary = flagger_canary(json!({"service": {"delegation": true}}));
    let vs = Provider::Istio.routing_object(&canary, &SPLIT).unwrap();
    assert_eq!(
        (&vs["spec"]["hosts"], &vs["spec"]["gateways"]),
        (&json!([]), &json!([]))
    );
    let hosts = flagger_canary(json!({"service": {"delegation": true,
                                                  "hosts": ["podinfo.example.com"]}}));
    let refused = paths(validate(&hosts.spec).unwrap_err().0);
    assert!(
        refused[0].starts_with("spec.service.delegation: a delegate VirtualService has no hosts"),
        "{refused:?}"
    );
}

/// `appProtocol` is the generated Services' port's; `tcp` on Istio (Flagger writes a TCP
/// route then, Fledge routes HTTP only) is refused at the field.
#[test]
fn app_protocol_is_the_services_and_tcp_is_refused_on_istio() {
    let canary = flagger_canary(json!({"service": {"appProtocol": "grpc"}}));
    let selectors = workloads::selectors(&target(), None).unwrap();
    for svc in workloads::services(&canary, &selectors, &BTreeMap::new()) {
        let port = &svc.spec.unwrap().ports.unwrap()[0];
        assert_eq!(port.app_protocol.as_deref(), Some("grpc"));
    }
    let tcp = flagger_canary(json!({"service": {"appProtocol": "tcp"}}));
    let refused = paths(validate(&tcp.spec).unwrap_err().0);
    assert!(
        refused[0].starts_with("spec.service.appProtocol: `tcp`"),
        "{refused:?}"
    );
}

/// Gateway API, as Flagger's router writes it: every rule matches `service.match` (as
/// HTTPRoute matches), the A/B rule `analysis.match` merged into it; `rewrite` is a URLRewrite
/// filter, each `mirror` a RequestMirror filter and `corsPolicy` a CORS filter. The split
/// reads back as written.
#[test]
fn gateway_api_rules_carry_the_service_match_rewrite_mirrors_and_cors() {
    let canary = flagger_canary(json!({
        "provider": "gatewayapi:v1",
        "service": {"gatewayRefs": [{"name": "public", "namespace": "gw"}],
                    "match": [{"uri": {"prefix": "/api"}}],
                    "rewrite": {"uri": "/", "type": "ReplacePrefixMatch"},
                    "mirror": [{"backendRef": {"name": "shadow", "port": 9898}}],
                    "corsPolicy": {"allowOrigin": ["https://example.com"],
                                   "allowMethods": ["GET"], "maxAge": "24h"}},
        "analysis": {"match": [{"headers": {"x-canary": {"exact": "insider"}}}]}
    }));
    let provider = Provider::GatewayApi(GatewayVersion::V1);
    let route = provider.routing_object(&canary, &SPLIT).unwrap();
    let rule = &route["spec"]["rules"][0];
    assert_eq!(
        rule["matches"],
        json!([{"path": {"type": "PathPrefix", "value": "/api"}}])
    );
    let filters = rule["filters"].as_array().unwrap();
    assert_eq!(
        filters,
        &[
            json!({"type": "URLRewrite", "urlRewrite": {"path": {
                "type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}),
            json!({"type": "RequestMirror",
                   "requestMirror": {"backendRef": {"name": "shadow", "port": 9898}}}),
            json!({"type": "CORS", "cors": {"allowOrigins": ["https://example.com"],
                                            "allowMethods": ["GET"], "maxAge": 86400}}),
        ]
    );
    let ab = provider.routing_object(&canary, &AB).unwrap();
    let rules = ab["spec"]["rules"].as_array().unwrap();
    assert_eq!(
        rules[0]["matches"],
        json!([{"path": {"type": "PathPrefix", "value": "/api"},
                "headers": [{"type": "Exact", "name": "x-canary", "value": "insider"}]}])
    );
    for routes in [SPLIT, AB, Routes::PRIMARY_ONLY] {
        let written = provider.routing_object(&canary, &routes).unwrap();
        let read = provider.read_routes(&canary, &written["spec"]);
        assert_eq!(read, Ok(routes), "{written:#}");
    }
}

/// Where the provider has nothing to carry them in, the fields are said to be unused.
#[test]
fn service_routing_fields_a_provider_cannot_carry_are_said_to_be_unused() {
    let service = json!({"match": [{"uri": {"prefix": "/api"}}], "rewrite": {"uri": "/"},
                         "corsPolicy": {"allowMethods": ["GET"]}, "delegation": true,
                         "mirror": [{"backendRef": {"name": "shadow"}}]});
    let smi = flagger_canary(json!({"provider": "linkerd", "service": service}));
    let said: Vec<String> = warnings(&smi.spec).iter().map(|w| w.path.clone()).collect();
    for field in ["match", "rewrite", "corsPolicy", "delegation", "mirror"] {
        let path = format!("spec.service.{field}");
        assert!(said.contains(&path), "{path}: {said:?}");
    }
    let istio = flagger_canary(json!({"service": {"mirror": [{"backendRef": {"name": "s"}}]}}));
    let said: Vec<String> = warnings(&istio.spec)
        .iter()
        .map(|w| w.path.clone())
        .collect();
    assert_eq!(said, ["spec.service.mirror"]);
}

/// What the API server stores of an HTTPRoute spec: the Gateway API CRD defaults every
/// `HTTPRouteMatch.path` to `{type: PathPrefix, value: /}`.
fn as_stored(spec: &Value) -> Value {
    let mut spec = spec.clone();
    for rule in spec["rules"].as_array_mut().unwrap() {
        for m in rule["matches"].as_array_mut().into_iter().flatten() {
            let m = m.as_object_mut().unwrap();
            m.entry("path")
                .or_insert_with(|| json!({"type": "PathPrefix", "value": "/"}));
        }
    }
    spec
}

/// A `service.match` without `uri` (a tenant header on a shared gateway) on the Gateway API:
/// written without a path, as Flagger writes it, and stored with the `/` prefix the CRD
/// defaults, it still reads back as the general rule, not an A/B one (review r14g finding 1:
/// the read-back check failed every write of such an HTTPRoute).
#[test]
fn gateway_api_service_match_without_uri_reads_back_after_api_server_defaulting() {
    let canary = flagger_canary(json!({
        "provider": "gatewayapi:v1",
        "service": {"gatewayRefs": [{"name": "public", "namespace": "gw"}],
                    "match": [{"headers": {"x-tenant": {"exact": "blue"}}}]},
    }));
    let provider = Provider::GatewayApi(GatewayVersion::V1);
    for routes in [SPLIT, Routes::PRIMARY_ONLY] {
        let written = provider.routing_object(&canary, &routes).unwrap();
        assert_eq!(
            written["spec"]["rules"][0]["matches"],
            json!([{"headers": [{"type": "Exact", "name": "x-tenant", "value": "blue"}]}])
        );
        let stored = as_stored(&written["spec"]);
        assert_eq!(
            provider.check_stored(&canary, &routes, &stored),
            Ok(()),
            "{stored:#}"
        );
    }
    let ab = flagger_canary(json!({
        "provider": "gatewayapi:v1",
        "service": {"gatewayRefs": [{"name": "public", "namespace": "gw"}],
                    "match": [{"headers": {"x-tenant": {"exact": "blue"}}}]},
        "analysis": {"match": [{"headers": {"x-canary": {"exact": "insider"}}}]},
    }));
    let written = provider.routing_object(&ab, &AB).unwrap();
    let stored = as_stored(&written["spec"]);
    assert_eq!(
        provider.check_stored(&ab, &AB, &stored),
        Ok(()),
        "{stored:#}"
    );
}

/// Flagger's Gateway API router builds HTTPRoute matches from `uri`, `method`, `headers` and
/// `queryParams` alone (pkg/router/gateway_api.go, `mapRouteMatches`) and drops a
/// `service.match`'s other conditions: such a Canary is routed, the condition said not to be
/// used, where Fledge refused it (review r14g finding 3). A match left with no condition is
/// dropped, as Flagger drops it.
#[test]
fn a_gateway_api_service_match_condition_flagger_drops_is_warned_not_refused() {
    let canary = flagger_canary(json!({
        "provider": "gatewayapi:v1",
        "service": {"gatewayRefs": [{"name": "public", "namespace": "gw"}],
                    "match": [{"uri": {"prefix": "/api"}, "ignoreUriCase": true},
                              {"sourceLabels": {"app": "web"}}]}
    }));
    let refused = validate(&canary.spec).err().map(|e| e.to_string());
    assert_eq!(refused, None, "Flagger routes this Canary");
    let warned: Vec<String> = warnings(&canary.spec)
        .iter()
        .map(|w| w.path.clone())
        .collect();
    assert_eq!(
        warned,
        [
            "spec.service.match[0].ignoreUriCase",
            "spec.service.match[1].sourceLabels"
        ]
    );
    let provider = Provider::GatewayApi(GatewayVersion::V1);
    let route = provider.routing_object(&canary, &SPLIT).unwrap();
    assert_eq!(
        route["spec"]["rules"][0]["matches"],
        json!([{"path": {"type": "PathPrefix", "value": "/api"}}])
    );
    assert_eq!(provider.read_routes(&canary, &route["spec"]), Ok(SPLIT));
}
