//! Traffic entering through an Istio ingress gateway (issue 21, part 1, ingress): the gateway's
//! proxy routes by the VirtualServices bound to its Gateway, the sidecars by the mesh's.

mod support;

use std::path::Path;

use support::mesh::{behaviour, mesh_with, one_version, seen};

use fledge_simulator::harness;
use fledge_simulator::scenario::{Outcome, Scenario, ScenarioError};

use fledge_simulator::engine::SECONDS;
use fledge_simulator::manifest::parse;
use fledge_simulator::mesh::{
    ClientConfig, HeaderProfile, Mesh, MeshConfig, Propagation, ServiceConfig, ServiceTime,
    VersionConfig,
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

/// The Gateway of [`BOOKINFO_GATEWAY`] alone.
fn gateway_only() -> &'static str {
    &BOOKINFO_GATEWAY[..BOOKINFO_GATEWAY.find("---").expect("two documents")]
}

/// The ingress gateway's proxy as a scenario's `traffic` entry with `gateway:` builds it
/// (namespace `istio-system`, no service account given), sending to `service` through
/// `bookinfo-gateway`.
fn gateway_client(service: &str, rate: f64) -> ClientConfig {
    let mut gateway = ClientConfig::new("istio-ingressgateway", service, rate);
    gateway.namespace = Some("istio-system".into());
    gateway.gateway = Some("bookinfo-gateway".into());
    gateway
}

/// A mesh of `productpage` (and `others`) with `clients`, run for 20s under `manifests`.
fn run(clients: Vec<ClientConfig>, others: Vec<ServiceConfig>, manifests: &str) -> Mesh {
    let mut services = vec![one_version("productpage", 2, behaviour(5, 16))];
    services.extend(others);
    let cfg = MeshConfig {
        seed: 21,
        services,
        clients,
        ..Default::default()
    };
    let mut m = mesh_with(cfg, manifests);
    m.run_until(20 * SECONDS);
    m
}

/// `productpage` with the ingress gateway's proxy and an in-mesh client, both at 100 rps.
fn mesh(manifests: &str) -> Mesh {
    let mut gateway = gateway_client("productpage", 100.0);
    gateway.headers = paths();
    let mut inside = ClientConfig::new("reviews-v1", "productpage", 100.0);
    inside.headers = paths();
    run(vec![gateway, inside], Vec::new(), manifests)
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

/// Requests of `source` its proxy reported answered `code`.
fn source_count(m: &Mesh, source: &str, code: &str) -> u64 {
    count(&source_series(m), source, code)
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
    let series = source_series(&mesh(gateway_only()));
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

/// Istio: a match block's `gateways` restricts the block to those gateways; at a gateway it
/// names, the block applies (VirtualService reference, HTTPMatchRequest.gateways).
#[test]
fn a_match_block_naming_the_gateway_applies_at_that_gateway() {
    let vs = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match:
    - uri: {prefix: /productpage}
      gateways: [bookinfo-gateway]
    route:
    - destination: {host: productpage}
"#;
    let mut gateway = gateway_client("productpage", 100.0);
    gateway.headers = paths();
    let m = run(
        vec![gateway],
        Vec::new(),
        &format!("{}{vs}", gateway_only()),
    );
    let ok = source_count(&m, "istio-ingressgateway", "200");
    let nr = source_count(&m, "istio-ingressgateway", "404");
    assert!(
        ok > 500,
        "/productpage through bookinfo-gateway matches the block that names bookinfo-gateway: {ok} answered 200, {nr} 404"
    );
}

/// Istio: the ingress gateway is an Envoy like the sidecars; istiod pushes it route changes as
/// it pushes them to every proxy, after the same delay.
#[test]
fn the_gateway_proxy_gets_route_changes_after_the_push_delay() {
    let split = |canary: u32| {
        let vs = format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: productpage}}
spec:
  hosts: [productpage]
  gateways: [bookinfo-gateway, mesh]
  http:
  - route:
    - {{destination: {{host: productpage-primary}}, weight: {}}}
    - {{destination: {{host: productpage-canary}}, weight: {canary}}}
"#,
            100 - canary
        );
        parse(&format!("{}{vs}", gateway_only())).expect("manifests")
    };
    let cfg = MeshConfig {
        seed: 21,
        services: vec![ServiceConfig::new(
            "productpage",
            vec![
                VersionConfig::new("primary", 2, behaviour(5, 16)),
                VersionConfig::new("canary", 2, behaviour(5, 16)),
            ],
        )],
        clients: vec![
            gateway_client("productpage", 100.0),
            ClientConfig::new("frontend", "productpage", 100.0),
        ],
        propagation: Propagation {
            push_delay: Some(ServiceTime::Constant(30 * SECONDS)),
            outages: Vec::new(),
        },
        ..Default::default()
    };
    let mut m = Mesh::new(cfg).expect("a valid mesh");
    m.apply_manifests(&split(0)).expect("applies");
    m.run_until(10 * SECONDS);
    m.apply_manifests(&split(100)).expect("applies");
    m.run_until(20 * SECONDS);
    let to_canary = |client| seen(&m, client, Some(("productpage", "canary"))).requests;
    assert_eq!(
        to_canary("frontend"),
        0,
        "the sidecar still routes by the old weights"
    );
    assert_eq!(
        to_canary("istio-ingressgateway"),
        0,
        "10s into a 30s push delay the gateway's Envoy has not received the change either"
    );
}

