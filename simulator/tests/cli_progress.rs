//! The progress `fledge-sim run` shows on a terminal: the harness reports the virtual time
//! between ticks too, every so many events, so that heavy traffic (a long tick in wall time)
//! still moves the progress line. No wall-clock timing is asserted.

mod support;

use std::path::Path;

use fledge_simulator::engine::{MILLIS, SimTime};
use fledge_simulator::harness;
use fledge_simulator::scenario::Scenario;
use support::*;

/// Events between reports within a tick here: few, so a short run has many slices.
const EVERY: u64 = 1_000;

#[test]
fn progress_is_reported_between_ticks_every_so_many_events() {
    let scenario = Scenario::parse(BASE, Path::new("base.yaml")).expect("a valid scenario");
    let variant = &scenario.variants[0];
    let mut reported: Vec<SimTime> = Vec::new();
    let result = harness::run_watched(&scenario, variant, 1, EVERY, &mut |t| reported.push(t))
        .expect("the run");
    // Ticks fall on whole milliseconds (multiples of the analysis look); events almost never.
    let between_ticks = reported.iter().filter(|t| *t % MILLIS != 0).count();
    let slices = result.events_processed / EVERY;
    assert!(slices >= 5, "{} events", result.events_processed);
    assert!(
        between_ticks as u64 >= slices / 2,
        "{between_ticks} reports between ticks for {} events: {reported:?}",
        result.events_processed
    );
    assert!(reported.windows(2).all(|w| w[0] <= w[1]), "{reported:?}");
}
