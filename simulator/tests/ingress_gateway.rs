//! Traffic entering through an Istio ingress gateway (issue 21, part 1, ingress): the gateway's
//! proxy routes by the VirtualServices bound to its Gateway, the sidecars by the mesh's.

mod support;

use std::path::Path;

use support::mesh::{behaviour, mesh_with};

use fledge_simulator::harness;
use fledge_simulator::scenario::{Outcome, Scenario, ScenarioError};

use fledge_simulator::engine::SECONDS;
use fledge_simulator::mesh::{
    ClientConfig, HeaderProfile, Mesh, MeshConfig, ServiceConfig, VersionConfig,
};

/// Istio's bookinfo ingress as users write it: a Gateway on the ingress gateway's pods and a
/// VirtualService bound to it alone, taking `/productpage` and `/static` to `productpage`.
const BOOKINFO_GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 8080
      name: http
      protocol: HTTP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts:
  - "*"
  gateways:
  - bookinfo-gateway
  http:
  - match:
    - uri:
        exact: /productpage
    - uri:
        prefix: /static
    route:
    - destination:
        host: productpage
        port:
          number: 9080
"#;

/// Half of each client's requests ask for `/productpage`, half for `/admin`.
fn paths() -> Vec<HeaderProfile> {
    ["/productpage", "/admin"]
        .iter()
        .map(|p| HeaderProfile {
            weight: 1.0,
            headers: vec![(":path".into(), (*p).into())],
        })
        .collect()
}

/// `productpage` with the ingress gateway's proxy and an in-mesh client, both at 100 rps.
fn mesh(manifests: &str) -> Mesh {
    let mut gateway = ClientConfig::new("istio-ingressgateway", "productpage", 100.0);
    gateway.namespace = Some("istio-system".into());
    gateway.gateway = Some("bookinfo-gateway".into());
    gateway.headers = paths();
    let mut inside = ClientConfig::new("reviews-v1", "productpage", 100.0);
    inside.headers = paths();
    let cfg = MeshConfig {
        seed: 21,
        services: vec![ServiceConfig::new(
            "productpage",
            vec![VersionConfig::new("v1", 2, behaviour(5, 16))],
        )],
        clients: vec![gateway, inside],
        ..Default::default()
    };
    let mut m = mesh_with(cfg, manifests);
    m.run_until(20 * SECONDS);
    m
}

/// `(source_workload, response_code, response_flags)` of each source series and its count.
fn source_series(m: &Mesh) -> Vec<(String, String, String, u64)> {
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        Some(line[start..].split('"').next()?.to_string())
    };
    m.render_prometheus()
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{") && l.contains("reporter=\"source\""))
        .filter_map(|l| {
            Some((
                label(l, "source_workload")?,
                label(l, "response_code")?,
                label(l, "response_flags")?,
                l.rsplit(' ').next()?.parse().ok()?,
            ))
        })
        .collect()
}

fn count(series: &[(String, String, String, u64)], source: &str, code: &str) -> u64 {
    series
        .iter()
        .filter(|s| s.0 == source && s.1 == code)
        .map(|s| s.3)
        .sum()
}

#[test]
fn the_gateway_routes_by_its_bound_virtual_service_and_the_mesh_does_not() {
    let series = source_series(&mesh(BOOKINFO_GATEWAY));
    let gw = "istio-ingressgateway";
    // At the gateway: `/productpage` is routed, `/admin` matches no route (404 NR).
    assert!(count(&series, gw, "200") > 500, "{series:?}");
    assert!(count(&series, gw, "404") > 500, "{series:?}");
    assert!(
        series
            .iter()
            .filter(|s| s.0 == gw && s.1 == "404")
            .all(|s| s.2 == "NR"),
        "{series:?}"
    );
    // In the mesh the VirtualService does not apply: every path reaches productpage.
    assert!(count(&series, "reviews-v1", "200") > 1000, "{series:?}");
    assert_eq!(count(&series, "reviews-v1", "404"), 0, "{series:?}");
}

