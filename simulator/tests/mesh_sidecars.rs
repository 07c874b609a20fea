//! Workloads without a sidecar (issue 17, fix 3), as Istio leaves a pod annotated
//! `sidecar.istio.io/inject: "false"`: each test is a table of cases citing the behaviour.

mod support;

use support::mesh::{STRICT, behaviour, count_flag, mesh_with};

use fledge_simulator::engine::SECONDS;
use fledge_simulator::mesh::{
    Action, ClientConfig, Mesh, MeshConfig, ServiceConfig, VersionConfig,
};
use fledge_simulator::telemetry::{Reporter, Selector, flags};

/// `podinfo` with 4 primary and 2 canary pods (the Service selects both), and one client.
fn mesh(client_sidecar: bool, canary_sidecar: bool, manifests: &str) -> Mesh {
    mesh_of(&[("client", client_sidecar)], canary_sidecar, manifests)
}

/// The same with clients `(name, sidecar)`, each sending 200 requests per second.
fn mesh_of(clients: &[(&str, bool)], canary_sidecar: bool, manifests: &str) -> Mesh {
    let mut canary = VersionConfig::new("canary", 2, behaviour(5, 16));
    canary.sidecar = canary_sidecar;
    let clients = clients
        .iter()
        .map(|&(name, sidecar)| ClientConfig {
            sidecar,
            ..ClientConfig::new(name, "podinfo", 200.0)
        })
        .collect();
    let cfg = MeshConfig {
        seed: 5,
        services: vec![ServiceConfig::new(
            "podinfo",
            vec![VersionConfig::new("primary", 4, behaviour(5, 16)), canary],
        )],
        clients,
        ..Default::default()
    };
    mesh_with(cfg, manifests)
}

const TO_CANARY: &str = "kind: VirtualService\nmetadata: {name: podinfo}\nspec:\n  hosts: [podinfo]\n  http:\n    - route:\n        - {destination: {host: podinfo-canary}, weight: 100}\n";

/// What one run shows: the share of requests the canary's pods served, fault aborts, mirrored
/// copies, ejections and retries.
#[derive(Debug, PartialEq)]
struct Seen {
    canary_percent: u64,
    fault_aborts: bool,
    mirrored: bool,
    ejected: bool,
}

fn seen(m: &Mesh) -> Seen {
    let (p, c) = (
        m.version_id("podinfo", "primary").unwrap(),
        m.version_id("podinfo", "canary").unwrap(),
    );
    let served = |v| m.pod_requests(v).iter().sum::<u64>();
    let (sp, sc) = (served(p), served(c));
    let client = m.client_id("client").unwrap();
    let counters = |v| m.proxy_counters(client, v);
    Seen {
        // Rounded to tens: the pod ratio (2 of 6 pods) reads 30, everything 100.
        canary_percent: ((100 * sc) as f64 / (sp + sc).max(1) as f64 / 10.0).round() as u64 * 10,
        fault_aborts: count_flag(m, flags::FI) > 0,
        mirrored: counters(p).mirrored + counters(c).mirrored > 0,
        ejected: counters(p).ejections_enforced + counters(c).ejections_enforced > 0,
    }
}

/// A client without a sidecar has no Envoy: its requests go to the Service's cluster IP, and
/// kube-proxy sends each new connection to a ready endpoint picked at random (Kubernetes docs,
/// "Virtual IPs and Service Proxies", iptables mode). No VirtualService weight, fault or
/// mirror and no DestinationRule (outlier detection, balancing) applies to it: they are the
/// client sidecar's configuration (Istio docs, "Traffic Management": the rules are pushed to
/// the Envoy proxies).
#[test]
fn a_client_without_a_sidecar_bypasses_routes_faults_mirrors_and_outlier_detection() {
    let fault = format!(
        "{TO_CANARY}      fault: {{abort: {{httpStatus: 503, percentage: {{value: 100}}}}}}\n"
    );
    let mirror = format!("{TO_CANARY}      mirror: {{host: podinfo-primary}}\n");
    let outlier = "kind: DestinationRule\nmetadata: {name: podinfo}\nspec:\n  host: podinfo\n  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}\n";
    let seen_as = |canary_percent, fault_aborts, mirrored, ejected| Seen {
        canary_percent,
        fault_aborts,
        mirrored,
        ejected,
    };
    let cases = [
        // (manifests, client sidecar, what is seen)
        (
            TO_CANARY.to_string(),
            true,
            seen_as(100, false, false, false),
        ),
        (
            TO_CANARY.to_string(),
            false,
            seen_as(30, false, false, false),
        ),
        (fault.clone(), true, seen_as(0, true, false, false)),
        (fault, false, seen_as(30, false, false, false)),
        // The mirrored copies go to the primary's pods: half of what the pods serve.
        (mirror.clone(), true, seen_as(50, false, true, false)),
        (mirror, false, seen_as(30, false, false, false)),
        (outlier.to_string(), true, seen_as(0, false, false, true)),
        (outlier.to_string(), false, seen_as(30, false, false, false)),
    ];
    for (manifests, sidecar, want) in cases {
        let mut m = mesh(sidecar, true, &manifests);
        if manifests == outlier {
            // The canary's pods fail every request: a sidecar ejects them.
            let c = m.version_id("podinfo", "canary").unwrap();
            m.apply(fledge_simulator::mesh::Action::SetErrorRate {
                version: c,
                rate: 1.0,
            })
            .unwrap();
        }
        m.run_until(20 * SECONDS);
        assert_eq!(seen(&m), want, "sidecar {sidecar}:\n{manifests}");
    }
}

