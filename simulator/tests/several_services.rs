//! Several services: `services:` with versions by name and pod labels, clients calling any
//! service, DestinationRule subsets selecting versions by labels as Istio's bookinfo samples
//! write them, `service:` read as the one entry of `services:`, and the run's counters adding
//! up the calling versions' sidecars too.

mod support;

use std::path::Path;

use fledge_simulator::harness;
use fledge_simulator::result::{RunResult, ServiceFigures};
use fledge_simulator::scenario::Scenario;
use support::scenario::{MeshScenario, checked, destination_rule, version_requests};
use support::*;

const BOOKINFO: &str = include_str!("../../scenarios/bookinfo-reviews.yaml");

fn run_text(name: &str, text: &str, seed: u64) -> RunResult {
    let scenario = Scenario::parse(text, Path::new(name)).unwrap_or_else(|e| panic!("{e}"));
    harness::run(&scenario, &scenario.variants[0], seed).expect("the run")
}

fn reviews(r: &RunResult) -> &ServiceFigures {
    r.services
        .iter()
        .find(|s| s.name == "reviews")
        .expect("reviews is reported")
}

fn requests(s: &ServiceFigures, version: &str) -> u64 {
    s.versions
        .iter()
        .find(|v| v.version == version)
        .map_or_else(|| panic!("no version {version}"), |v| v.requests)
}

/// Client requests of `client` to `version` of `service`, from the service graph.
fn edge(r: &RunResult, client: &str, service: &str, version: &str) -> u64 {
    r.graph
        .iter()
        .filter(|e| e.source == client && e.service == service && e.version == version)
        .map(|e| e.requests)
        .sum()
}

#[test]
fn a_90_10_split_by_subsets_is_measured_within_its_margin() {
    let r = run_text("bookinfo.yaml", BOOKINFO, 7);
    let s = reviews(&r);
    let (v1, v3) = (requests(s, "v1"), requests(s, "v3"));
    let n = (v1 + v3) as f64;
    assert!(n > 40_000.0, "{n} requests split");
    let share = v1 as f64 / n;
    // Binomial: five standard deviations of the share.
    let margin = 5.0 * (0.9 * 0.1 / n).sqrt();
    assert!(
        (share - 0.9).abs() < margin,
        "v1 took {share:.4} of the split, expected 0.9 ± {margin:.4}"
    );
    assert!(r.passed(), "{:?}", r.checks);
}

#[test]
fn weights_not_adding_up_to_100_split_by_their_share_of_the_total_as_envoy_does() {
    // Istio accepts any total but 0; Envoy sends each destination weight / total.
    let text = BOOKINFO.replace("        weight: 10\n", "        weight: 20\n");
    assert_ne!(text, BOOKINFO);
    let r = run_text("bookinfo-90-20.yaml", &text, 7);
    let s = reviews(&r);
    let (v1, v3) = (requests(s, "v1"), requests(s, "v3"));
    let n = (v1 + v3) as f64;
    let (share, p) = (v1 as f64 / n, 90.0 / 110.0);
    let margin = 5.0 * (p * (1.0 - p) / n).sqrt();
    assert!(
        (share - p).abs() < margin,
        "v1 took {share:.4} of the split, expected {p:.4} ± {margin:.4}"
    );
}

#[test]
fn a_subset_selects_the_version_its_labels_name_not_the_one_it_is_named_after() {
    // The subsets `v1` and `v3` select each other's pods: the 90% goes to version v3.
    let (v1, v3) = (
        "    - name: v1\n      labels:\n        version: v1\n",
        "    - name: v3\n      labels:\n        version: v3\n",
    );
    assert!(BOOKINFO.contains(v1) && BOOKINFO.contains(v3));
    let text = BOOKINFO
        .replace(v1, "    - name: v1\n      labels:\n        version: v3\n")
        .replace(v3, "    - name: v3\n      labels:\n        version: v1\n");
    let r = run_text("swapped.yaml", &text, 7);
    let s = reviews(&r);
    let (v1, v3) = (requests(s, "v1") as f64, requests(s, "v3") as f64);
    let (share, n) = (v3 / (v1 + v3), v1 + v3);
    let margin = 5.0 * (0.9 * 0.1 / n).sqrt();
    assert!(
        (share - 0.9).abs() < margin,
        "v3 took {share:.4}, expected 0.9 ± {margin:.4}: {:?}",
        s.versions
    );
}

