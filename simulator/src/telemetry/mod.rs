//! Istio-style telemetry: cumulative counters and latency histograms per
//! (reporter, source workload, destination workload/version, response code, response flags),
//! snapshotted at a scrape interval like Prometheus does.
//!
//! Memory is flat in the number of requests: a request only increments counters. Snapshots are
//! kept in a ring bounded by `retention`, so memory is also bounded in simulated time.
//!
//! Two reporters are recorded, as Istio does:
//! - [`Reporter::Destination`]: one sample per attempt that reached a server pod, with the pod's
//!   code and the server-side duration (queueing + service). Flagger's Istio queries use these.
//! - [`Reporter::Source`]: one sample per client request after retries, with the code and flags the
//!   client saw and the end-to-end duration, labelled with the version that produced the answer.

mod counter_names;
mod durations;
mod series;

pub use durations::Durations;
pub use series::Naming;

pub(crate) use counter_names::{PROXY_COUNTERS, ROLLOUT_COUNTERS, counter_names};
pub(crate) use series::LabelledSeries;

use std::collections::VecDeque;
use std::fmt::Write as _;

use fledge_controller::analysis::ISTIO_DURATION_BOUNDS_MS;

use crate::engine::{MILLIS, SimTime};

/// Istio's default buckets for `istio_request_duration_milliseconds`, in milliseconds: the
/// controller's bounds without their `+Inf`.
pub const DURATION_BUCKETS_MS: [f64; NUM_BUCKETS - 1] = finite_bounds();
/// Number of buckets including `+Inf`.
pub const NUM_BUCKETS: usize = ISTIO_DURATION_BOUNDS_MS.len();

/// The controller's bounds but the last, which must be `+Inf` (the store's overflow bucket).
const fn finite_bounds() -> [f64; NUM_BUCKETS - 1] {
    assert!(ISTIO_DURATION_BOUNDS_MS[NUM_BUCKETS - 1] == f64::INFINITY);
    let mut b = [0.0; NUM_BUCKETS - 1];
    let mut i = 0;
    while i < b.len() {
        b[i] = ISTIO_DURATION_BOUNDS_MS[i];
        i += 1;
    }
    b
}

/// Envoy response flags, as a bit set.
pub mod flags {
    /// Upstream overflow (circuit breaker).
    pub const UO: u16 = 1 << 0;
    /// Upstream connection failure.
    pub const UF: u16 = 1 << 1;
    /// Upstream connection termination (reset).
    pub const UC: u16 = 1 << 2;
    /// No healthy upstream.
    pub const UH: u16 = 1 << 3;
    /// Upstream request timeout.
    pub const UT: u16 = 1 << 4;
    /// Retry limit exceeded (upstream retry overflow or attempts exhausted).
    pub const URX: u16 = 1 << 5;
    /// Delay injected by fault injection.
    pub const DI: u16 = 1 << 6;
    /// Abort injected by fault injection.
    pub const FI: u16 = 1 << 7;
    /// No route configured.
    pub(crate) const NR: u16 = 1 << 8;
    /// Upstream remote reset.
    pub(crate) const UR: u16 = 1 << 9;
    /// Downstream connection termination: the server sidecar saw its client reset the stream
    /// before it answered (reported with response code 0).
    pub const DC: u16 = 1 << 10;
    /// No cluster: the route names a cluster Envoy does not have (a subset no DestinationRule
    /// defines), with 503.
    pub const NC: u16 = 1 << 11;
    /// Names in Envoy's `%RESPONSE_FLAGS%` order: the order of its `CoreResponseFlag` bits
    /// (envoy `envoy/stream_info/stream_info.h`, rendered by `source/common/stream_info/utility.cc`).
    pub(crate) const NAMES: [(u16, &str); 12] = [
        (UH, "UH"),
        (UT, "UT"),
        (UR, "UR"),
        (UF, "UF"),
        (UC, "UC"),
        (UO, "UO"),
        (NR, "NR"),
        (DI, "DI"),
        (FI, "FI"),
        (DC, "DC"),
        (URX, "URX"),
        (NC, "NC"),
    ];

