//! A scenario without a Canary: the mesh runs alone (no controller, no rollout), the timeline
//! still changes it, and the expectations bound what each client, service and version saw.

mod support;

use std::path::Path;

use serde_json::Value;
use support::scenario::{MeshScenario, refused};
use support::{path_str, sim, write};

use fledge_simulator::result::{Outcome, RunResult, ServiceFigures};
use fledge_simulator::scenario::Scenario;
use fledge_simulator::{expect, harness};

/// `web` calls `reviews`, whose v1 takes 90% and v2 10%; v2 calls `ratings`.
const MESH: &str = r#"name: mesh-alone
seed: 5
duration: 2m
services:
  - name: web
    versions:
      v1:
        pods: 2
        latency: {p50: 2ms, p99: 8ms}
        calls: [{service: reviews}]
  - name: reviews
    versions:
      v1:
        pods: 2
        latency: {p50: 5ms, p99: 20ms}
      v2:
        pods: 2
        latency: {p50: 5ms, p99: 20ms}
        calls: [{service: ratings}]
  - name: ratings
    versions:
      v1: {pods: 1, latency: {p50: 1ms, p99: 4ms}}
traffic:
  - client: browser
    service: web
    rate: 100
manifests: |
  apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata:
    name: reviews
  spec:
    host: reviews
    subsets:
    - name: v1
      labels: {version: v1}
    - name: v2
      labels: {version: v2}
  ---
  apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata:
    name: reviews
  spec:
    hosts: [reviews]
    http:
    - route:
      - destination: {host: reviews, subset: v1}
        weight: 90
      - destination: {host: reviews, subset: v2}
        weight: 10
expect:
  clients:
    browser: {min_success_rate: 99.9}
  services:
    reviews:
      versions:
        v1: {share: 90, margin: 2}
"#;

fn load(text: &str) -> Scenario {
    Scenario::parse(text, Path::new("mesh.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

fn checked(text: &str) -> RunResult {
    let s = load(text);
    let run = harness::run(&s, &s.variants[0], s.seed).expect("the run");
    expect::checked(run, &s.variants[0].expect)
}

fn service<'r>(r: &'r RunResult, name: &str) -> &'r ServiceFigures {
    r.services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no figures for {name}: {:?}", r.services))
}

fn version_requests(s: &ServiceFigures, version: &str) -> u64 {
    s.versions
        .iter()
        .find(|v| v.version == version)
        .map_or_else(|| panic!("no version {version}"), |v| v.requests)
}

/// MESH with `expect:` replaced by `expect`.
fn expecting(expect: &str) -> String {
    let at = MESH.find("expect:\n").expect("MESH has expectations");
    format!("{}{expect}", &MESH[..at])
}

/// The check named `name`: whether it passed.
fn passed(r: &RunResult, name: &str) -> bool {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}: {:?}", r.checks))
        .passed
}

#[test]
fn a_scenario_without_a_canary_runs_the_mesh_alone_and_reports_every_service_and_version() {
    let r = checked(MESH);
    assert_eq!(r.outcome, Outcome::NoRollout);
    assert!(r.decisions.is_empty(), "{:?}", r.decisions);
    assert!(r.passed(), "{:?}", r.checks);
    // Every service is reported, the first as well, with its versions.
    let names: Vec<&str> = r.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "reviews", "ratings"]);
    let web = service(&r, "web");
    assert!(web.requests > 11_000, "{web:?}");
    assert_eq!(web.requests, r.requests);
    let reviews = service(&r, "reviews");
    let (v1, v2) = (
        version_requests(reviews, "v1"),
        version_requests(reviews, "v2"),
    );
    assert_eq!(reviews.requests, v1 + v2);
    // Only v2 calls ratings.
    assert_eq!(service(&r, "ratings").requests, v2);
    for s in &r.services {
        assert!(s.p50_ms.is_some() && s.p99_ms >= s.p50_ms, "{s:?}");
        for v in &s.versions {
            assert!(v.p50_ms.is_some() && v.p99_ms >= v.p50_ms, "{v:?}");
            assert_eq!(v.queueing.arrivals, v.requests, "{v:?}");
        }
    }
    assert!(
        r.queueing.is_empty(),
        "no primary or canary: {:?}",
        r.queueing
    );
}

