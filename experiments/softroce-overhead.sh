#!/usr/bin/env bash
# Patched against stock rdma_rxe, side by side on the same lab nodes in one run.
#
#   experiments/softroce-overhead.sh [ROUNDS]        (default 3 rounds; as root)
#
# Boots a 2-node lab, then per round swaps the module on both nodes between Debian's stock
# rdma_rxe, ours (softroce/, dirty log on: the default) and ours with dirty_log=0, in an order
# that rotates every round so drift does not favour one, and runs ib_send_bw (64 KiB) and
# ib_send_lat (8 B) between the nodes for each. Prints medians, the ratios to stock and the
# targets (bandwidth >= 98 % of stock, latency <= 102 %), and writes everything as JSON to
# experiments/results/softroce-overhead-<time>.json. Under TCG the spread between runs is large:
# read the per-run numbers, not only the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
scripts/setup.sh
cargo build --locked
R=$PWD/target/debug/rdmig-lab # the lab tool; `on NODE -- ARGS` runs the node's rdmig
kver=$(ls /boot/vmlinuz-6.1.* | sed 's|/boot/vmlinuz-||' | sort -V | tail -n1)
out_dir=$PWD/softroce/build/out/$kver
lab=(--name bench)
out=experiments/results/softroce-overhead-$(date -u +%Y%m%dT%H%M%SZ).json
mkdir -p experiments/results
runs=$(mktemp)

swap() { # flavour: stock | rdmig | rdmig-nolog
	local load
	case $1 in
	stock) load="modprobe rdma_rxe" ;; # pulls in the stock ib_uverbs
	rdmig) load="insmod $out_dir/ib_uverbs.ko && insmod $out_dir/rdma_rxe.ko" ;;
	rdmig-nolog) load="insmod $out_dir/ib_uverbs.ko && insmod $out_dir/rdma_rxe.ko dirty_log=0" ;;
	esac
	for n in node1 node2; do
		"$R" "${lab[@]}" exec "$n" -- sh -c "rdma link delete rxe0 2>/dev/null; rmmod rdma_rxe ib_uverbs; $load && rdma link add rxe0 type rxe netdev vxlan0 && \
			for i in \$(seq 100); do grep -q ACTIVE /sys/class/infiniband/rxe0/ports/1/state && exit 0; sleep 0.1; done; exit 1" ||
			{ echo "cannot load $1 on $n" >&2; exit 1; }
	done
}

run() { # flavour round
	local bw lat
	bw=$("$R" "${lab[@]}" perftest --test ib_send_bw -n 2000 -s 65536 --json)
	lat=$("$R" "${lab[@]}" perftest --test ib_send_lat -n 2000 -s 8 --json)
	python3 - "$1" "$2" "$bw" "$lat" >>"$runs" <<'EOF'
import json, sys
fl, rnd, bw, lat = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
row = {"flavour": fl, "round": rnd,
       "bw_mb_s": bw["client"]["result"]["BW average[MB/sec]"],
       "lat_us": lat["client"]["result"]["t_typical[usec]"],
       "lat_avg_us": lat["client"]["result"]["t_avg[usec]"]}
print(json.dumps(row))
EOF
	tail -n1 "$runs" >&2
}

exec 9>/tmp/rdmig-lab.lock
flock -w 3600 9
trap '"$R" "${lab[@]}" down >/dev/null 2>&1 || true; rm -f "$runs"' EXIT
"$R" "${lab[@]}" up --from-build --nodes 2 --rxe rdmig
flavours=(stock rdmig rdmig-nolog)
for r in $(seq "$rounds"); do
	for i in 0 1 2; do
		f=${flavours[$(((i + r) % 3))]}
		swap "$f"
		run "$f" "$r"
	done
done

python3 - "$runs" "$out" "$rounds" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = {}
for f in ("stock", "rdmig", "rdmig-nolog"):
    mine = [r for r in rows if r["flavour"] == f]
    med[f] = {"bw_mb_s": statistics.median(r["bw_mb_s"] for r in mine),
              "lat_us": statistics.median(r["lat_us"] for r in mine)}
res = {"rounds": int(sys.argv[3]), "runs": rows, "median": med, "ratio_to_stock": {}}
print(f"{'module':12} {'bw MB/s':>9} {'bw/stock':>9} {'lat us':>8} {'lat/stock':>9}")
for f, m in med.items():
    bwr, latr = m["bw_mb_s"] / med["stock"]["bw_mb_s"], m["lat_us"] / med["stock"]["lat_us"]
    res["ratio_to_stock"][f] = {"bw": bwr, "lat": latr}
    print(f"{f:12} {m['bw_mb_s']:9.2f} {bwr:9.3f} {m['lat_us']:8.2f} {latr:9.3f}")
r = res["ratio_to_stock"]["rdmig"]
res["targets"] = {"bw_at_least": 0.98, "lat_at_most": 1.02, "bw_met": r["bw"] >= 0.98, "lat_met": r["lat"] <= 1.02}
print(f"targets for rdmig (dirty log on): bandwidth >= 98% of stock: {'met' if r['bw'] >= 0.98 else 'MISSED'} ({r['bw']:.1%}); "
      f"latency <= 102%: {'met' if r['lat'] <= 1.02 else 'MISSED'} ({r['lat']:.1%})")
json.dump(res, open(sys.argv[2], "w"), indent=2)
print("written:", sys.argv[2])
EOF
