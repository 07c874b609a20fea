//! End to end with a real Prometheus: `fledge-sim serve` runs a scenario's mesh, Debian's
//! `prometheus` scrapes it every second, and Flagger's built-in success-rate and duration
//! queries, sent by the controller's own Prometheus client, must read what the simulator's
//! counters say over the same window.
//!
//! The window is one the test measures itself from the simulator's `/metrics` (at its start
//! and end); Prometheus sees it through its 1 s scrapes, so the two differ by up to a scrape
//! at each end. With the canary serving tens of thousands of requests in the window that
//! edge moves the success rate by a few hundredths of a point and the p99 by well under 1%;
//! the tolerances are [`SUCCESS_RATE_POINTS`] and [`LATENCY_RELATIVE`].
//!
//! Everything binds 127.0.0.1, the cases run one at a time, every wait is bounded, and the
//! processes are killed when a case ends, however it ends ([`Processes`]). Without
//! `prometheus` on PATH the cases are skipped with a loud line, unless `CI=true`, where they
//! fail.

// Real processes on the wall clock: bounded waits and the timestamps Prometheus is asked at.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fledge_controller::analysis::MetricReading;
use fledge_controller::metrics::{Mesh, Prometheus};
use fledge_controller::observe::{Measure, Measurement, Range};
use fledge_controller::routes::{Provider, Routes};
use fledge_simulator::scenario::Scenario;
use fledge_simulator::telemetry::{DURATION_BUCKETS_MS, NUM_BUCKETS, histogram_quantile};
use support::live::{PATIENCE, Processes, http, lines_of, prometheus_binary, unix_ms, wait_for};

/// How far Flagger's success rate (percent) may be from the simulator's counters.
const SUCCESS_RATE_POINTS: f64 = 0.5;
/// How far Flagger's p99 may be from the simulator's, relative.
const LATENCY_RELATIVE: f64 = 0.10;
/// Simulated seconds per wall second: the scenarios deploy at 1m, 3 s into a case.
const SPEED: u32 = 20;
/// The measured window, in wall seconds (200 simulated seconds).
const WINDOW: Duration = Duration::from_secs(10);

/// One case at a time: each runs a simulator at 20x and a Prometheus on 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn istio_builtin_queries_read_what_the_simulator_counted() {
    check_builtin_queries("scenarios/error-regression.yaml", Mesh::Istio);
}

#[test]
fn linkerd_builtin_queries_read_what_the_simulator_counted() {
    check_builtin_queries("scenarios/linkerd-trafficsplit.yaml", Mesh::Linkerd);
}

/// Set (to the simulator's path) only in the test process that
/// [`a_killed_test_process_leaves_no_process_behind`] starts and kills.
const KILLED_HELPER: &str = "FLEDGE_E2E_KILLED_HELPER";

/// A test process killed as a CI timeout or Ctrl-C kills it, with no chance to drop its
/// [`Processes`]: the live simulator it started must die with it. Needs no Prometheus.
#[cfg(target_os = "linux")]
#[test]
fn a_killed_test_process_leaves_no_process_behind() {
    let sim = support::sim_binary().to_path_buf();
    let mut helper = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "helper_starts_a_simulator_and_waits_to_be_killed",
        ])
        .args(["--ignored", "--nocapture", "--test-threads=1"])
        .env(KILLED_HELPER, &sim)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the helper test process starts");
    let lines = lines_of(helper.stdout.take().expect("piped"));
    let deadline = Instant::now() + PATIENCE;
    let pid = loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(wait) {
            // After libtest's `test NAME ... `, on the same line.
            Ok(line) => match line.split("simulator pid ").nth(1) {
                Some(pid) => break pid.trim().parse::<u32>().expect("a pid"),
                None => continue,
            },
            Err(e) => {
                let _ = helper.kill();
                panic!(
                    "the helper did not say which simulator it started ({e}): {:?}",
                    helper.wait()
                );
            }
        }
    };
    assert!(running(pid), "the simulator runs while the helper lives");
    helper.kill().expect("SIGKILL to the helper");
    let _ = helper.wait();
    // The kernel signals the orphan at once; the bound is only for a machine under load.
    let deadline = Instant::now() + PATIENCE;
    while running(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if running(pid) {
        // SAFETY: a plain kill(2) of the process this test left behind.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        panic!("the simulator {pid} outlived the killed test process");
    }
}

