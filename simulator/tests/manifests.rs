//! Mesh manifests load as users write them.

use fledge_simulator::engine::SECONDS;
use fledge_simulator::manifest::{self, Manifest, ManifestError, MtlsMode, StringMatch};
use fledge_simulator::mesh::{
    Behaviour, ClientConfig, HeaderProfile, Mesh, MeshConfig, ServiceConfig, VersionConfig,
};

const SEED: &str = include_str!("fixtures/seed-service-mesh.yaml");

#[test]
fn every_manifest_of_the_seed_guide_loads() {
    let m = manifest::parse(SEED).expect("seed manifests parse");
    assert_eq!(m.items.len(), 6);
    assert!(
        m.warnings.is_empty(),
        "unexpected warnings: {:?}",
        m.warnings
    );
    let split = m.items.iter().find_map(|i| match i {
        Manifest::TrafficSplit(ts) => Some(ts),
        _ => None,
    });
    let split = split.expect("a TrafficSplit");
    assert_eq!(
        split.backends,
        vec![
            ("my-service-v1".to_string(), 900),
            ("my-service-v2".to_string(), 100)
        ]
    );
    let pa = m.items.iter().find_map(|i| match i {
        Manifest::PeerAuthentication(p) => Some(p),
        _ => None,
    });
    assert_eq!(pa.expect("a PeerAuthentication").mode, MtlsMode::Strict);
    let vs = m.items.iter().find_map(|i| match i {
        Manifest::VirtualService(v) if v.name == "reviews-route" => Some(v),
        _ => None,
    });
    let header = &vs.expect("reviews-route").http[0].matches[0][0];
    assert_eq!(header.name, "end-user");
    assert_eq!(header.matcher, StringMatch::Exact("jason".into()));
}

#[test]
fn unknown_fields_are_ignored_with_a_warning() {
    let yaml = "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata:\n  name: d\nspec:\n  host: x\n  trafficPolicy:\n    outlierDetection:\n      consecutive5xxErrors: 3\n      flavour: spicy\n";
    let m = manifest::parse(yaml).expect("parses");
    assert_eq!(m.items.len(), 1);
    assert_eq!(m.warnings.len(), 1);
    assert!(
        m.warnings[0].contains("spec.trafficPolicy.outlierDetection.flavour"),
        "{}",
        m.warnings[0]
    );
}

#[test]
fn a_wrong_type_names_the_document_the_field_and_the_expected_type() {
    let yaml = "kind: VirtualService\napiVersion: networking.istio.io/v1beta1\nmetadata:\n  name: ok\nspec:\n  hosts: [a]\n---\nkind: DestinationRule\napiVersion: networking.istio.io/v1beta1\nmetadata:\n  name: broken\nspec:\n  host: a\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnections: lots\n";
    let err = manifest::parse(yaml).expect_err("wrong type");
    match &err {
        ManifestError::WrongType {
            doc,
            kind,
            name,
            field,
            expected,
        } => {
            assert_eq!(*doc, 1);
            assert_eq!(kind, "DestinationRule");
            assert_eq!(name, "broken");
            assert_eq!(
                field,
                "spec.trafficPolicy.connectionPool.tcp.maxConnections"
            );
            assert!(expected.contains("integer"));
        }
        other => panic!("unexpected error {other:?}"),
    }
    // The index counts from 0, the message from 1.
    assert!(
        err.to_string().contains("document 2 (DestinationRule"),
        "{err}"
    );
}

#[test]
fn invalid_yaml_and_bad_durations_are_errors_not_panics() {
    assert!(matches!(
        manifest::parse("kind: [unclosed"),
        Err(ManifestError::Yaml { .. })
    ));
    let yaml = "kind: VirtualService\nmetadata:\n  name: v\nspec:\n  http:\n    - timeout: soon\n";
    assert!(matches!(
        manifest::parse(yaml),
        Err(ManifestError::WrongType { .. })
    ));
}

#[test]
fn older_integer_percent_and_quantity_weights_are_accepted() {
    let yaml = "kind: VirtualService\nmetadata:\n  name: v\nspec:\n  hosts: [s]\n  http:\n    - fault:\n        delay:\n          fixedDelay: 2s\n          percent: 20\n      route:\n        - destination:\n            host: s\n---\nkind: TrafficSplit\nmetadata:\n  name: t\nspec:\n  service: s\n  backends:\n    - service: s-a\n      weight: 1\n    - service: s-b\n      weight: 0.5\n";
    let m = manifest::parse(yaml).expect("parses");
    match &m.items[0] {
        Manifest::VirtualService(v) => assert_eq!(
            v.http[0].fault.as_ref().and_then(|f| f.delay),
            Some((2 * SECONDS, 20.0))
        ),
        _ => panic!("expected a VirtualService"),
    }
    match &m.items[1] {
        Manifest::TrafficSplit(t) => assert_eq!(t.backends[1].1, 500),
        _ => panic!("expected a TrafficSplit"),
    }
}

