#!/usr/bin/env bash
# Shared rings saved once (issue 18, softroce patch 0036): the blackout of a CRIU dump and
# restore of an `ib_send_bw -b -q QPS` server, whose QPs all complete into one CQ, with every
# QP's driver image carrying that CQ's ring (as before the patch; the plugin does so with
# RDMIG_DUMP_EVERY_RING set) against the ring saved with the first QP only, side by side in one
# run on the same nodes.
#
#   experiments/shared-rings.sh [QPS] [ROUNDS]        (default 4 QPs, 3 rounds; as root)
#
# Per round and way (the order alternates between rounds): an ib_send_bw server on node1 and
# its client on node2 (both ways, -q QPS, 4 KiB messages) start; once the server's QPs are
# connected, `criu dump` saves and ends the server (the client's QPs are paused meanwhile) and
# `criu restore` brings it back on node1; both sides must then finish exactly their iterations
# with no error. Measured on the node: the wall time of the dump and of the restore (the
# process is frozen or gone from the one's start to the other's end), the images' size, and
# the plugin's own DumpRDMA and RestoreRDMA (rdmig-plugin-times.log).
#
# Why 4 QPs (see docs/measurements.md, "perftest's shared CQ"): at 64 QPs ib_send_bw stalls in
# the lab without any migration, on Debian's stock rdma_rxe as on ours; and at 16 and 64 QPs the
# peer of a restored ib_write_bw or ib_send_bw server retransmits without end (an open bug).
#
# Writes experiments/results/shared-rings-<time>.json and prints the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
qps=${1:-4}
rounds=${2:-3}
# per QP; perftest counts QPS times as many in all
iters=${SHARED_RINGS_ITERS:-15000}
log() { echo "shared-rings: $*" >&2; }
out=experiments/results/shared-rings-$(date -u +%Y%m%dT%H%M%SZ).json
# The failed round's files (logs) are kept in experiments/results.
. scripts/plugin-lab.sh
plugin_lab rings 600
# The first run of criu and the plugin reads them in over 9p: not inside the first dump.
on node1 sh -c 'criu check >/dev/null 2>&1; cat /mnt/lab/criu-plugins/*.so >/dev/null; true'
keep_going=$(sed -n 's/^pub const KEEP_GOING: &str = "\(.*\)";/\1/p' lab/src/perftest.rs)
[ -n "$keep_going" ] || die "cannot read perftest's keep-going option from lab/src/perftest.rs"
perftest=(ib_send_bw "$keep_going" -d rxe0 -s 4096 -b -q "$qps" -n "$iters")

# iterations LOG: perftest's #iterations, or nothing.
iterations() { awk '/#iterations/ {getline; print $2; exit}' "$1" 2>/dev/null; }

