//! `fledge-sim run --trace`: one line per simulated event, so that a seed's run can be read step
//! by step. The mesh and the harness write to a [`Tracer`] only when one is set (the event loop
//! tests one `Option` per event otherwise), and nothing here draws from a random stream, so a
//! traced run has the same results as an untraced one.
//!
//! A line is `<seconds>.<micros>s  <event>  key=value ...`: the simulated time (integer
//! nanoseconds truncated to microseconds, so it prints the same everywhere), the event name
//! padded to a column, then the event's fields in a fixed order. Free text is quoted (`{:?}`),
//! so a line never spans two. [`LEGEND`] documents every event and field.
//!
//! Fields are handed over unformatted (`&dyn Display`): a filter first looks at the event's name
//! and keys, then formats only the fields it compares, and a line it drops is never formatted,
//! so a filtered trace of a long run costs little more than an untraced one.

use std::fmt::{self, Display, Write as _};
use std::io::{self, Write};

use crate::engine::{MICROS, MILLIS, SECONDS, SimTime};

/// The legend of `fledge-sim run --help` (and of scenarios/README.md, which repeats it).
pub(crate) const LEGEND: &str = "\
Trace (--trace FILE): one line per event, in simulated-time order:
  <seconds>.<micros>s  <event>  key=value ...
Mesh events (the client's proxy and the pods):
  request        a client request arrives and is routed     req client version
  unrouted       no route matches (404) or all weights 0    req client code flags
  answered       the route answers itself (no pod)          req client code flags
  fault-abort    the route's fault aborts the request       req client code
  fault-delay    the route's fault delays the request       req client ms
  pool-wait      no ready connection: the attempt waits     req try pod pending
  pool-overflow  the pool refuses the attempt (503 UO)      req try pod limit
  conn-open      a connection to a pod starts (TCP, TLS)    pod ms
  conn-fail      it fails: the pod's waiting attempts fail  pod flags pending
  attempt-sent   an attempt leaves on a ready connection    req try client pod version
  mirror-sent    a mirrored copy leaves for a pod           client pod version
  at-pod         an attempt reaches the pod                 req try pod queue
  refused        the pod's sidecar denies the attempt       req try pod code
  dropped        a black-holed pod swallows the attempt     req try pod
  pod-done       the pod has served the attempt             req try pod code
  attempt-end    the client's proxy ends the attempt        req try pod code flags
  retry          a retry is scheduled after a backoff       req try ms
  route-timeout  the route's timeout ends the request       req
  call-timeout   the calling app gives up on a call (DC)    req
  request-done   the request completes at the client        req client version code flags ms
  pod-crash      a pod crashes                              pod
  pod-restart    a crashed pod starts again                 pod
  endpoint-in    a pod joins its clients' endpoint sets     pod
  endpoint-out   a pod leaves its clients' endpoint sets    pod
  eject          outlier detection ejects a pod             client pod ms
  uneject        an ejected pod returns to the balancer     client pod
  cert-rotate    a workload's agent renews its certificate  workload
Harness events (changes the simulator makes, as the cluster would):
  action         routes written, canary scaled, primary     what text
                 promoted, or a timeline event carried out
Controller events (at each tick that changed something):
  decision       the rollout's state after the tick         phase weight mirror
  metric         a metric check of the tick's analysis      metric value verdict reason
  message        the controller's (or scenario's) message   text
