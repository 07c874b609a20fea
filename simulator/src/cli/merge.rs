//! Partial results of a sharded `sweep` or `compare` (`--shard I/N --out FILE`), and
//! `fledge-sim merge`, which combines the shards into the figures of one run.
//!
//! A partial results file is one JSON object: a header saying which run it is part of (the
//! command, the scenario, a fingerprint of the scenario and policy files, the seeds, the
//! shard), then each policy's or variant's runs, one per seed with its outcome. Shards are
//! contiguous ranges of the seeds ([`Shard`]), so the runs of shards 0 to N-1 in order are the
//! runs of the whole, and the figures are computed from them exactly as one run computes them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::EXIT_BAD_INPUT;
use super::compare::Format;
use crate::seeds::{Seeds, Shard};

/// What the file's `format` says, and the version of the layout this binary writes and reads.
const FORMAT: &str = "fledge-sim partial results";
const VERSION: u64 = 1;
/// Files larger than this are not partial results this binary wrote (1M seeds of 8 policies
/// are about 700 MB; refuse before reading a disk image by mistake).
const MAX_BYTES: u64 = 2 << 30;

/// Which run a shard is part of; every shard of one run has the same header but `shard`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Header {
    pub(crate) format: String,
    pub(crate) version: u64,
    /// The fledge-sim that ran the shard: shards of different builds are not one run.
    pub(crate) fledge_sim: String,
    /// `sweep` or `compare`.
    pub(crate) command: String,
    pub(crate) scenario: String,
    /// FNV-1a of the scenario file and of each policy's name and Canary file.
    pub(crate) inputs: String,
    pub(crate) first_seed: u64,
    pub(crate) seeds: u64,
    pub(crate) shard: Shard,
    /// The policies (compare) or variants (sweep), in order.
    pub(crate) names: Vec<String>,
}

/// One seed's outcome.
#[derive(Serialize, Deserialize)]
struct Run<T> {
    seed: u64,
    #[serde(flatten)]
    tally: T,
}

#[derive(Serialize, Deserialize)]
struct Partial<T> {
    #[serde(flatten)]
    header: Header,
    /// Per name, its runs in seed order.
    runs: Vec<Vec<Run<T>>>,
}

impl Header {
    pub(super) fn new(
        command: &str,
        scenario: &str,
        inputs: &Fingerprint,
        seeds: &Seeds,
        shard: Shard,
    ) -> Header {
        Header {
            format: FORMAT.to_string(),
            version: VERSION,
            fledge_sim: env!("CARGO_PKG_VERSION").to_string(),
            command: command.to_string(),
            scenario: scenario.to_string(),
            inputs: format!("{:016x}", inputs.0),
            first_seed: seeds.first,
            seeds: seeds.count,
            shard,
            names: Vec::new(),
        }
    }
}

/// FNV-1a over the run's input files: stable across builds and machines, unlike std's hasher.
pub(super) struct Fingerprint(u64);

impl Fingerprint {
    pub(super) fn new() -> Fingerprint {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }

    pub(super) fn add(&mut self, bytes: &[u8]) -> &mut Fingerprint {
        // The length first, so that ("ab", "c") and ("a", "bc") differ.
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self
    }
}

/// `--out -`: the partial results go to stdout, in place of the figures (a pod's log is its
/// output).
pub(super) fn to_stdout(out: &Path) -> bool {
    out == Path::new("-")
}

/// Writes a shard's partial results: `runs` holds each name's tallies in seed order.
pub(super) fn write<T: Serialize>(
    file: &Path,
    mut header: Header,
    runs: &[(String, Vec<T>)],
    seeds: &Seeds,
) -> Result<(), String> {
    header.names = runs.iter().map(|(name, _)| name.clone()).collect();
    let partial = Partial {
        header,
        runs: runs
            .iter()
            .map(|(_, tallies)| {
                tallies
                    .iter()
                    .enumerate()
                    .map(|(i, tally)| Run {
                        seed: seeds.seed(i as u64),
                        tally,
                    })
                    .collect()
            })
            .collect(),
    };
    let text = serde_json::to_string(&partial).map_err(|e| e.to_string())? + "\n";
    if to_stdout(file) {
        super::run::emit(&text);
        return Ok(());
    }
    std::fs::write(file, text).map_err(|e| format!("--out {}: {e}", file.display()))
}

/// The merged runs of every shard: the header of shard 0 and each name's tallies in seed order.
pub(super) type Merged<T> = (Header, Vec<(String, Vec<T>)>);

