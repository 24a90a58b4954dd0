#!/usr/bin/env bash
# Builds everything and boots the demo VM: the project's guest kernel with the rootfs on virtio-blk when they
# are built, otherwise the small test guest (tests/guests) showing the boot path, timer and console.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
if [ -f build/guest-kernel ] && [ -f build/rootfs.qcow2 ] && build/microvm --help | grep -q -- --disk; then
    exec build/microvm --kernel build/guest-kernel --disk build/rootfs.qcow2 --boot-timer "$@"
fi
cargo build -q -p tests
guest=$(ls -t target/debug/build/tests-*/out/guest-pvh.elf | head -1)
exec build/microvm --kernel "$guest" --boot-timer --cmdline "demo ticks=10 marker exit=0" "$@"
