#!/usr/bin/env bash
# Runs the same M/M/c model in SimPy and in fledge-simulator, and prints the ratio of simulated
# requests per wall-clock second. SimPy is installed from PyPI into a throwaway venv; it is not a
# project dependency.
#
# Usage: simulator/bench/run-simpy.sh [C] [LOAD] [SIMULATED_SECONDS]
set -euo pipefail

C="${1:-4}"
LOAD="${2:-0.8}"
SECONDS_SIM="${3:-1000000}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${SIMPY_VENV:-/tmp/fledge-simpy-venv}"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c "import simpy" 2>/dev/null || "$VENV/bin/pip" install --quiet simpy

simpy_json="$("$VENV/bin/python" "$HERE/mmc_simpy.py" "$C" "$LOAD" "$SECONDS_SIM")"
rust_json="$(cd "$ROOT" && cargo bench --quiet -p fledge-simulator --bench mesh -- mmc "$C" "$LOAD" "$SECONDS_SIM" 2>/dev/null | tail -n 1)"

echo "$simpy_json"
echo "$rust_json"
python3 - "$simpy_json" "$rust_json" <<'PY'
import json, sys
s, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"fledge / simpy simulated requests per wall second: {r['requests_per_second'] / s['requests_per_second']:.1f}x")
PY
