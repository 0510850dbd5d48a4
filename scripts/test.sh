#!/usr/bin/env bash
# The whole test suite: installs what is missing, checks formatting and lints, builds, runs the
# unit tests, packages the build and installs the rdmig package on this machine (the lab's nodes
# boot with its root and run it), and runs the lab tests (virtual machines with SoftRoCE) while,
# at low priority beside them, it fuzzes the parsers briefly (fuzz/run.sh) and runs the DKMS
# install of our modules as softroce/README.md gives it (scripts/check-dkms.sh). This is what
# .ci/run runs.
#
#   scripts/test.sh                     everything
#   scripts/test.sh --repeat N NAME...  only the lab scenarios whose names contain a NAME, each N
#                                       times on one lab, with a failure rate per scenario (to
#                                       find and prove flaky ones)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
	sed -n '2,12s/^# \{0,1\}//p' "$0"
	exit 0
fi
t0=$(date +%s)
stage() { printf 'test.sh: %s (%d s so far)\n' "$*" "$(($(date +%s) - t0))"; }
scripts/setup.sh
# Clippy lints while the workspace is built, not in a pass of their own: `cargo clippy` is cargo
# with clippy-driver compiling the workspace's crates, and here that driver compiles them for
# the build itself (dependencies go to rustc as usual). A fresh machine then compiles the
# workspace once instead of checking it with `cargo clippy` and building it again (some 140 s).
# Every cargo command below goes through wcargo, so that none compiles them again.
clippy_driver=$(command -v clippy-driver) || { echo "test.sh: clippy-driver is missing (rustup component add clippy)" >&2; exit 1; }
# (CLIPPY_ARGS is how cargo-clippy hands clippy-driver its flags, each ended by the marker.)
clippy_args="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
wcargo() { RUSTC_WORKSPACE_WRAPPER="$clippy_driver" CLIPPY_ARGS="$clippy_args" cargo "$@"; }
# The gate itself is checked: a lint must fail a build this way, or the lints would pass unseen.
lint_guard=$(mktemp -d)
printf 'pub fn f() -> u32 { let x: u32 = 1; x.clone() }\n' >"$lint_guard/guard.rs"
if CLIPPY_ARGS="$clippy_args" "$clippy_driver" rustc --edition 2021 --crate-type lib --emit metadata -o "$lint_guard/guard.rmeta" "$lint_guard/guard.rs" 2>/dev/null; then
	echo "test.sh: clippy-driver let a lint through with CLIPPY_ARGS=$clippy_args: the lint gate would be off" >&2
	exit 1
fi
rm -rf "$lint_guard"
# The Debian packages of the dev build just made (no second compile; a few seconds), and the rdmig
# package installed here: the lab test installed_package_* runs what dpkg installed.
install_package() {
	stage "packages (packaging/build-deb.sh --profile dev --install)"
	packaging/build-deb.sh --profile dev --install >/dev/null
}
if [ "${1:-}" = "--repeat" ]; then
	[ $# -ge 3 ] || { echo "test.sh: --repeat needs a count and at least one scenario name" >&2; exit 2; }
	wcargo build --workspace --all-targets --test lab --locked
	install_package
	wcargo test --workspace --test lab --locked -- --repeat "${@:2}"
	exit
fi
stage "format"
cargo fmt --all -- --check
# Every cargo command names --workspace: one feature resolution for all of them, so that no
# stage compiles the crates again with another (a `-p rdmig-lab` did, some 80 s on a fresh
# machine). The lab test is not among --all-targets (lab/Cargo.toml): it is named.
stage "build, with clippy's lints (-D warnings)"
wcargo build --workspace --all-targets --test lab --locked
stage "unit tests"
wcargo test --workspace --all-targets --locked
install_package
# The fuzzing runs beside the lab tests at the lowest CPU priority: the lab leaves a CPU idle
# for much of its time (its scenarios wait on CRIU, agents and timers; only busy-polling
# perftest fills both), and the fuzz build and runs take that idle time instead of some
# 270 s of their own before the lab. Each target gets 40 s of wall time, not 20, since it
# gets only what the lab leaves. Its result is reported, and fails the suite, after the lab.
# SCHED_IDLE rather than nice 19: a lab thread that wakes (a node's vCPU, mostly) takes a CPU
# that runs only SCHED_IDLE work as if it were idle, and preempts that work at once; at nice
# 19 it keeps a small share and is preempted only when the scheduler finds it due. (In one
# run at nice 19 the scenarios beside the fuzz build took 2.4 to 2.7 times what they took in
# the run before, on the same tree; that run did not show why.) Where SCHED_IDLE cannot be
# set, nice 19.
if chrt --idle 0 true 2>/dev/null; then lowest="chrt --idle 0"; else lowest="nice -n 19"; fi
stage "fuzz (parsers, 40 s per target, in the background under $lowest: fuzz/run.sh 40)"
fuzz_log=$(mktemp)
# In its own process group, so that an interrupted suite stops the fuzzers too; 30 s late, once
# the lab's cargo runs its test binary: a cargo starting up meanwhile (the fuzz build's, or
# `cargo install cargo-fuzz`) would make it wait for the package cache's lock.
setsid sh -c "sleep 30; exec $lowest fuzz/run.sh 40" >"$fuzz_log" 2>&1 &
fuzz_pid=$!
# Likewise softroce/README.md's DKMS steps, run as written for the lab's kernel and checked
# (scripts/check-dkms.sh): in a mount namespace of their own, so neither this machine's modules
# nor those the lab's nodes see change.
stage "DKMS (softroce/README.md's steps, in the background under $lowest: scripts/check-dkms.sh)"
dkms_log=$(mktemp)
setsid sh -c "exec $lowest scripts/check-dkms.sh" >"$dkms_log" 2>&1 &
dkms_pid=$!
trap 'kill -- -"$fuzz_pid" -"$dkms_pid" 2>/dev/null || true; rm -f "$fuzz_log" "$dkms_log"' EXIT
stage "lab tests"
lab=0
wcargo test --workspace --test lab --locked || lab=$?
stage "fuzz and DKMS (waiting for them to end)"
fuzz=0
wait "$fuzz_pid" || fuzz=$?
cat "$fuzz_log"
dkms=0
wait "$dkms_pid" || dkms=$?
# Its commands' output only when it failed; else its verdict.
if [ "$dkms" -eq 0 ]; then tail -n 1 "$dkms_log"; else cat "$dkms_log"; fi
[ "$fuzz" -eq 0 ] || echo "test.sh: the fuzzing failed (exit $fuzz): see above" >&2
[ "$dkms" -eq 0 ] || echo "test.sh: the DKMS check failed (exit $dkms): see above" >&2
[ "$lab" -eq 0 ] || echo "test.sh: lab tests failed (exit $lab)" >&2
[ "$lab" -eq 0 ] && [ "$fuzz" -eq 0 ] && [ "$dkms" -eq 0 ] || exit 1
stage "done"