#[test]
fn a_subset_whose_labels_select_several_versions_balances_over_all_their_pods() {
    // Subset `v3` selects every pod labelled `app: reviews`: v1, v2 and v3, two pods each.
    // Istio builds one cluster over the six pods, so its tenth of the others' requests spreads
    // evenly over them: v3 gets a third of it, v1 and v2 the rest on top of their own.
    let v3 = "    - name: v3\n      labels:\n        version: v3\n";
    assert!(BOOKINFO.contains(v3));
    let text = BOOKINFO.replace(v3, "    - name: v3\n      labels:\n        app: reviews\n");
    let r = run_text("several.yaml", &text, 7);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let s = reviews(&r);
    let (v1, v2, v3) = (requests(s, "v1"), requests(s, "v2"), requests(s, "v3"));
    let n = (v1 + v2 + v3) as f64;
    assert!(n > 50_000.0, "{n} requests");
    // Jason's tenth goes to v2; a tenth of the other nine tenths spreads over the six pods.
    for (version, got, expected) in [
        ("v1", v1, 0.81 + 0.03),
        ("v2", v2, 0.10 + 0.03),
        ("v3", v3, 0.03),
    ] {
        let share = got as f64 / n;
        assert!(
            (share - expected).abs() < 0.006,
            "{version} took {share:.4}, expected {expected:.2}: {:?}",
            s.versions
        );
    }
}

#[test]
fn the_end_user_header_routes_jason_to_v2_and_no_one_else() {
    // Two callers: every request of one carries `end-user: jason`, none of the other's.
    let text = BOOKINFO.replace(
        "    headers:\n      - weight: 9\n      - weight: 1\n        set: {end-user: jason}\n",
        "  - client: jason\n    service: reviews\n    rate: 20\n    headers:\n      - weight: 1\n        set: {end-user: jason}\n",
    );
    assert_ne!(text, BOOKINFO);
    let r = run_text("jason.yaml", &text, 3);
    assert!(edge(&r, "jason", "reviews", "v2") > 5_000);
    assert_eq!(edge(&r, "jason", "reviews", "v1"), 0);
    assert_eq!(edge(&r, "jason", "reviews", "v3"), 0);
    assert_eq!(edge(&r, "productpage-reviews", "reviews", "v2"), 0);
    assert!(edge(&r, "productpage-reviews", "reviews", "v1") > 0);
    // The rollout's client never reaches `reviews`.
    assert_eq!(
        ["v1", "v2", "v3"]
            .map(|v| edge(&r, "browser", "reviews", v))
            .iter()
            .sum::<u64>(),
        0
    );
}

