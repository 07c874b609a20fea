#!/usr/bin/env bash
# Runs the same M/M/c model in SimPy and in fledge-simulator, in alternating rounds, and prints the
# ratio of simulated requests per second: per wall-clock second, and per CPU second of the
# simulating thread (on a shared, loaded machine the wall clock also counts the time other
# processes had the CPU; the CPU time does not). SimPy is installed from PyPI into a throwaway
# venv; it is not a project dependency.
#
# Usage: simulator/bench/run-simpy.sh [C] [LOAD] [SIMULATED_SECONDS] [ROUNDS]
#   SIMPY_SECONDS  simulated seconds of SimPy's runs (default SIMULATED_SECONDS; SimPy needs
#                  about 20 us of CPU a request, the simulator well under 1 us)
#   BENCH          the `mesh` bench executable to run (default: built here by cargo)
#   OLD_BENCH      the `mesh` bench executable of another build, run in each round too (to
#                  compare a change side by side)
#   SIMPY_VENV     where the venv lives (default /tmp/fledge-simpy-venv)
set -euo pipefail

C="${1:-4}"
LOAD="${2:-0.8}"
SECONDS_SIM="${3:-1000000}"
ROUNDS="${4:-1}"
SIMPY_SECONDS="${SIMPY_SECONDS:-$SECONDS_SIM}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${SIMPY_VENV:-/tmp/fledge-simpy-venv}"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c "import simpy" 2>/dev/null || "$VENV/bin/pip" install --quiet simpy

# Build once, then run the bench executable itself in every round.
bench="${BENCH:-$(cd "$ROOT" && cargo bench --quiet -p fledge-simulator --bench mesh --no-run 2>&1 |
  sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n 1)}"
[ -x "$bench" ] || { echo "run-simpy: could not build the mesh bench" >&2; exit 2; }

results="$(mktemp)"
trap 'rm -f "$results"' EXIT
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  if [ -n "${OLD_BENCH:-}" ]; then
    echo "{\"round\":$round,\"build\":\"old\",\"r\":$("$OLD_BENCH" mmc "$C" "$LOAD" "$SECONDS_SIM" | tail -n 1)}" | tee -a "$results"
  fi
  echo "{\"round\":$round,\"build\":\"new\",\"r\":$("$bench" mmc "$C" "$LOAD" "$SECONDS_SIM" | tail -n 1)}" | tee -a "$results"
  echo "{\"round\":$round,\"build\":\"simpy\",\"r\":$("$VENV/bin/python" "$HERE/mmc_simpy.py" "$C" "$LOAD" "$SIMPY_SECONDS")}" | tee -a "$results"
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$results" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def rates(build, key):
    return [r["r"][key] for r in runs if r["build"] == build and r["r"].get(key)]
for key, what in (("requests_per_second", "wall"), ("requests_per_cpu_second", "cpu")):
    simpy = rates("simpy", key)
    if not simpy:
        continue
    s_mean, s_best = sum(simpy) / len(simpy), max(simpy)
    print(f"{what}: simpy {s_mean:,.0f} requests/s mean, {s_best:,.0f} best of {len(simpy)}")
    for build in ("old", "new"):
        xs = rates(build, key)
        if xs:
            mean, best = sum(xs) / len(xs), max(xs)
            print(f"{what}: {build} fledge {mean:,.0f} requests/s mean, {best:,.0f} best: "
                  f"{mean / s_mean:.1f}x simpy (means), {best / s_best:.1f}x (bests)")
PY
