#!/usr/bin/env bash
# rdmig's TCP transfer (the agents' mutual TLS 1.3 channel) against iperf3 on this machine's own
# CPU, no virtual machines: two network namespaces joined by a veth pair.
#
#   experiments/host-tls-vs-iperf3.sh [SIZE_MIB] [ROUNDS] [STREAMS]   (defaults 512, 3, 1; as root)
#
# Namespace rdmig-hb-a (10.250.0.1/24) sends, rdmig-hb-b (10.250.0.2/24) receives. A CA and the
# certificates of nodes hb-a and hb-b are made in a temporary directory; an `rdmig agent` runs in
# hb-b, TCP only (no --rdma-addr, no /dev/rxe_ctl lent, its journal and work directory in the
# temporary directory). Per round, with the order alternating between rounds so drift does not
# favour one:
#   - `rdmig bench transfer --transports tcp` in hb-a to the agent: SIZE MiB of probe data, timed
#     from the request to the agent's acknowledgement (the data checked), handshake excluded;
#   - `iperf3 -c -n SIZE MiB` in hb-a to `iperf3 -s -1` in hb-b: the receiver's rate.
# With STREAMS > 1, rdmig's SIZE is split over that many `bench transfer`s started together,
# each on its own TLS connection (their bytes over the longest one's time), and iperf3 also runs
# with -P STREAMS; the goal's baseline stays iperf3's one stream. This asks whether the TLS
# sealing, spread over the cores, gets closer to what one plain stream moves.
# Each tool's run also records the CPU time the whole machine spent (/proc/stat, every core,
# busy = user+nice+system+irq+softirq+steal) per GiB moved, so the cost is seen beside the rate.
# Both in MB/s of 10^6 bytes (rdmig's unit; iperf3's bits/s / 8 / 10^6). Prints medians and the
# ratio rdmig/iperf3 (issue 17's goal: at least 90 %), and writes all runs as JSON to
# experiments/results/host-tls-<time>.json (OUT=FILE to write elsewhere). Both ends of both tools
# share this machine's cores (not pinned): measure on a machine that runs nothing else.
#
# RDMIG=PATH measures that binary; unset, the script builds target/release/rdmig first. It takes
# no lab and not /tmp/rdmig-lab.lock, only its own /tmp/rdmig-host-bench.lock.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "run as root (network namespaces, the agent)" >&2; exit 1; }
# Paths given relative to the caller's directory, before moving to the repository.
if [ -n "${RDMIG:-}" ]; then RDMIG=$(realpath "$(command -v "$RDMIG")"); fi
if [ -n "${OUT:-}" ]; then OUT=$(realpath -m "$OUT"); fi
cd "$(dirname "$0")/.."
. experiments/host-netns.sh
size=${1:-512}
rounds=${2:-3}
streams=${3:-1}
[ "$streams" -ge 1 ] && [ "$streams" -le 8 ] || { echo "STREAMS must be 1 to 8" >&2; exit 2; }
port=7800      # the agent
iperf_port=5201
A=rdmig-hb-a
B=rdmig-hb-b
ip_a=10.250.0.1
ip_b=10.250.0.2

if [ -z "${RDMIG:-}" ]; then
	cargo build --release --locked -p rdmig
	RDMIG=$PWD/target/release/rdmig
	built_here=true
else
	built_here=false
fi
command -v iperf3 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y iperf3
out=${OUT:-experiments/results/host-tls-$(date -u +%Y%m%dT%H%M%SZ).json}
mkdir -p "$(dirname "$out")"

exec 9>/tmp/rdmig-host-bench.lock
flock -n 9 || { echo "another host-tls-vs-iperf3.sh holds /tmp/rdmig-host-bench.lock" >&2; exit 1; }
tmp=$(mktemp -d /tmp/rdmig-host-bench.XXXXXX)
runs=$tmp/runs.jsonl
agent_pid=
iperf_pid=
cleanup() {
	for p in $agent_pid $iperf_pid; do kill "$p" 2>/dev/null || true; done
	for p in $agent_pid $iperf_pid; do wait "$p" 2>/dev/null || true; done
	netns_del "$A" "$B"
	rm -rf "$tmp"
}
trap cleanup EXIT

netns_pair "$A" veth-hb-a "$ip_a" "$B" veth-hb-b "$ip_b"
mtu=$(ip netns exec "$A" cat /sys/class/net/veth-hb-a/mtu)
# The cluster CA and the two nodes' TLS directories.
node_tls "$RDMIG" "$tmp" "$ip_a" "$ip_b"

mkdir -p "$tmp/work"
TMPDIR=$tmp ip netns exec "$B" "$RDMIG" agent --listen "$ip_b:$port" --tls-dir "$tmp/hb-b" --allow-peer hb-a \
	--work-dir "$tmp/work" --journal "$tmp/journal.db" --lend-socket none >"$tmp/agent.log" 2>&1 &
