//! Gateway API: the HTTPRoute on gateways or on the apex Service (GAMMA).

use super::*;

fn backend(name: &str, weight: u8) -> Value {
    json!({ "group": "", "kind": "Service", "name": name, "port": 9898, "weight": weight })
}

#[test]
fn gateway_api_gets_an_http_route_attached_to_the_given_gateways() {
    let c = canary(json!({
        "service": {
            "hosts": ["app.example.com"],
            "gatewayRefs": [{ "name": "public", "namespace": "gateways" }],
            "timeout": "15s",
        }
    }));
    let route = gateway_api::http_route(&c, &weights(70, 30), gateway_api::GatewayVersion::V1).ok();
    assert_eq!(
        route,
        Some(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": { "name": "podinfo", "namespace": "test" },
            "spec": {
                "parentRefs": [{ "name": "public", "namespace": "gateways" }],
                "hostnames": ["app.example.com"],
                "rules": [{
                    "timeouts": { "request": "15s" },
                    "backendRefs": [backend("podinfo-primary", 70), backend("podinfo-canary", 30)],
                }],
            },
        }))
    );
}

/// Flagger 1.42's `backendTimeout`: the HTTPRoute's `timeouts.backendRequest`, beside the
/// request timeout or alone, on every rule (A/B testing has two).
#[test]
fn gateway_api_copies_backend_timeout_into_every_rules_backend_request_timeout() {
    let c = canary(json!({ "service": { "timeout": "15s", "backendTimeout": "5s" } }));
    let route = gateway_api::http_route(&c, &weights(70, 30), gateway_api::GatewayVersion::V1)
        .unwrap_or_default();
    assert_eq!(
        route["spec"]["rules"][0]["timeouts"],
        json!({ "request": "15s", "backendRequest": "5s" })
    );
    let c = canary(json!({
        "service": { "backendTimeout": "5s" },
        "analysis": { "iterations": 10, "match": [{ "headers": { "x": { "exact": "y" } } }] },
    }));
    let routes = Routes {
        primary: 100,
        canary: 0,
        mirror: None,
        matched: true,
    };
    let route =
        gateway_api::http_route(&c, &routes, gateway_api::GatewayVersion::V1).unwrap_or_default();
    let rules = route["spec"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(rules.len(), 2, "{route}");
    for rule in rules {
        assert_eq!(
            rule["timeouts"],
            json!({ "backendRequest": "5s" }),
            "{rule}"
        );
    }
}

#[test]
fn gateway_api_without_gateways_attaches_to_the_service_for_mesh_routing() {
    let route = gateway_api::http_route(
        &canary(json!({})),
        &Routes::PRIMARY_ONLY,
        gateway_api::GatewayVersion::V1Beta1,
    )
    .unwrap_or_default();
    assert_eq!(
        route["apiVersion"],
        json!("gateway.networking.k8s.io/v1beta1")
    );
    assert_eq!(
        route["spec"]["parentRefs"],
        json!([{ "group": "", "kind": "Service", "name": "podinfo", "port": 9898 }])
    );
}

#[test]
fn gateway_api_ab_testing_turns_istio_matches_into_header_matches() {
    let c = canary(json!({
        "analysis": { "iterations": 10, "match": [
            { "headers": { "x-canary": { "exact": "insider" }, "user-agent": { "prefix": "Mozilla/5.0 (X" } } },
            { "uri": { "prefix": "/beta" }, "method": { "exact": "get" } },
        ] }
    }));
    // What the rollout core asks for during A/B testing: the general traffic stays on the
    // primary, matched requests go to the canary.
    let routes = Routes {
        primary: 100,
        canary: 0,
        mirror: None,
        matched: true,
    };
    let route =
        gateway_api::http_route(&c, &routes, gateway_api::GatewayVersion::V1).unwrap_or_default();
    assert_eq!(
        route["spec"]["rules"],
        json!([
            {
                "matches": [
                    { "headers": [
                        { "type": "RegularExpression", "name": "user-agent", "value": "^Mozilla/5\\.0 \\(X.*" },
                        { "type": "Exact", "name": "x-canary", "value": "insider" },
                    ] },
                    { "method": "GET", "path": { "type": "PathPrefix", "value": "/beta" } },
                ],
                "backendRefs": [backend("podinfo-primary", 0), backend("podinfo-canary", 100)],
            },
            { "backendRefs": [backend("podinfo-primary", 100), backend("podinfo-canary", 0)] },
        ])
    );
    assert_eq!(gateway_api::read_routes(&c, &route["spec"]), Ok(routes));
}

#[test]
fn gateway_api_refuses_an_istio_match_it_cannot_express_and_names_the_field() {
    let c = canary(json!({
        "analysis": { "iterations": 1, "match": [ { "sourceLabels": { "app": "web" } } ] }
    }));
    // What the rollout core asks for during A/B testing: the general traffic stays on the
    // primary, matched requests go to the canary.
    let routes = Routes {
        primary: 100,
        canary: 0,
        mirror: None,
        matched: true,
    };
    match gateway_api::http_route(&c, &routes, gateway_api::GatewayVersion::V1) {
        Err(RouteError::InvalidSpec { field, .. }) => {
            assert_eq!(field, "spec.analysis.match[0].sourceLabels")
        }
        other => panic!("expected an invalid spec, got {other:?}"),
    }
}

#[test]
fn gateway_api_mirrors_with_a_request_mirror_filter() {
    let routes = Routes {
        primary: 100,
        canary: 0,
        mirror: Some(20),
        matched: false,
    };
    let c = canary(
        json!({ "service": { "headers": { "request": { "set": { "x-b": "2", "x-a": "1" }, "remove": ["x-debug"] } } } }),
    );
    let route =
        gateway_api::http_route(&c, &routes, gateway_api::GatewayVersion::V1).unwrap_or_default();
    assert_eq!(
        route["spec"]["rules"],
        json!([{
            "filters": [
                { "type": "RequestHeaderModifier", "requestHeaderModifier": {
                    "set": [ { "name": "x-a", "value": "1" }, { "name": "x-b", "value": "2" } ],
                    "remove": ["x-debug"],
                } },
                { "type": "RequestMirror", "requestMirror": {
                    "backendRef": { "group": "", "kind": "Service", "name": "podinfo-canary", "port": 9898 },
                    "percent": 20,
                } },
            ],
            "backendRefs": [backend("podinfo-primary", 100), backend("podinfo-canary", 0)],
        }])
    );
    assert_eq!(gateway_api::read_routes(&c, &route["spec"]), Ok(routes));
}

#[test]
fn the_default_path_match_the_api_server_adds_is_not_taken_for_ab_routing() {
    let c = canary(json!({}));
    let spec = json!({ "rules": [{
        "matches": [ { "path": { "type": "PathPrefix", "value": "/" } } ],
        "backendRefs": [
            { "name": "podinfo-primary", "port": 9898, "weight": 9 },
            { "name": "podinfo-canary", "port": 9898, "weight": 1 },
        ],
    }] });
    assert_eq!(gateway_api::read_routes(&c, &spec), Ok(weights(90, 10)));
}

#[tokio::test]
async fn gateway_api_reconcile_creates_the_route_and_set_routes_keeps_foreign_parent_status() {
    let c = canary(json!({ "service": { "gatewayRefs": [{ "name": "public" }] } }));
    let fake = FakeApi::default();
    let router = router("gatewayapi:v1", fake.client());
    if let Ok(r) = &router {
        assert!(bounded(r.reconcile(&c)).await.is_ok());
    }
    // The gateway controller writes status; Fledge never sends it.
    lock(&fake.objects).entry(HR.to_string()).and_modify(|o| {
        o["status"] = json!({ "parents": [{ "controllerName": "example.com/gw" }] })
    });
    if let Ok(r) = &router {
        assert!(bounded(r.set_routes(&c, &weights(50, 50))).await.is_ok());
    }
    assert_eq!(
        fake.calls(),
        vec![
            format!("GET {HR}"),
            format!("PATCH {HR}"),
            format!("GET {HR}"),
            format!("PATCH {HR}"),
        ]
    );
    let mut expected =
        gateway_api::http_route(&c, &weights(50, 50), gateway_api::GatewayVersion::V1)
            .unwrap_or_default();
    expected["metadata"]["ownerReferences"] = owner();
    assert_eq!(fake.applied().last(), Some(&expected));
    assert_eq!(
        fake.object(HR)["status"],
        json!({ "parents": [{ "controllerName": "example.com/gw" }] })
    );
}

/// The API server stores a `service.match` without `uri` with the `/` path prefix its CRD
/// defaults (and a header's type `Exact`): the router's read-back of its dry run and of its
/// apply still finds the split it wrote, and `get_routes` reads it.
#[tokio::test]
async fn gateway_api_service_match_without_a_path_is_written_and_read_back_through_defaults() {
    let c = canary(json!({ "service": {
        "gatewayRefs": [{ "name": "public" }],
        "match": [{ "headers": { "x-tenant": { "exact": "blue" } }, "method": { "exact": "get" } }],
    } }));
    let fake = FakeApi::default();
    let Ok(router) = router("gatewayapi:v1", fake.client()) else {
        panic!("gatewayapi:v1 is a provider")
    };
    bounded(router.reconcile(&c)).await.expect("reconcile");
    let set = bounded(router.set_routes(&c, &weights(80, 20))).await;
    assert!(set.is_ok(), "{set:?}");
    let read = bounded(router.get_routes(&c)).await;
    assert_eq!(read.as_ref().ok(), Some(&weights(80, 20)), "{read:?}");
    assert_eq!(
        fake.object(HR)["spec"]["rules"][0]["matches"],
        json!([{ "path": { "type": "PathPrefix", "value": "/" }, "method": "GET",
                 "headers": [{ "type": "Exact", "name": "x-tenant", "value": "blue" }] }])
    );
}

// ---------------------------------------------------------------- properties
