//! Review r21s (issue 21 item 3: the sidecars' cost) as a user would meet it: the CPU and the
//! added latency the run reports, workloads without a sidecar, handshakes, timeouts.

mod support;

use support::mesh::seen;

use fledge_simulator::engine::{MILLIS, SECONDS, SimTime};
use fledge_simulator::manifest::parse;
use fledge_simulator::mesh::*;

fn cost(latency_ms: SimTime, cpu: SimTime, concurrency: u32, limit: Option<u32>) -> ProxyCost {
    ProxyCost {
        latency: ServiceTime::Constant(latency_ms * MILLIS),
        cpu_per_request: cpu,
        concurrency,
        cpu_limit_millis: limit,
        ..ProxyCost::default()
    }
}

/// `clients` (name, sidecar) at `rps` each, evenly spaced, to one pod answering in 10 ms.
fn mesh(
    rps: f64,
    clients: &[(&str, bool)],
    client_proxy: Option<ProxyCost>,
    server: Option<ProxyCost>,
    server_sidecar: bool,
) -> Mesh {
    let behaviour = Behaviour {
        workers: 100_000,
        service_time: ServiceTime::Constant(10 * MILLIS),
        proxy: server,
        ..Behaviour::default()
    };
    let mut version = VersionConfig::new("primary", 1, behaviour);
    version.sidecar = server_sidecar;
    let cfg = MeshConfig {
        seed: 5,
        services: vec![ServiceConfig::new("podinfo", vec![version])],
        clients: clients
            .iter()
            .map(|&(name, sidecar)| ClientConfig {
                shape: ArrivalShape::Constant,
                sidecar,
                ..ClientConfig::new(name, "podinfo", rps)
            })
            .collect(),
        proxy: client_proxy,
        ..Default::default()
    };
    Mesh::new(cfg).expect("a valid mesh")
}

fn usage(m: &Mesh, name: &str) -> Option<SidecarUsage> {
    m.sidecar_usage()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, u)| u)
}

/// Finding 3. Envoy binds each accepted connection to one worker thread until it closes (its
/// docs, arch_overview/intro/threading_model), so requests multiplexed on one HTTP/2
/// connection share one thread, whatever
/// `concurrency` says. Here the client's sidecar keeps one upgraded connection to the pod: its
/// sidecar (2 threads, 10 ms of CPU a request) passes at most 100 requests/s of it, not 200.
/// The model hands each request to any free thread of the pod; README's "Sidecar cost" does not
/// say so either.
#[test]
#[ignore = "review r21s finding 3: worker threads take requests, not connections: one HTTP/2 connection gets all of a sidecar's threads"]
fn one_http2_connection_is_served_by_one_worker_thread() {
    let p = cost(0, 10 * MILLIS, 2, None);
    let mut m = mesh(150.0, &[("frontend", true)], None, Some(p), true);
    let dr = "apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: podinfo}
spec:
  host: podinfo
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {h2UpgradePolicy: UPGRADE, http2MaxRequests: 100000, http1MaxPendingRequests: 100000}
";
    m.apply_manifests(&parse(dr).expect("a DestinationRule"))
        .expect("applies");
    m.run_until(60 * SECONDS);
    let v = m.version_id("podinfo", "primary").expect("declared");
    let client = m.client_id("frontend").expect("declared");
    assert_eq!(m.proxy_counters(client, v).handshakes, 1, "one connection");
    let served = m.queue_stats(v).arrivals;
    assert!(
        served <= 6_001,
        "one thread passed {served} requests in 60 s"
    );
}

