//! `/metrics`: the labelled view of the request telemetry in the Prometheus text exposition
//! format, named as the scenario's data plane names it. No timestamps: the scraper stamps each
//! sample with its own clock, which is the wall clock the live mesh follows.

use crate::telemetry::{Naming, Telemetry};

/// The exposition of every series created so far.
pub(crate) fn render(telemetry: &Telemetry, naming: Naming) -> String {
    let mut out = String::new();
    telemetry.write_series(naming, &mut out);
    out
}
