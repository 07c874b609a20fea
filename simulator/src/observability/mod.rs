//! `fledge-sim run --access-log FILE --traces FILE --graph FILE`: what a mesh's operators look
//! at, written from the simulation. The mesh tells [`Outputs`] when a request or one of its
//! attempts ends (`mesh/outputs.rs`, one test of an `Option` when off); the access log and the
//! spans are streamed to their files through buffered writers as the run goes, never held.
//! The service graph ([`graph`]) is read from the run's telemetry at its end.
//!
//! Which requests are written is decided from the seed and the request's number alone (not
//! the simulation's random streams), so the outputs change no result and the same seed writes
//! the same files. Every record names the service and version that answered (part of issue 20
//! builds several services on this: records already carry both).

mod access_log;
pub(crate) mod graph;
mod spans;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::engine::SimTime;

/// Envoy logs every request once an access log is configured (Istio's `accessLogFile`): the
/// access log's default fraction.
pub(crate) const ACCESS_LOG_SAMPLE: f64 = 1.0;
/// Istio traces 1% of requests unless told otherwise (its default random sampling percentage):
/// the spans' default fraction.
pub(crate) const TRACES_SAMPLE: f64 = 0.01;

/// A request or one attempt of it that ended, as the client's proxy saw it.
pub(crate) struct Exchange<'a> {
    /// The request's number in the run, from 1.
    pub(crate) number: u64,
    /// The number of the request its trace began with: its own, or for a call its caller's
    /// (whose trace and `x-request-id` a call carries on).
    pub(crate) root: u64,
    /// For a call: its caller's attempt (request number and try), whose server span is the
    /// parent of the call's client span (of its attempts' server spans without a client
    /// proxy).
    pub(crate) caller: Option<(u64, u32)>,
    /// The attempt, from 1; 0 for the request as a whole.
    pub(crate) try_no: u32,
    pub(crate) start: SimTime,
    pub(crate) end: SimTime,
    pub(crate) code: u16,
    pub(crate) flags: u16,
    /// The client workload.
    pub(crate) client: &'a str,
    /// The service called, and the version that answered (none when no pod did).
    pub(crate) service: &'a str,
    pub(crate) version: Option<&'a str>,
    /// The pod that answered (`<service>-<version>-<n>`), when one did.
    pub(crate) upstream: Option<String>,
    /// The Envoy cluster it was sent to (`outbound|port|subset|host`), when it had one.
    pub(crate) cluster: Option<String>,
    /// The request's method and path.
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    /// The name of the route that took it, if it has one.
    pub(crate) route: Option<&'a str>,
    /// Whether the client has a sidecar, which logs and traces its requests: without one no
    /// proxy records the request (an attempt's span then has the caller's as its parent).
    pub(crate) client_proxy: bool,
    /// Whether the pod that answered an attempt has a sidecar, which traces it.
    pub(crate) server_proxy: bool,
}

/// One output file, and the share of requests it keeps.
struct Sink {
    out: BufWriter<File>,
    path: PathBuf,
    flag: &'static str,
    /// A request is kept when its draw is below this (all at `u64::MAX` with `all`).
    below: u64,
    all: bool,
}

impl Sink {
    fn open(flag: &'static str, path: &Path, fraction: f64) -> Result<Sink, String> {
        let file = File::create(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
        Ok(Sink {
            out: BufWriter::with_capacity(1 << 16, file),
            path: path.to_path_buf(),
            flag,
            below: (fraction * u64::MAX as f64) as u64,
            all: fraction >= 1.0,
        })
    }

    fn keeps(&self, draw: u64) -> bool {
        self.all || draw < self.below
    }
}

/// The access log and the spans of a run, when asked for.
pub(crate) struct Outputs {
    seed: u64,
    access: Option<Sink>,
    spans: Option<Sink>,
    /// The first write that failed: the flag, the path and why.
    failed: Option<String>,
    /// The pod of the last attempt of the request being written (an attempt ends just before
    /// its request completes).
    last_upstream: Option<(u64, String)>,
}

impl Outputs {
    /// Creates the files (an unwritable path fails now, naming the flag and the path).
    /// `sample`: the share of requests written, or each output's default.
    pub(crate) fn open(
        seed: u64,
        access_log: Option<&Path>,
        traces: Option<&Path>,
        sample: Option<f64>,
    ) -> Result<Option<Box<Outputs>>, String> {
        if access_log.is_none() && traces.is_none() {
            return Ok(None);
        }
        let access = access_log
            .map(|p| Sink::open("--access-log", p, sample.unwrap_or(ACCESS_LOG_SAMPLE)))
            .transpose()?;
        let spans = traces
            .map(|p| Sink::open("--traces", p, sample.unwrap_or(TRACES_SAMPLE)))
            .transpose()?;
        Ok(Some(Box::new(Outputs {
            seed,
            access,
            spans,
            failed: None,
            last_upstream: None,
        })))
    }

    /// Starts the records of the run of variant `variant` (its place in the scenario) on
    /// `seed`: its sampling and ids derive from both, so variants' traces do not share ids.
    pub(crate) fn restart(&mut self, seed: u64, variant: usize) {
        self.seed = if variant == 0 {
            seed
        } else {
            mix(seed, variant as u64)
        };
        self.last_upstream = None;
    }

