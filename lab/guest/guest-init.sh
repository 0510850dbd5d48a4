#!/bin/bash
# PID 1 of an rdmig lab node, started by the initramfs after switch_root onto the host's read-only
# root. It gives the node the writable places programs expect, mounts the node's share directory
# (host side: <lab dir>/<node>/share), and starts the guest agent, which sets up the network and
# SoftRoCE and serves `rdmig lab exec`. As PID 1 it also reaps orphans (bash does, in `wait`).
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
for d in /tmp /var/tmp /var/log /root /mnt; do
	mount -t tmpfs -o mode=0755 tmpfs "$d"
done
chmod 1777 /tmp /var/tmp
mkdir -p /mnt/node
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 nodeshare /mnt/node; then
	echo "rdmig guest-init: cannot mount the node share (9p tag nodeshare)" >/dev/console
	exec /bin/bash
fi
mkdir -p /mnt/lab
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 labshare /mnt/lab \
	|| echo "rdmig guest-init: cannot mount the lab share (9p tag labshare)" >/dev/console
bin=$(sed -n 's/.*rdmig\.lab=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ ! -x "$bin" ]; then
	echo "rdmig guest-init: rdmig-lab binary '$bin' is not visible in the guest" | tee /mnt/node/init-error >/dev/console
	exec /bin/bash
fi
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
"$bin" guest-agent --config /mnt/node/node.json >>/mnt/node/agent.log 2>&1 &
while true; do
	wait
	sleep 1
done
