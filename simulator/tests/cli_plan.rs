//! `fledge-sim plan`: exit codes and what it prints.

mod support;

use std::process::Command;

fn fixture(name: &str) -> String {
    format!(
        "{}/../controller/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn plan(file: &str) -> (i32, String, String) {
    let out = Command::new(support::sim_binary())
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
    let file = fixture("bad-canary.yaml");
    let (code, out, err) = plan(&file);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains("spec.analysis.stepWeights[2]: must be greater than the previous step (40)"),
        "{err}"
    );
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with(&format!("  {file}:")))
            .count(),
        12,
        "{err}"
    );
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect(needle) + 1
}

#[test]
fn plan_errors_name_the_line_of_each_field_as_run_and_validate_do() {
    let file = fixture("bad-canary.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let (_, _, err) = plan(&file);
    for (needle, error) in [
        (
            "stepWeights:",
            "spec.analysis.stepWeights[2]: must be greater",
        ),
        ("port: 0", "spec.service.port: must be a port"),
        (
            "url: flagger-loadtester/",
            "spec.analysis.webhooks[0].url: ",
        ),
    ] {
        let expected = format!("  {file}:{}: {error}", line_of(&text, needle));
        assert!(err.contains(&expected), "{expected}\n{err}");
    }
    // Errors of the loader: a field of the wrong type, missing fields, a syntax error, each in
    // the second document.
    let dir = std::env::temp_dir().join(format!("fledge-plan-lines-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: []\n---\n";
    for (name, canary, needle, error) in [
        (
            "wrong-type.yaml",
            "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: x\nspec:\n  service:\n    port: 80\n  analysis:\n    maxWeight: lots\n",
            "maxWeight: lots",
            ": document 2 (Canary x): spec.analysis.maxWeight: invalid type",
        ),
        (
            "missing.yaml",
            "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: x\nspec:\n  analysis:\n    stepWeight: 10\n    maxWeight: 150\n",
            "maxWeight: 150",
            ": spec.analysis.maxWeight: must be between 1 and 100",
        ),
        (
            "syntax.yaml",
            "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: x\nspec:\n  analysis: [\n",
            "",
            ": document 2: not valid YAML",
        ),
    ] {
        let text = format!("{service}{canary}");
        let path = dir.join(name);
        std::fs::write(&path, &text).unwrap();
        let path = path.to_str().unwrap();
        let (code, _, err) = plan(path);
        assert_eq!(code, 2, "{err}");
        let line = if needle.is_empty() {
            text.lines().count() + 1
        } else {
            line_of(&text, needle)
        };
        let expected = format!("{path}:{line}{error}");
        assert!(err.contains(&expected), "{expected}\n{err}");
    }
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
        // The mark right before the first key (a comment first hides it from some parsers).
        let text: String = std::fs::read_to_string(fixture(fixture_name))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(file, format!("\u{feff}{text}")).unwrap();
        let with = plan(file);
        std::fs::write(file, &text).unwrap();
        let without = plan(file);
        assert_eq!(with, without, "{fixture_name}");
    }
}
