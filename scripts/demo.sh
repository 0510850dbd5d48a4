#!/usr/bin/env bash
# The main job (issue 8): live-migrate one side of a running ib_send_bw while its peer keeps
# running, measure what the peer saw, and compare with a stop-and-copy baseline in the same run.
#
#   1. brings up a 3-node SoftRoCE lab (VMs, our rdma_rxe) under /tmp/rdmig-lab.lock;
#   2. starts `ib_send_bw -d rxe0 -b -n N -s 4096`: server on node1 on the movable overlay address
#      10.0.1.7, client on node2, and `rdmig rxe sample` on node2 (the peer's packet counters
#      every 2 ms until the client exits);
#   3. migrates the server to node3 mid-run (`rdmig migrate --tcp-established --move-addr`,
#      pre-copy, transport auto), waits for both sides, prints their perftest results, the
#      downtime and its phases (from the migrate report), and the peer-observed gap (longest time
#      node2 received no packet, from the samples), and plots the peer's throughput;
#   4. runs the same flow again as the baseline: `--strategy stop-and-copy --transport scp`
#      (the MigrOS artifact's procedure: checkpoint, scp to the destination's sshd, restore), and
#      prints our downtime against the baseline's.
#
# Everything (reports, timelines, raw samples, plots, logs) is copied to
# experiments/results/demo-<UTC time>/ (or --out DIR). The lab is torn down at the end, also on
# failure, unless --keep.
#
# The baseline is MigrOS's manual procedure made scriptable: one stop-and-copy dump, its image
# files copied with scp (the lab's nodes run sshd with lab-wide keys), then restored; the same
# agents, checks and peer pause/resume as ours, so only the strategy and the transport differ.
set -euo pipefail
cd "$(dirname "$0")/.."

ITERS=120000
KEEP=${KEEP_LAB:-0}
LAB=demo
MIGRATE_AFTER=10
OUT=""
LOCK=/tmp/rdmig-lab.lock

