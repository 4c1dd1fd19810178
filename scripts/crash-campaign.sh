#!/usr/bin/env bash
# The long crash-consistency campaign (the test suite runs 20 trials): kill -9 of berth at
# random moments of concurrent plugin create/enable/disable/install and volume create.
#
#   scripts/crash-campaign.sh [TRIALS] [more crash-campaign.py options]   # default 1000 trials
#
# Builds berth and the test plugin (debug) unless BERTH_BIN and BERTH_TEST_PLUGIN_BIN are set.
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-1000}
shift || true
if [ -z "${BERTH_BIN:-}" ] || [ -z "${BERTH_TEST_PLUGIN_BIN:-}" ]; then
  cargo build --bins
fi
exec python3 scripts/crash-campaign.py --trials "$trials" \
  --berth "${BERTH_BIN:-$PWD/target/debug/berth}" \
  --test-plugin "${BERTH_TEST_PLUGIN_BIN:-$PWD/target/debug/berth-test-plugin}" "$@"