# run WAY ROUND: one dump and restore, checked; appends a JSON line to $runs.
run() {
	local way=$1 round=$2 tag=rings-$1-$2 srv cli env=
	local dir=/mnt/lab/$tag here=$SHARE/$tag img=/tmp/$tag
	rm -rf "${here:?}"
	mkdir -p "$here"
	keep=$here
	[ "$way" = each ] && env=RDMIG_DUMP_EVERY_RING=1
	srv=$("$R" spawn node1 --output "$dir/server.log" -- "${perftest[@]}" -x "$gid1")
	for _ in $(seq 60); do
		[ -n "$(on node1 ss -Hltn 'sport = :18515')" ] && break
		sleep 0.5
	done
	cli=$("$R" spawn node2 --output "$dir/client.log" -- "${perftest[@]}" -x "$gid2" 10.0.1.11)
	local up=
	for _ in $(seq 120); do
		if [ "$(on node1 /mnt/lab/bin/rdmig softroce status | grep -E "^qp.*pid=$srv( |$)" | grep -cE "state=(rtr|rts)")" -ge "$qps" ]; then
			up=1
			break
		fi
		sleep 1
	done
	[ -n "$up" ] || die "$tag: the server's $qps QPs were not connected"
	sleep 2
	on node1 mkdir -p "$img"
	# -v3: the plugin's messages (info) are in the logs, CRIU's debug lines are not.
	local dump_ms restore_ms rc=0
	dump_ms=$(on node1 sh -c "t0=\$(date +%s%N); env $env criu dump -t $srv -D $img -L /mnt/lab/criu-plugins \
		--tcp-established -v3 -o dump.log >/dev/null || exit 1; echo \$(( (\$(date +%s%N) - t0) / 1000000 ))") ||
		{ on node1 cp "$img/dump.log" "$dir/"; die "$tag: dump failed (see dump.log)"; }
	local image_bytes context_bytes
	image_bytes=$(on node1 du -sb "$img" | cut -f1)
	context_bytes=$(on node1 sh -c "cat $img/rdmig-rxe-*.img 2>/dev/null | wc -c")
	restore_ms=$(on node1 sh -c "t0=\$(date +%s%N); criu restore -D $img -L /mnt/lab/criu-plugins -d --tcp-established \
		-v3 -o restore.log >/dev/null || exit 1; echo \$(( (\$(date +%s%N) - t0) / 1000000 ))") || rc=$?
	on node1 sh -c "cp $img/*.log $dir/ 2>/dev/null; rm -rf $img"
	[ "$rc" -eq 0 ] || die "$tag: restore failed (see restore.log)"
	if [ "$way" = once ]; then
		grep -q "rings in an earlier QP's" "$here/dump.log" || die "$tag: no QP left its CQ's ring out (see dump.log)"
	else
		! grep -q "rings in an earlier QP's" "$here/dump.log" || die "$tag: $env did not make every image carry its rings"
	fi
	for _ in $(seq 600); do
		on node1 kill -0 "$srv" 2>/dev/null || on node2 kill -0 "$cli" 2>/dev/null || break
		sleep 1
	done
	local want=$((iters * qps)) s c
	s=$(iterations "$here/server.log")
	c=$(iterations "$here/client.log")
	[ "$s" = "$want" ] && [ "$c" = "$want" ] || die "$tag: iterations server ${s:-none} client ${c:-none}, not $want each"
	! grep -qiE "error|couldn't" "$here/server.log" "$here/client.log" || die "$tag: perftest reported an error"
	python3 - "$way" "$round" "$here" "$dump_ms" "$restore_ms" "$image_bytes" "$context_bytes" >>"$runs" <<'PY' || die "$tag: no plugin times"
import json, sys
way, rnd, d = sys.argv[1], int(sys.argv[2]), sys.argv[3]
dump_ms, restore_ms, image_bytes, context_bytes = map(int, sys.argv[4:8])
t = {}
for l in open(f"{d}/rdmig-plugin-times.log"):
    k, v = l.split()
    if k in ("dump_rdma", "restore_rdma"):
        t[k] = t.get(k, 0) + int(v)
print(json.dumps({"way": way, "round": rnd, "dump_ms": dump_ms, "restore_ms": restore_ms, "blackout_ms": dump_ms + restore_ms,
                  "dump_rdma_ms": t.get("dump_rdma", 0) / 1000, "restore_rdma_ms": t.get("restore_rdma", 0) / 1000,
                  "image_bytes": image_bytes, "context_image_bytes": context_bytes}))
PY
	tail -n1 "$runs" >&2
}

for r in $(seq 1 "$rounds"); do
	if [ $((r % 2)) -eq 1 ]; then order=(each once); else order=(once each); fi
	for w in "${order[@]}"; do run "$w" "$r"; done
done
python3 - "$runs" "$out" "$qps" "$rounds" "$iters" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = ["blackout_ms", "dump_ms", "restore_ms", "dump_rdma_ms", "restore_rdma_ms", "image_bytes", "context_image_bytes"]
med = {w: {k: statistics.median(r[k] for r in rows if r["way"] == w) for k in keys} for w in ("each", "once")}
print(f"ib_send_bw -b -q {sys.argv[3]}, CRIU dump + restore on one node, median of {sys.argv[4]} round(s):")
print(f"  {'':22} {'every QP':>12} {'once':>12} {'once/every':>10}")
for k in keys:
    e, o = med["each"][k], med["once"][k]
    print(f"  {k:22} {e:12.0f} {o:12.0f} {o / e if e else float('nan'):10.2f}")
json.dump({"qps": int(sys.argv[3]), "rounds": int(sys.argv[4]), "workload": f"ib_send_bw -b -q Q -s 4096 -n {sys.argv[5]} (server dumped and restored)",
           "runs": rows, "median": med}, open(sys.argv[2], "w"), indent=1)
print("written:", sys.argv[2])
PY
