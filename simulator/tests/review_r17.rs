//! Review r17 of issue 17 (the mesh, exact): behaviours that differ from Envoy's, Istio's or
//! Linkerd's, or from what the issue's own outputs document, each as a test that passes once
//! the behaviour is right.

mod support;

use std::path::PathBuf;

use support::mesh::{behaviour, mesh_with};
use support::{path_str, sim};

use fledge_simulator::engine::SECONDS;
use fledge_simulator::mesh::{Action, ClientConfig, MeshConfig, ServiceConfig, VersionConfig};

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name)
}

fn one_version(seed: u64, pods: u32, rps: f64) -> MeshConfig {
    MeshConfig {
        seed,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![VersionConfig::new("primary", pods, behaviour(5, 8))],
        )],
        clients: vec![ClientConfig::new("client", "podinfo", rps)],
        ..Default::default()
    }
}

/// The trace writes `refused` lines (a request the server's sidecar denied, 403) and
/// `answered` lines (a direct response or redirect), but neither is in the legend of
/// `fledge-sim run --help` / scenarios/README.md, and `--trace-filter event=refused` exits 2
/// with "no event is named `refused`": the one way to pull a denied request out of a large
/// trace is refused. `authz-new-service-account.yaml` denies about 90 requests.
#[test]
#[ignore = "review r17 finding 1: the trace writes `refused` and `answered` events that the legend omits and --trace-filter event=... rejects"]
fn every_event_the_trace_writes_is_in_the_legend_and_can_be_filtered() {
    let file = scenario("authz-new-service-account.yaml");
    let dir = std::env::temp_dir().join(format!("fledge-r17-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("refused.trace");
    let out = sim(&[
        "run",
        path_str(&file),
        "--seed",
        "1",
        "--trace",
        path_str(&trace),
        "--trace-filter",
        "event=refused",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(
        text.lines().any(|l| l.contains(" refused ")),
        "no refused line kept:\n{text}"
    );
    let help = sim(&["run", "--help"]);
    for event in ["refused", "answered"] {
        assert!(
            help.stdout.lines().any(|l| l.trim_start().starts_with(event)),
            "`{event}` is not in the legend of run --help"
        );
    }
}
