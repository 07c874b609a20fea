//! AuthorizationPolicy and RequestAuthentication in the mesh: the server's sidecar answers 403
//! to what its policies do not allow and 401 to a token that does not verify, the source
//! principal travels only over mutual TLS, and a policy Istio refuses is refused here.

mod support;

use support::mesh::{client_with, destination_codes, one_version};

use fledge_simulator::engine::SECONDS;
use fledge_simulator::manifest::parse;
use fledge_simulator::mesh::*;

/// `client` (service account `frontend`) calling `backend` of namespace `shop` for 20s under
/// `manifests`: `(code, flags, requests)` backend's sidecar reported, and the warnings.
fn shop(mut client: ClientConfig, manifests: &str) -> (Vec<(u16, u16, u64)>, Vec<String>) {
    client.service_account = Some("frontend".into());
    let cfg = MeshConfig {
        namespace: "shop".into(),
        services: vec![one_version("backend", 2, Behaviour::default())],
        clients: vec![client],
        ..Default::default()
    };
    let mut mesh = Mesh::new(cfg).expect("a valid mesh");
    let parsed = parse(manifests).expect("manifests parse");
    mesh.apply_manifests(&parsed).expect("applies");
    mesh.run_until(20 * SECONDS);
    (destination_codes(&mesh), parsed.warnings)
}

/// Whether every request (of some) was answered `code`.
fn all(codes: &[(u16, u16, u64)], code: u16) -> bool {
    !codes.is_empty() && codes.iter().all(|c| c.0 == code)
}

/// `frontend`, with or without a sidecar, calls `backend`, whose policy admits only
/// `frontend`'s principal.
fn codes(client_sidecar: bool) -> Vec<(u16, u16, u64)> {
    let mut client = ClientConfig::new("frontend", "backend", 50.0);
    client.sidecar = client_sidecar;
    let policy = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: backend, namespace: shop}
spec:
  selector: {matchLabels: {app: backend}}
  rules:
  - from:
    - source: {principals: [cluster.local/ns/shop/sa/frontend]}
";
    shop(client, policy).0
}

#[test]
fn an_mtls_request_carries_its_service_account_as_principal() {
    let c = codes(true);
    assert!(all(&c, 200), "{c:?}");
}

#[test]
fn a_plaintext_request_has_no_principal_and_is_denied_403() {
    let c = codes(false);
    assert!(all(&c, 403) && c.iter().all(|x| x.1 == 0), "{c:?}");
}

const ISSUER: &str = "https://auth.shop.example";

/// `frontend` sends a verified token, a token that does not verify, one from an issuer nobody
/// trusts, and none, in equal shares; `backend` verifies tokens of `ISSUER`, and with `require`
/// only lets requests with a request principal through. The codes per token kind.
fn token_codes(require: bool) -> [(u16, u64); 4] {
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
    let (codes, _) = shop(client, &text);
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

/// An ALLOW policy on `backend` whose one rule asks for `paths` (a YAML list).
fn allow_paths(paths: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: backend, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: backend}}}}
  action: ALLOW
  rules:
  - to:
    - operation: {{paths: {paths}}}
"
    )
}

/// `frontend` asking for `path` at 50 requests/s.
fn asking(path: &str) -> ClientConfig {
    client_with("frontend", "backend", 50.0, &[(":path", path)])
}

/// Istio builds `paths` into Envoy's `url_path` matcher (pilot/pkg/security/authz/model/
/// generator.go pathGenerator -> matcher.PathMatcher), which compares the path without its
/// query string.
#[test]
fn policy_paths_ignore_the_query_string() {
    let (codes, _) = shop(asking("/pay/card?order=7"), &allow_paths("[/pay/card]"));
    assert!(
        all(&codes, 200),
        "/pay/card?order=7 is /pay/card to Istio's RBAC filter: {codes:?}"
    );
}

