//! DestinationRule subsets as istiod resolves them into Envoy clusters: a subset over the pods
//! of several versions is one cluster over all of them; a subset selecting no pod is a cluster
//! without endpoints (loaded, as Istio accepts it, its share answered 503 `UH`); a subset no
//! DestinationRule defines has no cluster (its requests answered 503 `NC`, not served by the
//! version of that name), and a VirtualService naming one routes once a DestinationRule does.

mod support;

use std::path::Path;

use fledge_simulator::engine::SECONDS;
use fledge_simulator::harness;
use fledge_simulator::mesh::*;
use fledge_simulator::scenario::Scenario;
use fledge_simulator::telemetry::{Reporter, flags};
use support::mesh::{applied as apply, count_flag, total, v1_and_v2};
use support::scenario::{destination_rule, subsets, virtual_service};

const BOOKINFO: &str = include_str!("../../scenarios/bookinfo-reviews.yaml");

/// `backend` with versions v1 and v2 (two pods each), called by `frontend` at 100/s.
fn mesh() -> Mesh {
    let cfg = MeshConfig {
        seed: 3,
        services: vec![v1_and_v2("backend", 2, Behaviour::default())],
        clients: vec![ClientConfig::new("frontend", "backend", 100.0)],
        ..Default::default()
    };
    Mesh::new(cfg).expect("a mesh")
}

fn served(mesh: &Mesh, version: &str) -> u64 {
    support::mesh::served(mesh, "backend", version)
}

/// 90% to subset v1, 10% to v2.
fn split() -> String {
    virtual_service(
        "backend",
        "- route:\n    - {destination: {host: backend, subset: v1}, weight: 90}\n    - {destination: {host: backend, subset: v2}, weight: 10}\n",
    )
}

#[test]
fn a_destinationrule_applied_after_the_virtualservice_makes_its_subsets_route() {
    let mut m = mesh();
    let warnings = apply(&mut m, &split());
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    m.run_until(30 * SECONDS);
    // No cluster for either subset yet: Envoy answers 503 `NC`.
    let unrouted = count_flag(&m, flags::NC);
    assert!(unrouted > 2_500, "{unrouted} NC");
    assert_eq!(served(&m, "v1") + served(&m, "v2"), 0);
    assert!(apply(&mut m, &subsets("backend", &["v1", "v2"])).is_empty());
    m.run_until(60 * SECONDS);
    assert_eq!(
        count_flag(&m, flags::NC),
        unrouted,
        "NC after the DestinationRule"
    );
    let (v1, v2) = (served(&m, "v1") as f64, served(&m, "v2") as f64);
    assert!(v1 + v2 > 2_500.0, "{} routed", v1 + v2);
    let share = v2 / (v1 + v2);
    assert!((0.07..0.13).contains(&share), "v2 took {share:.3}");
}

#[test]
fn a_subset_over_two_versions_spreads_its_share_over_all_their_pods() {
    let mut m = mesh();
    let both = destination_rule(
        "backend",
        "subsets:\n  - {name: all, labels: {app: backend}}\n",
    );
    assert!(apply(&mut m, &both).is_empty());
    let to_all = virtual_service(
        "backend",
        "- route: [{destination: {host: backend, subset: all}}]\n",
    );
    assert!(apply(&mut m, &to_all).is_empty());
    m.run_until(60 * SECONDS);
    let (v1, v2) = (served(&m, "v1") as f64, served(&m, "v2") as f64);
    assert!(v1 + v2 > 5_000.0, "{} served", v1 + v2);
    let share = v2 / (v1 + v2);
    // Four pods in one cluster, least-request balanced: each version about half.
    assert!((0.45..0.55).contains(&share), "v2 took {share:.3}");
    assert_eq!(count_flag(&m, flags::NC) + count_flag(&m, flags::UH), 0);
}

