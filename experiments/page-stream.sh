#!/usr/bin/env bash
# CRIU's pages streamed to the destination's page server while it dumps (--page-stream) against
# page images written first and sent afterwards (rdmig's default), same lab, one run.
#
#   experiments/page-stream.sh [SIZE_MIB] [ROUNDS] [TRANSPORT] [CPUS]   (defaults 256 3 tcp 1; as root)
#
# Per round, a workload of SIZE_MIB (no dirtying) is moved node1 -> node2 with stop-and-copy
# once each way of moving pages; the order alternates between rounds, so neither always runs on
# a warmer node. Reported per migration: downtime, and final dump + transfer (the pages move in
# the first when streamed, in the second otherwise). Medians and their ratio are printed, all
# runs written to experiments/results/page-stream-<time>.json. With CPUS=1 (the lab's default)
# dumping and sending share one emulated CPU, so overlapping them can only save waiting on the
# network; CPUS=2 gives the overlap a core of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-256}
rounds=${2:-3}
transport=${3:-tcp}
cpus=${4:-1}
[[ "$size" =~ ^[1-9][0-9]*$ && "$rounds" =~ ^[1-9][0-9]*$ && "$cpus" =~ ^[1-4]$ ]] || { echo "usage: $0 [SIZE_MIB] [ROUNDS] [rdma|tcp] [CPUS 1-4]" >&2; exit 2; }
[[ "$transport" == rdma || "$transport" == tcp ]] || { echo "transport: rdma or tcp, not $transport" >&2; exit 2; }
scripts/setup.sh
cargo build --workspace --locked
R=$PWD/target/debug/rdmig-lab # the lab tool; `on NODE -- ARGS` runs the node's rdmig
name=pstream
lab=(--name "$name")
share=/run/rdmig/$name/shared
out=experiments/results/page-stream-$(date -u +%Y%m%dT%H%M%SZ).json
mkdir -p experiments/results
runs=$(mktemp)

exec 9>>/tmp/rdmig-lab.lock
flock -w 3600 9
trap '"$R" "${lab[@]}" down >/dev/null 2>&1 || true; rm -f "$runs"' EXIT
"$R" "${lab[@]}" up --from-build --nodes 2 --memory $((size * 2 + 1024)) --cpus "$cpus" 9>&-

one() { # one MODE ROUND: MODE is stream or files
	local mode=$1 round=$2 pid extra=()
	[ "$mode" = stream ] && extra=(--page-stream)
	rm -f "$share/w.json"
	pid=$("$R" "${lab[@]}" spawn node1 -- /mnt/lab/bin/rdmig-workload --mem "${size}M" --dirty-rate 0 --report /mnt/lab/w.json)
	for _ in $(seq 600); do
		python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r.get("phase")=="filled" else 1)' "$share/w.json" 2>/dev/null && break
		sleep 0.5
	done
	"$R" "${lab[@]}" on node1 --to-node node2 -- migrate "$pid" --strategy stop-and-copy --transport "$transport" --json "${extra[@]}" >"$share/report.json" || true
	"$R" "${lab[@]}" exec node2 -- kill -9 "$pid" >/dev/null 2>&1 || true
	"$R" "${lab[@]}" exec node1 -- kill -9 "$pid" >/dev/null 2>&1 || true
	python3 - "$mode" "$round" "$share/report.json" <<'EOF'
import json, sys
mode, rnd, r = sys.argv[1], int(sys.argv[2]), json.load(open(sys.argv[3]))
if r["outcome"]["outcome"] != "migrated":
    sys.exit("migration failed: %s" % r["outcome"])
src = r["source"]["hostname"]
span = lambda p: sum(s["duration_ns"] for s in r["summary"]["spans"] if s["phase"] == p and s["node"] == src) / 1e6
print(json.dumps({"round": rnd, "mode": mode, "pages_streamed": r["pages_streamed"], "transport": r["transport"]["used"],
                  "final_mib": r["final_bytes"] / 2**20, "downtime_ms": r["summary"]["downtime_ns"] / 1e6,
                  "dump_and_move_ms": span("final_dump") + span("transfer")}))
EOF
}

for r in $(seq "$rounds"); do
	if [ $((r % 2)) -eq 1 ]; then order="stream files"; else order="files stream"; fi
	for m in $order; do
		one "$m" "$r" >>"$runs"
		tail -n1 "$runs" >&2
	done
done

python3 - "$runs" "$out" "$size" "$transport" "$cpus" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda mode, k: statistics.median(r[k] for r in rows if r["mode"] == mode)
res = {"size_mib": int(sys.argv[3]), "transport": sys.argv[4], "cpus_per_node": int(sys.argv[5]), "runs": rows,
       "median": {m: {k: med(m, k) for k in ("downtime_ms", "dump_and_move_ms")} for m in ("stream", "files")}}
s, f = res["median"]["stream"], res["median"]["files"]
res["downtime_stream_over_files"] = s["downtime_ms"] / f["downtime_ms"]
res["dump_and_move_stream_over_files"] = s["dump_and_move_ms"] / f["dump_and_move_ms"]
json.dump(res, open(sys.argv[2], "w"), indent=2)
print("%d MiB over %s, %d vCPU per node, medians of %d rounds:" % (res["size_mib"], res["transport"], res["cpus_per_node"], len(rows) // 2))
print("  streamed: downtime %.0f ms, dump+move %.0f ms" % (s["downtime_ms"], s["dump_and_move_ms"]))
print("  files:    downtime %.0f ms, dump+move %.0f ms" % (f["downtime_ms"], f["dump_and_move_ms"]))
print("  streamed/files: downtime %.2f, dump+move %.2f  (%s)" % (res["downtime_stream_over_files"], res["dump_and_move_stream_over_files"], sys.argv[2]))
EOF
