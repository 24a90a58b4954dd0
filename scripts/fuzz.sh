#!/usr/bin/env bash
# Runs every cargo-fuzz target of devices/fuzz and vmm/fuzz for SECONDS each (default 60), one after the
# other, and prints per target: executions, coverage (libFuzzer's final `cov:` edges and `ft:` features),
# corpus size and crashes. Exits non-zero when any target crashed, leaked, timed out or failed to build.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      e.g. scripts/fuzz.sh 600, scripts/fuzz.sh 20 virtio_net
#
# Each target starts from its seeds (`<crate>/fuzz/seeds/<target>/`, kept in the repository) plus the
# working corpus of earlier runs (`<crate>/fuzz/corpus/<target>/`, not kept); crash inputs are written to
# `<crate>/fuzz/artifacts/<target>/`. FUZZ_NICE (default 19) is the nice level of the runs, FUZZ_LOG_DIR
# (default target/fuzz-logs) where libFuzzer's output goes, FUZZ_SANITIZER (default address) cargo-fuzz's
# sanitizer (`none` builds and runs faster; CI uses it), FUZZ_TARGET_DIR (default target/fuzz) the build
# directory. Installs cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

secs=${1:-60}
shift || true
only=("$@")
nice_level=${FUZZ_NICE:-19}
log_dir=${FUZZ_LOG_DIR:-$root/target/fuzz-logs}
sanitizer=${FUZZ_SANITIZER:-address}
# One build directory for both crates: they share devices and most dependencies.
fuzz_target_dir=${FUZZ_TARGET_DIR:-$root/target/fuzz}
mkdir -p "$log_dir"

scripts/install-fuzz.sh >/dev/null

failed=0
summary=()
for crate in devices vmm; do
    dir=$root/$crate/fuzz
    [ -f "$dir/Cargo.toml" ] || continue
    targets=$(cd "$crate" && cargo +nightly fuzz list)
    # Build every target of the crate once (the runs below then start at once).
    if ! (cd "$crate" && nice -n "$nice_level" cargo +nightly fuzz build -s "$sanitizer" --target-dir "$fuzz_target_dir" >"$log_dir/$crate-build.log" 2>&1); then
        echo "fuzz: building $crate/fuzz failed (see $log_dir/$crate-build.log)" >&2
        tail -n 30 "$log_dir/$crate-build.log" >&2
        exit 1
    fi
    for t in $targets; do
        if [ ${#only[@]} -gt 0 ] && [[ ! " ${only[*]} " =~ " $t " ]]; then
            continue
        fi
        mkdir -p "$dir/corpus/$t" "$dir/artifacts/$t" "$dir/seeds/$t"
        log=$log_dir/$t.log
        set +e
        (cd "$crate" && nice -n "$nice_level" cargo +nightly fuzz run -s "$sanitizer" --target-dir "$fuzz_target_dir" "$t" "$dir/corpus/$t" "$dir/seeds/$t" -- \
            -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
            -artifact_prefix="$dir/artifacts/$t/" >"$log" 2>&1)
        rc=$?
        set -e
        execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -n1 | grep -o '[0-9]*$' || true)
        last=$(grep -E '^#[0-9]+' "$log" | tail -n1 || true)
        cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
        ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
        corp=$(grep -o 'corp: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
        crashes=$(grep -cE '^artifact_prefix=|Test unit written to' "$log" || true)
        status=ok
        if [ "$rc" -ne 0 ]; then
            status="FAILED (exit $rc, $crashes crash input(s) in $dir/artifacts/$t/, log $log)"
            failed=1
        fi
        line=$(printf '%-16s %6ss  execs %10s  cov %6s  ft %7s  corpus %6s  crashes %s  %s' \
            "$t" "$secs" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes" "$status")
        echo "$line"
        summary+=("$line")
    done
done

echo "fuzz summary (${secs}s per target):"
printf '  %s\n' "${summary[@]}"
exit $failed
