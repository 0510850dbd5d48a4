#!/usr/bin/env bash
# Checks Cargo.lock against the RustSec advisory database with cargo audit: a known
# vulnerability in any dependency fails it (exit 1); crates flagged unmaintained or yanked are
# printed as warnings.
#
#   scripts/audit.sh           fetches the database first (needs github.com)
#   scripts/audit.sh DB_DIR    uses DB_DIR, a clone of github.com/rustsec/advisory-db, as it is
#                              (for machines that cannot reach GitHub); prints the date of its
#                              last change, since an older copy misses newer advisories
#
# Installs cargo-audit if it is missing. Not part of scripts/test.sh: the machines CI runs on
# cannot reach GitHub, where the database lives.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-audit >/dev/null || cargo install cargo-audit --locked
if [ $# -ge 1 ]; then
	db=$(realpath "$1")
	[ -d "$db/crates" ] || { echo "audit.sh: $db is not a clone of the RustSec advisory database (it has no crates/)" >&2; exit 2; }
	echo "audit.sh: advisory database $db, last changed $(git -C "$db" log -1 --format=%cs 2>/dev/null || echo '(unknown: not a git clone)')"
	exec cargo audit --db "$db" --no-fetch --stale
fi
exec cargo audit