/// Run only by [`a_killed_test_process_leaves_no_process_behind`], in a process of its own.
#[cfg(target_os = "linux")]
#[test]
#[ignore = "a helper of a_killed_test_process_leaves_no_process_behind"]
fn helper_starts_a_simulator_and_waits_to_be_killed() {
    let Some(sim) = std::env::var_os(KILLED_HELPER) else {
        return;
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/healthy-canary.yaml");
    let mut procs = Processes::new("killed-helper");
    procs.start_simulator(Path::new(&sim), &path, "127.0.0.1:0", 1);
    let pid = procs.pid("fledge-sim").expect("started");
    // Straight to stdout: the parent reads it before it kills this process.
    let _ = writeln!(std::io::stdout(), "simulator pid {pid}");
    let _ = std::io::stdout().flush();
    // Bounded, should the parent not kill it.
    std::thread::sleep(PATIENCE);
}

/// Whether `pid` is a process that runs (a zombie waiting to be reaped does not).
#[cfg(target_os = "linux")]
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command's name, which is in parentheses.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

fn check_builtin_queries(scenario_file: &str, mesh: Mesh) {
    let Some(prometheus) = prometheus_binary("e2e_prometheus") else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(scenario_file);
    let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut procs = Processes::new(scenario_file);

    let sim_port = procs.start_simulator(support::sim_binary(), &path, "127.0.0.1:0", SPEED);
    let sim = format!("127.0.0.1:{sim_port}");
    let prom = procs.start_prometheus(&prometheus, &sim);

    // The timeline's deploy shows as a new revision; then the rollout's first moves, made by
    // hand: the target scaled up, half the traffic routed to it by the router's own objects.
    wait_for(&mut procs, "the scenario's deploy (revision rev-2)", || {
        http(&sim, "GET", "/workloads", "")
            .1
            .contains(r#""revision":"rev-2""#)
    });
    let scale = format!(r#"{{"replicas": {}}}"#, scenario.canary().pods);
    let (status, body) = http(&sim, "POST", "/workloads/canary/scale", &scale);
    assert_eq!(status, 200, "{body}");
    let canary = scenario.canary_resource.as_ref().expect("a Canary");
    let provider = scenario.variants[0]
        .spec
        .as_ref()
        .and_then(|s| s.provider)
        .unwrap_or(Provider::Istio);
    let half = Routes {
        primary: 50,
        canary: 50,
        mirror: None,
        matched: false,
    };
    let objects = provider
        .objects(canary, &half)
        .expect("the router builds its objects");
    let text: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
    let (status, body) = http(&sim, "PUT", "/objects", &text.join("\n---\n"));
    assert_eq!(status, 200, "{body}");
    let (_, workloads) = http(&sim, "GET", "/workloads", "");
    assert!(workloads.contains(r#""canary_weight":50"#), "{workloads}");

    // Let the canary's series exist in a scrape before the window opens.
    std::thread::sleep(Duration::from_secs(2));
    let target = &canary.spec.target_ref.name;
    let (from, before) = (unix_ms(), Counted::read(&sim, mesh, target));
    std::thread::sleep(WINDOW);
    let (to, after) = (unix_ms(), Counted::read(&sim, mesh, target));
    wait_for(&mut procs, "a scrape after the window", || {
        last_scrape_ms(&prom).is_some_and(|t| t > to)
    });

    let requests = after.requests - before.requests;
    let failures = after.failures - before.failures;
    assert!(
        requests > 10_000,
        "the canary served {requests} requests in the window"
    );
    assert!(failures > 0, "the canary failed no request in the window");
    let success = 100.0 * (1.0 - failures as f64 / requests as f64);
    let mut buckets = [0; NUM_BUCKETS];
    for (b, (a, z)) in buckets
        .iter_mut()
        .zip(before.buckets.iter().zip(&after.buckets))
    {
        *b = z - a;
    }
    let p99 = histogram_quantile(0.99, &buckets).expect("requests in the window");

    let client = Prometheus::new(&format!("http://{prom}"), Duration::from_secs(10), 2)
        .expect("a client for the address");
    let subject = fledge_simulator::promql::subject(canary, &scenario.namespace);
    let range = Range { from, to };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let read = |metric: &str, measure| {
        let m = Measurement {
            metric: metric.into(),
            measure,
            range,
        };
        match runtime.block_on(client.read(mesh, &subject, &m, None)) {
            MetricReading::Value { value } => value,
            other => panic!("{metric}: {other:?}"),
        }
    };
    let flagger_success = read("request-success-rate", Measure::SuccessRate);
    let flagger_p99 = read("request-duration", Measure::Latency);
    assert!(
        (flagger_success - success).abs() <= SUCCESS_RATE_POINTS,
        "success rate: Prometheus {flagger_success:.3}%, the simulator's counters {success:.3}% ({failures} of {requests} failed)"
    );
    assert!(
        (flagger_p99 - p99).abs() <= LATENCY_RELATIVE * p99,
        "p99: Prometheus {flagger_p99:.2} ms, the simulator's counters {p99:.2} ms"
    );
}

/// The canary's request counters in the simulator's `/metrics`: the series Flagger's query
/// for `mesh` selects (Istio: destination reporter; Linkerd: inbound).
#[derive(Debug)]
struct Counted {
    requests: u64,
    failures: u64,
    /// Cumulative per bucket, in Istio's bucket order.
    buckets: [u64; NUM_BUCKETS],
}

impl Counted {
    fn read(sim: &str, mesh: Mesh, target: &str) -> Counted {
        let (status, text) = http(sim, "GET", "/metrics", "");
        assert_eq!(status, 200, "{text}");
        let (total, bucket, workload, scope) = match mesh {
            Mesh::Istio => (
                "istio_requests_total",
                "istio_request_duration_milliseconds_bucket",
                "destination_workload",
                ("reporter", "destination"),
            ),
            _ => (
                "response_total",
                "response_latency_ms_bucket",
                "deployment",
                ("direction", "inbound"),
            ),
        };
        let mut c = Counted {
            requests: 0,
            failures: 0,
            buckets: [0; NUM_BUCKETS],
        };
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, labels, value) = sample(line);
            let label = |n: &str| labels.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
            if label(workload) != Some(target) || label(scope.0) != Some(scope.1) {
                continue;
            }
            if name == total {
                c.requests += value as u64;
                let code = label("response_code")
                    .or(label("status_code"))
                    .unwrap_or("");
                if code.starts_with('5') {
                    c.failures += value as u64;
                }
            } else if name == bucket {
                let le = label("le").expect("a bucket has le");
                let i = DURATION_BUCKETS_MS
                    .iter()
                    .position(|b| format!("{b}") == le)
                    .unwrap_or(NUM_BUCKETS - 1);
                c.buckets[i] += value as u64;
            }
        }
        // Non-cumulative, as the simulator's quantile takes them.
        for i in (1..NUM_BUCKETS).rev() {
            c.buckets[i] -= c.buckets[i - 1];
        }
        c
    }
}

/// `name{k="v",...} value` (label values without quotes or commas, as the simulator writes them).
fn sample(line: &str) -> (&str, Vec<(String, String)>, f64) {
    let (series, value) = line.rsplit_once(' ').expect("a sample line");
    let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
    let labels = labels
        .trim_end_matches('}')
        .split("\",")
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once("=\"").expect("a label");
            (k.to_string(), v.trim_end_matches('"').to_string())
        })
        .collect();
    (name, labels, value.parse().expect("a number"))
}

/// The newest scrape of the simulator that Prometheus stored, in Unix milliseconds.
fn last_scrape_ms(prom: &str) -> Option<u64> {
    let (status, body) = http(prom, "GET", "/api/v1/query?query=timestamp(up)", "");
    if status != 200 {
        return None;
    }
    let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
    let value = doc["data"]["result"][0]["value"][1].as_str()?;
    Some((value.parse::<f64>().ok()? * 1000.0) as u64)
}
