#!/usr/bin/env bash
# The main job (issue 8): live-migrate one side of a running ib_send_bw while its peer keeps
# running, measure what the peer saw, and compare with a stop-and-copy baseline in the same run.
#
#   1. builds rdmig, packages it and installs the package here (packaging/build-deb.sh), and
#      brings up a 3-node SoftRoCE lab (VMs, our rdma_rxe) under /tmp/rdmig-lab.lock, whose
#      nodes run that package as a site would (the agent as its systemd unit starts it);
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
#
# --container (issue 16): the same flow, summary, plots and results with the benchmark in Podman
# containers (runc; the perftest image of lab/images/perftest-image.sh imported in each node):
# the server in container ctr-srv on node1 on 10.0.1.7, the client in container ctr-cli on node2,
# both `--network host --device /dev/infiniband/uverbs0 --ulimit memlock=-1:-1`. Ours is `rdmig
# migrate --container ctr-srv --move-addr 10.0.1.7 --tcp-established` (stop-and-copy: Podman's
# checkpoint, the archive over rdmig's transport, the destination agent's restore). The baseline
# is the MigrOS procedure with plain commands: `podman container checkpoint --export` on node1,
# scp of the archive to node3, the address moved (`rdmig-lab addr move`), `podman container
# restore --import` on node3. It has no rdmig report: its downtime is timed on the host, from
# the checkpoint command's start to the restore command's end (each step a lab command, so a few
# ms of the lab's own round trips are in it), as rdmig's container downtime also runs from its
# `podman container checkpoint` to the restore. Podman's checkpoint takes 30-45 s in the lab,
# hence more iterations by default.
set -euo pipefail
cd "$(dirname "$0")/.."

ITERS=120000
ITERS_SET=0
CONTAINER=0
KEEP=${KEEP_LAB:-0}
LAB=demo
MIGRATE_AFTER=10
OUT=""
LOCK=/tmp/rdmig-lab.lock
# With --container: -b traffic runs at 900-2800 iterations a second in the lab as the host is
# loaded; the container must still run when Podman's checkpoint freezes it (the checks and
# Podman's own start-up come first: up to some 50 s after the traffic began, 140000 at the top
# rate), and after the restore the rest runs for a minute or two.
CTR_ITERS=200000