    /// Renders flags like Envoy's `%RESPONSE_FLAGS%` (`-` when empty).
    pub(crate) fn render(f: u16) -> String {
        if f == 0 {
            return "-".to_string();
        }
        let mut out = String::new();
        for (bit, name) in NAMES {
            if f & bit != 0 {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(name);
            }
        }
        out
    }
}

/// Which proxy reported a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reporter {
    /// The client-side sidecar: one sample per request after retries.
    Source,
    /// The server-side sidecar: one sample per attempt that reached the pod.
    Destination,
}

impl Reporter {
    fn label(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// Labels of a source workload (a client).
#[derive(Clone, Debug)]
pub(crate) struct SourceLabels {
    /// Workload (Deployment) name.
    pub(crate) workload: String,
    /// Namespace.
    pub(crate) namespace: String,
    /// Whether it has a sidecar: without one, what it saw is kept for the run's figures but no
    /// proxy reports it, so no series of it is exposed.
    pub(crate) sidecar: bool,
}

/// Labels of a destination workload (one version of a service).
#[derive(Clone, Debug)]
pub(crate) struct DestLabels {
    /// Workload (Deployment) name, e.g. `podinfo-primary`.
    pub(crate) workload: String,
    /// Namespace.
    pub(crate) namespace: String,
    /// Service FQDN, e.g. `podinfo.test.svc.cluster.local`.
    pub(crate) service: String,
    /// Version / subset name.
    pub(crate) version: String,
    /// False for the `unknown` destination of a service: the requests no upstream pod
    /// answered (no route, fault abort, no healthy upstream).
    pub(crate) peer: bool,
}

impl DestLabels {
    /// The destination Istio's stats filter reports when the request reached no upstream
    /// peer: every workload label `unknown`, the service still named.
    pub(crate) fn unknown(service: String) -> Self {
        let unknown = || "unknown".to_string();
        Self {
            workload: unknown(),
            namespace: unknown(),
            service,
            version: unknown(),
            peer: false,
        }
    }
}

/// Per-(source, destination version) counters that are not request series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyCounters {
    /// Upstream connections opened (`upstream_cx_total`).
    pub connections_opened: u64,
    /// Upstream connections closed.
    pub connections_closed: u64,
    /// TLS handshakes completed successfully.
    pub handshakes: u64,
    /// TLS handshakes that failed (expired certificate, mode mismatch).
    pub handshake_failures: u64,
    /// Connection attempts that failed (refused, timed out, reset during handshake).
    pub connect_failures: u64,
    /// Outlier-detection ejections enforced.
    pub ejections_enforced: u64,
    /// Ejections refused by `maxEjectionPercent` (`ejections_overflow`).
    pub ejections_overflow: u64,
    /// Ejections detected (counted even when the enforcing percentage skips them).
    pub ejections_detected: u64,
    /// Requests rejected with `UO` because the pending queue or request limit was full.
    pub pending_overflow: u64,
    /// Retries suppressed by `maxRetries` (`upstream_rq_retry_overflow`).
    pub retry_overflow: u64,
    /// Retries started.
    pub retries: u64,
    /// Per-try or route timeouts.
    pub timeouts: u64,
    /// Mirrored (shadow) requests sent.
    pub mirrored: u64,
}

#[derive(Clone, Copy, Debug)]
struct SeriesKey {
    reporter: Reporter,
    source: u32,
    dest: u32,
    code: u16,
    flags: u16,
}

/// A proxy counter's metric name and accessor.
type ProxyMetric = (&'static str, fn(&ProxyCounters) -> u64);

/// No series recorded yet in a slot ([`Telemetry::record`]'s last-series cache).
const NO_SERIES: (u16, u16, u32) = (0, 0, u32::MAX);

// requests, sum in microseconds, then NUM_BUCKETS non-cumulative bucket counts
const STRIDE: usize = 2 + NUM_BUCKETS;

struct Snapshot {
    time: SimTime,
    data: Vec<u64>,
}

/// Bucket bounds in nanoseconds, for a branch-light bucket search.
fn bucket_bounds_ns() -> [u64; DURATION_BUCKETS_MS.len()] {
    let mut b = [0u64; DURATION_BUCKETS_MS.len()];
    for (i, ms) in DURATION_BUCKETS_MS.iter().enumerate() {
        b[i] = (ms * MILLIS as f64) as u64;
    }
    b
}

/// The telemetry store.
pub struct Telemetry {
    sources: Vec<SourceLabels>,
    dests: Vec<DestLabels>,
    keys: Vec<SeriesKey>,
    data: Vec<u64>,
    // Per (reporter, source, dest): the few (code, flags) series seen so far, scanned linearly.
    slots: Vec<Vec<(u16, u16, u32)>>,
    // Per (reporter, source, dest): the series recorded last, looked at before the scan (a slot
    // sees one (code, flags) most of the time). `NO_SERIES` until the first sample.
    last: Vec<(u16, u16, u32)>,
    proxy: Vec<ProxyCounters>,
    // Per (source, dest): reporter `source`'s durations, finer than Istio's buckets.
    seen: Vec<Durations>,
    bounds_ns: [u64; DURATION_BUCKETS_MS.len()],
    snapshots: VecDeque<Snapshot>,
    scrape_interval: SimTime,
    retention: SimTime,
}

/// Aggregated request metrics over a window (or since the start).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowStats {
    /// Requests (`istio_requests_total` increase).
    pub requests: u64,
    /// Requests answered with a 5xx code.
    pub failures: u64,
    /// Requests answered with a 4xx code (the client's error: Flagger's success rate counts
    /// them as successes, Kiali's edges as errors).
    pub client_errors: u64,
    /// Sum of durations in milliseconds.
    pub duration_sum_ms: f64,
    /// Non-cumulative bucket counts; the last is `+Inf`.
    pub buckets: [u64; NUM_BUCKETS],
}

impl WindowStats {
    /// Fraction of non-5xx responses, `None` without traffic.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| 1.0 - self.failures as f64 / self.requests as f64)
    }

