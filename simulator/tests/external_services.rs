//! Dependencies outside the mesh (issue 21, part 1): an external host as an Istio ServiceEntry
//! with `location: MESH_EXTERNAL` declares it, called by a version of the mesh.

mod support;

use std::path::Path;

use support::mesh::{STRICT, behaviour, call_of, count_flags, mesh_with};

use fledge_simulator::engine::SECONDS;
use fledge_simulator::mesh::{Mesh, MeshConfig, MeshError, ServiceConfig, VersionConfig};
use fledge_simulator::scenario::Scenario;

const HOST: &str = "api.payments.example.com";

/// `checkout` (2 pods with a sidecar) calls the external `HOST` on every request.
fn config(external_sidecar: bool) -> MeshConfig {
    let mut caller = behaviour(2, 16);
    caller.calls = vec![vec![call_of(HOST, false, None)]];
    let mut endpoint = VersionConfig::new("external", 1, behaviour(20, 1000));
    endpoint.sidecar = external_sidecar;
    let mut api = ServiceConfig::new(HOST, vec![endpoint]);
    api.external = true;
    MeshConfig {
        seed: 21,
        services: vec![
            ServiceConfig::new("checkout", vec![VersionConfig::new("v1", 2, caller)]),
            api,
        ],
        clients: vec![fledge_simulator::mesh::ClientConfig::new(
            "storefront",
            "checkout",
            50.0,
        )],
        ..Default::default()
    }
}

fn run(manifests: &str) -> Mesh {
    let mut mesh = mesh_with(config(false), manifests);
    mesh.run_until(30 * SECONDS);
    mesh
}

/// The `istio_requests_total` lines that name `HOST` as the destination service.
fn series_to_host(mesh: &Mesh) -> Vec<String> {
    mesh.render_prometheus()
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter(|l| l.contains(&format!("destination_service=\"{HOST}\"")))
        .map(str::to_string)
        .collect()
}

#[test]
fn only_the_callers_proxy_reports_an_external_host_and_its_workload_is_unknown() {
    let mesh = run("");
    let series = series_to_host(&mesh);
    assert!(!series.is_empty(), "the calls are reported");
    for s in &series {
        assert!(
            s.contains("reporter=\"source\""),
            "no proxy at the host reports: {s}"
        );
        assert!(s.contains("source_workload=\"checkout-v1\""), "{s}");
        assert!(s.contains("destination_workload=\"unknown\""), "{s}");
        assert!(
            s.contains("destination_workload_namespace=\"unknown\""),
            "{s}"
        );
        assert!(s.contains("destination_version=\"unknown\""), "{s}");
    }
    assert!(
        series.iter().any(|s| s.contains("response_code=\"200\"")),
        "{series:?}"
    );
}