agent_pid=$!
if ! listening "$B" "$port" || ! kill -0 "$agent_pid" 2>/dev/null; then
	echo "the agent is not listening on $ip_b:$port; its log:" >&2
	cat "$tmp/agent.log" >&2
	exit 1
fi

# Each run writes its tool's JSON to $tmp/TOOL.json (not captured with $(...): the iperf3 server
# must stay this shell's child for the trap to find it).
rdmig_run() { # MiB: split over $streams transfers started together, rdmig-I.json each
	local each=$(($1 / streams)) pids=() i failed=0
	for i in $(seq "$streams"); do
		TMPDIR=$tmp timeout 900 ip netns exec "$A" "$RDMIG" bench transfer --to "$ip_b:$port" --to-name hb-b \
			--tls-dir "$tmp/hb-a" --size-mib "$each" --transports tcp --json >"$tmp/rdmig-$i.json" &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i" || failed=1; done
	[ "$failed" -eq 0 ] || { echo "rdmig bench transfer failed; the agent's log:" >&2; cat "$tmp/agent.log" >&2; return 1; }
}
iperf3_with() { # MiB PARALLEL OUT
	ip netns exec "$B" iperf3 -s -1 -B "$ip_b" -p "$iperf_port" >"$tmp/iperf3-server.log" 2>&1 &
	iperf_pid=$!
	listening "$B" "$iperf_port" || { echo "iperf3 -s did not listen:" >&2; cat "$tmp/iperf3-server.log" >&2; return 1; }
	timeout 900 ip netns exec "$A" iperf3 -c "$ip_b" -B "$ip_a" -p "$iperf_port" -n "${1}M" -P "$2" -J >"$3" ||
		{ echo "iperf3 -c failed:" >&2; cat "$3" "$tmp/iperf3-server.log" >&2; return 1; }
	wait "$iperf_pid"
	iperf_pid=
}
iperf3_run() { iperf3_with "$1" 1 "$tmp/iperf3.json"; }
iperf3p_run() { iperf3_with "$1" "$streams" "$tmp/iperf3p.json"; }
# The machine's busy CPU time so far, in clock ticks (every core).
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
hz=$(getconf CLK_TCK)

# Warm-up, not counted: page cache, the agent's first connection, TCP's first flows.
rdmig_run 16
iperf3_run 16

tools=(rdmig iperf3)
[ "$streams" -eq 1 ] || tools+=(iperf3p)
for r in $(seq "$rounds"); do
	# Rotated each round, so that drift favours no tool.
	order=("${tools[@]:$(((r - 1) % ${#tools[@]}))}" "${tools[@]:0:$(((r - 1) % ${#tools[@]}))}")
	for t in "${order[@]}"; do
		b0=$(busy)
		"${t}_run" "$size"
		echo $(($(busy) - b0)) >"$tmp/$t.ticks"
	done
	python3 - "$r" "${order[*]}" "$tmp" "$streams" "$hz" >>"$runs" <<'EOF'
import json, os, sys
r, order, tmp, streams, hz = int(sys.argv[1]), sys.argv[2].split(), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def tcp(i):
    return next(x for x in json.load(open(f"{tmp}/rdmig-{i}.json")) if x["transport"] == "tcp")
ours = [tcp(i) for i in range(1, streams + 1)]
ip3 = json.load(open(f"{tmp}/iperf3.json"))
end = ip3["end"]
cpu = {t: int(open(f"{tmp}/{t}.ticks").read()) / hz for t in order}
gib = lambda b: b / 2**30
# Together: their bytes over the longest one's time (they start within milliseconds).
rbytes, rsecs = sum(x["bytes"] for x in ours), max(x["secs"] for x in ours)
row = {"round": r, "order": order, "streams": streams,
       "rdmig_tcp_mb_s": rbytes / rsecs / 1e6, "rdmig_bytes": rbytes, "rdmig_secs": rsecs,
       "rdmig_stream_mb_s": [x["mb_s"] for x in ours],
       "rdmig_cpu_s_per_gib": cpu["rdmig"] / gib(rbytes),
       # bits/s of the receiver, in MB/s of 10^6 bytes as rdmig reports.
       "iperf3_mb_s": end["sum_received"]["bits_per_second"] / 8 / 1e6,
       "iperf3_bytes": end["sum_received"]["bytes"], "iperf3_secs": end["sum_received"]["seconds"],
       # iperf3 3.12's receiver stops counting a little before the last bytes: its rate is used
       # (bytes and seconds cut together); the sender's, for reference.
       "iperf3_sent_mb_s": end["sum_sent"]["bits_per_second"] / 8 / 1e6,
       "iperf3_retransmits": end["sum_sent"].get("retransmits"),
       "iperf3_cpu_percent": end.get("cpu_utilization_percent"),
       "iperf3_cpu_s_per_gib": cpu["iperf3"] / gib(end["sum_sent"]["bytes"])}
