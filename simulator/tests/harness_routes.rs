//! The harness routes by the controller's own routing objects, as its routers write them: A/B
//! match blocks are alternatives, manifests applied mid-run do not take the canary's traffic
//! away, load testers call the canary's own Service and only while a rollout progresses.

use std::path::Path;

use fledge_simulator::expect;
use fledge_simulator::harness;
use fledge_simulator::result::{RuleView, RunResult};
use fledge_simulator::scenario::{Outcome, Scenario};

const HEAD: &str = r#"name: routes
seed: 3
duration: 10m
namespace: test
service:
  name: podinfo
  primary:
    pods: 2
    latency: {p50: 10ms, p99: 40ms}
"#;

fn canary(analysis: &str) -> String {
    format!(
        r#"canary:
  apiVersion: flagger.app/v1beta1
  kind: Canary
  metadata: {{name: podinfo, namespace: test}}
  spec:
    targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}
    service: {{port: 9898}}
    analysis:
      interval: 30s
      threshold: 2
{analysis}      metrics:
        - name: request-success-rate
          thresholdRange: {{min: 90}}
          interval: 1m
"#
    )
}

fn run(text: &str) -> RunResult {
    let s = Scenario::parse(text, Path::new("routes.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let run = harness::run(&s, &s.variants[0], s.seed).expect("runs");
    expect::checked(run, &s.variants[0].expect)
}

#[test]
fn a_b_match_blocks_are_alternatives_and_each_sends_its_requests_to_the_canary() {
    let text = format!(
        r#"{HEAD}traffic:
  - client: web
    rate: 100
    headers:
      - {{weight: 1, set: {{x-canary: insider}}}}
      - {{weight: 1, set: {{cookie: canary=always}}}}
      - {{weight: 2, set: {{}}}}
{}timeline:
  - {{at: 30s, deploy: {{}}}}
expect: {{outcome: promoted}}
"#,
        canary(
            "      iterations: 4\n      match:\n        - headers: {x-canary: {exact: insider}}\n        - headers: {cookie: {regex: \"^(.*?;)?(canary=always)(;.*)?$\"}}\n"
        )
    );
    let r = run(&text);
    assert_eq!(r.outcome, Outcome::Promoted, "{}", r.final_message);
    let canary = r.counters["requests_canary"] as f64;
    let total = (r.counters["requests_primary"] + r.counters["requests_canary"]) as f64;
    // Half the requests match one block or the other, for about 2.5 of the 10 minutes.
    let share = canary / total;
    assert!(
        (0.09..0.16).contains(&share),
        "canary share {share:.3} of {total} requests"
    );
}

#[test]
fn a_virtual_service_applied_mid_rollout_does_not_take_the_canarys_weight() {
    let text = format!(
        r#"{HEAD}traffic:
  - client: web
    rate: 100
{}timeline:
  - {{at: 30s, deploy: {{}}}}
  - at: 1m45s
    apply_manifests: |
      apiVersion: networking.istio.io/v1beta1
      kind: VirtualService
      metadata: {{name: podinfo, namespace: test}}
      spec:
        hosts: [podinfo]
        http:
          - route:
              - destination: {{host: podinfo-primary}}
expect: {{outcome: promoted}}
"#,
        canary("      maxWeight: 50\n      stepWeight: 25\n")
    );
    let r = run(&text);
    assert_eq!(r.outcome, Outcome::Promoted, "{}", r.final_message);
    assert!(
        r.decisions.iter().any(|d| d
            .messages
            .iter()
            .any(|m| m.contains("applied VirtualService podinfo"))),
        "the event is on the timeline"
    );
    // After the event the canary still got its 25%, then 50%, until the promotion.
    let after: u64 = r
        .samples
        .iter()
        .filter(|s| (110_000..=200_000).contains(&s.at_ms))
        .map(|s| s.canary.requests)
        .sum();
    assert!(after > 1000, "canary requests after the event: {after}");
}

#[test]
fn a_load_tester_sends_only_while_the_rollout_progresses() {
    let text = format!(
        r#"{HEAD}traffic:
  - client: web
    rate: 50
  - client: tester
    rate: 20
    target: canary
{}timeline:
  - {{at: 1m, deploy: {{}}}}
expect: {{outcome: promoted}}
"#,
        canary("      iterations: 3\n")
    );
    let r = run(&text);
    assert_eq!(r.outcome, Outcome::Promoted, "{}", r.final_message);
    let tester = r
        .clients
        .iter()
        .find(|c| c.name == "tester")
        .expect("the tester's figures");
    let progressing_s =
        (r.decided_at_ms.expect("decided") - r.deployed_at_ms.expect("deployed")) as f64 / 1000.0;
    // 20 rps for (at most) the time from the deploy to the decision, not the 10 minutes.
    assert!(tester.requests > 0);
    assert!(
        (tester.requests as f64) < 20.0 * progressing_s * 1.2,
        "{} tester requests in {progressing_s}s",
        tester.requests
    );
    assert_eq!(
        tester.failed, 0,
        "the tester never hits a scaled-down canary"
    );
}

/// The percentages a rule of the mesh sends to the primary and the canary.
fn shares(rule: &RuleView) -> (u8, u8) {
    let weight = |name: &str| -> u64 {
        rule.weights
            .iter()
            .filter(|(v, _)| v == name)
            .map(|(_, w)| u64::from(*w))
            .sum()
    };
    let (primary, canary) = (weight("primary"), weight("canary"));
    let total = (primary + canary).max(1);
    let canary = (100 * canary + total / 2) / total;
    (100 - canary as u8, canary as u8)
}

#[test]
fn every_routing_decision_is_what_the_mesh_routes_by_once_applied() {
    let library = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    for file in [
        "ab-testing-header.yaml",
        "blue-green.yaml",
        "mirroring.yaml",
        "linkerd-trafficsplit.yaml",
        "gateway-api-httproute.yaml",
    ] {
        let s = Scenario::load(&library.join(file)).unwrap_or_else(|e| panic!("{e}"));
        let r = harness::run(&s, &s.variants[0], s.seed).expect("runs");
        assert!(
            r.applied_routes.len() >= 3,
            "{file}: {:?}",
            r.applied_routes
        );
        for applied in &r.applied_routes {
            let routes = applied.routes;
            let table = &applied.mesh_routes;
            let at = format!("{file} at {}ms, {routes}: {table:?}", applied.at_ms);
            // A/B: a first rule takes the matching requests, all to the canary.
            let general = if routes.matched {
                assert!(table.len() >= 2 && table[0].matched, "{at}");
                assert_eq!(shares(&table[0]), (0, 100), "{at}");
                assert_eq!(table[0].mirror, None, "{at}");
                &table[1]
            } else {
                &table[0]
            };
            assert!(!general.matched, "{at}");
            assert_eq!(shares(general), (routes.primary, routes.canary), "{at}");
            let mirror = general.mirror.as_ref().map(|(v, pct)| (v.as_str(), *pct));
            let want = routes
                .mirror
                .filter(|m| *m > 0)
                .map(|m| ("canary", f64::from(m)));
            assert_eq!(mirror, want, "{at}");
        }
        // Each routing decision on the timeline was applied, in order.
        let decided: Vec<(u8, Option<u8>, bool)> = r
            .decisions
            .iter()
            .filter(|d| !d.scenario_event)
            .map(|d| (d.canary_weight, d.mirror, d.matched))
            .fold(Vec::new(), |mut seen, w| {
                if seen.last() != Some(&w) {
                    seen.push(w);
                }
                seen
            });
        let applied: Vec<(u8, Option<u8>, bool)> = r
            .applied_routes
            .iter()
            .map(|a| (a.routes.canary, a.routes.mirror, a.routes.matched))
            .fold(Vec::new(), |mut seen, w| {
                if seen.last() != Some(&w) {
                    seen.push(w);
                }
                seen
            });
        assert_eq!(applied, decided, "{file}");
        let unrouted: Vec<&String> = r
            .warnings
            .iter()
            .filter(|w| w.starts_with(harness::ROUTES_NOT_UNDERSTOOD))
            .collect();
        assert!(unrouted.is_empty(), "{file}: {unrouted:?}");
    }
}

#[test]
fn a_canary_whose_service_name_is_not_the_scenarios_service_is_refused_at_load() {
    let text = format!(
        "{HEAD}traffic:\n  - {{client: web, rate: 10}}\ntimeline:\n  - {{at: 30s, deploy: {{}}}}\nexpect: {{outcome: promoted}}\n{}",
        canary("      iterations: 2\n").replace(
            "    service: {port: 9898}",
            "    service: {name: frontend, port: 9898}"
        )
    );
    let e = Scenario::parse(&text, Path::new("routes.yaml"))
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("canary.spec.service.name")
            && e.contains("`frontend`")
            && e.contains("`podinfo`"),
        "{e}"
    );
}

#[test]
fn routes_bound_to_a_gateway_only_leave_the_mesh_clients_on_the_primary_the_apex_service_selects() {
    // The controller's VirtualService binds only the gateway: sidecars do not apply it, and
    // the apex Service, which the controller points at the primary, takes their requests.
    let text = format!(
        "{HEAD}traffic:\n  - {{client: web, rate: 50}}\ntimeline:\n  - {{at: 30s, deploy: {{}}}}\nexpect: {{outcome: rolled-back}}\n{}",
        canary("      maxWeight: 50\n      stepWeight: 25\n").replace(
            "    service: {port: 9898}",
            "    service: {port: 9898, gateways: [ingress/public]}"
        )
    );
    let r = run(&text);
    assert!(r.counters["requests_primary"] > 1000, "{:?}", r.counters);
    assert_eq!(r.counters["requests_canary"], 0, "{:?}", r.counters);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.starts_with(harness::ROUTES_NOT_UNDERSTOOD)
                && w.contains("bound to gateways ingress/public and not to `mesh`")),
        "{:?}",
        r.warnings
    );
}

