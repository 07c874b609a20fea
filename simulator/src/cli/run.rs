//! `fledge-sim run` and `fledge-sim validate`.

use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{EXIT_BAD_INPUT, EXIT_EXPECTATION_FAILED};
use crate::engine::SimTime;
use crate::report;
use crate::result::{Outcome, RunResult};
use crate::scenario::Scenario;
use crate::{expect, harness, trace};

/// `--trace FILE` and its `--trace-filter`s.
pub(super) struct TraceArgs<'a> {
    pub(super) path: Option<&'a Path>,
    pub(super) filters: &'a [String],
}

/// `--access-log FILE`, `--traces FILE`, `--graph FILE` and `--sample F`.
#[derive(Default)]
pub(super) struct ObserveArgs<'a> {
    pub(super) access_log: Option<&'a Path>,
    pub(super) traces: Option<&'a Path>,
    pub(super) graph: Option<&'a Path>,
    pub(super) sample: Option<f64>,
}

pub(super) fn run(
    file: &Path,
    seed: Option<u64>,
    json: bool,
    report_file: Option<&Path>,
    trace_args: &TraceArgs<'_>,
    observe: &ObserveArgs<'_>,
) -> ExitCode {
    let filter = match trace::Filter::parse(trace_args.filters) {
        Ok(f) => f,
        Err(e) => {
            sayln!("error: --trace-filter: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let outputs = [
        ("--report", report_file),
        ("--trace", trace_args.path),
        ("--access-log", observe.access_log),
        ("--traces", observe.traces),
        ("--graph", observe.graph),
    ];
    if let Some(e) = shared_path(file, &outputs) {
        sayln!("error: {e}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let scenario = match Scenario::load(file) {
        Ok(s) => s,
        Err(e) => {
            sayln!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    warn(file, &scenario);
    // Before the simulation, which may take long: a report that cannot be written fails now.
    let mut report_out = match report_file.map(ReportFile::open).transpose() {
        Ok(r) => r,
        Err((path, e)) => {
            sayln!("error: --report {}: {e}", path.display());
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let mut tracer = match trace_args.path.map(|p| open_trace(p, filter)).transpose() {
        Ok(t) => t,
        Err(e) => {
            sayln!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let seed = seed.unwrap_or(scenario.seed);
    let opened = crate::observability::Outputs::open(
        seed,
        observe.access_log,
        observe.traces,
        observe.sample,
    )
    .and_then(|outputs| {
        let graph = observe
            .graph
            .map(|p| ReportFile::open(p).map_err(|(p, e)| format!("--graph {}: {e}", p.display())))
            .transpose()?;
        Ok((outputs, graph))
    });
    let (mut outputs, mut graph_out) = match opened {
        Ok(o) => o,
        Err(e) => {
            sayln!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    // Progress goes to stderr, and only to a terminal: stdout stays the timeline or JSON.
    let terminal = std::io::stderr().is_terminal();
    let mut runs: Vec<RunResult> = Vec::new();
    let mut walls: Vec<Duration> = Vec::new();
    for (index, variant) in scenario.variants.iter().enumerate() {
        let label = if variant.name.is_empty() {
            scenario.name.clone()
        } else {
            format!("{} [{}]", scenario.name, variant.name)
        };
        let started = Instant::now();
        let mut shown: Option<Instant> = None;
        let mut show = |done: SimTime| {
            let now = Instant::now();
            if !terminal || !progress_due(shown, now) {
                return;
            }
            if let Some(line) = progress_line(&label, done, scenario.duration, now - started) {
                say!("\r{line}\x1b[K");
                shown = Some(now);
            }
        };
        // Without a terminal nobody sees progress: no slices, no clock readings.
        let every = if terminal { PROGRESS_EVENTS } else { u64::MAX };
        if let Some(t) = &mut tracer {
            t.comment(&format!("{label} seed {seed}"));
        }
        if let Some(o) = &mut outputs {
            o.restart(seed, index);
        }
        let writers = harness::Writers {
            tracer: tracer.take(),
            outputs: outputs.take(),
        };
        let result = harness::run_written(&scenario, variant, seed, every, &mut show, writers).map(
            |(r, w)| {
                (tracer, outputs) = (w.tracer, w.outputs);
                expect::checked(r, &variant.expect)
            },
        );
        if shown.is_some() {
            // Clear the progress line before the timeline.
            say!("\r\x1b[K");
        }
        match result {
            Ok(r) => {
                walls.push(started.elapsed());
                runs.push(r);
            }
            Err(e) => {
                sayln!("error: {e}");
                return ExitCode::from(EXIT_BAD_INPUT);
            }
        }
    }
    if let (Some(t), Some(path)) = (&mut tracer, trace_args.path)
        && let Err(e) = t.finish()
    {
        sayln!("error: --trace {}: {e}", path.display());
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    if let Some(Err(e)) = outputs.as_mut().map(|o| o.finish()) {
        sayln!("error: {e}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    if let Some(out) = &mut graph_out
        && let Err(e) = out.write(&crate::observability::graph::dot(&runs))
    {
        sayln!("error: --graph {}: {e}", out.path.display());
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    if json {
        match serde_json::to_string_pretty(&runs) {
            Ok(text) => emit(&format!("{text}\n")),
            Err(e) => {
                sayln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        for (r, wall) in runs.iter().zip(&walls) {
            emit(&format!(
                "{}simulated {} ({} events) in {:.3} s of wall time\n\n",
                report::timeline(
                    r,
                    &scenario.description,
                    scenario
                        .variants
                        .iter()
                        .find(|v| v.name == r.variant)
                        .and_then(|v| v.spec.as_ref()),
                ),
                fledge_controller::spec::Duration(scenario.duration / crate::engine::MILLIS),
                r.events_processed,
                wall.as_secs_f64()
            ));
        }
        if runs.len() > 1 {
            emit(&format!("{}\n", compare(&runs)));
        }
    }
    if let Some(out) = &mut report_out {
        if let Err(e) = out.write(&report::html(&scenario, &runs)) {
            sayln!("error: --report {}: {e}", out.path.display());
            return ExitCode::from(EXIT_BAD_INPUT);
        }
        sayln!("report written to {}", out.path.display());
    }
    if runs.iter().all(RunResult::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_EXPECTATION_FAILED)
    }
}

/// Two outputs given one path (each writer would overwrite the other's bytes), or an output
/// given the scenario's own path: the error names both.
fn shared_path(scenario: &Path, outputs: &[(&str, Option<&Path>)]) -> Option<String> {
    // The file may not exist yet: its directory, resolved, and its name identify it.
    let key = |p: &Path| {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        p.file_name().map(|name| dir.join(name))
    };
    let given: Vec<(&str, &Path)> = outputs
        .iter()
        .filter_map(|(flag, p)| p.map(|p| (*flag, p)))
        .collect();
    for (i, (flag, path)) in given.iter().enumerate() {
        let Some(this) = key(path) else { continue };
        if key(scenario).as_ref() == Some(&this) {
            return Some(format!(
                "{flag} {} is the scenario file itself; give the output another path",
                path.display()
            ));
        }
        if let Some((other, _)) = given[..i]
            .iter()
            .find(|(_, p)| key(p).as_ref() == Some(&this))
        {
            return Some(format!(
                "{other} and {flag} are both {}: one file cannot hold two outputs; give each \
                 its own path",
                path.display()
            ));
        }
    }
    None
}

/// The `--trace` file, created before the run so that a path that cannot be written fails
/// at once; the error names the path.
fn open_trace(path: &Path, filter: trace::Filter) -> Result<Box<trace::Tracer>, String> {
    // Not a file named `-`; and stdout carries the run's summary.
    if path == Path::new("-") {
        return Err(
            "--trace -: the trace cannot go to stdout, which carries the run's summary: give it a file, e.g. --trace run.trace"
                .into(),
        );
    }
    let file =
        std::fs::File::create(path).map_err(|e| format!("--trace {}: {e}", path.display()))?;
    let out = std::io::BufWriter::with_capacity(1 << 16, file);
    Ok(Box::new(trace::Tracer::new(Box::new(out), filter)))
}

/// The `--report` file, opened before the run. A file this run created is removed again if
/// the run ends without writing it, so a run that fails leaves no empty report behind.
struct ReportFile {
    path: PathBuf,
    file: std::fs::File,
    created: bool,
    written: bool,
}

impl ReportFile {
    /// Opens `path` for writing without truncating it (an existing report stays until the
    /// new one is written); the error comes with the path.
    fn open(path: &Path) -> Result<ReportFile, (PathBuf, std::io::Error)> {
        let fail = |e| (path.to_path_buf(), e);
        let (file, created) = match OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => (
                OpenOptions::new()
                    .write(true)
                    .truncate(false)
                    .open(path)
                    .map_err(fail)?,
                false,
            ),
            Err(e) => return Err(fail(e)),
        };
        Ok(ReportFile {
            path: path.to_path_buf(),
            file,
            created,
            written: false,
        })
    }

    fn write(&mut self, html: &str) -> std::io::Result<()> {
        self.written = true;
        self.file.set_len(0)?;
        self.file.write_all(html.as_bytes())?;
        self.file.flush()
    }
}

impl Drop for ReportFile {
    fn drop(&mut self) {
        if self.created && !self.written {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A run shows its progress once it has taken this long: most finish before.
const PROGRESS_AFTER: Duration = Duration::from_secs(2);
/// How often the progress line is rewritten.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Simulated events between two looks at the clock within a tick: a few milliseconds of wall
/// time, so the line moves however long a tick takes, for a clock reading now and then.
const PROGRESS_EVENTS: u64 = 100_000;

/// Whether the progress line, last written at `shown`, is rewritten at `now`.
fn progress_due(shown: Option<Instant>, now: Instant) -> bool {
    shown.is_none_or(|t| now.saturating_duration_since(t) >= PROGRESS_EVERY)
}

/// `label: 35% of 2h simulated, about 12s left`, once the run has taken [`PROGRESS_AFTER`];
/// the estimate assumes the rest goes as fast as what is done.
fn progress_line(label: &str, done: SimTime, total: SimTime, elapsed: Duration) -> Option<String> {
    if elapsed < PROGRESS_AFTER || done == 0 || total == 0 {
        return None;
    }
    let fraction = (done as f64 / total as f64).min(1.0);
    let left = elapsed.as_secs_f64() * (1.0 - fraction) / fraction;
    Some(format!(
        "{label}: {:.0}% of {} simulated, about {} left",
        fraction * 100.0,
        fledge_controller::spec::Duration(total / crate::engine::MILLIS),
        fledge_controller::spec::Duration((left.ceil() as u64).max(1) * 1000)
    ))
}

/// The scenario's questionable input, once, on stderr (as `plan` shows a Canary's).
fn warn(file: &Path, scenario: &Scenario) {
    for w in &scenario.warnings {
        sayln!("warning: {}: {w}", file.display());
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error worth a panic.
pub(super) fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Variants side by side.
fn compare(runs: &[RunResult]) -> String {
    let mut out = format!(
        "{:<14} {:<12} {:>10} {:>12} {:>16}\n",
        "variant", "outcome", "decided", "max weight", "canary failures"
    );
    for r in runs {
        let decided = match (r.deployed_at_ms, r.decided_at_ms) {
            (Some(d), Some(t)) => fledge_controller::spec::Duration(t - d).to_string(),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<14} {:<12} {:>10} {:>11}% {:>16}\n",
            r.variant,
            Outcome::name(r.outcome),
            decided,
            r.max_canary_weight,
            r.failed_requests_canary
        ));
    }
    out
}

pub(super) fn validate(files: &[PathBuf]) -> ExitCode {
    let mut bad = false;
    for file in files {
        match Scenario::load(file) {
            Ok(s) => {
                warn(file, &s);
                emit(&format!(
                    "{}: ok ({}, {} variant{})\n",
                    file.display(),
                    s.name,
                    s.variants.len(),
                    if s.variants.len() == 1 { "" } else { "s" }
                ));
            }
            Err(e) => {
                bad = true;
                sayln!("error: {e}");
            }
        }
    }
    if bad {
        ExitCode::from(EXIT_BAD_INPUT)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SECONDS;

    #[test]
    fn the_progress_line_is_rewritten_at_most_every_quarter_second() {
        let now = Instant::now();
        assert!(progress_due(None, now), "the first look may show it");
        assert!(!progress_due(Some(now), now));
        assert!(!progress_due(Some(now), now + PROGRESS_EVERY / 2));
        assert!(progress_due(Some(now), now + PROGRESS_EVERY));
    }

    #[test]
    fn progress_shows_after_a_few_seconds_with_an_estimate_of_the_time_left() {
        let hour = 3600 * SECONDS;
        let quick = progress_line("x", hour / 2, hour, Duration::from_millis(1500));
        assert_eq!(quick, None, "a run that ends within seconds shows nothing");
        assert_eq!(
            progress_line("x [b]", hour / 4, hour, Duration::from_secs(3)).as_deref(),
            Some("x [b]: 25% of 1h simulated, about 9s left")
        );
        assert_eq!(
            progress_line("x", 9 * hour / 10, hour, Duration::from_secs(600)).as_deref(),
            Some("x: 90% of 1h simulated, about 1m7s left")
        );
    }
}