    /// Quantile in milliseconds interpolated within buckets like Prometheus `histogram_quantile`.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        histogram_quantile(q, &self.buckets)
    }

    /// Mean duration in milliseconds.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.duration_sum_ms / self.requests as f64)
    }
}

/// Prometheus `histogram_quantile` on non-cumulative buckets with Istio's bounds.
pub fn histogram_quantile(q: f64, buckets: &[u64; NUM_BUCKETS]) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total as f64;
    let mut cum = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        let prev = cum;
        cum += n;
        if cum as f64 >= rank && n > 0 {
            if i == NUM_BUCKETS - 1 {
                // Like Prometheus: a quantile in the +Inf bucket is the highest finite bound.
                return Some(DURATION_BUCKETS_MS[NUM_BUCKETS - 2]);
            }
            let upper = DURATION_BUCKETS_MS[i];
            let lower = if i == 0 {
                0.0
            } else {
                DURATION_BUCKETS_MS[i - 1]
            };
            return Some(lower + (upper - lower) * (rank - prev as f64) / n as f64);
        }
    }
    Some(DURATION_BUCKETS_MS[NUM_BUCKETS - 2])
}

/// Which series a query aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selector {
    /// Reporter to read.
    pub reporter: Reporter,
    /// Source workload index, or all.
    pub source: Option<u32>,
    /// Destination version index, or all.
    pub dest: Option<u32>,
}

