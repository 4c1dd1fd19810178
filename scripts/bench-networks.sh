#!/usr/bin/env bash
# Network benchmark: berth against a private dockerd 20.10 (network create + remove through a
# plugin driver with the built-in and the plugin's IPAM, GET /networks with 1/100/1000
# networks, daemon RSS with 1000 networks, and berth's namespace connect + disconnect). Needs
# root, dockerd, the docker CLI, ip and cargo. Arguments go to scripts/bench_networks.py
# (--help lists them), e.g.
#
#   sudo scripts/bench-networks.sh --quick --json /tmp/bench-networks.json
set -euo pipefail
exec python3 "$(dirname "$0")/bench_networks.py" "$@"
