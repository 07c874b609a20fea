//! The sidecars' cost as `fledge-sim run` reads and reports it: the summary's `sidecars:` line
//! and `requests:` line, `--json`'s `sidecars` and `unanswered`, how `cpu_limit`,
//! `concurrency` and a version's `proxy` combine, and the warnings for settings a run ignores.

mod support;

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

/// `run` of `text` (written to `name`), which must succeed.
fn run(name: &str, text: &str, json: bool) -> String {
    let file = support::write(name, text);
    let mut args = vec!["run"];
    if json {
        args.push("--json");
    }
    args.push(support::path_str(&file));
    let out = support::sim(&args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    format!("{}{}", out.stdout, out.stderr)
}

/// The first result of `run --json` for `text`.
fn json(name: &str, text: &str) -> serde_json::Value {
    let file = support::write(name, text);
    let out = support::sim(&["run", "--json", support::path_str(&file)]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    v[0].clone()
}

/// The `--json` sidecars entry of `workload`.
fn sidecar<'a>(result: &'a serde_json::Value, workload: &str) -> &'a serde_json::Value {
    result["sidecars"]
        .as_array()
        .expect("sidecars")
        .iter()
        .find(|s| s["workload"] == workload)
        .unwrap_or_else(|| panic!("no sidecars entry for {workload}: {result}"))
}

fn warned(out: &str, about: &str) -> bool {
    out.lines()
        .any(|l| l.starts_with("warning") && l.contains(about))
}

/// The client sent 12,000 requests; the saturated sidecar took 6,000 and the rest wait at the
/// end: the summary says so beside the answered ones it counts, and `--json` has both.
#[test]
fn the_summary_tells_of_requests_a_saturated_sidecar_never_answered() {
    let out = run("sc-saturated.yaml", SATURATED, false);
    let line = out
        .lines()
        .find(|l| l.starts_with("requests: "))
        .expect("a requests line");
    assert!(
        line.starts_with("requests: 5999 sent, 0 failed")
            && line.contains("; 6001 more sent and not answered by the end"),
        "{line}"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("sidecars: "))
        .expect("a sidecars line");
    assert!(
        line.contains("podinfo-primary 61.8 s CPU (1.030 cores)")
            && line.contains("5999 still waiting for a worker at the end"),
        "{line}"
    );
    let r = json("sc-saturated-json.yaml", SATURATED);
    assert_eq!(r["unanswered"], 6001, "{r}");
    let s = sidecar(&r, "podinfo-primary");
    assert_eq!(s["requests"], 6000, "{s}");
    assert_eq!(s["backlog"], 5999, "{s}");
    assert_eq!(s["waited"], 5999, "{s}");
    for field in [
        "handshakes",
        "cpu_seconds",
        "mean_cores",
        "added_latency_ms",
        "mean_wait_ms",
    ] {
        assert!(s[field].is_number(), "{field}: {s}");
    }
}

/// SATURATED with the top-level `proxy` replaced, `version` added to the primary and `rate`
/// requests/s (evenly spaced).
fn with(proxy: &str, version: &str, rate: u32) -> String {
    SATURATED
        .replace(
            "proxy: {cpu_per_request: 10ms, concurrency: 1}",
            &format!("proxy: {proxy}"),
        )
        .replace(
            "latency: {constant: 10ms}}",
            &format!("latency: {{constant: 10ms}}{version}}}"),
        )
        .replace("rate: 200,", &format!("rate: {rate},"))
}

/// Requests the primary's sidecar took in the minute.
fn taken(name: &str, text: &str) -> u64 {
    let r = json(name, text);
    sidecar(&r, "podinfo-primary")["requests"]
        .as_u64()
        .expect("a count")
}

/// A CPU limit without `concurrency` runs its cores rounded up as worker threads: 1.5 cores
/// are 2 threads sharing 1.5 cores (150 requests/s at 10 ms each), not 1 (100/s).
#[test]
fn a_cpu_limit_runs_its_cores_rounded_up_as_threads() {
    let limit = |l: &str| {
        with(
            &format!("{{cpu_per_request: 10ms, cpu_limit: {l}}}"),
            "",
            400,
        )
    };
    let n = taken("sc-limit-1500.yaml", &limit("1500m"));
    assert!((8_950..=9_010).contains(&n), "1.5 cores: {n}");
    let n = taken("sc-limit-2500.yaml", &limit("2.5"));
    assert!((14_950..=15_010).contains(&n), "2.5 cores: {n}");
}