/// Reads the header of every file, checks they are the shards of one run, each exactly once,
/// and merges their runs. Every error names the file.
pub(super) fn merge<T: DeserializeOwned>(
    files: &[(PathBuf, serde_json::Value)],
) -> Result<Merged<T>, String> {
    let mut shards: Vec<Option<(&Path, Partial<T>)>> = Vec::new();
    let mut first: Option<(&Path, Header)> = None;
    for (file, value) in files {
        let shown = file.display();
        let partial: Partial<T> = serde_json::from_value(value.clone())
            .map_err(|e| format!("{shown}: not partial results of this fledge-sim: {e}"))?;
        let header = &partial.header;
        let (first_file, first_header) = first.get_or_insert_with(|| (file, header.clone()));
        let same = |what: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
            format!(
                "{shown}: {what} {a:?} differs from {b:?} in {}: not shards of one run",
                first_file.display()
            )
        };
        let ours = |h: &Header| {
            (
                h.fledge_sim.clone(),
                h.command.clone(),
                h.scenario.clone(),
                h.inputs.clone(),
                h.first_seed,
                h.seeds,
                h.shard.count,
                h.names.clone(),
            )
        };
        if ours(header) != ours(first_header) {
            let (a, b) = (header, &*first_header);
            return Err(if a.fledge_sim != b.fledge_sim {
                same("fledge-sim version", &a.fledge_sim, &b.fledge_sim)
            } else if a.command != b.command {
                same("command", &a.command, &b.command)
            } else if a.scenario != b.scenario || a.inputs != b.inputs {
                same(
                    "scenario or policy files",
                    &(&a.scenario, &a.inputs),
                    &(&b.scenario, &b.inputs),
                )
            } else if a.names != b.names {
                same("policies", &a.names, &b.names)
            } else {
                same(
                    "seeds (first, count, shards)",
                    &(a.first_seed, a.seeds, a.shard.count),
                    &(b.first_seed, b.seeds, b.shard.count),
                )
            });
        }
        shards.resize_with(header.shard.count as usize, || None);
        let index = header.shard.index as usize;
        if let Some((other, _)) = &shards[index] {
            return Err(format!(
                "{shown}: shard {} is also {}",
                header.shard,
                other.display()
            ));
        }
        // The runs must be exactly this shard's seeds: a file edited or cut short is not.
        let expected = header.shard.of(&whole(header));
        let seeds_ok = partial.runs.len() == header.names.len()
            && partial.runs.iter().all(|runs| {
                runs.len() as u64 == expected.count
                    && runs
                        .iter()
                        .enumerate()
                        .all(|(i, r)| r.seed == expected.seed(i as u64))
            });
        if !seeds_ok {
            return Err(format!(
                "{shown}: its runs are not the {} seeds of shard {} from seed {}",
                expected.count, header.shard, expected.first
            ));
        }
        shards[index] = Some((file, partial));
    }
    let n = shards.len();
    let (given, missing): (Vec<_>, Vec<_>) =
        shards.iter().enumerate().partition(|(_, s)| s.is_some());
    if !missing.is_empty() {
        let missing: Vec<String> = missing.iter().map(|(i, _)| format!("{i}/{n}")).collect();
        let given: Vec<String> = given
            .iter()
            .filter_map(|(i, s)| {
                s.as_ref()
                    .map(|(f, _)| format!("{i}/{n} in {}", f.display()))
            })
            .collect();
        return Err(format!(
            "shard {} missing; given: {}",
            missing.join(", "),
            given.join(", ")
        ));
    }
    let (_, header) = first.ok_or("no files to merge")?;
    let mut runs: Vec<(String, Vec<T>)> = header
        .names
        .iter()
        .map(|n| (n.clone(), Vec::new()))
        .collect();
    for (_, partial) in shards.into_iter().flatten() {
        for (into, from) in runs.iter_mut().zip(partial.runs) {
            into.1.extend(from.into_iter().map(|r| r.tally));
        }
    }
    Ok((header, runs))
}

/// `fledge-sim merge FILE... [--json]`: the figures of the run the files are the shards of,
/// printed as that run prints them; `svg` (the results of `compare` only) is where to write
/// their plot.
pub(super) fn run(files: &[PathBuf], json: bool, markdown: bool, svg: Option<&Path>) -> ExitCode {
    let mut read = Vec::with_capacity(files.len());
    for file in files {
        match read_value(file) {
            Ok(v) => read.push((file.clone(), v)),
            Err(e) => {
                sayln!("error: {}: {e}", file.display());
                return ExitCode::from(EXIT_BAD_INPUT);
            }
        }
    }
    // The command decides the layout of the runs; the first file's is checked against every
    // other file's in `merge`.
    let command = read[0].1["command"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let done = match command.as_str() {
        "compare" => merge(&read).and_then(|(h, runs)| {
            if let Some(svg) = svg {
                let plot = crate::report::benchmarks::svg(&[(h.scenario.clone(), runs.clone())]);
                std::fs::write(svg, plot).map_err(|e| format!("--svg {}: {e}", svg.display()))?;
            }
            let format = match (markdown, json) {
                (true, _) => Format::Markdown,
                (_, true) => Format::Json,
                _ => Format::Text,
            };
            super::compare::print(&h.scenario, &whole(&h), &runs, format, &merged(&h));
            Ok(())
        }),
        "sweep" if markdown || svg.is_some() => Err(format!(
            "{}: --markdown and --svg are for the results of `compare`, these are of `sweep`",
            read[0].0.display()
        )),
        "sweep" => merge(&read)
            .map(|(h, runs)| super::sweep::print(&h.scenario, &whole(&h), runs, json, &merged(&h))),
        other => Err(format!(
            "{}: command `{other}` is neither `sweep` nor `compare`",
            read[0].0.display()
        )),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            sayln!("error: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn whole(h: &Header) -> Seeds {
    Seeds {
        first: h.first_seed,
        count: h.seeds,
        threads: 1,
        progress: false,
    }
}

fn merged(h: &Header) -> String {
    format!(
        "merged from {} shard{}",
        h.shard.count,
        if h.shard.count == 1 { "" } else { "s" }
    )
}

/// The file as JSON, with its format and version checked.
pub(super) fn read_value(file: &Path) -> Result<serde_json::Value, String> {
    let size = std::fs::metadata(file).map_err(|e| e.to_string())?.len();
    if size > MAX_BYTES {
        return Err(format!("{size} bytes: too large for partial results"));
    }
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    if value["format"] != FORMAT {
        return Err(format!(
            "not {FORMAT} (written by `fledge-sim sweep|compare --out`)"
        ));
    }
    match value["version"].as_u64() {
        Some(VERSION) => Ok(value),
        v => Err(format!(
            "format version {}, this fledge-sim reads version {VERSION}",
            v.map_or("none".to_string(), |v| v.to_string())
        )),
    }
}
