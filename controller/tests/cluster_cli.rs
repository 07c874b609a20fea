//! The binary's commands fail with a message, not a panic, when there is no cluster to talk to
//! or a flag is wrong.
#![cfg(feature = "cluster")]

use std::process::{Command, Output};

fn fledge(args: &[&str]) -> Output {
    let home = std::env::temp_dir().join("fledge-cli-test-home");
    let _ = std::fs::create_dir_all(&home);
    Command::new(env!("CARGO_BIN_EXE_fledge-controller"))
        .args(args)
        .env("HOME", &home)
        .env("KUBECONFIG", home.join("no-such-kubeconfig"))
        // A failure must still print one line, not main's Debug print with a backtrace.
        .env("RUST_BACKTRACE", "1")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .expect("fledge-controller runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn status_without_a_cluster_says_it_cannot_connect() {
    let out = fledge(&["status", "-n", "test"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("connecting to the cluster"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn promote_without_a_name_is_a_usage_error() {
    let out = fledge(&["promote"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("<NAME>"), "{}", stderr(&out));
}

#[test]
fn run_with_a_bad_log_level_names_the_flag() {
    let out = fledge(&["run", "--log-level", "info,["]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--log-level"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn run_with_an_unknown_provider_names_the_flag() {
    let out = fledge(&["run", "--provider", "envoy", "--log-format", "text"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--provider"), "{err}");
    assert!(
        err.contains("unknown provider `envoy`; expected one of istio"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// A flag value that is not usable is a configuration error like a malformed flag: exit 2, one
/// `error: ...` line naming the flag, no Debug print or backtrace from main.
fn assert_config_error(args: &[&str], names: &str) {
    let out = fledge(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(names), "{args:?}: {err}");
}

#[test]
fn every_configuration_error_exits_2_with_one_line_naming_the_flag() {
    assert_config_error(
        &["run", "--prometheus-address", "not a url"],
        "--prometheus-address not a url: ",
    );
    assert_config_error(&["run", "--log-level", "garbage=[["], "--log-level: ");
    assert_config_error(
        &["run", "--leader-elect", "--lease-duration-seconds", "0"],
        "--lease-duration-seconds 0: the lease duration must be at least 1 second",
    );
}

#[test]
fn the_help_of_the_controller_and_of_run_names_the_exit_codes() {
    for args in [&["--help"][..], &["run", "--help"]] {
        let out = fledge(args);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("Exit status: 0 ") && help.contains("2 a configuration error"),
            "{args:?}: {help}"
        );
    }
}
