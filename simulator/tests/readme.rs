//! The READMEs' commands, as written. Every fenced block of `README.md` and
//! `scenarios/README.md` carries an info string from this vocabulary (anything else, or none,
//! fails the test):
//!
//! - `sh runnable`: shell commands that work here with only the Rust toolchain. The block runs
//!   as written, with `sh -e -c`, from the repository root, and must exit 0. A block of
//!   `cargo test ...` commands is the test command itself: it is listed as ignored, not run
//!   (it would run this test again); it must stand in a block of its own.
//! - `sh cluster`: commands that need a Kubernetes cluster (kubectl, helm); not run.
//! - `console runnable`: a transcript: `$ command` lines, each followed by the command's
//!   output. Each command runs from the repository root and its stdout must be the output
//!   shown, line by line (trailing spaces ignored), with the wall time masked (`in 0.054 s of
//!   wall time`). The command must exit 0, unless the last line of its output is `[exit N]`:
//!   then it must exit N (that line is not part of the output). A command starting with `fledge-sim` runs as
//!   `cargo run -q --bin fledge-sim -- ...`: the binary the README's first command builds.
//!   `cargo` in any command is the cargo running this test.
//! - `text`: output or a listing, shown only.
//! - `yaml`: a file's content, shown only.
//!
//! Why the READMEs use the dev profile: `cargo run --release` here would compile a release
//! build (several minutes on a 2-core machine) inside `cargo test`. The dev profile is
//! what `cargo test` builds anyway, and cargo holds no lock on the build directory while tests
//! run, so a nested `cargo run` neither deadlocks nor recompiles the dependencies it shares with
//! the tests. It is not free: `cargo test` enables the dev-dependencies' features (tokio's
//! `test-util` through tower-test, `std` in bitflags through proptest), so the tokio/kube stack
//! and the workspace crates exist in two variants, and the first nested `cargo run` after a
//! change compiles the changed workspace crates once more. Measured on the build machine:
//! nothing on an unchanged tree, about 15 s after a simulator change, 50 s after a controller
//! change (next to 4m48s for `cargo test --workspace` itself to rebuild), and this test's runs
//! take about 20 s (8 s of it the 1000-seed sweep of scenarios/README.md).
//!
//! The Makefile's `run` and `test` targets must be commands of README.md's runnable blocks.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use libtest_mimic::{Arguments, Failed, Trial};

const FILES: [&str; 2] = ["README.md", "scenarios/README.md"];

const VOCABULARY: [&str; 5] = [
    "sh runnable",
    "sh cluster",
    "console runnable",
    "text",
    "yaml",
];

/// The repository root, where the READMEs are and their commands run.
fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A fenced block: where it opens (1-based line), its info string and its text.
struct Block {
    file: &'static str,
    line: usize,
    info: String,
    text: String,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// A fence: three or more backticks or tildes; the rest of the line is the info string.
fn fence(line: &str) -> Option<(char, usize, &str)> {
    let c = line.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = line.len() - line.trim_start_matches(c).len();
    (n >= 3).then(|| (c, n, &line[n..]))
}

/// A block being read: its first line, its fence's indentation, character and length, its
/// info string and its lines so far.
type OpenBlock<'a> = (usize, usize, (char, usize), String, Vec<&'a str>);

/// The fenced blocks of a Markdown file (backtick or tilde fences, closed by a fence of the same
/// character at least as long; a fence may be indented, and its lines lose that indentation).
fn blocks(file: &'static str, markdown: &str) -> Result<Vec<Block>, String> {
    let mut out = Vec::new();
    let mut open: Option<OpenBlock> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match open.as_mut() {
            None => {
                if let Some((c, n, info)) = fence(trimmed) {
                    open = Some((i + 1, indent, (c, n), info.trim().to_string(), Vec::new()));
                }
            }
            Some((start, fence_indent, (c, n), info, lines)) => {
                if fence(trimmed.trim_end())
                    .is_some_and(|(d, m, rest)| d == *c && m >= *n && rest.is_empty())
                {
                    out.push(Block {
                        file,
                        line: *start,
                        info: std::mem::take(info),
                        text: lines.join("\n"),
                    });
                    open = None;
                } else {
                    let cut = line.len() - line.trim_start().len();
                    lines.push(&line[cut.min(*fence_indent)..]);
                }
            }
        }
    }
    match open {
        Some((start, ..)) => Err(format!("{file}:{start}: a fenced block that never closes")),
        None => Ok(out),
    }
}

