#!/usr/bin/env bash
# Pre-setup (issue 18): the CRIU plugin's restore (MigrRDMA's RestoreRDMA, the verbs work inside
# the blackout) of `rdmig-workload` with QPS RC QPs written by its RDMA peer (the workload of
# experiments/downtime.sh), with its verbs objects made by the restore as usual against made
# ahead by `rdmig-presetup` and taken over by the restore, side by side in one run on the same
# nodes.
#
#   experiments/presetup.sh [QPS] [ROUNDS]        (default 64 QPs, 3 rounds; as root)
#
# Per round and way (the order alternates between rounds): the workload (64 MiB, one MR) on
# node1 and its peer on node2 start; once the peer writes, `criu dump` saves and ends the
# workload (the peer's QPs are paused meanwhile); "ahead": `rdmig-presetup` makes the objects
# from the images and hands them off; `criu restore` brings the workload back on node1; the peer
# writes on, then stops, and the workload checks every byte the peer wrote and its own. The
# plugin's own times (rdmig-plugin-times.log in the images directory) give RestoreRDMA and its
# steps.
#
# Here the objects are made from the final images, after the dump: what is measured is how much
# of RestoreRDMA taking them over saves. In a migration they would be made during pre-copy, from
# a description of the running process (not built yet).
#
# Writes experiments/results/presetup-<time>.json and prints the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
qps=${1:-64}
rounds=${2:-3}
log() { echo "presetup: $*" >&2; }
out=experiments/results/presetup-$(date -u +%Y%m%dT%H%M%SZ).json
# The failed round's files (logs, images) are kept in experiments/results.
. scripts/plugin-lab.sh
plugin_lab presetup 300
# The first run of criu and the plugin reads them in over 9p: not inside the first restore.
on node1 sh -c 'criu check >/dev/null 2>&1; cat /mnt/lab/criu-plugins/*.so /mnt/lab/bin/rdmig-presetup /mnt/lab/bin/rdmig-workload >/dev/null; true'

# json_true FILE EXPR: EXPR (Python, over the JSON in FILE bound to r) holds.
json_true() { [ "$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null)" = True ]; }
# wait_json WHAT SECONDS FILE EXPR
wait_json() {
	local i
	for i in $(seq "$2"); do
		json_true "$3" "$4" && return 0
		sleep 1
	done
	die "$1: not seen within $2 s ($(head -c 400 "$3" 2>/dev/null))"
}

