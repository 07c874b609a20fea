//! Istio: the exact VirtualService and DestinationRules, and the requests the router makes.

use super::*;

#[test]
fn istio_gets_a_virtual_service_with_weighted_primary_and_canary_destinations() {
    let c = canary(json!({
        "service": {
            "hosts": ["app.example.com"],
            "gateways": ["public-gateway.istio-system.svc.cluster.local"],
            "headers": { "request": { "add": { "x-envoy-upstream-rq-timeout-ms": "15000" } } },
            "retries": { "attempts": 3, "perTryTimeout": "1s", "retryOn": "gateway-error" },
            "timeout": "30s",
            "apex": { "labels": { "team": "web" } },
        }
    }));
    let vs = istio::virtual_service(&c, &weights(90, 10)).ok();
    assert_eq!(
        vs,
        Some(json!({
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "VirtualService",
            "metadata": { "name": "podinfo", "namespace": "test", "labels": { "team": "web" } },
            "spec": {
                "hosts": ["app.example.com", "podinfo"],
                "gateways": ["public-gateway.istio-system.svc.cluster.local"],
                "http": [{
                    "headers": { "request": { "add": { "x-envoy-upstream-rq-timeout-ms": "15000" } } },
                    "retries": { "attempts": 3, "perTryTimeout": "1s", "retryOn": "gateway-error" },
                    "timeout": "30s",
                    "route": [
                        istio_destination("podinfo-primary", 90),
                        istio_destination("podinfo-canary", 10),
                    ],
                }],
            },
        }))
    );
}

#[test]
fn istio_routes_the_mesh_gateway_when_no_gateway_is_given() {
    let vs = istio::virtual_service(&canary(json!({})), &Routes::PRIMARY_ONLY).ok();
    assert_eq!(
        vs.map(|v| v["spec"].clone()),
        Some(json!({
            "hosts": ["podinfo"],
            "gateways": ["mesh"],
            "http": [{ "route": [
                istio_destination("podinfo-primary", 100),
                istio_destination("podinfo-canary", 0),
            ] }],
        }))
    );
}

