#!/usr/bin/env bash
# Installs the third-party plugins `berth conformance` findings are kept true against (the
# README's "Findings on third-party plugins"; tests/conformance.rs runs them):
#   rclone (`rclone serve docker`) and ovn-docker-overlay-driver (with ovsdb-server and the OVN
#   schemas, python3-flask) from Debian; fuse-overlayfs (the FUSE file system easyfuse volumes
#   are made with, Debian); wolphin-driver and docker-volume-easyfuse (PyPI) in a virtualenv at
#   target/third-party/venv, where the tests look for it.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
need_apt=()
command -v rclone >/dev/null 2>&1 || need_apt+=(rclone)
command -v fuse-overlayfs >/dev/null 2>&1 || need_apt+=(fuse-overlayfs)
command -v fusermount3 >/dev/null 2>&1 || need_apt+=(fuse3)
command -v ovn-docker-overlay-driver >/dev/null 2>&1 || need_apt+=(ovn-docker)
command -v ovsdb-server >/dev/null 2>&1 || need_apt+=(openvswitch-common)
[ -f /usr/share/ovn/ovn-nb.ovsschema ] || need_apt+=(ovn-central)
/usr/bin/python3 -c 'import flask, ovs' 2>/dev/null || need_apt+=(python3-flask python3-openvswitch)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

venv=target/third-party/venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q -r scripts/third-party-plugins.txt
