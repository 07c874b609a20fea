//! Control-plane propagation: a route change reaches each client proxy after its own push
//! delay, so the canary share the destinations observe lags the configured weight, then
//! converges; an outage of the control plane freezes the routes until it ends.

use fledge_simulator::engine::{SECONDS, SimTime};
use fledge_simulator::manifest::parse;
use fledge_simulator::mesh::*;

const CLIENTS: usize = 20;

fn mesh(propagation: Propagation) -> (Mesh, VersionId, VersionId) {
    let versions = vec![
        VersionConfig::new("primary", 4, Behaviour::default()),
        VersionConfig::new("canary", 4, Behaviour::default()),
    ];
    let cfg = MeshConfig {
        seed: 11,
        services: vec![ServiceConfig::new("podinfo", versions)],
        clients: (0..CLIENTS)
            .map(|i| ClientConfig::new(&format!("frontend-{i}"), "podinfo", 50.0))
            .collect(),
        scrape_interval: SECONDS,
        propagation,
        ..Default::default()
    };
    let mut mesh = Mesh::new(cfg).expect("a valid mesh");
    let svc = mesh.service_id("podinfo").expect("declared");
    let (primary, canary) = mesh.primary_canary(svc).expect("both versions");
    mesh.apply_manifests(&split(0)).expect("routes apply");
    (mesh, primary, canary)
}

fn split(canary: u32) -> fledge_simulator::manifest::Manifests {
    let text = format!(
        "apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: podinfo}}
spec:
  hosts: [podinfo]
  http:
    - route:
        - {{destination: {{host: podinfo-primary}}, weight: {}}}
        - {{destination: {{host: podinfo-canary}}, weight: {canary}}}
",
        100 - canary
    );
    parse(&text).expect("a VirtualService")
}

/// The canary's share of the requests the destinations report in `[from, to)`.
fn share(m: &Mesh, primary: VersionId, canary: VersionId, from: SimTime, to: SimTime) -> f64 {
    let c = m.destination_stats(canary, from, to).requests as f64;
    let p = m.destination_stats(primary, from, to).requests as f64;
    c / (c + p)
}

fn delayed() -> Propagation {
    Propagation {
        push_delay: Some(ServiceTime::LogNormal {
            p50: 3 * SECONDS,
            p99: 8 * SECONDS,
        }),
        outages: Vec::new(),
    }
}

#[test]
fn a_push_delay_makes_the_observed_canary_share_lag_the_weight_and_converge() {
    let (mut m, primary, canary) = mesh(delayed());
    m.run_until(10 * SECONDS);
    m.apply_manifests(&split(50)).expect("routes apply");
    m.run_until(60 * SECONDS);
    let first = share(&m, primary, canary, 10 * SECONDS, 11 * SECONDS);
    let middle = share(&m, primary, canary, 12 * SECONDS, 14 * SECONDS);
    let settled = share(&m, primary, canary, 30 * SECONDS, 60 * SECONDS);
    assert!(first < 0.15, "the first second after the change: {first}");
    assert!(
        first < middle && middle < settled,
        "the share grows as proxies apply the change: {first}, {middle}, {settled}"
    );
    assert!(
        (0.47..0.53).contains(&settled),
        "every proxy routes by the new weights once pushed: {settled}"
    );
}

#[test]
fn without_a_push_delay_every_proxy_routes_by_the_new_weight_at_once() {
    let (mut m, primary, canary) = mesh(Propagation::default());
    m.run_until(10 * SECONDS);
    m.apply_manifests(&split(50)).expect("routes apply");
    m.run_until(12 * SECONDS);
    let first = share(&m, primary, canary, 10 * SECONDS, 11 * SECONDS);
    assert!((0.42..0.58).contains(&first), "{first}");
}

#[test]
fn a_control_plane_outage_freezes_the_routes_until_it_ends() {
    let mut p = delayed();
    p.outages = vec![(5 * SECONDS, 40 * SECONDS)];
    let (mut m, primary, canary) = mesh(p);
    m.run_until(10 * SECONDS);
    m.apply_manifests(&split(50)).expect("routes apply");
    m.run_until(80 * SECONDS);
    let down = m
        .destination_stats(canary, 10 * SECONDS, 40 * SECONDS)
        .requests;
    assert_eq!(
        down, 0,
        "no proxy learns of the change while istiod is down"
    );
    let after = share(&m, primary, canary, 60 * SECONDS, 80 * SECONDS);
    assert!((0.46..0.54).contains(&after), "{after}");
}

#[test]
fn an_outage_that_ends_before_it_starts_is_refused() {
    let cfg = MeshConfig {
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![VersionConfig::new("primary", 1, Behaviour::default())],
        )],
        propagation: Propagation {
            push_delay: None,
            outages: vec![(10 * SECONDS, 10 * SECONDS)],
        },
        ..Default::default()
    };
    let err = Mesh::new(cfg).err().expect("refused");
    assert!(err.to_string().contains("control-plane outage"), "{err}");
}

/// The push-delay scenario with its `control_plane` section replaced.
fn scenario_with(section: &str) -> Result<fledge_simulator::scenario::Scenario, String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/push-delay.yaml"
    ))
    .expect("the scenario exists");
    let start = text
        .find("control_plane:\n")
        .expect("it has a control_plane");
    let end = text.find("traffic:\n").expect("and traffic");
    let text = format!("{}{section}{}", &text[..start], &text[end..]);
    fledge_simulator::scenario::Scenario::parse(&text, std::path::Path::new("x.yaml"))
        .map_err(|e| e.to_string())
}

#[test]
fn an_outage_after_the_end_of_the_run_or_of_no_length_is_refused_at_its_field() {
    let late = scenario_with("control_plane:\n  outages: [{at: 30m, for: 1m}]\n").unwrap_err();
    assert!(late.contains("control_plane.outages[0].at"), "{late}");
    let empty = scenario_with("control_plane:\n  outages: [{at: 3m, for: 0s}]\n").unwrap_err();
    assert!(empty.contains("control_plane.outages[0].for"), "{empty}");
    let delay = scenario_with("control_plane:\n  push_delay: {p50: 2s}\n").unwrap_err();
    assert!(delay.contains("control_plane.push_delay"), "{delay}");
    assert!(scenario_with("control_plane: {push_delay: {constant: 1s}}\n").is_ok());
}

/// The push-delay scenario shows the canary's observed share lagging each step and frozen
/// through the outage; its bound on the canary's requests holds only with the lag, so without
/// its `control_plane` (routes applied at once) the scenario fails that check.
#[test]
fn the_push_delay_scenario_fails_without_its_control_plane() {
    let s = scenario_with("").expect("loads");
    let v = &s.variants[0];
    let r = fledge_simulator::harness::run(&s, v, s.seed).expect("runs");
    let r = fledge_simulator::expect::checked(r, &v.expect);
    let failed: Vec<&str> = r
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(failed, ["counters.requests_canary"], "{:?}", r.checks);
}