Fields:
  req      the request's number, counting arrivals from 1 (0: a mirrored copy)
  try      the attempt's number within its request, from 1 (retries are 2, 3, ...)
  client   the calling workload           version  the destination version (`-`: none yet)
  pod      <service>-<version>-<n>, n counting the version's pods from 0
  code     HTTP status (0: none)           flags    Envoy response flags (`-`: none)
  ms       milliseconds (a delay, a backoff, a connection's setup, an ejection's length, or
           the request's latency)
  queue    requests already waiting at the pod for a worker
  pending  requests waiting for a connection: the Envoy cluster's, this one included
           (pool-wait), or the pod's, which now fail (conn-fail)
  limit    the circuit breaker that overflowed: pending (http1MaxPendingRequests) or
           requests (http2MaxRequests)
  workload a client's name or <service>-<version>
  what     routes, scale, promote or timeline
  phase, weight, mirror   the rollout's phase, canary weight and mirrored share (%, `-`: none)
  metric, value, verdict, reason   a metric check's name, value (`-`: none), outcome, why
  text     free text, quoted
A line starting with `#` heads each variant's run. Filters (--trace-filter KEY=VALUE,
repeatable or comma-separated; all must hold) keep the lines whose field KEY equals VALUE; KEY
is `event` or a field above but reason and text (`request` is an alias of `req`), e.g.
--trace-filter req=42 or --trace-filter pod=podinfo-canary-0,event=at-pod. A comma not
followed by KEY= belongs to the value, as in flags=UF,URX.";

/// The keys a filter may name: the legend's fields and `event`.
const KEYS: &[&str] = &[
    "event", "req", "try", "client", "version", "pod", "code", "flags", "ms", "queue", "pending",
    "limit", "workload", "what", "phase", "weight", "mirror", "metric", "value", "verdict",
];

/// The keys whose values the trace always writes as whole numbers.
const NUMBERS: &[&str] = &["req", "try", "code", "queue", "pending"];

/// A `--trace-filter` value cut into its `KEY=VALUE` terms at the commas followed by a `KEY=`:
/// a comma followed by no `=` is part of the value, as in the flags the trace writes
/// (`flags=UF,URX`).
fn split_terms(spec: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut start = 0;
    for (i, _) in spec.match_indices(',') {
        let next = &spec[i + 1..];
        let piece = next.split(',').next().unwrap_or_default();
        if piece.contains('=') || !spec[start..i].contains('=') {
            terms.push(&spec[start..i]);
            start = i + 1;
        }
    }
    terms.push(&spec[start..]);
    terms
}

/// The event names of the [`LEGEND`]: the first word of each entry between its first section
/// heading and `Fields:`.
fn events() -> impl Iterator<Item = &'static str> {
    LEGEND
        .lines()
        .skip(2)
        .take_while(|l| *l != "Fields:")
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
}

/// Lines kept when every `key=value` term holds (no terms: every line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    terms: Vec<(&'static str, String)>,
}

impl Filter {
    /// Parses the `--trace-filter` values: each `KEY=VALUE[,KEY=VALUE...]`. The error says
    /// what is wrong and what is expected.
    pub(crate) fn parse(specs: &[String]) -> Result<Filter, String> {
        let mut terms = Vec::new();
        for spec in specs {
            for term in split_terms(spec) {
                let Some((key, value)) = term.split_once('=') else {
                    return Err(format!(
                        "`{term}` is not KEY=VALUE (e.g. pod=podinfo-canary-0)"
                    ));
                };
                let key = key.trim();
                let key = if key == "request" { "req" } else { key };
                let Some(key) = KEYS.iter().copied().find(|k| *k == key) else {
                    return Err(format!(
                        "unknown key `{key}` in `{term}`: expected one of request, {}",
                        KEYS.join(", ")
                    ));
                };
                if value.is_empty() {
                    return Err(format!("`{term}` has no value after `=`"));
                }
                if key == "event" && !events().any(|e| e == value) {
                    return Err(format!(
                        "no event is named `{value}` in `{term}`: expected one of {}",
                        events().collect::<Vec<_>>().join(", ")
                    ));
                }
                if NUMBERS.contains(&key) && !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!(
                        "`{value}` in `{term}` is not a whole number, as every `{key}` the trace writes is"
                    ));
                }
                terms.push((key, value.to_string()));
            }
        }
        Ok(Filter { terms })
    }

    /// Whether a line of `event` with fields named `keys` can be kept at all: every term is
    /// on the event's name or on one of its keys. Decided before any field is formatted.
    fn may_keep(&self, event: &str, keys: &[&str]) -> bool {
        self.terms.iter().all(|(key, want)| match *key {
            "event" => event == want,
            key => keys.contains(&key),
        })
    }

    /// Whether the line is kept: each field a term names, formatted into `scratch`, equals the
    /// term's value.
    fn keeps(&self, event: &str, fields: &[(&str, &dyn Display)], scratch: &mut String) -> bool {
        self.terms.iter().all(|(key, want)| {
            if *key == "event" {
                return event == want;
            }
            fields.iter().any(|(k, v)| {
                scratch.clear();
                k == key && write!(scratch, "{v}").is_ok() && scratch == want
            })
        })
    }
}