usage() {
	cat <<EOF
usage: $0 [--iterations N] [--keep] [--name LAB] [--migrate-after S] [--out DIR]
  --iterations N     ib_send_bw -n (default $ITERS: about a minute at the lab's 14-15 MB/s,
                     perftest's -b figure, both directions together)
  --keep             leave the lab running afterwards (then: rdmig-lab --name LAB down)
  --name LAB         lab name (default $LAB), so a user's or the tests' own lab is not touched
  --migrate-after S  seconds of traffic before each migration (default $MIGRATE_AFTER)
  --out DIR          results directory (default experiments/results/demo-<UTC time>)
EOF
}

log() { printf 'demo: %s\n' "$*" >&2; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
	case "$1" in
	--iterations) [ $# -ge 2 ] || die "--iterations needs a number"; ITERS=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	--name) [ $# -ge 2 ] || die "--name needs a lab name"; LAB=$2; shift 2 ;;
	--migrate-after) [ $# -ge 2 ] || die "--migrate-after needs seconds"; MIGRATE_AFTER=$2; shift 2 ;;
	--out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done
[[ "$ITERS" =~ ^[1-9][0-9]*$ ]] || die "--iterations must be a positive number, not '$ITERS'"
[[ "$MIGRATE_AFTER" =~ ^[0-9]+$ ]] || die "--migrate-after must be whole seconds, not '$MIGRATE_AFTER'"
[ "$(id -u)" -eq 0 ] || die "run as root: the lab needs network namespaces and VMs"

scripts/setup.sh
cargo build --workspace --locked
rdmig=$PWD/target/debug/rdmig
labctl=$PWD/target/debug/rdmig-lab # the lab tool: VMs, and `on NODE -- ARGS` runs the node's rdmig
command -v python3 >/dev/null || die "python3 is missing (scripts/setup.sh installs it)"

export RDMIG_LAB=$LAB # `rdmig-lab --name` reads it
export RDMIG_LAB_DIR=${RDMIG_LAB_DIR:-/run/rdmig}
SERVICE=10.0.1.7    # the server's movable overlay address
CLIENT_IP=10.0.1.12 # node2's own overlay address
SHARE=$RDMIG_LAB_DIR/$LAB/shared
HERE=$SHARE/demo  # the demo's files, as the host sees them ...
NODE=/mnt/lab/demo # ... and as the nodes do
NODE_RDMIG=/mnt/lab/bin/rdmig # the lab's snapshot of rdmig (a rebuild cannot tear it)
RESULTS=${OUT:-experiments/results/demo-$(date -u +%Y%m%dT%H%M%SZ)}
# The sampler shares node2's one vCPU with a busy-polling ib_send_bw: real-time priority lets it
# wake on time (it sleeps ~all of each 2 ms period, so it takes almost nothing from the client).
CHRT=()
command -v chrt >/dev/null && CHRT=(chrt -f 10)

# One lab at a time on this machine: take the shared lab lock, unless our caller holds it
# already (`flock /tmp/rdmig-lab.lock scripts/demo.sh` passes its locked descriptor down;
# locking a second descriptor of the same file here would wait for ourselves).
held=""
for fd in /proc/$$/fd/*; do
	if [ "$(readlink "$fd" 2>/dev/null)" = "$LOCK" ] && flock -n "${fd##*/}"; then
		held=${fd##*/}
		break
	fi
done
if [ -z "$held" ]; then
	exec 9>>"$LOCK"
	log "waiting for $LOCK (labs on this machine take turns) ..."
	flock -w 3600 9 || die "$LOCK still held by someone else after an hour"
fi

cleanup() {
	local rc=$?
	set +e
	if [ -d "$HERE" ]; then
		mkdir -p "$RESULTS" && cp -a "$HERE/." "$RESULTS/"
	fi
	if [ "$KEEP" = 1 ]; then
		log "lab '$LAB' left running (--keep); results so far in $RESULTS; remove it with: $labctl --name $LAB down"
	else
		"$labctl" down >/dev/null 2>&1 || log "warning: '$labctl --name $LAB down' failed; run it by hand"
	fi
	[ "$rc" -eq 0 ] || log "FAILED (exit $rc); whatever was written is in $RESULTS"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

lab() { "$labctl" "$@"; }
on() { local node=$1; shift; "$labctl" exec "$node" -- "$@"; }
# Starts a detached program on a node with its output appended to a file of the share; prints its pid.
spawn() { local node=$1 out=$2; shift 2; "$labctl" spawn "$node" --output "$out" -- "$@"; }
# Whether pid $2 runs on node $1 (a zombie has finished). Output is captured before it is
# matched: `grep -q` closing a pipe early would fail the writer under pipefail.
running() {
	local st
	st=$(on "$1" ps -o stat= -p "$2" 2>/dev/null) || return 1
	[[ -n "$st" && ! "$st" =~ ^[[:space:]]*Z ]]
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_for() {
	local what=$1 secs=$2 t0=$SECONDS
	shift 2
	until "$@"; do
		[ $((SECONDS - t0)) -lt "$secs" ] || return 1
		sleep 1
	done
}
listening() { [ -n "$(on node1 ss -Hltn 'sport = :18515')" ]; }
# The server's QP is connected and moving (our rxe's status lists QPs with owner and state).
transferring() {
	local st
	st=$(on node1 "$NODE_RDMIG" softroce status) || return 1
	grep -q "^qp .*pid=$1 .*state=rt[rs]" <<<"$st"
}
exited() { ! running "$1" "$2"; }

# One flow: ib_send_bw pair, sampler on the peer, migration of the server node1 -> node3.
# flow PREFIX LABEL [extra migrate arguments]
flow() {
	local p=$1 label=$2
	shift 2
	log "[$label] ib_send_bw -b -n $ITERS -s 4096: server node1 $SERVICE, client node2"
	for n in node1 node2 node3; do lab addr del "$n" "$SERVICE" >/dev/null 2>&1 || true; done
	lab addr add node1 "$SERVICE" >/dev/null
	local sgid cgid spid cpid smpid rc
	sgid=$(on node1 "$NODE_RDMIG" rxe gid-index --ip "$SERVICE") || die "no RoCE v2 GID for $SERVICE on node1"
	cgid=$(on node2 "$NODE_RDMIG" rxe gid-index --ip "$CLIENT_IP") || die "no RoCE v2 GID for $CLIENT_IP on node2"
	spid=$(spawn node1 "$NODE/${p}server.log" ib_send_bw -d rxe0 -x "$sgid" -b -n "$ITERS" -s 4096)
	wait_for "the server to listen" 30 listening || die "ib_send_bw on node1 does not listen after 30 s; see $HERE/${p}server.log"
	cpid=$(spawn node2 "$NODE/${p}client.log" ib_send_bw -d rxe0 -x "$cgid" -b -n "$ITERS" -s 4096 "$SERVICE")
	smpid=$(spawn node2 "$NODE/${p}sampler.log" "${CHRT[@]}" "$NODE_RDMIG" rxe sample --device rxe0 --interval-us 2000 \
		--out "$NODE/${p}samples.json" --until-exit "$cpid")
	wait_for "traffic" 60 transferring "$spid" || die "the pair did not connect within 60 s; see $HERE/${p}server.log and ${p}client.log"
	running node2 "$smpid" || die "the sampler is not running on node2: $(cat "$HERE/${p}sampler.log" 2>/dev/null)"
	log "[$label] traffic flows; migrating the server (pid $spid) node1 -> node3 in $MIGRATE_AFTER s"
	sleep "$MIGRATE_AFTER"
	running node1 "$spid" || die "ib_send_bw finished before the migration: use more --iterations"
	set +e
	"$labctl" on node1 --to-node node3 -- migrate "$spid" --tcp-established --move-addr "$SERVICE" \
		--timeline "$NODE/${p}migration" --json "$@" >"$HERE/${p}migrate-report.json" 2>"$HERE/${p}migrate.stderr"
	rc=$?
	set -e
	if [ "$rc" -ne 0 ]; then
		log "[$label] rdmig migrate exited $rc:"
		python3 - "$HERE/${p}migrate-report.json" <<'EOF' >&2 || true
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(0)
o = r.get("outcome", {})
print("  outcome:", o.get("outcome"), "-", o.get("reason", ""))
EOF
		sed 's/^/  | /' "$HERE/${p}migrate.stderr" >&2
		die "[$label] the migration failed (report: $RESULTS/${p}migrate-report.json)"
	fi
	log "[$label] migrated; waiting for both sides to finish"
	wait_for "the server" 900 exited node3 "$spid" || die "the server (pid $spid on node3) has not finished after 15 min"
	wait_for "the client" 120 exited node2 "$cpid" || die "the client (pid $cpid on node2) has not finished"
	wait_for "the sampler" 30 exited node2 "$smpid" || die "the sampler on node2 did not stop after the client"
	[ -s "$HERE/${p}samples.json" ] || die "the sampler wrote no samples: $(cat "$HERE/${p}sampler.log" 2>/dev/null)"
	mkdir -p "$RESULTS"
	local title
	title=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%.0f" % (r["summary"]["downtime_ns"]/1e6))' "$HERE/${p}migrate-report.json")
	# The whole run with a 250 ms average (50 ms is a blur over a minute), the migration with 50 ms.
	"$rdmig" plot throughput --samples "$HERE/${p}samples.json" --out "$RESULTS/${p}throughput.png" --smooth-ms 250 --json \
		--title "peer node2 while the server moves node1 -> node3 ($label, rdmig downtime $title ms)" >"$HERE/${p}peer-gap.json"
	"$rdmig" plot throughput --samples "$HERE/${p}samples.json" --out "$RESULTS/${p}throughput-zoom.png" --around-gap-ms 2000 \
		--title "peer node2 around the migration ($label)" >/dev/null
}

log "starting lab '$LAB' (3 nodes)"
# The lock descriptor is not passed to qemu (it would hold the lock for as long as the VMs run).
lab up --nodes 3 9>&-
mkdir -p "$HERE"

# The nodes read the host's root over 9p: the first run of criu, our plugin and ssh pays for
# reading them in, and the first connection lock of CRIU (--tcp-established: iptables rules per
# connection, with tcp and mark matches) loads netfilter modules. Warm every node once the same
# way, so that neither flow (ours runs first) pays that inside its downtime.
log "warming the nodes' caches and modules (criu, netfilter, plugin, ssh)"
for n in node1 node2 node3; do
	on "$n" sh -c 'criu check >/dev/null 2>&1; cat /mnt/lab/bin/*.so >/dev/null 2>&1; ssh -V 2>/dev/null
		for t in "iptables 127.0.0.2 127.0.0.3" "ip6tables ::2 ::3"; do
			set -- $t
			printf "*filter\n:RDMIGWARM - [0:0]\n-A RDMIGWARM -p tcp -s %s --sport 1 -d %s --dport 1 -j DROP\n-A RDMIGWARM -m mark --mark 0xC114 -j ACCEPT\nCOMMIT\n" "$2" "$3" |
				"$1-restore" -w --noflush && "$1" -w -F RDMIGWARM && "$1" -w -X RDMIGWARM
		done; true'
done
node3_underlay=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print([n["underlay_ip"] for n in s["plan"]["nodes"] if n["name"]=="node3"][0])' "$RDMIG_LAB_DIR/$LAB/state.json")
on node1 ssh -F /mnt/lab/ssh/ssh_config "$node3_underlay" true || die "ssh from node1 to node3 ($node3_underlay) does not work: the scp baseline needs it"

flow "" "rdmig defaults"
flow "baseline-" "baseline stop-and-copy over scp" --strategy stop-and-copy --transport scp

mkdir -p "$RESULTS"
cp -a "$HERE/." "$RESULTS/"
python3 - "$RESULTS" "$ITERS" <<'EOF' | tee "$RESULTS/summary.txt"
import json, os, re, sys

res, iters = sys.argv[1], int(sys.argv[2])

def perftest(path):
    """The result table's header and value lines of a perftest log, and its #iterations."""
    lines = open(path, errors="replace").read().splitlines()
    for i, l in enumerate(lines):
        if "#iterations" in l and i + 1 < len(lines):
            vals = lines[i + 1].split()
            return [l.strip(), lines[i + 1].strip()], int(vals[1]) if len(vals) > 1 and vals[1].isdigit() else None
    return ["(no result table in %s)" % os.path.basename(path)], None

def flow(p):
    r = json.load(open(os.path.join(res, p + "migrate-report.json")))
    g = json.load(open(os.path.join(res, p + "peer-gap.json")))
    return r, g

out = {"iterations": iters}
print("== rdmig demo: ib_send_bw -b -n %d -s 4096, server on 10.0.1.7 moved node1 -> node3, peer on node2 ==" % iters)
for p, name in [("", "ours"), ("baseline-", "baseline")]:
    r, g = flow(p)
    s = r["summary"]
    t = r.get("transport") or {}
    print()
    print("-- %s: strategy %s, images over %s (%s)" % (name, r["strategy"], t.get("used", "?"), t.get("reason", "")))
    ok = True
    for side, node in [("server", "node1 -> node3"), ("client", "node2")]:
        lines, n = perftest(os.path.join(res, p + side + ".log"))
        ok = ok and n == iters
        print("  %s (%s):" % (side, node))
        for l in lines:
            print("    " + l)
    print("  both sides ran all %d iterations" % iters if ok else "  WARNING: a side did not report %d iterations" % iters)
    print("  downtime (freeze start -> resume end): %.1f ms +/- %.3f ms" % (s["downtime_ns"] / 1e6, s["downtime_uncertainty_ns"] / 1e6))
    print("  pre-copy rounds: %d, at the freeze: %.1f MiB" % (len(r.get("rounds", [])), r.get("final_bytes", 0) / 2**20))
    print("  phases (%s's clock, ms from the first event):" % s["reference_node"])
    for sp in s["spans"]:
        ph = sp["phase"]
        ph = ph if isinstance(ph, str) else " ".join("%s %s" % kv for kv in ph.items())
        print("    %-18s %-6s start %9.1f  duration %9.1f" % (ph, sp["node"], (sp["start_ns"] - s["origin_ns"]) / 1e6, sp["duration_ns"] / 1e6))
    gap = g.get("rx_gap")
    if gap:
        print("  peer-observed gap (node2 received no packet): %.1f ms +/- %.1f ms, %.3f s to %.3f s into the run"
              % (gap["duration_ns"] / 1e6, gap["resolution_ns"] / 1e6, g["rx_gap_start_s"], g["rx_gap_end_s"]))
    else:
        print("  peer-observed gap: none found")
    mg = g.get("rx_message_gap")
    if mg:
        print("  ... and with no message (SEND) received: %.1f ms" % (mg["duration_ns"] / 1e6))
    print("  peer samples: %d, median interval %.0f us, %d overruns; mean %.2f MB/s received, %.2f MB/s sent"
          % (g["samples"], g["median_interval_ns"] / 1e3, g["overruns"], g["mean_rx_mb_s"], g["mean_tx_mb_s"]))
    out[name] = {
        "strategy": r["strategy"], "transport": t.get("used"), "downtime_ms": s["downtime_ns"] / 1e6,
        "downtime_uncertainty_ms": s["downtime_uncertainty_ns"] / 1e6, "precopy_rounds": len(r.get("rounds", [])),
        "final_mib": r.get("final_bytes", 0) / 2**20, "peer_gap_ms": gap["duration_ns"] / 1e6 if gap else None,
        "peer_message_gap_ms": mg["duration_ns"] / 1e6 if mg else None,
        "both_sides_complete": ok,
    }

o, b = out["ours"]["downtime_ms"], out["baseline"]["downtime_ms"]
out["downtime_ratio_ours_over_baseline"] = o / b if b else None
print()
print("== downtime, same run: ours %.1f ms vs baseline %.1f ms: ours/baseline = %.3f (ours %s)"
      % (o, b, o / b, "%.2fx shorter" % (b / o) if o < b else "%.2fx longer" % (o / b)))
og, bg = out["ours"]["peer_gap_ms"], out["baseline"]["peer_gap_ms"]
if og and bg:
    print("== peer-observed gap, same run: ours %.1f ms vs baseline %.1f ms: ours/baseline = %.3f" % (og, bg, og / bg))
print("   (baseline = stop-and-copy with the images copied by scp over ssh, as in the MigrOS")
print("    artifact's checkpoint/scp/restore; same lab, same run)")
json.dump(out, open(os.path.join(res, "summary.json"), "w"), indent=2)
print()
print("files in %s:" % res)
for f in sorted(os.listdir(res)):
    print("  " + os.path.join(res, f))
EOF
