//! The pure routing vocabulary: every provider's reader inverts its builder, and the objects
//! read the way Flagger writes them. No cluster needed: these run without default features.

use fledge_controller::routes::{PROVIDER_NAMES, Provider, RouteError, Routes, service_names};
use fledge_controller::spec::Canary;
use proptest::prelude::*;
use serde_json::{Value, json};

fn canary(spec: Value) -> Canary {
    let object = json!({
        "apiVersion": "fledge.dev/v1alpha1",
        "kind": "Canary",
        "metadata": { "name": "podinfo", "namespace": "test" },
        "spec": spec,
    });
    serde_json::from_value(object).expect("fixture is a Canary")
}

fn ab_canary() -> Canary {
    canary(json!({
        "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo" },
        "service": { "port": 9898, "timeout": "2s" },
        "analysis": { "iterations": 3, "match": [
            { "headers": { "x-canary": { "exact": "insider" } } },
            { "headers": { "cookie": { "regex": "^(.*?;)?(canary=always)(;.*)?$" } } },
        ] },
    }))
}

fn providers() -> Vec<Provider> {
    PROVIDER_NAMES.iter().map(|n| n.parse().unwrap()).collect()
}

/// The routing object's `spec`, as the provider's router writes it.
fn written(provider: Provider, c: &Canary, routes: &Routes) -> Value {
    provider.routing_object(c, routes).expect("buildable")["spec"].clone()
}

/// A string match as a Canary writes it.
fn string_match() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z]{1,6}".prop_map(|v| json!({ "exact": v })),
        "[a-z]{1,6}".prop_map(|v| json!({ "prefix": v })),
        "[a-z]{1,4}\\.\\*".prop_map(|v| json!({ "regex": v })),
    ]
}

/// One A/B match block: headers, and sometimes a path or a method.
fn ab_match() -> impl Strategy<Value = Value> {
    (
        proptest::collection::btree_map("x-[a-z]{1,5}", string_match(), 0..3),
        proptest::option::of(prop_oneof![Just("/"), Just("/api"), Just("/v2/")]),
        proptest::option::of(prop_oneof![Just("GET"), Just("post")]),
    )
        .prop_map(|(headers, uri, method)| {
            let mut m = json!({});
            if !headers.is_empty() {
                m["headers"] = json!(headers);
            }
            if let Some(prefix) = uri {
                m["uri"] = json!({ "prefix": prefix });
            }
            if let Some(method) = method {
                m["method"] = json!({ "exact": method });
            }
            if m.as_object().is_some_and(|o| o.is_empty()) {
                m["headers"] = json!({ "x-canary": { "exact": "insider" } });
            }
            m
        })
}

/// Canaries as users write them: service names (absent, empty, other than the target), ports,
/// hosts, gateways and gatewayRefs, header rewrites, retries, timeouts and A/B matches.
fn any_canary() -> impl Strategy<Value = Canary> {
    (
        prop_oneof![Just(None), Just(Some("")), Just(Some("frontend"))],
        1i32..65536,
        proptest::sample::subsequence(vec!["app.example.com", "podinfo.test.svc"], 0..=2),
        prop_oneof![
            Just(vec![]),
            Just(vec!["public-gateway"]),
            Just(vec!["mesh", "ingress/public"])
        ],
        any::<bool>(),
        proptest::option::of(prop_oneof![
            Just(json!({ "request": { "set": { "x-a": "1" }, "remove": ["x-b"] } })),
            Just(json!({ "response": { "add": { "x-c": "2", "x-b": "3" } } })),
        ]),
        proptest::option::of(prop_oneof![Just("2s"), Just("500ms")]),
        any::<bool>(),
        proptest::collection::vec(ab_match(), 0..3),
    )
        .prop_map(
            |(name, port, hosts, gateways, gateway_refs, headers, timeout, retries, matches)| {
                let mut service = json!({ "port": port, "hosts": hosts, "gateways": gateways });
                if let Some(name) = name {
                    service["name"] = json!(name);
                }
                if gateway_refs {
                    service["gatewayRefs"] = json!([{ "name": "public", "namespace": "ingress" }]);
                }
                if let Some(headers) = headers {
                    service["headers"] = headers;
                }
                if let Some(timeout) = timeout {
                    service["timeout"] = json!(timeout);
                }
                if retries {
                    service["retries"] = json!({ "attempts": 3, "perTryTimeout": "1s" });
                }
                canary(json!({
                    "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo" },
                    "service": service,
                    "analysis": { "iterations": 3, "match": matches },
                }))
            },
        )
}

/// Splits as the rollout core asks for them.
fn any_routes(can_match: bool) -> impl Strategy<Value = Routes> {
    (0u8..=100, proptest::option::of(0u8..=100), any::<bool>()).prop_map(
        move |(canary, mirror, matched)| Routes {
            primary: 100 - canary,
            canary,
            mirror,
            matched: matched && can_match,
        },
    )
}

