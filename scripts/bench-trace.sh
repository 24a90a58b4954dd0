#!/usr/bin/env bash
# What syscall tracing costs the guest (issue 22: "costs the guest nothing while it is off"). Boots two
# guests on the same microvm binary and guest kernel, each with its rootfs and an API socket:
#   A: tracing never enabled (no PUT /guest/trace ever reaches it);
#   B: tracing enabled once with a reader (`microvm trace`), then off.
# and runs `tracee loop N` (N getppid calls, timed in the guest: ns per call) alternately in A and in B,
# one run at a time, ROUNDS times: "never enabled" (A) against "off after use" (B) side by side. Then, in
# B: on for every call with `microvm trace` reading (the real cost of tracing), and on with a filter that
# leaves getppid out (the filter's own cost). Prints every run and the medians.
#   scripts/bench-trace.sh [N] [ROUNDS]       (default 3000 calls, 5 rounds)
#   KERNEL=other/guest-kernel scripts/bench-trace.sh   another kernel (e.g. one without the hook)
# The guest kernel's per-call check while off is one load and one branch (guest-kernel/src/drivers/
# trace.rs, `on`): A and B differ only in the value of that word, so their medians should agree within
# the run-to-run noise; run on a quiet machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-3000}"
rounds="${2:-5}"
kernel="${KERNEL:-$root/build/guest-kernel}"
microvm="$root/target/x86_64-unknown-linux-musl/release/microvm"
[ -x "$microvm" ] || (cd "$root" && cargo build --release -q -p vmm --bins --target x86_64-unknown-linux-musl)
command -v curl >/dev/null || { echo "bench-trace: needs curl" >&2; exit 1; }
work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

boot() { # name
    mkfifo "$work/$1.in"
    timeout 1800 "$microvm" --kernel "$kernel" --disk "$root/build/rootfs.qcow2,ro" \
        --api-sock "$work/$1.sock" --cmdline "console=ttyS0 root=/dev/vda -- rc" \
        <"$work/$1.in" >"$work/$1.out" 2>&1 &
    pids+=("$!")
    eval "exec $2>\"$work/$1.in\""
}
wait_for() { # vm, text, count
    for _ in $(seq 2400); do
        [ "$(grep -c "$2" "$work/$1.out" || true)" -ge "$3" ] && return 0
        sleep 0.5
    done
    echo "timed out waiting for $2 in $1" >&2; cat "$work/$1.out" >&2; exit 1
}
put() { # vm, body
    curl -sf --unix-socket "$work/$1.sock" -X PUT http://localhost/guest/trace -d "$2" >/dev/null
}
declare -A runs=([a]=0 [b]=0)
results="$work/results"
run() { # vm, fd, label: one `tracee loop N`, its ns per call appended to results under label
    runs[$1]=$((runs[$1] + 1))
    echo "/bin/tracee-musl loop $n" >&"$2"
    wait_for "$1" "^loop: $n calls" "${runs[$1]}"
    local line ns
    line="$(grep "^loop: $n calls" "$work/$1.out" | tail -1)"
    ns="$(echo "$line" | sed -n 's/.* \([0-9][0-9]*\) ns per call.*/\1/p')"
    printf '  %-34s %s\n' "$3" "${line#loop: }"
    [ -n "$ns" ] && echo "$3 $ns" >>"$results"
    return 0
}

boot a 3
boot b 4
wait_for a "init: starting /bin/sh" 1
wait_for b "init: starting /bin/sh" 1
sleep 1
reader=
start_reader() { # `microvm trace` on B, reading everything; returns once tracing is on
    "$microvm" trace --api-sock "$work/b.sock" >/dev/null 2>>"$work/trace.err" &
    reader=$!
    pids+=("$reader")
    for _ in $(seq 100); do
        curl -sf --unix-socket "$work/b.sock" http://localhost/guest/trace | grep -q '"enabled":true' && return 0
        sleep 0.2
    done
    echo "bench-trace: microvm trace did not turn tracing on" >&2; exit 1
}
stop_reader() { # SIGINT: it reads what is left, turns tracing off and prints its summary
    kill -INT "$reader"
    wait "$reader" || true
}
# B: tracing on with a reader for one run, then off: from here B is "off after use".
start_reader
run b 4 "warm-up (on, read)"
stop_reader
put b '{"enabled": false}'
run a 3 "warm-up (never enabled)"
: >"$results"
for r in $(seq "$rounds"); do
    echo "round $r"
    run a 3 "never enabled (A)"
    run b 4 "off after use (B)"
done
for r in $(seq "$rounds"); do
    echo "round $r"
    start_reader
    run b 4 "on, every call, read (B)"
    stop_reader
    put b '{"enabled": true, "syscalls": ["openat"]}'
    run b 4 "on, getppid filtered out (B)"
    put b '{"enabled": false}'
    run b 4 "off again (B)"
done
echo "microvm trace summaries:"
sed 's/^/  /' "$work/trace.err"
echo "medians (ns per getppid call, $rounds runs of $n each):"
for label in "never enabled (A)" "off after use (B)" "off again (B)" "on, every call, read (B)" \
    "on, getppid filtered out (B)"; do
    m="$(grep -F "$label " "$results" | awk '{print $NF}' | sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}')"
    printf '  %-30s %s\n' "$label" "${m:-?}"
done
echo poweroff >&3
echo poweroff >&4
wait "${pids[0]}" "${pids[1]}" 2>/dev/null || true