#[test]
fn strict_mtls_in_the_mesh_does_not_stop_plaintext_calls_to_an_external_host() {
    // No proxy at the host enforces a PeerAuthentication, and auto mTLS sends plaintext to an
    // endpoint without a sidecar: no handshake failure, no reset.
    let mesh = run(STRICT);
    assert_eq!(
        count_flags(&mesh, |f| f != 0),
        0,
        "no request failed locally"
    );
    let ok: u64 = series_to_host(&mesh)
        .iter()
        .filter(|s| s.contains("response_code=\"200\""))
        .filter_map(|s| s.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(ok > 1000, "the calls succeed: {ok}");
}

#[test]
fn an_external_endpoint_with_a_sidecar_is_refused() {
    let err = Mesh::new(config(true)).err().expect("refused");
    assert!(
        matches!(&err, MeshError::InvalidConfig { what, reason }
            if what.contains(HOST) && reason.contains("no sidecar")),
        "{err}"
    );
}

/// A scenario whose canary calls `HOST`, with `entries` as the manifests.
fn scenario(entries: &str) -> String {
    format!(
        r#"name: x
duration: 5m
services:
  - name: checkout
    versions:
      primary: {{pods: 2}}
      canary:
        calls: [{{service: {HOST}}}]
external:
  - host: {HOST}
    latency: {{p50: 100ms, p99: 900ms}}
traffic:
  - client: storefront
    service: checkout
    rate: 10
manifests: |
{entries}
canary:
  apiVersion: flagger.app/v1beta1
  kind: Canary
  metadata: {{name: checkout}}
  spec:
    targetRef: {{apiVersion: apps/v1, kind: Deployment, name: checkout}}
    service: {{port: 80}}
    analysis: {{interval: 30s, threshold: 2, maxWeight: 50, stepWeight: 10}}
timeline:
  - at: 1m
    deploy: {{}}
expect:
  outcome: promoted
"#
    )
}

const ENTRY: &str = "  apiVersion: networking.istio.io/v1\n  kind: ServiceEntry\n  metadata: {name: payments}\n  spec:\n    hosts: [api.payments.example.com]\n    ports: [{number: 80, name: http, protocol: HTTP}]\n    location: MESH_EXTERNAL\n    resolution: DNS\n";

#[test]
fn an_external_host_needs_a_mesh_external_service_entry() {
    Scenario::parse(&scenario(ENTRY), Path::new("x.yaml")).expect("declared: loads");
    let none = "  apiVersion: networking.istio.io/v1\n  kind: ServiceEntry\n  metadata: {name: other}\n  spec:\n    hosts: [other.example.com]\n    ports: [{number: 80, name: http, protocol: HTTP}]\n";
    let err = Scenario::parse(&scenario(none), Path::new("x.yaml")).unwrap_err();
    assert_eq!(err.field, "external[0].host", "{err}");
    assert_eq!(err.line, Some(10), "{err}");
    assert!(err.message.contains("no ServiceEntry"), "{err}");
    let internal = ENTRY.replace("MESH_EXTERNAL", "MESH_INTERNAL");
    let err = Scenario::parse(&scenario(&internal), Path::new("x.yaml")).unwrap_err();
    assert!(err.message.contains("MESH_INTERNAL"), "{err}");
}

#[test]
fn a_call_to_a_host_neither_a_service_nor_external_is_refused() {
    let text = scenario(ENTRY).replace("calls: [{service: api", "calls: [{service: www");
    let err = Scenario::parse(&text, Path::new("x.yaml")).unwrap_err();
    assert!(
        err.message.contains("not a service of the scenario"),
        "{err}"
    );
}

#[test]
fn a_https_only_entry_warns_that_istio_would_see_no_requests() {
    let tls = ENTRY.replace(
        "{number: 80, name: http, protocol: HTTP}",
        "{number: 443, name: https, protocol: TLS}",
    );
    let s = Scenario::parse(&scenario(&tls), Path::new("x.yaml")).expect("loads");
    assert!(
        s.warnings.iter().any(|w| w.contains("no HTTP port")),
        "{:?}",
        s.warnings
    );
}

/// Istio: a ServiceEntry port without `protocol` is sniffed (pkg/config/validation
/// ValidateProtocol: "Empty string is used for protocol sniffing"; serviceentry/conversion.go
/// convertPort -> protocol.Parse("") = Unsupported, detected per connection), so HTTP to it is
/// reported as requests; an unknown protocol is refused.
#[test]
fn a_service_entry_port_without_protocol_is_sniffed() {
    let sniffed = ENTRY.replace(", protocol: HTTP}", "}");
    assert_ne!(sniffed, ENTRY);
    let s = Scenario::parse(&scenario(&sniffed), Path::new("x.yaml")).expect("loads");
    assert!(
        !s.warnings.iter().any(|w| w.contains("no HTTP port")),
        "a port without protocol is sniffed, HTTP reported as requests: {:?}",
        s.warnings
    );
    let unknown = ENTRY.replace("protocol: HTTP}", "protocol: HTTPX}");
    assert!(
        Scenario::parse(&scenario(&unknown), Path::new("x.yaml")).is_err(),
        "Istio refuses protocol HTTPX"
    );
}