/// Finding 4. A pod has one sidecar: its worker threads and CPU limit carry the requests it
/// makes (outbound) as well as those it receives. `front` (1 thread, 10 ms of CPU a request
/// through its sidecar) takes 60 requests/s and calls `back` once for each: 120 requests/s
/// through its sidecar need 1.2 threads, so it saturates and passes about 50 of its 60
/// requests/s. The model takes threads for inbound requests only (sidecar.rs says so; README's
/// "Sidecar cost" does not) and counts 1.2 cores of CPU on one thread.
#[test]
#[ignore = "review r21s finding 4: a version's calls out take none of its sidecar's worker threads or CPU limit: an undersized sidecar that calls out never saturates on them"]
fn calls_out_share_the_sidecars_worker_threads() {
    let limited = cost(0, 10 * MILLIS, 1, None);
    let front = Behaviour {
        workers: 100_000,
        service_time: ServiceTime::Constant(MILLIS),
        proxy: Some(limited),
        calls: vec![vec![support::mesh::call_of("back", false, None)]],
        ..Behaviour::default()
    };
    let back = Behaviour {
        workers: 100_000,
        service_time: ServiceTime::Constant(MILLIS),
        ..Behaviour::default()
    };
    let cfg = MeshConfig {
        seed: 5,
        services: vec![
            ServiceConfig::new("front", vec![VersionConfig::new("v1", 1, front)]),
            ServiceConfig::new("back", vec![VersionConfig::new("v1", 1, back)]),
        ],
        clients: vec![ClientConfig {
            shape: ArrivalShape::Constant,
            ..ClientConfig::new("frontend", "front", 60.0)
        }],
        ..Default::default()
    };
    let mut m = Mesh::new(cfg).expect("a valid mesh");
    m.run_until(60 * SECONDS);
    let u = usage(&m, "front-v1").expect("modelled");
    let front = m.version_id("front", "v1").expect("declared");
    let served = m.queue_stats(front).arrivals;
    assert!(
        served < 3_200,
        "front's app got {served} of 3600 requests, its sidecar never waited: {u:?}"
    );
}

/// A scenario whose one pod's sidecar (1 thread, 10 ms of CPU a request) passes 100
/// requests/s of the 200 sent: half of what is sent is still waiting at the end.
const SATURATED: &str = r#"name: saturated
seed: 1
duration: 1m
namespace: test
proxy: {cpu_per_request: 10ms, concurrency: 1}
service:
  name: podinfo
  primary: {pods: 1, workers: 64, latency: {constant: 10ms}}
traffic:
  - {client: frontend, rate: 200, arrivals: constant}
canary:
  apiVersion: flagger.app/v1beta1
  kind: Canary
  metadata: {name: podinfo, namespace: test}
  spec:
    targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
    service: {port: 9898}
    analysis:
      interval: 30s
      threshold: 2
      maxWeight: 50
      stepWeight: 10
      metrics:
        - {name: request-success-rate, thresholdRange: {min: 99}, interval: 1m}
timeline:
  - {at: 2m, deploy: {}}
expect:
  outcome: undecided
"#;

/// Finding 6. The summary's `requests: N sent, M failed (S% success)` counts answered
/// requests only: with a saturated sidecar the client sent 12,000 requests, 6,000 of them never
/// answered by the end, and the run says `5999 sent, 0 failed (100.000% success)`, with nothing
/// about the backlog (the sidecars line shows its CPU and mean wait only).
#[test]
#[ignore = "review r21s finding 6: the run says `5999 sent ... 100% success` when the client sent 12000 and a saturated sidecar never answered half of them"]
fn the_summary_counts_requests_a_saturated_sidecar_never_answered() {
    let file = support::write("r21s-saturated.yaml", SATURATED);
    let out = support::sim(&["run", support::path_str(&file)]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("requests: "))
        .expect("a requests line");
    let sent: u64 = line["requests: ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count");
    let told = out.stdout.contains("unanswered") || out.stdout.contains("not answered");
    assert!(
        sent >= 11_990 || told,
        "the client sent 12000 requests; the run says: {line}"
    );
}

