//! `fledge-sim serve`: the live mode (see [`crate::serve`]).

use std::net::TcpListener;
use std::path::Path;
use std::process::ExitCode;

use super::EXIT_BAD_INPUT;
use crate::harness::Live;
use crate::scenario::Scenario;
use crate::serve::Server;

/// The fastest the clock may be scaled: beyond it a modest scenario outruns one core.
const MAX_SPEED: f64 = 100.0;

pub(super) fn run(file: &Path, listen: &str, speed: f64, seed: Option<u64>) -> ExitCode {
    if !(speed.is_finite() && speed > 0.0 && speed <= MAX_SPEED) {
        sayln!("error: --speed: must be above 0 and at most {MAX_SPEED}, got {speed}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let scenario = match Scenario::load(file) {
        Ok(s) => s,
        Err(e) => {
            sayln!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    // The first variant: its Canary names the provider whose objects route the service.
    let Some(variant) = scenario.variants.first() else {
        sayln!(
            "error: {}: the scenario has no variant to serve",
            file.display()
        );
        return ExitCode::from(EXIT_BAD_INPUT);
    };
    let live = match Live::new(&scenario, variant, seed.unwrap_or(scenario.seed)) {
        Ok(l) => l,
        Err(e) => {
            sayln!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let listener = match TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            sayln!("error: --listen {listen}: cannot listen there: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let address = listener
        .local_addr()
        .map_or_else(|_| listen.to_string(), |a| a.to_string());
    for w in live.warnings() {
        sayln!("warning: {w}");
    }
    // The address on stdout, flushed: with `--listen 127.0.0.1:0` it is how a caller learns
    // the port.
    super::run::emit(&format!(
        "serving {} ({}, {} data plane) on http://{address} at {speed}x the wall clock\n",
        scenario.name,
        live.provider(),
        match scenario.data_plane {
            crate::mesh::DataPlane::Istio => "Istio",
            crate::mesh::DataPlane::Linkerd => "Linkerd",
        }
    ));
    Server::new(live, scenario.data_plane, speed).serve(&listener)
}