/// A scenario VirtualService for `podinfo` named `name`, bound to `gateways`, that sends
/// everything to the primary and aborts `abort`% of the requests with a 503.
fn scenario_virtual_service(name: &str, gateways: &str, abort: u32) -> String {
    format!(
        r#"manifests: |
  apiVersion: networking.istio.io/v1beta1
  kind: VirtualService
  metadata: {{name: {name}, namespace: test}}
  spec:
    hosts: [podinfo]
    gateways: {gateways}
    http:
      - fault: {{abort: {{httpStatus: 503, percentage: {{value: {abort}}}}}}}
        route:
          - destination: {{host: podinfo-primary}}
"#
    )
}

#[test]
fn a_scenario_virtual_service_bound_to_a_gateway_only_routes_no_mesh_client() {
    let text = format!(
        "{HEAD}{}traffic:\n  - {{client: web, rate: 50}}\ntimeline:\n  - {{at: 30s, deploy: {{}}}}\nexpect: {{outcome: rolled-back}}\n{}",
        scenario_virtual_service("podinfo-edge", "[ingress/public]", 100),
        canary("      maxWeight: 50\n      stepWeight: 25\n")
    );
    let r = run(&text);
    let web = r.clients.iter().find(|c| c.name == "web").expect("web");
    assert!(web.requests > 1000, "{web:?}");
    assert_eq!(web.failed, 0, "the edge's fault is not the mesh's: {web:?}");
    assert!(r.counters["requests_canary"] > 0, "{:?}", r.counters);
}

