//! The pure routing vocabulary: every provider's reader inverts its builder, and the objects
//! read the way Flagger writes them. No cluster needed: these run without default features.

use fledge_controller::routes::{PROVIDER_NAMES, Provider, Routes, service_names};
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

proptest! {
    #[test]
    fn every_provider_reads_back_exactly_the_split_it_wrote(
        canary_weight in 0u8..=100,
        mirror in proptest::option::of(0u8..=100),
        matched in any::<bool>(),
    ) {
        let routes = Routes { primary: 100 - canary_weight, canary: canary_weight, mirror, matched };
        let c = ab_canary();
        for provider in providers() {
            let supported = (mirror.is_none() || provider.can_mirror())
                && (!matched || provider.can_match());
            match provider.routing_object(&c, &routes) {
                Ok(object) => {
                    prop_assert!(supported, "{provider} built what it cannot express");
                    prop_assert_eq!(provider.read_routes(&c, &object["spec"]), Ok(routes));
                }
                Err(e) => prop_assert!(!supported, "{provider}: {e}"),
            }
        }
    }
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