#[test]
fn a_subset_selecting_no_pods_answers_503_no_healthy_upstream() {
    // The callers then see about 9% failures.
    let text = BOOKINFO
        .replace(
            "      v3:\n        pods: 2\n",
            "      v3:\n        pods: 0\n",
        )
        .replace("min_success_rate: 99.9", "min_success_rate: 85");
    assert_ne!(text, BOOKINFO);
    let r = run_text("no-pods.yaml", &text, 5);
    let s = reviews(&r);
    assert_eq!(requests(s, "v3"), 0);
    // A tenth of the callers' non-jason requests (nine tenths of them) go to v3.
    let v1 = requests(s, "v1") as f64;
    let expected = v1 / 9.0;
    assert!(
        (s.unanswered as f64 - expected).abs() < 0.1 * expected,
        "{} unanswered, expected about {expected:.0}",
        s.unanswered
    );
    // Envoy answers them itself: 503 with the response flag UH.
    let file = write("no-pods.yaml", &text);
    let log = file.with_file_name("no-pods.log");
    let out = sim(&[
        "run",
        path_str(&file),
        "--seed",
        "5",
        "--access-log",
        path_str(&log),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let log = std::fs::read_to_string(&log).expect("the access log");
    let uh = log
        .lines()
        .filter(|l| l.contains("\" 503 UH ") && l.contains("\"reviews\" \"-\""))
        .count() as u64;
    assert_eq!(uh, s.unanswered, "UH lines in the access log");
}

#[test]
fn the_service_form_and_a_one_entry_services_form_give_identical_output() {
    const SERVICE: &str =
        "service:\n  name: podinfo\n  primary:\n    pods: 2\n    latency: {p50: 10ms, p99: 40ms}\n";
    // A canary that sets one key and takes the others from the primary.
    let old = BASE.replace(
        SERVICE,
        &format!("{SERVICE}  canary:\n    error_rate: 0.02\n"),
    );
    let new = BASE.replace(
        SERVICE,
        "services:\n  - name: podinfo\n    versions:\n      primary:\n        pods: 2\n        latency: {p50: 10ms, p99: 40ms}\n      canary:\n        error_rate: 0.02\n",
    );
    assert_ne!(old, BASE);
    assert_ne!(new, BASE);
    for seed in [1, 2] {
        let old = serde_json::to_string(&run_text("same.yaml", &old, seed)).unwrap();
        let new = serde_json::to_string(&run_text("same.yaml", &new, seed)).unwrap();
        assert_eq!(old, new, "seed {seed}");
    }
}

#[test]
fn a_client_of_an_unknown_service_is_an_error_at_its_line() {
    let text = BOOKINFO.replace("    service: reviews\n", "    service: ratings\n");
    assert_bad_input(
        "unknown-service.yaml",
        &text,
        line_of(&text, "service: ratings"),
        "traffic[1].service",
        "unknown service `ratings`: the scenario's services are `productpage`, `reviews`",
    );
}

#[test]
fn a_version_named_twice_is_an_error_at_the_second() {
    let text = BOOKINFO.replacen("      v3:\n", "      v1:\n", 1);
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "v1:")
        .nth(1)
        .expect("two v1")
        .0
        + 1;
    assert_bad_input(
        "twice.yaml",
        &text,
        second,
        "services[1].versions",
        "duplicate entry with key \"v1\"",
    );
}

#[test]
fn labels_that_are_not_a_map_are_an_error_at_their_line() {
    let text = BOOKINFO.replace(
        "        labels: {app: reviews, version: v2}\n",
        "        labels: [version, v2]\n",
    );
    assert_bad_input(
        "labels.yaml",
        &text,
        line_of(&text, "labels: [version, v2]"),
        "services[1].versions.v2.labels",
        "invalid type: sequence, expected a map",
    );
}

#[test]
fn a_subset_selecting_no_version_loads_and_its_share_is_answered_503_uh() {
    // Istio accepts a subset whose labels select no pod (review r20 finding 3): its cluster has
    // no endpoints. Here v3's 10% of the 90% who are not jason.
    let text = BOOKINFO.replace(
        "    - name: v3\n      labels:\n        version: v3\n",
        "    - name: v3\n      labels:\n        version: v4\n",
    );
    assert_ne!(text, BOOKINFO);
    let r = run_text("subset.yaml", &text, 7);
    assert!(
        r.warnings.iter().any(
            |w| w.contains("subset `v3` selects no pod of `reviews`") && w.contains("503 `UH`")
        ),
        "{:?}",
        r.warnings
    );
    let s = reviews(&r);
    assert_eq!(requests(s, "v3"), 0);
    let share = s.unanswered as f64 / s.requests as f64;
    assert!((share - 0.09).abs() < 0.01, "{share:.4} unanswered");
    assert_eq!(s.failed, s.unanswered);
}

#[test]
fn the_canarys_service_has_only_the_versions_flagger_manages() {
    let text = BOOKINFO.replace(
        "      primary:\n        pods: 2\n",
        "      v1:\n        pods: 2\n",
    );
    assert_bad_input(
        "flagger.yaml",
        &text,
        line_of(&text, "      v1:"),
        "services[0].versions.v1",
        "`productpage` is the Canary's service, whose versions Flagger manages",
    );
}

#[test]
fn service_and_services_together_are_an_error() {
    let text = BOOKINFO.replace(
        "services:\n",
        "service:\n  name: productpage\n  primary: {pods: 1}\nservices:\n",
    );
    assert_bad_input(
        "both.yaml",
        &text,
        line_of(&text, "services:"),
        "services",
        "give either `service:` or `services:`, not both",
    );
}

/// Names Kubernetes refuses are refused at their line: a service `Back_1` (a Service name is a
/// DNS-1035 label), a version `v 1` (it names the Deployment and the `version` label), a label
/// key `bad key!` and a label value `a b`.
#[test]
fn names_kubernetes_refuses_are_refused_at_their_line() {
    let text = |from: &str, to: &str| {
        assert!(FRONT_BACK.contains(from), "{from}");
        FRONT_BACK.replacen(from, to, 1)
    };
    let back_1 = text("  - name: back\n", "  - name: Back_1\n").replacen(
        "{service: back}",
        "{service: Back_1}",
        1,
    );
    let cases = [
        (
            back_1,
            "name: Back_1",
            "services[1].name",
            "is not a Service name",
        ),
        (
            text("      v1: {pods: 1}\n", "      'v 1': {pods: 1}\n"),
            "'v 1'",
            "services[1].versions.v 1",
            "cannot name a version",
        ),
        (
            text(
                "      v1: {pods: 1}\n",
                "      v1: {pods: 1, labels: {'bad key!': x}}\n",
            ),
            "bad key!",
            "services[1].versions.v1.labels.bad key!",
            "is not a label key",
        ),
        (
            text(
                "      v1: {pods: 1}\n",
                "      v1: {pods: 1, labels: {tier: 'a b'}}\n",
            ),
            "'a b'",
            "services[1].versions.v1.labels.tier",
            "is not a label value",
        ),
    ];
    for (i, (text, needle, field, message)) in cases.iter().enumerate() {
        let line = line_of(text, needle);
        assert_bad_input(&format!("k8s-name-{i}.yaml"), text, line, field, message);
    }
}

/// `front` (two pods, 1 ms) calls `back` on every request, `rate` a second; `back`'s versions
/// are `back`, its DestinationRule's `trafficPolicy` is `policy`, and `counter` must count.
fn calls_to_back(
    name: &str,
    rate: u32,
    back: &[(&str, &str)],
    policy: &str,
    counter: &str,
) -> MeshScenario {
    MeshScenario::new(name)
        .seed(5)
        .service(
            "front",
            &[(
                "v1",
                "{pods: 2, workers: 200, latency: {constant: 1ms}, calls: [{service: back}]}",
            )],
        )
        .service("back", back)
        .client("browser", "front", rate)
        .manifest(&destination_rule(
            "back",
            &format!("trafficPolicy:\n{policy}"),
        ))
        .expect(&format!("counters:\n  {counter}: {{min: 1}}"))
}

/// `back` v1 (one pod) fails half its requests, v2 (three pods) none. No route: the calls go to
/// the cluster over all four pods, whose outlier detection the caller's sidecar runs.
fn calls_to_a_flaky_pod() -> String {
    calls_to_back(
        "ejections-on-calls",
        100,
        &[
            ("v1", "{pods: 1, workers: 64, latency: {constant: 2ms}, error_rate: 0.5}"),
            ("v2", "{pods: 3, workers: 64, latency: {constant: 2ms}}"),
        ],
        "  outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}",
        "ejections_enforced",
    )
    .duration("3m")
    .text()
}

/// `back`'s pool (one connection, one pending request) overflows.
fn calls_overflow_a_pool() -> String {
    calls_to_back(
        "overflow-on-calls",
        300,
        &[("v1", "{pods: 1, workers: 4, latency: {constant: 20ms}}")],
        "  connectionPool:\n    tcp: {maxConnections: 1}\n    http: {http1MaxPendingRequests: 1, http2MaxRequests: 2}",
        "pending_overflow",
    )
    .text()
}

/// The run's counters (`expect.counters`, `--json` `counters`, the ejections and overflow
/// columns of `sweep --vary`) add up the sidecars of calling versions too, through which every
/// call goes, not only the `traffic` clients' proxies: the outlier detection and pool limits of
/// a service reached by calls are counted (review r20c: they once showed 0).
#[test]
fn counters_count_the_calls_sidecars_too() {
    let r = checked(&calls_to_a_flaky_pod());
    // The flaky pod was ejected by `front`'s sidecar: it served a small part of the calls.
    let (v1, v2) = (
        version_requests(&r, "back", "v1"),
        version_requests(&r, "back", "v2"),
    );
    assert!(v1 * 20 < v1 + v2, "v1 was not ejected: v1 {v1}, v2 {v2}");
    assert!(
        r.counters["ejections_enforced"] > 0,
        "the ejections of front's sidecar are not counted: {:?}; checks {:?}",
        r.counters,
        r.checks
    );

    let r = checked(&calls_overflow_a_pool());
    let back = r.services.iter().find(|s| s.name == "back").expect("back");
    assert!(back.unanswered > 1000, "{back:?}");
    assert!(
        r.counters["pending_overflow"] > 0,
        "{} calls overflowed back's pool, counted 0: {:?}",
        back.unanswered,
        r.counters
    );
}
