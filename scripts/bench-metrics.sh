#!/usr/bin/env bash
# Metrics cost: berth with --metrics-addr against berth without, side by side (GET /volumes
# latency and daemon CPU per request). Needs root and cargo. Arguments go to scripts/bench_metrics.py (--help lists them), e.g.
#
#   sudo scripts/bench-metrics.sh --quick --json /tmp/bench-metrics.json
set -euo pipefail
exec python3 "$(dirname "$0")/bench_metrics.py" "$@"
