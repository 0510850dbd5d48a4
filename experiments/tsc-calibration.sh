#!/usr/bin/env bash
# What breaks perftest's cycle-counter calibration in a lab node (issue 20)?
#
#   experiments/tsc-calibration.sh [ROUNDS]
#
# Boots a one-node lab and runs ROUNDS calibrations (tsc-calibration/calib.c: perftest's
# regression of rdtsc against gettimeofday, refused below r^2 0.9) three ways, side by side:
# on a quiet node; while the host polls the node with `ps` every 300 ms through the lab's exec
# (what the lab tests did while waiting for perftest to exit); and while a `tail --pid` waits in
# the node (what they do now). Prints the failure rate (r^2 < 0.9) of each and writes the raw
# lines to experiments/results/tsc-calibration-<UTC>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-30}
scripts/setup.sh
cargo build --workspace --locked
L=$PWD/target/debug/rdmig-lab
lab=(--name tsc)
out=experiments/results/tsc-calibration-$(date -u +%Y%m%dT%H%M%SZ).txt
exec 9>>/tmp/rdmig-lab.lock
flock 9
trap '"$L" "${lab[@]}" down >/dev/null 2>&1 || true' EXIT
"$L" "${lab[@]}" up --from-build --nodes 1 9>&-
share=/run/rdmig/tsc/shared
mkdir -p "$share"
gcc -O2 -o "$share/calib" experiments/tsc-calibration/calib.c

run() { "$L" "${lab[@]}" exec node1 --timeout 600 -- /mnt/lab/calib "$ROUNDS"; }
echo "== quiet" | tee "$out"
run | tee -a "$out"
echo "== polled with ps every 300 ms" | tee -a "$out"
( while :; do "$L" "${lab[@]}" exec node1 -- ps -o stat= -p 1 >/dev/null 2>&1; sleep 0.3; done ) &
poller=$!
run | tee -a "$out"
kill "$poller"; wait "$poller" 2>/dev/null || true
echo "== waited for with tail --pid" | tee -a "$out"
"$L" "${lab[@]}" exec node1 --timeout 600 -- sh -c '/mnt/lab/calib '"$ROUNDS"' & p=$!; tail --pid $p -s 1 -f /dev/null & wait $p' | tee -a "$out"
python3 - "$out" <<'PY'
import re, sys
blocks, cur = {}, None
for line in open(sys.argv[1]):
    if line.startswith("== "):
        cur = line[3:].strip(); blocks[cur] = []
    elif cur and line.startswith("r2="):
        blocks[cur].append(float(re.match(r"r2=([0-9.]+)", line).group(1)))
for name, r2 in blocks.items():
    bad = sum(1 for v in r2 if v < 0.9)
    print(f"{name}: {bad} of {len(r2)} calibrations below r^2 0.9 ({100 * bad / max(len(r2), 1):.0f} %), lowest r^2 {min(r2):.3f}")
PY
echo "raw: $out"
