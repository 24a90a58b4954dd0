#!/usr/bin/env bash
# Block benchmark: the virtio-blk device model (guest memory, virtqueue, MMIO transport, Block, the real
# raw/qcow2 backend; devices/examples/blk_bench.rs, release build, no VM) side by side with `qemu-img bench`
# on the same image and the same access pattern.
#
# Patterns: 4 KiB "random" reads and writes, 1 MiB sequential reads and writes, queue depth 1 and 32, on a
# raw image and on a fully allocated qcow2 image (64 KiB clusters) with the same random contents.
# "Random" is the strided pattern qemu-img bench can express: step = 104729 blocks (a prime, so the offsets
# visit the 4 KiB blocks of the image in a scattered order), wrapping modulo the image size; blk_bench
# generates exactly the same offsets.
#
# The device path uses the host page cache (buffered preadv/pwritev, as microvm does). qemu-img bench is run
# twice: `-t none` (O_DIRECT, the usual way to run it) and `-t writeback` (page cache, the same caching as
# the device path). Before every run the images are read once (O_DIRECT writes drop cached pages) and
# `sync` writes back what the previous run dirtied. Each figure is the best of BENCH_REPEAT runs, to damp
# the noise of a shared host.
#
# Environment: BENCH_DIR (parent of the temp dir, default $TMPDIR or /tmp), BENCH_IMAGE_MB (default 1024),
# BENCH_COUNT_4K (requests per 4 KiB run, default 60000), BENCH_COUNT_1M (default 4000), BENCH_REPEAT
# (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE_MB=${BENCH_IMAGE_MB:-1024}
COUNT_4K=${BENCH_COUNT_4K:-60000}
COUNT_1M=${BENCH_COUNT_1M:-4000}
REPEAT=${BENCH_REPEAT:-2}
STEP_RAND=$((4096 * 104729))

scripts/install-qemu-utils.sh
cargo build --release -q -p devices --example blk_bench
BENCH=target/release/examples/blk_bench

TMP=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/microvm-blkbench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
echo "images in $TMP: ${IMAGE_MB} MiB of random data, raw and qcow2 (fully allocated)" >&2
dd if=/dev/urandom of="$TMP/img.raw" bs=1M count="$IMAGE_MB" status=none
qemu-img convert -f raw -O qcow2 "$TMP/img.raw" "$TMP/img.qcow2"

settle() {
    cat "$TMP/img.raw" "$TMP/img.qcow2" >/dev/null
    sync
}

max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a + 0 > b + 0) ? a : b }'; }

# qemu-img bench FORMAT CACHE COUNT BS ARGS... -> MiB/s (best of REPEAT)
qemu_bench() {
    local fmt=$1 cache=$2 count=$3 bs=$4
    shift 4
    local secs best=0 m
    for _ in $(seq "$REPEAT"); do
        settle
        secs=$(qemu-img bench -t "$cache" -c "$count" -s "$bs" "$@" -f "$fmt" "$TMP/img.$fmt" |
            sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p')
        m=$(awk -v c="$count" -v b="$bs" -v s="$secs" 'BEGIN { printf "%.1f", c * b / s / 1048576 }')
        best=$(max "$best" "$m")
    done
    echo "$best"
}

# blk_bench FORMAT COUNT BS ARGS... -> "MiB/s IOPS" (best of REPEAT)
dev_bench() {
    local fmt=$1 count=$2 bs=$3
    shift 3
    local best=0 best_iops=0 mibs iops
    for _ in $(seq "$REPEAT"); do
        settle
        read -r _ _ _ mibs iops < <("$BENCH" -f "$fmt" -c "$count" -s "$bs" "$@" "$TMP/img.$fmt")
        if [ "$(max "$best" "$mibs")" != "$best" ]; then
            best=$mibs best_iops=$iops
        fi
    done
    echo "$best $best_iops"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

declare -A DEV
ROWS=()
printf '%-14s %-3s %-6s | %10s %9s | %11s %8s | %11s %8s\n' \
    pattern qd format "dev MiB/s" "dev IOPS" "qi-none" "dev/none" "qi-wback" "dev/wb"
for pat in randread-4k randwrite-4k seqread-1m seqwrite-1m; do
    case $pat in
        randread-4k) bs=4096 count=$COUNT_4K args=(-S "$STEP_RAND") ;;
        randwrite-4k) bs=4096 count=$COUNT_4K args=(-S "$STEP_RAND" -w) ;;
        seqread-1m) bs=1048576 count=$COUNT_1M args=() ;;
        seqwrite-1m) bs=1048576 count=$COUNT_1M args=(-w) ;;
    esac
    for qd in 1 32; do
        for fmt in raw qcow2; do
            read -r mibs iops < <(dev_bench "$fmt" "$count" "$bs" -d "$qd" "${args[@]}")
            none=$(qemu_bench "$fmt" none "$count" "$bs" -d "$qd" "${args[@]}")
            wb=$(qemu_bench "$fmt" writeback "$count" "$bs" -d "$qd" "${args[@]}")
            DEV[$pat/$qd/$fmt]=$mibs
            printf '%-14s %-3s %-6s | %10s %9s | %11s %8s | %11s %8s\n' \
                "$pat" "$qd" "$fmt" "$mibs" "$iops" "$none" "$(ratio "$mibs" "$none")" \
                "$wb" "$(ratio "$mibs" "$wb")"
            ROWS+=("$pat/$qd/$fmt")
        done
    done
done

echo
echo "qcow2 / raw through the device path (target >= 0.90):"
for pat in randread-4k randwrite-4k seqread-1m seqwrite-1m; do
    for qd in 1 32; do
        printf '  %-14s qd%-3s %s\n' "$pat" "$qd" "$(ratio "${DEV[$pat/$qd/qcow2]}" "${DEV[$pat/$qd/raw]}")"
    done
done
echo "sequential through the device path (target >= 1024 MiB/s):"
for pat in seqread-1m seqwrite-1m; do
    for qd in 1 32; do
        for fmt in raw qcow2; do
            m=${DEV[$pat/$qd/$fmt]}
            ok=$(awk -v m="$m" 'BEGIN { print (m >= 1024) ? "ok" : "MISSED" }')
            printf '  %-14s qd%-3s %-6s %10s MiB/s %s\n' "$pat" "$qd" "$fmt" "$m" "$ok"
        done
    done
done
