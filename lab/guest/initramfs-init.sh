#!/bin/sh
# /init of the rdmig lab's initramfs (busybox sh). It loads the modules a 9p root over virtio needs,
# mounts the host's root file system read-only and hands over to the node's PID 1, guest-init.sh.
# Anything that fails here drops to a shell on the serial console, so `rdmig lab logs` shows why.
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t devtmpfs devtmpfs /dev
fail() { echo "rdmig initramfs: $*" >/dev/console; exec $bb sh; }
for m in $($bb cat /mods/list); do
	$bb insmod /mods/"$m" || fail "insmod $m failed"
done
# The root's 9p cache mode comes from the kernel command line (rdmig-lab up --root-cache).
# loose, the default: the guest keeps the root's dentries, attributes and pages instead of asking
# the host on every lookup and read; `criu check` takes half the time and `podman --version` a
# third under TCG (experiments/lab-root-cache.sh). It is safe because the root is read-only here
# and nothing a node reads from it changes while a lab is up: what changes during a run (the
# build's snapshot, configuration, images, results) goes through the node and lab shares, which
# stay uncached.
cache=none
for w in $($bb cat /proc/cmdline); do
	case "$w" in rdmig.rootcache=loose) cache=loose ;; esac
done
$bb mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=$cache,msize=262144 rootfs /newroot \
	|| fail "cannot mount the host root (9p tag rootfs)"
# The host root is read-only: PID 1's script goes on a tmpfs /run inside it.
$bb mount -t tmpfs -o mode=0755 tmpfs /newroot/run || fail "cannot mount /run"
$bb cp /guest-init.sh /newroot/run/rdmig-guest-init.sh || fail "cannot install guest-init.sh"
$bb umount /dev
$bb umount /proc
exec $bb switch_root /newroot /bin/bash /run/rdmig-guest-init.sh
