//! `fledge-sim ... | head -1`: a reader that went away is no reason to panic. Each command runs
//! with its stdout on a pipe whose reading end is closed before the command starts, so every
//! write fails (as after `head` has exited), whatever the timing.
#![cfg(unix)]

mod support;

use std::process::{Command, Stdio};

/// Runs `fledge-sim args` with stdout on a closed pipe; returns the exit code and stderr.
fn with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(support::sim_binary())
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("fledge-sim runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_plan_sweep_validate_and_bench_exit_normally_when_stdout_is_closed() {
    let cases: [(&[&str], i32); 6] = [
        (&["run", "scenarios/error-regression.yaml"], 0),
        (&["run", "scenarios/error-regression.yaml", "--json"], 0),
        (
            &["plan", "controller/tests/fixtures/podinfo-canary.yaml"],
            0,
        ),
        (&["sweep", "scenarios/low-traffic.yaml", "--seeds", "2"], 0),
        (&["validate", "scenarios/low-traffic.yaml"], 0),
        (&["bench", "--duration", "1s", "--rps", "10"], 0),
    ];
    for (args, code) in cases {
        let (status, stderr) = with_closed_stdout(args);
        assert!(
            !stderr.contains("panicked"),
            "fledge-sim {args:?}:\n{stderr}"
        );
        assert_eq!(status, Some(code), "fledge-sim {args:?}:\n{stderr}");
    }
}

/// Runs `fledge-sim args` with stdout and stderr on one closed pipe (`2>&1 | head` after
/// `head` has exited); returns the exit code.
fn with_closed_stdout_and_stderr(args: &[&str]) -> Option<i32> {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let status = Command::new(support::sim_binary())
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdin(Stdio::null())
        .stdout(writer.try_clone().expect("a second writer"))
        .stderr(writer)
        .status()
        .expect("fledge-sim runs");
    status.code()
}

#[test]
fn errors_and_warnings_on_a_closed_stderr_end_with_their_exit_code_not_a_panic() {
    let cases: [(&[&str], i32); 5] = [
        (&["run", "/nonexistent/scenario.yaml"], 2),
        (&["validate", "/nonexistent/scenario.yaml"], 2),
        (&["plan", "controller/tests/fixtures/bad-canary.yaml"], 2),
        (&["sweep", "/nonexistent/scenario.yaml"], 2),
        (&["bench", "--duration", "1s", "--rps", "10"], 0),
    ];
    for (args, code) in cases {
        assert_eq!(
            with_closed_stdout_and_stderr(args),
            Some(code),
            "fledge-sim {args:?}"
        );
    }
}