#[test]
fn of_two_virtual_services_for_one_host_the_older_routes_it_and_a_warning_names_both_once() {
    let text = format!(
        "{HEAD}{}traffic:\n  - {{client: web, rate: 50}}\ntimeline:\n  - {{at: 30s, deploy: {{}}}}\nexpect: {{outcome: rolled-back}}\n{}",
        scenario_virtual_service("podinfo-legacy", "[mesh]", 0),
        canary("      maxWeight: 50\n      stepWeight: 25\n")
    );
    let r = run(&text);
    // The scenario's VirtualService is older than the controller's: it keeps the host.
    assert!(r.counters["requests_primary"] > 1000, "{:?}", r.counters);
    assert_eq!(r.counters["requests_canary"], 0, "{:?}", r.counters);
    let conflicts: Vec<&String> = r
        .warnings
        .iter()
        .filter(|w| w.contains("IST0109"))
        .collect();
    assert_eq!(conflicts.len(), 1, "{:?}", r.warnings);
    assert!(
        conflicts[0].contains("VirtualService test/podinfo-legacy")
            && conflicts[0].contains("VirtualService test/podinfo "),
        "{}",
        conflicts[0]
    );
}

#[test]
fn only_the_virtual_service_the_controllers_replaces_lends_its_default_route() {
    // Same name as the controller's: its fault stays under the controller's routes.
    let same = format!(
        "{HEAD}{}traffic:\n  - {{client: web, rate: 50}}\ntimeline:\n  - {{at: 30s, deploy: {{}}}}\nexpect: {{outcome: rolled-back}}\n{}",
        scenario_virtual_service("podinfo", "[mesh]", 100),
        canary("      maxWeight: 50\n      stepWeight: 25\n")
    );
    let r = run(&same);
    let web = r.clients.iter().find(|c| c.name == "web").expect("web");
    assert_eq!(web.failed, web.requests, "{web:?}");
    // The controller's routes govern: the canary takes weight. (An aborted request reaches no
    // pod, so its destination is `unknown` and no request counts for the canary.)
    assert!(
        r.samples.iter().any(|s| s.canary_weight > 0),
        "{:?}",
        r.samples.last()
    );
}