fn read_blocks(file: &'static str) -> Result<Vec<Block>, String> {
    let path = root().join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    blocks(file, &text)
}

/// The commands of a shell block: its lines without blanks and comments.
fn commands(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn is_test_command(command: &str) -> bool {
    command == "cargo test" || command.starts_with("cargo test ")
}

/// `PATH` with the directory of the cargo running this test first, so that `cargo` in a README
/// command is that cargo (the same toolchain, hence the same build), even when it is not the
/// first `cargo` on the caller's `PATH`.
fn path_with_this_cargo() -> std::ffi::OsString {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut dirs: Vec<PathBuf> = Path::new(&cargo)
        .parent()
        .map(Path::to_path_buf)
        .into_iter()
        .collect();
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap_or_else(|_| std::env::var_os("PATH").unwrap_or_default())
}

fn sh(script: &str, exit_on_error: bool) -> Output {
    let mut command = Command::new("sh");
    if exit_on_error {
        command.arg("-e");
    }
    command
        .arg("-c")
        .arg(script)
        .env("PATH", path_with_this_cargo())
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start sh: {e}"))
}

/// The last `n` lines of a command's output, for a failure message.
fn tail(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn every_block_is_marked(file: &'static str) -> Result<(), Failed> {
    let bad: Vec<String> = read_blocks(file)?
        .iter()
        .filter(|b| !VOCABULARY.contains(&b.info.as_str()))
        .map(|b| {
            if b.info.is_empty() {
                format!("{}: a fenced block without an info string", b.at())
            } else {
                format!("{}: unknown info string `{}`", b.at(), b.info)
            }
        })
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\nmark every fenced block with one of: {}",
            bad.join("\n"),
            VOCABULARY.join(", ")
        )
        .into())
    }
}

fn runs_as_written(block: &Block) -> Result<(), Failed> {
    let out = sh(&block.text, true);
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{}: the block exited with {}:\n{}\n--- stdout (end)\n{}\n--- stderr (end)\n{}",
        block.at(),
        out.status,
        block.text,
        tail(&out.stdout, 20),
        tail(&out.stderr, 20)
    )
    .into())
}

/// `in 0.054 s of wall time` becomes `in <wall> s of wall time`.
fn mask_wall_time(line: &str) -> String {
    const UNIT: &str = " s of wall time";
    if let Some(end) = line.find(UNIT)
        && let Some(start) = line[..end].rfind(" in ").map(|i| i + " in ".len())
        && line[start..end].parse::<f64>().is_ok()
    {
        return format!("{}<wall>{}", &line[..start], &line[end..]);
    }
    line.to_string()
}

fn normalise(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(|l| mask_wall_time(l.trim_end())).collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

/// A transcript's command as it runs: `fledge-sim ...` through cargo, anything else as written.
fn as_run(command: &str) -> String {
    match command.strip_prefix("fledge-sim") {
        Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
            format!("cargo run -q --bin fledge-sim --{rest}")
        }
        _ => command.to_string(),
    }
}

/// The `$ command` lines of a transcript with the output shown after each.
fn transcript(block: &Block) -> Result<Vec<(String, String)>, String> {
    let mut steps: Vec<(String, String)> = Vec::new();
    for line in block.text.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push((command.trim().to_string(), String::new()));
        } else if let Some((_, shown)) = steps.last_mut() {
            shown.push_str(line);
            shown.push('\n');
        } else {
            return Err(format!(
                "{}: a transcript starts with a `$ command` line",
                block.at()
            ));
        }
    }
    if steps.is_empty() {
        return Err(format!("{}: a transcript without a command", block.at()));
    }
    Ok(steps)
}

