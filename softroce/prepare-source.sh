#!/bin/sh
# Prepare the patched rdma_rxe, ib_uverbs and RDMA CM (ib_cm, rdma_cm,
# rdma_ucm) sources for one kernel.
#
# Extracts drivers/infiniband/sw/rxe and drivers/infiniband/core from the
# Debian linux-source-X.Y tarball that matches the kernel headers, applies
# patches/*.patch in order (each patch touches rxe or core) and leaves three
# trees that build out of tree:
#   make -C /lib/modules/KVER/build M=DEST CONFIG_RDMA_RXE=m modules
#   make -C /lib/modules/KVER/build M=UVERBS_DEST modules
#   make -C /lib/modules/KVER/build M=UCMA_DEST \
#       KBUILD_EXTRA_SYMBOLS=UVERBS_DEST/Module.symvers modules
# The second builds only ib_uverbs.ko, with uverbs/Kbuild, the third
# ib_cm.ko, rdma_cm.ko and rdma_ucm.ko, with ucma/Kbuild (both from the core
# directory). The headers
# the sources include come from the linux-headers package.
#
# Used by scripts/build-softroce.sh and by DKMS (PRE_BUILD in dkms.conf),
# so it must only use files under this directory.
#
# Idempotent: each tree carries a stamp of the source version and the patches
# and is left alone (with its objects) when nothing changed.

set -eu

SOFTROCE_DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
# shellcheck source=lib.sh
. "$SOFTROCE_DIR/lib.sh"
PATCH_DIR=$SOFTROCE_DIR/patches
# The user ABIs, written once: the patches include them, rdmig-rxe translates them.
ABI_DIR=$SOFTROCE_DIR/include/uapi/rdma
RXE_ABI=$ABI_DIR/rxe_ctl_abi.h
UVERBS_ABI=$ABI_DIR/uverbs_ckpt_abi.h
UCMA_ABI=$ABI_DIR/ucma_ckpt_abi.h
STAMP_NAME=.rdmig-stamp
RXE_PATH=drivers/infiniband/sw/rxe
CORE_PATH=drivers/infiniband/core
UVERBS_KBUILD=$SOFTROCE_DIR/uverbs/Kbuild
UCMA_KBUILD=$SOFTROCE_DIR/ucma/Kbuild

kver=${KVER:-}
dest=
uverbs_dest=
ucma_dest=
tarball=${LINUX_SOURCE_TARBALL:-}
version_check=1
[ "${RDMIG_RXE_NO_VERSION_CHECK:-0}" = 1 ] && version_check=0
cache=