#[test]
fn the_replaced_virtual_service_lends_no_timeout_or_retries_and_says_where_they_go() {
    // A 1ms timeout would fail every request (they take ~10ms) were it lent.
    let text = format!(
        "{HEAD}manifests: |\n  apiVersion: networking.istio.io/v1beta1\n  kind: VirtualService\n  metadata: {{name: podinfo, namespace: test}}\n  spec:\n    hosts: [podinfo]\n    http:\n      - timeout: 1ms\n        retries: {{attempts: 0}}\n        route:\n          - destination: {{host: podinfo-primary}}\ntraffic:\n  - {{client: web, rate: 50}}\ntimeline:\n  - {{at: 30s, deploy: {{}}}}\nexpect: {{outcome: promoted}}\n{}",
        canary("      maxWeight: 50\n      stepWeight: 25\n")
    );
    let r = run(&text);
    let web = r.clients.iter().find(|c| c.name == "web").expect("web");
    assert_eq!(web.failed, 0, "{web:?}");
    for field in ["service.timeout", "service.retries"] {
        let n = r.warnings.iter().filter(|w| w.contains(field)).count();
        assert_eq!(n, 1, "{field}: {:?}", r.warnings);
    }
}

#[test]
fn a_linkerd_scenario_refuses_ab_testing_its_traffic_split_cannot_express() {
    let text = format!(
        "{}mesh: linkerd\ntraffic:\n  - {{client: web, rate: 10}}\n{}",
        HEAD,
        canary(
            "      iterations: 2\n      match:\n        - headers: {x-canary: {exact: insider}}\n"
        )
    );
    let e = Scenario::parse(&text, Path::new("routes.yaml"))
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("spec.analysis.match: A/B routing on request matches is not supported by provider smi:v1alpha2"),
        "{e}"
    );
}

#[test]
fn gateway_api_mirroring_reaches_the_canary_as_the_request_mirror_filter_says() {
    // Blue/green with mirroring and no load tester: only the mirror feeds the analysis.
    let text = format!(
        "{HEAD}traffic:\n  - {{client: web, rate: 50}}\ntimeline:\n  - {{at: 30s, deploy: {{}}}}\nexpect: {{outcome: promoted}}\n{}",
        canary("      iterations: 3\n      mirror: true\n").replace(
            "    service: {port: 9898}",
            "    provider: gatewayapi:v1\n    service: {port: 9898}"
        )
    );
    let r = run(&text);
    assert_eq!(r.outcome, Outcome::Promoted, "{}", r.final_message);
    assert!(r.counters["mirrored"] > 1000, "{:?}", r.counters);
    let unrouted: Vec<&String> = r
        .warnings
        .iter()
        .filter(|w| w.starts_with(harness::ROUTES_NOT_UNDERSTOOD))
        .collect();
    assert!(unrouted.is_empty(), "{unrouted:?}");
}