/// Istio's samples define subsets for versions a cluster need not run
/// (destination-rule-all.yaml: `ratings` v2-mysql, v2-mysql-vm); Istio accepts them (their
/// clusters have no endpoints), and so does the loader (it once refused them; review r20).
#[test]
fn a_subset_for_a_version_not_deployed_loads_as_in_istio() {
    let text = BOOKINFO.replace(
        "    - name: v3\n      labels:\n        version: v3\n",
        "    - name: v3\n      labels:\n        version: v3\n    - name: v4\n      labels:\n        version: v4\n",
    );
    assert_ne!(text, BOOKINFO);
    let scenario = Scenario::parse(&text, Path::new("bookinfo-v4.yaml"))
        .unwrap_or_else(|e| panic!("Istio accepts a subset with no pods: {e}"));
    let r = harness::run(&scenario, &scenario.variants[0], 7).expect("the run");
    assert!(r.passed(), "{:?}", r.checks);
}

/// A scenario's VirtualService routing to a subset that no DestinationRule defines is not
/// routed to the version of that name: Envoy has no cluster for it (503, flag NC) and istioctl
/// analyze reports the missing subset. Refusing it at its line or failing its requests is
/// right; serving them is not (review r20).
#[test]
fn a_subset_no_destination_rule_defines_is_not_routed_by_its_name() {
    let start = BOOKINFO.find("manifests: |\n").expect("manifests") + "manifests: |\n".len();
    let end = BOOKINFO.find("  ---\n").expect("two documents") + "  ---\n".len();
    let text = format!("{}{}", &BOOKINFO[..start], &BOOKINFO[end..]);
    assert!(!text.contains("kind: DestinationRule"), "{text}");
    let Ok(scenario) = Scenario::parse(&text, Path::new("bookinfo-no-dr.yaml")) else {
        return; // refused: fine
    };
    let r = harness::run(&scenario, &scenario.variants[0], 7).expect("the run");
    let reviews = r
        .services
        .iter()
        .find(|s| s.name == "reviews")
        .expect("reviews");
    let served: u64 = reviews.versions.iter().map(|v| v.requests).sum();
    assert_eq!(
        served, 0,
        "subsets without a DestinationRule served: {:?}",
        reviews.versions
    );
}

/// `backend` (v1 and v2) with `manifests` applied, run 20 s; the mesh's warnings applying them.
fn backend_mesh(manifests: &str) -> (Mesh, Vec<String>) {
    let mut mesh = mesh();
    let warnings = apply(&mut mesh, manifests);
    mesh.run_until(20 * SECONDS);
    (mesh, warnings)
}

/// Subsets v1 and v9 (no such version), half the requests to each.
fn half_to_v9() -> String {
    let vs = virtual_service(
        "backend",
        "- route:\n    - {destination: {host: backend, subset: v1}, weight: 50}\n    - {destination: {host: backend, subset: v9}, weight: 50}\n",
    );
    format!("{}---\n{vs}", subsets("backend", &["v1", "v9"]))
}

/// A subset whose labels select no pod is an Envoy cluster without
/// endpoints; its share of the route is answered 503 `UH` by the client's proxy.
#[test]
fn a_route_to_a_subset_selecting_no_pod_is_answered_503_uh() {
    let (mesh, warnings) = backend_mesh(&half_to_v9());
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("subset `v9`") && w.contains("503 `UH`")),
        "{warnings:?}"
    );
    let (requests, _) = total(&mesh, Reporter::Source);
    let uh = count_flag(&mesh, flags::UH);
    let share = uh as f64 / requests as f64;
    assert!(requests > 1500, "{requests}");
    // Binomial: five standard deviations of a half.
    let margin = 5.0 * (0.25 / requests as f64).sqrt();
    assert!((share - 0.5).abs() < margin, "{uh} of {requests} UH");
}

/// At the mesh, a subset no DestinationRule defines has no Envoy cluster; its
/// requests are answered 503 `NC`, not served by the version of that name.
#[test]
fn a_route_to_a_subset_no_destination_rule_defines_is_answered_503_nc() {
    let vs = virtual_service(
        "backend",
        "- route:\n    - {destination: {host: backend, subset: v2}}\n",
    );
    let (mesh, warnings) = backend_mesh(&vs);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("subset `v2`") && w.contains("503 `NC`")),
        "{warnings:?}"
    );
    let (requests, failures) = total(&mesh, Reporter::Source);
    assert!(requests > 1500, "{requests}");
    assert_eq!(failures, requests);
    assert_eq!(count_flag(&mesh, flags::NC), requests);
}
