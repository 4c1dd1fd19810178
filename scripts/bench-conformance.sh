#!/usr/bin/env bash
# `berth conformance` benchmark: wall time of full runs against rclone and the project's test
# plugin, as running sockets and as plugin directories berth runs itself. Needs root, cargo and
# rclone. Arguments go to scripts/bench_conformance.py (--help lists them), e.g.
#
#   sudo scripts/bench-conformance.sh --quick --json /tmp/bench-conformance.json
set -euo pipefail
exec python3 "$(dirname "$0")/bench_conformance.py" "$@"
