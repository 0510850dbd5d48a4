#!/bin/sh
# Starts Debian 12's Docker (docker.io 20.10 with containerd and runc) in a lab node, as a site
# would run it, and loads the lab's perftest image into it. Runs as root in the node; idempotent.
#
#   dockerd-in-node.sh IMAGE.tar
#
# What differs from a site, and why:
# - The nodes boot with the host's root read-only. Docker keeps its state and its key under
#   /etc/docker and /var/lib, so /etc gets a writable overlay in the node's memory, and
#   containerd's and Docker's state go to /run.
# - `docker checkpoint create` has no option for CRIU's --tcp-established, and the benchmark's
#   TCP connection is established while it runs. runc reads CRIU options from
#   /etc/criu/runc.conf; a site that checkpoints such containers writes the same line there.
# - Checkpoints are an experimental Docker feature in 20.10 (`dockerd --experimental`, as the
#   reference's /etc/docker/daemon.json sets).
# - Containers use the host's network with an address that moves between nodes (rdmig-lab addr)
#   instead of a swarm overlay network.
set -eu

image=${1:?usage: $0 IMAGE.tar}
docker=/usr/bin/docker

# runc needs cgroup2; the nodes' init mounts none.
mountpoint -q /sys/fs/cgroup || mount -t cgroup2 none /sys/fs/cgroup
if ! mountpoint -q /etc; then
	mkdir -p /run/etc-overlay/upper /run/etc-overlay/work
	mount -t overlay overlay -o lowerdir=/etc,upperdir=/run/etc-overlay/upper,workdir=/run/etc-overlay/work /etc
fi
mkdir -p /etc/criu /run/docker-lab
echo tcp-established > /etc/criu/runc.conf

if ! $docker version > /dev/null 2>&1; then
	containerd --root /run/docker-lab/containerd --state /run/containerd > /run/docker-lab/containerd.log 2>&1 &
	i=0
	until [ -S /run/containerd/containerd.sock ]; do
		i=$((i + 1))
		[ $i -le 60 ] || { echo "containerd did not start:" >&2; tail -n 20 /run/docker-lab/containerd.log >&2; exit 1; }
		sleep 1
	done
	dockerd --experimental --data-root /run/docker-lab/docker --exec-root /run/docker-lab/exec \
		--containerd /run/containerd/containerd.sock --iptables=false --ip6tables=false --bridge=none \
		--pidfile /run/docker-lab/dockerd.pid > /run/docker-lab/dockerd.log 2>&1 &
	i=0
	until $docker version > /dev/null 2>&1; do
		i=$((i + 1))
		[ $i -le 120 ] || { echo "dockerd did not start:" >&2; grep -v module=grpc /run/docker-lab/dockerd.log | tail -n 20 >&2; exit 1; }
		sleep 1
	done
fi
[ "$($docker info --format '{{.ExperimentalBuild}}')" = true ] || { echo "dockerd runs without --experimental: no checkpoints" >&2; exit 1; }
$docker import "$image" rdmig-perftest:lab > /dev/null
echo "docker $($docker version --format '{{.Server.Version}}') ready, image rdmig-perftest:lab"
