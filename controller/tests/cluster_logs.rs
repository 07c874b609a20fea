//! Logs: JSON lines, each naming the Canary being reconciled. Alone in its test binary because
//! it installs the process-wide subscriber.
#![cfg(feature = "cluster")]

mod cluster_support;

use std::sync::Arc;

use cluster_support::*;
use fledge_controller::cluster::telemetry;
use serde_json::json;

/// Log lines written into memory.
#[derive(Clone, Default)]
struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn every_log_line_of_a_reconcile_is_json_naming_the_canary() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = telemetry::json_logs(
        tracing_subscriber::EnvFilter::new("fledge_controller=info"),
        move || writer.clone(),
    );
    // The global default: a scoped subscriber misses events whose callsites other tests'
    // threads registered first, which made this test flaky.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let c = cluster_with(canary(json!({})), Some(deployment("podinfo:1")));
    c.reconcile(&c.context()).await.unwrap();
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let parsed: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(!parsed.is_empty());
    for line in &parsed {
        assert_eq!(line["span"]["namespace"], "test", "{line}");
        assert_eq!(line["span"]["canary"], "podinfo", "{line}");
    }
}
