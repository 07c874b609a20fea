//! What the CLI tests share: a small valid scenario, and running `fledge-sim` on files of a
//! test process's own directory.

// Each test binary uses a part of this.
#![allow(dead_code)]

pub mod live;
pub mod mesh;
pub mod scenario;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A small valid scenario; the bad-input tests each break one thing in it.
pub const BASE: &str = r#"name: cli-base
description: A healthy canary, short.
seed: 5
duration: 8m
namespace: test
service:
  name: podinfo
  primary:
    pods: 2
    latency: {p50: 10ms, p99: 40ms}
traffic:
  - client: frontend
    rate: 50
manifests: |
  apiVersion: networking.istio.io/v1beta1
  kind: DestinationRule
  metadata:
    name: podinfo
    namespace: test
  spec:
    host: podinfo
canary:
  apiVersion: flagger.app/v1beta1
  kind: Canary
  metadata:
    name: podinfo
    namespace: test
  spec:
    targetRef:
      apiVersion: apps/v1
      kind: Deployment
      name: podinfo
    service:
      port: 9898
    analysis:
      interval: 30s
      threshold: 2
      maxWeight: 30
      stepWeight: 10
      metrics:
        - name: request-success-rate
          thresholdRange:
            min: 99
          interval: 1m
timeline:
  - at: 30s
    deploy: {}
expect:
  outcome: promoted
"#;

/// A mesh without a Canary: `front` calls `back`; the name tests each break one thing in it.
pub const FRONT_BACK: &str = r#"name: mesh-alone
seed: 5
duration: 1m
services:
  - name: front
    versions:
      v1: {pods: 1, calls: [{service: back}]}
  - name: back
    versions:
      v1: {pods: 1}
traffic:
  - {client: user, service: front, rate: 10}
expect:
  clients:
    user: {min_success_rate: 99}
"#;

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// This build's `fledge-sim`: the hashed `deps/` copy of cargo's `CARGO_BIN_EXE_fledge-sim`, so a
/// build of another checkout sharing the target directory cannot swap the binary under a test.
pub fn sim_binary() -> &'static Path {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        let executable = PathBuf::from(env!("CARGO_BIN_EXE_fledge-sim"));
        built_copy(&executable, "fledge-sim").unwrap_or(executable)
    })
}

pub fn sim(args: &[&str]) -> Output {
    let out = Command::new(sim_binary())
        .args(args)
        .output()
        .expect("fledge-sim runs");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `text` to a file of this test process's own directory.
pub fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fledge-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write scenario");
    path
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// The path of the repository's `scenarios/<name>` (a file name with its extension).
pub fn scenario_file(name: &str) -> String {
    format!("{}/../scenarios/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `fledge-sim sweep --json ARGS`, which must exit 0: its summaries, one per variant.
pub fn sweep_json(args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["sweep", "--json"];
    all.extend_from_slice(args);
    let out = sim(&all);
    assert_eq!(out.code, 0, "{all:?}: {}", out.stderr);
    match serde_json::from_str(&out.stdout) {
        Ok(serde_json::Value::Array(v)) => v,
        other => panic!("{other:?}: {}", out.stdout),
    }
}

/// BASE with `from` replaced by `to` (which must be there).
pub fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no `{from}`");
    BASE.replacen(from, to, 1)
}

/// The 1-based line of the first line of `text` containing `needle`.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no `{needle}` in the text"))
        + 1
}

/// Runs `validate` and `run` on a bad scenario: both exit 2 and name the file, the line and
/// the field, with nothing on stdout from `run`.
pub fn assert_bad_input(name: &str, text: &str, line: usize, field: &str, message: &str) {
    let file = write(name, text);
    for command in ["validate", "run"] {
        let out = sim(&[command, path_str(&file)]);
        assert_eq!(out.code, 2, "{command} {name}: {}", out.stderr);
        let prefix = format!("{}:{line}: {field}: ", file.display());
        assert!(
            out.stderr.contains(&prefix),
            "{command} {name}: expected `{prefix}` in:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(message),
            "{command} {name}: expected `{message}` in:\n{}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        if command == "run" {
            assert!(out.stdout.is_empty(), "{}", out.stdout);
        }
    }
}

/// The file in `deps/` that cargo hard-linked to `executable`: named by this build's hash, it
/// stays this build's when another build of the workspace (another profile, another checkout
/// sharing the target directory) replaces `executable`.
#[cfg(unix)]
pub(crate) fn built_copy(executable: &Path, bin: &str) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(executable).ok()?.ino();
    let deps = executable.parent()?.join("deps");
    let prefix = format!("{}-", bin.replace('-', "_"));
    std::fs::read_dir(deps)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .find(|e| e.metadata().is_ok_and(|m| m.ino() == inode))
        .map(|e| e.path())
}

#[cfg(not(unix))]
pub(crate) fn built_copy(_: &Path, _: &str) -> Option<PathBuf> {
    None
}
