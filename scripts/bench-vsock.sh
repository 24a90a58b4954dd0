#!/usr/bin/env bash
# vsock benchmark: the guest kernel's AF_VSOCK throughput each way and echo round trip, beside virtio-net TCP
# throughput and UDP echo round trip on the same guest under microvm (see scripts/bench-vsock.py).
# Needs root and scripts/build.sh's artifacts. BYTES (per run, default 33554432), ROUNDS (default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null; }
exec python3 scripts/bench-vsock.py "$@"
