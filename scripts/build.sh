#!/usr/bin/env bash
# Builds everything: host tools, the microvm binary (release), and, when present, the guest kernel and the
# rootfs image (build/guest-kernel, build/rootfs.qcow2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --workspace --bins
mkdir -p build
cp target/release/microvm build/microvm
[ -x scripts/build-guest-kernel.sh ] && scripts/build-guest-kernel.sh
[ -x scripts/build-rootfs.sh ] && scripts/build-rootfs.sh
true
