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

mod buckets;
mod counter_names;
mod durations;
mod exposition;
pub mod flags;
mod labels;
mod proxy;
mod series;

pub use buckets::{DURATION_BUCKETS_MS, NUM_BUCKETS, WindowStats, histogram_quantile};
pub use durations::Durations;
pub use labels::Reporter;
pub use proxy::ProxyCounters;
pub use series::Naming;

pub(crate) use counter_names::{PROXY_COUNTERS, ROLLOUT_COUNTERS, counter_names};
pub(crate) use labels::{DestLabels, SourceLabels};
pub(crate) use series::LabelledSeries;

use std::collections::VecDeque;

use crate::engine::SimTime;

use buckets::bucket_bounds_ns;

#[derive(Clone, Copy, Debug)]
struct SeriesKey {
    reporter: Reporter,
    source: u32,
    dest: u32,
    code: u16,
    flags: u16,
}

/// No series recorded yet in a slot ([`Telemetry::record`]'s last-series cache).
const NO_SERIES: (u16, u16, u32) = (0, 0, u32::MAX);

// requests, sum in microseconds, then NUM_BUCKETS non-cumulative bucket counts
const STRIDE: usize = 2 + NUM_BUCKETS;

struct Snapshot {
    time: SimTime,
    data: Vec<u64>,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MILLIS;

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
}
