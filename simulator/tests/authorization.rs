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