#[test]
fn the_seed_header_route_sends_jason_to_v2_and_everyone_else_to_v1() {
    let cfg = MeshConfig {
        services: vec![ServiceConfig::new(
            "reviews",
            vec![
                VersionConfig::new("v1", 2, Behaviour::default()),
                VersionConfig::new("v2", 2, Behaviour::default()),
            ],
        )],
        clients: vec![ClientConfig {
            headers: vec![
                HeaderProfile {
                    weight: 1.0,
                    headers: vec![("End-User".into(), "jason".into())],
                },
                HeaderProfile {
                    weight: 3.0,
                    headers: vec![],
                },
            ],
            ..ClientConfig::new("productpage", "reviews", 200.0)
        }],
        ..Default::default()
    };
    let mut mesh = Mesh::new(cfg).expect("mesh");
    // The guide routes to subsets of `reviews` it leaves to a DestinationRule of their own.
    let subsets = "kind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets:\n    - {name: v1, labels: {version: v1}}\n    - {name: v2, labels: {version: v2}}\n";
    let m = manifest::parse(&format!("{subsets}---\n{SEED}")).expect("parses");
    mesh.apply_manifests(&m).expect("applies");
    mesh.run_until(60 * SECONDS);
    let v1 = mesh.version_id("reviews", "v1").expect("v1");
    let v2 = mesh.version_id("reviews", "v2").expect("v2");
    let n1 = mesh.source_stats(v1, 0, mesh.now()).requests as f64;
    let n2 = mesh.source_stats(v2, 0, mesh.now()).requests as f64;
    let share = n2 / (n1 + n2);
    assert!((share - 0.25).abs() < 0.03, "jason share {share}");
}

#[test]
fn a_traffic_split_with_milli_weights_routes_ninety_ten() {
    let cfg = MeshConfig {
        services: vec![ServiceConfig::new(
            "my-service",
            vec![
                VersionConfig::new("v1", 3, Behaviour::default()),
                VersionConfig::new("v2", 1, Behaviour::default()),
            ],
        )],
        clients: vec![ClientConfig::new("client", "my-service", 500.0)],
        ..Default::default()
    };
    let mut mesh = Mesh::new(cfg).expect("mesh");
    let m = manifest::parse(SEED).expect("parses");
    let only_split = manifest::Manifests {
        items: m
            .items
            .into_iter()
            .filter(|i| matches!(i, Manifest::TrafficSplit(_)))
            .collect(),
        warnings: vec![],
    };
    mesh.apply_manifests(&only_split).expect("applies");
    mesh.run_until(60 * SECONDS);
    let v2 = mesh.version_id("my-service", "v2").expect("v2");
    let v1 = mesh.version_id("my-service", "v1").expect("v1");
    let n1 = mesh.destination_stats(v1, 0, mesh.now()).requests as f64;
    let n2 = mesh.destination_stats(v2, 0, mesh.now()).requests as f64;
    assert!(
        (n2 / (n1 + n2) - 0.1).abs() < 0.015,
        "v2 share {}",
        n2 / (n1 + n2)
    );
}

fn podinfo_mesh(headers: Vec<HeaderProfile>) -> Mesh {
    let cfg = MeshConfig {
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![
                VersionConfig::new("primary", 3, Behaviour::default()),
                VersionConfig::new("canary", 1, Behaviour::default()),
            ],
        )],
        clients: vec![ClientConfig {
            headers,
            ..ClientConfig::new("client", "podinfo", 400.0)
        }],
        ..Default::default()
    };
    Mesh::new(cfg).expect("mesh")
}

#[test]
fn a_gateway_api_http_route_splits_by_weight_and_matches_headers() {
    let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: podinfo\nspec:\n  parentRefs:\n    - group: \"\"\n      kind: Service\n      name: podinfo\n  rules:\n    - matches:\n        - headers:\n            - name: x-canary\n              value: always\n      backendRefs:\n        - name: podinfo-canary\n          port: 9898\n    - backendRefs:\n        - name: podinfo-primary\n          port: 9898\n          weight: 75\n        - name: podinfo-canary\n          port: 9898\n          weight: 25\n";
    let mut mesh = podinfo_mesh(vec![
        HeaderProfile {
            weight: 1.0,
            headers: vec![("x-canary".into(), "always".into())],
        },
        HeaderProfile {
            weight: 1.0,
            headers: vec![],
        },
    ]);
    let m = manifest::parse(yaml).expect("parses");
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    let w = mesh.apply_manifests(&m).expect("applies");
    assert!(w.is_empty(), "{w:?}");
    mesh.run_until(60 * SECONDS);
    let p = mesh.version_id("podinfo", "primary").unwrap();
    let c = mesh.version_id("podinfo", "canary").unwrap();
    let np = mesh.destination_stats(p, 0, mesh.now()).requests as f64;
    let nc = mesh.destination_stats(c, 0, mesh.now()).requests as f64;
    // Half the requests carry the header; the other half split 75/25: canary share 62.5%.
    assert!(
        (nc / (np + nc) - 0.625).abs() < 0.02,
        "canary share {}",
        nc / (np + nc)
    );
}

