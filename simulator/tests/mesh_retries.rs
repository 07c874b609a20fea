//! Retries as Envoy, Istio and Linkerd make them: which results are retried, how often, how
//! long a retry waits, and where it goes. Each test cites the behaviour it reproduces.

mod support;

use support::mesh::{VS_PODINFO, handshake_failures, mesh_with, podinfo};
use support::{path_str, sim};

use fledge_simulator::engine::SECONDS;
use fledge_simulator::mesh::Action;

/// Linkerd's retry budget is fed by the results it did not retry, not by requests: linkerd2-proxy
/// (`linkerd/app/outbound/src/http/retry.rs`, `RetryPolicy::retry`) calls `budget.deposit()`
/// only for a result that is not retryable (a success, here) and `withdraw()` for each retry,
/// over Tower's `TpsBudget` (`tower/src/retry/budget/tps_budget.rs`: each deposit is worth
/// `retryRatio` of a retry for `ttl`, plus a reserve of `minRetriesPerSecond * ttl` retries per
/// `ttl`). The simulator deposits at every request's arrival (`request.rs`, `send`), so under
/// heavy failure it lets through several times the retries Linkerd would: at 100 requests/s
/// failing 90%, with `retryRatio: 0.2` and `minRetriesPerSecond: 1`, Linkerd allows R retries a
/// second with R = 0.2 * 0.1 * (100 + R) + 1, about 3; the simulator lets about 20 through.
#[test]
fn linkerd_retry_budget_is_credited_by_results_not_by_arrivals() {
    let sp = "apiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\nmetadata:\n  name: podinfo.default.svc.cluster.local\nspec:\n  retryBudget: {retryRatio: 0.2, minRetriesPerSecond: 1, ttl: 10s}\n  routes:\n    - name: all\n      condition:\n        pathRegex: /.*\n      isRetryable: true\n";
    let mut cfg = podinfo(7, 2, 100.0);
    cfg.data_plane = fledge_simulator::mesh::DataPlane::Linkerd;
    let mut mesh = mesh_with(cfg, sp);
    let v = mesh.version_id("podinfo", "primary").unwrap();
    mesh.apply(Action::SetErrorRate {
        version: v,
        rate: 0.9,
    })
    .unwrap();
    let c = mesh.client_id("client").unwrap();
    mesh.run_until(30 * SECONDS);
    let before = mesh.proxy_counters(c, v).retries;
    mesh.run_until(90 * SECONDS);
    let per_sec = (mesh.proxy_counters(c, v).retries - before) as f64 / 60.0;
    assert!(per_sec > 0.5, "retries happen: {per_sec}/s");
    assert!(
        per_sec < 5.0,
        "{per_sec:.1} retries/s; linkerd2-proxy's budget allows about 3"
    );
}

/// Istio's validation refuses a retry policy that sets `perTryTimeout`, `retryOn` or
/// `retryRemoteLocalities` while `attempts` is 0 or absent ("http retry policy configured when
/// attempts are set to 0 (disabled)": istio/istio `pkg/config/validation/agent/validation.go`,
/// `ValidateHTTPRetry`); pushed anyway, `ConvertPolicy` would drop the whole policy, so a per-try
/// timeout would never cut a try. Refused at the field, as bad input; `backoff` alone and a
/// bare `attempts: 0` are accepted, as Istio accepts them.
#[test]
fn retry_settings_with_retries_disabled_are_refused_at_the_field() {
    let cases = [
        // (retries, the field refused)
        ("{attempts: 0, perTryTimeout: 10ms}", Some("perTryTimeout")),
        ("{retryOn: 5xx}", Some("retryOn")),
        (
            "{attempts: 0, retryRemoteLocalities: true}",
            Some("retryRemoteLocalities"),
        ),
        ("{attempts: 0}", None),
        ("{attempts: 0, backoff: 1s}", None),
        ("{attempts: 1, perTryTimeout: 10ms, retryOn: 5xx}", None),
    ];
    for (retries, refused) in cases {
        let m = format!("{VS_PODINFO}      retries: {retries}\n");
        match (fledge_simulator::manifest::parse(&m), refused) {
            (Ok(_), None) => {}
            (Err(e), Some(field)) => {
                let e = e.to_string();
                assert!(e.contains(&format!("retries.{field}")), "{retries}: {e}");
                assert!(e.contains("attempts"), "{retries}: {e}");
            }
            (r, _) => panic!("{retries}: {:?}", r.map(|p| p.warnings)),
        }
    }
}

