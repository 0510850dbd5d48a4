#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs the unit tests and the lab tests
# (virtual machines with SoftRoCE). This is what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --all-targets --locked
cargo test --workspace --all-targets --locked