/// kube-proxy's pick knows nothing of a pod's speed: a client without a sidecar sends a slow
/// pod its random share of the requests (a ready endpoint at random per connection; Kubernetes
/// docs, "Virtual IPs and Service Proxies", iptables mode), where Envoy's LEAST_REQUEST
/// (Istio's default) steers away from it. One primary pod of the six is 20 times slower.
#[test]
fn a_client_without_a_sidecar_spreads_requests_at_random_even_to_a_slow_pod() {
    // (client sidecar, the slow pod's share of the requests, in percent)
    for (sidecar, share) in [(false, 14..=19), (true, 0..=10)] {
        let mut m = mesh(sidecar, true, "");
        let (p, c) = (
            m.version_id("podinfo", "primary").unwrap(),
            m.version_id("podinfo", "canary").unwrap(),
        );
        m.apply(Action::SetPodSlowdown {
            version: p,
            pod: 0,
            factor: 20.0,
        })
        .unwrap();
        m.run_until(20 * SECONDS);
        let slow = m.pod_requests(p)[0];
        let all: u64 = [p, c].iter().flat_map(|&v| m.pod_requests(v)).sum();
        let got = 100 * slow / all.max(1);
        assert!(share.contains(&got), "sidecar {sidecar}: {slow} of {all}");
    }
}

/// Without a sidecar nothing reports the client's requests (no `reporter="source"` series of
/// it), and the server's sidecar knows nothing of its peer: its series name the source
/// `unknown` (Istio docs, "Istio Standard Metrics": labels default to `unknown` when the peer
/// metadata is missing). A version without a sidecar reports no destination series. What the
/// clients saw still counts for the run's figures.
#[test]
fn workloads_without_a_sidecar_report_no_series_of_their_own() {
    let cases = [
        // (client sidecar, canary sidecar, source series, canary destination series, source label)
        (true, true, true, true, "client"),
        (false, true, false, true, "unknown"),
        (true, false, true, false, "client"),
    ];
    for (client_sidecar, canary_sidecar, source, canary_dest, label) in cases {
        let mut m = mesh(client_sidecar, canary_sidecar, "");
        m.run_until(10 * SECONDS);
        let text = m.render_prometheus();
        let case = format!("client {client_sidecar}, canary {canary_sidecar}");
        assert_eq!(
            text.contains("istio_requests_total{reporter=\"source\""),
            source,
            "{case}"
        );
        let source_label = format!("reporter=\"destination\",source_workload=\"{label}\"");
        assert!(text.contains(&source_label), "{case}");
        let canary = m.version_id("podinfo", "canary").unwrap();
        assert_eq!(
            m.destination_stats(canary, 0, m.now()).requests > 0,
            canary_dest,
            "{case}"
        );
        let reported_by_canary = text.lines().any(|l| {
            l.starts_with("istio_requests_total{reporter=\"destination\"")
                && l.contains("destination_workload=\"podinfo-canary\"")
        });
        assert_eq!(reported_by_canary, canary_dest, "{case}");
        // The run's figures still see every request the client sent.
        let sent = m.stats().requests;
        let seen = m.source_stats(canary, 0, m.now()).requests
            + m.source_stats(m.version_id("podinfo", "primary").unwrap(), 0, m.now())
                .requests;
        assert!(sent > 1900 && sent - seen < 20, "{case}: {sent} vs {seen}");
    }
}

