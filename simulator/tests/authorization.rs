//! AuthorizationPolicy in the mesh: the server's sidecar answers 403 to what its policies do
//! not allow, and the source principal travels only over mutual TLS.

use fledge_simulator::engine::SECONDS;
use fledge_simulator::manifest::parse;
use fledge_simulator::mesh::*;
use fledge_simulator::telemetry::{Reporter, Selector};

/// `frontend` (service account `frontend`, with or without a sidecar) calls `backend`, whose
/// policy admits only `frontend`'s principal; the codes `backend`'s sidecar reported.
fn codes(client_sidecar: bool) -> Vec<(u16, u16, u64)> {
    let backend = VersionConfig::new("v1", 2, Behaviour::default());
    let mut client = ClientConfig::new("frontend", "backend", 50.0);
    client.sidecar = client_sidecar;
    client.service_account = Some("frontend".into());
    let cfg = MeshConfig {
        namespace: "shop".into(),
        services: vec![ServiceConfig::new("backend", vec![backend])],
        clients: vec![client],
        ..Default::default()
    };
    let mut mesh = Mesh::new(cfg).expect("a valid mesh");
    let policy = parse(
        "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: backend, namespace: shop}
spec:
  selector: {matchLabels: {app: backend}}
  rules:
  - from:
    - source: {principals: [cluster.local/ns/shop/sa/frontend]}
",
    )
    .expect("a policy");
    mesh.apply_manifests(&policy).expect("applies");
    mesh.run_until(20 * SECONDS);
    let sel = Selector {
        reporter: Reporter::Destination,
        source: None,
        dest: None,
    };
    mesh.telemetry()
        .by_code(&sel, 0, 20 * SECONDS, 20 * SECONDS)
}

#[test]
fn an_mtls_request_carries_its_service_account_as_principal() {
    let c = codes(true);
    assert!(c.iter().all(|x| x.0 == 200), "{c:?}");
}

#[test]
fn a_plaintext_request_has_no_principal_and_is_denied_403() {
    let c = codes(false);
    assert!(
        !c.is_empty() && c.iter().all(|x| (x.0, x.1) == (403, 0)),
        "{c:?}"
    );
}

const ISSUER: &str = "https://auth.shop.example";

/// `frontend` sends a verified token, a token that does not verify, one from an issuer nobody
/// trusts, and none, in equal shares; `backend` verifies tokens of `ISSUER`, and with `require`
/// only lets requests with a request principal through. The codes per token kind.
fn token_codes(require: bool) -> [(u16, u64); 4] {
    let backend = VersionConfig::new("v1", 2, Behaviour::default());
    let mut client = ClientConfig::new("frontend", "backend", 200.0);
    let bearer = |t: &str| HeaderProfile {
        weight: 1.0,
        headers: vec![("authorization".into(), format!("Bearer {t}"))],
    };
    client.headers = vec![
        bearer(&format!("iss={ISSUER};sub=alice")),
        bearer("invalid"),
        bearer("iss=https://elsewhere.example;sub=bob"),
        HeaderProfile {
            weight: 1.0,
            headers: vec![("x-no-token".into(), "1".into())],
        },
    ];
    let cfg = MeshConfig {
        namespace: "shop".into(),
        services: vec![ServiceConfig::new("backend", vec![backend])],
        clients: vec![client],
        ..Default::default()
    };
    let mut mesh = Mesh::new(cfg).expect("a valid mesh");
    let mut text = format!(
        "
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: backend, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: backend}}}}
  jwtRules:
  - issuer: {ISSUER}
    jwksUri: {ISSUER}/keys
"
    );
    if require {
        text.push_str(
            "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: shop}
spec:
  selector: {matchLabels: {app: backend}}
  rules:
  - from:
    - source: {requestPrincipals: ['*']}
",
        );
    }
    mesh.apply_manifests(&parse(&text).expect("policies"))
        .expect("applies");
    mesh.run_until(20 * SECONDS);
    let sel = Selector {
        reporter: Reporter::Destination,
        source: None,
        dest: None,
    };
    let codes = mesh
        .telemetry()
        .by_code(&sel, 0, 20 * SECONDS, 20 * SECONDS);
    let count = |code| {
        codes
            .iter()
            .filter(|x| x.0 == code)
            .map(|x| x.2)
            .sum::<u64>()
    };
    [
        (200, count(200)),
        (401, count(401)),
        (403, count(403)),
        (0, codes.len() as u64),
    ]
}

/// Whether `n` is about `share` of `total`.
fn about(n: u64, share: f64, total: u64) -> bool {
    (n as f64 - share * total as f64).abs() < 0.05 * total as f64
}

#[test]
fn a_token_that_does_not_verify_is_answered_401_and_no_token_passes() {
    let [(_, ok), (_, unauthorized), (_, forbidden), (_, kinds)] = token_codes(false);
    let total = ok + unauthorized + forbidden;
    assert_eq!(kinds, 2, "200 and 401 only");
    assert!(
        about(unauthorized, 0.5, total),
        "invalid and untrusted: {unauthorized} of {total}"
    );
    assert!(about(ok, 0.5, total), "verified and none: {ok} of {total}");
}

#[test]
fn a_policy_requiring_request_principals_refuses_a_request_without_a_token_403() {
    let [(_, ok), (_, unauthorized), (_, forbidden), _] = token_codes(true);
    let total = ok + unauthorized + forbidden;
    assert!(about(ok, 0.25, total), "verified: {ok} of {total}");
    assert!(about(unauthorized, 0.5, total), "{unauthorized} of {total}");
    assert!(
        about(forbidden, 0.25, total),
        "no token: {forbidden} of {total}"
    );
}

#[test]
fn a_service_account_that_is_not_a_kubernetes_name_is_refused_at_its_field() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/authz-new-service-account.yaml"
    ))
    .expect("the scenario exists");
    let path = std::path::Path::new("x.yaml");
    assert!(fledge_simulator::scenario::Scenario::parse(&text, path).is_ok());
    let bad = text.replace(
        "service_account: checkout-v2",
        "service_account: Checkout_V2",
    );
    let err = fledge_simulator::scenario::Scenario::parse(&bad, path)
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("service_account") && err.contains("Checkout_V2"),
        "{err}"
    );
}
