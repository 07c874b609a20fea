//! The pod model against queueing theory: an M/M/c pool must match Erlang C.

use fledge_simulator::engine::SECONDS;
use fledge_simulator::mesh::VersionId;
use fledge_simulator::mmc_mesh;

/// Erlang C: probability of waiting and mean wait for M/M/c with arrival rate `lambda` and
/// service rate `mu` per worker.
fn erlang_c(c: u32, lambda: f64, mu: f64) -> (f64, f64) {
    let a = lambda / mu;
    let rho = a / f64::from(c);
    let mut term = 1.0;
    let mut sum = 0.0;
    for k in 0..c {
        if k > 0 {
            term *= a / f64::from(k);
        }
        sum += term;
    }
    let top = term * a / f64::from(c) / (1.0 - rho);
    let p_wait = top / (sum + top);
    (p_wait, p_wait / (f64::from(c) * mu - lambda))
}

struct Batches {
    p_wait: Vec<f64>,
    wait: Vec<f64>,
}

fn run(c: u32, load: f64, seed: u64) -> Batches {
    let mu = 100.0; // 10 ms mean service
    let mut mesh = mmc_mesh(seed, c, load, mu).expect("model builds");
    let v = VersionId(0);
    let lambda = load * f64::from(c) * mu;
    // Each batch holds about 10,000 arrivals; the first is warm-up.
    let batch = (10_000.0 / lambda * SECONDS as f64) as u64;
    let mut out = Batches {
        p_wait: vec![],
        wait: vec![],
    };
    mesh.run_until(batch);
    let mut prev = mesh.queue_stats(v);
    for i in 2..=31 {
        mesh.run_until(batch * i);
        let s = mesh.queue_stats(v);
        out.p_wait
            .push((s.queued - prev.queued) as f64 / (s.arrivals - prev.arrivals) as f64);
        out.wait.push(
            (s.total_wait - prev.total_wait) as f64 / 1e9 / (s.started - prev.started) as f64,
        );
        prev = s;
    }
    out
}

fn mean_and_se(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

fn check(c: u32, load: f64) {
    let (p_theory, w_theory) = erlang_c(c, load * f64::from(c) * 100.0, 100.0);
    let b = run(c, load, 11);
    let (p, p_se) = mean_and_se(&b.p_wait);
    let (w, w_se) = mean_and_se(&b.wait);
    // Four standard errors of the batch means: the run's own statistical margin.
    assert!(
        (p - p_theory).abs() <= 4.0 * p_se,
        "c={c} load={load}: P(wait) {p:.4} vs Erlang C {p_theory:.4} (se {p_se:.4})"
    );
    assert!(
        (w - w_theory).abs() <= 4.0 * w_se,
        "c={c} load={load}: mean wait {w:.5}s vs {w_theory:.5}s (se {w_se:.5})"
    );
    // The margin must be tight enough to mean something.
    assert!(
        w_se < 0.1 * w_theory,
        "c={c} load={load}: run too short, se {w_se} for {w_theory}"
    );
}

#[test]
fn a_single_worker_at_half_load_matches_erlang_c() {
    check(1, 0.5);
}

#[test]
fn four_workers_at_eighty_percent_load_match_erlang_c() {
    check(4, 0.8);
}

#[test]
fn sixteen_workers_at_seventy_percent_load_match_erlang_c() {
    check(16, 0.7);
}

#[test]
fn erlang_c_helper_agrees_with_the_m_m_1_formula() {
    // M/M/1: P(wait) = rho, Wq = rho / (mu - lambda).
    let (p, w) = erlang_c(1, 50.0, 100.0);
    assert!((p - 0.5).abs() < 1e-12);
    assert!((w - 0.01).abs() < 1e-12);
}

/// The run summary's queueing figures (`queueing` in `--json`) for a scenario whose pod is an
/// M/M/c queue: one pod of 4 workers, exponential 10 ms service, Poisson arrivals at 80% load,
/// and the new revision deployed only at the very end, so the primary takes every request.
#[test]
fn run_summary_queueing_matches_erlang_c_for_an_m_m_c_pod() {
    use fledge_simulator::harness;
    use fledge_simulator::scenario::Scenario;
    let text = r#"name: mmc
duration: 10m
service:
  name: podinfo
  primary: {pods: 1, workers: 4, latency: {mean: 10ms}}
traffic:
  - {client: frontend, rate: 320}
canary:
  apiVersion: flagger.app/v1beta1
  kind: Canary
  metadata: {name: podinfo}
  spec:
    targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
    service: {port: 9898}
    analysis: {interval: 1m, threshold: 2, maxWeight: 30, stepWeight: 10}
timeline:
  - {at: 9m59s, deploy: {}}
expect:
  outcome: undecided
"#;
    let s = Scenario::parse(text, std::path::Path::new("mmc.yaml")).expect("scenario loads");
    let r = harness::run(&s, &s.variants[0], 3).expect("runs");
    let q = &r.queueing[0];
    assert_eq!(q.version, "primary");
    let (p_theory, w_theory) = erlang_c(4, 320.0, 100.0);
    let p = q.queued_fraction.expect("arrivals");
    let w = q.mean_queue_wait_ms.expect("started") / 1e3;
    // About 190,000 arrivals: a few percent is several standard errors.
    assert!(
        (p - p_theory).abs() < 0.05 * p_theory,
        "P(wait) {p:.4} vs Erlang C {p_theory:.4}"
    );
    assert!(
        (w - w_theory).abs() < 0.08 * w_theory,
        "mean wait {w:.5}s vs Erlang C {w_theory:.5}s"
    );
    let json = serde_json::to_value(&r).expect("serialises");
    assert!(
        json["queueing"][0]["mean_queue_wait_ms"].is_f64(),
        "{}",
        json["queueing"]
    );
    let summary = fledge_simulator::report::summary(&r);
    assert!(summary.contains("queueing: primary "), "{summary}");
}