#[test]
fn istio_ab_testing_sends_matching_requests_to_the_canary_and_the_rest_to_the_primary() {
    let c = canary(json!({
        "analysis": { "iterations": 10, "match": [
            { "headers": { "x-canary": { "exact": "insider" } } },
            { "headers": { "cookie": { "regex": "^(.*?;)?(canary=always)(;.*)?$" } } },
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
    let vs = istio::virtual_service(&c, &routes).ok();
    assert_eq!(
        vs.map(|v| v["spec"]["http"].clone()),
        Some(json!([
            {
                "match": [
                    { "headers": { "x-canary": { "exact": "insider" } } },
                    { "headers": { "cookie": { "regex": "^(.*?;)?(canary=always)(;.*)?$" } } },
                ],
                "route": [
                    istio_destination("podinfo-primary", 0),
                    istio_destination("podinfo-canary", 100),
                ],
            },
            { "route": [
                istio_destination("podinfo-primary", 100),
                istio_destination("podinfo-canary", 0),
            ] },
        ]))
    );
    assert_eq!(
        istio::read_routes(
            &c,
            &istio::virtual_service(&c, &routes).unwrap_or_default()["spec"]
        ),
        Ok(routes)
    );
}

#[test]
fn istio_mirrors_a_percentage_of_primary_traffic_to_the_canary() {
    let routes = Routes {
        primary: 100,
        canary: 0,
        mirror: Some(25),
        matched: false,
    };
    let vs = istio::virtual_service(&canary(json!({})), &routes).ok();
    assert_eq!(
        vs.map(|v| v["spec"]["http"].clone()),
        Some(json!([{
            "route": [
                istio_destination("podinfo-primary", 100),
                istio_destination("podinfo-canary", 0),
            ],
            "mirror": { "host": "podinfo-canary", "port": { "number": 9898 } },
            "mirrorPercentage": { "value": 25.0 },
        }]))
    );
}

#[test]
fn istio_destination_rules_carry_the_service_traffic_policy() {
    let c =
        canary(json!({ "service": { "trafficPolicy": { "tls": { "mode": "ISTIO_MUTUAL" } } } }));
    assert_eq!(
        istio::destination_rule(&c, "podinfo-canary"),
        json!({
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "DestinationRule",
            "metadata": { "name": "podinfo-canary", "namespace": "test" },
            "spec": { "host": "podinfo-canary", "trafficPolicy": { "tls": { "mode": "ISTIO_MUTUAL" } } },
        })
    );
}

#[test]
fn a_split_that_does_not_add_up_to_one_hundred_is_refused_before_any_write() {
    let e = istio::virtual_service(&canary(json!({})), &weights(90, 20)).err();
    assert!(matches!(e, Some(RouteError::InvalidSpec { .. })), "{e:?}");
}

#[test]
fn the_service_name_overrides_the_target_name_for_every_object() {
    let c = canary(json!({ "service": { "name": "frontend" } }));
    let vs = istio::virtual_service(&c, &Routes::PRIMARY_ONLY).ok();
    assert_eq!(
        vs.map(|v| (
            v["metadata"]["name"].clone(),
            v["spec"]["http"][0]["route"][1].clone()
        )),
        Some((json!("frontend"), istio_destination("frontend-canary", 0)))
    );
}

// ---------------------------------------------------------------- Istio: requests

#[tokio::test]
async fn istio_reconcile_creates_destination_rules_and_a_virtual_service_all_to_primary() {
    let fake = FakeApi::default();
    let c = canary(json!({}));
    let result = match router("istio", fake.client()) {
        Ok(r) => bounded(r.reconcile(&c)).await,
        Err(e) => panic!("{e}"),
    };
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        fake.calls(),
        vec![
            format!("GET {DR_PRIMARY}"),
            format!("PATCH {DR_PRIMARY}"),
            format!("GET {DR_CANARY}"),
            format!("PATCH {DR_CANARY}"),
            format!("GET {VS}"),
            format!("PATCH {VS}"),
        ]
    );
    for seen in fake
        .seen()
        .iter()
        .filter(|s| s.method == "PATCH" && !is_dry_run(&s.query))
    {
        let mut params: Vec<&str> = seen.query.split('&').filter(|p| !p.is_empty()).collect();
        params.sort();
        assert_eq!(params, vec!["fieldManager=fledge", "force=true"]);
        assert_eq!(seen.content_type, "application/apply-patch+yaml");
    }
    let mut expected = istio::virtual_service(&c, &Routes::PRIMARY_ONLY).unwrap_or_default();
    expected["metadata"]["ownerReferences"] = owner();
    assert_eq!(fake.applied().last(), Some(&expected));
}

#[tokio::test]
async fn istio_reconcile_keeps_the_weights_of_a_rollout_in_progress() {
    let c = canary(json!({}));
    let mut live = istio::virtual_service(&c, &weights(70, 30)).unwrap_or_default();
    live["metadata"]["ownerReferences"] = owner();
    let fake = FakeApi::with(&[(VS, live)]);
    let router = router("istio", fake.client()).ok();
    if let Some(r) = &router {
        let result = bounded(r.reconcile(&c)).await;
        assert!(result.is_ok(), "{result:?}");
    }
    let applied = fake.applied();
    assert_eq!(
        applied
            .last()
            .map(|v| v["spec"]["http"][0]["route"].clone()),
        Some(json!([
            istio_destination("podinfo-primary", 70),
            istio_destination("podinfo-canary", 30),
        ]))
    );
}

#[tokio::test]
async fn istio_set_routes_leaves_fields_other_managers_own_alone() {
    let c = canary(json!({}));
    // A VirtualService someone else created, with their own labels and exportTo.
    let live = json!({
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {
            "name": "podinfo", "namespace": "test", "resourceVersion": "41",
            "labels": { "owner": "platform-team" },
            "annotations": { "note": "hands off" },
        },
        "spec": {
            "hosts": ["podinfo"],
            "exportTo": ["."],
            "http": [{ "route": [istio_destination("podinfo-primary", 100)] }],
        },
    });
    let fake = FakeApi::with(&[(VS, live)]);
    let router = router("istio", fake.client()).ok();
    if let Some(r) = &router {
        let result = bounded(r.set_routes(&c, &weights(60, 40))).await;
        assert!(result.is_ok(), "{result:?}");
    }
    assert_eq!(
        fake.calls(),
        vec![format!("GET {VS}"), format!("PATCH {VS}")]
    );
    // The apply names only what Fledge owns, and does not adopt the user's object; it records
    // the spec the user wrote, to give it back when the Canary goes.
    let mut expected = istio::virtual_service(&c, &weights(60, 40)).unwrap_or_default();
    expected["metadata"]["annotations"] = json!({
        "fledge.dev/original-spec": json!({
            "hosts": ["podinfo"],
            "exportTo": ["."],
            "http": [{ "route": [istio_destination("podinfo-primary", 100)] }],
        }).to_string()
    });
    assert_eq!(fake.applied(), vec![expected]);
    let after = fake.object(VS);
    assert_eq!(
        after["metadata"]["labels"],
        json!({ "owner": "platform-team" })
    );
    assert_eq!(after["metadata"]["annotations"]["note"], "hands off");
    assert_eq!(after["spec"]["exportTo"], json!(["."]));
    assert_eq!(
        after["spec"]["http"][0]["route"][1],
        istio_destination("podinfo-canary", 40)
    );
}

#[tokio::test]
async fn istio_get_routes_reads_weights_mirror_and_match_back() {
    let c = canary(
        json!({ "analysis": { "iterations": 5, "match": [ { "headers": { "x": { "exact": "1" } } } ] } }),
    );
    // What the rollout core asks for during A/B testing: the general traffic stays on the
    // primary, matched requests go to the canary.
    let routes = Routes {
        primary: 100,
        canary: 0,
        mirror: None,
        matched: true,
    };
    let live = istio::virtual_service(&c, &routes).unwrap_or_default();
    let fake = FakeApi::with(&[(VS, live)]);
    let got = match router("istio", fake.client()) {
        Ok(r) => bounded(r.get_routes(&c)).await.ok(),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(got, Some(routes));

    let mirrored = Routes {
        primary: 100,
        canary: 0,
        mirror: Some(50),
        matched: false,
    };
    let spec = istio::virtual_service(&canary(json!({})), &mirrored).unwrap_or_default();
    assert_eq!(
        istio::read_routes(&canary(json!({})), &spec["spec"]),
        Ok(mirrored)
    );
}

#[tokio::test]
async fn a_hand_edited_virtual_service_is_reported_not_misread() {
    let c = canary(json!({}));
    let mut live = istio::virtual_service(&c, &weights(90, 10)).unwrap_or_default();
    live["spec"]["http"][0]["route"][0]["weight"] = json!(70);
    let fake = FakeApi::with(&[(VS, live)]);
    let got = match router("istio", fake.client()) {
        Ok(r) => bounded(r.get_routes(&c)).await,
        Err(e) => panic!("{e}"),
    };
    match got {
        Err(RouterError::Malformed {
            kind, name, reason, ..
        }) => {
            assert_eq!((kind, name.as_str()), ("VirtualService", "podinfo"));
            assert!(reason.contains("do not add up to 100"), "{reason}");
        }
        other => panic!("expected a malformed VirtualService, got {other:?}"),
    }
}

#[tokio::test]
async fn get_routes_says_when_the_object_is_gone() {
    let fake = FakeApi::default();
    let got = match router("istio", fake.client()) {
        Ok(r) => bounded(r.get_routes(&canary(json!({})))).await,
        Err(e) => panic!("{e}"),
    };
    assert!(
        matches!(
            &got,
            Err(RouterError::NotFound {
                kind: "VirtualService",
                ..
            })
        ),
        "{got:?}"
    );
}

#[tokio::test]
async fn finalize_sends_everything_to_the_apex_service_and_writes_nothing_when_the_object_is_gone()
{
    let c = canary(json!({}));
    let mut live = istio::virtual_service(&c, &weights(50, 50)).unwrap_or_default();
    live["metadata"]["ownerReferences"] = owner();
    let fake = FakeApi::with(&[(VS, live)]);
    if let Ok(r) = router("istio", fake.client()) {
        let result = bounded(r.finalize(&c)).await;
        assert!(result.is_ok(), "{result:?}");
    }
    // Not to the primary: it may be deleted (revertOnDeletion) before this object is.
    let mut expected = istio::virtual_service(&c, &Routes::PRIMARY_ONLY).unwrap_or_default();
    expected["metadata"]["ownerReferences"] = owner();
    expected["spec"]["http"][0]["route"][0]["destination"]["host"] = json!("podinfo");
    assert_eq!(fake.applied(), vec![expected]);

    let empty = FakeApi::default();
    if let Ok(r) = router("istio", empty.client()) {
        let result = bounded(r.finalize(&c)).await;
        assert!(result.is_ok(), "{result:?}");
    }
    let rules = "/apis/networking.istio.io/v1beta1/namespaces/test/destinationrules";
    assert_eq!(
        empty.calls(),
        vec![
            format!("GET {rules}/podinfo-primary"),
            format!("GET {rules}/podinfo-canary"),
            format!("GET {VS}")
        ]
    );
}

/// SMI does not define a TrafficSplit whose backend is its own root Service, and a GAMMA
/// HTTPRoute attached to the apex keeps rejecting requests that match none of its rules: a mesh
/// route of Fledge's goes with the Canary and the apex Service routes as plain Kubernetes.
#[tokio::test]
async fn finalize_deletes_a_mesh_route_of_its_own_rather_than_point_the_apex_at_itself() {
    let c = canary(json!({}));
    for (provider, path, live) in [
        (
            "linkerd",
            TS,
            smi::traffic_split(&c, &weights(50, 50), smi::SmiVersion::V1Alpha2),
        ),
        (
            "gatewayapi:v1",
            HR,
            gateway_api::http_route(&c, &weights(50, 50), gateway_api::GatewayVersion::V1),
        ),
    ] {
        let mut live = live.unwrap_or_default();
        live["metadata"]["ownerReferences"] = owner();
        let fake = FakeApi::with(&[(path, live)]);
        if let Ok(r) = router(provider, fake.client()) {
            let result = bounded(r.finalize(&c)).await;
            assert!(result.is_ok(), "{provider}: {result:?}");
        }
        assert_eq!(
            fake.calls(),
            vec![format!("GET {path}"), format!("DELETE {path}")],
            "{provider}"
        );
        assert!(lock(&fake.objects).is_empty(), "{provider}");
    }
}

/// An HTTPRoute on a Gateway is what makes the ingress forward at all: it stays, sending
/// everything to the apex Service, until the Canary's owner reference takes it.
#[tokio::test]
async fn finalize_keeps_an_ingress_http_route_sending_everything_to_the_apex_service() {
    let c = canary(json!({ "service": { "gatewayRefs": [{ "name": "public" }] } }));
    let v1 = gateway_api::GatewayVersion::V1;
    let mut live = gateway_api::http_route(&c, &weights(50, 50), v1).unwrap_or_default();
    live["metadata"]["ownerReferences"] = owner();
    let fake = FakeApi::with(&[(HR, live)]);
    if let Ok(r) = router("gatewayapi:v1", fake.client()) {
        let result = bounded(r.finalize(&c)).await;
        assert!(result.is_ok(), "{result:?}");
    }
    let after = fake.object(HR);
    let backends = &after["spec"]["rules"][0]["backendRefs"];
    assert_eq!(backends[0]["name"], "podinfo", "{after}");
    assert_eq!(backends[0]["weight"], 100, "{after}");
}

/// A TrafficSplit the user wrote is given its own spec back, never deleted.
#[tokio::test]
async fn a_traffic_split_the_user_wrote_is_restored_not_deleted_when_the_canary_goes() {
    let c = canary(json!({}));
    let users = json!({
        "apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"service": "podinfo", "backends": [{"service": "podinfo-v1", "weight": 100}]}
    });
    let fake = FakeApi::with(&[(TS, users.clone())]);
    if let Ok(r) = router("linkerd", fake.client()) {
        assert!(bounded(r.reconcile(&c)).await.is_ok());
        assert!(bounded(r.finalize(&c)).await.is_ok());
    }
    assert!(fake.calls().iter().all(|c| !c.starts_with("DELETE")));
    assert_eq!(fake.object(TS)["spec"], users["spec"]);
}

#[tokio::test]
async fn an_api_server_error_names_the_object_that_could_not_be_written() {
    let fake = FakeApi {
        fail_with: Some(500),
        ..FakeApi::default()
    };
    let got = match router("istio", fake.client()) {
        Ok(r) => bounded(r.set_routes(&canary(json!({})), &weights(90, 10))).await,
        Err(e) => panic!("{e}"),
    };
    let message = got.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("VirtualService test/podinfo"), "{message}");
}

#[tokio::test]
async fn unknown_providers_are_refused() {
    let fake = FakeApi::default();
    assert!(matches!(
        router("nginx", fake.client()),
        Err(UnknownProvider(p)) if p == "nginx"
    ));
}
