//! The `fledge-sim` command line.

/// `eprint!` that ignores a stderr gone away (`fledge-sim ... 2>&1 | head`): nobody is left to
/// read the message, and a panic would only change the exit code.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// `eprintln!` that ignores a stderr gone away, as [`say!`].
macro_rules! sayln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod compare;
mod merge;
mod plan;
mod publish;
mod run;
mod serve;
mod sweep;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for input that cannot be used (a scenario or Canary that does not load, a bad flag).
pub(crate) const EXIT_BAD_INPUT: u8 = 2;
/// Exit code for a run whose expectations failed.
pub(crate) const EXIT_EXPECTATION_FAILED: u8 = 1;

/// The end of a help page: the command's exit codes, then where the file format is documented.
/// (`concat!` takes only literals, hence a macro rather than a function.)
macro_rules! after_help {
    ($($code:literal),+ $(,)?) => {
        concat!(
            "Exit codes:\n",
            $("  ", $code, "\n",)+
            "\nScenario files, their expectations and the exit codes are documented in \
             scenarios/README.md."
        )
    };
}

#[derive(Parser, Debug)]
#[command(
    name = "fledge-sim",
    version,
    about = "Rehearse Fledge rollouts in a simulated service mesh",
    after_help = after_help!(
        "0  success",
        "1  `run`: the scenario ran and an expectation failed",
        "2  bad input: a file that does not load, a Canary that does not validate, a bad flag",
    )
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scenario: print the timeline and check its expectations.
    #[command(after_help = format!("{}\n\n{}", crate::trace::LEGEND, after_help!(
        "0  every expectation of every variant held",
        "1  the scenario ran and an expectation failed (marked FAIL)",
        "2  bad input: the file does not load, the report, trace or an output cannot be written, or a \
         bad flag (such as a bad --trace-filter)",
    )))]
    #[command(group(clap::ArgGroup::new("sampled").args(["access_log", "traces"]).multiple(true)))]
    Run {
        file: PathBuf,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Print the result as JSON instead of the timeline.
        #[arg(long)]
        json: bool,
        /// Write a self-contained HTML report to this file.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Write one line per simulated event and controller decision to this file (legend
        /// below); the same seed writes the same bytes, and the results do not change.
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
        /// Keep only the trace lines whose field KEY equals VALUE (e.g. `pod=podinfo-canary-0`,
        /// `req=42`, `event=retry`); repeatable or comma-separated, all must hold.
        #[arg(long = "trace-filter", value_name = "KEY=VALUE", requires = "trace")]
        trace_filter: Vec<String>,
        /// Write an access log line per request, in the field order of Envoy's default
        /// format (see scenarios/README.md); streamed as the run goes.
        #[arg(long = "access-log", value_name = "FILE")]
        access_log: Option<PathBuf>,
        /// Write spans (a client span per request, a server span per attempt) as JSON lines in
        /// an OTLP-like shape; streamed as the run goes.
        #[arg(long, value_name = "FILE")]
        traces: Option<PathBuf>,
        /// Write the service graph (callers, versions, request and error rates, p99) as
        /// Graphviz DOT.
        #[arg(long, value_name = "FILE")]
        graph: Option<PathBuf>,
        /// The fraction of requests (0 to 1) written to the access log and the traces, chosen
        /// from the seed; default as Istio: every request in the access log, 1% in traces.
        #[arg(long, value_name = "F", value_parser = fraction, requires = "sampled")]
        sample: Option<f64>,
    },
    /// Check scenario files without running them.
    #[command(after_help = after_help!(
        "0  every file loads",
        "2  a file does not load (each error is printed), or a bad flag",
    ))]
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run a scenario over many seeds on all cores and report the distribution of outcomes.
    #[command(after_help = after_help!(
        "0  the sweep ran (runs whose expectations failed are counted, not an error)",
        "2  bad input: the file does not load, or a bad flag",
    ))]
    Sweep {
        file: PathBuf,
        /// Also sweep the scenario with the value at PATH set to each value in turn, as a
        /// variant named `PATH=V`: PATH is below the Canary's `spec` (`analysis.stepWeight`), or
        /// `KIND/NAME:PATH` a field of one of its manifests
        /// (`DestinationRule/NAME:spec.trafficPolicy.outlierDetection.consecutive5xxErrors`,
        /// list elements as `http[0]`). A value is JSON (a number, `true`) or else a string
        /// (`2m`). Repeatable: every combination of the values is run (at most 100).
        #[arg(long, value_name = "PATH=V1,V2,...")]
        vary: Vec<String>,
        /// Number of seeds (1..=N, or from --first-seed).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        seeds: u64,
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        /// Worker threads (default: all cores).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
        threads: Option<u64>,
        #[arg(long)]
        json: bool,
        /// Run only this shard of the seeds, `INDEX/COUNT` (INDEX from 0): a contiguous range,
        /// shard I taking seeds [I*N/COUNT, (I+1)*N/COUNT) of the N; see `merge`.
        #[arg(long, value_name = "INDEX/COUNT")]
        shard: Option<crate::seeds::Shard>,
        /// Write the runs (each seed's outcome) as partial results for `fledge-sim merge`; `-`
        /// writes them to stdout instead of the figures.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Run a scenario under several Canary policies over the same seeds and compare how they
    /// decide: promotions, rollbacks on evidence and at the deadline (with 95% intervals), time
    /// to the decision, and failed requests the canary served before it.
    #[command(after_help = after_help!(
        "0  the comparison ran",
        "2  bad input: the file or a policy does not load, or a bad flag",
    ))]
    Compare {
        file: PathBuf,
        /// A policy: `NAME=CANARY.yaml` (that Canary's analysis replaces the scenario's) or the
        /// built-in `flagger-default`; repeat for several. The scenario's own Canary is always
        /// compared, as `scenario`, and so are its variants. Default: `flagger-default`.
        #[arg(long = "policy", value_name = "NAME=CANARY.yaml")]
        policies: Vec<String>,
        /// Also compare the scenario with the value at PATH set to each value in turn, named
        /// `PATH=V`: PATH is below the Canary's `spec` (`analysis.stepWeight`), or
        /// `KIND/NAME:PATH` a field of one of its manifests
        /// (`DestinationRule/NAME:spec.trafficPolicy.outlierDetection.consecutive5xxErrors`).
        /// A value is JSON (a number, `true`) or else a string (`2m`). Repeatable: each flag's
        /// values are compared one by one (not combined).
        #[arg(long, value_name = "PATH=V1,V2,...")]
        vary: Vec<String>,
        /// Number of seeds (1..=N, or from --first-seed).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        seeds: u64,
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        /// Worker threads (default: all cores); the figures do not depend on it.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
        threads: Option<u64>,
        /// An object keyed by policy name; rates as fractions.
        #[arg(long)]
        json: bool,
        /// A Markdown table, a row per policy.
        #[arg(long, conflicts_with = "json")]
        markdown: bool,
        /// Run only this shard of the seeds, `INDEX/COUNT` (INDEX from 0): a contiguous range,
        /// shard I taking seeds [I*N/COUNT, (I+1)*N/COUNT) of the N; see `merge`.
        #[arg(long, value_name = "INDEX/COUNT")]
        shard: Option<crate::seeds::Shard>,
        /// Write the runs (each seed's outcome) as partial results for `fledge-sim merge`; `-`
        /// writes them to stdout instead of the figures.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Combine the partial results of a sharded `sweep` or `compare` (`--shard I/N --out FILE`,
    /// every shard once) into the figures of one run over all the seeds, printed as that run
    /// prints them (`--json` byte for byte).
    #[command(after_help = after_help!(
        "0  merged; the figures are printed",
        "2  a file does not load, is not partial results of this fledge-sim version, is \
         of another run (scenario, policies, seeds), or a shard is missing or given twice; \
         or a bad flag",
    ))]
    Merge {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
        /// A Markdown table (the results of `compare` only).
        #[arg(long, conflicts_with = "json")]
        markdown: bool,
        /// Also write a plot of each policy's rollback rate and median time to the decision,
        /// with their 95% intervals, as SVG (the results of `compare` only).
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// Render the benchmark table of a README (between its `<!-- benchmarks: begin ...` and
    /// `<!-- benchmarks: end -->` lines) and its SVG plot from the results of `compare --out`,
    /// one complete run per file, the cases in the order given.
    #[command(after_help = after_help!(
        "0  rendered (with --check: the README and the plot are what the results render)",
        "1  --check: the README or the plot differs from what the results render",
        "2  a file does not load, is not the complete results of `compare`, or the README \
         has no generated section; or a bad flag",
    ))]
    Publish {
        #[arg(required = true, value_name = "RESULTS")]
        files: Vec<PathBuf>,
        /// The README whose generated section holds the table.
        #[arg(long, value_name = "FILE")]
        readme: PathBuf,
        /// The plot.
        #[arg(long, value_name = "FILE")]
        svg: PathBuf,
        /// Change nothing; exit 1 when the README or the plot is not what the results render.
        #[arg(long)]
        check: bool,
    },
    /// Print the steps a Canary's rollout would take if everything went well.
    #[command(after_help = after_help!(
        "0  every Canary in the file validates; its plan is printed",
        "2  the file does not load or a Canary does not validate (every error is printed), \
         or a bad flag",
    ))]
    Plan {
        /// A YAML file with one or more Canary documents (fledge.dev or flagger.app).
        file: PathBuf,
        /// Statistical judge: also forecast the rollout at this many requests per second to
        /// the service: the canary requests each step needs, how long each step and the
        /// rollout should take, and a warning if the progress deadline is too short.
        #[arg(long, value_name = "RATE")]
        rps: Option<f64>,
        /// With --rps: the error rate both sides are assumed to have, in percent.
        #[arg(long, value_name = "PERCENT", default_value_t = 0.5, requires = "rps")]
        error_rate: f64,
        /// With --rps: both sides' latency, log-normal with this median and p99 in
        /// milliseconds (`20,80`), in Istio's default buckets. Without it, latency metrics
        /// are not forecast (the forecast says so).
        #[arg(long, value_name = "P50,P99", requires = "rps")]
        latency: Option<String>,
    },
    /// Run a scenario's mesh in wall-clock time for a controller outside the process: its
    /// telemetry on `/metrics` for Prometheus, and an HTTP API that takes routing objects
    /// (`/objects`) and scale and promote requests (`/workloads`). The timeline plays as in
    /// `run`; the rollout is left to the controller. The API is documented in the README.
    #[command(after_help = after_help!(
        "2  bad input: the scenario does not load, the address cannot be listened on, or a bad flag",
        "1  the simulation stopped after an internal error",
    ))]
    Serve {
        file: PathBuf,
        /// The address to serve on; port 0 takes a free port (printed on stdout).
        #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDRESS:PORT")]
        listen: String,
        /// Simulated seconds per wall-clock second.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Measure the simulator on the reference mesh (10 pods, retries, outlier detection, mTLS).
    #[command(after_help = after_help!(
        "0  measured; the figures are printed",
        "1  the reference run failed",
        "2  a bad flag",
    ))]
    #[command(group(clap::ArgGroup::new("sampled").args(["access_log", "traces"]).multiple(true)))]
    Bench {
        /// Simulated duration, e.g. `1h`, `24h`.
        #[arg(long, default_value = "1h")]
        duration: String,
        /// Client requests per simulated second.
        #[arg(long, default_value_t = 1000.0)]
        rps: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the access log while measuring, as `run --access-log` does (its cost).
        #[arg(long = "access-log", value_name = "FILE")]
        access_log: Option<PathBuf>,
        /// Write spans while measuring, as `run --traces` does (their cost).
        #[arg(long, value_name = "FILE")]
        traces: Option<PathBuf>,
        /// The fraction of requests written, as `run --sample`.
        #[arg(long, value_name = "F", value_parser = fraction, requires = "sampled")]
        sample: Option<f64>,
        /// Model the sidecars' cost (latency drawn per proxy, CPU, worker threads) on every
        /// proxy of the reference mesh.
        #[arg(long)]
        sidecar_cost: bool,
    },
}

