# Shell helpers shared by softroce/prepare-source.sh (also run by DKMS) and
# scripts/build-softroce.sh. Sourced, not run.

# The newest kernel release with headers in /lib/modules/*/build (empty if none).
newest_kver() {
	for d in /lib/modules/*/build; do
		[ -d "$d" ] || continue
		v=${d#/lib/modules/}
		echo "${v%/build}"
	done | sort -V | tail -n 1
}
