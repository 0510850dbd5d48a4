#!/usr/bin/env bash
# Downtime and the peer-observed gap against memory size, against the dirty rate (the process's
# own CPU writes, and RDMA WRITEs by its peer), rdmig's default migration against the MigrOS-style
# baseline (stop-and-copy, images copied with scp) in the same run, on the same lab (issue 18).
#
#   experiments/downtime.sh [--sizes 64,256,512] [--cpu-rates 1M] [--rdma-rates 1M] [--qps 1]
#                           [--rate-size MIB] [--rounds N] [--node-memory MIB] [--peer-memory MIB]
#                           [--name LAB]
#                           [--out DIR] [--keep] [--with-precopy] [--warm]       (as root)
#
# The workload is rdmig-workload with --rdma-listen: SIZE MiB of memory, all of it registered as
# one RDMA memory region; its peer (`rdmig-workload peer`, on node2) RDMA-WRITEs the first half
# at the RDMA rate over QPS RC QPs (each QP its own slice of that half, the writes going to the
# QPs in turn), each write followed on the same QP by a SEND naming it; the workload
# dirties the other half itself at the CPU rate. It runs on node1 on the movable overlay address
# 10.0.1.7 (its QP's GID) and moves to node3 with
#     rdmig migrate PID --move-addr 10.0.1.7                                  (ours: the defaults)
#     rdmig migrate PID --move-addr 10.0.1.7 --strategy stop-and-copy --transport scp (baseline)
# and with --with-precopy also
#     rdmig migrate PID --move-addr 10.0.1.7 --converge-mib 0                   (precopy)
# which forces pre-copy rounds even where the defaults skip them. (Until softroce patch 0032
# pinned MR pages stayed soft-dirty, every round carried them again, and the defaults skipped
# pre-copy for memory this registered; with it the defaults pre-copy, and MR pages are sent
# once, then only as they are written.)
# After every migration the peer is stopped (it sends its write count over the QP) and the
# workload checks every byte at the destination: its own pages, the peer's pages against the
# notices, and that every write the peer made arrived. A failed check, or a failed migration,
# fails the run (exit 1); what was measured so far stays in the results directory.
#
# Sweeps (each point: ours and the baseline, ROUNDS times, the order alternating per round):
#   memory:    every --sizes size, at the first CPU rate and the first RDMA rate;
#   CPU rate:  every --cpu-rates rate, at --rate-size (default: the first size), first RDMA rate;
#   RDMA rate: every --rdma-rates rate, at --rate-size, first CPU rate;
#   QPs:       every --qps count (1 to 256), at --rate-size, first CPU rate, first RDMA rate.
# The other sweeps use the first --qps count. A point shared by two sweeps runs once. Rates
# take K, M suffixes (bytes per second); sizes are MiB. The nodes get 4 x the largest size +
# 1024 MiB unless --node-memory: CRIU's images live in the nodes' /tmp (a tmpfs of half their
# memory), and rdmig's checks want room for 2 x the process's memory there on both sides (1024
# MiB ran in nodes of 5120 MiB, nodes of 4096 MiB were refused). Without softroce patch 0032
# every pre-copy round dumps the whole registered region again (measured: 64.1 of 64 MiB at the
# freeze after 2 rounds), so the source holds about 3 x the size in images; with it, about 1 x.
# Without patch 0034 the destination also pins placeholder pages as large as the MR during the
# restore. node2, which only runs the peer, gets --peer-memory (default 1536 MiB). 2 GiB needs
# nodes of 9216 MiB, and a host with about 20.5 GiB for the lab.
# Many QPs need peer pages: at least 24 per QP from 64 QPs up (388 for one QP), 4 KiB each.
# --warm touches all but 256 MiB of node1's and node3's memory once before anything is
# measured. Under TCG, qemu allocates a node's memory on its first touch, which costs about
# 2.3 s per GiB here (a 1 GiB MR registered on fresh memory: 2.9 s, on memory touched before:
# 0.6 s); a restore into a fresh node pays it inside the blackout, real hardware does not. Both
# strategies restore into warmed memory then. The host then holds 2 x the node memory for them.
#
# Measured per migration:
#   downtime_ms   rdmig's report: freeze start -> resume end (summary.downtime_ns), same
#                 definition for both strategies;
#   peer_gap_ms   the longest time the peer waited for a completion with work in flight (its
#                 QP is paused while the workload's is stopped): what the peer saw;
#   phases        rdmig's spans in the blackout (final_dump, transfer, restore, resume) and the
#                 pre-copy rounds before it, and the same under MigrRDMA's (SIGCOMM 2025) names:
#     DumpRDMA     the plugin's work in CRIU's final dump (saving the verbs objects): the
#                  final_dump span's rdma_us attribute (rdmig_image::timing);
#     DumpOthers   the rest of the final_dump span;
#     Transfer     rdmig's transfer span (the final images; pre-copy rounds are before the freeze);
#     RestoreRDMA  the plugin's work in CRIU's restore (rebuilding the verbs objects, re-pinning
#                  MRs, resuming QPs): the destination's restore span's rdma_us attribute;
#     FullRestore  the rest of rdmig's restore + resume spans (CRIU's restore at the
#                  destination, the commit and the SIGCONT that let the process run).
#                  The five add up to the blackout's phases. Where a report has no plugin times
#                  (no verbs state, or a build before them), DumpRDMA and RestoreRDMA are null
#                  and their share stays in DumpOthers and FullRestore.
#   rdma_steps_us  where DumpRDMA and RestoreRDMA went, per step of the plugin (reading the
#                  images, creating each kind of object, loading QP state, re-pinning MRs...):
#                  the rdma_steps_us attributes of the final_dump and restore spans; medians
#                  in table.md.
#
# Results: experiments/results/downtime-<UTC time>/ (or --out): runs.jsonl (one JSON row per
# migration), each migration's report (report-N-*.json), env.json (kernel, qemu, CPU, git commit,
# sizes and rates), summary.json, table.md, and the PNGs (downtime-vs-memory.png, phases-vs-
# memory.png, and per sweep with more than one value, downtime-vs-cpu-rate.png,
# downtime-vs-rdma-rate.png, downtime-vs-qps.png, phases-vs-qps.png), drawn with `rdmig plot
# series`.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=64,256,512
CPU_RATES=1M
RDMA_RATES=1M
QPS=1
RATE_SIZE=""
ROUNDS=1
NODE_MEMORY=""
PEER_MEMORY=1536
LAB=downtime
OUT=""
KEEP=0
WITH_PRECOPY=0
WARM=0
LOCK=/tmp/rdmig-lab.lock
SERVICE=10.0.1.7  # the workload's movable overlay address (its QP's GID)
PEER_IP=10.0.1.12 # node2's own overlay address
PORT=9400
SETTLE=5          # seconds of traffic before each migration, and 3 after it