#[test]
fn a_version_share_off_by_more_than_its_margin_fails_its_check() {
    let r = checked(&expecting(
        "expect:\n  services:\n    reviews:\n      versions:\n        v1: {share: 90, margin: 2}\n        v2: {share: 50, margin: 5}\n",
    ));
    assert!(passed(&r, "services.reviews.versions.v1.share"));
    assert!(!passed(&r, "services.reviews.versions.v2.share"));
}

#[test]
fn bounds_on_a_client_a_service_and_a_version_are_each_checked() {
    let r = checked(&expecting(
        r#"expect:
  clients:
    browser: {max_p99_ms: 1, min_requests: 1000}
  services:
    ratings: {min_success_rate: 99, max_requests: 10}
    reviews:
      max_p99_ms: 10000
      versions:
        v2: {min_requests: 1000000, max_success_rate: 100}
"#,
    ));
    let outcomes: Vec<(&str, bool)> = r
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.passed))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("clients.browser.max_p99_ms", false),
            ("clients.browser.requests", true),
            ("services.ratings", true),
            ("services.ratings.requests", false),
            ("services.reviews.max_p99_ms", true),
            ("services.reviews.versions.v2", true),
            ("services.reviews.versions.v2.requests", false),
        ]
    );
}

/// `max_p99_ms` and the figures' `p50_ms` / `p99_ms` are of the durations seen, not read off
/// Istio's buckets (2.5-5 s here, which `histogram_quantile` reads as up to 4975 ms for requests
/// of 3 s): every request takes about 3 s, and a bound of 3200 ms holds.
#[test]
fn max_p99_bounds_the_durations_the_clients_saw_not_the_buckets() {
    let text = r#"name: p99-as-seen
seed: 1
duration: 1m
services:
  - name: reviews
    versions:
      v1: {pods: 1, workers: 64, latency: {constant: 3s}}
traffic:
  - client: browser
    service: reviews
    rate: 5
expect:
  clients:
    browser: {max_p99_ms: 3200}
  services:
    reviews: {max_p99_ms: 3200, versions: {v1: {max_p99_ms: 3200}}}
"#;
    let r = checked(text);
    assert!(r.passed(), "every request took about 3 s: {:?}", r.checks);
    let reviews = service(&r, "reviews");
    let figures = [
        r.clients[0].p99_ms,
        reviews.p50_ms,
        reviews.p99_ms,
        reviews.versions[0].p99_ms,
        r.graph[0].p99_ms,
    ];
    for p in figures {
        let p = p.expect("a percentile");
        assert!((2985.0..3015.0).contains(&p), "{p} in {figures:?}");
    }
    // What Flagger and the sweep read stays Istio's buckets, as Prometheus has them.
    assert!(r.p99_ms.expect("the run's p99") > 4900.0, "{:?}", r.p99_ms);
}

#[test]
fn the_timeline_changes_the_mesh_without_a_canary() {
    // At 1m every request of reviews goes to v2: v2 takes about half of the run's.
    let text = MESH.replace(
        "expect:\n",
        r#"timeline:
  - at: 1m
    apply_manifests: |
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata:
        name: reviews
      spec:
        hosts: [reviews]
        http:
        - route:
          - destination: {host: reviews, subset: v2}
expect:
"#,
    );
    let r = checked(&text);
    let reviews = service(&r, "reviews");
    let share = version_requests(reviews, "v2") as f64 / reviews.requests as f64;
    assert!((0.5..0.6).contains(&share), "v2 took {share:.3}");
    assert!(!passed(&r, "services.reviews.versions.v1.share"));
}

/// The error of loading `text`, which must not load.
fn error(text: &str) -> String {
    match Scenario::parse(text, Path::new("mesh.yaml")) {
        Ok(_) => panic!("loaded:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no `{needle}`"))
        + 1
}