/// Where trace lines go, and which are kept. Write errors are kept (the first) and reported
/// once the run is over, so a full disk does not stop the simulation half-way.
pub(crate) struct Tracer {
    out: Box<dyn Write + Send>,
    filter: Filter,
    error: Option<io::Error>,
    /// Reused for the fields a filter compares and for each line written.
    scratch: String,
    line: String,
}

impl Tracer {
    pub(crate) fn new(out: Box<dyn Write + Send>, filter: Filter) -> Tracer {
        Tracer {
            out,
            filter,
            error: None,
            scratch: String::new(),
            line: String::new(),
        }
    }

    /// Whether a line of `event` with these keys may be written: the caller skips evaluating
    /// its fields otherwise.
    #[inline]
    pub(crate) fn wants(&self, event: &str, keys: &[&str]) -> bool {
        self.error.is_none() && self.filter.may_keep(event, keys)
    }

    /// Writes one event's line if the filter keeps it.
    #[cold]
    #[inline(never)]
    pub(crate) fn emit(&mut self, now: SimTime, event: &str, fields: &[(&str, &dyn Display)]) {
        if self.error.is_some() || !self.filter.keeps(event, fields, &mut self.scratch) {
            return;
        }
        self.line.clear();
        format_line(&mut self.line, now, event, fields);
        if let Err(e) = self.out.write_all(self.line.as_bytes()) {
            self.error = Some(e);
        }
    }

    /// A line outside the simulated time (a run's heading), never filtered.
    pub(crate) fn comment(&mut self, text: &str) {
        if self.error.is_none()
            && let Err(e) = writeln!(self.out, "# {text}")
        {
            self.error = Some(e);
        }
    }

    /// Flushes; the first error met while writing, if any.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        match self.error.take() {
            Some(e) => Err(e),
            None => self.out.flush(),
        }
    }
}

/// A duration in milliseconds with microseconds, as the trace prints it (`12.345`); formatted
/// only if the line is written.
pub(crate) fn ms(d: SimTime) -> Ms {
    Ms(d)
}

/// See [`ms`].
pub(crate) struct Ms(SimTime);

impl Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / MILLIS, (self.0 % MILLIS) / MICROS)
    }
}

