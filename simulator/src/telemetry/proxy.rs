//! The proxies' own counters per (source, destination version): connections, handshakes,
//! ejections, overflows, retries; not request series.

use super::Telemetry;

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

impl Telemetry {
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
}