# run WAY ROUND: one dump and restore, checked; appends a JSON line to $runs.
run() {
	local way=$1 round=$2 tag=pre-$1-$2 wpid ppid helper=
	# The images in the node's own /tmp (tmpfs), as a migration's are; its logs and times are
	# copied to the share ($dir) afterwards.
	local dir=/mnt/lab/$tag here=$SHARE/$tag img=/tmp/$tag
	rm -rf "${here:?}"
	mkdir -p "$here"
	keep=$here
	wpid=$("$R" spawn node1 --output "$dir/workload.log" -- /mnt/lab/bin/rdmig-workload --mem 64M --dirty-rate 1M \
		--rdma-listen 10.0.1.11:9400 --gid-index "$gid1" --qps "$qps" --report "$dir/w.json")
	wait_json "$tag: the workload's fill" 180 "$here/w.json" 'r["phase"] == "filled"'
	ppid=$("$R" spawn node2 --output "$dir/peer.log" -- /mnt/lab/bin/rdmig-workload peer --connect 10.0.1.11:9400 \
		--gid-index "$gid2" --rate 1M --report "$dir/p.json")
	wait_json "$tag: the peer's connection" 120 "$here/w.json" 'r["phase"] == "connected" and r["ok"]'
	sleep 3
	on node1 mkdir -p "$img"
	# -v3: the plugin's messages (info) are in the logs, CRIU's debug lines are not.
	on node1 criu dump -t "$wpid" -D "$img" -L /mnt/lab/criu-plugins --tcp-established -v3 -o dump.log >/dev/null ||
		{ on node1 cp "$img/dump.log" "$dir/"; die "$tag: dump failed (see dump.log)"; }
	if [ "$way" = ahead ]; then
		helper=$("$R" spawn node1 --output "$dir/helper.log" -- /mnt/lab/bin/rdmig-presetup "$img" --hold 300)
		for _ in $(seq 240); do
			grep -q '^ready' "$here/helper.log" 2>/dev/null && break
			sleep 0.5
		done
		grep -q '^ready 1' "$here/helper.log" || die "$tag: rdmig-presetup did not get ready: $(cat "$here/helper.log")"
	fi
	local rc=0
	on node1 criu restore -D "$img" -L /mnt/lab/criu-plugins -d --tcp-established -v3 -o restore.log >/dev/null || rc=$?
	on node1 sh -c "cp $img/*.log $img/*.json $dir/ 2>/dev/null; rm -rf $img"
	[ "$rc" -eq 0 ] || die "$tag: restore failed (see restore.log)"
	if [ "$way" = ahead ]; then
		grep -q "took the objects pid $helper made ahead" "$here/restore.log" || die "$tag: the restore made the objects itself (see restore.log)"
	fi
	sleep 3
	# The peer stops, waits for its last completions and sends its total; then the workload
	# checks every byte.
	on node2 kill -TERM "$ppid"
	wait_json "$tag: the peer's end" 300 "$here/p.json" 'r["phase"] == "done"'
	on node1 kill -TERM "$wpid"
	wait_json "$tag: the workload's final check" 300 "$here/w.json" 'r["phase"] == "verify" and r["reports"] >= 3'
	on node1 sh -c "kill -9 $wpid 2>/dev/null; true"
	python3 - "$way" "$round" "$here" "$qps" >>"$runs" <<'PY' || die "$tag: the check failed"
import json, sys
way, rnd, d, qps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
w, p = json.load(open(f"{d}/w.json")), json.load(open(f"{d}/p.json"))
rd = w.get("rdma") or {}
if not (w["ok"] and rd.get("ok") and rd.get("peer_end") and p["ok"] and rd.get("writes_applied") == p["writes_completed"] and rd.get("qps") == qps):
    sys.exit(f"{d}: the workload's check failed: workload {json.dumps(w)[:400]} peer {json.dumps(p)[:300]}")
total, steps = 0, {}
for l in open(f"{d}/rdmig-plugin-times.log"):
    k, v = l.split()
    if k == "restore_rdma":
        total += int(v)
    elif k.startswith("restore_rdma."):
        s = k.split(".", 1)[1]
        steps[s] = steps.get(s, 0) + int(v)
print(json.dumps({"way": way, "round": rnd, "restore_rdma_us": total, "steps_us": steps, "peer_writes": p["writes_completed"]}))
PY
	tail -n1 "$runs" >&2
}

for r in $(seq 1 "$rounds"); do
	if [ $((r % 2)) -eq 1 ]; then order=(made ahead); else order=(ahead made); fi
	for w in "${order[@]}"; do run "$w" "$r"; done
done
python3 - "$runs" "$out" "$qps" "$rounds" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = {w: statistics.median(r["restore_rdma_us"] for r in rows if r["way"] == w) / 1000 for w in ("made", "ahead")}
steps = sorted({s for r in rows for s in r["steps_us"]})
print(f"RestoreRDMA at {sys.argv[3]} QPs, median of {sys.argv[4]} round(s): made by the restore {med['made']:.1f} ms, "
      f"made ahead {med['ahead']:.1f} ms, ahead/made {med['ahead'] / med['made']:.2f}")
print(f"  {'step':14} {'made':>8} {'ahead':>8} ms")
for s in steps:
    m = {w: statistics.median(r["steps_us"].get(s, 0) for r in rows if r["way"] == w) / 1000 for w in ("made", "ahead")}
    print(f"  {s:14} {m['made']:8.1f} {m['ahead']:8.1f}")
json.dump({"qps": int(sys.argv[3]), "rounds": int(sys.argv[4]), "workload": "rdmig-workload --mem 64M --qps Q, peer writing 1 MB/s",
           "runs": rows, "median_ms": med}, open(sys.argv[2], "w"), indent=1)
print("written:", sys.argv[2])
PY
