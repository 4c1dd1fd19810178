#!/usr/bin/env bash
# The one command that runs every test berth has. CI runs exactly this (see .ci/run).
#   1. formatting and lints
#   2. Rust unit and integration tests (integration tests start the real daemon on temp sockets),
#      a short crash-consistency campaign (20 kill -9 trials), a short API fuzzing run, and
#      the plugin runtime tests once more under runc and under crun
#   3. compat scenarios: the stock docker CLI against berth, and the same scenarios against a
#      private dockerd 20.10 when one is installed (which proves every expectation; it runs in
#      the background from the end of the build on).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage says when it starts and how long the run has taken so far, so the CI log shows
# where the 40-minute budget goes.
stage() { echo "== [$(date -u +%T), ${SECONDS}s] $*"; }
finish() {
  local rc=$?
  if [ -n "${dockerd_compat_pid:-}" ] && kill -0 "$dockerd_compat_pid" 2>/dev/null; then
    kill -TERM "$dockerd_compat_pid"  # the harness tears its daemons down on SIGTERM
    wait "$dockerd_compat_pid" || true
  fi
  stage "done (exit $rc)"
}
trap finish EXIT

stage "fmt, clippy, build"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo build

# The scenarios against a private dockerd 20.10 need only the docker CLI and the test plugin the
# build made; they spend most of their time waiting on dockerd, so they run beside everything
# else and report at the end.
dockerd_compat_pid=
if command -v dockerd >/dev/null 2>&1 && [ "${BERTH_SKIP_DOCKERD:-0}" != 1 ]; then
  stage "compat scenarios against dockerd 20.10 (in the background)"
  dockerd_compat_log=$(mktemp /tmp/compat-dockerd.XXXXXX)
  python3 -m pytest -q -p no:cacheprovider compat-tests --target dockerd >"$dockerd_compat_log" 2>&1 &
  dockerd_compat_pid=$!
else
  echo "dockerd not installed: compat scenarios will not be cross-checked against dockerd"
fi

stage "cargo test"
cargo test
# The short crash-consistency campaign and API fuzzing run (long runs: scripts/crash-campaign.sh,
# scripts/fuzz.sh).
stage "crash campaign"
python3 scripts/crash-campaign.py --trials 20
stage "fuzz"
BERTH_BIN="$PWD/target/debug/berth" python3 -m pytest -q -p no:cacheprovider fuzz

# The runtime bar again under each OCI runtime (plugins run by runc, then crun): the
# executor alone (isolation, hostile rootfs, clean-up), enable,
# readiness, supervision, logs, restore, kill -9 clean-up, ps and exec.
for runtime in runc crun; do
  stage "runtime tests under $runtime"
  BERTH_TEST_PLUGIN_RUNTIME=$runtime cargo test --test runtime_executor --test plugin_runtime --test plugin_debug
done

export BERTH_BIN="$PWD/target/debug/berth"
stage "compat scenarios against berth"
python3 -m pytest -q compat-tests --target berth
stage "compat scenarios against berth, plugins under runc"
# the scenarios that run plugin processes, once more with plugins under runc
BERTH_COMPAT_PLUGIN_RUNTIME=runc python3 -m pytest -q compat-tests --target berth \
  -k "plugin-enable or plugin-rclone or volume-plugin or plugin-debug"
if [ -n "$dockerd_compat_pid" ]; then
  stage "waiting for the compat scenarios against dockerd 20.10"
  dockerd_compat_rc=0
  wait "$dockerd_compat_pid" || dockerd_compat_rc=$?
  cat "$dockerd_compat_log"
  rm -f "$dockerd_compat_log"
  [ "$dockerd_compat_rc" = 0 ] || { echo "compat scenarios against dockerd failed"; exit 1; }
fi
