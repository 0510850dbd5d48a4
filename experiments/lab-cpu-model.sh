#!/usr/bin/env bash
# The lab nodes' CPU model under TCG, side by side in one run (`rdmig-lab up --tcg-cpu`):
# by default QEMU's `max` against `max,-erms`, the lab's default.
#
#   experiments/lab-cpu-model.sh [ROUNDS] [MODEL...]   (default 2 rounds, max and max,-erms; as root)
#
# Why it matters: with ERMS the guest kernel copies and clears memory with `rep movsb`/`rep
# stosb`, which TCG emulates one byte per step. Per round, boots a 2-node lab with each model in
# turn (the order rotates between rounds so drift favours none), times the boot and, on node1,
# what the lab's scenarios spend their time on: a 200 MB pipe through md5sum (copies to and from
# user space), 100 MiB of fresh pages touched (each one zeroed by the kernel), program start-up
# (200 runs of /bin/true), `criu check`; then ib_send_bw between the nodes (20000 messages of
# 4 KiB, one way and both ways), and a 64 MiB process moved node1 -> node2 by `rdmig migrate`
# (stop-and-copy over TCP: CRIU's dump, the transfer, the restore). Prints each measure's
# median per model and its ratio to the first model, and writes every run as JSON to
# experiments/results/lab-cpu-model-<time>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [ROUNDS] [MODEL...]" >&2; exit 2; }
shift || true
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(max max,-erms)
scripts/setup.sh
cargo build --locked --workspace
R=$PWD/target/debug/rdmig-lab
lab=(--name cpumodel)
share=/run/rdmig/cpumodel/shared
out=experiments/results/lab-cpu-model-$(date -u +%Y%m%dT%H%M%SZ).json
mkdir -p experiments/results
runs=$(mktemp)

# What node1 runs: one "name milliseconds" line per measure.
probe='
t() { n=$1; shift; s=$(date +%s%N); "$@" >/dev/null 2>&1; echo "$n $(( ($(date +%s%N) - s) / 1000000 ))"; }
t pipe_200mb_md5sum sh -c "head -c 200000000 /dev/zero | md5sum"
t touch_100mib_pages python3 -c "b = bytearray(100 << 20); b[::4096] = b\"\\1\" * (25600)"
t exec_true_x200 sh -c "for i in \$(seq 200); do /bin/true; done"
t criu_check criu check
'

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

run() { # model round
	local s up lines bw1 bw2 pid mig
	s=$(date +%s%N)
	"$R" "${lab[@]}" up --from-build --nodes 2 --tcg-cpu "$1" >/dev/null
	up=$(ms_since "$s")
	lines=$("$R" "${lab[@]}" exec node1 -- sh -c "$probe")
	s=$(date +%s%N)
	"$R" "${lab[@]}" perftest --test ib_send_bw -n 20000 -s 4096 --json >/dev/null
	bw1=$(ms_since "$s")
	s=$(date +%s%N)
	"$R" "${lab[@]}" perftest --test ib_send_bw -n 20000 -s 4096 -b --json >/dev/null
	bw2=$(ms_since "$s")
	rm -f "$share/w.json"
	pid=$("$R" "${lab[@]}" spawn node1 -- /mnt/lab/bin/rdmig-workload --mem 64M --dirty-rate 0 --report /mnt/lab/w.json)
	for _ in $(seq 600); do
		python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("phase") == "filled" else 1)' "$share/w.json" 2>/dev/null && break
		sleep 0.5
	done
	s=$(date +%s%N)
	"$R" "${lab[@]}" on node1 --to-node node2 -- migrate "$pid" --strategy stop-and-copy --transport tcp --json >"$share/report.json" ||
		{ echo "the migration failed with --tcg-cpu $1:" >&2; cat "$share/report.json" >&2; exit 1; }
	mig=$(ms_since "$s")
	python3 - "$1" "$2" "$up" "$bw1" "$bw2" "$mig" "$lines" "$share/report.json" >>"$runs" <<'EOF'
import json, sys
model, rnd, up, bw1, bw2, mig, lines, report = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:7]), sys.argv[7], sys.argv[8]
r = json.load(open(report))
row = {"model": model, "round": rnd, "up_ms": up}
for l in lines.splitlines():
    k, v = l.split()
    row[k + "_ms"] = int(v)
row.update({"ib_send_bw_20000x4k_ms": bw1, "ib_send_bw_20000x4k_both_ways_ms": bw2,
            "migrate_64mib_ms": mig, "migrate_64mib_downtime_ms": round(r["summary"]["downtime_ns"] / 1e6)})
print(json.dumps(row))
EOF
	"$R" "${lab[@]}" down >/dev/null
	tail -n1 "$runs" >&2
}

exec 9>>/tmp/rdmig-lab.lock
flock -w 3600 9
trap '"$R" "${lab[@]}" down >/dev/null 2>&1 || true; rm -f "$runs"' EXIT
for r in $(seq 1 "$rounds"); do
	for i in "${!models[@]}"; do run "${models[$(((i + r - 1) % ${#models[@]}))]}" "$r"; done
done
python3 - "$runs" "$out" "$rounds" "${models[@]}" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
models = sys.argv[4:]
keys = [k for k in rows[0] if k.endswith("_ms")]
med = {m: {k: statistics.median(r[k] for r in rows if r["model"] == m) for k in keys} for m in models}
print(f"{'measure':34}" + "".join(f"{m + ' ms':>22}" for m in models) + "".join(f"{m + '/' + models[0]:>24}" for m in models[1:]))
for k in keys:
    print(f"{k:34}" + "".join(f"{med[m][k]:22.0f}" for m in models) + "".join(f"{med[m][k] / med[models[0]][k]:24.2f}" for m in models[1:]))
json.dump({"rounds": int(sys.argv[3]), "models": models, "runs": rows, "medians": med}, open(sys.argv[2], "w"), indent=1)
print("written:", sys.argv[2])
EOF