/// The exit status a transcript shows for a command: `[exit N]` as the last line of its
/// output (then removed from it), or 0.
fn expected_status(shown: &mut Vec<String>) -> Result<i32, String> {
    let Some(code) = shown
        .last()
        .and_then(|l| l.strip_prefix("[exit ")?.strip_suffix(']'))
    else {
        return Ok(0);
    };
    let code = code
        .parse()
        .map_err(|_| format!("`{}`: expected `[exit N]`", shown[shown.len() - 1]))?;
    shown.pop();
    while shown.last().is_some_and(String::is_empty) {
        shown.pop();
    }
    Ok(code)
}

fn shows_the_real_output(block: &Block) -> Result<(), Failed> {
    for (command, shown) in transcript(block)? {
        let mut want = normalise(&shown);
        let status = expected_status(&mut want).map_err(|e| format!("{}: {e}", block.at()))?;
        let out = sh(&as_run(&command), false);
        let real = String::from_utf8_lossy(&out.stdout);
        let got = normalise(&real);
        if out.status.code() != Some(status) {
            return Err(format!(
                "{}: `$ {command}` (run as `{}`) exited with {}, the README shows exit {status} \
                 (write `[exit N]` as the last output line when a non-zero status is meant)\n\
                 --- stdout (end)\n{}\n--- stderr (end)\n{}",
                block.at(),
                as_run(&command),
                out.status,
                tail(&out.stdout, 20),
                tail(&out.stderr, 20)
            )
            .into());
        }
        if want == got {
            continue;
        }
        let first = want
            .iter()
            .zip(&got)
            .position(|(w, g)| w != g)
            .unwrap_or(want.len().min(got.len()));
        return Err(format!(
            "{}: `$ {command}` (run as `{}`, {}) does not print what the README shows; first \
             difference at output line {}:\n  shown: {}\n  real:  {}\n--- the real output\n{}\
             \n--- stderr (end)\n{}",
            block.at(),
            as_run(&command),
            out.status,
            first + 1,
            want.get(first).map_or("(nothing)", String::as_str),
            got.get(first).map_or("(nothing)", String::as_str),
            real.trim_end(),
            tail(&out.stderr, 20)
        )
        .into());
    }
    Ok(())
}

/// The recipe of a Makefile target (its tab-indented lines), with `$(VAR)` replaced by the
/// `VAR ?= value` defaults of the file.
fn recipe(makefile: &str, target: &str) -> Result<Vec<String>, String> {
    let defaults: Vec<(String, String)> = makefile
        .lines()
        .filter_map(|l| l.split_once("?="))
        .map(|(k, v)| (format!("$({})", k.trim()), v.trim().to_string()))
        .collect();
    let head = format!("{target}:");
    let lines: Vec<String> = makefile
        .lines()
        .skip_while(|l| !l.starts_with(&head))
        .skip(1)
        .take_while(|l| l.starts_with('\t'))
        .map(|l| {
            defaults
                .iter()
                .fold(l.trim().to_string(), |line, (k, v)| line.replace(k, v))
        })
        .collect();
    if lines.is_empty() {
        return Err(format!("Makefile: no recipe for `{target}`"));
    }
    Ok(lines)
}

fn make_targets_run_the_readme_commands() -> Result<(), Failed> {
    let makefile =
        std::fs::read_to_string(root().join("Makefile")).map_err(|e| format!("Makefile: {e}"))?;
    let readme: Vec<String> = read_blocks("README.md")?
        .iter()
        .filter(|b| b.info == "sh runnable")
        .flat_map(|b| commands(&b.text).map(str::to_string).collect::<Vec<_>>())
        .collect();
    for target in ["run", "test"] {
        for line in recipe(&makefile, target)? {
            if !readme.contains(&line) {
                return Err(format!(
                    "`make {target}` runs `{line}`, which is not a command of README.md's \
                     runnable blocks: {readme:?}"
                )
                .into());
            }
        }
    }
    Ok(())
}