usage() {
	cat <<EOF
usage: $0 [--container] [--iterations N] [--keep] [--name LAB] [--migrate-after S] [--out DIR]
  --container        run both sides of the benchmark in Podman containers and move the server's
                     with \`rdmig migrate --container\`; the baseline is Podman's own checkpoint
                     --export, scp, address move and restore --import (MigrOS's manual procedure)
  --iterations N     ib_send_bw -n (default $ITERS: about a minute at the lab's 14-15 MB/s,
                     perftest's -b figure, both directions together; with --container
                     $CTR_ITERS: Podman's checkpoint takes 30-45 s, before part of which the
                     container still runs, and ib_send_bw -b gives up after 120 s without a message)
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
	--container) CONTAINER=1; shift ;;
	--iterations) [ $# -ge 2 ] || die "--iterations needs a number"; ITERS=$2; ITERS_SET=1; shift 2 ;;
	--keep) KEEP=1; shift ;;
	--name) [ $# -ge 2 ] || die "--name needs a lab name"; LAB=$2; shift 2 ;;
	--migrate-after) [ $# -ge 2 ] || die "--migrate-after needs seconds"; MIGRATE_AFTER=$2; shift 2 ;;
	--out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done
[ "$CONTAINER" = 1 ] && [ "$ITERS_SET" = 0 ] && ITERS=$CTR_ITERS
[[ "$ITERS" =~ ^[1-9][0-9]*$ ]] || die "--iterations must be a positive number, not '$ITERS'"
[[ "$MIGRATE_AFTER" =~ ^[0-9]+$ ]] || die "--migrate-after must be whole seconds, not '$MIGRATE_AFTER'"
[ "$(id -u)" -eq 0 ] || die "run as root: the lab needs network namespaces and VMs"

scripts/setup.sh
cargo build --workspace --locked
# The lab's nodes run the rdmig package installed here, as a site runs it (the agent as its
# systemd unit starts it, CRIU's plugin from CRIU's own directory): this build's, packaged.
packaging/build-deb.sh --profile dev --install >/dev/null
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
NODE_RDMIG=/usr/bin/rdmig # the installed package, which the nodes run
RESULTS=${OUT:-experiments/results/demo-$(date -u +%Y%m%dT%H%M%SZ)}
# The sampler shares node2's one vCPU with a busy-polling ib_send_bw: real-time priority lets it
# wake on time (it sleeps ~all of each 2 ms period, so it takes almost nothing from the client).
CHRT=()
command -v chrt >/dev/null && CHRT=(chrt -f 10)

# One lab at a time on this machine (scripts/lab-lock.sh).
. scripts/lab-lock.sh # (the working directory is the repository)
take_lab_lock "$LOCK"

cleanup() {
	local rc=$?
	set +e
	if [ "$rc" -ne 0 ] && [ "$CONTAINER" = 1 ] && [ -d "$HERE" ] && declare -F ctr_diagnostics >/dev/null; then
		ctr_diagnostics
	fi
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

# migrate_failed PREFIX LABEL RC: says what `rdmig migrate` reported and stops.
migrate_failed() {
	local p=$1 label=$2 rc=$3
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
}

# The downtime of a migrate report, in whole ms.
report_downtime_ms() {
	python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%.0f" % (r["summary"]["downtime_ns"]/1e6))' "$1"
}

# plots PREFIX LABEL WHAT DOWNTIME: the peer's throughput while WHAT moves, and its gaps
# (${p}peer-gap.json, which the summary reads).
plots() {
	local p=$1 label=$2 what=$3 downtime=$4
	mkdir -p "$RESULTS"
	# The whole run with a 250 ms average (50 ms is a blur over a minute), the migration with 50 ms.
	"$rdmig" plot throughput --samples "$HERE/${p}samples.json" --out "$RESULTS/${p}throughput.png" --smooth-ms 250 --json \
		--title "peer node2 while $what moves node1 -> node3 ($label, $downtime)" >"$HERE/${p}peer-gap.json"
	"$rdmig" plot throughput --samples "$HERE/${p}samples.json" --out "$RESULTS/${p}throughput-zoom.png" --around-gap-ms 2000 \
		--title "peer node2 around the migration ($label)" >/dev/null
}

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
	spid=$(spawn node1 "$NODE/${p}server.log" ib_send_bw -F -d rxe0 -x "$sgid" -b -n "$ITERS" -s 4096)
	wait_for "the server to listen" 30 listening || die "ib_send_bw on node1 does not listen after 30 s; see $HERE/${p}server.log"
	cpid=$(spawn node2 "$NODE/${p}client.log" ib_send_bw -F -d rxe0 -x "$cgid" -b -n "$ITERS" -s 4096 "$SERVICE")
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
	[ "$rc" -eq 0 ] || migrate_failed "$p" "$label" "$rc"
	log "[$label] migrated; waiting for both sides to finish"
	wait_for "the server" 900 exited node3 "$spid" || die "the server (pid $spid on node3) has not finished after 15 min"
	wait_for "the client" 120 exited node2 "$cpid" || die "the client (pid $cpid on node2) has not finished"
	wait_for "the sampler" 30 exited node2 "$smpid" || die "the sampler on node2 did not stop after the client"
	[ -s "$HERE/${p}samples.json" ] || die "the sampler wrote no samples: $(cat "$HERE/${p}sampler.log" 2>/dev/null)"
	plots "$p" "$label" "the server" "rdmig downtime $(report_downtime_ms "$HERE/${p}migrate-report.json") ms"
}

# --- --container: the same flow with Podman containers ---
IMAGE=localhost/rdmig-perftest:lab
# Podman's own configuration for a lab node (as the lab tests write it): storage on the node's
# /run (the host's root is read-only there), cgroups without systemd, file events, runc (Debian's
# crun cannot checkpoint). The podman commands here get it as CONTAINERS_CONF /
# CONTAINERS_STORAGE_CONF, rdmig migrate and the destination's agent as --containers-conf /
# --containers-storage-conf.
NODE_CONTAINERS_CONF=/mnt/lab/podman/containers.conf
NODE_STORAGE_CONF=/mnt/lab/podman/storage.conf
# The RDMA container's needs: its uverbs device (CRIU borrows rxe's control device from the
# node's agent) and unlimited memlock; the host's network, where the service address moves.
CTR_RUN=(--network host --device /dev/infiniband/uverbs0 --ulimit memlock=-1:-1)
# Where the baseline's archive goes on node1 and node3 (the nodes' own tmpfs; Podman's default
# compression, zstd).
CTR_ARCHIVE=/tmp/demo-ctr-srv-checkpoint.tar.zst

# pod_t SECS NODE ARGS...: podman with the lab's configuration on NODE, killed after SECS.
pod_t() {
	local secs=$1 node=$2
	shift 2
	"$labctl" exec "$node" --timeout "$secs" -- env CONTAINERS_CONF="$NODE_CONTAINERS_CONF" CONTAINERS_STORAGE_CONF="$NODE_STORAGE_CONF" podman "$@"
}
pod() { pod_t 600 "$@"; }
now_ns() { date +%s%N; }

# Podman in every node: cgroup2 (the nodes' init mounts none; runc needs it), Podman's
# directories and the perftest image. runc's CRIU takes its plugins from its own directory
# (/usr/lib/criu), where this build's package, installed above, put rdmig's plugin.
containers_setup() {
	local n t pids=() tool
	for tool in podman runc; do
		command -v "$tool" >/dev/null || die "$tool is not installed on this host (the nodes run its programs): scripts/setup.sh installs it"
	done
	[ -f /usr/lib/criu/librdmig_criu.so ] || die "/usr/lib/criu/librdmig_criu.so is missing: the rdmig package is not installed (packaging/build-deb.sh --install)"
	mkdir -p "$SHARE/podman"
	printf '%s\n' '[engine]' 'cgroup_manager = "cgroupfs"' 'events_logger = "file"' 'runtime = "runc"' 'tmp_dir = "/run/podman/tmp"' '' \
		'[engine.runtimes]' 'runc = ["/usr/sbin/runc"]' '' '[network]' 'network_config_dir = "/run/podman/net"' >"$SHARE/podman/containers.conf"
	printf '%s\n' '[storage]' 'driver = "vfs"' 'graphroot = "/run/podman/root"' 'runroot = "/run/podman/runroot"' >"$SHARE/podman/storage.conf"
	log "building the perftest image (lab/images/perftest-image.sh) and loading it into the nodes"
	lab/images/perftest-image.sh "$SHARE/rdmig-perftest.tar" >&2
	for n in node1 node2 node3; do
		# A first container on each node also reads podman's, conmon's and runc's files in over
		# 9p, so that neither flow pays for that.
		(
			on "$n" sh -c 'mountpoint -q /sys/fs/cgroup || mount -t cgroup2 none /sys/fs/cgroup
				mkdir -p /run/podman/net /run/podman/tmp' &&
				pod "$n" import /mnt/lab/rdmig-perftest.tar "$IMAGE" >/dev/null &&
				pod "$n" run --rm "${CTR_RUN[@]}" "$IMAGE" sh -c :
		) >"$HERE/podman-setup-$n.log" 2>&1 &
		pids+=($!)
	done
	for t in 0 1 2; do
		wait "${pids[$t]}" || die "Podman set-up on node$((t + 1)) failed: $(cat "$HERE/podman-setup-node$((t + 1)).log")"
	done
	# The destination's agent restores with the lab's Podman configuration: the lab's agents read
	# more flags from their share's agent-flags file when they start, so start node3's again
	# (its supervisor does, within a second of its end).
	local flags=$RDMIG_LAB_DIR/$LAB/node3/share/agent-flags old
	echo "--containers-conf=$NODE_CONTAINERS_CONF --containers-storage-conf=$NODE_STORAGE_CONF" >"$flags"
	old=$(on node3 pgrep -f 'rdmig agent --listen') || die "no migration agent runs on node3"
	on node3 sh -c "kill -KILL ${old//$'\n'/ }"
	agent_back() {
		local now
		now=$(on node3 pgrep -f 'rdmig agent --listen') || return 1
		[ -n "$now" ] && [ "$now" != "$old" ] && [ -n "$(on node3 ss -Hltn 'sport = :7800')" ]
	}
	wait_for "node3's agent" 60 agent_back || die "node3's migration agent did not come back with the Podman flags"
}

# ctr_start PREFIX LABEL: the ib_send_bw -b pair in containers (server ctr-srv on node1 on
# $SERVICE, client ctr-cli on node2) and the sampler on node2, once the traffic runs; sets
# CTR_SPID and CTR_CPID (their processes as node1 and node2 see them) and CTR_SMPID.
ctr_start() {
	local p=$1 label=$2 n sgid cgid
	log "[$label] ib_send_bw -b -n $ITERS -s 4096 in containers: server ctr-srv node1 $SERVICE, client ctr-cli node2"
	for n in node1 node2 node3; do
		pod "$n" rm -f --ignore ctr-srv ctr-cli >/dev/null 2>&1 || true
		lab addr del "$n" "$SERVICE" >/dev/null 2>&1 || true
	done
	lab addr add node1 "$SERVICE" >/dev/null
	sgid=$(on node1 "$NODE_RDMIG" rxe gid-index --ip "$SERVICE") || die "no RoCE v2 GID for $SERVICE on node1"
	cgid=$(on node2 "$NODE_RDMIG" rxe gid-index --ip "$CLIENT_IP") || die "no RoCE v2 GID for $CLIENT_IP on node2"
	pod node1 run -d --name ctr-srv "${CTR_RUN[@]}" "$IMAGE" ib_send_bw -F -d rxe0 -x "$sgid" -b -n "$ITERS" -s 4096 >/dev/null ||
		die "podman run of the server's container on node1 failed"
	wait_for "the server to listen" 60 listening || die "ib_send_bw in ctr-srv on node1 does not listen after 60 s: $(pod node1 logs ctr-srv 2>&1)"
	CTR_SPID=$(on node1 pgrep -n -x ib_send_bw) || die "no ib_send_bw process on node1"
	pod node2 run -d --name ctr-cli "${CTR_RUN[@]}" "$IMAGE" ib_send_bw -F -d rxe0 -x "$cgid" -b -n "$ITERS" -s 4096 "$SERVICE" >/dev/null ||
		die "podman run of the client's container on node2 failed"
	# (podman run -d may return while the container's first process is still runc's init.)
	client_started() { CTR_CPID=$(on node2 pgrep -n -x ib_send_bw); }
	wait_for "the client" 30 client_started || die "no ib_send_bw process on node2: $(pod node2 logs ctr-cli 2>&1)"
	CTR_SMPID=$(spawn node2 "$NODE/${p}sampler.log" "${CHRT[@]}" "$NODE_RDMIG" rxe sample --device rxe0 --interval-us 2000 \
		--out "$NODE/${p}samples.json" --until-exit "$CTR_CPID")
	wait_for "traffic" 60 transferring "$CTR_SPID" || die "the pair did not connect within 60 s: $(pod node1 logs ctr-srv 2>&1; pod node2 logs ctr-cli 2>&1)"
	running node2 "$CTR_SMPID" || die "the sampler is not running on node2: $(cat "$HERE/${p}sampler.log" 2>/dev/null)"
	log "[$label] traffic flows; moving the server's container node1 -> node3 in $MIGRATE_AFTER s"
	sleep "$MIGRATE_AFTER"
	running node1 "$CTR_SPID" || die "ib_send_bw finished before the migration: use more --iterations"
}

# ctr_finish PREFIX LABEL DOWNTIME: waits for both containers (the server's on node3) and the
# sampler, keeps both perftest outputs, and plots.
ctr_finish() {
	local p=$1 label=$2 downtime=$3 code
	code=$(pod_t 900 node3 wait ctr-srv) || die "the server's container on node3 has not finished after 15 min"
	pod node3 logs ctr-srv >"$HERE/${p}server.log" 2>&1 || true
	[ "$code" = 0 ] || die "[$label] ctr-srv on node3 exited with $code: $(tail -n 20 "$HERE/${p}server.log")"
	code=$(pod node2 wait ctr-cli) || die "podman wait ctr-cli on node2 failed"
	pod node2 logs ctr-cli >"$HERE/${p}client.log" 2>&1 || true
	[ "$code" = 0 ] || die "[$label] ctr-cli on node2 exited with $code: $(tail -n 20 "$HERE/${p}client.log")"
	wait_for "the sampler" 30 exited node2 "$CTR_SMPID" || die "the sampler on node2 did not stop after the client"
	[ -s "$HERE/${p}samples.json" ] || die "the sampler wrote no samples: $(cat "$HERE/${p}sampler.log" 2>/dev/null)"
	plots "$p" "$label" "the server's container" "$downtime"
}

# Ours: rdmig migrate --container, its report and timeline as for a process.
ctr_flow_rdmig() {
	local p=$1 label=$2 rc
	ctr_start "$p" "$label"
	set +e
	# The archive is small (some 100 KiB to a few MiB): TCP, no transport probes first.
	"$labctl" on node1 --to-node node3 -- migrate --container ctr-srv --tcp-established --move-addr "$SERVICE" --transport tcp \
		--containers-conf "$NODE_CONTAINERS_CONF" --containers-storage-conf "$NODE_STORAGE_CONF" \
		--timeline "$NODE/${p}migration" --json >"$HERE/${p}migrate-report.json" 2>"$HERE/${p}migrate.stderr"
	rc=$?
	set -e
	[ "$rc" -eq 0 ] || migrate_failed "$p" "$label" "$rc"
	log "[$label] migrated; waiting for both containers to finish"
	ctr_finish "$p" "$label" "rdmig downtime $(report_downtime_ms "$HERE/${p}migrate-report.json") ms"
}

# The baseline: MigrOS's procedure with plain commands, each step timed on the host's clock
# (${p}procedure.json: the steps, and the downtime from the checkpoint's start to the restore's
# end, which is when the container runs again).
ctr_flow_manual() {
	local p=$1 label=$2 t0 t1 t2 t3 t4 bytes
	ctr_start "$p" "$label"
	rm -f "$HERE/${p}procedure.log"
	t0=$(now_ns)
	pod node1 container checkpoint --export "$CTR_ARCHIVE" --tcp-established ctr-srv >>"$HERE/${p}procedure.log" 2>&1 ||
		die "[$label] podman container checkpoint on node1 failed: $(cat "$HERE/${p}procedure.log")"
	t1=$(now_ns)
	on node1 scp -q -F /mnt/lab/ssh/ssh_config "$CTR_ARCHIVE" "$node3_underlay:$CTR_ARCHIVE" >>"$HERE/${p}procedure.log" 2>&1 ||
		die "[$label] scp of the archive to node3 failed: $(cat "$HERE/${p}procedure.log")"
	t2=$(now_ns)
	lab addr move "$SERVICE" --to node3 >>"$HERE/${p}procedure.log" 2>&1 || die "[$label] moving $SERVICE to node3 failed: $(cat "$HERE/${p}procedure.log")"
	t3=$(now_ns)
	pod node3 container restore --import "$CTR_ARCHIVE" --tcp-established >>"$HERE/${p}procedure.log" 2>&1 ||
		die "[$label] podman container restore on node3 failed: $(cat "$HERE/${p}procedure.log")"
	t4=$(now_ns)
	log "[$label] restored on node3 after $(((t4 - t0) / 1000000)) ms; waiting for both containers to finish"
	# Outside the timed part, as rdmig's commit: the stopped copy on node1 goes.
	bytes=$(on node1 stat -c %s "$CTR_ARCHIVE") || bytes=0
	pod node1 rm ctr-srv >/dev/null 2>&1 || log "[$label] warning: could not remove the stopped ctr-srv on node1"
	cat >"$HERE/${p}procedure.json" <<EOF
{
  "procedure": "podman container checkpoint --export (node1), scp (node1 -> node3), rdmig-lab addr move, podman container restore --import (node3)",
  "clock": "host",
  "downtime_ns": $((t4 - t0)),
  "archive_bytes": $bytes,
  "steps": [
    {"step": "checkpoint", "node": "node1", "start_ns": $t0, "end_ns": $t1},
    {"step": "scp", "node": "node1", "start_ns": $t1, "end_ns": $t2},
    {"step": "address move", "node": "host", "start_ns": $t2, "end_ns": $t3},
    {"step": "restore", "node": "node3", "start_ns": $t3, "end_ns": $t4}
  ]
}
EOF
	ctr_finish "$p" "$label" "downtime $(((t4 - t0) / 1000000)) ms"
}

# What the containers and the agents said, for a failed --container run's results.
ctr_diagnostics() {
	local n c
	for n in node1 node2 node3; do
		{
			echo "=== podman ps -a"
			pod "$n" ps -a 2>&1
			for c in ctr-srv ctr-cli; do
				echo "=== podman logs $c"
				pod "$n" logs "$c" 2>&1 | tail -n 40
			done
			echo "=== CRIU's logs"
			on "$n" sh -c 'for f in $(find /run/podman -name dump.log -o -name restore.log 2>/dev/null); do echo "== $f"; grep -E "rdmig_criu|Error|rror \(" "$f" | tail -n 30; done' 2>&1
		} >"$HERE/failure-$n.txt" 2>&1
		cp "$RDMIG_LAB_DIR/$LAB/$n/share/migration-agent.log" "$HERE/failure-$n-agent.log" 2>/dev/null
	done
}

log "starting lab '$LAB' (3 nodes)"
# The lock descriptor is not passed to qemu (it would hold the lock for as long as the VMs run).
# Containers: Podman's storage (vfs) and the checkpoint archives live in the nodes' memory; the
# lab tests run them in nodes of 1536 MiB.
UP_MEMORY=()
[ "$CONTAINER" = 1 ] && UP_MEMORY=(--memory 1536)
lab up --nodes 3 "${UP_MEMORY[@]}" 9>&-
mkdir -p "$HERE"

# The nodes read the host's root over 9p: the first run of criu, our plugin and ssh pays for
# reading them in, and the first connection lock of CRIU (--tcp-established: iptables rules per
# connection, with tcp and mark matches) loads netfilter modules. Warm every node once the same
# way, so that neither flow (ours runs first) pays that inside its downtime.
log "warming the nodes' caches and modules (criu, netfilter, plugin, ssh)"
for n in node1 node2 node3; do
	on "$n" sh -c 'criu check >/dev/null 2>&1; cat /usr/bin/rdmig /usr/lib/criu/*.so >/dev/null 2>&1; ssh -V 2>/dev/null
		for t in "iptables 127.0.0.2 127.0.0.3" "ip6tables ::2 ::3"; do
			set -- $t
			printf "*filter\n:RDMIGWARM - [0:0]\n-A RDMIGWARM -p tcp -s %s --sport 1 -d %s --dport 1 -j DROP\n-A RDMIGWARM -m mark --mark 0xC114 -j ACCEPT\nCOMMIT\n" "$2" "$3" |
				"$1-restore" -w --noflush && "$1" -w -F RDMIGWARM && "$1" -w -X RDMIGWARM
		done; true'
done
node3_underlay=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print([n["underlay_ip"] for n in s["plan"]["nodes"] if n["name"]=="node3"][0])' "$RDMIG_LAB_DIR/$LAB/state.json")
on node1 ssh -F /mnt/lab/ssh/ssh_config "$node3_underlay" true || die "ssh from node1 to node3 ($node3_underlay) does not work: the scp baseline needs it"

if [ "$CONTAINER" = 1 ]; then
	containers_setup
	ctr_flow_rdmig "" "rdmig migrate --container"
	ctr_flow_manual "baseline-" "baseline podman checkpoint, scp, restore"
else
	flow "" "rdmig defaults"
	flow "baseline-" "baseline stop-and-copy over scp" --strategy stop-and-copy --transport scp
fi

mkdir -p "$RESULTS"
cp -a "$HERE/." "$RESULTS/"
python3 - "$RESULTS" "$ITERS" "$CONTAINER" <<'EOF' | tee "$RESULTS/summary.txt"
import json, os, re, sys

res, iters, container = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"

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

def manual(p):
    """The container baseline: its steps as timed on the host, in the shape of a report."""
    m = json.load(open(os.path.join(res, p + "procedure.json")))
    g = json.load(open(os.path.join(res, p + "peer-gap.json")))
    origin = m["steps"][0]["start_ns"]
    r = {"strategy": "podman checkpoint/restore by hand", "transport": {"used": "scp", "reason": "MigrOS's manual procedure"},
         "final_bytes": m["archive_bytes"], "rounds": [],
         "summary": {"downtime_ns": m["downtime_ns"], "downtime_uncertainty_ns": None, "reference_node": "the host",
                     "origin_ns": origin, "spans": [{"phase": st["step"], "node": st["node"], "start_ns": st["start_ns"],
                                                     "duration_ns": st["end_ns"] - st["start_ns"]} for st in m["steps"]]}}
    return r, g

out = {"iterations": iters}
if container:
    out["mode"] = "container"
    print("== rdmig demo, containers: ib_send_bw -b -n %d -s 4096 in Podman containers, server ctr-srv on 10.0.1.7 moved node1 -> node3, client ctr-cli on node2 ==" % iters)
else:
    print("== rdmig demo: ib_send_bw -b -n %d -s 4096, server on 10.0.1.7 moved node1 -> node3, peer on node2 ==" % iters)
for p, name in [("", "ours"), ("baseline-", "baseline")]:
    r, g = manual(p) if container and name == "baseline" else flow(p)
    s = r["summary"]
    t = r.get("transport") or {}
    print()
    if container and name == "baseline":
        print("-- %s: podman container checkpoint --export (node1), scp to node3, rdmig-lab addr move, podman container restore --import (node3)" % name)
    elif container:
        print("-- %s: rdmig migrate --container, strategy %s, archive over %s (%s)" % (name, r["strategy"], t.get("used", "?"), t.get("reason", "")))
    else:
        print("-- %s: strategy %s, images over %s (%s)" % (name, r["strategy"], t.get("used", "?"), t.get("reason", "")))
    ok = True
    for side, node in [("server", "node1 -> node3"), ("client", "node2")]:
        lines, n = perftest(os.path.join(res, p + side + ".log"))
        ok = ok and n == iters
        print("  %s (%s):" % (side, node))
        for l in lines:
            print("    " + l)
        # -F: perftest's end-of-run TSC calibration can fail when the host deschedules a node
        # (see lab/tests/lab/harness.rs, PERFTEST_KEEP_GOING); the count still holds.
        if "Correlation coefficient" in open(os.path.join(res, p + side + ".log"), errors="replace").read():
            print("    (perftest's clock calibration failed on this side: its bandwidth figures are void)")
    print("  both sides ran all %d iterations" % iters if ok else "  WARNING: a side did not report %d iterations" % iters)
    if container and name == "baseline":
        print("  downtime (checkpoint command's start -> restore command's end, the host's clock): %.1f ms" % (s["downtime_ns"] / 1e6))
        print("  checkpoint archive: %.1f MiB" % (r["final_bytes"] / 2**20))
    elif container:
        print("  downtime (podman checkpoint's start -> restore's end, rdmig's report): %.1f ms +/- %.3f ms" % (s["downtime_ns"] / 1e6, s["downtime_uncertainty_ns"] / 1e6))
        print("  checkpoint archive: %.1f MiB" % (r.get("final_bytes", 0) / 2**20))
    else:
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
        "downtime_uncertainty_ms": s["downtime_uncertainty_ns"] / 1e6 if s["downtime_uncertainty_ns"] is not None else None,
        "precopy_rounds": len(r.get("rounds", [])),
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
if container:
    print("   (baseline = Podman's checkpoint --export, scp over ssh, address move and restore --import")
    print("    by hand, as in the MigrOS artifact's checkpoint/scp/restore; same lab, same run; its")
    print("    downtime is timed on the host around the lab's commands)")
else:
    print("   (baseline = stop-and-copy with the images copied by scp over ssh, as in the MigrOS")
    print("    artifact's checkpoint/scp/restore; same lab, same run)")
json.dump(out, open(os.path.join(res, "summary.json"), "w"), indent=2)
print()
print("files in %s:" % res)
for f in sorted(os.listdir(res)):
    print("  " + os.path.join(res, f))
EOF
