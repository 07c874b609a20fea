//! SMI (Linkerd): the TrafficSplit by SMI version, weights as integers or quantities, and what
//! SMI cannot express.

use super::*;

#[test]
fn linkerd_gets_a_v1alpha2_traffic_split_with_integer_weights() {
    let c = canary(json!({}));
    let ts = smi::traffic_split(&c, &weights(80, 20), smi::SmiVersion::V1Alpha2).ok();
    assert_eq!(
        ts,
        Some(json!({
            "apiVersion": "split.smi-spec.io/v1alpha2",
            "kind": "TrafficSplit",
            "metadata": { "name": "podinfo", "namespace": "test" },
            "spec": {
                "service": "podinfo",
                "backends": [
                    { "service": "podinfo-primary", "weight": 80 },
                    { "service": "podinfo-canary", "weight": 20 },
                ],
            },
        }))
    );
}

#[test]
fn smi_v1alpha1_writes_weights_as_quantities_and_reads_any_units_back() {
    let c = canary(json!({}));
    let ts =
        smi::traffic_split(&c, &weights(90, 10), smi::SmiVersion::V1Alpha1).unwrap_or_default();
    assert_eq!(
        ts["spec"]["backends"],
        json!([
            { "service": "podinfo-primary", "weight": "900m" },
            { "service": "podinfo-canary", "weight": "100m" },
        ])
    );
    assert_eq!(smi::read_routes(&c, &ts["spec"]), Ok(weights(90, 10)));
    let hand_written = json!({ "backends": [
        { "service": "podinfo-primary", "weight": "3" },
        { "service": "podinfo-canary", "weight": 1 },
    ] });
    assert_eq!(smi::read_routes(&c, &hand_written), Ok(weights(75, 25)));
}

#[test]
fn smi_refuses_mirroring_and_ab_routing_it_cannot_express() {
    let c = canary(json!({}));
    let mirror = Routes {
        mirror: Some(10),
        ..Routes::PRIMARY_ONLY
    };
    assert!(matches!(
        smi::traffic_split(&c, &mirror, smi::SmiVersion::V1Alpha2),
        Err(RouteError::Unsupported { .. })
    ));
    let matched = Routes {
        matched: true,
        ..Routes::PRIMARY_ONLY
    };
    assert!(matches!(
        smi::traffic_split(&c, &matched, smi::SmiVersion::V1Alpha2),
        Err(RouteError::Unsupported { .. })
    ));
}

#[tokio::test]
async fn linkerd_set_routes_applies_the_traffic_split_and_keeps_foreign_fields() {
    let c = canary(json!({}));
    let live = json!({
        "apiVersion": "split.smi-spec.io/v1alpha2",
        "kind": "TrafficSplit",
        "metadata": { "name": "podinfo", "namespace": "test", "labels": { "app": "podinfo" },
                      "ownerReferences": owner() },
        "spec": { "service": "podinfo", "backends": [] },
    });
    let fake = FakeApi::with(&[(TS, live)]);
    if let Ok(r) = router("linkerd", fake.client()) {
        let result = bounded(r.set_routes(&c, &weights(60, 40))).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(bounded(r.get_routes(&c)).await.ok(), Some(weights(60, 40)));
    }
    let mut expected =
        smi::traffic_split(&c, &weights(60, 40), smi::SmiVersion::V1Alpha2).unwrap_or_default();
    expected["metadata"]["ownerReferences"] = owner();
    assert_eq!(fake.applied(), vec![expected]);
    assert_eq!(
        fake.object(TS)["metadata"]["labels"],
        json!({ "app": "podinfo" })
    );
}

// ---------------------------------------------------------------- Gateway API