/// Runs the CLI and returns the process exit code.
pub(crate) fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_BAD_INPUT } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Run {
            file,
            seed,
            json,
            report,
            trace,
            trace_filter,
            access_log,
            traces,
            graph,
            sample,
        } => run::run(
            &file,
            seed,
            json,
            report.as_deref(),
            &run::TraceArgs {
                path: trace.as_deref(),
                filters: &trace_filter,
            },
            &run::ObserveArgs {
                access_log: access_log.as_deref(),
                traces: traces.as_deref(),
                graph: graph.as_deref(),
                sample,
            },
        ),
        Command::Validate { files } => run::validate(&files),
        Command::Sweep {
            file,
            vary,
            seeds,
            first_seed,
            threads,
            json,
            shard,
            out,
        } => sweep::sweep(
            &file,
            first_seed,
            seeds,
            threads.map(|t| t as usize),
            json,
            &sweep::Sharding {
                shard,
                out: out.as_deref(),
            },
            &vary,
        ),
        Command::Compare {
            file,
            policies,
            vary,
            seeds,
            first_seed,
            threads,
            json,
            markdown,
            shard,
            out,
        } => compare::run(&compare::CompareArgs {
            file: &file,
            policies: &policies,
            vary: &vary,
            seeds,
            first_seed,
            threads: threads.map(|t| t as usize),
            json,
            markdown,
            shard,
            out: out.as_deref(),
        }),
        Command::Merge {
            files,
            json,
            markdown,
            svg,
        } => merge::run(&files, json, markdown, svg.as_deref()),
        Command::Publish {
            files,
            readme,
            svg,
            check,
        } => publish::run(&publish::PublishArgs {
            files: &files,
            readme: &readme,
            svg: &svg,
            check,
        }),
        Command::Plan {
            file,
            rps,
            error_rate,
            latency,
        } => plan::run(&file, rps, error_rate, latency.as_deref()),
        Command::Serve {
            file,
            listen,
            speed,
            seed,
        } => serve::run(&file, &listen, speed, seed),
        Command::Bench {
            duration,
            rps,
            seed,
            access_log,
            traces,
            sample,
            sidecar_cost,
        } => bench(
            &duration,
            rps,
            seed,
            crate::bench::Written {
                access_log,
                traces,
                sample,
            },
            sidecar_cost,
        ),
    }
}

/// `--sample`: a fraction from 0 to 1.
fn fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!(
            "`{text}` is not a fraction from 0 to 1 (e.g. 0.01)"
        )),
    }
}

fn bench(
    duration: &str,
    rps: f64,
    seed: u64,
    outputs: crate::bench::Written,
    sidecar_cost: bool,
) -> ExitCode {
    let Some(duration) = fledge_controller::spec::parse_nanos(duration)
        .ok()
        .filter(|d| *d > 0)
    else {
        sayln!("error: --duration: `{duration}` is not a duration such as `1h` or `30m`");
        return ExitCode::from(EXIT_BAD_INPUT);
    };
    if !(rps.is_finite() && rps > 0.0) {
        sayln!("error: --rps: must be a positive number, got {rps}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    sayln!(
        "reference mesh: 1 client, primary + canary, 10 pods, LEAST_REQUEST, outlier detection, retries, mTLS; {rps} rps{}",
        if sidecar_cost {
            "; sidecar cost modelled"
        } else {
            ""
        }
    );
    match crate::bench::bench(&crate::bench::BenchOptions {
        seed,
        rps,
        duration,
        outputs,
        sidecar_cost,
    }) {
        Ok(report) => {
            run::emit(&format!("{report}\n"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            sayln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
