//! A mesh without network or sidecar latency (the M/M/c shape of `fledge_simulator::mmc_mesh`)
//! hands a pod's answer back in the same instant. When nothing else is due then, the mesh handles
//! that response at once instead of queueing it; the order of events is the queue's, so every
//! figure, the count of events processed included, must be what queueing every response gave.
//! The expected values were recorded with every response queued (before the shortcut).

use fledge_simulator::engine::SECONDS;
use fledge_simulator::mmc_mesh;

/// (events, requests, completed, attempts, queued, total wait in ns, destination duration sum
/// in ms) after 20,000 simulated seconds of M/M/c with c = 4 at load 0.8, seed 7.
fn figures() -> (u64, u64, u64, u64, u64, u128, f64) {
    let mut mesh = mmc_mesh(7, 4, 0.8, 1.0).expect("a valid M/M/c model");
    mesh.run_until(20_000 * SECONDS);
    let s = mesh.stats();
    let v = mesh.version_id("mmc", "primary").expect("its one version");
    let q = mesh.queue_stats(v);
    let d = mesh.destination_stats(v, 0, 20_000 * SECONDS);
    (
        s.events,
        s.requests,
        s.completed,
        s.attempts,
        q.queued,
        q.total_wait,
        d.duration_sum_ms,
    )
}

#[test]
fn responses_handled_at_once_keep_every_figure_and_the_event_count() {
    let got = figures();
    let queued_every_response = (
        261_187,
        64_283,
        64_281,
        64_283,
        38_981,
        48_618_798_403_410,
        112_891_892.35,
    );
    assert_eq!(got, queued_every_response);
}