proptest! {
    #[test]
    fn every_provider_reads_back_exactly_the_split_it_wrote_for_any_canary(
        (c, routes) in any_canary().prop_flat_map(|c| {
            let can_match = !c.spec.analysis.match_.is_empty();
            (Just(c), any_routes(can_match))
        }),
    ) {
        for provider in providers() {
            let supported = (routes.mirror.is_none() || provider.can_mirror())
                && (!routes.matched || provider.can_match());
            match provider.objects(&c, &routes) {
                Ok(objects) => {
                    prop_assert!(supported, "{provider} built what it cannot express");
                    let spec = &objects.last().expect("a routing object")["spec"];
                    prop_assert_eq!(provider.read_routes(&c, spec), Ok(routes));
                    prop_assert_eq!(provider.check_stored(&c, &routes, spec), Ok(()));
                }
                Err(RouteError::Unsupported { .. }) => prop_assert!(!supported, "{provider}"),
                // Only an A/B match an HTTPRoute cannot tell from its defaulted match may be
                // refused, at the field that holds it.
                Err(RouteError::InvalidSpec { field, reason }) => prop_assert!(
                    matches!(provider, Provider::GatewayApi(_))
                        && routes.matched
                        && field.starts_with("spec.analysis.match["),
                    "{provider}: {field}: {reason}"
                ),
            }
        }
    }
}

#[test]
fn a_gateway_route_whose_mirror_percent_the_api_server_pruned_is_refused_naming_the_cause() {
    let c = ab_canary();
    let provider: Provider = "gatewayapi:v1".parse().unwrap();
    let routes = Routes {
        mirror: Some(50),
        ..Routes::PRIMARY_ONLY
    };
    let mut spec = written(provider, &c, &routes);
    assert_eq!(provider.check_stored(&c, &routes, &spec), Ok(()));
    // What an HTTPRoute CRD older than v1.2 keeps of the filter.
    let filter = &mut spec["rules"][0]["filters"];
    let mirror = filter
        .as_array_mut()
        .and_then(|fs| fs.iter_mut().find(|f| f["type"] == "RequestMirror"))
        .expect("a mirror filter");
    mirror["requestMirror"]
        .as_object_mut()
        .unwrap()
        .remove("percent");
    let e = provider.check_stored(&c, &routes, &spec).unwrap_err();
    assert!(
        e.contains("requestMirror.percent") && e.contains("v1.2"),
        "{e}"
    );
}

#[test]
fn under_ab_testing_matched_requests_go_all_to_the_canary_and_the_rest_to_the_primary() {
    let c = ab_canary();
    let ab = Routes {
        matched: true,
        ..Routes::PRIMARY_ONLY
    };
    let vs = written(Provider::Istio, &c, &ab);
    let destinations = |rule: &Value| -> Vec<(String, u64)> {
        rule["route"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let host = d["destination"]["host"].as_str().unwrap().to_string();
                (host, d["weight"].as_u64().unwrap())
            })
            .collect()
    };
    assert!(vs["http"][0]["match"].is_array());
    assert_eq!(
        destinations(&vs["http"][0]),
        [
            ("podinfo-primary".into(), 0),
            ("podinfo-canary".into(), 100)
        ]
    );
    assert!(vs["http"][1]["match"].is_null());
    assert_eq!(
        destinations(&vs["http"][1]),
        [
            ("podinfo-primary".into(), 100),
            ("podinfo-canary".into(), 0)
        ]
    );
    let gateway_api: Provider = "gatewayapi:v1".parse().unwrap();
    let hr = written(gateway_api, &c, &ab);
    let weights: Vec<u64> = hr["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, [0, 100], "{hr}");
}

#[test]
fn a_virtual_service_as_flagger_writes_it_for_ab_testing_reads_as_matched() {
    // Flagger's A/B route: primary 0/canary 100 on the matched rule, a lone primary after it.
    let c = ab_canary();
    let spec = json!({ "http": [
        { "match": [{ "headers": { "x-canary": { "exact": "insider" } } }],
          "route": [
            { "destination": { "host": "podinfo-primary" }, "weight": 0 },
            { "destination": { "host": "podinfo-canary" }, "weight": 100 },
          ] },
        { "route": [{ "destination": { "host": "podinfo-primary" }, "weight": 0 }] },
    ] });
    let ab = Routes {
        matched: true,
        ..Routes::PRIMARY_ONLY
    };
    assert_eq!(Provider::Istio.read_routes(&c, &spec), Ok(ab));
}

#[test]
fn an_ab_rule_that_keeps_matched_requests_on_the_primary_is_not_taken_for_ab() {
    // What an earlier Fledge wrote: matched requests on the primary. The drift check must see
    // it as different from A/B, so the repair rewrites it.
    let c = ab_canary();
    let spec = json!({ "http": [
        { "match": [{ "headers": { "x-canary": { "exact": "insider" } } }],
          "route": [
            { "destination": { "host": "podinfo-primary" }, "weight": 100 },
            { "destination": { "host": "podinfo-canary" }, "weight": 0 },
          ] },
        { "route": [
            { "destination": { "host": "podinfo-primary" }, "weight": 100 },
            { "destination": { "host": "podinfo-canary" }, "weight": 0 },
          ] },
    ] });
    let read = Provider::Istio.read_routes(&c, &spec);
    assert!(read.is_err(), "{read:?}");
}

#[test]
fn an_empty_service_name_falls_back_to_the_target_for_every_service() {
    let c = canary(json!({
        "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo" },
        "service": { "name": "", "port": 9898 },
        "analysis": { "stepWeight": 10, "maxWeight": 50 },
    }));
    let names = service_names(&c);
    assert_eq!(
        (
            names.apex.as_str(),
            names.primary.as_str(),
            names.canary.as_str()
        ),
        ("podinfo", "podinfo-primary", "podinfo-canary")
    );
}

#[test]
fn istio_writes_destination_rules_before_the_virtual_service_that_names_their_hosts() {
    let objects = Provider::Istio
        .objects(&ab_canary(), &Routes::PRIMARY_ONLY)
        .unwrap();
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["DestinationRule", "DestinationRule", "VirtualService"]
    );
}
