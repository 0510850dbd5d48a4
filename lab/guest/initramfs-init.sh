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
$bb mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 rootfs /newroot \
	|| fail "cannot mount the host root (9p tag rootfs)"
# The host root is read-only: PID 1's script goes on a tmpfs /run inside it.
$bb mount -t tmpfs -o mode=0755 tmpfs /newroot/run || fail "cannot mount /run"
$bb cp /guest-init.sh /newroot/run/rdmig-guest-init.sh || fail "cannot install guest-init.sh"
$bb umount /dev
$bb umount /proc
exec $bb switch_root /newroot /bin/bash /run/rdmig-guest-init.sh
