#!/usr/bin/env bash
# Build berth and start it with its embedded defaults (socket /run/berth/berth.sock, data in
# /var/lib/berth, runtime state in /run/berth). Extra arguments go to `berth daemon`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
exec ./target/release/berth daemon "$@"