/// The checker's own behaviour on made-up transcripts: a check that passes everything would
/// let every README through.
fn a_transcript_command_must_exit_with_the_status_shown() -> Result<(), Failed> {
    let block = |text: &str| Block {
        file: "(made up)",
        line: 1,
        info: "console runnable".into(),
        text: text.into(),
    };
    let failing = "$ sh -c 'echo out; exit 3'\nout\n";
    if shows_the_real_output(&block(failing)).is_ok() {
        return Err("a command exiting 3 passed without `[exit 3]` shown".into());
    }
    let shown = format!("{failing}[exit 3]\n");
    shows_the_real_output(&block(&shown)).map_err(|e| {
        format!(
            "a command exiting 3 with `[exit 3]` shown failed: {:?}",
            e.message()
        )
    })?;
    if shows_the_real_output(&block("$ echo out\nout\n[exit 1]\n")).is_ok() {
        return Err("a command exiting 0 passed with `[exit 1]` shown".into());
    }
    Ok(())
}

/// A `~~~` block is a block too: its commands must not escape the check.
fn a_tilde_fence_is_a_block_closed_by_its_own_kind() -> Result<(), Failed> {
    let found = blocks("(made up)", "~~~~ sh runnable\nfalse\n```\n~~~\n~~~~\n")?;
    match found.as_slice() {
        [b] if b.info == "sh runnable" && b.text == "false\n```\n~~~" => Ok(()),
        _ => Err(format!(
            "expected one `sh runnable` block of three lines, got {:?}",
            found.iter().map(|b| (&b.info, &b.text)).collect::<Vec<_>>()
        )
        .into()),
    }
}

fn trials() -> Vec<Trial> {
    let mut trials = vec![
        Trial::test(
            "readme.rs: a transcript command must exit with the status shown",
            a_transcript_command_must_exit_with_the_status_shown,
        ),
        Trial::test(
            "readme.rs: a tilde fence is a block closed by its own kind",
            a_tilde_fence_is_a_block_closed_by_its_own_kind,
        ),
    ];
    for file in FILES {
        trials.push(Trial::test(
            format!("{file}: every fenced block is marked runnable or not"),
            move || every_block_is_marked(file),
        ));
        let found = match read_blocks(file) {
            Ok(found) => found,
            Err(e) => {
                trials.push(Trial::test(
                    format!("{file}: parses"),
                    move || Err(e.into()),
                ));
                continue;
            }
        };
        for block in found {
            match block.info.as_str() {
                "sh runnable" => {
                    let all_tests = commands(&block.text).all(is_test_command);
                    let some_tests = commands(&block.text).any(is_test_command);
                    if all_tests && some_tests {
                        trials.push(
                            Trial::test(
                                format!("{}: the test command itself (not run)", block.at()),
                                || Ok(()),
                            )
                            .with_ignored_flag(true),
                        );
                    } else if some_tests {
                        let at = block.at();
                        trials.push(Trial::test(format!("{at}: runs as written"), move || {
                            Err(format!("{at}: put `cargo test` in a block of its own").into())
                        }));
                    } else {
                        trials.push(Trial::test(
                            format!("{}: runs as written", block.at()),
                            move || runs_as_written(&block),
                        ));
                    }
                }
                "console runnable" => trials.push(Trial::test(
                    format!("{}: shows the real output", block.at()),
                    move || shows_the_real_output(&block),
                )),
                _ => {}
            }
        }
    }
    trials.push(Trial::test(
        "Makefile: `make run` and `make test` run README.md's commands",
        make_targets_run_the_readme_commands,
    ));
    trials
}

fn main() {
    let args = Arguments::from_args();
    libtest_mimic::run(&args, trials()).exit();
}
