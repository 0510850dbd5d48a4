#!/bin/sh
# Builds the lab's perftest container image as a root file system tarball, for `podman import`:
# ib_send_bw and ib_write_bw, a shell, and the libraries and rdma-core's rxe provider they load,
# copied from this host (the lab nodes run the host's Debian, so these are the same files the
# nodes have). No registry is needed or reachable.
#
#   lab/images/perftest-image.sh OUT.tar
#   podman import OUT.tar localhost/rdmig-perftest:lab
set -eu

out=${1:?usage: $0 OUT.tar}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

progs="/usr/bin/ib_send_bw /usr/bin/ib_write_bw /bin/sh /bin/sleep /bin/cat"
provider=/usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so
for f in $progs $provider /etc/libibverbs.d/rxe.driver; do
	[ -e "$f" ] || { echo "perftest-image: $f is missing (apt-get install perftest rdma-core ibverbs-providers)" >&2; exit 1; }
done

# The host is merged-/usr, and so is the image: /bin, /lib and /lib64 are links into /usr.
mkdir -p "$root/usr/bin" "$root/usr/lib" "$root/usr/lib64"
ln -s usr/bin "$root/bin"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"

copy() {
	# the entry at its real directory, and for a symlink what it points to, link by link
	dir=$(readlink -f "$(dirname "$1")")
	name=$(basename "$1")
	[ -e "$root$dir/$name" ] || [ -L "$root$dir/$name" ] && return 0
	mkdir -p "$root$dir"
	cp -a "$dir/$name" "$root$dir/$name"
	if [ -L "$dir/$name" ]; then
		target=$(readlink "$dir/$name")
		case $target in
		/*) copy "$target" ;;
		*) copy "$dir/$target" ;;
		esac
	fi
}

for f in $progs $provider; do
	copy "$f"
	# every library the dynamic loader resolves for it (and the loader itself)
	for lib in $(ldd "$f" | awk '/=> \//{print $3} /^\t\/[^ ]*ld-linux/{print $1}'); do
		copy "$lib"
	done
done
copy /etc/libibverbs.d/rxe.driver
mkdir -p "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/run"
chmod 1777 "$root/tmp"
tar -C "$root" -cf "$out" .
echo "perftest-image: $(du -h "$out" | cut -f1) in $out"
