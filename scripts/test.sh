#!/usr/bin/env bash
# The whole test suite: installs what is missing, checks formatting and lints, builds, runs the
# unit tests, fuzzes the parsers briefly (fuzz/run.sh), packages the build and installs the rdmig
# package on this machine (the lab's nodes boot with its root), and runs the lab tests (virtual
# machines with SoftRoCE). This is what .ci/run runs.
#
#   scripts/test.sh                     everything
#   scripts/test.sh --repeat N NAME...  only the lab scenarios whose names contain a NAME, each N
#                                       times on one lab, with a failure rate per scenario (to
#                                       find and prove flaky ones)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
	sed -n '2,10s/^# \{0,1\}//p' "$0"
	exit 0
fi
t0=$(date +%s)
stage() { printf 'test.sh: %s (%d s so far)\n' "$*" "$(($(date +%s) - t0))"; }
scripts/setup.sh
# The Debian packages of the dev build just made (no second compile; a few seconds), and the rdmig
# package installed here: the lab test installed_package_* runs what dpkg installed.
install_package() {
	stage "packages (packaging/build-deb.sh --profile dev --install)"
	packaging/build-deb.sh --profile dev --install >/dev/null
}
if [ "${1:-}" = "--repeat" ]; then
	[ $# -ge 3 ] || { echo "test.sh: --repeat needs a count and at least one scenario name" >&2; exit 2; }
	cargo build --workspace --all-targets --locked
	install_package
	exec cargo test -p rdmig-lab --test lab --locked -- --repeat "${@:2}"
fi
stage "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
stage "build"
cargo build --workspace --all-targets --locked
stage "unit tests"
cargo test --workspace --all-targets --locked --exclude rdmig-lab
cargo test -p rdmig-lab --lib --bins --locked
stage "fuzz (parsers, 20 s per target)"
fuzz/run.sh 20
install_package
stage "lab tests"
cargo test -p rdmig-lab --test lab --locked
stage "done"