impl Telemetry {
    /// A store for the given sources and destinations.
    pub(crate) fn new(
        sources: Vec<SourceLabels>,
        dests: Vec<DestLabels>,
        scrape_interval: SimTime,
        retention: SimTime,
    ) -> Self {
        let n = 2 * sources.len() * dests.len();
        Self {
            proxy: vec![ProxyCounters::default(); sources.len() * dests.len()],
            seen: vec![Durations::default(); sources.len() * dests.len()],
            slots: vec![Vec::new(); n],
            last: vec![NO_SERIES; n],
            sources,
            dests,
            keys: Vec::new(),
            data: Vec::new(),
            bounds_ns: bucket_bounds_ns(),
            snapshots: VecDeque::new(),
            scrape_interval: scrape_interval.max(1),
            retention,
        }
    }

    /// Scrape interval.
    pub(crate) fn scrape_interval(&self) -> SimTime {
        self.scrape_interval
    }

    /// Source labels.
    pub(crate) fn sources(&self) -> &[SourceLabels] {
        &self.sources
    }

    /// Destination labels.
    pub(crate) fn dests(&self) -> &[DestLabels] {
        &self.dests
    }

    #[inline]
    fn slot(&self, reporter: Reporter, source: u32, dest: u32) -> usize {
        (reporter.index() * self.sources.len() + source as usize) * self.dests.len() + dest as usize
    }

    /// Records one request sample.
    #[inline]
    pub(crate) fn record(
        &mut self,
        reporter: Reporter,
        source: u32,
        dest: u32,
        code: u16,
        flags: u16,
        duration: SimTime,
    ) {
        let slot = self.slot(reporter, source, dest);
        let last = self.last[slot];
        let series = if last.2 != NO_SERIES.2 && last.0 == code && last.1 == flags {
            last.2 as usize
        } else {
            let series = self.find_or_add(slot, reporter, source, dest, code, flags);
            self.last[slot] = (code, flags, series as u32);
            series
        };
        if reporter == Reporter::Source {
            self.seen[source as usize * self.dests.len() + dest as usize].record(duration);
        }
        let b = self.bounds_ns.partition_point(|&bound| bound < duration);
        let base = series * STRIDE;
        self.data[base] += 1;
        self.data[base + 1] += duration / 1_000;
        self.data[base + 2 + b] += 1;
    }

    /// The series of (code, flags) in `slot`, created (after every other) when new.
    fn find_or_add(
        &mut self,
        slot: usize,
        reporter: Reporter,
        source: u32,
        dest: u32,
        code: u16,
        flags: u16,
    ) -> usize {
        if let Some(s) = self.slots[slot]
            .iter()
            .find(|s| s.0 == code && s.1 == flags)
        {
            return s.2 as usize;
        }
        let idx = self.keys.len();
        self.keys.push(SeriesKey {
            reporter,
            source,
            dest,
            code,
            flags,
        });
        self.data.resize(self.data.len() + STRIDE, 0);
        self.slots[slot].push((code, flags, idx as u32));
        idx
    }

    /// Mutable proxy counters of (source, dest).
    #[inline]
    pub(crate) fn proxy_mut(&mut self, source: u32, dest: u32) -> &mut ProxyCounters {
        let i = source as usize * self.dests.len() + dest as usize;
        &mut self.proxy[i]
    }

    /// Proxy counters of (source, dest).
    pub(crate) fn proxy(&self, source: u32, dest: u32) -> ProxyCounters {
        self.proxy[source as usize * self.dests.len() + dest as usize]
    }

    /// Takes a scrape at `now` and drops snapshots older than the retention.
    pub(crate) fn scrape(&mut self, now: SimTime) {
        let data = match self.snapshots.pop_front() {
            // Reuse the oldest buffer when it has fallen out of retention.
            Some(old) if now.saturating_sub(old.time) > self.retention => {
                let mut d = old.data;
                d.clear();
                d.extend_from_slice(&self.data);
                d
            }
            Some(old) => {
                self.snapshots.push_front(old);
                self.data.clone()
            }
            None => self.data.clone(),
        };
        self.snapshots.push_back(Snapshot { time: now, data });
        while self
            .snapshots
            .front()
            .is_some_and(|s| now.saturating_sub(s.time) > self.retention)
        {
            self.snapshots.pop_front();
        }
    }