#[test]
fn a_gateway_no_virtual_service_is_bound_to_answers_404() {
    let gateway_only = &BOOKINFO_GATEWAY[..BOOKINFO_GATEWAY.find("---").unwrap()];
    let series = source_series(&mesh(gateway_only));
    assert_eq!(
        count(&series, "istio-ingressgateway", "200"),
        0,
        "{series:?}"
    );
    assert!(
        count(&series, "istio-ingressgateway", "404") > 1000,
        "{series:?}"
    );
}

#[test]
fn a_virtual_service_bound_to_the_gateway_and_mesh_routes_both() {
    let both =
        BOOKINFO_GATEWAY.replace("  - bookinfo-gateway\n", "  - bookinfo-gateway\n  - mesh\n");
    let both = both.replace(
        "  - \"*\"\n  gateways",
        "  - \"*\"\n  - productpage\n  gateways",
    );
    let series = source_series(&mesh(&both));
    assert!(
        count(&series, "istio-ingressgateway", "404") > 500,
        "{series:?}"
    );
    assert!(count(&series, "reviews-v1", "404") > 500, "{series:?}");
}

/// A scenario whose traffic enters through `gateway`, with `extra` keys for the traffic entry
/// and a second entry when `second` is set.
fn scenario(gateway: &str, extra: &str, second: &str) -> String {
    format!(
        r#"name: x
duration: 5m
service:
  name: productpage
  primary: {{pods: 2}}
traffic:
  - client: istio-ingressgateway
    gateway: {gateway}
    rate: 10{extra}{second}
manifests: |
{}
canary:
  apiVersion: flagger.app/v1beta1
  kind: Canary
  metadata: {{name: productpage}}
  spec:
    targetRef: {{apiVersion: apps/v1, kind: Deployment, name: productpage}}
    service: {{port: 9080, gateways: [bookinfo-gateway], hosts: ["*"]}}
    analysis: {{interval: 30s, threshold: 2, maxWeight: 50, stepWeight: 10}}
timeline:
  - at: 1m
    deploy: {{}}
expect:
  outcome: promoted
"#,
        BOOKINFO_GATEWAY
            .trim_start()
            .lines()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

fn refused(text: &str) -> ScenarioError {
    Scenario::parse(text, Path::new("x.yaml")).expect_err("refused")
}

#[test]
fn traffic_enters_only_through_a_declared_gateway_one_proxy_per_gateway() {
    Scenario::parse(&scenario("bookinfo-gateway", "", ""), Path::new("x.yaml")).expect("loads");
    let e = refused(&scenario("public-gateway", "", ""));
    assert_eq!(e.field, "traffic[0].gateway", "{e}");
    assert_eq!(e.line, Some(8), "{e}");
    assert!(
        e.message
            .contains("no Istio Gateway named `public-gateway`"),
        "{e}"
    );
    let e = refused(&scenario("bookinfo-gateway", "\n    sidecar: false", ""));
    assert_eq!(e.field, "traffic[0].sidecar", "{e}");
    let twice = "\n  - {client: edge, gateway: bookinfo-gateway, rate: 5}";
    let e = refused(&scenario("bookinfo-gateway", "", twice));
    assert_eq!(e.field, "traffic[1].gateway", "{e}");
}

#[test]
fn the_canary_split_bound_to_the_gateway_reaches_the_canary_through_it() {
    let s =
        Scenario::parse(&scenario("bookinfo-gateway", "", ""), Path::new("x.yaml")).expect("loads");
    let r = harness::run(&s, &s.variants[0], s.seed).expect("runs");
    assert_eq!(r.outcome, Outcome::Promoted, "{:?}", r.final_message);
    assert!(r.counters["requests_canary"] > 0, "{:?}", r.counters);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let gw = r
        .clients
        .iter()
        .find(|c| c.name == "istio-ingressgateway")
        .expect("client");
    assert_eq!(gw.failed, 0, "{gw:?}");
}
