//! End to end with a real Prometheus and the standalone controller: `fledge-sim serve` runs a
//! scenario's mesh, Debian's `prometheus` scrapes it every second, and `fledge-controller local`
//! drives the scenario's Canary through it: Prometheus' answers to the controller's own PromQL
//! decide, the router's own objects route. Each case checks how the rollout ended (the exit
//! status, the Events the controller printed) and what the mesh counted.
//!
//! Pacing: the simulator runs at [`SPEED`]x, so its timeline deploys the new revision a few
//! seconds in; the Canaries are the scenarios' own with a 10 s interval (the shortest Flagger
//! allows) and one step to 50%, so each case takes a few intervals of wall time.
//!
//! Everything binds 127.0.0.1, the cases run one at a time, every wait is bounded, and the
//! processes are killed when a case ends, however it ends (`support::live::Processes`).
//! Without `prometheus` on PATH the cases are skipped with a loud line, unless `CI=true`, where
//! they fail.

// Real processes on the wall clock: bounded waits.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_norway::Value;
use support::live::{Processes, free_port, http, prometheus_binary, workspace_binary};

/// Simulated seconds per wall second: the scenarios deploy at 1m, 6 s into a case.
const SPEED: u32 = 10;
/// The longest a rollout may take, from the controller's start to its exit.
const ROLLOUT_PATIENCE: Duration = Duration::from_secs(120);

/// One case at a time: each runs a simulator, a Prometheus and a controller on 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn threshold_judge_promotes_a_healthy_canary() {
    let Some(run) = Case::new("healthy-canary.yaml").run() else {
        return;
    };
    run.assert_promoted();
    assert_eq!(run.count("event: Warning"), 0, "{}", run.output());
}

#[test]
fn threshold_judge_rolls_back_a_canary_failing_5_percent() {
    let Some(run) = Case::new("error-regression.yaml").threshold(1).run() else {
        return;
    };
    run.assert_rolled_back_on_a_value("request-success-rate", 90.0..99.0);
    assert_eq!(run.count("event: Normal Promoting"), 0, "{}", run.output());
}

#[test]
fn statistical_judge_promotes_a_healthy_canary() {
    let Some(run) = Case::new("healthy-canary-statistical.yaml").run() else {
        return;
    };
    run.assert_promoted();
}

#[test]
fn statistical_judge_rolls_back_a_slower_canary() {
    let Some(run) = Case::new("judges-compared.yaml")
        .statistical()
        .threshold(1)
        .run()
    else {
        return;
    };
    run.assert_rolled_back_by("request-duration");
}

#[test]
fn prometheus_down_mid_run_never_promotes_and_says_why() {
    let Some(run) = Case::new("healthy-canary.yaml")
        .threshold(2)
        .stop_prometheus_at_weight()
        .run()
    else {
        return;
    };
    assert_eq!(run.exit, Some(1), "{}", run.output());
    assert_eq!(run.count("Succeeded"), 0, "{}", run.output());
    assert_eq!(run.count("event: Normal Promoting"), 0, "{}", run.output());
    let rollback = run.line("event: Warning RolledBack");
    assert!(
        rollback.contains("request-success-rate") && rollback.contains("Prometheus"),
        "the rollback names the metric and Prometheus' failure: {rollback}"
    );
}

#[test]
fn linkerd_canary_failing_4_percent_is_rolled_back_by_linkerds_metrics() {
    let Some(run) = Case::new("linkerd-trafficsplit.yaml").threshold(1).run() else {
        return;
    };
    run.assert_rolled_back_on_a_value("request-success-rate", 90.0..99.0);
    let (_, metrics) = http(&run.mesh, "GET", "/metrics", "");
    assert!(metrics.contains("response_total{"), "Linkerd's names");
}

#[test]
fn ab_test_by_header_promotes_a_healthy_canary_measured_on_the_matched_traffic() {
    let Some(run) = Case::new("ab-testing-header.yaml")
        .healthy_canary()
        .iterations(1)
        .run()
    else {
        return;
    };
    run.assert_promoted();
    // The canary never had a weight: all it served before the promotion was matched.
    assert!(
        run.lines
            .iter()
            .filter(|l| l.starts_with("status: Progressing"))
            .all(|l| l.contains("weight 0 ")),
        "{}",
        run.output()
    );
    let (canary, all) = istio_requests(&run.mesh, "reviews");
    assert!(canary > 0.0, "the canary served the matched requests");
    assert!(
        canary < 0.2 * all,
        "the canary served only the matched tenth: {canary} of {all}"
    );
}