    fn matches(&self, sel: &Selector, k: &SeriesKey) -> bool {
        k.reporter == sel.reporter
            && sel.source.is_none_or(|s| s == k.source)
            && sel.dest.is_none_or(|d| d == k.dest)
    }

    fn sum(
        &self,
        sel: &Selector,
        data: &[u64],
        filter: impl Fn(&SeriesKey) -> bool,
    ) -> WindowStats {
        let mut w = WindowStats::default();
        for (i, k) in self.keys.iter().enumerate() {
            if !self.matches(sel, k) || !filter(k) {
                continue;
            }
            let base = i * STRIDE;
            if base + STRIDE > data.len() {
                continue; // series created after this snapshot
            }
            let n = data[base];
            w.requests += n;
            if k.code >= 500 {
                w.failures += n;
            } else if k.code >= 400 {
                w.client_errors += n;
            }
            w.duration_sum_ms += data[base + 1] as f64 / 1_000.0;
            for b in 0..NUM_BUCKETS {
                w.buckets[b] += data[base + 2 + b];
            }
        }
        w
    }

    /// Totals since the start of the run (live counters).
    pub fn totals(&self, sel: &Selector) -> WindowStats {
        self.sum(sel, &self.data, |_| true)
    }

    /// Totals as of the last snapshot taken at or before `t`; live counters when `t >= now`.
    fn at(
        &self,
        sel: &Selector,
        t: SimTime,
        now: SimTime,
        filter: impl Fn(&SeriesKey) -> bool,
    ) -> WindowStats {
        if t >= now {
            return self.sum(sel, &self.data, filter);
        }
        match self.snapshots.iter().rev().find(|s| s.time <= t) {
            Some(s) => self.sum(sel, &s.data, filter),
            None => WindowStats::default(),
        }
    }

    /// Increase over `[from, to]` computed from snapshots (like `increase()` without
    /// extrapolation). `now` is the simulation's current time; an end at or after it reads the live
    /// counters. A start older than the retention reads as zero.
    pub(crate) fn window(
        &self,
        sel: &Selector,
        from: SimTime,
        to: SimTime,
        now: SimTime,
    ) -> WindowStats {
        self.window_filtered(sel, from, to, now, |_| true)
    }

    fn window_filtered(
        &self,
        sel: &Selector,
        from: SimTime,
        to: SimTime,
        now: SimTime,
        filter: impl Fn(&SeriesKey) -> bool + Copy,
    ) -> WindowStats {
        let end = self.at(sel, to, now, filter);
        let start = self.at(sel, from, now, filter);
        let mut w = WindowStats {
            requests: end.requests.saturating_sub(start.requests),
            failures: end.failures.saturating_sub(start.failures),
            client_errors: end.client_errors.saturating_sub(start.client_errors),
            duration_sum_ms: (end.duration_sum_ms - start.duration_sum_ms).max(0.0),
            buckets: [0; NUM_BUCKETS],
        };
        for b in 0..NUM_BUCKETS {
            w.buckets[b] = end.buckets[b].saturating_sub(start.buckets[b]);
        }
        w
    }

    /// Requests per (code, flags) over a window, for the given selector, sorted by code then flags.
    pub fn by_code(
        &self,
        sel: &Selector,
        from: SimTime,
        to: SimTime,
        now: SimTime,
    ) -> Vec<(u16, u16, u64)> {
        let mut seen: Vec<(u16, u16)> = self
            .keys
            .iter()
            .filter(|k| self.matches(sel, k))
            .map(|k| (k.code, k.flags))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen.into_iter()
            .map(|(c, f)| {
                let w = self.window_filtered(sel, from, to, now, |k| k.code == c && k.flags == f);
                (c, f, w.requests)
            })
            .filter(|x| x.2 > 0)
            .collect()
    }

