#!/bin/sh
# The MigrOS artifact's Docker procedure (../shared/reference/migros-artifact-docker-migration.md
# in the project's notes), as plain docker, ssh and scp commands: an ib_send_bw server in the
# container cont-moving, its client in cont-static on another node, and the server's migration
# run from the node it moves to (checkpoint over ssh, scp of the checkpoint, start from it).
#
#   migros-artifact.sh server GID ITERS             on the server's node
#   migros-artifact.sh client GID ITERS SERVER_IP   on the client's node
#   migros-artifact.sh checkpoint SERVER_NODE ITERS on the node the server moves to
#   migros-artifact.sh restore                      there, once the server's address is there
#
# Where it differs from the reference, and why:
# - No `echo N > /proc/sys/net/rdma_rxe/last_qpn` / `last_mrn`: rdmig's agents give each node
#   its own range of QP and MR numbers, and its CRIU plugin restores the same numbers.
# - The benchmark runs without `-b`: a QP restored in RTR resumes too.
# - `-s 4096`: messages of 4 KiB instead of perftest's 64 KiB, for the lab's slow virtual nodes.
# - `-x GID`: the RoCE v2 GID index of the container's address (rdmig rxe gid-index --ip ADDR).
# - `-F`: a failed end-of-run clock calibration (a lab node descheduled by its host) does not
#   end perftest before it reports its counts (lab/tests/lab/harness.rs, PERFTEST_KEEP_GOING).
# - The containers use the host's network with an address that moves between nodes (the lab's
#   overlay) instead of a swarm overlay network; the caller moves the server's address between
#   `checkpoint` and `restore`, where the reference's overlay network moves it with the container.
# - The client runs detached (`-d`, kept after it exits) so its output can be read afterwards.
# - Docker's paths come from `docker info` rather than /var/lib/docker.
# - SSH_CONFIG, if set, is the ssh client configuration for ssh and scp (`-F`).
# - `--kernel-memory` is left out: cgroup v2 has no kernel memory limit (Docker discards it with
#   a warning).
set -eu

# Debian's docker client (docker.io), whatever else is on PATH.
docker=/usr/bin/docker
ssh_f=${SSH_CONFIG:+-F $SSH_CONFIG}

create() { # NAME, then the container's command
	name=$1
	shift
	$docker create --name "$name" --network host \
		--security-opt seccomp:unconfined --ulimit memlock=1073741824 \
		--cap-add=ALL --memory=1g --device /dev/infiniband/ \
		rdmig-perftest:lab "$@"
}

case ${1:-} in
server)
	gid=$2 iters=$3
	$docker rm --force cont-moving > /dev/null 2>&1 || true
	create cont-moving ib_send_bw -F -d rxe0 -x "$gid" -s 4096 -n "$iters" > /dev/null
	$docker start cont-moving
	;;
client)
	gid=$2 iters=$3 server=$4
	$docker rm --force cont-moving > /dev/null 2>&1 || true
	$docker rm --force cont-static > /dev/null 2>&1 || true
	create cont-static ib_send_bw -F -d rxe0 -x "$gid" -s 4096 -n "$iters" "$server" > /dev/null
	$docker start cont-static
	;;
checkpoint)
	src=$2 iters=$3
	$docker rm cont-moving > /dev/null 2>&1 || true
	# shellcheck disable=SC2086 # ssh_f is empty or two words
	ssh $ssh_f "$src" $docker checkpoint create cont-moving ckpt1
	create cont-moving ib_send_bw -F -d rxe0 -s 4096 -n "$iters" > /dev/null
	# shellcheck disable=SC2086
	src_id=$(ssh $ssh_f "$src" $docker inspect --format='{{.Id}}' cont-moving)
	dest_id=$($docker inspect --format='{{.Id}}' cont-moving)
	# shellcheck disable=SC2086
	src_root=$(ssh $ssh_f "$src" $docker info --format='{{.DockerRootDir}}')
	containers=$($docker info --format='{{.DockerRootDir}}')/containers
	mkdir -p "$containers/$dest_id/checkpoints"
	# shellcheck disable=SC2086
	scp $ssh_f -q -r "$src:$src_root/containers/$src_id/checkpoints/ckpt1" "$containers/$dest_id/checkpoints/"
	# shellcheck disable=SC2086
	ssh $ssh_f "$src" $docker rm cont-moving
	;;
restore)
	$docker start cont-moving --checkpoint ckpt1
	;;
*)
	sed -n '2,9p' "$0" >&2
	exit 2
	;;
esac
