#!/usr/bin/env bash
# What the destination pays, inside the blackout, to read a verbs context image of 64 QPs
# (2.6 MB): read as before (the file grown into a vector while read, the blob then copied out)
# against as now (one buffer sized from the file, the blob left in it), with CRC-32 and the
# JSON header alone, side by side in one process (crates/rdmig-image/examples/read_cost.rs),
# on a lab node's emulated CPU and on this host's.
#
#   experiments/image-read.sh [QPS] [ROUNDS]        (default 64 QPs, 15 rounds; as root)
#
# Writes experiments/results/image-read-<time>.json and prints the medians (microseconds).
set -euo pipefail
cd "$(dirname "$0")/.."
qps=${1:-64}
rounds=${2:-15}
scripts/setup.sh
cargo build --locked -p rdmig-lab
cargo build --locked -p rdmig-image --example read_cost
R=$PWD/target/debug/rdmig-lab
lab=(--name imgread)
out=experiments/results/image-read-$(date -u +%Y%m%dT%H%M%SZ).json
mkdir -p experiments/results

exec 9>/tmp/rdmig-lab.lock
flock -w 3600 9
trap '"$R" "${lab[@]}" down >/dev/null 2>&1 || true' EXIT
# The lock descriptor is not passed to qemu (it would hold the lock for as long as the VMs run).
"$R" "${lab[@]}" up --from-build --nodes 1 9>&- >/dev/null
share=${RDMIG_LAB_DIR:-/run/rdmig}/imgread/shared
cp target/debug/examples/read_cost "$share/read_cost"
# In the node's /tmp (tmpfs), as the restore reads from its images directory.
node=$("$R" "${lab[@]}" exec node1 -- /mnt/lab/read_cost "$qps" /tmp "$rounds")
host=$(target/debug/examples/read_cost "$qps" "$(mktemp -d)" "$rounds")
python3 - "$out" "$node" "$host" <<'PY'
import json, sys
out, node, host = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"{'median us':12} {'node':>9} {'host':>9}")
for k in node["median_us"]:
    print(f"{k:12} {node['median_us'][k]:9.0f} {host['median_us'][k]:9.0f}")
n = node["median_us"]
print(f"in place / copied: node {n['in_place'] / n['copied']:.2f}, host {host['median_us']['in_place'] / host['median_us']['copied']:.2f}")
json.dump({"build": "dev (the lab's)", "node": node, "host": host}, open(out, "w"), indent=1)
print("written:", out)
PY
