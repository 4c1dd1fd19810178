#!/usr/bin/env bash
# Events benchmark: volume create latency with 0 and 100 connected /events readers, and
# GET /system/df with 1000 local volumes, berth against a private dockerd 20.10 in one run.
# Needs root, dockerd and cargo. Arguments go to scripts/bench_events.py (--help lists them), e.g.
#
#   sudo scripts/bench-events.sh --quick --json /tmp/bench-events.json
set -euo pipefail
exec python3 "$(dirname "$0")/bench_events.py" "$@"
