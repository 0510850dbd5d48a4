# shellcheck shell=bash
# Sourced by the experiments that dump and restore with the CRIU plugin on a 2-node lab of their
# own (experiments/presetup.sh, experiments/shared-rings.sh). Needs the caller's `log` and
# `out` (its results file, beside which a failed round's files are kept).
#
# keep: a directory the caller sets for each round; `die` copies it to <out>-failed/.
keep=
die() {
	log "error: $*"
	if [ -n "$keep" ] && [ -d "$keep" ]; then
		mkdir -p "${out%.json}-failed" && cp -a "$keep" "${out%.json}-failed/" && log "its files: ${out%.json}-failed/"
	fi
	exit 1
}

# plugin_lab NAME EXEC_TIMEOUT: builds this tree, takes the lab lock, and brings up lab NAME (2
# nodes, this build) with the plugin in /mnt/lab/criu-plugins; the lab goes down on exit. Sets
# R (rdmig-lab), SHARE (the lab's share, on this host), runs (a temporary file, removed on
# exit), gid1 and gid2 (the GID indices of node1's and node2's overlay addresses). Commands in
# a node then run with `on NODE CMD...`, for at most EXEC_TIMEOUT seconds each.
plugin_lab() {
	scripts/setup.sh
	cargo build --locked --workspace
	R=$PWD/target/debug/rdmig-lab
	export RDMIG_LAB=$1
	export RDMIG_LAB_DIR=${RDMIG_LAB_DIR:-/run/rdmig}
	SHARE=$RDMIG_LAB_DIR/$RDMIG_LAB/shared
	ON_TIMEOUT=$2
	mkdir -p experiments/results
	runs=$(mktemp)

	. scripts/lab-lock.sh
	take_lab_lock /tmp/rdmig-lab.lock
	trap '"$R" down >/dev/null 2>&1 || true; rm -f "$runs"' EXIT
	log "starting lab '$RDMIG_LAB' (2 nodes)"
	# The lock descriptor is not passed to qemu (it would hold the lock for as long as the VMs run).
	"$R" up --from-build --nodes 2 9>&- >/dev/null
	mkdir -p "$SHARE/criu-plugins"
	cp target/debug/librdmig_criu.so "$SHARE/criu-plugins/"
	gid1=$(on node1 /mnt/lab/bin/rdmig rxe gid-index --ip 10.0.1.11)
	gid2=$(on node2 /mnt/lab/bin/rdmig rxe gid-index --ip 10.0.1.12)
}

on() {
	local n=$1
	shift
	"$R" exec "$n" --timeout "$ON_TIMEOUT" -- "$@"
}
