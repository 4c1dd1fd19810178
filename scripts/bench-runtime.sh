#!/usr/bin/env bash
# Runtime benchmark: berth against a private dockerd 20.10 (plugin enable-to-ready, disable,
# enable+disable cycle, idle daemon RSS with 1 and 10 plugins). Needs root, dockerd, the docker
# CLI and cargo. Arguments go to scripts/bench_runtime.py (--help lists them), e.g.
#
#   sudo scripts/bench-runtime.sh --iterations 20 --json /tmp/bench.json
set -euo pipefail
exec python3 "$(dirname "$0")/bench_runtime.py" "$@"