if streams > 1:
    e = json.load(open(f"{tmp}/iperf3p.json"))["end"]
    row["iperf3_parallel_mb_s"] = e["sum_received"]["bits_per_second"] / 8 / 1e6
    row["iperf3_parallel_cpu_s_per_gib"] = cpu["iperf3p"] / gib(e["sum_sent"]["bytes"])
row["rdmig_vs_iperf3"] = row["rdmig_tcp_mb_s"] / row["iperf3_mb_s"]
print(json.dumps(row))
EOF
	tail -n1 "$runs" >&2
done

version=$("$RDMIG" --version)
sha=$(sha256sum "$RDMIG" | cut -d' ' -f1)
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
# The binary as the repository names it when it is inside (no machine path in the results).
bin_rec=$(realpath --relative-base="$PWD" "$RDMIG")
python3 - "$runs" "$out" "$size" "$rounds" "$streams" "$bin_rec" "$version" "$sha" "$built_here" "$(git rev-parse HEAD)" \
	"$(git status --porcelain | wc -l)" "$cpu" "$(nproc)" "$(uname -r)" "$(iperf3 --version | head -n1)" "$mtu" \
	"$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import json, statistics, sys
(runs, out, size, rounds, streams, binary, version, sha, built, head, dirty, cpu, ncpu, kernel, iperf3,
 mtu, load) = sys.argv[1:]
rows = [json.loads(l) for l in open(runs)]
keys = ["rdmig_tcp_mb_s", "iperf3_mb_s", "rdmig_cpu_s_per_gib", "iperf3_cpu_s_per_gib"]
if int(streams) > 1:
    keys += ["iperf3_parallel_mb_s", "iperf3_parallel_cpu_s_per_gib"]
m = {k: statistics.median(r[k] for r in rows) for k in keys}
ratio = m["rdmig_tcp_mb_s"] / m["iperf3_mb_s"]
res = {"size_mib": int(size), "rounds": int(rounds), "streams": int(streams), "mb": "10^6 bytes",
       "rdmig": {"binary": binary, "version": version, "sha256": sha, "built_by_script": built == "true",
                 "profile": "release" if built == "true" else "unknown (RDMIG given)",
                 "repository_head": head, "repository_changed_files": int(dirty)},
       "iperf3": iperf3,
       "host": {"cpu_model": cpu, "cpus": int(ncpu), "kernel": kernel, "load_average_after": load,
                "cpus_shared": f"both ends of each tool (sender in netns rdmig-hb-a, receiver in rdmig-hb-b) share this machine's {ncpu} cores, not pinned"},
       "network": {"link": "veth pair between two network namespaces", "mtu": int(mtu),
                   "sender": "10.250.0.1", "receiver": "10.250.0.2"},
       "rdmig_transfer": "bench transfer --transports tcp: mutual TLS 1.3 channel to an rdmig agent, timed from the request to the agent's ack, handshake excluded"
                         + (f"; {streams} of them started together, each on its own connection with SIZE/{streams}, their bytes over the longest one's time" if int(streams) > 1 else ""),
       "cpu": "busy CPU seconds of the whole machine (every core) during each tool's run, per GiB sent",
       "runs": rows, "median_mb_s": m, "rdmig_vs_iperf3": ratio, "goal": 0.9,
       # Each round's own pair: the host's other load moves both sides of a round together.
       "rdmig_vs_iperf3_by_round": [r["rdmig_vs_iperf3"] for r in rows]}
print(f"rdmig TCP+TLS {m['rdmig_tcp_mb_s']:.1f} MB/s vs iperf3 {m['iperf3_mb_s']:.1f} MB/s (medians, MB = 10^6 bytes): "
      f"{ratio:.0%} (goal 90%: {'met' if ratio >= 0.9 else 'not met'})")
print("per round: " + " ".join(f"{x:.0%}" for x in res["rdmig_vs_iperf3_by_round"]))
print(f"CPU per GiB (whole machine, medians): rdmig {m['rdmig_cpu_s_per_gib']:.2f} s, iperf3 {m['iperf3_cpu_s_per_gib']:.2f} s")
if int(streams) > 1:
    print(f"iperf3 -P {streams}: {m['iperf3_parallel_mb_s']:.1f} MB/s, {m['iperf3_parallel_cpu_s_per_gib']:.2f} CPU s per GiB")
json.dump(res, open(out, "w"), indent=2)
print("written:", out)
EOF