usage() { sed -n '2,76s/^# \{0,1\}//p' "$0"; }
log() { printf 'downtime: %s\n' "$*" >&2; }
die() { printf 'downtime: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
	case "$1" in
	--sizes) [ $# -ge 2 ] || die "--sizes needs a list"; SIZES=$2; shift 2 ;;
	--cpu-rates) [ $# -ge 2 ] || die "--cpu-rates needs a list"; CPU_RATES=$2; shift 2 ;;
	--rdma-rates) [ $# -ge 2 ] || die "--rdma-rates needs a list"; RDMA_RATES=$2; shift 2 ;;
	--qps) [ $# -ge 2 ] || die "--qps needs a list"; QPS=$2; shift 2 ;;
	--rate-size) [ $# -ge 2 ] || die "--rate-size needs MiB"; RATE_SIZE=$2; shift 2 ;;
	--rounds) [ $# -ge 2 ] || die "--rounds needs a number"; ROUNDS=$2; shift 2 ;;
	--node-memory) [ $# -ge 2 ] || die "--node-memory needs MiB"; NODE_MEMORY=$2; shift 2 ;;
	--peer-memory) [ $# -ge 2 ] || die "--peer-memory needs MiB"; PEER_MEMORY=$2; shift 2 ;;
	--name) [ $# -ge 2 ] || die "--name needs a lab name"; LAB=$2; shift 2 ;;
	--out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	--with-precopy) WITH_PRECOPY=1; shift ;;
	--warm) WARM=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done