/// Istio derives the threads from the CPU limit only when no ProxyConfig sets `concurrency`
/// (pilot-agent): a mesh-wide `concurrency` of 4 stays under a version's 500m limit.
#[test]
fn a_versions_cpu_limit_keeps_the_mesh_wide_concurrency() {
    // Poisson arrivals, so that 4 threads sharing half a core wait otherwise than 1 would.
    let text = |version: &str| {
        with("{cpu_per_request: 10ms, concurrency: 4}", version, 40)
            .replace(", arrivals: constant", "")
    };
    let limit_only = json("sc-limit.yaml", &text(", proxy: {cpu_limit: 500m}"));
    let both = json(
        "sc-limit-4.yaml",
        &text(", proxy: {cpu_limit: 500m, concurrency: 4}"),
    );
    assert_eq!(limit_only["sidecars"], both["sidecars"]);
    let one = json(
        "sc-limit-1.yaml",
        &text(", proxy: {cpu_limit: 500m, concurrency: 1}"),
    );
    assert_ne!(
        limit_only["sidecars"], one["sidecars"],
        "the test tells 1 thread from 4"
    );
}

/// A version's `proxy` sets what it writes over the top level's and keeps the rest: 2
/// threads at the top level's 10 ms pass 200 of 300 requests/s.
#[test]
fn a_versions_proxy_takes_what_it_does_not_set_from_the_top_level() {
    let text = with(
        "{cpu_per_request: 10ms, concurrency: 1}",
        ", proxy: {concurrency: 2}",
        300,
    );
    let n = taken("sc-inherit.yaml", &text);
    assert!((11_950..=12_010).contains(&n), "{n}");
}

/// Each TLS handshake costs `cpu_per_handshake` at both ends: with no request CPU, a
/// sidecar's CPU is its handshakes times it.
#[test]
fn cpu_per_handshake_is_what_each_handshake_costs() {
    let text = with("{cpu_per_request: 0s, cpu_per_handshake: 2ms}", "", 50);
    let r = json("sc-handshake.yaml", &text);
    for workload in ["frontend", "podinfo-primary"] {
        let s = sidecar(&r, workload);
        let handshakes = s["handshakes"].as_f64().expect("handshakes");
        assert!(handshakes >= 1.0, "{s}");
        let cpu = s["cpu_seconds"].as_f64().expect("cpu");
        assert!((cpu - handshakes * 0.002).abs() < 1e-9, "{workload}: {s}");
    }
}

/// Under `mesh: linkerd` `proxy` still models Envoy's threads and Istio's figures: the run
/// warns at the line (and scenarios/README.md says so).
#[test]
fn proxy_under_linkerd_is_warned_about() {
    let text = SATURATED
        .replace("namespace: test\n", "namespace: test\nmesh: linkerd\n")
        .replace(
            "{client: frontend, rate: 200, arrivals: constant}",
            "{client: frontend, rate: 20}",
        );
    let out = run("sc-linkerd.yaml", &text, false);
    assert!(out.contains("sidecars: "), "{out}");
    assert!(
        warned(&out, "proxy (line 6): under `mesh: linkerd`"),
        "{out}"
    );
    // Under Istio, no such warning.
    let out = run("sc-istio.yaml", SATURATED, false);
    assert!(!warned(&out, "mesh: linkerd"), "{out}");
}

/// A `proxy` on a version without a sidecar has nothing to apply to: the run warns at its line.
#[test]
fn a_proxy_on_a_version_without_a_sidecar_is_warned_about() {
    let text = SATURATED.replace(
        "latency: {constant: 10ms}}",
        "latency: {constant: 10ms}, sidecar: false, proxy: {cpu_limit: 20m}}",
    );
    let out = run("sc-uninjected.yaml", &text, false);
    assert!(
        warned(
            &out,
            "service.primary.proxy (line 8): the version has no sidecar"
        ),
        "{out}"
    );
}