/// Istio (1.22 on) reads `{*}` and `{**}` in `paths` as a path template (generator.go ->
/// matcher.PathTemplateMatcher, Envoy's uri_template): `{*}` one non-empty segment, `{**}`
/// the rest of the path, without the query string.
#[test]
fn a_path_template_matches_one_segment_or_the_rest_of_the_path() {
    for (template, path, code) in [
        ("/pay/{*}", "/pay/card", 200),
        ("/pay/{*}", "/pay/card/7", 403),
        ("/pay/{*}", "/pay/", 403),
        ("/{*}/card", "/pay/card?x=1", 200),
        ("/pay/{**}", "/pay/card/7", 200),
        ("/pay/{**}", "/pay", 403),
        ("/pay/{**}/receipt", "/pay/card/7/receipt", 200),
    ] {
        let (codes, warnings) = shop(asking(path), &allow_paths(&format!("['{template}']")));
        assert!(
            all(&codes, code),
            "{template} on {path}: {code} in Istio; here {codes:?}"
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}

/// Istio's validation (pkg/config/security CheckValidPathTemplate) refuses a template whose
/// `{**}` is not the last operator and braces in any other form; Envoy refuses a template not
/// starting with `/`.
#[test]
fn a_malformed_path_template_is_refused_at_its_field() {
    for (template, why) in [
        ("/pay/{**}/{*}", "last operator"),
        ("/pay/{*}.json", "whole segment"),
        ("/pay/{id}", "whole segment"),
        ("/pay//{*}", "non-empty"),
        ("pay/{*}", "starting with `/`"),
    ] {
        let err = parse(&allow_paths(&format!("['{template}']")))
            .expect_err(template)
            .to_string();
        assert!(
            err.contains("spec.rules[0].to[0].operation.paths[0]") && err.contains(why),
            "{template}: {err}"
        );
    }
}

/// Istio hands `fromHeaders` to Envoy's jwt_authn provider (pilot/pkg/security/authn/
/// policy_applier.go): the token is read from that header only, and one that does not
/// verify is answered 401. The simulator reads only `authorization`, so it says that it
/// ignores the key.
#[test]
fn a_token_location_the_simulator_ignores_is_warned_about() {
    let authn = "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: backend, namespace: shop}
spec:
  selector: {matchLabels: {app: backend}}
  jwtRules:
  - issuer: https://auth.shop.example
    fromHeaders:
    - name: x-jwt-assertion
";
    let client = client_with(
        "frontend",
        "backend",
        50.0,
        &[("x-jwt-assertion", "not-a-valid-token")],
    );
    let (codes, warnings) = shop(client, authn);
    let unauthorized = codes.iter().any(|c| c.0 == 401);
    assert!(
        unauthorized || warnings.iter().any(|w| w.contains("fromHeaders")),
        "Istio answers the bad token in x-jwt-assertion 401; here {codes:?}, warnings {warnings:?}"
    );
}

const POLICY: &str =
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n";

/// Istio's validation (pkg/config/validation/validation.go ValidateAuthorizationPolicy, and
/// the CRD's rules) refuses these; each is refused at the field named.
#[test]
fn policies_istio_refuses_are_refused_at_their_field() {
    for (spec, field) in [
        (
            "  rules:\n  - from:\n    - source: {}\n",
            "spec.rules[0].from[0].source",
        ),
        (
            "  rules:\n  - from:\n    - {}\n",
            "spec.rules[0].from[0].source",
        ),
        (
            "  rules:\n  - to:\n    - operation: {}\n",
            "spec.rules[0].to[0].operation",
        ),
        (
            "  rules:\n  - to:\n    - operation: {paths: []}\n",
            "spec.rules[0].to[0].operation",
        ),
        (
            "  rules:\n  - to:\n    - operation: {paths: ['']}\n",
            "operation.paths[0]",
        ),
        ("  action: DENY\n", "spec.rules"),
        ("  action: DENY\n  rules: []\n", "spec.rules"),
        ("  action: CUSTOM\n  provider: {name: ext}\n", "spec.rules"),
        ("  action: CUSTOM\n  rules: [{}]\n", "spec.provider.name"),
        ("  provider: {name: ext}\n  rules: [{}]\n", "spec.provider"),
        (
            "  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - from:\n    - source: {principals: [a]}\n",
            "source.principals",
        ),
        (
            "  rules:\n  - from:\n    - source: {namespaces: [a], serviceAccounts: [b]}\n",
            "source.serviceAccounts",
        ),
        (
            "  rules:\n  - when:\n    - {key: 'request.headers[x]'}\n",
            "when[0].values",
        ),
        (
            "  rules:\n  - when:\n    - {key: 'destination.labels[app]', values: [a]}\n",
            "when[0].key",
        ),
        (
            "  selector: {matchLabels: {app: '*'}}\n",
            "spec.selector.matchLabels.app",
        ),
        (
            "  selector: {matchLabels: {app: a}}\n  targetRefs: [{kind: Service, name: a}]\n",
            "spec.selector",
        ),
    ] {
        let text = format!("{POLICY}{spec}");
        let err = parse(&text).expect_err(&text).to_string();
        assert!(err.contains(&format!("{field}`")), "{text}{err}");
    }
}

/// An empty list reaches istiod as no list: Kubernetes keeps `from: []`, but Istio's JSON
/// decoding into protobuf (pkg/util/protomarshal ApplyJSON, golang/protobuf jsonpb) leaves an
/// empty repeated field nil, so its validation's `from must not be empty` never fires, and
/// the authz builder (pilot/pkg/security/authz/model/model.go: no `From`, no source
/// condition) makes the rule match every source. It loads so here too, with a warning.
#[test]
fn an_empty_from_list_constrains_no_source_and_is_warned_about() {
    for (action, code) in [("ALLOW", 200), ("DENY", 403)] {
        let policy = format!(
            "{POLICY}  action: {action}\n  rules:\n  - from: []\n    to:\n    - operation: {{paths: [/pay]}}\n"
        );
        let (codes, warnings) = shop(asking("/pay"), &policy);
        assert!(all(&codes, code), "{action}: {codes:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("spec.rules[0].from") && w.contains("every source")),
            "{warnings:?}"
        );
    }
}
