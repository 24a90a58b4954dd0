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
# The device path runs in the configurations BENCH_DEV_CONFIGS (ENGINE:CACHE; default: sync:writeback, the
# default drive; threads:writeback; async:direct, io_uring with O_DIRECT; threads:direct). qemu-img bench
# runs with its default aio=threads (a pool of threads doing preadv/pwritev) and `-t writeback` (page
# cache) or `-t none` (O_DIRECT). Like is compared with like: page-cache configurations with
# `-t writeback`, *:direct ones with `-t none`.
#
# Noise: on a shared 2-CPU host a run's throughput swings with the load of other processes, and a figure
# taken minutes after another says little about it. So everything that is compared runs close together:
# for each pattern, queue depth and round, every configuration and both qemu-img modes run back to back,
# each on raw and right after on qcow2 (in reverse order every other round, so that a drift in load
# favours no one). Reported
# are the median MiB/s over BENCH_REPEAT rounds, and the medians of the per-round ratios: device /
# qemu-img (like with like, same format) and qcow2 / raw (same configuration). Before every run `sync`
# writes back what the previous run dirtied and the image is dropped from the page cache and read back in
# (see settle()).
#
# Environment: BENCH_DIR (parent of the temp dir, default $TMPDIR or /tmp), BENCH_IMAGE_MB (default 1024),
# BENCH_REPEAT (rounds, default 5), BENCH_PATTERNS (default all: randread-4k randwrite-4k seqread-1m
# seqwrite-1m), BENCH_QDS (default "1 32"), BENCH_DEV_CONFIGS (above). Requests per run: BENCH_COUNT_4K
# (page cache, default 30000), BENCH_COUNT_4K_DIRECT (10000), BENCH_COUNT_1M (10000),
# BENCH_COUNT_1M_DIRECT (2000), so that a run takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE_MB=${BENCH_IMAGE_MB:-1024}
REPEAT=${BENCH_REPEAT:-5}
PATTERNS=${BENCH_PATTERNS:-randread-4k randwrite-4k seqread-1m seqwrite-1m}
QDS=${BENCH_QDS:-1 32}
CONFIGS=${BENCH_DEV_CONFIGS:-sync:writeback threads:writeback async:direct threads:direct}
STEP_RAND=$((4096 * 104729))

scripts/install-qemu-utils.sh
cargo build --release -q -p devices --example blk_bench
BENCH=target/release/examples/blk_bench

TMP=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/microvm-blkbench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
echo "images in $TMP: ${IMAGE_MB} MiB of random data, raw and qcow2 (fully allocated)" >&2
dd if=/dev/urandom of="$TMP/img.raw" bs=1M count="$IMAGE_MB" status=none
qemu-img convert -f raw -O qcow2 "$TMP/img.raw" "$TMP/img.qcow2"

# Write back what the last run dirtied, drop the image from the page cache and read it back in. The drop
# makes the file's cached pages come from readahead whoever wrote it last: otherwise they keep the folio
# sizes of the writer (dd's aligned 1 MiB writes for raw, qemu-img convert writing the qcow2 data at a
# 320 KiB offset), and 1 MiB reads of the qcow2 file's data ran about 18% slower than the same reads of the
# raw file, a qcow2/raw gap that had nothing to do with qcow2.
settle() {
    sync
    dd if="$1" iflag=nocache count=0 status=none
    cat "$1" >/dev/null
}

median() {
    tr ' ' '\n' | sed '/^$/d' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# One run, MiB/s. WHO is ENGINE:CACHE for the device path or qi:writeback / qi:none for qemu-img.
run_one() {
    local who=$1 fmt=$2 count=$3 bs=$4
    shift 4
    local img="$TMP/img.$fmt"
    settle "$img"
    case $who in
        qi:*)
            qemu-img bench -t "${who#qi:}" -i threads -c "$count" -s "$bs" "$@" -f "$fmt" "$img" |
                sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p' |
                awk -v c="$count" -v b="$bs" '{ printf "%.1f", c * b / $1 / 1048576 }'
            ;;
        *)
            "$BENCH" --engine "${who%%:*}" --cache "${who#*:}" -f "$fmt" -c "$count" -s "$bs" "$@" "$img" |
                awk '{ print $4 }'
            ;;
    esac
}

like() { case $1 in *:direct) echo qi:none ;; *) echo qi:writeback ;; esac; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.3f", a / b; else print "-" }'; }
reverse() { printf '%s\n' "$@" | tac | tr '\n' ' '; }