#[test]
fn a_virtual_service_the_controllers_replaces_leaves_none_of_its_routes_or_its_fault_behind() {
    // On a cluster the controller's apply replaces the scenario's VirtualService `podinfo`; the
    // new one binds only a gateway, so mesh clients reach the apex Service (the primary) without
    // the replaced object's 100% abort fault.
    let text = format!(
        "{HEAD}{}traffic:\n  - {{client: web, rate: 50}}\ntimeline:\n  - {{at: 30s, deploy: {{}}}}\nexpect: {{outcome: promoted}}\n{}",
        scenario_virtual_service("podinfo", "[mesh]", 100),
        canary("      maxWeight: 50\n      stepWeight: 25\n").replace(
            "    service: {port: 9898}",
            "    service: {port: 9898, gateways: [ingress/public]}"
        )
    );
    let r = run(&text);
    let web = r.clients.iter().find(|c| c.name == "web").expect("web");
    assert!(web.requests > 10_000, "{web:?}");
    assert_eq!(web.failed, 0, "{web:?}");
    assert_eq!(r.counters["requests_canary"], 0);
}

/// A connection pool of one connection and one pending request: 200 rps overflow it.
const TINY_POOL: &str =
    "{connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}}";

#[test]
fn an_apex_destination_rule_policy_is_bypassed_by_the_controllers_routes_with_a_warning() {
    // The controller's routes name podinfo-primary/-canary, whose DestinationRules (no
    // trafficPolicy) are the only ones a cluster consults: the apex rule's pool governs nothing.
    let text = format!(
        "{HEAD}manifests: |\n  apiVersion: networking.istio.io/v1beta1\n  kind: DestinationRule\n  metadata: {{name: podinfo, namespace: test}}\n  spec:\n    host: podinfo\n    trafficPolicy: {TINY_POOL}\ntraffic:\n  - {{client: web, rate: 200}}\ntimeline:\n  - {{at: 30s, deploy: {{}}}}\nexpect: {{outcome: promoted}}\n{}",
        canary("      maxWeight: 50\n      stepWeight: 25\n")
    );
    let r = run(&text);
    assert_eq!(r.outcome, Outcome::Promoted, "{}", r.final_message);
    assert_eq!(r.counters["pending_overflow"], 0);
    let bypassed: Vec<_> = r
        .warnings
        .iter()
        .filter(|w| w.contains("trafficPolicy the controller's routes bypass"))
        .collect();
    assert_eq!(bypassed.len(), 1, "{:?}", r.warnings);
}

#[test]
fn the_canarys_service_traffic_policy_governs_both_versions_through_their_own_hosts() {
    let text = format!(
        "{HEAD}traffic:\n  - {{client: web, rate: 200}}\ntimeline:\n  - {{at: 30s, deploy: {{}}}}\nexpect: {{outcome: promoted}}\n{}",
        canary("      maxWeight: 50\n      stepWeight: 25\n").replace(
            "    service: {port: 9898}",
            &format!("    service: {{port: 9898, trafficPolicy: {TINY_POOL}}}")
        )
    );
    let r = run(&text);
    assert!(r.counters["pending_overflow"] > 1000, "{:?}", r.counters);
    assert!(
        !r.warnings.iter().any(|w| w.contains("bypass")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn a_gateway_ref_named_like_the_service_is_a_gateway_and_routes_no_mesh_client() {
    // gatewayRefs without group and kind name a Gateway: the controller's HTTPRoute binds no
    // mesh client, which reaches the primary the apex Service selects.
    let text = format!(
        "{HEAD}traffic:\n  - {{client: web, rate: 50}}\ntimeline:\n  - {{at: 30s, deploy: {{}}}}\nexpect: {{outcome: promoted}}\n{}",
        canary("      maxWeight: 50\n      stepWeight: 25\n").replace(
            "    service: {port: 9898}",
            "    provider: gatewayapi:v1\n    service: {port: 9898, gatewayRefs: [{name: podinfo, namespace: test}]}"
        )
    );
    let r = run(&text);
    assert_eq!(r.counters["requests_canary"], 0);
    assert!(r.counters["requests_primary"] > 10_000);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("parent Gateway `podinfo`") && w.contains("not simulated")),
        "{:?}",
        r.warnings
    );
}
