#!/usr/bin/env bash
# Builds the guest kernel (guest-kernel/, its own cargo workspace and target flags) into build/guest-kernel,
# an ELF with a PVH note and its symbol table (the VMM resolves guest RIPs to symbols with it).
#   scripts/build-guest-kernel.sh          release build
#   scripts/build-guest-kernel.sh --test   also run the host unit tests of guest-kernel/kcore
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$root/build"

(cd "$root/guest-kernel" && cargo build --release --quiet)
cp "$root/guest-kernel/target/x86_64-unknown-linux-gnu/release/guest-kernel" "$root/build/guest-kernel"
echo "built $root/build/guest-kernel ($(stat -c %s "$root/build/guest-kernel") bytes)"

if [[ "${1:-}" == "--test" ]]; then
    # Run from the repository root so guest-kernel/.cargo/config.toml (bare-metal flags) does not apply.
    (cd "$root" && cargo test --quiet --manifest-path guest-kernel/kcore/Cargo.toml)
fi
