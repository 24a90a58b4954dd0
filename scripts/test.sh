#!/usr/bin/env bash
# Runs every test: host unit tests of all crates, the guest kernel's host tests, and the integration tests
# that boot real VMs through the microvm binary. Set MICROVM_REQUIRE_KVM=1 to fail (not skip) without KVM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
# The integration tests run target/debug/microvm: build the binaries of the test profile first.
cargo build --workspace --bins
cargo test --workspace
if [ -x scripts/test-guest-kernel.sh ]; then
    scripts/test-guest-kernel.sh
fi
