#!/usr/bin/env bash
# Volume benchmark: berth against a private dockerd 20.10 (volume create/remove through a plugin
# driver, GET /volumes latency and throughput with 1/100/1000 plugin and 1000 local volumes,
# GET /volumes with the plugin frozen, daemon RSS with 1000 volumes). Needs root, dockerd, the
# docker CLI and cargo. Arguments go to scripts/bench_volumes.py (--help lists them), e.g.
#
#   sudo scripts/bench-volumes.sh --quick --json /tmp/bench-volumes.json
set -euo pipefail
exec python3 "$(dirname "$0")/bench_volumes.py" "$@"