/// An HTTPRoute for `podinfo` with `parent` as its only parentRef, all to the canary.
fn route_with_parent(parent: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: podinfo, namespace: default}}\nspec:\n  parentRefs:\n    - {parent}\n  rules:\n    - backendRefs:\n        - {{name: podinfo-canary, port: 9898}}\n"
    )
}

#[test]
fn an_http_route_binds_only_a_core_service_parent_of_its_namespace_to_the_mesh() {
    let canary_share = |parent: &str| {
        let mut mesh = podinfo_mesh(vec![]);
        let m = manifest::parse(&route_with_parent(parent)).expect("parses");
        let w = mesh.apply_manifests(&m).expect("applies");
        mesh.run_until(10 * SECONDS);
        let p = mesh.version_id("podinfo", "primary").unwrap();
        let c = mesh.version_id("podinfo", "canary").unwrap();
        let np = mesh.destination_stats(p, 0, mesh.now()).requests as f64;
        let nc = mesh.destination_stats(c, 0, mesh.now()).requests as f64;
        (nc / (np + nc), w)
    };
    let (share, w) = canary_share("{group: \"\", kind: Service, name: podinfo}");
    assert_eq!(share, 1.0, "{w:?}");
    assert!(w.is_empty(), "{w:?}");
    // A parentRef is a Gateway unless it says otherwise: named like the Service, it is not it.
    for parent in [
        "{name: podinfo}",
        "{kind: Service, name: podinfo}",
        "{group: \"\", kind: Service, name: podinfo, namespace: other}",
    ] {
        let (share, w) = canary_share(parent);
        assert!(share < 0.5, "{parent}: canary share {share}");
        assert!(
            w.iter().any(|w| w.contains("HTTPRoute podinfo: parent")),
            "{parent}: {w:?}"
        );
    }
}

#[test]
fn an_http_route_backend_other_than_a_core_service_is_refused_at_its_field() {
    let yaml = route_with_parent("{group: \"\", kind: Service, name: podinfo}").replace(
        "{name: podinfo-canary, port: 9898}",
        "{kind: Backend, name: podinfo-canary}",
    );
    let e = manifest::parse(&yaml).expect_err("refused");
    assert!(
        e.to_string().contains("spec.rules[0].backendRefs[0].kind"),
        "{e}"
    );
}

#[test]
fn an_http_route_backend_in_another_namespace_is_not_the_local_version() {
    let yaml = route_with_parent("{group: \"\", kind: Service, name: podinfo}").replace(
        "{name: podinfo-canary, port: 9898}",
        "{name: podinfo-canary, namespace: other, port: 9898}",
    );
    let mut mesh = podinfo_mesh(vec![]);
    let w = mesh
        .apply_manifests(&manifest::parse(&yaml).expect("parses"))
        .expect("applies");
    assert!(w.iter().any(|w| w.contains("matches no version")), "{w:?}");
}

/// The canary's share of a minute of traffic under `yaml`, and the load warnings.
fn canary_share_under(yaml: &str) -> (f64, Vec<String>) {
    let mut mesh = podinfo_mesh(vec![]);
    let m = manifest::parse(yaml).expect("parses");
    mesh.apply_manifests(&m).expect("applies");
    mesh.run_until(60 * SECONDS);
    let p = mesh.version_id("podinfo", "primary").unwrap();
    let c = mesh.version_id("podinfo", "canary").unwrap();
    let np = mesh.destination_stats(p, 0, mesh.now()).requests as f64;
    let nc = mesh.destination_stats(c, 0, mesh.now()).requests as f64;
    (nc / (np + nc), m.warnings)
}