WHO="$CONFIGS qi:writeback qi:none"
declare -A MIBS DEVQI Q2R
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $REPEAT rounds"
for pat in $PATTERNS; do
    case $pat in
        randread-4k) bs=4096 args=(-S "$STEP_RAND") ;;
        randwrite-4k) bs=4096 args=(-S "$STEP_RAND" -w) ;;
        seqread-1m) bs=1048576 args=() ;;
        seqwrite-1m) bs=1048576 args=(-w) ;;
        *) echo "unknown pattern $pat" >&2; exit 1 ;;
    esac
    for qd in $QDS; do
        declare -A VALS=()
        for round in $(seq "$REPEAT"); do
            order="raw qcow2" who=$WHO
            if [ $((round % 2)) = 0 ]; then order="qcow2 raw" who=$(reverse $WHO); fi
            for w in $who; do
                for fmt in $order; do
                    case $pat/$w in
                        *-4k/*direct | *-4k/qi:none) count=${BENCH_COUNT_4K_DIRECT:-10000} ;;
                        *-4k/*) count=${BENCH_COUNT_4K:-30000} ;;
                        *-1m/*direct | *-1m/qi:none) count=${BENCH_COUNT_1M_DIRECT:-2000} ;;
                        *) count=${BENCH_COUNT_1M:-10000} ;;
                    esac
                    VALS[$fmt/$w/$round]=$(run_one "$w" "$fmt" "$count" "$bs" -d "$qd" "${args[@]}")
                done
            done
        done
        for fmt in raw qcow2; do
            for w in $WHO; do
                all=""
                for r in $(seq "$REPEAT"); do all+="${VALS[$fmt/$w/$r]} "; done
                MIBS[$pat/$qd/$fmt/$w]=$(median <<<"$all")
                echo "  $pat qd$qd $fmt $w: [$all] MiB/s" >&2
            done
            for c in $CONFIGS; do
                all=""
                for r in $(seq "$REPEAT"); do
                    all+="$(div "${VALS[$fmt/$c/$r]}" "${VALS[$fmt/$(like "$c")/$r]}") "
                done
                DEVQI[$pat/$qd/$fmt/$c]=$(median <<<"$all" | xargs printf "%.2f")
            done
        done
        for c in $CONFIGS; do
            all=""
            for r in $(seq "$REPEAT"); do all+="$(div "${VALS[qcow2/$c/$r]}" "${VALS[raw/$c/$r]}") "; done
            Q2R[$pat/$qd/$c]=$(median <<<"$all" | xargs printf "%.2f")
        done
        unset VALS
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "MiB/s, medians of $REPEAT rounds:"
printf '%-13s %-3s %-6s |' pattern qd format
for w in $WHO; do printf ' %17s' "$w"; done
echo
for pat in $PATTERNS; do
    for qd in $QDS; do
        for fmt in raw qcow2; do
            printf '%-13s %-3s %-6s |' "$pat" "$qd" "$fmt"
            for w in $WHO; do printf ' %17s' "${MIBS[$pat/$qd/$fmt/$w]}"; done
            echo
        done
    done
done

# A table with a row per pattern and queue depth and a column per configuration; `$2 PAT QD CONFIG`
# prints a cell.
per_config_table() {
    local width=$1 cell=$2
    printf '%-13s %-3s |' pattern qd
    for c in $CONFIGS; do printf " %${width}s" "$c"; done
    echo
    for pat in $PATTERNS; do
        for qd in $QDS; do
            printf '%-13s %-3s |' "$pat" "$qd"
            for c in $CONFIGS; do printf " %${width}s" "$($cell "$pat" "$qd" "$c")"; done
            echo
        done
    done
}
devqi_cell() { echo "${DEVQI[$1/$2/raw/$3]} ${DEVQI[$1/$2/qcow2/$3]}"; }
q2r_cell() { echo "${Q2R[$1/$2/$3]}"; }

echo
echo "device / qemu-img like with like (page cache / -t writeback, O_DIRECT / -t none), raw and qcow2,"
echo "medians of per-round ratios (target >= 1.0):"
per_config_table 17 devqi_cell
echo
echo "qcow2 / raw through the device path, medians of per-round ratios (target >= 0.9):"
per_config_table 17 q2r_cell

echo
echo "sequential through the device path with the page cache (target >= 1024 MiB/s):"
for pat in $PATTERNS; do
    case $pat in seq*) ;; *) continue ;; esac
    for qd in $QDS; do
        for fmt in raw qcow2; do
            for c in $CONFIGS; do
                case $c in *:direct) continue ;; esac
                m=${MIBS[$pat/$qd/$fmt/$c]}
                ok=$(awk -v m="$m" 'BEGIN { print (m >= 1024) ? "ok" : "MISSED" }')
                printf '  %-13s qd%-3s %-6s %-17s %10s MiB/s %s\n' "$pat" "$qd" "$fmt" "$c" "$m" "$ok"
            done
        done
    done
done