usage() {
	cat <<EOF
usage: $0 [--kver KVER] [--dest DIR] [--uverbs-dest DIR] [--ucma-dest DIR]
          [--source TARBALL] [--cache DIR] [--no-version-check]

  --kver KVER         kernel release (default: \$KVER, else the newest
                      /lib/modules/*/build)
  --dest DIR          where to put the patched rxe sources
                      (default: $SOFTROCE_DIR/build/src/KVER)
  --uverbs-dest DIR   where to put the patched ib_uverbs sources
                      (default: DEST-uverbs)
  --ucma-dest DIR     where to put the patched ib_cm, rdma_cm and rdma_ucm
                      sources
                      (default: DEST-ucma)
  --source TARBALL    kernel source tarball (default: \$LINUX_SOURCE_TARBALL,
                      else /usr/src/linux-source-X.Y.tar.xz)
  --cache DIR         where to keep the pristine extracted sources
                      (default: DEST/../pristine)
  --no-version-check  do not require linux-source-X.Y and linux-headers-KVER
                      to have the same package version
                      (or RDMIG_RXE_NO_VERSION_CHECK=1)
EOF
}

die() {
	echo "prepare-source: error: $*" >&2
	exit 1
}

info() {
	echo "prepare-source: $*"
}

while [ $# -gt 0 ]; do
	case $1 in
	--kver) [ $# -ge 2 ] || die "--kver needs an argument"; kver=$2; shift 2 ;;
	--dest) [ $# -ge 2 ] || die "--dest needs an argument"; dest=$2; shift 2 ;;
	--uverbs-dest) [ $# -ge 2 ] || die "--uverbs-dest needs an argument"; uverbs_dest=$2; shift 2 ;;
	--ucma-dest) [ $# -ge 2 ] || die "--ucma-dest needs an argument"; ucma_dest=$2; shift 2 ;;
	--source) [ $# -ge 2 ] || die "--source needs an argument"; tarball=$2; shift 2 ;;
	--cache) [ $# -ge 2 ] || die "--cache needs an argument"; cache=$2; shift 2 ;;
	--no-version-check) version_check=0; shift ;;
	-h|--help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done

for tool in tar xz patch sha256sum; do
	command -v "$tool" >/dev/null 2>&1 ||
		die "$tool not found: apt-get install tar xz-utils patch coreutils"
done

# The kernel: explicit, else the newest one with headers.
if [ -z "$kver" ]; then
	kver=$(newest_kver)
	[ -n "$kver" ] ||
		die "no kernel headers in /lib/modules/*/build: apt-get install linux-headers-\$(uname -r), or pass --kver"
fi
[ -d "/lib/modules/$kver/build" ] ||
	die "no headers for kernel $kver (/lib/modules/$kver/build): apt-get install linux-headers-$kver"

# 6.1.0-56-amd64 -> 6.1
series=$(echo "$kver" | sed -n 's/^\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
[ -n "$series" ] || die "cannot parse the kernel version from '$kver'"
src_pkg=linux-source-$series
[ -n "$tarball" ] || tarball=/usr/src/$src_pkg.tar.xz

# The source package must be the one the headers were built from.
src_ver=
if [ "$version_check" = 1 ]; then
	command -v dpkg-query >/dev/null 2>&1 ||
		die "dpkg-query not found: this check needs a Debian system; pass --no-version-check and --source TARBALL elsewhere"
	status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$src_pkg" 2>/dev/null || true)
	case $status in
	ii*) ;;
	*) die "$src_pkg not installed: apt-get install $src_pkg" ;;
	esac
	src_ver=$(dpkg-query -W -f='${Version}' "$src_pkg")
	hdr_ver=$(dpkg-query -W -f='${Version}' "linux-headers-$kver" 2>/dev/null || true)
	[ -n "$hdr_ver" ] ||
		die "cannot find the package version of linux-headers-$kver (dpkg-query -W linux-headers-$kver); install it with apt-get install linux-headers-$kver, or pass --no-version-check"
	[ "$src_ver" = "$hdr_ver" ] ||
		die "$src_pkg is $src_ver but linux-headers-$kver is $hdr_ver: apt-get install $src_pkg=$hdr_ver (or upgrade the kernel and its headers to $src_ver)"
fi
[ -f "$tarball" ] ||
	die "kernel source tarball $tarball not found: apt-get install --reinstall $src_pkg, or pass --source"
if [ -z "$src_ver" ]; then
	# no package version: identify the tarball by size and mtime
	src_ver=$(stat -c 'file-%s-%Y' "$tarball")
fi

[ -n "$dest" ] || dest=$SOFTROCE_DIR/build/src/$kver
[ -n "$uverbs_dest" ] || uverbs_dest=$dest-uverbs
[ -n "$ucma_dest" ] || ucma_dest=$dest-ucma
[ -f "$UVERBS_KBUILD" ] || die "$UVERBS_KBUILD is missing"
[ -f "$UCMA_KBUILD" ] || die "$UCMA_KBUILD is missing"
[ -f "$RXE_ABI" ] && [ -f "$UVERBS_ABI" ] && [ -f "$UCMA_ABI" ] ||
	die "$ABI_DIR must hold rxe_ctl_abi.h, uverbs_ckpt_abi.h and ucma_ckpt_abi.h"
[ -n "$cache" ] || cache=$(dirname -- "$dest")/pristine

set -- "$PATCH_DIR"/*.patch
[ -e "$1" ] || die "no patches in $PATCH_DIR"

# The stamp: what the trees in DEST, UVERBS_DEST and UCMA_DEST were made from.
stamp=$( {
	echo "source $src_pkg $src_ver"
	for p in "$PATCH_DIR"/*.patch "$UVERBS_KBUILD" "$UCMA_KBUILD" \
		"$RXE_ABI" "$UVERBS_ABI" "$UCMA_ABI"; do
		sha256sum "$p" | sed "s|  .*/|  |"
	done
} | sha256sum | cut -d' ' -f1)

