//! `cargo bench -p fledge-simulator --bench mesh -- [reference HOURS RPS | mmc C LOAD SECONDS]`
//!
//! `reference` runs the reference mesh (default 24 simulated hours at 1,000 rps) and prints
//! requests/s, events/s and peak RSS. `mmc` runs the M/M/c model matching
//! `simulator/bench/mmc_simpy.py` and prints one JSON line.

use fledge_simulator::engine::SECONDS;
use fledge_simulator::{BenchOptions, bench, bench_mmc};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    // cargo passes `--bench`; keep only our positional arguments.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.first().map(String::as_str) {
        Some("mmc") => {
            let c: u32 = arg(&args, 1, 4);
            let load: f64 = arg(&args, 2, 0.8);
            let seconds: f64 = arg(&args, 3, 1_000_000.0);
            let r = bench_mmc(1, c, load, 1.0, (seconds * SECONDS as f64) as u64)
                .expect("valid M/M/c model");
            println!(
                "{{\"engine\":\"fledge\",\"c\":{c},\"load\":{load},\"requests\":{},\"wall_seconds\":{:.4},\"requests_per_second\":{:.0}}}",
                r.requests, r.wall_seconds, r.requests_per_second
            );
        }
        _ => {
            let hours: f64 = arg(&args, 1, 24.0);
            let rps: f64 = arg(&args, 2, 1000.0);
            let opts = BenchOptions {
                seed: 1,
                rps,
                duration: (hours * 3600.0 * SECONDS as f64) as u64,
                ..BenchOptions::default()
            };
            let r = bench(&opts).expect("reference mesh builds");
            println!("{r}");
        }
    }
}
