//! Review r17 of issue 17 (the mesh, exact): behaviours that differ from Envoy's, Istio's or
//! Linkerd's, or from what the issue's own outputs document, each as a test that passes once
//! the behaviour is right.

mod support;

use std::path::PathBuf;

use support::{path_str, sim};

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name)
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
            help.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(event)),
            "`{event}` is not in the legend of run --help"
        );
    }
}

/// The trace writes several flags joined by commas (`flags=UF,URX`, as scenarios/README.md's
/// crash-at-30 example shows), but `--trace-filter` splits every value at commas, so the very
/// value a line carries cannot be asked for: `--trace-filter flags=UF,URX` exits 2 with
/// "`URX` is not KEY=VALUE", and two `flags=` terms must both hold. Requests whose retries ran
/// out after connect failures (41 lines in crash-at-30, seed 5) cannot be pulled out.
#[test]
#[ignore = "review r17 finding 7: --trace-filter flags=UF,URX (a value the trace writes) exits 2: the comma splits it, so multi-flag lines cannot be selected"]
fn a_multi_flag_value_written_in_the_trace_can_be_filtered_on() {
    let dir = std::env::temp_dir().join(format!("fledge-r17-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("flags.trace");
    let out = sim(&[
        "run",
        path_str(&scenario("crash-at-30.yaml")),
        "--seed",
        "5",
        "--trace",
        path_str(&trace),
        "--trace-filter",
        "flags=UF,URX",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(!kept.is_empty(), "no line kept");
    assert!(kept.iter().all(|l| l.contains(" flags=UF,URX")), "{kept:?}");
}
