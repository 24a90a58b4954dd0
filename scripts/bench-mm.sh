#!/usr/bin/env bash
# Memory and thread throughput, guest beside host: rootfs/c/mmbench.c and rootfs/c/threadbench.c
# (glibc builds) on the host (pinned to one CPU, as the guest has one vCPU) and in the guest kernel
# under microvm: page faults per second on a file mapping (/srv/big.bin, 4 MiB) and on anonymous
# memory, mprotect calls per second, futex ping-pong round trips and pthread_create+join per second;
# then the guest kernel's cost counters for those paths (kernel time per operation, emulated here).
#   scripts/bench-mm.sh [ROUNDS [PINGPONGS]]   (defaults 3 and 300; needs build/guest-kernel,
#                                              build/rootfs.qcow2; builds microvm if missing)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-3}"
pingpongs="${2:-300}"
stage="$root/build/rootfs-stage"
microvm="$root/target/x86_64-unknown-linux-musl/release/microvm"
[[ -x "$microvm" ]] || (cd "$root" && cargo build --release --quiet -p vmm --target x86_64-unknown-linux-musl)
pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)
echo "host (${pin[*]:-unpinned}):"
"${pin[@]}" "$stage/bin/mmbench-glibc" "$stage/srv/big.bin" "$rounds" | sed 's/^/  /'
"${pin[@]}" "$stage/bin/threadbench-glibc" "$pingpongs" | sed 's/^/  /'
for prog in "mmbench-glibc /srv/big.bin $rounds" "threadbench-glibc $pingpongs"; do
    echo "guest (microvm, guest kernel): ${prog%% *}"
    timeout 900 "$microvm" --kernel "$root/build/guest-kernel" --disk "$root/build/rootfs.qcow2,ro" \
        --cmdline "console=ttyS0 root=/dev/vda -- run /bin/$prog" \
        | grep -E "^(mm|thread)bench:|cost: (file_fault|zero_fault|mprotect|syscall|fork|exit) |context switches, " \
        | sed 's/^/  /'
done
