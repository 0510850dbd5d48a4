#!/usr/bin/env bash
# The main job: bring up a 3-node SoftRoCE lab and run ib_send_bw between two nodes over the
# overlay network, printing both sides' results. Set KEEP_LAB=1 to leave the lab running
# afterwards (then: rdmig lab exec node1 -- ibv_devinfo, rdmig lab down).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --locked
rdmig=target/debug/rdmig
if [ "${KEEP_LAB:-0}" != 1 ]; then
	trap '"$rdmig" lab down >/dev/null || true' EXIT
fi
"$rdmig" lab up --nodes 3
"$rdmig" lab perftest --server node1 --client node2 --test ib_send_bw -n 1000 -s 65536
