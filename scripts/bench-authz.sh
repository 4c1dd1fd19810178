#!/usr/bin/env bash
# Authorization benchmark: what a chain of 1 and 3 allow-all AuthZ plugins adds to GET /volumes
# (10 volumes) and to volume create + remove, and requests/s under load, berth against a private
# dockerd 20.10 in one run. Needs root, dockerd and cargo. Arguments go to
# scripts/bench_authz.py (--help lists them), e.g.
#
#   sudo scripts/bench-authz.sh --quick --json /tmp/bench-authz.json
set -euo pipefail
exec python3 "$(dirname "$0")/bench_authz.py" "$@"