#[test]
fn a_virtual_service_uri_or_method_match_sees_a_get_of_slash_when_the_client_sets_neither() {
    let vs = |cond: &str| {
        format!(
            "kind: DestinationRule\nmetadata:\n  name: podinfo-subsets\nspec:\n  host: podinfo\n  subsets:\n    - {{name: primary, labels: {{version: primary}}}}\n    - {{name: canary, labels: {{version: canary}}}}\n---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: podinfo}}\nspec:\n  hosts: [podinfo]\n  http:\n    - match: [{cond}]\n      route: [{{destination: {{host: podinfo, subset: canary}}}}]\n    - route: [{{destination: {{host: podinfo, subset: primary}}}}]\n"
        )
    };
    for cond in [
        "{uri: {prefix: /api}}",
        "{method: {exact: POST}}",
        "{uri: {exact: /}, headers: {x-a: {exact: b}}}",
    ] {
        let (share, w) = canary_share_under(&vs(cond));
        assert_eq!(share, 0.0, "{cond}");
        assert!(w.is_empty(), "{w:?}");
    }
    for cond in [
        "{uri: {prefix: /}}",
        "{uri: {exact: /}, method: {regex: \"GET|HEAD\"}}",
        "{}",
    ] {
        assert_eq!(canary_share_under(&vs(cond)).0, 1.0, "{cond}");
    }
    // What requests do not carry matches none, with a warning.
    let (share, w) = canary_share_under(&vs("{authority: {exact: podinfo}}"));
    assert_eq!(share, 0.0);
    assert!(w.iter().any(|w| w.contains("matches no request")), "{w:?}");
}

#[test]
fn an_http_route_rule_matching_only_on_path_or_method_matches_no_request() {
    let route = |m: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: podinfo}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: podinfo}}]\n  rules:\n    - matches: [{m}]\n      backendRefs: [{{name: podinfo-canary}}]\n    - backendRefs: [{{name: podinfo-primary}}]\n"
        )
    };
    for m in ["{path: {type: PathPrefix, value: /api}}", "{method: POST}"] {
        let (share, w) = canary_share_under(&route(m));
        assert_eq!(share, 0.0, "{m}");
        assert!(w.iter().any(|w| w.contains("matches no request")), "{w:?}");
    }
    assert_eq!(
        canary_share_under(&route("{path: {type: PathPrefix, value: /}}")).0,
        1.0
    );
}

#[test]
fn a_virtual_service_mirror_copies_traffic_to_the_canary() {
    let yaml = "kind: DestinationRule\nmetadata:\n  name: podinfo-subsets\nspec:\n  host: podinfo\n  subsets:\n    - {name: primary, labels: {version: primary}}\n    - {name: canary, labels: {version: canary}}\n---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: podinfo\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n            subset: primary\n      mirror:\n        host: podinfo\n        subset: canary\n      mirrorPercentage:\n        value: 25.0\n";
    let mut mesh = podinfo_mesh(vec![]);
    let w = mesh
        .apply_manifests(&manifest::parse(yaml).expect("parses"))
        .expect("applies");
    assert!(w.is_empty(), "{w:?}");
    mesh.run_until(60 * SECONDS);
    let p = mesh.version_id("podinfo", "primary").unwrap();
    let c = mesh.version_id("podinfo", "canary").unwrap();
    let np = mesh.destination_stats(p, 0, mesh.now()).requests as f64;
    let nc = mesh.destination_stats(c, 0, mesh.now()).requests as f64;
    assert!((nc / np - 0.25).abs() < 0.02, "mirrored share {}", nc / np);
    assert_eq!(
        mesh.source_stats(c, 0, mesh.now()).requests,
        0,
        "clients never see the mirror"
    );
}

#[test]
fn manifests_for_services_outside_the_mesh_are_reported_not_fatal() {
    let mut mesh = podinfo_mesh(vec![]);
    let m = manifest::parse(SEED).expect("parses");
    let warnings = mesh.apply_manifests(&m).expect("applies");
    assert!(
        warnings.iter().any(|w| w.contains("reviews")),
        "{warnings:?}"
    );
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_is_an_error_or_manifests_never_a_panic(text in "\\PC{0,400}") {
            let _ = manifest::parse(&text);
        }

        #[test]
        fn any_value_of_the_seed_manifests_replaced_by_junk_is_handled(
            line in 0usize..120,
            junk in prop_oneof![
                Just("[]".to_string()),
                Just("{}".to_string()),
                Just("-1".to_string()),
                Just("1e99".to_string()),
                Just("~".to_string()),
                Just("\"\"".to_string()),
                Just("[a, {b: c}]".to_string()),
                "[a-z0-9.]{0,12}",
            ],
        ) {
            let mut lines: Vec<String> = SEED.lines().map(str::to_string).collect();
            let i = line % lines.len();
            if let Some(pos) = lines[i].find(": ") {
                lines[i] = format!("{}: {junk}", &lines[i][..pos]);
            }
            let text = lines.join("\n");
            if let Ok(m) = manifest::parse(&text) {
                let mut mesh = podinfo_mesh(vec![]);
                let _ = mesh.apply_manifests(&m);
                mesh.run_until(SECONDS);
            }
        }
    }
}