/// A scenario of `scenarios/` with its Canary shortened for the wall clock.
struct Case {
    scenario: &'static str,
    threshold: Option<u64>,
    statistical: bool,
    iterations: Option<u64>,
    healthy_canary: bool,
    stop_prometheus: bool,
}

/// How a case ended.
struct Run {
    /// The controller's exit code.
    exit: Option<i32>,
    /// What it printed.
    lines: Vec<String>,
    /// The live simulator's address (still running while the run is looked at).
    mesh: String,
    _procs: Processes,
}

impl Case {
    fn new(scenario: &'static str) -> Case {
        Case {
            scenario,
            threshold: None,
            statistical: false,
            iterations: None,
            healthy_canary: false,
            stop_prometheus: false,
        }
    }

    fn threshold(mut self, n: u64) -> Case {
        self.threshold = Some(n);
        self
    }

    fn statistical(mut self) -> Case {
        self.statistical = true;
        self
    }

    fn iterations(mut self, n: u64) -> Case {
        self.iterations = Some(n);
        self
    }

    /// The new revision behaves as the old one.
    fn healthy_canary(mut self) -> Case {
        self.healthy_canary = true;
        self
    }

    /// Prometheus is killed once the canary takes traffic.
    fn stop_prometheus_at_weight(mut self) -> Case {
        self.stop_prometheus = true;
        self
    }

    /// The scenario and its Canary as the case runs them.
    fn files(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scenarios")
            .join(self.scenario);
        let text = std::fs::read_to_string(&path).expect("the scenario reads");
        let mut scenario: Value = serde_norway::from_str(&text).expect("the scenario parses");
        if self.healthy_canary {
            scenario["service"]["canary"] = Value::Mapping(Default::default());
        }
        let mut canary = scenario["canary"].clone();
        let analysis = &mut canary["spec"]["analysis"];
        let set = |a: &mut Value, key: &str, v: Value| {
            a.as_mapping_mut()
                .expect("analysis is a mapping")
                .insert(key.into(), v);
        };
        set(analysis, "interval", "10s".into());
        if let Some(n) = self.threshold {
            set(analysis, "threshold", n.into());
        }
        if self.statistical {
            set(analysis, "judge", "statistical".into());
        }
        match self.iterations {
            Some(n) => set(analysis, "iterations", n.into()),
            None => {
                set(analysis, "maxWeight", 50.into());
                set(analysis, "stepWeight", 50.into());
            }
        }
        for metric in analysis["metrics"]
            .as_sequence_mut()
            .expect("the scenario's Canary has metrics")
        {
            set(metric, "interval", "10s".into());
        }
        let scenario_file = dir.join("scenario.yaml");
        let canary_file = dir.join("canary.yaml");
        let write = |file: &Path, v: &Value| {
            let yaml = serde_norway::to_string(v).expect("YAML");
            std::fs::write(file, yaml).expect("written");
        };
        write(&scenario_file, &scenario);
        write(&canary_file, &canary);
        (scenario_file, canary_file)
    }

