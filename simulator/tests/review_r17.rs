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
            help.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(event)),
            "`{event}` is not in the legend of run --help"
        );
    }
}

const VS_NO_SUBSET: &str = "kind: VirtualService\nmetadata:\n  name: p\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - destination:\n            host: podinfo\n";

/// Every connection fails its TLS handshake (the DestinationRule asks `ISTIO_MUTUAL` of
/// servers whose sidecars have mTLS disabled): each attempt ends 503 `UF`, a locally
/// originated error (Envoy `outlier.rst`: "inability to connect" is a local-origin error).
fn handshake_failures(outlier: &str, retries: &str) -> String {
    format!(
        "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    tls: {{mode: ISTIO_MUTUAL}}\n{outlier}---\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: DISABLE\n---\n{VS_NO_SUBSET}{retries}"
    )
}

/// Finding 4, a test hole (not a behaviour fault), from the break-check of fix 8: `mesh_exact.rs`'s
/// `destination_rule_retry_budget_bounds_retries_in_flight` asserts `peak <= floor` and some
/// overflow, so a budget that refuses every retry (`retry_limit` returning 0) passes it. Envoy's
/// budget never goes below `min_retry_concurrency` (envoy
/// `source/common/upstream/resource_manager_impl.h`, `RetryBudgetImpl::max`): under steady
/// failures at low load the peak of retries in flight reaches the floor exactly. This test
/// passes today and fails under that break.
#[test]
fn a_retry_budget_lets_exactly_its_floor_of_retries_through_at_low_load() {
    let cases = [
        // (retryBudget, the floor)
        ("{}", 3),
        ("{minRetryConcurrency: 1}", 1),
        ("{percent: 0, minRetryConcurrency: 2}", 2),
    ];
    for (budget, floor) in cases {
        let m = format!(
            "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    retryBudget: {budget}\n---\n{VS_NO_SUBSET}      retries: {{attempts: 5, retryOn: 5xx}}\n"
        );
        let mut mesh = mesh_with(one_version(11, 2, 40.0), &m);
        let v = mesh.version_id("podinfo", "primary").unwrap();
        mesh.apply(Action::SetErrorRate {
            version: v,
            rate: 0.9,
        })
        .unwrap();
        mesh.run_until(30 * SECONDS);
        let c = mesh.client_id("client").unwrap();
        assert_eq!(
            mesh.peak_retries_in_flight(c, v),
            floor,
            "retryBudget {budget}"
        );
        assert!(
            mesh.proxy_counters(c, v).retries > 0,
            "retryBudget {budget}"
        );
    }
}

