#!/usr/bin/env bash
# The one command that runs every test berth has. CI runs exactly this (see .ci/run).
#   1. formatting and lints
#   2. Rust unit and integration tests (integration tests start the real daemon on temp sockets),
#      a short crash-consistency campaign (20 kill -9 trials) and a short API fuzzing run
#   3. compat scenarios: the stock docker CLI against berth, then the same scenarios against a
#      private dockerd 20.10 when one is installed, which proves every expectation.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo build
cargo test
# The short crash-consistency campaign and API fuzzing run (long runs: scripts/crash-campaign.sh,
# scripts/fuzz.sh).
python3 scripts/crash-campaign.py --trials 20
BERTH_BIN="$PWD/target/debug/berth" python3 -m pytest -q -p no:cacheprovider fuzz

export BERTH_BIN="$PWD/target/debug/berth"
python3 -m pytest -q compat-tests --target berth
if command -v dockerd >/dev/null 2>&1 && [ "${BERTH_SKIP_DOCKERD:-0}" != 1 ]; then
  python3 -m pytest -q compat-tests --target dockerd
else
  echo "dockerd not installed: compat scenarios were not cross-checked against dockerd"
fi
