#!/bin/bash
# Build the patched rdma_rxe.ko, ib_uverbs.ko, ib_cm.ko, rdma_cm.ko and
# rdma_ucm.ko (softroce/patches) out of tree.
#
#   scripts/build-softroce.sh [--kver KVER] [--out DIR] [--no-version-check]
#
# KVER defaults to $KVER, else the newest /lib/modules/*/build. The modules
# end up in DIR (default softroce/build/out/KVER/). Safe to run again:
# unchanged sources are not extracted, patched or compiled again.
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
	sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
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
uvsrc=$src-uverbs
ucsrc=$src-ucma
symvers=$kdir/Module.symvers
start=$(date +%s)
nwarn=0
info "kernel $kver, headers $kdir"

"$SOFTROCE/prepare-source.sh" --kver "$kver" --dest "$src" \
	--uverbs-dest "$uvsrc" --ucma-dest "$ucsrc" "${prepare_args[@]}"

# build_dir DIR LOG [make variables...]: builds the modules of DIR; no
# modpost warnings.
build_dir() {
	local dir=$1 log=$2 n
	shift 2
	info "make -C $kdir M=$dir modules (log: $log)"
	if ! make -C "$kdir" M="$dir" "$@" -j"$(nproc)" modules >"$log" 2>&1; then
		grep -E 'error|Error' "$log" | head -n 30 >&2 || true
		die "the build in $dir failed, see $log"
	fi

	# make only prints what it rebuilt, so warnings of an earlier run are
	# gone from the log when nothing changed; the earlier run reported them.
	n=$(grep -c 'warning:' "$log" || true)
	if [ "$n" -gt 0 ]; then
		grep 'warning:' "$log" >&2
		info "$n compiler warnings in $dir (see $log)"
		nwarn=$((nwarn + n))
	fi
	if grep -q 'WARNING: modpost' "$log"; then
		grep 'WARNING: modpost' "$log" >&2
		die "modpost reported problems in $dir (unresolved symbols?), see $log"
	fi
}

# check_module NAME DIR [SYMVERS...]: DIR/NAME.ko exists, every undefined
# symbol is exported by the kernel or its modules (or in one of the
# SYMVERS files: our own modules' exports), the module name and the
# vermagic are those of KVER.
check_module() {
	local name=$1 dir=$2 ko=$2/$1.ko missing vermagic
	shift 2
	[ -f "$ko" ] || die "make succeeded but $ko is missing"

	if [ -f "$symvers" ]; then
		missing=$(comm -23 <(nm -u "$ko" | awk '{print $2}' | sort -u) \
			<(awk '{print $2}' "$symvers" "$@" | sort -u))
		[ -z "$missing" ] ||
			die "$name.ko needs symbols that $kver does not export: $missing"
	else
		info "no $symvers, skipping the symbol check"
	fi

	[ "$(modinfo -F name "$ko")" = "$name" ] ||
		die "$ko is named '$(modinfo -F name "$ko")', not $name"
	vermagic=$(modinfo -F vermagic "$ko")
	case $vermagic in
	"$kver "*) ;;
	*) die "$ko has vermagic '$vermagic', not for $kver" ;;
	esac
}

build_dir "$src" "$SOFTROCE/build/build-$kver.log" CONFIG_RDMA_RXE=m
check_module rdma_rxe "$src"
build_dir "$uvsrc" "$SOFTROCE/build/build-uverbs-$kver.log"
check_module ib_uverbs "$uvsrc"
# The RDMA CM: ib_cm, rdma_cm and rdma_ucm in one build, so that modpost
# resolves rdma_cm's use of ib_cm's rdmig exports and rdma_ucm's of
# rdma_cm's (patches 27-29); rdma_ucm also uses ib_uverbs' exports
# (ib_copy_*), whose CRCs modpost takes from our ib_uverbs (equal to the
# stock ones, checked below).
build_dir "$ucsrc" "$SOFTROCE/build/build-ucma-$kver.log" \
	KBUILD_EXTRA_SYMBOLS="$uvsrc/Module.symvers"
for m in ib_cm rdma_cm rdma_ucm; do
	check_module "$m" "$ucsrc" "$ucsrc/Module.symvers"
done

# Our ib_uverbs replaces the stock one under the stock ib_core and below
# modules built against the stock one (our rdma_rxe, rdma_ucm, mlx5_ib...):
# every symbol it exports must have the CRC of the stock export. modpost
# took the CRCs of its imports from the headers' Module.symvers already.
if [ -f "$symvers" ]; then
	crcdiff=$(diff \
		<(awk -F'\t' '$3 == "drivers/infiniband/core/ib_uverbs" {print $2, $1, $4, $5}' "$symvers" | sort) \
		<(awk -F'\t' '{print $2, $1, $4, $5}' "$uvsrc/Module.symvers" | sort)) ||
		die "the exports of our ib_uverbs.ko differ from the stock ones (symbol, CRC, kind, namespace):
$crcdiff"
	info "ib_uverbs.ko: $(wc -l <"$uvsrc/Module.symvers") exports, symbol CRCs equal to the stock module's"

	# Our ib_cm and rdma_cm stand in for the stock ones below modules
	# built against those (rpcrdma, nvme-rdma, ib_iser...): each stock
	# export must be there with its CRC. Ours add the rdmig_* ones.
	for m in ib_cm rdma_cm; do
		crcdiff=$(comm -23 \
			<(awk -F'\t' -v m="drivers/infiniband/core/$m" '$3 == m {print $2, $1, $4, $5}' "$symvers" | sort) \
			<(awk -F'\t' -v m="$m" '$3 ~ ("/" m "$") {print $2, $1, $4, $5}' "$ucsrc/Module.symvers" | sort))
		[ -z "$crcdiff" ] ||
			die "our $m.ko lacks stock exports or has other CRCs (symbol, CRC, kind, namespace):
$crcdiff"
	done
	info "ib_cm.ko, rdma_cm.ko: every stock export with the stock CRC"
fi

mkdir -p "$out"
for ko in "$src/rdma_rxe.ko" "$uvsrc/ib_uverbs.ko" "$ucsrc/ib_cm.ko" \
	"$ucsrc/rdma_cm.ko" "$ucsrc/rdma_ucm.ko"; do
	base=$(basename -- "$ko")
	if cmp -s "$ko" "$out/$base"; then
		info "$out/$base is up to date"
	else
		cp "$ko" "$out/$base.tmp"
		mv "$out/$base.tmp" "$out/$base"
		info "installed $out/$base"
	fi
	info "$base: depends=$(modinfo -F depends "$ko") vermagic=$(modinfo -F vermagic "$ko")"
	info "$base: sha256 $(sha256sum "$out/$base" | cut -d' ' -f1)"
done
info "done in $(($(date +%s) - start)) s, $nwarn warnings"
