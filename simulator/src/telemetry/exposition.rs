//! The live counters in the Prometheus text exposition format: the labelled request series,
//! then the proxies' own counters.

use std::fmt::Write as _;

use super::{Naming, ProxyCounters, Telemetry};

/// A proxy counter's metric name and accessor.
type ProxyMetric = (&'static str, fn(&ProxyCounters) -> u64);

impl Telemetry {
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
}