    /// A digest of every counter: equal digests mean equal telemetry (used by determinism checks).
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |v: u64| {
            h ^= v;
            h = h.wrapping_mul(0x0000_0100_0000_01b3).rotate_left(17);
        };
        for k in &self.keys {
            mix(u64::from(k.code) << 16 | u64::from(k.flags));
            mix(u64::from(k.source) << 32 | u64::from(k.dest));
        }
        for v in &self.data {
            mix(*v);
        }
        for p in &self.proxy {
            for v in [
                p.connections_opened,
                p.handshakes,
                p.ejections_enforced,
                p.pending_overflow,
                p.retries,
                p.timeouts,
            ] {
                mix(v);
            }
        }
        h
    }

    /// Writes the labelled view of the request series, named as `naming` names them, in the
    /// Prometheus text exposition format (no timestamps: the scraper stamps each sample).
    pub(crate) fn write_series(&self, naming: Naming, out: &mut String) {
        let mut family = "";
        for series in self.labelled_series(naming) {
            if series.family.0 != family {
                family = series.family.0;
                let _ = writeln!(out, "# TYPE {family} {}", series.family.1);
            }
            let labels: Vec<String> = series
                .labels
                .iter()
                .map(|(name, value)| format!("{name}=\"{}\"", escape_label(value)))
                .collect();
            let _ = writeln!(
                out,
                "{}{{{}}} {}",
                series.name,
                labels.join(","),
                self.live_value(&series)
            );
        }
    }

    /// Renders the live counters in the Prometheus text exposition format: the labelled view
    /// of the request series (Istio's names), then the proxies' own counters.
    pub(crate) fn render_prometheus(&self) -> String {
        let mut out = String::new();
        self.write_series(Naming::Istio, &mut out);
        let proxy_metrics: [ProxyMetric; 9] = [
            ("envoy_cluster_upstream_cx_total", |p| p.connections_opened),
            ("envoy_cluster_upstream_cx_destroy", |p| {
                p.connections_closed
            }),
            ("envoy_cluster_upstream_cx_connect_fail", |p| {
                p.connect_failures
            }),
            ("fledge_sim_tls_handshakes_total", |p| p.handshakes),
            ("fledge_sim_tls_handshake_failures_total", |p| {
                p.handshake_failures
            }),
            (
                "envoy_cluster_outlier_detection_ejections_enforced_total",
                |p| p.ejections_enforced,
            ),
            ("envoy_cluster_outlier_detection_ejections_overflow", |p| {
                p.ejections_overflow
            }),
            ("envoy_cluster_upstream_rq_pending_overflow", |p| {
                p.pending_overflow
            }),
            ("envoy_cluster_upstream_rq_retry", |p| p.retries),
        ];
        for (name, get) in proxy_metrics {
            let _ = writeln!(out, "# TYPE {name} counter");
            for (si, s) in self.sources.iter().enumerate().filter(|(_, s)| s.sidecar) {
                for (di, d) in self.dests.iter().enumerate().filter(|(_, d)| d.peer) {
                    let p = &self.proxy[si * self.dests.len() + di];
                    let _ = writeln!(
                        out,
                        "{name}{{source_workload=\"{}\",cluster_name=\"outbound|80|{}|{}\"}} {}",
                        s.workload,
                        d.version,
                        d.service,
                        get(p)
                    );
                }
            }
        }
        out
    }
}

