#!/usr/bin/env bash
# Boots build/guest-kernel with build/rootfs.qcow2 on QEMU's microvm machine (the second VMM the kernel
# must run on). Installs qemu-system-x86 if missing. Extra arguments are appended to the kernel command
# line. QEMU's exit status: isa-debug-exit turns the guest's byte v into (v << 1) | 1, so a clean power
# off (byte 0) exits 1 and a kernel panic (byte 3) exits 7.
#   ACCEL=kvm|tcg (default tcg: this host's nested KVM emulates guest kernel code slowly)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v qemu-system-x86_64 >/dev/null; then
    apt-get update -qq && apt-get install -y -qq qemu-system-x86 >/dev/null
fi
accel="${ACCEL:-tcg}"
cpu=max
[[ "$accel" == kvm ]] && cpu=qemu64
exec qemu-system-x86_64 -M microvm,acpi=off -accel "$accel" -cpu "$cpu" -m "${MEM:-256}" -smp 1 \
    -nographic -no-reboot -nodefaults \
    -kernel "${KERNEL:-$root/build/guest-kernel}" \
    -append "console=ttyS0 root=/dev/vda $*" \
    -serial stdio \
    -device isa-debug-exit,iobase=0xf4,iosize=4 \
    -drive id=root,file="${DISK:-$root/build/rootfs.qcow2}",format=qcow2,if=none,snapshot=on \
    -device virtio-blk-device,drive=root