/// mTLS with a side missing its sidecar: a STRICT server sidecar resets a plaintext client
/// (Istio docs, "Mutual TLS Migration": clients without sidecars fail once STRICT is on); a
/// client whose DestinationRule says ISTIO_MUTUAL fails the TLS handshake with a server
/// without a sidecar, which speaks plaintext (Istio docs, "Traffic Management Problems": 503
/// after setting a DestinationRule); auto mTLS sends plaintext to it and succeeds; a server
/// without a sidecar enforces no PeerAuthentication.
#[test]
fn mtls_fails_where_one_side_lacks_the_sidecar_it_needs() {
    let mutual = "kind: DestinationRule\nmetadata: {name: podinfo}\nspec:\n  host: podinfo\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n";
    let cases = [
        // (client sidecar, canary sidecar, manifests, the flag the canary's requests fail with)
        (true, true, STRICT, 0),
        (false, true, STRICT, flags::UC),
        (true, false, mutual, flags::UF),
        (true, false, "", 0),
        (true, false, STRICT, 0),
        (false, false, STRICT, 0),
    ];
    for (client_sidecar, canary_sidecar, manifests, flag) in cases {
        let mut m = mesh(client_sidecar, canary_sidecar, manifests);
        m.run_until(10 * SECONDS);
        let canary = m.version_id("podinfo", "canary").unwrap();
        let client = m.client_id("client").unwrap();
        let case = format!("client {client_sidecar}, canary {canary_sidecar}:\n{manifests}");
        let c = m.proxy_counters(client, canary);
        assert!(c.connections_opened > 0, "{case}");
        // A failed handshake is a connect failure, every time; a STRICT server's reset comes
        // after TCP connected, so it is none (the request sent fails `UC`).
        let handshake_fails = flag == flags::UF;
        assert_eq!(c.connect_failures > 0, handshake_fails, "{case}: {c:?}");
        assert_eq!(
            c.connect_failures == c.connections_opened,
            handshake_fails,
            "{case}: {c:?}"
        );
        let to_canary = Selector {
            reporter: Reporter::Source,
            source: None,
            dest: Some(canary.0),
        };
        let failed = |f: u16| {
            let by_code = m.telemetry().by_code(&to_canary, 0, m.now(), m.now());
            by_code.iter().any(|x| x.1 & f != 0)
        };
        for f in [flags::UC, flags::UF] {
            assert_eq!(failed(f), flag == f, "{case}: {f:#x}");
        }
    }
}

/// A scenario says which Deployment has no sidecar (`sidecar: false` under `service.primary`
/// or `service.canary`; the canary inherits the primary's): a canary without one reports no
/// destination series, so Flagger's request-success-rate query finds no value for it and the
/// analysis fails its checks, as on a cluster where the new revision's template turned
/// injection off; the clients' own figures still count every request.
#[test]
fn a_scenario_canary_without_a_sidecar_leaves_the_analysis_without_data() {
    use fledge_simulator::result::Outcome;
    use fledge_simulator::scenario::Scenario;
    use fledge_simulator::{expect, harness};
    let primary = "    latency: {p50: 10ms, p99: 40ms}\n";
    let cases = [
        // (after the primary's latency, outcome, canary destination requests reported)
        ("", Outcome::Promoted, true),
        (
            "  canary:\n    sidecar: false\n",
            Outcome::RolledBack,
            false,
        ),
        (
            "    sidecar: false\n  canary:\n    sidecar: true\n",
            Outcome::Promoted,
            true,
        ),
    ];
    for (extra, outcome, reported) in cases {
        let text = support::BASE.replacen(primary, &format!("{primary}{extra}"), 1);
        let s = Scenario::parse(&text, std::path::Path::new("sidecars.yaml"))
            .unwrap_or_else(|e| panic!("{extra}: {e}"));
        let run = harness::run(&s, &s.variants[0], s.seed).expect("runs");
        let r = expect::checked(run, &s.variants[0].expect);
        assert_eq!(r.outcome, outcome, "{extra}: {:?}", r.decisions.last());
        let canary_reported = r.samples.iter().any(|x| x.canary.requests > 0);
        assert_eq!(canary_reported, reported, "{extra}");
        let frontend = &r.clients[0];
        assert!(frontend.requests > 10_000, "{extra}: {frontend:?}");
    }
}

/// Two clients without a sidecar are both `unknown` to the server's sidecar, so their requests
/// are one series in its stats (one counter per label set), not two series with the same
/// labels: Prometheus refuses duplicate label sets in one scrape ("duplicate sample"), and a
/// query matching one-to-one on them fails.
#[test]
fn two_clients_without_a_sidecar_share_the_unknown_source_series() {
    let mut m = mesh_of(&[("batch-a", false), ("batch-b", false)], true, "");
    m.run_until(5 * SECONDS);
    let text = m.render_prometheus();
    let mut seen = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let labels = line.rsplit_once(' ').map_or(line, |x| x.0);
        assert!(seen.insert(labels.to_string()), "twice: {labels}");
    }
    let unknown: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("istio_requests_total{") && l.contains("source_workload=\"unknown\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(unknown as u64, m.stats().completed, "{text}");
}

/// `sidecar:` written with no value is YAML's null: it must not pass for "not set" (a sidecar)
/// when the author meant to say something; it is an error at its line, in a service's version
/// and in a client alike.
#[test]
fn a_sidecar_key_without_a_value_is_an_error_at_its_line() {
    let primary = "    latency: {p50: 10ms, p99: 40ms}\n";
    let cases = [
        (
            support::BASE.replacen(primary, &format!("{primary}    sidecar:\n"), 1),
            "service.primary.sidecar",
        ),
        (
            support::base_with("    rate: 50", "    rate: 50\n    sidecar:"),
            "traffic[0].sidecar",
        ),
    ];
    for (text, field) in cases {
        support::assert_bad_input(
            "sidecar-without-value.yaml",
            &text,
            support::line_of(&text, "sidecar:"),
            field,
            "has no value",
        );
    }
}