    /// Prometheus, then the simulator it scrapes, then the controller, before the timeline
    /// deploys; `None` when there is no Prometheus (skipped, loudly).
    fn run(self) -> Option<Run> {
        let prometheus = prometheus_binary("e2e_local")?;
        let (sim, controller) = binaries();
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut procs = Processes::new(&format!("local-{}", self.scenario));
        let (scenario, canary) = self.files(&procs.dir);
        let mesh = format!("127.0.0.1:{}", free_port());
        let prom = procs.start_prometheus(&prometheus, &mesh);
        procs.start_simulator(sim, &scenario, &mesh, SPEED);
        let output = procs.start_ending(
            "fledge-controller",
            Command::new(controller)
                .arg("local")
                .arg("--canary")
                .arg(&canary)
                .args(["--prometheus", &format!("http://{prom}")])
                .args(["--mesh", &format!("http://{mesh}")])
                .args([
                    "--prometheus-timeout-seconds",
                    "2",
                    "--prometheus-retries",
                    "1",
                ]),
        );
        let mut lines = Vec::new();
        let started = Instant::now();
        let deadline = started + ROLLOUT_PATIENCE;
        let exit = loop {
            while let Ok(line) = output.try_recv() {
                if self.stop_prometheus && line.starts_with("status: Progressing weight 50") {
                    procs.kill("prometheus");
                }
                lines.push(line);
            }
            if let Some(status) = procs.exited("fledge-controller") {
                // What it printed last, up to the pipe's end.
                while let Ok(line) = output.recv_timeout(Duration::from_secs(1)) {
                    lines.push(line);
                }
                break status.code();
            }
            procs.check_alive();
            assert!(
                Instant::now() < deadline,
                "the rollout did not end within {ROLLOUT_PATIENCE:?}:\n{}",
                lines.join("\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        // Not asserted on: said so that the suite's time can be read from a run.
        eprintln!(
            "{}: the rollout took {:?}",
            self.scenario,
            Instant::now() - started
        );
        Some(Run {
            exit,
            lines,
            mesh,
            _procs: procs,
        })
    }
}

impl Run {
    fn output(&self) -> String {
        self.lines.join("\n")
    }

    fn count(&self, text: &str) -> usize {
        self.lines.iter().filter(|l| l.contains(text)).count()
    }

    /// The one line that starts with `prefix`.
    fn line(&self, prefix: &str) -> &str {
        let found: Vec<&String> = self
            .lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .collect();
        assert_eq!(found.len(), 1, "one `{prefix}` line:\n{}", self.output());
        found[0]
    }

    fn assert_promoted(&self) {
        assert_eq!(self.exit, Some(0), "promoted:\n{}", self.output());
        self.line("status: Succeeded weight 0");
        assert_eq!(self.count("RolledBack"), 0, "{}", self.output());
        let (_, workloads) = http(&self.mesh, "GET", "/workloads", "");
        assert!(workloads.contains(r#""canary_weight":0"#), "{workloads}");
    }

    fn assert_rolled_back_by(&self, metric: &str) {
        assert_eq!(self.exit, Some(1), "rolled back:\n{}", self.output());
        let rollback = self.line("event: Warning RolledBack");
        assert!(rollback.contains(metric), "by {metric}: {rollback}");
        // A query that reads nothing also fails a check naming the metric: not this.
        for unread in ["no values", "unreachable", "no data"] {
            assert!(
                !rollback.contains(unread),
                "by a reading of {metric}: {rollback}"
            );
        }
        self.line("status: Failed weight 0");
        assert_eq!(self.count("Succeeded"), 0, "{}", self.output());
        let (_, workloads) = http(&self.mesh, "GET", "/workloads", "");
        assert!(workloads.contains(r#""canary_weight":0"#), "{workloads}");
    }

    /// Rolled back by a threshold check of `metric` that measured a value within `expected`
    /// (`NAME VALUE% < MIN`), not by a reading that failed.
    fn assert_rolled_back_on_a_value(&self, metric: &str, expected: std::ops::Range<f64>) {
        self.assert_rolled_back_by(metric);
        let rollback = self.line("event: Warning RolledBack");
        let value = rollback
            .split(&format!("{metric} "))
            .nth(1)
            .and_then(|rest| rest.split('%').next())
            .and_then(|v| v.parse::<f64>().ok());
        assert!(
            value.is_some_and(|v| expected.contains(&v)),
            "{metric} measured within {expected:?}: {rollback}"
        );
    }
}

/// Requests the destination proxies of `canary` and of every workload reported, so far.
fn istio_requests(mesh: &str, canary: &str) -> (f64, f64) {
    let (status, text) = http(mesh, "GET", "/metrics", "");
    assert_eq!(status, 200, "{text}");
    let mut counted = (0.0, 0.0);
    for line in text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
    {
        if !line.contains(r#"reporter="destination""#) {
            continue;
        }
        let value: f64 = line
            .rsplit_once(' ')
            .and_then(|(_, v)| v.parse().ok())
            .expect("a sample");
        if line.contains(&format!(r#"destination_workload="{canary}""#)) {
            counted.0 += value;
        }
        counted.1 += value;
    }
    counted
}

/// The workspace's binaries, built once per test process by cargo and run from their
/// build's own copy (another package's binaries are not built for this test target).
fn binaries() -> &'static (PathBuf, PathBuf) {
    static BINARIES: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINARIES.get_or_init(|| {
        (
            support::sim_binary().to_path_buf(),
            workspace_binary("fledge-controller", "fledge-controller"),
        )
    })
}
