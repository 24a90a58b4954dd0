#!/usr/bin/env bash
# Network benchmark: microvm's virtio-net beside QEMU's -M microvm virtio-net-device, both running the echo
# test guest on a TAP in a network namespace (nothing leaves the machine). Ping and UDP round-trip times
# (p50/p99), frames/s and throughput host -> guest -> host; see scripts/bench-net.py for what is measured.
# Needs root. Installs qemu-system-x86 when missing.
#   PINGS (default 2000), WINDOW (datagrams in flight, default 16), SECONDS (per stream, default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v qemu-system-x86_64 >/dev/null; then
    apt-get update -qq && apt-get install -y -qq qemu-system-x86 >/dev/null
fi
command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null; }
exec python3 scripts/bench-net.py "$@"
