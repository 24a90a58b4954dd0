#!/usr/bin/env bash
# File system figures, guest beside host (issue #17): rootfs/c/fsbench.c (files created per second,
# sequential write and read MB/s of one file, fsync latency after a 4 KiB write) runs in the guest on a
# COPY of the root image mounted rw, and on the host in a temporary directory. The guest's kernel code
# is instruction-emulated here (~2000x): its figures measure the kernel's work per operation; the
# `vfs:` line the guest kernel prints at power-off gives the disk requests and their mean kernel cost.
#   scripts/bench-fs.sh [FILES [MIB [ROUNDS]]]     (defaults 200 files, 4 MiB, 20 fsyncs; the root image has ~8 MiB free)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
files="${1:-200}" mib="${2:-4}" rounds="${3:-20}"
build="$root/build"
for f in guest-kernel rootfs.qcow2 rootfs-stage/bin/fsbench-glibc; do
    [[ -e "$build/$f" ]] || { echo "build/$f is missing: run scripts/build-guest-kernel.sh and scripts/build-rootfs.sh" >&2; exit 1; }
done
microvm="$root/target/x86_64-unknown-linux-musl/release/microvm"
[[ -x "$microvm" ]] || (cd "$root" && cargo build --release --quiet -p vmm --target x86_64-unknown-linux-musl)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "== host ($(uname -r), $(df -T "$tmp" | awk 'NR==2 {print $2}') in $tmp)"
"$build/rootfs-stage/bin/fsbench-glibc" "$tmp/host" "$files" "$mib" "$rounds" "$build/rootfs-stage/bin/busybox" | grep '^fsbench:'

echo "== guest (microvm, root image copy mounted rw, qcow2)"
cp "$build/rootfs.qcow2" "$tmp/root.qcow2"
timeout 900 "$microvm" --kernel "$build/guest-kernel" --disk "$tmp/root.qcow2" \
    --cmdline "console=ttyS0 root=/dev/vda rw -- run /bin/fsbench-glibc /root/fsb $files $mib $rounds /bin/busybox" \
    | grep -E '^fsbench:|vfs: |pagecache: |cost: (syscall|cache_|write_back)'
qemu-img convert -O raw "$tmp/root.qcow2" "$tmp/root.raw"
if e2fsck -fn "$tmp/root.raw" >/dev/null 2>&1; then echo "e2fsck -fn: clean"; else echo "e2fsck -fn: ERRORS"; exit 1; fi
