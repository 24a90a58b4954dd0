#!/usr/bin/env bash
# Runs every test: host unit tests of all crates, the guest kernel's host tests, and the integration tests
# that boot real VMs through the microvm binary. Set MICROVM_REQUIRE_KVM=1 to fail (not skip) without KVM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
# The integration tests run the static musl build of microvm (the one that ships, with the seccomp filters
# it ships with: MICROVM_BIN), in the test profile; the workspace's own binaries are built too (unit tests
# and the rootfs run on the host's default target).
cargo build --workspace --bins
cargo build -p vmm --bins --target x86_64-unknown-linux-musl
MICROVM_BIN="$PWD/target/x86_64-unknown-linux-musl/debug/microvm" cargo test --workspace
if [ -x scripts/test-guest-kernel.sh ]; then
    scripts/test-guest-kernel.sh
fi
# Fuzz targets (devices/fuzz, vmm/fuzz): their seed corpora replayed on stable (sharing this workspace's
# build), then every target briefly under libFuzzer without a sanitizer (MICROVM_FUZZ_SECONDS each, default
# 10; 0 skips), so that a regression is caught. Long runs: scripts/fuzz.sh 600 (README, "Fuzzing").
CARGO_TARGET_DIR=target cargo test --manifest-path devices/fuzz/Cargo.toml
CARGO_TARGET_DIR=target cargo test --manifest-path vmm/fuzz/Cargo.toml
if [ "${MICROVM_FUZZ_SECONDS:-10}" != 0 ]; then
    FUZZ_SANITIZER=none FUZZ_NICE=0 scripts/fuzz.sh "${MICROVM_FUZZ_SECONDS:-10}"
fi
