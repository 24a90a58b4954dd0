#!/usr/bin/env bash
# Builds everything and boots the demo VM: the project's guest kernel with the rootfs on virtio-blk when they
# are built, otherwise the small test guest (tests/guests) showing the boot path, timer and console.
# With the guest kernel: on a terminal, busybox's ash on the console (type `exit` to power off); otherwise a
# scripted busybox session (/usr/share/demo/session.sh in the rootfs). Extra arguments go to microvm.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
if [ -f build/guest-kernel ] && [ -f build/rootfs.qcow2 ] && build/microvm --help | grep -q -- --disk; then
    if [ -t 0 ]; then
        run="/bin/ash"
    else
        run="/bin/busybox sh /usr/share/demo/session.sh"
    fi
    exec build/microvm --kernel build/guest-kernel --disk build/rootfs.qcow2 --boot-timer \
        --cmdline "console=ttyS0 root=/dev/vda -- run $run" "$@"
fi
cargo build -q -p tests
guest=$(ls -t target/debug/build/tests-*/out/guest-pvh.elf | head -1)
exec build/microvm --kernel "$guest" --boot-timer --cmdline "demo ticks=10 marker exit=0" "$@"
