# shellcheck shell=bash
# Sourced by scripts that bring up a lab (scripts/demo.sh, experiments/downtime.sh,
# scripts/plugin-lab.sh): labs on one machine take turns on one lock file.
#
# take_lab_lock LOCKFILE: returns holding the lock on descriptor 9, unless the caller already
# holds it (`flock LOCKFILE script` passes its locked descriptor down; locking a second
# descriptor of the same file would wait for ourselves). Waits up to an hour. Needs the
# caller's `log` and `die`.
take_lab_lock() {
	local lock=$1 fd
	for fd in /proc/$$/fd/*; do
		if [ "$(readlink "$fd" 2>/dev/null)" = "$lock" ] && flock -n "${fd##*/}"; then
			return 0
		fi
	done
	exec 9>>"$lock"
	log "waiting for $lock (labs on this machine take turns) ..."
	flock -w 3600 9 || die "$lock still held by someone else after an hour"
}