IFS=, read -r -a sizes <<<"$SIZES"
IFS=, read -r -a cpu_rates <<<"$CPU_RATES"
IFS=, read -r -a rdma_rates <<<"$RDMA_RATES"
IFS=, read -r -a qps_list <<<"$QPS"
for q in "${qps_list[@]}"; do [[ "$q" =~ ^[1-9][0-9]*$ && "$q" -le 256 ]] || die "--qps: '$q' is not a QP count from 1 to 256"; done
for s in "${sizes[@]}"; do [[ "$s" =~ ^[1-9][0-9]*$ ]] || die "--sizes: '$s' is not a size in MiB"; done
for r in "${cpu_rates[@]}" "${rdma_rates[@]}"; do [[ "$r" =~ ^[0-9]+[KMG]?$ ]] || die "rates: '$r' is not a rate (e.g. 0, 256K, 4M)"; done
RATE_SIZE=${RATE_SIZE:-${sizes[0]}}
[[ "$RATE_SIZE" =~ ^[1-9][0-9]*$ && "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rate-size and --rounds must be positive numbers"
max=$RATE_SIZE
for s in "${sizes[@]}"; do [ "$s" -gt "$max" ] && max=$s; done
NODE_MEMORY=${NODE_MEMORY:-$((max * 4 + 1024))}
[[ "$NODE_MEMORY" =~ ^[1-9][0-9]*$ && "$PEER_MEMORY" =~ ^[1-9][0-9]*$ ]] || die "--node-memory and --peer-memory must be MiB"
[ "$(id -u)" -eq 0 ] || die "run as root: the lab needs network namespaces and VMs"
if [ "$WARM" = 1 ]; then
	host_avail=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
	[ "$host_avail" -ge $((NODE_MEMORY * 2 + 2048)) ] ||
		die "--warm: node1 and node3 would hold $((NODE_MEMORY * 2)) MiB of this host's $host_avail MiB available (and node2 and the host need about 2048 more): use a smaller --node-memory or leave out --warm"
fi

scripts/setup.sh
cargo build --workspace --locked
rdmig=$PWD/target/debug/rdmig
labctl=$PWD/target/debug/rdmig-lab # the lab tool; `on NODE -- ARGS` runs the node's rdmig
export RDMIG_LAB=$LAB # `rdmig-lab --name` reads it
export RDMIG_LAB_DIR=${RDMIG_LAB_DIR:-/run/rdmig}
SHARE=$RDMIG_LAB_DIR/$LAB/shared
HERE=$SHARE/dt   # this run's files, as the host sees them ...
NODE=/mnt/lab/dt # ... and as the nodes do
BIN=/mnt/lab/bin # the lab's snapshot of this build
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${OUT:-experiments/results/downtime-$STAMP}

# One lab at a time on this machine (scripts/lab-lock.sh).
. scripts/lab-lock.sh # (the working directory is the repository)
take_lab_lock "$LOCK"

cleanup() {
	local rc=$?
	set +e
	if [ -d "$HERE" ]; then
		mkdir -p "$RESULTS" && cp -a "$HERE/." "$RESULTS/"
	fi
	if [ "$KEEP" = 1 ]; then
		log "lab '$LAB' left running (--keep); remove it with: $labctl --name $LAB down"
	else
		"$labctl" down >/dev/null 2>&1 || log "warning: '$labctl --name $LAB down' failed; run it by hand"
	fi
	[ "$rc" -eq 0 ] || log "FAILED (exit $rc); whatever was measured is in $RESULTS"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

on() { local node=$1; shift; "$labctl" exec "$node" -- "$@"; }
spawn() { local node=$1 out=$2; shift 2; "$labctl" spawn "$node" --output "$out" -- "$@"; }
# json_get FILE EXPR: a Python expression over the JSON in FILE (bound to r); empty if unreadable.
json_get() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null || true; }
# wait_json WHAT SECONDS FILE EXPR: until EXPR over FILE prints True.
wait_json() {
	local what=$1 secs=$2 f=$3 expr=$4 t0=$SECONDS
	until [ "$(json_get "$f" "$expr")" = True ]; do
		[ $((SECONDS - t0)) -lt "$secs" ] || die "$what: not seen within $secs s (${f##*/}: $(head -c 600 "$f" 2>/dev/null))"
		sleep 1
	done
}

log "starting lab '$LAB' (node1 and node3 of $NODE_MEMORY MiB, node2 of $PEER_MEMORY MiB)"
# The lock descriptor is not passed to qemu (it would hold the lock for as long as the VMs run).
"$labctl" up --from-build --nodes 3 --memory "$NODE_MEMORY" --node-memory "node2=$PEER_MEMORY" 9>&-
mkdir -p "$HERE"
# The first run of criu, the plugin and ssh reads them in over 9p: not inside the first downtime.
for n in node1 node2 node3; do
	on "$n" sh -c 'criu check >/dev/null 2>&1; cat /mnt/lab/bin/*.so /mnt/lab/bin/rdmig-workload >/dev/null 2>&1; ssh -V 2>/dev/null; true'
done
node3_underlay=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print([n["underlay_ip"] for n in s["plan"]["nodes"] if n["name"]=="node3"][0])' "$RDMIG_LAB_DIR/$LAB/state.json")
on node1 ssh -F /mnt/lab/ssh/ssh_config "$node3_underlay" true || die "ssh from node1 to node3 does not work: the scp baseline needs it"
if [ "$WARM" = 1 ]; then
	# One read of /dev/zero into a buffer of all but 256 MiB of what is available touches every
	# page of it once; the memory is free again when dd exits, but stays allocated in qemu.
	for n in node1 node3; do
		t0=$SECONDS
		on "$n" sh -c 'mib=$(awk "/^MemAvailable:/ { print int(\$2 / 1024) - 256 }" /proc/meminfo); dd if=/dev/zero of=/dev/null bs=${mib}M count=1 iflag=fullblock status=none' ||
			die "warming $n's memory failed"
		log "$n: memory warmed in $((SECONDS - t0)) s"
	done
fi

# The environment, recorded before anything is measured.
python3 - "$HERE/env.json" "$STAMP" "$NODE_MEMORY" "$SIZES" "$CPU_RATES" "$RDMA_RATES" "$RATE_SIZE" "$ROUNDS" "$QPS" \
	"$(uname -r)" "$(on node1 uname -r)" "$(qemu-system-x86_64 --version | head -n1)" "$(criu --version 2>/dev/null | head -n1)" \
	"$(git rev-parse HEAD)" "$(git status --porcelain --untracked-files=no | wc -l)" "$WARM" "$PEER_MEMORY" <<'EOF'
import json, os, sys
a = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((int(l.split()[1]) // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), None)
json.dump({"utc": a[1], "node_memory_mib": int(a[2]), "peer_node_memory_mib": int(a[16]), "nodes": 3, "node_vcpus": 1, "sizes_mib": [int(x) for x in a[3].split(",")],
           "cpu_rates": a[4].split(","), "rdma_rates": a[5].split(","), "rate_size_mib": int(a[6]), "rounds": int(a[7]),
           "qps": [int(x) for x in a[8].split(",")],
           "host_kernel": a[9], "node_kernel": a[10], "qemu": a[11], "criu": a[12], "git_commit": a[13],
           "git_tracked_changes": int(a[14]), "warmed_nodes": ["node1", "node3"] if a[15] == "1" else [], "host_cpu": cpu, "host_cpus": os.cpu_count(), "host_memory_mib": mem,
           "accel": "tcg (rdmig-lab)", "workload": "rdmig-workload --rdma-listen --qps Q: the whole region one MR, the peer writes its first half over Q RC QPs",
           "ours": "rdmig migrate PID --move-addr 10.0.1.7 (defaults: pre-copy, transport auto)",
           "baseline": "rdmig migrate PID --move-addr 10.0.1.7 --strategy stop-and-copy --transport scp"},
          open(a[0], "w"), indent=2)
EOF

# The configurations: (sweeps it belongs to, size, CPU rate, RDMA rate, QPs), each once.
declare -A point_axes=()
points=()
add_point() {
	local key="$2 $3 $4 $5"
	if [ -z "${point_axes[$key]:-}" ]; then
		points+=("$key")
		point_axes[$key]=$1
	else
		point_axes[$key]="${point_axes[$key]},$1"
	fi
}
q0=${qps_list[0]}
for s in "${sizes[@]}"; do add_point memory "$s" "${cpu_rates[0]}" "${rdma_rates[0]}" "$q0"; done
for r in "${cpu_rates[@]}"; do add_point cpu_rate "$RATE_SIZE" "$r" "${rdma_rates[0]}" "$q0"; done
for r in "${rdma_rates[@]}"; do add_point rdma_rate "$RATE_SIZE" "${cpu_rates[0]}" "$r" "$q0"; done
for q in "${qps_list[@]}"; do add_point qps "$RATE_SIZE" "${cpu_rates[0]}" "${rdma_rates[0]}" "$q"; done

n_run=0
# one STRATEGY ROUND SIZE CPU_RATE RDMA_RATE QPS AXES: one migration, checked; appends a row.
one() {
	local strategy=$1 round=$2 size=$3 cpu=$4 rdma=$5 qps=$6 axes=$7 sgid pgid wpid ppid rc extra=() tag
	n_run=$((n_run + 1))
	tag=$n_run-$strategy-${size}M-cpu$cpu-rdma$rdma-qp$qps
	[ "$strategy" = baseline ] && extra=(--strategy stop-and-copy --transport scp)
	[ "$strategy" = precopy ] && extra=(--converge-mib 0)
	log "[$tag] round $round: $size MiB, CPU $cpu/s, RDMA $rdma/s, $qps QP(s), $strategy"
	for n in node1 node2 node3; do "$labctl" addr del "$n" "$SERVICE" >/dev/null 2>&1 || true; done
	"$labctl" addr add node1 "$SERVICE" >/dev/null
	sgid=$(on node1 "$BIN/rdmig" rxe gid-index --ip "$SERVICE") || die "no RoCE v2 GID for $SERVICE on node1"
	pgid=$(on node2 "$BIN/rdmig" rxe gid-index --ip "$PEER_IP") || die "no RoCE v2 GID for $PEER_IP on node2"
	rm -f "$HERE/w.json" "$HERE/p.json"
	wpid=$(spawn node1 "$NODE/workload-$tag.log" "$BIN/rdmig-workload" --mem "${size}M" --dirty-rate "$cpu" \
		--rdma-listen "$SERVICE:$PORT" --gid-index "$sgid" --qps "$qps" --report "$NODE/w.json")
	wait_json "the workload's fill" $((120 + size)) "$HERE/w.json" 'r["phase"] == "filled"'
	ppid=$(spawn node2 "$NODE/peer-$tag.log" "$BIN/rdmig-workload" peer --connect "$SERVICE:$PORT" --gid-index "$pgid" \
		--rate "$rdma" --report "$NODE/p.json")
	wait_json "the peer's connection" $((60 + size / 2)) "$HERE/w.json" 'r["phase"] == "connected" and r["ok"]'
	sleep "$SETTLE"
	set +e
	"$labctl" on node1 --to-node node3 -- migrate "$wpid" --move-addr "$SERVICE" --json "${extra[@]}" \
		>"$HERE/report-$tag.json" 2>"$HERE/migrate-$tag.stderr"
	rc=$?
	set -e
	[ "$rc" -eq 0 ] || die "[$tag] rdmig migrate exited $rc: $(json_get "$HERE/report-$tag.json" 'r["outcome"]') $(tail -n 5 "$HERE/migrate-$tag.stderr")"
	sleep 3
	# The peer stops, waits for its last completions and sends its total; then every byte is
	# checked at the destination.
	on node2 kill -TERM "$ppid"
	wait_json "the peer's end" 300 "$HERE/p.json" 'r["phase"] == "done"'
	on node3 kill -TERM "$wpid"
	wait_json "the workload's final check" $((120 + size)) "$HERE/w.json" 'r["phase"] == "verify" and r["reports"] >= 3'
	for n in node1 node2 node3; do on "$n" sh -c "kill -9 $wpid $ppid 2>/dev/null; true"; done
	# The live reports become this run's; no scratch copy is left in the results.
	mv "$HERE/w.json" "$HERE/check-$tag.json"
	mv "$HERE/p.json" "$HERE/peer-$tag.json"
	python3 - "$HERE" "$tag" "$strategy" "$round" "$size" "$cpu" "$rdma" "$qps" "$axes" >>"$HERE/runs.jsonl" <<'EOF'
import json, sys
d, tag, strategy, rnd, size, cpu, rdma, qps, axes = sys.argv[1:]
r = json.load(open("%s/report-%s.json" % (d, tag)))
w = json.load(open("%s/check-%s.json" % (d, tag)))
p = json.load(open("%s/peer-%s.json" % (d, tag)))
rate = lambda s: int(s[:-1]) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[s[-1]] if s[-1] in "KMG" else int(s)
s = r["summary"]
src, dst = r["source"]["hostname"], (r.get("destination") or {}).get("hostname")
# Each phase on the node that does it: restore and resume at the destination (the source's own
# restore span only waits for that one), everything else at the source.
def span(phase):
    node = dst if phase in ("restore", "resume") else src
    v = [x["duration_ns"] for x in s["spans"] if x["phase"] == phase and x["node"] == node]
    return sum(v) / 1e6 if v else None
# The CRIU plugin's share of a span (attribute rdma_us), ms; None when the report has none.
def rdma_ms(phase):
    node = dst if phase == "restore" else src
    v = [x["attrs"]["rdma_us"] for x in s["spans"] if x["phase"] == phase and x["node"] == node and "rdma_us" in x.get("attrs", {})]
    return sum(v) / 1e3 if v else None
precopy = [x["duration_ns"] for x in s["spans"] if isinstance(x["phase"], dict) and "precopy_round" in x["phase"] and x["node"] == src]
phases = {k: span(k) for k in ("check", "freeze", "final_dump", "transfer", "restore", "resume")}
phases["precopy"] = sum(precopy) / 1e6 if precopy else 0.0
full_restore = None if phases["restore"] is None else phases["restore"] + (phases["resume"] or 0.0)
dump_rdma, restore_rdma = rdma_ms("final_dump"), rdma_ms("restore")
# Where the plugin's time went, microseconds per step (rdmig_image::timing), from the spans.
def rdma_steps(phase):
    node = dst if phase == "restore" else src
    return next((x["attrs"]["rdma_steps_us"] for x in s["spans"] if x["phase"] == phase and x["node"] == node and "rdma_steps_us" in x.get("attrs", {})), None)
dump_steps, restore_steps = rdma_steps("final_dump"), rdma_steps("restore")
minus = lambda whole, part: None if whole is None else whole - (part or 0.0)
rd = w.get("rdma") or {}
check_ok = bool(w["ok"] and rd.get("ok") and rd.get("peer_end") and p["ok"] and rd.get("writes_applied") == p["writes_completed"]
                and rd.get("qps") == int(qps) and p.get("qps") == int(qps))
row = {
    "tag": tag, "strategy": strategy, "round": int(rnd), "axes": axes.split(","), "size_mib": int(size),
    "cpu_rate": cpu, "cpu_rate_bytes": rate(cpu), "rdma_rate": rdma, "rdma_rate_bytes": rate(rdma), "qps": int(qps),
    "outcome": r["outcome"]["outcome"], "strategy_used": r["strategy"], "transport": (r.get("transport") or {}).get("used"),
    "precopy_rounds": len(r.get("rounds") or []), "final_mib": r.get("final_bytes", 0) / 2**20,
    "downtime_ms": s["downtime_ns"] / 1e6,
    "downtime_uncertainty_ms": s["downtime_uncertainty_ns"] / 1e6 if s.get("downtime_uncertainty_ns") is not None else None,
    "peer_gap_ms": p["max_gap_ms"], "phases_ms": phases,
    "migrrdma_ms": {"DumpRDMA": dump_rdma, "DumpOthers": minus(phases["final_dump"], dump_rdma), "Transfer": phases["transfer"],
                    "RestoreRDMA": restore_rdma, "FullRestore": minus(full_restore, restore_rdma)},
    "rdma_steps_us": {"dump": dump_steps, "restore": restore_steps},
    "check": {"ok": check_ok, "pages": w["verified_pages"], "bad_pages": w["bad_pages"], "first_bad": w.get("first_bad"),
              "own_pages_dirtied": w["dirtied_pages_total"], "peer_writes_applied": rd.get("writes_applied"),
              "peer_writes_completed": p["writes_completed"], "peer_end": rd.get("peer_end"), "in_flight_pages": rd.get("in_flight_pages"),
              "notice_errors": rd.get("notice_errors"), "first_error": rd.get("first_error") or p.get("first_error")},
    "source": src, "destination": dst, "report": "report-%s.json" % tag,
}
print(json.dumps(row))
if not check_ok:
    sys.exit("the check after migration %s failed: %s" % (tag, json.dumps(row["check"])))
EOF
	tail -n1 "$HERE/runs.jsonl" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("downtime: [%s] downtime %.0f ms, peer gap %.0f ms, %d pre-copy rounds, %.1f MiB at the freeze, check ok (%d peer writes, %d own pages)" % (r["tag"], r["downtime_ms"], r["peer_gap_ms"], r["precopy_rounds"], r["final_mib"], r["check"]["peer_writes_applied"], r["check"]["own_pages_dirtied"]))' >&2
}

for round in $(seq "$ROUNDS"); do
	for pt in "${points[@]}"; do
		read -r size cpu rdma qps <<<"$pt"
		if [ $((round % 2)) -eq 1 ]; then order="ours baseline"; else order="baseline ours"; fi
		[ "$WITH_PRECOPY" = 1 ] && order="$order precopy"
		for strategy in $order; do
			one "$strategy" "$round" "$size" "$cpu" "$rdma" "$qps" "${point_axes[$pt]}"
		done
	done
done

# Medians per point and strategy, the table, the charts.
python3 - "$HERE" "$RATE_SIZE" "${cpu_rates[0]}" "${rdma_rates[0]}" "$q0" <<'EOF'
import json, statistics, sys
d, rate_size, cpu0, rdma0, q0 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
rows = [json.loads(l) for l in open(d + "/runs.jsonl")]
med = lambda v: statistics.median(v) if v else None
keys = []
for r in rows:
    k = (r["size_mib"], r["cpu_rate"], r["rdma_rate"], r.get("qps", 1))
    if k not in keys:
        keys.append(k)
points = []
for k in keys:
    p = {"size_mib": k[0], "cpu_rate": k[1], "rdma_rate": k[2], "qps": k[3]}
    for strat in ("ours", "baseline", "precopy"):
        rs = [r for r in rows if (r["size_mib"], r["cpu_rate"], r["rdma_rate"], r.get("qps", 1)) == k and r["strategy"] == strat]
        if rs:  # (a strategy that did not run, e.g. precopy without --with-precopy, keeps what the others set)
            p["axes"] = rs[0]["axes"]
            p["cpu_rate_bytes"], p["rdma_rate_bytes"] = rs[0]["cpu_rate_bytes"], rs[0]["rdma_rate_bytes"]
        p[strat] = {"runs": len(rs), "downtime_ms": med([r["downtime_ms"] for r in rs]), "peer_gap_ms": med([r["peer_gap_ms"] for r in rs]),
                    "final_mib": med([r["final_mib"] for r in rs]), "precopy_rounds": med([r["precopy_rounds"] for r in rs]),
                    "migrrdma_ms": {n: med([r["migrrdma_ms"][n] for r in rs if r["migrrdma_ms"][n] is not None])
                                    for n in ("DumpRDMA", "DumpOthers", "Transfer", "RestoreRDMA", "FullRestore")},
                    "rdma_steps_ms": {k: {st: med([r["rdma_steps_us"][k][st] / 1e3 for r in rs if (r.get("rdma_steps_us") or {}).get(k) and st in r["rdma_steps_us"][k]])
                                          for st in dict.fromkeys(st for r in rs for st in ((r.get("rdma_steps_us") or {}).get(k) or {}))}
                                      for k in ("dump", "restore")}}
    o, b = p["ours"]["downtime_ms"], p["baseline"]["downtime_ms"]
    p["downtime_ours_over_baseline"] = o / b if o and b else None
    og, bg = p["ours"]["peer_gap_ms"], p["baseline"]["peer_gap_ms"]
    p["peer_gap_ours_over_baseline"] = og / bg if og and bg else None
    fp = p["precopy"]["downtime_ms"]
    p["downtime_ours_over_forced_precopy"] = o / fp if o and fp else None
    points.append(p)
json.dump({"points": points, "runs": len(rows), "all_checks_ok": all(r["check"]["ok"] for r in rows)}, open(d + "/summary.json", "w"), indent=2)

f = lambda v, fmt="%.0f": "-" if v is None else fmt % v
names = ("DumpRDMA", "DumpOthers", "Transfer", "RestoreRDMA", "FullRestore")
lines = ["| MiB | CPU dirty/s | RDMA writes/s | QPs | ours downtime ms | baseline downtime ms | ours/baseline | ours peer gap ms | baseline peer gap ms | ours pre-copy rounds, MiB at freeze | ours " + " / ".join(names) + " ms | baseline " + " / ".join(names) + " ms | runs |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|"]
for p in points:
    o, b = p["ours"], p["baseline"]
    m = lambda x: " / ".join(f(x["migrrdma_ms"][n]) for n in names)
    lines.append("| %d | %s | %s | %d | %s | %s | %s | %s | %s | %s, %s | %s | %s | %d+%d |" % (
        p["size_mib"], p["cpu_rate"], p["rdma_rate"], p["qps"], f(o["downtime_ms"]), f(b["downtime_ms"]), f(p["downtime_ours_over_baseline"], "%.2f"),
        f(o["peer_gap_ms"]), f(b["peer_gap_ms"]), f(o["precopy_rounds"]), f(o["final_mib"], "%.1f"), m(o), m(b), o["runs"], b["runs"]))
if any(p["precopy"]["runs"] for p in points):
    lines += ["", "| MiB | CPU dirty/s | RDMA writes/s | QPs | ours downtime ms | forced pre-copy downtime ms | ours/forced | forced pre-copy rounds, MiB at freeze | runs |",
              "|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for p in points:
        o, fp = p["ours"], p["precopy"]
        lines.append("| %d | %s | %s | %d | %s | %s | %s | %s, %s | %d+%d |" % (
            p["size_mib"], p["cpu_rate"], p["rdma_rate"], p["qps"], f(o["downtime_ms"]), f(fp["downtime_ms"]), f(p["downtime_ours_over_forced_precopy"], "%.2f"),
            f(fp["precopy_rounds"]), f(fp["final_mib"], "%.1f"), o["runs"], fp["runs"]))
steps = lambda x: ", ".join("%s %s" % (st, f(v, "%.1f")) for st, v in sorted(x.items(), key=lambda kv: -(kv[1] or 0))) or "-"
lines += ["", "Where ours' DumpRDMA and RestoreRDMA went, ms per step of the plugin (medians; rdmig_image::timing):", ""]
for p in points:
    rs = p["ours"].get("rdma_steps_ms") or {}
    lines.append("- %d MiB, %d QP(s): dump: %s; restore: %s" % (p["size_mib"], p["qps"], steps(rs.get("dump") or {}), steps(rs.get("restore") or {})))
lines += ["", "Medians per point (runs: ours+baseline). Every migration's every byte was checked at the destination. "
          "MigrRDMA's phases: DumpRDMA and RestoreRDMA are the CRIU plugin's own times (rdma_us), DumpOthers and FullRestore the rest; see experiments/downtime.sh."]
open(d + "/table.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

# Chart data for `rdmig plot series`.
def chart(name, title, xl, sel, x):
    ps = sorted([p for p in points if sel(p)], key=x)
    if len(ps) < 2:
        return
    series = []
    for strat, label in (("ours", "ours"), ("baseline", "baseline stop-and-copy + scp")):
        series.append({"name": label + ": downtime", "points": [[x(p), p[strat]["downtime_ms"]] for p in ps if p[strat]["downtime_ms"] is not None]})
        series.append({"name": label + ": peer gap", "points": [[x(p), p[strat]["peer_gap_ms"]] for p in ps if p[strat]["peer_gap_ms"] is not None]})
    json.dump({"title": title, "subtitle": "rdmig-workload with an RDMA peer, lab (TCG), medians; every byte checked after each migration",
               "x_label": xl, "y_label": "ms", "series": series}, open("%s/%s.chart.json" % (d, name), "w"), indent=1)
chart("downtime-vs-memory", "downtime and peer-observed gap against memory (CPU %s/s, RDMA %s/s, %d QPs)" % (cpu0, rdma0, q0), "workload memory, MiB",
      lambda p: "memory" in p["axes"], lambda p: p["size_mib"])
chart("downtime-vs-cpu-rate", "downtime against the CPU dirty rate (%d MiB, RDMA %s/s)" % (rate_size, rdma0), "CPU dirty rate, MiB/s",
      lambda p: "cpu_rate" in p["axes"], lambda p: p["cpu_rate_bytes"] / 2**20)
chart("downtime-vs-rdma-rate", "downtime against the peer's RDMA write rate (%d MiB, CPU %s/s)" % (rate_size, cpu0), "RDMA write rate, MiB/s",
      lambda p: "rdma_rate" in p["axes"], lambda p: p["rdma_rate_bytes"] / 2**20)
chart("downtime-vs-qps", "downtime against the number of QPs (%d MiB, CPU %s/s, RDMA %s/s)" % (rate_size, cpu0, rdma0), "RC QPs between the workload and its peer",
      lambda p: "qps" in p["axes"], lambda p: p["qps"])
def phases(name, axis, xl, x):
    ps = sorted([p for p in points if axis in p["axes"]], key=x)
    if len(ps) < 2:
        return
    series = [{"name": "%s %s" % (s, n), "points": [[x(p), p[s]["migrrdma_ms"][n]] for p in ps if p[s]["migrrdma_ms"][n] is not None]}
              for s in ("ours", "baseline") for n in names]
    series = [x for x in series if x["points"]]
    json.dump({"title": "blackout phases against %s (MigrRDMA's names)" % xl, "subtitle": "DumpRDMA, RestoreRDMA = the CRIU plugin's own times; DumpOthers = the rest of final_dump, FullRestore = the rest of restore + resume",
               "x_label": xl, "y_label": "ms", "series": series}, open("%s/%s.chart.json" % (d, name), "w"), indent=1)
phases("phases-vs-memory", "memory", "workload memory, MiB", lambda p: p["size_mib"])
phases("phases-vs-qps", "qps", "RC QPs", lambda p: p["qps"])
EOF
for c in "$HERE"/*.chart.json; do
	[ -e "$c" ] || continue
	"$rdmig" plot series --data "$c" --out "${c%.chart.json}.png" >/dev/null
done
mkdir -p "$RESULTS"
cp -a "$HERE/." "$RESULTS/"
log "all checks passed; results in $RESULTS"
