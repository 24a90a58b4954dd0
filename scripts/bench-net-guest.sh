#!/usr/bin/env bash
# Guest-kernel networking benchmark: TCP throughput host -> guest and guest -> host (the rootfs's tcp-cat
# against a server in the namespace, CRC-32 checked) and ping RTT p50/p99, for build/guest-kernel on
# microvm and on QEMU -M microvm,acpi=off with a virtio-net-device, each on its own TAP (MTU 65520) in a
# network namespace. See scripts/bench-net-guest.py. Needs root and scripts/build.sh's artifacts.
#   PINGS (default 200), BYTES (per TCP run, default 33554432)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v qemu-system-x86_64 >/dev/null; then
    apt-get update -qq && apt-get install -y -qq qemu-system-x86 >/dev/null
fi
command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null; }
command -v ping >/dev/null || { apt-get update -qq && apt-get install -y -qq iputils-ping >/dev/null; }
exec python3 scripts/bench-net-guest.py "$@"
