#!/usr/bin/env bash
# Builds everything: host tools, the microvm binaries (release, static against musl: what ships and what
# scripts/test.sh tests), and, when present, the guest kernel and the rootfs image (build/guest-kernel,
# build/rootfs.qcow2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release -p vmm --bins --target x86_64-unknown-linux-musl
mkdir -p build
cp target/x86_64-unknown-linux-musl/release/microvm build/microvm
[ -x scripts/build-guest-kernel.sh ] && scripts/build-guest-kernel.sh
[ -x scripts/build-rootfs.sh ] && scripts/build-rootfs.sh
true
