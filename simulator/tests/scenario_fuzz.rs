//! The scenario loader on generated documents: the library's scenarios with lines deleted,
//! duplicated, re-indented or replaced and values swapped for odd ones, and random YAML. It
//! never panics: every document either loads (and then runs, shortened, without panicking) or
//! is rejected with an error that names the file and a field.

use std::path::{Path, PathBuf};

use fledge_simulator::engine::SECONDS;
use fledge_simulator::scenario::{Event, RateShape, Scenario};
use fledge_simulator::{expect, harness};
use proptest::prelude::*;

const FILE: &str = "fuzz/scenario.yaml";

fn library() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("scenario text"))
        .collect()
}

#[derive(Clone, Debug)]
enum Mutation {
    Delete(usize),
    Duplicate(usize),
    Indent(usize, bool),
    ReplaceLine(usize, String),
    ReplaceValue(usize, String),
}

/// Values that stress parsers and checks.
const ODD_VALUES: &[&str] = &[
    "0",
    "-1",
    "1e309",
    "-1e309",
    ".nan",
    "~",
    "[]",
    "{}",
    "\"\"",
    "18446744073709551616",
    "4294967296",
    "abc",
    "0s",
    "-5m",
    "1h30m",
    "999999h",
    "true",
    "[1, 2",
    "{a: b}",
    "|",
    "100",
    "0.0",
    "1.5",
    "canary",
    "primary",
    "promoted",
    "*anchor",
    "&a x",
    "!!binary aGVsbG8=",
    "'quoted'",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let value = prop_oneof![
        proptest::sample::select(ODD_VALUES).prop_map(str::to_string),
        "[a-z0-9:.\\-{}\\[\\], ]{0,12}",
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Duplicate),
        (any::<usize>(), any::<bool>()).prop_map(|(i, d)| Mutation::Indent(i, d)),
        (any::<usize>(), "\\PC{0,40}").prop_map(|(i, s)| Mutation::ReplaceLine(i, s)),
        (any::<usize>(), value).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for m in mutations {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match m {
            Mutation::Delete(i) => {
                lines.remove(i % n);
            }
            Mutation::Duplicate(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Mutation::Indent(i, deeper) => {
                let l = &mut lines[i % n];
                if *deeper {
                    l.insert_str(0, "  ");
                } else if let Some(rest) = l.strip_prefix("  ") {
                    *l = rest.to_string();
                }
            }
            Mutation::ReplaceLine(i, s) => lines[i % n] = s.clone(),
            Mutation::ReplaceValue(i, v) => {
                let l = &mut lines[i % n];
                if let Some(colon) = l.find(": ") {
                    l.truncate(colon + 2);
                    l.push_str(v);
                }
            }
        }
    }
    lines.join("\n")
}

/// Random YAML documents: nested maps, lists and scalars, some with the scenario's keys.
fn yaml_value() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        proptest::sample::select(
            &[
                "name", "duration", "service", "traffic", "canary", "timeline", "expect",
                "variants", "primary", "rate", "client", "at", "deploy", "spec", "analysis",
            ][..]
        )
        .prop_map(str::to_string),
        "[a-z_]{1,8}",
    ];
    let leaf = prop_oneof![
        proptest::sample::select(ODD_VALUES).prop_map(str::to_string),
        "[a-z0-9 ]{0,10}",
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| format!("{x:?}")),
    ];
    leaf.prop_recursive(4, 40, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            proptest::collection::vec((key.clone(), inner), 0..6).prop_map(|pairs| {
                let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
        ]
    })
}

/// Loads `text`; a scenario that loads is run, shortened and slowed so a case stays quick.
fn check(text: &str, run: bool) -> Result<(), TestCaseError> {
    match Scenario::parse(text, Path::new(FILE)) {
        Ok(mut s) => {
            if run {
                s.duration = s.duration.min(90 * SECONDS);
                for c in &mut s.clients {
                    c.rate = c.rate.min(20.0);
                    match &mut c.shape {
                        RateShape::Ramp { to, .. } => *to = to.min(20.0),
                        RateShape::Bursts { factor, .. } => *factor = factor.min(2.0),
                        _ => {}
                    }
                }
                for e in &mut s.timeline {
                    if let Event::Rate { rps, .. } = &mut e.event {
                        *rps = rps.min(20.0);
                    }
                }
                for v in &s.variants {
                    let r = harness::run(&s, v, s.seed)
                        .map(|r| expect::checked(r, &v.expect))
                        .map_err(|e| {
                            TestCaseError::fail(format!("a loaded scenario did not run: {e}"))
                        })?;
                    // A scenario states what must happen, and every statement is checked.
                    prop_assert!(
                        !r.checks.is_empty() || v.expect == Default::default(),
                        "a run of a loaded scenario produced no checks"
                    );
                }
            }
            Ok(())
        }
        Err(e) => {
            prop_assert!(e.file.starts_with("fuzz/"), "error names no file: {e}");
            // Only an error about the whole file (empty, unreadable) names no field or line.
            prop_assert!(
                !e.field.is_empty() || e.line.is_none(),
                "error names no field: {e}"
            );
            prop_assert!(e.to_string().starts_with("fuzz/"), "{e}");
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn mutated_library_scenarios_load_or_are_rejected_with_file_and_field(
        pick in any::<usize>(),
        mutations in proptest::collection::vec(mutation(), 1..4),
        run in proptest::bool::weighted(0.2),
    ) {
        let library = library();
        let text = apply(&library[pick % library.len()], &mutations);
        check(&text, run)?;
    }

    #[test]
    fn random_yaml_is_rejected_with_file_and_field(doc in yaml_value()) {
        check(&doc, false)?;
    }

    #[test]
    fn arbitrary_text_is_rejected_with_file_and_field(text in "\\PC{0,300}") {
        check(&text, false)?;
    }
}
