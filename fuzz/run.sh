#!/usr/bin/env bash
# Runs every fuzz target for a bounded time; fails on the first crash, panic, timeout or leak.
#
#   fuzz/run.sh [SECONDS]   each target SECONDS (default 20); scripts/test.sh runs this
#
# cargo-fuzz needs -Z flags (sanitizer coverage); on the machine's stable toolchain
# RUSTC_BOOTSTRAP=1 allows them. cargo-fuzz is installed when missing. The seeds in
# fuzz/corpus/<target> are read, never written: what a run finds goes to a scratch corpus, and a
# crashing input to fuzz/artifacts/<target>/ (reproduce with `fuzz/run.sh` or
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>`).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
	echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
	cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

targets=(image_decode rxe_status fdinfo ucma frame msg_decode pagestream_decode confine_model)
# Safe Rust parsers: what is looked for is panics, unbounded time and unbounded memory, which
# need no sanitizer; without one the build is much shorter.
opts=(--sanitizer none)
cargo fuzz build "${opts[@]}"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
	mkdir -p "$scratch/$t"
	echo "fuzz: $t for ${secs}s" >&2
	# -timeout: one input taking more than 60 s of wall time is a hang (scripts/test.sh runs
	# this at the lowest CPU priority beside the lab, where a small CPU share must not look
	# like one; inputs take well under a millisecond); -rss_limit_mb: 2 GiB is a leak.
	if ! cargo fuzz run "${opts[@]}" "$t" "$scratch/$t" "corpus/$t" -- \
		-max_total_time="$secs" -timeout=60 -rss_limit_mb=2048 -print_final_stats=1 >"$scratch/$t.log" 2>&1; then
		grep -v '^#[0-9]' "$scratch/$t.log" | tail -60 >&2
		echo "fuzz: $t failed; the input is in fuzz/artifacts/$t/" >&2
		exit 1
	fi
	grep -E '^(Done|stat::(number_of_executed_units|peak_rss_mb|new_units_added))' "$scratch/$t.log" | tr '\n' ' ' >&2
	echo >&2
done