#[test]
fn a_bad_expectation_is_refused_at_its_line() {
    let cases = [
        (
            "        v1: {share: 90}\n",
            "services.reviews.versions.v1.share",
            "give its `margin` too",
        ),
        (
            "        v1: {share: 90, margin: 200}\n",
            "services.reviews.versions.v1.margin",
            "between 0 and 100",
        ),
        (
            "        v4: {share: 90, margin: 2}\n",
            "services.reviews.versions.v4",
            "`reviews` has no version `v4`",
        ),
        (
            "        v1: {min_requests: 9, max_requests: 1}\n",
            "services.reviews.versions.v1",
            "`min_requests` (9) is above `max_requests` (1)",
        ),
    ];
    for (line, field, message) in cases {
        let text = expecting(&format!(
            "expect:\n  services:\n    reviews:\n      versions:\n{line}"
        ));
        let e = error(&text);
        let at = line_of(&text, line.trim_end());
        assert!(
            e.starts_with(&format!("mesh.yaml:{at}: expect.{field}: ")) && e.contains(message),
            "{e}"
        );
    }
    let misplaced = [
        (
            "  clients:\n    browser: {share: 10, margin: 1}\n",
            "clients.browser.share",
            "a version's",
        ),
        (
            "  services:\n    nowhere: {min_requests: 1}\n",
            "services.nowhere",
            "no service named `nowhere`",
        ),
        (
            "  services:\n    ratings: {max_p99_ms: 0}\n",
            "services.ratings.max_p99_ms",
            "positive",
        ),
        ("  outcome: promoted\n", "outcome", "bounds a rollout"),
    ];
    for (lines, field, message) in misplaced {
        let text = expecting(&format!("expect:\n{lines}"));
        let e = error(&text);
        let key = field.rsplit('.').next().expect("a key");
        let at = line_of(&text, &format!("{key}:"));
        assert!(
            e.starts_with(&format!("mesh.yaml:{at}: expect.{field}: ")) && e.contains(message),
            "{e}"
        );
    }
}

#[test]
fn what_needs_a_rollout_is_refused_without_a_canary() {
    let deploy = MESH.replace(
        "expect:\n",
        "timeline:\n  - at: 1m\n    deploy: {}\nexpect:\n",
    );
    assert!(
        error(&deploy).contains("timeline[0]: `deploy` starts a rollout"),
        "{}",
        error(&deploy)
    );
    let hooks = MESH.replace("expect:\n", "webhooks:\n  gate: fail\nexpect:\n");
    assert!(
        error(&hooks).contains("webhooks: answers the Canary's webhooks"),
        "{}",
        error(&hooks)
    );
    let tester = MESH.replace("    rate: 100\n", "    rate: 100\n    target: canary\n");
    assert!(
        error(&tester).contains("a load tester"),
        "{}",
        error(&tester)
    );
    let short = r#"name: short
duration: 1m
service:
  name: web
  primary: {pods: 1}
traffic: [{client: c, rate: 1}]
expect: {}
"#;
    assert!(
        error(short).contains("a scenario without a Canary lists its services under `services:`"),
        "{}",
        error(short)
    );
}

#[test]
fn the_timeline_acts_on_a_named_version_of_a_service() {
    // At 1m reviews v2 fails every request and v1 is scaled to 4 pods.
    let text = MESH.replace(
        "expect:\n",
        r#"timeline:
  - at: 1m
    error_rate: {service: reviews, version: v2, rate: 1.0}
  - at: 1m
    scale: {service: reviews, version: v1, pods: 4}
expect:
"#,
    );
    let r = checked(&text);
    let v2 = service(&r, "reviews")
        .versions
        .iter()
        .find(|v| v.version == "v2")
        .expect("v2");
    let failed = v2.failed as f64 / v2.requests as f64;
    assert!((0.4..0.6).contains(&failed), "v2 failed {failed:.3}");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let messages: Vec<&String> = r.decisions.iter().flat_map(|d| &d.messages).collect();
    for m in [
        "scenario: reviews v2 error rate set to 100.00%",
        "scenario: reviews v1 scaled to 4 pods",
    ] {
        assert!(
            messages.iter().any(|x| x.as_str() == m),
            "{m}: {messages:?}"
        );
    }
    let v1 = service(&r, "reviews")
        .versions
        .iter()
        .find(|v| v.version == "v1")
        .expect("v1");
    assert_eq!(v1.failed, 0);
}