up_to_date() {
	[ -f "$1/$STAMP_NAME" ] && [ "$(cat "$1/$STAMP_NAME")" = "$stamp" ]
}
if up_to_date "$dest" && [ -f "$dest/Makefile" ] &&
   up_to_date "$uverbs_dest" && [ -f "$uverbs_dest/Kbuild" ] &&
   up_to_date "$ucma_dest" && [ -f "$ucma_dest/Kbuild" ]; then
	info "$dest, $uverbs_dest and $ucma_dest are up to date ($src_pkg $src_ver, $# patches)"
	exit 0
fi

# The pristine rxe and core directories, extracted once per source version.
pristine=$cache/$src_pkg-$src_ver
if [ ! -f "$pristine/$RXE_PATH/Makefile" ] ||
   [ ! -f "$pristine/$CORE_PATH/Makefile" ]; then
	info "extracting $RXE_PATH and $CORE_PATH from $tarball (takes ~15 s)"
	rm -rf "$pristine.tmp"
	mkdir -p "$pristine.tmp"
	# the tarball has one top directory, linux-source-X.Y/
	tar -xJf "$tarball" -C "$pristine.tmp" --strip-components=1 \
		--wildcards "*/$RXE_PATH/*" "*/$CORE_PATH/*" ||
		die "cannot extract $RXE_PATH and $CORE_PATH from $tarball"
	for d in "$RXE_PATH" "$CORE_PATH"; do
		[ -f "$pristine.tmp/$d/Makefile" ] || die "$tarball has no $d"
	done
	rm -rf "$pristine"
	mv "$pristine.tmp" "$pristine"
fi

# Patch a fresh copy, then replace DEST.
work=$dest.tmp
rm -rf "$work"
mkdir -p "$work"
cp -R "$pristine/drivers" "$work/"
# The headers the patches include ("rxe_ctl_abi.h", "uverbs_ckpt_abi.h",
# "ucma_ckpt_abi.h") go in first.
cp "$RXE_ABI" "$work/$RXE_PATH/rxe_ctl_abi.h"
cp "$UVERBS_ABI" "$work/$CORE_PATH/uverbs_ckpt_abi.h"
cp "$UCMA_ABI" "$work/$CORE_PATH/ucma_ckpt_abi.h"
for p in "$PATCH_DIR"/*.patch; do
	info "applying $(basename -- "$p")"
	if ! patch -p1 -d "$work" --batch --forward --fuzz=0 \
		--no-backup-if-mismatch -s -i "$p"; then
		rm -rf "$work"
		die "$(basename -- "$p") does not apply to $src_pkg $src_ver; the patches are made for linux-source-6.1 (Debian 6.1.192-2), they need to be rebased for this kernel"
	fi
done

# Two copies of the core directory: one builds ib_uverbs, one the RDMA CM
# (ib_cm, rdma_cm, rdma_ucm).
cp -R "$work/$CORE_PATH" "$work/ucma"
cp "$UVERBS_KBUILD" "$work/$CORE_PATH/Kbuild"
cp "$UCMA_KBUILD" "$work/ucma/Kbuild"

rm -rf "$dest" "$uverbs_dest" "$ucma_dest"
mkdir -p "$(dirname -- "$dest")" "$(dirname -- "$uverbs_dest")" \
	"$(dirname -- "$ucma_dest")"
mv "$work/$RXE_PATH" "$dest"
mv "$work/$CORE_PATH" "$uverbs_dest"
mv "$work/ucma" "$ucma_dest"
rm -rf "$work"
echo "$stamp" >"$dest/$STAMP_NAME"
echo "$stamp" >"$uverbs_dest/$STAMP_NAME"
echo "$stamp" >"$ucma_dest/$STAMP_NAME"
info "patched sources for $kver in $dest (rdma_rxe), $uverbs_dest (ib_uverbs) and $ucma_dest (ib_cm, rdma_cm, rdma_ucm)"