/// Istio's ingress gateway runs under the service account `istio-ingressgateway-service-account`
/// (manifests/charts/gateways/istio-ingress/templates/deployment.yaml:
/// `serviceAccountName: {{ $gateway.name }}-service-account`), and Istio's own docs admit
/// ingress traffic by that principal; a `traffic` entry can name another.
#[test]
fn the_ingress_gateways_principal_is_its_service_account() {
    let manifests = format!(
        r#"{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: productpage}}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - route:
    - destination: {{host: productpage}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ingress-only}}
spec:
  selector: {{matchLabels: {{app: productpage}}}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"]
"#,
        gateway_only()
    );
    let m = run(
        vec![gateway_client("productpage", 100.0)],
        Vec::new(),
        &manifests,
    );
    let ok = source_count(&m, "istio-ingressgateway", "200");
    let denied = source_count(&m, "istio-ingressgateway", "403");
    assert!(
        ok > 1000 && denied == 0,
        "the ingress gateway's principal is admitted: {ok} answered 200, {denied} 403"
    );
    let named = scenario(
        "bookinfo-gateway",
        "\n    service_account: istio-ingressgateway-service-account",
        "",
    );
    Scenario::parse(&named, Path::new("x.yaml")).expect("a traffic entry names its account");
}

/// Istio resolves a VirtualService's `gateways` entry to `namespace/name`: a bare name is the
/// Gateway of the VirtualService's own namespace, `ns/name` the one in `ns`
/// (pilot/pkg/model/config.go resolveGatewayName). A VirtualService naming
/// `istio-system/bookinfo-gateway` is not bound to the Gateway `bookinfo-gateway` of `shop`.
#[test]
fn a_gateway_of_another_namespace_is_not_bound() {
    let manifests = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [istio-system/bookinfo-gateway]
  http:
  - route:
    - destination: {host: productpage}
"#;
    let cfg = MeshConfig {
        seed: 21,
        namespace: "shop".into(),
        services: vec![one_version("productpage", 2, behaviour(5, 16))],
        clients: vec![gateway_client("productpage", 100.0)],
        ..Default::default()
    };
    let mut m = mesh_with(cfg, manifests);
    m.run_until(20 * SECONDS);
    assert_eq!(
        source_count(&m, "istio-ingressgateway", "200"),
        0,
        "no VirtualService is bound to shop/bookinfo-gateway: its requests get 404 NR"
    );
}

/// One gateway commonly serves several hosts, each with its own VirtualService bound to it;
/// Istio builds the gateway's routes from every bound VirtualService, by host (a request for
/// `shop.example.com` takes that host's routes whatever else is bound).
#[test]
fn virtual_services_of_other_hosts_on_the_gateway_do_not_replace_routes() {
    let manifests = format!(
        r#"{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop}}
spec:
  hosts: [shop.example.com]
  gateways: [bookinfo-gateway]
  http:
  - route:
    - destination: {{host: productpage}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: admin}}
spec:
  hosts: [admin.example.com]
  gateways: [bookinfo-gateway]
  http:
  - route:
    - destination: {{host: admin}}
"#,
        gateway_only()
    );
    let m = run(
        vec![gateway_client("productpage", 100.0)],
        vec![one_version("admin", 1, behaviour(5, 16))],
        &manifests,
    );
    let ok = source_count(&m, "istio-ingressgateway", "200");
    assert!(
        ok > 1000,
        "shop.example.com's route to productpage still applies at the gateway: {ok} answered 200"
    );
}
