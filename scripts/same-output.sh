#!/usr/bin/env bash
# Checks that `fledge-sim run --json` prints byte-identical output (and exits with the same
# status) at a base revision and in the working tree, for every scenario under scenarios/
# at seeds 1 to 20. Meant for changes that must not change behaviour (refactors, moves).
#
#   scripts/same-output.sh [REV] [LAST_SEED]      REV defaults to HEAD~1, LAST_SEED to 20
#
# Both sides run the working tree's scenario files, so only the simulator differs.
# The base is built in a temporary `git worktree` with its own target dir, kept between runs
# (target/same-output) so that checking again against the same or a nearby base is incremental.
# Release, not debug: a full check runs the simulator 2 x 17 x 20 times, which takes minutes
# in debug and seconds in release, and the incremental release rebuild of the two workspace
# crates costs less than that difference.
set -euo pipefail

rev=${1:-HEAD~1}
last_seed=${2:-20}
root=$(git rev-parse --show-toplevel)
cd "$root"
base=$(git rev-parse --verify --quiet "$rev^{commit}") || {
    echo "same-output: '$rev' is not a commit in this repository" >&2
    exit 2
}
target=${CARGO_TARGET_DIR:-$root/target}
base_target=$target/same-output

work=$(mktemp -d)
tree=$work/base
cleanup() {
    git worktree remove --force "$tree" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "same-output: building ${base:0:9} ($rev) and the working tree (release)" >&2
git worktree add --quiet --detach "$tree" "$base"
(cd "$tree" && CARGO_TARGET_DIR=$base_target cargo build --quiet --release -p fledge-simulator --bin fledge-sim)
cp "$base_target/release/fledge-sim" "$work/old-sim"
git worktree remove --force "$tree"
cargo build --quiet --release -p fledge-simulator --bin fledge-sim
new_sim=$target/release/fledge-sim

mapfile -t scenarios < <(find scenarios -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
if [ ${#scenarios[@]} -eq 0 ]; then
    echo "same-output: no scenario files under scenarios/" >&2
    exit 2
fi

runs=0
differ=()
for file in "${scenarios[@]}"; do
    for seed in $(seq 1 "$last_seed"); do
        runs=$((runs + 1))
        old_status=0
        new_status=0
        "$work/old-sim" run --json --seed "$seed" "$file" >"$work/old.json" 2>/dev/null || old_status=$?
        "$new_sim" run --json --seed "$seed" "$file" >"$work/new.json" 2>/dev/null || new_status=$?
        if [ "$old_status" != "$new_status" ] || ! cmp -s "$work/old.json" "$work/new.json"; then
            differ+=("$file --seed $seed (exit $old_status -> $new_status)")
        fi
    done
done

if [ ${#differ[@]} -eq 0 ]; then
    echo "same-output: identical: $runs runs (${#scenarios[@]} scenarios x seeds 1-$last_seed), ${base:0:9} ($rev) vs working tree"
    exit 0
fi
printf 'same-output: differs: %s\n' "${differ[@]}" >&2
echo "same-output: DIFFERENT: ${#differ[@]} of $runs runs differ between ${base:0:9} ($rev) and the working tree"
exit 1