/// `retryOn: reset-before-request` (Envoy's router: retry a reset or connect failure that
/// happened before the request went upstream; envoy issue 10007, and istio/istio
/// `pilot/pkg/networking/core/route/retry/retry.go`, where it is Istio's own inbound default)
/// is warned as an "unknown condition" and ignored, so the connect failures it exists for are
/// not retried. Istio hands any `retryOn` word to Envoy unchanged (`parseRetryOn`).
#[test]
#[ignore = "review r17 finding 3: retryOn reset-before-request is ignored as unknown; Envoy retries connect failures under it"]
fn reset_before_request_retries_connect_failures() {
    let m = handshake_failures(
        "",
        "      retries: {attempts: 2, retryOn: reset-before-request}\n",
    );
    let warnings = fledge_simulator::manifest::parse(&m)
        .expect("parses")
        .warnings;
    assert!(
        !warnings.iter().any(|w| w.contains("reset-before-request")),
        "{warnings:?}"
    );
    let mut mesh = mesh_with(one_version(5, 2, 20.0), &m);
    let v = mesh.version_id("podinfo", "primary").unwrap();
    mesh.run_until(5 * SECONDS);
    let c = mesh.client_id("client").unwrap();
    let pc = mesh.proxy_counters(c, v);
    assert!(pc.connect_failures > 0, "no connect failure");
    assert!(pc.retries > 0, "connect failures not retried: {pc:?}");
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

/// Istio's retry policy has Envoy avoid the hosts a request already tried
/// (`previous_hosts` predicate, `host_selection_retry_max_attempts: 5`, istio/istio
/// `pilot/pkg/networking/core/route/retry/retry.go`), and Envoy's balancer then picks up to
/// `hostSelectionRetryCount() + 1` = 6 times on a retry (envoy
/// `source/common/upstream/load_balancer_impl.cc`, `chooseHost`; the router's
/// `hostSelectionRetryCount` returns the policy's 5 on a retry) before it keeps the last pick.
/// `balance.rs` picks 5 times (`for _ in 1..5`, though its comment says "up to 5 times" of
/// re-picking). With RANDOM over two pods the second try lands on the first try's pod with
/// probability 2^-6 (1.6%) in Envoy; the simulator gives 2^-5 (3.1%).
#[test]
#[ignore = "review r17 finding 8: a retry re-picks a tried host 4 times, not Envoy's 5 (6 picks): with RANDOM over 2 pods try 2 repeats try 1's pod 3.1% of the time, Envoy 1.6%"]
fn a_retry_re_picks_a_tried_host_as_many_times_as_envoy() {
    let text = r#"name: previous-hosts
duration: 3m
istio:
  version: "1.23"
service:
  name: podinfo
  primary: {pods: 2, workers: 64, latency: {mean: 5ms}, error_rate: 0.5, error_code: 503}
traffic:
  - {client: frontend, rate: 200}
canary:
  apiVersion: flagger.app/v1beta1
  kind: Canary
  metadata: {name: podinfo}
  spec:
    targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
    service:
      port: 9898
      trafficPolicy:
        loadBalancer: {simple: RANDOM}
    analysis: {interval: 1m, threshold: 2, maxWeight: 30, stepWeight: 10}
timeline:
  - {at: 2m59s, deploy: {}}
expect:
  outcome: undecided
"#;
    let file = support::write("previous-hosts.yaml", text);
    let trace = file.with_file_name("previous-hosts.trace");
    let out = sim(&[
        "run",
        path_str(&file),
        "--seed",
        "1",
        "--trace",
        path_str(&trace),
        "--trace-filter",
        "event=attempt-sent",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&trace).unwrap();
    let field = |l: &str, k: &str| {
        l.split_whitespace()
            .find_map(|f| f.strip_prefix(k).map(str::to_string))
    };
    let mut first = std::collections::BTreeMap::new();
    let (mut retries, mut same) = (0u32, 0u32);
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (Some(req), Some(try_no), Some(pod)) =
            (field(l, "req="), field(l, "try="), field(l, "pod="))
        else {
            continue;
        };
        match try_no.as_str() {
            "1" => {
                first.insert(req, pod);
            }
            "2" => {
                retries += 1;
                same += u32::from(first.get(&req) == Some(&pod));
            }
            _ => {}
        }
    }
    assert!(retries > 10_000, "{retries} retries");
    let p = f64::from(same) / f64::from(retries);
    let envoy = 0.5f64.powi(6);
    let se = (envoy * (1.0 - envoy) / f64::from(retries)).sqrt();
    assert!(
        (p - envoy).abs() < 4.0 * se,
        "try 2 on try 1's pod {p:.4} ({same}/{retries}); Envoy's six picks give {envoy:.4}"
    );
}

/// `retries.retryIgnorePreviousHosts: false` is accepted and silently ignored: retries still
/// avoid the hosts already tried. Istio honours it by dropping the `previous_hosts` predicate
/// (`pilot/pkg/networking/core/route/retry/retry.go`, `ConvertPolicy`: "User has specified
/// RetryIgnorePreviousHosts, so honor it"), after which a retry is balanced like any request.
/// With RANDOM over two pods, one failing every request and one never, a request that first
/// lands on the bad pod (half of them) is retried there again half of the time: a quarter of
/// the requests end 503 `URX`. With the predicate (what the simulator keeps) about 1.6% do.
#[test]
#[ignore = "review r17 finding 10: retryIgnorePreviousHosts: false is accepted and silently ignored; retries still avoid tried hosts"]
fn retry_ignore_previous_hosts_false_lets_a_retry_go_back_to_the_same_pod() {
    let m = format!(
        "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    loadBalancer: {{simple: RANDOM}}\n---\n{VS_NO_SUBSET}      retries: {{attempts: 1, retryOn: 5xx, retryIgnorePreviousHosts: false}}\n"
    );
    let mut mesh = mesh_with(one_version(4, 2, 100.0), &m);
    let v = mesh.version_id("podinfo", "primary").unwrap();
    mesh.apply(Action::SetPodErrorRate {
        version: v,
        pod: 0,
        rate: Some(1.0),
    })
    .unwrap();
    mesh.run_until(30 * SECONDS);
    let exhausted =
        support::mesh::count_flags(&mesh, |f| f & fledge_simulator::telemetry::flags::URX != 0);
    let done = mesh.stats().completed;
    let share = exhausted as f64 / done as f64;
    assert!(
        (0.2..0.3).contains(&share),
        "{exhausted} of {done} requests ran out of retries ({share:.3}); expected about 0.25"
    );
}
