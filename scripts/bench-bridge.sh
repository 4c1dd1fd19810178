#!/usr/bin/env bash
# Bridge network benchmark: berth's built-in bridge driver against a private dockerd 20.10
# (create + remove of a bridge network, GET /networks with 100 bridge networks, berth's
# namespace connect + disconnect over a real veth pair). Needs root, dockerd, the docker CLI,
# ip and cargo. Arguments go to scripts/bench_bridge.py (--help lists them), e.g.
#
#   sudo scripts/bench-bridge.sh --quick --json /tmp/bench-bridge.json
set -euo pipefail
exec python3 "$(dirname "$0")/bench_bridge.py" "$@"
