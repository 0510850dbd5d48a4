#!/bin/bash
# Build the patched rdma_rxe.ko (softroce/patches) out of tree.
#
#   scripts/build-softroce.sh [--kver KVER] [--out DIR] [--no-version-check]
#
# KVER defaults to $KVER, else the newest /lib/modules/*/build. The module
# ends up in DIR (default softroce/build/out/KVER/rdma_rxe.ko). Safe to run
# again: unchanged sources are not extracted, patched or compiled again.
# See softroce/README.md.

set -euo pipefail

ROOT=$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
SOFTROCE=$ROOT/softroce
# shellcheck source=../softroce/lib.sh
. "$SOFTROCE/lib.sh"

kver=${KVER:-}
out=
prepare_args=()

usage() {
	sed -n '2,9s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() {
	echo "build-softroce: error: $*" >&2
	exit 1
}

info() {
	echo "build-softroce: $*"
}

while [ $# -gt 0 ]; do
	case $1 in
	--kver) [ $# -ge 2 ] || die "--kver needs an argument"; kver=$2; shift 2 ;;
	--out) [ $# -ge 2 ] || die "--out needs an argument"; out=$2; shift 2 ;;
	--no-version-check) prepare_args+=(--no-version-check); shift ;;
	-h|--help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done

for tool in make gcc nm modinfo; do
	command -v "$tool" >/dev/null 2>&1 ||
		die "$tool not found: apt-get install build-essential kmod binutils"
done

if [ -z "$kver" ]; then
	kver=$(newest_kver)
	[ -n "$kver" ] ||
		die "no kernel headers in /lib/modules/*/build: apt-get install linux-headers-\$(uname -r), or pass --kver"
fi
kdir=/lib/modules/$kver/build
[ -d "$kdir" ] ||
	die "no headers for kernel $kver ($kdir): apt-get install linux-headers-$kver"
[ -n "$out" ] || out=$SOFTROCE/build/out/$kver

src=$SOFTROCE/build/src/$kver
start=$(date +%s)
info "kernel $kver, headers $kdir"

"$SOFTROCE/prepare-source.sh" --kver "$kver" --dest "$src" "${prepare_args[@]}"

log=$SOFTROCE/build/build-$kver.log
info "make -C $kdir M=$src modules (log: $log)"
if ! make -C "$kdir" M="$src" CONFIG_RDMA_RXE=m -j"$(nproc)" modules \
	>"$log" 2>&1; then
	grep -E 'error|Error' "$log" | head -n 30 >&2 || true
	die "the module build failed, see $log"
fi

# make only prints what it rebuilt, so warnings of an earlier run are gone
# from the log when nothing changed; the earlier run reported them.
nwarn=$(grep -c 'warning:' "$log" || true)
if [ "$nwarn" -gt 0 ]; then
	grep 'warning:' "$log" >&2
	info "$nwarn compiler warnings (see $log)"
fi
if grep -q 'WARNING: modpost' "$log"; then
	grep 'WARNING: modpost' "$log" >&2
	die "modpost reported problems (unresolved symbols?), see $log"
fi

ko=$src/rdma_rxe.ko
[ -f "$ko" ] || die "make succeeded but $ko is missing"

# Every undefined symbol must be exported by the kernel or its modules.
symvers=$kdir/Module.symvers
if [ -f "$symvers" ]; then
	missing=$(comm -23 <(nm -u "$ko" | awk '{print $2}' | sort -u) \
		<(awk '{print $2}' "$symvers" | sort -u))
	[ -z "$missing" ] ||
		die "rdma_rxe.ko needs symbols that $kver does not export: $missing"
else
	info "no $symvers, skipping the symbol check"
fi

name=$(modinfo -F name "$ko")
vermagic=$(modinfo -F vermagic "$ko")
[ "$name" = rdma_rxe ] || die "$ko is named '$name', not rdma_rxe"
case $vermagic in
"$kver "*) ;;
*) die "$ko has vermagic '$vermagic', not for $kver" ;;
esac

mkdir -p "$out"
if cmp -s "$ko" "$out/rdma_rxe.ko"; then
	info "$out/rdma_rxe.ko is up to date"
else
	cp "$ko" "$out/rdma_rxe.ko.tmp"
	mv "$out/rdma_rxe.ko.tmp" "$out/rdma_rxe.ko"
	info "installed $out/rdma_rxe.ko"
fi

info "name=$name depends=$(modinfo -F depends "$ko") vermagic=$vermagic"
info "sha256 $(sha256sum "$out/rdma_rxe.ko" | cut -d' ' -f1)"
info "done in $(($(date +%s) - start)) s, $nwarn warnings"
