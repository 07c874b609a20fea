//! DestinationRule subsets as istiod resolves them into Envoy clusters: a subset over the pods
//! of several versions is one cluster over all of them, and a VirtualService naming a subset
//! that no DestinationRule defines yet routes once one does.

mod support;

use fledge_simulator::engine::SECONDS;
use fledge_simulator::mesh::*;
use fledge_simulator::telemetry::flags;
use support::mesh::{applied as apply, count_flag, v1_and_v2};
use support::scenario::{destination_rule, subsets, virtual_service};

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