/// The `sidecars` of `run --json` for `text`.
fn sidecars_json(name: &str, text: &str) -> serde_json::Value {
    let file = support::write(name, text);
    let out = support::sim(&["run", "--json", support::path_str(&file)]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    v[0]["sidecars"].clone()
}

/// Finding 7. Istio derives a proxy's worker threads from its CPU limit only when no
/// ProxyConfig sets `concurrency` (pilot-agent `ConstructProxyConfig` reads `ISTIO_CPU_LIMIT`,
/// rounded up, when the merged ProxyConfig has none); a mesh-wide `concurrency` (the top-level
/// `proxy.concurrency`, meshConfig.defaultConfig) is kept. Here the top level says 4 threads
/// and the primary's pod template sets a 500m limit: its sidecar runs 4 threads on half a core,
/// as if the primary had written both. The model drops to 1 thread, as if the primary had
/// written `concurrency: 1` (README: "2; with `cpu_limit`, its cores rounded up").
#[test]
#[ignore = "review r21s finding 7: a version's cpu_limit replaces the thread count the top-level proxy set explicitly; Istio keeps a ProxyConfig concurrency"]
fn a_versions_cpu_limit_keeps_the_mesh_wide_concurrency() {
    let base = SATURATED
        .replace(
            "proxy: {cpu_per_request: 10ms, concurrency: 1}",
            "proxy: {cpu_per_request: 10ms, concurrency: 4}",
        )
        .replace(
            "{client: frontend, rate: 200, arrivals: constant}",
            "{client: frontend, rate: 40}",
        );
    let with = |proxy: &str| {
        base.replace(
            "latency: {constant: 10ms}}",
            &format!("latency: {{constant: 10ms}}, proxy: {proxy}}}"),
        )
    };
    let limit_only = sidecars_json("r21s-limit.yaml", &with("{cpu_limit: 500m}"));
    let both = sidecars_json(
        "r21s-limit-4.yaml",
        &with("{cpu_limit: 500m, concurrency: 4}"),
    );
    assert_eq!(
        limit_only, both,
        "a 500m limit under a mesh-wide concurrency of 4"
    );
}

/// Finding 8. Under `mesh: linkerd` the sidecars are linkerd2-proxy, not Envoy: `concurrency`
/// (Istio's ProxyConfig) and `cpu_limit` (`sidecar.istio.io/proxyCPULimit`) are Istio's knobs,
/// and the defaults are Istio's published figures. The scenario loads and runs them silently
/// as Envoy's; README's "Sidecar cost" never names Linkerd. Either a warning at load or the
/// README saying what `proxy` means for Linkerd's proxy would tell the user.
#[test]
#[ignore = "review r21s finding 8: `proxy` under `mesh: linkerd` runs Envoy's worker threads and Istio's figures silently; README's Sidecar cost does not mention Linkerd"]
fn proxy_under_linkerd_is_explained_or_warned_about() {
    let text = SATURATED
        .replace("namespace: test\n", "namespace: test\nmesh: linkerd\n")
        .replace(
            "{client: frontend, rate: 200, arrivals: constant}",
            "{client: frontend, rate: 20}",
        );
    let file = support::write("r21s-linkerd.yaml", &text);
    let out = support::sim(&["run", support::path_str(&file)]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("sidecars: "), "{}", out.stdout);
    let warned = format!("{}{}", out.stdout, out.stderr)
        .lines()
        .any(|l| l.contains("warning") && l.contains("proxy"));
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/README.md"),
    )
    .expect("scenarios/README.md");
    let start = readme.find("### Sidecar cost").expect("the section");
    let section = &readme[start..];
    let section = &section[..section[4..].find("\n### ").map_or(section.len(), |e| e + 4)];
    assert!(
        warned || section.contains("Linkerd") || section.contains("linkerd"),
        "no warning, and the section says nothing of Linkerd:\n{}",
        out.stderr
    );
}

/// Finding 9. A `proxy` on a version without a sidecar has nothing to apply to; the scenario
/// takes it silently (no warning, no sidecars entry), where the loader warns of other settings
/// a run does not use. A user who cut `cpu_limit` on an uninjected Deployment is not told.
#[test]
#[ignore = "review r21s finding 9: `proxy` on a version with `sidecar: false` is ignored without a warning"]
fn a_proxy_on_a_version_without_a_sidecar_is_warned_about() {
    let text = SATURATED.replace(
        "latency: {constant: 10ms}}",
        "latency: {constant: 10ms}, sidecar: false, proxy: {cpu_limit: 20m}}",
    );
    let file = support::write("r21s-uninjected.yaml", &text);
    let out = support::sim(&["run", support::path_str(&file)]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let warned = format!("{}{}", out.stdout, out.stderr)
        .lines()
        .any(|l| l.contains("warning") && l.contains("proxy"));
    assert!(warned, "no warning:\n{}{}", out.stdout, out.stderr);
}
