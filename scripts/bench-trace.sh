#!/usr/bin/env bash
# What syscall tracing costs the guest: boots the guest kernel with its rootfs and an API socket, and runs
# `tracee loop N` (N getppid calls, timed in the guest) with tracing off, on for every call (nobody reading:
# the VMM's buffer drops the oldest), on with a filter that leaves getppid out (the filter's own cost),
# and off again. Prints each run's ns per call.
#   scripts/bench-trace.sh [N] [ROUNDS]       (default 3000 calls, 3 rounds)
#   KERNEL=other/guest-kernel scripts/bench-trace.sh   e.g. a kernel without the hook, for the baseline
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-3000}"
rounds="${2:-3}"
kernel="${KERNEL:-$root/build/guest-kernel}"
microvm="$root/target/x86_64-unknown-linux-musl/release/microvm"
[ -x "$microvm" ] || (cd "$root" && cargo build --release -q -p vmm --bins --target x86_64-unknown-linux-musl)
work="$(mktemp -d)"
trap 'kill "$vm" 2>/dev/null || true; rm -rf "$work"' EXIT
sock="$work/api.sock"
mkfifo "$work/in"
timeout 1200 "$microvm" --kernel "$kernel" --disk "$root/build/rootfs.qcow2,ro" --api-sock "$sock" \
    --cmdline "console=ttyS0 root=/dev/vda -- rc" <"$work/in" >"$work/out" 2>&1 &
vm=$!
exec 3>"$work/in"
wait_for() { # text, count
    for _ in $(seq 1200); do
        [ "$(grep -c "$1" "$work/out" || true)" -ge "$2" ] && return 0
        sleep 0.5
    done
    echo "timed out waiting for $1" >&2; cat "$work/out" >&2; exit 1
}
put() { curl -s --unix-socket "$sock" -X PUT http://localhost/guest/trace -d "$1" >/dev/null; }
wait_for "init: starting /bin/sh" 1
sleep 1
runs=0
run() { # label
    runs=$((runs + 1))
    echo "/bin/tracee-musl loop $n" >&3
    wait_for "^loop: $n calls" "$runs"
    echo "$1: $(grep "^loop: $n calls" "$work/out" | tail -1 | sed 's/.*, //')"
}
for r in $(seq "$rounds"); do
    echo "round $r"
    put '{"enabled": false}' 2>/dev/null || true
    run "  off                 "
    put '{"enabled": true}'
    run "  on, every call      "
    put '{"enabled": true, "syscalls": ["openat"]}'
    run "  on, getppid filtered"
    put '{"enabled": false}'
    run "  off again           "
done
echo poweroff >&3
wait "$vm" || true
grep "cost: syscall" "$work/out" || true