/// A label value as the text exposition format writes it.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_as_the_text_format_requires() {
        assert_eq!(escape_label("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }

    fn store() -> Telemetry {
        Telemetry::new(
            vec![SourceLabels {
                workload: "client".into(),
                namespace: "test".into(),
                sidecar: true,
            }],
            vec![DestLabels {
                workload: "svc-primary".into(),
                namespace: "test".into(),
                service: "svc.test.svc.cluster.local".into(),
                version: "primary".into(),
                peer: true,
            }],
            5 * crate::engine::SECONDS,
            3600 * crate::engine::SECONDS,
        )
    }

    #[test]
    fn quantile_interpolates_inside_the_bucket_like_prometheus() {
        let mut b = [0u64; NUM_BUCKETS];
        b[3] = 100; // (5, 10] ms
        assert_eq!(histogram_quantile(0.5, &b), Some(7.5));
        assert_eq!(histogram_quantile(1.0, &b), Some(10.0));
        let empty = [0u64; NUM_BUCKETS];
        assert_eq!(histogram_quantile(0.99, &empty), None);
    }

    #[test]
    fn a_duration_on_a_bucket_bound_falls_in_that_bucket() {
        let mut t = store();
        t.record(Reporter::Destination, 0, 0, 200, 0, 5 * MILLIS);
        let sel = Selector {
            reporter: Reporter::Destination,
            source: None,
            dest: Some(0),
        };
        assert_eq!(t.totals(&sel).buckets[2], 1);
    }

    #[test]
    fn window_is_the_difference_between_scrapes() {
        let mut t = store();
        let sel = Selector {
            reporter: Reporter::Destination,
            source: None,
            dest: None,
        };
        t.record(Reporter::Destination, 0, 0, 200, 0, MILLIS);
        t.scrape(10);
        t.record(Reporter::Destination, 0, 0, 503, 0, MILLIS);
        t.record(Reporter::Destination, 0, 0, 200, 0, MILLIS);
        t.scrape(20);
        let w = t.window(&sel, 10, 20, 30);
        assert_eq!((w.requests, w.failures), (2, 1));
        assert_eq!(t.window(&sel, 0, 30, 30).requests, 3);
        let text = t.render_prometheus();
        assert!(text.contains("response_code=\"503\""));
        assert!(text.contains("le=\"+Inf\"} 2"));
    }

    /// Envoy's server sidecar reports a request its client cancelled before any response as
    /// code 0 `DC`; Linkerd's inbound proxy records responses only, so the cancelled request
    /// is in none of its series (linkerd2-proxy `linkerd/http/metrics/src/requests/service.rs`:
    /// the class is measured when the response or its failure comes; a dropped response future
    /// records nothing), neither as `classification="success"` nor at all.
    #[test]
    fn a_cancelled_request_is_in_istios_series_and_in_none_of_linkerds() {
        let mut t = store();
        t.record(Reporter::Destination, 0, 0, 200, 0, MILLIS);
        t.record(Reporter::Destination, 0, 0, 0, flags::DC, MILLIS);
        let codes = |naming| {
            let mut codes: Vec<String> = t
                .labelled_series(naming)
                .iter()
                .filter_map(|x| {
                    let code = x.label("response_code").or(x.label("status_code"))?;
                    Some(format!("{}={code}", x.name))
                })
                .collect();
            codes.dedup();
            codes
        };
        assert!(codes(Naming::Istio).contains(&"istio_requests_total=0".to_string()));
        assert!(codes(Naming::Linkerd).iter().all(|c| c.ends_with("=200")));
        assert!(codes(Naming::Linkerd).contains(&"response_total=200".to_string()));
    }

    /// Envoy joins the flags with commas in the order of its `CoreResponseFlag` bits (envoy
    /// `envoy/stream_info/stream_info.h`: UH, UT, UR, UF, UC, UO, NR, DI, FI, ..., DC, URX).
    #[test]
    fn flags_render_in_envoy_order() {
        use flags::*;
        let cases = [
            (0, "-"),
            (URX | UF, "UF,URX"),
            (UT | UH, "UH,UT"),
            (UC | UR, "UR,UC"),
            (URX | UO | UC, "UC,UO,URX"),
            (FI | DI, "DI,FI"),
            (NR | UO, "UO,NR"),
            (URX | FI | UT, "UT,FI,URX"),
            (URX | DC | FI, "FI,DC,URX"),
        ];
        for (f, want) in cases {
            assert_eq!(flags::render(f), want, "{f:#x}");
        }
    }
}
