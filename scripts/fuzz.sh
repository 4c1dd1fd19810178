#!/usr/bin/env bash
# The long API fuzzing run (the test suite makes a short one): schemathesis against
# api-spec/openapi.json through a loopback bridge to a berth on a temporary socket.
#
#   scripts/fuzz.sh [EXAMPLES]     # examples per operation, default 1000
#
# Needs: pip install -r compat-tests/requirements.txt (schemathesis, pytest); a built berth
# (BERTH_BIN, default target/debug/berth).
set -euo pipefail
cd "$(dirname "$0")/.."
export FUZZ_MAX_EXAMPLES=${1:-1000}
export FUZZ_RANDOM=1  # new examples every run (the CI run draws the same ones each time)
export BERTH_BIN=${BERTH_BIN:-$PWD/target/debug/berth}
exec python3 -m pytest -q -p no:cacheprovider fuzz
