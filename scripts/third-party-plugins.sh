#!/usr/bin/env bash
# Installs the third-party plugins `berth conformance` findings are kept true against (the
# README's "Findings on third-party plugins"; tests/conformance.rs runs them):
#   rclone (`rclone serve docker`, Debian), fuse-overlayfs (the FUSE file system easyfuse
#   volumes are made with, Debian), and wolphin-driver and docker-volume-easyfuse (PyPI) in a
#   virtualenv at target/third-party/venv, where the tests look for it.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
need_apt=()
command -v rclone >/dev/null 2>&1 || need_apt+=(rclone)
command -v fuse-overlayfs >/dev/null 2>&1 || need_apt+=(fuse-overlayfs)
command -v fusermount3 >/dev/null 2>&1 || need_apt+=(fuse3)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

venv=target/third-party/venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q -r scripts/third-party-plugins.txt
