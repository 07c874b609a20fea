//! The names of the counters a scenario's `expect.counters` can bound, and how to read them.

use super::ProxyCounters;

/// A proxy counter's name in `expect.counters` and how to read it.
pub(crate) type ProxyCounter = (&'static str, fn(&ProxyCounters) -> u64);

/// The clients' proxy counters a scenario can bound (Envoy's stats, named in snake case).
pub(crate) const PROXY_COUNTERS: [ProxyCounter; 13] = [
    ("connections_opened", |p| p.connections_opened),
    ("connections_closed", |p| p.connections_closed),
    ("handshakes", |p| p.handshakes),
    ("handshake_failures", |p| p.handshake_failures),
    ("connect_failures", |p| p.connect_failures),
    ("ejections_enforced", |p| p.ejections_enforced),
    ("ejections_overflow", |p| p.ejections_overflow),
    ("ejections_detected", |p| p.ejections_detected),
    ("pending_overflow", |p| p.pending_overflow),
    ("retry_overflow", |p| p.retry_overflow),
    ("retries", |p| p.retries),
    ("timeouts", |p| p.timeouts),
    ("mirrored", |p| p.mirrored),
];

/// Counters of the whole run rather than of a proxy: certificate rotations, and the client
/// requests each version answered (after retries).
pub(crate) const MESH_COUNTERS: [&str; 3] =
    ["cert_rotations", "requests_primary", "requests_canary"];

/// The counters of a rollout's primary and canary: a scenario without a Canary has none.
pub(crate) const ROLLOUT_COUNTERS: [&str; 2] = ["requests_primary", "requests_canary"];

/// Every name `expect.counters` accepts.
pub(crate) fn counter_names() -> impl Iterator<Item = &'static str> {
    PROXY_COUNTERS
        .iter()
        .map(|c| c.0)
        .chain(MESH_COUNTERS.iter().copied())
}
