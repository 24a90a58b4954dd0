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
# The device path runs in five configurations (BENCH_DEV_CONFIGS): sync:writeback (the default drive: one
# request at a time, page cache), async:writeback (io_uring, page cache), async:direct (io_uring,
# O_DIRECT), threads:writeback and threads:direct (a pool of worker threads doing preadv/pwritev: the
# mechanism of qemu-img's default aio=threads). qemu-img bench (its default aio=threads: a pool of threads doing preadv/pwritev) runs with
# `-t writeback` (page cache) and `-t none` (O_DIRECT), and once more with `-t none -i io_uring` (the same
# mechanism as async:direct; column qi-uring). Like is compared with like: the page-cache
# configurations with `-t writeback`, the *:direct ones with `-t none`. Before every run `sync` writes back what
# the previous run dirtied and both images are dropped from the page cache and read back in (see settle()).
#
# Noise: on a shared host a run's throughput swings by 2x with the load of other processes, so two figures
# taken minutes apart say little about each other. The device-path runs on raw and qcow2 are therefore
# paired: BENCH_DEV_REPEAT rounds of (raw, qcow2) back to back; reported are the median MiB/s of each
# format and the median of the per-round qcow2/raw ratios. qemu-img bench figures are the median of
# BENCH_REPEAT runs (fewer: they are slow at low queue depth).
#
# Environment: BENCH_DIR (parent of the temp dir, default $TMPDIR or /tmp), BENCH_IMAGE_MB (default 1024),
# BENCH_COUNT_4K (requests per 4 KiB run, default 30000), BENCH_COUNT_1M (default 4000), BENCH_REPEAT
# (qemu-img runs per figure, default 2), BENCH_DEV_REPEAT (default 5), BENCH_PATTERNS (default all: randread-4k randwrite-4k
# seqread-1m seqwrite-1m), BENCH_QEMU (0 skips qemu-img bench; default 1), BENCH_DEV_CONFIGS (default
# "sync:writeback async:writeback async:direct threads:writeback threads:direct").
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE_MB=${BENCH_IMAGE_MB:-1024}
COUNT_4K=${BENCH_COUNT_4K:-30000}
COUNT_1M=${BENCH_COUNT_1M:-4000}
REPEAT=${BENCH_REPEAT:-2}
DEV_REPEAT=${BENCH_DEV_REPEAT:-5}
CONFIGS=${BENCH_DEV_CONFIGS:-sync:writeback async:writeback async:direct threads:writeback threads:direct}
PATTERNS=${BENCH_PATTERNS:-randread-4k randwrite-4k seqread-1m seqwrite-1m}
QEMU=${BENCH_QEMU:-1}
STEP_RAND=$((4096 * 104729))

scripts/install-qemu-utils.sh
cargo build --release -q -p devices --example blk_bench
BENCH=target/release/examples/blk_bench

TMP=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/microvm-blkbench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
echo "images in $TMP: ${IMAGE_MB} MiB of random data, raw and qcow2 (fully allocated)" >&2
dd if=/dev/urandom of="$TMP/img.raw" bs=1M count="$IMAGE_MB" status=none
qemu-img convert -f raw -O qcow2 "$TMP/img.raw" "$TMP/img.qcow2"

# Write back what the last run dirtied, drop both images from the page cache and read them back in. The
# drop makes both files' cached pages come from the same readahead: otherwise they keep the folio sizes of
# whoever wrote them (dd's aligned 1 MiB writes for raw, qemu-img convert writing the qcow2 data at a
# 320 KiB offset), and 1 MiB reads through the raw backend of the qcow2 file's own data ran about 18%
# slower than the same reads of the raw file, which showed up as a qcow2/raw gap that has nothing to do
# with qcow2.
settle() {
    sync
    dd if="$TMP/img.raw" iflag=nocache count=0 status=none
    dd if="$TMP/img.qcow2" iflag=nocache count=0 status=none
    cat "$TMP/img.raw" "$TMP/img.qcow2" >/dev/null
}


