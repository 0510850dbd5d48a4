#!/usr/bin/env bash
# Two rdmig builds' TCP transfer (mutual TLS 1.3 to an agent) side by side on this machine's own
# CPU, with iperf3 in each round as the ceiling: for a change to the channel, A before, B after.
#
#   experiments/host-tls-ab.sh BIN_A BIN_B [SIZE_MIB] [ROUNDS]     (defaults 1024, 6; as root)
#
# Two network namespaces joined by a veth pair, as experiments/host-tls-vs-iperf3.sh sets up;
# each build runs its own agent (A on port 7810, B on 7811) and its own `bench transfer` to it
# (builds of different wire versions never talk to each other). Per round: A, B, then iperf3
# (the order of A and B alternates between rounds). Prints each round, the medians, and B/A
# over the rounds' own pairs (the host's other load moves a round's runs together), and writes
# them as JSON to experiments/results/host-tls-ab-<time>.json (OUT=FILE to write elsewhere).
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "run as root (network namespaces, the agents)" >&2; exit 1; }
[ $# -ge 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
a=$(realpath "$1")
b=$(realpath "$2")
if [ -n "${OUT:-}" ]; then OUT=$(realpath -m "$OUT"); fi
cd "$(dirname "$0")/.."
. experiments/host-netns.sh
size=${3:-1024}
rounds=${4:-6}
for x in "$a" "$b"; do [ -x "$x" ] || { echo "$x: not an executable" >&2; exit 2; }; done
command -v iperf3 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y iperf3
out=${OUT:-experiments/results/host-tls-ab-$(date -u +%Y%m%dT%H%M%SZ).json}
mkdir -p "$(dirname "$out")"

exec 9>/tmp/rdmig-host-bench.lock
flock -n 9 || { echo "another host benchmark holds /tmp/rdmig-host-bench.lock" >&2; exit 1; }
NA=rdmig-ab-a
NB=rdmig-ab-b
ip_a=10.251.0.1
ip_b=10.251.0.2
tmp=$(mktemp -d /tmp/rdmig-host-ab.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	netns_del "$NA" "$NB"
	rm -rf "$tmp"
}
trap cleanup EXIT
netns_pair "$NA" veth-ab-a "$ip_a" "$NB" veth-ab-b "$ip_b"
node_tls "$a" "$tmp" "$ip_a" "$ip_b"

declare -A bin=([A]=$a [B]=$b) port=([A]=7810 [B]=7811)
for v in A B; do
	mkdir -p "$tmp/work-$v"
	TMPDIR=$tmp ip netns exec "$NB" "${bin[$v]}" agent --listen "$ip_b:${port[$v]}" --tls-dir "$tmp/hb-b" --allow-peer hb-a \
		--work-dir "$tmp/work-$v" --journal "$tmp/journal-$v.db" --lend-socket none >"$tmp/agent-$v.log" 2>&1 &
	pids+=($!)
	listening "$NB" "${port[$v]}" || { echo "agent $v does not listen; its log:" >&2; cat "$tmp/agent-$v.log" >&2; exit 1; }
done

ours() { # A|B MiB: MB/s
	TMPDIR=$tmp timeout 900 ip netns exec "$NA" "${bin[$1]}" bench transfer --to "$ip_b:${port[$1]}" --to-name hb-b \
		--tls-dir "$tmp/hb-a" --size-mib "$2" --transports tcp --json |
		python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["mb_s"])'
}
iperf() { # MiB: the receiver's MB/s
	ip netns exec "$NB" iperf3 -s -1 -B "$ip_b" -p 5202 >"$tmp/iperf3-server.log" 2>&1 &
	local s=$!
	listening "$NB" 5202 || { echo "iperf3 -s did not listen" >&2; return 1; }
	timeout 900 ip netns exec "$NA" iperf3 -c "$ip_b" -B "$ip_a" -p 5202 -n "${1}M" -J |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 8e6)'
	wait "$s"
}

# Warm-up, not counted.
ours A 16 >/dev/null
ours B 16 >/dev/null
iperf 16 >/dev/null
runs=$tmp/runs.jsonl
for r in $(seq "$rounds"); do
	if [ $((r % 2)) -eq 1 ]; then order=(A B); else order=(B A); fi
	declare -A mb=()
	for v in "${order[@]}"; do mb[$v]=$(ours "$v" "$size"); done
	ip3=$(iperf "$size")
	echo "{\"round\": $r, \"order\": \"${order[*]}\", \"a_mb_s\": ${mb[A]}, \"b_mb_s\": ${mb[B]}, \"iperf3_mb_s\": $ip3}" | tee -a "$runs" >&2
done

python3 - "$runs" "$out" "$size" "$rounds" "$("$a" --version)" "$(sha256sum "$a" | cut -d' ' -f1)" \
	"$("$b" --version)" "$(sha256sum "$b" | cut -d' ' -f1)" "$(lscpu | sed -n 's/^Model name: *//p' | head -n1)" \
	"$(nproc)" "$(uname -r)" "$(git rev-parse HEAD)" <<'PY'
import json, statistics, sys
runs, out, size, rounds, va, sa, vb, sb, cpu, ncpu, kernel, head = sys.argv[1:]
rows = [json.loads(l) for l in open(runs)]
med = {k: statistics.median(r[k] for r in rows) for k in ("a_mb_s", "b_mb_s", "iperf3_mb_s")}
by_round = [r["b_mb_s"] / r["a_mb_s"] for r in rows]
res = {"size_mib": int(size), "rounds": int(rounds), "mb": "10^6 bytes",
       "a": {"version": va, "sha256": sa}, "b": {"version": vb, "sha256": sb}, "repository_head": head,
       "host": {"cpu_model": cpu, "cpus": int(ncpu), "kernel": kernel},
       "transfer": "bench transfer --transports tcp: mutual TLS 1.3 channel to the build's own agent, timed to its ack",
       "runs": rows, "median_mb_s": med, "b_vs_a_by_round": by_round, "b_vs_a_median": statistics.median(by_round),
       "a_vs_iperf3": med["a_mb_s"] / med["iperf3_mb_s"], "b_vs_iperf3": med["b_mb_s"] / med["iperf3_mb_s"]}
print(f"A {med['a_mb_s']:.0f} MB/s, B {med['b_mb_s']:.0f} MB/s, iperf3 {med['iperf3_mb_s']:.0f} MB/s (medians)")
print(f"B/A per round: " + " ".join(f"{x:.2f}" for x in by_round) + f"; median {res['b_vs_a_median']:.2f}")
print(f"of iperf3: A {res['a_vs_iperf3']:.0%}, B {res['b_vs_iperf3']:.0%} (issue 17's goal: 90%)")
json.dump(res, open(out, "w"), indent=2)
print("written:", out)
PY
