#!/usr/bin/env bash
# Installs everything rdmig's build and lab need on a Debian 12 machine; safe to run again.
#
# The lab boots Debian's 6.1 kernel, and softroce/ builds our rdma_rxe against the same kernel's
# headers and source, so the image, the headers and linux-source-6.1 must be one version. This
# script picks the newest 6.1 ABI the archive offers (or the one already installed, if its headers
# and source match) and checks that the three agree.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages): sudo $0"
command -v apt-get >/dev/null || die "apt-get not found: this script is for Debian 12 (bookworm)"

PACKAGES=(
	# the lab: virtual machines, initramfs, networking inside the nodes
	qemu-system-x86 busybox-static kmod iproute2 iputils-ping iputils-arping python3
	# RDMA user space and the reference application
	rdma-core ibverbs-utils ibverbs-providers libibverbs-dev perftest iperf3
	# librdmacm's example programs (rping, ucmatose, riostream): rdma_cm processes to migrate
	rdmacm-utils
	# checkpoint/restore (CRIU locks established TCP connections with iptables)
	criu iptables
	# containers: Podman with runc (Debian's crun cannot checkpoint), and Docker 20.10 for the
	# MigrOS artifact's procedure (its daemon runs only inside the lab's nodes)
	podman runc docker.io
	# the MigrOS-style baseline (--transport scp): sshd in the lab nodes, scp at the source
	openssh-server openssh-client
	# building rdmig (sideway/rdma-mummy-sys need cmake and libclang) and kernel modules
	build-essential pkg-config cmake libclang-dev bc flex bison libelf-dev xz-utils dkms
)

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

updated=0
apt_update() { [ "$updated" -eq 1 ] || { log "apt-get update"; apt-get update -qq; updated=1; }; }

# Kernel: an installed 6.1 image whose headers and linux-source-6.1 are the same version wins;
# otherwise the ABI that linux-image-amd64 currently points at.
deb_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }
kabi=""
for img in $(ls /boot/vmlinuz-6.1.* 2>/dev/null | sed 's|/boot/vmlinuz-||' | sort -V -r); do
	v=$(deb_version "linux-image-$img")
	if [ -n "$v" ] && [ "$(deb_version "linux-headers-$img")" = "$v" ] && [ "$(deb_version linux-source-6.1)" = "$v" ]; then
		kabi=$img
		break
	fi
done
if [ -z "$kabi" ]; then
	apt_update
	kabi=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(6\.1\.[^ ]*\)$/\1/p' | head -n1)
	[ -n "$kabi" ] || die "cannot find Debian's 6.1 kernel (linux-image-amd64) in the apt sources"
	missing+=("linux-image-$kabi" "linux-headers-$kabi" "linux-source-6.1")
fi

if [ "${#missing[@]}" -gt 0 ]; then
	apt_update
	log "installing: ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

img_v=$(deb_version "linux-image-$kabi")
hdr_v=$(deb_version "linux-headers-$kabi")
src_v=$(deb_version linux-source-6.1)
[ "$img_v" = "$hdr_v" ] && [ "$img_v" = "$src_v" ] || die "kernel packages disagree: linux-image-$kabi $img_v, linux-headers-$kabi $hdr_v, linux-source-6.1 $src_v (apt-get install the same version of all three)"
[ -f "/boot/vmlinuz-$kabi" ] || die "/boot/vmlinuz-$kabi is missing although linux-image-$kabi is installed"

command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"

# rdmig's rdma_rxe for the lab kernel (softroce/): quick when already built.
"$(dirname "$0")/build-softroce.sh" --kver "$kabi" >/dev/null || die "building softroce failed (see softroce/build/build-$kabi.log)"
make -s -C "$(dirname "$0")/../softroce/tools" KVER="$kabi" >/dev/null || die "building the softroce smoke test failed"

log "ready: kernel $kabi ($img_v), $(qemu-system-x86_64 --version | head -n1), $(criu --version | head -n1)"