fn format_line(line: &mut String, now: SimTime, event: &str, fields: &[(&str, &dyn Display)]) {
    // Writing to a String cannot fail.
    let _ = write!(
        line,
        "{}.{:06}s  {event:<13}",
        now / SECONDS,
        (now % SECONDS) / MICROS
    );
    for (k, v) in fields {
        let _ = write!(line, " {k}={v}");
    }
    line.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_time_event_and_fields_in_order() {
        let fields: [(&str, &dyn Display); 3] =
            [("req", &42), ("pod", &"p-canary-0"), ("ms", &ms(1_234_567))];
        let mut line = String::new();
        format_line(
            &mut line,
            12 * SECONDS + 345_678_999,
            "attempt-sent",
            &fields,
        );
        assert_eq!(
            line,
            "12.345678s  attempt-sent  req=42 pod=p-canary-0 ms=1.234\n"
        );
    }

    /// A field that counts how often it is formatted.
    struct Counted<'a>(&'a std::cell::Cell<u32>);

    impl Display for Counted<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.set(self.0.get() + 1);
            f.write_str("x")
        }
    }

    #[test]
    fn a_dropped_line_formats_only_the_fields_its_filter_compares() {
        let formatted = std::cell::Cell::new(0);
        let filter = Filter::parse(&["pod=a-0".into()]).unwrap();
        let mut t = Tracer::new(Box::new(Vec::new()), filter);
        // Another event's keys cannot match: the caller does not even build the fields.
        assert!(!t.wants("retry", &["req", "try", "ms"]));
        assert!(t.wants("at-pod", &["req", "pod"]));
        let dropped: [(&str, &dyn Display); 2] = [("req", &Counted(&formatted)), ("pod", &"b-1")];
        t.emit(SECONDS, "at-pod", &dropped);
        assert_eq!(formatted.get(), 0, "a dropped line was formatted");
        let kept: [(&str, &dyn Display); 2] = [("req", &Counted(&formatted)), ("pod", &"a-0")];
        t.emit(SECONDS, "at-pod", &kept);
        assert_eq!(formatted.get(), 1, "a kept line is formatted once");
    }

    #[test]
    fn filters_and_together_and_bad_ones_say_what_is_expected() {
        let f = Filter::parse(&["request=7,event=at-pod".into(), "pod=a-0".into()]).unwrap();
        let fields: [(&str, &dyn Display); 2] = [("req", &7), ("pod", &"a-0")];
        let s = &mut String::new();
        assert!(f.may_keep("at-pod", &["req", "pod"]) && f.keeps("at-pod", &fields, s));
        assert!(!f.may_keep("pod-done", &["req", "pod"]) && !f.keeps("pod-done", &fields, s));
        assert!(!f.may_keep("at-pod", &["req"]) && !f.keeps("at-pod", &fields[..1], s));
        let other: [(&str, &dyn Display); 2] = [("req", &8), ("pod", &"a-0")];
        assert!(f.may_keep("at-pod", &["req", "pod"]) && !f.keeps("at-pod", &other, s));
        let e = Filter::parse(&["colour=red".into()]).unwrap_err();
        assert!(
            e.contains("unknown key `colour`") && e.contains("pod"),
            "{e}"
        );
        let e = Filter::parse(&["pod".into()]).unwrap_err();
        assert!(e.contains("KEY=VALUE"), "{e}");
        let e = Filter::parse(&["req=abc".into()]).unwrap_err();
        assert!(e.contains("whole number"), "{e}");
    }

    /// A value the trace writes with commas (several flags) is one value; a comma followed by
    /// `KEY=` starts another term.
    #[test]
    fn a_comma_not_followed_by_a_key_belongs_to_the_value() {
        let cases: [(&str, &[&str]); 5] = [
            ("flags=UF,URX", &["flags=UF,URX"]),
            (
                "flags=UF,URX,event=attempt-end",
                &["flags=UF,URX", "event=attempt-end"],
            ),
            ("req=7,event=at-pod", &["req=7", "event=at-pod"]),
            ("pod,req=7", &["pod", "req=7"]),
            ("req=7", &["req=7"]),
        ];
        for (spec, want) in cases {
            assert_eq!(split_terms(spec), want, "{spec}");
        }
        let f = Filter::parse(&["flags=UF,URX".into()]).unwrap();
        let s = &mut String::new();
        let line: [(&str, &dyn Display); 1] = [("flags", &"UF,URX")];
        assert!(f.keeps("attempt-end", &line, s));
        let line: [(&str, &dyn Display); 1] = [("flags", &"UF")];
        assert!(!f.keeps("attempt-end", &line, s));
    }

    /// Every event the simulator writes (a `trace!` or an `emit` with a literal name anywhere
    /// in src/) is in the legend, so `--trace-filter event=NAME` accepts it (cli_trace.rs checks
    /// that scenarios/README.md repeats the legend).
    #[test]
    fn every_event_written_is_in_the_legend() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let call = regex::Regex::new(r#"(?:trace!|\.emit)\(\s*[^,()]+,\s*"([a-z-]+)""#).unwrap();
        let mut dirs = vec![root.join("src")];
        let mut written = std::collections::BTreeSet::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    written.extend(call.captures_iter(&text).map(|c| c[1].to_string()));
                }
            }
        }
        written.remove("event"); // the trace! macro's own documentation
        assert!(written.len() > 20, "{written:?}");
        let legend: Vec<&str> = events().collect();
        for e in &written {
            assert!(
                legend.contains(&e.as_str()),
                "`{e}` is written but not in the legend"
            );
        }
    }
}