#[test]
fn a_timeline_event_naming_a_version_that_does_not_exist_is_refused_at_its_line() {
    for (event, field, message) in [
        (
            "error_rate: {service: reviewz, version: v2, rate: 1.0}",
            "timeline[0].error_rate.service",
            "no service named `reviewz`",
        ),
        (
            "crash: {service: reviews, version: v9}",
            "timeline[0].crash.version",
            "service `reviews` has no version `v9`; its versions are `v1`, `v2`",
        ),
        (
            "scale: {service: reviews, version: v1, pods: 5000}",
            "timeline[0].scale.pods",
            "must be between 0 and 1000",
        ),
    ] {
        let text = MESH.replace(
            "expect:\n",
            &format!("timeline:\n  - at: 1m\n    {event}\nexpect:\n"),
        );
        let e = error(&text);
        assert!(e.contains(field) && e.contains(message), "{e}");
        assert!(
            e.starts_with(&format!("mesh.yaml:{}:", line_of(&text, event))),
            "{e}"
        );
    }
}

#[test]
fn a_destinationrule_applied_after_the_virtualservice_naming_its_subsets_routes_from_then_on() {
    // The VirtualService names subsets no DestinationRule defines until 1m: Envoy has no
    // cluster for them and answers 503 `NC`; once the DestinationRule is applied, the
    // routes resolve and the 90/10 split holds.
    let at = MESH
        .find("  apiVersion: networking.istio.io/v1\n  kind: DestinationRule")
        .expect("a DR");
    let end = MESH.find("  ---\n").expect("a second document") + "  ---\n".len();
    let dr = &MESH[at..end - "  ---\n".len()];
    let dr_later: String = dr.lines().map(|l| format!("    {l}\n")).collect();
    let text = format!("{}{}", &MESH[..at], &MESH[end..]).replace(
        "expect:\n",
        &format!("timeline:\n  - at: 1m\n    apply_manifests: |\n{dr_later}expect:\n"),
    );
    let r = checked(&text);
    let reviews = service(&r, "reviews");
    let unanswered = reviews.unanswered as f64 / reviews.requests as f64;
    assert!(
        (0.45..0.55).contains(&unanswered),
        "{unanswered:.3} unanswered"
    );
    let (v1, v2) = (
        version_requests(reviews, "v1") as f64,
        version_requests(reviews, "v2") as f64,
    );
    let share = v2 / (v1 + v2);
    assert!(
        (0.08..0.12).contains(&share),
        "v2 took {share:.3} once routed"
    );
}

/// No Canary, no phase: `--json` has `final_phase` null and the text no rollout table.
#[test]
fn a_run_of_the_mesh_alone_has_no_phase_and_no_rollout_table() {
    let file = write("mesh-alone-text.yaml", MESH);
    let out = sim(&["run", path_str(&file), "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let runs: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(runs[0]["outcome"], "no-rollout");
    let text = sim(&["run", path_str(&file)]);
    assert!(
        runs[0]["final_phase"].is_null() && !text.stdout.contains("phase             canary"),
        "final_phase {}; text:\n{}",
        runs[0]["final_phase"],
        text.stdout
    );
}

/// Without a Canary, `counters.requests_primary` and `counters.requests_canary` (the requests
/// the rollout's primary and canary answered, 0 whatever happens without one) are refused at
/// their line, as the rollout's other expectations are (review r20c, finding 9).
#[test]
fn the_rollouts_counters_are_refused_without_a_canary() {
    let text = MeshScenario::new("rollout-counters")
        .service("reviews", &[("v1", "{pods: 1, latency: {constant: 3ms}}")])
        .client("browser", "reviews", 5)
        .expect("counters:\n  requests_primary: {min: 1}")
        .text();
    let e = refused(
        &text,
        "requests_primary bounds a rollout's primary, and there is none",
    );
    assert!(e.contains("expect.counters.requests_primary"), "{e}");
}

/// `traffic[].service` defaults to the rollout's service; without a Canary there is none, and a
/// client that leaves `service` out is refused at `traffic[N]` rather than sent to the first
/// service listed, a guess among several (review r20c, finding 10).
#[test]
fn a_client_without_a_service_is_refused_when_there_is_no_rollout() {
    let one = [("v1", "{pods: 1, latency: {constant: 3ms}}")];
    let text = MeshScenario::new("default-service")
        .service("ratings", &one)
        .service("reviews", &one)
        .client("browser", "ratings", 5)
        .expect("clients:\n  browser: {min_requests: 1}")
        .text()
        // The client names no service.
        .replacen("    service: ratings\n", "", 1);
    assert!(!text.contains("service: ratings"), "{text}");
    let e = refused(&text, "no rollout, so no default service for the client");
    assert!(e.contains("traffic[0]"), "{e}");
}
