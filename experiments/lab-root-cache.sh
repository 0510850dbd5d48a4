#!/usr/bin/env bash
# The lab nodes' 9p root without a cache (every lookup and read asks the host) against
# cache=loose (`rdmig-lab up --root-cache`), side by side in one run.
#
#   experiments/lab-root-cache.sh [ROUNDS]        (default 2 rounds; as root)
#
# Per round, boots a 2-node lab with each cache mode in turn (the order alternates between rounds
# so drift does not favour one), times the boot and, on node1, what the lab's scenarios spend
# their time on: program start-up from the root (500 runs of /bin/true, 50 of `rdmig --version`),
# `criu check`, `podman --version`, a directory listing with stat (`ls -l` of a large directory),
# a short python loop (mostly the interpreter's start-up: its modules come from the root), then an
# ib_send_bw between the nodes. Prints each measure's median per mode and the ratio loose/none, and writes every run as
# JSON to experiments/results/lab-root-cache-<time>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
scripts/setup.sh
cargo build --locked -p rdmig-lab
R=$PWD/target/debug/rdmig-lab
lab=(--name rcache)
out=experiments/results/lab-root-cache-$(date -u +%Y%m%dT%H%M%SZ).json
mkdir -p experiments/results
runs=$(mktemp)

# What a node runs: one "name seconds" line per measure.
probe='
t() { n=$1; shift; s=$(date +%s%N); "$@" >/dev/null 2>&1; echo "$n $(( ($(date +%s%N) - s) / 1000000 ))"; }
t exec_true_x500 sh -c "for i in \$(seq 500); do /bin/true; done"
t rdmig_version_x50 sh -c "for i in \$(seq 50); do rdmig --version; done"
t criu_check criu check
t podman_version podman --version
t ls_l_x3 sh -c "for i in 1 2 3; do ls -l /usr/lib/x86_64-linux-gnu; done"
t python_loop python3 -c "import json; [json.dumps(list(range(1000))) for _ in range(2000)]"
'

run() { # mode round
	local s e lines pt
	s=$(date +%s%N)
	"$R" "${lab[@]}" up --nodes 2 --root-cache "$1" >/dev/null
	e=$(date +%s%N)
	lines=$("$R" "${lab[@]}" exec node1 -- sh -c "$probe")
	s2=$(date +%s%N)
	"$R" "${lab[@]}" perftest --test ib_send_bw -n 3000 -s 4096 --json >/dev/null
	pt=$(( ($(date +%s%N) - s2) / 1000000 ))
	"$R" "${lab[@]}" down >/dev/null
	python3 - "$1" "$2" "$(( (e - s) / 1000000 ))" "$pt" "$lines" >>"$runs" <<'EOF'
import json, sys
mode, rnd, up_ms, perf_ms, lines = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
row = {"mode": mode, "round": rnd, "up_ms": up_ms, "ib_send_bw_3000x4k_ms": perf_ms}
for l in lines.splitlines():
    k, v = l.split()
    row[k + "_ms"] = int(v)
print(json.dumps(row))
EOF
	tail -n1 "$runs" >&2
}

exec 9>/tmp/rdmig-lab.lock
flock -w 3600 9
trap '"$R" "${lab[@]}" down >/dev/null 2>&1 || true; rm -f "$runs"' EXIT
for r in $(seq 1 "$rounds"); do
	if [ $((r % 2)) -eq 1 ]; then order=(none loose); else order=(loose none); fi
	for m in "${order[@]}"; do run "$m" "$r"; done
done
python3 - "$runs" "$out" "$rounds" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = [k for k in rows[0] if k.endswith("_ms")]
med = {m: {k: statistics.median(r[k] for r in rows if r["mode"] == m) for k in keys} for m in ("none", "loose")}
print(f"{'measure':28} {'none ms':>9} {'loose ms':>9} {'loose/none':>10}")
for k in keys:
    print(f"{k:28} {med['none'][k]:9.0f} {med['loose'][k]:9.0f} {med['loose'][k] / med['none'][k]:10.2f}")
json.dump({"rounds": int(sys.argv[3]), "runs": rows, "medians": med}, open(sys.argv[2], "w"), indent=1)
print("written:", sys.argv[2])
EOF
