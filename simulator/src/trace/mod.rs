//! `fledge-sim run --trace`: one line per simulated event, so that a seed's run can be read step
//! by step. The mesh and the harness write to a [`Tracer`] only when one is set (the event loop
//! tests one `Option` per event otherwise), and nothing here draws from a random stream, so a
//! traced run has the same results as an untraced one.
//!
//! A line is `<seconds>.<micros>s  <event>  key=value ...`: the simulated time (integer
//! nanoseconds truncated to microseconds, so it prints the same everywhere), the event name
//! padded to a column, then the event's fields in a fixed order. Free text is quoted (`{:?}`),
//! so a line never spans two. [`LEGEND`] documents every event and field.

use std::io::{self, Write};

use crate::engine::{MICROS, MILLIS, SECONDS, SimTime};

/// The legend of `fledge-sim run --help` (and of scenarios/README.md, which repeats it).
pub(crate) const LEGEND: &str = "\
Trace (--trace FILE): one line per event, in simulated-time order:
  <seconds>.<micros>s  <event>  key=value ...
Mesh events (the client's proxy and the pods):
  request        a client request arrives and is routed    req client version
  unrouted       no route matches (404) or all weights 0   req client code flags
  fault-abort    the route's fault aborts the request       req client code
  fault-delay    the route's fault delays the request       req client ms
  attempt-sent   an attempt leaves for a pod                req try client pod version
  mirror-sent    a mirrored copy leaves for a pod           client pod version
  at-pod         an attempt reaches the pod                 req try pod queue
  dropped        a black-holed pod swallows the attempt     req try pod
  pod-done       the pod has served the attempt             req try pod code
  attempt-end    the client's proxy ends the attempt        req try pod code flags
  retry          a retry is scheduled after a backoff       req try ms
  route-timeout  the route's timeout ends the request       req
  request-done   the request completes at the client        req client version code flags ms
  pod-crash      a pod crashes                              pod
  pod-restart    a crashed pod starts again                 pod
  endpoint-in    a pod joins its clients' endpoint sets     pod
  endpoint-out   a pod leaves its clients' endpoint sets    pod
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
  ms       milliseconds (a delay, a backoff, or the request's latency)
  queue    requests already waiting at the pod for a worker
  phase, weight, mirror   the rollout's phase, canary weight and mirrored share (%, `-`: none)
  metric, value, verdict, reason   a metric check's name, value (`-`: none), outcome, why
  text     free text, quoted
A line starting with `#` heads each variant's run. Filters (--trace-filter KEY=VALUE,
repeatable or comma-separated; all must hold) keep the lines whose field KEY equals VALUE; KEY
is `event` or a field above but reason and text (`request` is an alias of `req`), e.g.
--trace-filter req=42 or --trace-filter pod=podinfo-canary-0,event=at-pod.";

/// The keys a filter may name: the legend's fields and `event`.
const KEYS: &[&str] = &[
    "event", "req", "try", "client", "version", "pod", "code", "flags", "ms", "queue", "phase",
    "weight", "mirror", "metric", "value", "verdict",
];

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
            for term in spec.split(',') {
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
                terms.push((key, value.to_string()));
            }
        }
        Ok(Filter { terms })
    }

    fn keeps(&self, event: &str, fields: &[(&str, String)]) -> bool {
        self.terms.iter().all(|(key, want)| {
            if *key == "event" {
                return event == want;
            }
            fields.iter().any(|(k, v)| k == key && v == want)
        })
    }
}

/// Where trace lines go, and which are kept. Write errors are kept (the first) and reported
/// once the run is over, so a full disk does not stop the simulation half-way.
pub(crate) struct Tracer {
    out: Box<dyn Write + Send>,
    filter: Filter,
    error: Option<io::Error>,
}

impl Tracer {
    pub(crate) fn new(out: Box<dyn Write + Send>, filter: Filter) -> Tracer {
        Tracer {
            out,
            filter,
            error: None,
        }
    }

    /// Writes one event's line if the filter keeps it.
    #[cold]
    #[inline(never)]
    pub(crate) fn emit(&mut self, now: SimTime, event: &str, fields: &[(&str, String)]) {
        if self.error.is_some() || !self.filter.keeps(event, fields) {
            return;
        }
        let line = format_line(now, event, fields);
        if let Err(e) = self.out.write_all(line.as_bytes()) {
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

/// A duration in milliseconds with microseconds, as the trace prints it (`12.345`).
pub(crate) fn ms(d: SimTime) -> String {
    format!("{}.{:03}", d / MILLIS, (d % MILLIS) / MICROS)
}

fn format_line(now: SimTime, event: &str, fields: &[(&str, String)]) -> String {
    let mut line = format!(
        "{}.{:06}s  {event:<13}",
        now / SECONDS,
        (now % SECONDS) / MICROS
    );
    for (k, v) in fields {
        line.push(' ');
        line.push_str(k);
        line.push('=');
        line.push_str(v);
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_time_event_and_fields_in_order() {
        let fields = [("req", "42".to_string()), ("pod", "p-canary-0".to_string())];
        assert_eq!(
            format_line(12 * SECONDS + 345_678_999, "attempt-sent", &fields),
            "12.345678s  attempt-sent  req=42 pod=p-canary-0\n"
        );
    }

    #[test]
    fn filters_and_together_and_bad_ones_say_what_is_expected() {
        let f = Filter::parse(&["request=7,event=at-pod".into(), "pod=a-0".into()]).unwrap();
        let fields = [("req", "7".to_string()), ("pod", "a-0".to_string())];
        assert!(f.keeps("at-pod", &fields));
        assert!(!f.keeps("pod-done", &fields));
        assert!(!f.keeps("at-pod", &fields[..1]));
        let e = Filter::parse(&["colour=red".into()]).unwrap_err();
        assert!(
            e.contains("unknown key `colour`") && e.contains("pod"),
            "{e}"
        );
        let e = Filter::parse(&["pod".into()]).unwrap_err();
        assert!(e.contains("KEY=VALUE"), "{e}");
    }
}
