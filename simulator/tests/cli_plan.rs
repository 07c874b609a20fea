//! `fledge-sim plan`: exit codes and what it prints.

use std::process::Command;

fn fixture(name: &str) -> String {
    format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn plan(file: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fledge-sim"))
        .args(["plan", file])
        .output()
        .expect("fledge-sim runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plan_prints_each_step_and_the_shortest_time_to_promotion_for_a_flagger_canary() {
    let (code, out, err) = plan(&fixture("podinfo-canary.yaml"));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("canary: weights 10% -> 20% -> 30% -> 40% -> 50%"),
        "{out}"
    );
    assert!(out.contains("Advance podinfo canary weight 50%"), "{out}");
    assert!(
        out.contains("shortest time to promotion: 8m (5 analyses)"),
        "{out}"
    );
}

#[test]
fn plan_exits_2_and_lists_every_error_of_an_invalid_canary() {
    let (code, out, err) = plan(&fixture("bad-canary.yaml"));
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains("spec.analysis.stepWeights[2]: must be greater than the previous step (40)"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("  spec.")).count(),
        12,
        "{err}"
    );
}

#[test]
fn plan_exits_2_on_a_missing_file_or_a_file_without_a_canary() {
    let (code, _, err) = plan("/nonexistent/canary.yaml");
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/canary.yaml"), "{err}");
    let dir = std::env::temp_dir().join(format!("fledge-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("service.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n",
    )
    .unwrap();
    let (code, _, err) = plan(file.to_str().unwrap());
    assert_eq!(code, 2);
    assert!(err.contains("no Canary document"), "{err}");
}

#[test]
fn plan_reads_a_canary_file_starting_with_a_byte_order_mark_as_without_it() {
    let dir = std::env::temp_dir().join(format!("fledge-plan-bom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("canary.yaml");
    let file = file.to_str().unwrap();
    for fixture_name in ["podinfo-canary.yaml", "bad-canary.yaml"] {
        let text = std::fs::read_to_string(fixture(fixture_name)).unwrap();
        std::fs::write(file, format!("\u{feff}{text}")).unwrap();
        let with = plan(file);
        std::fs::write(file, &text).unwrap();
        let without = plan(file);
        assert_eq!(with, without, "{fixture_name}");
    }
}