    /// Whether any output keeps request `number` of the trace begun by request `root`: the
    /// mesh builds a record only then. The access log samples each request on its own; the
    /// spans sample whole traces, as a tracer's sampling decision at the edge travels with
    /// the trace's headers.
    pub(crate) fn wants(&self, number: u64, root: u64) -> bool {
        self.access
            .as_ref()
            .is_some_and(|s| s.keeps(draw(self.seed, number)))
            || self
                .spans
                .as_ref()
                .is_some_and(|s| s.keeps(draw(self.seed, root)))
    }

    /// A request ended.
    pub(crate) fn request(&mut self, mut e: Exchange<'_>) {
        if e.upstream.is_none() {
            e.upstream = self
                .last_upstream
                .take()
                .filter(|(n, _)| *n == e.number)
                .map(|(_, pod)| pod);
        }
        if !e.client_proxy {
            return;
        }
        let ids = Ids::of(self.seed, e.root, e.number);
        let draw_own = draw(self.seed, e.number);
        if let Some(s) = self.access.as_mut().filter(|s| s.keeps(draw_own)) {
            let line = access_log::line(&e, &ids);
            write(s, &mut self.failed, line.as_bytes());
        }
        let draw = draw(self.seed, e.root);
        if let Some(s) = self.spans.as_mut().filter(|s| s.keeps(draw)) {
            let line = spans::line(&e, &ids);
            write(s, &mut self.failed, line.as_bytes());
        }
    }

    /// An attempt of a request ended (before the request, if it was the last).
    pub(crate) fn attempt(&mut self, e: Exchange<'_>) {
        if let Some(pod) = &e.upstream {
            self.last_upstream = Some((e.number, pod.clone()));
        }
        let draw = draw(self.seed, e.root);
        if let Some(s) = self
            .spans
            .as_mut()
            .filter(|s| e.server_proxy && s.keeps(draw))
        {
            let line = spans::line(&e, &Ids::of(self.seed, e.root, e.number));
            write(s, &mut self.failed, line.as_bytes());
        }
    }

    /// Flushes the files; the first error names the flag and the path.
    pub(crate) fn finish(&mut self) -> Result<(), String> {
        for s in [&mut self.access, &mut self.spans].into_iter().flatten() {
            if let Err(e) = s.out.flush() {
                self.failed
                    .get_or_insert(format!("{} {}: {e}", s.flag, s.path.display()));
            }
        }
        self.failed.clone().map_or(Ok(()), Err)
    }
}

fn write(s: &mut Sink, failed: &mut Option<String>, bytes: &[u8]) {
    if failed.is_none()
        && let Err(e) = s.out.write_all(bytes)
    {
        *failed = Some(format!("{} {}: {e}", s.flag, s.path.display()));
    }
}

/// A request's ids: its trace (and `x-request-id`), derived from the seed and the number of
/// the request the trace began with, and its spans, from its own number.
pub(crate) struct Ids {
    pub(crate) trace: u128,
    seed: u64,
    number: u64,
}

impl Ids {
    fn of(seed: u64, root: u64, number: u64) -> Ids {
        let hi = mix(seed ^ 0x7472_6163_6500_0000, root);
        let lo = mix(hi, root);
        Ids {
            trace: (u128::from(hi) << 64) | u128::from(lo),
            seed,
            number,
        }
    }

    /// The span of attempt `try_no` (0: the request's own span).
    pub(crate) fn span(&self, try_no: u32) -> u64 {
        span_id(self.seed, self.number, try_no)
    }

    /// The span of attempt `try_no` of request `number` of the same run.
    pub(crate) fn span_of(&self, (number, try_no): (u64, u32)) -> u64 {
        span_id(self.seed, number, try_no)
    }

    /// `x-request-id`, a UUID's shape.
    pub(crate) fn request_id(&self) -> String {
        let h = format!("{:032x}", self.trace);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }
}

fn span_id(seed: u64, number: u64, try_no: u32) -> u64 {
    mix(
        seed ^ 0x7370_616e_0000_0000,
        number << 8 ^ u64::from(try_no),
    )
    .max(1)
}

/// The draw that decides whether request `number` of a run of `seed` is written.
fn draw(seed: u64, number: u64) -> u64 {
    mix(seed, number)
}

/// SplitMix64's finaliser over both inputs: well spread, cheap, and no state.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A simulated time as Envoy's `%START_TIME%` writes it (`2006-01-02T15:04:05.000Z`), the run
/// starting at the Unix epoch.
pub(crate) fn timestamp(t: SimTime) -> String {
    let ms = t / crate::engine::MILLIS;
    let (secs, ms) = (ms / 1000, ms % 1000);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The civil date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_count_from_the_epoch_in_envoys_format() {
        let s = crate::engine::SECONDS;
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            timestamp(31 * 86_400 * s + 3723 * s + 45 * crate::engine::MILLIS),
            "1970-02-01T01:02:03.045Z"
        );
        assert_eq!(timestamp(365 * 86_400 * s), "1971-01-01T00:00:00.000Z");
    }

    #[test]
    fn a_request_id_has_a_uuids_shape_and_spans_of_a_request_differ() {
        let ids = Ids::of(1, 42, 42);
        let id = ids.request_id();
        assert_eq!(
            id.split('-').map(str::len).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert_ne!(ids.span(0), ids.span(1));
        assert_ne!(Ids::of(1, 42, 42).trace, Ids::of(2, 42, 42).trace);
        // A call carries its caller's trace, with spans of its own.
        let call = Ids::of(1, 42, 43);
        assert_eq!(call.trace, ids.trace);
        assert_ne!(call.span(0), ids.span(0));
        assert_eq!(call.span_of((42, 1)), ids.span(1));
    }
}
