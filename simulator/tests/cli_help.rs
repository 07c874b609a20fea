//! `fledge-sim <command> --help` ends with the command's exit codes and points to the scenario
//! documentation.

mod support;

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(support::sim_binary())
        .args(args)
        .arg("--help")
        .output()
        .expect("fledge-sim runs");
    assert_eq!(out.status.code(), Some(0), "{args:?} --help");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The codes listed under `Exit codes:`, one per line (`  2  bad input ...`).
fn exit_codes(help: &str) -> Vec<u8> {
    help.lines()
        .skip_while(|l| *l != "Exit codes:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("not an exit code line: `{l}`"))
        })
        .collect()
}

#[test]
fn every_command_help_names_exactly_the_exit_codes_it_uses_and_points_to_the_scenario_docs() {
    let cases: [(&[&str], &[u8]); 9] = [
        (&[], &[0, 1, 2]),
        (&["run"], &[0, 1, 2]),
        (&["validate"], &[0, 2]),
        (&["sweep"], &[0, 2]),
        (&["compare"], &[0, 2]),
        (&["merge"], &[0, 2]),
        (&["publish"], &[0, 1, 2]),
        (&["plan"], &[0, 2]),
        (&["bench"], &[0, 1, 2]),
    ];
    for (command, codes) in cases {
        let text = help(command);
        assert_eq!(
            exit_codes(&text),
            codes,
            "fledge-sim {command:?} --help:\n{text}"
        );
        assert!(
            text.contains("scenarios/README.md"),
            "fledge-sim {command:?} --help does not point to scenarios/README.md:\n{text}"
        );
    }
}

#[test]
fn the_documented_exit_code_2_is_what_a_bad_flag_gets() {
    for command in [
        "run", "validate", "sweep", "compare", "merge", "plan", "bench",
    ] {
        let out = Command::new(support::sim_binary())
            .args([command, "--no-such-flag"])
            .output()
            .expect("fledge-sim runs");
        assert_eq!(out.status.code(), Some(2), "{command} --no-such-flag");
    }
}
