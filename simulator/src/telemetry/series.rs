//! The one labelled view of the request telemetry: every series as a Prometheus scraping the
//! simulated proxies would store it (metric name, labels, value at each scrape). The text
//! exposition ([`Telemetry::render_prometheus`]) prints it, and the PromQL evaluator
//! ([`crate::promql`]) reads it, so a template evaluated in the simulator sees what the live mode
//! serves on `/metrics`.
//!
//! Series appear at the first request with their labels, as Istio and Linkerd create them; a
//! scrape taken before a series existed has no sample of it.

use super::{DURATION_BUCKETS_MS, NUM_BUCKETS, Reporter, STRIDE, SeriesKey, Telemetry, flags};
use crate::engine::MILLIS;
use std::collections::BTreeMap;

/// Label names and values, in exposition order.
type Labels = Vec<(&'static str, String)>;

/// Whose metric names and labels the view uses: those of the mesh whose proxies are simulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// `istio_requests_total`, `istio_request_duration_milliseconds_*`, from both reporters.
    Istio,
    /// Linkerd's inbound `response_total` and `response_latency_ms_*` (from the destination
    /// proxies; outbound series are not simulated). The latency buckets are Istio's bounds.
    Linkerd,
}

/// Which counter of a request series a labelled series reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Requests,
    SumMs,
    /// The cumulative count of the buckets up to and including this one.
    Bucket(usize),
}

/// One series of the labelled view.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LabelledSeries {
    /// The metric name, e.g. `istio_requests_total`.
    pub(crate) name: &'static str,
    /// The family it belongs to, with its type (`counter`, `histogram`), for the exposition.
    pub(crate) family: (&'static str, &'static str),
    /// Label names and values, in exposition order.
    pub(crate) labels: Vec<(&'static str, String)>,
    /// The request series it sums: those whose rendered labels are these (two clients without
    /// a sidecar are both `unknown` to the server's sidecar, which keeps one counter for them,
    /// as Envoy keeps one stat per tag set), in creation order.
    keys: Vec<usize>,
    field: Field,
}

