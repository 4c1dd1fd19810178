#!/usr/bin/env bash
# Cold start under socket activation: berth and a private dockerd 20.10, each started by
# systemd-socket-activate on the first connection; connect to first /_ping answered. Needs root,
# systemd-socket-activate, dockerd and cargo. Arguments go to scripts/bench_activation.py (--help lists them), e.g.
#
#   sudo scripts/bench-activation.sh --quick --json /tmp/bench-activation.json
set -euo pipefail
exec python3 "$(dirname "$0")/bench_activation.py" "$@"
