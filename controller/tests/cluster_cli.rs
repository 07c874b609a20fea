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
    let out = fledge(&["run", "--provider", "nginx", "--log-format", "text"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--provider"), "{err}");
    assert!(
        err.contains("unknown provider `nginx`; expected one of istio"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
