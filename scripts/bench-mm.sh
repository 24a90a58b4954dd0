#!/usr/bin/env bash
# Memory-call throughput, guest beside host: rootfs/c/mmbench.c (glibc build) on the host and in the
# guest kernel under microvm: page faults per second on a file mapping (/srv/big.bin, 4 MiB) and on
# anonymous memory, mprotect calls per second; then the guest kernel's cost counters for those paths
# (kernel time per operation, emulated here).
#   scripts/bench-mm.sh [ROUNDS]      (default 3; needs build/guest-kernel, build/rootfs.qcow2, microvm)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-3}"
stage="$root/build/rootfs-stage"
microvm="$root/target/release/microvm"
[[ -x "$microvm" ]] || (cd "$root" && cargo build --release --quiet -p vmm)
echo "host:"
"$stage/bin/mmbench-glibc" "$stage/srv/big.bin" "$rounds" | sed 's/^/  /'
echo "guest (microvm, guest kernel):"
timeout 900 "$microvm" --kernel "$root/build/guest-kernel" --disk "$root/build/rootfs.qcow2,ro" \
    --cmdline "console=ttyS0 root=/dev/vda -- run /bin/mmbench-glibc /srv/big.bin $rounds" \
    | grep -E "^mmbench:|cost: (file_fault|zero_fault|mprotect|syscall) " | sed 's/^/  /'
