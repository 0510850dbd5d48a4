#!/usr/bin/env bash
# Runs softroce/README.md's DKMS steps ("With DKMS") as they are written there, for one kernel,
# and checks what they leave: our rdma_rxe, ib_uverbs, ib_cm, rdma_cm and rdma_ucm in
# /lib/modules/KVER/updates/dkms, with `modinfo -k KVER` naming those files and their version
# (0.1.0-rdmig), as issue 21 asks.
#
#   scripts/check-dkms.sh [KVER]   as root; KVER: the newest 6.1 kernel with headers (the lab's)
#
# The commands are read from the README's code block, not copied here, so a change there is
# what gets tested. Two of its lines are not run: `apt-get install` (scripts/setup.sh installs
# dkms, the headers and linux-source-6.1) and the last `modprobe` (it is for a node booted on
# KVER; the lab's nodes load modules themselves).
#
# Everything runs in a mount namespace of its own, over overlays of /usr/src, /var/lib/dkms and
# /lib/modules/KVER that vanish with it: the machine, and the lab nodes that boot with its root,
# keep their modules, and a failed run leaves nothing behind either.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "check-dkms: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (dkms installs modules)"

if [ "${RDMIG_DKMS_PRIVATE:-}" != 1 ]; then
	exec unshare --mount --propagation private env RDMIG_DKMS_PRIVATE=1 "$0" "$@"
fi

kver=${1:-$(find /lib/modules -mindepth 1 -maxdepth 1 -name '6.1.0-*-amd64' -printf '%f\n' | sort -V | while read -r k; do [ -e "/lib/modules/$k/build" ] && echo "$k"; done | tail -n1)}
[ -n "$kver" ] || die "no 6.1 kernel with headers in /lib/modules (scripts/setup.sh installs one)"
[ -e "/lib/modules/$kver/build" ] || die "no headers for $kver: apt-get install linux-headers-$kver"
for tool in dkms modinfo; do
	command -v "$tool" >/dev/null || die "$tool is missing: apt-get install dkms kmod (scripts/setup.sh does)"
done

# The README's block: from its "### With DKMS" heading to the end of the first ```sh block.
steps=$(awk '/^### With DKMS/ { s = 1 } s && /^```sh/ { b = 1; next } b && /^```/ { exit } b' softroce/README.md)
[ -n "$steps" ] || die "softroce/README.md has no \`\`\`sh block under \"### With DKMS\""
# Joined continuation lines, one command per line, KVER filled in.
steps=$(printf '%s\n' "$steps" | sed -e ':a' -e '/\\$/N; s/\\\n[[:space:]]*/ /; ta' | sed "s/KVER/$kver/g")
grep -q '^dkms install ' <<<"$steps" || die "the README's block has no dkms install: $steps"

# Private copies of what DKMS writes (upper directories on the disk, not in a tmpfs: the
# extracted kernel sources take some hundreds of MiB).
scratch=$(mktemp -d /var/tmp/rdmig-check-dkms.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
[ -d /var/lib/dkms ] || die "/var/lib/dkms is missing: apt-get install dkms (scripts/setup.sh does)"
i=0
for d in /usr/src /var/lib/dkms "$(readlink -f "/lib/modules/$kver")"; do
	i=$((i + 1))
	mkdir -p "$scratch/$i/upper" "$scratch/$i/work"
	mount -t overlay "rdmig-check-dkms-$i" -o "lowerdir=$d,upperdir=$scratch/$i/upper,workdir=$scratch/$i/work" "$d"
done
echo "check-dkms: kernel $kver; /usr/src, /var/lib/dkms and /lib/modules/$kver are private overlays" >&2

t0=$(date +%s)
out=$scratch/modinfo
while IFS= read -r cmd; do
	cmd=${cmd%%#*}
	cmd=${cmd%"${cmd##*[![:space:]]}"}
	case $cmd in
	'' | 'apt-get install'* | 'modprobe'*) continue ;;
	esac
	echo "check-dkms: \$ $cmd" >&2
	case $cmd in
	modinfo*)
		# Its output is what is checked below.
		bash -euo pipefail -c "$cmd" >"$out" || die "failed: $cmd"
		cat "$out" >&2
		;;
	*) bash -euo pipefail -c "$cmd" >&2 || die "failed: $cmd" ;;
	esac
done <<<"$steps"
[ -s "$out" ] || die "the README's steps ran no modinfo"

ok=1
for m in rdma_rxe ib_uverbs ib_cm rdma_cm rdma_ucm; do
	f=$(modinfo -k "$kver" -F filename "$m")
	v=$(modinfo -k "$kver" -F version "$m")
	case $f in
	"/lib/modules/$kver/updates/dkms/$m.ko"*) ;;
	*) echo "check-dkms: modinfo -k $kver $m names $f, not updates/dkms: DKMS kept the stock module" >&2; ok=0 ;;
	esac
	[ "$v" = "0.1.0-rdmig" ] || { echo "check-dkms: $m's version is '$v', not 0.1.0-rdmig" >&2; ok=0; }
	grep -q "^filename: *$f\$" "$out" || { echo "check-dkms: the README's modinfo step did not name $f" >&2; ok=0; }
done
[ "$ok" = 1 ] || die "the README's DKMS steps did not leave our modules in updates/dkms"
echo "check-dkms: ok in $(($(date +%s) - t0)) s: rdma_rxe, ib_uverbs, ib_cm, rdma_cm and rdma_ucm 0.1.0-rdmig in /lib/modules/$kver/updates/dkms (overlays dropped; this machine unchanged)"
