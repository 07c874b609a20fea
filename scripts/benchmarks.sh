#!/usr/bin/env bash
# The benchmark suite, end to end: every case in scenarios/benchmarks/ at 1,000 seeds under the
# scenario's Canary and `flagger-default`, each case's per-seed results written to
# scenarios/benchmarks/results/CASE.json, then the README's benchmark table and
# scenarios/benchmarks/results/benchmarks.svg rendered from those results.
#
#   scripts/benchmarks.sh                  run the suite (about 10 minutes on 2 cores), publish
#   scripts/benchmarks.sh --publish-only   re-render the table and the plot from the results
#
# The simulator's tests check that the README and the plot are what the committed results
# render, that the results are of the current scenario files and policies, and that a few
# seeds of each case still give the committed outcomes.
set -euo pipefail

cd "$(git rev-parse --show-toplevel)"
# `cargo run` rather than the binary's path: a shared target dir's target/release/fledge-sim
# may be another checkout's by the time the suite ends.
sim() { cargo run --release --quiet --bin fledge-sim -- "$@"; }
results=scenarios/benchmarks/results

if [ "${1:-}" != "--publish-only" ]; then
    for case in scenarios/benchmarks/*.yaml; do
        sim compare "$case" --seeds 1000 --out "$results/$(basename "$case" .yaml).json"
    done
fi
sim publish "$results"/*.json --readme README.md --svg "$results/benchmarks.svg"