median() {
    tr ' ' '\n' | sed '/^$/d' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# qemu-img bench FORMAT CACHE AIO COUNT BS ARGS... -> MiB/s (median of REPEAT runs: the same statistic as
# the device path's, so neither side gets a best-of)
qemu_bench() {
    local fmt=$1 cache=$2 aio=$3 count=$4 bs=$5
    shift 5
    local secs all=""
    for _ in $(seq "$REPEAT"); do
        settle
        secs=$(qemu-img bench -t "$cache" -i "$aio" -c "$count" -s "$bs" "$@" -f "$fmt" "$TMP/img.$fmt" |
            sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p')
        all+="$(awk -v c="$count" -v b="$bs" -v s="$secs" 'BEGIN { printf "%.1f", c * b / s / 1048576 }') "
    done
    median <<<"$all"
}

# blk_bench on raw and qcow2, paired: ENGINE CACHE COUNT BS ARGS... ->
# "raw-MiB/s raw-IOPS qcow2-MiB/s qcow2-IOPS ratio" (medians over DEV_REPEAT rounds)
dev_pair() {
    local engine=$1 cache=$2 count=$3 bs=$4
    shift 4
    set -- --engine "$engine" --cache "$cache" "$@"
    local r q ri qi rs="" qs="" ris="" qis="" ratios=""
    for i in $(seq "$DEV_REPEAT"); do
        # Alternate which format goes first, so a drift in load does not favour one of them.
        if [ $((i % 2)) = 1 ]; then
            settle
            read -r _ _ _ r ri < <("$BENCH" -f raw -c "$count" -s "$bs" "$@" "$TMP/img.raw")
        fi
        settle
        read -r _ _ _ q qi < <("$BENCH" -f qcow2 -c "$count" -s "$bs" "$@" "$TMP/img.qcow2")
        if [ $((i % 2)) = 0 ]; then
            settle
            read -r _ _ _ r ri < <("$BENCH" -f raw -c "$count" -s "$bs" "$@" "$TMP/img.raw")
        fi
        rs+="$r " qs+="$q " ris+="$ri " qis+="$qi "
        ratios+="$(awk -v a="$q" -v b="$r" 'BEGIN { printf "%.3f", a / b }') "
    done
    echo "  device path $* x $count: raw [$rs] qcow2 [$qs] MiB/s, ratios [$ratios]" >&2
    echo "$(median <<<"$rs") $(median <<<"$ris") $(median <<<"$qs") $(median <<<"$qis") $(median <<<"$ratios")"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }

declare -A DEV RATIO QI
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# Each configuration against its like in qemu-img: page cache against -t writeback, O_DIRECT against -t none.
like() { case $1 in *:direct) echo none ;; *) echo wb ;; esac; }
printf '%-13s %-3s %-6s |' pattern qd format
for c in $CONFIGS; do printf ' %16s' "$c"; done
printf ' | %9s %9s %9s |' qi-wback qi-none qi-uring
for c in $CONFIGS; do printf ' %16s' "$c/qi-$(like "$c")"; done
printf ' %16s\n' "direct/qi-uring"
for pat in $PATTERNS; do
    case $pat in
        randread-4k) bs=4096 count=$COUNT_4K args=(-S "$STEP_RAND") ;;
        randwrite-4k) bs=4096 count=$COUNT_4K args=(-S "$STEP_RAND" -w) ;;
        seqread-1m) bs=1048576 count=$COUNT_1M args=() ;;
        seqwrite-1m) bs=1048576 count=$COUNT_1M args=(-w) ;;
        *) echo "unknown pattern $pat" >&2; exit 1 ;;
    esac
    for qd in 1 32; do
        for c in $CONFIGS; do
            read -r rm _ qm _ ratio < <(dev_pair "${c%%:*}" "${c#*:}" "$count" "$bs" -d "$qd" "${args[@]}")
            DEV[$pat/$qd/raw/$c]=$rm DEV[$pat/$qd/qcow2/$c]=$qm RATIO[$pat/$qd/$c]=$ratio
        done
        for fmt in raw qcow2; do
            if [ "$QEMU" = 1 ]; then
                none=$(qemu_bench "$fmt" none threads "$count" "$bs" -d "$qd" "${args[@]}")
                wb=$(qemu_bench "$fmt" writeback threads "$count" "$bs" -d "$qd" "${args[@]}")
                uring=$(qemu_bench "$fmt" none io_uring "$count" "$bs" -d "$qd" "${args[@]}")
            else
                none=- wb=- uring=-
            fi
            QI[$pat/$qd/$fmt/none]=$none QI[$pat/$qd/$fmt/wb]=$wb QI[$pat/$qd/$fmt/uring]=$uring
            printf '%-13s %-3s %-6s |' "$pat" "$qd" "$fmt"
            for c in $CONFIGS; do printf ' %16s' "${DEV[$pat/$qd/$fmt/$c]}"; done
            printf ' | %9s %9s %9s |' "$wb" "$none" "$uring"
            for c in $CONFIGS; do
                printf ' %16s' "$(ratio "${DEV[$pat/$qd/$fmt/$c]}" "${QI[$pat/$qd/$fmt/$(like "$c")]}")"
            done
            printf ' %16s\n' "$(ratio "${DEV[$pat/$qd/$fmt/async:direct]:-}" "$uring")"
        done
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "qcow2 / raw through the device path, median of $DEV_REPEAT paired rounds (target >= 0.90):"
for pat in $PATTERNS; do
    for qd in 1 32; do
        printf '  %-13s qd%-3s' "$pat" "$qd"
        for c in $CONFIGS; do printf ' %s %s' "$c" "${RATIO[$pat/$qd/$c]}"; done
        echo
    done
done
echo "sequential through the device path (target >= 1024 MiB/s; O_DIRECT is bounded by the disk, as qemu-img -t none):"
for pat in $PATTERNS; do
    case $pat in seq*) ;; *) continue ;; esac
    for qd in 1 32; do
        for fmt in raw qcow2; do
            for c in $CONFIGS; do
                m=${DEV[$pat/$qd/$fmt/$c]}
                ok=$(awk -v m="$m" 'BEGIN { print (m >= 1024) ? "ok" : "MISSED" }')
                case $c in *:direct) ok="(disk; qemu-img -t none ${QI[$pat/$qd/$fmt/none]})" ;; esac
                printf '  %-13s qd%-3s %-6s %-16s %10s MiB/s %s\n' "$pat" "$qd" "$fmt" "$c" "$m" "$ok"
            done
        done
    done
done
