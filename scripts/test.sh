#!/usr/bin/env bash
# The one command that installs what the tests need and runs every test berth has. CI runs
# exactly this (see .ci/run). Needs root and a Rust toolchain (rustup, 1.89 or newer).
#   0. set-up: Debian packages (dockerd 20.10 to prove expectations against, docker-registry,
#      rclone, fuse3, openssl, podman, curl, systemd, iproute2, runc, crun, bsdutils' script,
#      iputils-ping),
#      pytest and docker-py from PyPI, clippy and rustfmt (and, beside the later stages,
#      cargo-deb from crates.io); whatever is there already is left alone
#   1. formatting and lints
#   2. Rust unit and integration tests (integration tests start the real daemon on temp sockets),
#      a short crash-consistency campaign (20 kill -9 trials), a short API fuzzing run, and
#      the plugin runtime tests once more under runc and under crun
#   3. compat scenarios: the stock docker CLI against berth, and the same scenarios against a
#      private dockerd 20.10, which proves every expectation (that half runs in the background
#      from the end of the build on: it mostly waits on dockerd)
#   4. the Debian package: built, installed, run under systemd, purged (scripts/test-package.sh)
#   5. the README: every shell block, in order, as a newcomer would type them
#      (scripts/test-readme.sh)
# Set BERTH_SKIP_DOCKERD=1 to skip step 3's dockerd half.
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
  if [ -n "${release_pid:-}" ] && kill -0 "$release_pid" 2>/dev/null; then
    kill -TERM "$release_pid"
    wait "$release_pid" || true
  fi
  stage "done (exit $rc)"
}
trap finish EXIT

stage "set-up"

# --- 0. set-up ---------------------------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
need_apt=()
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
command -v rclone >/dev/null 2>&1 || need_apt+=(rclone)
command -v fusermount3 >/dev/null 2>&1 || need_apt+=(fuse3)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v podman >/dev/null 2>&1 || need_apt+=(podman)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v systemd-socket-activate >/dev/null 2>&1 || need_apt+=(systemd)
# network namespaces in the network tests and scenarios (`ip netns`)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v runc >/dev/null 2>&1 || need_apt+=(runc)
command -v crun >/dev/null 2>&1 || need_apt+=(crun)
command -v script >/dev/null 2>&1 || need_apt+=(bsdutils)
# the README's bridge walkthrough pings from one namespace to another
command -v ping >/dev/null 2>&1 || need_apt+=(iputils-ping)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -m pytest --version >/dev/null 2>&1 || python3 -m pip install -q pytest
python3 -m pip install -q -r compat-tests/requirements.txt
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt
# The third-party plugins `berth conformance` findings are kept true against.
bash scripts/third-party-plugins.sh
if [ ! -x "${DOCKER_CLI:-/usr/local/bin/docker}" ]; then
  echo "test.sh: the compat scenarios need docker CLI 28.x at /usr/local/bin/docker (or DOCKER_CLI=path);" >&2
  echo "         Debian's docker.io CLI (20.10) prints other output. See README.md, Tests." >&2
  exit 1
fi

# --- 1. formatting and lints ------------------------------------------------------------------
stage "fmt, clippy, build"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

# --- 2. Rust tests ----------------------------------------------------------------------------
cargo build

# The scenarios against a private dockerd 20.10 need only the docker CLI and the test plugin the
# build made.
dockerd_compat_pid=
if command -v dockerd >/dev/null 2>&1 && [ "${BERTH_SKIP_DOCKERD:-0}" != 1 ]; then
  stage "compat scenarios against dockerd 20.10 (in the background)"
  dockerd_compat_log=$(mktemp /tmp/compat-dockerd.XXXXXX)
  python3 -m pytest -q -p no:cacheprovider compat-tests --target dockerd >"$dockerd_compat_log" 2>&1 &
  dockerd_compat_pid=$!
else
  echo "dockerd not run: compat scenarios will not be cross-checked against dockerd"
fi

stage "cargo test"
cargo test

# The release build (the README walkthrough and the package use it) and cargo-deb are CPU work;
# the stages from here to the package mostly wait on daemons, so they run beside them, niced.
stage "release build and cargo-deb (in the background)"
release_log=$(mktemp /tmp/release-build.XXXXXX)
(
  set -e
  command -v cargo-deb >/dev/null 2>&1 || nice -n 10 cargo install -q cargo-deb --locked
  nice -n 10 cargo build --release
) >"$release_log" 2>&1 &
release_pid=$!
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

# --- 3. compat scenarios ----------------------------------------------------------------------
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

# --- 4. the Debian package ----------------------------------------------------------------------
stage "waiting for the release build and cargo-deb"
release_rc=0
wait "$release_pid" || release_rc=$?
tail -5 "$release_log"
rm -f "$release_log"
[ "$release_rc" = 0 ] || { echo "the release build or cargo-deb's install failed"; exit 1; }
stage "the Debian package"
bash scripts/test-package.sh

# --- 5. the README ----------------------------------------------------------------------------
stage "the README walkthrough"
bash scripts/test-readme.sh
