#!/usr/bin/env bash
# The one command that runs every test berth has. CI runs exactly this (see .ci/run).
#   1. formatting and lints
#   2. Rust unit and integration tests (integration tests start the real daemon on temp sockets),
#      a short crash-consistency campaign (20 kill -9 trials), a short API fuzzing run, and
#      the plugin runtime tests once more under runc and under crun
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

# The runtime bar again under each OCI runtime (plugins run by runc, then crun): the
# executor alone (isolation, hostile rootfs, clean-up), enable,
# readiness, supervision, logs, restore, kill -9 clean-up, ps and exec.
for runtime in runc crun; do
  BERTH_TEST_PLUGIN_RUNTIME=$runtime cargo test --test runtime_executor --test plugin_runtime --test plugin_debug
done

export BERTH_BIN="$PWD/target/debug/berth"
python3 -m pytest -q compat-tests --target berth
# the scenarios that run plugin processes, once more with plugins under runc
BERTH_COMPAT_PLUGIN_RUNTIME=runc python3 -m pytest -q compat-tests --target berth \
  -k "plugin-enable or plugin-rclone or volume-plugin or plugin-debug"
if command -v dockerd >/dev/null 2>&1 && [ "${BERTH_SKIP_DOCKERD:-0}" != 1 ]; then
  python3 -m pytest -q compat-tests --target dockerd
else
  echo "dockerd not installed: compat scenarios were not cross-checked against dockerd"
fi