/// A VirtualService's `retries.backoff` is the retries' backoff base. Istio (since "implement retry backoff", istio/istio
/// #55639, Istio 1.26) sets it as Envoy's `retry_back_off.base_interval`
/// (`pilot/pkg/networking/core/route/retry/retry.go`, `ConvertPolicy`), and Envoy's jittered
/// backoff then waits a random time below 1 s, 2 s, ... for retry 1, 2, ... (cap ten times the
/// base; envoy `router_filter.rst`, x-envoy-retry-on backoff notes). With `backoff: 1s` and a
/// 300 ms route timeout, a failed first try is retried in time only when its wait is under
/// about 290 ms: about seven requests in ten end 504 `UT` (with the 25 ms default, none). Istio
/// before 1.26 has no `backoff` (the scenario's `istio.version`): ignored, with a warning.
#[test]
fn a_retry_backoff_sets_envoys_base_interval() {
    let m = format!(
        "{VS_PODINFO}      timeout: 300ms\n      retries: {{attempts: 1, retryOn: 5xx, backoff: 1s}}\n"
    );
    // (Istio has retry backoff, i.e. 1.26 or later; most requests time out)
    for (backoff, slow) in [(true, true), (false, false)] {
        let mut cfg = podinfo(9, 2, 20.0);
        cfg.istio_retry_backoff = backoff;
        let mut mesh = fledge_simulator::mesh::Mesh::new(cfg).expect("mesh builds");
        let parsed = fledge_simulator::manifest::parse(&m).expect("parses");
        let warnings = mesh.apply_manifests(&parsed).expect("applies");
        assert_eq!(
            warnings
                .iter()
                .any(|w| w.contains("retries.backoff is ignored")),
            !backoff,
            "{warnings:?}"
        );
        let v = mesh.version_id("podinfo", "primary").unwrap();
        mesh.apply(Action::SetErrorRate {
            version: v,
            rate: 1.0,
        })
        .unwrap();
        mesh.run_until(20 * SECONDS);
        let c = mesh.client_id("client").unwrap();
        let pc = mesh.proxy_counters(c, v);
        let done = mesh.stats().completed;
        assert!(pc.retries > 100, "{pc:?}");
        assert_eq!(
            2 * pc.timeouts > done,
            slow,
            "backoff {backoff}: {} of {done} requests timed out; a 1 s backoff base makes most retries miss 300 ms",
            pc.timeouts
        );
    }
}

/// `retryOn: reset-before-request` (Envoy's router: retry a reset or connect failure that
/// happened before the request went upstream; envoy issue 10007, and istio/istio
/// `pilot/pkg/networking/core/route/retry/retry.go`, where it is Istio's own inbound default)
/// retries the connect failures it exists for, without a warning. Istio hands any `retryOn`
/// word to Envoy unchanged (`parseRetryOn`).
#[test]
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
    let mut mesh = mesh_with(podinfo(5, 2, 20.0), &m);
    let v = mesh.version_id("podinfo", "primary").unwrap();
    mesh.run_until(5 * SECONDS);
    let c = mesh.client_id("client").unwrap();
    let pc = mesh.proxy_counters(c, v);
    assert!(pc.connect_failures > 0, "no connect failure");
    assert!(pc.retries > 0, "connect failures not retried: {pc:?}");
}

/// `retries.retryIgnorePreviousHosts: false` lets a retry go back to a host already tried:
/// Istio honours it by dropping the `previous_hosts` predicate
/// (`pilot/pkg/networking/core/route/retry/retry.go`, `ConvertPolicy`: "User has specified
/// RetryIgnorePreviousHosts, so honor it"), after which a retry is balanced like any request.
/// With RANDOM over two pods, one failing every request and one never, a request that first
/// lands on the bad pod (half of them) is retried there again half of the time: a quarter of
/// the requests end 503 `URX`. With the predicate (the default) about 1.6% do.
#[test]
fn retry_ignore_previous_hosts_false_lets_a_retry_go_back_to_the_same_pod() {
    let m = format!(
        "kind: DestinationRule\nmetadata:\n  name: p\nspec:\n  host: podinfo\n  trafficPolicy:\n    loadBalancer: {{simple: RANDOM}}\n---\n{VS_PODINFO}      retries: {{attempts: 1, retryOn: 5xx, retryIgnorePreviousHosts: false}}\n"
    );
    let mut mesh = mesh_with(podinfo(4, 2, 100.0), &m);
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

/// Istio's retry policy has Envoy avoid the hosts a request already tried
/// (`previous_hosts` predicate, `host_selection_retry_max_attempts: 5`, istio/istio
/// `pilot/pkg/networking/core/route/retry/retry.go`), and Envoy's balancer then picks up to
/// `hostSelectionRetryCount() + 1` = 6 times on a retry (envoy
/// `source/common/upstream/load_balancer_impl.cc`, `chooseHost`; the router's
/// `hostSelectionRetryCount` returns the policy's 5 on a retry) before it keeps the last pick.
/// With RANDOM over two pods the second try lands on the first try's pod with
/// probability 2^-6 (1.6%) in Envoy (five picks would give 2^-5, 3.1%).
#[test]
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