// Only `serve`'s tests look a label up; the exposition walks `labels` in order.
#[cfg(test)]
impl LabelledSeries {
    /// The value of one label, if the series has it.
    pub(crate) fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Telemetry {
    /// Every series created so far, named as `naming`'s proxies name them; in exposition order
    /// (each family together, series sorted by reporter, source, destination, code and flags).
    pub(crate) fn labelled_series(&self, naming: Naming) -> Vec<LabelledSeries> {
        let mut order: Vec<usize> = (0..self.keys.len())
            .filter(|&i| self.exposed(naming, &self.keys[i]))
            .collect();
        order.sort_by_key(|&i| {
            let k = &self.keys[i];
            (k.reporter, k.source, k.dest, k.code, k.flags)
        });
        let (total, histogram) = match naming {
            Naming::Istio => (
                "istio_requests_total",
                "istio_request_duration_milliseconds",
            ),
            Naming::Linkerd => ("response_total", "response_latency_ms"),
        };
        let (bucket, sum, count) = match naming {
            Naming::Istio => (
                "istio_request_duration_milliseconds_bucket",
                "istio_request_duration_milliseconds_sum",
                "istio_request_duration_milliseconds_count",
            ),
            Naming::Linkerd => (
                "response_latency_ms_bucket",
                "response_latency_ms_sum",
                "response_latency_ms_count",
            ),
        };
        let series = |name, family, labels, keys: &Vec<usize>, field| LabelledSeries {
            name,
            family,
            labels,
            keys: keys.clone(),
            field,
        };
        // Series whose labels render alike are one series (grouped by the counter's labels:
        // the histogram's drop only Linkerd's `classification`, which follows the code).
        let mut groups: Vec<(Labels, Vec<usize>)> = Vec::new();
        let mut group_of: BTreeMap<Labels, usize> = BTreeMap::new();
        for &i in &order {
            let labels = self.labels(naming, &self.keys[i], true);
            match group_of.get(&labels) {
                Some(&g) => groups[g].1.push(i),
                None => {
                    group_of.insert(labels.clone(), groups.len());
                    groups.push((labels, vec![i]));
                }
            }
        }
        for g in &mut groups {
            g.1.sort_unstable();
        }
        let mut out: Vec<LabelledSeries> = groups
            .iter()
            .map(|(labels, keys)| {
                series(
                    total,
                    (total, "counter"),
                    labels.clone(),
                    keys,
                    Field::Requests,
                )
            })
            .collect();
        for (_, keys) in &groups {
            let labels = self.labels(naming, &self.keys[keys[0]], false);
            for b in 0..NUM_BUCKETS {
                let le = DURATION_BUCKETS_MS
                    .get(b)
                    .map_or_else(|| "+Inf".to_string(), |ms| format!("{ms}"));
                let mut with_le = labels.clone();
                with_le.push(("le", le));
                out.push(series(
                    bucket,
                    (histogram, "histogram"),
                    with_le,
                    keys,
                    Field::Bucket(b),
                ));
            }
            out.push(series(
                sum,
                (histogram, "histogram"),
                labels.clone(),
                keys,
                Field::SumMs,
            ));
            out.push(series(
                count,
                (histogram, "histogram"),
                labels,
                keys,
                Field::Requests,
            ));
        }
        out
    }

    /// Whether a proxy reports the series: a source series needs the client's sidecar (a
    /// client without one keeps its figures for the run's result only). Linkerd's series are
    /// inbound only, and its proxy records a response when the response comes: a request the
    /// client cancelled before any (Envoy's code 0 `DC`) is in no `response_total` or
    /// latency series (linkerd2-proxy `linkerd/http/metrics/src/requests/service.rs`: the
    /// class is measured on the response body or a failed response future, and a dropped
    /// future records nothing).
    fn exposed(&self, naming: Naming, k: &SeriesKey) -> bool {
        match naming {
            Naming::Istio => {
                k.reporter == Reporter::Destination || self.sources[k.source as usize].sidecar
            }
            Naming::Linkerd => k.reporter == Reporter::Destination && k.flags & flags::DC == 0,
        }
    }

    fn labels(&self, naming: Naming, k: &SeriesKey, counter: bool) -> Vec<(&'static str, String)> {
        let s = &self.sources[k.source as usize];
        let d = &self.dests[k.dest as usize];
        // A client without a sidecar sends no peer metadata: the server's sidecar labels it
        // `unknown`, as Istio's standard metrics do for a peer they know nothing of.
        let (source, source_ns) = if s.sidecar {
            (s.workload.clone(), s.namespace.clone())
        } else {
            ("unknown".to_string(), "unknown".to_string())
        };
        match naming {
            Naming::Istio => vec![
                ("reporter", k.reporter.label().to_string()),
                ("source_workload", source),
                ("source_workload_namespace", source_ns),
                ("destination_workload", d.workload.clone()),
                ("destination_workload_namespace", d.namespace.clone()),
                ("destination_service", d.service.clone()),
                ("destination_version", d.version.clone()),
                ("response_code", k.code.to_string()),
                ("response_flags", flags::render(k.flags)),
            ],
            Naming::Linkerd => {
                let mut labels = vec![
                    ("direction", "inbound".to_string()),
                    ("namespace", d.namespace.clone()),
                    ("deployment", d.workload.clone()),
                    ("status_code", k.code.to_string()),
                ];
                if counter {
                    let class = if k.code >= 500 { "failure" } else { "success" };
                    labels.push(("classification", class.to_string()));
                }
                labels
            }
        }
    }

    /// The value of `series` in `data` (the live counters or a scrape); `None` when the series
    /// did not exist yet (none of its request series had been created).
    fn value_in(&self, series: &LabelledSeries, data: &[u64]) -> Option<f64> {
        let mut sum: Option<u64> = None;
        for &key in &series.keys {
            let base = key * STRIDE;
            let Some(fields) = data.get(base..base + STRIDE) else {
                break; // created after this scrape, as every later key
            };
            let v = match series.field {
                Field::Requests => fields[0],
                Field::SumMs => fields[1],
                Field::Bucket(b) => fields[2..=2 + b].iter().sum::<u64>(),
            };
            sum = Some(sum.unwrap_or(0) + v);
        }
        let sum = sum? as f64;
        Some(match series.field {
            Field::SumMs => sum / 1_000.0,
            _ => sum,
        })
    }

    /// The value of `series` in the live counters.
    pub(crate) fn live_value(&self, series: &LabelledSeries) -> f64 {
        self.value_in(series, &self.data).unwrap_or(0.0)
    }

    /// The samples of `series` at the retained scrapes taken within `[from, to]` (milliseconds,
    /// both ends included), oldest first.
    pub(crate) fn scraped(&self, series: &LabelledSeries, from: u64, to: u64) -> Vec<(u64, f64)> {
        self.snapshots
            .iter()
            .map(|s| (s.time / MILLIS, s))
            .filter(|(ms, _)| (from..=to).contains(ms))
            .filter_map(|(ms, s)| Some((ms, self.value_in(series, &s.data)?)))
            .collect()
    }
}
