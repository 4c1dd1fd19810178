#!/usr/bin/env bash
# Registry benchmark: berth against a private dockerd 20.10 (plugin install of the rclone plugin
# from a loopback registry, push of it, install of a ~200 MB plugin against the machine's
# single-core sha256 + gunzip + write limit). Needs root, dockerd, the docker CLI, Debian's
# docker-registry, rclone + fuse3 and cargo. Arguments go to scripts/bench_registry.py (--help
# lists them), e.g.
#
#   sudo scripts/bench-registry.sh --quick --json /tmp/bench-registry.json
set -euo pipefail
exec python3 "$(dirname "$0")/bench_registry.py" "$@"
